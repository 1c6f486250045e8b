/* test_sampler.c: the token sampler and the stop-string helpers.
 *
 * Everything is seeded, so every run draws the same numbers: the statistical tests are
 * deterministic and their thresholds are generous (a chi-square bound at z = 6).
 * Reference values (nucleus, min-p set, top-k set, softmax) are computed here
 * independently, in double with libm, never with the sampler's own code. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "sampler.h"

/* ---------------------------------------------------------------- helpers */

/* Test-side generator for logits (independent of the sampler's PRNG). */
static uint64_t g_state;
static void trng_seed(uint64_t s) { g_state = s * 2862933555777941757ull + 3037000493ull; }
static uint64_t trng(void) {
    g_state ^= g_state >> 12;
    g_state ^= g_state << 25;
    g_state ^= g_state >> 27;
    return g_state * 0x2545F4914F6CDD1Dull;
}
static double trng_unif(void) { return (double)(trng() >> 11) * 0x1.0p-53; }
/* Roughly normal (sum of 4 uniforms), mean 0, standard deviation sd. */
static float trng_logit(double sd) {
    double x = trng_unif() + trng_unif() + trng_unif() + trng_unif() - 2.0;
    return (float)(x * sd * 1.7320508);
}
static void random_logits(float *l, size_t n, double sd) {
    for (size_t i = 0; i < n; i++) l[i] = trng_logit(sd);
}
/* LLM-like: a broad background plus `hot` tokens raised by 8..14. */
static void peaked_logits(float *l, size_t n, size_t hot) {
    random_logits(l, n, 2.0);
    for (size_t i = 0; i < hot; i++) l[trng() % n] += (float)(8.0 + 6.0 * trng_unif());
}

static ts_sampler *make(const ts_sampler_params *p, uint32_t V) {
    ts_sampler *s = NULL;
    assert_int_equal(ts_sampler_create(p, V, &s), TS_OK);
    assert_non_null(s);
    return s;
}

static int32_t draw(ts_sampler *s, const float *l) {
    int32_t t = -1;
    assert_int_equal(ts_sampler_sample(s, l, &t), TS_OK);
    return t;
}

/* Reference probabilities softmax(l / T) in double. */
static void ref_probs(const float *l, size_t n, double T, double *p) {
    double m = -INFINITY, z = 0;
    for (size_t i = 0; i < n; i++)
        if (l[i] > m) m = l[i];
    for (size_t i = 0; i < n; i++) z += (p[i] = exp(((double)l[i] - m) / T));
    for (size_t i = 0; i < n; i++) p[i] /= z;
}

/* Ids sorted by (p desc, id asc). */
static const double *g_sort_p;
static int cmp_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_sort_p[x] != g_sort_p[y]) return g_sort_p[x] > g_sort_p[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}
static void ref_order(const double *p, size_t n, int32_t *ord) {
    for (size_t i = 0; i < n; i++) ord[i] = (int32_t)i;
    g_sort_p = p;
    qsort(ord, n, sizeof *ord, cmp_desc);
}

/* Nucleus: in[i] = 1 for members; returns its size. *margin = distance of the cumulative
 * sums next to the boundary from top_p (to be sure rounding cannot move it). */
static size_t ref_nucleus(const double *p, size_t n, double top_p, char *in, double *margin) {
    int32_t *ord = malloc(n * sizeof *ord);
    assert_non_null(ord);
    ref_order(p, n, ord);
    memset(in, 0, n);
    double cum = 0, before = 0;
    size_t k = 0;
    while (k < n) {
        before = cum;
        cum += p[ord[k]];
        in[ord[k]] = 1;
        k++;
        if (cum >= top_p) break;
    }
    if (margin) *margin = fmin(fabs(cum - top_p), fabs(top_p - before));
    free(ord);
    return k;
}

/* Wilson-Hilferty approximation of the chi-square quantile at standard normal z. */
static double chi2_bound(int df, double z) {
    double a = 2.0 / (9.0 * df);
    return df * pow(1.0 - a + z * sqrt(a), 3.0);
}

/* Chi-square statistic of counts against probabilities (cells with p > 0). Also checks
 * that no count falls in a cell of probability 0. */
static double chi2(const long *cnt, const double *p, size_t n, long draws, int *df) {
    double x = 0;
    int cells = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] <= 0) {
            assert_int_equal(cnt[i], 0);
            continue;
        }
        double e = p[i] * (double)draws;
        x += ((double)cnt[i] - e) * ((double)cnt[i] - e) / e;
        cells++;
    }
    *df = cells - 1;
    return x;
}

/* ---------------------------------------------------------------- validation */

static void expect_inval(ts_sampler_params p, const char *field, const char *range) {
    assert_int_equal(ts_sampler_params_validate(&p), TS_INVAL);
    const char *msg = ts_last_error();
    if (!strstr(msg, field) || !strstr(msg, range))
        fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", msg, field, range);
    ts_sampler *s = (ts_sampler *)0x1;
    assert_int_equal(ts_sampler_create(&p, 10, &s), TS_INVAL);
    assert_null(s);
}

