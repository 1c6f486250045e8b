/* test_kvcache.c: the paged KV bookkeeping and its prefix cache (shard/kvcache.h):
 * reference counts of shared pages, what a hit takes, the ring snapshot copies, eviction
 * (least recently used leaves, only pages nobody else holds), and that every page comes
 * back to the pool when sequences end and the cache is flushed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "alloc.h"
#include "kvcache.h"

enum { PS = 4, W = 6, CHUNK = 8, CTX = 64 };

static ts_kvcache *make(int64_t global_pages, int64_t prefix_tokens) {
    ts_kv_params p = {.page_size = PS, .n_seq_max = 3, .n_ctx = CTX, .max_chunk = CHUNK,
                      .window = W, .global_pages = global_pages, .n_global_layers = 1,
                      .n_local_layers = 2, .prefix_tokens = prefix_tokens};
    ts_kvcache *kv = NULL;
    assert_int_equal(ts_kv_create(&p, &kv), TS_OK);
    return kv;
}

static void fill(int32_t *t, int32_t n, int32_t base) {
    for (int32_t i = 0; i < n; i++) t[i] = base + i;
}

static int32_t reserve(ts_kvcache *kv, int32_t seq, const int32_t *prompt, int32_t n_prompt,
                       int32_t n_pos) {
    int32_t cached = -1;
    assert_int_equal(ts_kv_reserve_prefix(kv, seq, prompt, n_prompt, n_pos, &cached), TS_OK);
    return cached;
}

static void full_pool(ts_kvcache *kv) {
    ts_kv_prefix_flush(kv);
    assert_int_equal(ts_kv_free_global_pages(kv), ts_kv_global_pages(kv));
    for (int32_t pg = 0; pg < ts_kv_global_pages(kv); pg++)
        assert_int_equal(ts_kv_page_refs(kv, pg), 0);
}

static void test_hit_shares_pages(void **st) {
    (void)st;
    ts_kvcache *kv = make(40, 32);
    const ts_kv_copy *cp;
    int32_t prompt[18];
    fill(prompt, 18, 100);
    /* local pool: 3 rings, then one snapshot page per entry (8) */
    const int32_t ring = ts_kv_ring_pages(kv);
    assert_int_equal(ts_kv_local_pages(kv), 3 * ring + 8);
    assert_int_equal(reserve(kv, 0, prompt, 18, 24), 0);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 0);
    assert_int_equal(ts_kv_free_global_pages(kv), 34);
    /* computed up to 10: two full blocks are cached, each with a ring snapshot */
    ts_kv_prefix_commit(kv, 0, 10);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 2);
    assert_false(cp[0].is_global);
    assert_int_equal(cp[0].src, ts_kv_local_page(kv, 0, 0));
    assert_int_equal(cp[1].src, ts_kv_local_page(kv, 0, 4));
    assert_true(cp[0].dst >= 3 * ring && cp[1].dst >= 3 * ring && cp[0].dst != cp[1].dst);
    ts_kv_prefix_commit(kv, 0, 18); /* the whole prompt: 4 full blocks */
    assert_int_equal(ts_kv_take_copies(kv, &cp), 2);
    ts_kv_prefix_commit(kv, 0, 24); /* generated positions are not cached */
    assert_int_equal(ts_kv_take_copies(kv, &cp), 0);
    ts_kv_prefix_stats s;
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.entries, 4);
    assert_int_equal(s.pages_held, 0); /* all still held by sequence 0 */
    for (int32_t b = 0; b < 4; b++) assert_int_equal(ts_kv_page_refs(kv, ts_kv_global_page(kv, 0, b * PS)), 2);
    assert_int_equal(ts_kv_page_refs(kv, ts_kv_global_page(kv, 0, 16)), 1);

    /* probes: a hit leaves at least one prompt token to compute */
    assert_int_equal(ts_kv_prefix_probe(kv, prompt, 18), 16);
    assert_int_equal(ts_kv_prefix_probe(kv, prompt, 17), 16);
    assert_int_equal(ts_kv_prefix_probe(kv, prompt, 16), 12);
    assert_int_equal(ts_kv_prefix_probe(kv, prompt, 1), 0);
    int32_t other[18];
    memcpy(other, prompt, sizeof other);
    other[9] = 7; /* differs in block 2 */
    assert_int_equal(ts_kv_prefix_probe(kv, other, 18), 8);
    other[0] = 7;
    assert_int_equal(ts_kv_prefix_probe(kv, other, 18), 0);

    /* sequence 1, same prompt: 16 positions from the cache, the same pages */
    assert_int_equal(reserve(kv, 1, prompt, 18, 24), 16);
    assert_int_equal(ts_kv_shared_positions(kv, 1), 16);
    for (int32_t b = 0; b < 4; b++) {
        assert_int_equal(ts_kv_global_page(kv, 1, b * PS), ts_kv_global_page(kv, 0, b * PS));
        assert_int_equal(ts_kv_page_refs(kv, ts_kv_global_page(kv, 1, b * PS)), 3);
    }
    assert_int_not_equal(ts_kv_global_page(kv, 1, 16), ts_kv_global_page(kv, 0, 16));
    assert_int_equal(ts_kv_free_global_pages(kv), 32);
    /* the ring gets the snapshots of positions [16 - W + 1, 16) = blocks 2 and 3 */
    assert_int_equal(ts_kv_take_copies(kv, &cp), 2);
    assert_int_equal(cp[0].dst, ts_kv_local_page(kv, 1, 8));
    assert_int_equal(cp[1].dst, ts_kv_local_page(kv, 1, 12));
    /* the hit sequence registers nothing it did not compute; its later blocks are beyond
     * the prompt */
    ts_kv_prefix_commit(kv, 1, 24);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 0);

    /* an occupied slot is refused */
    int32_t c;
    assert_int_equal(ts_kv_reserve_prefix(kv, 1, prompt, 18, 24, &c), TS_INVAL);
    assert_int_equal(ts_kv_reserve_prefix(kv, 2, prompt, 25, 24, &c), TS_INVAL);

    ts_kv_release(kv, 0);
    assert_int_equal(ts_kv_page_refs(kv, ts_kv_global_page(kv, 1, 0)), 2);
    assert_int_equal(ts_kv_free_global_pages(kv), 34); /* 0's private pages came back */
    ts_kv_release(kv, 1);
    assert_int_equal(ts_kv_free_global_pages(kv), 36);   /* 4 pages stay cached */
    assert_int_equal(ts_kv_available_global_pages(kv), 40);
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.pages_held, 4);
    assert_int_equal(s.hit_tokens, 16);
    full_pool(kv);
    assert_int_equal(ts_kv_prefix_probe(kv, prompt, 18), 0);
    ts_kv_destroy(kv);
}

