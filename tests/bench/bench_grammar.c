/* bench_grammar.c: cost of the structured-output token mask (not a test).
 *
 *   bench_grammar [-m MODEL] [--reps N]
 *
 * Loads the tokenizer of MODEL (default $TESSERA_MODEL_270M), builds the vocabulary trie
 * (timed), then for a schema and several matcher states (object start, inside a string,
 * after a number, inside an enum, any JSON) computes the mask N times (default 20) with
 * the cache defeated (a fresh matcher each time) and once more from the cache. Prints the
 * mean and the minimum per mask and the number of allowed tokens; docs/benchmarks.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "gguf.h"
#include "grammar.h"
#include "tokenizer.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int main(int argc, char **argv) {
    const char *model = getenv("TESSERA_MODEL_270M");
    int reps = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_grammar [-m MODEL] [--reps N]\n");
            return 2;
        }
    }
    if (!model || reps < 1) {
        fprintf(stderr, "bench_grammar: -m MODEL or TESSERA_MODEL_270M needed\n");
        return 2;
    }
    ts_gguf *gg;
    ts_tokenizer *tok;
    ts_gvocab *v;
    if (ts_gguf_open(model, &gg) != TS_OK || ts_tokenizer_load(gg, &tok) != TS_OK) {
        fprintf(stderr, "bench_grammar: %s\n", ts_last_error());
        return 1;
    }
    double t0 = now_ms();
    if (ts_gvocab_build(tok, &v) != TS_OK) {
        fprintf(stderr, "bench_grammar: %s\n", ts_last_error());
        return 1;
    }
    printf("vocabulary: %u tokens (longest %u bytes), trie built in %.1f ms\n", ts_gvocab_n_vocab(v),
           ts_gvocab_max_len(v), now_ms() - t0);
    static const char schema[] =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},"
        "\"age\":{\"type\":\"integer\"},\"city\":{\"enum\":[\"Paris\",\"London\",\"Tokyo\"]},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
        "\"required\":[\"name\",\"age\",\"city\"],\"additionalProperties\":false}";
    static const struct {
        const char *what, *schema, *prefix;
    } cases[] = {
        {"object start", schema, ""},
        {"after '{'", schema, "{"},
        {"key", schema, "{\"na"},
        {"inside a string (maxLength)", schema, "{\"name\":\"Jo"},
        {"inside a string (unbounded)", schema, "{\"name\":\"Jo\",\"tags\":[\"a"},
        {"after a number", schema, "{\"name\":\"Jo\",\"age\":4"},
        {"inside an enum", schema, "{\"name\":\"Jo\",\"age\":4,\"city\":\"Lo"},
        {"any JSON, in an object", "{}", "{\"a\":[1,{\"b\":"},
        {"any JSON, in a string", "{}", "{\"a\":\"xy"},
    };
    uint64_t *mask = ts_malloc(((size_t)ts_gvocab_n_vocab(v) + 63) / 64 * sizeof(uint64_t));
    if (!mask) return 1;
    printf("%-32s %10s %10s %10s %9s\n", "state", "mean ms", "min ms", "cached ms", "allowed");
    double sum_all = 0;
    int n_all = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ts_grammar *g;
        if (ts_grammar_from_json_schema(cases[c].schema, strlen(cases[c].schema), -1, &g) != TS_OK) {
            fprintf(stderr, "bench_grammar: %s\n", ts_last_error());
            return 1;
        }
        double sum = 0, mn = 1e30, cached = 0;
        size_t n = 0;
        for (int r = 0; r <= reps; r++) {
            ts_gmatch *m;
            if (ts_gmatch_new(g, &m) != TS_OK ||
                !ts_gmatch_feed(m, cases[c].prefix, strlen(cases[c].prefix)))
                return 1;
            double a = now_ms();
            if (ts_gmatch_mask(m, v, mask, &n) != TS_OK) return 1;
            double b = now_ms() - a;
            if (r > 0) { /* the first run warms the caches of the CPU */
                sum += b;
                if (b < mn) mn = b;
            }
            if (r == reps) {
                a = now_ms();
                if (ts_gmatch_mask(m, v, mask, &n) != TS_OK) return 1;
                cached = now_ms() - a;
            }
            ts_gmatch_free(m);
        }
        printf("%-32s %10.3f %10.3f %10.3f %9zu\n", cases[c].what, sum / reps, mn, cached, n);
        sum_all += sum / reps;
        n_all++;
        ts_grammar_free(g);
    }
    printf("mean over the states: %.3f ms per mask (uncached)\n", sum_all / n_all);
    ts_free(mask);
    ts_gvocab_free(v);
    ts_tokenizer_free(tok);
    ts_gguf_close(gg);
    return 0;
}
