/* transport_nccl.c: the NCCL transport (transport.h) for GPU ranks: activations and
 * partial sums move between device buffers; the control plane (bcast, barrier, abort)
 * stays on the MPI transport.
 *
 * DESIGN
 * - Open: the MPI transport first (control plane, and the bootstrap); each rank selects
 *   its CUDA device (local rank % device count unless given); rank 0 makes one NCCL
 *   unique id per TP group (tp > 1) and per pipeline column (pp > 1) and broadcasts them
 *   over MPI; every rank initializes its TP communicator, then its column communicator
 *   (blocking communicators; the same order on every rank). Each setup step ends with an
 *   agreement (MPI all-reduce of an ok flag, with the deadline), so a failure on one rank
 *   stops every rank with a message, the failing rank naming what failed. A warm-up then
 *   runs one all-reduce per TP group and one send / recv along each column (stage s ->
 *   s + 1 and last -> 0, the paths the engine uses) on known values and checks the results:
 *   connections are made at open, and a broken link shows up there, named.
 * - Ordering: one communication stream (all NCCL calls of this rank, so the operations of
 *   the two communicators are serialized in program order on every rank: no cross-
 *   communicator deadlock). Per operation: an event recorded on the compute stream is
 *   waited for by the communication stream, the NCCL call is enqueued there, and an event
 *   recorded after it is waited for by the compute stream. Nothing blocks the host.
 * - Recorded steps: that fork / join through events is what CUDA stream capture follows,
 *   so a tensor-parallel step recorded on the compute stream (engine.c, CUDA graphs)
 *   records its all-reduces too (graph_ok); a replay is counted by graph_replayed and the
 *   next fence waits for it with the deadline and the error polling like any operation.
 * - Deadline: fence records an event on the compute stream and polls it; while waiting it
 *   polls ncclCommGetAsyncError of both communicators. On an asynchronous error or after
 *   TESSERA_COMM_TIMEOUT seconds it aborts both communicators (ncclCommAbort) and fails,
 *   naming this rank, its GPU and the oldest operation not yet complete (each operation
 *   has its own completion event in a ring of TS_NCCL_RING entries).
 * - TESSERA_COMM_PROFILE=1: timing events around each operation on the communication
 *   stream; fence adds their summed durations to stats.device_s (time the communication
 *   stream spent in NCCL, including waiting for the peer).
 */
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "transport.h"
#include "transport_mpi.h"

#define TS_NCCL_RING 1024

typedef struct {
    cudaEvent_t done, start; /* start: only with profiling */
    bool allreduce;
    char op[176];
} op_slot;

typedef struct {
    ts_transport *mpi;       /* control plane */
    ncclComm_t tp, pipe;     /* NULL when the group has one rank */
    cudaStream_t cs;         /* communication stream */
    cudaStream_t compute;    /* bound compute stream */
    cudaEvent_t ev_in, ev_fence;
    bool profile, aborted, ev_ready;
    op_slot *ring;
    uint64_t n_enq, n_fenced; /* operations enqueued; enqueued before the last fence */
    uint64_t replayed;        /* operations of recorded steps launched since the last fence */
} nctx;

static nctx *N(ts_transport *t) { return (nctx *)t->ctx; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void backoff(unsigned spins) {
    if (spins < 20000) return;
    if (spins < 40000) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 50000}; /* 50 us */
    nanosleep(&ts, NULL);
}

static ts_status nccl_fail(ts_transport *t, ncclResult_t r, ncclComm_t comm, const char *op) {
    const char *last = ncclGetLastError(comm);
    return TS_FAIL(TS_NCCL, "rank %d (GPU %d): %s: %s%s%s", t->rank, t->device, op,
                   ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}

static ts_status cuda_fail(ts_transport *t, cudaError_t e, const char *call, const char *op) {
    (void)cudaGetLastError();
    return TS_FAIL(TS_CUDA, "rank %d (GPU %d): %s: %s: %s (%s)", t->rank, t->device, op, call,
                   cudaGetErrorName(e), cudaGetErrorString(e));
}

#define CUT(call, op)                                                                      \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) return cuda_fail(t, e_, #call, op);                         \
    } while (0)

