/* matmul.cu: y = x W^T for the CUDA backend, get_rows, and the weight repacking.
 *
 * Weight element access is one template per type (wget<T>): GGUF blocks through the
 * bit-exact element dequantizers of deq.cuh, or, for Q4_0 / Q8_0, the split device layout
 * (kernels_cuda.h: quants plane + fp16 scales plane).
 *
 * Kernels:
 *  - mv_split <QB, NT> (Q4_0 / Q8_0, n_tok <= 8, decode): one warp per 4 weight rows;
 *    lane l takes blocks l, l+32, ...: one 16-byte (Q4_0) or 2x16-byte (Q8_0) load of
 *    quants + one fp16 scale per block and row, so a warp reads 512 (1024) contiguous
 *    bytes per row and step; x is read as float4 through L1 (at most a few 100 KB, shared
 *    by every warp of an SM), each x slice serving the 4 rows. fp32 accumulation; the NT
 *    tokens reuse each decoded block. Warp-shuffle reduction.
 *  - mv_generic <T, NT>: other types, one warp per row, lane-strided elements.
 *  - mm_tiled <T> (n_tok > 8, prefill): 64 rows x 64 tokens per block, K in steps of 32;
 *    each weight element is dequantized once per token tile into shared memory; 4x4 outputs
 *    per thread, fp32 FMA (no tensor cores yet).
 */
#include <cuda_fp16.h>

#include "common.cuh"
#include "deq.cuh"
#include "kernels_cuda.h"
#include "quant.h"

namespace {

using namespace tsdeq;

struct WDesc {
    const uint8_t *d;
    int64_t rows, cols;
    size_t stride;
};

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

template <uint32_t T> struct WT;

template <> struct WT<TS_TYPE_F32> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        return ((const float *)(w.d + (size_t)r * w.stride))[k];
    }
};
template <> struct WT<TS_TYPE_F16> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        return ts_dev_fp16_to_fp32(ts_dev_rd_u16(w.d + (size_t)r * w.stride + 2 * k));
    }
};
template <> struct WT<TS_TYPE_BF16> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        return ts_dev_bf16_to_fp32(ts_dev_rd_u16(w.d + (size_t)r * w.stride + 2 * k));
    }
};
template <> struct WT<TS_TYPE_Q5_0> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        return deq_q5_0(w.d + (size_t)r * w.stride + (k / 32) * sizeof(ts_block_q5_0),
                        (int)(k & 31));
    }
};
template <> struct WT<TS_TYPE_Q4_K> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        return deq_q4_K(w.d + (size_t)r * w.stride + (k / 256) * sizeof(ts_block_q4_K),
                        (int)(k & 255));
    }
};
template <> struct WT<TS_TYPE_Q6_K> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        return deq_q6_K(w.d + (size_t)r * w.stride + (k / 256) * sizeof(ts_block_q6_K),
                        (int)(k & 255));
    }
};
/* split layouts */
template <> struct WT<TS_TYPE_Q4_0> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        const int64_t nb = w.cols / 32, b = r * nb + k / 32;
        const int j = (int)(k & 31);
        const uint8_t byte = w.d[b * 16 + (j & 15)];
        const int q = (j < 16 ? (byte & 0x0F) : (byte >> 4)) - 8;
        const uint16_t dh = ((const uint16_t *)(w.d + (size_t)w.rows * nb * 16))[b];
        return __fmul_rn((float)q, ts_dev_fp16_to_fp32(dh));
    }
};
template <> struct WT<TS_TYPE_Q8_0> {
    static __device__ __forceinline__ float get(const WDesc &w, int64_t r, int64_t k) {
        const int64_t nb = w.cols / 32, b = r * nb + k / 32;
        const int8_t q = (int8_t)w.d[b * 32 + (k & 31)];
        const uint16_t dh = ((const uint16_t *)(w.d + (size_t)w.rows * nb * 32))[b];
        return __fmul_rn((float)q, ts_dev_fp16_to_fp32(dh));
    }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

constexpr int MV_WARPS = 8;

/* ---- decode: Q4_0 / Q8_0 split ----
 * One warp per MR rows: lane l takes blocks l, l+32, ... of all MR rows, so each 32-float
 * slice of x (read through L1 as 8 float4) serves MR weight blocks (x traffic per weight
 * byte / MR). */
constexpr int SW = 4, MR = 4; /* warps per block, rows per warp */

__device__ __forceinline__ float dot_q4(const uint32_t *qw, const float4 *xv) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float4 lo = __ldg(xv + i), hi = __ldg(xv + 4 + i);
        const uint32_t w = qw[i];
        s += (float)((int)(w & 0xF) - 8) * lo.x;
        s += (float)((int)((w >> 8) & 0xF) - 8) * lo.y;
        s += (float)((int)((w >> 16) & 0xF) - 8) * lo.z;
        s += (float)((int)((w >> 24) & 0xF) - 8) * lo.w;
        s += (float)((int)((w >> 4) & 0xF) - 8) * hi.x;
        s += (float)((int)((w >> 12) & 0xF) - 8) * hi.y;
        s += (float)((int)((w >> 20) & 0xF) - 8) * hi.z;
        s += (float)((int)((w >> 28) & 0xF) - 8) * hi.w;
    }
    return s;
}