static void test_validate(void **state) {
    (void)state;
    ts_sampler_params d = ts_sampler_params_default(), p;
    assert_int_equal(ts_sampler_params_validate(&d), TS_OK);
    assert_true(d.temperature == 1.0f && d.top_k == 0 && d.top_p == 1.0f && d.min_p == 0.0f &&
                d.repetition_penalty == 1.0f && d.repetition_window == 0 &&
                d.presence_penalty == 0.0f && d.frequency_penalty == 0.0f);

    /* Edges that are allowed. */
    p = d; p.temperature = 0; assert_int_equal(ts_sampler_params_validate(&p), TS_OK);
    p = d; p.temperature = 100; assert_int_equal(ts_sampler_params_validate(&p), TS_OK);
    p = d; p.top_p = 1e-6f; assert_int_equal(ts_sampler_params_validate(&p), TS_OK);
    p = d; p.min_p = 0.999f; assert_int_equal(ts_sampler_params_validate(&p), TS_OK);
    p = d; p.repetition_penalty = 10; assert_int_equal(ts_sampler_params_validate(&p), TS_OK);
    p = d; p.presence_penalty = -2; p.frequency_penalty = 2;
    assert_int_equal(ts_sampler_params_validate(&p), TS_OK);
    p = d; p.top_k = UINT32_MAX; p.repetition_window = TS_SAMPLER_MAX_WINDOW;
    assert_int_equal(ts_sampler_params_validate(&p), TS_OK);

    p = d; p.temperature = -0.1f; expect_inval(p, "temperature", "[0, 100]");
    p = d; p.temperature = 100.5f; expect_inval(p, "temperature", "[0, 100]");
    p = d; p.temperature = NAN; expect_inval(p, "temperature", "[0, 100]");
    p = d; p.top_p = 0; expect_inval(p, "top_p", "(0, 1]");
    p = d; p.top_p = 1.01f; expect_inval(p, "top_p", "(0, 1]");
    p = d; p.top_p = NAN; expect_inval(p, "top_p", "(0, 1]");
    p = d; p.min_p = 1; expect_inval(p, "min_p", "[0, 1)");
    p = d; p.min_p = -0.01f; expect_inval(p, "min_p", "[0, 1)");
    p = d; p.repetition_penalty = 0; expect_inval(p, "repetition_penalty", "(0, 10]");
    p = d; p.repetition_penalty = 10.5f; expect_inval(p, "repetition_penalty", "(0, 10]");
    p = d; p.repetition_penalty = NAN; expect_inval(p, "repetition_penalty", "(0, 10]");
    p = d; p.repetition_window = TS_SAMPLER_MAX_WINDOW + 1;
    expect_inval(p, "repetition_window", "[0, 1048576]");
    p = d; p.presence_penalty = 2.5f; expect_inval(p, "presence_penalty", "[-2, 2]");
    p = d; p.presence_penalty = -2.5f; expect_inval(p, "presence_penalty", "[-2, 2]");
    p = d; p.frequency_penalty = 3; expect_inval(p, "frequency_penalty", "[-2, 2]");
    p = d; p.frequency_penalty = NAN; expect_inval(p, "frequency_penalty", "[-2, 2]");

    ts_sampler *s = NULL;
    assert_int_equal(ts_sampler_create(&d, 0, &s), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "n_vocab"));
    assert_int_equal(ts_sampler_create(&d, 0x80000000u, &s), TS_INVAL);
    assert_int_equal(ts_sampler_params_validate(NULL), TS_INVAL);
}

/* ---------------------------------------------------------------- greedy */

static void test_greedy(void **state) {
    (void)state;
    ts_sampler_params p = ts_sampler_params_default();
    p.temperature = 0;
    p.top_k = 3; /* irrelevant for greedy */
    p.top_p = 0.5f;
    ts_sampler *s = make(&p, 6);
    float a[6] = {1, 5, 2, 5, 5, -INFINITY};
    assert_int_equal(draw(s, a), 1); /* ties: lowest id */
    float b[6] = {-INFINITY, -INFINITY, -3, -INFINITY, -3, -7};
    assert_int_equal(draw(s, b), 2);
    float c[6] = {0, 0, 0, 0, 0, 0};
    assert_int_equal(draw(s, c), 0);
    ts_sampler_destroy(s);

    /* Random vocabularies against a plain argmax. */
    enum { V = 5000 };
    static float l[V];
    s = make(&p, V);
    trng_seed(1);
    for (int r = 0; r < 200; r++) {
        random_logits(l, V, 3.0);
        if (r % 3 == 0) l[trng() % V] = l[trng() % V]; /* plant a possible tie */
        int32_t want = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[want]) want = i;
        assert_int_equal(draw(s, l), want);
    }
    ts_sampler_destroy(s);
}

/* ---------------------------------------------------------------- reproducibility */

/* All-equal logits: every weight is exactly 1, so the token is floor(u * V) with u the
 * xoshiro256** output (seeded by splitmix64(12345)) >> 11 scaled by 2^-53. The expected
 * values come from an independent Python implementation of both generators. */
static void test_golden_prng(void **state) {
    (void)state;
    static const int32_t want[16] = {743, 130, 963, 48,  555, 10,  159, 295,
                                     385, 910, 781, 537, 839, 941, 135, 864};
    enum { V = 1000 };
    static float l[V];
    ts_sampler_params p = ts_sampler_params_default();
    p.seed = 12345;
    ts_sampler *s = make(&p, V);
    for (int i = 0; i < 16; i++) assert_int_equal(draw(s, l), want[i]);
    ts_sampler_reset(s);
    for (int i = 0; i < 16; i++) assert_int_equal(draw(s, l), want[i]);
    ts_sampler_destroy(s);
}

static void run_sequence(const ts_sampler_params *p, uint32_t V, int n, int32_t *out,
                         ts_sampler *reuse) {
    float *l = malloc(V * sizeof *l);
    assert_non_null(l);
    ts_sampler *s = reuse ? reuse : make(p, V);
    trng_seed(77);
    for (int i = 0; i < n; i++) {
        random_logits(l, V, 2.5);
        out[i] = draw(s, l);
        assert_int_equal(ts_sampler_accept(s, out[i]), TS_OK);
    }
    if (!reuse) ts_sampler_destroy(s);
    free(l);
}

