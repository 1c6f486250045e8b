/* sampler.h: the token sampler (host side) and stop-string helpers.
 *
 * A ts_sampler turns one logits vector (n_vocab floats, the model's output for the last
 * position) into one token id. Order of operations (llama.cpp / Hugging Face order; see
 * docs/sampling.md for the full contract):
 *
 *   1. penalties over the tokens of the history window (ts_sampler_accept):
 *        repetition (multiplicative, CTRL/HF/llama.cpp): l > 0 ? l / r : l * r
 *        then frequency and presence (additive, OpenAI):  l -= c * f + (c > 0) * p
 *      where c is the token's count in the window;
 *   2. temperature == 0: greedy, argmax (ties to the lowest id); stop here;
 *   3. top-k (keep the k largest logits; ties to the lowest ids);
 *   4. temperature (l / T) and softmax;
 *   5. top-p (keep the smallest most-probable prefix whose mass reaches top_p);
 *   6. min-p (keep tokens with p >= min_p * p_max);
 *   7. one draw from the remaining renormalized distribution with xoshiro256**
 *      (seeded through splitmix64(seed)); exactly one 64-bit RNG output per
 *      non-greedy ts_sampler_sample call.
 *
 * Reproducibility: the same parameters (seed included), the same n_vocab and the same
 * sequence of accept/sample calls with bit-identical logits give the same tokens on every
 * IEEE-754 machine (FLT_EVAL_METHOD 0, i.e. any 64-bit target): the sampler uses its own exp (plain + and *, compiled with
 * -ffp-contract=off), sums in double in a fixed order and never calls libm on that path.
 *
 * Memory: create allocates everything (about 16 bytes * n_vocab + 4 bytes * window);
 * accept and sample never allocate. A sampler is not thread-safe: one per sequence.
 */
#ifndef TS_SAMPLER_H
#define TS_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Upper bounds enforced by ts_sampler_params_validate. */
#define TS_SAMPLER_MAX_TEMPERATURE 100.0f
#define TS_SAMPLER_MAX_REP_PENALTY 10.0f
#define TS_SAMPLER_MAX_ADD_PENALTY 2.0f   /* presence/frequency in [-2, 2] (OpenAI) */
#define TS_SAMPLER_MAX_WINDOW (1u << 20)  /* repetition_window */
#define TS_SAMPLER_MAX_TOP_LOGPROBS 20u

typedef struct ts_sampler_params {
    float temperature;          /* [0, 100]; 0 = greedy */
    uint32_t top_k;             /* 0 = off; >= n_vocab is also off */
    float top_p;                /* (0, 1]; 1 = off */
    float min_p;                /* [0, 1); 0 = off */
    float repetition_penalty;   /* (0, 10]; 1 = off */
    uint32_t repetition_window; /* [0, 2^20]; last N accepted tokens; 0 = all of them */
    float presence_penalty;     /* [-2, 2]; 0 = off */
    float frequency_penalty;    /* [-2, 2]; 0 = off */
    uint64_t seed;              /* any value; same seed = same draws */
} ts_sampler_params;

/* temperature 1, top_k 0, top_p 1, min_p 0, repetition_penalty 1, window 0, presence and
 * frequency 0, seed 0: plain sampling from softmax(logits). */
ts_sampler_params ts_sampler_params_default(void);

/* TS_OK, or TS_INVAL with a message naming the first bad field, its value and its
 * allowed range (NaN is out of every range). */
ts_status ts_sampler_params_validate(const ts_sampler_params *p);

typedef struct ts_sampler ts_sampler;

/* Validates p, allocates every buffer for n_vocab (1 .. INT32_MAX) and seeds the RNG. */
ts_status ts_sampler_create(const ts_sampler_params *p, uint32_t n_vocab, ts_sampler **out);
void ts_sampler_destroy(ts_sampler *s);

/* Clears the history and reseeds the RNG with params.seed: the sampler behaves as if
 * just created. */
void ts_sampler_reset(ts_sampler *s);

/* Records a token in the history (the penalty window). The runner decides what to
 * accept: every generated token, and the prompt tokens if they should be penalized too
 * (llama.cpp and HF penalize the prompt; OpenAI counts the text so far). O(1).
 * TS_INVAL if token is outside [0, n_vocab). */
ts_status ts_sampler_accept(ts_sampler *s, int32_t token);

/* Count of `token` in the current window (0 for ids out of range). */
uint32_t ts_sampler_count(const ts_sampler *s, int32_t token);

/* Applies step 1 (penalties of the current window) in place to logits[n_vocab].
 * sample() does the same on a private copy; exposed for tests and for reporting
 * processed log-probabilities. */
void ts_sampler_apply_penalties(const ts_sampler *s, float *logits);

