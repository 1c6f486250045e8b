/* threadpool.h: a fixed pool of worker threads for the CPU kernels.
 *
 * ts_threadpool_run(tp, fn, ctx) calls fn(ctx, i, n) on every thread i in [0, n) (the
 * calling thread is thread 0) and returns when all have finished. Work is split by the
 * callee (e.g. rows i*R/n .. (i+1)*R/n). One run at a time per pool; not reentrant.
 * Threads spin briefly then sleep on a condition variable between runs.
 * ts_threadpool_create(n_threads <= 0) uses the number of online CPUs.
 */
#ifndef TS_THREADPOOL_H
#define TS_THREADPOOL_H

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_threadpool ts_threadpool;
typedef void (*ts_task_fn)(void *ctx, int ith, int nth);

ts_status ts_threadpool_create(int n_threads, ts_threadpool **out);
void ts_threadpool_destroy(ts_threadpool *tp);
int ts_threadpool_size(const ts_threadpool *tp);
/* tp may be NULL: then fn(ctx, 0, 1) runs on the caller. */
void ts_threadpool_run(ts_threadpool *tp, ts_task_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
