/* test_engine_prefix.c: prefix caching in the engine (engine.h ts_engine_seq_reserve_prefix).
 *
 * Two engines on the same model, one with the prefix cache and one without. Request A
 * (shared prefix + its own tail) runs on the cached engine, then request B (the same
 * prefix + another tail) hits A's blocks, while A still runs and again after both ended
 * (then B's own blocks hit too). B's logits at the last prompt token and over greedy
 * decode steps must be bit-identical to B alone on the engine without the cache (the CPU
 * path is batch-invariant, so computing B from the cut on, with the keys of the prefix
 * and the local-layer ring snapshots from the cache, must give exactly the same numbers).
 * Also: a step into the cached (read-only) prefix is refused; a request released in the
 * middle of its prefill leaves the shared pages intact; after everything ends and the
 * cache is flushed, every page is free.
 *
 * Without arguments: a tiny generated model (mkmodel "tiny", sliding window 16, pages of 4
 * tokens: the cut is well past the window). With "270m": the real Gemma 3 270M from
 * TESSERA_MODEL_270M (window 512, a 600-token shared prefix); exits 77 (skip) without it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "mkmodel.h"
#include "quant.h"

#define N_DECODE 6

typedef struct {
    const char *path;
    int32_t n_ctx, page, chunk, n_shared, tail_a, tail_b;
} setup;

static setup g_set;

static ts_engine *make_engine(bool cache) {
    ts_engine_params p = {.model_path = g_set.path, .n_threads = 2, .n_ctx = g_set.n_ctx,
                          .n_seq_max = 3, .n_batch = 2 * g_set.chunk, .n_chunk = g_set.chunk,
                          .page_size = g_set.page,
                          .prefix_cache_tokens = cache ? 2 * g_set.n_ctx : 0};
    ts_engine *e = NULL;
    ts_status rc = ts_engine_create(&p, &e);
    if (rc != TS_OK) print_error("engine: %s\n", ts_last_error());
    assert_int_equal(rc, TS_OK);
    return e;
}

static int32_t argmax(const float *v, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return (int32_t)b;
}

/* Prompt positions [from, n) of seq in chunks, then N_DECODE greedy steps; the logits of
 * the last prompt token and of each decode step go to out ((N_DECODE + 1) rows). */
static void run(ts_engine *e, int32_t seq, const int32_t *prompt, int32_t n, int32_t from,
                float *out) {
    const int64_t V = ts_engine_config(e)->n_vocab;
    int32_t tok[512], pos[512], sq[512];
    for (int32_t p0 = from; p0 < n; p0 += g_set.chunk) {
        int32_t k = n - p0 < g_set.chunk ? n - p0 : g_set.chunk;
        for (int32_t j = 0; j < k; j++) {
            tok[j] = prompt[p0 + j];
            pos[j] = p0 + j;
            sq[j] = seq;
        }
        ts_batch b = {.n_tokens = k, .token = tok, .pos = pos, .seq = sq};
        ts_status rc = ts_engine_step(e, &b, out);
        if (rc != TS_OK) print_error("step: %s\n", ts_last_error());
        assert_int_equal(rc, TS_OK);
    }
    for (int32_t i = 0; i < N_DECODE; i++) {
        tok[0] = argmax(out + i * V, V);
        pos[0] = n + i;
        sq[0] = seq;
        ts_batch b = {.n_tokens = 1, .token = tok, .pos = pos, .seq = sq};
        assert_int_equal(ts_engine_step(e, &b, out + (i + 1) * V), TS_OK);
    }
}

static void make_prompts(int64_t V, int32_t *a, int32_t *b) {
    uint32_t x = 12345;
    for (int32_t i = 0; i < g_set.n_shared + g_set.tail_a; i++) {
        x = x * 1664525u + 1013904223u;
        a[i] = 10 + (int32_t)((x >> 8) % (uint32_t)(V - 10));
    }
    memcpy(b, a, sizeof(int32_t) * (size_t)g_set.n_shared);
    for (int32_t i = g_set.n_shared; i < g_set.n_shared + g_set.tail_b; i++) {
        x = x * 1664525u + 1013904223u;
        b[i] = 10 + (int32_t)((x >> 8) % (uint32_t)(V - 10));
    }
    b[g_set.n_shared] = a[g_set.n_shared] == 10 ? 11 : 10; /* the tails differ at once */
}

