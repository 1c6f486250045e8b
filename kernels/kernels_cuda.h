/* kernels_cuda.h: CUDA kernel launchers with C linkage (library ts_kernels_cuda).
 *
 * Every launcher takes device pointers and a stream, checks its arguments, enqueues the
 * work and returns without synchronizing; a launch failure comes back as TS_CUDA with the
 * CUDA error in ts_last_error(). Results are bit-exact with the reference kernels in
 * kernels/cpu (quant.h): tests/gpu/test_cuda_dequant.c checks that on a GPU.
 */
#ifndef TS_KERNELS_CUDA_H
#define TS_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Evaluates a CUDA runtime call; on failure clears the thread's last-error state (so a
 * later cudaGetLastError does not report this failure again), records the call and the
 * error with TS_FAIL and returns TS_CUDA from the enclosing function. Errors that poison
 * the context (sticky errors such as an illegal address) cannot be cleared by any call;
 * they keep coming back from later calls. */
#define TS_CUDA_TRY(call)                                                                  \
    do {                                                                                   \
        const cudaError_t ts_cu_err_ = (call);                                             \
        if (ts_cu_err_ != cudaSuccess) {                                                   \
            (void)cudaGetLastError();                                                      \
            return TS_FAIL(TS_CUDA, "%s: %s (%s)", #call, cudaGetErrorName(ts_cu_err_),    \
                           cudaGetErrorString(ts_cu_err_));                                \
        }                                                                                  \
    } while (0)

/* Number of usable CUDA devices. No driver (cudaErrorInsufficientDriver) or no device
 * (cudaErrorNoDevice) is not an error: *n = 0 and TS_OK. Other failures: TS_CUDA. */
ts_status ts_cuda_device_count(int *n);

/* Dequantizes n elements (a whole number of blocks) of `type` (a ts_type id) from device
 * memory src to device memory dst, on `stream`. Launch only, no synchronization.
 * Supported: Q4_0, Q8_0, Q5_0, Q4_K, Q6_K, F16, BF16 (TS_UNSUPPORTED otherwise).
 * TS_INVAL for NULL pointers (when n > 0), n < 0 or n not a multiple of the block size.
 * src needs no particular alignment (block fields are read byte by byte). n == 0: TS_OK,
 * nothing launched. */
ts_status ts_k_dequantize_cuda(uint32_t type, const void *src, float *dst, int64_t n,
                               cudaStream_t stream);

/* True if ts_k_dequantize_cuda supports `type`. */
int ts_k_dequantize_cuda_supports(uint32_t type);

/* ---- backend ops (kernels/cuda/matmul.cu, ops.cu) ----
 *
 * Weight layout on the device ("device layout"): Q4_0 and Q8_0 matrices are split into two
 * planes so that each block's quants are one aligned 16 (Q4_0) or 32 (Q8_0) byte vector:
 * [quants: rows * nb blocks * 16|32 bytes][scales: rows * nb fp16], nb = cols / 32,
 * row-major over (row, block). Every other type keeps the GGUF layout (row r at
 * w + r * row_stride). ts_k_weight_bytes_cuda gives the device size. */

/* True if `type` is held split (Q4_0, Q8_0). */
int ts_k_weight_split_cuda(uint32_t type);
/* True if the matmul / get_rows kernels support `type` (Q4_0, Q8_0, Q5_0, Q4_K, Q6_K, F16,
 * BF16, F32). */
int ts_k_matmul_cuda_supports(uint32_t type);
/* Bytes of a (rows, cols) matrix of `type` in the device layout (0: unsupported or bad
 * cols). */
size_t ts_k_weight_bytes_cuda(uint32_t type, int64_t rows, int64_t cols);
/* Converts GGUF rows (device memory, row_stride bytes apart) to the device layout in dst
 * (device memory, ts_k_weight_bytes_cuda bytes). Only for split types. */
ts_status ts_k_weight_repack_cuda(uint32_t type, const void *src, size_t row_stride,
                                  int64_t rows, int64_t cols, void *dst, cudaStream_t stream);

/* y (n_tok, rows) = x (n_tok, cols) . W^T, W in the device layout. n_tok <= 8: one warp per
 * row streaming the weights once (decode); larger: 64x64 tiles over (rows, tokens). */
ts_status ts_k_matmul_cuda(uint32_t type, const void *w, size_t row_stride, int64_t rows,
                           int64_t cols, const float *x, int64_t n_tok, float *y,
                           cudaStream_t stream);
