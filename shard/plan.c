/* plan.c: the parallel plan (plan.h). Pure: no I/O, no allocation.
 *
 * DESIGN
 * 1. Shape checks (tp divides the KV heads, tp * pp == world, pp <= layers).
 * 2. TP slices: heads and KV heads evenly (tp divides both); the FFN in whole blocks of
 *    row_align elements, as evenly as possible (uneven when the block count is not a
 *    multiple of tp); attn_output's head slice must be whole blocks.
 * 3. Layers to stages: without budgets evenly by count (the first n_layer % pp stages get
 *    one more). With budgets, in proportion to what each stage can hold after its fixed
 *    cost (token_embd on the first and last stage), counting each layer's weights plus its
 *    KV (global layers: n_seq * n_ctx positions; local layers: the window ring only), then
 *    every rank is checked against its budget.
 */
#include "plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "quant.h"

#define MiB(x) ((double)(x) / (1024.0 * 1024.0))

uint64_t ts_plan_type_bytes(uint32_t type, uint64_t n) {
    uint32_t be = ts_type_block_elems(type), bb = ts_type_block_bytes(type);
    if (!be || !bb) {
        be = 1;
        bb = 4;
    }
    return (n + be - 1) / be * bb;
}

/* Appends to the description (truncates silently). */
static void dappend(ts_plan *pl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dappend(ts_plan *pl, const char *fmt, ...) {
    size_t n = strlen(pl->desc);
    if (n + 1 >= sizeof pl->desc) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pl->desc + n, sizeof pl->desc - n, fmt, ap);
    va_end(ap);
}

/* The TP sizes that divide the KV heads, as text ("1, 2, 4"). */
static void tp_choices(const ts_config *c, char *buf, size_t cap) {
    buf[0] = '\0';
    size_t n = 0;
    for (uint32_t t = 1; t <= c->n_head_kv && n + 12 < cap; t++)
        if (c->n_head_kv % t == 0) n += (size_t)snprintf(buf + n, cap - n, "%s%u", n ? ", " : "", t);
}

typedef struct {
    const ts_config *c;
    uint32_t wtype, etype;
    int32_t n_ctx, n_seq, n_chunk;
} costs;

/* Weight bytes of one layer on a TP rank with hr heads, kvr KV heads, fr FFN rows. */
static uint64_t layer_weight_bytes(const costs *k, int64_t hr, int64_t kvr, int64_t fr) {
    const ts_config *c = k->c;
    uint64_t d = c->n_embd, hd = c->head_dim;
    uint64_t elems = d * hr * hd * 2 /* q, o */ + d * kvr * hd * 2 /* k, v */ +
                     d * (uint64_t)fr * 3 /* gate, up, down */;
    return ts_plan_type_bytes(k->wtype, elems) + sizeof(float) * (4 * d + 2 * hd);
}

static uint64_t layer_kv_bytes(const costs *k, int32_t il, int64_t kvr) {
    const ts_config *c = k->c;
    uint64_t per_pos = 2ull * (uint64_t)kvr * c->head_dim * sizeof(float);
    uint64_t pos = (uint64_t)k->n_ctx;
    if (!c->is_global[il] && c->sliding_window > 0) {
        uint64_t ring = (uint64_t)c->sliding_window + (uint64_t)k->n_chunk;
        if (ring < pos) pos = ring;
    }
    return per_pos * pos * (uint64_t)k->n_seq;
}

static uint64_t embd_bytes(const costs *k) {
    return ts_plan_type_bytes(k->etype, (uint64_t)k->c->n_vocab * k->c->n_embd);
}