__device__ __forceinline__ float dot4_i8(uint32_t w, float4 a) {
    return (float)(int8_t)(w & 0xFF) * a.x + (float)(int8_t)((w >> 8) & 0xFF) * a.y +
           (float)(int8_t)((w >> 16) & 0xFF) * a.z + (float)(int8_t)(w >> 24) * a.w;
}

/* QB = 16 (Q4_0) or 32 (Q8_0) quant bytes per block */
template <int QB, int NT>
__global__ void __launch_bounds__(SW * 32)
    mv_split(const uint8_t *__restrict__ qs, const uint16_t *__restrict__ dpl, int64_t rows,
             int64_t nb, const float *__restrict__ x, int64_t cols, float *__restrict__ y) {
    constexpr int NW = QB / 4; /* uint32 words of quants per block */
    const int lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * SW + (threadIdx.x >> 5)) * MR;
    if (r0 >= rows) return;
    float acc[MR][NT];
#pragma unroll
    for (int m = 0; m < MR; m++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[m][t] = 0.0f;
    for (int64_t b = lane; b < nb; b += 32) {
        uint32_t qw[MR][NW];
        float d[MR];
#pragma unroll
        for (int m = 0; m < MR; m++) {
            const int64_t r = r0 + m < rows ? r0 + m : rows - 1;
            const uint4 *qp = (const uint4 *)(qs + ((size_t)r * nb + b) * QB);
#pragma unroll
            for (int v = 0; v < QB / 16; v++) {
                const uint4 q4 = __ldg(qp + v);
                qw[m][4 * v] = q4.x;
                qw[m][4 * v + 1] = q4.y;
                qw[m][4 * v + 2] = q4.z;
                qw[m][4 * v + 3] = q4.w;
            }
            d[m] = h2f(__ldg(dpl + (size_t)r * nb + b));
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4 *xv = (const float4 *)(x + (size_t)t * cols + b * 32);
            if (QB == 16) {
#pragma unroll
                for (int m = 0; m < MR; m++) acc[m][t] += dot_q4(qw[m], xv) * d[m];
            } else {
                float4 xr[8];
#pragma unroll
                for (int i = 0; i < 8; i++) xr[i] = __ldg(xv + i);
#pragma unroll
                for (int m = 0; m < MR; m++) {
                    float s = 0.0f;
#pragma unroll
                    for (int i = 0; i < 8; i++) s += dot4_i8(qw[m][i], xr[i]);
                    acc[m][t] += s * d[m];
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MR; m++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = warp_sum(acc[m][t]);
            if (lane == 0 && r0 + m < rows) y[(size_t)t * rows + r0 + m] = v;
        }
}

/* ---- decode: Q4_0 / Q8_0 split x Q8 activations, integer dot products ----
 * The activations are quantized once per matmul (k_quant_act: per 32-block d = amax/127 as
 * fp16, q = round-half-even(x * 127/amax), like ts_matmul's ggml-cpu quantizer) into an
 * int8 plane and a (d, sum q) plane. mv_q: one warp per MR weight rows, lane l takes
 * blocks l, l+32, ... (U blocks per iteration, loads first), one 16-byte (Q4_0) / 2x16-byte
 * (Q8_0) weight load per block and row, the 32 int8 activations as 2x16 bytes (shared by
 * the MR rows), __dp4a on nibbles unpacked with masks: a Q4_0 block is
 * dw * dx * (sum qw*qx - 8 * sum qx), exact in int32. */
constexpr int QW = 4; /* warps per block */

__global__ void __launch_bounds__(256)
    k_quant_act(const float *__restrict__ x, int64_t n_blk, int8_t *__restrict__ xq,
                int2 *__restrict__ xds) {
    const int lane = threadIdx.x & 31;
    const int64_t blk = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (blk >= n_blk) return;
    const float v = x[blk * 32 + lane];
    float amax = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int q = __float2int_rn(v * id);
    xq[blk * 32 + lane] = (int8_t)q;
    int sum = q;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) xds[blk] = make_int2(__float_as_int(__half2float(__float2half_rn(d))), sum);
}

template <int QB, int MR, int NT, int U>
__global__ void __launch_bounds__(QW * 32)
    mv_q(const uint8_t *__restrict__ qs, const uint16_t *__restrict__ dpl, int64_t rows,
         int64_t nb, const int8_t *__restrict__ xq, const int2 *__restrict__ xds,
         float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * QW + (threadIdx.x >> 5)) * MR;
    if (r0 >= rows) return;
    float acc[MR][NT];
#pragma unroll
    for (int m = 0; m < MR; m++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[m][t] = 0.0f;
    int64_t rr[MR];
#pragma unroll
    for (int m = 0; m < MR; m++) rr[m] = (r0 + m < rows ? r0 + m : rows - 1) * nb;
    for (int64_t b0 = lane; b0 < nb; b0 += 32 * U) {
        uint4 w[U][MR][QB / 16];
        uint16_t dh[U][MR];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t b = b0 + 32 * u < nb ? b0 + 32 * u : b0;
#pragma unroll
            for (int m = 0; m < MR; m++) {
                const uint4 *qp = (const uint4 *)(qs + (size_t)(rr[m] + b) * QB);
#pragma unroll
                for (int v = 0; v < QB / 16; v++) w[u][m][v] = __ldg(qp + v);
                dh[u][m] = __ldg(dpl + rr[m] + b);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t b = b0 + 32 * u;
            if (u > 0 && b >= nb) continue;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const uint4 *xp = (const uint4 *)(xq + ((size_t)t * nb + b) * 32);
                const uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
                const int2 ds = __ldg(xds + (size_t)t * nb + b);
                const float dx = __int_as_float(ds.x);
#pragma unroll
                for (int m = 0; m < MR; m++) {
                    int s = 0;
                    if (QB == 16) {
                        const uint4 q = w[u][m][0];
                        const int M = 0x0F0F0F0F;
                        s = __dp4a((int)(q.x & M), (int)x0.x, s);
                        s = __dp4a((int)(q.y & M), (int)x0.y, s);
                        s = __dp4a((int)(q.z & M), (int)x0.z, s);
                        s = __dp4a((int)(q.w & M), (int)x0.w, s);
                        s = __dp4a((int)((q.x >> 4) & M), (int)x1.x, s);
                        s = __dp4a((int)((q.y >> 4) & M), (int)x1.y, s);
                        s = __dp4a((int)((q.z >> 4) & M), (int)x1.z, s);
                        s = __dp4a((int)((q.w >> 4) & M), (int)x1.w, s);
                        s -= 8 * ds.y;
                    } else {
                        const uint4 q0 = w[u][m][0], q1 = w[u][m][QB / 16 - 1];
                        s = __dp4a((int)q0.x, (int)x0.x, s);
                        s = __dp4a((int)q0.y, (int)x0.y, s);
                        s = __dp4a((int)q0.z, (int)x0.z, s);
                        s = __dp4a((int)q0.w, (int)x0.w, s);
                        s = __dp4a((int)q1.x, (int)x1.x, s);
                        s = __dp4a((int)q1.y, (int)x1.y, s);
                        s = __dp4a((int)q1.z, (int)x1.z, s);
                        s = __dp4a((int)q1.w, (int)x1.w, s);
                    }
                    acc[m][t] += h2f(dh[u][m]) * dx * (float)s;
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MR; m++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = warp_sum(acc[m][t]);
            if (lane == 0 && r0 + m < rows) y[(size_t)t * rows + r0 + m] = v;
        }
}

/* ---- decode: any type ---- */
template <uint32_t T, int NT>
__global__ void __launch_bounds__(MV_WARPS * 32)
    mv_generic(WDesc w, const float *__restrict__ x, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (r >= w.rows) return;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int64_t k = lane; k < w.cols; k += 32) {
        const float wv = WT<T>::get(w, r, k);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += wv * __ldg(x + (size_t)t * w.cols + k);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float v = warp_sum(acc[t]);
        if (lane == 0) y[(size_t)t * w.rows + r] = v;
    }
}

/* ---- prefill: tiled ---- */
constexpr int TM = 64, TN = 64, TK = 32;

template <uint32_t T>
__global__ void __launch_bounds__(256)
    mm_tiled(WDesc w, const float *__restrict__ x, int64_t n_tok, float *__restrict__ y) {
    __shared__ float Ws[TK][TM + 4];
    __shared__ float Xs[TK][TN + 4];
    const int tid = threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.x * TM, t0 = (int64_t)blockIdx.y * TN;
    const int tr = (tid % 16) * 4, tt = (tid / 16) * 4;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < w.cols; k0 += TK) {
        /* 64 x 32 weights and 64 x 32 activations, 8 of each per thread; k fastest */
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int e = tid + i * 256, rr = e / TK, kk = e % TK;
            const int64_t r = r0 + rr, t = t0 + rr, k = k0 + kk;
            const bool kin = k < w.cols; /* F32 / F16 / BF16 cols need not be a multiple of 32 */
            Ws[kk][rr] = r < w.rows && kin ? WT<T>::get(w, r, k) : 0.0f;
            Xs[kk][rr] = t < n_tok && kin ? x[(size_t)t * w.cols + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < TK; kk++) {
            const float4 a = *(const float4 *)&Ws[kk][tr];
            const float4 b = *(const float4 *)&Xs[kk][tt];
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int64_t t = t0 + tt + j;
        if (t >= n_tok) continue;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int64_t r = r0 + tr + i;
            if (r < w.rows) y[(size_t)t * w.rows + r] = acc[i][j];
        }
    }
}

/* ---- get_rows ---- */
template <uint32_t T>
__global__ void k_get_rows(WDesc w, const int32_t *__restrict__ ids, float scale,
                           float *__restrict__ out) {
    const int64_t i = blockIdx.x;
    const int64_t r = ids[i];
    for (int64_t k = threadIdx.x; k < w.cols; k += blockDim.x) {
        float v = WT<T>::get(w, r, k);
        out[i * w.cols + k] = __fmul_rn(v, scale);
    }
}

/* ---- repack ---- */
template <int QB>
__global__ void k_repack(const uint8_t *__restrict__ src, size_t stride, int64_t rows,
                         int64_t nb, uint8_t *__restrict__ dst) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * nb) return;
    const int64_t r = i / nb, b = i % nb;
    const uint8_t *blk = src + (size_t)r * stride + (size_t)b * (2 + QB);
    uint8_t *q = dst + (size_t)i * QB;
    for (int j = 0; j < QB; j++) q[j] = blk[2 + j];
    ((uint16_t *)(dst + (size_t)rows * nb * QB))[i] = ts_dev_rd_u16(blk);
}

