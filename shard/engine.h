/* engine.h: one rank's Gemma 3 engine: model weights on a backend, the paged KV cache,
 * and the step API the scheduler drives.
 *
 * A step takes a batch of tokens from one or more sequences (llama.cpp-style: each token
 * has its sequence slot and position; a sequence's tokens in a batch are consecutive
 * positions in increasing order, at most n_chunk of them) and returns logits for the
 * tokens flagged in `want_logits`, in batch order. Prefill in chunks and decode of many
 * sequences mix freely. Before a sequence's tokens are stepped, its positions must be
 * reserved (ts_engine_seq_reserve; TS_EXHAUSTED when the KV cache is full).
 *
 * Nothing is allocated inside a step (all buffers are sized at create). Not thread-safe:
 * one thread drives an engine.
 */
#ifndef TS_ENGINE_H
#define TS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "gguf.h"
#include "plan.h"
#include "status.h"
#include "transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Named activation checkpoints (llama.cpp's cb(cur, name, il)): called with host data
 * (rows, cols) after each named point: "embed" (layer -1), "layer_out" (each layer),
 * "final_norm" (layer -1, only rows that get logits). For tests and debugging. */
typedef void (*ts_forward_hook)(void *ctx, const char *name, int32_t layer, const float *data,
                                int64_t rows, int64_t cols);

typedef struct ts_engine_params {
    const char *model_path;
    int n_threads;           /* <= 0: all CPUs */
    bool reference;          /* scalar reference kernels (slow; exact semantics) */
    bool llamacpp_batch;     /* CPU fast path: llama.cpp's batch-size-dependent kernels
                              * (matches its batched prompt numerics; not batch-invariant) */
    const char *backend;     /* NULL or "cpu": CPU; "cuda": CUDA device `device` */
    int device;              /* CUDA device ordinal (backend "cuda") */
    int32_t n_ctx;           /* max positions per sequence; 0 = min(model's, 8192) */
    int32_t n_seq_max;       /* sequence slots; 0 = 1 */
    int32_t n_batch;         /* max tokens per step; 0 = 512 */
    int32_t n_chunk;         /* max tokens of one sequence per step; 0 = n_batch */
    int32_t page_size;       /* KV page size in tokens; 0 = 16 */
    int64_t kv_tokens;       /* global-layer KV capacity in tokens; 0 = n_ctx per slot */
    int64_t prefix_cache_tokens; /* prefix cache capacity in tokens (kvcache.h); 0: off.
                              * Single rank only (ignored when distributed) */
    ts_forward_hook hook;
    void *hook_ctx;
    /* Distributed execution (docs/distributed.md). NULL transport: one rank, the whole
     * model (unchanged behaviour). Otherwise this rank loads only its slice of the plan:
     * `plan` if given, else ts_plan_make(config, world, tp, pp = 0: auto). Rank 0 drives
     * (reserve / release / step broadcast the step descriptor); every other rank calls
     * ts_engine_serve until rank 0 destroys its engine. The transport is borrowed. */
    ts_transport *transport;
    const ts_plan *plan;
    int32_t tp, pp;
    /* Bytes this rank's engine may allocate on its device (weights, KV, step buffers;
     * host memory of the CPU backend); 0 = unlimited. Creation fails with TS_NOMEM and a
     * message naming what did not fit; distributed, the plan gets it as every rank's
     * budget unless rank_mem gives each its own (tessera --gpu-mem-limit). */
    uint64_t mem_limit;
    /* Distributed: (world) per-rank budgets for the plan (`--tp auto`, or --gpu-mem-limit
     * differing between ranks: dist.c gathers them), each less the step buffers as
     * mem_limit is; the plan then gives the ranks layers in proportion to them. NULL:
     * mem_limit for every rank (none: layers evenly by count). Read only at create. */
    const uint64_t *rank_mem;
    /* Pipeline micro-batches per step (pp > 1): a step's tokens go through the stages in
     * this many contiguous parts, so that several are in flight and every stage works.
     * 0 = auto (the number of stages; 1 with llamacpp_batch). Results are identical to one
     * part wherever the kernels are batch-invariant (the CPU default). */
    int32_t micro_batches;
    /* Called while weights load with the fraction done (0..1). */
    void (*progress)(void *ctx, float done);
    void *progress_ctx;
} ts_engine_params;

typedef struct ts_batch {
    int32_t n_tokens;
    const int32_t *token;        /* (n_tokens) */
    const int32_t *pos;          /* (n_tokens) */
    const int32_t *seq;          /* (n_tokens) */
    const uint8_t *want_logits;  /* (n_tokens); NULL = only the last token */
    /* Multimodal prompts (docs/vision.md); both NULL for text. embd: per token NULL (the
     * token embedding, scaled by sqrt(d)) or n_embd host floats used as that token's input
     * instead (image soft tokens from ts_vision_encode; not scaled; the token id is not
     * looked up). attn_hi: per token the last position it attends to: its own position
     * (causal) or, for an image soft token, the last soft token of its image, so that one
     * image's tokens see each other bidirectionally (HF Gemma 3: OR(causal, same image
     * block), then AND the sliding window on local layers). A position above a token's own
     * must belong to the same sequence in the same step. Single rank only for now. */
    const float *const *embd;    /* (n_tokens) or NULL */
    const int32_t *attn_hi;      /* (n_tokens) or NULL */
} ts_batch;

