/* test_plan.c: the parallel plan (shard/plan.h) over the Gemma 3 270M..27B shapes (configs
 * built here, no files) and mixed per-rank memory budgets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "quant.h"

#define GiB (1024ull * 1024ull * 1024ull)

static ts_config mk(uint32_t L, uint32_t d, uint32_t ff, uint32_t H, uint32_t KV, uint32_t hd,
                    uint32_t W) {
    ts_config c;
    memset(&c, 0, sizeof c);
    strcpy(c.arch, "gemma3");
    c.n_layer = L;
    c.n_embd = d;
    c.n_ff = ff;
    c.n_head = H;
    c.n_head_kv = KV;
    c.head_dim = hd;
    c.n_ctx_train = 131072;
    c.n_vocab = 262144;
    c.sliding_window = W;
    for (uint32_t i = 0; i < L; i++) {
        c.is_global[i] = (i + 1) % 6 == 0;
        c.n_global += c.is_global[i];
    }
    return c;
}

static ts_config m270m(void) { return mk(18, 640, 2048, 4, 1, 256, 512); }
static ts_config m1b(void) { return mk(26, 1152, 6912, 4, 1, 256, 512); }
static ts_config m4b(void) { return mk(34, 2560, 10240, 8, 4, 256, 1024); }
static ts_config m12b(void) { return mk(48, 3840, 15360, 16, 8, 256, 1024); }
static ts_config m27b(void) { return mk(62, 5376, 21504, 32, 16, 128, 1024); }

static ts_plan g_plan; /* large: not on the stack */

/* Invariants of any accepted plan. */
static void check_plan(const ts_config *c, const ts_plan *p) {
    assert_int_equal(p->tp * p->pp, p->world);
    for (int32_t s = 0; s < p->pp; s++)
        for (int32_t r = 0; r < p->tp; r++) {
            const ts_plan_rank *x = &p->rank[s * p->tp + r];
            assert_int_equal(x->rank, s * p->tp + r);
            assert_int_equal(x->stage, s);
            assert_int_equal(x->tp_rank, r);
            assert_true(x->l1 > x->l0);
            assert_int_equal(x->l0, s == 0 ? 0 : p->rank[(s - 1) * p->tp].l1);
            if (s == p->pp - 1) assert_int_equal(x->l1, (int32_t)c->n_layer);
            assert_int_equal(x->l0, p->rank[s * p->tp].l0); /* same layers in a TP group */
            /* heads / KV heads evenly, contiguous; GQA groups preserved */
            assert_int_equal(x->h1 - x->h0, (int32_t)c->n_head / p->tp);
            assert_int_equal(x->kv1 - x->kv0, (int32_t)c->n_head_kv / p->tp);
            assert_int_equal(x->h0 / ((int32_t)c->n_head / (int32_t)c->n_head_kv), x->kv0);
            /* FFN: contiguous cover at block boundaries */
            assert_int_equal(x->f0, r == 0 ? 0 : p->rank[s * p->tp + r - 1].f1);
            if (r == p->tp - 1) assert_int_equal(x->f1, (int32_t)c->n_ff);
            assert_true(x->f1 > x->f0);
            assert_int_equal(x->f0 % (int32_t)p->row_align, 0);
            if (p->tp > 1)
                assert_int_equal(((int64_t)x->h0 * c->head_dim) % p->row_align, 0);
            assert_int_equal(x->embed, s == 0);
            assert_int_equal(x->lm_head, s == p->pp - 1);
            if (x->lm_head) { /* vocab slices: contiguous cover */
                assert_int_equal(x->v0, r == 0 ? 0 : p->rank[s * p->tp + r - 1].v1);
                if (r == p->tp - 1) assert_int_equal(x->v1, (int32_t)c->n_vocab);
                assert_true(x->v1 > x->v0);
            }
        }
    assert_non_null(strstr(p->desc, "rank 0: stage 0"));
}

