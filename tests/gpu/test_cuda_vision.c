/* test_cuda_vision.c: vision on CUDA (vision params backend "cuda", shard/vision_cuda.c,
 * kernels/cuda/vision.cu) and image prompts on the CUDA engine (the bidirectional image
 * mask, ts_attn_args.hi, in the attention kernel).
 *
 * 1. Tiny HF fixtures (tests/fixtures/vision, tests/tools/make_vision_fixtures.py): the
 *    encoder output and the soft tokens of two images from the mmproj GGUF and from the HF
 *    checkpoint directory, CUDA vs HF: max|a-b|/max|ref| <= 1e-4 (fp32 everywhere: only the
 *    summation order differs, the CPU's bound too).
 * 2. Random weights at larger shapes (ts_mkmodel_write_mmproj, fresh seed per run): CUDA vs
 *    the CPU (optimized path), same tolerance style, <= 1e-3 (fp32; 27-layer-deep rounding
 *    of different summation orders, tanhf / expf of CUDA's libdevice vs glibc):
 *      - width 1152, 16 heads of 72 (SigLIP so400m), MLP 4304, 20 x 20 patches (400: the
 *        attention's 64-query / 32-key tiles end partway), 3 layers, pooling 4, proj 640;
 *      - the full so400m input (896 / 14: 4096 patches, 256 tokens), 2 layers, proj 2560.
 * 3. The engine on CUDA with the multimodal prompt of test_engine_mm (two images, soft
 *    tokens from our encoder, bidirectional inside each image, sliding window 4): logits
 *    of every position vs HF, <= 1e-4, in one step and in chunks that keep each image
 *    whole; the causal-only run must be far off (> 1e-2); a split image is refused.
 * 4. ShieldGemma 2 (tiny random, tiny_sg checkpoint + tiny_text.gguf): P(Yes) with the
 *    encoder and the engine both on CUDA vs HF, |diff| <= 1e-4 (the CPU reference path
 *    meets 1e-5; the CUDA engine's attention / softmax differ in order).
 * All of the above run twice: with TESSERA_CUDA_GEMM=fp32 (the encoder's matmuls and
 * attention on the exact fp32 kernels: the limits above) and with the default (sm_80+: TF32
 * tensor cores for the matmuls and the attention, inputs rounded to 10-bit mantissas, fp32
 * accumulation), limits: encoder / soft tokens / logits 3e-3 relative, P(Yes) 1e-3 absolute
 * (seen on an H100: 6.7e-4 against HF and 5.8e-4 against the CPU for the encoder, 1.2e-3
 * for the tiny model's logits, 5e-6 for P(Yes)).
 * 5. TF32 at full depth: the real so400m (27 layers, 896 x 896, random weights) on CUDA,
 *    TF32 vs exact fp32, soft tokens <= 3e-3 relative (seen: 2.5e-4; the CPU needs minutes
 *    at this size; the fp32 path is tied to the CPU by 2.).
 * Exits 77 without a GPU; prints "N passed, N failed". Label `gpu`.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "fixture_util.h"
#include "kernels_cuda.h"
#include "mkmodel.h"
#include "quant.h"
#include "shieldgemma.h"
#include "vision.h"

#define FIX TS_TEST_DATA "/fixtures/vision"
#define IMG TS_TEST_DATA "/fixtures/image"

static int g_pass, g_fail;
/* limits of the current mode (exact fp32 or TF32 matmuls) */
static double g_tol_hf = 1e-4, g_tol_cpu = 1e-3, g_tol_p = 1e-4;
static const char *g_mode = "fp32";

static void check(bool ok, const char *what) {
    if (ok) g_pass++;
    else g_fail++;
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
}

static ts_vision *load(const char *path, const char *backend) {
    ts_vision_params p = {.n_threads = 0, .backend = backend};
    ts_vision *v = NULL;
    if (ts_vision_load(path, &p, &v) != TS_OK) {
        char what[512];
        snprintf(what, sizeof what, "load %s (%s): %s", path, backend, ts_last_error());
        check(false, what);
        return NULL;
    }
    return v;
}