static void abort_comms(nctx *n) {
    if (n->aborted) return;
    n->aborted = true;
    if (n->tp) ncclCommAbort(n->tp);
    if (n->pipe) ncclCommAbort(n->pipe);
    n->tp = n->pipe = NULL;
}

/* ---- enqueueing ---- */

/* Before an operation: the communication stream waits for the compute stream. Returns the
 * ring slot of the operation. */
static ts_status op_begin(ts_transport *t, const char *op, op_slot **out) {
    nctx *n = N(t);
    if (n->aborted)
        return TS_FAIL(TS_UNAVAILABLE, "rank %d: %s: the NCCL communicators were aborted "
                       "after an earlier failure", t->rank, op);
    if (!n->compute)
        return TS_FAIL(TS_INVAL, "rank %d: %s: no compute stream bound (bind_stream)", t->rank, op);
    op_slot *s = &n->ring[n->n_enq % TS_NCCL_RING];
    snprintf(s->op, sizeof s->op, "%s", op);
    s->allreduce = false;
    CUT(cudaEventRecord(n->ev_in, n->compute), op);
    CUT(cudaStreamWaitEvent(n->cs, n->ev_in, 0), op);
    if (n->profile) CUT(cudaEventRecord(s->start, n->cs), op);
    *out = s;
    return TS_OK;
}

/* After it: its completion event; the compute stream waits for it. */
static ts_status op_end(ts_transport *t, op_slot *s, const char *op) {
    nctx *n = N(t);
    CUT(cudaEventRecord(s->done, n->cs), op);
    CUT(cudaStreamWaitEvent(n->compute, s->done, 0), op);
    n->n_enq++;
    return TS_OK;
}

static int32_t column_rank(ts_transport *t, int32_t stage) { return stage * t->tp + t->tp_rank; }

static ts_status n_p2p(ts_transport *t, bool send, int32_t stage, void *buf, size_t bytes,
                       const char *what) {
    nctx *n = N(t);
    char op[176];
    snprintf(op, sizeof op, "NCCL %s of %s (%zu bytes) %s rank %d (stage %d)",
             send ? "send" : "receive", what, bytes, send ? "to" : "from",
             column_rank(t, stage), stage);
    if (stage < 0 || stage >= t->pp || stage == t->stage || !n->pipe)
        return TS_FAIL(TS_INVAL, "rank %d: %s: no such peer stage", t->rank, op);
    op_slot *s;
    TS_TRY(op_begin(t, op, &s));
    ncclResult_t r = send ? ncclSend(buf, bytes, ncclUint8, stage, n->pipe, n->cs)
                          : ncclRecv(buf, bytes, ncclUint8, stage, n->pipe, n->cs);
    if (r != ncclSuccess) {
        ts_status st = nccl_fail(t, r, n->pipe, op);
        abort_comms(n);
        return st;
    }
    t->stats.n_ops++;
    t->stats.bytes += bytes;
    return op_end(t, s, op);
}

static ts_status n_send(ts_transport *t, int32_t stage, const void *buf, size_t bytes,
                        int32_t tag, const char *what) {
    (void)tag; /* NCCL matches point-to-point operations in order per peer pair */
    return n_p2p(t, true, stage, (void *)buf, bytes, what);
}

static ts_status n_recv(ts_transport *t, int32_t stage, void *buf, size_t bytes, int32_t tag,
                        const char *what) {
    (void)tag;
    return n_p2p(t, false, stage, buf, bytes, what);
}

static ts_status n_allreduce(ts_transport *t, float *buf, size_t count) {
    if (t->tp == 1) return TS_OK;
    nctx *n = N(t);
    char op[176];
    snprintf(op, sizeof op, "NCCL all-reduce of %zu floats in the TP group of stage %d (ranks "
             "%d..%d)", count, t->stage, t->stage * t->tp, t->stage * t->tp + t->tp - 1);
    op_slot *s;
    TS_TRY(op_begin(t, op, &s));
    s->allreduce = true;
    t->stats.n_allreduce++;
    ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, n->tp, n->cs);
    if (r != ncclSuccess) {
        ts_status st = nccl_fail(t, r, n->tp, op);
        abort_comms(n);
        return st;
    }
    t->stats.n_ops++;
    t->stats.bytes += count * sizeof(float);
    return op_end(t, s, op);
}