static ts_status make(const ts_config *c, int32_t world, int32_t tp, int32_t pp,
                      const uint64_t *mem, uint32_t type) {
    ts_plan_params pp_ = {.world = world, .tp = tp, .pp = pp, .mem_bytes = mem,
                          .n_ctx = 8192, .weight_type = type};
    ts_status rc = ts_plan_make(c, &pp_, &g_plan);
    if (rc == TS_OK) check_plan(c, &g_plan);
    return rc;
}

static void test_all_sizes_valid_shapes(void **st) {
    (void)st;
    ts_config cs[] = {m270m(), m1b(), m4b(), m12b(), m27b()};
    for (size_t i = 0; i < 5; i++) {
        const ts_config *c = &cs[i];
        for (uint32_t tp = 1; tp <= 16; tp++) {
            bool ok_tp = c->n_head_kv % tp == 0;
            for (int32_t pp = 1; pp <= 4; pp++) {
                ts_status rc = make(c, (int32_t)tp * pp, (int32_t)tp, pp, NULL, TS_TYPE_Q4_0);
                assert_int_equal(rc, ok_tp ? TS_OK : TS_INVAL);
                if (!ok_tp) assert_non_null(strstr(ts_last_error(), "does not divide"));
            }
        }
    }
}

static void test_27b_tp_must_divide_kv_heads(void **st) {
    (void)st;
    ts_config c = m27b();
    assert_int_equal(make(&c, 3, 3, 1, NULL, TS_TYPE_Q4_0), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "tp 3 does not divide the model's 16 KV heads"));
    assert_non_null(strstr(ts_last_error(), "1, 2, 4, 8, 16"));
    assert_int_equal(make(&c, 32, 32, 1, NULL, TS_TYPE_Q4_0), TS_INVAL);
    for (int32_t tp = 1; tp <= 16; tp *= 2) assert_int_equal(make(&c, tp, tp, 1, NULL, TS_TYPE_Q4_0), TS_OK);
    /* 270M and 1B have one KV head: no TP */
    ts_config s = m270m();
    assert_int_equal(make(&s, 2, 2, 1, NULL, TS_TYPE_Q8_0), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "1 KV heads (tp must be one of: 1)"));
}

static void test_world_mismatch_and_auto_pp(void **st) {
    (void)st;
    ts_config c = m27b();
    assert_int_equal(make(&c, 4, 2, 3, NULL, TS_TYPE_Q4_0), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "tp 2 x pp 3 = 6 ranks, but the job has 4"));
    assert_int_equal(make(&c, 5, 2, 0, NULL, TS_TYPE_Q4_0), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "not a multiple of tp 2"));
    assert_int_equal(make(&c, 8, 2, 0, NULL, TS_TYPE_Q4_0), TS_OK);
    assert_int_equal(g_plan.pp, 4);
    assert_int_equal(make(&c, 1, 0, 0, NULL, TS_TYPE_Q4_0), TS_OK);
    assert_int_equal(g_plan.tp, 1);
    assert_int_equal(g_plan.pp, 1);
}

static void test_more_stages_than_layers(void **st) {
    (void)st;
    ts_config c = m270m();
    assert_int_equal(make(&c, 18, 1, 18, NULL, TS_TYPE_Q8_0), TS_OK);
    for (int32_t s = 0; s < 18; s++) assert_int_equal(g_plan.rank[s].l1 - g_plan.rank[s].l0, 1);
    assert_int_equal(make(&c, 19, 1, 19, NULL, TS_TYPE_Q8_0), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "19 pipeline stages but the model has only 18 layers"));
}

static void test_even_split_without_budgets(void **st) {
    (void)st;
    ts_config c = m27b();
    assert_int_equal(make(&c, 2, 1, 2, NULL, TS_TYPE_Q4_0), TS_OK);
    assert_int_equal(g_plan.rank[0].l1, 31);
    assert_int_equal(make(&c, 4, 1, 4, NULL, TS_TYPE_Q4_0), TS_OK);
    int32_t want[] = {16, 16, 15, 15};
    for (int s = 0; s < 4; s++) assert_int_equal(g_plan.rank[s].l1 - g_plan.rank[s].l0, want[s]);
}

