/* sampler.c: token sampler (penalties, greedy, top-k, temperature, top-p, min-p, draw)
 * and stop-string helpers. See sampler.h and docs/sampling.md.
 *
 * Determinism: every value that decides a token comes from IEEE + - * / on floats and
 * doubles in a fixed order, and from ts_exp_neg below (no libm, no FMA contraction: the
 * target is compiled with -ffp-contract=off). The draw uses xoshiro256** seeded by
 * splitmix64, both defined here. */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "alloc.h"

/* ---------------------------------------------------------------- PRNG */

/* splitmix64 (Steele, Lea, Flood 2014; Vigna's reference code). */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** 1.0 (Blackman, Vigna 2018). */
static uint64_t xoshiro_next(uint64_t s[4]) {
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

static void rng_seed(uint64_t s[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&x);
}

/* Uniform double in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) {
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------- exp */

/* e^x for x <= 0 (x > 0 is treated as 0), in float, reproducible bit for bit on any
 * IEEE-754 machine: Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, degree-7 Taylor
 * polynomial (truncation error < 1.2e-8), scaling by 2^k through the exponent bits.
 * Results below e^-86 (about 4e-38, still a normal float) are flushed to 0, so no
 * subnormals appear (FTZ/DAZ settings cannot change anything). Branch-free so that the
 * compiler can vectorize the softmax loop. Max error 1.22 ulp (checked against libm for
 * every float in [-86, 0]). */
static inline float ts_exp_neg(float x) {
    const float lo = -86.0f;
    float xc = x < lo ? lo : x;
    xc = xc > 0.0f ? 0.0f : xc;
    float kf = xc * 1.44269504088896341f;
    kf = (kf + 12582912.0f) - 12582912.0f; /* round to nearest integer (1.5 * 2^23) */
    float r = xc - kf * 0.693145751953125f; /* ln2 high part: kf * hi is exact */
    r = r - kf * 1.428606765330187e-06f;    /* ln2 low part */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t k = (int32_t)kf; /* in [-124, 0] */
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    return x < lo ? 0.0f : y;
}

/* ---------------------------------------------------------------- params */

ts_sampler_params ts_sampler_params_default(void) {
    ts_sampler_params p = {
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .repetition_window = 0,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
    };
    return p;
}

ts_status ts_sampler_params_validate(const ts_sampler_params *p) {
    if (!p) return TS_FAIL(TS_INVAL, "sampler params: NULL");
    /* Written as !(in range) so that NaN is rejected everywhere. */
    if (!(p->temperature >= 0.0f && p->temperature <= TS_SAMPLER_MAX_TEMPERATURE))
        return TS_FAIL(TS_INVAL, "temperature = %g is out of range: must be in [0, %g] "
                       "(0 = greedy)", (double)p->temperature,
                       (double)TS_SAMPLER_MAX_TEMPERATURE);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return TS_FAIL(TS_INVAL, "top_p = %g is out of range: must be in (0, 1] (1 = off)",
                       (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p < 1.0f))
        return TS_FAIL(TS_INVAL, "min_p = %g is out of range: must be in [0, 1) (0 = off)",
                       (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= TS_SAMPLER_MAX_REP_PENALTY))
        return TS_FAIL(TS_INVAL, "repetition_penalty = %g is out of range: must be in "
                       "(0, %g] (1 = off)", (double)p->repetition_penalty,
                       (double)TS_SAMPLER_MAX_REP_PENALTY);
    if (p->repetition_window > TS_SAMPLER_MAX_WINDOW)
        return TS_FAIL(TS_INVAL, "repetition_window = %u is out of range: must be in "
                       "[0, %u] (0 = all accepted tokens)", p->repetition_window,
                       TS_SAMPLER_MAX_WINDOW);
    if (!(p->presence_penalty >= -TS_SAMPLER_MAX_ADD_PENALTY &&
          p->presence_penalty <= TS_SAMPLER_MAX_ADD_PENALTY))
        return TS_FAIL(TS_INVAL, "presence_penalty = %g is out of range: must be in "
                       "[-%g, %g] (0 = off)", (double)p->presence_penalty,
                       (double)TS_SAMPLER_MAX_ADD_PENALTY, (double)TS_SAMPLER_MAX_ADD_PENALTY);
    if (!(p->frequency_penalty >= -TS_SAMPLER_MAX_ADD_PENALTY &&
          p->frequency_penalty <= TS_SAMPLER_MAX_ADD_PENALTY))
        return TS_FAIL(TS_INVAL, "frequency_penalty = %g is out of range: must be in "
                       "[-%g, %g] (0 = off)", (double)p->frequency_penalty,
                       (double)TS_SAMPLER_MAX_ADD_PENALTY, (double)TS_SAMPLER_MAX_ADD_PENALTY);
    /* top_k: every uint32 value is meaningful (0 and >= n_vocab mean off). */
    return TS_OK;
}

/* ---------------------------------------------------------------- sampler */

typedef struct {
    float v; /* logit, then weight exp((l - max) / T) in (0, 1] */
    int32_t id;
} cand_t;

#define COUNT_MARK 0x80000000u /* transient "already penalized" flag in count[] */
#define COUNT_MAX 0x7fffffffu
#define HEAP_MAX_K 1024u       /* top-k by heap up to this k, quickselect above */
#define BLOCK 1024u            /* weights per block sum (dense draw) */

struct ts_sampler {
    ts_sampler_params p;
    uint32_t n_vocab;
    uint32_t *count;  /* [n_vocab]: occurrences in the window */
    int32_t *hist;    /* window > 0: ring of the last `window` tokens;
                         window == 0: the distinct tokens seen, in first-seen order */
    uint32_t hist_cap, hist_len, hist_head; /* head: oldest entry of the ring */
    float *buf;       /* [n_vocab]: penalized logits, then softmax weights */
    cand_t *cand;     /* [n_vocab]: candidates */
    double *blk;      /* [ceil(n_vocab / BLOCK)]: block sums of the weights */
    uint64_t rng[4];
};

ts_status ts_sampler_create(const ts_sampler_params *p, uint32_t n_vocab, ts_sampler **out) {
    if (!out) return TS_FAIL(TS_INVAL, "sampler: out is NULL");
    *out = NULL;
    TS_TRY(ts_sampler_params_validate(p));
    if (n_vocab == 0 || n_vocab > (uint32_t)INT32_MAX)
        return TS_FAIL(TS_INVAL, "n_vocab = %u is out of range: must be in [1, %d]", n_vocab,
                       INT32_MAX);
    ts_sampler *s = ts_calloc(1, sizeof *s);
    if (!s) return TS_FAIL(TS_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->hist_cap = p->repetition_window ? p->repetition_window : n_vocab;
    s->count = ts_calloc(n_vocab, sizeof *s->count);
    s->hist = ts_malloc((size_t)s->hist_cap * sizeof *s->hist);
    s->buf = ts_malloc((size_t)n_vocab * sizeof *s->buf);
    s->cand = ts_malloc((size_t)n_vocab * sizeof *s->cand);
    s->blk = ts_malloc(((size_t)n_vocab + BLOCK - 1) / BLOCK * sizeof *s->blk);
    if (!s->count || !s->hist || !s->buf || !s->cand || !s->blk) {
        ts_sampler_destroy(s);
        return TS_FAIL(TS_NOMEM, "sampler: out of memory for n_vocab = %u", n_vocab);
    }
    rng_seed(s->rng, p->seed);
    *out = s;
    return TS_OK;
}

void ts_sampler_destroy(ts_sampler *s) {
    if (!s) return;
    ts_free(s->count);
    ts_free(s->hist);
    ts_free(s->buf);
    ts_free(s->cand);
    ts_free(s->blk);
    ts_free(s);
}

void ts_sampler_reset(ts_sampler *s) {
    memset(s->count, 0, (size_t)s->n_vocab * sizeof *s->count);
    s->hist_len = s->hist_head = 0;
    rng_seed(s->rng, s->p.seed);
}

const ts_sampler_params *ts_sampler_params_of(const ts_sampler *s) { return &s->p; }

ts_status ts_sampler_accept(ts_sampler *s, int32_t token) {
    if (token < 0 || (uint32_t)token >= s->n_vocab)
        return TS_FAIL(TS_INVAL, "token %d is out of range [0, %u)", token, s->n_vocab);
    if (s->p.repetition_window) {
        uint32_t w = s->hist_cap;
        if (s->hist_len == w) { /* full: the oldest token leaves the window */
            s->count[s->hist[s->hist_head]]--;
            s->hist[s->hist_head] = token;
            s->hist_head = s->hist_head + 1 == w ? 0 : s->hist_head + 1;
        } else {
            uint32_t at = s->hist_head + s->hist_len;
            s->hist[at >= w ? at - w : at] = token;
            s->hist_len++;
        }
        s->count[token]++;
    } else {
        if (s->count[token] == 0) s->hist[s->hist_len++] = token; /* <= n_vocab entries */
        if (s->count[token] < COUNT_MAX) s->count[token]++;
    }
    return TS_OK;
}

uint32_t ts_sampler_count(const ts_sampler *s, int32_t token) {
    if (token < 0 || (uint32_t)token >= s->n_vocab) return 0;
    return s->count[token] & COUNT_MAX;
}

static bool penalties_active(const ts_sampler *s) {
    return s->hist_len > 0 &&
           (s->p.repetition_penalty != 1.0f || s->p.presence_penalty != 0.0f ||
            s->p.frequency_penalty != 0.0f);
}

static inline float penalize(float l, uint32_t c, float rep, float freq, float pres) {
    if (rep != 1.0f) l = l > 0.0f ? l / rep : l * rep;
    return l - ((float)c * freq + pres);
}

/* O(entries in the history): O(window), or O(distinct tokens) for window 0. */
void ts_sampler_apply_penalties(const ts_sampler *s, float *logits) {
    const float rep = s->p.repetition_penalty, freq = s->p.frequency_penalty,
                pres = s->p.presence_penalty;
    if (!penalties_active(s)) return;
    if (s->p.repetition_window == 0) { /* hist holds distinct tokens */
        for (uint32_t i = 0; i < s->hist_len; i++) {
            int32_t t = s->hist[i];
            logits[t] = penalize(logits[t], s->count[t], rep, freq, pres);
        }
        return;
    }
    /* Ring: a token may appear several times; penalize it once (mark bit in count). */
    uint32_t w = s->hist_cap, at = s->hist_head;
    for (uint32_t i = 0; i < s->hist_len; i++) {
        int32_t t = s->hist[at];
        uint32_t c = s->count[t];
        if (!(c & COUNT_MARK)) {
            logits[t] = penalize(logits[t], c, rep, freq, pres);
            s->count[t] = c | COUNT_MARK;
        }
        at = at + 1 == w ? 0 : at + 1;
    }
    at = s->hist_head;
    for (uint32_t i = 0; i < s->hist_len; i++) {
        s->count[s->hist[at]] &= COUNT_MAX;
        at = at + 1 == w ? 0 : at + 1;
    }
}

/* Strict total order: larger value first, then lower id. */
static inline bool better(cand_t a, cand_t b) {
    return a.v > b.v || (a.v == b.v && a.id < b.id);
}

static inline void swap_cand(cand_t *a, cand_t *b) {
    cand_t t = *a;
    *a = *b;
    *b = t;
}

/* Min-heap on `better` (the root is the worst kept candidate). */
static void heap_sift_down(cand_t *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, w = i;
        if (l < n && better(h[w], h[l])) w = l;
        if (l + 1 < n && better(h[w], h[l + 1])) w = l + 1;
        if (w == i) return;
        swap_cand(&h[i], &h[w]);
        i = w;
    }
}

/* Sorts a[0..n) best first. Heapsort: in place (no allocation, unlike glibc's qsort,
 * which mallocs a merge buffer), O(n log n) worst case; the order is a strict total
 * order, so the result is the same as any other correct sort. */
static void sort_best_first(cand_t *a, size_t n) {
    for (size_t i = n / 2; i-- > 0;) heap_sift_down(a, n, i);
    for (size_t end = n; end > 1; end--) {
        swap_cand(&a[0], &a[end - 1]); /* the worst remaining goes last */
        heap_sift_down(a, end - 1, 0);
    }
}

/* out[0..k) = the k best of src[0..n) (unordered), 0 < k < n. Heap of k: O(n) compares
 * plus O(log k) per replacement; about k ln(n/k) replacements on random order, n in
 * the worst case (ascending input). */
static void topk_heap(const float *src, size_t n, size_t k, cand_t *out) {
    for (size_t i = 0; i < k; i++) out[i] = (cand_t){src[i], (int32_t)i};
    for (size_t i = k / 2; i-- > 0;) heap_sift_down(out, k, i);
    for (size_t i = k; i < n; i++) {
        /* Later ids lose ties, so "better than the root" is a plain >. */
        if (src[i] > out[0].v) {
            out[0] = (cand_t){src[i], (int32_t)i};
            heap_sift_down(out, k, 0);
        }
    }
}

/* a[0..k) = the k best of a[0..n) (unordered). Quickselect with a median-of-3 pivot:
 * O(n) expected; after 64 rounds (adversarial input) the rest is sorted, so the worst
 * case stays O(n log n). Deterministic: no randomness is used. */
static void topk_select(cand_t *a, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    for (int round = 0; hi - lo > 16 && round < 64; round++) {
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        /* median of a[lo], a[mid], a[last] to a[last] */
        if (better(a[mid], a[lo])) swap_cand(&a[mid], &a[lo]);
        if (better(a[last], a[lo])) swap_cand(&a[last], &a[lo]);
        if (better(a[mid], a[last])) swap_cand(&a[mid], &a[last]);
        cand_t pv = a[last];
        size_t store = lo;
        for (size_t i = lo; i < last; i++)
            if (better(a[i], pv)) swap_cand(&a[i], &a[store++]);
        swap_cand(&a[store], &a[last]);
        /* a[lo..store) better than pivot (at store), a(store..hi) worse */
        if (store == k) return;
        if (store > k) hi = store;
        else lo = store + 1;
        if (lo >= k || hi <= k) return;
    }
    if (lo < k && k < hi) sort_best_first(a + lo, hi - lo);
}

/* Top-p over candidates c[0..n) holding weights: a threshold set (every weight >= some
 * cutoff) that contains the nucleus of a distribution of total weight Z. The nucleus is
 * the shortest most-probable prefix (order: weight desc, id asc) whose mass reaches
 * top_p * Z, the token that crosses the threshold included (llama.cpp). Rearranges c so
 * that c[0..ret) is the nucleus, in a deterministic order, without sorting it: a
 * quickselect on the boundary that carries the mass of the part already known to be in
 * the nucleus. Expected O(n); after 64 rounds (adversarial input) the rest is sorted,
 * so the worst case is O(n log n). */
static size_t nucleus(cand_t *c, size_t n, double Z, float top_p) {
    const double target = (double)top_p * Z;
    size_t lo = 0, hi = n; /* c[0..lo): in, mass acc; c[hi..n): out; boundary in [lo, hi) */
    double acc = 0.0;
    for (int round = 0; hi - lo > 16 && round < 64; round++) {
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (better(c[mid], c[lo])) swap_cand(&c[mid], &c[lo]);
        if (better(c[last], c[lo])) swap_cand(&c[last], &c[lo]);
        if (better(c[mid], c[last])) swap_cand(&c[mid], &c[last]);
        cand_t pv = c[last];
        size_t store = lo;
        double mb = 0.0;
        for (size_t i = lo; i < last; i++) {
            if (better(c[i], pv)) {
                mb += c[i].v;
                swap_cand(&c[i], &c[store++]);
            }
        }
        swap_cand(&c[store], &c[last]);
        /* c[lo..store) better than the pivot (mass mb), pivot at store, rest worse */
        if (acc + mb >= target) {
            hi = store;
        } else if (acc + mb + pv.v >= target) {
            return store + 1; /* the pivot crosses the threshold */
        } else {
            acc += mb + pv.v;
            lo = store + 1;
        }
    }
    sort_best_first(c + lo, hi - lo);
    for (size_t i = lo; i < hi; i++) {
        acc += c[i].v;
        if (acc >= target) return i + 1;
    }
    return hi; /* the candidates weigh less than top_p (min-p cut them) */
}

/* Sum of w[0..n) in double: eight interleaved partial sums (lane i % 8) added in a
 * fixed order at the end. The order is part of the definition (reproducible), and it
 * breaks the dependency chain of one running sum. */
static double sum_weights(const float *w, size_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += w[i + j];
    for (size_t j = 0; i < n; i++, j++) acc[j] += w[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Keeps candidates with weight >= cut (order preserved); returns the new count. */
static size_t compact(cand_t *c, size_t n, double cut) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].v > 0.0f && (double)c[i].v >= cut) c[m++] = c[i];
    return m;
}

