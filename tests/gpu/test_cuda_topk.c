/* test_cuda_topk.c: GPU sampling.
 *
 * 1. (CPU, always) the sampler on a top-k prefilter: ts_sampler_sample_top on the k best
 *    (ts_topk_best_first) of random logit rows gives exactly ts_sampler_sample's token on
 *    the full rows, for greedy and for top_k <= k with temperature / top-p / min-p, over
 *    many seeds and rows with ties; ts_sampler_top_ok refuses penalties, top_k 0, top_k > k.
 * 2. (GPU) the backend's topk (kernels/cuda/topk.cu) against ts_topk_best_first on fresh
 *    random rows: ids and value bits identical, at widths around the 4096-value chunk and
 *    Gemma's vocabulary, k = 1 (argmax) .. 256, rows 1..9; inputs with heavy ties (few
 *    distinct values), -inf entries and NaNs (NaN ranks first).
 * 3. (GPU, when TESSERA_CUDA_CMP_MODELS names a model: its first entry) the engine: the
 *    top-64 of ts_engine_step_top equals the top-64 of ts_engine_step's logits for the
 *    same batch on the CUDA backend; the device memory report is filled in; recorded
 *    steps (CUDA graphs, TESSERA_CUDA_GRAPH=1) give bit-identical logits and top-k to
 *    unrecorded ones over a prompt and replayed decode steps of one and two sequences.
 * Plain C main; exits 77 after part 1 when there is no GPU. Label `gpu`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "backend.h"
#include "engine.h"
#include "kernels_cuda.h"
#include "sampler.h"
#include "test_rand.h"

static int g_pass, g_fail;

static void check(bool ok, const char *what) {
    if (ok) {
        g_pass++;
    } else {
        g_fail++;
        if (g_fail < 30) printf("FAIL: %s\n", what);
    }
}


/* mode 0: continuous; 1: 8 levels (heavy ties); 2: continuous with -inf entries;
 * 3: continuous with a few NaNs */
static void fill_row(float *x, int64_t n, int mode) {
    for (int64_t i = 0; i < n; i++) {
        float v = frand() * 8.0f;
        if (mode == 1) v = floorf(v);
        if (mode == 2 && (rnd64() & 7) == 0) v = -INFINITY;
        x[i] = v;
    }
    if (mode == 3)
        for (int j = 0; j < 3; j++) x[rnd64() % (uint64_t)n] = NAN;
}

