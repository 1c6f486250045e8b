/* matmul_avx2.c: AVX2 + FMA + F16C kernels of ts_matmul (see matmul.c for the method).
 *
 * Compiled with -mavx2 -mfma -mf16c (kernels/CMakeLists.txt); only called after
 * __builtin_cpu_supports said yes. matmul_avx512.c includes this file with TS_MM_AVX512
 * defined (and is compiled with AVX-512 flags): the same kernels then use AVX-512 VNNI
 * (vpdpbusd on 256-bit vectors) for the u8 x s8 dot products and AVX-512BW masks for the
 * Q5 high bits.
 *
 * Integer parts follow ggml's x86 kernels: weights unpacked to bytes, products with
 * maddubs (u8 x s8 -> s16 pairs, no saturation possible for these ranges) + madd, or
 * vpdpbusd. 32-blocks: the 8 int32 lanes are converted to float and accumulated with
 * (d_w * d_x) by FMA per lane (two accumulators per token, even/odd blocks), hsum at the
 * end. K types: each superblock's integer sum is reduced exactly, then the float steps are
 * those of the scalar kernel (bit-exact with it). Up to TS_MM_TILE tokens share one
 * decode of each weight block (prefill).
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "matmul_impl.h"
#include "quant.h"

#ifdef TS_MM_AVX512
#define TS_MM_TABLE ts_mm_kernel_avx512
#else
#define TS_MM_TABLE ts_mm_kernel_avx2
#endif

#define INLINE static inline __attribute__((always_inline))

/* ---- helpers ---- */

INLINE float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

INLINE float hsum_f8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

INLINE int hsum_i8(__m256i x) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high (16..31). */
INLINE __m256i nibbles32(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    const __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

INLINE uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#ifndef TS_MM_AVX512
/* 32 bits -> 32 bytes, 0xFF where the bit is set (ggml bytes_from_bits_32). */
INLINE __m256i bits32(uint32_t x32) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}
#endif

/* u8 x s8 -> 8 int32 lanes (sums of 4 adjacent products). */
INLINE __m256i dot_us(__m256i u, __m256i s) {
#ifdef TS_MM_AVX512
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* u8 x s8 pair products scaled by 16-bit scales -> 8 int32 lanes. */
INLINE __m256i dot_us_scaled(__m256i u, __m256i s, __m256i sc16) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16);
}

/* ---- 32-element block types ---- */

#define XQ(a, t) ((a)->xq + (size_t)(t) * (a)->xq_stride)

/* Weight block -> bytes; *is_signed says whether qw is s8 (else u8 0..31). */
INLINE __m256i decode32(const int type, const uint8_t *b, float *dw, float *mw) {
    switch (type) {
    case TS_TYPE_Q4_0:
        *dw = h2f(b);
        return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
    case TS_TYPE_Q5_0: {
        *dw = h2f(b);
        const __m256i q = nibbles32(b + 6);
#ifdef TS_MM_AVX512
        return _mm256_or_si256(q, _mm256_maskz_mov_epi8((__mmask32)~rd32(b + 2),
                                                        _mm256_set1_epi8((char)0xF0)));
#else
        return _mm256_or_si256(q, _mm256_andnot_si256(bits32(rd32(b + 2)),
                                                      _mm256_set1_epi8((char)0xF0)));
#endif
    }
    case TS_TYPE_Q8_0:
        *dw = h2f(b);
        return _mm256_loadu_si256((const __m256i *)(b + 2));
    case TS_TYPE_Q4_1:
        *dw = h2f(b);
        *mw = h2f(b + 2);
        return nibbles32(b + 4);
    case TS_TYPE_Q5_1: {
        *dw = h2f(b);
        *mw = h2f(b + 2);
        const __m256i q = nibbles32(b + 8);
#ifdef TS_MM_AVX512
        return _mm256_or_si256(q, _mm256_maskz_mov_epi8((__mmask32)rd32(b + 4),
                                                        _mm256_set1_epi8(0x10)));
#else
        return _mm256_or_si256(q, _mm256_and_si256(bits32(rd32(b + 4)),
                                                   _mm256_set1_epi8(0x10)));
#endif
    }
    default:
        *dw = 0.0f;
        return _mm256_setzero_si256();
    }
}

