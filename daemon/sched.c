/* sched.c: continuous-batching scheduler (see sched.h).
 *
 * Where a step's samples come from (step_mode): full logits rows to the host (always
 * possible); on a single rank whose backend selects the top k on the device (CUDA; or any
 * backend that has the op with TESSERA_GPU_SAMPLING=1, for tests), only each row's SCHED_TOP_K
 * best (id, logit) pairs when every row's sampler finishes on them exactly
 * (ts_sampler_top_ok); distributed, only the argmax ids (the last stage picks them) when
 * every row is greedy without penalties. Grammar masks and min_tokens (EOS masked) need
 * the full rows. TESSERA_GPU_SAMPLING=0: full rows on one rank. The three give the same
 * tokens. */
#include "sched.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "log.h"
#include "metrics.h"

struct ts_sched {
    ts_sched_params p;
    ts_engine *e;
    ts_tokenizer *tok;
    ts_gvocab *gv;             /* token bytes + trie for grammar masks */
    const ts_config *cfg;
    ts_engine_info info;
    uint32_t n_vocab;
    pthread_t th;
    bool started;
    bool lost;                 /* mu: the distributed engine broke */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                 /* mu */
    ts_req *qhead;             /* mu: waiting requests, priority order, FIFO ties */
    char rr_last[TS_REQ_TENANT_MAX]; /* mu: tenant admitted last (fair share) */
    int32_t nq;                /* mu */
    ts_req **running;          /* by slot; scheduler thread (n_active mirrored under mu) */
    uint32_t n_active;         /* mu */
    int64_t kv_free;           /* mu: snapshot after each step */
    ts_kv_prefix_stats pfx;    /* mu: snapshot with kv_free */
    uint64_t n_completed, n_cancelled, n_rejected; /* mu */
    int64_t step_us_ewma;      /* mu */
    /* step buffers */
    int32_t *b_tok, *b_pos, *b_seq;
    const float **b_embd; /* image rows per batch token (multimodal steps only) */
    int32_t *b_hi;
    uint8_t *b_want;
    ts_req **row_owner;
    float *logits;
    int32_t *top_ids;          /* (rows, SCHED_TOP_K) of a top step; row ids of an ids step */
    float *top_vals;
    bool top_on, ids_on;       /* the device top-k / distributed argmax modes are possible */
    uint8_t *slot_taken;       /* reserved for a request being admitted */
};

enum { SCHED_TOP_K = 64 }; /* top-k prefilter width: requests with top_k <= 64 qualify */
enum { MODE_FULL, MODE_TOP, MODE_IDS };

int64_t ts_now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* ---- requests ---- */

ts_req *ts_req_new(void) {
    ts_req *r = ts_calloc(1, sizeof *r);
    if (!r) return NULL;
    atomic_init(&r->refs, 2);
    atomic_init(&r->cancelled, false);
    atomic_init(&r->cancel_by_id, false);
    r->slot = -1;
    r->pending = -1;
    r->deadline_us = INT64_MAX;
    return r;
}

void ts_req_unref(ts_req *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    ts_free(r->prompt);
    for (size_t i = 0; i < r->n_stops; i++) ts_free(r->stops[i]);
    ts_sampler_destroy(r->smp);
    ts_detok_stream_free(r->ds);
    ts_gmatch_free(r->gm);
    ts_grammar_free(r->grammar);
    ts_free(r->text);
    ts_free(r->out_ids);
    ts_free(r->img_embd);
    ts_free(r->img_first);
    if (r->user_release) r->user_release(r->user);
    ts_free(r);
}

/* ---- create / destroy ---- */

