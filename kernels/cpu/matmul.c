/* matmul.c: the fast CPU matrix multiply (matmul.h): run-time ISA dispatch, activation
 * preparation (x -> Q8_0 / Q8_1 / Q8_K / fp16, as llama.cpp's vec_dot_type) and the scalar
 * kernels, which define the integer/float method the SIMD kernels (matmul_avx2.c,
 * matmul_avx512.c) implement.
 *
 * Semantics per weight type (ggml's ggml_vec_dot_<type>_<vec_dot_type>):
 *   Q4_0, Q5_0, Q8_0: x -> Q8_0 (ggml-cpu's x86 quantize_row_q8_0, which llama.cpp runs:
 *       d = amax/127, q = round-half-even(x * (127/amax)); NOT quantize_row_q8_0_ref's
 *       roundf(x * (1/d)), which differs in the last bit of the product: see q8_block),
 *       d kept as fp16); per 32-block the exact integer sum sumi = sum q_w * q_x, and
 *       y += (d_w * d_x) * sumi in fp32.
 *   Q4_1, Q5_1: x -> Q8_1 (same q and d, plus s = fp16(d * sum q_x));
 *       y += (d_w * d_x) * sumi + m_w * s_x.
 *   Q4_K, Q5_K: x -> Q8_K (quantize_row_q8_K_ref); per 256-superblock the exact integers
 *       sumi = sum_j sc_j * sum q_w q_x and summ = sum_j m_j * bsum_j;
 *       y += (d_w * d_x) * sumi; y -= (dmin_w * d_x) * summ.
 *   Q6_K: x -> Q8_K; sumi = sum_j sc_j * sum (q_w - 32) q_x; y += (d_w * d_x) * sumi
 *       (ggml's lane order, see k_scalar_q6_K; n_tok >= 8: ggml's tiled matmul order,
 *       y = fma(d_x, d_w * (float)sumi, y), see ts_matmul).
 *   F16: x -> fp16 (round to nearest even); fp32 products and sums.
 *   F32, BF16: fp32 products and sums (BF16 weights widened exactly).
 * The SIMD kernels compute the same integers; the 32-block types and F16/F32/BF16 add
 * the per-block float terms in SIMD lanes (as ggml), so they match the scalar path to
 * float rounding only; the K types reduce each superblock to one integer first and then
 * do the same float operations in the same order, so they match the scalar path bit for
 * bit.
 */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "matmul.h"
#include "matmul_impl.h"
#include "quant.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* ---- ISA selection ---- */

enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

static int g_isa = -1;        /* chosen (or forced) ISA; -1 = not yet detected */
static int g_isa_detected = -1;

static int detect_isa(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    /* F16C through cpuid (leaf 1, ecx bit 29): clang < 16 has no "f16c" for
     * __builtin_cpu_supports. The AVX ones also check that the OS saves the registers. */
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512vnni");
    if (avx512) return ISA_AVX512;
    if (avx2) return ISA_AVX2;
#endif
    return ISA_SCALAR;
}

static int isa(void) {
    /* Benign race: every thread computes the same value. Kernels are picked on the
     * calling thread only, before the pool runs. */
    if (g_isa < 0) {
        g_isa_detected = detect_isa();
        g_isa = g_isa_detected;
    }
    return g_isa;
}