INLINE void blk32_tile(const int type, const int NT, const ts_mm_args *a, const uint8_t *w,
                       int64_t t0, float *out) {
    const int64_t nb = a->cols / 32;
    const size_t bs = type == TS_TYPE_Q4_0 ? 18 : type == TS_TYPE_Q4_1 ? 20
                    : type == TS_TYPE_Q5_0 ? 22 : type == TS_TYPE_Q5_1 ? 24 : 34;
    const int is_signed = type == TS_TYPE_Q4_0 || type == TS_TYPE_Q5_0 || type == TS_TYPE_Q8_0;
    const int has_m = !is_signed;
    const size_t doff = ts_mm_align64((size_t)a->cols);
    const size_t soff = doff + ts_mm_align64((size_t)nb * sizeof(float));
    const int8_t *yq[TS_MM_TILE];
    const float *yd[TS_MM_TILE], *ys[TS_MM_TILE];
    __m256 acc[TS_MM_TILE];
    float summ[TS_MM_TILE];
    for (int i = 0; i < NT; i++) {
        const uint8_t *s = XQ(a, t0 + i);
        yq[i] = (const int8_t *)s;
        yd[i] = (const float *)(s + doff);
        ys[i] = (const float *)(s + soff);
        acc[i] = _mm256_setzero_ps();
        summ[i] = 0.0f;
    }
    /* One accumulator per token, one FMA per block, blocks in order: ggml's AVX2
     * ggml_vec_dot_<type>_q8_0/1 and llamafile's tinyBLAS_Q0_AVX (which do the same per
     * output element). */
    for (int64_t b = 0; b < nb; b++) {
        float dw, mw = 0.0f;
        const __m256i qw = decode32(type, w + (size_t)b * bs, &dw, &mw);
        const __m256i ax = is_signed ? _mm256_abs_epi8(qw) : qw;
        for (int i = 0; i < NT; i++) {
            __m256i y = _mm256_loadu_si256((const __m256i *)(yq[i] + 32 * b));
            if (is_signed) y = _mm256_sign_epi8(y, qw);
            const __m256 p = _mm256_cvtepi32_ps(dot_us(ax, y));
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * yd[i][b]), p, acc[i]);
            if (has_m) summ[i] += mw * ys[i][b];
        }
    }
    for (int i = 0; i < NT; i++) out[i] = hsum_f8(acc[i]) + summ[i];
}

/* The row/token loop shared by every kernel: TILE(NT, w, t0, out) computes NT dots. */
#define ROW_LOOP(a, r0, r1, TILE)                                                        \
    do {                                                                                 \
        for (int64_t r = (r0); r < (r1); r++) {                                          \
            const uint8_t *w_ = (a)->w + (size_t)r * (a)->row_stride;                    \
            int64_t t = 0;                                                               \
            float o_[TS_MM_TILE];                                                        \
            for (; t + 4 <= (a)->n_tok; t += 4) {                                        \
                TILE(4, w_, t, o_);                                                      \
                for (int i = 0; i < 4; i++) (a)->y[(t + i) * (a)->rows + r] = o_[i];     \
            }                                                                            \
            switch ((a)->n_tok - t) {                                                    \
            case 3: TILE(3, w_, t, o_); break;                                           \
            case 2: TILE(2, w_, t, o_); break;                                           \
            case 1: TILE(1, w_, t, o_); break;                                           \
            default: break;                                                              \
            }                                                                            \
            for (int i = 0; t + i < (a)->n_tok; i++) (a)->y[(t + i) * (a)->rows + r] = o_[i]; \
        }                                                                                \
    } while (0)

