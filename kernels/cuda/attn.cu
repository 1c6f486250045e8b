/* attn.cu: the flash-style prefill attention and the split-K decode attention of the CUDA
 * backend (kernels_cuda.h). Semantics: shard/backend_cpu.c cpu_attention: for batch token t
 * (position p, sequence via the page table) and query head h, softmax(q K^T * scale) V over
 * key positions [lo, hi]: lo = 0 (global layers) or max(0, p - window + 1) (local layers),
 * hi = hi[t] (a device array; image tokens see their whole image) or p (hi == NULL: causal).
 * Both kernels read keys / values through the step's page table (ts_k_kv_args) and work in
 * fp32 throughout (no tensor cores): results equal the CPU reference up to the order of fp32
 * sums and expf (NMSE ~1e-13 measured scale; tests/gpu/test_cuda_attn.c bounds it by 1e-10).
 *
 * FLASH (prefill): one block (4 warps) per (tile of bq consecutive batch tokens, KV head),
 * the last tiles first (in a causal prefill they are the longest).
 * Its rows are the tile's tokens x the `group` query heads of that KV head (GQA: every K / V
 * tile is read once for all of them), row r = token t0 + r / group, head kvh * group +
 * r % group; bq = ROWS / group. Each warp owns RW consecutive rows. The block walks the
 * tokens' sequences one after another (tokens of one sequence share their page-table offset;
 * a prefill tile has one), over that sequence's key range [min lo, max hi] of its tokens in
 * tiles of 32 keys: K tile -> shared memory, scores S = Q K^T (lane = key), per-row online
 * softmax (running max m, partial sum l per lane, acc rescaled), P -> shared memory, V tile
 * -> shared memory (the K buffer reused), acc += P V (lane = output dims d = lane + 32 i).
 * Keys outside a row's [lo, hi] or of another sequence get probability 0; keys outside the
 * union of the tile's ranges are never loaded (sliding windows: tiles wholly outside every
 * row's window are skipped). Shared memory: Q (ROWS x D, pre-scaled), one K/V tile
 * (32 x (D + 4): the pad makes the per-lane float4 row reads conflict-free) and P (ROWS x 32).
 *
 * SPLIT-K (decode): one block (4 warps) per (token, KV head, split). The token's key range is
 * cut into n_split chunks of a multiple of 32 keys (computed on the device from the position,
 * so a recorded step stays valid as the context grows); each block runs the online softmax of
 * all `group` heads over its chunk (each warp 32 keys at a time: lane = key for the scores,
 * lane = output dims for P V; the 4 warps merged in shared memory) and writes its partial
 * (max, sum, unnormalized V sum) to the scratch; a combine
 * kernel merges the n_split partials per (token, head). Chunks past the range write an empty
 * partial (max -inf, sum 0). n_split == 1 writes the output directly (no scratch, no
 * combine).
 */
#include <limits.h>
#include <math.h>

#include "common.cuh"
#include "kernels_cuda.h"

