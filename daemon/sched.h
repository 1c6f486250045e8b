/* sched.h: the continuous-batching scheduler of tesserad (one rank, CPU engine).
 *
 * One scheduler thread owns the engine (ts_engine is not thread-safe); nothing else
 * touches it. Each step packs the next token of every decoding sequence plus chunks of
 * prompts being prefilled, up to n_batch tokens (chunked prefill). A request is admitted
 * from the bounded queue when a sequence slot is free and the KV cache has the pages for
 * prompt + max_tokens (reserved at admission, so a running request never runs out of KV).
 * With the prefix cache on (engine.prefix_cache_tokens), the reservation takes the cached
 * blocks that start the prompt, and prefill starts after them (r->n_cached); admission
 * counts only the pages a request still needs, evicting cached blocks nobody holds.
 * Admission order (fair share): the highest priority present first; among the requests of
 * that priority, round-robin over the tenants that have queued work (in tenant-name order,
 * starting after the tenant admitted last), FIFO within a tenant. So one tenant flooding
 * the queue delays another tenant's request by at most one admission per busy tenant. Cancelled requests (client cancel, deadline) are dropped at the
 * next step and their slot and pages freed.
 *
 * Lifecycle of a ts_req (see docs/daemon.md): created by the RPC handler with two
 * references, one for the RPC call (dropped when the call ends) and one for the scheduler
 * (dropped when the request leaves the queue or finishes). Freed when both are gone.
 * Output goes through the request's sink callbacks, called on the scheduler thread
 * (except queued(), see ts_sched_submit).
 */
#ifndef TS_SCHED_H
#define TS_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "grammar.h"
#include "sampler.h"
#include "status.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_REQ_MAX_STOPS 16
#define TS_REQ_MAX_STOP_LEN 256
#define TS_REQ_MAX_STOP_IDS 64
#define TS_REQ_ID_MAX 128
#define TS_REQ_TENANT_MAX 64

typedef enum {
    TS_FINISH_STOP = 1,           /* EOS / <end_of_turn> */
    TS_FINISH_STOP_SEQUENCE = 2,  /* stop string or stop token id */
    TS_FINISH_LENGTH = 3,         /* max_tokens */
    TS_FINISH_CONTEXT_LENGTH = 4, /* context window full */
    TS_FINISH_CANCELLED = 6,      /* Cancel(request_id) */
    TS_FINISH_TOOL_CALLS = 7,     /* set by the front end: the output is a tool call */
} ts_finish_reason;

typedef struct ts_req ts_req;

typedef struct ts_req_timing {
    uint64_t queue_us, prefill_us, ttft_us, decode_us;
} ts_req_timing;

/* Output callbacks (implemented by the RPC front end). */
typedef struct ts_req_sink {
    /* Queued at position pos (requests ahead). Called by ts_sched_submit with the queue
     * lock held, so it comes before any other callback of r. */
    void (*queued)(ts_req *r, uint32_t pos);
    /* New text (whole UTF-8 characters; may be empty when only held back) and the ids of
     * the tokens that produced it. */
    void (*delta)(ts_req *r, const char *text, size_t len, const int32_t *ids, size_t n_ids);
    /* Normal end; r->text / r->out_ids hold the whole output. */
    void (*finished)(ts_req *r, ts_finish_reason why, const ts_req_timing *t);
    /* Failure (code is a ts_status; msg says why). Not called for cancelled requests. */
    void (*failed)(ts_req *r, ts_status code, const char *msg);
} ts_req_sink;

struct ts_req {
    /* ---- set by the front end before submit ---- */
    char id[TS_REQ_ID_MAX + 1];
    char tenant[TS_REQ_TENANT_MAX]; /* "" = no auth (one shared tenant) */
    int32_t priority;
    int32_t *prompt; /* prompt token ids (owned: ts_free'd with the request) */
    size_t n_prompt;
    int32_t max_tokens;   /* resolved (> 0); n_prompt + max_tokens <= n_ctx */
    int32_t min_tokens;
    ts_sampler_params sp;
    char *stops[TS_REQ_MAX_STOPS]; /* owned */
    size_t n_stops;
    int32_t stop_ids[TS_REQ_MAX_STOP_IDS];
    size_t n_stop_ids;
    bool ignore_eos;
    /* structured output (NULL = none; owned): sampling is masked to the grammar's valid
     * prefixes, end-of-turn allowed only when the value is complete, and the request
     * finishes (STOP) as soon as the value is complete and nothing may follow. */
    ts_grammar *grammar;
    const ts_req_sink *sink;
    void *user; /* the front end's context (the RPC call) */
    void (*user_release)(void *user);
    atomic_bool cancelled; /* set by the front end (RPC close) or Cancel() */
    atomic_bool cancel_by_id;
    int64_t deadline_us;   /* monotonic; INT64_MAX = none */
    /* Images (docs/vision.md), n_img = 0 for text: image i's n_img_tok soft tokens sit at
     * prompt[img_first[i]..] (ascending, disjoint) and are fed img_embd rows (n_img *
     * n_img_tok rows of the model width; owned, like img_first). Each image is stepped
     * whole (n_img_tok <= the engine's n_chunk, and n_img_tok + slots <= n_batch). */
    float *img_embd;
    int32_t *img_first;
    int32_t n_img, n_img_tok, img_width;