const char *ts_matmul_isa(void) {
    switch (isa()) {
    case ISA_AVX512: return "avx512";
    case ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

ts_status ts_matmul_force_isa(const char *name) {
    (void)isa();
    int want;
    if (!name || !strcmp(name, "auto")) {
        want = g_isa_detected;
    } else if (!strcmp(name, "scalar")) {
        want = ISA_SCALAR;
    } else if (!strcmp(name, "avx2")) {
        want = ISA_AVX2;
    } else if (!strcmp(name, "avx512")) {
        want = ISA_AVX512;
    } else {
        return TS_FAIL(TS_INVAL, "unknown ISA '%s'", name);
    }
    if (want > g_isa_detected)
        return TS_FAIL(TS_UNSUPPORTED, "ISA '%s' not supported by this CPU", name);
    g_isa = want;
    return TS_OK;
}

/* ---- activation formats ---- */

typedef enum { ACT_NONE, ACT_Q8_0, ACT_Q8_1, ACT_Q8_K, ACT_F16 } act_kind;

static act_kind act_of(uint32_t type) {
    switch (type) {
    case TS_TYPE_Q4_0: case TS_TYPE_Q5_0: case TS_TYPE_Q8_0: return ACT_Q8_0;
    case TS_TYPE_Q4_1: case TS_TYPE_Q5_1: return ACT_Q8_1;
    case TS_TYPE_Q4_K: case TS_TYPE_Q5_K: case TS_TYPE_Q6_K: return ACT_Q8_K;
    case TS_TYPE_F16: return ACT_F16;
    default: return ACT_NONE;
    }
}

static bool type_supported(uint32_t type) {
    return act_of(type) != ACT_NONE || type == TS_TYPE_F32 || type == TS_TYPE_BF16;
}

/* Bytes of one token's prepared x (0 for F32/BF16, which use x directly). */
static size_t act_stride(act_kind k, int64_t cols) {
    switch (k) {
    case ACT_Q8_0: return ts_mm_q8_s_off(cols);
    case ACT_Q8_1: return ts_mm_q8_s_off(cols) + ts_mm_align64((size_t)(cols / 32) * 4);
    case ACT_Q8_K: return ts_mm_q8k_bsums_off(cols) + ts_mm_align64((size_t)(cols / 256) * 32);
    case ACT_F16: return ts_mm_align64((size_t)cols * 2);
    default: return 0;
    }
}

size_t ts_matmul_scratch_bytes(uint32_t type, int64_t cols, int64_t n_tok) {
    if (cols < 0 || n_tok < 0) return 0;
    const size_t s = act_stride(act_of(type), cols);
    if (s == 0) return 0;
    return s * (size_t)n_tok + 64; /* + 64: room to align the start */
}

/* One Q8_0/Q8_1 block as ggml-cpu's x86 quantize_row_q8_0 / quantize_row_q8_1 (the AVX2
 * code llama.cpp runs on x86): d = amax/127, q = round-half-even(x * (127/amax)) (the
 * _mm256_round_ps nearest mode). ggml's scalar *_ref instead uses id = 1/d and roundf (half
 * away from zero); x*(127/amax) and x*(1/(amax/127)) differ in the last bit for some
 * values, which moves a q by one often enough to matter (measured on Gemma 3 270M: a
 * Q8_0 projection's relative difference to llama.cpp drops from 1.9e-4 to 5e-8).
 * *d_out = d (before fp16 rounding); *sum_out = sum of q. */
static void q8_block(const float *x, int8_t *qs, float *d_out, int *sum_out, bool x86) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float v = fabsf(x[j]);
        if (v > amax) amax = v;
    }
    const float d = amax / 127.0f;
    /* x86: ggml-cpu's AVX2 quantizer (ts_matmul); else quantize_row_q8_{0,1}_ref, the
     * exported ts_matmul_quantize_row_* (bit-exact against gguf-py in test_matmul). */
    const float id = x86 ? (amax != 0.0f ? 127.0f / amax : 0.0f) : (d != 0.0f ? 1.0f / d : 0.0f);
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        /* nearbyintf: default FP env, nearest with ties to even (_mm256_round_ps) */
        const int q = x86 ? (int)nearbyintf(x[j] * id) : (int)roundf(x[j] * id);
        qs[j] = (int8_t)q;
        sum += q;
    }
    *d_out = d;
    *sum_out = sum;
}

/* ggml nearest_int: round half to even through the 1.5 * 2^23 trick (|f| <= 2^22). */
static inline int nearest_int(float f) {
    const float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* One Q8_K block (quantize_row_q8_K_ref): max = the value of largest magnitude (first on
 * ties), iscale = -127/max, q = min(127, nearest_int(iscale*x)), d = 1/iscale, bsums =
 * sums of 16. All zero for an all-zero block. */
static void q8k_block(const float *x, int8_t *qs, float *d_out, int16_t *bsums) {
    float max = 0.0f, amax = 0.0f;
    for (int j = 0; j < 256; j++) {
        const float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax == 0.0f) {
        *d_out = 0.0f;
        memset(qs, 0, 256);
        memset(bsums, 0, 16 * sizeof *bsums);
        return;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < 256; j++) {
        const int v = nearest_int(iscale * x[j]);
        qs[j] = (int8_t)(v < 127 ? v : 127);
    }
    for (int j = 0; j < 16; j++) {
        int sum = 0;
        for (int i = 0; i < 16; i++) sum += qs[16 * j + i];
        bsums[j] = (int16_t)sum;
    }
    *d_out = 1.0f / iscale;
}

void ts_matmul_quantize_row_q8_0(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        ts_block_q8_0 blk;
        float d;
        int sum;
        q8_block(x + 32 * b, blk.qs, &d, &sum, false);
        blk.d = ts_fp32_to_fp16(d);
        memcpy(out + (size_t)b * sizeof blk, &blk, sizeof blk);
    }
}