/* Waits for `ev` (recorded on some stream) with the deadline, polling NCCL's asynchronous
 * errors. `what` names the wait for messages when no ring slot is pending. */
static ts_status wait_event(ts_transport *t, cudaEvent_t ev, const char *what) {
    nctx *n = N(t);
    const double t0 = now_s();
    for (unsigned spins = 0;; spins++) {
        cudaError_t q = cudaEventQuery(ev);
        if (q == cudaSuccess) {
            t->stats.wait_s += now_s() - t0;
            return TS_OK;
        }
        if (q != cudaErrorNotReady) {
            ts_status st = cuda_fail(t, q, "cudaEventQuery", what);
            abort_comms(n);
            return st;
        }
        ncclComm_t comms[2] = {n->tp, n->pipe};
        for (int i = 0; i < 2; i++) {
            if (!comms[i]) continue;
            ncclResult_t ar = ncclSuccess;
            ncclResult_t r = ncclCommGetAsyncError(comms[i], &ar);
            if (r != ncclSuccess || (ar != ncclSuccess && ar != ncclInProgress)) {
                ts_status st = nccl_fail(t, r != ncclSuccess ? r : ar, comms[i],
                                         "asynchronous NCCL error while waiting for communication");
                abort_comms(n);
                return st;
            }
        }
        if (now_s() - t0 > t->timeout_s) {
            /* the oldest operation since the last fence that has not completed */
            const char *pending = what;
            uint64_t from = n->n_fenced;
            if (n->n_enq - from > TS_NCCL_RING) from = n->n_enq - TS_NCCL_RING;
            for (uint64_t i = from; i < n->n_enq; i++) {
                op_slot *s = &n->ring[i % TS_NCCL_RING];
                if (cudaEventQuery(s->done) == cudaErrorNotReady) {
                    pending = s->op;
                    break;
                }
            }
            (void)cudaGetLastError();
            ts_status st = TS_FAIL(TS_TIMEOUT, "rank %d (GPU %d): %s did not complete within "
                                   "%.1f s (TESSERA_COMM_TIMEOUT); NCCL communicators aborted",
                                   t->rank, t->device, pending, t->timeout_s);
            abort_comms(n);
            return st;
        }
        backoff(spins);
    }
}

static ts_status n_fence(ts_transport *t) {
    nctx *n = N(t);
    if (n->aborted)
        return TS_FAIL(TS_UNAVAILABLE, "rank %d: the NCCL communicators were aborted after an "
                       "earlier failure", t->rank);
    if (!n->compute) return TS_OK;
    if (n->n_enq == n->n_fenced && !n->replayed) {
        /* no communication since the last fence: the backend's own sync suffices */
        return TS_OK;
    }
    char what[160];
    if (n->replayed)
        snprintf(what, sizeof what, "a recorded step (CUDA graph) with %llu NCCL operations",
                 (unsigned long long)n->replayed);
    else
        snprintf(what, sizeof what, "the compute stream (after communication)");
    CUT(cudaEventRecord(n->ev_fence, n->compute), "fence");
    TS_TRY(wait_event(t, n->ev_fence, what));
    n->replayed = 0;
    if (n->profile) {
        uint64_t from = n->n_fenced;
        if (n->n_enq - from > TS_NCCL_RING) from = n->n_enq - TS_NCCL_RING;
        for (uint64_t i = from; i < n->n_enq; i++) {
            op_slot *s = &n->ring[i % TS_NCCL_RING];
            float ms = 0;
            if (cudaEventElapsedTime(&ms, s->start, s->done) == cudaSuccess) {
                t->stats.device_s += (double)ms * 1e-3;
                if (s->allreduce) t->stats.allreduce_s += (double)ms * 1e-3;
            } else
                (void)cudaGetLastError();
        }
    }
    n->n_fenced = n->n_enq;
    return TS_OK;
}

