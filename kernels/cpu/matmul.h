/* matmul.h: the fast CPU matrix multiply for GGUF weight types.
 *
 * y (n_tok, rows) = x (n_tok, cols) . W^T, W (rows, cols) of `type`, row r at
 * w + r * row_stride. Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K,
 * Q6_K. matmul.c's header comment gives the exact arithmetic per type.
 *
 * Method (as llama.cpp's CPU backend, so that results track llama.cpp closely): for the
 * 32-element block types x is first quantized to Q8_0 blocks, for the K types to Q8_K
 * blocks (256 elements, fp32 scale + int16 block sums), for F16 to fp16, and dot products
 * run on integers / halves with SIMD (AVX2+FMA, AVX-512 where present; scalar otherwise;
 * chosen at run time). F32 and BF16 weights use fp32 dot products.
 *
 * `scratch` must hold ts_matmul_scratch_bytes(type, cols, n_tok) bytes (the quantized x).
 * The work is split over rows across the pool's threads. Deterministic for a given thread
 * count; rows are independent, so results do not depend on the thread count either.
 */
#ifndef TS_MATMUL_H
#define TS_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

size_t ts_matmul_scratch_bytes(uint32_t type, int64_t cols, int64_t n_tok);

/* TS_UNSUPPORTED for other types; TS_INVAL for cols not whole blocks. */
ts_status ts_matmul(ts_threadpool *tp, uint32_t type, const void *w, size_t row_stride,
                    int64_t rows, int64_t cols, const float *x, int64_t n_tok, float *y,
                    void *scratch);

/* Kernel choice that depends on the batch size as llama.cpp's CPU backend does (K-quant
 * batches of >= 8 rows summed in ggml's "tiled" order, ...). Without this flag (the
 * default) every token row of a matmul is computed exactly as a single-token matmul would
 * compute it, so a sequence's results never depend on what else is in the batch
 * (batch invariance: required for serving). With it, batched prompt evaluation follows
 * llama.cpp's numerics (tests/model/test_engine_llamacpp.c). */
#define TS_MM_LLAMACPP_BATCH 0x1u

/* ts_matmul with flags (TS_MM_*). */
ts_status ts_matmul_ex(ts_threadpool *tp, uint32_t type, const void *w, size_t row_stride,
                       int64_t rows, int64_t cols, const float *x, int64_t n_tok, float *y,
                       void *scratch, unsigned flags);

/* Name of the SIMD path chosen at run time ("avx512", "avx2", "scalar"). */
const char *ts_matmul_isa(void);

/* For tests and benchmarks: forces the SIMD path ("scalar", "avx2", "avx512"; NULL or
 * "auto" = the best this CPU supports). TS_UNSUPPORTED if the CPU lacks it, TS_INVAL for an
 * unknown name. Process-wide; not thread-safe against concurrent ts_matmul calls. */
ts_status ts_matmul_force_isa(const char *name);

/* The activation quantizers ts_matmul uses, writing ggml's block layouts (for tests):
 * Q8_0 (fp16 d | int8 qs[32]; 34 bytes, as ggml quantize_row_q8_0_ref), Q8_1 (fp16 d |
 * fp16 s = d * sum qs | qs[32]; 36 bytes, quantize_row_q8_1_ref), Q8_K (float d | qs[256]
 * | int16 bsums[16]; 292 bytes, quantize_row_q8_K_ref). n: a multiple of 32 / 256. */
void ts_matmul_quantize_row_q8_0(const float *x, void *dst, int64_t n);
void ts_matmul_quantize_row_q8_1(const float *x, void *dst, int64_t n);
void ts_matmul_quantize_row_q8_K(const float *x, void *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