typedef struct ts_engine_info {
    int32_t n_ctx, n_seq_max, n_batch, n_chunk, page_size;
    int64_t kv_global_pages, kv_local_pages;
    uint64_t kv_bytes;           /* KV storage, all layers */
    uint64_t activation_bytes;   /* step buffers */
    uint64_t weight_bytes;       /* weights the backend reads */
    const char *backend;
    /* device memory (CUDA backend; 0 elsewhere): the device's total, used by anyone when
     * the backend started and now, and this backend's own allocations now and at peak */
    uint64_t device_total_bytes, device_used_at_create, device_used_bytes;
    uint64_t backend_alloc_bytes, backend_alloc_peak;
} ts_engine_info;

typedef struct ts_engine ts_engine;

ts_status ts_engine_create(const ts_engine_params *p, ts_engine **out);
void ts_engine_destroy(ts_engine *e);

const ts_config *ts_engine_config(const ts_engine *e);
const ts_gguf *ts_engine_gguf(const ts_engine *e);
void ts_engine_get_info(const ts_engine *e, ts_engine_info *out);
/* KV memory (bytes) for the given shape, before creating: for sizing and reports. */
uint64_t ts_engine_kv_bytes(const ts_config *c, int32_t n_ctx, int32_t n_seq_max,
                            int32_t n_chunk, int32_t page_size, int64_t kv_tokens);

ts_status ts_engine_seq_reserve(ts_engine *e, int32_t seq, int32_t n_pos);
void ts_engine_seq_release(ts_engine *e, int32_t seq);
int64_t ts_engine_free_pages(const ts_engine *e);

/* Prefix caching (params.prefix_cache_tokens > 0; kvcache.h, docs/daemon.md): reserves
 * [0, n_pos) for a free slot whose prompt is `prompt`, taking the cached blocks that start
 * it: *n_cached prompt positions (page-aligned, < n_prompt) hold their keys and values
 * already, so the caller steps only positions n_cached.. of the prompt (the engine rejects
 * steps that would write them). Full prompt blocks the sequence computes are cached after
 * each step. With the cache off (or distributed): ts_engine_seq_reserve, *n_cached = 0. */
/* Prompts fed as embeddings (ts_batch.embd: images) must use ts_engine_seq_reserve: the
 * cache is keyed by token ids. */
ts_status ts_engine_seq_reserve_prefix(ts_engine *e, int32_t seq, const int32_t *prompt,
                                       int32_t n_prompt, int32_t n_pos, int32_t *n_cached);
/* Free global pages plus cached pages no sequence holds (what admission can count on). */
int64_t ts_engine_available_pages(const ts_engine *e);
/* Drops every cached block (pages in use by sequences stay with them). */
void ts_engine_prefix_flush(ts_engine *e);
void ts_engine_prefix_stats(const ts_engine *e, ts_kv_prefix_stats *st);

/* logits: (number of flagged tokens, n_vocab) host floats. Distributed: only on rank 0
 * (TS_INVAL elsewhere); the other ranks take part through ts_engine_serve. */
ts_status ts_engine_step(ts_engine *e, const ts_batch *b, float *logits);

/* Like ts_engine_step, but gives for each flagged token its greedy next token instead of
 * logits: ids (number of flagged tokens) = the argmax of its logits (ties: the lowest id;
 * NaN / +inf logits are an error). Distributed, the last stage computes the argmax (with
 * TP, each rank over its vocabulary slice, combined in the TP group) and only the ids
 * cross to rank 0. */
ts_status ts_engine_step_greedy(ts_engine *e, const ts_batch *b, int32_t *ids);

/* Like ts_engine_step, but instead of logits returns, for each flagged token in batch
 * order, the k best (token id, logit) pairs, best first: larger logit first, equal logits
 * by lower id, NaN before everything (so a broken row is still seen). ids / vals:
 * (flagged tokens, k). k = 1 is the greedy argmax (lowest id among equal maxima). On the
 * CUDA backend the selection runs on the GPU and only these pairs are copied back. The
 * sampler finishes on them (ts_sampler_sample_top) exactly as on the full logits when
 * ts_sampler_top_ok says so. 1 <= k <= min(n_vocab, TS_ENGINE_TOP_MAX). Single rank only:
 * TS_UNSUPPORTED when !ts_engine_can_step_top (then use ts_engine_step). */
#define TS_ENGINE_TOP_MAX 256
bool ts_engine_can_step_top(const ts_engine *e);
ts_status ts_engine_step_top(ts_engine *e, const ts_batch *b, int32_t k, int32_t *ids,
                             float *vals);

/* Ranks other than 0 of a distributed engine: executes rank 0's reserve / release / step
 * commands until rank 0 stops (destroy); returns TS_OK then, or the first failure (a
 * transport timeout names the peer and the operation: the caller aborts the job). */
ts_status ts_engine_serve(ts_engine *e);

/* Rank 0 of a distributed engine, while idle: a no-op command that keeps the serving ranks'
 * deadline (TESSERA_COMM_TIMEOUT) from expiring and finds a lost rank before the next
 * request does. Call at least every ts_engine_keepalive_s seconds (0: not needed: a single
 * rank). TS_OK on a single rank. */
ts_status ts_engine_ping(ts_engine *e);
double ts_engine_keepalive_s(const ts_engine *e);
/* True once a transport failure broke a distributed engine: every later step fails; the
 * caller ends the job. */
bool ts_engine_broken(const ts_engine *e);

/* The plan of a distributed engine (NULL for a single rank) and this rank's entry. */
const ts_plan *ts_engine_plan(const ts_engine *e);
const ts_plan_rank *ts_engine_plan_rank(const ts_engine *e);

#ifdef __cplusplus
}
#endif
#endif
