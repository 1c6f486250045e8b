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
    /* prefix cache */
    int32_t n_shared;     /* positions [0, n_shared) are cached pages (read-only) */
    int32_t *prompt;      /* (n_ctx) the prompt, when the cache is on */
    int32_t n_prompt;
    bool reg_on;          /* still registering its prompt blocks */
    int32_t reg_blocks;   /* blocks registered or taken from the cache */
    int32_t reg_parent;   /* entry of block reg_blocks - 1, or -1 */
    uint64_t reg_hash;
} kv_seq;

/* A cached block: the prefix up to its end is (parent's prefix, tokens). */
typedef struct {
    uint64_t hash, stamp;
    int32_t parent, page, snap, n_children, hnext;
    bool used;
} kv_entry;

struct ts_kvcache {
    ts_kv_params p;
    int32_t ring;          /* local pages per sequence */
    int32_t max_gpages;    /* per sequence: ceil(n_ctx / page_size) */
    int32_t *gfree;        /* stack of free global page ids */
    int64_t n_gfree;
    kv_seq *seq;
    /* prefix cache (cap 0: off) */
    int32_t *grefs;        /* (global_pages) holders of each page */
    int32_t cap;           /* entries */
    kv_entry *ent;         /* (cap) */
    int32_t *ent_tok;      /* (cap * page_size) each entry's block tokens */
    int32_t *efree;        /* stack of free entry ids */
    int32_t n_efree;
    int32_t *bucket;       /* (n_bucket) first entry of each hash chain, -1 */
    uint32_t n_bucket;
    int32_t *chain;        /* (max_gpages) lookup scratch */
    ts_kv_copy *copies;    /* queued backend page copies */
    int32_t n_copies, cap_copies;
    uint64_t clock;
    uint64_t n_lookups, n_hit_tokens, n_evictions, n_inserts;
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
    kv->grefs = ts_calloc((size_t)(p->global_pages ? p->global_pages : 1), sizeof(int32_t));
    if (!kv->grefs) goto nomem;
    if (p->prefix_tokens > 0) {
        int64_t cap = (p->prefix_tokens + p->page_size - 1) / p->page_size;
        if (cap > (1 << 24)) {
            ts_kv_destroy(kv);
            return TS_FAIL(TS_INVAL, "prefix cache of %lld tokens is too large (at most %lld)",
                           (long long)p->prefix_tokens, (long long)(1 << 24) * p->page_size);
        }
        kv->cap = (int32_t)cap;
        kv->n_bucket = 1;
        while (kv->n_bucket < 2u * (uint32_t)kv->cap) kv->n_bucket <<= 1;
        kv->ent = ts_calloc((size_t)kv->cap, sizeof *kv->ent);
        kv->ent_tok = ts_malloc(sizeof(int32_t) * (size_t)kv->cap * (size_t)p->page_size);
        kv->efree = ts_malloc(sizeof(int32_t) * (size_t)kv->cap);
        kv->bucket = ts_malloc(sizeof(int32_t) * kv->n_bucket);
        kv->chain = ts_malloc(sizeof(int32_t) * (size_t)kv->max_gpages);
        kv->cap_copies = kv->ring + p->n_seq_max * (p->max_chunk / p->page_size + 2);
        kv->copies = ts_malloc(sizeof(ts_kv_copy) * (size_t)kv->cap_copies);
        if (!kv->ent || !kv->ent_tok || !kv->efree || !kv->bucket || !kv->chain || !kv->copies)
            goto nomem;
        for (int32_t i = 0; i < kv->cap; i++) kv->efree[i] = kv->cap - 1 - i;
        kv->n_efree = kv->cap;
        for (uint32_t i = 0; i < kv->n_bucket; i++) kv->bucket[i] = -1;
    }
    for (int32_t s = 0; s < p->n_seq_max; s++) {
        kv_seq *q = &kv->seq[s];
        q->gpages = ts_malloc(sizeof(int32_t) * (size_t)kv->max_gpages);
        q->ring = ts_malloc(sizeof(int32_t) * (size_t)(kv->ring ? kv->ring : 1));
        if (!q->gpages || !q->ring) goto nomem;
        if (kv->cap && !(q->prompt = ts_malloc(sizeof(int32_t) * (size_t)p->n_ctx))) goto nomem;
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
            ts_free(kv->seq[s].prompt);
        }
    ts_free(kv->seq);
    ts_free(kv->gfree);
    ts_free(kv->grefs);
    ts_free(kv->ent);
    ts_free(kv->ent_tok);
    ts_free(kv->efree);
    ts_free(kv->bucket);
    ts_free(kv->chain);
    ts_free(kv->copies);
    ts_free(kv);
}

