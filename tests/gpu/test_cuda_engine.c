/* test_cuda_engine.c: the engine on the CUDA backend.
 *
 * 1. The Hugging Face fixtures (tests/fixtures/hf, as in tests/model/test_engine_hf.c):
 *    logits of the whole prompt in one step, of the prompt in chunks of 3 tokens and of
 *    the three "batch" prompts together in one step match HF with max|a-b|/max|ref| <= 1e-4;
 *    greedy continuations (one-token decode steps) equal HF's.
 * 2. The real Gemma 3 270M (env TESSERA_MODEL_270M, skipped when unset): greedy 32 tokens
 *    on a few prompts equal the CPU engine's reference path, run in the same test.
 * 3. Extra models (env TESSERA_CUDA_CMP_MODELS, colon-separated, e.g. random `tessera
 *    mkmodel` files): CUDA vs the CPU reference engine, teacher-forced on the CPU's greedy
 *    tokens (random weights give near-ties, so greedy equality is only reported), twice:
 *    CUDA with the exact fp32 matmuls (TESSERA_CUDA_MMV=fp32, TESSERA_CUDA_GEMM=fp32),
 *    logits rel err <= 1e-3 at every step; CUDA's default Q8-activation decode and int8
 *    tensor-core prefill, rel err <= 0.1: activation
 *    rounding alone moves the logits ~2.4e-2 (the CPU fast engine, which rounds them the
 *    same way, differs from the reference by 2.4e-2 on tiny q8_0 / q4_0 and the 270M
 *    shape; the CPU fast engine also differs in GELU and softmax, so it is no tighter
 *    reference). The kernel itself is checked against ts_matmul in test_cuda_ops.
 * The real 270M (2.) runs in the fp32 pairing.
 * Exits 77 without a GPU; prints "N passed, N failed". Label `gpu`.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "engine.h"
#include "fixture_util.h"
#include "kernels_cuda.h"

#define TOL 1e-4

static int g_pass, g_fail;

static void check(bool ok, const char *what) {
    if (ok) g_pass++;
    else {
        g_fail++;
        printf("FAIL: %s\n", what);
    }
}

static int32_t argmax(const float *x, int64_t n) {
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

typedef struct {
    const char *name;
    int32_t n_tok, tokens[256], greedy[16], n_greedy;
    float *logits;
} hf_case;

static double g_worst;

static void run_fixture(const char *dir, const char *cfgname) {
    char path[1024], what[512];
    snprintf(path, sizeof path, "%s/%s.json", dir, cfgname);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) {
        check(false, path);
        return;
    }
    json_t *cfg = json_object_get(j, "config");
    const int vocab = (int)json_integer_value(json_object_get(cfg, "vocab_size"));
    const int layers = (int)json_integer_value(json_object_get(cfg, "num_hidden_layers"));
    const int d = (int)json_integer_value(json_object_get(cfg, "hidden_size"));
    json_t *cases = json_object_get(j, "cases");
    size_t n_cases = json_array_size(cases);
    if (n_cases > 8) n_cases = 8;
    hf_case cs[8];
    for (size_t i = 0; i < n_cases; i++) {
        json_t *jc = json_array_get(cases, i);
        hf_case *c = &cs[i];
        memset(c, 0, sizeof *c);
        c->name = json_string_value(json_object_get(jc, "name"));
        json_t *toks = json_object_get(jc, "tokens"), *gr = json_object_get(jc, "greedy");
        c->n_tok = (int32_t)json_array_size(toks);
        c->n_greedy = (int32_t)json_array_size(gr);
        if (c->n_tok > 256 || c->n_greedy > 16) c->n_tok = 0;
        for (int32_t k = 0; k < c->n_tok; k++)
            c->tokens[k] = (int32_t)json_integer_value(json_array_get(toks, (size_t)k));
        for (int32_t k = 0; k < c->n_greedy; k++)
            c->greedy[k] = (int32_t)json_integer_value(json_array_get(gr, (size_t)k));
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(json_object_get(jc, "file")));
        c->logits = ts_fixture_read_f32(path, (size_t)c->n_tok * vocab + (size_t)(layers + 1) * c->n_tok * d);
        if (!c->logits) {
            snprintf(what, sizeof what, "%s: cannot load case %zu", cfgname, i);
            check(false, what);
            for (size_t k = 0; k < i; k++) free(cs[k].logits);
            json_decref(j);
            return;
        }
    }
    snprintf(path, sizeof path, "%s/%s.gguf", dir, cfgname);
    ts_engine_params ep = {.model_path = path, .backend = "cuda", .n_ctx = 256, .n_seq_max = 3,
                           .n_batch = 256};
    ts_engine *e = NULL;
    if (ts_engine_create(&ep, &e) != TS_OK) {
        snprintf(what, sizeof what, "%s: engine: %s", cfgname, ts_last_error());
        check(false, what);
        for (size_t k = 0; k < n_cases; k++) free(cs[k].logits);
        json_decref(j);
        return;
    }
    ts_engine_info info;
    ts_engine_get_info(e, &info);
    check(!strcmp(info.backend, "cuda"), "engine reports the cuda backend");
    float *logits = malloc(sizeof(float) * 256 * (size_t)vocab);
    int32_t pos[256], seq[256], tok[256];
    uint8_t want[256];
    for (size_t ci = 0; ci < n_cases; ci++) {
        hf_case *c = &cs[ci];
        ts_engine_seq_release(e, 0);
        check(ts_engine_seq_reserve(e, 0, c->n_tok + c->n_greedy) == TS_OK, "reserve");
        for (int32_t i = 0; i < c->n_tok; i++) {
            pos[i] = i;
            seq[i] = 0;
            want[i] = 1;
        }
        ts_batch b = {.n_tokens = c->n_tok, .token = c->tokens, .pos = pos, .seq = seq,
                      .want_logits = want};
        ts_status rc = ts_engine_step(e, &b, logits);
        double el = rc == TS_OK ? ts_fixture_rel_err(logits, c->logits, (size_t)c->n_tok * vocab) : INFINITY;
        if (el > g_worst) g_worst = el;
        snprintf(what, sizeof what, "%s/%s: prompt logits rel err %.3g %s", cfgname, c->name, el,
                 rc == TS_OK ? "" : ts_last_error());
        check(el <= TOL, what);
        /* greedy */
        int32_t cur = c->n_tok, next = argmax(logits + (size_t)(c->n_tok - 1) * vocab, vocab);
        bool same = true;
        for (int32_t g = 0; g < c->n_greedy; g++) {
            if (next != c->greedy[g]) {
                same = false;
                break;
            }
            if (g == c->n_greedy - 1) break;
            tok[0] = next;
            pos[0] = cur++;
            ts_batch db = {.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
            if (ts_engine_step(e, &db, logits) != TS_OK) {
                same = false;
                break;
            }
            next = argmax(logits, vocab);
        }
        snprintf(what, sizeof what, "%s/%s: greedy %d tokens equal HF", cfgname, c->name,
                 c->n_greedy);
        check(same, what);
        /* chunks of 3 */
        ts_engine_seq_release(e, 0);
        check(ts_engine_seq_reserve(e, 0, c->n_tok) == TS_OK, "reserve");
        double worst = 0;
        for (int32_t i0 = 0; i0 < c->n_tok; i0 += 3) {
            int32_t n = c->n_tok - i0 < 3 ? c->n_tok - i0 : 3;
            for (int32_t i = 0; i < n; i++) {
                pos[i] = i0 + i;
                seq[i] = 0;
                want[i] = 1;
            }
            ts_batch cb = {.n_tokens = n, .token = c->tokens + i0, .pos = pos, .seq = seq,
                           .want_logits = want};
            if (ts_engine_step(e, &cb, logits) != TS_OK) {
                worst = INFINITY;
                break;
            }
            double er = ts_fixture_rel_err(logits, c->logits + (size_t)i0 * vocab, (size_t)n * vocab);
            if (!(er <= worst)) worst = er;
        }
        if (worst > g_worst) g_worst = worst;
        snprintf(what, sizeof what, "%s/%s: chunked prefill rel err %.3g", cfgname, c->name, worst);
        check(worst <= TOL, what);
    }
    /* batch cases together */
    int32_t idx[3] = {-1, -1, -1};
    for (size_t ci = 0; ci < n_cases; ci++)
        if (!strncmp(cs[ci].name, "batch", 5)) idx[cs[ci].name[5] - '0'] = (int32_t)ci;
    if (idx[0] >= 0 && idx[1] >= 0 && idx[2] >= 0) {
        int32_t n = 0, base[3] = {0};
        for (int s = 0; s < 3; s++) {
            ts_engine_seq_release(e, s);
            check(ts_engine_seq_reserve(e, s, cs[idx[s]].n_tok) == TS_OK, "reserve batch");
        }
        for (int s = 0; s < 3; s++) {
            base[s] = n;
            for (int32_t i = 0; i < cs[idx[s]].n_tok; i++) {
                tok[n] = cs[idx[s]].tokens[i];
                pos[n] = i;
                seq[n] = s;
                want[n] = 1;
                n++;
            }
        }
        ts_batch bb = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
        ts_status rc = ts_engine_step(e, &bb, logits);
        check(rc == TS_OK, "batch step");
        for (int s = 0; rc == TS_OK && s < 3; s++) {
            double er = ts_fixture_rel_err(logits + (size_t)base[s] * vocab, cs[idx[s]].logits,
                                (size_t)cs[idx[s]].n_tok * vocab);
            if (er > g_worst) g_worst = er;
            snprintf(what, sizeof what, "%s/batch%d in a 3-sequence step: rel err %.3g", cfgname,
                     s, er);
            check(er <= TOL, what);
        }
        for (int s = 0; s < 3; s++) ts_engine_seq_release(e, s);
    }
    free(logits);
    ts_engine_destroy(e);
    for (size_t i = 0; i < n_cases; i++) free(cs[i].logits);
    json_decref(j);
}