static void test_tp_slices_27b(void **st) {
    (void)st;
    ts_config c = m27b();
    assert_int_equal(make(&c, 4, 4, 1, NULL, TS_TYPE_Q4_0), TS_OK);
    assert_int_equal(g_plan.row_align, 32);
    for (int r = 0; r < 4; r++) {
        assert_int_equal(g_plan.rank[r].h0, 8 * r);
        assert_int_equal(g_plan.rank[r].kv0, 4 * r);
        assert_int_equal(g_plan.rank[r].f0, 5376 * r);
        assert_int_equal(g_plan.rank[r].f1, 5376 * (r + 1));
    }
    /* K-quants: 256-element blocks; 21504 = 84 blocks over 16 ranks: 5 or 6 blocks each */
    assert_int_equal(make(&c, 16, 16, 1, NULL, TS_TYPE_Q4_K), TS_OK);
    assert_int_equal(g_plan.row_align, 256);
    for (int r = 0; r < 16; r++) {
        int32_t n = g_plan.rank[r].f1 - g_plan.rank[r].f0;
        assert_true(n == 5 * 256 || n == 6 * 256);
    }
}

static void test_row_parallel_block_alignment(void **st) {
    (void)st;
    /* head_dim 64, 8 heads: with tp 8 one head (64 columns) per rank: not whole Q4_K blocks */
    ts_config c = mk(12, 1024, 4096, 8, 8, 64, 1024);
    assert_int_equal(make(&c, 8, 8, 1, NULL, TS_TYPE_Q4_K), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "not a whole number of 256-element blocks"));
    assert_int_equal(make(&c, 2, 2, 1, NULL, TS_TYPE_Q4_K), TS_OK); /* 4 heads: 256 */
    assert_int_equal(make(&c, 8, 8, 1, NULL, TS_TYPE_Q4_0), TS_OK); /* 64 = 2 x 32 */
    /* an FFN of fewer blocks than ranks */
    ts_config f = mk(12, 1024, 512, 8, 8, 256, 1024);
    assert_int_equal(make(&f, 4, 4, 1, NULL, TS_TYPE_Q4_K), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "only 2 blocks"));
}

static void test_mixed_memory_uneven_stages(void **st) {
    (void)st;
    ts_config c = m27b();
    /* a 24 GiB card and a 12 GiB card: the first stage takes about twice the layers */
    uint64_t mem[] = {24 * GiB, 12 * GiB};
    assert_int_equal(make(&c, 2, 1, 2, mem, TS_TYPE_Q4_0), TS_OK);
    int32_t n0 = g_plan.rank[0].l1, n1 = 62 - n0;
    assert_true(n0 > 36 && n0 < 46);
    (void)n1;
    for (int r = 0; r < 2; r++)
        assert_true(g_plan.rank[r].weight_bytes + g_plan.rank[r].kv_bytes <= mem[r]);
    /* swapped: the second stage takes more */
    uint64_t mem2[] = {12 * GiB, 24 * GiB};
    assert_int_equal(make(&c, 2, 1, 2, mem2, TS_TYPE_Q4_0), TS_OK);
    assert_true(g_plan.rank[0].l1 < 26);
    /* three unequal cards with TP 2 in each stage (six ranks); a stage is as big as its
     * smallest rank */
    uint64_t mem3[] = {16 * GiB, 8 * GiB, 10 * GiB, 10 * GiB, 12 * GiB, 12 * GiB};
    assert_int_equal(make(&c, 6, 2, 3, mem3, TS_TYPE_Q4_0), TS_OK);
    int32_t s0 = g_plan.rank[0].l1 - g_plan.rank[0].l0, s1 = g_plan.rank[2].l1 - g_plan.rank[2].l0,
            s2 = g_plan.rank[4].l1 - g_plan.rank[4].l0;
    assert_true(s0 < s1 && s1 <= s2 + 2);
    for (int r = 0; r < 6; r++)
        assert_true(g_plan.rank[r].weight_bytes + g_plan.rank[r].kv_bytes <= mem3[r]);
}