static void test_eviction_under_pressure(void **st) {
    (void)st;
    ts_kvcache *kv = make(10, 64);
    const ts_kv_copy *cp;
    int32_t a[17], b[17];
    fill(a, 17, 1);
    fill(b, 17, 500);
    assert_int_equal(reserve(kv, 0, a, 17, 20), 0);
    ts_kv_prefix_commit(kv, 0, 17);
    (void)ts_kv_take_copies(kv, &cp);
    ts_kv_release(kv, 0);
    assert_int_equal(ts_kv_free_global_pages(kv), 6);
    assert_int_equal(ts_kv_available_global_pages(kv), 10);
    /* leaves go first: one page short evicts block 3 only, the rest still hits */
    assert_int_equal(reserve(kv, 1, b, 17, 28), 0); /* 7 pages: evicts one entry */
    assert_int_equal(ts_kv_prefix_probe(kv, a, 17), 12);
    ts_kv_prefix_stats s;
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.entries, 3);
    ts_kv_release(kv, 1);
    /* a request that needs the whole pool evicts everything nobody holds */
    assert_int_equal(reserve(kv, 2, b, 1, 40), 0);
    assert_int_equal(ts_kv_free_global_pages(kv), 0);
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.entries, 0);
    int32_t c;
    assert_int_equal(ts_kv_reserve_prefix(kv, 0, a, 4, 4, &c), TS_EXHAUSTED);
    assert_false(ts_kv_seq_active(kv, 0));
    ts_kv_release(kv, 2);
    full_pool(kv);

    /* pages a hit takes are not counted as evictable for the same reservation */
    assert_int_equal(reserve(kv, 0, a, 17, 20), 0);
    ts_kv_prefix_commit(kv, 0, 17);
    (void)ts_kv_take_copies(kv, &cp);
    ts_kv_release(kv, 0);
    assert_int_equal(ts_kv_reserve_prefix(kv, 1, a, 17, 48, &c), TS_EXHAUSTED); /* 12 > 10 */
    assert_int_equal(ts_kv_available_global_pages(kv), 10);
    assert_int_equal(reserve(kv, 1, a, 17, 40), 16); /* 4 cached + 6 free */
    assert_int_equal(ts_kv_free_global_pages(kv), 0);
    assert_int_equal(ts_kv_available_global_pages(kv), 0);
    assert_int_equal(ts_kv_reserve_prefix(kv, 2, b, 4, 4, &c), TS_EXHAUSTED);
    /* growing cannot take held pages either */
    assert_int_equal(ts_kv_reserve(kv, 1, 44), TS_EXHAUSTED);
    ts_kv_release(kv, 1);
    assert_int_equal(ts_kv_available_global_pages(kv), 10);
    full_pool(kv);
    ts_kv_destroy(kv);
}