ts_status ts_sched_create(const ts_sched_params *p, ts_sched **out) {
    *out = NULL;
    ts_sched *s = ts_calloc(1, sizeof *s);
    if (!s) return TS_FAIL(TS_NOMEM, "scheduler");
    s->p = *p;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    ts_status rc;
    TS_TRY_GOTO(ts_engine_create(&s->p.engine, &s->e), rc, fail);
    s->cfg = ts_engine_config(s->e);
    ts_engine_get_info(s->e, &s->info);
    TS_TRY_GOTO(ts_tokenizer_load(ts_engine_gguf(s->e), &s->tok), rc, fail);
    s->n_vocab = s->cfg->n_vocab;
    TS_TRY_GOTO(ts_gvocab_build(s->tok, &s->gv), rc, fail);
    size_t nb = (size_t)s->info.n_batch, ns = (size_t)s->info.n_seq_max;
    s->running = ts_calloc(ns, sizeof *s->running);
    s->b_tok = ts_malloc(nb * sizeof(int32_t));
    s->b_pos = ts_malloc(nb * sizeof(int32_t));
    s->b_seq = ts_malloc(nb * sizeof(int32_t));
    s->b_want = ts_malloc(nb);
    s->b_embd = ts_calloc(nb, sizeof *s->b_embd);
    s->b_hi = ts_malloc(nb * sizeof(int32_t));
    s->row_owner = ts_calloc(ns, sizeof *s->row_owner);
    s->slot_taken = ts_calloc(ns, 1);
    /* at most one logits row per sequence per step */
    s->logits = ts_malloc(ns * (size_t)s->n_vocab * sizeof(float));
    s->top_ids = ts_malloc(ns * SCHED_TOP_K * sizeof(int32_t));
    s->top_vals = ts_malloc(ns * SCHED_TOP_K * sizeof(float));
    if (!s->running || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_want || !s->row_owner ||
        !s->logits || !s->slot_taken || !s->b_embd || !s->b_hi || !s->top_ids || !s->top_vals) {
        rc = TS_FAIL(TS_NOMEM, "scheduler buffers");
        goto fail;
    }
    const char *gs = getenv("TESSERA_GPU_SAMPLING");
    const bool cuda = s->info.backend && !strcmp(s->info.backend, "cuda");
    s->top_on = ts_engine_can_step_top(s->e) && s->n_vocab >= SCHED_TOP_K &&
                (gs ? !strcmp(gs, "1") || (strcmp(gs, "0") && cuda) : cuda);
    s->ids_on = s->p.engine.transport != NULL;
    if (s->p.queue_max <= 0) s->p.queue_max = 64;
    if (s->p.max_tokens_default <= 0) s->p.max_tokens_default = 256;
    s->kv_free = ts_engine_available_pages(s->e);
    *out = s;
    return TS_OK;
fail:
    ts_sched_destroy(s);
    return rc;
}

void ts_sched_destroy(ts_sched *s) {
    if (!s) return;
    if (s->started) ts_sched_stop(s);
    ts_free(s->running);
    ts_free(s->b_tok);
    ts_free(s->b_pos);
    ts_free(s->b_seq);
    ts_free(s->b_want);
    ts_free(s->b_embd);
    ts_free(s->b_hi);
    ts_free(s->row_owner);
    ts_free(s->logits);
    ts_free(s->top_ids);
    ts_free(s->top_vals);
    ts_gvocab_free(s->gv);
    ts_free(s->slot_taken);
    ts_tokenizer_free(s->tok);
    ts_engine_destroy(s->e);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    ts_free(s);
}

const ts_tokenizer *ts_sched_tokenizer(const ts_sched *s) { return s->tok; }
const ts_config *ts_sched_config(const ts_sched *s) { return s->cfg; }
int32_t ts_sched_n_ctx(const ts_sched *s) { return s->info.n_ctx; }
int32_t ts_sched_max_tokens_default(const ts_sched *s) { return s->p.max_tokens_default; }
const char *ts_sched_model_path(const ts_sched *s) { return s->p.engine.model_path; }
ts_engine *ts_sched_engine(ts_sched *s) { return s->e; }

/* ---- queue (mu held) ---- */

/* Fair share: the queued request to admit next (a link in the queue). The queue is in
 * priority order, so the candidates are the requests with the head's priority; among them
 * the first request of the tenant that follows s->rr_last in name order (cyclically). */
static ts_req **pick_next_locked(ts_sched *s) {
    if (!s->qhead) return NULL;
    const int32_t prio = s->qhead->priority;
    ts_req **best = NULL, **lowest = NULL;
    for (ts_req **pp = &s->qhead; *pp && (*pp)->priority == prio; pp = &(*pp)->next) {
        const char *t = (*pp)->tenant;
        if (!lowest || strcmp(t, (*lowest)->tenant) < 0) lowest = pp; /* first of its tenant */
        if (strcmp(t, s->rr_last) > 0 && (!best || strcmp(t, (*best)->tenant) < 0)) best = pp;
    }
    return best ? best : lowest;
}

