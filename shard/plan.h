/* plan.h: the parallel plan: how a Gemma 3 model is split over the ranks of one job by
 * pipeline parallelism (PP: stages of consecutive layers) and tensor parallelism (TP: the
 * matrices of each layer split over the ranks of a stage).
 *
 * A pure function (no I/O): (config, world size, tp, pp or auto, per-rank memory budgets,
 * context budget) -> per rank: stage, layer range, TP rank, head / KV-head / FFN ranges,
 * what it holds, byte estimates, and a printable description. docs/distributed.md.
 *
 * Ranks: rank = stage * tp + tp_rank (a TP group is consecutive ranks: one host).
 * Slicing of a layer on TP rank r of tp:
 *   attn_q, attn_k, attn_v, ffn_gate, ffn_up: column-parallel (rows of the GGUF matrix):
 *     query heads [h0, h1), KV heads [kv0, kv1), FFN rows [f0, f1);
 *   attn_output, ffn_down: row-parallel (a column slice of the GGUF matrix, the input
 *     dimension): heads [h0, h1) * head_dim and [f0, f1); the partial sums are all-reduced
 *     in the TP group before the post-norm. Slices start and end at multiples of
 *     `row_align` elements (quant blocks: 32, or 256 for the K-quants);
 *   norms: mirrored.
 * token_embd is held by every rank of the first stage (input embedding); each TP rank of
 * the last stage holds the rows [v0, v1) of the (tied) LM head (vocab split: V * r / tp ..
 * V * (r + 1) / tp) and computes the final norm and those logits; argmax / logits are
 * combined in the TP group (engine.c).
 *
 * Refused (TS_INVAL, the message says why and what would fit): tp not dividing the KV
 * heads, tp * pp != world, more stages than layers, row-parallel slices off block
 * boundaries, a rank whose budget cannot hold its weights + KV for the context budget.
 */
#ifndef TS_PLAN_H
#define TS_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_PLAN_MAX_RANKS 256

typedef struct ts_plan_rank {
    int32_t rank, stage, tp_rank;
    int32_t l0, l1;          /* layers [l0, l1) */
    int32_t h0, h1;          /* query heads [h0, h1) */
    int32_t kv0, kv1;        /* KV heads [kv0, kv1) */
    int32_t f0, f1;          /* FFN intermediate rows / ffn_down columns [f0, f1) */
    int32_t v0, v1;          /* vocabulary slice of the LM head [v0, v1) (lm_head ranks) */
    bool embed;              /* holds token_embd for the input (first stage) */
    bool lm_head;            /* computes final norm + LM head rows [v0, v1) (last stage;
                              * every TP rank: the vocabulary is split over the TP group) */
    uint64_t weight_bytes;   /* estimate of what it loads */
    uint64_t kv_bytes;       /* estimate of its KV storage for the context budget */
} ts_plan_rank;

typedef struct ts_plan {
    int32_t world, tp, pp;
    int32_t n_layer;
    uint32_t row_align;
    ts_plan_rank rank[TS_PLAN_MAX_RANKS];
    char desc[8192];         /* one header line and one line per rank */
} ts_plan;

typedef struct ts_plan_params {
    int32_t world;             /* ranks in the job (>= 1) */
    int32_t tp;                /* ranks per stage; 0 = 1 */
    int32_t pp;                /* stages; 0 = auto: world / tp */
    const uint64_t *mem_bytes; /* (world) per-rank memory budgets; NULL = unlimited, equal:
                                  layers split evenly by count */
    int32_t n_ctx;             /* context budget: positions per sequence; 0 = min(train, 8192) */
    int32_t n_seq;             /* sequences of n_ctx (global-layer KV); 0 = 1 */
    int32_t n_chunk;           /* prefill chunk (local-layer ring); 0 = 512 */
    uint32_t weight_type;      /* GGUF type of the matrices, for byte estimates; 0 = F32 */
    uint32_t embd_type;        /* type of token_embd; 0 = weight_type */
    uint32_t row_align;        /* split granularity of row-parallel inputs; 0 = max(32,
                                  block elements of weight_type) */
} ts_plan_params;

ts_status ts_plan_make(const ts_config *c, const ts_plan_params *p, ts_plan *out);

/* Upper bound of a rank's step buffers (activations of n_batch tokens, logit rows) at tp,
 * as the engine allocates them: what a --gpu-mem-limit budget loses before the plan
 * (which counts weights and KV) gets it. row_align 0: 32. */
uint64_t ts_plan_step_bytes(const ts_config *c, int32_t tp, int32_t n_batch, int32_t n_seq,
                            uint32_t row_align);

/* The automatic layout (`--tp auto`, docs/distributed.md). For every tp x pp = world (only
 * those matching a tp / pp fixed in plan.tp / plan.pp, 0 = free) the largest context per
 * sequence (<= the model's training context) whose plan fits the per-rank budgets
 * plan.mem_bytes (required), each budget first less ts_plan_step_bytes at that tp when
 * n_batch > 0. The choice: among the layouts that hold the requested context (plan.n_ctx;
 * 0 = min(training context, 8192)) for plan.n_seq sequences, the one that holds the most,
 * ties to fewer TP ranks (less traffic per layer). A TP group (consecutive ranks) never
 * spans hosts: host[r] names rank r's host (equal ids: one host; NULL: all on one host).
 * None fits: TS_INVAL, the message (also in out->desc) says why and what would fit (the
 * context that fits, how many ranks of the typical budget would, or that one rank is too
 * small). Pure: no I/O, no allocation. */
#define TS_PLAN_AUTO_MAX 64
typedef struct ts_plan_layout {
    int32_t tp, pp;
    int32_t max_ctx;           /* the largest context it holds; 0: not even one position */
    char why[400];             /* when it does not hold the requested context: why */
} ts_plan_layout;

typedef struct ts_plan_auto_params {
    ts_plan_params plan;       /* world, mem_bytes, n_ctx, n_seq, n_chunk, types, row_align;
                                  tp / pp: 0 = free, else fixed */
    const int32_t *host;       /* (world) host ids, or NULL */
    int32_t n_batch;           /* > 0: deduct the step buffers from every budget */
} ts_plan_auto_params;

typedef struct ts_plan_auto_result {
    int32_t tp, pp;            /* the choice; 0 when none fits */
    int32_t n_ctx;             /* the context it was chosen for (the requested one) */
    int32_t max_ctx;           /* the most the choice holds */
    int32_t n_layout;
    ts_plan_layout layout[TS_PLAN_AUTO_MAX];
    char desc[4096];           /* why this layout ("auto: tp 1 x pp 2 ..."), or the refusal */
} ts_plan_auto_result;

ts_status ts_plan_auto(const ts_config *c, const ts_plan_auto_params *p, ts_plan_auto_result *out);

/* Bytes of n elements of a GGUF type (block-rounded estimate; F32 for unknown ids). */
uint64_t ts_plan_type_bytes(uint32_t type, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