static void test_seed_reproducible(void **state) {
    (void)state;
    enum { N = 1000, V = 2000 };
    static int32_t a[N], b[N], c[N], d[N];
    ts_sampler_params p = ts_sampler_params_default();
    p.temperature = 0.9f;
    p.top_k = 50;
    p.top_p = 0.95f;
    p.min_p = 0.01f;
    p.repetition_penalty = 1.1f;
    p.repetition_window = 64;
    p.presence_penalty = 0.2f;
    p.frequency_penalty = 0.1f;
    p.seed = 0xC0FFEE;
    run_sequence(&p, V, N, a, NULL);
    run_sequence(&p, V, N, b, NULL);
    assert_memory_equal(a, b, sizeof a);

    /* reset = fresh sampler */
    ts_sampler *s = make(&p, V);
    run_sequence(&p, V, N, c, s);
    ts_sampler_reset(s);
    run_sequence(&p, V, N, c, s);
    assert_memory_equal(a, c, sizeof a);
    ts_sampler_destroy(s);

    /* Another seed gives another sequence. */
    p.seed = 0xC0FFEF;
    run_sequence(&p, V, N, d, NULL);
    int diff = 0;
    for (int i = 0; i < N; i++) diff += a[i] != d[i];
    assert_true(diff > N / 2);

    /* Dense path (no top-k) too. */
    p.top_k = 0;
    p.seed = 5;
    run_sequence(&p, V, 200, a, NULL);
    run_sequence(&p, V, 200, b, NULL);
    assert_memory_equal(a, b, 200 * sizeof a[0]);
}

/* ---------------------------------------------------------------- top-k */

static void test_topk_stat(void **state) {
    (void)state;
    enum { V = 1000, K = 10, DRAWS = 100000 };
    static float l[V];
    static double p[V];
    static int32_t ord[V];
    static long cnt[V];
    trng_seed(2);
    random_logits(l, V, 2.0);
    ref_probs(l, V, 1.0, p);
    ref_order(p, V, ord);
    char in[V] = {0};
    for (int i = 0; i < K; i++) in[ord[i]] = 1;

    ts_sampler_params sp = ts_sampler_params_default();
    sp.temperature = 1.5f;
    sp.top_k = K;
    sp.seed = 3;
    ts_sampler *s = make(&sp, V);
    for (long i = 0; i < DRAWS; i++) {
        int32_t t = draw(s, l);
        if (!in[t]) fail_msg("top-k drew token %d outside the top %d", t, K);
        cnt[t]++;
    }
    for (int i = 0; i < K; i++) assert_true(cnt[ord[i]] > 0);
    ts_sampler_destroy(s);

    /* k = 1 is greedy. */
    sp.top_k = 1;
    s = make(&sp, V);
    for (int i = 0; i < 100; i++) assert_int_equal(draw(s, l), ord[0]);
    ts_sampler_destroy(s);

    /* Truncated + renormalized: top-5 at T = 0.8 matches softmax over the five. */
    sp.top_k = 5;
    sp.temperature = 0.8f;
    s = make(&sp, V);
    double q[V] = {0};
    double z = 0;
    for (int i = 0; i < 5; i++) z += q[ord[i]] = exp((double)l[ord[i]] / 0.8);
    for (int i = 0; i < 5; i++) q[ord[i]] /= z;
    memset(cnt, 0, sizeof cnt);
    for (long i = 0; i < DRAWS; i++) cnt[draw(s, l)]++;
    int df;
    double x = chi2(cnt, q, V, DRAWS, &df);
    assert_int_equal(df, 4);
    if (x > chi2_bound(df, 6.0)) fail_msg("top-k chi2 %g > %g", x, chi2_bound(df, 6.0));
    ts_sampler_destroy(s);
}

/* Large vocabulary: heap selection (k <= 1024) and quickselect (k > 1024), with ties. */
static void test_topk_large(void **state) {
    (void)state;
    enum { V = 262144 };
    float *l = malloc(V * sizeof *l);
    double *p = malloc(V * sizeof *p);
    int32_t *ord = malloc(V * sizeof *ord);
    char *in = malloc(V);
    assert_true(l && p && ord && in);
    trng_seed(4);
    random_logits(l, V, 3.0);
    for (int i = 0; i < 3000; i++) l[trng() % V] = 9.0f; /* many ties at the top */
    ref_probs(l, V, 1.0, p);
    ref_order(p, V, ord);
    const uint32_t ks[] = {1, 40, 1024, 1025, 2500, 5000, V - 1};
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        uint32_t k = ks[ki];
        memset(in, 0, V);
        for (uint32_t i = 0; i < k; i++) in[ord[i]] = 1; /* ties: lowest ids */
        ts_sampler_params sp = ts_sampler_params_default();
        sp.top_k = k;
        sp.temperature = 2.0f;
        sp.seed = k;
        ts_sampler *s = make(&sp, V);
        for (int i = 0; i < 300; i++) {
            int32_t t = draw(s, l);
            if (!in[t]) fail_msg("k=%u drew %d outside the top-k", k, t);
        }
        ts_sampler_destroy(s);
    }
    free(l);
    free(p);
    free(ord);
    free(in);
}

/* ---------------------------------------------------------------- top-p */

static void check_topp(const float *l, size_t V, float T, float top_p, long draws,
                       uint64_t seed, bool check_all_drawn) {
    double *p = malloc(V * sizeof *p);
    char *in = malloc(V);
    long *cnt = calloc(V, sizeof *cnt);
    assert_true(p && in && cnt);
    ref_probs(l, V, T, p);
    double margin;
    size_t nn = ref_nucleus(p, V, top_p, in, &margin);
    /* float weights carry ~2 ulp: 1e-6 is far beyond the sampler's rounding */
    if (margin < 1e-6) fail_msg("test data too close to the nucleus boundary (%g)", margin);
    ts_sampler_params sp = ts_sampler_params_default();
    sp.temperature = T;
    sp.top_p = top_p;
    sp.seed = seed;
    ts_sampler *s = make(&sp, (uint32_t)V);
    for (long i = 0; i < draws; i++) {
        int32_t t = draw(s, l);
        if (!in[t]) fail_msg("top-p drew %d outside the nucleus of %zu tokens", t, nn);
        cnt[t]++;
    }
    if (check_all_drawn) {
        /* and the distribution over the nucleus is the renormalized one */
        double z = 0;
        for (size_t i = 0; i < V; i++) z += in[i] ? p[i] : 0;
        for (size_t i = 0; i < V; i++) p[i] = in[i] ? p[i] / z : 0;
        int df;
        double x = chi2(cnt, p, V, draws, &df);
        assert_int_equal(df, (int)nn - 1);
        if (df > 0 && x > chi2_bound(df, 6.0))
            fail_msg("top-p chi2 %g > %g (df %d)", x, chi2_bound(df, 6.0), df);
    }
    ts_sampler_destroy(s);
    free(p);
    free(in);
    free(cnt);
}