namespace {

/* page-table offset of batch token t's sequence for this layer kind */
__device__ __forceinline__ int32_t tok_off(const ts_k_kv_args &a, int64_t t) {
    return a.tab[3 * t + (a.is_global ? 1 : 2)];
}

__device__ __forceinline__ int64_t slot_at(const ts_k_kv_args &a, int32_t off, int32_t p) {
    const int32_t *pt = a.tab + 3 * a.n_tok;
    const int32_t pi = p / a.page_size;
    const int32_t page = a.is_global ? pt[off + pi] : pt[off + pi % a.ring];
    return (int64_t)page * a.page_size + p % a.page_size;
}

/* [lo, hi] of batch token t */
__device__ __forceinline__ void tok_range(const ts_k_kv_args &a, const int32_t *hi, int64_t t,
                                          int32_t window, int32_t *lo_out, int32_t *hi_out) {
    const int32_t p = a.tab[3 * t];
    *lo_out = a.is_global ? 0 : (p - window + 1 > 0 ? p - window + 1 : 0);
    *hi_out = hi ? hi[t] : p;
}

/* ---------------------------------------------------------------- flash (prefill) */

constexpr int FW = 4;   /* warps per block */
constexpr int FBK = 32; /* keys per tile (one per lane) */
constexpr int FMAXTOK = 64;

template <int D> struct flash_cfg {
    static constexpr int RW = D > 128 ? 8 : 16; /* rows per warp: RW * D / 32 = 64 accumulators */
    static constexpr int ROWS = FW * RW;
    static constexpr int DP = D + 4;
    static constexpr size_t smem = sizeof(float) * ((size_t)ROWS * D + (size_t)FBK * DP +
                                                    (size_t)ROWS * FBK);
};

template <int D>
__global__ void __launch_bounds__(FW * 32)
    k_attn_flash(ts_k_kv_args a, const float *__restrict__ K, const float *__restrict__ V,
                 const float *__restrict__ q, float *__restrict__ out,
                 const int32_t *__restrict__ hi, int32_t n_head, int32_t group, int32_t bq,
                 int32_t window, float scale) {
    constexpr int D32 = D / 32, D4 = D / 4, RW = flash_cfg<D>::RW, ROWS = flash_cfg<D>::ROWS,
                  DP = flash_cfg<D>::DP;
    extern __shared__ float4 flash_dyn[];
    float *sq = reinterpret_cast<float *>(flash_dyn); /* ROWS x D */
    float *skv = sq + ROWS * D;                         /* FBK x DP */
    float *sp = skv + FBK * DP;                         /* ROWS x FBK */
    __shared__ int64_t sslot[FBK];
    __shared__ int32_t soff[FMAXTOK], slo[FMAXTOK], shi[FMAXTOK];
    __shared__ int32_t rlo[ROWS], rhi[ROWS];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    /* last tiles first: in a causal prefill they see the most keys, so the longest blocks
     * start in the first wave */
    const int64_t t0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * bq;
    const int32_t kvh = blockIdx.y;
    const int nt = (int)(a.n_tok - t0 < bq ? a.n_tok - t0 : bq);
    const int nrow = nt * group;
    if (tid < nt) {
        int32_t lo, h;
        tok_range(a, hi, t0 + tid, window, &lo, &h);
        soff[tid] = tok_off(a, t0 + tid);
        slo[tid] = lo;
        shi[tid] = h;
    }
    for (int e = tid; e < ROWS * D4; e += FW * 32) {
        const int r = e / D4, c4 = e % D4;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < nrow) {
            const int64_t t = t0 + r / group;
            const int32_t h = kvh * group + r % group;
            v = reinterpret_cast<const float4 *>(q + (t * n_head + h) * (int64_t)D)[c4];
            v.x *= scale;
            v.y *= scale;
            v.z *= scale;
            v.w *= scale;
        }
        reinterpret_cast<float4 *>(sq + r * D)[c4] = v;
    }
    __syncthreads();

