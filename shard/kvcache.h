/* kvcache.h: the paged key/value cache of one rank.
 *
 * DESIGN
 * Keys and values live in pages of `page_size` token slots. There are two page pools,
 * because Gemma 3 has two kinds of layers (../shared/docs/gemma3-spec.md 1.2):
 *   - global layers attend to the whole context: a sequence holds one global page per
 *     page_size positions, taken from the global pool as it grows (page table);
 *   - sliding-window layers attend to the last W positions only: a sequence holds a ring
 *     of `ring_pages` local pages, position p living in ring page (p / page_size) % ring.
 *     The ring covers W + max_chunk - 1 positions, so that a prefill chunk of up to
 *     max_chunk tokens can write all its keys before any of its queries attends.
 * A page id indexes the same slot range in every layer of its kind: page g of the global
 * pool holds keys of all global layers (storage is per layer, laid out by the backend).
 * Admission is by free pages: ts_kv_reserve(seq, n_pos) takes what a sequence needs for
 * positions [0, n_pos) or fails with TS_EXHAUSTED, leaving the sequence unchanged.
 *
 * PREFIX CACHE (optional: prefix_tokens > 0; docs/daemon.md "Prefix caching")
 * Global pages carry a reference count (holders: sequences and the prefix cache). Each
 * full page-aligned block of a sequence's prompt, once computed, is registered as a cache
 * entry keyed by (parent entry, the block's token ids): a chain from the first block, so an
 * entry stands for the whole prefix up to its end (like vLLM's chained block hashes, but
 * compared exactly, so hash collisions cannot alias). The entry takes a reference on the
 * block's global page (immutable from then on: positions only move forward) and a
 * snapshot page of its local-layer keys/values, copied from the sequence's ring (local
 * layers attend to the last W positions, so a ring cannot be shared). A later sequence
 * whose prompt starts with cached blocks (ts_kv_reserve_prefix) references their global
 * pages instead of computing them and gets the snapshots of the last W positions before
 * the cut copied into its ring; it computes only the rest (at least one prompt token, for
 * the logits). Entries whose page only the cache holds are evicted least recently used
 * first, leaves before their parents, when a reservation needs pages or a snapshot page is
 * needed. The page copies are queued here (ts_kv_take_copies) and executed by the engine
 * on the backend (kv_copy).
 *
 * This object is host-side bookkeeping only (page tables, free lists). The storage itself
 * is allocated by the backend from ts_kv_layout. Not thread-safe: the step loop owns it.
 */
#ifndef TS_KVCACHE_H
#define TS_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_kv_params {
    int32_t page_size;     /* tokens per page, e.g. 16 */
    int32_t n_seq_max;     /* sequence slots 0..n_seq_max-1 */
    int32_t n_ctx;         /* max positions per sequence */
    int32_t max_chunk;     /* max new tokens of one sequence in one step */
    int32_t window;        /* sliding window W (0: no local layers) */
    int64_t global_pages;  /* global pool size (pages) */
    int32_t n_global_layers, n_local_layers;
    int64_t prefix_tokens; /* prefix cache capacity in tokens (whole pages); 0: off */
} ts_kv_params;

typedef struct ts_kvcache ts_kvcache;

ts_status ts_kv_create(const ts_kv_params *p, ts_kvcache **out);
void ts_kv_destroy(ts_kvcache *kv);

/* Pages per local ring; local pool = ring * n_seq_max pages, then the prefix cache's
 * snapshot pages (when there are local layers). */
int32_t ts_kv_ring_pages(const ts_kvcache *kv);
int64_t ts_kv_global_pages(const ts_kvcache *kv);
int64_t ts_kv_local_pages(const ts_kvcache *kv);
int32_t ts_kv_page_size(const ts_kvcache *kv);

/* Makes positions [0, n_pos) of seq storable. TS_RANGE if n_pos > n_ctx, TS_EXHAUSTED if
 * the global pool lacks pages (nothing changes then). */