void ts_matmul_quantize_row_q8_1(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        int8_t qs[32];
        float d;
        int sum;
        q8_block(x + 32 * b, qs, &d, &sum, false);
        const uint16_t hd = ts_fp32_to_fp16(d);
        const uint16_t hs = ts_fp32_to_fp16((float)sum * d);
        memcpy(out + (size_t)b * 36, &hd, 2);
        memcpy(out + (size_t)b * 36 + 2, &hs, 2);
        memcpy(out + (size_t)b * 36 + 4, qs, 32);
    }
}

void ts_matmul_quantize_row_q8_K(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / 256; b++) {
        int8_t qs[256];
        int16_t bsums[16];
        float d;
        q8k_block(x + 256 * b, qs, &d, bsums);
        memcpy(out + (size_t)b * 292, &d, 4);
        memcpy(out + (size_t)b * 292 + 4, qs, 256);
        memcpy(out + (size_t)b * 292 + 260, bsums, 32);
    }
}

/* Prepares one token's x into its slab. */
static void prep_token(act_kind k, const float *x, int64_t cols, uint8_t *slab) {
    switch (k) {
    case ACT_Q8_0:
    case ACT_Q8_1: {
        int8_t *qs = (int8_t *)slab;
        float *d = (float *)(slab + ts_mm_q8_d_off(cols));
        float *s = (float *)(slab + ts_mm_q8_s_off(cols));
        for (int64_t b = 0; b < cols / 32; b++) {
            float dd;
            int sum;
            q8_block(x + 32 * b, qs + 32 * b, &dd, &sum, true);
            const uint16_t hd = ts_fp32_to_fp16(dd);
            d[b] = ts_fp16_to_fp32(hd);
            if (k == ACT_Q8_1) s[b] = ts_fp16_to_fp32(ts_fp32_to_fp16((float)sum * dd));
        }
        break;
    }
    case ACT_Q8_K: {
        int8_t *qs = (int8_t *)slab;
        float *d = (float *)(slab + ts_mm_q8_d_off(cols));
        int16_t *bs = (int16_t *)(slab + ts_mm_q8k_bsums_off(cols));
        for (int64_t b = 0; b < cols / 256; b++)
            q8k_block(x + 256 * b, qs + 256 * b, &d[b], bs + 16 * b);
        break;
    }
    case ACT_F16: {
        uint16_t *h = (uint16_t *)slab;
        for (int64_t i = 0; i < cols; i++) h[i] = ts_fp32_to_fp16(x[i]);
        break;
    }
    default: break;
    }
}

/* ---- scalar kernels ---- */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline float h2f(const uint8_t *p) { return ts_fp16_to_fp32(rd16(p)); }

#define XQ(a, t) ((a)->xq + (size_t)(t) * (a)->xq_stride)
#define XD(a, t) ((const float *)(XQ(a, t) + ts_mm_q8_d_off((a)->cols)))
#define XS(a, t) ((const float *)(XQ(a, t) + ts_mm_q8_s_off((a)->cols)))
#define XBS(a, t) ((const int16_t *)(XQ(a, t) + ts_mm_q8k_bsums_off((a)->cols)))

