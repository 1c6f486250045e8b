/* test_shieldgemma.c: ShieldGemma 2 scoring (shard/shieldgemma.c) against Hugging Face
 * ShieldGemma2ForImageClassification on a tiny random model (tests/fixtures/vision, made by
 * tests/tools/make_vision_fixtures.py): the vision tower loaded from the ShieldGemma 2
 * safetensors checkpoint (its "model.model." tensor names), the text model from the GGUF of
 * the same weights; P(Yes) = softmax(Yes, No)[0] at the last position of a prompt with the
 * image block, for two images, reference and optimized paths. Also the prompt text and
 * multimodal tokenization rules on an in-test vocabulary, and (with TESSERA_MODEL_270M) the
 * prompt tokens against llama.cpp's tokenizer of the real Gemma 3 vocabulary
 * (tests/fixtures/vision/sg_prompt_270m.json).
 *
 * Tolerance: |P(Yes) - HF| <= 1e-5 (reference path), 5e-4 (optimized path: llama.cpp's
 * fp16 GELU table, as test_engine_hf's TOL_FAST).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "fixture_util.h"
#include "gguf.h"
#include "shieldgemma.h"
#include "vision.h"

#define FIX TS_TEST_DATA "/fixtures/vision"
#define IMG TS_TEST_DATA "/fixtures/image"

static void test_scores_match_hf(void **state) {
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(FIX "/vision.json", 0, &je);
    assert_non_null(root);
    json_t *sg = json_object_get(root, "shieldgemma");
    json_t *pr = json_object_get(sg, "prompt");
    int32_t n = (int32_t)json_array_size(pr), ids[64];
    assert_true(n > 0 && n <= 64);
    for (int32_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
    const int32_t first = (int32_t)json_integer_value(json_object_get(sg, "image_first"));
    const int32_t yes = (int32_t)json_integer_value(json_object_get(sg, "yes"));
    const int32_t no = (int32_t)json_integer_value(json_object_get(sg, "no"));
    ts_vision *v = NULL;
    ts_status rc = ts_vision_load(FIX "/tiny_sg", NULL, &v);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    const char *pix[2] = {IMG "/rgb_37x23_112.f32", IMG "/wide_300x170_112.f32"};
    for (int ref = 1; ref >= 0; ref--) {
        ts_engine_params ep = {.model_path = FIX "/tiny_text.gguf", .n_threads = 2,
                               .reference = ref, .n_ctx = 64, .n_batch = 8};
        ts_engine *e = NULL;
        assert_int_equal(ts_engine_create(&ep, &e), TS_OK);
        float logits[512];
        json_t *cases = json_object_get(sg, "cases");
        for (size_t c = 0; c < json_array_size(cases); c++) {
            json_t *cs = json_array_get(cases, c);
            const int img = (int)json_integer_value(json_object_get(cs, "image"));
            const double want = json_real_value(json_object_get(cs, "p_yes"));
            float *px = ts_fixture_read_f32(pix[img], 3 * 112 * 112);
            float embd[4 * 64];
            assert_int_equal(ts_vision_encode(v, px, NULL, embd), TS_OK);
            float p = -1;
            rc = ts_sg_score_tokens(e, ids, n, first, 4, embd, yes, no, 0, logits, &p);
            if (rc != TS_OK) fail_msg("%s", ts_last_error());
            const double tol = ref ? 1e-5 : 5e-4;
            printf("  %s image %d: P(Yes) %.6f, HF %.6f (|diff| %.1e, limit %.0e)\n",
                   ref ? "reference" : "optimized", img, p, want, fabs(p - want), tol);
            assert_true(fabs(p - want) <= tol);
            free(px);
        }
        ts_engine_destroy(e);
    }
    ts_vision_destroy(v);
    json_decref(root);
}

static void test_policies_and_prompt(void **state) {
    (void)state;
    size_t n;
    const ts_sg_policy *p = ts_sg_default_policies(&n);
    assert_int_equal(n, 3);
    assert_string_equal(p[0].name, "dangerous");
    assert_non_null(strstr(ts_sg_policy_text("violence"), "moment of death)."));
    assert_null(ts_sg_policy_text("nope"));
    char *s = NULL;
    assert_int_equal(ts_sg_render("No Foo: bar.", &s), TS_OK);
    const char *head = "<bos><start_of_turn>user\n<start_of_image><start_of_turn>user\nYou are";
    assert_true(!strncmp(s, head, strlen(head)));
    assert_non_null(strstr(s, "<BEGIN_SAFETY_POLICY>\nNo Foo: bar.\n</END_SAFETY_POLICY>\n\n"));
    const char *tail = "Your Answer must start with 'Yes' or 'No'.<end_of_turn>\n<start_of_turn>model\n";
    assert_string_equal(s + strlen(s) - strlen(tail), tail);
    ts_free(s);
    assert_int_equal(ts_sg_render("", &s), TS_INVAL);
}

/* The prompt tokens on the real Gemma 3 vocabulary against llama.cpp's tokenizer of the
 * same string with "<start_of_image><end_of_image>" (soft tokens inserted after), from
 * tests/tools/make_shieldgemma_fixtures.py. Skipped without the 270M model. */
static void test_prompt_tokens_270m(void **state) {
    (void)state;
    const char *path = getenv("TESSERA_MODEL_270M");
    if (!path || !*path) skip();
    ts_gguf *g = NULL;
    assert_int_equal(ts_gguf_open(path, &g), TS_OK);
    ts_tokenizer *tok = NULL;
    assert_int_equal(ts_tokenizer_load(g, &tok), TS_OK);
    json_error_t je;
    json_t *root = json_load_file(FIX "/sg_prompt_270m.json", 0, &je);
    assert_non_null(root);
    json_t *cases = json_object_get(root, "cases");
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *policy = json_string_value(json_object_get(cs, "policy"));
        json_t *want = json_object_get(cs, "ids");
        ts_sg_params prm = ts_sg_default_params();
        ts_tokens t = {0};
        int32_t first = -1;
        ts_status rc = ts_sg_prompt_tokens(tok, ts_sg_policy_text(policy) ? ts_sg_policy_text(policy)
                                                                         : policy,
                                           &prm, 256, &t, &first);
        if (rc != TS_OK) fail_msg("%s", ts_last_error());
        assert_int_equal(t.n, json_array_size(want));
        for (size_t i = 0; i < t.n; i++)
            if (t.ids[i] != json_integer_value(json_array_get(want, i)))
                fail_msg("policy %s: token %zu is %d, llama.cpp %lld", policy, i, t.ids[i],
                         (long long)json_integer_value(json_array_get(want, i)));
        assert_int_equal(first, json_integer_value(json_object_get(cs, "image_first")));
        printf("  %s: %zu tokens identical to llama.cpp's\n", policy, t.n);
        ts_tokens_free(&t);
    }
    json_decref(root);
    ts_tokenizer_free(tok);
    ts_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policies_and_prompt),
        cmocka_unit_test(test_scores_match_hf),
        cmocka_unit_test(test_prompt_tokens_270m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