int32_t ts_kv_ring_pages(const ts_kvcache *kv) { return kv->ring; }
int64_t ts_kv_global_pages(const ts_kvcache *kv) { return kv->p.global_pages; }
/* Snapshot pages of the prefix cache: one per entry, after the rings. */
static bool has_snap(const ts_kvcache *kv) { return kv->ring > 0 && kv->cap > 0; }
int64_t ts_kv_local_pages(const ts_kvcache *kv) {
    return (int64_t)kv->ring * kv->p.n_seq_max + (has_snap(kv) ? kv->cap : 0);
}
int32_t ts_kv_page_size(const ts_kvcache *kv) { return kv->p.page_size; }
int64_t ts_kv_free_global_pages(const ts_kvcache *kv) { return kv->n_gfree; }
int64_t ts_kv_available_global_pages(const ts_kvcache *kv) {
    int64_t n = kv->n_gfree;
    for (int32_t e = 0; e < kv->cap; e++)
        if (kv->ent[e].used && kv->ent[e].page >= 0 && kv->grefs[kv->ent[e].page] == 1) n++;
    return n;
}

int64_t ts_kv_pages_for(const ts_kvcache *kv, int32_t n_pos) {
    if (kv->p.n_global_layers == 0) return 0;
    return ((int64_t)n_pos + kv->p.page_size - 1) / kv->p.page_size;
}

/* ---- prefix cache internals ---- */

static void page_unref(ts_kvcache *kv, int32_t pg) {
    if (pg >= 0 && --kv->grefs[pg] == 0) kv->gfree[kv->n_gfree++] = pg;
}

static uint64_t block_hash(uint64_t h, const int32_t *t, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint32_t)t[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ^ (h >> 32);
}
#define HASH_ROOT 0xcbf29ce484222325ull

static const int32_t *ent_tokens(const ts_kvcache *kv, int32_t e) {
    return kv->ent_tok + (size_t)e * (size_t)kv->p.page_size;
}

/* The entry for (parent, tokens) with hash h, or -1. */
static int32_t find_entry(const ts_kvcache *kv, int32_t parent, uint64_t h, const int32_t *t) {
    for (int32_t e = kv->bucket[h & (kv->n_bucket - 1)]; e >= 0; e = kv->ent[e].hnext) {
        const kv_entry *x = &kv->ent[e];
        if (x->hash == h && x->parent == parent &&
            !memcmp(ent_tokens(kv, e), t, sizeof(int32_t) * (size_t)kv->p.page_size))
            return e;
    }
    return -1;
}

/* Only the cache holds the entry's page (evicting it frees a page). */
static bool cache_only(const ts_kvcache *kv, const kv_entry *x) {
    return x->page < 0 || kv->grefs[x->page] == 1;
}

static void remove_entry(ts_kvcache *kv, int32_t e) {
    kv_entry *x = &kv->ent[e];
    int32_t *pp = &kv->bucket[x->hash & (kv->n_bucket - 1)];
    while (*pp != e) pp = &kv->ent[*pp].hnext;
    *pp = x->hnext;
    if (x->parent >= 0) kv->ent[x->parent].n_children--;
    page_unref(kv, x->page);
    x->used = false;
    kv->efree[kv->n_efree++] = e;
}

