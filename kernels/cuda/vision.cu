/* vision.cu: the SigLIP encoder's and the Gemma 3 projector's own kernels
 * (kernels_cuda_vision.h); the matmuls, RMSNorm and residual adds use kernels_cuda.h.
 *  - im2col: one thread per column element.
 *  - layernorm: one block per row, mean then variance in double (two passes, like
 *    shard/vision.c), then the affine map.
 *  - bias_act: grid-stride over (row, column).
 *  - vit_attention: one block of 8 warps per (64 query rows, head). Q of the 64 rows is
 *    staged once in shared memory (pre-scaled); the keys / values are walked in tiles of 32
 *    rows, each staged in shared memory once and used by all 64 queries. A warp owns 8
 *    query rows; lane j scores key j of the tile against its 8 rows (K row stride odd:
 *    conflict-free; Q read as float4 broadcasts), the warp's max / sum go through shuffles
 *    (online softmax: running max m, sum l per row), and for the weighted sum of values
 *    lane owns output dims lane + 32 i, the probabilities are broadcast with shuffles.
 *  - avgpool: one thread per output element, k x k sum in a fixed order / (k * k).
 *  - linear_tf32 (sm_80+): y (n, rows) = x (n, cols) . W^T on TF32 tensor cores (WMMA
 *    m16n16k8, fp32 accumulation). Block 128 tokens x 128 rows, 8 warps of 64 x 32, K in
 *    steps of 32 staged in shared memory (rounded to TF32 there; tails zero-filled);
 *    the accumulators go out through a per-warp 16 x 16 staging tile (edges masked).
 */
#include <math.h>

#include <mma.h>

#include "common.cuh"
#include "kernels_cuda_vision.h"

namespace {

__global__ void k_im2col(const float *__restrict__ px, int32_t side, int32_t P,
                         float *__restrict__ cols) {
    const int64_t K = 3 * (int64_t)P * P, total = (int64_t)side * side * K;
    const int64_t S = (int64_t)side * P;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t patch = e / K, r = e % K;
        const int64_t pr = patch / side, pc = patch % side;
        const int64_t ch = r / (P * P), ky = (r / P) % P, kx = r % P;
        cols[e] = px[(ch * S + pr * P + ky) * S + pc * P + kx];
    }
}

__device__ double block_sum(double v, double *red) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads(); /* red is reused by consecutive calls */
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        double s = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0;
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (threadIdx.x == 0) red[32] = s;
    }
    __syncthreads();
    return red[32];
}

__global__ void k_layernorm(float *out, const float *x, const float *__restrict__ w,
                            const float *__restrict__ b, int64_t n, float eps) {
    __shared__ double red[33];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *o = out + (int64_t)blockIdx.x * n;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
    const double m = block_sum(s, red) / (double)n;
    double v = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (xr[i] - m) * (xr[i] - m);
    const double var = block_sum(v, red) / (double)n;
    const float inv = (float)(1.0 / sqrt(var + (double)eps));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        o[i] = (float)(xr[i] - m) * inv * w[i] + b[i];
}

__global__ void k_bias_act(float *y, const float *__restrict__ b, int64_t n_row, int64_t n,
                           int gelu) {
    const int64_t total = n_row * n;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        float x = y[e] + (b ? b[e % n] : 0.0f);
        if (gelu) {
            const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
            x = 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
        }
        y[e] = x;
    }
}

constexpr int VA_WARPS = 8, VA_QW = 8, VA_BQ = VA_WARPS * VA_QW, VA_BK = 32;

/* smem floats: Q (BQ, hd4) | K (BK, hd4 + 1) | V (BK, hd4) */
size_t va_smem_bytes(int hd4) {
    return sizeof(float) * ((size_t)VA_BQ * hd4 + (size_t)VA_BK * (hd4 + 1) + (size_t)VA_BK * hd4);
}