ts_status ts_sched_submit(ts_sched *s, ts_req *r, uint32_t *queue_pos) {
    r->t_submit = ts_now_us();
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->nq >= s->p.queue_max) {
        s->n_rejected++;
        pthread_mutex_unlock(&s->mu);
        ts_req_unref(r);
        return TS_FAIL(TS_EXHAUSTED, "the request queue is full (%d waiting)", s->p.queue_max);
    }
    if (s->lost) {
        pthread_mutex_unlock(&s->mu);
        ts_req_unref(r);
        return TS_FAIL(TS_UNAVAILABLE, "the distributed engine was lost (a rank failed)");
    }
    ts_req **pp = &s->qhead;
    uint32_t ahead = 0;
    while (*pp && (*pp)->priority >= r->priority) {
        pp = &(*pp)->next;
        ahead++;
    }
    r->next = *pp;
    *pp = r;
    s->nq++;
    if (r->sink && r->sink->queued) r->sink->queued(r, ahead);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (queue_pos) *queue_pos = ahead;
    return TS_OK;
}

void ts_sched_poke(ts_sched *s) {
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

bool ts_sched_cancel(ts_sched *s, const char *id) {
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (ts_req *r = s->qhead; r; r = r->next)
        if (!strcmp(r->id, id)) {
            atomic_store(&r->cancel_by_id, true);
            found = true;
        }
    /* running[] belongs to the scheduler thread, but the pointers stay valid while mu is
     * held: a request leaves running[] only with mu held (finish_locked below). */
    for (int32_t i = 0; i < s->info.n_seq_max; i++) {
        ts_req *r = s->running[i];
        if (r && !strcmp(r->id, id)) {
            atomic_store(&r->cancel_by_id, true);
            found = true;
        }
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return found;
}

void ts_sched_get_stats(ts_sched *s, ts_sched_stats *st) {
    pthread_mutex_lock(&s->mu);
    st->active = s->n_active;
    st->queued = (uint32_t)s->nq;
    st->slots = (uint32_t)s->info.n_seq_max;
    st->n_batch = (uint32_t)s->info.n_batch;
    st->kv_pages_total = s->info.kv_global_pages;
    st->kv_pages_free = s->kv_free;
    st->page_size = s->info.page_size;
    st->n_ctx = s->info.n_ctx;
    st->completed = s->n_completed;
    st->cancelled = s->n_cancelled;
    st->rejected = s->n_rejected;
    st->prefix_cached_tokens = s->pfx.entries * s->info.page_size;
    st->prefix_hit_tokens = s->pfx.hit_tokens;
    st->weight_bytes = s->info.weight_bytes;
    st->kv_bytes = s->info.kv_bytes;
    st->activation_bytes = s->info.activation_bytes;
    pthread_mutex_unlock(&s->mu);
}

int64_t ts_sched_retry_hint_ms(ts_sched *s) {
    pthread_mutex_lock(&s->mu);
    int64_t step = s->step_us_ewma > 0 ? s->step_us_ewma : 10000;
    int64_t ms = step * s->p.max_tokens_default / 1000 / (s->info.n_seq_max > 0 ? s->info.n_seq_max : 1);
    pthread_mutex_unlock(&s->mu);
    return ms < 100 ? 100 : ms > 30000 ? 30000 : ms;
}

/* ---- per-request work (scheduler thread) ---- */

static int text_add(ts_req *r, const char *p, size_t n) {
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap * 2 : 256;
        while (cap < r->text_len + n + 1) cap *= 2;
        char *q = ts_realloc(r->text, cap);
        if (!q) return -1;
        r->text = q;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, p, n);
    r->text_len += n;
    r->text[r->text_len] = '\0';
    return 0;
}

/* Emits text[emitted, upto) with the ids not yet reported. */
static void emit(ts_req *r, size_t upto) {
    if (upto < r->emitted) upto = r->emitted;
    size_t nt = upto - r->emitted, ni = r->n_out_ids - r->delta_ids_from;
    if (!nt) return; /* ids travel with the next text */
    if (r->sink->delta)
        r->sink->delta(r, r->text + r->emitted, nt, r->out_ids + r->delta_ids_from, ni);
    r->emitted = upto;
    r->delta_ids_from = r->n_out_ids;
}

/* Removes r from its slot (if any), frees its KV, drops the scheduler's reference. */
static void retire(ts_sched *s, ts_req *r) {
    if (r->slot >= 0) {
        ts_engine_seq_release(s->e, r->slot);
        pthread_mutex_lock(&s->mu);
        s->running[r->slot] = NULL;
        s->n_active--;
        s->kv_free = ts_engine_available_pages(s->e);
        ts_engine_prefix_stats(s->e, &s->pfx);
        pthread_mutex_unlock(&s->mu);
        r->slot = -1;
    }
    ts_req_unref(r);
}

static void finish(ts_sched *s, ts_req *r, ts_finish_reason why) {
    if (why != TS_FINISH_STOP_SEQUENCE) {
        const char *tail;
        size_t tl;
        if (r->ds && ts_detok_stream_flush(r->ds, &tail, &tl) == TS_OK) text_add(r, tail, tl);
    }
    emit(r, r->text_len);
    r->t_end = ts_now_us();
    ts_req_timing t = {0};
    int64_t first = r->t_first ? r->t_first : r->t_end;
    t.queue_us = (uint64_t)(r->t_admit - r->t_submit);
    t.prefill_us = (uint64_t)(first - r->t_admit);
    t.ttft_us = (uint64_t)(first - r->t_submit);
    t.decode_us = (uint64_t)(r->t_end - first);
    if (r->n_masks)
        TS_LOG_INFO("request %s: grammar masks: %d, %.3f ms per token", r->id, r->n_masks,
                    (double)r->mask_us / 1e3 / r->n_masks);
    if (r->sink->finished) r->sink->finished(r, why, &t);
    TS_LOG_INFO("request %s: finished (%d) prompt %zu tokens, %d generated, ttft %.1f ms, "
                "total %.1f ms", r->id, (int)why, r->n_prompt, r->n_gen, (double)t.ttft_us / 1e3,
                (double)(r->t_end - r->t_submit) / 1e3);
    pthread_mutex_lock(&s->mu);
    if (why == TS_FINISH_CANCELLED) s->n_cancelled++;
    else s->n_completed++;
    pthread_mutex_unlock(&s->mu);
    retire(s, r);
}

static void fail(ts_sched *s, ts_req *r, ts_status code, const char *msg) {
    TS_LOG_WARN("request %s: failed: %s", r->id, msg);
    if (r->sink->failed) r->sink->failed(r, code, msg);
    retire(s, r);
}

/* Cancelled by the client (or Cancel()), or past its deadline: true if r was retired. */
static bool reap(ts_sched *s, ts_req *r) {
    if (atomic_load(&r->cancel_by_id)) {
        TS_LOG_INFO("request %s: cancelled by Cancel()", r->id);
        finish(s, r, TS_FINISH_CANCELLED);
        return true;
    }
    if (atomic_load(&r->cancelled)) {
        TS_LOG_INFO("request %s: cancelled (client cancel or deadline) after %d tokens; "
                    "freeing slot %d", r->id, r->n_gen, r->slot);
        pthread_mutex_lock(&s->mu);
        s->n_cancelled++;
        pthread_mutex_unlock(&s->mu);
        retire(s, r);
        return true;
    }
    if (r->deadline_us != INT64_MAX && ts_now_us() > r->deadline_us) {
        pthread_mutex_lock(&s->mu);
        s->n_cancelled++;
        pthread_mutex_unlock(&s->mu);
        fail(s, r, TS_TIMEOUT, "deadline exceeded");
        return true;
    }
    return false;
}

/* Sets up a request taken from the queue (its slot reserved at admission, r->slot_res). */
static bool admit(ts_sched *s, ts_req *r) {
    r->t_admit = ts_now_us();
    const int32_t slot = r->slot_res;
    if (slot < 0) {
        fail(s, r, r->admit_rc, r->admit_err);
        return false;
    }
    r->slot = slot;
    pthread_mutex_lock(&s->mu);
    s->slot_taken[slot] = 0;
    s->running[slot] = r;
    s->n_active++;
    s->kv_free = ts_engine_available_pages(s->e);
    ts_engine_prefix_stats(s->e, &s->pfx);
    pthread_mutex_unlock(&s->mu);
    if (ts_sampler_create(&r->sp, s->n_vocab, &r->smp) != TS_OK ||
        ts_detok_stream_init(s->tok, &r->ds) != TS_OK ||
        !(r->out_ids = ts_malloc(sizeof(int32_t) * (size_t)(r->max_tokens > 0 ? r->max_tokens : 1))) ||
        (r->grammar && ts_gmatch_new(r->grammar, &r->gm) != TS_OK)) {
        fail(s, r, TS_NOMEM, ts_last_error());
        return false;
    }
    for (size_t i = 0; i < r->n_prompt; i++) (void)ts_sampler_accept(r->smp, r->prompt[i]);
    r->n_prefilled = (size_t)r->n_cached; /* the cached prefix is not stepped again */
    r->pos = r->n_cached;
    ts_metrics_prompt_tokens(r->n_prompt);
    ts_metrics_cached_tokens((uint64_t)r->n_cached);
    TS_LOG_INFO("request %s: admitted to slot %d (tenant %s, prompt %zu tokens, %d cached, "
                "max_tokens %d, queue %.1f ms)", r->id, slot, r->tenant[0] ? r->tenant : "-",
                r->n_prompt, r->n_cached, r->max_tokens, (double)(r->t_admit - r->t_submit) / 1e3);
    return true;
}

static bool is_stop_id(const ts_req *r, int32_t t) {
    for (size_t i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == t) return true;
    return false;
}

static void on_token(ts_sched *s, ts_req *r, int32_t t);

/* The step mode for its rows (row_owner[0..nrows)): see the top of the file. */
static int step_mode(const ts_sched *s, int32_t nrows) {
    bool top = s->top_on, ids = s->ids_on;
    for (int32_t k = 0; k < nrows && (top || ids); k++) {
        const ts_req *r = s->row_owner[k];
        if (r->gm || r->n_gen < r->min_tokens) return MODE_FULL;
        if (top && !ts_sampler_top_ok(r->smp, SCHED_TOP_K)) top = false;
        if (ids && !ts_sampler_top_ok(r->smp, 1)) ids = false; /* greedy, no penalties */
    }
    return nrows == 0 ? MODE_FULL : top ? MODE_TOP : ids ? MODE_IDS : MODE_FULL;
}

/* Latency metrics of a sampled position of r. */
static void row_times(ts_req *r) {
    int64_t now = ts_now_us();
    if (!r->t_first) {
        r->t_first = now;
        ts_metrics_ttft_us(now - r->t_submit);
    } else {
        ts_metrics_itl_us(now - r->t_last);
    }
    r->t_last = now;
}

/* One sampled position for r from the n best (id, logit) pairs of its row (MODE_TOP: n =
 * SCHED_TOP_K; MODE_IDS: the argmax alone). */
static void on_top(ts_sched *s, ts_req *r, const int32_t *ids, const float *vals, uint32_t n) {
    row_times(r);
    int32_t t;
    if (ts_sampler_sample_top(r->smp, ids, vals, n, &t) != TS_OK) {
        fail(s, r, TS_INTERNAL, ts_last_error());
        return;
    }
    on_token(s, r, t);
}

/* One sampled position for r from its logits row. */
static void on_logits(ts_sched *s, ts_req *r, float *row) {
    row_times(r);
    if (r->gm) { /* structured output: only tokens that keep a valid prefix */
        int64_t t0 = ts_now_us();
        ts_status mrc = ts_gmatch_apply(r->gm, s->gv, row);
        r->mask_us += ts_now_us() - t0;
        r->n_masks++;
        if (mrc != TS_OK) {
            fail(s, r, TS_INTERNAL, ts_last_error());
            return;
        }
    } else if (r->n_gen < r->min_tokens) {
        int32_t eos = ts_tokenizer_eos(s->tok), eot = ts_tokenizer_eot(s->tok);
        if (eos >= 0) row[eos] = -INFINITY;
        if (eot >= 0) row[eot] = -INFINITY;
    }
    int32_t t;
    if (ts_sampler_sample(r->smp, row, &t) != TS_OK) {
        fail(s, r, TS_INTERNAL, ts_last_error());
        return;
    }
    on_token(s, r, t);
}

/* r's next token t, sampled: stop checks, streaming, limits. */
static void on_token(ts_sched *s, ts_req *r, int32_t t) {
    if ((!r->ignore_eos || r->gm) && ts_tokenizer_is_eog(s->tok, t)) {
        finish(s, r, TS_FINISH_STOP);
        return;
    }
    if (is_stop_id(r, t)) {
        finish(s, r, TS_FINISH_STOP_SEQUENCE);
        return;
    }
    if (r->gm && !ts_gmatch_accept_token(r->gm, s->gv, t)) {
        fail(s, r, TS_INTERNAL, "grammar: the sampled token does not fit the grammar");
        return;
    }
    (void)ts_sampler_accept(r->smp, t);
    r->out_ids[r->n_out_ids++] = t;
    r->n_gen++;
    ts_metrics_generated_tokens(1);
    const char *piece;
    size_t plen;
    if (ts_detok_stream_push(r->ds, t, &piece, &plen) != TS_OK || text_add(r, piece, plen)) {
        fail(s, r, TS_NOMEM, "detokenize");
        return;
    }
    if (r->n_stops) {
        size_t max_stop = 0;
        for (size_t i = 0; i < r->n_stops; i++)
            if (strlen(r->stops[i]) > max_stop) max_stop = strlen(r->stops[i]);
        size_t from = r->text_len > plen + max_stop ? r->text_len - plen - max_stop : 0;
        if (from < r->emitted) from = r->emitted; /* emitted text never holds a match start */
        size_t which;
        size_t cut = ts_stop_check(r->text + from, r->text_len - from,
                                   (const char *const *)r->stops, r->n_stops, &which);
        if (cut != TS_STOP_NONE) {
            r->text_len = from + cut;
            r->text[r->text_len] = '\0';
            finish(s, r, TS_FINISH_STOP_SEQUENCE);
            return;
        }
        size_t hold = ts_stop_holdback(r->text, r->text_len, (const char *const *)r->stops,
                                       r->n_stops);
        emit(r, r->text_len - hold);
    } else {
        emit(r, r->text_len);
    }
    if (r->gm && ts_gmatch_done(r->gm)) { /* the value is complete: nothing may follow */
        finish(s, r, TS_FINISH_STOP);
        return;
    }
    if (r->n_gen >= r->max_tokens) {
        finish(s, r, TS_FINISH_LENGTH);
        return;
    }
    if (r->pos >= s->info.n_ctx) {
        finish(s, r, TS_FINISH_CONTEXT_LENGTH);
        return;
    }
    r->pending = t;
}

/* Builds and runs one step over the running sequences. */
static void engine_lost(ts_sched *s, const char *msg);

/* Images: k prompt tokens from `start` cut so that no image block is split (a block that
 * does not fit waits for the next step); the index of the image holding position p, or -1. */
static int32_t img_cut(const ts_req *r, size_t start, int32_t k) {
    for (int32_t i = 0; i < r->n_img; i++) {
        size_t f = (size_t)r->img_first[i], e = f + (size_t)r->n_img_tok;
        if (f < start + (size_t)k && e > start + (size_t)k) return (int32_t)(f > start ? f - start : 0);
    }
    return k;
}
static int32_t img_of(const ts_req *r, size_t p) {
    for (int32_t i = 0; i < r->n_img; i++)
        if (p >= (size_t)r->img_first[i] && p < (size_t)r->img_first[i] + (size_t)r->n_img_tok)
            return i;
    return -1;
}

static void step(ts_sched *s) {
    const int32_t ns = s->info.n_seq_max, nb = s->info.n_batch, nc = s->info.n_chunk;
    int32_t n = 0, nrows = 0;
    bool mm = false; /* an image token in this step: embd / attn_hi are passed */
    for (int32_t i = 0; i < ns; i++) {
        ts_req *r = s->running[i];
        if (!r || reap(s, r)) continue;
        if (r->pending >= 0 && n < nb) { /* decode: one token */
            s->b_tok[n] = r->pending;
            s->b_pos[n] = r->pos;
            s->b_seq[n] = i;
            s->b_want[n] = 1;
            s->b_embd[n] = NULL;
            s->b_hi[n] = r->pos;
            s->row_owner[nrows++] = r;
            n++;
        }
    }
    for (int32_t i = 0; i < ns && n < nb; i++) { /* prefill chunks with what is left */
        ts_req *r = s->running[i];
        if (!r || r->n_prefilled >= r->n_prompt) continue;
        size_t left = r->n_prompt - r->n_prefilled;
        int32_t k = (int32_t)(left < (size_t)nc ? left : (size_t)nc);
        if (k > nb - n) k = nb - n;
        if (r->n_img) k = img_cut(r, r->n_prefilled, k);
        for (int32_t j = 0; j < k; j++) {
            size_t p = r->n_prefilled + (size_t)j;
            s->b_tok[n] = r->prompt[p];
            s->b_pos[n] = (int32_t)p;
            s->b_seq[n] = i;
            int32_t im = r->n_img ? img_of(r, p) : -1;
            s->b_embd[n] = NULL;
            s->b_hi[n] = (int32_t)p;
            if (im >= 0) {
                size_t row = (size_t)im * (size_t)r->n_img_tok + (p - (size_t)r->img_first[im]);
                s->b_embd[n] = r->img_embd + row * (size_t)r->img_width;
                s->b_hi[n] = r->img_first[im] + r->n_img_tok - 1;
                mm = true;
            }
            s->b_want[n] = p + 1 == r->n_prompt;
            if (s->b_want[n]) s->row_owner[nrows++] = r;
            n++;
        }
        r->n_prefilled += (size_t)k;
        r->pos = (int32_t)r->n_prefilled;
    }
    if (!n) return;
    ts_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq,
                  .want_logits = s->b_want, .embd = mm ? s->b_embd : NULL,
                  .attn_hi = mm ? s->b_hi : NULL};
    const int mode = step_mode(s, nrows);
    int64_t t0 = ts_now_us();
    ts_status rc = mode == MODE_TOP ? ts_engine_step_top(s->e, &b, SCHED_TOP_K, s->top_ids,
                                                         s->top_vals)
                   : mode == MODE_IDS ? ts_engine_step_greedy(s->e, &b, s->top_ids)
                                      : ts_engine_step(s->e, &b, s->logits);
    int64_t dt = ts_now_us() - t0;
    ts_metrics_step_us(0, dt);
    pthread_mutex_lock(&s->mu);
    s->step_us_ewma = s->step_us_ewma ? (s->step_us_ewma * 7 + dt) / 8 : dt;
    pthread_mutex_unlock(&s->mu);
    TS_LOG_DEBUG("step: %d tokens, %d %s, %.2f ms", n, nrows,
                 mode == MODE_TOP ? "top-k rows" : mode == MODE_IDS ? "greedy ids" : "logits rows",
                 (double)dt / 1e3);
    if (rc != TS_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "engine step failed: %s", ts_last_error());
        TS_LOG_ERROR("%s", msg);
        for (int32_t i = 0; i < ns; i++)
            if (s->running[i]) fail(s, s->running[i], TS_INTERNAL, msg);
        if (ts_engine_broken(s->e)) engine_lost(s, msg);
        return;
    }
    /* the decode tokens were consumed: advance their positions */
    for (int32_t i = 0; i < n; i++) {
        ts_req *r = s->running[s->b_seq[i]];
        if (r && r->pending >= 0 && r->pos == s->b_pos[i]) {
            r->pos++;
            r->pending = -1;
        }
    }
    for (int32_t k = 0; k < nrows; k++) {
        ts_req *r = s->row_owner[k];
        if (mode == MODE_TOP)
            on_top(s, r, s->top_ids + (size_t)k * SCHED_TOP_K,
                   s->top_vals + (size_t)k * SCHED_TOP_K, SCHED_TOP_K);
        else if (mode == MODE_IDS) {
            /* the argmax as the one candidate (its logit did not come back; any finite
             * value does): the sampler's state moves as on the full row (top_k 1 with a
             * temperature draws its random number) */
            const float v = 0.0f;
            on_top(s, r, s->top_ids + k, &v, 1);
        } else
            on_logits(s, r, s->logits + (size_t)k * s->n_vocab);
    }
}