/* Recording is safe: the operations of a captured region only enqueue work (op_begin /
 * op_end fork the communication stream off the compute stream and join it back with
 * events, which stream capture follows); NCCL records its kernels into the graph. Not with
 * profiling (its timing events cannot be read from a replayed graph). */
static int n_graph_ok(ts_transport *t) {
    const nctx *n = N(t);
    return n->compute && !n->profile && !n->aborted;
}

static void n_graph_replayed(ts_transport *t, uint64_t n_ops, uint64_t n_allreduce,
                             uint64_t bytes) {
    nctx *n = N(t);
    n->replayed += n_ops;
    t->stats.n_ops += n_ops;
    t->stats.n_allreduce += n_allreduce;
    t->stats.bytes += bytes;
}

static ts_status n_bind(ts_transport *t, void *stream) {
    N(t)->compute = (cudaStream_t)stream;
    return TS_OK;
}

/* The control plane: the MPI transport, with this transport's deadline and counters. */
static ts_status n_bcast(ts_transport *t, void *buf, size_t bytes, const char *what) {
    ts_transport *m = N(t)->mpi;
    m->timeout_s = t->timeout_s;
    const double w0 = m->stats.wait_s;
    ts_status st = m->ops->bcast(m, buf, bytes, what);
    t->stats.wait_s += m->stats.wait_s - w0;
    return st;
}

static ts_status n_barrier(ts_transport *t) {
    ts_transport *m = N(t)->mpi;
    m->timeout_s = t->timeout_s;
    return m->ops->barrier(m);
}

static void n_abort(ts_transport *t, int code) {
    nctx *n = N(t);
    abort_comms(n);
    n->mpi->ops->abort(n->mpi, code);
}

static void n_close(ts_transport *t) {
    if (!t) return;
    nctx *n = N(t);
    if (n) {
        if (t->device >= 0) cudaSetDevice(t->device);
        if (!n->aborted) {
            if (n->cs) cudaStreamSynchronize(n->cs);
            if (n->tp) ncclCommDestroy(n->tp);
            if (n->pipe) ncclCommDestroy(n->pipe);
        }
        if (n->ring)
            for (int i = 0; i < TS_NCCL_RING; i++) {
                if (n->ring[i].done) cudaEventDestroy(n->ring[i].done);
                if (n->ring[i].start) cudaEventDestroy(n->ring[i].start);
            }
        ts_free(n->ring);
        if (n->ev_ready) {
            cudaEventDestroy(n->ev_in);
            cudaEventDestroy(n->ev_fence);
        }
        if (n->cs) cudaStreamDestroy(n->cs);
        (void)cudaGetLastError();
        ts_transport_close(n->mpi);
        ts_free(n);
    }
    ts_free(t);
}

static const struct ts_transport_i nccl_ops = {
    .name = "nccl", .close = n_close, .send = n_send, .recv = n_recv,
    .allreduce_sum = n_allreduce, .bcast = n_bcast, .barrier = n_barrier, .abort = n_abort,
    .bind_stream = n_bind, .fence = n_fence,
    .graph_ok = n_graph_ok, .graph_replayed = n_graph_replayed,
};

/* ---- open ---- */

/* An MPI operation on the engine ranks' world polled against the deadline. */
static ts_status mpi_wait(ts_transport *t, MPI_Request *req, const char *op) {
    const double t0 = now_s();
    for (unsigned spins = 0;; spins++) {
        int flag = 0;
        int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return TS_FAIL(TS_MPI, "rank %d: NCCL setup: %s failed (MPI error %d)", t->rank, op, rc);
        if (flag) return TS_OK;
        if (now_s() - t0 > t->timeout_s)
            return TS_FAIL(TS_TIMEOUT, "rank %d: NCCL setup: %s did not complete within %.1f s "
                           "(TESSERA_COMM_TIMEOUT)", t->rank, op, t->timeout_s);
        backoff(spins);
    }
}