/* Cutoff that keeps a superset of the final set: weight >= min_p (min-p), and weight
 * >= (1 - top_p) Z / (2 n) (top-p: everything below it weighs less than
 * n * cutoff = (1 - top_p) Z / 2, so the nucleus lies above it, with a factor-2
 * margin for rounding). */
static double cutoff(float top_p, float min_p, double Z, size_t n) {
    double cut = min_p;
    if (top_p < 1.0f) {
        double cn = 0.5 * (1.0 - (double)top_p) * Z / (double)n;
        if (cn > cut) cut = cn;
    }
    return cut;
}

/* Draws from c[0..n) proportionally to the weights. */
static int32_t draw_cand(const cand_t *c, size_t n, double u) {
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += c[i].v;
    double target = u * total, cum = 0.0;
    int32_t last = c[0].id;
    for (size_t i = 0; i < n; i++) {
        if (c[i].v <= 0.0f) continue;
        cum += c[i].v;
        last = c[i].id;
        if (target < cum) return c[i].id;
    }
    return last; /* only reachable through rounding */
}

ts_status ts_sampler_sample(ts_sampler *s, const float *logits, int32_t *token) {
    if (!s || !logits || !token) return TS_FAIL(TS_INVAL, "sampler: NULL argument");
    const size_t V = s->n_vocab;
    const float *src = logits;
    if (penalties_active(s)) {
        memcpy(s->buf, logits, V * sizeof *logits);
        ts_sampler_apply_penalties(s, s->buf);
        src = s->buf;
    }

    /* Max and a check for NaN / +inf: eight independent lanes (vectorizable). */
    float lane[8];
    bool bad = false;
    for (int j = 0; j < 8; j++) lane[j] = -INFINITY;
    size_t i8 = 0;
    for (; i8 + 8 <= V; i8 += 8) {
        for (int j = 0; j < 8; j++) {
            float x = src[i8 + j];
            bad |= (x != x) | (x == INFINITY);
            lane[j] = x > lane[j] ? x : lane[j];
        }
    }
    for (size_t j = 0; i8 < V; i8++, j++) {
        float x = src[i8];
        bad |= (x != x) | (x == INFINITY);
        lane[j] = x > lane[j] ? x : lane[j];
    }
    float m = lane[0];
    for (int j = 1; j < 8; j++) m = lane[j] > m ? lane[j] : m;
    if (bad) {
        for (size_t i = 0; i < V; i++)
            if (!(logits[i] <= FLT_MAX) && logits[i] != -INFINITY)
                return TS_FAIL(TS_INVAL, "logits[%zu] is %s", i,
                               isnan(logits[i]) ? "NaN" : "+inf");
        return TS_FAIL(TS_INVAL, "penalized logit is not finite"); /* unreachable */
    }
    if (m == -INFINITY) return TS_FAIL(TS_INVAL, "no token has a finite logit");

    if (s->p.temperature == 0.0f) {
        size_t am = 0; /* argmax: the first (lowest) id holding the max */
        while (src[am] != m) am++;
        *token = (int32_t)am;
        return TS_OK;
    }

    const float invT = 1.0f / s->p.temperature;
    const float top_p = s->p.top_p, min_p = s->p.min_p;
    const bool filter = top_p < 1.0f || min_p > 0.0f;
    const double u = rng_uniform(s->rng); /* exactly one RNG output per sample */
    cand_t *c = s->cand;
    size_t n;
    double Z = 0.0;

    if (s->p.top_k > 0 && s->p.top_k < V) {
        n = s->p.top_k;
        if (n <= HEAP_MAX_K) {
            topk_heap(src, V, n, c);
        } else {
            for (size_t i = 0; i < V; i++) c[i] = (cand_t){src[i], (int32_t)i};
            topk_select(c, V, n);
        }
        /* best first: the kept set alone fixes every later step (sums, draw order), so a
         * top-k prefilter (ts_sampler_sample_top) gives the same token */
        sort_best_first(c, n);
        for (size_t i = 0; i < n; i++) {
            c[i].v = ts_exp_neg((c[i].v - m) * invT);
            Z += c[i].v;
        }
        if (filter) n = compact(c, n, cutoff(top_p, min_p, Z, n));
    } else {
        float *w = s->buf;
        for (size_t i = 0; i < V; i++) w[i] = ts_exp_neg((src[i] - m) * invT);
        /* Z = sum of the block sums, in order; blocks also speed up the draw. */
        const size_t nb = (V + BLOCK - 1) / BLOCK;
        for (size_t b = 0; b < nb; b++) {
            size_t len = b + 1 < nb ? BLOCK : V - b * BLOCK;
            s->blk[b] = sum_weights(w + b * BLOCK, len);
            Z += s->blk[b];
        }
        if (!filter) {
            /* Find the block, then the token inside it: O(V / BLOCK + BLOCK). */
            double target = u * Z, cum = 0.0;
            size_t b = 0, last_b = 0;
            for (; b < nb; b++) {
                if (s->blk[b] <= 0.0) continue;
                last_b = b;
                if (target < cum + s->blk[b]) break;
                cum += s->blk[b];
            }
            double t_in = target - cum;
            if (b == nb) { /* rounding: the last positive weight of the last block */
                b = last_b;
                t_in = INFINITY;
            }
            size_t end = b + 1 < nb ? (b + 1) * BLOCK : V, last = b * BLOCK;
            double c2 = 0.0;
            for (size_t i = b * BLOCK; i < end; i++) {
                if (w[i] <= 0.0f) continue;
                c2 += w[i];
                last = i;
                if (t_in < c2) break;
            }
            *token = (int32_t)last;
            return TS_OK;
        }
        double cut = cutoff(top_p, min_p, Z, V);
        n = 0;
        for (size_t i = 0; i < V; i++)
            if (w[i] > 0.0f && (double)w[i] >= cut) c[n++] = (cand_t){w[i], (int32_t)i};
    }
    /* n >= 1: the max has weight 1 and passes every cutoff (min_p < 1, cut <= Z/2n). */
    if (top_p < 1.0f) n = nucleus(c, n, Z, top_p);
    *token = draw_cand(c, n, u);
    return TS_OK;
}