/* Evicts the least recently used leaf entry that only the cache holds (never `keep`).
 * False if there is none. */
static bool evict_one(ts_kvcache *kv, int32_t keep) {
    int32_t best = -1;
    for (int32_t e = 0; e < kv->cap; e++) {
        const kv_entry *x = &kv->ent[e];
        if (!x->used || x->n_children || e == keep || !cache_only(kv, x)) continue;
        if (best < 0 || x->stamp < kv->ent[best].stamp) best = e;
    }
    if (best < 0) return false;
    remove_entry(kv, best);
    kv->n_evictions++;
    return true;
}

/* Cached blocks starting prompt (at most (n_prompt - 1) / page_size), their entries in
 * kv->chain. */
static int32_t match_prefix(const ts_kvcache *kv, const int32_t *prompt, int32_t n_prompt,
                            int32_t *chain) {
    if (!kv->cap || !prompt || n_prompt <= 1) return 0;
    const int32_t ps = kv->p.page_size;
    int32_t maxb = (n_prompt - 1) / ps, parent = -1, b = 0;
    if (maxb > kv->max_gpages) maxb = kv->max_gpages;
    uint64_t h = HASH_ROOT;
    for (; b < maxb; b++) {
        const uint64_t h2 = block_hash(h, prompt + (size_t)b * ps, ps);
        const int32_t e = find_entry(kv, parent, h2, prompt + (size_t)b * ps);
        if (e < 0) break;
        chain[b] = e;
        parent = e;
        h = h2;
    }
    return b;
}

static bool queue_copy(ts_kvcache *kv, int32_t dst, int32_t src, bool is_global) {
    if (kv->n_copies >= kv->cap_copies) return false;
    kv->copies[kv->n_copies++] = (ts_kv_copy){.dst = dst, .src = src, .is_global = is_global};
    return true;
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
        if (need - q->n_gpages > ts_kv_available_global_pages(kv))
            return TS_FAIL(TS_EXHAUSTED, "KV cache full: sequence needs %lld more pages, %lld free",
                           (long long)(need - q->n_gpages), (long long)kv->n_gfree);
        while (kv->n_gfree < need - q->n_gpages && evict_one(kv, -1)) {}
        if (need - q->n_gpages > kv->n_gfree)
            return TS_FAIL(TS_INTERNAL, "KV cache: eviction freed too few pages");
        while (q->n_gpages < need) {
            int32_t pg = kv->gfree[--kv->n_gfree];
            kv->grefs[pg] = 1;
            q->gpages[q->n_gpages++] = pg;
        }
    }
    if (n_pos > q->n_pos) q->n_pos = n_pos;
    q->active = true;
    return TS_OK;
}

void ts_kv_release(ts_kvcache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->p.n_seq_max) return;
    kv_seq *q = &kv->seq[seq];
    while (q->n_gpages > 0) page_unref(kv, q->gpages[--q->n_gpages]);
    q->n_pos = 0;
    q->n_shared = 0;
    q->n_prompt = 0;
    q->reg_on = false;
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

/* ---- prefix cache ---- */

bool ts_kv_prefix_enabled(const ts_kvcache *kv) { return kv->cap > 0; }

int32_t ts_kv_prefix_probe(const ts_kvcache *kv, const int32_t *prompt, int32_t n_prompt) {
    if (!kv->cap || n_prompt > kv->p.n_ctx) return 0;
    return match_prefix(kv, prompt, n_prompt, kv->chain) * kv->p.page_size;
}