/* Per-layer hidden states of the last prompt step (diagnostics: where do CPU and CUDA part?) */
typedef struct {
    float *h[80];
    int64_t n[80];
    bool on;
} layer_cap;

static void on_layer(void *vctx, const char *name, int32_t layer, const float *data, int64_t rows,
                     int64_t cols) {
    layer_cap *c = vctx;
    int idx = !strcmp(name, "embed") ? 0 : !strcmp(name, "layer_out") ? layer + 1 : -1;
    if (!c->on || idx < 0 || idx >= 80) return;
    free(c->h[idx]);
    c->n[idx] = rows * cols;
    c->h[idx] = malloc(sizeof(float) * (size_t)(rows * cols));
    memcpy(c->h[idx], data, sizeof(float) * (size_t)(rows * cols));
}

/* CPU reference engine vs CUDA engine on one model. strict: greedy must be equal (real
 * model); else teacher-forced logits within 1e-3 (fp32) or 0.1 (q8: CUDA's Q8-activation
 * decode; else its exact fp32 decode). */
static void compare_model(const char *path, int n_gen, bool strict, bool q8) {
    char what[1024];
    static const int32_t prompts[][8] = {{2, 818, 5279, 529, 7001, 563}, {2, 9259, 236764, 1217},
                                         {2, 3689, 563, 506, 1791, 529, 2866, 236881}};
    static const int32_t plen[] = {6, 4, 8};
    ts_engine *ec = NULL, *eg = NULL;
    layer_cap capc = {.on = true}, capg = {.on = true};
    ts_engine_params pc = {.model_path = path, .reference = true, .n_ctx = 128, .n_batch = 64,
                           .hook = on_layer, .hook_ctx = &capc};
    const char *mode = q8 ? "[cuda q8]" : "[cuda fp32]";
    const double bound = q8 ? 0.1 : 1e-3;
    setenv("TESSERA_CUDA_MMV", q8 ? "q8" : "fp32", 1); /* read at backend creation */
    /* the prefill matmuls too: q8 = int8 tensor cores (sm_80+), else the fp32 tiles */
    setenv("TESSERA_CUDA_GEMM", q8 ? "tc" : "fp32", 1);
    ts_engine_params pg = {.model_path = path, .backend = "cuda", .n_ctx = 128, .n_batch = 64,
                           .hook = on_layer, .hook_ctx = &capg};
    if (ts_engine_create(&pc, &ec) != TS_OK || ts_engine_create(&pg, &eg) != TS_OK) {
        snprintf(what, sizeof what, "%s: engines: %s", path, ts_last_error());
        check(false, what);
        ts_engine_destroy(ec);
        ts_engine_destroy(eg);
        return;
    }
    const int64_t V = ts_engine_config(ec)->n_vocab;
    float *lc = malloc(sizeof(float) * (size_t)V), *lg = malloc(sizeof(float) * (size_t)V);
    for (int pi = 0; pi < 3; pi++) {
        int32_t tok[8], pos[8], seq[8] = {0};
        for (int i = 0; i < plen[pi]; i++) {
            tok[i] = prompts[pi][i] < V ? prompts[pi][i] : prompts[pi][i] % (int32_t)V;
            pos[i] = i;
        }
        ts_engine_seq_release(ec, 0);
        ts_engine_seq_release(eg, 0);
        ts_engine_seq_reserve(ec, 0, plen[pi] + n_gen);
        ts_engine_seq_reserve(eg, 0, plen[pi] + n_gen);
        ts_batch b = {.n_tokens = plen[pi], .token = tok, .pos = pos, .seq = seq};
        capc.on = capg.on = pi == 0;
        bool ok = ts_engine_step(ec, &b, lc) == TS_OK && ts_engine_step(eg, &b, lg) == TS_OK;
        capc.on = capg.on = false;
        if (pi == 0) {
            printf("info: %s %s per-layer hidden rel err (prompt 0):", path, mode);
            for (int l = 0; l < 80 && capc.h[l] && capg.h[l]; l++) {
                double mx = 0;
                for (int64_t i = 0; i < capc.n[l]; i++)
                    if (fabs(capc.h[l][i]) > mx) mx = fabs(capc.h[l][i]);
                printf(" %d:%.2g(max %.3g)", l - 1, ts_fixture_rel_err(capg.h[l], capc.h[l], (size_t)capc.n[l]), mx);
            }
            printf("\n");
        }
        double worst = 0;
        int same = 0, cur = plen[pi];
        bool diverged = false;
        for (int g = 0; ok && g < n_gen; g++) {
            double er = ts_fixture_rel_err(lg, lc, (size_t)V);
            if (er > worst) worst = er;
            int32_t nc = argmax(lc, V), ng = argmax(lg, V);
            if (nc == ng && !diverged) same++;
            else diverged = true;
            if (strict && diverged) break;
            int32_t t1[1] = {nc}, p1[1] = {cur++};
            ts_batch db = {.n_tokens = 1, .token = t1, .pos = p1, .seq = seq};
            if (g + 1 < n_gen)
                ok = ts_engine_step(ec, &db, lc) == TS_OK && ts_engine_step(eg, &db, lg) == TS_OK;
        }
        if (strict) {
            snprintf(what, sizeof what, "%s %s prompt %d: CUDA greedy %d/%d tokens equal the CPU "
                     "(worst logits rel err %.3g)", path, mode, pi, same, n_gen, worst);
            check(ok && same == n_gen, what);
        } else {
            snprintf(what, sizeof what, "%s %s prompt %d: teacher-forced logits rel err %.3g "
                     "(greedy agreed on %d/%d before diverging)", path, mode, pi, worst, same,
                     n_gen);
            check(ok && worst <= bound, what);
        }
        printf("info: %s\n", what);
    }
    for (int l = 0; l < 80; l++) {
        free(capc.h[l]);
        free(capg.h[l]);
    }
    free(lc);
    free(lg);
    ts_engine_destroy(ec);
    ts_engine_destroy(eg);
}

int main(int argc, char **argv) {
    int n = 0;
    if (ts_cuda_device_count(&n) != TS_OK || n == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const char *dir = argc > 1 ? argv[1] : TS_TEST_DATA "/fixtures/hf";
    const char *cfgs[] = {"gqa1", "gqa2", "gqa4_270m_like", "like27b"};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) run_fixture(dir, cfgs[i]);
    printf("worst HF logits rel err %.3g\n", g_worst);
    const char *m = getenv("TESSERA_MODEL_270M");
    if (m && *m) compare_model(m, 32, true, false);
    else printf("TESSERA_MODEL_270M not set: the real-model comparison is skipped\n");
    const char *extra = getenv("TESSERA_CUDA_CMP_MODELS");
    if (extra && *extra) {
        char *list = strdup(extra);
        for (char *p = strtok(list, ":"); p; p = strtok(NULL, ":")) {
            compare_model(p, 16, false, false);
            compare_model(p, 16, false, true);
        }
        free(list);
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