static bool same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static void sampler_part(void) {
    enum { V = 5000, K = 64 };
    float *row = malloc(sizeof(float) * V);
    int32_t ids[K];
    float vals[K];
    char msg[160];
    int n_cases = 0;
    struct {
        float temp, top_p, min_p;
        uint32_t top_k;
    } cfg[] = {{0, 1, 0, 0},     {0, 1, 0, 40},       {0.8f, 1, 0, 40},  {1.0f, 0.9f, 0, 64},
               {1.5f, 1, 0.05f, 8}, {0.7f, 0.95f, 0.02f, 1}, {2.0f, 0.5f, 0, 64}, {1, 1, 0, 2}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        ts_sampler_params p = ts_sampler_params_default();
        p.temperature = cfg[c].temp;
        p.top_p = cfg[c].top_p;
        p.min_p = cfg[c].min_p;
        p.top_k = cfg[c].top_k;
        p.seed = rnd64();
        ts_sampler *a = NULL, *b = NULL;
        if (ts_sampler_create(&p, V, &a) != TS_OK || ts_sampler_create(&p, V, &b) != TS_OK) {
            check(false, "sampler create");
            continue;
        }
        check(ts_sampler_top_ok(b, K), "top_ok for greedy / top_k <= K");
        for (int it = 0; it < 300; it++) {
            fill_row(row, V, it % 3); /* continuous, ties, -inf */
            ts_topk_best_first(row, V, K, ids, vals);
            int32_t ta = -1, tb = -2;
            ts_status ra = ts_sampler_sample(a, row, &ta);
            ts_status rb = ts_sampler_sample_top(b, ids, vals, K, &tb);
            snprintf(msg, sizeof msg, "sampler cfg %zu iter %d: full %d (rc %d) vs top %d (rc %d)",
                     c, it, ta, (int)ra, tb, (int)rb);
            check(ra == TS_OK && rb == TS_OK && ta == tb, msg);
            n_cases++;
        }
        /* a NaN anywhere is refused by both */
        fill_row(row, V, 3);
        ts_topk_best_first(row, V, K, ids, vals);
        int32_t t;
        check(ts_sampler_sample(a, row, &t) == TS_INVAL &&
                  ts_sampler_sample_top(b, ids, vals, K, &t) == TS_INVAL,
              "NaN row refused by both");
        ts_sampler_destroy(a);
        ts_sampler_destroy(b);
    }
    /* refusals */
    ts_sampler_params p = ts_sampler_params_default();
    ts_sampler *s = NULL;
    if (ts_sampler_create(&p, V, &s) == TS_OK) {
        check(!ts_sampler_top_ok(s, K), "top_k 0 (off) needs the full logits");
        ts_sampler_destroy(s);
    }
    p.top_k = K + 1;
    if (ts_sampler_create(&p, V, &s) == TS_OK) {
        check(!ts_sampler_top_ok(s, K), "top_k > k needs the full logits");
        int32_t t;
        check(ts_sampler_sample_top(s, ids, vals, K, &t) == TS_UNSUPPORTED, "sample_top refuses");
        ts_sampler_destroy(s);
    }
    p.top_k = 10;
    p.repetition_penalty = 1.1f;
    if (ts_sampler_create(&p, V, &s) == TS_OK) {
        check(!ts_sampler_top_ok(s, K), "penalties need the full logits");
        ts_sampler_destroy(s);
    }
    printf("sampler on a top-%d prefilter: %d cases\n", K, n_cases);
    free(row);
}

static void kernel_part(ts_backend *g) {
    static const int64_t widths[] = {1, 5, 100, 4095, 4096, 4097, 8192, 70001, 262144, 262208};
    static const int32_t ks[] = {1, 2, 40, 64, 256};
    static const int64_t rowss[] = {1, 3, 9};
    char msg[200];
    int n_checks = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
        for (size_t ri = 0; ri < sizeof rowss / sizeof *rowss; ri++)
            for (int mode = 0; mode < 4; mode++) {
                const int64_t n = widths[wi], rows = rowss[ri];
                float *x = malloc(sizeof(float) * (size_t)(n * rows));
                int32_t *gi = malloc(sizeof(int32_t) * 256 * (size_t)rows);
                int32_t *ri_ = malloc(sizeof(int32_t) * 256 * (size_t)rows);
                float *gv = malloc(sizeof(float) * 256 * (size_t)rows);
                float *rv = malloc(sizeof(float) * 256 * (size_t)rows);
                void *d = NULL;
                if (!x || !gi || !ri_ || !gv || !rv ||
                    g->ops->alloc(g, sizeof(float) * (size_t)(n * rows), &d) != TS_OK) {
                    check(false, "alloc");
                    goto next;
                }
                for (int64_t r = 0; r < rows; r++) fill_row(x + r * n, n, mode);
                if (g->ops->to_device(g, d, x, sizeof(float) * (size_t)(n * rows)) != TS_OK) {
                    check(false, "upload");
                    goto next;
                }
                for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                    const int32_t k = ks[ki];
                    if (k > n) continue;
                    ts_status rc = g->ops->topk(g, d, rows, n, k, gi, gv);
                    for (int64_t r = 0; r < rows; r++)
                        ts_topk_best_first(x + r * n, n, k, ri_ + r * k, rv + r * k);
                    const size_t m = (size_t)(rows * k);
                    bool ok = rc == TS_OK && memcmp(gi, ri_, m * sizeof(int32_t)) == 0 &&
                              same_bits(gv, rv, m);
                    snprintf(msg, sizeof msg, "topk rows %lld cols %lld k %d mode %d: rc %d, "
                             "first id gpu %d ref %d", (long long)rows, (long long)n, k, mode,
                             (int)rc, gi[0], ri_[0]);
                    check(ok, msg);
                    n_checks++;
                }
            next:
                if (d) g->ops->free(g, d);
                free(x);
                free(gi);
                free(ri_);
                free(gv);
                free(rv);
            }
    printf("GPU topk vs CPU: %d shape/k/mode checks\n", n_checks);
}

