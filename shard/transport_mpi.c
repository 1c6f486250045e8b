/* transport_mpi.c: the MPI transport over host buffers (transport.h), for CPU ranks and the
 * control plane.
 *
 * DESIGN
 * Three communicators, all with MPI_ERRORS_RETURN: a duplicate of the world (MPI_COMM_WORLD, or
 * the engine ranks once ts_transport_mpi_set_aside set a rank apart; transport_mpi.h) (step
 * descriptor broadcast, barrier), the TP group of this stage (MPI_Comm_split by stage;
 * all-reduce) and the pipeline column (split by TP rank, ranked by stage; activations
 * stage -> stage + 1 and logits last stage -> rank 0). No blocking MPI call is used: each
 * operation starts a nonblocking one (MPI_Isend / Irecv / Iallreduce / Ibcast / Ibarrier)
 * and polls it with MPI_Test against the deadline, backing off from spinning to yielding
 * to short sleeps (the CI machine runs 4 ranks on 2 cores). On expiry: TS_TIMEOUT naming
 * the operation and the peer; a pending request is left behind (the transport is broken
 * and the caller aborts the job).
 */
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "transport.h"
#include "transport_mpi.h"

/* ts_transport_mpi_set_aside: the engine ranks' communicator (MPI_COMM_NULL: the world)
 * and the side channel {world rank 0, the rank set aside}. g_shared: ts_transport_mpi_init
 * ran, so MPI outlives the transports (only ts_transport_mpi_finalize finalizes it). */
static MPI_Comm g_engine = MPI_COMM_NULL, g_side = MPI_COMM_NULL;
static bool g_shared;

MPI_Comm ts_transport_mpi_engine_world(void) {
    return g_engine != MPI_COMM_NULL ? g_engine : MPI_COMM_WORLD;
}

MPI_Comm ts_transport_mpi_side_comm(void) { return g_side; }

typedef struct {
    MPI_Comm world, tp, pipe;
    bool own_init;
} mctx;

static mctx *M(ts_transport *t) { return (mctx *)t->ctx; }

static ts_status mpi_fail(int rc, const char *fmt_op, int32_t rank) {
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "code %d", rc);
    return TS_FAIL(TS_MPI, "rank %d: %s: %s", rank, fmt_op, s);
}

/* Polls req until done or the deadline. `op` names the operation for messages. */
static ts_status wait_req(ts_transport *t, MPI_Request *req, const char *op) {
    const double t0 = MPI_Wtime();
    for (unsigned spins = 0;; spins++) {
        int flag = 0;
        int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, op, t->rank);
        if (flag) {
            t->stats.wait_s += MPI_Wtime() - t0;
            return TS_OK;
        }
        if (MPI_Wtime() - t0 > t->timeout_s)
            return TS_FAIL(TS_TIMEOUT, "rank %d: %s did not complete within %.1f s "
                           "(TESSERA_COMM_TIMEOUT)", t->rank, op, t->timeout_s);
        if (spins < 200) continue;
        if (spins < 2000) {
            sched_yield();
            continue;
        }
        struct timespec ts = {0, 100000}; /* 0.1 ms */
        nanosleep(&ts, NULL);
    }
}

static int32_t column_rank(ts_transport *t, int32_t stage) { return stage * t->tp + t->tp_rank; }

static ts_status m_send(ts_transport *t, int32_t stage, const void *buf, size_t bytes,
                        int32_t tag, const char *what) {
    char op[160];
    snprintf(op, sizeof op, "send of %s (%zu bytes) to rank %d (stage %d)", what, bytes,
             column_rank(t, stage), stage);
    if (stage < 0 || stage >= t->pp) return TS_FAIL(TS_INVAL, "%s: no such stage", op);
    t->stats.n_ops++;
    t->stats.bytes += bytes;
    const char *p = buf;
    while (bytes > 0) {
        int n = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        MPI_Request req;
        int rc = MPI_Isend(p, n, MPI_BYTE, stage, tag, M(t)->pipe, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, op, t->rank);
        TS_TRY(wait_req(t, &req, op));
        p += n;
        bytes -= (size_t)n;
    }
    return TS_OK;
}