    const int r0 = warp * RW;
    float acc[RW][D32], m[RW], l[RW];
#pragma unroll
    for (int r = 0; r < RW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < D32; i++) acc[r][i] = 0.0f;
    }
    const int64_t head_off = (int64_t)kvh * D;

    for (int i = 0; i < nt; i++) { /* one pass per distinct sequence of the tile */
        const int32_t off = soff[i];
        bool seen = false;
        for (int j = 0; j < i; j++) seen |= soff[j] == off;
        if (seen) continue; /* uniform: every thread reads the same shared values */
        int32_t klo = INT_MAX, khi = -1;
        for (int j = i; j < nt; j++)
            if (soff[j] == off) {
                klo = min(klo, slo[j]);
                khi = max(khi, shi[j]);
            }
        /* this pass's rows: their own range; other rows (other sequences, padding): none.
         * The previous pass's last readers of rlo / rhi are behind two barriers. */
        for (int r = tid; r < ROWS; r += FW * 32) {
            const int tr = r / group;
            const bool in = r < nrow && soff[tr] == off;
            rlo[r] = in ? slo[tr] : INT_MAX;
            rhi[r] = in ? shi[tr] : -1;
        }
        for (int32_t j0 = klo; j0 <= khi; j0 += FBK) {
            /* (every thread has finished the previous tile's P V once it passes the barrier
             * below, so sslot / skv may be rewritten after it) */
            if (tid < FBK) sslot[tid] = j0 + tid <= khi ? slot_at(a, off, j0 + tid) : -1;
            __syncthreads();
            for (int e = tid; e < FBK * D4; e += FW * 32) {
                const int kk = e / D4, c4 = e % D4;
                const int64_t s = sslot[kk];
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (s >= 0) v = reinterpret_cast<const float4 *>(K + s * a.kv_dim + head_off)[c4];
                reinterpret_cast<float4 *>(skv + kk * DP)[c4] = v;
            }
            __syncthreads();
            /* scores: lane = key j0 + lane, RW rows of this warp */
            float s[RW];
#pragma unroll
            for (int r = 0; r < RW; r++) s[r] = 0.0f;
            const float4 *kr = reinterpret_cast<const float4 *>(skv + lane * DP);
#pragma unroll 4
            for (int c4 = 0; c4 < D4; c4++) {
                const float4 k4 = kr[c4];
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    const float4 q4 = reinterpret_cast<const float4 *>(sq + (r0 + r) * D)[c4];
                    s[r] = fmaf(q4.x, k4.x, s[r]);
                    s[r] = fmaf(q4.y, k4.y, s[r]);
                    s[r] = fmaf(q4.z, k4.z, s[r]);
                    s[r] = fmaf(q4.w, k4.w, s[r]);
                }
            }
            const int32_t j = j0 + lane;
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const bool ok = j >= rlo[r0 + r] && j <= rhi[r0 + r];
                const float sv = ok ? s[r] : -INFINITY;
                float mx = sv;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                const float mn = fmaxf(m[r], mx);
                float p = 0.0f, corr = 1.0f;
                if (mn != -INFINITY) { /* else: no key of this row so far */
                    corr = expf(m[r] - mn); /* m = -inf: 0, acc and l are 0 anyway */
                    p = ok ? expf(sv - mn) : 0.0f;
                }
                m[r] = mn;
                l[r] = l[r] * corr + p;
#pragma unroll
                for (int i2 = 0; i2 < D32; i2++) acc[r][i2] *= corr;
                sp[(r0 + r) * FBK + lane] = p;
            }
            __syncthreads(); /* every warp done with the K tile */
            for (int e = tid; e < FBK * D4; e += FW * 32) {
                const int kk = e / D4, c4 = e % D4;
                const int64_t sl = sslot[kk];
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (sl >= 0) v = reinterpret_cast<const float4 *>(V + sl * a.kv_dim + head_off)[c4];
                reinterpret_cast<float4 *>(skv + kk * DP)[c4] = v;
            }
            __syncthreads();
            /* acc += P V: lane = dims lane + 32 i */