#define DEF_BLK32(name, TYPE)                                                            \
    static void name(const ts_mm_args *a, int64_t r0, int64_t r1) {                      \
        _Pragma("GCC diagnostic push")                                                   \
        _Pragma("GCC diagnostic ignored \"-Wshadow\"")                                   \
        ROW_LOOP(a, r0, r1, TILE_##name);                                                \
        _Pragma("GCC diagnostic pop")                                                    \
    }

#define TILE_k_q4_0(NT, w, t, o) blk32_tile(TS_TYPE_Q4_0, NT, a, w, t, o)
#define TILE_k_q4_1(NT, w, t, o) blk32_tile(TS_TYPE_Q4_1, NT, a, w, t, o)
#define TILE_k_q5_0(NT, w, t, o) blk32_tile(TS_TYPE_Q5_0, NT, a, w, t, o)
#define TILE_k_q5_1(NT, w, t, o) blk32_tile(TS_TYPE_Q5_1, NT, a, w, t, o)
#define TILE_k_q8_0(NT, w, t, o) blk32_tile(TS_TYPE_Q8_0, NT, a, w, t, o)
DEF_BLK32(k_q4_0, TS_TYPE_Q4_0)
DEF_BLK32(k_q4_1, TS_TYPE_Q4_1)
DEF_BLK32(k_q5_0, TS_TYPE_Q5_0)
DEF_BLK32(k_q5_1, TS_TYPE_Q5_1)
DEF_BLK32(k_q8_0, TS_TYPE_Q8_0)

/* ---- K types ---- */

typedef struct {
    const int8_t *q;
    const float *d;
    const int16_t *bs;
} q8k_view;

INLINE void q8k_views(const ts_mm_args *a, int64_t t0, int NT, q8k_view *v) {
    const size_t doff = ts_mm_align64((size_t)a->cols);
    const size_t boff = doff + ts_mm_align64((size_t)(a->cols / 256) * sizeof(float));
    for (int i = 0; i < NT; i++) {
        const uint8_t *s = XQ(a, t0 + i);
        v[i].q = (const int8_t *)s;
        v[i].d = (const float *)(s + doff);
        v[i].bs = (const int16_t *)(s + boff);
    }
}

/* Q4_K / Q5_K scales and mins (ggml's kmask unpacking): bytes 0..7 of out = scales,
 * 8..15 = mins. */
INLINE void k4_scales(const uint8_t *s12, uint8_t *out) {
    uint32_t u[4];
    memcpy(u, s12, 12);
    const uint32_t km1 = 0x3f3f3f3f, km2 = 0x0f0f0f0f, km3 = 0x03030303;
    u[3] = ((u[2] >> 4) & km2) | (((u[1] >> 6) & km3) << 4);
    const uint32_t aux = u[1] & km1;
    u[1] = (u[2] & km2) | (((u[0] >> 6) & km3) << 4);
    u[2] = aux;
    u[0] &= km1;
    memcpy(out, u, 16);
}

INLINE void q45k_tile(const int five, const int NT, const ts_mm_args *a, const uint8_t *w,
                      int64_t t0, float *out) {
    const int64_t nk = a->cols / 256;
    const size_t bsz = five ? sizeof(ts_block_q5_K) : sizeof(ts_block_q4_K);
    q8k_view v[TS_MM_TILE];
    q8k_views(a, t0, NT, v);
    float sumf[TS_MM_TILE], summf[TS_MM_TILE];
    for (int i = 0; i < NT; i++) sumf[i] = summf[i] = 0.0f;
    /* A full tile of 4 tokens (tiles start at token 0, so these are llama.cpp's groups of
     * 4 activation rows) of a Q4_K weight: ggml_gemm_q4_K_8x8_q8_K's order (see
     * q4k_gemm_step). Other tiles (n_tok % 4 leftover rows, decode): the gemv order. */
    const int gemm = a->llamacpp_batch && !five && NT == 4;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m1 = _mm256_set1_epi8(1);
    for (int64_t k = 0; k < nk; k++) {
        const uint8_t *b = w + (size_t)k * bsz;
        uint8_t sm[16];
        k4_scales(b + 4, sm);
        const uint8_t *qs = five ? b + 48 : b + 16;
        __m256i hb = _mm256_setzero_si256();
        if (five) hb = _mm256_loadu_si256((const __m256i *)(b + 16));
        __m256i sumv[TS_MM_TILE];
        for (int i = 0; i < NT; i++) sumv[i] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i ql = _mm256_and_si256(bits, m4);
            __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (five) {
                ql = _mm256_or_si256(ql, _mm256_slli_epi16(
                    _mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), m1), 4));
                qh = _mm256_or_si256(qh, _mm256_slli_epi16(
                    _mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), m1), 4));
            }
            const __m256i s0 = _mm256_set1_epi16(sm[2 * j]);
            const __m256i s1 = _mm256_set1_epi16(sm[2 * j + 1]);
            for (int i = 0; i < NT; i++) {
                const int8_t *y = v[i].q + 256 * k + 64 * j;
                const __m256i y0 = _mm256_loadu_si256((const __m256i *)y);
                const __m256i y1 = _mm256_loadu_si256((const __m256i *)(y + 32));
                const __m256i pj = _mm256_add_epi32(dot_us_scaled(ql, y0, s0),
                                                    dot_us_scaled(qh, y1, s1));
                if (gemm) {
                    /* ggml_gemm_q4_K_8x8_q8_K (AVX2): per pair of 32-sub-blocks the exact
                     * int32 sc0 * dot0 + sc1 * dot1 and m0 * bsum0 + m1 * bsum1, each
                     * converted to float and FMA'd (multiplier rounded d_w * d_x) into
                     * separate scale / min accumulators; acc - acc_min at the end. */
                    const int16_t *bsum = v[i].bs + 16 * k + 4 * j;
                    const int mj = sm[8 + 2 * j] * (bsum[0] + bsum[1]) +
                                   sm[9 + 2 * j] * (bsum[2] + bsum[3]);
                    const float d = h2f(b) * v[i].d[k], dm = h2f(b + 2) * v[i].d[k];
                    sumf[i] = fmaf((float)hsum_i8(pj), d, sumf[i]);
                    summf[i] = fmaf((float)mj, dm, summf[i]);
                } else {
                    sumv[i] = _mm256_add_epi32(sumv[i], pj);
                }
            }
        }
        if (gemm) continue;
        const float dw = h2f(b), dmin = h2f(b + 2);
        for (int i = 0; i < NT; i++) {
            const int16_t *bsum = v[i].bs + 16 * k;
            int summ = 0;
            for (int j = 0; j < 8; j++) summ += sm[8 + j] * (bsum[2 * j] + bsum[2 * j + 1]);
            const int sumi = hsum_i8(sumv[i]);
            const float d = dw * v[i].d[k];
            const float dm = dmin * v[i].d[k];
            if (five) {
                const float p = d * (float)sumi;
                const float pm = dm * (float)summ;
                sumf[i] += p;
                sumf[i] -= pm;
            } else {
                /* ggml's x86 q4_K 8x8 repack gemv/gemm: FMA into separate scale and min
                 * accumulators, subtracted at the end (scalar: k_scalar_q4_K). */
                sumf[i] = fmaf((float)sumi, d, sumf[i]);
                summf[i] = fmaf((float)summ, dm, summf[i]);
            }
        }
    }
    for (int i = 0; i < NT; i++) out[i] = five ? sumf[i] : sumf[i] - summf[i];
}

