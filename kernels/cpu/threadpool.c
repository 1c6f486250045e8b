/* threadpool.c: a fixed pool of pthreads for the CPU kernels (threadpool.h).
 *
 * Design (ggml's threadpool, simplified):
 *   - Workers 1..n-1 are created once. The caller of ts_threadpool_run is thread 0.
 *   - A run publishes (fn, ctx), sets `pending` = n-1 and bumps the generation counter
 *     `gen` (release, under the mutex, then a broadcast). Workers wait for `gen` to move:
 *     they spin on it (atomic acquire loads + pause) for a short while, then sleep on
 *     `cv_work` (checking `gen` under the mutex, so no wake-up is lost).
 *   - A worker that finished decrements `pending` (acq_rel); the last one takes the mutex
 *     and signals `cv_done`. The caller spins on `pending` a little, then sleeps on
 *     `cv_done` (checking `pending` under the mutex). When `pending` reaches 0 every
 *     worker is done with fn/ctx, so the next run may overwrite them (happens-before via
 *     the acq_rel decrement and the caller's acquire load).
 *   - Destroy sets `stop` and bumps `gen` under the mutex, broadcasts, joins.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "alloc.h"
#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TS_CPU_RELAX() _mm_pause()
#else
#define TS_CPU_RELAX() ((void)0)
#endif

/* Spin iterations before sleeping (~tens of microseconds): long enough to bridge the gap
 * between two matmuls of a forward pass, short enough not to burn a shared core. */
#define TP_SPIN_WORK 4000
#define TP_SPIN_DONE 20000

typedef struct {
    struct ts_threadpool *tp;
    int ith;
} tp_worker;

struct ts_threadpool {
    int n; /* threads including the caller */
    pthread_t *threads;  /* n-1 */
    tp_worker *workers;  /* n-1 */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    atomic_uint gen;
    atomic_int pending;
    atomic_int stop;
    ts_task_fn fn; /* written by the caller before bumping gen, read after */
    void *ctx;
};

static void *tp_main(void *arg) {
    tp_worker *w = arg;
    struct ts_threadpool *tp = w->tp;
    /* gen was 0 when the pool was created; a thread that starts late must still see the
     * runs published before it got here, so it must not start from the current value. */
    unsigned seen = 0;
    for (;;) {
        unsigned g = seen;
        for (int i = 0; i < TP_SPIN_WORK; i++) {
            g = atomic_load_explicit(&tp->gen, memory_order_acquire);
            if (g != seen) break;
            TS_CPU_RELAX();
        }
        if (g == seen) {
            pthread_mutex_lock(&tp->mu);
            while ((g = atomic_load_explicit(&tp->gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&tp->cv_work, &tp->mu);
            pthread_mutex_unlock(&tp->mu);
        }
        seen = g;
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        tp->fn(tp->ctx, w->ith, tp->n);
        if (atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
    return NULL;
}

ts_status ts_threadpool_create(int n_threads, ts_threadpool **out) {
    if (!out) return TS_FAIL(TS_INVAL, "out is NULL");
    *out = NULL;
    if (n_threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 0 ? (int)(nc > 1024 ? 1024 : nc) : 1;
    }
    if (n_threads > 1024) return TS_FAIL(TS_INVAL, "n_threads %d > 1024", n_threads);
    struct ts_threadpool *tp = ts_calloc(1, sizeof *tp);
    if (!tp) return TS_FAIL(TS_NOMEM, "threadpool");
    tp->n = n_threads;
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->stop, 0);
    if (pthread_mutex_init(&tp->mu, NULL) != 0) {
        ts_free(tp);
        return TS_FAIL(TS_SYSTEM, "pthread_mutex_init");
    }
    if (pthread_cond_init(&tp->cv_work, NULL) != 0) {
        pthread_mutex_destroy(&tp->mu);
        ts_free(tp);
        return TS_FAIL(TS_SYSTEM, "pthread_cond_init");
    }
    if (pthread_cond_init(&tp->cv_done, NULL) != 0) {
        pthread_cond_destroy(&tp->cv_work);
        pthread_mutex_destroy(&tp->mu);
        ts_free(tp);
        return TS_FAIL(TS_SYSTEM, "pthread_cond_init");
    }
    if (n_threads > 1) {
        tp->threads = ts_calloc((size_t)n_threads - 1, sizeof *tp->threads);
        tp->workers = ts_calloc((size_t)n_threads - 1, sizeof *tp->workers);
        if (!tp->threads || !tp->workers) {
            tp->n = 1; /* nothing started */
            ts_threadpool_destroy(tp);
            return TS_FAIL(TS_NOMEM, "threadpool threads");
        }
        for (int i = 1; i < n_threads; i++) {
            tp->workers[i - 1].tp = tp;
            tp->workers[i - 1].ith = i;
            if (pthread_create(&tp->threads[i - 1], NULL, tp_main, &tp->workers[i - 1]) != 0) {
                tp->n = i; /* threads 1..i-1 were started: destroy joins exactly those */
                ts_threadpool_destroy(tp);
                return TS_FAIL(TS_SYSTEM, "pthread_create (thread %d)", i);
            }
        }
    }
    *out = tp;
    return TS_OK;
}

void ts_threadpool_destroy(ts_threadpool *tp) {
    if (!tp) return;
    if (tp->n > 1) {
        pthread_mutex_lock(&tp->mu);
        atomic_store_explicit(&tp->stop, 1, memory_order_release);
        atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
        pthread_cond_broadcast(&tp->cv_work);
        pthread_mutex_unlock(&tp->mu);
        for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i - 1], NULL);
    }
    pthread_cond_destroy(&tp->cv_done);
    pthread_cond_destroy(&tp->cv_work);
    pthread_mutex_destroy(&tp->mu);
    ts_free(tp->threads);
    ts_free(tp->workers);
    ts_free(tp);
}

int ts_threadpool_size(const ts_threadpool *tp) { return tp ? tp->n : 1; }

void ts_threadpool_run(ts_threadpool *tp, ts_task_fn fn, void *ctx) {
    if (!tp || tp->n <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->pending, tp->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv_work);
    pthread_mutex_unlock(&tp->mu);

    fn(ctx, 0, tp->n);

    for (int i = 0; i < TP_SPIN_DONE; i++) {
        if (atomic_load_explicit(&tp->pending, memory_order_acquire) == 0) return;
        TS_CPU_RELAX();
    }
    pthread_mutex_lock(&tp->mu);
    while (atomic_load_explicit(&tp->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&tp->cv_done, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
}