#pragma unroll 2
            for (int kk = 0; kk < FBK; kk += 4) {
                float vv[4][D32];
#pragma unroll
                for (int u = 0; u < 4; u++)
#pragma unroll
                    for (int i2 = 0; i2 < D32; i2++) vv[u][i2] = skv[(kk + u) * DP + lane + 32 * i2];
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    const float4 p4 = *reinterpret_cast<const float4 *>(sp + (r0 + r) * FBK + kk);
#pragma unroll
                    for (int i2 = 0; i2 < D32; i2++) {
                        float x = acc[r][i2];
                        x = fmaf(p4.x, vv[0][i2], x);
                        x = fmaf(p4.y, vv[1][i2], x);
                        x = fmaf(p4.z, vv[2][i2], x);
                        x = fmaf(p4.w, vv[3][i2], x);
                        acc[r][i2] = x;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RW; r++) {
        float ls = l[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ls += __shfl_xor_sync(0xffffffffu, ls, o);
        const int row = r0 + r;
        if (row < nrow) {
            const int64_t t = t0 + row / group;
            const int32_t h = kvh * group + row % group;
            float *o = out + (t * n_head + h) * (int64_t)D;
            const float inv = 1.0f / ls;
#pragma unroll
            for (int i2 = 0; i2 < D32; i2++) o[lane + 32 * i2] = acc[r][i2] * inv;
        }
    }
}

/* ---------------------------------------------------------------- split-K (decode) */

constexpr int SW = 4;      /* warps per block */
constexpr int SGRAIN = 32; /* chunk sizes are multiples of this */

/* One block per (token, KV head, split), G = the GQA group (query heads of the KV head).
 * Each warp takes the chunk's keys 32 at a time (sub-chunks w, w + 4, ...), lane = key for
 * the scores (its K row read as float4s: 32 rows in flight per warp), then lane = output
 * dims for P V (each key's V row read coalesced, its slot and probability broadcast). */
template <int D, int G>
__global__ void __launch_bounds__(SW * 32)
    k_attn_split(ts_k_kv_args a, const float *__restrict__ K, const float *__restrict__ V,
                 const float *__restrict__ q, float *__restrict__ out,
                 const int32_t *__restrict__ hi, float *__restrict__ part, int32_t n_head,
                 int32_t n_split, int32_t window, float scale) {
    constexpr int D32 = D / 32, D4 = D / 4;
    const int64_t t = blockIdx.x;
    const int32_t kvh = blockIdx.y, sp = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int32_t lo, h;
    tok_range(a, hi, t, window, &lo, &h);
    const int32_t off = tok_off(a, t);
    const int32_t len = h - lo + 1;
    int32_t chunk = (len + n_split - 1) / n_split;
    chunk = (chunk + SGRAIN - 1) / SGRAIN * SGRAIN;
    const int64_t c0l = (int64_t)lo + (int64_t)sp * chunk;
    const int32_t c0 = c0l > h ? h + 1 : (int32_t)c0l;
    const int32_t c1 = (int64_t)c0 + chunk > (int64_t)h + 1 ? h + 1 : c0 + chunk;

    __shared__ float4 sq4[G * D4]; /* the group's query rows, pre-scaled */
    for (int e = threadIdx.x; e < G * D4; e += SW * 32) {
        const int g = e / D4, c = e % D4;
        float4 v = reinterpret_cast<const float4 *>(
            q + (t * n_head + (int64_t)kvh * G + g) * (int64_t)D)[c];
        v.x *= scale;
        v.y *= scale;
        v.z *= scale;
        v.w *= scale;
        sq4[e] = v;
    }
    __syncthreads();

    float acc[G][D32], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f; /* this lane's part of the sum */
#pragma unroll
        for (int i = 0; i < D32; i++) acc[g][i] = 0.0f;
    }
    const int64_t head_off = (int64_t)kvh * D;
    for (int32_t jb = c0 + SGRAIN * warp; jb < c1; jb += SGRAIN * SW) {
        const int32_t j = jb + lane;
        const bool valid = j < c1; /* lane 0 always is */
        const int64_t base = valid ? slot_at(a, off, j) * a.kv_dim + head_off : 0;
        float s[G];
#pragma unroll
        for (int g = 0; g < G; g++) s[g] = 0.0f;
        if (valid) {
            const float4 *kr = reinterpret_cast<const float4 *>(K + base);
#pragma unroll 8
            for (int c = 0; c < D4; c++) {
                const float4 k4 = kr[c];
#pragma unroll
                for (int g = 0; g < G; g++) {
                    const float4 q4 = sq4[g * D4 + c];
                    s[g] = fmaf(q4.x, k4.x, s[g]);
                    s[g] = fmaf(q4.y, k4.y, s[g]);
                    s[g] = fmaf(q4.z, k4.z, s[g]);
                    s[g] = fmaf(q4.w, k4.w, s[g]);
                }
            }
        }
        float p[G];
#pragma unroll
        for (int g = 0; g < G; g++) {
            const float sv = valid ? s[g] : -INFINITY;
            float mx = sv;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mn = fmaxf(m[g], mx); /* finite: lane 0's key is valid */
            const float corr = expf(m[g] - mn);
            p[g] = valid ? expf(sv - mn) : 0.0f;
            l[g] = l[g] * corr + p[g];
#pragma unroll
            for (int i = 0; i < D32; i++) acc[g][i] *= corr;
            m[g] = mn;
        }
        const int nk = c1 - jb < SGRAIN ? c1 - jb : SGRAIN; /* uniform over the warp */
#pragma unroll 4
        for (int kk = 0; kk < nk; kk++) {
            const int64_t bk = __shfl_sync(0xffffffffu, base, kk);
            float v[D32];
#pragma unroll
            for (int i = 0; i < D32; i++) v[i] = V[bk + lane + 32 * i];
#pragma unroll
            for (int g = 0; g < G; g++) {
                const float pk = __shfl_sync(0xffffffffu, p[g], kk);
#pragma unroll
                for (int i = 0; i < D32; i++) acc[g][i] = fmaf(pk, v[i], acc[g][i]);
            }
        }
    }
    __shared__ float sm[SW][G], sl[SW][G];
    __shared__ float sacc[SW][G][D];
#pragma unroll
    for (int g = 0; g < G; g++) {
        float ls = l[g];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ls += __shfl_xor_sync(0xffffffffu, ls, o);
        if (lane == 0) {
            sm[warp][g] = m[g];
            sl[warp][g] = ls;
        }
#pragma unroll
        for (int i = 0; i < D32; i++) sacc[warp][g][lane + 32 * i] = acc[g][i];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * D; e += SW * 32) {
        const int g = e / D, d = e % D;
        float M = -INFINITY;
        for (int w = 0; w < SW; w++) M = fmaxf(M, sm[w][g]);
        float L = 0.0f, v = 0.0f;
        for (int w = 0; w < SW; w++) {
            const float cw = sm[w][g] == -INFINITY ? 0.0f : expf(sm[w][g] - M);
            L += sl[w][g] * cw;
            v += sacc[w][g][d] * cw;
        }
        const int64_t th = t * n_head + (int64_t)kvh * G + g; /* (token, head) */
        if (n_split == 1) {
            out[th * D + d] = v / L;
        } else {
            const int64_t idx = th * n_split + sp;
            const int64_t n_part = (int64_t)gridDim.x * n_head * n_split;
            part[idx * D + d] = v;
            if (d == 0) {
                part[n_part * D + idx] = M;
                part[n_part * (D + 1) + idx] = L;
            }
        }
    }
}