/* 32-block types: weight block -> 32 integer values (and d, m). */
static void unpack32(uint32_t type, const uint8_t *b, int *q, float *d, float *m) {
    *d = 0.0f;
    *m = 0.0f;
    switch (type) {
    case TS_TYPE_Q4_0:
        *d = h2f(b);
        for (int j = 0; j < 16; j++) {
            q[j] = (b[2 + j] & 15) - 8;
            q[j + 16] = (b[2 + j] >> 4) - 8;
        }
        break;
    case TS_TYPE_Q4_1:
        *d = h2f(b);
        *m = h2f(b + 2);
        for (int j = 0; j < 16; j++) {
            q[j] = b[4 + j] & 15;
            q[j + 16] = b[4 + j] >> 4;
        }
        break;
    case TS_TYPE_Q5_0: {
        *d = h2f(b);
        const uint32_t qh = rd32(b + 2);
        for (int j = 0; j < 16; j++) {
            q[j] = ((b[6 + j] & 15) | (int)(((qh >> j) & 1) << 4)) - 16;
            q[j + 16] = ((b[6 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
        }
        break;
    }
    case TS_TYPE_Q5_1: {
        *d = h2f(b);
        *m = h2f(b + 2);
        const uint32_t qh = rd32(b + 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (b[8 + j] & 15) | (int)(((qh >> j) & 1) << 4);
            q[j + 16] = (b[8 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        }
        break;
    }
    case TS_TYPE_Q8_0:
        *d = h2f(b);
        for (int j = 0; j < 32; j++) q[j] = (int8_t)b[2 + j];
        break;
    default: break;
    }
}

static void scalar_blk32(uint32_t type, const ts_mm_args *a, int64_t r0, int64_t r1) {
    const int64_t nb = a->cols / 32;
    const size_t bs = ts_type_block_bytes(type);
    const bool has_m = type == TS_TYPE_Q4_1 || type == TS_TYPE_Q5_1;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + (size_t)r * a->row_stride;
        for (int64_t t = 0; t < a->n_tok; t++) {
            const int8_t *xq = (const int8_t *)XQ(a, t);
            const float *xd = XD(a, t);
            const float *xs = XS(a, t);
            float sumf = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                int q[32];
                float d, m;
                unpack32(type, w + (size_t)b * bs, q, &d, &m);
                int sumi = 0;
                for (int j = 0; j < 32; j++) sumi += q[j] * xq[32 * b + j];
                const float dd = d * xd[b];
                const float p = dd * (float)sumi;
                sumf += p;
                if (has_m) {
                    const float pm = m * xs[b];
                    sumf += pm;
                }
            }
            a->y[t * a->rows + r] = sumf;
        }
    }
}

static void k_scalar_q4_0(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_blk32(TS_TYPE_Q4_0, a, r0, r1); }
static void k_scalar_q4_1(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_blk32(TS_TYPE_Q4_1, a, r0, r1); }
static void k_scalar_q5_0(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_blk32(TS_TYPE_Q5_0, a, r0, r1); }
static void k_scalar_q5_1(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_blk32(TS_TYPE_Q5_1, a, r0, r1); }
static void k_scalar_q8_0(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_blk32(TS_TYPE_Q8_0, a, r0, r1); }

/* ggml get_scale_min_k4. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K / Q5_K: blocks d | dmin | scales[12] | (qh[32]) | qs[128]. */
static void scalar_q45k(bool five, const ts_mm_args *a, int64_t r0, int64_t r1) {
    const int64_t nk = a->cols / 256;
    const size_t bs = five ? sizeof(ts_block_q5_K) : sizeof(ts_block_q4_K);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + (size_t)r * a->row_stride;
        for (int64_t t = 0; t < a->n_tok; t++) {
            const int8_t *xq = (const int8_t *)XQ(a, t);
            const float *xd = XD(a, t);
            const int16_t *xbs = XBS(a, t);
            /* Q4_K tokens in complete groups of 4 (llama.cpp runs those through
             * ggml_gemm_q4_K_8x8_q8_K): one FMA per 64 elements; the n_tok % 4 leftover
             * tokens (and decode) through the gemv order: one FMA per superblock. */
            const bool gemm = a->llamacpp_batch && !five && t < a->n_tok - a->n_tok % 4;
            float sumf = 0.0f, summf = 0.0f;
            for (int64_t i = 0; i < nk; i++) {
                const uint8_t *b = w + (size_t)i * bs;
                const uint8_t *scales = b + 4;
                const uint8_t *qh = b + 16;
                const uint8_t *qs = five ? b + 48 : b + 16;
                const int8_t *y = xq + 256 * i;
                int sumi = 0, summ = 0;
                for (int j = 0; j < 4; j++) {
                    int sc0, m0, sc1, m1;
                    scale_min_k4(2 * j, scales, &sc0, &m0);
                    scale_min_k4(2 * j + 1, scales, &sc1, &m1);
                    int s0 = 0, s1 = 0;
                    for (int l = 0; l < 32; l++) {
                        int lo = qs[32 * j + l] & 15, hi = qs[32 * j + l] >> 4;
                        if (five) {
                            lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                            hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                        }
                        s0 += lo * y[64 * j + l];
                        s1 += hi * y[64 * j + 32 + l];
                    }
                    const int pj = sc0 * s0 + sc1 * s1;
                    const int mj = m0 * (xbs[16 * i + 4 * j] + xbs[16 * i + 4 * j + 1]) +
                                   m1 * (xbs[16 * i + 4 * j + 2] + xbs[16 * i + 4 * j + 3]);
                    if (gemm) {
                        sumf = fmaf((float)pj, h2f(b) * xd[i], sumf);
                        summf = fmaf((float)mj, h2f(b + 2) * xd[i], summf);
                    }
                    sumi += pj;
                    summ += mj;
                }
                if (gemm) continue;
                const float d = h2f(b) * xd[i];
                const float dm = h2f(b + 2) * xd[i];
                if (five) {
                    const float p = d * (float)sumi;
                    const float pm = dm * (float)summ;
                    sumf += p;
                    sumf -= pm;
                } else {
                    /* Q4_K: as ggml's x86 q4_K_8x8 repack gemv/gemm (which llama.cpp runs
                     * for Q4_K): fused multiply-adds into separate scale and min sums. */
                    sumf = fmaf((float)sumi, d, sumf);
                    summf = fmaf((float)summ, dm, summf);
                }
            }
            a->y[t * a->rows + r] = five ? sumf : sumf - summf;
        }
    }
}

static void k_scalar_q4_K(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_q45k(false, a, r0, r1); }
static void k_scalar_q5_K(const ts_mm_args *a, int64_t r0, int64_t r1) { scalar_q45k(true, a, r0, r1); }

/* hsum_float_8 of ggml's x86 kernels: ((0+4)+(2+6)) + ((1+5)+(3+7)). */
static float hsum8(const float *l) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* Q6_K: ql[128] | qh[64] | scales[16] | d; summed as ggml_vec_dot_q6_K_q8_K (AVX2): per
 * superblock 8 exact integer lanes of sc * q * y with the UNSIGNED q (0..63) (element e in
 * lane (e % 32) / 4), then lane l -= 32 * (sc[2l] * bsum[2l] + sc[2l+1] * bsum[2l+1]) (the
 * -32 offset through x's bsums, so lanes differ from summing (q - 32) * y); each lane added
 * to its float lane by FMA, hsum at the end. */
static void k_scalar_q6_K(const ts_mm_args *a, int64_t r0, int64_t r1) {
    const int64_t nk = a->cols / 256;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + (size_t)r * a->row_stride;
        for (int64_t t = 0; t < a->n_tok; t++) {
            const int8_t *xq = (const int8_t *)XQ(a, t);
            const float *xd = XD(a, t);
            const int16_t *xbs = XBS(a, t);
            float acc[8] = {0}; /* ggml_tiled: acc[0] only */
            for (int64_t i = 0; i < nk; i++) {
                const uint8_t *b = w + (size_t)i * sizeof(ts_block_q6_K);
                int lane[8] = {0};
                for (int n = 0; n < 2; n++) {
                    const uint8_t *ql = b + 64 * n;
                    const uint8_t *qh = b + 128 + 32 * n;
                    const int8_t *sc = (const int8_t *)(b + 192 + 8 * n);
                    const int8_t *y = xq + 256 * i + 128 * n;
                    for (int l = 0; l < 32; l++) {
                        const int is = l / 16;
                        const int q1 = (ql[l] & 15) | (((qh[l] >> 0) & 3) << 4);
                        const int q2 = (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4);
                        const int q3 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        const int q4 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                        lane[(l % 32) / 4] += sc[is + 0] * q1 * y[l] + sc[is + 2] * q2 * y[l + 32] +
                                              sc[is + 4] * q3 * y[l + 64] + sc[is + 6] * q4 * y[l + 96];
                    }
                }
                const int8_t *sc = (const int8_t *)(b + 192);
                const int16_t *bs = xbs + 16 * i;
                for (int k = 0; k < 8; k++)
                    lane[k] -= 32 * (sc[2 * k] * bs[2 * k] + sc[2 * k + 1] * bs[2 * k + 1]);
                if (a->ggml_tiled) {
                    /* ggml_compute_forward_mul_mat_tiled: whole-superblock integer,
                     * y = fma(d_x, d_w * (float)S, y) per superblock */
                    int S = 0;
                    for (int k = 0; k < 8; k++) S += lane[k];
                    acc[0] = fmaf(xd[i], h2f(b + 208) * (float)S, acc[0]);
                    continue;
                }
                const float d = h2f(b + 208) * xd[i];
                for (int k = 0; k < 8; k++) acc[k] = fmaf(d, (float)lane[k], acc[k]);
            }
            a->y[t * a->rows + r] = a->ggml_tiled ? acc[0] : hsum8(acc);
        }
    }
}

static void k_scalar_f16(const ts_mm_args *a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + (size_t)r * a->row_stride;
        for (int64_t t = 0; t < a->n_tok; t++) {
            const uint16_t *xh = (const uint16_t *)XQ(a, t);
            float sum = 0.0f;
            for (int64_t k = 0; k < a->cols; k++) {
                const float p = h2f(w + 2 * k) * ts_fp16_to_fp32(xh[k]);
                sum += p;
            }
            a->y[t * a->rows + r] = sum;
        }
    }
}

static void k_scalar_bf16(const ts_mm_args *a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + (size_t)r * a->row_stride;
        for (int64_t t = 0; t < a->n_tok; t++) {
            const float *x = (const float *)XQ(a, t);
            float sum = 0.0f;
            for (int64_t k = 0; k < a->cols; k++) {
                const float p = ts_bf16_to_fp32(rd16(w + 2 * k)) * x[k];
                sum += p;
            }
            a->y[t * a->rows + r] = sum;
        }
    }
}

