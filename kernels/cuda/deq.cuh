/* deq.cuh: value of element j of one GGUF block, per type (device functions shared by
 * the dequantizers (dequant.cu), get_rows and the matmul kernels (matmul.cu)). Same float
 * operations, in the same order, as kernels/cpu/quant_ref.c: bit-exact. */
#ifndef TS_CUDA_DEQ_CUH
#define TS_CUDA_DEQ_CUH

#include "common.cuh"
#include "quant.h"

namespace tsdeq {

/* ---- value of element j of one block, per type ---- */

/* Q4_0: d | qs[16]; weight j < 16 is the low nibble of qs[j], j >= 16 the high nibble
 * of qs[j-16]; (q - 8) * d. */
__device__ __forceinline__ float deq_q4_0(const uint8_t *b, int j) {
    const float d = ts_dev_fp16_to_fp32(ts_dev_rd_u16(b));
    const uint8_t byte = b[2 + (j & 15)];
    const int q = (j < 16 ? (byte & 0x0F) : (byte >> 4)) - 8;
    return __fmul_rn((float)q, d);
}

/* Q5_0: d | qh (u32) | qs[16]; the 5th bit of weight j is bit j of qh; (q - 16) * d. */
__device__ __forceinline__ float deq_q5_0(const uint8_t *b, int j) {
    const float d = ts_dev_fp16_to_fp32(ts_dev_rd_u16(b));
    const uint32_t qh = ts_dev_rd_u32(b + 2);
    const uint8_t byte = b[6 + (j & 15)];
    const int lo = j < 16 ? (byte & 0x0F) : (byte >> 4);
    const int q = (lo | (int)(((qh >> j) & 1u) << 4)) - 16;
    return __fmul_rn((float)q, d);
}

/* Q8_0: d | qs[32] int8; q * d. */
__device__ __forceinline__ float deq_q8_0(const uint8_t *b, int j) {
    const float d = ts_dev_fp16_to_fp32(ts_dev_rd_u16(b));
    return __fmul_rn((float)(int8_t)b[2 + j], d);
}

/* 6-bit scale and min of sub-block s (0..7) of Q4_K/Q5_K (ggml get_scale_min_k4). */
__device__ __forceinline__ void scale_min_k4(int s, const uint8_t *q, int *sc, int *m) {
    if (s < 4) {
        *sc = q[s] & 63;
        *m = q[s + 4] & 63;
    } else {
        *sc = (q[s + 4] & 0xF) | ((q[s - 4] >> 6) << 4);
        *m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
    }
}

/* Q4_K: d | dmin | scales[12] | qs[128]. Weight j: group g = j / 64 uses bytes
 * qs[32g .. 32g+31]; the first 32 take low nibbles (sub-block 2g), the next 32 high
 * nibbles (sub-block 2g+1). Value (d*sc)*q - (dmin*m). */
__device__ __forceinline__ float deq_q4_K(const uint8_t *b, int j) {
    const float d = ts_dev_fp16_to_fp32(ts_dev_rd_u16(b));
    const float dmin = ts_dev_fp16_to_fp32(ts_dev_rd_u16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *qs = b + 4 + TS_K_SCALE_SIZE;
    const int g = j >> 6, hi = (j >> 5) & 1, l = j & 31;
    int sc, m;
    scale_min_k4(2 * g + hi, scales, &sc, &m);
    const uint8_t byte = qs[32 * g + l];
    const int q = hi ? (byte >> 4) : (byte & 0xF);
    const float d1 = __fmul_rn(d, (float)sc);
    const float m1 = __fmul_rn(dmin, (float)m);
    return __fsub_rn(__fmul_rn(d1, (float)q), m1);
}

/* Q6_K: ql[128] | qh[64] | scales[16] int8 | d. Half h = j / 128 uses ql[64h..],
 * qh[32h..], scales[8h..]; within it, k = (j % 128) / 32 and l = j % 32 select the
 * nibble ql[l + 32 (k & 1)] (low for k < 2, high otherwise), the 2 bits (qh[l] >> 2k) & 3
 * and scale l / 16 + 2k. Value (d*scale)*(q - 32). */
__device__ __forceinline__ float deq_q6_K(const uint8_t *b, int j) {
    const uint8_t *ql = b;
    const uint8_t *qh = b + TS_QK_K / 2;
    const int8_t *sc = (const int8_t *)(b + TS_QK_K / 2 + TS_QK_K / 4);
    const float d = ts_dev_fp16_to_fp32(ts_dev_rd_u16(b + TS_QK_K / 2 + TS_QK_K / 4 + 16));
    const int h = j >> 7, k = (j >> 5) & 3, l = j & 31;
    ql += 64 * h;
    qh += 32 * h;
    sc += 8 * h;
    const uint8_t lbyte = ql[l + 32 * (k & 1)];
    const int lo = (k < 2) ? (lbyte & 0xF) : (lbyte >> 4);
    const int q = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
    return __fmul_rn(__fmul_rn(d, (float)sc[l / 16 + 2 * k]), (float)q);
}

__device__ __forceinline__ float deq_f16(const uint8_t *b, int) {
    return ts_dev_fp16_to_fp32(ts_dev_rd_u16(b));
}

__device__ __forceinline__ float deq_bf16(const uint8_t *b, int) {
    return ts_dev_bf16_to_fp32(ts_dev_rd_u16(b));
}

} // namespace tsdeq

#endif
