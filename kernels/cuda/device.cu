/* device.cu: CUDA device discovery. */
#include "common.cuh"
#include "kernels_cuda.h"

extern "C" ts_status ts_cuda_device_count(int *n) {
    if (!n) return TS_FAIL(TS_INVAL, "n is NULL");
    *n = 0;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
        /* No GPU or no driver: zero devices, not a failure. Clear the error state. */
        (void)cudaGetLastError();
        TS_LOG_DEBUG("no CUDA device: %s", cudaGetErrorName(err));
        return TS_OK;
    }
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return TS_FAIL(TS_CUDA, "cudaGetDeviceCount: %s (%s)", cudaGetErrorName(err),
                       cudaGetErrorString(err));
    }
    *n = count;
    return TS_OK;
}