static void test_global_layers_count_full_context(void **st) {
    (void)st;
    ts_config c = m27b();
    ts_plan_params p = {.world = 1, .tp = 1, .n_ctx = 131072, .weight_type = TS_TYPE_Q4_0};
    assert_int_equal(ts_plan_make(&c, &p, &g_plan), TS_OK);
    /* KV: 10 global layers x 131072 + 52 local x (1024 + 512) positions, 16 x 128 x 2 x 4 B */
    uint64_t per_pos = 2ull * 16 * 128 * 4;
    assert_int_equal(g_plan.rank[0].kv_bytes, per_pos * (10ull * 131072 + 52ull * 1536));
}

static void test_not_enough_memory(void **st) {
    (void)st;
    ts_config c = m27b();
    uint64_t small[] = {4 * GiB, 4 * GiB};
    assert_int_equal(make(&c, 2, 1, 2, small, TS_TYPE_Q4_0), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "weights alone need"));
    /* weights fit, the context does not: says how much context would */
    uint64_t mid[] = {10 * GiB, 10 * GiB};
    ts_plan_params p = {.world = 2, .tp = 1, .pp = 2, .mem_bytes = mid, .n_ctx = 131072,
                        .weight_type = TS_TYPE_Q4_0};
    assert_int_equal(ts_plan_make(&c, &p, &g_plan), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "a context of at most"));
    p.n_ctx = 8192;
    assert_int_equal(ts_plan_make(&c, &p, &g_plan), TS_OK);
}

/* ---------------------------------------------------------------- ts_plan_auto */

static ts_plan_auto_result g_auto; /* large */

static ts_status autoplan(const ts_config *c, int32_t world, const uint64_t *mem,
                          const int32_t *host, int32_t n_ctx, int32_t n_batch) {
    ts_plan_auto_params ap = {.plan = {.world = world, .mem_bytes = mem, .n_ctx = n_ctx,
                                       .weight_type = TS_TYPE_Q4_0},
                              .host = host, .n_batch = n_batch};
    return ts_plan_auto(c, &ap, &g_auto);
}

/* Every layout's max_ctx is exact: its plan fits at max_ctx and not one position more
 * (below the training context), on the budgets less the step buffers. */
static void check_maxima(const ts_config *c, int32_t world, const uint64_t *mem,
                         int32_t n_batch) {
    for (int32_t i = 0; i < g_auto.n_layout; i++) {
        const ts_plan_layout *L = &g_auto.layout[i];
        assert_int_equal(L->tp * L->pp, world);
        uint64_t b[TS_PLAN_MAX_RANKS];
        uint64_t step = n_batch ? ts_plan_step_bytes(c, L->tp, n_batch, 1, 32) : 0;
        for (int32_t r = 0; r < world; r++) b[r] = mem[r] > step ? mem[r] - step : 0;
        ts_plan_params p = {.world = world, .tp = L->tp, .pp = L->pp, .mem_bytes = b,
                            .weight_type = TS_TYPE_Q4_0};
        if (L->max_ctx > 0) {
            p.n_ctx = L->max_ctx;
            assert_int_equal(ts_plan_make(c, &p, &g_plan), TS_OK);
            check_plan(c, &g_plan);
        }
        if (L->max_ctx < (int32_t)c->n_ctx_train && c->n_head_kv % (uint32_t)L->tp == 0) {
            p.n_ctx = L->max_ctx + 1;
            assert_int_equal(ts_plan_make(c, &p, &g_plan), TS_INVAL);
        }
    }
}

/* The chosen layout is the best: no layout holds more; a tie goes to fewer TP ranks. */
static void check_choice(void) {
    int32_t best_ctx = 0, best_tp = 0;
    for (int32_t i = 0; i < g_auto.n_layout; i++)
        if (g_auto.layout[i].max_ctx > best_ctx) {
            best_ctx = g_auto.layout[i].max_ctx;
            best_tp = g_auto.layout[i].tp;
        }
    assert_int_equal(g_auto.max_ctx, best_ctx);
    assert_int_equal(g_auto.tp, best_tp);
    assert_non_null(strstr(g_auto.desc, "auto: tp "));
}

