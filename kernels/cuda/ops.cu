/* ops.cu: the element-wise, normalization, RoPE, KV-store and attention kernels of the
 * CUDA backend. Semantics: kernels/kernels.h (*_ref) and shard/backend_cpu.c (attention).
 *  - rmsnorm: one block per row, sum of squares in double (like the reference).
 *  - rope: one thread per (token, head, pair); theta in double (pow, sincos) like
 *    ts_rope_ref.
 *  - attention: one block (4 warps) per (token, head); each warp walks every 4th key of
 *    [lo, pos] with an online softmax (running max, sum, and a head_dim accumulator held
 *    in registers, head_dim / 32 values per lane); the 4 partial states are merged in
 *    shared memory. Keys / values are read through the per-step page table (kernels_cuda.h
 *    ts_k_kv_args). No scores buffer, so any context length works.
 */
#include <math.h>

#include "common.cuh"
#include "kernels_cuda.h"

namespace {

/* 1 / rms of xr[0..n) + eps for the whole block (the reference's double sum; every kernel
 * that normalizes a row uses this, with 256 threads, so they agree bit for bit). Ends with a
 * barrier after every read of xr: the caller may overwrite the row. */
__device__ __forceinline__ float row_rscale(const float *xr, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * xr[i];
    __shared__ double red[32];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        double v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (threadIdx.x == 0) red[0] = v;
    }
    __syncthreads();
    const float scale = (float)(1.0 / sqrt(red[0] / (double)n + (double)eps));
    __syncthreads(); /* red is reused by the next call */
    return scale;
}

__global__ void k_rmsnorm(float *out, const float *x, const float *__restrict__ w, int64_t n,
                          float eps) {
    const int64_t r = blockIdx.x;
    const float *xr = x + r * n;
    float *o = out + r * n;
    const float scale = row_rscale(xr, n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

/* x += rmsnorm(y) * w per row: k_rmsnorm into a temporary then k_add, in one pass. */
__global__ void k_rmsnorm_add(float *x, const float *y, const float *__restrict__ w, int64_t n,
                              float eps) {
    const int64_t r = blockIdx.x;
    const float *yr = y + r * n;
    float *xr = x + r * n;
    const float scale = row_rscale(yr, n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        xr[i] = __fadd_rn(xr[i], __fmul_rn(__fmul_rn(yr[i], scale), w[i]));
}

/* Per-head RMSNorm then RoPE, in place: one block per row (token, head) of q (n_tok * n_head
 * rows) then of k (n_tok * n_head_kv rows); k_rmsnorm's and k_rope's arithmetic. */
__global__ void k_qk_norm_rope(float *q, float *k, const float *__restrict__ qw,
                               const float *__restrict__ kw, const int32_t *__restrict__ pos,
                               int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                               float eps, float base, float rscale) {
    const int64_t r = blockIdx.x, nq = n_tok * n_head;
    const bool is_q = r < nq;
    const int64_t t = is_q ? r / n_head : (r - nq) / n_head_kv;
    float *v = is_q ? q + r * head_dim : k + (r - nq) * head_dim;
    const float *w = is_q ? qw : kw;
    const float scale = row_rscale(v, head_dim, eps);
    const int64_t half = head_dim / 2;
    const double p = (double)pos[t] / (double)rscale;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
        const float a = __fmul_rn(__fmul_rn(v[i], scale), w[i]);
        const float b = __fmul_rn(__fmul_rn(v[i + half], scale), w[i + half]);
        const double inv = pow((double)base, -(double)(2 * i) / (double)head_dim);
        double sn, cs;
        sincos(p * inv, &sn, &cs);
        const float cf = (float)cs, sf = (float)sn;
        v[i] = __fsub_rn(__fmul_rn(a, cf), __fmul_rn(b, sf));
        v[i + half] = __fadd_rn(__fmul_rn(b, cf), __fmul_rn(a, sf));
    }
}

__global__ void k_rope(float *x, const int32_t *__restrict__ pos, int64_t n_tok, int64_t n_head,
                       int64_t head_dim, float base, float scale) {
    const int64_t half = head_dim / 2, total = n_tok * n_head * half;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e % half, th_ = e / half, t = th_ / n_head;
        const double p = (double)pos[t] / (double)scale;
        const double inv = pow((double)base, -(double)(2 * i) / (double)head_dim);
        double s, c;
        sincos(p * inv, &s, &c);
        const float cf = (float)c, sf = (float)s;
        float *v = x + th_ * head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = __fsub_rn(__fmul_rn(a, cf), __fmul_rn(b, sf));
        v[i + half] = __fadd_rn(__fmul_rn(b, cf), __fmul_rn(a, sf));
    }
}

__global__ void k_geglu(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float x = gate[i];
        const float k = 0.7978845608028654f;
        const float g = 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
        out[i] = g * up[i];
    }
}

