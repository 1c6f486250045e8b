/* test_cuda_dequant.c: the CUDA dequantizers (kernels_cuda.h) against the reference
 * ts_dequantize_row (kernels/cpu), bit for bit.
 *
 * For each supported type and several sizes (1 block, odd block counts, ~1M elements) it
 * generates fresh random blocks (random bytes; the fp16 scale fields are set to random
 * finite halves, subnormals included, so no NaN arithmetic is involved; F16/BF16 data is
 * fully random bits, NaNs included, since those are decoded without arithmetic), runs
 * the kernel on a stream, and compares every float's bits. Also an odd (unaligned)
 * source address and the argument checks. The seed comes from the clock and is printed;
 * set TESSERA_TEST_SEED to replay a run.
 *
 * Exits 77 (skipped) when there is no GPU or driver; prints "N passed, N failed" and
 * exits 1 on any mismatch. Label `gpu`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "kernels_cuda.h"
#include "quant.h"
#include "test_rand.h"

#define EXIT_SKIP 77


/* A random finite half (any sign, exponent 0..30, so subnormals and zeros too). */
static uint16_t rnd_finite_f16(void) {
    uint16_t h;
    do h = (uint16_t)rnd64();
    while ((h & 0x7C00) == 0x7C00);
    return h;
}

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Fills nb blocks of `type` with random bytes, then finite fp16 scale fields. */
static void fill_blocks(uint32_t type, uint8_t *buf, int64_t nb) {
    const size_t bs = ts_type_block_bytes(type);
    for (size_t i = 0; i < (size_t)nb * bs; i++) buf[i] = (uint8_t)rnd64();
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = buf + (size_t)b * bs;
        switch (type) {
        case TS_TYPE_Q4_0: case TS_TYPE_Q5_0: case TS_TYPE_Q8_0:
            put_u16(blk, rnd_finite_f16());
            break;
        case TS_TYPE_Q4_K:
            put_u16(blk, rnd_finite_f16());
            put_u16(blk + 2, rnd_finite_f16());
            break;
        case TS_TYPE_Q6_K:
            put_u16(blk + offsetof(ts_block_q6_K, d), rnd_finite_f16());
            break;
        default: /* F16, BF16: every bit pattern */
            break;
        }
    }
}

static int g_passed, g_failed;

#define CU_CHECK(call)                                                                     \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                  \
                    cudaGetErrorString(e_));                                               \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* One case: nb blocks of `type`, the device source at byte offset src_off. */
static void run_case(uint32_t type, int64_t nb, size_t src_off, cudaStream_t stream) {
    const int64_t n = nb * (int64_t)ts_type_block_elems(type);
    size_t nbytes = 0;
    if (!ts_type_row_bytes(type, n, &nbytes)) {
        fprintf(stderr, "bad size\n");
        exit(1);
    }
    uint8_t *h_src = malloc(nbytes);
    float *want = malloc((size_t)n * sizeof(float));
    float *got = malloc((size_t)n * sizeof(float));
    if (!h_src || !want || !got) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    fill_blocks(type, h_src, nb);
    if (!ts_dequantize_row(type, h_src, want, n)) {
        fprintf(stderr, "reference dequantize failed for %s\n", ts_type_name(type));
        exit(1);
    }

    uint8_t *d_src_base = NULL;
    float *d_dst = NULL;
    CU_CHECK(cudaMalloc((void **)&d_src_base, nbytes + src_off));
    CU_CHECK(cudaMalloc((void **)&d_dst, (size_t)n * sizeof(float)));
    CU_CHECK(cudaMemsetAsync(d_dst, 0xFF, (size_t)n * sizeof(float), stream));
    CU_CHECK(cudaMemcpyAsync(d_src_base + src_off, h_src, nbytes, cudaMemcpyHostToDevice,
                             stream));
    ts_status st = ts_k_dequantize_cuda(type, d_src_base + src_off, d_dst, n, stream);
    if (st != TS_OK) {
        printf("FAIL %s nb=%lld: ts_k_dequantize_cuda: %s: %s\n", ts_type_name(type),
               (long long)nb, ts_status_name(st), ts_last_error());
        g_failed++;
    } else {
        CU_CHECK(cudaMemcpyAsync(got, d_dst, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost,
                                 stream));
        CU_CHECK(cudaStreamSynchronize(stream));
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            uint32_t g, w;
            memcpy(&g, &got[i], 4);
            memcpy(&w, &want[i], 4);
            if (g != w) {
                if (bad < 5)
                    printf("  %s nb=%lld index %lld (block %lld): got %.9g (0x%08x), "
                           "expected %.9g (0x%08x)\n",
                           ts_type_name(type), (long long)nb, (long long)i,
                           (long long)(i / ts_type_block_elems(type)), (double)got[i], g,
                           (double)want[i], w);
                bad++;
            }
        }
        if (bad) {
            printf("FAIL %-4s %7lld blocks (%lld values, src offset %zu): %lld mismatches\n",
                   ts_type_name(type), (long long)nb, (long long)n, src_off, (long long)bad);
            g_failed++;
        } else {
            printf("ok   %-4s %7lld blocks (%lld values, src offset %zu)\n", ts_type_name(type),
                   (long long)nb, (long long)n, src_off);
            g_passed++;
        }
    }
    CU_CHECK(cudaFree(d_src_base));
    CU_CHECK(cudaFree(d_dst));
    free(h_src);
    free(want);
    free(got);
}

