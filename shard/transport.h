/* transport.h: moving activations between the ranks of one job (architecture.md,
 * "Process model"): point-to-point between pipeline stages, all-reduce inside a TP group,
 * broadcast of the step descriptor from rank 0, barrier, abort.
 *
 * Implementations: local (one rank; transport_local.c), MPI over host buffers
 * (transport_mpi.c, CPU ranks; built when MPI is found, TS_HAVE_MPI) and NCCL over device
 * buffers (transport_nccl.c, GPU ranks; built with CUDA, MPI and NCCL, TS_HAVE_NCCL): there
 * `device_buffers` is true, send / recv / allreduce_sum take device pointers and are only
 * enqueued (ordered after the compute stream given to bind_stream, and the compute stream
 * after them); `fence` waits for everything enqueued with the deadline. bcast and barrier
 * (the control plane) stay on MPI and host memory for every transport.
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
    /* Device transports only (NULL otherwise). bind_stream: the compute stream (a
     * cudaStream_t) that communication is ordered against. fence: waits until all work
     * enqueued on the compute stream so far (communication included) is done, polling for
     * asynchronous errors; on the deadline it aborts the communicators and returns
     * TS_TIMEOUT naming this rank and the last operation enqueued. */
    ts_status (*bind_stream)(ts_transport *t, void *stream);
    ts_status (*fence)(ts_transport *t);
    /* Recorded steps (CUDA graphs), device transports that allow them (NULL otherwise).
     * graph_ok: 1 if this rank's operations may be recorded into a graph of the bound
     * compute stream now (NCCL: not while profiling or after an abort). graph_replayed: a
     * recorded step holding n_ops operations (n_allreduce all-reduces, `bytes` payload) was
     * launched again: counts them and makes the next fence wait for them with the deadline
     * and the asynchronous-error polling. */
    int (*graph_ok)(ts_transport *t);
    void (*graph_replayed)(ts_transport *t, uint64_t n_ops, uint64_t n_allreduce,
                           uint64_t bytes);
};

/* Communication counters (every transport keeps them; for benchmarks). */
typedef struct ts_transport_stats {
    uint64_t n_ops;          /* send / recv / allreduce_sum calls */
    uint64_t bytes;          /* payload bytes of those */
    double wait_s;           /* host seconds blocked in them (and in fence) */
    double device_s;         /* device transports with TESSERA_COMM_PROFILE=1: summed
                              * duration of the operations on the communication stream
                              * (a receive posted early includes waiting for its sender) */
    double allreduce_s;      /* the same, all-reduces only */
    uint64_t n_allreduce;
} ts_transport_stats;

struct ts_transport {
    const struct ts_transport_i *ops;
    void *ctx;
    int32_t rank, world;     /* world rank and size */
    int32_t tp, pp;          /* group sizes */
    int32_t stage, tp_rank;  /* this rank's place */
    double timeout_s;        /* deadline of every blocking operation */
    bool device_buffers;     /* send / recv / allreduce_sum take device memory (NCCL) */
    int device;              /* the CUDA device of this rank (device transports), else -1 */
    ts_transport_stats stats;
};

enum { TS_TAG_ACTIVATIONS = 11, TS_TAG_LOGITS = 12 };

/* One rank, no peers (world 1, tp 1, pp 1). */
ts_status ts_transport_local_open(ts_transport **out);

/* MPI: initializes MPI (MPI_Init_thread, FUNNELED) unless already initialized, splits the
 * world into TP groups of `tp` consecutive ranks and pipeline columns (same TP rank) and
 * sets MPI_ERRORS_RETURN. TS_INVAL when tp does not divide the world size. Only in the
 * library ts_transport_mpi (built when MPI is found; its users get TS_HAVE_MPI). */
ts_status ts_transport_mpi_open(int32_t tp, ts_transport **out);
/* NCCL for GPU ranks (only in the library ts_transport_nccl; its users get TS_HAVE_NCCL):
 * opens the MPI transport for the control plane (as ts_transport_mpi_open), selects CUDA
 * device `device` (< 0: local rank % device count, the local rank from
 * OMPI_COMM_WORLD_LOCAL_RANK / MPI_COMM_TYPE_SHARED), creates one NCCL communicator per TP
 * group and per pipeline column (unique ids made on rank 0, broadcast over MPI) and
 * checks each with a small warm-up operation. Errors name the rank, device and step. */
ts_status ts_transport_nccl_open(int32_t tp, int device, ts_transport **out);

/* Before any transport exists (daemon/dist.c: every rank's memory budget and host for
 * `--tp auto`): these initialize MPI as ts_transport_mpi_open does unless it is already,
 * and poll against the default deadline (TS_TIMEOUT naming the operation). allgather:
 * `bytes` from every rank into all (world * bytes, by rank; TS_INVAL when world > cap)
 * over the transports' world (MPI_COMM_WORLD, or the engine ranks after a rank was set aside,
 * below), with this rank and the world size; bcast0: its rank 0's buf to every rank. finalize: ends
 * MPI if this library started it and it is not finalized yet (a job ending before or
 * without a transport; closing an MPI transport finalizes too). Only in ts_transport_mpi. */
ts_status ts_transport_mpi_allgather(const void *mine, size_t bytes, void *all, int32_t cap,
                                     int32_t *rank, int32_t *world);
ts_status ts_transport_mpi_bcast0(void *buf, size_t bytes, const char *what);
/* A rank set aside (tesserad's safety classifier rank; only in ts_transport_mpi):
 * ts_transport_mpi_init initializes MPI unless already initialized, asking for
 * MPI_THREAD_MULTIPLE (*multiple: whether given), and returns this process's rank and the
 * size of MPI_COMM_WORLD. ts_transport_mpi_set_aside (collective over MPI_COMM_WORLD)
 * splits world rank `aside` (> 0) off: transports opened afterwards span the other ranks
 * only (ranks renumbered in world order; world rank 0 stays rank 0), and world rank 0 and
 * `aside` share a communicator of their own (transport_mpi.h). After
 * ts_transport_mpi_init MPI outlives the transports (closing one, or
 * ts_transport_mpi_finalize, does not finalize it): ts_transport_mpi_end frees those
 * communicators and finalizes MPI (if this library started it). */
ts_status ts_transport_mpi_init(int32_t *rank, int32_t *world, bool *multiple);
ts_status ts_transport_mpi_set_aside(int32_t aside);
void ts_transport_mpi_finalize(void);
void ts_transport_mpi_end(void);

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
