/* quant_ref.c: scalar reference conversions, dequantizers and quantizers (quant.h).
 *
 * These define the semantics every other kernel (CUDA, SIMD) is tested against. Each
 * dequantizer follows ggml's dequantize_row_* in ggml-quants.c expression for
 * expression, including the order of the float operations, so results are bit-exact
 * with ggml and with the `gguf` Python package (tests/tools/make_quant_fixtures.py).
 *
 * Notes on exactness:
 *   - Float expressions keep ggml's order (e.g. Q6_K is (d * scale) * q). For these
 *     formats every intermediate product is exact in float32 (an fp16 scale has 11
 *     significant bits, the integer factors at most 8, 6 and 6), so each value is
 *     rounded once at most: the final product, or the final add/subtract of the min. Hence
 *     the order of the products and FMA contraction cannot change the result; the CUDA
 *     kernels still use __fmul_rn/__fsub_rn to keep that obvious.
 *   - Block fields are read with memcpy (or byte by byte) so `src` may be unaligned and
 *     no strict-aliasing rules are broken. Multi-byte fields are little-endian; like
 *     ggml we assume a little-endian host (checked below).
 */
#include <math.h>
#include <string.h>

#include "quant.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "quant_ref.c assumes a little-endian host (GGUF data is little-endian)"
#endif

/* ---- bit casts ---- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Little-endian u16 at an unaligned address. */
static inline uint16_t rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* ---- IEEE half <-> float ---- */

float ts_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0x1F) {
        /* inf (mant == 0) or NaN: keep the payload in the top mantissa bits and quiet a
         * signalling NaN (as F16C's vcvtph2ps and gcc's _Float16 conversion do). */
        bits = sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign; /* +-0 */
        } else {
            /* Subnormal: value = mant * 2^-24. Normalize so bit 10 is the implicit 1;
             * the float exponent starts at that of 2^-14 (127 - 14 = 113) and drops
             * by one per shift. */
            uint32_t e = 113;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                e--;
            }
            bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
        }
    } else {
        /* Normal: rebias the exponent from 15 to 127. */
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    return f32_from_bits(bits);
}

uint16_t ts_fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;

    if (ax > 0x7F800000u) {
        /* NaN: quiet it and keep the top 9 payload bits (what F16C's vcvtps2ph does). */
        return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
    }
    if (ax >= 0x477FF000u) {
        /* >= 65520 (halfway between 65504, the largest half, and 65536) rounds to inf
         * under round-to-nearest-even (65504's mantissa is odd); includes inf itself. */
        return (uint16_t)(sign | 0x7C00u);
    }
    const uint32_t e = ax >> 23; /* biased float exponent */
    if (e < 113) {
        /* |f| < 2^-14: the result is a half subnormal (or zero) = round(|f| / 2^-24).
         * |f| = m * 2^(e - 150) with the implicit bit, so the quotient is m >> (126 - e). */
        if (e < 102) return sign; /* |f| < 2^-25: rounds to 0 */
        const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++; /* may carry into 0x400: fine */
        return (uint16_t)(sign | r);
    }
    /* Normal half: rebias, keep the top 10 mantissa bits, round the 13 dropped bits to
     * nearest even. A carry out of the mantissa correctly bumps the exponent. */
    uint32_t h = ((e - 112) << 10) | ((ax >> 13) & 0x3FFu);
    const uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* ---- bfloat16 <-> float ---- */

float ts_bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t ts_fp32_to_bf16(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((x >> 16) | 64); /* NaN: truncate and force quiet (as ggml) */
    }
    /* Round to nearest even on the low 16 bits (ggml_compute_fp32_to_bf16). Overflow
     * carries into the exponent and yields inf, as it should. */
    return (uint16_t)((x + (0x7FFFu + ((x >> 16) & 1))) >> 16);
}

/* ---- dequantizers, one block at a time ---- */