template <int D32>
__global__ void __launch_bounds__(VA_WARPS * 32)
    k_vit_attention(const float *__restrict__ q, const float *__restrict__ k,
                    const float *__restrict__ v, float *__restrict__ out, int64_t n,
                    int32_t n_head, int32_t hd, float scale) {
    extern __shared__ float4 sm4[];
    float *sm = (float *)sm4;
    const int hd4 = (hd + 3) & ~3, ks = hd4 + 1;
    float *Qs = sm, *Ks = Qs + VA_BQ * hd4, *Vs = Ks + VA_BK * ks;
    const int32_t h = blockIdx.y;
    const int64_t q0 = (int64_t)blockIdx.x * VA_BQ, D = (int64_t)n_head * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < VA_BQ * hd4; i += blockDim.x) {
        const int r = i / hd4, d = i % hd4;
        const int64_t qi = q0 + r;
        Qs[i] = qi < n && d < hd ? q[qi * D + (int64_t)h * hd + d] * scale : 0.0f;
    }
    float m[VA_QW], l[VA_QW], acc[VA_QW][D32];
#pragma unroll
    for (int r = 0; r < VA_QW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < D32; i++) acc[r][i] = 0.0f;
    }
    const float4 *Qw = (const float4 *)(Qs + warp * VA_QW * hd4);
    for (int64_t k0 = 0; k0 < n; k0 += VA_BK) {
        __syncthreads(); /* Q staged / the previous tile consumed */
        for (int i = threadIdx.x; i < VA_BK * hd4; i += blockDim.x) {
            const int j = i / hd4, d = i % hd4;
            const int64_t kj = k0 + j;
            const bool ok = kj < n && d < hd;
            const int64_t g = kj * D + (int64_t)h * hd + d;
            Ks[j * ks + d] = ok ? k[g] : 0.0f;
            Vs[j * hd4 + d] = ok ? v[g] : 0.0f;
        }
        __syncthreads();
        float s[VA_QW];
#pragma unroll
        for (int r = 0; r < VA_QW; r++) s[r] = 0.0f;
        const float *kr = Ks + lane * ks;
        for (int d4 = 0; d4 < hd4 / 4; d4++) {
            const float k0v = kr[4 * d4], k1v = kr[4 * d4 + 1], k2v = kr[4 * d4 + 2],
                        k3v = kr[4 * d4 + 3];
#pragma unroll
            for (int r = 0; r < VA_QW; r++) {
                const float4 qv = Qw[r * (hd4 / 4) + d4];
                s[r] = fmaf(qv.x, k0v, s[r]);
                s[r] = fmaf(qv.y, k1v, s[r]);
                s[r] = fmaf(qv.z, k2v, s[r]);
                s[r] = fmaf(qv.w, k3v, s[r]);
            }
        }
        const bool valid = k0 + lane < n;
#pragma unroll
        for (int r = 0; r < VA_QW; r++) {
            float sv = valid ? s[r] : -INFINITY, mx = sv;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float mn = fmaxf(m[r], mx); /* finite: the tile has a valid key */
            const float corr = expf(m[r] - mn);
            const float p = valid ? expf(sv - mn) : 0.0f;
            float ps = p;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
            l[r] = l[r] * corr + ps;
            m[r] = mn;
            s[r] = p;
#pragma unroll
            for (int i = 0; i < D32; i++) acc[r][i] *= corr;
        }
        const int jn = n - k0 < VA_BK ? (int)(n - k0) : VA_BK;
        for (int j = 0; j < jn; j++) {
            float vv[D32];
#pragma unroll
            for (int i = 0; i < D32; i++) {
                const int d = lane + 32 * i;
                vv[i] = d < hd4 ? Vs[j * hd4 + d] : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < VA_QW; r++) {
                const float p = __shfl_sync(0xffffffffu, s[r], j);
#pragma unroll
                for (int i = 0; i < D32; i++) acc[r][i] = fmaf(p, vv[i], acc[r][i]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < VA_QW; r++) {
        const int64_t qi = q0 + warp * VA_QW + r;
        if (qi >= n) continue;
        const float inv = 1.0f / l[r];
        float *o = out + qi * D + (int64_t)h * hd;
#pragma unroll
        for (int i = 0; i < D32; i++) {
            const int d = lane + 32 * i;
            if (d < hd) o[d] = acc[r][i] * inv;
        }
    }
}

__global__ void k_avgpool(const float *__restrict__ x, int32_t side, int32_t k, int64_t d,
                          float *__restrict__ out) {
    const int32_t ts = side / k;
    const int64_t total = (int64_t)ts * ts * d;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = e / d, c = e % d, r = t / ts, cc = t % ts;
        float s = 0.0f;
        for (int32_t i = 0; i < k; i++)
            for (int32_t j = 0; j < k; j++) s += x[((r * k + i) * side + cc * k + j) * d + c];
        out[e] = s / (float)(k * k);
    }
}

template <int D32>
ts_status launch_va(const float *q, const float *k, const float *v, float *out, int64_t n,
                    int32_t n_head, int32_t hd, float scale, cudaStream_t stream) {
    const size_t smem = va_smem_bytes((hd + 3) & ~3);
    if (smem > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute(
            k_vit_attention<D32>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return TS_FAIL(TS_CUDA, "vit attention: %zu bytes of shared memory: %s", smem,
                           cudaGetErrorName(e));
        }
    }
    dim3 grid((unsigned)((n + VA_BQ - 1) / VA_BQ), (unsigned)n_head);
    k_vit_attention<D32><<<grid, VA_WARPS * 32, smem, stream>>>(q, k, v, out, n, n_head, hd,
                                                                 scale);
    return ts_cu_launched("vit attention");
}

constexpr int TF_BM = 128, TF_BN = 128, TF_BK = 32, TF_LD = TF_BK + 4;

__global__ void __launch_bounds__(256)
    k_linear_tf32(const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ y,
                  int64_t n, int64_t rows, int64_t cols) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    __shared__ __align__(32) float As[TF_BM * TF_LD]; /* x tile: token-major, k fastest */
    __shared__ __align__(32) float Bs[TF_BN * TF_LD]; /* W tile: row-major, k fastest */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int64_t m0 = (int64_t)blockIdx.y * TF_BM, n0 = (int64_t)blockIdx.x * TF_BN;
    const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32; /* warp tile in the block */
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int64_t k0 = 0; k0 < cols; k0 += TF_BK) {
        /* 128 x 32 of each: 1024 float4 per tile, 4 per thread (cols % 4 == 0) */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int e = tid + i * 256, r = e >> 3, kq = (e & 7) * 4;
            const int64_t k = k0 + kq;
            const int64_t t = m0 + r, o = n0 + r;
            float4 va = make_float4(0.f, 0.f, 0.f, 0.f), vb = va;
            if (k < cols) {
                if (t < n) va = *(const float4 *)(x + t * cols + k);
                if (o < rows) vb = __ldg((const float4 *)(w + o * cols + k));
            }
            float *pa = As + r * TF_LD + kq, *pb = Bs + r * TF_LD + kq;
            pa[0] = wmma::__float_to_tf32(va.x), pa[1] = wmma::__float_to_tf32(va.y);
            pa[2] = wmma::__float_to_tf32(va.z), pa[3] = wmma::__float_to_tf32(va.w);
            pb[0] = wmma::__float_to_tf32(vb.x), pb[1] = wmma::__float_to_tf32(vb.y);
            pb[2] = wmma::__float_to_tf32(vb.z), pb[3] = wmma::__float_to_tf32(vb.w);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TF_BK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa[4];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb[2];
#pragma unroll
            for (int i = 0; i < 4; i++)
                wmma::load_matrix_sync(fa[i], As + (wm + 16 * i) * TF_LD + kk, TF_LD);
#pragma unroll
            for (int j = 0; j < 2; j++)
                wmma::load_matrix_sync(fb[j], Bs + (wn + 16 * j) * TF_LD + kk, TF_LD);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        __syncthreads();
    }
    float *st = As + warp * 256; /* 16 x 16 staging per warp (the tiles are free now) */
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                const int64_t t = m0 + wm + 16 * i + e / 16, o = n0 + wn + 16 * j + e % 16;
                if (t < n && o < rows) y[t * rows + o] = st[e];
            }
            __syncwarp();
        }
