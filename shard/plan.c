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
 * 4. ts_plan_auto: every tp x pp = world (tp dividing the world; TP groups on one host),
 *    each budget less that tp's step buffers, the largest context by bisection on
 *    ts_plan_make; the layout holding the most (ties: fewer TP ranks) among those holding
 *    the requested context. Refusals add what would fit: the context the best layout
 *    holds, the other ranks without a far smaller one, or how many ranks of the median
 *    budget would hold the model.
 */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "strbuf.h"

#define hsize ts_str_gib /* "14.2 GiB" / "3.5 MiB" */

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
#define dappend(pl, ...) ts_str_append((pl)->desc, sizeof (pl)->desc, __VA_ARGS__)

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
        if (pp->mem_bytes) {
            size_t n = strlen(pl->desc);
            if (n && pl->desc[n - 1] == '\n') pl->desc[n - 1] = '\0';
            char hb[32];
            dappend(pl, " of a %s budget\n", hsize(pp->mem_bytes[i], hb, sizeof hb));
        }
    }
    return TS_OK;
}

/* ---------------------------------------------------------------- ts_plan_auto */

uint64_t ts_plan_step_bytes(const ts_config *c, int32_t tp, int32_t n_batch, int32_t n_seq,
                            uint32_t row_align) {
    const uint64_t tpn = (uint64_t)(tp > 0 ? tp : 1), B = (uint64_t)(n_batch > 0 ? n_batch : 0),
                   qd = (uint64_t)c->n_head * c->head_dim / tpn,
                   kd = (uint64_t)c->n_head_kv * c->head_dim / tpn,
                   ffr = (uint64_t)c->n_ff / tpn + (row_align ? row_align : 32),
                   rows = (uint64_t)(n_seq > 8 ? n_seq : 8);
    return sizeof(float) * (B * (3ull * c->n_embd + 2 * qd + 2 * kd + 2 * ffr) +
                            rows * (c->n_embd + (uint64_t)c->n_vocab));
}


/* The context default of ts_plan_make for n_ctx 0. */
static int32_t default_ctx(const ts_config *c) {
    return c->n_ctx_train > 0 && c->n_ctx_train < 8192 ? (int32_t)c->n_ctx_train : 8192;
}

/* budgets less the step buffers at tp (saturating) */
static void layout_budgets(const ts_config *c, const ts_plan_auto_params *ap, int32_t tp,
                           int32_t world, const uint64_t *mem, uint64_t *out) {
    uint64_t step = ap->n_batch > 0 ? ts_plan_step_bytes(c, tp, ap->n_batch, ap->plan.n_seq,
                                                         ap->plan.row_align)
                                    : 0;
    for (int32_t r = 0; r < world; r++) out[r] = mem[r] > step ? mem[r] - step : 0;
}

/* Does (tp, pp) on these budgets hold n_ctx? */
static bool fits(const ts_config *c, ts_plan_params p, int32_t world, int32_t tp, int32_t pp,
                 const uint64_t *budget, int32_t n_ctx, ts_plan *scratch) {
    p.world = world;
    p.tp = tp;
    p.pp = pp;
    p.mem_bytes = budget;
    p.n_ctx = n_ctx;
    return ts_plan_make(c, &p, scratch) == TS_OK;
}

/* The largest context in [1, hi] that (tp, pp) holds; 0 if none (the planner's monotone in
 * the context: more positions never need less memory). */