__global__ void k_add(float *x, const float *y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

__device__ __forceinline__ int64_t kv_slot(const ts_k_kv_args &a, int64_t t, int32_t p) {
    const int32_t *pt = a.tab + 3 * a.n_tok;
    const int32_t pi = p / a.page_size;
    const int32_t page = a.is_global ? pt[a.tab[3 * t + 1] + pi] : pt[a.tab[3 * t + 2] + pi % a.ring];
    return (int64_t)page * a.page_size + p % a.page_size;
}

__global__ void k_kv_store(ts_k_kv_args a, float *K, float *V, const float *k, const float *v) {
    const int64_t t = blockIdx.x;
    const int64_t slot = kv_slot(a, t, a.tab[3 * t]);
    for (int i = threadIdx.x; i < a.kv_dim; i += blockDim.x) {
        K[slot * a.kv_dim + i] = k[t * a.kv_dim + i];
        V[slot * a.kv_dim + i] = v[t * a.kv_dim + i];
    }
}

constexpr int AW = 4;          /* warps per (token, head) */
constexpr int MAXD = 512 / 32; /* head_dim / 32 values per lane */

template <int D32>
__global__ void __launch_bounds__(AW * 32)
    k_attention(ts_k_kv_args a, const float *__restrict__ K, const float *__restrict__ V,
                const float *__restrict__ q, float *__restrict__ out, int32_t n_head,
                int32_t group, int32_t head_dim, int32_t window, float scale) {
    const int64_t t = blockIdx.x / n_head;
    const int32_t h = blockIdx.x % n_head, kvh = h / group;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int32_t p = a.tab[3 * t];
    const int32_t lo = a.is_global ? 0 : (p - window + 1 > 0 ? p - window + 1 : 0);
    const int32_t hi = a.hi ? a.hi[t] : p; /* image blocks: bidirectional */
    const float *qv = q + (t * n_head + h) * (int64_t)head_dim;
    float qr[D32], acc[D32];
#pragma unroll
    for (int i = 0; i < D32; i++) {
        const int d = lane + 32 * i;
        qr[i] = d < head_dim ? qv[d] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int32_t j = lo + warp; j <= hi; j += AW) {
        const int64_t base = kv_slot(a, t, j) * a.kv_dim + (int64_t)kvh * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < D32; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) s += qr[i] * K[base + d];
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        s *= scale;
        const float mn = fmaxf(m, s);
        const float corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
#pragma unroll
        for (int i = 0; i < D32; i++) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * corr + (d < head_dim ? e * V[base + d] : 0.0f);
        }
        m = mn;
    }
    __shared__ float sm[AW], sl[AW];
    __shared__ float sacc[AW][MAXD * 32];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < D32; i++) sacc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < AW; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f, cw[AW];
    for (int w = 0; w < AW; w++) {
        cw[w] = sm[w] == -INFINITY ? 0.0f : expf(sm[w] - M);
        L += sl[w] * cw[w];
    }
    const float inv = 1.0f / L;
    float *o = out + (t * n_head + h) * (int64_t)head_dim;
    for (int d = threadIdx.x; d < head_dim; d += AW * 32) {
        float v = 0.0f;
        for (int w = 0; w < AW; w++) v += sacc[w][d] * cw[w];
        o[d] = v * inv;
    }
}

} // namespace

extern "C" ts_status ts_k_rmsnorm_cuda(float *out, const float *x, const float *w,
                                       int64_t n_row, int64_t n, float eps,
                                       cudaStream_t stream) {
    if (n_row < 0 || n <= 0 || n_row > 0x7fffffff) return TS_FAIL(TS_INVAL, "rmsnorm shape");
    if (n_row == 0) return TS_OK;
    k_rmsnorm<<<(unsigned)n_row, 256, 0, stream>>>(out, x, w, n, eps);
    return ts_cu_launched("rmsnorm");
}

extern "C" ts_status ts_k_rmsnorm_add_cuda(float *x, const float *y, const float *w,
                                           int64_t n_row, int64_t n, float eps,
                                           cudaStream_t stream) {
    if (n_row < 0 || n <= 0 || n_row > 0x7fffffff) return TS_FAIL(TS_INVAL, "rmsnorm_add shape");
    if (n_row == 0) return TS_OK;
    k_rmsnorm_add<<<(unsigned)n_row, 256, 0, stream>>>(x, y, w, n, eps);
    return ts_cu_launched("rmsnorm_add");
}