/* F32/F16/BF16 are "blocks" of one element. */
static void deq_f32(const uint8_t *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void deq_f16(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ts_fp16_to_fp32(rd_u16(src + 2 * i));
}

static void deq_bf16(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ts_bf16_to_fp32(rd_u16(src + 2 * i));
}

/* Q4_0: d | qs[16]; low nibble of qs[j] -> weight j, high -> weight j+16; (q-8)*d. */
static void deq_q4_0(const uint8_t *b, float *y) {
    ts_block_q4_0 x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    for (int j = 0; j < TS_QK4_0 / 2; j++) {
        const int x0 = (x.qs[j] & 0x0F) - 8;
        const int x1 = (x.qs[j] >> 4) - 8;
        y[j] = (float)x0 * d;
        y[j + TS_QK4_0 / 2] = (float)x1 * d;
    }
}

/* Q4_1: d | m | qs[16]; q*d + m. */
static void deq_q4_1(const uint8_t *b, float *y) {
    ts_block_q4_1 x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    const float m = ts_fp16_to_fp32(x.m);
    for (int j = 0; j < TS_QK4_1 / 2; j++) {
        const int x0 = x.qs[j] & 0x0F;
        const int x1 = x.qs[j] >> 4;
        y[j] = (float)x0 * d + m;
        y[j + TS_QK4_1 / 2] = (float)x1 * d + m;
    }
}

/* Q5_0: d | qh (u32) | qs[16]; bit j of qh is the 5th bit of weight j; (q-16)*d. */
static void deq_q5_0(const uint8_t *b, float *y) {
    ts_block_q5_0 x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    const uint32_t qh = rd_u32(x.qh);
    for (int j = 0; j < TS_QK5_0 / 2; j++) {
        const uint8_t xh0 = (uint8_t)(((qh >> j) << 4) & 0x10);
        const uint8_t xh1 = (uint8_t)((qh >> (j + 12)) & 0x10); /* bit j+16, moved to bit 4 */
        const int x0 = ((x.qs[j] & 0x0F) | xh0) - 16;
        const int x1 = ((x.qs[j] >> 4) | xh1) - 16;
        y[j] = (float)x0 * d;
        y[j + TS_QK5_0 / 2] = (float)x1 * d;
    }
}

/* Q5_1: d | m | qh | qs[16]; q*d + m (q = 0..31). */
static void deq_q5_1(const uint8_t *b, float *y) {
    ts_block_q5_1 x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    const float m = ts_fp16_to_fp32(x.m);
    const uint32_t qh = rd_u32(x.qh);
    for (int j = 0; j < TS_QK5_1 / 2; j++) {
        const uint8_t xh0 = (uint8_t)(((qh >> j) << 4) & 0x10);
        const uint8_t xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
        const int x0 = (x.qs[j] & 0x0F) | xh0;
        const int x1 = (x.qs[j] >> 4) | xh1;
        y[j] = (float)x0 * d + m;
        y[j + TS_QK5_1 / 2] = (float)x1 * d + m;
    }
}

/* Q8_0: d | qs[32] int8; q*d. */
static void deq_q8_0(const uint8_t *b, float *y) {
    ts_block_q8_0 x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    for (int j = 0; j < TS_QK8_0; j++) y[j] = (float)x.qs[j] * d;
}

/* 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K/Q5_K
 * (ggml get_scale_min_k4): sub-blocks 0..3 use the low 6 bits of bytes 0..3 (scales)
 * and 4..7 (mins); 4..7 put their low 4 bits in bytes 8..11 and their top 2 bits in the
 * top bits of bytes 0..7. */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K: 8 sub-blocks of 32; groups of 64 weights share 32 qs bytes (low nibble: first
 * sub-block, high nibble: second). Value = (d*sc)*q - (dmin*m). */
static void deq_q4_K(const uint8_t *b, float *y) {
    ts_block_q4_K x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    const float min = ts_fp16_to_fp32(x.dmin);
    const uint8_t *q = x.qs;
    int is = 0;
    for (int j = 0; j < TS_QK_K; j += 64) {
        uint8_t sc, m;
        scale_min_k4(is + 0, x.scales, &sc, &m);
        const float d1 = d * (float)sc, m1 = min * (float)m;
        scale_min_k4(is + 1, x.scales, &sc, &m);
        const float d2 = d * (float)sc, m2 = min * (float)m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

/* Q5_K: as Q4_K plus a 5th bit from qh: group g uses bit 2g (low half) and 2g+1 (high
 * half) of qh[l]. */
static void deq_q5_K(const uint8_t *b, float *y) {
    ts_block_q5_K x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    const float min = ts_fp16_to_fp32(x.dmin);
    const uint8_t *ql = x.qs;
    const uint8_t *qh = x.qh;
    int is = 0;
    unsigned u1 = 1, u2 = 2;
    for (int j = 0; j < TS_QK_K; j += 64) {
        uint8_t sc, m;
        scale_min_k4(is + 0, x.scales, &sc, &m);
        const float d1 = d * (float)sc, m1 = min * (float)m;
        scale_min_k4(is + 1, x.scales, &sc, &m);
        const float d2 = d * (float)sc, m2 = min * (float)m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
    }
}

/* Q6_K: ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] int8 | d. Two halves of
 * 128 weights; within a half, weight l + 32k (k = 0..3) takes the nibble and 2-bit pair
 * listed below; value = (d*scale)*(q-32) with 16 weights per scale. */
static void deq_q6_K(const uint8_t *b, float *y) {
    ts_block_q6_K x;
    memcpy(&x, b, sizeof x);
    const float d = ts_fp16_to_fp32(x.d);
    const uint8_t *ql = x.ql;
    const uint8_t *qh = x.qh;
    const int8_t *sc = x.scales;
    for (int n = 0; n < TS_QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l + 0] = d * (float)sc[is + 0] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

typedef void (*deq_block_fn)(const uint8_t *block, float *dst);

bool ts_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n) {
    if (!ts_type_can_dequantize(type) || n < 0) return false;
    const int64_t qk = ts_type_block_elems(type);
    const size_t bs = ts_type_block_bytes(type);
    if (qk <= 0 || n % qk != 0) return false;
    size_t nbytes;
    if (!ts_type_row_bytes(type, n, &nbytes)) return false; /* size overflow */
    if (n == 0) return true;
    if (!src || !dst) return false;
    const uint8_t *s = src;

    deq_block_fn fn = NULL;
    switch (type) {
    case TS_TYPE_F32: deq_f32(s, dst, n); return true;
    case TS_TYPE_F16: deq_f16(s, dst, n); return true;
    case TS_TYPE_BF16: deq_bf16(s, dst, n); return true;
    case TS_TYPE_Q4_0: fn = deq_q4_0; break;
    case TS_TYPE_Q4_1: fn = deq_q4_1; break;
    case TS_TYPE_Q5_0: fn = deq_q5_0; break;
    case TS_TYPE_Q5_1: fn = deq_q5_1; break;
    case TS_TYPE_Q8_0: fn = deq_q8_0; break;
    case TS_TYPE_Q4_K: fn = deq_q4_K; break;
    case TS_TYPE_Q5_K: fn = deq_q5_K; break;
    case TS_TYPE_Q6_K: fn = deq_q6_K; break;
    default: return false;
    }
    const int64_t nb = n / qk;
    for (int64_t i = 0; i < nb; i++) fn(s + (size_t)i * bs, dst + i * qk);
    return true;
}

/* ---- reference quantizers (ggml quantize_row_*_ref) ---- */

/* Q4_0: d = (the signed value of largest magnitude, first one on ties) / -8, so that
 * value maps to q = 0 (-8) exactly; q = min(15, trunc(x/d + 8.5)). */
void ts_quantize_row_q4_0_ref(const float *x, void *dst, int64_t n) {
    const int qk = TS_QK4_0;
    const int64_t nb = n / qk;
    uint8_t *out = dst;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f; /* absolute max */
        float max = 0.0f;
        for (int j = 0; j < qk; j++) {
            const float v = x[i * qk + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        ts_block_q4_0 y;
        y.d = ts_fp32_to_fp16(d);
        for (int j = 0; j < qk / 2; j++) {
            const float x0 = x[i * qk + 0 + j] * id;
            const float x1 = x[i * qk + qk / 2 + j] * id;
            int8_t xi0 = (int8_t)(x0 + 8.5f);
            int8_t xi1 = (int8_t)(x1 + 8.5f);
            if (xi0 > 15) xi0 = 15;
            if (xi1 > 15) xi1 = 15;
            y.qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
        memcpy(out + (size_t)i * sizeof y, &y, sizeof y);
    }
}

/* Q8_0: d = amax / 127; q = roundf(x/d) (halves away from zero). */
void ts_quantize_row_q8_0_ref(const float *x, void *dst, int64_t n) {
    const int qk = TS_QK8_0;
    const int64_t nb = n / qk;
    uint8_t *out = dst;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f;
        for (int j = 0; j < qk; j++) {
            const float v = fabsf(x[i * qk + j]);
            if (v > amax) amax = v;
        }
        const float d = amax / ((1 << 7) - 1);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        ts_block_q8_0 y;
        y.d = ts_fp32_to_fp16(d);
        for (int j = 0; j < qk; j++) y.qs[j] = (int8_t)roundf(x[i * qk + j] * id);
        memcpy(out + (size_t)i * sizeof y, &y, sizeof y);
    }
}