INLINE void q6k_tile(const int NT, const ts_mm_args *a, const uint8_t *w, int64_t t0,
                     float *out) {
    const int64_t nk = a->cols / 256;
    q8k_view v[TS_MM_TILE];
    q8k_views(a, t0, NT, v);
    __m256 acc[TS_MM_TILE];
    float tacc[TS_MM_TILE];
    for (int i = 0; i < NT; i++) {
        acc[i] = _mm256_setzero_ps();
        tacc[i] = 0.0f;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    for (int64_t k = 0; k < nk; k++) {
        const uint8_t *b = w + (size_t)k * sizeof(ts_block_q6_K);
        const int8_t *sc = (const int8_t *)(b + 192);
        __m256i sumv[TS_MM_TILE];
        for (int i = 0; i < NT; i++) sumv[i] = _mm256_setzero_si256();
        for (int n = 0; n < 2; n++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * n));
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * n));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * n + 32));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            for (int kk = 0; kk < 4; kk++) {
                const __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[8 * n + 2 * kk + 1]),
                                                     _mm_set1_epi16(sc[8 * n + 2 * kk]));
                for (int i = 0; i < NT; i++) {
                    const __m256i y = _mm256_loadu_si256(
                        (const __m256i *)(v[i].q + 256 * k + 128 * n + 32 * kk));
                    /* unsigned q (0..63) times y, as ggml; the -32 offset is taken off
                     * per lane with the bsums below. Each int32 lane holds exactly
                     * ggml's lane. */
                    sumv[i] = _mm256_add_epi32(
                        sumv[i], _mm256_madd_epi16(_mm256_maddubs_epi16(q[kk], y), s16));
                }
            }
        }
        /* ggml_vec_dot_q6_K_q8_K (AVX2, as in llama-cpp-python 0.3.36's ggml): lane l -= 32 * (sc[2l] *
         * bsum[2l] + sc[2l+1] * bsum[2l+1]) (bsum j = sum of x's q in elements 16j..16j+15). */
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        for (int i = 0; i < NT; i++) {
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(v[i].bs + 16 * k));
            sumv[i] = _mm256_sub_epi32(sumv[i],
                                       _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5));
        }
        const float dw = h2f(b + 208);
        if (a->ggml_tiled) {
            /* ggml_compute_forward_mul_mat_tiled (>= 8 tokens): whole-superblock integer,
             * y = fma(d_x, d_w * (float)S, y) (see matmul.c) */
            for (int i = 0; i < NT; i++)
                tacc[i] = fmaf(v[i].d[k], dw * (float)hsum_i8(sumv[i]), tacc[i]);
            continue;
        }
        /* ggml_vec_dot_q6_K_q8_K (AVX2): the 8 int32 lanes -> float, one FMA per
         * superblock into 8 float lanes, hsum at the end. */
        for (int i = 0; i < NT; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(v[i].d[k] * dw), _mm256_cvtepi32_ps(sumv[i]),
                                     acc[i]);
    }
    for (int i = 0; i < NT; i++) out[i] = a->ggml_tiled ? tacc[i] : hsum_f8(acc[i]);
}

