/* bench_cuda_vision.c: the SigLIP encoder's CUDA kernels at Gemma 3's real shape (4096
 * patches, width 1152, MLP 4304, 16 heads of 72): time per call of each kernel one layer
 * runs (CUDA events, median of reps), its TFLOP/s where it is a matmul or attention, and
 * the per-layer sum x 27. Rows: the fp32 tiled matmul (ts_k_matmul_cuda) and the TF32
 * tensor-core one (ts_k_linear_tf32_cuda); attention fp32 and TF32; LayerNorm; bias + GELU;
 * residual add. Random inputs. Not a test. Usage: bench_cuda_vision [reps]
 */
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "kernels_cuda.h"
#include "kernels_cuda_vision.h"
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
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, ts_last_error());    \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

enum { N = 4096, D = 1152, F = 4304, H = 16, HD = 72 };

static int g_reps = 20;
static cudaEvent_t g_e0, g_e1;
static float g_times[256];

static int cmpf(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#define TIME(ms, call)                                                                     \
    do {                                                                                   \
        TK(call);                                                                          \
        CK(cudaDeviceSynchronize());                                                       \
        for (int r_ = 0; r_ < g_reps; r_++) {                                              \
            CK(cudaEventRecord(g_e0, 0));                                                  \
            TK(call);                                                                      \
            CK(cudaEventRecord(g_e1, 0));                                                  \
            CK(cudaEventSynchronize(g_e1));                                                \
            CK(cudaEventElapsedTime(&g_times[r_], g_e0, g_e1));                            \
        }                                                                                  \
        qsort(g_times, (size_t)g_reps, sizeof(float), cmpf);                               \
        ms = g_times[g_reps / 2];                                                          \
    } while (0)

static float *rnd(size_t n, float sc) {
    float *h = malloc(sizeof(float) * n), *d;
    if (!h) exit(1);
    for (size_t i = 0; i < n; i++) h[i] = sc * (2.0f * (float)rand() / (float)RAND_MAX - 1.0f);
    CK(cudaMalloc((void **)&d, sizeof(float) * n));
    CK(cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

int main(int argc, char **argv) {
    int nd = 0;
    if (ts_cuda_device_count(&nd) != TS_OK || nd == 0) {
        printf("no CUDA device\n");
        return 0;
    }
    if (argc > 1) g_reps = atoi(argv[1]);
    if (g_reps < 1 || g_reps > 256) g_reps = 20;
    CK(cudaEventCreate(&g_e0));
    CK(cudaEventCreate(&g_e1));
    float *x = rnd((size_t)N * F, 1.0f), *y = rnd((size_t)N * F, 1.0f);
    float *wdd = rnd((size_t)D * D, 0.03f), *wfd = rnd((size_t)F * D, 0.03f),
          *wdf = rnd((size_t)D * F, 0.015f), *b = rnd(F, 0.02f), *lw = rnd(D, 1.0f);
    float *q = rnd((size_t)N * D, 1.0f), *k = rnd((size_t)N * D, 1.0f), *v = rnd((size_t)N * D, 1.0f);
    const int tc = ts_k_linear_tf32_cuda_supports(4);
    printf("bench_cuda_vision: %d patches, width %d, MLP %d, %d heads x %d; median of %d\n", N,
           D, F, H, HD, g_reps);
    struct {
        const char *name;
        int64_t rows, cols;
        const float *w;
    } mm[3] = {{"q/k/v/out (1152 x 1152)", D, D, wdd}, {"fc1 (4304 x 1152)", F, D, wfd},
               {"fc2 (1152 x 4304)", D, F, wdf}};
    const int per_layer[3] = {4, 1, 1};
    double layer_fp32 = 0, layer_tf32 = 0;
    for (int i = 0; i < 3; i++) {
        float a = 0, t = 0;
        const double fl = 2.0 * N * (double)mm[i].rows * (double)mm[i].cols;
        TIME(a, ts_k_matmul_cuda(TS_TYPE_F32, mm[i].w, sizeof(float) * (size_t)mm[i].cols,
                                 mm[i].rows, mm[i].cols, x, N, y, 0));
        if (tc) TIME(t, ts_k_linear_tf32_cuda(x, mm[i].w, N, mm[i].rows, mm[i].cols, y, 0));
        printf("  matmul %-24s fp32 %8.3f ms %6.1f TFLOP/s | tf32 %8.3f ms %6.1f TFLOP/s  (x%d per layer)\n",
               mm[i].name, a, fl / a * 1e-9, t, tc ? fl / t * 1e-9 : 0.0, per_layer[i]);
        layer_fp32 += per_layer[i] * a;
        layer_tf32 += per_layer[i] * (tc ? t : a);
    }
    float a = 0, t = 0;
    const double afl = 4.0 * H * (double)N * N * HD;
    TIME(a, ts_k_vit_attention_cuda(q, k, v, y, N, H, HD, 0.117851f, 0));
    if (tc) TIME(t, ts_k_vit_attention_tf32_cuda(q, k, v, y, N, H, HD, 0.117851f, 0));
    printf("  attention (16 x 72, 4096 keys)   fp32 %8.3f ms %6.1f TFLOP/s | tf32 %8.3f ms %6.1f TFLOP/s\n",
           a, afl / a * 1e-9, t, tc ? afl / t * 1e-9 : 0.0);
    layer_fp32 += a;
    layer_tf32 += tc ? t : a;
    float o = 0;
    TIME(o, ts_k_layernorm_cuda(y, x, lw, b, N, D, 1e-6f, 0));
    printf("  layernorm (4096 x 1152)          %8.3f ms  (x2 per layer)\n", o);
    layer_fp32 += 2 * o, layer_tf32 += 2 * o;
    TIME(o, ts_k_bias_act_cuda(y, b, N, F, 1, 0));
    printf("  bias + gelu (4096 x 4304)        %8.3f ms\n", o);
    layer_fp32 += o, layer_tf32 += o;
    TIME(o, ts_k_bias_act_cuda(y, b, N, D, 0, 0));
    printf("  bias (4096 x 1152)               %8.3f ms  (x5 per layer)\n", o);
    layer_fp32 += 5 * o, layer_tf32 += 5 * o;
    TIME(o, ts_k_add_cuda(y, x, (int64_t)N * D, 0));
    printf("  residual add (4096 x 1152)       %8.3f ms  (x2 per layer)\n", o);
    layer_fp32 += 2 * o, layer_tf32 += 2 * o;
    printf("  one layer: fp32 %.2f ms, tf32 %.2f ms; x27: fp32 %.1f ms, tf32 %.1f ms\n",
           layer_fp32, layer_tf32, 27 * layer_fp32, 27 * layer_tf32);
    return 0;
}