/* ---------------------------------------------------------------- logprobs */

ts_status ts_logprobs(const float *logits, uint32_t n_vocab, int32_t token,
                      float *token_logprob, uint32_t n_top, ts_token_logprob *top) {
    if (!logits || n_vocab == 0) return TS_FAIL(TS_INVAL, "logprobs: no logits");
    if (token_logprob && (token < 0 || (uint32_t)token >= n_vocab))
        return TS_FAIL(TS_INVAL, "logprobs: token %d is out of range [0, %u)", token, n_vocab);
    if (n_top > TS_SAMPLER_MAX_TOP_LOGPROBS)
        return TS_FAIL(TS_INVAL, "top_logprobs = %u is out of range: must be in [0, %u]",
                       n_top, TS_SAMPLER_MAX_TOP_LOGPROBS);
    if (n_top > 0 && !top) return TS_FAIL(TS_INVAL, "logprobs: top is NULL");
    if (n_top > n_vocab) n_top = n_vocab;
    float m = -INFINITY;
    for (uint32_t i = 0; i < n_vocab; i++) {
        float x = logits[i];
        if (!(x <= FLT_MAX) && x != -INFINITY)
            return TS_FAIL(TS_INVAL, "logits[%u] is %s", i, isnan(x) ? "NaN" : "+inf");
        if (x > m) m = x;
    }
    if (m == -INFINITY) return TS_FAIL(TS_INVAL, "no token has a finite logit");
    double z = 0.0;
    for (uint32_t i = 0; i < n_vocab; i++) z += ts_exp_neg(logits[i] - m);
    const double lz = log(z);
    if (token_logprob) *token_logprob = (float)((double)(logits[token] - m) - lz);
    /* Sorted insertion into top[0..have): strictly greater only, so ties keep the
     * lower id ahead. */
    uint32_t have = 0;
    cand_t best[TS_SAMPLER_MAX_TOP_LOGPROBS];
    for (uint32_t i = 0; i < n_vocab && n_top; i++) {
        float x = logits[i];
        if (have == n_top && !(x > best[have - 1].v)) continue;
        uint32_t at = have < n_top ? have++ : have - 1;
        while (at > 0 && x > best[at - 1].v) {
            best[at] = best[at - 1];
            at--;
        }
        best[at] = (cand_t){x, (int32_t)i};
    }
    for (uint32_t i = 0; i < n_top; i++) {
        top[i].token = best[i].id;
        top[i].logprob = best[i].v == -INFINITY
                             ? -INFINITY
                             : (float)((double)(best[i].v - m) - lz);
    }
    return TS_OK;
}

