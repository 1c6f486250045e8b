/* cmd_bench.c: `tessera bench`: prompt processing and generation speed with the
 * definitions of llama.cpp's llama-bench:
 *   ppP  - one step of P prompt tokens from an empty context: P / time;
 *   tgN  - N tokens generated one at a time from an empty context: N / time;
 *   with --streams S > 1 also: S sequences each with a P-token prompt (prefill not timed),
 *          then N decode steps of S tokens each: S * N / time (aggregate decode).
 * Token ids are random (seeded) in [0, vocab). Each test runs --reps times (after one
 * warm-up) and the median is reported.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "commands.h"
#include "engine.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f) {
    fprintf(f, "usage: tessera bench -m MODEL [-p 512] [-n 128] [--streams S] [--threads N]\n"
               "                     [--reps R] [--backend cpu|cuda] [--json]\n\n"
               "Prefill (ppP) and decode (tgN) tokens/s with llama-bench's definitions; with\n"
               "--streams S also aggregate decode of S sequences with P-token prompts.\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "tessera bench: %s expects an integer in [%ld, %ld], got '%s'\n", flag,
                lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* One step: on the CUDA backend only the argmax ids come back (GPU sampling, greedy);
 * elsewhere (or TESSERA_GPU_SAMPLING=0) the full logits. */