static void test_hit_is_exact(void **st) {
    (void)st;
    ts_engine *ref = make_engine(false), *e = make_engine(true);
    const int64_t V = ts_engine_config(e)->n_vocab;
    const int32_t na = g_set.n_shared + g_set.tail_a, nb = g_set.n_shared + g_set.tail_b;
    int32_t *a = malloc(sizeof(int32_t) * (size_t)na), *b = malloc(sizeof(int32_t) * (size_t)nb);
    const size_t rows = sizeof(float) * (size_t)(N_DECODE + 1) * (size_t)V;
    float *want = malloc(rows), *got = malloc(rows), *scratch = malloc(rows);
    assert_true(a && b && want && got && scratch);
    make_prompts(V, a, b);
    ts_engine_info info;
    ts_engine_get_info(e, &info);

    /* B alone, no cache */
    assert_int_equal(ts_engine_seq_reserve(ref, 0, nb + N_DECODE), TS_OK);
    run(ref, 0, b, nb, 0, want);
    ts_engine_seq_release(ref, 0);

    /* A on the cached engine (slot 0, kept running) */
    int32_t cached = -1;
    assert_int_equal(ts_engine_seq_reserve_prefix(e, 0, a, na, na + N_DECODE, &cached), TS_OK);
    assert_int_equal(cached, 0);
    run(e, 0, a, na, 0, scratch);

    /* B hits A's blocks while A is alive */
    const int32_t cut = g_set.n_shared / g_set.page * g_set.page;
    assert_int_equal(ts_engine_seq_reserve_prefix(e, 1, b, nb, nb + N_DECODE, &cached), TS_OK);
    assert_int_equal(cached, cut);
    /* the cached prefix is read-only */
    {
        int32_t t = b[0], p = 0, s = 1;
        ts_batch bad = {.n_tokens = 1, .token = &t, .pos = &p, .seq = &s};
        assert_int_equal(ts_engine_step(e, &bad, scratch), TS_INVAL);
    }
    run(e, 1, b, nb, cached, got);
    assert_memory_equal(got, want, rows);
    ts_engine_seq_release(e, 0);
    ts_engine_seq_release(e, 1);

    /* again after both ended: now B's own prompt blocks hit as well */
    assert_int_equal(ts_engine_seq_reserve_prefix(e, 2, b, nb, nb + N_DECODE, &cached), TS_OK);
    assert_int_equal(cached, (nb - 1) / g_set.page * g_set.page);
    memset(got, 0, rows);
    run(e, 2, b, nb, cached, got);
    assert_memory_equal(got, want, rows);
    ts_engine_seq_release(e, 2);

    /* released in the middle of its prefill (A with a changed tail: a partial hit, more
     * than 2 tokens left to compute): the shared pages stay good for the next */
    {
        const int32_t at = na - 2 * g_set.page;
        a[at] = a[at] == 10 ? 11 : 10;
        assert_int_equal(ts_engine_seq_reserve_prefix(e, 1, a, na, na + N_DECODE, &cached), TS_OK);
        assert_int_equal(cached, at / g_set.page * g_set.page);
        assert_true(cached + 2 <= na);
        int32_t t[2] = {a[cached], a[cached + 1]}, p[2] = {cached, cached + 1}, s[2] = {1, 1};
        ts_batch half = {.n_tokens = 2, .token = t, .pos = p, .seq = s};
        assert_int_equal(ts_engine_step(e, &half, scratch), TS_OK);
    }
    ts_engine_seq_release(e, 1);
    assert_int_equal(ts_engine_seq_reserve_prefix(e, 0, b, nb, nb + N_DECODE, &cached), TS_OK);
    memset(got, 0, rows);
    run(e, 0, b, nb, cached, got);
    assert_memory_equal(got, want, rows);
    ts_engine_seq_release(e, 0);

    /* everything back in the pool */
    ts_kv_prefix_stats ps;
    ts_engine_prefix_stats(e, &ps);
    assert_true(ps.entries > 0 && ps.hit_tokens > 0);
    assert_int_equal(ts_engine_available_pages(e), info.kv_global_pages);
    ts_engine_prefix_flush(e);
    assert_int_equal(ts_engine_free_pages(e), info.kv_global_pages);
    ts_engine_prefix_stats(e, &ps);
    assert_int_equal(ps.entries, 0);

    free(a);
    free(b);
    free(want);
    free(got);
    free(scratch);
    ts_engine_destroy(ref);
    ts_engine_destroy(e);
}

int main(int argc, char **argv) {
    char tmp[] = "/tmp/tessera_prefix_XXXXXX";
    bool real = argc > 1 && !strcmp(argv[1], "270m");
    if (real) {
        const char *path = getenv("TESSERA_MODEL_270M");
        if (!path || !*path || access(path, R_OK) != 0) {
            printf("SKIP: TESSERA_MODEL_270M is not set or not readable (path of "
                   "gemma-3-270m-q4_k_m.gguf)\n");
            return 77;
        }
        g_set = (setup){.path = path, .n_ctx = 1024, .page = 16, .chunk = 64, .n_shared = 600,
                        .tail_a = 40, .tail_b = 29};
    } else {
        int fd = mkstemp(tmp);
        if (fd < 0) return 1;
        FILE *f = fdopen(fd, "wb");
        ts_mkmodel_params mp = {.shape = ts_mkmodel_shape_by_name("tiny"),
                                .type = TS_TYPE_Q8_0, .seed = 11, .n_vocab = 512};
        if (!f || !mp.shape || ts_mkmodel_write(&mp, f) != TS_OK) {
            fprintf(stderr, "mkmodel: %s\n", ts_last_error());
            if (f) fclose(f);
            unlink(tmp);
            return 1;
        }
        fclose(f);
        g_set = (setup){.path = tmp, .n_ctx = 256, .page = 4, .chunk = 8, .n_shared = 41,
                        .tail_a = 12, .tail_b = 9};
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hit_is_exact)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (!real) unlink(tmp);
    return rc;
}