/* ---------------------------------------------------------------- stop strings */

size_t ts_stop_check(const char *text, size_t len, const char *const *stops, size_t n_stops,
                     size_t *which) {
    size_t best = TS_STOP_NONE, best_j = 0;
    for (size_t j = 0; j < n_stops; j++) {
        const char *st = stops[j];
        if (!st || !st[0]) continue;
        size_t m = strlen(st);
        if (m > len) continue;
        size_t lim = len - m + 1; /* start positions [0, lim) */
        if (best != TS_STOP_NONE && best < lim) lim = best; /* only strictly earlier */
        size_t pos = 0;
        while (pos < lim) {
            const char *hit = memchr(text + pos, (unsigned char)st[0], lim - pos);
            if (!hit) break;
            pos = (size_t)(hit - text);
            if (memcmp(hit, st, m) == 0) {
                best = pos;
                best_j = j;
                break;
            }
            pos++;
        }
    }
    if (which && best != TS_STOP_NONE) *which = best_j;
    return best;
}

size_t ts_stop_holdback(const char *text, size_t len, const char *const *stops,
                        size_t n_stops) {
    size_t hold = 0;
    for (size_t j = 0; j < n_stops; j++) {
        const char *st = stops[j];
        if (!st || !st[0]) continue;
        size_t m = strlen(st);
        size_t k = m - 1 < len ? m - 1 : len;
        for (; k > hold; k--) {
            if (memcmp(text + len - k, st, k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

/* ---------------------------------------------------------------- top-k prefilter */

static inline bool top_better(float a, int32_t ia, float b, int32_t ib) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na && (!nb || ia < ib);
    return a > b || (a == b && ia < ib);
}

void ts_topk_best_first(const float *x, int64_t n, int32_t k, int32_t *ids, float *vals) {
    int32_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const int32_t id = (int32_t)i;
        if (m == k && !top_better(v, id, vals[k - 1], ids[k - 1])) continue;
        int32_t j = m < k ? m++ : k - 1;
        while (j > 0 && top_better(v, id, vals[j - 1], ids[j - 1])) {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = v;
        ids[j] = id;
    }
}

bool ts_sampler_top_ok(const ts_sampler *s, uint32_t k) {
    if (!s || k == 0) return false;
    /* any penalty parameter (not only an active window): the answer holds for the whole
     * life of the sampler */
    if (s->p.repetition_penalty != 1.0f || s->p.presence_penalty != 0.0f ||
        s->p.frequency_penalty != 0.0f)
        return false;
    if (s->p.temperature == 0.0f) return true;
    return s->p.top_k > 0 && s->p.top_k < s->n_vocab && s->p.top_k <= k;
}

ts_status ts_sampler_sample_top(ts_sampler *s, const int32_t *ids, const float *vals,
                                uint32_t n, int32_t *token) {
    if (!s || !ids || !vals || !token) return TS_FAIL(TS_INVAL, "sampler: NULL argument");
    if (!ts_sampler_top_ok(s, n))
        return TS_FAIL(TS_UNSUPPORTED, "sampler: %u candidates cannot stand for the logits "
                       "(penalties, top_k %u)", n, s->p.top_k);
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= s->n_vocab)
            return TS_FAIL(TS_INVAL, "sampler: candidate id %d out of range", ids[i]);
    /* NaN / +inf rank first: the same check as on the full row */
    const float m = vals[0];
    if (m != m || m == INFINITY)
        return TS_FAIL(TS_INVAL, "logits[%d] is %s", ids[0], m != m ? "NaN" : "+inf");
    if (m == -INFINITY) return TS_FAIL(TS_INVAL, "no token has a finite logit");
    if (s->p.temperature == 0.0f) {
        *token = ids[0];
        return TS_OK;
    }
    const float invT = 1.0f / s->p.temperature;
    const float top_p = s->p.top_p, min_p = s->p.min_p;
    const bool filter = top_p < 1.0f || min_p > 0.0f;
    const double u = rng_uniform(s->rng);
    cand_t *c = s->cand;
    size_t nk = s->p.top_k;
    double Z = 0.0;
    for (size_t i = 0; i < nk; i++) {
        c[i].v = ts_exp_neg((vals[i] - m) * invT);
        c[i].id = ids[i];
        Z += c[i].v;
    }
    if (filter) nk = compact(c, nk, cutoff(top_p, min_p, Z, nk));
    if (top_p < 1.0f) nk = nucleus(c, nk, Z, top_p);
    *token = draw_cand(c, nk, u);
    return TS_OK;
}
