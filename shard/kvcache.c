/* kvcache.c: page tables and free lists; see kvcache.h. */
#include "kvcache.h"

#include <string.h>

#include "alloc.h"

typedef struct {
    int32_t n_pos;        /* reserved positions */
    int32_t n_gpages;     /* global pages held */
    int32_t *gpages;      /* (max_gpages) page ids */
    int32_t *ring;        /* (ring) local page ids, or -1 */
    bool active;
} kv_seq;

struct ts_kvcache {
    ts_kv_params p;
    int32_t ring;          /* local pages per sequence */
    int32_t max_gpages;    /* per sequence: ceil(n_ctx / page_size) */
    int32_t *gfree;        /* stack of free global page ids */
    int64_t n_gfree;
    kv_seq *seq;
};

ts_status ts_kv_create(const ts_kv_params *p, ts_kvcache **out) {
    *out = NULL;
    if (p->page_size <= 0 || p->n_seq_max <= 0 || p->n_ctx <= 0 || p->max_chunk <= 0 ||
        p->window < 0 || p->global_pages < 0 || p->global_pages > INT32_MAX)
        return TS_FAIL(TS_INVAL, "kv cache: bad parameters (page_size %d, seqs %d, ctx %d, "
                       "chunk %d, window %d, global pages %lld)", p->page_size, p->n_seq_max,
                       p->n_ctx, p->max_chunk, p->window, (long long)p->global_pages);
    ts_kvcache *kv = ts_calloc(1, sizeof *kv);
    if (!kv) return TS_FAIL(TS_NOMEM, "kv cache");
    kv->p = *p;
    kv->max_gpages = (p->n_ctx + p->page_size - 1) / p->page_size;
    if (p->window > 0 && p->n_local_layers > 0) {
        int64_t span = (int64_t)p->window + p->max_chunk - 1;
        kv->ring = (int32_t)((span + p->page_size - 1) / p->page_size + 1);
        if (kv->ring > kv->max_gpages + 1) kv->ring = kv->max_gpages + 1;
    }
    kv->gfree = ts_malloc(sizeof(int32_t) * (size_t)(p->global_pages ? p->global_pages : 1));
    kv->seq = ts_calloc((size_t)p->n_seq_max, sizeof *kv->seq);
    if (!kv->gfree || !kv->seq) goto nomem;
    for (int64_t i = 0; i < p->global_pages; i++)
        kv->gfree[i] = (int32_t)(p->global_pages - 1 - i); /* pop gives 0, 1, 2, ... */
    kv->n_gfree = p->global_pages;
    for (int32_t s = 0; s < p->n_seq_max; s++) {
        kv_seq *q = &kv->seq[s];
        q->gpages = ts_malloc(sizeof(int32_t) * (size_t)kv->max_gpages);
        q->ring = ts_malloc(sizeof(int32_t) * (size_t)(kv->ring ? kv->ring : 1));
        if (!q->gpages || !q->ring) goto nomem;
        /* Local rings are fixed per slot: slot s owns local pages [s*ring, (s+1)*ring). */
        for (int32_t r = 0; r < kv->ring; r++) q->ring[r] = s * kv->ring + r;
    }
    *out = kv;
    return TS_OK;
nomem:
    ts_kv_destroy(kv);
    return TS_FAIL(TS_NOMEM, "kv cache tables");
}

void ts_kv_destroy(ts_kvcache *kv) {
    if (!kv) return;
    if (kv->seq)
        for (int32_t s = 0; s < kv->p.n_seq_max; s++) {
            ts_free(kv->seq[s].gpages);
            ts_free(kv->seq[s].ring);
        }
    ts_free(kv->seq);
    ts_free(kv->gfree);
    ts_free(kv);
}

int32_t ts_kv_ring_pages(const ts_kvcache *kv) { return kv->ring; }
int64_t ts_kv_global_pages(const ts_kvcache *kv) { return kv->p.global_pages; }
int64_t ts_kv_local_pages(const ts_kvcache *kv) { return (int64_t)kv->ring * kv->p.n_seq_max; }
int32_t ts_kv_page_size(const ts_kvcache *kv) { return kv->p.page_size; }
int64_t ts_kv_free_global_pages(const ts_kvcache *kv) { return kv->n_gfree; }

int64_t ts_kv_pages_for(const ts_kvcache *kv, int32_t n_pos) {
    if (kv->p.n_global_layers == 0) return 0;
    return ((int64_t)n_pos + kv->p.page_size - 1) / kv->p.page_size;
}

ts_status ts_kv_reserve(ts_kvcache *kv, int32_t seq, int32_t n_pos) {
    if (seq < 0 || seq >= kv->p.n_seq_max)
        return TS_FAIL(TS_INVAL, "sequence slot %d out of range [0, %d)", seq, kv->p.n_seq_max);
    if (n_pos < 0 || n_pos > kv->p.n_ctx)
        return TS_FAIL(TS_RANGE, "%d positions exceed the context of %d tokens", n_pos,
                       kv->p.n_ctx);
    kv_seq *q = &kv->seq[seq];
    int64_t need = ts_kv_pages_for(kv, n_pos);
    if (need > q->n_gpages) {
        if (need - q->n_gpages > kv->n_gfree)
            return TS_FAIL(TS_EXHAUSTED, "KV cache full: sequence needs %lld more pages, %lld free",
                           (long long)(need - q->n_gpages), (long long)kv->n_gfree);
        while (q->n_gpages < need) q->gpages[q->n_gpages++] = kv->gfree[--kv->n_gfree];
    }
    if (n_pos > q->n_pos) q->n_pos = n_pos;
    q->active = true;
    return TS_OK;
}

void ts_kv_release(ts_kvcache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->p.n_seq_max) return;
    kv_seq *q = &kv->seq[seq];
    while (q->n_gpages > 0) kv->gfree[kv->n_gfree++] = q->gpages[--q->n_gpages];
    q->n_pos = 0;
    q->active = false;
}

int32_t ts_kv_reserved(const ts_kvcache *kv, int32_t seq) {
    return seq >= 0 && seq < kv->p.n_seq_max ? kv->seq[seq].n_pos : 0;
}
bool ts_kv_seq_active(const ts_kvcache *kv, int32_t seq) {
    return seq >= 0 && seq < kv->p.n_seq_max && kv->seq[seq].active;
}

int32_t ts_kv_global_page(const ts_kvcache *kv, int32_t seq, int32_t pos) {
    return kv->seq[seq].gpages[pos / kv->p.page_size];
}
int32_t ts_kv_local_page(const ts_kvcache *kv, int32_t seq, int32_t pos) {
    return kv->seq[seq].ring[(pos / kv->p.page_size) % kv->ring];
}