static void engine_part(void) {
    const char *list = getenv("TESSERA_CUDA_CMP_MODELS");
    if (!list || !*list) {
        printf("engine part skipped (TESSERA_CUDA_CMP_MODELS unset)\n");
        return;
    }
    char path[4096];
    size_t len = strcspn(list, ":");
    if (len >= sizeof path) len = sizeof path - 1;
    memcpy(path, list, len);
    path[len] = 0;
    ts_engine_params p = {.model_path = path, .backend = "cuda", .n_ctx = 256, .n_batch = 64,
                          .n_seq_max = 2};
    ts_engine *e = NULL;
    if (ts_engine_create(&p, &e) != TS_OK) {
        printf("FAIL: engine %s: %s\n", path, ts_last_error());
        g_fail++;
        return;
    }
    const uint32_t V = ts_engine_config(e)->n_vocab;
    enum { T = 12, K = 64, N_WANT = T / 4 };
    int32_t tok[T], pos[T], seq[T];
    uint8_t want[T];
    for (int i = 0; i < T; i++) {
        tok[i] = (int32_t)(rnd64() % V);
        pos[i] = i;
        seq[i] = 0;
        want[i] = (uint8_t)(i % 4 == 3);
    }
    const int n_want = N_WANT;
    float *logits = malloc(sizeof(float) * (size_t)V * n_want);
    int32_t ids[N_WANT * K], rid[K];
    float vals[N_WANT * K], rval[K];
    ts_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
    bool ok = logits && ts_engine_seq_reserve(e, 0, T) == TS_OK &&
              ts_engine_step(e, &b, logits) == TS_OK &&
              ts_engine_step_top(e, &b, K, ids, vals) == TS_OK;
    check(ok, "engine steps");
    if (ok)
        for (int r = 0; r < n_want; r++) {
            ts_topk_best_first(logits + (size_t)r * V, V, K, rid, rval);
            check(memcmp(rid, ids + r * K, sizeof rid) == 0 && same_bits(rval, vals + r * K, K),
                  "engine top-64 == top-64 of the logits");
        }
    /* no device allocation inside a step: the backend's live bytes and peak stay put over
     * more steps of both kinds (after the first ones above) */
    ts_engine_info i0, i1;
    ts_engine_get_info(e, &i0);
    bool ok2 = ok;
    for (int r = 0; ok2 && r < 3; r++)
        ok2 = ts_engine_step(e, &b, logits) == TS_OK &&
              ts_engine_step_top(e, &b, K, ids, vals) == TS_OK;
    ts_engine_get_info(e, &i1);
    check(ok2 && i1.backend_alloc_bytes == i0.backend_alloc_bytes &&
              i1.backend_alloc_peak == i0.backend_alloc_peak,
          "no device allocation inside steps (backend live bytes and peak unchanged)");
    ts_engine_info info;
    ts_engine_get_info(e, &info);
    printf("engine: device %.1f MiB total, used %.1f MiB at create, %.1f MiB now; backend "
           "allocations %.1f MiB (peak %.1f MiB)\n",
           info.device_total_bytes / 1048576.0, info.device_used_at_create / 1048576.0,
           info.device_used_bytes / 1048576.0, info.backend_alloc_bytes / 1048576.0,
           info.backend_alloc_peak / 1048576.0);
    check(info.backend_alloc_peak >= info.backend_alloc_bytes &&
              info.backend_alloc_bytes >= info.weight_bytes / 2 && info.device_total_bytes > 0,
          "memory report");
    free(logits);
    ts_engine_destroy(e);
}

/* Recorded steps (TESSERA_CUDA_GRAPH=1) give bit-identical logits to unrecorded ones: a
 * 12-token prompt, then 8 decode steps (recorded once, then replayed) on two sequences,
 * alternating one and two tokens per step, and a top-k step in between. */