/* one block of D threads per (token, head): out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M) */
__global__ void k_attn_combine(const float *__restrict__ part, float *__restrict__ out,
                               int64_t n_th, int32_t n_split, int32_t D) {
    const int64_t th = blockIdx.x;
    const int d = threadIdx.x;
    const float *pm = part + n_th * n_split * D + th * n_split;
    const float *pl = part + n_th * n_split * (D + 1) + th * n_split;
    float M = -INFINITY;
    for (int s = 0; s < n_split; s++) M = fmaxf(M, pm[s]);
    float L = 0.0f, v = 0.0f;
    for (int s = 0; s < n_split; s++) {
        const float w = pm[s] == -INFINITY ? 0.0f : expf(pm[s] - M);
        L += pl[s] * w;
        v += part[(th * n_split + s) * D + d] * w;
    }
    out[th * D + d] = v / L;
}

/* per device: 0 = ts_k_attn_prepare_cuda not run there, else the opt-in shared memory per
 * block (cached: the launch path makes no attribute queries, e.g. inside a stream capture) */
int g_max_smem[64];

int cur_device(void) {
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return dev >= 0 && dev < 64 ? dev : -1;
}

size_t flash_smem(int32_t head_dim) {
    switch (head_dim) {
    case 64: return flash_cfg<64>::smem;
    case 128: return flash_cfg<128>::smem;
    case 256: return flash_cfg<256>::smem;
    default: return 0;
    }
}