#define TILE_k_q4_K(NT, w, t, o) q45k_tile(0, NT, a, w, t, o)
#define TILE_k_q5_K(NT, w, t, o) q45k_tile(1, NT, a, w, t, o)
#define TILE_k_q6_K(NT, w, t, o) q6k_tile(NT, a, w, t, o)
DEF_BLK32(k_q4_K, 0)
DEF_BLK32(k_q5_K, 0)
DEF_BLK32(k_q6_K, 0)

/* ---- F32 / F16 / BF16 ---- */

enum { FK_F32, FK_F16, FK_BF16 };

INLINE __m256 load_w8(const int kind, const uint8_t *w, int64_t k) {
    switch (kind) {
    case FK_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * k)));
    case FK_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * k))), 16));
    default: return _mm256_loadu_ps((const float *)(w + 4 * k));
    }
}

INLINE float load_w1(const int kind, const uint8_t *w, int64_t k) {
    uint16_t h;
    switch (kind) {
    case FK_F16: return h2f(w + 2 * k);
    case FK_BF16: {
        memcpy(&h, w + 2 * k, 2);
        const uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    default: {
        float f;
        memcpy(&f, w + 4 * k, 4);
        return f;
    }
    }
}

/* x: fp16 for F16 weights (prepared), fp32 otherwise. */
INLINE __m256 load_x8(const int kind, const uint8_t *x, int64_t k) {
    if (kind == FK_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 2 * k)));
    return _mm256_loadu_ps((const float *)(x + 4 * k));
}

