/* test_engine_mm.c: Gemma 3 multimodal prompts in the engine (shard/engine.c,
 * backend_cpu.c) against Hugging Face Gemma3ForConditionalGeneration on a tiny random
 * model (tests/fixtures/vision, tests/tools/make_vision_fixtures.py): a prompt with two
 * images (<start_of_image>, the soft tokens, <end_of_image>), soft-token embeddings from
 * our vision encoder (mmproj GGUF) substituted at the image positions, attention inside each
 * image bidirectional (the sliding window of 4 is smaller than the block plus its prefix).
 * Logits of every position, reference and optimized CPU paths, the prompt in one step and
 * in chunks that keep each image whole; a causal-only run must differ (the mask matters);
 * an image split across steps is refused.
 *
 * Tolerance: max|ours - HF| / max|HF| <= 1e-4 on the reference path; 2e-3 on the optimized
 * path, which emulates llama.cpp's CPU numerics (fp16 GELU table; as test_engine_hf's
 * TOL_FAST).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "fixture_util.h"
#include "vision.h"

#define FIX TS_TEST_DATA "/fixtures/vision"
#define IMG TS_TEST_DATA "/fixtures/image"
#define MAXT 64
#define VOCAB 512

typedef struct {
    int32_t n, ids[MAXT], img_tok;
    float *ref;        /* (n, VOCAB) */
    float embd[2][4 * 64];
    const float *rows[MAXT];
    int32_t hi[MAXT];
} mm_case;

static void load_case(mm_case *m) {
    json_error_t je;
    json_t *root = json_load_file(FIX "/vision.json", 0, &je);
    assert_non_null(root);
    json_t *pr = json_object_get(root, "prompt");
    m->n = (int32_t)json_array_size(pr);
    assert_true(m->n > 0 && m->n <= MAXT);
    for (int32_t i = 0; i < m->n; i++) m->ids[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
    m->img_tok = (int32_t)json_integer_value(json_object_get(json_object_get(root, "tokens"), "image"));
    json_decref(root);
    m->ref = ts_fixture_read_f32(FIX "/mm_logits.f32", (size_t)m->n * VOCAB);
    assert_non_null(m->ref);
    /* soft tokens from our encoder */
    ts_vision *v = NULL;
    assert_int_equal(ts_vision_load(FIX "/tiny_mmproj.gguf", NULL, &v), TS_OK);
    const char *pix[2] = {IMG "/rgb_37x23_112.f32", IMG "/wide_300x170_112.f32"};
    for (int i = 0; i < 2; i++) {
        float *px = ts_fixture_read_f32(pix[i], 3 * 112 * 112);
        assert_int_equal(ts_vision_encode(v, px, NULL, m->embd[i]), TS_OK);
        free(px);
    }
    ts_vision_destroy(v);
    /* rows and attention bounds: each run of image tokens is one image block */
    int img = -1, k = 0;
    for (int32_t i = 0; i < m->n; i++) {
        m->rows[i] = NULL;
        m->hi[i] = i;
        if (m->ids[i] != m->img_tok) continue;
        if (i == 0 || m->ids[i - 1] != m->img_tok) img++, k = 0;
        m->rows[i] = m->embd[img] + 64 * k++;
        int32_t end = i;
        while (end + 1 < m->n && m->ids[end + 1] == m->img_tok) end++;
        m->hi[i] = end;
    }
    assert_int_equal(img, 1);
}

/* Steps the prompt in chunks [cuts[i], cuts[i+1]); logits of every position. */
static ts_status run(const mm_case *m, bool reference, const int32_t *cuts, int n_cuts,
                     bool causal, float *logits) {
    ts_engine_params p = {.model_path = FIX "/tiny_text.gguf", .n_threads = 2,
                          .reference = reference, .n_ctx = 64, .n_batch = 32};
    ts_engine *e = NULL;
    ts_status rc = ts_engine_create(&p, &e);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    assert_int_equal(ts_engine_seq_reserve(e, 0, m->n), TS_OK);
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

static void test_matches_hf(void **state) {
    (void)state;
    mm_case m;
    load_case(&m);
    float *lg = malloc(sizeof(float) * (size_t)m.n * VOCAB);
    const int32_t whole[2] = {0, m.n};
    /* chunks keep each image (positions 5..8 and 13..16) whole */
    const int32_t chunks[4] = {0, 5, 13, m.n};
    for (int ref = 1; ref >= 0; ref--)
        for (int split = 0; split < 2; split++) {
            assert_int_equal(run(&m, ref, split ? chunks : whole, split ? 4 : 2, false, lg), TS_OK);
            double err = ts_fixture_rel_err(lg, m.ref, (size_t)m.n * VOCAB);
            const double tol = ref ? 1e-4 : 2e-3;
            printf("  %s %s: max rel err %.2e (limit %.0e)\n", ref ? "reference" : "optimized",
                   split ? "3 chunks" : "one step", err, tol);
            assert_true(err <= tol);
        }
    /* causal attention inside the images gives other logits */
    assert_int_equal(run(&m, false, whole, 2, true, lg), TS_OK);
    double err = ts_fixture_rel_err(lg, m.ref, (size_t)m.n * VOCAB);
    printf("  causal-only run: %.2e (must be far off)\n", err);
    assert_true(err > 1e-2);
    free(lg);
    free(m.ref);
}

static void test_split_image_refused(void **state) {
    (void)state;
    mm_case m;
    load_case(&m);
    float *lg = malloc(sizeof(float) * (size_t)m.n * VOCAB);
    const int32_t bad[3] = {0, 7, m.n}; /* cuts the first image */
    assert_int_equal(run(&m, false, bad, 3, false, lg), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "image must be stepped whole"));
    free(lg);
    free(m.ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_hf),
        cmocka_unit_test(test_split_image_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