extern "C" ts_status ts_k_qk_norm_rope_cuda(float *q, float *k, const float *qw, const float *kw,
                                            const int32_t *pos, int64_t n_tok, int64_t n_head,
                                            int64_t n_head_kv, int64_t head_dim, float eps,
                                            float base, float scale, cudaStream_t stream) {
    if (n_tok < 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || head_dim % 2)
        return TS_FAIL(TS_INVAL, "qk_norm_rope shape");
    const int64_t rows = n_tok * (n_head + n_head_kv);
    if (rows > 0x7fffffff) return TS_FAIL(TS_INVAL, "qk_norm_rope: too many rows");
    if (rows == 0) return TS_OK;
    k_qk_norm_rope<<<(unsigned)rows, 256, 0, stream>>>(q, k, qw, kw, pos, n_tok, n_head, n_head_kv,
                                                       head_dim, eps, base, scale);
    return ts_cu_launched("qk_norm_rope");
}

extern "C" ts_status ts_k_rope_cuda(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head,
                                    int64_t head_dim, float base, float scale,
                                    cudaStream_t stream) {
    if (n_tok < 0 || n_head <= 0 || head_dim <= 0 || head_dim % 2)
        return TS_FAIL(TS_INVAL, "rope shape");
    const int64_t total = n_tok * n_head * (head_dim / 2);
    if (total == 0) return TS_OK;
    k_rope<<<ts_cu_grid(total, 256), 256, 0, stream>>>(x, pos, n_tok, n_head, head_dim, base,
                                                      scale);
    return ts_cu_launched("rope");
}

extern "C" ts_status ts_k_geglu_cuda(float *out, const float *gate, const float *up, int64_t n,
                                     cudaStream_t stream) {
    if (n <= 0) return n == 0 ? TS_OK : TS_FAIL(TS_INVAL, "geglu n");
    k_geglu<<<ts_cu_grid(n, 256), 256, 0, stream>>>(out, gate, up, n);
    return ts_cu_launched("geglu");
}

extern "C" ts_status ts_k_add_cuda(float *x, const float *y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return n == 0 ? TS_OK : TS_FAIL(TS_INVAL, "add n");
    k_add<<<ts_cu_grid(n, 256), 256, 0, stream>>>(x, y, n);
    return ts_cu_launched("add");
}

extern "C" ts_status ts_k_kv_store_cuda(const ts_k_kv_args *a, float *K, float *V,
                                        const float *k, const float *v, cudaStream_t stream) {
    if (a->n_tok <= 0) return a->n_tok == 0 ? TS_OK : TS_FAIL(TS_INVAL, "kv_store n_tok");
    k_kv_store<<<(unsigned)a->n_tok, 128, 0, stream>>>(*a, K, V, k, v);
    return ts_cu_launched("kv_store");
}

extern "C" ts_status ts_k_attention_cuda(const ts_k_kv_args *a, const float *K, const float *V,
                                         const float *q, float *out, int32_t n_head,
                                         int32_t n_head_kv, int32_t head_dim, int32_t window,
                                         float scale, cudaStream_t stream) {
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv || head_dim <= 0 ||
        head_dim > 512 || (int64_t)n_head_kv * head_dim != a->kv_dim)
        return TS_FAIL(TS_INVAL, "attention shape: heads %d/%d head_dim %d kv_dim %d", n_head,
                       n_head_kv, head_dim, a->kv_dim);
    if (a->n_tok <= 0) return a->n_tok == 0 ? TS_OK : TS_FAIL(TS_INVAL, "attention n_tok");
    const int64_t blocks = a->n_tok * n_head;
    if (blocks > 0x7fffffff) return TS_FAIL(TS_INVAL, "attention: too many (token, head)s");
    const int32_t group = n_head / n_head_kv;
    const int d32 = (head_dim + 31) / 32;
#define L(D)                                                                               \
    k_attention<D><<<(unsigned)blocks, AW * 32, 0, stream>>>(*a, K, V, q, out, n_head, group, \
                                                             head_dim, window, scale)
    if (d32 <= 2) L(2);
    else if (d32 <= 4) L(4);
    else if (d32 <= 8) L(8);
    else L(16);
#undef L
    return ts_cu_launched("attention");
}
