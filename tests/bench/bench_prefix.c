/* bench_prefix.c: time to first token with and without a prefix-cache hit (a benchmark
 * that prints numbers, not a test; docs/benchmarks.md).
 *
 * bench_prefix MODEL [PREFIX_TOKENS=1000] [TAIL_TOKENS=24] [THREADS=0: all] [REPEATS=3]
 * Two requests share PREFIX_TOKENS prompt tokens and differ in their last TAIL_TOKENS.
 * "miss": the second request's prompt on an engine without the prefix cache (the whole
 * prompt prefilled); "hit": the same prompt on an engine with the cache, after the first
 * request ran to completion (only the tail and the partial last block are prefilled).
 * Time to first token = reserve + prefill in chunks of n_chunk (512) + the first logits,
 * as the daemon does it; the logits of both runs are compared (must be identical).
 * Each figure is the median of REPEATS runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reserve (with the cache when on) + prefill: seconds to the first logits. */
static double ttft(ts_engine *e, const int32_t *prompt, int32_t n, float *logits,
                   int32_t *cached) {
    enum { CHUNK = 512 };
    static int32_t tok[CHUNK], pos[CHUNK], seq[CHUNK];
    double t0 = now_s();
    if (ts_engine_seq_reserve_prefix(e, 0, prompt, n, n + 1, cached) != TS_OK) {
        fprintf(stderr, "reserve: %s\n", ts_last_error());
        exit(1);
    }
    for (int32_t p0 = *cached; p0 < n; p0 += CHUNK) {
        int32_t k = n - p0 < CHUNK ? n - p0 : CHUNK;
        for (int32_t j = 0; j < k; j++) {
            tok[j] = prompt[p0 + j];
            pos[j] = p0 + j;
            seq[j] = 0;
        }
        ts_batch b = {.n_tokens = k, .token = tok, .pos = pos, .seq = seq};
        if (ts_engine_step(e, &b, logits) != TS_OK) {
            fprintf(stderr, "step: %s\n", ts_last_error());
            exit(1);
        }
    }
    double dt = now_s() - t0;
    ts_engine_seq_release(e, 0);
    return dt;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_prefix MODEL [PREFIX_TOKENS] [TAIL_TOKENS] [THREADS] [REPEATS]\n");
        return 2;
    }
    const int32_t n_pre = argc > 2 ? atoi(argv[2]) : 1000, n_tail = argc > 3 ? atoi(argv[3]) : 24;
    const int threads = argc > 4 ? atoi(argv[4]) : 0, reps = argc > 5 ? atoi(argv[5]) : 3;
    if (n_pre < 1 || n_tail < 1 || reps < 1 || reps > 99) return 2;
    const int32_t n = n_pre + n_tail;
    ts_engine *miss = NULL, *hit = NULL;
    ts_engine_params p = {.model_path = argv[1], .n_threads = threads, .n_ctx = n + 64,
                          .n_seq_max = 1, .n_batch = 512};
    if (ts_engine_create(&p, &miss) != TS_OK) {
        fprintf(stderr, "engine: %s\n", ts_last_error());
        return 1;
    }
    p.prefix_cache_tokens = 2 * (int64_t)n;
    if (ts_engine_create(&p, &hit) != TS_OK) {
        fprintf(stderr, "engine: %s\n", ts_last_error());
        return 1;
    }
    const int64_t V = ts_engine_config(hit)->n_vocab;
    int32_t *a = malloc(sizeof(int32_t) * (size_t)n), *b = malloc(sizeof(int32_t) * (size_t)n);
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    if (!a || !b || !la || !lb) return 1;
    uint32_t x = 99;
    for (int32_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        a[i] = b[i] = 10 + (int32_t)((x >> 8) % (uint32_t)(V - 10));
    }
    for (int32_t i = n_pre; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        b[i] = 10 + (int32_t)((x >> 8) % (uint32_t)(V - 10));
    }
    double tm[99], th[99];
    int32_t c_miss = 0, c_hit = 0, c_first = 0;
    bool same = true;
    for (int r = 0; r < reps; r++) {
        tm[r] = ttft(miss, b, n, la, &c_miss);
        ts_engine_prefix_flush(hit);
        (void)ttft(hit, a, n, lb, &c_first); /* the first request: fills the cache */
        th[r] = ttft(hit, b, n, lb, &c_hit);
        same = same && !memcmp(la, lb, sizeof(float) * (size_t)V);
    }
    qsort(tm, (size_t)reps, sizeof(double), cmp_d);
    qsort(th, (size_t)reps, sizeof(double), cmp_d);
    ts_engine_info info;
    ts_engine_get_info(hit, &info);
    printf("prompt %d tokens (%d shared + %d own), %s backend, median of %d\n", n, n_pre, n_tail,
           info.backend, reps);
    printf("miss: ttft %.1f ms (%d tokens prefilled)\n", tm[reps / 2] * 1e3, n - c_miss);
    printf("hit:  ttft %.1f ms (%d tokens from the cache, %d prefilled)\n", th[reps / 2] * 1e3,
           c_hit, n - c_hit);
    printf("speedup %.1fx; first-token logits %s\n", tm[reps / 2] / th[reps / 2],
           same ? "identical" : "DIFFER");
    free(a);
    free(b);
    free(la);
    free(lb);
    ts_engine_destroy(miss);
    ts_engine_destroy(hit);
    return same ? 0 : 1;
}
