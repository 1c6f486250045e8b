/* lc_logits.c: dev harness for tests/tools/cmp_llamacpp.py: runs tessera's CPU engine
 * (fast path unless TS_REF=1) on a token list and writes the logits of every position
 * as raw float32 (n_tok, n_vocab) to OUT.
 *   lc_logits MODEL batch|seq|mixN OUT tok0 tok1 ...
 * batch: one step with all tokens (logits for all); seq: one token per step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static FILE *g_dump;
/* TS_DUMP=FILE: records of (name[32], layer i32, rows i64, cols i64, floats). */
static void dump_hook(void *ctx, const char *name, int32_t layer, const float *data, int64_t rows,
                      int64_t cols) {
    (void)ctx;
    char nm[32] = {0};
    strncpy(nm, name, sizeof nm - 1);
    fwrite(nm, 1, sizeof nm, g_dump);
    fwrite(&layer, sizeof layer, 1, g_dump);
    fwrite(&rows, sizeof rows, 1, g_dump);
    fwrite(&cols, sizeof cols, 1, g_dump);
    fwrite(data, sizeof(float), (size_t)(rows * cols), g_dump);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL batch|seq|mixN OUT tokens...\n", argv[0]);
        return 2;
    }
    const int n = argc - 4;
    int32_t *tok = calloc((size_t)n, sizeof *tok), *pos = calloc((size_t)n, sizeof *pos),
            *seq = calloc((size_t)n, sizeof *seq);
    uint8_t *want = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        tok[i] = atoi(argv[4 + i]);
        pos[i] = i;
        want[i] = 1;
    }
    const char *ref = getenv("TS_REF");
    ts_engine_params p = {.model_path = argv[1], .n_threads = 2,
                          .reference = ref && ref[0] == '1', .n_ctx = 512};
    const char *dump = getenv("TS_DUMP");
    if (dump && dump[0]) {
        g_dump = fopen(dump, "wb");
        p.hook = dump_hook;
    }
    ts_engine *e;
    if (ts_engine_create(&p, &e) != TS_OK) {
        fprintf(stderr, "create failed\n");
        return 1;
    }
    const int64_t V = ts_engine_config(e)->n_vocab;
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)n);
    if (ts_engine_seq_reserve(e, 0, n) != TS_OK) return 1;
    if (!strcmp(argv[2], "batch")) {
        ts_batch b = {n, tok, pos, seq, want, NULL, NULL};
        if (ts_engine_step(e, &b, lg) != TS_OK) return 1;
    } else {
        /* "mixN": the first N tokens in one batch, then one per step; "seq": N = 0 */
        int i = 0;
        if (!strncmp(argv[2], "mix", 3)) {
            const int n0 = atoi(argv[2] + 3);
            ts_batch b = {n0, tok, pos, seq, want, NULL, NULL};
            if (n0 > 0 && ts_engine_step(e, &b, lg) != TS_OK) return 1;
            i = n0;
        }
        for (; i < n; i++) {
            ts_batch b = {1, tok + i, pos + i, seq + i, NULL, NULL, NULL};
            if (ts_engine_step(e, &b, lg + (size_t)i * V) != TS_OK) return 1;
        }
    }
    FILE *f = fopen(argv[3], "wb");
    fwrite(lg, sizeof(float), (size_t)V * (size_t)n, f);
    fclose(f);
    ts_engine_destroy(e);
    if (g_dump) fclose(g_dump);
    return 0;
}
