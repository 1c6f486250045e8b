/* safety_mpi.c: ShieldGemma 2 on its own rank (safety.h, docs/vision.md "Where the
 * classifier runs").
 *
 * DESIGN
 * ts_transport_mpi_set_aside gives world rank 0 and the safety rank a communicator of their
 * own (ranks 0 and 1 there), so that nothing here can match a message of the engine's
 * transport. Rank 0 (the gate thread, CheckSafety's threads: one call at a time, under
 * ts_safety's mutex) sends a header and one data message (the image bytes, then the policy
 * texts, each ending in NUL) and waits for the reply (status, message, one score per text),
 * polling nonblocking requests against the deadline. A call that times out leaves its
 * requests (and their buffers) in flight: later calls fail at once until that reply has
 * arrived (each waits up to a second for it: MPI progresses only inside MPI calls), after
 * which the rank is in service again. The safety rank loads the classifier,
 * reports (name or error) and serves until rank 0 sends STOP.
 */
#include <mpi.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "dist.h"
#include "log.h"
#include "safety.h"
#include "transport.h"
#include "transport_mpi.h"

enum { TAG_READY = 41, TAG_REQ = 42, TAG_DATA = 43, TAG_REP = 44 };
enum { OP_SCORE = 1, OP_STOP = 2 };
#define SG_MAGIC 0x53474d32u /* "SGM2" */
#define LOAD_TIMEOUT_S 1800.0 /* the safety rank loading its model */

typedef struct {
    uint32_t magic, op;
    uint64_t seq, img_len, txt_len;
    uint32_t n, pad;
} req_hdr;

typedef struct {
    uint64_t seq;
    int32_t code;
    uint32_t n;
    float score[TS_SAFETY_MAX_TEXTS];
    char msg[512];
} reply_msg;

typedef struct {
    int32_t code;
    char name[128];
    char msg[512];
} ready_msg;

struct ts_safety_remote {
    MPI_Comm comm;
    int32_t rank; /* world rank of the classifier */
    atomic_int timeout_s; /* safety-timeout (SIGHUP may change it) */
    char name[128], where[32];
    uint64_t next_seq;
    /* the call in flight after a timeout */
    bool pending;
    MPI_Request rq[3];
    double t0;
    req_hdr hdr;
    reply_msg rep;
    uint8_t *buf;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void backoff(unsigned spins) {
    if (spins < 200) return;
    if (spins < 2000) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, spins < 20000 ? 100000 : 1000000}; /* 0.1 ms, then 1 ms */
    nanosleep(&ts, NULL);
}

/* Polls the n requests until all are done (*done = true) or timeout_s passes (< 0: no
 * deadline; 0: one test). */
