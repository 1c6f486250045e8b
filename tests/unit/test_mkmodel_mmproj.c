/* test_mkmodel_mmproj.c: random mmproj GGUFs (ts_mkmodel_write_mmproj, `tessera mkmodel
 * --mmproj`) are what shard/vision.c reads: config from the clip.vision.* keys, every
 * tensor found with its shape, weights equal to the generator's values (F32 exactly, F16
 * to half rounding), the so400m preset's shape, and an encode of random pixels that is
 * finite and equal between the reference and optimized paths (1e-4). Bad shapes and
 * types are refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fixture_util.h"
#include "gguf.h"
#include "mkmodel.h"
#include "quant.h"
#include "vision.h"

static ts_mkmodel_mmproj_params small(uint32_t type) {
    ts_mkmodel_mmproj_params p = {.image_size = 56, .patch_size = 14, .n_embd = 32, .n_ff = 48,
                                  .n_layer = 2, .n_head = 4, .pool = 2, .proj_dim = 64,
                                  .type = type, .seed = 7};
    return p;
}

static void write_file(const ts_mkmodel_mmproj_params *p, const char *path) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    ts_status rc = ts_mkmodel_write_mmproj(p, f);
    assert_int_equal(fclose(f), 0);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
}

static void test_loads_and_encodes(void **state) {
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/ts_mmproj_%d.gguf", (int)getpid());
    for (int ty = 0; ty < 2; ty++) {
        ts_mkmodel_mmproj_params mp = small(ty ? TS_TYPE_F16 : TS_TYPE_F32);
        write_file(&mp, path);
        /* weights as generated */
        ts_gguf *g = NULL;
        assert_int_equal(ts_gguf_open(path, &g), TS_OK);
        const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "v.blk.1.ffn_down.weight");
        assert_non_null(t);
        assert_int_equal(t->ne[0], 48);
        assert_int_equal(t->ne[1], 32);
        assert_int_equal(t->type, mp.type);
        float row[48];
        assert_true(ts_dequantize_row(t->type, t->data + 5 * (ty ? 2 : 4) * 48, row, 48));
        for (int i = 0; i < 48; i++) {
            const float want = ts_mkmodel_weight(7, "v.blk.1.ffn_down.weight", 48, 5 * 48 + i,
                                                 0.0f, 1.0f / sqrtf(48.0f));
            const float w = ty ? ts_fp16_to_fp32(ts_fp32_to_fp16(want)) : want;
            assert_true(row[i] == w);
        }
        ts_gguf_close(g);
        /* vision.c reads it */
        ts_vision *vr = NULL, *vf = NULL;
        ts_vision_params pr = {.n_threads = 1, .reference = true}, pf = {.n_threads = 2};
        ts_status rc = ts_vision_load(path, &pr, &vr);
        if (rc != TS_OK) fail_msg("%s", ts_last_error());
        assert_int_equal(ts_vision_load(path, &pf, &vf), TS_OK);
        const ts_vision_config *c = ts_vision_get_config(vr);
        assert_int_equal(c->n_side, 4);
        assert_int_equal(c->n_patches, 16);
        assert_int_equal(c->n_tokens, 4);
        assert_int_equal(c->proj_dim, 64);
        assert_int_equal(c->n_layer, 2);
        assert_int_equal(c->n_head, 4);
        assert_true(c->mean[0] == 0.5f && c->std[2] == 0.5f && c->eps == 1e-6f);
        float px[3 * 56 * 56], a[4 * 64], b[4 * 64];
        srand(3);
        for (int i = 0; i < 3 * 56 * 56; i++) px[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
        assert_int_equal(ts_vision_encode(vr, px, NULL, a), TS_OK);
        assert_int_equal(ts_vision_encode(vf, px, NULL, b), TS_OK);
        double amax = 0;
        for (int i = 0; i < 4 * 64; i++) {
            assert_true(isfinite(a[i]));
            if (fabs(a[i]) > amax) amax = fabs(a[i]);
        }
        assert_true(amax > 0.1 && amax < 100.0); /* unit-scale soft tokens */
        assert_true(ts_fixture_rel_err(b, a, 4 * 64) <= 1e-4);
        ts_vision_destroy(vr);
        ts_vision_destroy(vf);
    }
    remove(path);
}

static void test_presets_and_refusals(void **state) {
    (void)state;
    ts_mkmodel_mmproj_params p = ts_mkmodel_mmproj_gemma3(2560);
    assert_int_equal(p.image_size, 896);
    assert_int_equal(p.patch_size, 14);
    assert_int_equal(p.n_embd, 1152);
    assert_int_equal(p.n_ff, 4304);
    assert_int_equal(p.n_layer, 27);
    assert_int_equal(p.n_head, 16);
    assert_int_equal(p.pool, 4);
    assert_int_equal(p.proj_dim, 2560);
    FILE *f = tmpfile();
    assert_non_null(f);
    ts_mkmodel_mmproj_params bad = small(TS_TYPE_Q4_0);
    assert_int_equal(ts_mkmodel_write_mmproj(&bad, f), TS_INVAL);
    bad = small(TS_TYPE_F32);
    bad.image_size = 50; /* not a multiple of 14 */
    assert_int_equal(ts_mkmodel_write_mmproj(&bad, f), TS_INVAL);
    bad = small(TS_TYPE_F32);
    bad.pool = 3; /* does not divide 4 */
    assert_int_equal(ts_mkmodel_write_mmproj(&bad, f), TS_INVAL);
    bad = small(TS_TYPE_F32);
    bad.n_head = 5;
    assert_int_equal(ts_mkmodel_write_mmproj(&bad, f), TS_INVAL);
    fclose(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads_and_encodes),
        cmocka_unit_test(test_presets_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