#endif
}

/* Attention on TF32 tensor cores: block = 4 warps, 64 query rows (16 per warp) of one
 * head; head_dim padded to HP (a multiple of 16, zeros); keys in tiles of AT_BK = 32.
 * Two passes over the keys so that the output accumulators never need rescaling (their
 * fragment layout is opaque): pass 1 computes S = Q K^T per tile and each row's max m and
 * sum l of exp(s - m) (online); pass 2 recomputes S, P = exp(s - m) / l (rounded to TF32)
 * and O += P V. Q (pre-scaled) lives in registers as fragments; shared memory holds the
 * Q staging area, later reused for the K and V tiles, and a 16 x 32 score tile per warp.
 * 2 lanes per score row, 16 columns each. */
constexpr int AT_BQ = 64, AT_BK = 32, AT_SLD = AT_BK + 8;

template <int HP>
__global__ void __launch_bounds__(128)
    k_vit_attention_tf32(const float *__restrict__ q, const float *__restrict__ k,
                         const float *__restrict__ v, float *__restrict__ out, int64_t n,
                         int32_t n_head, int32_t hd, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    constexpr int LD = HP + 8;
    __shared__ __align__(32) float sm[AT_BQ * LD + 4 * 16 * AT_SLD];
    float *Qs = sm, *Ks = sm, *Vs = sm + AT_BK * LD, *Ss = sm + AT_BQ * LD;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int32_t h = blockIdx.y;
    const int64_t q0 = (int64_t)blockIdx.x * AT_BQ, D = (int64_t)n_head * hd;
    for (int i = tid; i < AT_BQ * HP; i += 128) {
        const int r = i / HP, d = i % HP;
        const int64_t qi = q0 + r;
        Qs[r * LD + d] = wmma::__float_to_tf32(qi < n && d < hd ? q[qi * D + (int64_t)h * hd + d] * scale : 0.0f);
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fq[HP / 8];
#pragma unroll
    for (int kk = 0; kk < HP / 8; kk++)
        wmma::load_matrix_sync(fq[kk], Qs + warp * 16 * LD + kk * 8, LD);
    float *S = Ss + warp * 16 * AT_SLD;
    const int row = lane >> 1, c0 = (lane & 1) * 16;
    float m = -INFINITY, l = 0.0f;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> fo[HP / 16];
#pragma unroll
    for (int j = 0; j < HP / 16; j++) wmma::fill_fragment(fo[j], 0.0f);
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t k0 = 0; k0 < n; k0 += AT_BK) {
            __syncthreads(); /* Q fragments loaded / the previous tile consumed */
            for (int i = tid; i < AT_BK * HP; i += 128) {
                const int j = i / HP, d = i % HP;
                const int64_t kj = k0 + j;
                const bool ok = kj < n && d < hd;
                const int64_t g = kj * D + (int64_t)h * hd + d;
                Ks[j * LD + d] = wmma::__float_to_tf32(ok ? k[g] : 0.0f);
                if (pass) Vs[j * LD + d] = wmma::__float_to_tf32(ok ? v[g] : 0.0f);
            }
            __syncthreads();
            wmma::fragment<wmma::accumulator, 16, 16, 8, float> fs[2];
            wmma::fill_fragment(fs[0], 0.0f);
            wmma::fill_fragment(fs[1], 0.0f);
#pragma unroll
            for (int kk = 0; kk < HP / 8; kk++) {
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fk;
                    wmma::load_matrix_sync(fk, Ks + j * 16 * LD + kk * 8, LD);
                    wmma::mma_sync(fs[j], fq[kk], fk, fs[j]);
                }
            }
            wmma::store_matrix_sync(S, fs[0], AT_SLD, wmma::mem_row_major);
            wmma::store_matrix_sync(S + 16, fs[1], AT_SLD, wmma::mem_row_major);
            __syncwarp();
            const int nv = n - k0 < AT_BK ? (int)(n - k0) : AT_BK;
            float *sr = S + row * AT_SLD;
            if (!pass) {
                float mx = -INFINITY;
                for (int c = c0; c < c0 + 16; c++)
                    if (c < nv) mx = fmaxf(mx, sr[c]);
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                const float mn = fmaxf(m, mx);
                float sum = 0.0f;
                for (int c = c0; c < c0 + 16; c++)
                    if (c < nv) sum += expf(sr[c] - mn);
                sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                l = l * expf(m - mn) + sum;
                m = mn;
            } else {
                const float inv = 1.0f / l;
                for (int c = c0; c < c0 + 16; c++)
                    sr[c] = wmma::__float_to_tf32(c < nv ? expf(sr[c] - m) * inv : 0.0f);
                __syncwarp();
#pragma unroll
                for (int kk = 0; kk < AT_BK / 8; kk++) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fp;
                    wmma::load_matrix_sync(fp, S + kk * 8, AT_SLD);
#pragma unroll
                    for (int j = 0; j < HP / 16; j++) {
                        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fv;
                        wmma::load_matrix_sync(fv, Vs + kk * 8 * LD + j * 16, LD);
                        wmma::mma_sync(fo[j], fp, fv, fo[j]);
                    }
                }
            }
            __syncwarp();
        }
    }
    /* out: one 16 x 16 fragment at a time through the warp's score tile */