static void k_scalar_f32(const ts_mm_args *a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + (size_t)r * a->row_stride;
        for (int64_t t = 0; t < a->n_tok; t++) {
            const float *x = (const float *)XQ(a, t);
            float sum = 0.0f;
            for (int64_t k = 0; k < a->cols; k++) {
                float wv;
                memcpy(&wv, w + 4 * k, 4);
                const float p = wv * x[k];
                sum += p;
            }
            a->y[t * a->rows + r] = sum;
        }
    }
}

static ts_mm_kernel kernel_scalar(uint32_t type) {
    switch (type) {
    case TS_TYPE_Q4_0: return k_scalar_q4_0;
    case TS_TYPE_Q4_1: return k_scalar_q4_1;
    case TS_TYPE_Q5_0: return k_scalar_q5_0;
    case TS_TYPE_Q5_1: return k_scalar_q5_1;
    case TS_TYPE_Q8_0: return k_scalar_q8_0;
    case TS_TYPE_Q4_K: return k_scalar_q4_K;
    case TS_TYPE_Q5_K: return k_scalar_q5_K;
    case TS_TYPE_Q6_K: return k_scalar_q6_K;
    case TS_TYPE_F16: return k_scalar_f16;
    case TS_TYPE_BF16: return k_scalar_bf16;
    case TS_TYPE_F32: return k_scalar_f32;
    default: return NULL;
    }
}