INLINE float load_x1(const int kind, const uint8_t *x, int64_t k) {
    if (kind == FK_F16) return h2f(x + 2 * k);
    float f;
    memcpy(&f, x + 4 * k, 4);
    return f;
}

INLINE void fp_tile(const int kind, const int NT, const ts_mm_args *a, const uint8_t *w,
                    int64_t t0, float *out) {
    const int64_t n = a->cols;
    const uint8_t *x[TS_MM_TILE];
    __m256 acc0[TS_MM_TILE], acc1[TS_MM_TILE];
    for (int i = 0; i < NT; i++) {
        x[i] = XQ(a, t0 + i);
        acc0[i] = _mm256_setzero_ps();
        acc1[i] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m256 w0 = load_w8(kind, w, k), w1 = load_w8(kind, w, k + 8);
        for (int i = 0; i < NT; i++) {
            acc0[i] = _mm256_fmadd_ps(w0, load_x8(kind, x[i], k), acc0[i]);
            acc1[i] = _mm256_fmadd_ps(w1, load_x8(kind, x[i], k + 8), acc1[i]);
        }
    }
    if (k + 8 <= n) {
        const __m256 w0 = load_w8(kind, w, k);
        for (int i = 0; i < NT; i++) acc0[i] = _mm256_fmadd_ps(w0, load_x8(kind, x[i], k), acc0[i]);
        k += 8;
    }
    for (int i = 0; i < NT; i++) {
        float s = hsum_f8(_mm256_add_ps(acc0[i], acc1[i]));
        for (int64_t kk = k; kk < n; kk++) {
            const float p = load_w1(kind, w, kk) * load_x1(kind, x[i], kk);
            s += p;
        }
        out[i] = s;
    }
}

#define TILE_k_f32(NT, w, t, o) fp_tile(FK_F32, NT, a, w, t, o)
#define TILE_k_f16(NT, w, t, o) fp_tile(FK_F16, NT, a, w, t, o)
#define TILE_k_bf16(NT, w, t, o) fp_tile(FK_BF16, NT, a, w, t, o)
DEF_BLK32(k_f32, 0)
DEF_BLK32(k_f16, 0)
DEF_BLK32(k_bf16, 0)

ts_mm_kernel TS_MM_TABLE(uint32_t type) {
    switch (type) {
    case TS_TYPE_Q4_0: return k_q4_0;
    case TS_TYPE_Q4_1: return k_q4_1;
    case TS_TYPE_Q5_0: return k_q5_0;
    case TS_TYPE_Q5_1: return k_q5_1;
    case TS_TYPE_Q8_0: return k_q8_0;
    case TS_TYPE_Q4_K: return k_q4_K;
    case TS_TYPE_Q5_K: return k_q5_K;
    case TS_TYPE_Q6_K: return k_q6_K;
    case TS_TYPE_F32: return k_f32;
    case TS_TYPE_F16: return k_f16;
    case TS_TYPE_BF16: return k_bf16;
    default: return NULL;
    }
}

#else /* not x86 */
#include "matmul_impl.h"
#ifdef TS_MM_AVX512
ts_mm_kernel ts_mm_kernel_avx512(uint32_t type) { (void)type; return 0; }
#else
ts_mm_kernel ts_mm_kernel_avx2(uint32_t type) { (void)type; return 0; }
#endif
#endif
