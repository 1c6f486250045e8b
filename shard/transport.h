/* transport.h: moving activations between the ranks of one job (architecture.md,
 * "Process model"): point-to-point between pipeline stages, all-reduce inside a TP group,
 * broadcast of the step descriptor from rank 0, barrier, abort.
 *
 * Implementations: local (one rank; transport_local.c) and MPI over host buffers
 * (transport_mpi.c, CPU ranks; built when MPI is found, TS_HAVE_MPI). NCCL (device
 * buffers) comes next behind the same table.
 *
 * Ranks: world rank = stage * tp + tp_rank (plan.h). Point-to-point peers are named by
 * stage: a rank talks to the rank of the same TP rank in another stage (its pipeline
 * column), or, for the logits, stage 0 TP rank 0 == world rank 0.
 *
 * Every blocking operation has a deadline (`timeout_s`, default 60 s, environment
 * TESSERA_COMM_TIMEOUT in seconds): on expiry it returns TS_TIMEOUT with a message naming
 * the operation and the peer rank(s). After any failure the transport is broken: the
 * caller reports and calls abort (which ends the whole job under MPI).
 */
#ifndef TS_TRANSPORT_H
#define TS_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_transport ts_transport;

struct ts_transport_i {
    const char *name;
    void (*close)(ts_transport *t);
    /* to / from the rank of stage `stage` in this rank's pipeline column; `what` names the
     * payload in error messages ("activations", "logits") */
    ts_status (*send)(ts_transport *t, int32_t stage, const void *buf, size_t bytes,
                      int32_t tag, const char *what);
    ts_status (*recv)(ts_transport *t, int32_t stage, void *buf, size_t bytes, int32_t tag,
                      const char *what);
    /* in place: buf (n floats) = sum over the ranks of this rank's TP group */
    ts_status (*allreduce_sum)(ts_transport *t, float *buf, size_t n);
    /* world rank 0's buf (bytes) to every rank */
    ts_status (*bcast)(ts_transport *t, void *buf, size_t bytes, const char *what);
    ts_status (*barrier)(ts_transport *t);
    /* Ends the job (MPI_Abort under MPI); does not return there. No-op locally. */
    void (*abort)(ts_transport *t, int code);
};

struct ts_transport {
    const struct ts_transport_i *ops;
    void *ctx;
    int32_t rank, world;     /* world rank and size */
    int32_t tp, pp;          /* group sizes */
    int32_t stage, tp_rank;  /* this rank's place */
    double timeout_s;        /* deadline of every blocking operation */
};

enum { TS_TAG_ACTIVATIONS = 11, TS_TAG_LOGITS = 12 };

/* One rank, no peers (world 1, tp 1, pp 1). */
ts_status ts_transport_local_open(ts_transport **out);

/* MPI: initializes MPI (MPI_Init_thread, FUNNELED) unless already initialized, splits the
 * world into TP groups of `tp` consecutive ranks and pipeline columns (same TP rank) and
 * sets MPI_ERRORS_RETURN. TS_INVAL when tp does not divide the world size. Only in the
 * library ts_transport_mpi (built when MPI is found; its users get TS_HAVE_MPI). */
ts_status ts_transport_mpi_open(int32_t tp, ts_transport **out);
/* True when this process was started by mpirun (Open MPI / PMIx environment). */
int ts_transport_mpi_launched(void);

/* The default deadline: TESSERA_COMM_TIMEOUT seconds, or 60. */
double ts_transport_default_timeout(void);

static inline void ts_transport_close(ts_transport *t) {
    if (t) t->ops->close(t);
}

#ifdef __cplusplus
}
#endif
#endif