static ts_status poll_all(MPI_Request *rq, int n, double timeout_s, const char *what,
                          bool *done) {
    const double t0 = now_s();
    *done = false;
    for (unsigned spins = 0;; spins++) {
        int flag = 0;
        int rc = MPI_Testall(n, rq, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return TS_FAIL(TS_MPI, "%s: MPI error %d", what, rc);
        if (flag) {
            *done = true;
            return TS_OK;
        }
        if (timeout_s >= 0 && now_s() - t0 >= timeout_s) return TS_OK;
        backoff(spins);
    }
}

/* ---------------------------------------------------------------- rank 0 */

ts_status ts_safety_remote_open(int32_t rank, int timeout_s, ts_safety_remote **out) {
    *out = NULL;
    MPI_Comm comm = ts_transport_mpi_side_comm();
    if (comm == MPI_COMM_NULL)
        return TS_FAIL(TS_INTERNAL, "no communicator to the safety rank %d", rank);
    ts_safety_remote *r = ts_calloc(1, sizeof *r);
    if (!r) return TS_FAIL(TS_NOMEM, "safety rank handle");
    r->comm = comm;
    r->rank = rank;
    atomic_init(&r->timeout_s, timeout_s);
    snprintf(r->where, sizeof r->where, "rank %d", rank);
    ready_msg m;
    MPI_Request rq;
    bool done = false;
    ts_status st = TS_OK;
    if (MPI_Irecv(&m, (int)sizeof m, MPI_BYTE, 1, TAG_READY, comm, &rq) != MPI_SUCCESS)
        st = TS_FAIL(TS_MPI, "waiting for the safety rank %d", rank);
    else
        st = poll_all(&rq, 1, LOAD_TIMEOUT_S, "waiting for the safety rank", &done);
    if (st == TS_OK && !done) {
        MPI_Cancel(&rq); /* m is on this stack: the receive must not outlive it */
        MPI_Wait(&rq, MPI_STATUS_IGNORE);
        st = TS_FAIL(TS_TIMEOUT, "the safety classifier on rank %d did not report within %.0f s "
                     "of loading", rank, LOAD_TIMEOUT_S);
    }
    if (st == TS_OK && m.code != TS_OK) {
        m.msg[sizeof m.msg - 1] = '\0';
        st = TS_FAIL(TS_UNAVAILABLE, "rank %d: %s", rank, m.msg);
    }
    if (st != TS_OK) {
        ts_free(r);
        return st;
    }
    m.name[sizeof m.name - 1] = '\0';
    snprintf(r->name, sizeof r->name, "%s", m.name);
    *out = r;
    return TS_OK;
}

const char *ts_safety_remote_name(const ts_safety_remote *r) { return r->name; }
const char *ts_safety_remote_where(const ts_safety_remote *r) { return r->where; }

void ts_safety_remote_set_timeout(ts_safety_remote *r, int timeout_s) {
    atomic_store(&r->timeout_s, timeout_s);
}

/* A call that timed out: has its reply come? */
static ts_status settle(ts_safety_remote *r) {
    if (!r->pending) return TS_OK;
    bool done = false;
    /* a short wait: MPI moves the late messages only while this rank calls into it */
    TS_TRY(poll_all(r->rq, 3, 1.0, "the safety rank's late reply", &done));
    if (!done)
        return TS_FAIL(TS_UNAVAILABLE, "the safety classifier on rank %d has not answered "
                       "request %llu for %.0f s", r->rank, (unsigned long long)r->hdr.seq,
                       now_s() - r->t0);
    TS_LOG_WARN("the safety classifier on rank %d answered request %llu after %.1f s: in "
                "service again", r->rank, (unsigned long long)r->hdr.seq, now_s() - r->t0);
    r->pending = false;
    ts_free(r->buf);
    r->buf = NULL;
    return TS_OK;
}

ts_status ts_safety_remote_score(ts_safety_remote *r, const uint8_t *img, size_t len,
                                 const char *const *texts, size_t n_texts, float *scores) {
    TS_TRY(settle(r));
    size_t tl = 0;
    for (size_t i = 0; i < n_texts; i++) tl += strlen(texts[i]) + 1;
    const size_t total = len + tl;
    if (total > (size_t)INT32_MAX)
        return TS_FAIL(TS_INVAL, "a safety request of %zu bytes", total);
    uint8_t *buf = ts_malloc(total ? total : 1);
    if (!buf) return TS_FAIL(TS_NOMEM, "safety request");
    if (len) memcpy(buf, img, len);
    size_t at = len;
    for (size_t i = 0; i < n_texts; i++) {
        size_t l = strlen(texts[i]) + 1;
        memcpy(buf + at, texts[i], l);
        at += l;
    }
    r->hdr = (req_hdr){.magic = SG_MAGIC, .op = OP_SCORE, .seq = ++r->next_seq, .img_len = len,
                       .txt_len = tl, .n = (uint32_t)n_texts};
    memset(&r->rep, 0, sizeof r->rep);
    r->buf = buf;
    r->t0 = now_s();
    r->rq[0] = r->rq[1] = r->rq[2] = MPI_REQUEST_NULL; /* a failed post leaves the rest null */
    if (MPI_Isend(&r->hdr, (int)sizeof r->hdr, MPI_BYTE, 1, TAG_REQ, r->comm, &r->rq[0]) !=
            MPI_SUCCESS ||
        MPI_Isend(buf, (int)total, MPI_BYTE, 1, TAG_DATA, r->comm, &r->rq[1]) != MPI_SUCCESS ||
        MPI_Irecv(&r->rep, (int)sizeof r->rep, MPI_BYTE, 1, TAG_REP, r->comm, &r->rq[2]) !=
            MPI_SUCCESS) {
        /* an MPI error on this communicator leaves the job unusable */
        r->pending = true;
        return TS_FAIL(TS_MPI, "sending a request to the safety rank %d failed", r->rank);
    }
    bool done = false;
    const int timeout_s = atomic_load(&r->timeout_s);
    ts_status st = poll_all(r->rq, 3, timeout_s, "a request to the safety rank", &done);
    if (st == TS_OK && !done) {
        r->pending = true; /* buf stays with the requests in flight */
        return TS_FAIL(TS_TIMEOUT, "the safety classifier on rank %d did not answer within "
                       "%d s (safety-timeout)", r->rank, timeout_s);
    }
    if (st != TS_OK) {
        r->pending = true;
        return st;
    }
    ts_free(buf);
    r->buf = NULL;
    if (r->rep.seq != r->hdr.seq || (r->rep.code == TS_OK && r->rep.n != n_texts))
        return TS_FAIL(TS_INTERNAL, "the safety rank %d answered request %llu with %llu (%u "
                       "scores for %zu policies)", r->rank, (unsigned long long)r->hdr.seq,
                       (unsigned long long)r->rep.seq, r->rep.n, n_texts);
    if (r->rep.code != TS_OK) {
        r->rep.msg[sizeof r->rep.msg - 1] = '\0';
        int code = r->rep.code > 0 && r->rep.code < (int32_t)TS_STATUS_COUNT_ ? r->rep.code : (int)TS_INTERNAL;
        return TS_FAIL((ts_status)code, "%s", r->rep.msg);
    }
    memcpy(scores, r->rep.score, sizeof(float) * n_texts);
    return TS_OK;
}

void ts_safety_remote_close(ts_safety_remote *r) {
    if (!r) return;
    bool done = true;
    if (r->pending &&
        (poll_all(r->rq, 3, atomic_load(&r->timeout_s), "the safety rank's last reply", &done) !=
             TS_OK ||
         !done)) {
        TS_LOG_ERROR("the safety classifier on rank %d is not answering: ending the job",
                     r->rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    ts_free(r->buf);
    req_hdr h = {.magic = SG_MAGIC, .op = OP_STOP, .seq = ++r->next_seq};
    MPI_Request rq;
    if (MPI_Isend(&h, (int)sizeof h, MPI_BYTE, 1, TAG_REQ, r->comm, &rq) != MPI_SUCCESS ||
        poll_all(&rq, 1, atomic_load(&r->timeout_s), "stopping the safety rank", &done) != TS_OK ||
        !done)
        TS_LOG_WARN("could not stop the safety classifier on rank %d", r->rank);
    ts_free(r);
}

/* ---------------------------------------------------------------- the safety rank */

static int reply(MPI_Comm comm, reply_msg *m) {
    MPI_Request rq;
    bool done = false;
    if (MPI_Isend(m, (int)sizeof *m, MPI_BYTE, 0, TAG_REP, comm, &rq) != MPI_SUCCESS ||
        poll_all(&rq, 1, ts_transport_default_timeout(), "a reply to rank 0", &done) != TS_OK ||
        !done)
        return -1;
    return 0;
}

/* One OP_SCORE request: its data, the scores, the reply. -1: the channel broke. */
static int serve_one(MPI_Comm comm, ts_safety *s, int32_t me, const req_hdr *h) {
    reply_msg m;
    memset(&m, 0, sizeof m);
    m.seq = h->seq;
    if (h->n > TS_SAFETY_MAX_TEXTS || h->img_len > TS_SAFETY_MAX_IMAGE ||
        h->txt_len > (uint64_t)TS_SAFETY_MAX_TEXTS * 65536u) {
        TS_LOG_ERROR("rank %d: a safety request out of bounds (%u policies, %llu + %llu bytes)",
                     me, h->n, (unsigned long long)h->img_len, (unsigned long long)h->txt_len);
        return -1;
    }
    const size_t total = (size_t)(h->img_len + h->txt_len);
    uint8_t *buf = ts_malloc(total ? total + 1 : 1);
    MPI_Request rq;
    bool done = false;
    if (!buf) {
        TS_LOG_ERROR("rank %d: out of memory for a %zu-byte safety request", me, total);
        return -1;
    }
    if (MPI_Irecv(buf, (int)total, MPI_BYTE, 0, TAG_DATA, comm, &rq) != MPI_SUCCESS ||
        poll_all(&rq, 1, ts_transport_default_timeout(), "a request's data", &done) != TS_OK ||
        !done) {
        ts_free(buf);
        return -1;
    }
    buf[total] = '\0';
    const char *texts[TS_SAFETY_MAX_TEXTS];
    size_t n = 0, at = (size_t)h->img_len;
    while (at < total && n < h->n) {
        texts[n++] = (const char *)buf + at;
        at += strlen((const char *)buf + at) + 1;
    }
    if (n != h->n || at != total) {
        m.code = TS_INTERNAL;
        snprintf(m.msg, sizeof m.msg, "rank %d: a malformed safety request", me);
    } else {
        ts_status st = ts_safety_score(s, buf, (size_t)h->img_len, texts, n, m.score);
        m.code = (int32_t)st;
        if (st != TS_OK)
            snprintf(m.msg, sizeof m.msg, "%s", ts_last_error());
        else
            m.n = (uint32_t)n;
    }
    ts_free(buf);
    return reply(comm, &m);
}

int ts_safety_serve_rank(const char *model, const char *vision, const char *ids, int threads,
                         const char *backend) {
    MPI_Comm comm = ts_transport_mpi_side_comm();
    int me = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (comm == MPI_COMM_NULL) {
        fprintf(stderr, "tesserad: rank %d: no communicator to rank 0\n", me);
        return 1;
    }
    ts_safety *s = NULL;
    ready_msg rm;
    memset(&rm, 0, sizeof rm);
    /* CUDA: this host's GPU (local rank % GPUs), as the engine ranks pick theirs */
    const int gpu = backend && !strcmp(backend, "cuda") ? ts_cmd_local_gpu(me) : 0;
    ts_status st = ts_safety_open(model, vision, ids, threads, backend, gpu > 0 ? gpu : 0, &s);
    rm.code = st;
    if (st == TS_OK) {
        snprintf(rm.name, sizeof rm.name, "%s", ts_safety_name(s));
        TS_LOG_INFO("rank %d (pid %d): safety classifier %s loaded: scoring rank 0's images",
                    me, (int)getpid(), rm.name);
    } else {
        snprintf(rm.msg, sizeof rm.msg, "safety classifier: %s", ts_last_error());
        fprintf(stderr, "tesserad: rank %d: %s\n", me, rm.msg);
    }
    MPI_Request rq;
    bool done = false;
    if (MPI_Isend(&rm, (int)sizeof rm, MPI_BYTE, 0, TAG_READY, comm, &rq) != MPI_SUCCESS ||
        poll_all(&rq, 1, LOAD_TIMEOUT_S, "reporting to rank 0", &done) != TS_OK || !done) {
        fprintf(stderr, "tesserad: rank %d: rank 0 does not listen\n", me);
        ts_safety_close(s);
        return 1;
    }
    if (st != TS_OK) return 1; /* rank 0 reports it and ends the job */
    int rc = 0;
    for (;;) {
        req_hdr h;
        if (MPI_Irecv(&h, (int)sizeof h, MPI_BYTE, 0, TAG_REQ, comm, &rq) != MPI_SUCCESS ||
            poll_all(&rq, 1, -1, "waiting for rank 0", &done) != TS_OK) {
            fprintf(stderr, "tesserad: rank %d: %s\n", me, ts_last_error());
            rc = 1;
            break;
        }
        if (h.magic != SG_MAGIC || h.op == OP_STOP) break;
        if (serve_one(comm, s, me, &h)) {
            fprintf(stderr, "tesserad: rank %d: the channel to rank 0 broke\n", me);
            rc = 1;
            break;
        }
    }
    ts_safety_close(s);
    return rc;
}