int64_t type_qk(uint32_t type) {
    switch (type) {
    case TS_TYPE_Q4_0: case TS_TYPE_Q8_0: case TS_TYPE_Q5_0: return 32;
    case TS_TYPE_Q4_K: case TS_TYPE_Q6_K: return 256;
    case TS_TYPE_F16: case TS_TYPE_BF16: case TS_TYPE_F32: return 1;
    default: return 0;
    }
}

size_t type_block_bytes(uint32_t type) {
    switch (type) {
    case TS_TYPE_Q4_0: return sizeof(ts_block_q4_0);
    case TS_TYPE_Q8_0: return sizeof(ts_block_q8_0);
    case TS_TYPE_Q5_0: return sizeof(ts_block_q5_0);
    case TS_TYPE_Q4_K: return sizeof(ts_block_q4_K);
    case TS_TYPE_Q6_K: return sizeof(ts_block_q6_K);
    case TS_TYPE_F16: case TS_TYPE_BF16: return 2;
    case TS_TYPE_F32: return 4;
    default: return 0;
    }
}

template <uint32_t T>
void launch_generic(const WDesc &w, const float *x, int64_t n_tok, float *y, cudaStream_t s) {
    if (n_tok > 8) {
        dim3 grid((unsigned)((w.rows + TM - 1) / TM), (unsigned)((n_tok + TN - 1) / TN));
        mm_tiled<T><<<grid, 256, 0, s>>>(w, x, n_tok, y);
        return;
    }
    const unsigned blocks = (unsigned)((w.rows + MV_WARPS - 1) / MV_WARPS);
    switch (n_tok) {
#define C(N) case N: mv_generic<T, N><<<blocks, MV_WARPS * 32, 0, s>>>(w, x, y); break;
        C(1) C(2) C(3) C(4) C(5) C(6) C(7) C(8)
#undef C
    }
}