static void graph_part(const char *path) {
    ts_engine *e[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        setenv("TESSERA_CUDA_GRAPH", i ? "1" : "0", 1); /* read at backend creation */
        ts_engine_params p = {.model_path = path, .backend = "cuda", .n_ctx = 128,
                              .n_batch = 32, .n_seq_max = 2};
        if (ts_engine_create(&p, &e[i]) != TS_OK) {
            printf("FAIL: engine %s: %s\n", path, ts_last_error());
            g_fail++;
            ts_engine_destroy(e[0]);
            unsetenv("TESSERA_CUDA_GRAPH");
            return;
        }
    }
    unsetenv("TESSERA_CUDA_GRAPH");
    const uint32_t V = ts_engine_config(e[0])->n_vocab;
    float *lg[2] = {malloc(sizeof(float) * 2 * V), malloc(sizeof(float) * 2 * V)};
    int32_t tok[12], pos[12], seq[12];
    char msg[160];
    bool ok = lg[0] && lg[1];
    for (int i = 0; ok && i < 2; i++)
        ok = ts_engine_seq_reserve(e[i], 0, 40) == TS_OK && ts_engine_seq_reserve(e[i], 1, 40) == TS_OK;
    check(ok, "graph part: reserve");
    for (int s = 0; ok && s < 2; s++) { /* prompts of both sequences */
        for (int j = 0; j < 12; j++) {
            tok[j] = (int32_t)(rnd64() % V);
            pos[j] = j;
            seq[j] = s;
        }
        ts_batch b = {.n_tokens = 12, .token = tok, .pos = pos, .seq = seq};
        for (int i = 0; ok && i < 2; i++) ok = ts_engine_step(e[i], &b, lg[i]) == TS_OK;
        check(ok && memcmp(lg[0], lg[1], sizeof(float) * V) == 0, "graph: prompt logits identical");
    }
    int32_t next[2] = {12, 12};
    for (int st = 0; ok && st < 8; st++) {
        const int n = st % 2 ? 2 : 1; /* one or two sequences per step */
        for (int j = 0; j < n; j++) {
            tok[j] = (int32_t)(rnd64() % V);
            pos[j] = next[j]++;
            seq[j] = j;
        }
        uint8_t want[2] = {1, 1};
        ts_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
        if (st == 5) { /* a top-k step of the same shape as step 3 (replayed) */
            int32_t ids[2][2][8];
            float vals[2][2][8];
            for (int i = 0; ok && i < 2; i++)
                ok = ts_engine_step_top(e[i], &b, 8, ids[i][0], vals[i][0]) == TS_OK;
            check(ok && !memcmp(ids[0], ids[1], sizeof ids[0]) &&
                      !memcmp(vals[0], vals[1], sizeof vals[0]),
                  "graph: top-k step identical");
            continue;
        }
        for (int i = 0; ok && i < 2; i++) ok = ts_engine_step(e[i], &b, lg[i]) == TS_OK;
        snprintf(msg, sizeof msg, "graph: decode step %d (%d tokens) logits identical", st, n);
        check(ok && memcmp(lg[0], lg[1], sizeof(float) * V * (size_t)n) == 0, msg);
    }
    if (!ok) printf("graph part: %s\n", ts_last_error());
    free(lg[0]);
    free(lg[1]);
    ts_engine_destroy(e[0]);
    ts_engine_destroy(e[1]);
}

int main(void) {
    (void)seed_rng();
    sampler_part();
    int n = 0;
    if (ts_cuda_device_count(&n) != TS_OK || n == 0) {
        printf("%d passed, %d failed (no CUDA device: GPU parts skipped)\n", g_pass, g_fail);
        return g_fail ? 1 : 77;
    }
    ts_backend *g = NULL;
    if (ts_backend_cuda_create(0, &g) != TS_OK) {
        printf("FAIL: CUDA backend: %s\n", ts_last_error());
        return 1;
    }
    kernel_part(g);
    ts_backend_destroy(g);
    engine_part();
    const char *list = getenv("TESSERA_CUDA_CMP_MODELS");
    if (list && *list) {
        char path[4096];
        size_t len = strcspn(list, ":");
        if (len >= sizeof path) len = sizeof path - 1;
        memcpy(path, list, len);
        path[len] = 0;
        graph_part(path);
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