static void test_topp_stat(void **state) {
    (void)state;
    enum { V = 1000 };
    static float l[V];
    trng_seed(5);
    random_logits(l, V, 2.0);
    check_topp(l, V, 1.0f, 0.7f, 100000, 6, true);
    check_topp(l, V, 0.5f, 0.9f, 100000, 7, true);
    check_topp(l, V, 1.0f, 0.05f, 1000, 8, true); /* tiny nucleus: one token */

    /* Large dense vocabulary (the cutoff path). */
    enum { VL = 262144 };
    float *ll = malloc(VL * sizeof *ll);
    assert_non_null(ll);
    trng_seed(9);
    peaked_logits(ll, VL, 200);
    check_topp(ll, VL, 1.0f, 0.9f, 2000, 10, false);
    check_topp(ll, VL, 0.7f, 0.5f, 2000, 11, false);
    /* Flat: a nucleus of ~10^5 tokens of probability ~4e-6 each. Take the first top_p
     * from 0.30 whose boundary is clear of rounding (deterministic choice). */
    random_logits(ll, VL, 1.0);
    double *pp = malloc(VL * sizeof *pp);
    char *in = malloc(VL);
    assert_true(pp && in);
    ref_probs(ll, VL, 1.0, pp);
    float tp = 0.30f;
    for (;; tp += 0.01f) {
        double margin;
        ref_nucleus(pp, VL, tp, in, &margin);
        if (margin >= 1e-6) break;
    }
    free(pp);
    free(in);
    check_topp(ll, VL, 1.0f, tp, 300, 15, false);
    free(ll);
}

/* A long flat tail: the tokens within e^-6.9 of the max hold less than top_p, so the
 * sampler must fall back from its first tier to all candidates above the cutoff. Tail
 * tokens tie, so the nucleus takes the lowest ids; allow one token of rounding slack. */
static void test_topp_flat_tail(void **state) {
    (void)state;
    enum { V = 6001 };
    static float l[V];
    static double p[V];
    static char in[V];
    for (int i = 0; i < V; i++) l[i] = -8.0f;
    l[3000] = 0.0f;
    ref_probs(l, V, 1.0, p);
    size_t nn = ref_nucleus(p, V, 0.9, in, NULL);
    assert_true(nn > 1000 && nn < V);
    int32_t last_in = 0; /* highest tail id inside the reference nucleus */
    for (int i = 0; i < V; i++)
        if (in[i] && i != 3000) last_in = i;
    ts_sampler_params sp = ts_sampler_params_default();
    sp.top_p = 0.9f;
    sp.seed = 12;
    ts_sampler *s = make(&sp, V);
    int32_t hi = 0;
    long top = 0;
    for (int i = 0; i < 20000; i++) {
        int32_t t = draw(s, l);
        if (t == 3000) { top++; continue; }
        if (t > last_in + 1) fail_msg("drew tail token %d beyond the nucleus (%d)", t, last_in);
        if (t > hi) hi = t;
    }
    assert_true(hi > last_in - 200); /* the nucleus really extends that far */
    /* P(top) = 1 / (nucleus weight, about 0.9 * (1 + 6000 e^-8)) = 0.369: 7377 expected,
     * standard deviation 68 */
    assert_true(top > 7000 && top < 7750);
    ts_sampler_destroy(s);
}

/* ---------------------------------------------------------------- min-p */

static void test_minp_stat(void **state) {
    (void)state;
    enum { V = 1000, DRAWS = 100000 };
    static float l[V];
    static double p[V];
    static long cnt[V];
    trng_seed(13);
    random_logits(l, V, 2.0);
    const double T = 0.8, min_p = 0.05;
    ref_probs(l, V, T, p);
    double pmax = 0;
    for (int i = 0; i < V; i++) pmax = fmax(pmax, p[i]);
    char in[V];
    int n_in = 0;
    for (int i = 0; i < V; i++) {
        double r = p[i] / pmax;
        if (fabs(r - min_p) < 1e-5) fail_msg("test data too close to the min-p boundary");
        in[i] = r >= min_p;
        n_in += in[i];
    }
    assert_true(n_in > 3 && n_in < V / 2);
    ts_sampler_params sp = ts_sampler_params_default();
    sp.temperature = (float)T;
    sp.min_p = (float)min_p;
    sp.seed = 14;
    ts_sampler *s = make(&sp, V);
    for (long i = 0; i < DRAWS; i++) {
        int32_t t = draw(s, l);
        if (!in[t]) fail_msg("min-p drew %d below the threshold", t);
        cnt[t]++;
    }
    double z = 0;
    for (int i = 0; i < V; i++) z += in[i] ? p[i] : 0;
    for (int i = 0; i < V; i++) p[i] = in[i] ? p[i] / z : 0;
    int df;
    double x = chi2(cnt, p, V, DRAWS, &df);
    if (x > chi2_bound(df, 6.0)) fail_msg("min-p chi2 %g > %g", x, chi2_bound(df, 6.0));
    ts_sampler_destroy(s);

    /* Combined top-k 100 -> T -> top-p 0.9 -> min-p 0.02 against the reference chain. */
    double *q = calloc(V, sizeof *q);
    int32_t ord[V];
    ref_probs(l, V, 1.0, q);
    ref_order(q, V, ord);
    double zz = 0;
    memset(q, 0, V * sizeof *q);
    for (int i = 0; i < 100; i++) zz += q[ord[i]] = exp((double)l[ord[i]] / 0.7);
    for (int i = 0; i < 100; i++) q[ord[i]] /= zz;
    double margin;
    ref_nucleus(q, V, 0.9, in, &margin);
    assert_true(margin > 1e-5);
    double qmax = q[ord[0]];
    for (int i = 0; i < V; i++) in[i] = in[i] && q[i] >= 0.02 * qmax;
    sp.temperature = 0.7f;
    sp.top_k = 100;
    sp.top_p = 0.9f;
    sp.min_p = 0.02f;
    s = make(&sp, V);
    for (long i = 0; i < DRAWS / 4; i++) {
        int32_t t = draw(s, l);
        if (!in[t]) fail_msg("top-k/top-p/min-p drew %d outside the final set", t);
    }
    ts_sampler_destroy(s);
    free(q);
}

