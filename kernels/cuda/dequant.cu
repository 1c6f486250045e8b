/* dequant.cu: dequantization kernels (GGUF block formats -> float32).
 *
 * One thread per output element, grid-stride: thread i finds its block (i / qk) and its
 * position j in the block, reads the bytes it needs and computes the value with the same
 * float operations, in the same order, as the reference in kernels/cpu/quant_ref.c
 * (= ggml's dequantize_row_*). Products and differences use __fmul_rn/__fsub_rn so that
 * nvcc cannot contract them into FMAs (harmless here, since the products are exact, see
 * quant_ref.c, but it keeps the kernels bit-exact by construction); the result is
 * bit-exact with the CPU reference (tests/gpu/test_cuda_dequant.c). Block fields are read
 * byte by byte, so src needs no alignment. Block layouts: kernels/quant.h and
 * ../shared/docs/gemma3-spec.md section 4.
 */
#include "common.cuh"
#include "kernels_cuda.h"
#include "quant.h"
#include "deq.cuh"

namespace {

using namespace tsdeq;

/* ---- one kernel per type ---- */

template <int QK, int BLOCK_BYTES, float (*F)(const uint8_t *, int)>
__global__ void k_dequantize(const uint8_t *__restrict__ src, float *__restrict__ dst,
                             int64_t n) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t blk = i / QK;
        const int j = (int)(i - blk * QK);
        dst[i] = F(src + blk * BLOCK_BYTES, j);
    }
}

template <int QK, int BLOCK_BYTES, float (*F)(const uint8_t *, int)>
cudaError_t launch(const void *src, float *dst, int64_t n, cudaStream_t stream) {
    const int threads = 256;
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks > (1 << 20)) blocks = 1 << 20; /* grid-stride beyond ~268M elements */
    k_dequantize<QK, BLOCK_BYTES, F>
        <<<(unsigned)blocks, threads, 0, stream>>>((const uint8_t *)src, dst, n);
    return cudaGetLastError(); /* also clears the launch error state */
}

/* Elements per block of the supported types, 0 for others (kept here rather than calling
 * kernels/cpu/types.c so that ts_kernels_cuda depends on ts_base only). */
int64_t block_elems(uint32_t type, const char **name) {
    switch (type) {
    case TS_TYPE_Q4_0: *name = "Q4_0"; return TS_QK4_0;
    case TS_TYPE_Q5_0: *name = "Q5_0"; return TS_QK5_0;
    case TS_TYPE_Q8_0: *name = "Q8_0"; return TS_QK8_0;
    case TS_TYPE_Q4_K: *name = "Q4_K"; return TS_QK_K;
    case TS_TYPE_Q6_K: *name = "Q6_K"; return TS_QK_K;
    case TS_TYPE_F16: *name = "F16"; return 1;
    case TS_TYPE_BF16: *name = "BF16"; return 1;
    default: *name = "?"; return 0;
    }
}

} // namespace

extern "C" int ts_k_dequantize_cuda_supports(uint32_t type) {
    const char *name;
    return block_elems(type, &name) != 0;
}

extern "C" ts_status ts_k_dequantize_cuda(uint32_t type, const void *src, float *dst,
                                          int64_t n, cudaStream_t stream) {
    const char *name;
    const int64_t qk = block_elems(type, &name);
    if (qk == 0) return TS_FAIL(TS_UNSUPPORTED, "no CUDA dequantizer for type %u", type);
    if (n < 0 || n % qk != 0)
        return TS_FAIL(TS_INVAL, "%s: n = %lld is not a whole number of %lld-element blocks",
                       name, (long long)n, (long long)qk);
    if (n == 0) return TS_OK;
    if (!src || !dst) return TS_FAIL(TS_INVAL, "NULL src or dst");

    cudaError_t err;
    switch (type) {
    case TS_TYPE_Q4_0:
        err = launch<TS_QK4_0, sizeof(ts_block_q4_0), deq_q4_0>(src, dst, n, stream);
        break;
    case TS_TYPE_Q5_0:
        err = launch<TS_QK5_0, sizeof(ts_block_q5_0), deq_q5_0>(src, dst, n, stream);
        break;
    case TS_TYPE_Q8_0:
        err = launch<TS_QK8_0, sizeof(ts_block_q8_0), deq_q8_0>(src, dst, n, stream);
        break;
    case TS_TYPE_Q4_K:
        err = launch<TS_QK_K, sizeof(ts_block_q4_K), deq_q4_K>(src, dst, n, stream);
        break;
    case TS_TYPE_Q6_K:
        err = launch<TS_QK_K, sizeof(ts_block_q6_K), deq_q6_K>(src, dst, n, stream);
        break;
    case TS_TYPE_F16:
        err = launch<1, 2, deq_f16>(src, dst, n, stream);
        break;
    case TS_TYPE_BF16:
        err = launch<1, 2, deq_bf16>(src, dst, n, stream);
        break;
    default: return TS_FAIL(TS_INTERNAL, "unreachable type %u", type);
    }
    if (err != cudaSuccess)
        return TS_FAIL(TS_CUDA, "%s dequantize kernel launch (n = %lld): %s (%s)", name,
                       (long long)n, cudaGetErrorName(err), cudaGetErrorString(err));
    return TS_OK;
}