int flash_rows(int32_t head_dim) {
    switch (head_dim) {
    case 64: return flash_cfg<64>::ROWS;
    case 128: return flash_cfg<128>::ROWS;
    case 256: return flash_cfg<256>::ROWS;
    default: return 0;
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

ts_status check_common(const ts_k_kv_args *a, const float *K, const float *V, const float *q,
                       float *out, int32_t n_head, int32_t n_head_kv, int32_t head_dim) {
    if (!a || !a->tab || !K || !V || !q || !out)
        return TS_FAIL(TS_INVAL, "attention: NULL argument");
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv || head_dim <= 0 ||
        (int64_t)n_head_kv * head_dim != a->kv_dim || a->page_size <= 0 || a->ring <= 0)
        return TS_FAIL(TS_INVAL, "attention shape: heads %d/%d head_dim %d kv_dim %d page %d",
                       n_head, n_head_kv, head_dim, a->kv_dim, a->page_size);
    if (n_head_kv > 65535) return TS_FAIL(TS_INVAL, "attention: %d KV heads", n_head_kv);
    return TS_OK;
}

} // namespace

extern "C" ts_status ts_k_attn_prepare_cuda(void) {
    const int dev = cur_device();
    if (dev < 0) return TS_FAIL(TS_CUDA, "attention: no current device (or more than 64)");
    if (g_max_smem[dev]) return TS_OK;
    int max = 0;
    TS_CUDA_TRY(cudaDeviceGetAttribute(&max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    /* each instantiation that fits the device (2 KiB left for the static arrays); the others
     * stay unsupported (ts_k_attn_flash_supports_cuda) */
    if ((int)flash_cfg<64>::smem + 2048 <= max)
        TS_CUDA_TRY(cudaFuncSetAttribute(k_attn_flash<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)flash_cfg<64>::smem));
    if ((int)flash_cfg<128>::smem + 2048 <= max)
        TS_CUDA_TRY(cudaFuncSetAttribute(k_attn_flash<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)flash_cfg<128>::smem));
    if ((int)flash_cfg<256>::smem + 2048 <= max)
        TS_CUDA_TRY(cudaFuncSetAttribute(k_attn_flash<256>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)flash_cfg<256>::smem));
    g_max_smem[dev] = max > 0 ? max : 1;
    return TS_OK;
}

extern "C" int ts_k_attn_flash_supports_cuda(int32_t head_dim, int32_t group) {
    const size_t need = flash_smem(head_dim);
    const int dev = cur_device();
    if (need == 0 || group < 1 || group > flash_rows(head_dim) || dev < 0) return 0;
    return (int)need + 2048 <= g_max_smem[dev];
}

extern "C" ts_status ts_k_attn_flash_cuda(const ts_k_kv_args *a, const float *K, const float *V,
                                          const float *q, float *out, const int32_t *hi,
                                          int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                                          int32_t window, float scale, cudaStream_t stream) {
    TS_TRY(check_common(a, K, V, q, out, n_head, n_head_kv, head_dim));
    if (a->n_tok <= 0) return a->n_tok == 0 ? TS_OK : TS_FAIL(TS_INVAL, "attention n_tok");
    const int32_t group = n_head / n_head_kv;
    const int dev = cur_device();
    if (dev < 0 || !g_max_smem[dev])
        return TS_FAIL(TS_INVAL, "flash attention: ts_k_attn_prepare_cuda not run on device %d",
                       dev);
    if (!ts_k_attn_flash_supports_cuda(head_dim, group))
        return TS_FAIL(TS_UNSUPPORTED, "flash attention: head_dim %d group %d on this device",
                       head_dim, group);
    if (!aligned16(K) || !aligned16(V) || !aligned16(q) || a->kv_dim % 4)
        return TS_FAIL(TS_INVAL, "flash attention: K / V / q not 16-byte aligned");
    const int32_t bq = flash_rows(head_dim) / group; /* >= 1; <= 64 = FMAXTOK */
    const int64_t tiles = (a->n_tok + bq - 1) / bq;
    if (tiles > 0x7fffffff) return TS_FAIL(TS_INVAL, "flash attention: %lld tokens",
                                           (long long)a->n_tok);
    const dim3 grid((unsigned)tiles, (unsigned)n_head_kv);
#define L(D)                                                                                 \
    k_attn_flash<D><<<grid, FW * 32, flash_cfg<D>::smem, stream>>>(*a, K, V, q, out, hi, n_head, \
                                                                    group, bq, window, scale)
    if (head_dim == 64) L(64);
    else if (head_dim == 128) L(128);
    else L(256);
#undef L
    return ts_cu_launched("flash attention");
}