static bool g_top;
static int32_t *g_top_ids;
static float *g_top_vals;
static ts_status bstep(ts_engine *e, const ts_batch *b, float *logits) {
    return g_top ? ts_engine_step_top(e, b, 1, g_top_ids, g_top_vals)
                 : ts_engine_step(e, b, logits);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

int ts_cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    long p = 512, n = 128, streams = 1, threads = 0, reps = 3;
    bool json = false;
    const char *backend = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (i + 1 >= argc || a[0] != '-') {
            fprintf(stderr, "tessera bench: %s '%s'\n", a[0] == '-' ? "missing value for" :
                    "unexpected argument", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-p")) bad = parse_int(a, v, 0, 65536, &p);
        else if (!strcmp(a, "-n")) bad = parse_int(a, v, 0, 65536, &n);
        else if (!strcmp(a, "--streams")) bad = parse_int(a, v, 1, 4096, &streams);
        else if (!strcmp(a, "--threads")) bad = parse_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--reps")) bad = parse_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "tessera bench: --backend expects cpu or cuda, got '%s'\n", v);
                return 2;
            }
            backend = v;
        }
        else {
            fprintf(stderr, "tessera bench: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!model) {
        fprintf(stderr, "tessera bench: -m MODEL is required\n");
        return 2;
    }
    if (p + n < 1) {
        fprintf(stderr, "tessera bench: nothing to do (-p 0 -n 0)\n");
        return 2;
    }
    long batch = p > streams ? p : streams;
    if (batch < 1) batch = 1;
    ts_engine_params ep = {
        .model_path = model, .n_threads = (int)threads, .backend = backend,
        .n_ctx = (int32_t)(p + n + 1),
        .n_seq_max = (int32_t)streams, .n_batch = (int32_t)batch,
        .n_chunk = (int32_t)(p > 0 ? p : 1),
    };
    ts_engine *e = NULL;
    if (ts_engine_create(&ep, &e) != TS_OK) {
        fprintf(stderr, "tessera bench: %s\n", ts_last_error());
        return 1;
    }
    const ts_config *c = ts_engine_config(e);
    ts_engine_info info;
    ts_engine_get_info(e, &info);
    int32_t *tok = ts_malloc(sizeof(int32_t) * (size_t)batch);
    int32_t *pos = ts_malloc(sizeof(int32_t) * (size_t)batch);
    int32_t *seq = ts_malloc(sizeof(int32_t) * (size_t)batch);
    uint8_t *want = ts_malloc((size_t)batch);
    float *logits = ts_malloc(sizeof(float) * c->n_vocab * (size_t)streams);
    double *t = ts_malloc(sizeof(double) * (size_t)(reps + 1));
    const char *gs = getenv("TESSERA_GPU_SAMPLING");
    g_top = !(gs && !strcmp(gs, "0")) && !strcmp(info.backend, "cuda") &&
            ts_engine_can_step_top(e);
    g_top_ids = ts_malloc(sizeof(int32_t) * (size_t)(streams > 1 ? streams : 1));
    g_top_vals = ts_malloc(sizeof(float) * (size_t)(streams > 1 ? streams : 1));
    int ret = 1;
    if (!tok || !pos || !seq || !want || !logits || !t || !g_top_ids || !g_top_vals) {
        fprintf(stderr, "tessera bench: out of memory\n");
        goto out;
    }
    double pp = 0, tg = 0, agg = 0;
    /* ppP */
    if (p > 0) {
        for (long r = 0; r <= reps; r++) {
            ts_engine_seq_release(e, 0);
            if (ts_engine_seq_reserve(e, 0, (int32_t)p) != TS_OK) goto fail;
            for (long i = 0; i < p; i++) {
                tok[i] = (int32_t)(rnd() % c->n_vocab);
                pos[i] = (int32_t)i;
                seq[i] = 0;
            }
            ts_batch b = {.n_tokens = (int32_t)p, .token = tok, .pos = pos, .seq = seq};
            double t0 = now_s();
            if (bstep(e, &b, logits) != TS_OK) goto fail;
            t[r] = now_s() - t0;
        }
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_d); /* t[0] is the warm-up */
        pp = (double)p / t[1 + reps / 2];
    }
    /* tgN */
    if (n > 0) {
        for (long r = 0; r <= reps; r++) {
            ts_engine_seq_release(e, 0);
            if (ts_engine_seq_reserve(e, 0, (int32_t)n) != TS_OK) goto fail;
            double t0 = now_s();
            for (long i = 0; i < n; i++) {
                tok[0] = (int32_t)(rnd() % c->n_vocab);
                pos[0] = (int32_t)i;
                seq[0] = 0;
                ts_batch b = {.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
                if (bstep(e, &b, logits) != TS_OK) goto fail;
            }
            t[r] = now_s() - t0;
        }
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_d);
        tg = (double)n / t[1 + reps / 2];
    }
    /* S streams: prefill each (not timed), then n steps of S tokens */
    if (streams > 1 && n > 0) {
        for (long r = 0; r <= reps; r++) {
            for (long s = 0; s < streams; s++) {
                ts_engine_seq_release(e, (int32_t)s);
                if (ts_engine_seq_reserve(e, (int32_t)s, (int32_t)(p + n)) != TS_OK) goto fail;
                if (p > 0) {
                    for (long i = 0; i < p; i++) {
                        tok[i] = (int32_t)(rnd() % c->n_vocab);
                        pos[i] = (int32_t)i;
                        seq[i] = (int32_t)s;
                    }
                    ts_batch b = {.n_tokens = (int32_t)p, .token = tok, .pos = pos, .seq = seq};
                    if (bstep(e, &b, logits) != TS_OK) goto fail;
                }
            }
            double t0 = now_s();
            for (long i = 0; i < n; i++) {
                for (long s = 0; s < streams; s++) {
                    tok[s] = (int32_t)(rnd() % c->n_vocab);
                    pos[s] = (int32_t)(p + i);
                    seq[s] = (int32_t)s;
                    want[s] = 1;
                }
                ts_batch b = {.n_tokens = (int32_t)streams, .token = tok, .pos = pos, .seq = seq,
                              .want_logits = want};
                if (bstep(e, &b, logits) != TS_OK) goto fail;
            }
            t[r] = now_s() - t0;
        }
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_d);
        agg = (double)(streams * n) / t[1 + reps / 2];
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "backend", json_string(info.backend));
        json_object_set_new(o, "threads", json_integer(threads));
        if (p > 0) json_object_set_new(o, "pp_tok_s", json_real(pp));
        if (n > 0) json_object_set_new(o, "tg_tok_s", json_real(tg));
        if (streams > 1 && n > 0) json_object_set_new(o, "streams_tok_s", json_real(agg));
        json_object_set_new(o, "p", json_integer(p));
        json_object_set_new(o, "n", json_integer(n));
        json_object_set_new(o, "streams", json_integer(streams));
        json_object_set_new(o, "gpu_sampling", json_boolean(g_top));
        if (info.device_total_bytes > 0) {
            ts_engine_get_info(e, &info); /* after the runs: the peak includes them */
            json_object_set_new(o, "device_used_bytes", json_integer((json_int_t)info.device_used_bytes));
            json_object_set_new(o, "device_used_at_create",
                                json_integer((json_int_t)info.device_used_at_create));
            json_object_set_new(o, "backend_alloc_peak",
                                json_integer((json_int_t)info.backend_alloc_peak));
        }
        json_dumpf(o, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(o);
    } else {
        printf("| model | size | params | backend | threads | test | t/s |\n");
        printf("|---|---|---|---|---|---|---|\n");
        char sz[32];
        snprintf(sz, sizeof sz, "%.2f MiB", (double)info.weight_bytes / (1024.0 * 1024.0));
        char desc[160], thr[16];
        if (threads) snprintf(thr, sizeof thr, "%ld", threads);
        else snprintf(thr, sizeof thr, "all");
        snprintf(desc, sizeof desc, "gemma3 %s | %s | %.2f M | %s | %s", ts_config_size_label(c),
                 sz, (double)ts_config_n_params(c) / 1e6, info.backend, thr);
        if (p > 0) printf("| %s | pp%ld | %.2f |\n", desc, p, pp);
        if (n > 0) printf("| %s | tg%ld | %.2f |\n", desc, n, tg);
        if (streams > 1 && n > 0)
            printf("| %s | %ld streams, pp%ld+tg%ld | %.2f |\n", desc, streams, p, n, agg);
        if (info.device_total_bytes > 0) {
            ts_engine_get_info(e, &info);
            printf("\ndevice memory: %.1f MiB of %.1f MiB used (%.1f MiB before loading); "
                   "backend allocations peak %.1f MiB; %s\n",
                   (double)info.device_used_bytes / 1048576.0,
                   (double)info.device_total_bytes / 1048576.0,
                   (double)info.device_used_at_create / 1048576.0,
                   (double)info.backend_alloc_peak / 1048576.0,
                   g_top ? "argmax on the device (only token ids copied back)"
                         : "full logits copied back");
        }
    }
    ret = 0;
    goto out;
fail:
    fprintf(stderr, "tessera bench: %s\n", ts_last_error());
out:
    ts_free(tok);
    ts_free(pos);
    ts_free(seq);
    ts_free(want);
    ts_free(logits);
    ts_free(t);
    ts_free(g_top_ids);
    ts_free(g_top_vals);
    ts_engine_destroy(e);
    return ret;
}