/* ---------------------------------------------------------------- temperature */

static void check_temperature(float T, uint64_t seed) {
    enum { V = 20, DRAWS = 100000 };
    float l[V];
    double p[V], wrong[V];
    long cnt[V] = {0};
    trng_seed(seed);
    for (int i = 0; i < V; i++) l[i] = (float)(trng_unif() * 4.0 - 2.0);
    ref_probs(l, V, T, p);
    ref_probs(l, V, 1.0, wrong);
    ts_sampler_params sp = ts_sampler_params_default();
    sp.temperature = T;
    sp.seed = seed;
    ts_sampler *s = make(&sp, V);
    for (long i = 0; i < DRAWS; i++) cnt[draw(s, l)]++;
    ts_sampler_destroy(s);
    int df;
    double x = chi2(cnt, p, V, DRAWS, &df), bound = chi2_bound(df, 6.0);
    assert_int_equal(df, V - 1);
    if (x > bound) fail_msg("T=%g: chi2 %g > %g", (double)T, x, bound);
    /* The test has power: the T = 1 distribution is rejected. */
    double xw = chi2(cnt, wrong, V, DRAWS, &df);
    if (xw < 10 * bound) fail_msg("T=%g: chi2 against T=1 only %g", (double)T, xw);
}

static void test_temperature_chi2(void **state) {
    (void)state;
    check_temperature(0.7f, 21);
    check_temperature(2.5f, 22);
    check_temperature(0.35f, 23);
}

/* ---------------------------------------------------------------- penalties */

static void test_penalties_exact(void **state) {
    (void)state;
    enum { V = 8 };
    const float base[V] = {3, -1, 0.5f, 2, -4, 0, 1, -0.5f};
    const int32_t seen[] = {0, 0, 1, 3, 0, 5}; /* counts: 0:3 1:1 3:1 5:1 */
    float l[V];
    ts_sampler_params sp = ts_sampler_params_default();
    sp.repetition_penalty = 2.0f;
    sp.presence_penalty = 0.5f;
    sp.frequency_penalty = 0.25f;
    ts_sampler *s = make(&sp, V);
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++)
        assert_int_equal(ts_sampler_accept(s, seen[i]), TS_OK);
    assert_int_equal(ts_sampler_count(s, 0), 3);
    assert_int_equal(ts_sampler_count(s, 2), 0);
    memcpy(l, base, sizeof l);
    ts_sampler_apply_penalties(s, l);
    /* positive: divided; negative: multiplied; then - count*freq - presence */
    const float want[V] = {3.0f / 2 - 3 * 0.25f - 0.5f, -1.0f * 2 - 0.25f - 0.5f, 0.5f,
                           2.0f / 2 - 0.25f - 0.5f,     -4,                       0 - 0.75f,
                           1,                           -0.5f};
    for (int i = 0; i < V; i++) assert_float_equal(l[i], want[i], 1e-6);
    assert_float_equal(l[0], 0.25f, 1e-6);
    assert_float_equal(l[1], -2.75f, 1e-6);
    ts_sampler_destroy(s);

    /* Multiplicative only. */
    sp = ts_sampler_params_default();
    sp.repetition_penalty = 1.25f;
    s = make(&sp, V);
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++) ts_sampler_accept(s, seen[i]);
    memcpy(l, base, sizeof l);
    ts_sampler_apply_penalties(s, l);
    assert_float_equal(l[0], 2.4f, 1e-6);
    assert_float_equal(l[1], -1.25f, 1e-6);
    assert_float_equal(l[3], 1.6f, 1e-6);
    assert_float_equal(l[5], 0.0f, 1e-6);
    assert_float_equal(l[2], 0.5f, 0);
    ts_sampler_destroy(s);

    /* Additive only, negative values (encourage repetition). */
    sp = ts_sampler_params_default();
    sp.presence_penalty = -1.0f;
    sp.frequency_penalty = -0.5f;
    s = make(&sp, V);
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++) ts_sampler_accept(s, seen[i]);
    memcpy(l, base, sizeof l);
    ts_sampler_apply_penalties(s, l);
    assert_float_equal(l[0], 3 + 1.5f + 1, 1e-6);
    assert_float_equal(l[1], -1 + 0.5f + 1, 1e-6);
    assert_float_equal(l[4], -4, 0);
    ts_sampler_destroy(s);

    /* sample() applies them (on a copy): greedy flips from 0 to 1, logits untouched. */
    sp = ts_sampler_params_default();
    sp.temperature = 0;
    sp.repetition_penalty = 2.0f;
    s = make(&sp, 2);
    float two[2] = {3.0f, 2.9f};
    assert_int_equal(draw(s, two), 0);
    ts_sampler_accept(s, 0);
    assert_int_equal(draw(s, two), 1);
    assert_true(two[0] == 3.0f && two[1] == 2.9f);
    ts_sampler_destroy(s);
}

/* Reference: penalties from the last W tokens of hist (all of them when W == 0). */
static void naive_penalties(const ts_sampler_params *p, const int32_t *hist, size_t n,
                            float *l, size_t V) {
    uint32_t *c = calloc(V, sizeof *c);
    size_t from = p->repetition_window && n > p->repetition_window
                      ? n - p->repetition_window : 0;
    for (size_t i = from; i < n; i++) c[hist[i]]++;
    for (size_t t = 0; t < V; t++) {
        if (!c[t]) continue;
        float x = l[t];
        x = x > 0 ? x / p->repetition_penalty : x * p->repetition_penalty;
        l[t] = x - ((float)c[t] * p->frequency_penalty + p->presence_penalty);
    }
    free(c);
}