static ts_mm_kernel pick_kernel(uint32_t type) {
    ts_mm_kernel k = NULL;
    const int i = isa();
#if defined(__x86_64__)
    if (i >= ISA_AVX512) k = ts_mm_kernel_avx512(type);
    if (!k && i >= ISA_AVX2) k = ts_mm_kernel_avx2(type);
#else
    (void)i;
#endif
    return k ? k : kernel_scalar(type);
}

/* ---- driver ---- */

typedef struct {
    ts_mm_args a;
    ts_mm_kernel kern;
    act_kind act;
    const float *x;
    uint8_t *xq; /* writable view of a.xq */
} mm_job;

static void prep_task(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    const int64_t t0 = j->a.n_tok * ith / nth, t1 = j->a.n_tok * (ith + 1) / nth;
    for (int64_t t = t0; t < t1; t++)
        prep_token(j->act, j->x + t * j->a.cols, j->a.cols, j->xq + (size_t)t * j->a.xq_stride);
}

static void mm_task(void *ctx, int ith, int nth) {
    const mm_job *j = ctx;
    const int64_t rows = j->a.rows;
    /* Contiguous row ranges, rounded to multiples of 4 rows so neighbouring threads do
     * not write the same cache line of y more than needed. */
    int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
    if (nth > 1) {
        r0 = ith == 0 ? 0 : (r0 + 3) & ~(int64_t)3;
        r1 = ith == nth - 1 ? rows : (r1 + 3) & ~(int64_t)3;
        if (r0 > rows) r0 = rows;
        if (r1 > rows) r1 = rows;
    }
    if (r1 > r0) j->kern(&j->a, r0, r1);
}

