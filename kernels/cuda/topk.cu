/* topk.cu: per-row top-k (k = 1: argmax) of a logits matrix on the GPU, so that only k
 * (id, logit) pairs per row come back to the host (kernels_cuda.h ts_k_topk_cuda).
 *
 * Order: a strict total order, "better" = NaN first (lower index among NaNs), then larger
 * value, equal values by lower index (the CPU argmax / sampler order, ties to the lowest
 * id; NaNs first so the host sees a NaN row and rejects it like the full-logits path).
 *
 * Passes: each block takes a chunk of CHUNK = 256 threads x 16 values of one row (thread t
 * holds positions base + j * 256 + t: coalesced loads), and selects its k best in k rounds:
 * every thread's best not-yet-taken value, a warp butterfly max (all lanes agree because
 * the order is total), a block max over the 8 warp winners, and the owning thread marks
 * its value taken (indices are unique, so exactly one owner). The block writes its k
 * winners best first; chunks with fewer than k values pad with (-inf, INT32_MAX), which
 * ranks below every real value. The next pass runs the same kernel over the (blocks * k)
 * candidates of each row (with their indices) until one block per row remains; that pass
 * writes the result.
 */
#include <math.h>

#include "common.cuh"
#include "kernels_cuda.h"

namespace {

constexpr int TK_THREADS = 256;
constexpr int TK_PER = 16;
constexpr int64_t TK_CHUNK = (int64_t)TK_THREADS * TK_PER;
constexpr int32_t TK_NONE = 0x7fffffff;

__device__ __forceinline__ bool tk_better(float a, int32_t ia, float b, int32_t ib) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na && (!nb || ia < ib);
    return a > b || (a == b && ia < ib);
}

__global__ void __launch_bounds__(TK_THREADS)
    k_topk_pass(const float *__restrict__ in, const int32_t *__restrict__ idx_in, int64_t n,
                int64_t stride, int32_t k, float *__restrict__ out_v,
                int32_t *__restrict__ out_i) {
    const int64_t row = blockIdx.y;
    const int64_t blk = blockIdx.x, nblk = gridDim.x;
    const float *x = in + row * stride;
    const int32_t *xi = idx_in ? idx_in + row * stride : nullptr;
    const int64_t base = blk * TK_CHUNK;
    float v[TK_PER];
    int32_t id[TK_PER];
    uint32_t taken = 0;
#pragma unroll
    for (int j = 0; j < TK_PER; j++) {
        const int64_t p = base + (int64_t)j * TK_THREADS + threadIdx.x;
        if (p < n) {
            v[j] = x[p];
            id[j] = xi ? xi[p] : (int32_t)p;
        } else {
            v[j] = -INFINITY;
            id[j] = TK_NONE;
            taken |= 1u << j;
        }
    }
    __shared__ float sv[TK_THREADS / 32];
    __shared__ int32_t si[TK_THREADS / 32];
    __shared__ int32_t win;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *ov = out_v + (row * nblk + blk) * (int64_t)k;
    int32_t *oi = out_i + (row * nblk + blk) * (int64_t)k;
    for (int32_t r = 0; r < k; r++) {
        float bv = -INFINITY;
        int32_t bi = TK_NONE;
        int bj = -1;
#pragma unroll
        for (int j = 0; j < TK_PER; j++)
            if (!((taken >> j) & 1u) && tk_better(v[j], id[j], bv, bi)) {
                bv = v[j];
                bi = id[j];
                bj = j;
            }
        const int32_t mine = bi;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov2 = __shfl_xor_sync(0xffffffffu, bv, off);
            const int32_t oi2 = __shfl_xor_sync(0xffffffffu, bi, off);
            if (tk_better(ov2, oi2, bv, bi)) {
                bv = ov2;
                bi = oi2;
            }
        }
        if (lane == 0) {
            sv[warp] = bv;
            si[warp] = bi;
        }
        __syncthreads();
        if (warp == 0) {
            float a = lane < TK_THREADS / 32 ? sv[lane] : -INFINITY;
            int32_t ai = lane < TK_THREADS / 32 ? si[lane] : TK_NONE;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                const float ov2 = __shfl_xor_sync(0xffffffffu, a, off);
                const int32_t oi2 = __shfl_xor_sync(0xffffffffu, ai, off);
                if (tk_better(ov2, oi2, a, ai)) {
                    a = ov2;
                    ai = oi2;
                }
            }
            if (lane == 0) {
                win = ai;
                ov[r] = a;
                oi[r] = ai;
            }
        }
        __syncthreads();
        if (bj >= 0 && mine != TK_NONE && mine == win) taken |= 1u << bj;
    }
}

} // namespace

extern "C" size_t ts_k_topk_scratch_bytes_cuda(int64_t rows, int64_t cols, int32_t k) {
    if (rows <= 0 || cols <= 0 || k <= 0) return 0;
    const int64_t nb = (cols + TK_CHUNK - 1) / TK_CHUNK;
    /* two ping-pong candidate sets of (rows, nb, k) (value, index) pairs, 256-aligned */
    const size_t one = ((size_t)rows * (size_t)nb * (size_t)k * 8 + 255) / 256 * 256;
    return 2 * one;
}

extern "C" ts_status ts_k_topk_cuda(const float *x, int64_t rows, int64_t cols, int32_t k,
                                    void *scratch, int32_t *ids, float *vals,
                                    cudaStream_t stream) {
    if (rows < 0 || rows > 65535 || cols <= 0 || cols > 0x7fffffff || k < 1 ||
        k > TS_K_TOPK_MAX || k > cols)
        return TS_FAIL(TS_INVAL, "topk: rows %lld cols %lld k %d (k in 1..min(cols, %d))",
                       (long long)rows, (long long)cols, k, TS_K_TOPK_MAX);
    if (rows == 0) return TS_OK;
    const int64_t nb1 = (cols + TK_CHUNK - 1) / TK_CHUNK;
    const size_t one = ((size_t)rows * (size_t)nb1 * (size_t)k * 8 + 255) / 256 * 256;
    const size_t half = (size_t)rows * (size_t)nb1 * (size_t)k * 4;
    uint8_t *s = (uint8_t *)scratch;
    float *av = (float *)s, *bv = (float *)(s + one);
    int32_t *ai = (int32_t *)(s + half), *bi = (int32_t *)(s + one + half);
    const float *in_v = x;
    const int32_t *in_i = nullptr;
    int64_t n = cols;
    bool use_a = true;
    for (;;) {
        const int64_t nb = (n + TK_CHUNK - 1) / TK_CHUNK;
        float *ov = nb == 1 ? vals : (use_a ? av : bv);
        int32_t *oi = nb == 1 ? ids : (use_a ? ai : bi);
        dim3 grid((unsigned)nb, (unsigned)rows);
        k_topk_pass<<<grid, TK_THREADS, 0, stream>>>(in_v, in_i, n, n, k, ov, oi);
        const cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess)
            return TS_FAIL(TS_CUDA, "topk launch: %s (%s)", cudaGetErrorName(err),
                           cudaGetErrorString(err));
        if (nb == 1) break;
        in_v = ov;
        in_i = oi;
        n = nb * k;
        use_a = !use_a;
    }
    return TS_OK;
}