static ts_status m_recv(ts_transport *t, int32_t stage, void *buf, size_t bytes, int32_t tag,
                        const char *what) {
    char op[160];
    snprintf(op, sizeof op, "receive of %s (%zu bytes) from rank %d (stage %d)", what, bytes,
             column_rank(t, stage), stage);
    if (stage < 0 || stage >= t->pp) return TS_FAIL(TS_INVAL, "%s: no such stage", op);
    t->stats.n_ops++;
    t->stats.bytes += bytes;
    char *p = buf;
    while (bytes > 0) {
        int n = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        MPI_Request req;
        int rc = MPI_Irecv(p, n, MPI_BYTE, stage, tag, M(t)->pipe, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, op, t->rank);
        TS_TRY(wait_req(t, &req, op));
        p += n;
        bytes -= (size_t)n;
    }
    return TS_OK;
}

static ts_status m_allreduce(ts_transport *t, float *buf, size_t n) {
    if (t->tp == 1) return TS_OK;
    char op[160];
    snprintf(op, sizeof op, "all-reduce of %zu floats in the TP group of stage %d (ranks %d..%d)",
             n, t->stage, t->stage * t->tp, t->stage * t->tp + t->tp - 1);
    t->stats.n_ops++;
    t->stats.n_allreduce++;
    t->stats.bytes += n * sizeof(float);
    while (n > 0) {
        int c = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, c, MPI_FLOAT, MPI_SUM, M(t)->tp, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, op, t->rank);
        TS_TRY(wait_req(t, &req, op));
        buf += c;
        n -= (size_t)c;
    }
    return TS_OK;
}

static ts_status m_bcast(ts_transport *t, void *buf, size_t bytes, const char *what) {
    if (t->world == 1) return TS_OK;
    char op[160];
    snprintf(op, sizeof op, "broadcast of %s (%zu bytes) from rank 0", what, bytes);
    char *p = buf;
    while (bytes > 0) {
        int n = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        MPI_Request req;
        int rc = MPI_Ibcast(p, n, MPI_BYTE, 0, M(t)->world, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, op, t->rank);
        TS_TRY(wait_req(t, &req, op));
        p += n;
        bytes -= (size_t)n;
    }
    return TS_OK;
}

static ts_status m_barrier(ts_transport *t) {
    MPI_Request req;
    int rc = MPI_Ibarrier(M(t)->world, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "barrier", t->rank);
    return wait_req(t, &req, "barrier of all ranks");
}

static void m_abort(ts_transport *t, int code) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
}

static void m_close(ts_transport *t) {
    if (!t) return;
    mctx *m = M(t);
    if (m) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) {
            if (m->pipe != MPI_COMM_NULL) MPI_Comm_free(&m->pipe);
            if (m->tp != MPI_COMM_NULL) MPI_Comm_free(&m->tp);
            if (m->world != MPI_COMM_NULL) MPI_Comm_free(&m->world);
            if (m->own_init) MPI_Finalize();
        }
        ts_free(m);
    }
    ts_free(t);
}

static const struct ts_transport_i mpi_ops = {
    .name = "mpi", .close = m_close, .send = m_send, .recv = m_recv,
    .allreduce_sum = m_allreduce, .bcast = m_bcast, .barrier = m_barrier, .abort = m_abort,
};

/* TESSERA_MPI_AS_DEVICE=1 (tests): the MPI transport claims device buffers, so that CPU
 * ranks run the engine's device-transport path (no host staging, fences) that the NCCL
 * transport takes on GPUs; the CPU backend's memory is host memory, so MPI can move it. */