ts_status ts_matmul(ts_threadpool *tp, uint32_t type, const void *w, size_t row_stride,
                    int64_t rows, int64_t cols, const float *x, int64_t n_tok, float *y,
                    void *scratch) {
    return ts_matmul_ex(tp, type, w, row_stride, rows, cols, x, n_tok, y, scratch, 0);
}

ts_status ts_matmul_ex(ts_threadpool *tp, uint32_t type, const void *w, size_t row_stride,
                       int64_t rows, int64_t cols, const float *x, int64_t n_tok, float *y,
                       void *scratch, unsigned flags) {
    if (!type_supported(type))
        return TS_FAIL(TS_UNSUPPORTED, "matmul: type %u (%s)", type,
                       ts_type_name(type) ? ts_type_name(type) : "?");
    if (rows < 0 || cols < 0 || n_tok < 0)
        return TS_FAIL(TS_INVAL, "matmul: negative shape");
    const int64_t qk = ts_type_block_elems(type);
    if (cols % qk != 0)
        return TS_FAIL(TS_INVAL, "matmul: cols %lld not a multiple of %lld", (long long)cols,
                       (long long)qk);
    if (rows == 0 || n_tok == 0) return TS_OK;
    if (cols == 0) {
        memset(y, 0, (size_t)rows * (size_t)n_tok * sizeof *y);
        return TS_OK;
    }
    const act_kind act = act_of(type);
    mm_job j;
    memset(&j, 0, sizeof j);
    j.a.w = w;
    j.a.row_stride = row_stride;
    j.a.rows = rows;
    j.a.cols = cols;
    j.a.n_tok = n_tok;
    j.a.y = y;
    /* ggml-cpu (the llama-cpp-python 0.3.36 build) sends MUL_MAT with >= 8 src1 rows and a
     * non-repacked K-quant src0 to ggml_compute_forward_mul_mat_tiled (GGML_CPU_TILED_MM,
     * default on): per 256-superblock the exact integer S = sum sc * (q - 32) * q_x, then
     * y = fma(d_x, d_w * (float)S, y), superblocks in order. On x86 AVX2 that concerns
     * Q6_K (Q4_K is repacked, q4_K_8x8). Fewer rows: ggml_vec_dot_q6_K_q8_K. */
    j.a.ggml_tiled = (flags & TS_MM_LLAMACPP_BATCH) && type == TS_TYPE_Q6_K && n_tok >= 8;
    j.a.llamacpp_batch = (flags & TS_MM_LLAMACPP_BATCH) != 0;
    j.act = act;
    j.x = x;
    j.kern = pick_kernel(type);
    if (act == ACT_NONE) {
        j.a.xq = (const uint8_t *)x;
        j.a.xq_stride = (size_t)cols * sizeof(float);
    } else {
        if (!scratch) return TS_FAIL(TS_INVAL, "matmul: scratch is NULL");
        uint8_t *s = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
        j.xq = s;
        j.a.xq = s;
        j.a.xq_stride = act_stride(act, cols);
        if (n_tok >= 2 && ts_threadpool_size(tp) > 1)
            ts_threadpool_run(tp, prep_task, &j);
        else
            prep_task(&j, 0, 1);
    }
    ts_threadpool_run(tp, mm_task, &j);
    return TS_OK;
}
