/* kernels_cuda.h: CUDA kernel launchers with C linkage (library ts_kernels_cuda).
 *
 * Every launcher takes device pointers and a stream, checks its arguments, enqueues the
 * work and returns without synchronizing; a launch failure comes back as TS_CUDA with the
 * CUDA error in ts_last_error(). Results are bit-exact with the reference kernels in
 * kernels/cpu (quant.h): tests/gpu/test_cuda_dequant.c checks that on a GPU.
 */
#ifndef TS_KERNELS_CUDA_H
#define TS_KERNELS_CUDA_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices. No driver (cudaErrorInsufficientDriver) or no device
 * (cudaErrorNoDevice) is not an error: *n = 0 and TS_OK. Other failures: TS_CUDA. */
ts_status ts_cuda_device_count(int *n);

/* Dequantizes n elements (a whole number of blocks) of `type` (a ts_type id) from device
 * memory src to device memory dst, on `stream`. Launch only, no synchronization.
 * Supported: Q4_0, Q8_0, Q5_0, Q4_K, Q6_K, F16, BF16 (TS_UNSUPPORTED otherwise).
 * TS_INVAL for NULL pointers (when n > 0), n < 0 or n not a multiple of the block size.
 * src needs no particular alignment (block fields are read byte by byte). n == 0: TS_OK,
 * nothing launched. */
ts_status ts_k_dequantize_cuda(uint32_t type, const void *src, float *dst, int64_t n,
                               cudaStream_t stream);

/* True if ts_k_dequantize_cuda supports `type`. */
int ts_k_dequantize_cuda_supports(uint32_t type);

#ifdef __cplusplus
}
#endif
#endif
