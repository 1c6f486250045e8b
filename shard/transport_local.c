/* transport_local.c: the single-rank transport (transport.h): no peers; collectives are
 * identities. For unit tests and the embedded (non-MPI) engine. */
#include <stdlib.h>

#include "alloc.h"
#include "transport.h"

double ts_transport_default_timeout(void) {
    const char *s = getenv("TESSERA_COMM_TIMEOUT");
    if (s && *s) {
        char *end;
        double v = strtod(s, &end);
        if (*end == '\0' && v > 0) return v;
    }
    return 60.0;
}

static void l_close(ts_transport *t) { ts_free(t); }

static ts_status l_send(ts_transport *t, int32_t stage, const void *buf, size_t bytes,
                        int32_t tag, const char *what) {
    return TS_FAIL(TS_INVAL, "local transport: no stage %d to send %s to", stage, what);
}
static ts_status l_recv(ts_transport *t, int32_t stage, void *buf, size_t bytes, int32_t tag,
                        const char *what) {
    return TS_FAIL(TS_INVAL, "local transport: no stage %d to receive %s from", stage, what);
}
static ts_status l_allreduce(ts_transport *t, float *buf, size_t n) { return TS_OK; }
static ts_status l_bcast(ts_transport *t, void *buf, size_t bytes, const char *what) {
    return TS_OK;
}
static ts_status l_barrier(ts_transport *t) { return TS_OK; }
static void l_abort(ts_transport *t, int code) {}

static const struct ts_transport_i local_ops = {
    .name = "local", .close = l_close, .send = l_send, .recv = l_recv,
    .allreduce_sum = l_allreduce, .bcast = l_bcast, .barrier = l_barrier, .abort = l_abort,
};

ts_status ts_transport_local_open(ts_transport **out) {
    ts_transport *t = ts_calloc(1, sizeof *t);
    if (!t) return TS_FAIL(TS_NOMEM, "transport");
    t->ops = &local_ops;
    t->world = t->tp = t->pp = 1;
    t->timeout_s = ts_transport_default_timeout();
    t->device = -1;
    *out = t;
    return TS_OK;
}

int ts_transport_mpi_launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMIX_RANK") != NULL ||
           getenv("PMI_RANK") != NULL;
}
