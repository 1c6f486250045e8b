/* test_batch_invariance.c: the CPU fast path computes every token row of a matmul exactly
 * as a single-token matmul would (bit for bit), for every weight type, batch size and
 * thread count, unless llama.cpp's batch-size-dependent kernels are asked for
 * (TS_MM_LLAMACPP_BATCH). This is what lets the daemon batch requests together without
 * changing any request's output (tests/daemon: concurrent greedy streams == alone). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul.h"
#include "quant.h"

static uint64_t g_s = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
    g_s = g_s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_s >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

/* Random weight rows with finite, sane scales (random bytes everywhere else). */
static void fill_weights(uint32_t type, uint8_t *w, size_t row_bytes, int64_t rows,
                         int64_t cols) {
    const uint32_t bb = ts_type_block_bytes(type);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w + (size_t)r * row_bytes;
        for (size_t i = 0; i < row_bytes; i++) row[i] = (uint8_t)rnd();
        for (size_t b = 0; b < row_bytes / bb; b++) {
            uint8_t *blk = row + b * bb;
            uint16_t d = ts_fp32_to_fp16(0.01f + 0.02f * (frand() + 1.0f));
            uint16_t m = ts_fp32_to_fp16(0.01f * frand());
            switch (type) {
            case TS_TYPE_Q4_0: case TS_TYPE_Q5_0: case TS_TYPE_Q8_0:
                memcpy(blk, &d, 2);
                break;
            case TS_TYPE_Q4_1: case TS_TYPE_Q5_1: case TS_TYPE_Q4_K: case TS_TYPE_Q5_K:
                memcpy(blk, &d, 2);
                memcpy(blk + 2, &m, 2);
                break;
            case TS_TYPE_Q6_K:
                memcpy(blk + 208, &d, 2);
                break;
            case TS_TYPE_F16: {
                uint16_t h = ts_fp32_to_fp16(frand());
                memcpy(blk, &h, 2);
                break;
            }
            case TS_TYPE_BF16: {
                uint16_t h = ts_fp32_to_bf16(frand());
                memcpy(blk, &h, 2);
                break;
            }
            case TS_TYPE_F32: {
                float f = frand();
                memcpy(blk, &f, 4);
                break;
            }
            default:
                break;
            }
        }
    }
    (void)cols;
}

static void check_type(uint32_t type, int n_threads) {
    const int64_t rows = 37, cols = 512, T = 19;
    size_t rb;
    assert_true(ts_type_row_bytes(type, cols, &rb));
    uint8_t *w = malloc(rb * rows);
    float *x = malloc(sizeof(float) * cols * T), *yb = malloc(sizeof(float) * rows * T),
          *y1 = malloc(sizeof(float) * rows * T);
    void *scratch = malloc(ts_matmul_scratch_bytes(type, cols, T));
    assert_non_null(w);
    assert_non_null(scratch);
    fill_weights(type, w, rb, rows, cols);
    for (int64_t i = 0; i < cols * T; i++) x[i] = frand() * 3.0f;
    ts_threadpool *tp = NULL;
    assert_int_equal(ts_threadpool_create(n_threads, &tp), TS_OK);
    /* every batch size 1..T against one-token matmuls */
    for (int64_t t = 0; t < T; t++)
        assert_int_equal(ts_matmul(tp, type, w, rb, rows, cols, x + t * cols, 1, y1 + t * rows,
                                   scratch), TS_OK);
    for (int64_t n = 2; n <= T; n++) {
        assert_int_equal(ts_matmul(tp, type, w, rb, rows, cols, x, n, yb, scratch), TS_OK);
        for (int64_t i = 0; i < rows * n; i++)
            if (memcmp(&yb[i], &y1[i], sizeof(float)) != 0)
                fail_msg("%s, %d threads, batch %lld: row %lld token %lld: %.9g (batch) vs "
                         "%.9g (alone)", ts_type_name(type), n_threads, (long long)n,
                         (long long)(i % rows), (long long)(i / rows), (double)yb[i],
                         (double)y1[i]);
    }
    ts_threadpool_destroy(tp);
    free(w);
    free(x);
    free(yb);
    free(y1);
    free(scratch);
}

static const uint32_t g_types[] = {TS_TYPE_Q4_0, TS_TYPE_Q4_1, TS_TYPE_Q5_0, TS_TYPE_Q5_1,
                                   TS_TYPE_Q8_0, TS_TYPE_Q4_K, TS_TYPE_Q5_K, TS_TYPE_Q6_K,
                                   TS_TYPE_F16,  TS_TYPE_BF16, TS_TYPE_F32};

static void test_every_type_every_isa(void **state) {
    (void)state;
    const char *isas[] = {"scalar", "avx2", "avx512"};
    for (size_t k = 0; k < 3; k++) {
        if (ts_matmul_force_isa(isas[k]) != TS_OK) continue; /* not on this CPU */
        for (size_t i = 0; i < sizeof g_types / sizeof g_types[0]; i++) {
            check_type(g_types[i], 1);
            check_type(g_types[i], 3);
        }
    }
    assert_int_equal(ts_matmul_force_isa("auto"), TS_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_every_isa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