static void test_auto_equal_budgets_all_sizes(void **st) {
    (void)st;
    ts_config cs[] = {m270m(), m1b(), m4b(), m12b(), m27b()};
    /* plenty of memory: every layout holds the whole training context; fewest TP ranks */
    for (size_t i = 0; i < 5; i++) {
        uint64_t mem[4] = {80 * GiB, 80 * GiB, 80 * GiB, 80 * GiB};
        for (int32_t world = 1; world <= 4; world *= 2) {
            assert_int_equal(autoplan(&cs[i], world, mem, NULL, 0, 512), TS_OK);
            assert_int_equal(g_auto.tp, 1);
            assert_int_equal(g_auto.pp, world);
            assert_int_equal(g_auto.max_ctx, 131072);
            assert_int_equal(g_auto.n_ctx, 8192);
            check_choice();
            if (world > 1 && cs[i].n_head_kv > 1) assert_non_null(strstr(g_auto.desc, "a tie"));
            if (cs[i].n_head_kv == 1 && world > 1)
                assert_non_null(strstr(g_auto.desc, "does not divide")); /* tp 2: refused */
        }
    }
    /* modest cards: 27B Q4_0 on 2 x 12 GiB: tp 1 x pp 2 holds more context than tp 2 (every
     * TP rank holds token_embd and a vocabulary slice) */
    ts_config c = m27b();
    uint64_t mem[2] = {12 * GiB, 12 * GiB};
    assert_int_equal(autoplan(&c, 2, mem, NULL, 0, 512), TS_OK);
    check_maxima(&c, 2, mem, 512);
    check_choice();
    assert_int_equal(g_auto.tp, 1);
    assert_int_equal(g_auto.pp, 2);
    assert_true(g_auto.max_ctx > 32768 && g_auto.max_ctx < 131072);
    assert_int_equal(g_auto.n_layout, 2);
    assert_true(g_auto.layout[1].max_ctx > 8192 && g_auto.layout[1].max_ctx < g_auto.max_ctx);
    /* the step buffers count: a larger batch leaves less context */
    int32_t with512 = g_auto.max_ctx;
    assert_int_equal(autoplan(&c, 2, mem, NULL, 0, 4096), TS_OK);
    assert_true(g_auto.max_ctx < with512);
    check_maxima(&c, 2, mem, 4096);
    /* 12B on four 8 GiB cards */
    ts_config c12 = m12b();
    uint64_t m8[4] = {8 * GiB, 8 * GiB, 8 * GiB, 8 * GiB};
    assert_int_equal(autoplan(&c12, 4, m8, NULL, 0, 512), TS_OK);
    check_maxima(&c12, 4, m8, 512);
    check_choice();
    assert_int_equal(g_auto.n_layout, 3);
}

static void test_auto_two_to_one(void **st) {
    (void)st;
    ts_config cs[] = {m4b(), m12b(), m27b()};
    for (size_t i = 0; i < 3; i++) {
        const ts_config *c = &cs[i];
        /* the first card twice the second: pp (a stage as big as its card) beats tp (every
         * TP rank limited by the smaller card), and the first stage takes about 2/3 */
        uint64_t mem[2] = {16 * GiB, 8 * GiB};
        int32_t want = 8192;
        assert_int_equal(autoplan(c, 2, mem, NULL, want, 512), TS_OK);
        check_maxima(c, 2, mem, 512);
        check_choice();
        assert_int_equal(g_auto.tp, 1);
        uint64_t b[2];
        uint64_t step = ts_plan_step_bytes(c, 1, 512, 1, 32);
        for (int r = 0; r < 2; r++) b[r] = mem[r] - step;
        ts_plan_params p = {.world = 2, .tp = 1, .pp = 2, .mem_bytes = b, .n_ctx = want,
                            .weight_type = TS_TYPE_Q4_0};
        assert_int_equal(ts_plan_make(c, &p, &g_plan), TS_OK);
        int32_t n0 = g_plan.rank[0].l1, L = (int32_t)c->n_layer;
        assert_true(n0 * 100 > L * 55 && n0 * 100 < L * 80); /* between 55 % and 80 % */
        /* swapped: the second stage takes more */
        uint64_t sw[2] = {8 * GiB, 16 * GiB};
        assert_int_equal(autoplan(c, 2, sw, NULL, want, 512), TS_OK);
        check_choice();
        b[0] = sw[0] - step;
        b[1] = sw[1] - step;
        assert_int_equal(ts_plan_make(c, &p, &g_plan), TS_OK);
        assert_true(g_plan.rank[0].l1 * 2 < L);
    }
}