template <int QB>
void launch_split(const WDesc &w, const float *x, int64_t n_tok, float *y, cudaStream_t s) {
    const int64_t nb = w.cols / 32;
    const uint8_t *qs = w.d;
    const uint16_t *dpl = (const uint16_t *)(w.d + (size_t)w.rows * nb * QB);
    const unsigned blocks = (unsigned)((w.rows + SW * MR - 1) / (SW * MR));
    switch (n_tok) {
#define C(N)                                                                               \
    case N: mv_split<QB, N><<<blocks, SW * 32, 0, s>>>(qs, dpl, w.rows, nb, x, w.cols, y); break;
        C(1) C(2) C(3) C(4) C(5) C(6) C(7) C(8)
#undef C
    }
}

int g_q_rows_per_warp = 0; /* 0: automatic */
int g_q_unroll = 0;

template <int QB, int MR, int U>
void launch_q_mr(const uint8_t *qs, const uint16_t *dpl, int64_t rows, int64_t nb,
                 const int8_t *xq, const int2 *xds, int64_t n_tok, float *y, cudaStream_t s) {
    const unsigned blocks = (unsigned)((rows + QW * MR - 1) / (QW * MR));
    switch (n_tok) {
#define C(N) case N: mv_q<QB, MR, N, U><<<blocks, QW * 32, 0, s>>>(qs, dpl, rows, nb, xq, xds, y); break;
        C(1) C(2) C(3) C(4) C(5) C(6) C(7) C(8)
#undef C
    }
}