ts_status ts_plan_make(const ts_config *c, const ts_plan_params *pp, ts_plan *pl) {
    memset(pl, 0, sizeof *pl);
    if (!c || !pp) return TS_FAIL(TS_INVAL, "plan: NULL config or parameters");
    const int32_t world = pp->world, tp = pp->tp > 0 ? pp->tp : 1;
    const int32_t L = (int32_t)c->n_layer;
    char choices[128];
    tp_choices(c, choices, sizeof choices);
    if (world < 1 || world > TS_PLAN_MAX_RANKS)
        return TS_FAIL(TS_INVAL, "plan: world size %d outside [1, %d]", world, TS_PLAN_MAX_RANKS);
    if (c->n_head_kv == 0 || c->n_head % c->n_head_kv != 0 || L < 1)
        return TS_FAIL(TS_INVAL, "plan: malformed config (%u heads, %u KV heads, %d layers)",
                       c->n_head, c->n_head_kv, L);
    if (c->n_head_kv % (uint32_t)tp != 0)
        return TS_FAIL(TS_INVAL, "plan: tp %d does not divide the model's %u KV heads "
                       "(tp must be one of: %s)", tp, c->n_head_kv, choices);
    int32_t npp = pp->pp;
    if (npp <= 0) {
        if (world % tp != 0)
            return TS_FAIL(TS_INVAL, "plan: %d ranks are not a multiple of tp %d (use a world "
                           "size of k * %d, or tp in {%s} dividing %d)", world, tp, tp, choices,
                           world);
        npp = world / tp;
    } else if ((int64_t)tp * npp != world) {
        return TS_FAIL(TS_INVAL, "plan: tp %d x pp %d = %d ranks, but the job has %d (choose "
                       "tp * pp = %d%s)", tp, npp, tp * npp, world, world,
                       world % tp == 0 ? "" : "; tp must divide the world size");
    }
    if (npp > L)
        return TS_FAIL(TS_INVAL, "plan: %d pipeline stages but the model has only %d layers "
                       "(at most pp %d; use tp for more ranks)", npp, L, L);

    costs k = {.c = c, .wtype = pp->weight_type ? pp->weight_type : 0 /* F32 */,
               .n_ctx = pp->n_ctx > 0 ? pp->n_ctx
                        : (c->n_ctx_train < 8192 ? (int32_t)c->n_ctx_train : 8192),
               .n_seq = pp->n_seq > 0 ? pp->n_seq : 1,
               .n_chunk = pp->n_chunk > 0 ? pp->n_chunk : 512};
    k.etype = pp->embd_type ? pp->embd_type : k.wtype;
    uint32_t align = pp->row_align;
    if (!align) {
        align = ts_type_block_elems(k.wtype);
        if (align < 32) align = 32;
    }

    /* TP slices */
    const int32_t hr = (int32_t)c->n_head / tp, kvr = (int32_t)c->n_head_kv / tp;
    if (tp > 1 && ((int64_t)hr * c->head_dim) % align != 0)
        return TS_FAIL(TS_INVAL, "plan: with tp %d each rank's attn_output input slice is %d "
                       "heads x %u = %lld columns, not a whole number of %u-element blocks "
                       "(choose a smaller tp)", tp, hr, c->head_dim,
                       (long long)hr * c->head_dim, align);
    const int64_t nfb = ((int64_t)c->n_ff + align - 1) / align;
    if (nfb < tp)
        return TS_FAIL(TS_INVAL, "plan: the FFN (%u) has only %lld blocks of %u elements, fewer "
                       "than tp %d (ffn_down splits at block boundaries; at most tp %lld)",
                       c->n_ff, (long long)nfb, align, tp, (long long)nfb);

    /* layer split */
    int32_t l0s[TS_PLAN_MAX_RANKS + 1];
    const uint64_t E = embd_bytes(&k);
    const int64_t fr_max = (nfb + tp - 1) / tp * align;
    if (!pp->mem_bytes) {
        int32_t at = 0;
        for (int32_t s = 0; s < npp; s++) {
            l0s[s] = at;
            at += L / npp + (s < L % npp ? 1 : 0);
        }
        l0s[npp] = L;
    } else {
        /* capacity of each stage for layers: min over its ranks of budget - fixed */
        double cap[TS_PLAN_MAX_RANKS], cap_sum = 0;
        for (int32_t s = 0; s < npp; s++) {
            double m = -1;
            for (int32_t r = 0; r < tp; r++) {
                uint64_t fixed = 0;
                if (s == 0) fixed += E;
                if (s == npp - 1 && r == 0 && !(s == 0)) fixed += E;
                fixed += sizeof(float) * c->n_embd;
                double avail = (double)pp->mem_bytes[s * tp + r] - (double)fixed;
                if (m < 0 || avail < m) m = avail;
            }
            cap[s] = m > 0 ? m : 0;
            cap_sum += cap[s];
        }
        double total = 0, lc[TS_MAX_LAYERS];
        for (int32_t il = 0; il < L; il++) {
            lc[il] = (double)(layer_weight_bytes(&k, hr, kvr, fr_max) + layer_kv_bytes(&k, il, kvr));
            total += lc[il];
        }
        if (cap_sum <= 0) cap_sum = 1;
        int32_t s = 0;
        double cum = 0, target = total * cap[0] / cap_sum;
        l0s[0] = 0;
        for (int32_t il = 0; il < L; il++) {
            cum += lc[il]; /* layer il goes to stage s */
            if (s == npp - 1) continue;
            bool must = L - il - 1 == npp - s - 1; /* one layer left for each later stage */
            bool want = il + 1 < L && cum + lc[il + 1] / 2 > target;
            if (must || want) {
                s++;
                l0s[s] = il + 1;
                target += total * cap[s] / cap_sum;
            }
        }
        l0s[npp] = L;
    }

    pl->world = world;
    pl->tp = tp;
    pl->pp = npp;
    pl->n_layer = L;
    pl->row_align = align;
    for (int32_t s = 0; s < npp; s++)
        for (int32_t r = 0; r < tp; r++) {
            ts_plan_rank *x = &pl->rank[s * tp + r];
            x->rank = s * tp + r;
            x->stage = s;
            x->tp_rank = r;
            x->l0 = l0s[s];
            x->l1 = l0s[s + 1];
            x->h0 = r * hr;
            x->h1 = (r + 1) * hr;
            x->kv0 = r * kvr;
            x->kv1 = (r + 1) * kvr;
            int64_t b0 = nfb * r / tp, b1 = nfb * (r + 1) / tp;
            x->f0 = (int32_t)(b0 * align);
            x->f1 = (int32_t)(b1 * align < (int64_t)c->n_ff ? b1 * align : (int64_t)c->n_ff);
            x->embed = s == 0;
            x->lm_head = s == npp - 1;
            x->v0 = x->lm_head ? (int32_t)((int64_t)c->n_vocab * r / tp) : 0;
            x->v1 = x->lm_head ? (int32_t)((int64_t)c->n_vocab * (r + 1) / tp) : 0;
            uint64_t w = 0, kv = 0;
            for (int32_t il = x->l0; il < x->l1; il++) {
                w += layer_weight_bytes(&k, hr, kvr, x->f1 - x->f0);
                kv += layer_kv_bytes(&k, il, kvr);
            }
            if (x->embed) w += E;
            if (x->lm_head && (tp > 1 || !x->embed)) /* the slice; tp 1 + embed: tied, shared */
                w += E / c->n_vocab * (uint64_t)(x->v1 - x->v0);
            if (x->lm_head) w += sizeof(float) * c->n_embd;
            x->weight_bytes = w;
            x->kv_bytes = kv;
        }

    /* memory check */
    if (pp->mem_bytes)
        for (int32_t i = 0; i < world; i++) {
            const ts_plan_rank *x = &pl->rank[i];
            uint64_t need = x->weight_bytes + x->kv_bytes, have = pp->mem_bytes[i];
            if (need <= have) continue;
            /* what would fit: the context that fits this rank, if its weights do */
            char hint[256];
            uint64_t kv1 = 0; /* KV bytes per position of context */
            for (int32_t il = x->l0; il < x->l1; il++)
                if (c->is_global[il] || c->sliding_window == 0)
                    kv1 += 2ull * (uint64_t)kvr * c->head_dim * sizeof(float) * (uint64_t)k.n_seq;
            if (x->weight_bytes < have && kv1 > 0) {
                uint64_t local = 0;
                for (int32_t il = x->l0; il < x->l1; il++)
                    if (!(c->is_global[il] || c->sliding_window == 0))
                        local += layer_kv_bytes(&k, il, kvr);
                uint64_t room = have - x->weight_bytes;
                int64_t fit = room > local ? (int64_t)((room - local) / kv1) : 0;
                snprintf(hint, sizeof hint, "a context of at most %lld tokens (x %d sequences) "
                         "fits it, or add ranks / memory", (long long)fit, k.n_seq);
            } else {
                snprintf(hint, sizeof hint, "its weights alone need %.1f MiB: use more "
                         "pipeline stages or tensor-parallel ranks, or more memory",
                         MiB(x->weight_bytes));
            }
            return TS_FAIL(TS_INVAL, "plan: rank %d (stage %d, tp rank %d, layers [%d, %d)) "
                           "needs %.1f MiB (weights %.1f + KV %.1f for %d x %d tokens) but has "
                           "%.1f MiB; %s", i, x->stage, x->tp_rank, x->l0, x->l1, MiB(need),
                           MiB(x->weight_bytes), MiB(x->kv_bytes), k.n_seq, k.n_ctx, MiB(have),
                           hint);
        }

    dappend(pl, "plan: %d rank%s = tp %d x pp %d; %d layers (%u global), %u heads / %u KV heads, "
            "FFN %u, row-parallel blocks of %u\n", world, world == 1 ? "" : "s", tp, npp, L,
            c->n_global, c->n_head, c->n_head_kv, c->n_ff, align);
    for (int32_t i = 0; i < world; i++) {
        const ts_plan_rank *x = &pl->rank[i];
        int32_t ng = 0;
        for (int32_t il = x->l0; il < x->l1; il++) ng += c->is_global[il] ? 1 : 0;
        char lm[64] = "";
        if (x->lm_head) snprintf(lm, sizeof lm, ", lm_head vocab [%d, %d)", x->v0, x->v1);
        dappend(pl, "  rank %d: stage %d layers [%d, %d) (%d global), tp %d/%d heads [%d, %d) "
                "kv [%d, %d) ffn [%d, %d)%s%s; weights %.1f MiB, KV %.1f MiB\n", i, x->stage,
                x->l0, x->l1, ng, x->tp_rank, tp, x->h0, x->h1, x->kv0, x->kv1, x->f0, x->f1,
                x->embed ? ", embed" : "", lm, MiB(x->weight_bytes), MiB(x->kv_bytes));
    }
    return TS_OK;
}
