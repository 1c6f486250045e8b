/* test_vision.c: the SigLIP encoder and Gemma 3 projector (shard/vision.c) against a tiny
 * random-weight Hugging Face Gemma3ForConditionalGeneration (tests/fixtures/vision, made by
 * tests/tools/make_vision_fixtures.py): encoder output (after post_layernorm) and projected
 * soft tokens for two images, loaded from the HF safetensors checkpoint, from the same
 * weights written as a llama.cpp mmproj GGUF, and from an F16 mmproj with the legacy
 * fc1/fc2 name swap; reference and optimized paths. Also: an image file end to end
 * (decode + preprocess + encode), refusals of broken model files.
 *
 * Tolerance: max|ours - HF| / max|HF| <= 1e-4 for fp32 weights (float summation order only);
 * 2e-3 for the F16 mmproj (its matrices rounded to half precision).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "fixture_util.h"
#include "image.h"
#include "vision.h"

#define FIX TS_TEST_DATA "/fixtures/vision"
#define IMG TS_TEST_DATA "/fixtures/image"

static void check_model(const char *path, bool reference, double tol) {
    ts_vision_params p = {.n_threads = 2, .reference = reference};
    ts_vision *v = NULL;
    ts_status rc = ts_vision_load(path, &p, &v);
    if (rc != TS_OK) fail_msg("%s: %s", path, ts_last_error());
    const ts_vision_config *c = ts_vision_get_config(v);
    assert_int_equal(c->image_size, 112);
    assert_int_equal(c->n_patches, 64);
    assert_int_equal(c->n_embd, 32);
    assert_int_equal(c->n_layer, 2);
    assert_int_equal(c->n_head, 4);
    assert_int_equal(c->pool, 4);
    assert_int_equal(c->n_tokens, 4);
    assert_int_equal(c->proj_dim, 64);
    const char *pix[2] = {IMG "/rgb_37x23_112.f32", IMG "/wide_300x170_112.f32"};
    for (int i = 0; i < 2; i++) {
        float *px = ts_fixture_read_f32(pix[i], 3 * 112 * 112);
        assert_non_null(px);
        char f[512];
        snprintf(f, sizeof f, FIX "/img%d_vision.f32", i);
        float *rv = ts_fixture_read_f32(f, 64 * 32);
        snprintf(f, sizeof f, FIX "/img%d_embd.f32", i);
        float *re = ts_fixture_read_f32(f, 4 * 64);
        assert_non_null(rv);
        assert_non_null(re);
        float vo[64 * 32], eo[4 * 64];
        assert_int_equal(ts_vision_encode(v, px, vo, eo), TS_OK);
        double ev = ts_fixture_rel_err(vo, rv, 64 * 32), ee = ts_fixture_rel_err(eo, re, 4 * 64);
        printf("  %-40s %s img%d: encoder %.2e  soft tokens %.2e (limit %.0e)\n",
               strrchr(path, '/') + 1, reference ? "ref " : "fast", i, ev, ee, tol);
        assert_true(ev <= tol);
        assert_true(ee <= tol);
        free(px);
        free(rv);
        free(re);
    }
    ts_vision_destroy(v);
}

static void test_safetensors(void **state) {
    (void)state;
    check_model(FIX "/tiny", true, 1e-4);
    check_model(FIX "/tiny", false, 1e-4);
    check_model(FIX "/tiny/model.safetensors", false, 1e-4);
}

static void test_mmproj(void **state) {
    (void)state;
    check_model(FIX "/tiny_mmproj.gguf", true, 1e-4);
    check_model(FIX "/tiny_mmproj.gguf", false, 1e-4);
}

static void test_mmproj_f16_legacy(void **state) {
    (void)state;
    check_model(FIX "/tiny_mmproj_f16.gguf", false, 2e-3);
}

/* GGUF and safetensors loads give identical outputs (same fp32 weights, same code). */
static void test_same_outputs(void **state) {
    (void)state;
    ts_vision *a = NULL, *b = NULL;
    ts_vision_params p = {.n_threads = 1};
    assert_int_equal(ts_vision_load(FIX "/tiny", &p, &a), TS_OK);
    assert_int_equal(ts_vision_load(FIX "/tiny_mmproj.gguf", &p, &b), TS_OK);
    float *px = ts_fixture_read_f32(IMG "/wide_300x170_112.f32", 3 * 112 * 112);
    float ea[4 * 64], eb[4 * 64];
    assert_int_equal(ts_vision_encode(a, px, NULL, ea), TS_OK);
    assert_int_equal(ts_vision_encode(b, px, NULL, eb), TS_OK);
    assert_memory_equal(ea, eb, sizeof ea);
    free(px);
    ts_vision_destroy(a);
    ts_vision_destroy(b);
}

/* From the image file: decode, preprocess at the model's 112 x 112, encode. */
static void test_image_file(void **state) {
    (void)state;
    FILE *f = fopen(IMG "/rgb_37x23.png", "rb");
    assert_non_null(f);
    uint8_t buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ts_image im;
    assert_int_equal(ts_image_decode(buf, n, 0, &im), TS_OK);
    ts_vision *v = NULL;
    ts_vision_params p = {.n_threads = 2};
    assert_int_equal(ts_vision_load(FIX "/tiny_mmproj.gguf", &p, &v), TS_OK);
    float e[4 * 64];
    assert_int_equal(ts_vision_encode_image(v, &im, e), TS_OK);
    float *re = ts_fixture_read_f32(FIX "/img0_embd.f32", 4 * 64);
    double err = ts_fixture_rel_err(e, re, 4 * 64);
    printf("  rgb_37x23.png end to end: %.2e\n", err);
    assert_true(err <= 1e-4);
    free(re);
    ts_image_free(&im);
    ts_vision_destroy(v);
}

static void test_refusals(void **state) {
    (void)state;
    ts_vision *v = NULL;
    assert_int_equal(ts_vision_load(FIX "/missing.gguf", NULL, &v), TS_IO);
    assert_null(v);
    /* a text model GGUF is not an mmproj */
    assert_int_equal(ts_vision_load(FIX "/tiny_text.gguf", NULL, &v), TS_FORMAT);
    assert_non_null(strstr(ts_last_error(), "clip"));
    /* allocation failures while loading: clean TS_NOMEM, nothing leaked */
    for (long k = 0; k < 200; k += 3) {
        size_t before = ts_alloc_bytes_in_use();
        ts_alloc_fail_after(k);
        ts_status rc = ts_vision_load(FIX "/tiny_mmproj.gguf", NULL, &v);
        ts_alloc_fail_after(-1);
        if (rc == TS_OK) ts_vision_destroy(v);
        else assert_int_equal(rc, TS_NOMEM);
        assert_int_equal(ts_alloc_bytes_in_use(), before);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors),
        cmocka_unit_test(test_mmproj),
        cmocka_unit_test(test_mmproj_f16_legacy),
        cmocka_unit_test(test_same_outputs),
        cmocka_unit_test(test_image_file),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