/* A broken distributed engine: fail whatever waits, then tell the front end (once). */
static void engine_lost(ts_sched *s, const char *msg) {
    pthread_mutex_lock(&s->mu);
    if (s->lost) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->lost = true;
    TS_LOG_ERROR("distributed engine lost: %s", msg);
    ts_req *q = s->qhead;
    s->qhead = NULL;
    s->nq = 0;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        ts_req *r = q;
        q = r->next;
        fail(s, r, TS_UNAVAILABLE, "the distributed engine was lost (a rank failed)");
    }
    if (s->p.fatal) s->p.fatal(s->p.fatal_ctx, msg);
}

/* Idle wait; a distributed engine's serving ranks get a keepalive at least every
 * ts_engine_keepalive_s seconds. Called and returns with s->mu held. */
static void idle_wait(ts_sched *s) {
    const double ka = ts_engine_keepalive_s(s->e);
    if (ka <= 0 || s->lost) {
        pthread_cond_wait(&s->cv, &s->mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const int64_t ns = (int64_t)(ka * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec += (long)(ns % 1000000000);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT || s->stop) return;
    pthread_mutex_unlock(&s->mu);
    if (ts_engine_ping(s->e) != TS_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "keepalive failed: %s", ts_last_error());
        engine_lost(s, msg);
    }
    pthread_mutex_lock(&s->mu);
}

static void *sched_main(void *arg) {
    ts_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        /* drop cancelled / expired requests from the queue */
        ts_req *dropped = NULL;
        for (ts_req **pp = &s->qhead; *pp;) {
            ts_req *r = *pp;
            bool expired = r->deadline_us != INT64_MAX && ts_now_us() > r->deadline_us;
            if (atomic_load(&r->cancelled) || atomic_load(&r->cancel_by_id) || expired) {
                *pp = r->next;
                s->nq--;
                r->next = dropped;
                dropped = r;
            } else {
                pp = &r->next;
            }
        }
        /* admission: a free slot and the KV pages for prompt + max_tokens (less what the
         * prefix cache holds), reserved here (the engine belongs to this thread) */
        ts_req *admitted = NULL, **atail = &admitted;
        while (s->qhead && s->n_active < (uint32_t)s->info.n_seq_max) {
            ts_req **pp = pick_next_locked(s);
            ts_req *r = *pp;
            int32_t slot = 0;
            while (slot < s->info.n_seq_max && (s->running[slot] || s->slot_taken[slot])) slot++;
            if (slot == s->info.n_seq_max) break;
            int32_t cached = 0;
            ts_status rc = ts_engine_seq_reserve_prefix(s->e, slot, r->prompt, (int32_t)r->n_prompt,
                                                        (int32_t)r->n_prompt + r->max_tokens,
                                                        &cached);
            if (rc == TS_EXHAUSTED) break; /* the chosen request waits for pages */
            r->slot_res = rc == TS_OK ? slot : -1;
            r->n_cached = cached;
            if (rc == TS_OK) {
                s->slot_taken[slot] = 1;
            } else {
                r->admit_rc = rc;
                snprintf(r->admit_err, sizeof r->admit_err, "%s", ts_last_error());
            }
            *pp = r->next;
            s->nq--;
            memcpy(s->rr_last, r->tenant, sizeof s->rr_last);
            r->next = NULL;
            *atail = r;
            atail = &r->next;
            s->n_active++; /* counted now; admit() recounts */
        }
        bool idle = !admitted && !dropped && s->n_active == 0;
        if (idle) {
            idle_wait(s);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        while (dropped) {
            ts_req *r = dropped;
            dropped = r->next;
            if (atomic_load(&r->cancel_by_id) && !atomic_load(&r->cancelled)) {
                r->t_admit = ts_now_us();
                finish(s, r, TS_FINISH_CANCELLED);
            } else if (!atomic_load(&r->cancelled)) {
                fail(s, r, TS_TIMEOUT, "deadline exceeded while queued");
            } else {
                TS_LOG_INFO("request %s: cancelled while queued", r->id);
                ts_req_unref(r);
            }
        }
        while (admitted) {
            ts_req *r = admitted;
            admitted = r->next;
            r->next = NULL;
            pthread_mutex_lock(&s->mu);
            s->n_active--; /* admit() counts it again */
            pthread_mutex_unlock(&s->mu);
            admit(s, r);
        }
        step(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    /* stopping: drop everything still held */
    for (int32_t i = 0; i < s->info.n_seq_max; i++)
        if (s->running[i]) fail(s, s->running[i], TS_UNAVAILABLE, "server shutting down");
    pthread_mutex_lock(&s->mu);
    ts_req *q = s->qhead;
    s->qhead = NULL;
    s->nq = 0;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        ts_req *r = q;
        q = r->next;
        fail(s, r, TS_UNAVAILABLE, "server shutting down");
    }
    return NULL;
}

ts_status ts_sched_start(ts_sched *s) {
    if (pthread_create(&s->th, NULL, sched_main, s) != 0)
        return TS_FAIL(TS_SYSTEM, "cannot start the scheduler thread");
    s->started = true;
    return TS_OK;
}

void ts_sched_stop(ts_sched *s) {
    if (!s->started) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    s->started = false;
}