/* Picks one token from logits[n_vocab] (not modified). Does not accept the token: call
 * ts_sampler_accept for it. -inf logits are masked tokens; NaN or +inf, or no finite
 * logit at all, give TS_INVAL (then no RNG output is consumed). Never allocates.
 *
 * Cost per call, V = n_vocab, k = top_k, n = candidates that survive the cutoff below:
 *   penalties O(window) (plus an O(V) copy when any penalty is active);
 *   greedy O(V);
 *   top-k: heap selection O(V + k log k log(V/k)) typical, O(V log k) worst, for
 *     k <= 1024; quickselect O(V) expected for larger k;
 *   softmax O(V) (O(k) after top-k);
 *   top-p / min-p: one O(V) pass collects only the tokens above a cutoff that provably
 *     contains the answer (weight >= min_p, and >= (1-top_p) * Z / (2V) for top-p),
 *     then a weighted quickselect finds the nucleus boundary among those: O(n)
 *     expected, no sort of the vocabulary;
 *   draw O(V / 1024 + 1024) through block sums, or O(kept tokens). */
ts_status ts_sampler_sample(ts_sampler *s, const float *logits, int32_t *token);

const ts_sampler_params *ts_sampler_params_of(const ts_sampler *s);

/* ---- finishing on a top-k prefilter (GPU sampling, ts_engine_step_top) ----
 *
 * ts_topk_best_first: ids / vals[0..k) = the k best of x[0..n), best first: NaN first
 * (lower index among NaNs), then larger value, equal values by lower index. 1 <= k <= n.
 * The CPU reference of the GPU top-k kernel.
 *
 * ts_sampler_top_ok(s, k): true when ts_sampler_sample_top on the k best (ids, vals) of a
 * logits row gives exactly the token (and RNG use) that ts_sampler_sample gives on the
 * whole row. We require no penalty parameter (repetition 1, presence and frequency 0:
 * penalties change logits outside the k; the answer then holds for the sampler's life)
 * and either temperature == 0 (greedy: the first candidate, k >= 1) or
 * 0 < top_k <= k and top_k < n_vocab (top-k keeps only those; every later step, the max
 * included, works on the kept candidates best first). top_k == 0 (off), top_k > k or
 * penalties: use the full logits. NaN / +inf anywhere in the row ranks among the k best,
 * so the same TS_INVAL comes back; so does a row whose best is -inf.
 *
 * ts_sampler_sample_top: the sample from those candidates (n >= top_k, or >= 1 for
 * greedy); TS_UNSUPPORTED when !ts_sampler_top_ok(s, n). Does not accept the token. */
void ts_topk_best_first(const float *x, int64_t n, int32_t k, int32_t *ids, float *vals);
bool ts_sampler_top_ok(const ts_sampler *s, uint32_t k);
ts_status ts_sampler_sample_top(ts_sampler *s, const int32_t *ids, const float *vals,
                                uint32_t n, int32_t *token);

/* ---- log-probabilities (OpenAI `logprobs` / `top_logprobs`) ---- */

typedef struct ts_token_logprob {
    int32_t token;
    float logprob;
} ts_token_logprob;

/* Log-probabilities under the raw model distribution log_softmax(logits) (temperature 1,
 * no penalties, no truncation: the vLLM / OpenAI default). Writes the log-probability of
 * `token` to *token_logprob (if not NULL) and the n_top (<= 20) most likely tokens to
 * top[0..n_top), most likely first, ties to the lower id. O(V * n_top) worst case,
 * O(V) typical; no allocation. TS_INVAL for a bad token, n_top > 20, NaN/+inf logits. */
ts_status ts_logprobs(const float *logits, uint32_t n_vocab, int32_t token,
                      float *token_logprob, uint32_t n_top, ts_token_logprob *top);

/* ---- stop strings (pure functions, for the runner) ----
 *
 * Both work on the accumulated output text, so a stop string split across tokens is
 * found. Empty (or NULL) stop strings are ignored. Typical runner loop:
 *
 *   append the new token's bytes to text (len);
 *   cut = ts_stop_check(text + from, len - from, stops, n, &which);
 *   if (cut != TS_STOP_NONE) { emit text[emitted .. from + cut); finish STOP_SEQUENCE }
 *   else { hold = ts_stop_holdback(text, len, stops, n);
 *          emit text[emitted .. len - hold); emitted = len - hold; }
 *
 * where `from` = max(0, previous len - (longest stop length - 1)) keeps each call
 * O((new bytes + longest stop) * total stop bytes) instead of rescanning all the text. */

#define TS_STOP_NONE ((size_t)-1)

/* Byte offset in text[0..len) where the earliest match of any stop string begins (the
 * output is text[0..offset)), or TS_STOP_NONE. *which (if not NULL) gets the index of the
 * matching stop (the lowest index when several start at the same offset). */
size_t ts_stop_check(const char *text, size_t len, const char *const *stops, size_t n_stops,
                     size_t *which);

/* Number of trailing bytes of text[0..len) to hold back from streaming: the length of
 * the longest suffix that is a proper prefix of some stop string (it could become a
 * match once more text arrives). 0 when nothing needs holding. */
size_t ts_stop_holdback(const char *text, size_t len, const char *const *stops,
                        size_t n_stops);

#ifdef __cplusplus
}
#endif
#endif