template <int QB>
void launch_q(const WDesc &w, const int8_t *xq, const int2 *xds, int64_t n_tok, float *y,
              cudaStream_t s) {
    const int64_t nb = w.cols / 32;
    const uint8_t *qs = w.d;
    const uint16_t *dpl = (const uint16_t *)(w.d + (size_t)w.rows * nb * QB);
    int mr = g_q_rows_per_warp;
    if (mr <= 0) mr = n_tok > 2 ? 2 : 1; /* see docs: x reuse vs warps in flight */
    const int u = g_q_unroll > 0 ? g_q_unroll : 2;
    if (u == 1) {
        if (mr == 1) launch_q_mr<QB, 1, 1>(qs, dpl, w.rows, nb, xq, xds, n_tok, y, s);
        else if (mr == 2) launch_q_mr<QB, 2, 1>(qs, dpl, w.rows, nb, xq, xds, n_tok, y, s);
        else launch_q_mr<QB, 4, 1>(qs, dpl, w.rows, nb, xq, xds, n_tok, y, s);
    } else {
        if (mr == 1) launch_q_mr<QB, 1, 2>(qs, dpl, w.rows, nb, xq, xds, n_tok, y, s);
        else if (mr == 2) launch_q_mr<QB, 2, 2>(qs, dpl, w.rows, nb, xq, xds, n_tok, y, s);
        else launch_q_mr<QB, 4, 2>(qs, dpl, w.rows, nb, xq, xds, n_tok, y, s);
    }
}

/* ---- prefill: int8 tensor cores (sm_80+) ----
 * mm_q8_tc <QB>: y (n_tok, rows) = W . xq for split Q4_0 (QB 16) / Q8_0 (QB 32) weights and
 * Q8 activations (k_quant_act: int8 per 32-block, fp16-rounded scale). Per 32-block b:
 * mma.sync m16n8k32 s8 x s8 -> s32 gives the exact integer dot of the weight quants (Q4_0:
 * nibble - 8 as int8, the same integer as the decode kernel's dp4a sum - 8 sum x) with the
 * activation quants, then acc += (dw * dx) * dot in fp32, blocks in order. So results equal
 * the decode kernel's (and the CPU fast path's, same activation quantizer) up to fp32
 * summation order. Block: 4 warps as 2 x 2, each warp 32 rows (2 m16 tiles) x 32 tokens
 * (4 n8 tiles): 64 rows x 64 tokens; fragments are loaded straight from global memory
 * (each weight u32 serves the 32 tokens of a warp's tile, each activation u32 its 32 rows;
 * the rest comes from L1 / L2). Rows / tokens past the end load clamped indices and are not
 * stored. Fragment layout (PTX ISA, m16n8k32 .s8), g = lane / 4, t = lane % 4:
 *   a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]
 *   b0 = B[4t..][g], b1 = B[16+4t..][g]
 *   c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
 * A Q4_0 block stores element j in the low nibble of byte j and element j + 16 in the high
 * nibble: one u32 at byte 4t gives a0 (low nibbles) and a2 (high nibbles). */
constexpr int TC_MT = 2, TC_NT = 4; /* m16 / n8 tiles per warp */
constexpr int TC_BM = 2 * TC_MT * 16, TC_BN = 2 * TC_NT * 8; /* 64 x 64 per block */