/* Every rank says whether its part of `step` worked; all learn whether all did. */
static ts_status agree(ts_transport *t, bool ok, const char *step) {
    int mine = ok ? 1 : 0, all = 0;
    MPI_Request req;
    if (MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MIN, ts_transport_mpi_engine_world(), &req) != MPI_SUCCESS)
        return TS_FAIL(TS_MPI, "rank %d: NCCL setup: agreement after %s failed", t->rank, step);
    TS_TRY(mpi_wait(t, &req, step));
    if (!all && ok)
        return TS_FAIL(TS_UNAVAILABLE, "rank %d: NCCL setup: %s failed on another rank (its "
                       "message names it)", t->rank, step);
    return TS_OK;
}

static int local_rank(void) {
    const char *envs[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
                          "PMIX_LOCAL_RANK"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *s = getenv(envs[i]);
        if (s && *s) return atoi(s);
    }
    MPI_Comm shm;
    int r = 0;
    if (MPI_Comm_split_type(ts_transport_mpi_engine_world(), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &shm) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(shm, &r);
        MPI_Comm_free(&shm);
    }
    return r;
}

static ts_status select_device(ts_transport *t, int device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return TS_FAIL(TS_UNSUPPORTED, "rank %d: the NCCL transport needs a CUDA device: "
                       "cudaGetDeviceCount: %s (%d devices)", t->rank,
                       e != cudaSuccess ? cudaGetErrorString(e) : "no error", count);
    }
    const int lr = local_rank();
    if (device < 0) device = lr % count;
    if (device >= count)
        return TS_FAIL(TS_INVAL, "rank %d: CUDA device %d requested, %d present", t->rank,
                       device, count);
    t->device = device;
    CUT(cudaSetDevice(device), "select device");
    CUT(cudaFree(NULL), "create the CUDA context");
    return TS_OK;
}

static ts_status init_streams(ts_transport *t) {
    nctx *n = N(t);
    CUT(cudaStreamCreateWithFlags(&n->cs, cudaStreamNonBlocking), "communication stream");
    CUT(cudaEventCreateWithFlags(&n->ev_in, cudaEventDisableTiming), "events");
    if (cudaEventCreateWithFlags(&n->ev_fence, cudaEventDisableTiming) != cudaSuccess) {
        cudaEventDestroy(n->ev_in);
        (void)cudaGetLastError();
        return TS_FAIL(TS_CUDA, "rank %d: cudaEventCreate failed", t->rank);
    }
    n->ev_ready = true;
    n->ring = ts_calloc(TS_NCCL_RING, sizeof *n->ring);
    if (!n->ring) return TS_FAIL(TS_NOMEM, "NCCL operation ring");
    const unsigned flags = n->profile ? cudaEventDefault : cudaEventDisableTiming;
    for (int i = 0; i < TS_NCCL_RING; i++) {
        CUT(cudaEventCreateWithFlags(&n->ring[i].done, flags), "events");
        if (n->profile) CUT(cudaEventCreateWithFlags(&n->ring[i].start, cudaEventDefault), "events");
    }
    return TS_OK;
}

/* Unique ids from rank 0: [0, pp) TP groups (by stage), [pp, pp + tp) columns (by TP rank).
 * Slot 0 of the buffer is rank 0's status. */
static ts_status share_ids(ts_transport *t, ncclUniqueId *ids, int n_ids) {
    const size_t bytes = sizeof(int) + sizeof(ncclUniqueId) * (size_t)n_ids;
    char *buf = ts_calloc(1, bytes);
    if (!buf) return TS_FAIL(TS_NOMEM, "NCCL ids");
    int ok = 1;
    char err[256] = "";
    if (t->rank == 0)
        for (int i = 0; i < n_ids && ok; i++) {
            ncclResult_t r = ncclGetUniqueId(&ids[i]);
            if (r != ncclSuccess) {
                ok = 0;
                snprintf(err, sizeof err, "%s", ncclGetErrorString(r));
            }
        }
    if (t->rank == 0) {
        memcpy(buf, &ok, sizeof ok);
        memcpy(buf + sizeof(int), ids, sizeof(ncclUniqueId) * (size_t)n_ids);
    }
    MPI_Request req;
    ts_status st = TS_OK;
    if (MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, ts_transport_mpi_engine_world(), &req) != MPI_SUCCESS)
        st = TS_FAIL(TS_MPI, "rank %d: NCCL setup: broadcast of the unique ids failed", t->rank);
    else
        st = mpi_wait(t, &req, "broadcast of the NCCL unique ids from rank 0");
    if (st == TS_OK) {
        memcpy(&ok, buf, sizeof ok);
        memcpy(ids, buf + sizeof(int), sizeof(ncclUniqueId) * (size_t)n_ids);
        if (!ok)
            st = t->rank == 0 ? TS_FAIL(TS_NCCL, "rank 0: ncclGetUniqueId: %s", err)
                              : TS_FAIL(TS_NCCL, "rank %d: rank 0 could not make the NCCL "
                                        "unique ids (its message says why)", t->rank);
    }
    ts_free(buf);
    return st;
}