static int32_t max_context(const ts_config *c, const ts_plan_params *base, int32_t world,
                           int32_t tp, int32_t pp, const uint64_t *budget, int32_t hi,
                           ts_plan *scratch) {
    if (!fits(c, *base, world, tp, pp, budget, 1, scratch)) return 0;
    if (fits(c, *base, world, tp, pp, budget, hi, scratch)) return hi;
    int32_t lo = 1; /* lo fits, hi does not */
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        if (fits(c, *base, world, tp, pp, budget, mid, scratch))
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The smallest layout (tp, pp) of `world` ranks with every budget `each` that holds n_ctx;
 * false if none. */
static bool uniform_fits(const ts_config *c, const ts_plan_auto_params *ap, int32_t world,
                         uint64_t each, int32_t n_ctx, int32_t *tp_out, ts_plan *scratch) {
    uint64_t b[TS_PLAN_MAX_RANKS];
    for (int32_t tp = 1; tp <= world; tp++) {
        if (world % tp || c->n_head_kv % (uint32_t)tp) continue;
        if (ap->plan.tp > 0 && tp != ap->plan.tp) continue; /* a fixed tp stays */
        uint64_t e[1] = {each};
        layout_budgets(c, ap, tp, 1, e, e);
        for (int32_t r = 0; r < world; r++) b[r] = e[0];
        if (fits(c, ap->plan, world, tp, world / tp, b, n_ctx, scratch)) {
            *tp_out = tp;
            return true;
        }
    }
    return false;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

ts_status ts_plan_auto(const ts_config *c, const ts_plan_auto_params *ap,
                       ts_plan_auto_result *out) {
    memset(out, 0, sizeof *out);
    if (!c || !ap || !ap->plan.mem_bytes)
        return TS_FAIL(TS_INVAL, "plan auto: NULL config, parameters or budgets");
    const ts_plan_params *bp = &ap->plan;
    const int32_t world = bp->world, n_seq = bp->n_seq > 0 ? bp->n_seq : 1;
    if (world < 1 || world > TS_PLAN_MAX_RANKS)
        return TS_FAIL(TS_INVAL, "plan auto: world size %d outside [1, %d]", world,
                       TS_PLAN_MAX_RANKS);
    const int32_t want = bp->n_ctx > 0 ? bp->n_ctx : default_ctx(c);
    int32_t hi = c->n_ctx_train > 0 ? (int32_t)c->n_ctx_train : want;
    if (hi < want) hi = want;
    out->n_ctx = want;
    static _Thread_local ts_plan scratch; /* large: not on the stack */
    uint64_t budget[TS_PLAN_MAX_RANKS];
    int best = -1;
    char sz[4][32];

    for (int32_t tp = 1; tp <= world && out->n_layout < TS_PLAN_AUTO_MAX; tp++) {
        if (world % tp) continue;
        const int32_t pp = world / tp;
        if ((bp->tp > 0 && tp != bp->tp) || (bp->pp > 0 && pp != bp->pp)) continue;
        ts_plan_layout *L = &out->layout[out->n_layout++];
        L->tp = tp;
        L->pp = pp;
        bool spans = false;
        for (int32_t r = 1; ap->host && r < world; r++)
            if (r % tp && ap->host[r] != ap->host[r - 1]) spans = true;
        if (spans) {
            snprintf(L->why, sizeof L->why, "a tensor-parallel group of %d ranks would span "
                     "hosts", tp);
            continue;
        }
        layout_budgets(c, ap, tp, world, bp->mem_bytes, budget);
        L->max_ctx = max_context(c, bp, world, tp, pp, budget, hi, &scratch);
        if (L->max_ctx >= want) {
            if (best < 0 || L->max_ctx > out->layout[best].max_ctx) best = out->n_layout - 1;
            continue;
        }
        /* the planner's reason at the requested context (strip its "plan: ") */
        (void)fits(c, *bp, world, tp, pp, budget, want, &scratch);
        const char *e = ts_last_error();
        if (!strncmp(e, "plan: ", 6)) e += 6;
        snprintf(L->why, sizeof L->why, "%s", e);
    }

    if (best >= 0) {
        const ts_plan_layout *B = &out->layout[best];
        out->tp = B->tp;
        out->pp = B->pp;
        out->max_ctx = B->max_ctx;
        snprintf(out->desc, sizeof out->desc, "auto: tp %d x pp %d of %d rank%s (holds a "
                 "context of up to %d x %d sequence%s; asked %d", B->tp, B->pp, world,
                 world == 1 ? "" : "s", B->max_ctx, n_seq, n_seq == 1 ? "" : "s", want);
        for (int32_t i = 0; i < out->n_layout; i++) {
            const ts_plan_layout *L = &out->layout[i];
            if (i == best) continue;
            if (L->max_ctx >= want)
                ts_str_append(out->desc, sizeof out->desc, "; tp %d x pp %d: up to %d%s", L->tp,
                        L->pp, L->max_ctx, L->max_ctx == B->max_ctx && L->tp > B->tp
                                               ? " (a tie: fewer TP ranks win)" : "");
            else
                ts_str_append(out->desc, sizeof out->desc, "; tp %d x pp %d: %s", L->tp, L->pp,
                        L->why);
        }
        ts_str_append(out->desc, sizeof out->desc, ")");
        return TS_OK;
    }

    if (out->n_layout == 0) {
        snprintf(out->desc, sizeof out->desc, "auto: no layout of %d rank%s has %s %d (tp x pp "
                 "must be %d: tp and pp dividing it)", world, world == 1 ? "" : "s",
                 bp->tp > 0 ? "tp" : "pp", bp->tp > 0 ? bp->tp : bp->pp, world);
        return TS_FAIL(TS_INVAL, "%s", out->desc);
    }
    /* refused: why, and what would fit */
    uint64_t total_have = 0, sorted[TS_PLAN_MAX_RANKS];
    for (int32_t r = 0; r < world; r++) {
        total_have += bp->mem_bytes[r];
        sorted[r] = bp->mem_bytes[r];
    }
    qsort(sorted, (size_t)world, sizeof sorted[0], cmp_u64);
    int ctx_best = -1; /* the layout holding the most context below the request */
    for (int32_t i = 0; i < out->n_layout; i++)
        if (out->layout[i].max_ctx > 0 &&
            (ctx_best < 0 || out->layout[i].max_ctx > out->layout[ctx_best].max_ctx))
            ctx_best = i;
    /* what the whole model needs at the requested context (one rank, no budgets) */
    ts_plan_params one = *bp;
    one.world = 1;
    one.tp = 1;
    one.pp = 1;
    one.mem_bytes = NULL;
    one.n_ctx = want;
    uint64_t need_w = 0, need_kv = 0;
    if (ts_plan_make(c, &one, &scratch) == TS_OK) {
        need_w = scratch.rank[0].weight_bytes;
        need_kv = scratch.rank[0].kv_bytes;
    }
    char *d = out->desc;
    const size_t cap = sizeof out->desc;
    snprintf(d, cap, "auto: no layout of %d rank%s holds the %s for a context of %d x %d "
             "sequence%s: it needs about %s (weights %s + KV %s) in all, the ranks have %s",
             world, world == 1 ? "" : "s", ctx_best >= 0 ? "model" : "weights", want, n_seq,
             n_seq == 1 ? "" : "s", hsize(need_w + need_kv, sz[0], sizeof sz[0]),
             hsize(need_w, sz[1], sizeof sz[1]), hsize(need_kv, sz[2], sizeof sz[2]),
             hsize(total_have, sz[3], sizeof sz[3]));
    if (world > 1) {
        if (sorted[0] == sorted[world - 1]) {
            ts_str_append(d, cap, " (%d x %s)", world, hsize(sorted[0], sz[0], sizeof sz[0]));
        } else if (world <= 8) {
            ts_str_append(d, cap, " (");
            for (int32_t r = 0; r < world; r++)
                ts_str_append(d, cap, "%s%s", r ? ", " : "", hsize(bp->mem_bytes[r], sz[0], sizeof sz[0]));
            ts_str_append(d, cap, ")");
        } else {
            ts_str_append(d, cap, " (%s to %s)", hsize(sorted[0], sz[0], sizeof sz[0]),
                    hsize(sorted[world - 1], sz[1], sizeof sz[1]));
        }
    }
    if (ap->n_batch > 0)
        ts_str_append(d, cap, " before their step buffers (%s each at tp 1)",
                hsize(ts_plan_step_bytes(c, 1, ap->n_batch, n_seq, bp->row_align), sz[0],
                      sizeof sz[0]));
    /* the step buffers alone take every budget (at the layout with the smallest ones) */
    uint64_t step_min = 0;
    for (int32_t i = 0; i < out->n_layout && ap->n_batch > 0; i++) {
        uint64_t s = ts_plan_step_bytes(c, out->layout[i].tp, ap->n_batch, n_seq,
                                        bp->row_align);
        if (i == 0 || s < step_min) step_min = s;
    }
    if (step_min && sorted[world - 1] <= step_min) {
        ts_str_append(d, cap, ". The step buffers for a batch of %d tokens alone need at least %s "
                "per rank: use a smaller batch (--batch) or more memory", ap->n_batch,
                hsize(step_min, sz[0], sizeof sz[0]));
        return TS_FAIL(TS_INVAL, "%s", d);
    }
    if (ctx_best >= 0)
        ts_str_append(d, cap, ". The most context any layout holds is %d (tp %d x pp %d): ask for "
                "that (--ctx %d%s), or add memory or ranks", out->layout[ctx_best].max_ctx,
                out->layout[ctx_best].tp, out->layout[ctx_best].pp,
                out->layout[ctx_best].max_ctx, n_seq > 1 ? ", or fewer sequences" : "");
    /* one rank far below the others: would the rest hold it? */
    int32_t tp_fit = 0;
    if (world > 1 && sorted[0] < sorted[world - 1] / 2) {
        uint64_t rest[TS_PLAN_MAX_RANKS];
        int32_t n = 0, small = 0;
        for (int32_t r = 0; r < world; r++)
            if (bp->mem_bytes[r] < bp->mem_bytes[small]) small = r;
        for (int32_t r = 0; r < world; r++)
            if (r != small) rest[n++] = bp->mem_bytes[r];
        for (int32_t tp = 1; tp <= n && !tp_fit; tp++) {
            if (n % tp) continue;
            uint64_t b2[TS_PLAN_MAX_RANKS];
            layout_budgets(c, ap, tp, n, rest, b2);
            if (fits(c, *bp, n, tp, n / tp, b2, want, &scratch)) tp_fit = tp;
        }
        if (tp_fit)
            ts_str_append(d, cap, ". Rank %d (%s) is too small: the other %d rank%s alone would "
                    "hold it (tp %d x pp %d); leave it out or give it more memory", small,
                    hsize(bp->mem_bytes[small], sz[0], sizeof sz[0]), n, n == 1 ? "" : "s",
                    tp_fit, n / tp_fit);
    }
    if (!tp_fit && ctx_best < 0) {
        /* how many ranks of the typical budget (the lower median) would hold it */
        const uint64_t each = sorted[(world - 1) / 2];
        int32_t k = 0, ktp = 0;
        for (int32_t n = world + 1; n <= TS_PLAN_MAX_RANKS && !k && each > 0; n++)
            if (uniform_fits(c, ap, n, each, want, &ktp, &scratch)) k = n;
        if (k)
            ts_str_append(d, cap, ". %d ranks of %s would (tp %d x pp %d)", k,
                    hsize(each, sz[0], sizeof sz[0]), ktp, k / ktp);
        else
            ts_str_append(d, cap, ". Even %d ranks of %s would not: more memory per rank is needed",
                    TS_PLAN_MAX_RANKS, hsize(each, sz[0], sizeof sz[0]));
    }
    ts_str_append(d, cap, ". Layouts:");
    for (int32_t i = 0; i < out->n_layout; i++) {
        const ts_plan_layout *L = &out->layout[i];
        if (L->max_ctx > 0)
            ts_str_append(d, cap, " tp %d x pp %d holds up to %d;", L->tp, L->pp, L->max_ctx);
        else
            ts_str_append(d, cap, " tp %d x pp %d: %s;", L->tp, L->pp, L->why);
    }
    size_t n = strlen(d);
    if (n && d[n - 1] == ';') d[n - 1] = '\0';
    return TS_FAIL(TS_INVAL, "%s", d);
}
