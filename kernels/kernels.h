/* kernels.h: the CPU kernels of the Gemma 3 forward pass (C API, no CUDA dependency).
 *
 * Two forms (llama.cpp's rule): *_ref functions are scalar C with fp32 accumulation and
 * DEFINE the semantics; the fast CPU path (SIMD with runtime dispatch, several threads)
 * is checked against them. Activations are fp32, row-major: x (n_tok, n) means n_tok rows
 * of n contiguous floats. Weights are GGUF tensors: W (rows, cols) is `rows` rows of
 * `cols` elements of `type` (kernels/quant.h), row r starting at w + r * row_stride.
 * Pure compute: no allocation, no I/O (scratch is passed in).
 */
#ifndef TS_KERNELS_H
#define TS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- reference ops ---- */

/* y (n_tok, rows) = x (n_tok, cols) . W^T. Dequantizes each weight row (scratch: cols
 * floats), dot products in fp32 (sequential sum). */
void ts_matmul_ref(uint32_t type, const void *w, size_t row_stride, int64_t rows, int64_t cols,
                   const float *x, int64_t n_tok, float *y, float *scratch);

/* out (n_row, n) = x / sqrt(mean(x^2) + eps) * w  (w already holds Gemma's 1 + w). In
 * place allowed (out == x). */
void ts_rmsnorm_ref(float *out, const float *x, const float *w, int64_t n_row, int64_t n,
                    float eps);

/* Rotary embedding, half-split (NEOX) layout, in place on x (n_tok, n_head, head_dim):
 * for i < head_dim/2, theta = (pos[t] / scale) * base^(-2i/head_dim); the pair
 * (x[i], x[i + head_dim/2]) is rotated by theta. */
void ts_rope_ref(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                 float base, float scale);

/* out (n) = gelu_tanh(gate) * up. */
void ts_geglu_ref(float *out, const float *gate, const float *up, int64_t n);

/* gelu with the tanh approximation (PyTorch "gelu_pytorch_tanh"). */
float ts_gelu_tanh(float x);

/* In place softmax over n values (max-subtracted, fp32). */
void ts_softmax_ref(float *x, int64_t n);

/* ---- fast-path ops (ops_fast.c): llama.cpp CPU (ggml-cpu) numerics, see docs/engine.md ---- */

/* Builds the fp16 gelu table once (thread-safe; the *_fast gelu ops call it too). */
void ts_fast_ops_init(void);

/* gelu as ggml-cpu with GGML_GELU_FP16: fp16(x) -> table of fp16(gelu(x)); 0 for x <= -10,
 * x for x >= 10. */
float ts_gelu_fast(float x);

/* out (n) = ts_gelu_fast(gate) * up (ggml_vec_geglu_f32). In place allowed (out == gate). */
void ts_geglu_fast(float *out, const float *gate, const float *up, int64_t n);

/* Rotary embedding as ts_rope_ref, angles as ggml_rope_cache_init: theta = pos / scale,
 * multiplied by powf(base, -2/head_dim) in fp32 per pair; fp32 cosf/sinf. cache: head_dim
 * floats of scratch. */
void ts_rope_fast(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                  float base, float scale, float *cache);

/* RMS norm as ggml (fp32 squares summed in double, fp32 mean and 1/sqrtf), then * w. */
void ts_rmsnorm_fast(float *out, const float *x, const float *w, int64_t n_row, int64_t n,
                     float eps);

#ifdef __cplusplus
}
#endif
#endif
