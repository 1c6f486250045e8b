/* quant.h: ggml/GGUF tensor element types and their block layouts (bit-exact).
 *
 * Shared by the C reference kernels and the CUDA kernels (plain C, no CUDA dependency).
 * Byte layouts follow ggml-common.h; ../shared/docs/gemma3-spec.md section 4 describes
 * each. All multi-byte fields are little-endian; `uint16_t d` fields hold IEEE fp16 bits.
 * Blocks are laid out one after another along a row (ne[0]).
 */
#ifndef TS_QUANT_H
#define TS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* GGML type ids as stored in GGUF tensor infos (values fixed by the format). */
typedef enum {
    TS_TYPE_F32 = 0,
    TS_TYPE_F16 = 1,
    TS_TYPE_Q4_0 = 2,
    TS_TYPE_Q4_1 = 3,
    TS_TYPE_Q5_0 = 6,
    TS_TYPE_Q5_1 = 7,
    TS_TYPE_Q8_0 = 8,
    TS_TYPE_Q8_1 = 9,
    TS_TYPE_Q2_K = 10,
    TS_TYPE_Q3_K = 11,
    TS_TYPE_Q4_K = 12,
    TS_TYPE_Q5_K = 13,
    TS_TYPE_Q6_K = 14,
    TS_TYPE_Q8_K = 15,
    TS_TYPE_IQ2_XXS = 16,
    TS_TYPE_IQ2_XS = 17,
    TS_TYPE_IQ3_XXS = 18,
    TS_TYPE_IQ1_S = 19,
    TS_TYPE_IQ4_NL = 20,
    TS_TYPE_IQ3_S = 21,
    TS_TYPE_IQ2_S = 22,
    TS_TYPE_IQ4_XS = 23,
    TS_TYPE_I8 = 24,
    TS_TYPE_I16 = 25,
    TS_TYPE_I32 = 26,
    TS_TYPE_I64 = 27,
    TS_TYPE_F64 = 28,
    TS_TYPE_IQ1_M = 29,
    TS_TYPE_BF16 = 30,
    TS_TYPE_TQ1_0 = 34,
    TS_TYPE_TQ2_0 = 35,
    TS_TYPE_MXFP4 = 39,
    TS_TYPE_COUNT_ = 40 /* one past the largest id known here */
} ts_type;

/* Name ("Q4_0"), or NULL for an id that is not a known type. */
const char *ts_type_name(uint32_t type);
/* Elements per block and bytes per block; 0 for unknown ids. */
uint32_t ts_type_block_elems(uint32_t type);
uint32_t ts_type_block_bytes(uint32_t type);
/* True if ts_dequantize_row supports the type. */
bool ts_type_can_dequantize(uint32_t type);
/* Bytes of a row of n elements; false if n is not a whole number of blocks, the type is
 * unknown or the size overflows. */
bool ts_type_row_bytes(uint32_t type, int64_t n, size_t *out);

#define TS_QK4_0 32
#define TS_QK4_1 32
#define TS_QK5_0 32
#define TS_QK5_1 32
#define TS_QK8_0 32
#define TS_QK_K 256
#define TS_K_SCALE_SIZE 12

/* C11 _Static_assert is not C++: this header is also included from CUDA (.cu). */
#ifdef __cplusplus
#define TS_QUANT_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define TS_QUANT_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

typedef struct {
    uint16_t d;                /* fp16 scale */
    uint8_t qs[TS_QK4_0 / 2]; /* nibbles: low = weight j, high = weight j+16 */
} ts_block_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[TS_QK4_1 / 2];
} ts_block_q4_1;
typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* 5th bits, one little-endian uint32 */
    uint8_t qs[TS_QK5_0 / 2];
} ts_block_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[TS_QK5_1 / 2];
} ts_block_q5_1;
typedef struct {
    uint16_t d;
    int8_t qs[TS_QK8_0];
} ts_block_q8_0;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[TS_K_SCALE_SIZE];
    uint8_t qs[TS_QK_K / 2];
} ts_block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[TS_K_SCALE_SIZE];
    uint8_t qh[TS_QK_K / 8];
    uint8_t qs[TS_QK_K / 2];
} ts_block_q5_K;
typedef struct {
    uint8_t ql[TS_QK_K / 2];
    uint8_t qh[TS_QK_K / 4];
    int8_t scales[TS_QK_K / 16];
    uint16_t d;
} ts_block_q6_K;

TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q4_0) == 18, "q4_0 block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q4_1) == 20, "q4_1 block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q5_0) == 22, "q5_0 block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q5_1) == 24, "q5_1 block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q8_0) == 34, "q8_0 block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q4_K) == 144, "q4_K block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q5_K) == 176, "q5_K block size");
TS_QUANT_STATIC_ASSERT(sizeof(ts_block_q6_K) == 210, "q6_K block size");

/* IEEE half <-> float, exact for every input (subnormals, inf, NaN); float->half rounds
 * to nearest even like ggml's F16C path. */
float ts_fp16_to_fp32(uint16_t h);
uint16_t ts_fp32_to_fp16(float f);
/* bfloat16 = the top 16 bits of a float; float->bf16 rounds to nearest even (NaN kept). */
float ts_bf16_to_fp32(uint16_t h);
uint16_t ts_fp32_to_bf16(float f);

/* Dequantizes n elements (a multiple of the block size) of `type` from src into dst.
 * Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. Returns
 * false (writing nothing) for other types or a bad n. src need not be aligned. */
bool ts_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Reference quantizers, bit-exact with ggml's quantize_row_*_ref. n % 32 == 0.
 * dst receives n/32 blocks. */
void ts_quantize_row_q4_0_ref(const float *src, void *dst, int64_t n);
void ts_quantize_row_q8_0_ref(const float *src, void *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