static void expect_status(const char *what, ts_status got, ts_status want) {
    if (got == want) {
        g_passed++;
    } else {
        printf("FAIL %s: got %s, expected %s\n", what, ts_status_name(got),
               ts_status_name(want));
        g_failed++;
    }
}

int main(void) {
    int ndev = 0;
    ts_status st = ts_cuda_device_count(&ndev);
    if (st != TS_OK) {
        printf("FAIL: ts_cuda_device_count: %s: %s\n", ts_status_name(st), ts_last_error());
        return 1;
    }
    if (ndev == 0) {
        printf("SKIP: no CUDA device or driver\n");
        return EXIT_SKIP;
    }
    struct cudaDeviceProp prop;
    CU_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device 0: %s (sm_%d%d), %d device(s)\n", prop.name, prop.major, prop.minor, ndev);

    const char *seed_env = getenv("TESSERA_TEST_SEED");
    const uint64_t seed = seed_env && *seed_env ? strtoull(seed_env, NULL, 0)
                                                : (uint64_t)time(NULL) ^ (uint64_t)clock();
    g_rng = seed;
    printf("seed %llu (replay with TESSERA_TEST_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);

    cudaStream_t stream;
    CU_CHECK(cudaStreamCreate(&stream));

    const uint32_t types[] = {TS_TYPE_Q4_0, TS_TYPE_Q8_0, TS_TYPE_Q5_0, TS_TYPE_Q4_K,
                              TS_TYPE_Q6_K, TS_TYPE_F16,  TS_TYPE_BF16};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const uint32_t type = types[t];
        const int64_t qk = ts_type_block_elems(type);
        const int64_t sizes[] = {1, 3, 7, 33, 1001, ((int64_t)1 << 20) / qk + 1};
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            run_case(type, sizes[k], 0, stream);
        run_case(type, 5, 1, stream); /* odd device address */
    }

    /* Argument checks (no launch happens). */
    float *d_dst = NULL;
    CU_CHECK(cudaMalloc((void **)&d_dst, 1024 * sizeof(float)));
    expect_status("Q4_1 unsupported", ts_k_dequantize_cuda(TS_TYPE_Q4_1, d_dst, d_dst, 32, stream),
                  TS_UNSUPPORTED);
    expect_status("F32 unsupported", ts_k_dequantize_cuda(TS_TYPE_F32, d_dst, d_dst, 32, stream),
                  TS_UNSUPPORTED);
    expect_status("type 1000", ts_k_dequantize_cuda(1000, d_dst, d_dst, 32, stream),
                  TS_UNSUPPORTED);
    expect_status("Q4_0 n=31", ts_k_dequantize_cuda(TS_TYPE_Q4_0, d_dst, d_dst, 31, stream),
                  TS_INVAL);
    expect_status("Q4_K n=-256", ts_k_dequantize_cuda(TS_TYPE_Q4_K, d_dst, d_dst, -256, stream),
                  TS_INVAL);
    expect_status("Q8_0 NULL src", ts_k_dequantize_cuda(TS_TYPE_Q8_0, NULL, d_dst, 32, stream),
                  TS_INVAL);
    expect_status("Q8_0 n=0", ts_k_dequantize_cuda(TS_TYPE_Q8_0, NULL, NULL, 0, stream), TS_OK);
    CU_CHECK(cudaStreamSynchronize(stream));
    CU_CHECK(cudaFree(d_dst));
    CU_CHECK(cudaStreamDestroy(stream));

    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
