/* kernels_cuda_vision.h: CUDA launchers of the SigLIP vision encoder and the Gemma 3
 * multimodal projector (kernels/cuda/vision.cu; used by shard/vision_cuda.c). Same
 * conventions as kernels_cuda.h: device pointers, enqueue on `stream`, no synchronization,
 * TS_INVAL for bad shapes, TS_CUDA for a failed launch. Semantics: shard/vision.c (the CPU
 * encoder); results agree to fp32 rounding (summation order, tanhf / expf), not bitwise.
 */
#ifndef TS_KERNELS_CUDA_VISION_H
#define TS_KERNELS_CUDA_VISION_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cols (side * side, 3 * patch * patch) <- pixels (3, S, S), S = side * patch: patch
 * (row pr, col pc) is cols row pr * side + pc, unrolled in (channel, ky, kx) order (the
 * Conv2d weight's order). */
ts_status ts_k_im2col_cuda(const float *pixels, int32_t side, int32_t patch, float *cols,
                           cudaStream_t stream);

/* out (n_row, n) = (x - mean) / sqrt(var + eps) * w + b per row (biased variance; mean and
 * variance summed in double). out may equal x. */
ts_status ts_k_layernorm_cuda(float *out, const float *x, const float *w, const float *b,
                              int64_t n_row, int64_t n, float eps, cudaStream_t stream);

/* y (n_row, n) = act(y + b) per row (b NULL: no bias): gelu == 0 identity, 1 GELU tanh
 * approximation. */
ts_status ts_k_bias_act_cuda(float *y, const float *b, int64_t n_row, int64_t n, int gelu,
                             cudaStream_t stream);

/* Full (non-causal) multi-head attention: q, k, v, out (n, n_head * head_dim);
 * out[i, h] = softmax_j(q[i, h] . k[j, h] * scale) v[j, h]. Tiled: a block holds 64 query
 * rows of one head and walks key / value tiles of 32 rows staged in shared memory (each
 * tile load serves all 64 queries), online softmax per row. head_dim <= 128. */
ts_status ts_k_vit_attention_cuda(const float *q, const float *k, const float *v, float *out,
                                  int64_t n, int32_t n_head, int32_t head_dim, float scale,
                                  cudaStream_t stream);

/* out ((side / k)^2, d) = k x k average pooling of x (side * side, d) over the patch grid
 * (row-major, token r * side + c); side % k == 0. */
ts_status ts_k_avgpool_cuda(const float *x, int32_t side, int32_t k, int64_t d, float *out,
                            cudaStream_t stream);

/* y (n, rows) = x (n, cols) . W^T, W (rows, cols) row-major fp32, on TF32 tensor cores with
 * fp32 accumulation (inputs rounded to TF32: 10-bit mantissa, so ~5e-4 relative per
 * product). cols % 4 == 0, x and W 16-byte aligned. _supports: the current device is sm_80+
 * and cols % 4 == 0. */
int ts_k_linear_tf32_cuda_supports(int64_t cols);
/* ts_k_vit_attention_cuda on TF32 tensor cores (sm_80+ only: the caller checks with
 * ts_k_linear_tf32_cuda_supports): Q K^T and P V with TF32 inputs (Q pre-scaled, P
 * normalized before rounding), fp32 accumulation and softmax; two passes over the keys
 * (statistics, then output). head_dim <= 128. */
ts_status ts_k_vit_attention_tf32_cuda(const float *q, const float *k, const float *v,
                                       float *out, int64_t n, int32_t n_head, int32_t head_dim,
                                       float scale, cudaStream_t stream);
ts_status ts_k_linear_tf32_cuda(const float *x, const float *w, int64_t n, int64_t rows,
                                int64_t cols, float *y, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