/* Known values through every path the engine uses; checks what arrives. */
static ts_status warm_up(ts_transport *t) {
    nctx *n = N(t);
    enum { W = 256 };
    float *d = NULL;
    float h[4 * W];
    CUT(cudaMalloc((void **)&d, sizeof(float) * 4 * W), "warm-up buffer");
    ts_status st = TS_OK;
    for (int i = 0; i < 4 * W; i++) h[i] = (float)(t->rank + 1);
    cudaError_t ce = cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
    if (ce != cudaSuccess) st = cuda_fail(t, ce, "cudaMemcpy", "NCCL warm-up");
    n->compute = n->cs; /* until the engine binds its stream */
    /* [0, W): all-reduce; [W, 2W): to next; [2W, 3W): from previous; [3W, 4W): from last
     * (stage 0) or to stage 0 (last stage) */
    if (st == TS_OK && t->tp > 1) st = n_allreduce(t, d, W);
    if (st == TS_OK && t->pp > 1) {
        ncclResult_t r = ncclGroupStart();
        if (r == ncclSuccess && t->stage + 1 < t->pp)
            r = ncclSend(d + W, W, ncclFloat, t->stage + 1, n->pipe, n->cs);
        if (r == ncclSuccess && t->stage > 0)
            r = ncclRecv(d + 2 * W, W, ncclFloat, t->stage - 1, n->pipe, n->cs);
        if (r == ncclSuccess && t->stage == t->pp - 1)
            r = ncclSend(d + 3 * W, W, ncclFloat, 0, n->pipe, n->cs);
        if (r == ncclSuccess && t->stage == 0)
            r = ncclRecv(d + 3 * W, W, ncclFloat, t->pp - 1, n->pipe, n->cs);
        ncclResult_t r2 = ncclGroupEnd();
        if (r == ncclSuccess) r = r2;
        if (r != ncclSuccess) st = nccl_fail(t, r, n->pipe, "NCCL warm-up send / recv along "
                                             "the pipeline column");
        else {
            op_slot *s = &n->ring[n->n_enq % TS_NCCL_RING];
            s->allreduce = false;
            snprintf(s->op, sizeof s->op, "NCCL warm-up send / recv along the pipeline column "
                     "(stage %d of %d)", t->stage, t->pp);
            if (n->profile) (void)cudaEventRecord(s->start, n->cs);
            ce = cudaEventRecord(s->done, n->cs);
            if (ce != cudaSuccess) st = cuda_fail(t, ce, "cudaEventRecord", "warm-up");
            n->n_enq++;
        }
    }
    if (st == TS_OK && n->n_enq > n->n_fenced) {
        st = n_fence(t);
    }
    if (st == TS_OK) {
        ce = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
        if (ce != cudaSuccess) st = cuda_fail(t, ce, "cudaMemcpy", "NCCL warm-up");
    }
    if (st == TS_OK && t->tp > 1) {
        float want = 0;
        for (int r = 0; r < t->tp; r++) want += (float)(t->stage * t->tp + r + 1);
        if (h[0] != want || h[W - 1] != want)
            st = TS_FAIL(TS_NCCL, "rank %d (GPU %d): NCCL warm-up all-reduce in the TP group of "
                         "stage %d gave %g, expected %g", t->rank, t->device, t->stage,
                         (double)h[0], (double)want);
    }
    if (st == TS_OK && t->pp > 1) {
        float prev = (float)(column_rank(t, t->stage - 1) + 1),
              last = (float)(column_rank(t, t->pp - 1) + 1);
        if (t->stage > 0 && (h[2 * W] != prev || h[3 * W - 1] != prev))
            st = TS_FAIL(TS_NCCL, "rank %d (GPU %d): NCCL warm-up receive from stage %d gave %g, "
                         "expected %g", t->rank, t->device, t->stage - 1, (double)h[2 * W],
                         (double)prev);
        else if (t->stage == 0 && (h[3 * W] != last || h[4 * W - 1] != last))
            st = TS_FAIL(TS_NCCL, "rank %d (GPU %d): NCCL warm-up receive from the last stage "
                         "gave %g, expected %g", t->rank, t->device, (double)h[3 * W],
                         (double)last);
    }
    cudaFree(d);
    (void)cudaGetLastError();
    n->compute = NULL;
    t->stats = (ts_transport_stats){0};
    return st;
}