static void test_auto_hosts(void **st) {
    (void)st;
    ts_config c = m27b();
    uint64_t mem[4] = {10 * GiB, 10 * GiB, 10 * GiB, 10 * GiB};
    /* two hosts of two ranks: tp 4 would span them; tp 1 and 2 are fine */
    int32_t two[4] = {0, 0, 1, 1};
    assert_int_equal(autoplan(&c, 4, mem, two, 0, 512), TS_OK);
    assert_int_equal(g_auto.n_layout, 3);
    assert_int_equal(g_auto.layout[2].tp, 4);
    assert_int_equal(g_auto.layout[2].max_ctx, 0);
    assert_non_null(strstr(g_auto.layout[2].why, "would span hosts"));
    assert_true(g_auto.layout[1].max_ctx > 0);
    check_choice();
    /* every rank on its own host: only tp 1 */
    int32_t four[4] = {0, 1, 2, 3};
    assert_int_equal(autoplan(&c, 4, mem, four, 0, 512), TS_OK);
    assert_int_equal(g_auto.tp, 1);
    assert_int_equal(g_auto.layout[1].max_ctx, 0);
    /* a fixed tp only considers that layout */
    ts_plan_auto_params ap = {.plan = {.world = 4, .tp = 2, .mem_bytes = mem,
                                       .weight_type = TS_TYPE_Q4_0},
                              .n_batch = 512};
    assert_int_equal(ts_plan_auto(&c, &ap, &g_auto), TS_OK);
    assert_int_equal(g_auto.n_layout, 1);
    assert_int_equal(g_auto.tp, 2);
    assert_int_equal(g_auto.pp, 2);
    ap.host = four;
    assert_int_equal(ts_plan_auto(&c, &ap, &g_auto), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "would span hosts"));
    /* a fixed tp that does not divide the ranks */
    ap.host = NULL;
    ap.plan.world = 3;
    assert_int_equal(ts_plan_auto(&c, &ap, &g_auto), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "no layout of 3 ranks has tp 2"));
}

/* "K ranks of X would (tp T x pp P)": K ranks of X hold it and K - 1 do not. */
static void check_ranks_hint(const ts_config *c, uint64_t each, int32_t n_ctx) {
    const char *h = strstr(g_auto.desc, " ranks of ");
    assert_non_null(h);
    const char *k0 = h;
    while (k0 > g_auto.desc && k0[-1] >= '0' && k0[-1] <= '9') k0--;
    int32_t k = 0;
    assert_int_equal(sscanf(k0, "%d", &k), 1);
    assert_true(k > 1 && k <= TS_PLAN_MAX_RANKS);
    static uint64_t m[TS_PLAN_MAX_RANKS];
    for (int32_t r = 0; r < k; r++) m[r] = each;
    static ts_plan_auto_result save;
    save = g_auto;
    assert_int_equal(autoplan(c, k, m, NULL, n_ctx, 512), TS_OK);
    assert_int_equal(autoplan(c, k - 1, m, NULL, n_ctx, 512), TS_INVAL);
    g_auto = save;
}