/* ---- Q8 activations x integer dot products (decode of Q4_0 / Q8_0) ----
 * ts_k_quantize_act_cuda quantizes x (n_tok, cols) per 32-block like ts_matmul (the CPU fast
 * path, ggml-cpu's quantize_row_q8_0): d = amax / 127 (kept as fp16), q = round-half-even(
 * x * 127 / amax), into xq (device, 16-byte aligned, ts_k_act_q8_bytes_cuda bytes): int8
 * plane (n_tok * cols) then per block (d as float bits, sum q) int32 pairs.
 * ts_k_matmul_q8_cuda: y (n_tok, rows) = xq . W^T for W split Q4_0 / Q8_0 and n_tok <= 8
 * (ts_k_matmul_q8_cuda_supports), __dp4a on the int8 quants, fp32 block sums. Results match
 * ts_matmul's to the activation rounding (NMSE ~1e-5 against the exact product), not
 * ts_matmul_ref's fp32 exactness: ts_k_matmul_cuda stays the exact kernel. */
size_t ts_k_act_q8_bytes_cuda(int64_t n_tok, int64_t cols);
ts_status ts_k_quantize_act_cuda(const float *x, int64_t n_tok, int64_t cols, void *xq,
                                 cudaStream_t stream);
int ts_k_matmul_q8_cuda_supports(uint32_t type, int64_t n_tok);
ts_status ts_k_matmul_q8_cuda(uint32_t type, const void *w, int64_t rows, int64_t cols,
                              const void *xq, int64_t n_tok, float *y, cudaStream_t stream);
/* Prefill on tensor cores: y (n_tok, rows) = xq . W^T for W split Q4_0 / Q8_0, any n_tok
 * >= 1, xq from ts_k_quantize_act_cuda (same numerics as ts_k_matmul_q8_cuda: exact int8
 * block dots via mma.sync m16n8k32, fp32 block sums in another order). _supports: type is
 * Q4_0 / Q8_0 and the current device is sm_80+. */
int ts_k_matmul_q8_tc_cuda_supports(uint32_t type);
ts_status ts_k_matmul_q8_tc_cuda(uint32_t type, const void *w, int64_t rows, int64_t cols,
                                 const void *xq, int64_t n_tok, float *y, cudaStream_t stream);
/* Benchmarks: weight rows per warp (1, 2, 4; 0 = automatic) and blocks in flight per lane
 * (1, 2; 0 = automatic) of the Q8 kernel. Process-wide. */
void ts_k_matmul_q8_cuda_tune(int rows_per_warp, int unroll);

/* out (n, cols) = W rows ids[i] (device ids, checked against rows by the caller) * scale. */
ts_status ts_k_get_rows_cuda(uint32_t type, const void *w, size_t row_stride, int64_t rows,
                             int64_t cols, const int32_t *ids, int64_t n, float scale,
                             float *out, cudaStream_t stream);

ts_status ts_k_rmsnorm_cuda(float *out, const float *x, const float *w, int64_t n_row,
                            int64_t n, float eps, cudaStream_t stream);
/* pos: device (n_tok). */
ts_status ts_k_rope_cuda(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head,
                         int64_t head_dim, float base, float scale, cudaStream_t stream);
ts_status ts_k_geglu_cuda(float *out, const float *gate, const float *up, int64_t n,
                          cudaStream_t stream);
ts_status ts_k_add_cuda(float *x, const float *y, int64_t n, cudaStream_t stream);
/* Fused ops, bit-identical to the separate kernels they replace:
 * rmsnorm_add: x (n_row, n) += rmsnorm(y) * w (ts_k_rmsnorm_cuda into a temporary, then
 * ts_k_add_cuda); y is not written.
 * qk_norm_rope: q (n_tok, n_head, head_dim) and k (n_tok, n_head_kv, head_dim) in place:
 * per-head ts_k_rmsnorm_cuda with qw / kw (head_dim weights), then ts_k_rope_cuda (pos:
 * device (n_tok)). */
ts_status ts_k_rmsnorm_add_cuda(float *x, const float *y, const float *w, int64_t n_row,
                                int64_t n, float eps, cudaStream_t stream);
ts_status ts_k_qk_norm_rope_cuda(float *q, float *k, const float *qw, const float *kw,
                                 const int32_t *pos, int64_t n_tok, int64_t n_head,
                                 int64_t n_head_kv, int64_t head_dim, float eps, float base,
                                 float scale, cudaStream_t stream);

/* Paged KV addressing of one step (device memory): tab[3 t + 0..2] = (pos, off_g, off_l)
 * of batch token t, then page entries pt = tab + 3 n_tok: the page of position p of token
 * t's sequence is pt[off_g + p / page_size] (global layers) or
 * pt[off_l + (p / page_size) % ring] (local layers); slot = page * page_size + p % ps. */