static void test_window(void **state) {
    (void)state;
    ts_sampler_params sp = ts_sampler_params_default();
    sp.repetition_penalty = 2.0f;
    sp.repetition_window = 3;
    ts_sampler *s = make(&sp, 8);
    for (int32_t t = 1; t <= 4; t++) ts_sampler_accept(s, t);
    assert_int_equal(ts_sampler_count(s, 1), 0); /* left the window */
    float l[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ts_sampler_apply_penalties(s, l);
    assert_true(l[1] == 1.0f && l[2] == 0.5f && l[3] == 0.5f && l[4] == 0.5f);
    ts_sampler_accept(s, 4); /* window 3 4 4: 4 penalized once (count 2 only matters for freq) */
    float l2[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ts_sampler_apply_penalties(s, l2);
    assert_true(l2[2] == 1.0f && l2[3] == 0.5f && l2[4] == 0.5f);
    assert_int_equal(ts_sampler_count(s, 4), 2);
    ts_sampler_reset(s);
    assert_int_equal(ts_sampler_count(s, 4), 0);
    assert_int_equal(ts_sampler_accept(s, 8), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "out of range"));
    assert_int_equal(ts_sampler_accept(s, -1), TS_INVAL);
    ts_sampler_destroy(s);

    /* Long random history against the reference, for several windows. */
    enum { V = 50, N = 10000 };
    static int32_t hist[N];
    const uint32_t windows[] = {0, 1, 17, 64};
    for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        sp = ts_sampler_params_default();
        sp.repetition_penalty = 1.3f;
        sp.presence_penalty = 0.4f;
        sp.frequency_penalty = 0.15f;
        sp.repetition_window = windows[w];
        s = make(&sp, V);
        trng_seed(30 + w);
        for (int i = 0; i < N; i++) {
            hist[i] = (int32_t)(trng() % (i % 500 < 250 ? 7 : V)); /* phases of repetition */
            ts_sampler_accept(s, hist[i]);
            if (i % 97 == 0 || i == N - 1) {
                float a[V], b[V];
                random_logits(a, V, 2.0);
                memcpy(b, a, sizeof a);
                ts_sampler_apply_penalties(s, a);
                naive_penalties(&sp, hist, (size_t)i + 1, b, V);
                for (int t = 0; t < V; t++)
                    if (a[t] != b[t]) fail_msg("W=%u step %d token %d: %g != %g",
                                               windows[w], i, t, (double)a[t], (double)b[t]);
            }
        }
        ts_sampler_destroy(s);
    }
}

/* ---------------------------------------------------------------- errors, masks, memory */

static void test_bad_logits_and_masks(void **state) {
    (void)state;
    enum { V = 64 };
    float l[V];
    ts_sampler_params sp = ts_sampler_params_default();
    sp.seed = 40;
    ts_sampler *s = make(&sp, V);
    int32_t t = 7;
    for (int i = 0; i < V; i++) l[i] = 0;
    l[3] = NAN;
    assert_int_equal(ts_sampler_sample(s, l, &t), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "logits[3] is NaN"));
    l[3] = INFINITY;
    assert_int_equal(ts_sampler_sample(s, l, &t), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "+inf"));
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    assert_int_equal(ts_sampler_sample(s, l, &t), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "finite"));
    /* Masked tokens (-inf) are never drawn, on every path. */
    for (int i = 0; i < V; i++) l[i] = i % 2 ? -INFINITY : (float)(i % 5);
    for (int i = 0; i < 5000; i++) assert_int_equal(draw(s, l) % 2, 0);
    ts_sampler_destroy(s);
    sp.top_k = 50; /* more than the unmasked tokens */
    sp.top_p = 0.99f;
    s = make(&sp, V);
    for (int i = 0; i < 5000; i++) assert_int_equal(draw(s, l) % 2, 0);
    ts_sampler_destroy(s);
    /* A huge temperature leaves masks masked; a tiny one is greedy in effect. */
    sp = ts_sampler_params_default();
    sp.temperature = 100;
    s = make(&sp, V);
    for (int i = 0; i < 2000; i++) assert_int_equal(draw(s, l) % 2, 0);
    ts_sampler_destroy(s);
    sp.temperature = 1e-4f;
    s = make(&sp, V);
    l[10] = 9;
    for (int i = 0; i < 100; i++) assert_int_equal(draw(s, l), 10);
    ts_sampler_destroy(s);
}

static void test_alloc(void **state) {
    (void)state;
    size_t b0 = ts_alloc_bytes_in_use();
    ts_sampler_params sp = ts_sampler_params_default();
    for (long k = 0; k < 7; k++) {
        ts_sampler *s = NULL;
        ts_alloc_fail_after(k);
        ts_status rc = ts_sampler_create(&sp, 1000, &s);
        ts_alloc_fail_after(-1);
        if (k < 6) { /* six allocations */
            assert_int_equal(rc, TS_NOMEM);
            assert_null(s);
        } else {
            assert_int_equal(rc, TS_OK);
            ts_sampler_destroy(s);
        }
        assert_int_equal(ts_alloc_bytes_in_use(), b0);
    }

    /* sample/accept never allocate: every allocation would fail here. */
    enum { V = 20000 };
    float *l = malloc(V * sizeof *l);
    assert_non_null(l);
    trng_seed(50);
    random_logits(l, V, 3.0);
    const uint32_t ks[] = {0, 40, 3000};
    const float ps[] = {1.0f, 0.9f};
    for (int ki = 0; ki < 3; ki++) {
        for (int pi = 0; pi < 2; pi++) {
            sp = ts_sampler_params_default();
            sp.top_k = ks[ki];
            sp.top_p = ps[pi];
            sp.min_p = pi ? 0.01f : 0.0f;
            sp.repetition_penalty = 1.2f;
            sp.repetition_window = 16;
            ts_sampler *s = make(&sp, V);
            size_t c0 = ts_alloc_count();
            ts_alloc_fail_after(0);
            for (int i = 0; i < 50; i++) {
                int32_t t;
                assert_int_equal(ts_sampler_sample(s, l, &t), TS_OK);
                assert_int_equal(ts_sampler_accept(s, t), TS_OK);
            }
            ts_alloc_fail_after(-1);
            assert_int_equal(ts_alloc_count(), c0);
            ts_sampler_destroy(s);
        }
    }
    free(l);
    assert_int_equal(ts_alloc_bytes_in_use(), b0);
}