ts_status ts_transport_nccl_open(int32_t tp, int device, ts_transport **out) {
    *out = NULL;
    ts_transport *m = NULL;
    TS_TRY(ts_transport_mpi_open(tp, &m));
    ts_transport *t = ts_calloc(1, sizeof *t);
    nctx *n = ts_calloc(1, sizeof *n);
    if (!t || !n) {
        ts_free(t);
        ts_free(n);
        ts_transport_close(m);
        return TS_FAIL(TS_NOMEM, "transport");
    }
    *t = *m; /* rank, world, tp, pp, stage, tp_rank, timeout */
    t->ops = &nccl_ops;
    t->ctx = n;
    t->device_buffers = true;
    t->device = -1;
    n->mpi = m;
    const char *prof = getenv("TESSERA_COMM_PROFILE");
    n->profile = prof && *prof && strcmp(prof, "0") != 0;

    ts_status st = select_device(t, device);
    ts_status ag = agree(t, st == TS_OK, "CUDA device selection");
    if (st == TS_OK) st = ag;
    if (st == TS_OK) {
        st = init_streams(t);
        ag = agree(t, st == TS_OK, "CUDA stream and event creation");
        if (st == TS_OK) st = ag;
    }
    const int n_ids = t->pp + t->tp;
    ncclUniqueId *ids = NULL;
    if (st == TS_OK) {
        ids = ts_calloc((size_t)n_ids, sizeof *ids);
        if (!ids) st = TS_FAIL(TS_NOMEM, "NCCL ids");
        if (st == TS_OK) st = share_ids(t, ids, n_ids);
    }
    if (st == TS_OK && t->tp > 1) {
        ncclResult_t r = ncclCommInitRank(&n->tp, t->tp, ids[t->stage], t->tp_rank);
        if (r != ncclSuccess) {
            n->tp = NULL;
            char op[96];
            snprintf(op, sizeof op, "ncclCommInitRank of the TP group of stage %d", t->stage);
            st = nccl_fail(t, r, NULL, op);
        }
        ag = agree(t, st == TS_OK, "NCCL TP communicator setup");
        if (st == TS_OK) st = ag;
    }
    if (st == TS_OK && t->pp > 1) {
        ncclResult_t r = ncclCommInitRank(&n->pipe, t->pp, ids[t->pp + t->tp_rank], t->stage);
        if (r != ncclSuccess) {
            n->pipe = NULL;
            char op[96];
            snprintf(op, sizeof op, "ncclCommInitRank of pipeline column %d", t->tp_rank);
            st = nccl_fail(t, r, NULL, op);
        }
        ag = agree(t, st == TS_OK, "NCCL pipeline communicator setup");
        if (st == TS_OK) st = ag;
    }
    ts_free(ids);
    if (st == TS_OK) {
        st = warm_up(t);
        ag = agree(t, st == TS_OK, "NCCL warm-up");
        if (st == TS_OK) st = ag;
    }
    if (st != TS_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ts_last_error());
        abort_comms(n); /* never wait on peers that may have failed */
        n_close(t);
        return TS_FAIL(st, "%s", msg);
    }
    *out = t;
    return TS_OK;
}