static void test_snapshot_pool_full(void **st) {
    (void)st;
    ts_kvcache *kv = make(40, 8); /* two entries */
    const ts_kv_copy *cp;
    int32_t a[17], b[9];
    fill(a, 17, 1);
    fill(b, 9, 300);
    assert_int_equal(reserve(kv, 0, a, 17, 17), 0);
    ts_kv_prefix_commit(kv, 0, 17);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 2); /* the third block finds no room */
    ts_kv_prefix_stats s;
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.capacity, 2);
    ts_kv_release(kv, 0);
    /* another prompt replaces them, least recently used leaf first */
    assert_int_equal(reserve(kv, 1, b, 9, 9), 0);
    ts_kv_prefix_commit(kv, 1, 9);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 2);
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(ts_kv_prefix_probe(kv, b, 9), 8);
    assert_int_equal(ts_kv_prefix_probe(kv, a, 17), 0);
    ts_kv_release(kv, 1);
    full_pool(kv);
    ts_kv_destroy(kv);
}

static void test_concurrent_same_prompt(void **st) {
    (void)st;
    ts_kvcache *kv = make(40, 64);
    const ts_kv_copy *cp;
    int32_t a[13];
    fill(a, 13, 9);
    assert_int_equal(reserve(kv, 0, a, 13, 16), 0);
    assert_int_equal(reserve(kv, 1, a, 13, 16), 0);
    ts_kv_prefix_commit(kv, 0, 13);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 3);
    ts_kv_prefix_commit(kv, 1, 13); /* same blocks already there: 1 keeps its own pages */
    assert_int_equal(ts_kv_take_copies(kv, &cp), 0);
    ts_kv_prefix_stats s;
    ts_kv_prefix_get_stats(kv, &s);
    assert_int_equal(s.inserts, 3);
    /* a third one hits while both run; then everything ends mid-way */
    assert_int_equal(reserve(kv, 2, a, 13, 16), 12);
    (void)ts_kv_take_copies(kv, &cp);
    ts_kv_release(kv, 0);
    ts_kv_release(kv, 2);
    ts_kv_prefix_flush(kv); /* flushed while sequence 1 still runs */
    assert_int_equal(ts_kv_free_global_pages(kv), 36);
    ts_kv_prefix_commit(kv, 1, 13);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 0);
    ts_kv_release(kv, 1);
    full_pool(kv);
    ts_kv_destroy(kv);
}

static void test_cache_off(void **st) {
    (void)st;
    ts_kvcache *kv = make(10, 0);
    const ts_kv_copy *cp;
    int32_t a[13];
    fill(a, 13, 9);
    assert_false(ts_kv_prefix_enabled(kv));
    assert_int_equal(ts_kv_local_pages(kv), 3 * ts_kv_ring_pages(kv));
    assert_int_equal(reserve(kv, 0, a, 13, 16), 0);
    ts_kv_prefix_commit(kv, 0, 13);
    assert_int_equal(ts_kv_take_copies(kv, &cp), 0);
    ts_kv_release(kv, 0);
    assert_int_equal(reserve(kv, 0, a, 13, 16), 0);
    assert_int_equal(ts_kv_prefix_probe(kv, a, 13), 0);
    ts_kv_release(kv, 0);
    full_pool(kv);
    ts_kv_destroy(kv);
}

/* Every allocation of ts_kv_create failing in turn: TS_NOMEM, nothing leaked. */
static void test_alloc_failure(void **st) {
    (void)st;
    ts_kv_params p = {.page_size = PS, .n_seq_max = 3, .n_ctx = CTX, .max_chunk = CHUNK,
                      .window = W, .global_pages = 40, .n_global_layers = 1,
                      .n_local_layers = 2, .prefix_tokens = 32};
    size_t live = ts_alloc_count();
    bool created = false;
    for (long k = 0; k < 40 && !created; k++) {
        ts_kvcache *kv = NULL;
        ts_alloc_fail_after(k);
        ts_status rc = ts_kv_create(&p, &kv);
        ts_alloc_fail_after(-1);
        assert_true(rc == TS_OK || rc == TS_NOMEM);
        assert_true((rc == TS_OK) == (kv != NULL));
        created = rc == TS_OK;
        ts_kv_destroy(kv);
    }
    assert_true(created);
    assert_int_equal(ts_alloc_count(), live);
    /* bad parameters */
    ts_kvcache *kv = NULL;
    p.prefix_tokens = (int64_t)PS << 25;
    assert_int_equal(ts_kv_create(&p, &kv), TS_INVAL);
    assert_null(kv);
    assert_int_equal(ts_alloc_count(), live);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_shares_pages),
        cmocka_unit_test(test_eviction_under_pressure),
        cmocka_unit_test(test_snapshot_pool_full),
        cmocka_unit_test(test_concurrent_same_prompt),
        cmocka_unit_test(test_cache_off),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