/* 1. */
static void tiny_vs_hf(const char *path) {
    char what[512];
    ts_vision *v = load(path, "cuda");
    if (!v) return;
    check(!strcmp(ts_vision_backend(v), "cuda"), "vision reports the cuda backend");
    const ts_vision_config *c = ts_vision_get_config(v);
    const char *pix[2] = {IMG "/rgb_37x23_112.f32", IMG "/wide_300x170_112.f32"};
    const char *vis[2] = {FIX "/img0_vision.f32", FIX "/img1_vision.f32"};
    const char *emb[2] = {FIX "/img0_embd.f32", FIX "/img1_embd.f32"};
    const size_t nv = (size_t)c->n_patches * c->n_embd, ne = (size_t)c->n_tokens * c->proj_dim;
    for (int i = 0; i < 2; i++) {
        float *px = ts_fixture_read_f32(pix[i], 3 * (size_t)c->image_size * c->image_size);
        float *rv = ts_fixture_read_f32(vis[i], nv), *re = ts_fixture_read_f32(emb[i], ne);
        float *ov = malloc(sizeof(float) * nv), *oe = malloc(sizeof(float) * ne);
        if (!px || !rv || !re || !ov || !oe) {
            check(false, "fixture files");
        } else {
            ts_status rc = ts_vision_encode(v, px, ov, oe);
            const double ev = rc == TS_OK ? ts_fixture_rel_err(ov, rv, nv) : INFINITY;
            const double ee = rc == TS_OK ? ts_fixture_rel_err(oe, re, ne) : INFINITY;
            snprintf(what, sizeof what, "[%s] %s image %d on CUDA vs HF: encoder %.2e, soft "
                     "tokens %.2e (limit %.0e) %s", g_mode, strrchr(path, '/') + 1, i, ev, ee,
                     g_tol_hf, rc == TS_OK ? "" : ts_last_error());
            check(ev <= g_tol_hf && ee <= g_tol_hf, what);
        }
        free(px), free(rv), free(re), free(ov), free(oe);
    }
    ts_vision_destroy(v);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* 2. */
static void random_vs_cpu(const char *label, ts_mkmodel_mmproj_params mp) {
    char path[256], what[512];
    snprintf(path, sizeof path, "/tmp/ts_cuda_vision_%d_%s.gguf", (int)getpid(), label);
    FILE *f = fopen(path, "wb");
    ts_status rc = f ? ts_mkmodel_write_mmproj(&mp, f) : TS_IO;
    if (f && fclose(f) != 0) rc = TS_IO;
    if (rc != TS_OK) {
        snprintf(what, sizeof what, "%s: writing %s: %s", label, path, ts_last_error());
        check(false, what);
        remove(path);
        return;
    }
    ts_vision *vc = load(path, "cpu"), *vg = load(path, "cuda");
    remove(path);
    if (vc && vg) {
        const ts_vision_config *c = ts_vision_get_config(vc);
        const size_t S = (size_t)c->image_size, nv = (size_t)c->n_patches * c->n_embd,
                     ne = (size_t)c->n_tokens * c->proj_dim;
        float *px = malloc(sizeof(float) * 3 * S * S);
        float *a = malloc(sizeof(float) * nv), *b = malloc(sizeof(float) * nv);
        float *ea = malloc(sizeof(float) * ne), *eb = malloc(sizeof(float) * ne);
        if (!px || !a || !b || !ea || !eb) {
            check(false, "out of memory");
        } else {
            srand((unsigned)mp.seed);
            for (size_t i = 0; i < 3 * S * S; i++) px[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
            const double t0 = now_s();
            ts_status r1 = ts_vision_encode(vc, px, a, ea);
            const double t1 = now_s();
            ts_status r2 = ts_vision_encode(vg, px, b, eb);
            const double t2 = now_s();
            const double ev = r1 == TS_OK && r2 == TS_OK ? ts_fixture_rel_err(b, a, nv) : INFINITY;
            const double ee = r1 == TS_OK && r2 == TS_OK ? ts_fixture_rel_err(eb, ea, ne) : INFINITY;
            snprintf(what, sizeof what, "[%s] %s (%d patches, width %d, %d heads, %d layers, "
                     "seed %llu): CUDA vs CPU encoder %.2e, soft tokens %.2e (limit %.0e; CPU "
                     "%.2f s, CUDA %.3f s incl. first-call setup) %s", g_mode, label,
                     c->n_patches, c->n_embd, c->n_head, c->n_layer,
                     (unsigned long long)mp.seed, ev, ee, g_tol_cpu, t1 - t0, t2 - t1,
                     r2 != TS_OK ? ts_last_error() : "");
            check(ev <= g_tol_cpu && ee <= g_tol_cpu, what);
        }
        free(px), free(a), free(b), free(ea), free(eb);
    }
    ts_vision_destroy(vc);
    ts_vision_destroy(vg);
}

/* 3. as test_engine_mm.c */
#define MAXT 64
#define VOCAB 512
typedef struct {
    int32_t n, ids[MAXT], img_tok;
    float *ref;
    float embd[2][4 * 64];
    const float *rows[MAXT];
    int32_t hi[MAXT];
} mm_case;

static bool load_case(mm_case *m, ts_vision *v) {
    json_error_t je;
    json_t *root = json_load_file(FIX "/vision.json", 0, &je);
    if (!root) return false;
    json_t *pr = json_object_get(root, "prompt");
    m->n = (int32_t)json_array_size(pr);
    if (m->n <= 0 || m->n > MAXT) {
        json_decref(root);
        return false;
    }
    for (int32_t i = 0; i < m->n; i++) m->ids[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
    m->img_tok = (int32_t)json_integer_value(json_object_get(json_object_get(root, "tokens"), "image"));
    json_decref(root);
    m->ref = ts_fixture_read_f32(FIX "/mm_logits.f32", (size_t)m->n * VOCAB);
    if (!m->ref) return false;
    const char *pix[2] = {IMG "/rgb_37x23_112.f32", IMG "/wide_300x170_112.f32"};
    for (int i = 0; i < 2; i++) {
        float *px = ts_fixture_read_f32(pix[i], 3 * 112 * 112);
        ts_status rc = px ? ts_vision_encode(v, px, NULL, m->embd[i]) : TS_IO;
        free(px);
        if (rc != TS_OK) return false;
    }
    int img = -1, k = 0;
    for (int32_t i = 0; i < m->n; i++) {
        m->rows[i] = NULL;
        m->hi[i] = i;
        if (m->ids[i] != m->img_tok) continue;
        if (i == 0 || m->ids[i - 1] != m->img_tok) img++, k = 0;
        if (img > 1) return false;
        m->rows[i] = m->embd[img] + 64 * k++;
        int32_t end = i;
        while (end + 1 < m->n && m->ids[end + 1] == m->img_tok) end++;
        m->hi[i] = end;
    }
    return img == 1;
}

static ts_status run_mm(const mm_case *m, const int32_t *cuts, int n_cuts, bool causal,
                        float *logits) {
    ts_engine_params p = {.model_path = FIX "/tiny_text.gguf", .backend = "cuda", .n_ctx = 64,
                          .n_batch = 32};
    ts_engine *e = NULL;
    ts_status rc = ts_engine_create(&p, &e);
    if (rc != TS_OK) return rc;
    rc = ts_engine_seq_reserve(e, 0, m->n);
    int32_t pos[MAXT], seq[MAXT] = {0};
    uint8_t want[MAXT];
    for (int32_t i = 0; i < m->n; i++) pos[i] = i, want[i] = 1;
    for (int c = 0; c + 1 < n_cuts && rc == TS_OK; c++) {
        const int32_t a = cuts[c], n = cuts[c + 1] - cuts[c];
        ts_batch b = {.n_tokens = n, .token = m->ids + a, .pos = pos + a, .seq = seq + a,
                      .want_logits = want + a, .embd = m->rows + a,
                      .attn_hi = causal ? NULL : m->hi + a};
        rc = ts_engine_step(e, &b, logits + (size_t)a * VOCAB);
    }
    ts_engine_destroy(e);
    return rc;
}

static void engine_mm(void) {
    char what[512];
    ts_vision *v = load(FIX "/tiny_mmproj.gguf", "cuda");
    if (!v) return;
    mm_case m;
    memset(&m, 0, sizeof m);
    if (!load_case(&m, v)) {
        check(false, "multimodal case (vision.json, mm_logits.f32, pixels)");
        ts_vision_destroy(v);
        free(m.ref);
        return;
    }
    float *lg = malloc(sizeof(float) * (size_t)m.n * VOCAB);
    const int32_t whole[2] = {0, m.n}, chunks[4] = {0, 5, 13, m.n};
    for (int split = 0; split < 2; split++) {
        ts_status rc = run_mm(&m, split ? chunks : whole, split ? 4 : 2, false, lg);
        const double err = rc == TS_OK ? ts_fixture_rel_err(lg, m.ref, (size_t)m.n * VOCAB) : INFINITY;
        snprintf(what, sizeof what, "[%s] CUDA engine, image prompt %s: logits vs HF %.2e "
                 "(limit %.0e) %s", g_mode, split ? "in 3 chunks" : "in one step", err,
                 g_tol_hf, rc == TS_OK ? "" : ts_last_error());
        check(err <= g_tol_hf, what);
    }
    ts_status rc = run_mm(&m, whole, 2, true, lg);
    const double err = rc == TS_OK ? ts_fixture_rel_err(lg, m.ref, (size_t)m.n * VOCAB) : 0;
    snprintf(what, sizeof what, "CUDA engine, causal-only run differs from HF: %.2e (> 1e-2)", err);
    check(rc == TS_OK && err > 1e-2, what);
    const int32_t bad[3] = {0, 7, m.n};
    rc = run_mm(&m, bad, 3, false, lg);
    check(rc == TS_INVAL && strstr(ts_last_error(), "image must be stepped whole"),
          "CUDA engine refuses an image split across steps");
    free(lg);
    free(m.ref);
    ts_vision_destroy(v);
}

/* 4. */
static void shieldgemma(void) {
    char what[512];
    json_error_t je;
    json_t *root = json_load_file(FIX "/vision.json", 0, &je);
    json_t *sg = root ? json_object_get(root, "shieldgemma") : NULL;
    json_t *pr = sg ? json_object_get(sg, "prompt") : NULL;
    int32_t n = pr ? (int32_t)json_array_size(pr) : 0, ids[64];
    if (n <= 0 || n > 64) {
        check(false, "shieldgemma case in vision.json");
        json_decref(root);
        return;
    }
    for (int32_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
    const int32_t first = (int32_t)json_integer_value(json_object_get(sg, "image_first"));
    const int32_t yes = (int32_t)json_integer_value(json_object_get(sg, "yes"));
    const int32_t no = (int32_t)json_integer_value(json_object_get(sg, "no"));
    ts_vision *v = load(FIX "/tiny_sg", "cuda");
    ts_engine_params ep = {.model_path = FIX "/tiny_text.gguf", .backend = "cuda", .n_ctx = 64,
                           .n_batch = 8};
    ts_engine *e = NULL;
    if (v && ts_engine_create(&ep, &e) != TS_OK) {
        snprintf(what, sizeof what, "CUDA engine: %s", ts_last_error());
        check(false, what);
    }
    const char *pix[2] = {IMG "/rgb_37x23_112.f32", IMG "/wide_300x170_112.f32"};
    json_t *cases = json_object_get(sg, "cases");
    for (size_t c = 0; e && c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const int img = (int)json_integer_value(json_object_get(cs, "image"));
        const double want = json_real_value(json_object_get(cs, "p_yes"));
        float *px = img >= 0 && img < 2 ? ts_fixture_read_f32(pix[img], 3 * 112 * 112) : NULL;
        float embd[4 * 64], logits[512], p = -1;
        ts_status rc = px ? ts_vision_encode(v, px, NULL, embd) : TS_IO;
        if (rc == TS_OK) rc = ts_sg_score_tokens(e, ids, n, first, 4, embd, yes, no, 0, logits, &p);
        snprintf(what, sizeof what, "[%s] ShieldGemma 2 on CUDA, image %d: P(Yes) %.6f, HF "
                 "%.6f (|diff| %.1e, limit %.0e) %s", g_mode, img, p, want, fabs(p - want),
                 g_tol_p, rc == TS_OK ? "" : ts_last_error());
        check(rc == TS_OK && fabs(p - want) <= g_tol_p, what);
        free(px);
    }
    ts_engine_destroy(e);
    ts_vision_destroy(v);
    json_decref(root);
}

/* 5. */
static void tf32_full_depth(uint64_t seed) {
    char path[256], what[512];
    snprintf(path, sizeof path, "/tmp/ts_cuda_vision_%d_full.gguf", (int)getpid());
    ts_mkmodel_mmproj_params mp = ts_mkmodel_mmproj_gemma3(2560);
    mp.seed = seed;
    FILE *f = fopen(path, "wb");
    ts_status rc = f ? ts_mkmodel_write_mmproj(&mp, f) : TS_IO;
    if (f && fclose(f) != 0) rc = TS_IO;
    if (rc != TS_OK) {
        check(false, "writing the full so400m mmproj");
        remove(path);
        return;
    }
    setenv("TESSERA_CUDA_GEMM", "fp32", 1);
    ts_vision *ve = load(path, "cuda");
    unsetenv("TESSERA_CUDA_GEMM");
    ts_vision *vt = load(path, "cuda");
    remove(path);
    if (ve && vt) {
        const size_t S = 896, ne = 256 * 2560;
        float *px = malloc(sizeof(float) * 3 * S * S), *a = malloc(sizeof(float) * ne),
              *b = malloc(sizeof(float) * ne);
        if (px && a && b) {
            srand((unsigned)seed);
            for (size_t i = 0; i < 3 * S * S; i++) px[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
            ts_status r1 = ts_vision_encode(ve, px, NULL, a);
            double t[2];
            t[0] = now_s();
            if (r1 == TS_OK) r1 = ts_vision_encode(ve, px, NULL, a);
            t[1] = now_s();
            ts_status r2 = ts_vision_encode(vt, px, NULL, b);
            const double t2 = now_s();
            if (r2 == TS_OK) r2 = ts_vision_encode(vt, px, NULL, b);
            const double t3 = now_s();
            const double e = r1 == TS_OK && r2 == TS_OK ? ts_fixture_rel_err(b, a, ne) : INFINITY;
            snprintf(what, sizeof what, "so400m full depth (27 layers, 4096 patches, seed %llu): "
                     "TF32 vs fp32 soft tokens %.2e (limit 3e-3; encode fp32 %.1f ms, TF32 "
                     "%.1f ms)", (unsigned long long)seed, e, (t[1] - t[0]) * 1e3,
                     (t3 - t2) * 1e3);
            check(e <= 3e-3, what);
        } else {
            check(false, "out of memory");
        }
        free(px), free(a), free(b);
    }
    ts_vision_destroy(ve);
    ts_vision_destroy(vt);
}

int main(void) {
    int n = 0;
    if (ts_cuda_device_count(&n) != TS_OK || n == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const uint64_t seed = (uint64_t)time(NULL);
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 0) {
            setenv("TESSERA_CUDA_GEMM", "fp32", 1);
        } else {
            unsetenv("TESSERA_CUDA_GEMM");
            g_mode = "default (TF32 on sm_80+)";
            g_tol_hf = 3e-3, g_tol_cpu = 3e-3, g_tol_p = 1e-3;
        }
        tiny_vs_hf(FIX "/tiny_mmproj.gguf");
        tiny_vs_hf(FIX "/tiny");
        ts_mkmodel_mmproj_params a = ts_mkmodel_mmproj_gemma3(640);
        a.image_size = 280, a.n_layer = 3, a.type = TS_TYPE_F32, a.seed = seed;
        random_vs_cpu("so400m-width", a);
        ts_mkmodel_mmproj_params b = ts_mkmodel_mmproj_gemma3(2560);
        b.n_layer = 2, b.type = TS_TYPE_F16, b.seed = seed + 1;
        random_vs_cpu("so400m-896", b);
        engine_mm();
        shieldgemma();
    }
    tf32_full_depth(seed + 2);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