template <int QB>
__global__ void __launch_bounds__(128)
    mm_q8_tc(const uint8_t *__restrict__ qs, const uint16_t *__restrict__ dpl, int64_t rows,
             int64_t nb, const int8_t *__restrict__ xq, const int2 *__restrict__ xds,
             int64_t n_tok, float *__restrict__ y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int64_t row0 = (int64_t)blockIdx.x * TC_BM + (warp >> 1) * (TC_MT * 16);
    const int64_t tok0 = (int64_t)blockIdx.y * TC_BN + (warp & 1) * (TC_NT * 8);
    float acc[TC_MT][TC_NT][4];
#pragma unroll
    for (int mt = 0; mt < TC_MT; mt++)
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
    int64_t ra[TC_MT][2]; /* (row) * nb of the A rows g, g + 8 */
#pragma unroll
    for (int mt = 0; mt < TC_MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t r = row0 + mt * 16 + g + 8 * h;
            ra[mt][h] = (r < rows ? r : rows - 1) * nb;
        }
    int64_t tb[TC_NT], tc[TC_NT][2]; /* token * nb: B column g; C columns 2t, 2t + 1 */
#pragma unroll
    for (int nt = 0; nt < TC_NT; nt++) {
        const int64_t tk = tok0 + nt * 8 + g;
        tb[nt] = (tk < n_tok ? tk : n_tok - 1) * nb;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int64_t tj = tok0 + nt * 8 + 2 * t4 + j;
            tc[nt][j] = (tj < n_tok ? tj : n_tok - 1) * nb;
        }
    }
    for (int64_t b = 0; b < nb; b++) {
        uint32_t A[TC_MT][4];
        float dw[TC_MT][2];
#pragma unroll
        for (int mt = 0; mt < TC_MT; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint8_t *p = qs + (size_t)(ra[mt][h] + b) * QB;
                if (QB == 16) {
                    const uint32_t v = __ldg((const unsigned int *)(p + 4 * t4));
                    A[mt][h] = __vsub4(v & 0x0F0F0F0Fu, 0x08080808u);
                    A[mt][2 + h] = __vsub4((v >> 4) & 0x0F0F0F0Fu, 0x08080808u);
                } else {
                    A[mt][h] = __ldg((const unsigned int *)(p + 4 * t4));
                    A[mt][2 + h] = __ldg((const unsigned int *)(p + 16 + 4 * t4));
                }
                dw[mt][h] = h2f(__ldg(dpl + ra[mt][h] + b));
            }
        uint32_t B[TC_NT][2];
        float dx[TC_NT][2];
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++) {
            const int8_t *xp = xq + (size_t)(tb[nt] + b) * 32;
            B[nt][0] = __ldg((const unsigned int *)(xp + 4 * t4));
            B[nt][1] = __ldg((const unsigned int *)(xp + 16 + 4 * t4));
#pragma unroll
            for (int j = 0; j < 2; j++) dx[nt][j] = __int_as_float(__ldg(&xds[tc[nt][j] + b].x));
        }
#pragma unroll
        for (int mt = 0; mt < TC_MT; mt++)
#pragma unroll
            for (int nt = 0; nt < TC_NT; nt++) {
                int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
                asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                             "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                             : "+r"(c0), "+r"(c1), "+r"(c2), "+r"(c3)
                             : "r"(A[mt][0]), "r"(A[mt][1]), "r"(A[mt][2]), "r"(A[mt][3]),
                               "r"(B[nt][0]), "r"(B[nt][1]));
                acc[mt][nt][0] += (dw[mt][0] * dx[nt][0]) * (float)c0;
                acc[mt][nt][1] += (dw[mt][0] * dx[nt][1]) * (float)c1;
                acc[mt][nt][2] += (dw[mt][1] * dx[nt][0]) * (float)c2;
                acc[mt][nt][3] += (dw[mt][1] * dx[nt][1]) * (float)c3;
            }
    }
#pragma unroll
    for (int mt = 0; mt < TC_MT; mt++)
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int64_t r = row0 + mt * 16 + g + 8 * (i >> 1);
                const int64_t tk = tok0 + nt * 8 + 2 * t4 + (i & 1);
                if (r < rows && tk < n_tok) y[(size_t)tk * rows + r] = acc[mt][nt][i];
            }
#else
    __trap(); /* the host launches this only on sm_80+ (ts_k_matmul_q8_tc_cuda_supports) */
#endif
}

} // namespace

extern "C" int ts_k_weight_split_cuda(uint32_t type) {
    return type == TS_TYPE_Q4_0 || type == TS_TYPE_Q8_0;
}

extern "C" int ts_k_matmul_cuda_supports(uint32_t type) { return type_qk(type) != 0; }

extern "C" size_t ts_k_weight_bytes_cuda(uint32_t type, int64_t rows, int64_t cols) {
    const int64_t qk = type_qk(type);
    if (!qk || rows < 0 || cols <= 0 || cols % qk) return 0;
    return (size_t)rows * (size_t)(cols / qk) * type_block_bytes(type);
}

extern "C" ts_status ts_k_weight_repack_cuda(uint32_t type, const void *src, size_t row_stride,
                                             int64_t rows, int64_t cols, void *dst,
                                             cudaStream_t stream) {
    if (!ts_k_weight_split_cuda(type)) return TS_FAIL(TS_INVAL, "type %u is not split", type);
    if (cols % 32 || rows < 0 || !src || !dst) return TS_FAIL(TS_INVAL, "repack arguments");
    const int64_t nb = cols / 32, n = rows * nb;
    if (n == 0) return TS_OK;
    const unsigned blocks = (unsigned)((n + 255) / 256);
    if (type == TS_TYPE_Q4_0)
        k_repack<16><<<blocks, 256, 0, stream>>>((const uint8_t *)src, row_stride, rows, nb,
                                                 (uint8_t *)dst);
    else
        k_repack<32><<<blocks, 256, 0, stream>>>((const uint8_t *)src, row_stride, rows, nb,
                                                 (uint8_t *)dst);
    return ts_cu_launched("repack");
}

