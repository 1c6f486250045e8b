/* metrics.h: tesserad's Prometheus metrics (`tesserad --metrics HOST:PORT`, GET /metrics).
 *
 * One process-wide registry of fixed metrics, all named tessera_*, with bounded label sets
 * (methods: the registered gRPC paths, at most TS_METRICS_MAX_METHODS, others counted as
 * "other"; codes: the 17 gRPC status codes; ranks: at most TS_METRICS_MAX_RANKS; safety:
 * the ShieldGemma 2 policies x outcomes). Every update is a relaxed atomic add (histogram
 * buckets and sums included) or, for the tokens/s window, a short mutex: callable from any
 * thread (CQ threads, the scheduler), cheap enough for once per token. The hooks work
 * whether or not the HTTP endpoint runs (counting costs a few atomics).
 *
 * The endpoint is libmicrohttpd (Debian's libmicrohttpd-dev) with its own polling thread:
 * GET or HEAD /metrics answers the text exposition format 0.0.4; any other path is 404,
 * any other method 405. Gauges that belong to the scheduler (queue depth, running
 * sequences, KV pages) are read at scrape time through a callback.
 * See docs/operations.md for the list of metrics.
 */
#ifndef TS_METRICS_H
#define TS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_METRICS_MAX_METHODS 32
#define TS_METRICS_MAX_RANKS 64
#define TS_METRICS_MAX_POLICIES 32 /* safety policy labels (built-ins included); others: "other" */

/* Safety decisions (ShieldGemma 2 policies and what became of the request). */
typedef enum {
    TS_SAFETY_POLICY_DANGEROUS = 0,  /* "dangerous_content" */
    TS_SAFETY_POLICY_SEXUAL = 1,     /* "sexually_explicit" */
    TS_SAFETY_POLICY_VIOLENCE = 2,   /* "violence" */
    TS_SAFETY_POLICY_COUNT
} ts_safety_policy;
typedef enum {
    TS_SAFETY_ALLOWED = 0,  /* "allowed": scored under the threshold */
    TS_SAFETY_BLOCKED = 1,  /* "blocked": over the threshold, request refused */
    TS_SAFETY_ERROR = 2,    /* "error": classifier failed (fail closed: refused) */
    TS_SAFETY_OUTCOME_COUNT
} ts_safety_outcome;

/* Scrape-time gauges, filled by the callback given to ts_metrics_start. */
typedef struct ts_metrics_gauges {
    int64_t queued, running, slots;
    int64_t kv_pages_total, kv_pages_free, kv_page_size;
    int32_t n_ranks;                       /* ranks described below (<= TS_METRICS_MAX_RANKS) */
    uint64_t weight_bytes[TS_METRICS_MAX_RANKS]; /* per rank: device memory by use */
    uint64_t kv_bytes[TS_METRICS_MAX_RANKS];
    uint64_t activation_bytes[TS_METRICS_MAX_RANKS];
} ts_metrics_gauges;
typedef void (*ts_metrics_gauge_fn)(ts_metrics_gauges *g, void *ctx);

/* Starts the HTTP endpoint on listen ("HOST:PORT", "[V6]:PORT"; port 0 = any free one).
 * *port_out: the bound port. TS_INVAL for a malformed address, TS_SYSTEM when it cannot
 * bind. gauges may be NULL. One endpoint per process. */
ts_status ts_metrics_start(const char *listen, ts_metrics_gauge_fn gauges, void *ctx,
                           int *port_out);
/* Stops the endpoint (waits for its thread); a no-op if it is not running. */
void ts_metrics_stop(void);

/* ---- hooks (any thread) ---- */
/* A finished RPC: path "/pkg.Service/Method" (NULL or unknown: "other"), gRPC code 0..16. */
void ts_metrics_rpc_done(const char *path, int code);
/* Prompt tokens admitted (prefill work) and tokens generated. */
void ts_metrics_prompt_tokens(uint64_t n);
void ts_metrics_cached_tokens(uint64_t n); /* of those, from the prefix cache */
void ts_metrics_generated_tokens(uint64_t n);
/* Time to first token (submit -> first sampled token) and between two tokens of a stream. */
void ts_metrics_ttft_us(int64_t us);
void ts_metrics_itl_us(int64_t us);
/* One engine step of rank `rank` (rank 0 in a single-rank daemon) that took us. */
void ts_metrics_step_us(int32_t rank, int64_t us);
/* One safety decision (the hook for the ShieldGemma 2 filter). */
void ts_metrics_safety(ts_safety_policy policy, ts_safety_outcome outcome);
/* The same by label (a custom policy's name; a built-in's label counts as the built-in).
 * ts_metrics_safety_register shows a label (at 0) before its first decision. Labels beyond
 * TS_METRICS_MAX_POLICIES count as "other". */
void ts_metrics_safety_label(const char *label, ts_safety_outcome outcome);
void ts_metrics_safety_register(const char *label);
/* SIGHUP reloads (ok: the new file was taken; else the old settings were kept). */
void ts_metrics_reload(bool ok);

/* Writes the whole exposition into a new buffer (ts_free it). NULL when out of memory.
 * Used by the endpoint; exposed for tests. */
char *ts_metrics_render(size_t *len);

#ifdef __cplusplus
}
#endif
#endif