static ts_status m_bind(ts_transport *t, void *stream) { return TS_OK; }
static ts_status m_fence(ts_transport *t) { return TS_OK; }
static const struct ts_transport_i mpi_dev_ops = {
    .name = "mpi", .close = m_close, .send = m_send, .recv = m_recv,
    .allreduce_sum = m_allreduce, .bcast = m_bcast, .barrier = m_barrier, .abort = m_abort,
    .bind_stream = m_bind, .fence = m_fence,
};

/* True once this library initialized MPI (then it also finalizes it: the transport's close
 * or ts_transport_mpi_finalize). */
static bool g_own_init;

/* MPI_Init_thread unless MPI is initialized already (by this library or the program). */
static ts_status mpi_init(void) {
    int inited = 0, provided = 0, fin = 0;
    MPI_Finalized(&fin);
    if (fin) return TS_FAIL(TS_MPI, "MPI was already finalized");
    MPI_Initialized(&inited);
    if (!inited) {
        /* serialized: tesserad's rank 0 loads the engine on its main thread and steps it
         * on the scheduler thread (never two at once) */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS) return TS_FAIL(TS_MPI, "MPI_Init_thread failed (%d)", rc);
        g_own_init = true;
        if (provided < MPI_THREAD_SERIALIZED)
            TS_LOG_WARN("this MPI library gives thread level %d only (serialized wanted): "
                        "a daemon's distributed engine may misbehave", provided);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return TS_OK;
}

void ts_transport_mpi_finalize(void) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (g_shared) return; /* MPI outlives the transports: ts_transport_mpi_end */
    if (g_own_init && inited && !fin) MPI_Finalize();
}

void ts_transport_mpi_end(void) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (!inited || fin) return;
    if (g_engine != MPI_COMM_NULL) MPI_Comm_free(&g_engine);
    if (g_side != MPI_COMM_NULL) MPI_Comm_free(&g_side);
    if (g_own_init) MPI_Finalize();
}

ts_status ts_transport_mpi_allgather(const void *mine, size_t bytes, void *all, int32_t cap,
                                     int32_t *rank, int32_t *world) {
    TS_TRY(mpi_init());
    const MPI_Comm wc = ts_transport_mpi_engine_world(); /* the world, or the engine ranks */
    int r = 0, w = 1;
    MPI_Comm_rank(wc, &r);
    MPI_Comm_size(wc, &w);
    *rank = r;
    *world = w;
    if (w > cap) return TS_FAIL(TS_INVAL, "%d ranks: at most %d are supported", w, cap);
    if (bytes > (size_t)INT_MAX) return TS_FAIL(TS_INVAL, "all-gather of %zu bytes", bytes);
    ts_transport t = {.rank = r, .world = w, .timeout_s = ts_transport_default_timeout()};
    MPI_Request req;
    int rc = MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, wc, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-gather of the ranks' memory", r);
    return wait_req(&t, &req, "all-gather of the ranks' memory budgets (startup)");
}

ts_status ts_transport_mpi_bcast0(void *buf, size_t bytes, const char *what) {
    TS_TRY(mpi_init());
    const MPI_Comm wc = ts_transport_mpi_engine_world();
    int r = 0;
    MPI_Comm_rank(wc, &r);
    if (bytes > (size_t)INT_MAX) return TS_FAIL(TS_INVAL, "broadcast of %zu bytes", bytes);
    ts_transport t = {.rank = r, .timeout_s = ts_transport_default_timeout()};
    char op[160];
    snprintf(op, sizeof op, "broadcast of %s from rank 0", what);
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, wc, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, op, r);
    return wait_req(&t, &req, op);
}

