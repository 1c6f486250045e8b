/* matmul_impl.h: internals shared by matmul.c and the per-ISA kernel files
 * (matmul_avx2.c, matmul_avx512.c). Not part of the public API.
 *
 * Prepared activations ("xq"), one slab of xq_stride bytes per token (64-byte aligned
 * sections; A = align64(cols), nb = cols / 32, nk = cols / 256):
 *   Q8_0 / Q8_1 (for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights):
 *       int8 qs[cols] at 0 | float d[nb] at A | float s[nb] after d (Q8_1 only)
 *     d is the fp16-rounded scale (ggml stores fp16) widened to float; s = fp16(d * sum qs).
 *   Q8_K (Q4_K, Q5_K, Q6_K): int8 qs[cols] at 0 | float d[nk] at A | int16 bsums[16 nk]
 *   F16: uint16 h[cols] (x rounded to fp16, nearest even)
 *   F32, BF16: x itself (no copy, xq_stride = 4 cols)
 */
#ifndef TS_MATMUL_IMPL_H
#define TS_MATMUL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define TS_MM_TILE 4 /* tokens processed per weight-row load */

typedef struct {
    const uint8_t *w;
    size_t row_stride;
    int64_t rows, cols, n_tok;
    const uint8_t *xq;
    size_t xq_stride;
    float *y; /* (n_tok, rows) */
    /* Q6_K with n_tok >= 8: ggml-cpu's tiled K-quant matmul numerics (see matmul.c
     * ggml_tiled_q6k) instead of ggml_vec_dot_q6_K_q8_K's. */
    int ggml_tiled;
    /* TS_MM_LLAMACPP_BATCH: llama.cpp's batch-size-dependent orders (Q4_K tiles of 4 tokens
     * in ggml_gemm_q4_K_8x8_q8_K's order); 0 = every token in the single-token order. */
    int llamacpp_batch;
} ts_mm_args;

/* Computes y[t][r] for r in [r0, r1) and every token t. */
typedef void (*ts_mm_kernel)(const ts_mm_args *a, int64_t r0, int64_t r1);

static inline size_t ts_mm_align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Section offsets inside one token's slab. */
static inline size_t ts_mm_q8_d_off(int64_t cols) { return ts_mm_align64((size_t)cols); }
static inline size_t ts_mm_q8_s_off(int64_t cols) {
    return ts_mm_q8_d_off(cols) + ts_mm_align64((size_t)(cols / 32) * sizeof(float));
}
static inline size_t ts_mm_q8k_bsums_off(int64_t cols) {
    return ts_mm_q8_d_off(cols) + ts_mm_align64((size_t)(cols / 256) * sizeof(float));
}

/* Kernel tables of the SIMD files: NULL for a type they do not implement (the caller
 * falls back to the next lower ISA). */
ts_mm_kernel ts_mm_kernel_avx2(uint32_t type);
ts_mm_kernel ts_mm_kernel_avx512(uint32_t type);

#endif