extern "C" int ts_k_attn_split_supports_cuda(int32_t head_dim, int32_t group) {
    return (head_dim == 64 || head_dim == 128 || head_dim == 256) &&
           (group == 1 || group == 2 || group == 4 || group == 8);
}

extern "C" size_t ts_k_attn_split_scratch_floats(int64_t n_tok, int32_t n_head,
                                                 int32_t head_dim, int32_t n_split) {
    if (n_tok <= 0 || n_head <= 0 || head_dim <= 0 || n_split <= 1) return 0;
    return (size_t)n_tok * (size_t)n_head * (size_t)n_split * (size_t)(head_dim + 2);
}

extern "C" ts_status ts_k_attn_split_cuda(const ts_k_kv_args *a, const float *K, const float *V,
                                          const float *q, float *out, const int32_t *hi,
                                          int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                                          int32_t window, float scale, int32_t n_split,
                                          float *part, size_t part_floats, cudaStream_t stream) {
    TS_TRY(check_common(a, K, V, q, out, n_head, n_head_kv, head_dim));
    if (a->n_tok <= 0) return a->n_tok == 0 ? TS_OK : TS_FAIL(TS_INVAL, "attention n_tok");
    const int32_t group = n_head / n_head_kv;
    if (!ts_k_attn_split_supports_cuda(head_dim, group))
        return TS_FAIL(TS_UNSUPPORTED, "split-K attention: head_dim %d group %d", head_dim,
                       group);
    if (n_split < 1 || n_split > TS_K_ATTN_MAX_SPLIT)
        return TS_FAIL(TS_INVAL, "split-K attention: %d splits (1..%d)", n_split,
                       TS_K_ATTN_MAX_SPLIT);
    if (a->n_tok > 0x7fffffff) return TS_FAIL(TS_INVAL, "split-K attention: n_tok");
    const size_t need = ts_k_attn_split_scratch_floats(a->n_tok, n_head, head_dim, n_split);
    if (need > 0 && (!part || part_floats < need))
        return TS_FAIL(TS_INVAL, "split-K attention: scratch of %zu floats (need %zu)",
                       part_floats, need);
    if (!aligned16(K) || !aligned16(V) || !aligned16(q) || a->kv_dim % 4)
        return TS_FAIL(TS_INVAL, "split-K attention: K / V / q not 16-byte aligned");
    const dim3 grid((unsigned)a->n_tok, (unsigned)n_head_kv, (unsigned)n_split);
#define L(D, G)                                                                              \
    k_attn_split<D, G><<<grid, SW * 32, 0, stream>>>(*a, K, V, q, out, hi, part, n_head,      \
                                                     n_split, window, scale)
#define LG(D)                                                                                \
    do {                                                                                     \
        if (group == 1) L(D, 1);                                                             \
        else if (group == 2) L(D, 2);                                                        \
        else if (group == 4) L(D, 4);                                                        \
        else L(D, 8);                                                                        \
    } while (0)
    if (head_dim == 64) LG(64);
    else if (head_dim == 128) LG(128);
    else LG(256);
#undef LG
#undef L
    TS_TRY(ts_cu_launched("split-K attention"));
    if (n_split == 1) return TS_OK;
    const int64_t n_th = a->n_tok * n_head;
    if (n_th > 0x7fffffff) return TS_FAIL(TS_INVAL, "split-K attention: too many (token, head)s");
    k_attn_combine<<<(unsigned)n_th, (unsigned)head_dim, 0, stream>>>(part, out, n_th, n_split,
                                                                     head_dim);
    return ts_cu_launched("split-K combine");
}