ts_status ts_transport_mpi_open(int32_t tp, ts_transport **out) {
    *out = NULL;
    int rc;
    TS_TRY(mpi_init());
    const bool own = g_own_init && !g_shared; /* closing it finalizes MPI */
    const MPI_Comm w = ts_transport_mpi_engine_world(); /* the world, or the engine ranks */
    int rank = 0, world = 1;
    MPI_Comm_rank(w, &rank);
    MPI_Comm_size(w, &world);
    if (tp <= 0) tp = 1;
    if (world % tp != 0) {
        if (own) MPI_Finalize();
        return TS_FAIL(TS_INVAL, "tp %d does not divide the %d ranks of the job", tp, world);
    }
    ts_transport *t = ts_calloc(1, sizeof *t);
    mctx *m = ts_calloc(1, sizeof *m);
    if (!t || !m) {
        ts_free(t);
        ts_free(m);
        return TS_FAIL(TS_NOMEM, "transport");
    }
    m->world = m->tp = m->pipe = MPI_COMM_NULL;
    m->own_init = own;
    t->ops = &mpi_ops;
    t->ctx = m;
    t->rank = rank;
    t->world = world;
    t->tp = tp;
    t->pp = world / tp;
    t->stage = rank / tp;
    t->tp_rank = rank % tp;
    t->timeout_s = ts_transport_default_timeout();
    t->device = -1;
    ts_status st = TS_OK;
    if ((rc = MPI_Comm_dup(w, &m->world)) != MPI_SUCCESS ||
        (rc = MPI_Comm_split(w, t->stage, t->tp_rank, &m->tp)) != MPI_SUCCESS ||
        (rc = MPI_Comm_split(w, t->tp_rank, t->stage, &m->pipe)) != MPI_SUCCESS)
        st = mpi_fail(rc, "communicator setup", rank);
    const char *emu = getenv("TESSERA_MPI_AS_DEVICE");
    if (emu && !strcmp(emu, "1")) {
        t->ops = &mpi_dev_ops;
        t->device_buffers = true;
    }
    if (st == TS_OK) {
        MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
        MPI_Comm_set_errhandler(m->tp, MPI_ERRORS_RETURN);
        MPI_Comm_set_errhandler(m->pipe, MPI_ERRORS_RETURN);
        *out = t;
        return TS_OK;
    }
    m_close(t);
    return st;
}

ts_status ts_transport_mpi_init(int32_t *rank, int32_t *world, bool *multiple) {
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* multiple: a daemon's safety gate thread talks to the safety rank while the
         * scheduler thread steps a distributed engine */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS) return TS_FAIL(TS_MPI, "MPI_Init_thread failed (%d)", rc);
        g_own_init = true;
    } else {
        MPI_Query_thread(&provided);
    }
    g_shared = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int r = 0, n = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    *rank = r;
    *world = n;
    *multiple = provided >= MPI_THREAD_MULTIPLE;
    return TS_OK;
}

ts_status ts_transport_mpi_set_aside(int32_t aside) {
    int r = 0, n = 1, rc;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (aside <= 0 || aside >= n || g_engine != MPI_COMM_NULL)
        return TS_FAIL(TS_INVAL, "rank %d cannot be set aside in a job of %d ranks", aside, n);
    /* engine ranks keep their order; the side channel has world rank 0 first */
    if ((rc = MPI_Comm_split(MPI_COMM_WORLD, r == aside, r, &g_engine)) != MPI_SUCCESS ||
        (rc = MPI_Comm_split(MPI_COMM_WORLD, r == 0 || r == aside ? 0 : MPI_UNDEFINED, r,
                             &g_side)) != MPI_SUCCESS)
        return mpi_fail(rc, "splitting the safety rank off the world", r);
    MPI_Comm_set_errhandler(g_engine, MPI_ERRORS_RETURN);
    if (g_side != MPI_COMM_NULL) MPI_Comm_set_errhandler(g_side, MPI_ERRORS_RETURN);
    if (r == aside) { /* the rank aside has no engine */
        MPI_Comm_free(&g_engine);
        g_engine = MPI_COMM_NULL;
    }
    return TS_OK;
}