extern "C" ts_status ts_k_matmul_cuda(uint32_t type, const void *w, size_t row_stride,
                                      int64_t rows, int64_t cols, const float *x, int64_t n_tok,
                                      float *y, cudaStream_t stream) {
    const int64_t qk = type_qk(type);
    if (!qk) return TS_FAIL(TS_UNSUPPORTED, "CUDA matmul: type %u", type);
    if (cols <= 0 || cols % qk || rows <= 0 || n_tok < 0 || !w || !x || !y)
        return TS_FAIL(TS_INVAL, "CUDA matmul: rows %lld cols %lld n_tok %lld", (long long)rows,
                       (long long)cols, (long long)n_tok);
    if (n_tok == 0) return TS_OK;
    if (rows > (int64_t)MV_WARPS * 0x7fffffff || (n_tok + TN - 1) / TN > 65535)
        return TS_FAIL(TS_INVAL, "CUDA matmul: shape too large");
    const WDesc wd = {(const uint8_t *)w, rows, cols, row_stride};
    const bool aligned = ((uintptr_t)x % 16) == 0;
    switch (type) {
    case TS_TYPE_Q4_0:
        if (n_tok <= 8 && aligned) launch_split<16>(wd, x, n_tok, y, stream);
        else launch_generic<TS_TYPE_Q4_0>(wd, x, n_tok, y, stream);
        break;
    case TS_TYPE_Q8_0:
        if (n_tok <= 8 && aligned) launch_split<32>(wd, x, n_tok, y, stream);
        else launch_generic<TS_TYPE_Q8_0>(wd, x, n_tok, y, stream);
        break;
    case TS_TYPE_Q5_0: launch_generic<TS_TYPE_Q5_0>(wd, x, n_tok, y, stream); break;
    case TS_TYPE_Q4_K: launch_generic<TS_TYPE_Q4_K>(wd, x, n_tok, y, stream); break;
    case TS_TYPE_Q6_K: launch_generic<TS_TYPE_Q6_K>(wd, x, n_tok, y, stream); break;
    case TS_TYPE_F16: launch_generic<TS_TYPE_F16>(wd, x, n_tok, y, stream); break;
    case TS_TYPE_BF16: launch_generic<TS_TYPE_BF16>(wd, x, n_tok, y, stream); break;
    case TS_TYPE_F32: launch_generic<TS_TYPE_F32>(wd, x, n_tok, y, stream); break;
    }
    return ts_cu_launched("matmul");
}

extern "C" ts_status ts_k_get_rows_cuda(uint32_t type, const void *w, size_t row_stride,
                                        int64_t rows, int64_t cols, const int32_t *ids,
                                        int64_t n, float scale, float *out,
                                        cudaStream_t stream) {
    const int64_t qk = type_qk(type);
    if (!qk) return TS_FAIL(TS_UNSUPPORTED, "CUDA get_rows: type %u", type);
    if (cols <= 0 || cols % qk || n < 0 || n > 0x7fffffff || !w || !ids || !out)
        return TS_FAIL(TS_INVAL, "CUDA get_rows arguments");
    if (n == 0) return TS_OK;
    const WDesc wd = {(const uint8_t *)w, rows, cols, row_stride};
    const unsigned g = (unsigned)n;
    switch (type) {
#define C(T) case T: k_get_rows<T><<<g, 256, 0, stream>>>(wd, ids, scale, out); break;
        C(TS_TYPE_Q4_0) C(TS_TYPE_Q8_0) C(TS_TYPE_Q5_0) C(TS_TYPE_Q4_K) C(TS_TYPE_Q6_K)
        C(TS_TYPE_F16) C(TS_TYPE_BF16) C(TS_TYPE_F32)
#undef C
    }
    return ts_cu_launched("get_rows");
}

extern "C" size_t ts_k_act_q8_bytes_cuda(int64_t n_tok, int64_t cols) {
    if (n_tok <= 0 || cols <= 0 || cols % 32) return 0;
    return (size_t)n_tok * (size_t)cols + (size_t)n_tok * (size_t)(cols / 32) * sizeof(int2);
}

extern "C" ts_status ts_k_quantize_act_cuda(const float *x, int64_t n_tok, int64_t cols,
                                            void *xq, cudaStream_t stream) {
    if (n_tok < 0 || cols <= 0 || cols % 32 || !x || !xq || ((uintptr_t)xq % 16))
        return TS_FAIL(TS_INVAL, "quantize_act: n_tok %lld cols %lld", (long long)n_tok,
                       (long long)cols);
    if (n_tok == 0) return TS_OK;
    const int64_t n_blk = n_tok * (cols / 32);
    if ((n_blk + 7) / 8 > 0x7fffffff) return TS_FAIL(TS_INVAL, "quantize_act: too large");
    k_quant_act<<<(unsigned)((n_blk + 7) / 8), 256, 0, stream>>>(
        x, n_blk, (int8_t *)xq, (int2 *)((uint8_t *)xq + (size_t)n_tok * (size_t)cols));
    return ts_cu_launched("quantize_act");
}