#pragma unroll
    for (int j = 0; j < HP / 16; j++) {
        wmma::store_matrix_sync(S, fo[j], AT_SLD, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            const int r = e / 16, d = j * 16 + e % 16;
            const int64_t qi = q0 + warp * 16 + r;
            if (qi < n && d < hd) out[qi * D + (int64_t)h * hd + d] = S[r * AT_SLD + e % 16];
        }
        __syncwarp();
    }
#endif
}

} // namespace

extern "C" ts_status ts_k_vit_attention_tf32_cuda(const float *q, const float *k,
                                                  const float *v, float *out, int64_t n,
                                                  int32_t n_head, int32_t head_dim,
                                                  float scale, cudaStream_t stream) {
    if (n < 0 || n_head <= 0 || n_head > 65535 || head_dim <= 0 || head_dim > 128 ||
        (n + AT_BQ - 1) / AT_BQ > 0x7fffffff)
        return TS_FAIL(TS_INVAL, "tf32 vit attention: n %lld heads %d head_dim %d (at most 128)",
                       (long long)n, n_head, head_dim);
    if (n == 0) return TS_OK;
    dim3 grid((unsigned)((n + AT_BQ - 1) / AT_BQ), (unsigned)n_head);
    const int hp = (head_dim + 15) / 16 * 16;
#define L(HP) k_vit_attention_tf32<HP><<<grid, 128, 0, stream>>>(q, k, v, out, n, n_head, head_dim, scale)
    switch (hp) {
    case 16: L(16); break;
    case 32: L(32); break;
    case 48: L(48); break;
    case 64: L(64); break;
    case 80: L(80); break;
    case 96: L(96); break;
    case 112: L(112); break;
    default: L(128); break;
    }
#undef L
    return ts_cu_launched("tf32 vit attention");
}

