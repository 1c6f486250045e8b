/* bench_tokenizer.c: encoding throughput over the tokenizer corpus (not a test).
 *
 *   bench_tokenizer [-m MODEL] [--corpus FILE] [--seconds S] [--no-special]
 *
 * Loads the tokenizer (MODEL defaults to $TESSERA_MODEL_270M), reads the corpus strings
 * (tests/fixtures/tokenizer/corpus.jsonl), then encodes every string in turn (BOS added,
 * specials parsed unless --no-special), repeating the corpus until S seconds (default 3)
 * have passed, on one thread. Prints MB/s and tokens/s; compare with
 * tests/tools/bench_tokenizer_llamacpp.py (docs/benchmarks.md).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "tokenizer.h"

#ifndef TS_TEST_DATA
#define TS_TEST_DATA "tests"
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *model = getenv("TESSERA_MODEL_270M");
    const char *corpus = TS_TEST_DATA "/fixtures/tokenizer/corpus.jsonl";
    double seconds = 3.0;
    unsigned flags = TS_TOK_DEFAULT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc) corpus = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-special")) flags = TS_TOK_ADD_BOS;
        else {
            fprintf(stderr, "usage: bench_tokenizer [-m MODEL] [--corpus FILE] [--seconds S] [--no-special]\n");
            return 2;
        }
    }
    if (!model || !*model) {
        fprintf(stderr, "bench_tokenizer: give -m MODEL or set TESSERA_MODEL_270M\n");
        return 2;
    }
    double t0 = now_s();
    ts_gguf *g;
    ts_tokenizer *tok;
    if (ts_gguf_open(model, &g) != TS_OK || ts_tokenizer_load(g, &tok) != TS_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", ts_last_error());
        return 1;
    }
    ts_gguf_close(g);
    double t_load = now_s() - t0;

    FILE *f = fopen(corpus, "r");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: cannot open %s\n", corpus);
        return 1;
    }
    char **text = NULL;
    size_t *len = NULL, n = 0, cap = 0, bytes = 0;
    char *line = NULL;
    size_t lc = 0;
    while (getline(&line, &lc, f) > 0) {
        json_error_t err;
        json_t *j = json_loads(line, JSON_ALLOW_NUL, &err);
        json_t *t = j ? json_object_get(j, "text") : NULL;
        if (!t) {
            fprintf(stderr, "bench_tokenizer: bad corpus line %zu\n", n + 1);
            return 1;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            text = realloc(text, cap * sizeof *text);
            len = realloc(len, cap * sizeof *len);
        }
        len[n] = json_string_length(t);
        text[n] = malloc(len[n] + 1);
        memcpy(text[n], json_string_value(t), len[n] + 1);
        bytes += len[n];
        n++;
        json_decref(j);
    }
    free(line);
    fclose(f);

    ts_tokens out = {0};
    size_t reps = 0, tokens = 0;
    double start = now_s(), el;
    do {
        for (size_t i = 0; i < n; i++) {
            out.n = 0;
            if (ts_tokenize(tok, text[i], len[i], flags, &out) != TS_OK) {
                fprintf(stderr, "bench_tokenizer: %s\n", ts_last_error());
                return 1;
            }
            tokens += out.n;
        }
        reps++;
        el = now_s() - start;
    } while (el < seconds);
    printf("tessera tokenizer: load %.3f s; corpus %zu strings, %zu bytes; %zu passes in %.3f s\n",
           t_load, n, bytes, reps, el);
    printf("encode: %.2f MB/s, %.0f tokens/s, %.2f us/string\n", (double)bytes * reps / el / 1e6,
           (double)tokens / el, el / ((double)n * reps) * 1e6);
    ts_tokens_free(&out);
    for (size_t i = 0; i < n; i++) free(text[i]);
    free(text);
    free(len);
    ts_tokenizer_free(tok);
    return 0;
}