extern "C" int ts_k_matmul_q8_cuda_supports(uint32_t type, int64_t n_tok) {
    return (type == TS_TYPE_Q4_0 || type == TS_TYPE_Q8_0) && n_tok >= 1 && n_tok <= 8;
}

extern "C" ts_status ts_k_matmul_q8_cuda(uint32_t type, const void *w, int64_t rows, int64_t cols,
                                         const void *xq, int64_t n_tok, float *y,
                                         cudaStream_t stream) {
    if (!ts_k_matmul_q8_cuda_supports(type, n_tok))
        return TS_FAIL(TS_UNSUPPORTED, "CUDA Q8 matmul: type %u, %lld tokens", type,
                       (long long)n_tok);
    if (cols <= 0 || cols % 32 || rows <= 0 || !w || !xq || !y || ((uintptr_t)xq % 16))
        return TS_FAIL(TS_INVAL, "CUDA Q8 matmul: rows %lld cols %lld", (long long)rows,
                       (long long)cols);
    if (rows > (int64_t)QW * 0x7fffffff) return TS_FAIL(TS_INVAL, "CUDA Q8 matmul: too large");
    const WDesc wd = {(const uint8_t *)w, rows, cols, 0};
    const int8_t *q = (const int8_t *)xq;
    const int2 *ds = (const int2 *)(q + (size_t)n_tok * (size_t)cols);
    if (type == TS_TYPE_Q4_0) launch_q<16>(wd, q, ds, n_tok, y, stream);
    else launch_q<32>(wd, q, ds, n_tok, y, stream);
    return ts_cu_launched("matmul_q8");
}

extern "C" void ts_k_matmul_q8_cuda_tune(int rows_per_warp, int unroll) {
    g_q_rows_per_warp = rows_per_warp;
    g_q_unroll = unroll;
}

/* sm_80+ (int8 mma.sync m16n8k32) on the current device; looked up once per device. */
extern "C" int ts_k_matmul_q8_tc_cuda_supports(uint32_t type) {
    if (type != TS_TYPE_Q4_0 && type != TS_TYPE_Q8_0) return 0;
    static int cached[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        (void)cudaGetLastError();
        return 0;
    }
    if (cached[dev] == 0) {
        int major = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        cached[dev] = major >= 8 ? 1 : -1;
    }
    return cached[dev] > 0;
}

extern "C" ts_status ts_k_matmul_q8_tc_cuda(uint32_t type, const void *w, int64_t rows,
                                            int64_t cols, const void *xq, int64_t n_tok,
                                            float *y, cudaStream_t stream) {
    if (!ts_k_matmul_q8_tc_cuda_supports(type))
        return TS_FAIL(TS_UNSUPPORTED, "CUDA tensor-core matmul: type %u on this device", type);
    if (cols <= 0 || cols % 32 || rows <= 0 || n_tok <= 0 || !w || !xq || !y ||
        ((uintptr_t)xq % 16) || ((uintptr_t)w % 16))
        return TS_FAIL(TS_INVAL, "CUDA tensor-core matmul: rows %lld cols %lld n_tok %lld",
                       (long long)rows, (long long)cols, (long long)n_tok);
    const int64_t gx = (rows + TC_BM - 1) / TC_BM, gy = (n_tok + TC_BN - 1) / TC_BN;
    if (gx > 0x7fffffff || gy > 65535)
        return TS_FAIL(TS_INVAL, "CUDA tensor-core matmul: too large");
    const int64_t nb = cols / 32;
    const uint8_t *qs = (const uint8_t *)w;
    const int8_t *q = (const int8_t *)xq;
    const int2 *ds = (const int2 *)(q + (size_t)n_tok * (size_t)cols);
    dim3 grid((unsigned)gx, (unsigned)gy);
    if (type == TS_TYPE_Q4_0) {
        const uint16_t *dpl = (const uint16_t *)(qs + (size_t)rows * nb * 16);
        mm_q8_tc<16><<<grid, 128, 0, stream>>>(qs, dpl, rows, nb, q, ds, n_tok, y);
    } else {
        const uint16_t *dpl = (const uint16_t *)(qs + (size_t)rows * nb * 32);
        mm_q8_tc<32><<<grid, 128, 0, stream>>>(qs, dpl, rows, nb, q, ds, n_tok, y);
    }
    return ts_cu_launched("matmul_q8_tc");
}