extern "C" int ts_k_linear_tf32_cuda_supports(int64_t cols) {
    int dev = 0, major = 0;
    if (cols <= 0 || cols % 4 || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return major >= 8;
}

extern "C" ts_status ts_k_linear_tf32_cuda(const float *x, const float *w, int64_t n,
                                           int64_t rows, int64_t cols, float *y,
                                           cudaStream_t stream) {
    if (n < 0 || rows <= 0 || cols <= 0 || cols % 4 || !x || !w || !y ||
        (n + TF_BM - 1) / TF_BM > 65535 || (rows + TF_BN - 1) / TF_BN > 0x7fffffff ||
        ((uintptr_t)x % 16) || ((uintptr_t)w % 16))
        return TS_FAIL(TS_INVAL, "tf32 linear: n %lld rows %lld cols %lld", (long long)n,
                       (long long)rows, (long long)cols);
    if (n == 0) return TS_OK;
    dim3 grid((unsigned)((rows + TF_BN - 1) / TF_BN), (unsigned)((n + TF_BM - 1) / TF_BM));
    k_linear_tf32<<<grid, 256, 0, stream>>>(x, w, y, n, rows, cols);
    return ts_cu_launched("tf32 linear");
}

extern "C" ts_status ts_k_im2col_cuda(const float *pixels, int32_t side, int32_t patch,
                                      float *cols, cudaStream_t stream) {
    if (side <= 0 || patch <= 0 || !pixels || !cols) return TS_FAIL(TS_INVAL, "im2col shape");
    const int64_t total = (int64_t)side * side * 3 * patch * patch;
    k_im2col<<<ts_cu_grid(total, 256), 256, 0, stream>>>(pixels, side, patch, cols);
    return ts_cu_launched("im2col");
}

extern "C" ts_status ts_k_layernorm_cuda(float *out, const float *x, const float *w,
                                         const float *b, int64_t n_row, int64_t n, float eps,
                                         cudaStream_t stream) {
    if (n_row < 0 || n <= 0 || n_row > 0x7fffffff) return TS_FAIL(TS_INVAL, "layernorm shape");
    if (n_row == 0) return TS_OK;
    k_layernorm<<<(unsigned)n_row, 256, 0, stream>>>(out, x, w, b, n, eps);
    return ts_cu_launched("layernorm");
}

extern "C" ts_status ts_k_bias_act_cuda(float *y, const float *b, int64_t n_row, int64_t n,
                                        int gelu, cudaStream_t stream) {
    if (n_row < 0 || n <= 0) return TS_FAIL(TS_INVAL, "bias_act shape");
    if (n_row == 0) return TS_OK;
    k_bias_act<<<ts_cu_grid(n_row * n, 256), 256, 0, stream>>>(y, b, n_row, n, gelu);
    return ts_cu_launched("bias_act");
}

extern "C" ts_status ts_k_vit_attention_cuda(const float *q, const float *k, const float *v,
                                             float *out, int64_t n, int32_t n_head,
                                             int32_t head_dim, float scale,
                                             cudaStream_t stream) {
    if (n < 0 || n_head <= 0 || n_head > 65535 || head_dim <= 0 || head_dim > 128 ||
        (n + VA_BQ - 1) / VA_BQ > 0x7fffffff)
        return TS_FAIL(TS_INVAL, "vit attention: n %lld heads %d head_dim %d (at most 128)",
                       (long long)n, n_head, head_dim);
    if (n == 0) return TS_OK;
    const int d32 = ((head_dim + 3) / 4 * 4 + 31) / 32;
    switch (d32) {
    case 1: return launch_va<1>(q, k, v, out, n, n_head, head_dim, scale, stream);
    case 2: return launch_va<2>(q, k, v, out, n, n_head, head_dim, scale, stream);
    case 3: return launch_va<3>(q, k, v, out, n, n_head, head_dim, scale, stream);
    default: return launch_va<4>(q, k, v, out, n, n_head, head_dim, scale, stream);
    }
}

extern "C" ts_status ts_k_avgpool_cuda(const float *x, int32_t side, int32_t k, int64_t d,
                                       float *out, cudaStream_t stream) {
    if (side <= 0 || k <= 0 || side % k || d <= 0) return TS_FAIL(TS_INVAL, "avgpool shape");
    const int64_t total = (int64_t)(side / k) * (side / k) * d;
    k_avgpool<<<ts_cu_grid(total, 256), 256, 0, stream>>>(x, side, k, d, out);
    return ts_cu_launched("avgpool");
}