ts_status ts_kv_reserve(ts_kvcache *kv, int32_t seq, int32_t n_pos);
/* Returns all pages of seq to the pools. */
void ts_kv_release(ts_kvcache *kv, int32_t seq);
/* Positions reserved for seq (0 when free). */
int32_t ts_kv_reserved(const ts_kvcache *kv, int32_t seq);
bool ts_kv_seq_active(const ts_kvcache *kv, int32_t seq);

/* Page holding position pos of seq for a global / local layer (pos must be reserved;
 * for local layers, within the ring's reach). Slot within the page: pos % page_size. */
int32_t ts_kv_global_page(const ts_kvcache *kv, int32_t seq, int32_t pos);
int32_t ts_kv_local_page(const ts_kvcache *kv, int32_t seq, int32_t pos);

/* Free global pages (not counting cached pages that could be evicted). */
int64_t ts_kv_free_global_pages(const ts_kvcache *kv);
/* Free pages plus the cached pages no sequence holds (what a reservation can get). */
int64_t ts_kv_available_global_pages(const ts_kvcache *kv);
/* Global pages a sequence of n_pos positions needs. */
int64_t ts_kv_pages_for(const ts_kvcache *kv, int32_t n_pos);

/* ---- prefix cache ---- */

/* One page copy for the backend: page src to page dst of every layer of its kind. */
typedef struct ts_kv_copy {
    int32_t dst, src;
    bool is_global;
} ts_kv_copy;

typedef struct ts_kv_prefix_stats {
    int64_t entries, capacity;  /* cached blocks, most blocks */
    int64_t pages_held;         /* global pages the cache alone holds (evictable) */
    uint64_t lookups, hit_tokens, evictions, inserts;
} ts_kv_prefix_stats;

bool ts_kv_prefix_enabled(const ts_kvcache *kv);
/* Prompt positions of `prompt` a reservation would take from the cache now (a multiple of
 * page_size, at most n_prompt - 1). Changes nothing. */
int32_t ts_kv_prefix_probe(const ts_kvcache *kv, const int32_t *prompt, int32_t n_prompt);
/* Like ts_kv_reserve for a free slot, with the sequence's prompt: takes the cached blocks
 * that start the prompt (*n_cached positions, page-aligned, < n_prompt), queues the copies
 * of their local snapshots into the ring, evicts unreferenced entries if the pool lacks
 * pages, and reserves the rest of [0, n_pos). The sequence registers its own full prompt
 * blocks as they are computed (ts_kv_prefix_commit). prompt may be NULL (n_prompt 0): a
 * plain reservation. TS_EXHAUSTED (nothing changes) when the pages are not there even
 * after eviction; TS_INVAL if seq is in use. With the cache off: ts_kv_reserve, 0 cached. */
ts_status ts_kv_reserve_prefix(ts_kvcache *kv, int32_t seq, const int32_t *prompt,
                               int32_t n_prompt, int32_t n_pos, int32_t *n_cached);
/* Positions [0, n) of seq are shared read-only pages (taken from the cache): never written. */
int32_t ts_kv_shared_positions(const ts_kvcache *kv, int32_t seq);
/* After a successful step: positions [0, n_done) of seq hold computed keys/values; full
 * prompt blocks among them are registered (snapshot copies queued). */
void ts_kv_prefix_commit(ts_kvcache *kv, int32_t seq, int32_t n_done);
/* seq registers no more blocks (its inputs are not its token ids: images). */
void ts_kv_prefix_stop(ts_kvcache *kv, int32_t seq);
/* The queued page copies (valid until the next call of a ts_kv function); clears them. */
int32_t ts_kv_take_copies(ts_kvcache *kv, const ts_kv_copy **out);
/* Drops every entry (pages still held by sequences stay with them). */
void ts_kv_prefix_flush(ts_kvcache *kv);
void ts_kv_prefix_get_stats(const ts_kvcache *kv, ts_kv_prefix_stats *st);
/* Reference count of global page `page` (tests). */
int32_t ts_kv_page_refs(const ts_kvcache *kv, int32_t page);

#ifdef __cplusplus
}
#endif
#endif
