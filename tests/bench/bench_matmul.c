/* bench_matmul.c: throughput of ts_matmul (kernels/cpu/matmul.h) on Gemma 3 shapes.
 *
 * usage: bench_matmul [--quick] [--isa scalar|avx2|avx512] [--threads N,N...]
 *
 * For each shape x type x n_tok x thread count: the median time of several runs, reported
 * as GB/s (weight bytes / time) and GFLOP/s (2 rows cols n_tok / time).
 *   warm: the same weight matrix every run (it stays in L2/L3 when it fits: compute-bound);
 *   cold: n_tok = 1 only, rotating over copies of the matrix that together exceed 96 MB, so
 *         every run streams its weights from DRAM (what decode over a whole model does).
 * Shapes: Gemma 3 270M (hidden 640, FFN 2048, 4 heads x 256, vocab 262144: token_embd is
 * the tied output projection, Q8_0) and slices of 27B (hidden 5376, FFN 21504) rows.
 * Weights are random blocks with finite scales (the values do not affect speed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/matmul.h"
#include "cpu/threadpool.h"
#include "quant.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_rng = 12345;
static uint32_t rnd32(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33);
}

static void fill(uint32_t type, uint8_t *p, size_t rows, size_t rb, int64_t cols) {
    for (size_t i = 0; i < rows * rb; i++) p[i] = (uint8_t)rnd32();
    const uint32_t qk = ts_type_block_elems(type), bs = ts_type_block_bytes(type);
    const size_t nb = rows * (size_t)(cols / qk);
    const uint16_t h = ts_fp32_to_fp16(0.01f);
    for (size_t b = 0; b < nb; b++) {
        uint8_t *q = p + b * bs;
        switch (type) {
        case TS_TYPE_F16: {
            const uint16_t v = ts_fp32_to_fp16((float)(rnd32() % 2001) / 1000.0f - 1.0f);
            memcpy(q, &v, 2);
            break;
        }
        case TS_TYPE_Q6_K: memcpy(q + 208, &h, 2); break;
        case TS_TYPE_Q4_K: memcpy(q, &h, 2); memcpy(q + 2, &h, 2); break;
        default: memcpy(q, &h, 2); break;
        }
    }
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *name;
    int64_t rows, cols;
} shape;

#define ARENA_BYTES ((size_t)96 << 20)

int main(int argc, char **argv) {
    int quick = 0;
    int threads[4] = {1, 2, 0, 0}, nthreads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            if (ts_matmul_force_isa(argv[++i]) != TS_OK) {
                fprintf(stderr, "ISA %s not available\n", argv[i]);
                return 1;
            }
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            nthreads = 0;
            for (char *s = strtok(argv[++i], ","); s && nthreads < 4; s = strtok(NULL, ","))
                threads[nthreads++] = atoi(s);
        } else {
            fprintf(stderr, "usage: %s [--quick] [--isa scalar|avx2|avx512] [--threads 1,2]\n",
                    argv[0]);
            return 2;
        }
    }
    const shape shapes[] = {
        {"270M attn_q   1024x640", 1024, 640},  {"270M attn_out  640x1024", 640, 1024},
        {"270M ffn_up   2048x640", 2048, 640},  {"270M ffn_down  640x2048", 640, 2048},
        {"270M token_embd 262144x640", 262144, 640},
        {"27B ffn_down 256x21504", 256, 21504}, {"27B ffn_up 2048x5376", 2048, 5376},
    };
    const uint32_t types[] = {TS_TYPE_Q4_0, TS_TYPE_Q5_0, TS_TYPE_Q8_0,
                              TS_TYPE_Q4_K, TS_TYPE_Q6_K, TS_TYPE_F16};
    const int64_t ntoks[] = {1, 32};
    uint8_t *arena = malloc((size_t)192 << 20); /* >= 262144 x 680 B (token_embd) */
    if (!arena) return 1;
    ts_threadpool *tps[4];
    for (int i = 0; i < nthreads; i++)
        if (ts_threadpool_create(threads[i], &tps[i]) != TS_OK) return 1;

    printf("ts_matmul benchmark, ISA %s; median of runs; GB/s = weight bytes / time\n",
           ts_matmul_isa());
    printf("%-28s %-5s %4s %3s %10s %8s %8s %10s %8s\n", "shape", "type", "ntok", "thr",
           "warm us", "GB/s", "GFLOP/s", "cold us", "GB/s");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *sh = &shapes[si];
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const uint32_t type = types[ti];
            const int big = sh->rows == 262144;
            if (big && type != TS_TYPE_Q8_0) continue;
            if (quick && type != TS_TYPE_Q4_0 && type != TS_TYPE_Q8_0) continue;
            size_t rb;
            if (!ts_type_row_bytes(type, sh->cols, &rb)) continue; /* K types need 256 | cols */
            const size_t mbytes = rb * (size_t)sh->rows;
            size_t copies = big ? 1 : ARENA_BYTES / mbytes;
            if (copies < 1) copies = 1;
            fill(type, arena, sh->rows, rb, sh->cols);
            for (size_t c = 1; c < copies; c++) memcpy(arena + c * mbytes, arena, mbytes);
            for (size_t ni = 0; ni < 2; ni++) {
                const int64_t nt = ntoks[ni];
                if (big && nt > 1) continue;
                float *x = malloc((size_t)(nt * sh->cols) * sizeof(float));
                float *y = malloc((size_t)(nt * sh->rows) * sizeof(float));
                for (int64_t i = 0; i < nt * sh->cols; i++)
                    x[i] = (float)(rnd32() % 2001) / 1000.0f - 1.0f;
                const size_t sb = ts_matmul_scratch_bytes(type, sh->cols, nt);
                void *scratch = malloc(sb ? sb : 1);
                for (int th = 0; th < nthreads; th++) {
                    double t_warm, t_cold = 0;
                    double ts[64];
                    /* warm: ~0.2 s per config (less for --quick), at least 3 runs */
                    const double flops = 2.0 * (double)sh->rows * (double)sh->cols * (double)nt;
                    ts_matmul(tps[th], type, arena, rb, sh->rows, sh->cols, x, nt, y, scratch);
                    double t0 = now_s();
                    ts_matmul(tps[th], type, arena, rb, sh->rows, sh->cols, x, nt, y, scratch);
                    const double one = now_s() - t0;
                    int reps = (int)((quick ? 0.05 : 0.2) / (one + 1e-9));
                    if (reps < 3) reps = 3;
                    if (reps > 64) reps = 64;
                    for (int r = 0; r < reps; r++) {
                        t0 = now_s();
                        ts_matmul(tps[th], type, arena, rb, sh->rows, sh->cols, x, nt, y, scratch);
                        ts[r] = now_s() - t0;
                    }
                    qsort(ts, (size_t)reps, sizeof ts[0], cmp_d);
                    t_warm = ts[reps / 2];
                    if (nt == 1 && (copies >= 4 || big)) {
                        int n = 0;
                        for (int r = 0; r < reps && r < 64; r++) {
                            const uint8_t *w = arena + (size_t)(r % copies) * mbytes;
                            if (big) w = arena; /* 178 MB: cold by itself */
                            t0 = now_s();
                            ts_matmul(tps[th], type, w, rb, sh->rows, sh->cols, x, nt, y, scratch);
                            ts[n++] = now_s() - t0;
                        }
                        qsort(ts, (size_t)n, sizeof ts[0], cmp_d);
                        t_cold = ts[n / 2];
                    }
                    printf("%-28s %-5s %4lld %3d %10.1f %8.2f %8.1f", sh->name,
                           ts_type_name(type), (long long)nt, threads[th], t_warm * 1e6,
                           (double)mbytes / t_warm * 1e-9, flops / t_warm * 1e-9);
                    if (t_cold > 0)
                        printf(" %10.1f %8.2f\n", t_cold * 1e6, (double)mbytes / t_cold * 1e-9);
                    else
                        printf(" %10s %8s\n", "-", "-");
                    fflush(stdout);
                }
                free(x);
                free(y);
                free(scratch);
            }
        }
    }
    for (int i = 0; i < nthreads; i++) ts_threadpool_destroy(tps[i]);
    free(arena);
    return 0;
}