ts_status ts_kv_reserve_prefix(ts_kvcache *kv, int32_t seq, const int32_t *prompt,
                               int32_t n_prompt, int32_t n_pos, int32_t *n_cached) {
    *n_cached = 0;
    if (seq < 0 || seq >= kv->p.n_seq_max)
        return TS_FAIL(TS_INVAL, "sequence slot %d out of range [0, %d)", seq, kv->p.n_seq_max);
    if (n_pos < 0 || n_pos > kv->p.n_ctx)
        return TS_FAIL(TS_RANGE, "%d positions exceed the context of %d tokens", n_pos,
                       kv->p.n_ctx);
    if (n_prompt < 0 || n_prompt > n_pos || (n_prompt > 0 && !prompt))
        return TS_FAIL(TS_INVAL, "prompt of %d tokens for a reservation of %d positions",
                       n_prompt, n_pos);
    kv_seq *q = &kv->seq[seq];
    if (q->active)
        return TS_FAIL(TS_INVAL, "sequence slot %d is in use (release it first)", seq);
    if (!kv->cap || n_prompt == 0) return ts_kv_reserve(kv, seq, n_pos);
    const int32_t ps = kv->p.page_size;
    const bool glob = kv->p.n_global_layers > 0;
    const int32_t k = match_prefix(kv, prompt, n_prompt, kv->chain);
    /* pages: the hit's pages are held already; those only the cache held stop being
     * evictable once taken */
    const int64_t need = ts_kv_pages_for(kv, n_pos) - (glob ? k : 0);
    int64_t avail = ts_kv_available_global_pages(kv);
    for (int32_t b = 0; b < k; b++)
        if (glob && kv->grefs[kv->ent[kv->chain[b]].page] == 1) avail--;
    if (need > avail)
        return TS_FAIL(TS_EXHAUSTED, "KV cache full: sequence needs %lld more pages, %lld "
                       "available", (long long)need, (long long)avail);
    kv->n_lookups++;
    kv->n_hit_tokens += (uint64_t)k * (uint64_t)ps;
    /* take the hit: references on its pages, most recently used (the root last, so it
     * is the newest of the chain) */
    for (int32_t b = k - 1; b >= 0; b--) {
        kv_entry *x = &kv->ent[kv->chain[b]];
        x->stamp = ++kv->clock;
        if (glob) kv->grefs[x->page]++;
    }
    q->n_gpages = 0;
    if (glob)
        for (int32_t b = 0; b < k; b++) q->gpages[q->n_gpages++] = kv->ent[kv->chain[b]].page;
    /* the rest, evicting what only the cache holds if needed */
    while (kv->n_gfree < need && evict_one(kv, -1)) {}
    if (kv->n_gfree < need) { /* cannot happen: avail counted the evictable pages */
        ts_kv_release(kv, seq);
        return TS_FAIL(TS_INTERNAL, "KV cache: eviction freed too few pages");
    }
    const int64_t total = ts_kv_pages_for(kv, n_pos);
    while (q->n_gpages < total) {
        int32_t pg = kv->gfree[--kv->n_gfree];
        kv->grefs[pg] = 1;
        q->gpages[q->n_gpages++] = pg;
    }
    /* the ring: the snapshots of positions [P - W + 1, P) before the cut P */
    const int32_t cut = k * ps;
    if (kv->ring > 0 && k > 0) {
        int32_t lo = cut - kv->p.window + 1;
        if (lo < 0) lo = 0;
        for (int32_t b = lo / ps; b < k; b++)
            (void)queue_copy(kv, q->ring[b % kv->ring], kv->ent[kv->chain[b]].snap, false);
    }
    q->n_pos = n_pos;
    q->active = true;
    q->n_shared = cut;
    memcpy(q->prompt, prompt, sizeof(int32_t) * (size_t)n_prompt);
    q->n_prompt = n_prompt;
    q->reg_on = true;
    q->reg_blocks = k;
    q->reg_parent = k > 0 ? kv->chain[k - 1] : -1;
    q->reg_hash = k > 0 ? kv->ent[kv->chain[k - 1]].hash : HASH_ROOT;
    *n_cached = cut;
    return TS_OK;
}

int32_t ts_kv_shared_positions(const ts_kvcache *kv, int32_t seq) {
    return seq >= 0 && seq < kv->p.n_seq_max ? kv->seq[seq].n_shared : 0;
}

