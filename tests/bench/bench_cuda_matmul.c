/* bench_cuda_matmul.c: the CUDA matmul kernels (kernels_cuda.h) on the Gemma 3 27B matrix
 * shapes: weight GB/s of the decode kernels (T = 1, 8) against a measured device-to-device
 * cudaMemcpy bandwidth (bytes read + written), and TFLOP/s of the prefill kernel (T = 512).
 * Decode rows: "fp32" = the exact kernel (ts_k_matmul_cuda, fp32 activations), "q8" = the
 * integer-dot kernel on Q8 activations (ts_k_matmul_q8_cuda, what the backend runs), "q8+a"
 * = q8 plus the activation quantization kernel (the backend quantizes once per distinct
 * input). Prefill rows (T = 512): "tiled" = the fp32 tile kernel, "tc+a" = activation
 * quantization + the int8 tensor-core kernel (ts_k_matmul_q8_tc_cuda, the backend's
 * prefill on sm_80+). Then a sweep of the q8 kernel's rows per warp / blocks in flight at T = 1.
 * Weights are random bytes (random fp16 scales), repacked like the backend does. Median of
 * repeated runs (CUDA events). Not a test. Usage: bench_cuda_matmul [reps]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "kernels_cuda.h"
#include "quant.h"

#define CK(x)                                                                              \
    do {                                                                                   \
        cudaError_t e_ = (x);                                                              \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)
#define TK(x)                                                                              \
    do {                                                                                   \
        if ((x) != TS_OK) {                                                                \
            fprintf(stderr, "%s: %s\n", #x, ts_last_error());                              \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static uint64_t g_rng = 0x1234567ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static float median_ms(cudaEvent_t *ev, int reps) {
    float t[256];
    for (int i = 0; i < reps; i++) CK(cudaEventElapsedTime(&t[i], ev[2 * i], ev[2 * i + 1]));
    qsort(t, (size_t)reps, sizeof(float), cmpf);
    return t[reps / 2];
}

int main(int argc, char **argv) {
    int n = 0;
    if (ts_cuda_device_count(&n) != TS_OK || n == 0) {
        printf("no CUDA device\n");
        return 77;
    }
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (reps < 1 || reps > 100) reps = 20;
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t ev[200];
    for (int i = 0; i < 200; i++) CK(cudaEventCreate(&ev[i]));

    /* device-to-device copy bandwidth, 1 GiB */
    const size_t cb = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, cb));
    CK(cudaMalloc(&b, cb));
    CK(cudaMemset(a, 1, cb));
    CK(cudaMemcpyAsync(b, a, cb, cudaMemcpyDeviceToDevice, st));
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(ev[2 * i], st));
        CK(cudaMemcpyAsync(b, a, cb, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(ev[2 * i + 1], st));
    }
    CK(cudaStreamSynchronize(st));
    float ms = median_ms(ev, reps);
    const double copy_gbs = 2.0 * (double)cb / (ms * 1e-3) / 1e9;
    printf("cudaMemcpy D2D 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms, copy_gbs);
    CK(cudaFree(a));
    CK(cudaFree(b));

    const int64_t shapes[][2] = {{4096, 5376},  {5376, 4096}, {21504, 5376},
                                 {5376, 21504}, {2048, 5376}, {262144, 5376}};
    const char *names[] = {"attn_q (4096x5376)", "attn_output (5376x4096)",
                           "ffn_gate/up (21504x5376)", "ffn_down (5376x21504)",
                           "attn_k/v (2048x5376)", "lm_head (262144x5376)"};
    const uint32_t types[] = {TS_TYPE_Q4_0, TS_TYPE_Q8_0};
    printf("\n| type | matrix (rows x cols) | T | kernel | us | weight GB/s | %% of copy |\n|---|---|---|---|---|---|---|\n");
    void *xq;
    CK(cudaMalloc(&xq, ts_k_act_q8_bytes_cuda(512, 21504)));
    for (size_t ty = 0; ty < 2; ty++) {
        const uint32_t type = types[ty];
        for (size_t si = 0; si < 6; si++) {
            const int64_t rows = shapes[si][0], cols = shapes[si][1];
            size_t stride;
            if (!ts_type_row_bytes(type, cols, &stride)) return 1;
            const size_t raw = stride * (size_t)rows;
            const size_t dev = ts_k_weight_bytes_cuda(type, rows, cols);
            uint8_t *h = malloc(64u << 20);
            for (size_t i = 0; i < (64u << 20); i++) h[i] = (uint8_t)rnd();
            /* fp16 scales: keep them finite and small (exponent bits 0x2000-0x2fff) */
            void *draw, *dw;
            CK(cudaMalloc(&draw, raw));
            CK(cudaMalloc(&dw, dev));
            for (size_t off = 0; off < raw; off += (64u << 20))
                CK(cudaMemcpy((uint8_t *)draw + off, h, raw - off < (64u << 20) ? raw - off : (64u << 20),
                              cudaMemcpyHostToDevice));
            TK(ts_k_weight_repack_cuda(type, draw, stride, rows, cols, dw, st));
            CK(cudaStreamSynchronize(st));
            CK(cudaFree(draw));
            free(h);
            /* scales plane: finite values */
            {
                const size_t ns = dev - (size_t)rows * (size_t)(cols / 32) * (type == TS_TYPE_Q4_0 ? 16 : 32);
                uint16_t *sc = malloc(ns);
                for (size_t i = 0; i < ns / 2; i++) sc[i] = (uint16_t)(0x2000 + (rnd() & 0x0fff));
                CK(cudaMemcpy((uint8_t *)dw + (dev - ns), sc, ns, cudaMemcpyHostToDevice));
                free(sc);
            }
            const int64_t toks[] = {1, 8, 512};
            for (int ti = 0; ti < 3; ti++) {
                const int64_t T = toks[ti];
                if (T == 512 && rows > 30000) continue;
                float *x, *y;
                CK(cudaMalloc((void **)&x, sizeof(float) * (size_t)(T * cols)));
                CK(cudaMalloc((void **)&y, sizeof(float) * (size_t)(T * rows)));
                float *hx = malloc(sizeof(float) * (size_t)(T * cols));
                for (int64_t i = 0; i < T * cols; i++) hx[i] = (float)((int64_t)(rnd() % 2001) - 1000) / 1000.0f;
                CK(cudaMemcpy(x, hx, sizeof(float) * (size_t)(T * cols), cudaMemcpyHostToDevice));
                free(hx);
                const int r = T == 512 ? (reps < 5 ? reps : 5) : reps;
                /* kinds: 0 fp32 exact, 1 q8, 2 q8 + activation quantization; T = 512: 0 and
                 * 3 = int8 tensor cores + activation quantization (sm_80+) */
                for (int kind = 0; kind < (T == 512 ? 4 : 3); kind++) {
                    if (T == 512 && (kind == 1 || kind == 2)) continue;
                    if (kind == 3 && !ts_k_matmul_q8_tc_cuda_supports(type)) continue;
#define RUN()                                                                              \
    do {                                                                                   \
        if (kind == 0) TK(ts_k_matmul_cuda(type, dw, stride, rows, cols, x, T, y, st));    \
        else if (kind == 3) {                                                              \
            TK(ts_k_quantize_act_cuda(x, T, cols, xq, st));                                \
            TK(ts_k_matmul_q8_tc_cuda(type, dw, rows, cols, xq, T, y, st));                \
        } else {                                                                           \
            if (kind == 2) TK(ts_k_quantize_act_cuda(x, T, cols, xq, st));                 \
            TK(ts_k_matmul_q8_cuda(type, dw, rows, cols, xq, T, y, st));                   \
        }                                                                                  \
    } while (0)
                    if (kind > 0) TK(ts_k_quantize_act_cuda(x, T, cols, xq, st));
                    RUN(); /* warm */
                    for (int i = 0; i < r; i++) {
                        CK(cudaEventRecord(ev[2 * i], st));
                        RUN();
                        CK(cudaEventRecord(ev[2 * i + 1], st));
                    }
                    CK(cudaStreamSynchronize(st));
                    ms = median_ms(ev, r);
                    const double gbs = (double)dev / (ms * 1e-3) / 1e9;
                    const char *kn = kind == 0 ? (T == 512 ? "tiled" : "fp32")
                                     : kind == 1 ? "q8" : kind == 2 ? "q8+a" : "tc+a";
                    if (T == 512)
                        printf("| %s | %s | %lld | %s | %.1f | %.0f (%.1f TFLOP/s) | %.0f%% |\n",
                               ts_type_name(type), names[si], (long long)T, kn, ms * 1e3, gbs,
                               2.0 * rows * cols * T / (ms * 1e-3) / 1e12, 100.0 * gbs / copy_gbs);
                    else
                        printf("| %s | %s | %lld | %s | %.1f | %.0f | %.0f%% |\n", ts_type_name(type),
                               names[si], (long long)T, kn, ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
                    /* sweep (T = 1, q8 kernel alone) */
                    if (T == 1 && kind == 1) {
                        printf("|   | sweep rows/warp x blocks/lane:");
                        for (int mr = 1; mr <= 4; mr *= 2)
                            for (int u = 1; u <= 2; u++) {
                                ts_k_matmul_q8_cuda_tune(mr, u);
                                RUN();
                                for (int i = 0; i < r; i++) {
                                    CK(cudaEventRecord(ev[2 * i], st));
                                    RUN();
                                    CK(cudaEventRecord(ev[2 * i + 1], st));
                                }
                                CK(cudaStreamSynchronize(st));
                                const float m2 = median_ms(ev, r);
                                printf(" %dx%d %.0f GB/s;", mr, u, (double)dev / (m2 * 1e-3) / 1e9);
                            }
                        ts_k_matmul_q8_cuda_tune(0, 0);
                        printf(" | | | | |\n");
                    }
#undef RUN
                }
                CK(cudaFree(x));
                CK(cudaFree(y));
            }
            CK(cudaFree(dw));
        }
    }
    CK(cudaFree(xq));
    return 0;
}
