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
} ts_kv_params;

typedef struct ts_kvcache ts_kvcache;

ts_status ts_kv_create(const ts_kv_params *p, ts_kvcache **out);
void ts_kv_destroy(ts_kvcache *kv);

/* Pages per local ring; local pool = ring * n_seq_max pages. */
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

/* Free / used global pages, for admission and reporting. */
int64_t ts_kv_free_global_pages(const ts_kvcache *kv);
/* Global pages a sequence of n_pos positions needs. */
int64_t ts_kv_pages_for(const ts_kvcache *kv, int32_t n_pos);

#ifdef __cplusplus
}
#endif
#endif
