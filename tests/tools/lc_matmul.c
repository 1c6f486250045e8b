/* lc_matmul.c: dev harness: runs tessera's FAST ts_matmul on one GGUF weight for the rows
 * of a raw float32 file (n_tok x cols) and writes y (n_tok x rows) as raw float32, so a
 * single kernel can be compared with llama.cpp's output for the same input (tests/tools/
 * lcdump.py dumps both sides, e.g. ffn_norm-0 -> ffn_gate-0).
 *   lc_matmul MODEL TENSOR_NAME X.f32 N_TOK Y.f32 [N_THREADS] */
#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"
#include "matmul.h"
#include "quant.h"

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL TENSOR X.f32 N_TOK Y.f32 [N_THREADS]\n", argv[0]);
        return 2;
    }
    ts_gguf *g;
    if (ts_gguf_open(argv[1], &g) != TS_OK) return 1;
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, argv[2]);
    if (!t) {
        fprintf(stderr, "no tensor %s\n", argv[2]);
        return 1;
    }
    const int64_t cols = t->ne[0], rows = t->ne[1], n = atoll(argv[4]);
    float *x = malloc(sizeof(float) * (size_t)(cols * n)), *y = malloc(sizeof(float) * (size_t)(rows * n));
    FILE *f = fopen(argv[3], "rb");
    if (!f || fread(x, sizeof(float), (size_t)(cols * n), f) != (size_t)(cols * n)) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 1;
    }
    fclose(f);
    ts_threadpool *tp = NULL;
    if (ts_threadpool_create(argc > 6 ? atoi(argv[6]) : 2, &tp) != TS_OK) return 1;
    void *scratch = malloc(ts_matmul_scratch_bytes(t->type, cols, n) + 64);
    ts_status rc = ts_matmul(tp, t->type, t->data, t->nbytes / (size_t)rows, rows, cols, x, n, y,
                             scratch);
    if (rc != TS_OK) {
        fprintf(stderr, "ts_matmul failed\n");
        return 1;
    }
    f = fopen(argv[5], "wb");
    fwrite(y, sizeof(float), (size_t)(rows * n), f);
    fclose(f);
    printf("%s: type %u, %lld x %lld, %lld tokens, isa %s\n", argv[2], t->type, (long long)rows,
           (long long)cols, (long long)n, ts_matmul_isa());
    ts_threadpool_destroy(tp);
    free(scratch);
    free(x);
    free(y);
    ts_gguf_close(g);
    return 0;
}