/* ---------------------------------------------------------------- logprobs */

static void test_logprobs(void **state) {
    (void)state;
    enum { V = 300 };
    float l[V];
    double p[V];
    trng_seed(60);
    random_logits(l, V, 3.0);
    l[17] = l[250] = 20.0f; /* tie at the top: 17 first */
    l[5] = -INFINITY;
    ref_probs(l, V, 1.0, p);
    float lp;
    ts_token_logprob top[TS_SAMPLER_MAX_TOP_LOGPROBS];
    assert_int_equal(ts_logprobs(l, V, 42, &lp, 20, top), TS_OK);
    assert_float_equal(lp, log(p[42]), 1e-5);
    assert_int_equal(top[0].token, 17);
    assert_int_equal(top[1].token, 250);
    assert_float_equal(top[0].logprob, log(p[17]), 1e-5);
    for (int i = 1; i < 20; i++) {
        assert_true(top[i].logprob <= top[i - 1].logprob);
        assert_float_equal(top[i].logprob, log(p[top[i].token]), 1e-5);
    }
    int32_t ord[V];
    ref_order(p, V, ord);
    for (int i = 0; i < 20; i++) assert_int_equal(top[i].token, ord[i]);
    assert_int_equal(ts_logprobs(l, V, 5, &lp, 0, NULL), TS_OK);
    assert_true(lp == -INFINITY);
    assert_int_equal(ts_logprobs(l, V, 0, &lp, 21, top), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "top_logprobs"));
    assert_int_equal(ts_logprobs(l, V, V, &lp, 0, NULL), TS_INVAL);
    /* n_top larger than the vocabulary */
    float two[2] = {0, 0};
    assert_int_equal(ts_logprobs(two, 2, 1, &lp, 5, top), TS_OK);
    assert_float_equal(lp, log(0.5), 1e-6);
    assert_int_equal(top[0].token, 0);
    assert_int_equal(top[1].token, 1);
}

/* ---------------------------------------------------------------- stop strings */

static void test_stop_strings(void **state) {
    (void)state;
    const char *stops[] = {"world", "", NULL, "lo w", "</end>"};
    const size_t n = 5;
    size_t which = 99;
    /* Accumulated over tokens "Hel", "lo wor", "ld": matches appear only later. */
    assert_int_equal(ts_stop_check("Hel", 3, stops, n, &which), TS_STOP_NONE);
    assert_int_equal(which, 99);
    assert_int_equal(ts_stop_check("Hello w", 7, stops, n, &which), 3); /* "lo w" spans */
    assert_int_equal(which, 3);
    const char *only_world[] = {"world"};
    assert_int_equal(ts_stop_check("Hello wor", 9, only_world, 1, &which), TS_STOP_NONE);
    assert_int_equal(ts_stop_check("Hello world", 11, only_world, 1, &which), 6);
    assert_int_equal(which, 0);
    /* Earliest start wins regardless of list order; same start -> lowest index. */
    const char *two[] = {"bc", "abcd", "ab"};
    assert_int_equal(ts_stop_check("xxabcd", 6, two, 3, &which), 2);
    assert_int_equal(which, 1);
    /* Repeated first bytes and a match at the very end. */
    const char *aab[] = {"aab"};
    assert_int_equal(ts_stop_check("aaaab", 5, aab, 1, NULL), 2);
    assert_int_equal(ts_stop_check("aaaa", 4, aab, 1, NULL), TS_STOP_NONE);
    /* len limits the search (text need not be NUL-terminated there). */
    assert_int_equal(ts_stop_check("Hello world", 10, only_world, 1, NULL), TS_STOP_NONE);
    assert_int_equal(ts_stop_check("", 0, stops, n, NULL), TS_STOP_NONE);
    assert_int_equal(ts_stop_check("abc", 3, NULL, 0, NULL), TS_STOP_NONE);
    /* Binary-safe: bytes after a NUL. */
    const char bin[] = {'a', 0, '<', '/', 'e', 'n', 'd', '>'};
    assert_int_equal(ts_stop_check(bin, sizeof bin, stops, n, &which), 2);
    assert_int_equal(which, 4);

    /* Hold-back: the longest suffix that is a proper prefix of a stop string. */
    assert_int_equal(ts_stop_holdback("abc</", 5, stops, n), 2);
    assert_int_equal(ts_stop_holdback("abc</en", 7, stops, n), 4);
    assert_int_equal(ts_stop_holdback("abc<", 4, stops, n), 1);
    assert_int_equal(ts_stop_holdback("abc", 3, stops, n), 0);
    assert_int_equal(ts_stop_holdback("hello wor", 9, stops, n), 3); /* "wor" of "world" */
    assert_int_equal(ts_stop_holdback("xaa", 3, aab, 1), 2);
    assert_int_equal(ts_stop_holdback("xa", 2, aab, 1), 1);
    assert_int_equal(ts_stop_holdback("a", 1, aab, 1), 1);
    assert_int_equal(ts_stop_holdback("", 0, aab, 1), 0);
    assert_int_equal(ts_stop_holdback("aab", 3, aab, 1), 0); /* full match: check's job */
    assert_int_equal(ts_stop_holdback("aaba", 4, aab, 1), 1);
    const char *single[] = {"x"};
    assert_int_equal(ts_stop_holdback("abcx", 4, single, 1), 0);

    /* Simulated streaming: whatever the token split, emitted text + hold never contain
     * a stop string, and the final cut is the same. */
    const char *text = "The answer is 42.</end> trailing";
    const char *st[] = {"</end>", "answer is 43"};
    size_t L = strlen(text);
    for (size_t step = 1; step <= 7; step++) {
        size_t emitted = 0, len = 0, cut = TS_STOP_NONE;
        while (len < L && cut == TS_STOP_NONE) {
            len = len + step > L ? L : len + step;
            cut = ts_stop_check(text, len, st, 2, NULL);
            if (cut != TS_STOP_NONE) {
                assert_true(cut >= emitted);
                emitted = cut;
                break;
            }
            size_t hold = ts_stop_holdback(text, len, st, 2);
            assert_true(len - hold >= emitted);
            emitted = len - hold;
        }
        assert_int_equal(cut, 17);
        assert_int_equal(emitted, 17);
    }
}