void ts_kv_prefix_commit(ts_kvcache *kv, int32_t seq, int32_t n_done) {
    if (!kv->cap || seq < 0 || seq >= kv->p.n_seq_max) return;
    kv_seq *q = &kv->seq[seq];
    if (!q->active || !q->reg_on) return;
    const int32_t ps = kv->p.page_size;
    const int32_t upto = (n_done < q->n_prompt ? n_done : q->n_prompt) / ps;
    while (q->reg_blocks < upto) {
        const int32_t b = q->reg_blocks;
        const int32_t *t = q->prompt + (size_t)b * ps;
        const uint64_t h = block_hash(q->reg_hash, t, ps);
        /* already cached (another sequence computed the same prefix): stop here, so that
         * every entry a sequence registers hangs under entries it holds itself */
        if (find_entry(kv, q->reg_parent, h, t) >= 0 ||
            (!kv->n_efree && !evict_one(kv, q->reg_parent)) ||
            (has_snap(kv) && kv->n_copies >= kv->cap_copies)) {
            q->reg_on = false;
            return;
        }
        const int32_t e = kv->efree[--kv->n_efree];
        kv_entry *x = &kv->ent[e];
        *x = (kv_entry){.hash = h, .stamp = ++kv->clock, .parent = q->reg_parent,
                        .page = kv->p.n_global_layers > 0 ? q->gpages[b] : -1,
                        .snap = has_snap(kv) ? kv->ring * kv->p.n_seq_max + e : -1,
                        .used = true};
        memcpy(kv->ent_tok + (size_t)e * ps, t, sizeof(int32_t) * (size_t)ps);
        if (x->page >= 0) kv->grefs[x->page]++;
        if (x->parent >= 0) kv->ent[x->parent].n_children++;
        const uint32_t bk = (uint32_t)(h & (kv->n_bucket - 1));
        x->hnext = kv->bucket[bk];
        kv->bucket[bk] = e;
        if (has_snap(kv)) (void)queue_copy(kv, x->snap, q->ring[b % kv->ring], false);
        kv->n_inserts++;
        q->reg_parent = e;
        q->reg_hash = h;
        q->reg_blocks++;
    }
}

void ts_kv_prefix_stop(ts_kvcache *kv, int32_t seq) {
    if (seq >= 0 && seq < kv->p.n_seq_max) kv->seq[seq].reg_on = false;
}

int32_t ts_kv_take_copies(ts_kvcache *kv, const ts_kv_copy **out) {
    *out = kv->copies;
    int32_t n = kv->n_copies;
    kv->n_copies = 0;
    return n;
}

void ts_kv_prefix_flush(ts_kvcache *kv) {
    if (!kv->cap) return;
    for (int32_t e = 0; e < kv->cap; e++)
        if (kv->ent[e].used) {
            page_unref(kv, kv->ent[e].page);
            kv->ent[e].used = false;
        }
    for (int32_t i = 0; i < kv->cap; i++) kv->efree[i] = kv->cap - 1 - i;
    kv->n_efree = kv->cap;
    for (uint32_t i = 0; i < kv->n_bucket; i++) kv->bucket[i] = -1;
    for (int32_t s = 0; s < kv->p.n_seq_max; s++) kv->seq[s].reg_on = false;
}

void ts_kv_prefix_get_stats(const ts_kvcache *kv, ts_kv_prefix_stats *st) {
    memset(st, 0, sizeof *st);
    st->capacity = kv->cap;
    for (int32_t e = 0; e < kv->cap; e++)
        if (kv->ent[e].used) {
            st->entries++;
            if (kv->ent[e].page >= 0 && kv->grefs[kv->ent[e].page] == 1) st->pages_held++;
        }
    st->lookups = kv->n_lookups;
    st->hit_tokens = kv->n_hit_tokens;
    st->evictions = kv->n_evictions;
    st->inserts = kv->n_inserts;
}

int32_t ts_kv_page_refs(const ts_kvcache *kv, int32_t page) {
    return page >= 0 && page < kv->p.global_pages ? kv->grefs[page] : 0;
}