typedef struct ts_k_kv_args {
    const int32_t *tab;
    int64_t n_tok;
    int32_t page_size, ring, kv_dim;
    int is_global;
    /* attention only: device (n_tok) last key position of each token (an image block's
     * end: bidirectional inside it, backend.h ts_attn_args.hi), NULL: its own pos. */
    const int32_t *hi;
} ts_k_kv_args;

/* K, V (slots, kv_dim) of one layer <- k, v (n_tok, kv_dim). */
ts_status ts_k_kv_store_cuda(const ts_k_kv_args *a, float *K, float *V, const float *k,
                             const float *v, cudaStream_t stream);
/* out (n_tok, n_head * head_dim) = softmax(q K^T * scale) V over positions
 * [lo, hi] (lo = 0 global, max(0, pos - window + 1) local; hi = a->hi[t] or pos), GQA head h -> h / (n_head /
 * n_head_kv). One block per (token, head), online softmax. head_dim <= 512. */
ts_status ts_k_attention_cuda(const ts_k_kv_args *a, const float *K, const float *V,
                              const float *q, float *out, int32_t n_head, int32_t n_head_kv,
                              int32_t head_dim, int32_t window, float scale,
                              cudaStream_t stream);

/* ---- attention kernels (kernels/cuda/attn.cu) ----
 * Same semantics as ts_k_attention_cuda plus hi: (n_tok) device array or NULL; token t sees
 * keys [lo, hi[t]] (hi[t] >= its position: image tokens see their whole image block; keys up
 * to hi[t] must be stored), NULL = [lo, pos] (causal). fp32 throughout.
 * ts_k_attn_prepare_cuda: once per device before the first flash launch and outside any
 * stream capture (sets the kernels' dynamic shared-memory limits).
 * Flash (prefill): blocks of (up to 64 query rows = tokens x the GQA group of one KV head);
 * K / V tiles of 32 keys in shared memory, online softmax, tiles outside every row's
 * window skipped. _supports: head_dim 64 / 128 / 256, group <= 64 (32 for 256), and the
 * device's opt-in shared memory fits (sm_75: head_dim 64 / 128 only).
 * Split-K (decode): (token, KV head, split) blocks, then a combine kernel; the key range of
 * each token is cut into n_split chunks on the device. part: scratch of
 * ts_k_attn_split_scratch_floats(n_tok, n_head, head_dim, n_split) floats (0 and NULL allowed
 * for n_split == 1: the blocks write the output directly). _supports: head_dim 64 / 128 /
 * 256, group 1 / 2 / 4 / 8. */
#define TS_K_ATTN_MAX_SPLIT 32
ts_status ts_k_attn_prepare_cuda(void);
int ts_k_attn_flash_supports_cuda(int32_t head_dim, int32_t group);
ts_status ts_k_attn_flash_cuda(const ts_k_kv_args *a, const float *K, const float *V,
                               const float *q, float *out, const int32_t *hi, int32_t n_head,
                               int32_t n_head_kv, int32_t head_dim, int32_t window, float scale,
                               cudaStream_t stream);
int ts_k_attn_split_supports_cuda(int32_t head_dim, int32_t group);
size_t ts_k_attn_split_scratch_floats(int64_t n_tok, int32_t n_head, int32_t head_dim,
                                      int32_t n_split);
ts_status ts_k_attn_split_cuda(const ts_k_kv_args *a, const float *K, const float *V,
                               const float *q, float *out, const int32_t *hi, int32_t n_head,
                               int32_t n_head_kv, int32_t head_dim, int32_t window, float scale,
                               int32_t n_split, float *part, size_t part_floats,
                               cudaStream_t stream);

/* ---- top-k (kernels/cuda/topk.cu): GPU sampling prefilter and argmax ----
 * For each of `rows` rows of x (rows, cols) (device): the k best entries, best first, into
 * ids / vals (device, (rows, k)). Order: NaN first (lower index among NaNs), then larger
 * value, equal values by lower index (k = 1 is the CPU argmax: the lowest index holding
 * the max). 1 <= k <= min(cols, TS_K_TOPK_MAX), rows <= 65535. scratch: device memory of
 * ts_k_topk_scratch_bytes_cuda(rows, cols, k) bytes (enough for fewer rows or a smaller
 * k, too). Exact: values are copied, never computed. */
#define TS_K_TOPK_MAX 256
size_t ts_k_topk_scratch_bytes_cuda(int64_t rows, int64_t cols, int32_t k);
ts_status ts_k_topk_cuda(const float *x, int64_t rows, int64_t cols, int32_t k, void *scratch,
                         int32_t *ids, float *vals, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