/* ---------------------------------------------------------------- timing (report only) */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_timing_262k(void **state) {
    (void)state;
    enum { V = 262144, N = 40 };
    float *l = malloc(V * sizeof *l);
    assert_non_null(l);
    trng_seed(70);
    peaked_logits(l, V, 200);
    struct {
        const char *name;
        float T, top_p, min_p;
        uint32_t top_k;
    } cfg[] = {
        {"greedy", 0, 1, 0, 0},           {"plain T=1", 1, 1, 0, 0},
        {"top_k=40", 0.8f, 1, 0, 40},     {"top_k=40 top_p=0.95", 0.8f, 0.95f, 0, 40},
        {"top_k=5000", 0.8f, 1, 0, 5000}, {"top_p=0.9", 1, 0.9f, 0, 0},
        {"min_p=0.05", 1, 1, 0.05f, 0},   {"top_p=0.9 T=0.6 +pen", 0.6f, 0.9f, 0, 0},
        {"flat top_p=0.9", 1, 0.9f, 0, 0},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        ts_sampler_params sp = ts_sampler_params_default();
        sp.temperature = cfg[c].T;
        sp.top_p = cfg[c].top_p;
        sp.min_p = cfg[c].min_p;
        sp.top_k = cfg[c].top_k;
        if (strstr(cfg[c].name, "pen")) {
            sp.repetition_penalty = 1.1f;
            sp.repetition_window = 256;
        }
        if (strstr(cfg[c].name, "flat")) random_logits(l, V, 1.0); /* worst case */
        ts_sampler *s = make(&sp, V);
        double t0 = now_ms();
        for (int i = 0; i < N; i++) ts_sampler_accept(s, draw(s, l));
        double dt = (now_ms() - t0) / N;
        printf("# sample, V=262144 (peaked logits), %-22s %.3f ms/token\n", cfg[c].name, dt);
        ts_sampler_destroy(s);
    }
    free(l);
}

/* ts_topk_best_first against a selection sort by the documented order (NaN first, larger
 * first, ties to the lower index), on rows with heavy ties, -inf and NaN; and
 * ts_sampler_sample_top against ts_sampler_sample on the same rows (the GPU sampling
 * contract, sampler.h). */
static bool tk_before(float a, int32_t ia, float b, int32_t ib) {
    if (isnan(a) || isnan(b)) return isnan(a) && (!isnan(b) || ia < ib);
    return a > b || (a == b && ia < ib);
}

static void test_topk_prefilter(void **state) {
    (void)state;
    enum { V = 300, K = 64 };
    float row[V];
    int32_t ids[K], ref_ids[V];
    float vals[K];
    uint64_t r = 0x5eed;
    for (int it = 0; it < 200; it++) {
        for (int i = 0; i < V; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((r >> 40) % 9) - 4.0f; /* 9 levels: ties everywhere */
            if (it % 4 == 1 && (r >> 20) % 10 == 0) row[i] = -INFINITY;
            if (it % 4 == 2 && (r >> 24) % 97 == 0) row[i] = NAN;
        }
        for (int i = 0; i < V; i++) ref_ids[i] = i;
        for (int i = 0; i < K; i++) /* selection sort of the first K */
            for (int j = i + 1; j < V; j++)
                if (tk_before(row[ref_ids[j]], ref_ids[j], row[ref_ids[i]], ref_ids[i])) {
                    int32_t t = ref_ids[i];
                    ref_ids[i] = ref_ids[j];
                    ref_ids[j] = t;
                }
        const int32_t k = 1 + it % K;
        ts_topk_best_first(row, V, k, ids, vals);
        for (int i = 0; i < k; i++) {
            assert_int_equal(ids[i], ref_ids[i]);
            assert_memory_equal(&vals[i], &row[ref_ids[i]], sizeof(float));
        }
        if (it % 4 == 2) continue; /* NaN rows: both refuse (checked in test_cuda_topk) */
        ts_sampler_params p = ts_sampler_params_default();
        p.temperature = it % 3 == 0 ? 0.0f : 0.9f;
        p.top_k = (uint32_t)(1 + it % 50);
        p.top_p = it % 2 ? 0.9f : 1.0f;
        p.seed = (uint64_t)it;
        ts_sampler *a = NULL, *b = NULL;
        assert_int_equal(ts_sampler_create(&p, V, &a), TS_OK);
        assert_int_equal(ts_sampler_create(&p, V, &b), TS_OK);
        assert_true(ts_sampler_top_ok(b, K));
        ts_topk_best_first(row, V, K, ids, vals);
        for (int d = 0; d < 5; d++) {
            int32_t ta = -1, tb = -2;
            assert_int_equal(ts_sampler_sample(a, row, &ta), TS_OK);
            assert_int_equal(ts_sampler_sample_top(b, ids, vals, K, &tb), TS_OK);
            assert_int_equal(ta, tb);
        }
        ts_sampler_destroy(a);
        ts_sampler_destroy(b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_prefilter),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_golden_prng),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_topk_stat),
        cmocka_unit_test(test_topk_large),
        cmocka_unit_test(test_topp_stat),
        cmocka_unit_test(test_topp_flat_tail),
        cmocka_unit_test(test_minp_stat),
        cmocka_unit_test(test_temperature_chi2),
        cmocka_unit_test(test_penalties_exact),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_bad_logits_and_masks),
        cmocka_unit_test(test_alloc),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_timing_262k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
