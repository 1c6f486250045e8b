/* common.cuh: helpers shared by the CUDA kernels (device code and host-side error
 * handling). Included from .cu files only. */
#ifndef TS_CUDA_COMMON_CUH
#define TS_CUDA_COMMON_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#include "kernels_cuda.h" /* TS_CUDA_TRY */
#include "status.h"

/* The launch status of the kernel just enqueued (cudaGetLastError): TS_CUDA naming `what`
 * and the error, else TS_OK. */
static inline ts_status ts_cu_launched(const char *what) {
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return TS_FAIL(TS_CUDA, "%s launch: %s (%s)", what, cudaGetErrorName(err),
                       cudaGetErrorString(err));
    return TS_OK;
}

/* Blocks of `threads` for a grid-stride loop over n elements: at least 1, at most 2^20. */
static inline unsigned ts_cu_grid(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)(b > 0 ? b : 1);
}

/* Little-endian u16 at any address (byte loads: block fields are not always aligned). */
static __device__ __forceinline__ uint16_t ts_dev_rd_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static __device__ __forceinline__ uint32_t ts_dev_rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* IEEE half bits -> float, by integer arithmetic so the result is bit-identical to
 * ts_fp16_to_fp32 (kernels/cpu/quant_ref.c) for every input, NaNs included: a NaN keeps
 * its payload and is quieted. */
static __device__ __forceinline__ float ts_dev_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0u);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* Subnormal: shift the leading 1 up to bit 10 (clz of a 32-bit value whose
             * top set bit is p is 31 - p, and we need 10 - p shifts). */
            const uint32_t sh = (uint32_t)__clz((int)mant) - 21u;
            mant <<= sh;
            bits = sign | ((113u - sh) << 23) | ((mant & 0x3FFu) << 13);
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    return __uint_as_float(bits);
}

static __device__ __forceinline__ float ts_dev_bf16_to_fp32(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}

#endif