    /* ---- scheduler state (scheduler thread only) ---- */
    atomic_int refs;
    struct ts_req *next;
    int32_t slot;
    int32_t slot_res;    /* slot reserved at admission (-1: the reservation failed) */
    ts_status admit_rc;  /* why, then */
    char admit_err[160];
    int32_t n_cached;    /* prompt tokens taken from the prefix cache */
    size_t n_prefilled;  /* prompt tokens already stepped */
    int32_t pending;     /* sampled token to feed next step, or -1 */
    int32_t pos;         /* next position */
    int32_t n_gen;
    ts_sampler *smp;
    ts_detok_stream *ds;
    ts_gmatch *gm;         /* matcher state of `grammar` */
    int64_t mask_us;       /* time spent computing masks */
    int32_t n_masks;
    char *text;          /* output text so far (stop strings cut) */
    size_t text_len, text_cap, emitted;
    int32_t *out_ids;
    size_t n_out_ids;
    size_t delta_ids_from; /* out_ids not yet reported by a delta */
    int64_t t_submit, t_admit, t_first, t_end;
    int64_t t_last;      /* time of the latest token (inter-token latency metric) */
};

/* Allocates a zeroed request with 2 references (front end + scheduler). */
ts_req *ts_req_new(void);
void ts_req_unref(ts_req *r);

typedef struct ts_sched_params {
    ts_engine_params engine;
    int32_t queue_max;          /* waiting requests at most */
    int32_t max_tokens_default; /* for max_tokens = 0 */
    /* A distributed engine broke (a lost rank, a transport deadline): called once on the
     * scheduler thread after the running requests were failed; the job cannot go on. */
    void (*fatal)(void *ctx, const char *msg);
    void *fatal_ctx;
} ts_sched_params;

typedef struct ts_sched ts_sched;

typedef struct ts_sched_stats {
    uint32_t active, queued, slots, n_batch;
    int64_t kv_pages_total, kv_pages_free;
    int32_t page_size, n_ctx;
    uint64_t completed, cancelled, rejected;
    int64_t prefix_cached_tokens;   /* prompt tokens held in the prefix cache */
    uint64_t prefix_hit_tokens;     /* prompt tokens served from it so far */
    uint64_t weight_bytes, kv_bytes, activation_bytes; /* the engine's memory (metrics) */
} ts_sched_stats;

/* Loads the engine and the tokenizer. */
ts_status ts_sched_create(const ts_sched_params *p, ts_sched **out);
ts_status ts_sched_start(ts_sched *s);
/* Stops the thread (after the current step) and drops every request still held. */
void ts_sched_stop(ts_sched *s);
void ts_sched_destroy(ts_sched *s);

const ts_tokenizer *ts_sched_tokenizer(const ts_sched *s);
ts_engine *ts_sched_engine(ts_sched *s);
const ts_config *ts_sched_config(const ts_sched *s);
int32_t ts_sched_n_ctx(const ts_sched *s);
int32_t ts_sched_max_tokens_default(const ts_sched *s);
const char *ts_sched_model_path(const ts_sched *s);

/* Queues r (taking the scheduler's reference in every case). TS_EXHAUSTED when the queue
 * is full (the scheduler's reference is dropped then), else TS_OK with *queue_pos = the
 * number of requests ahead. */
ts_status ts_sched_submit(ts_sched *s, ts_req *r, uint32_t *queue_pos);
/* Wakes the scheduler (after setting r->cancelled). */
void ts_sched_poke(ts_sched *s);
/* Cancels the request with this id (queued or running). True if found. */
bool ts_sched_cancel(ts_sched *s, const char *id);
void ts_sched_get_stats(ts_sched *s, ts_sched_stats *st);
/* Milliseconds a client should wait before retrying a rejected request (rough). */
int64_t ts_sched_retry_hint_ms(ts_sched *s);

int64_t ts_now_us(void);

#ifdef __cplusplus
}
#endif
#endif