static void test_auto_refusals(void **st) {
    (void)st;
    ts_config c = m27b();
    /* the weights do not fit two 6 GiB cards: says how much is needed and how many would */
    uint64_t six[2] = {6 * GiB, 6 * GiB};
    assert_int_equal(autoplan(&c, 2, six, NULL, 0, 512), TS_INVAL);
    assert_int_equal(g_auto.tp, 0);
    assert_non_null(strstr(ts_last_error(), "no layout of 2 ranks holds the weights"));
    assert_non_null(strstr(g_auto.desc, "the ranks have 12.0 GiB (2 x 6.0 GiB)"));
    assert_non_null(strstr(g_auto.desc, "weights 14.2 GiB"));
    check_ranks_hint(&c, 6 * GiB, 8192);
    /* the weights fit, the context asked for does not: the most context any layout holds */
    uint64_t twelve[2] = {12 * GiB, 12 * GiB};
    assert_int_equal(autoplan(&c, 2, twelve, NULL, 131072, 512), TS_INVAL);
    assert_non_null(strstr(g_auto.desc, "no layout of 2 ranks holds the model for a context "
                                        "of 131072"));
    char want[96];
    snprintf(want, sizeof want, "The most context any layout holds is %d (tp 1 x pp 2)",
             g_auto.layout[0].max_ctx);
    assert_non_null(strstr(g_auto.desc, want));
    int32_t most = g_auto.layout[0].max_ctx;
    assert_int_equal(autoplan(&c, 2, twelve, NULL, most, 512), TS_OK); /* which it does */
    assert_int_equal(autoplan(&c, 2, twelve, NULL, most + 1, 512), TS_INVAL);
    /* one card far too small (the last stage holds the LM head): the other two alone fit */
    uint64_t one_small[3] = {16 * GiB, 16 * GiB, GiB / 10};
    assert_int_equal(autoplan(&c, 3, one_small, NULL, 0, 512), TS_INVAL);
    assert_non_null(strstr(g_auto.desc, "Rank 2 (102.4 MiB) is too small: the other 2 ranks "
                                        "alone would hold it (tp 1 x pp 2)"));
    assert_int_equal(autoplan(&c, 2, one_small, NULL, 0, 512), TS_OK);
    /* the step buffers alone take the budgets */
    uint64_t tiny[2] = {64ull << 20, 64ull << 20};
    assert_int_equal(autoplan(&c, 2, tiny, NULL, 0, 512), TS_INVAL);
    assert_non_null(strstr(g_auto.desc, "step buffers for a batch of 512 tokens alone"));
    /* 270M on 100 MiB ranks: the first stage's token_embd (94 MiB at Q4_0) and the step
     * buffers (8 MiB of logit rows) never fit one rank, however many there are */
    ts_config s = m270m();
    uint64_t small[3] = {100ull << 20, 100ull << 20, 100ull << 20};
    assert_int_equal(autoplan(&s, 3, small, NULL, 0, 64), TS_INVAL);
    assert_non_null(strstr(g_auto.desc, "no layout of 3 ranks holds the weights"));
    assert_non_null(strstr(g_auto.desc, "more memory per rank is needed"));
    /* at 128 MiB it fits one stage of embedding + layers: three ranks do */
    uint64_t enough[3] = {128ull << 20, 128ull << 20, 128ull << 20};
    assert_int_equal(autoplan(&s, 3, enough, NULL, 0, 64), TS_OK);
    assert_int_equal(g_auto.pp, 3);
    /* bad input */
    assert_int_equal(autoplan(&c, 2, NULL, NULL, 0, 512), TS_INVAL);
    assert_int_equal(autoplan(&c, 0, six, NULL, 0, 512), TS_INVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_sizes_valid_shapes),
        cmocka_unit_test(test_27b_tp_must_divide_kv_heads),
        cmocka_unit_test(test_world_mismatch_and_auto_pp),
        cmocka_unit_test(test_more_stages_than_layers),
        cmocka_unit_test(test_even_split_without_budgets),
        cmocka_unit_test(test_tp_slices_27b),
        cmocka_unit_test(test_row_parallel_block_alignment),
        cmocka_unit_test(test_mixed_memory_uneven_stages),
        cmocka_unit_test(test_global_layers_count_full_context),
        cmocka_unit_test(test_not_enough_memory),
        cmocka_unit_test(test_auto_equal_budgets_all_sizes),
        cmocka_unit_test(test_auto_two_to_one),
        cmocka_unit_test(test_auto_hosts),
        cmocka_unit_test(test_auto_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
