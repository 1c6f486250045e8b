/* engine.c: Gemma 3 model loading and the forward pass, written once against the backend
 * interface (backend.h). ref: ../shared/docs/gemma3-spec.md section 2.
 *
 * DESIGN
 * create: open the GGUF (mapped), read the config, load every weight through the backend
 * (the CPU backend reads them in place), size the KV pools and the step buffers for
 * n_batch tokens. step: embed -> per layer (attention block, FFN block, each with pre and
 * post norms and a residual add) -> final norm and tied LM head for the flagged rows only,
 * in chunks of up to `n_logit_rows` rows.
 *
 * Distributed (params.transport set; docs/distributed.md): the plan gives this rank a
 * layer range and, with TP, head / KV-head / FFN ranges. It loads only those slices
 * (row ranges through the backend; the column slices of the row-parallel attn_output and
 * ffn_down are repacked block-wise into owned buffers), keeps KV storage only for its
 * layers and KV heads (the page bookkeeping is the same on every rank, so admission
 * agrees), and runs: first stage embeds, others receive the hidden states (n_tok x d
 * floats) from the previous stage; per layer the partial sums of attn_output and ffn_down
 * are all-reduced in the TP group before the post-norm; the last stage's TP rank 0
 * computes the final norm and LM head and sends the logits to rank 0. Rank 0 broadcasts
 * each command (reserve, release, step with its batch) to the others (ts_engine_serve).
 * A single rank runs exactly the original sequence of backend calls.
 */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "kvcache.h"
#include "quant.h"

typedef struct {
    ts_wmat q, k, v, o, gate, up, down;
    float *attn_norm, *q_norm, *k_norm, *post_attn_norm, *ffn_norm, *post_ffn_norm;
} layer_w;

struct ts_engine {
    ts_engine_params p;
    ts_config cfg;
    ts_gguf *g;
    ts_backend *b;
    ts_kvcache *kv;
    ts_wmat tok_embd, output;
    float *output_norm;
    layer_w *layers;
    uint64_t weight_bytes, kv_bytes, act_bytes;
    int32_t n_logit_rows;
    /* step buffers (backend memory) */
    float *x, *h, *q, *k, *v, *att, *o, *gate, *up, *xs, *logits;
    /* host */
    int32_t *pos_tmp;
    int32_t *ids_tmp;          /* host (n_batch): ids with image positions replaced by 0 */
    float *hook_buf;
    int64_t hook_cols;
    /* distributed */
    ts_transport *tr;          /* NULL: single rank */
    ts_plan *plan;
    const ts_plan_rank *me;
    ts_plan_rank whole;        /* single rank: everything */
    void **owned;              /* repacked column slices (host) */
    int32_t n_owned, cap_owned;
    int32_t *desc;             /* step descriptor: header + 4 * n_batch */
    float *xfer;               /* host staging: (n_batch, d) */
    float *lhost;              /* host staging of logits (n_logit_rows, n_vocab) */
    bool broken;
};

enum { CMD_STOP = 1, CMD_STEP = 2, CMD_RESERVE = 3, CMD_RELEASE = 4, CMD_PING = 5 };
enum { DESC_HDR = 4 };

/* ---- loading ---- */

static ts_status load_matrix(ts_engine *e, const char *name, ts_wmat *out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(e->g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    TS_TRY(e->b->ops->load_matrix(e->b, t, 0, t->n_dims >= 2 ? t->ne[1] : 1, out));
    e->weight_bytes += t->nbytes;
    return TS_OK;
}

/* Rows [r0, r1) of a matrix (r1 = -1: all). */
static ts_status load_rows(ts_engine *e, const char *name, int64_t r0, int64_t r1, ts_wmat *out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(e->g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    int64_t rows = t->n_dims >= 2 ? t->ne[1] : 1;
    if (r1 < 0) r1 = rows;
    TS_TRY(e->b->ops->load_matrix(e->b, t, r0, r1 - r0, out));
    e->weight_bytes += t->nbytes / (size_t)rows * (size_t)(r1 - r0);
    return TS_OK;
}

/* Columns [c0, c1) of every row (the input slice of a row-parallel matrix): the block range
 * of each row copied into an owned buffer, loaded through the backend as a matrix of its
 * own. c0 and c1 must be block boundaries (the plan's row_align). */
static ts_status load_cols(ts_engine *e, const char *name, int64_t c0, int64_t c1, ts_wmat *out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(e->g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    if (c0 == 0 && c1 == t->ne[0]) return load_rows(e, name, 0, -1, out);
    const int64_t rows = t->n_dims >= 2 ? t->ne[1] : 1;
    const uint32_t be = ts_type_block_elems(t->type), bb = ts_type_block_bytes(t->type);
    size_t full, part;
    if (!be || c0 < 0 || c1 <= c0 || c1 > t->ne[0] || c0 % be || (c1 % be && c1 != t->ne[0]) ||
        !ts_type_row_bytes(t->type, t->ne[0], &full) ||
        !ts_type_row_bytes(t->type, c1 - c0, &part))
        return TS_FAIL(TS_INVAL, "tensor '%s' (%s): columns [%lld, %lld) are not whole %u-element "
                       "blocks of its %lld", name, ts_type_name(t->type), (long long)c0,
                       (long long)c1, be, (long long)t->ne[0]);
    if (e->n_owned == e->cap_owned) {
        int32_t cap = e->cap_owned ? 2 * e->cap_owned : 32;
        void **n = ts_realloc(e->owned, sizeof(void *) * (size_t)cap);
        if (!n) return TS_FAIL(TS_NOMEM, "slice table");
        e->owned = n;
        e->cap_owned = cap;
    }
    uint8_t *buf = ts_malloc(part * (size_t)rows);
    if (!buf) return TS_FAIL(TS_NOMEM, "slice of '%s' (%zu bytes)", name, part * (size_t)rows);
    e->owned[e->n_owned++] = buf;
    const size_t off = (size_t)(c0 / be) * bb;
    for (int64_t r = 0; r < rows; r++)
        memcpy(buf + (size_t)r * part, t->data + (size_t)r * full + off, part);
    ts_gguf_tensor st = *t;
    st.ne[0] = c1 - c0;
    st.n_elems = (c1 - c0) * rows;
    st.nbytes = part * (size_t)rows;
    st.data = buf;
    TS_TRY(e->b->ops->load_matrix(e->b, &st, 0, rows, out));
    e->weight_bytes += st.nbytes;
    return TS_OK;
}

static ts_status load_norm(ts_engine *e, const char *name, int64_t n, float **out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(e->g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    if (t->n_elems != n) return TS_FAIL(TS_FORMAT, "tensor '%s' has %lld elements, expected %lld",
                                        name, (long long)t->n_elems, (long long)n);
    float *tmp = ts_malloc(sizeof(float) * (size_t)n);
    if (!tmp) return TS_FAIL(TS_NOMEM, "norm '%s'", name);
    ts_status rc = TS_OK;
    if (!ts_dequantize_row(t->type, t->data, tmp, n))
        rc = TS_FAIL(TS_UNSUPPORTED, "tensor '%s': type %s", name, ts_type_name(t->type));
    for (int64_t i = 0; rc == TS_OK && i < n; i++)
        if (!isfinite(tmp[i])) rc = TS_FAIL(TS_FORMAT, "tensor '%s' holds a non-finite value", name);
    if (rc == TS_OK) rc = e->b->ops->load_vector(e->b, tmp, n, out);
    ts_free(tmp);
    e->weight_bytes += t->nbytes;
    return rc;
}

static ts_status balloc(ts_engine *e, float **p, int64_t rows, int64_t cols) {
    size_t n;
    if (!ts_mul_size((size_t)rows, (size_t)cols, &n) || !ts_mul_size(n, sizeof(float), &n))
        return TS_FAIL(TS_NOMEM, "step buffer size overflows");
    e->act_bytes += n;
    return e->b->ops->alloc(e->b, n, (void **)p);
}

uint64_t ts_engine_kv_bytes(const ts_config *c, int32_t n_ctx, int32_t n_seq_max,
                            int32_t n_chunk, int32_t page_size, int64_t kv_tokens) {
    int64_t gpages = (kv_tokens + page_size - 1) / page_size;
    int64_t ring = 0;
    if (c->sliding_window > 0 && c->n_global < c->n_layer) {
        ring = ((int64_t)c->sliding_window + n_chunk - 1 + page_size - 1) / page_size + 1;
        int64_t maxp = (n_ctx + page_size - 1) / page_size + 1;
        if (ring > maxp) ring = maxp;
    }
    uint64_t per_tok = 2ull * c->n_head_kv * c->head_dim * sizeof(float);
    return per_tok * (uint64_t)page_size *
           ((uint64_t)gpages * c->n_global + (uint64_t)ring * n_seq_max * (c->n_layer - c->n_global));
}

ts_status ts_engine_create(const ts_engine_params *pp, ts_engine **out) {
    *out = NULL;
    if (!pp || !pp->model_path) return TS_FAIL(TS_INVAL, "model path is NULL");
    ts_engine *e = ts_calloc(1, sizeof *e);
    if (!e) return TS_FAIL(TS_NOMEM, "engine");
    ts_status rc = TS_OK;
    e->p = *pp;
    TS_TRY_GOTO(ts_gguf_open(pp->model_path, &e->g), rc, fail);
    TS_TRY_GOTO(ts_config_from_gguf(e->g, &e->cfg), rc, fail);
    TS_TRY_GOTO(ts_config_check_tensors(&e->cfg, e->g), rc, fail);
    const ts_config *c = &e->cfg;

    ts_engine_params *p = &e->p;
    if (p->n_ctx <= 0) p->n_ctx = c->n_ctx_train < 8192 ? (int32_t)c->n_ctx_train : 8192;
    if ((uint32_t)p->n_ctx > c->n_ctx_train) {
        rc = TS_FAIL(TS_INVAL, "context %d exceeds the model's %u tokens", p->n_ctx, c->n_ctx_train);
        goto fail;
    }
    if (p->n_seq_max <= 0) p->n_seq_max = 1;
    if (p->n_batch <= 0) p->n_batch = 512;
    if (p->n_chunk <= 0 || p->n_chunk > p->n_batch) p->n_chunk = p->n_batch;
    if (p->page_size <= 0) p->page_size = 16;
    /* default: every slot can hold a full context (whole pages each) */
    if (p->kv_tokens <= 0)
        p->kv_tokens = (int64_t)((p->n_ctx + p->page_size - 1) / p->page_size) * p->page_size *
                       p->n_seq_max;
    if (p->n_seq_max > 65536 || p->n_batch > 65536 || p->page_size > 4096) {
        rc = TS_FAIL(TS_INVAL, "n_seq_max %d / n_batch %d / page_size %d too large", p->n_seq_max,
                     p->n_batch, p->page_size);
        goto fail;
    }

    if (!p->backend || !strcmp(p->backend, "cpu")) {
        TS_TRY_GOTO(ts_backend_cpu_create(p->n_threads, p->reference, &e->b), rc, fail);
        ts_backend_cpu_set_llamacpp_batch(e->b, p->llamacpp_batch);
    } else if (!strcmp(p->backend, "cuda")) {
#ifdef TS_HAVE_CUDA
        TS_TRY_GOTO(ts_backend_cuda_create(p->device, &e->b), rc, fail);
#else
        rc = TS_FAIL(TS_UNSUPPORTED, "backend 'cuda': this build has no CUDA support "
                     "(configure with nvcc available, TESSERA_CUDA=AUTO or ON)");
        goto fail;
#endif
    } else {
        rc = TS_FAIL(TS_INVAL, "unknown backend '%s' (cpu or cuda)", p->backend);
        goto fail;
    }

    /* the plan: this rank's slice (single rank: everything) */
    e->whole = (ts_plan_rank){.l0 = 0, .l1 = (int32_t)c->n_layer, .h0 = 0,
                              .h1 = (int32_t)c->n_head, .kv0 = 0, .kv1 = (int32_t)c->n_head_kv,
                              .f0 = 0, .f1 = (int32_t)c->n_ff, .embed = true, .lm_head = true};
    e->me = &e->whole;
    if (p->transport) {
        e->tr = p->transport;
        e->plan = ts_malloc(sizeof *e->plan);
        if (!e->plan) {
            rc = TS_FAIL(TS_NOMEM, "plan");
            goto fail;
        }
        if (p->plan) {
            *e->plan = *p->plan;
        } else {
            const ts_gguf_tensor *to = ts_gguf_find_tensor(e->g, "blk.0.attn_output.weight"),
                                 *td = ts_gguf_find_tensor(e->g, "blk.0.ffn_down.weight"),
                                 *te = ts_gguf_find_tensor(e->g, "token_embd.weight");
            uint32_t align = 32;
            if (to && ts_type_block_elems(to->type) > align) align = ts_type_block_elems(to->type);
            if (td && ts_type_block_elems(td->type) > align) align = ts_type_block_elems(td->type);
            ts_plan_params pl = {.world = e->tr->world, .tp = p->tp > 0 ? p->tp : e->tr->tp,
                                 .pp = p->pp, .n_ctx = p->n_ctx, .n_seq = p->n_seq_max,
                                 .n_chunk = p->n_chunk, .weight_type = td ? td->type : 0,
                                 .embd_type = te ? te->type : 0, .row_align = align};
            TS_TRY_GOTO(ts_plan_make(c, &pl, e->plan), rc, fail);
        }
        if (e->plan->world != e->tr->world || e->plan->tp != e->tr->tp ||
            e->tr->rank >= e->plan->world) {
            rc = TS_FAIL(TS_INVAL, "plan (tp %d x pp %d) does not match the transport (%d ranks, "
                         "tp %d)", e->plan->tp, e->plan->pp, e->tr->world, e->tr->tp);
            goto fail;
        }
        e->me = &e->plan->rank[e->tr->rank];
    }
    const ts_plan_rank *me = e->me;
    const int64_t hd_ = c->head_dim;

    /* weights */
    if (me->embed || me->lm_head)
        TS_TRY_GOTO(load_matrix(e, "token_embd.weight", &e->tok_embd), rc, fail);
    if (me->lm_head) {
        if (ts_gguf_find_tensor(e->g, "output.weight"))
            TS_TRY_GOTO(load_matrix(e, "output.weight", &e->output), rc, fail);
        else
            e->output = e->tok_embd; /* tied */
        TS_TRY_GOTO(load_norm(e, "output_norm.weight", c->n_embd, &e->output_norm), rc, fail);
    }
    e->layers = ts_calloc(c->n_layer, sizeof *e->layers);
    if (!e->layers) {
        rc = TS_FAIL(TS_NOMEM, "layer table");
        goto fail;
    }
    for (uint32_t i = (uint32_t)me->l0; i < (uint32_t)me->l1; i++) {
        layer_w *L = &e->layers[i];
        char n[96];
        if (p->progress) p->progress(p->progress_ctx, (float)i / (float)c->n_layer);
#define M(field, suffix)                                                                   \
    snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix);                                  \
    TS_TRY_GOTO(load_matrix(e, n, &L->field), rc, fail)
#define R(field, suffix, r0, r1)                                                           \
    snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix);                                  \
    TS_TRY_GOTO(load_rows(e, n, r0, r1, &L->field), rc, fail)
#define COLS(field, suffix, c0, c1)                                                        \
    snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix);                                  \
    TS_TRY_GOTO(load_cols(e, n, c0, c1, &L->field), rc, fail)
#define N(field, suffix, len)                                                              \
    snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix);                                  \
    TS_TRY_GOTO(load_norm(e, n, len, &L->field), rc, fail)
        if (!e->tr) {
            M(q, "attn_q"); M(k, "attn_k"); M(v, "attn_v"); M(o, "attn_output");
            M(gate, "ffn_gate"); M(up, "ffn_up"); M(down, "ffn_down");
        } else {
            R(q, "attn_q", me->h0 * hd_, me->h1 * hd_);
            R(k, "attn_k", me->kv0 * hd_, me->kv1 * hd_);
            R(v, "attn_v", me->kv0 * hd_, me->kv1 * hd_);
            COLS(o, "attn_output", me->h0 * hd_, me->h1 * hd_);
            R(gate, "ffn_gate", me->f0, me->f1);
            R(up, "ffn_up", me->f0, me->f1);
            COLS(down, "ffn_down", me->f0, me->f1);
        }
        N(attn_norm, "attn_norm", c->n_embd);
        N(q_norm, "attn_q_norm", c->head_dim);
        N(k_norm, "attn_k_norm", c->head_dim);
        N(post_attn_norm, "post_attention_norm", c->n_embd);
        N(ffn_norm, "ffn_norm", c->n_embd);
        N(post_ffn_norm, "post_ffw_norm", c->n_embd);
#undef M
#undef R
#undef COLS
#undef N
    }

    if (p->progress) p->progress(p->progress_ctx, 1.0f);
    /* KV cache */
    ts_kv_params kp = {
        .page_size = p->page_size, .n_seq_max = p->n_seq_max, .n_ctx = p->n_ctx,
        .max_chunk = p->n_chunk, .window = (int32_t)c->sliding_window,
        .global_pages = (p->kv_tokens + p->page_size - 1) / p->page_size,
        .n_global_layers = (int32_t)c->n_global,
        .n_local_layers = (int32_t)(c->n_layer - c->n_global),
        /* one rank only: the other ranks would have to mirror every lookup */
        .prefix_tokens = e->tr && e->tr->world > 1 ? 0 : p->prefix_cache_tokens,
    };
    if (c->n_global == 0) kp.global_pages = 0;
    if (kp.prefix_tokens > 0 && !e->b->ops->kv_copy) {
        rc = TS_FAIL(TS_UNSUPPORTED, "backend '%s' cannot copy KV pages (prefix cache)",
                     e->b->ops->name);
        goto fail;
    }
    TS_TRY_GOTO(ts_kv_create(&kp, &e->kv), rc, fail);
    /* storage only for this rank's layers (indexed il - l0) and KV heads */
    ts_kv_layout kl = {
        .n_layer = me->l1 - me->l0, .is_global = c->is_global + me->l0,
        .global_pages = ts_kv_global_pages(e->kv), .local_pages = ts_kv_local_pages(e->kv),
        .page_size = p->page_size, .kv_dim = (int32_t)((me->kv1 - me->kv0) * c->head_dim),
        .n_ctx = p->n_ctx,
        .n_batch = p->n_batch,
    };
    TS_TRY_GOTO(e->b->ops->kv_init(e->b, &kl), rc, fail);
    uint32_t n_glob = 0;
    for (int32_t il = me->l0; il < me->l1; il++) n_glob += c->is_global[il] ? 1u : 0u;
    e->kv_bytes = 2ull * (uint64_t)kl.kv_dim * sizeof(float) * (uint64_t)kl.page_size *
                  ((uint64_t)kl.global_pages * n_glob +
                   (uint64_t)kl.local_pages * ((uint32_t)kl.n_layer - n_glob));

    /* step buffers */
    const int64_t B = p->n_batch, d = c->n_embd, qd = (int64_t)(me->h1 - me->h0) * c->head_dim,
                  kd = (int64_t)(me->kv1 - me->kv0) * c->head_dim,
                  ffr = (int64_t)(me->f1 - me->f0);
    e->n_logit_rows = p->n_seq_max > 8 ? p->n_seq_max : 8;
    if (e->n_logit_rows > B) e->n_logit_rows = (int32_t)B;
    TS_TRY_GOTO(balloc(e, &e->x, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->h, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->q, B, qd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->k, B, kd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->v, B, kd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->att, B, qd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->o, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->gate, B, ffr), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->up, B, ffr), rc, fail);
    if (me->lm_head) {
        TS_TRY_GOTO(balloc(e, &e->xs, e->n_logit_rows, d), rc, fail);
        TS_TRY_GOTO(balloc(e, &e->logits, e->n_logit_rows, c->n_vocab), rc, fail);
    }
    if (e->tr) {
        e->desc = ts_malloc(sizeof(int32_t) * (DESC_HDR + 4 * (size_t)B));
        e->xfer = ts_malloc(sizeof(float) * (size_t)B * (size_t)d);
        if (me->lm_head && e->tr->rank != 0)
            e->lhost = ts_malloc(sizeof(float) * (size_t)e->n_logit_rows * c->n_vocab);
        if (!e->desc || !e->xfer || (me->lm_head && e->tr->rank != 0 && !e->lhost)) {
            rc = TS_FAIL(TS_NOMEM, "transfer buffers");
            goto fail;
        }
    }
    e->pos_tmp = ts_malloc(sizeof(int32_t) * (size_t)B);
    e->ids_tmp = ts_malloc(sizeof(int32_t) * (size_t)B);
    if (!e->pos_tmp || !e->ids_tmp) {
        rc = TS_FAIL(TS_NOMEM, "position buffer");
        goto fail;
    }
    if (p->hook) {
        e->hook_cols = d > c->n_vocab ? d : c->n_vocab;
        e->hook_buf = ts_malloc(sizeof(float) * (size_t)B * (size_t)d);
        if (!e->hook_buf) {
            rc = TS_FAIL(TS_NOMEM, "hook buffer");
            goto fail;
        }
    }
    *out = e;
    return TS_OK;
fail:
    ts_engine_destroy(e);
    return rc;
}

static ts_status send_cmd(ts_engine *e, int32_t cmd, int32_t a, int32_t b2, int32_t c2);

void ts_engine_destroy(ts_engine *e) {
    if (!e) return;
    /* rank 0 releases the other ranks from ts_engine_serve */
    if (e->tr && e->tr->rank == 0 && e->tr->world > 1 && e->desc && !e->broken)
        (void)send_cmd(e, CMD_STOP, 0, 0, 0);
    if (e->b) {
        float *bufs[] = {e->x, e->h, e->q, e->k, e->v, e->att, e->o, e->gate, e->up, e->xs,
                         e->logits, e->output_norm};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) e->b->ops->free(e->b, bufs[i]);
        if (e->layers)
            for (uint32_t i = 0; i < e->cfg.n_layer; i++) {
                layer_w *L = &e->layers[i];
                float *v[] = {L->attn_norm, L->q_norm, L->k_norm, L->post_attn_norm,
                              L->ffn_norm, L->post_ffn_norm};
                for (size_t j = 0; j < 6; j++)
                    if (v[j]) e->b->ops->free(e->b, v[j]);
            }
        ts_backend_destroy(e->b);
    }
    ts_free(e->layers);
    ts_kv_destroy(e->kv);
    ts_gguf_close(e->g);
    ts_free(e->pos_tmp);
    ts_free(e->ids_tmp);
    ts_free(e->hook_buf);
    for (int32_t i = 0; i < e->n_owned; i++) ts_free(e->owned[i]);
    ts_free(e->owned);
    ts_free(e->plan);
    ts_free(e->desc);
    ts_free(e->xfer);
    ts_free(e->lhost);
    ts_free(e);
}

const ts_plan *ts_engine_plan(const ts_engine *e) { return e->plan; }
const ts_plan_rank *ts_engine_plan_rank(const ts_engine *e) { return e->me; }

/* ---- distributed control: rank 0 broadcasts each command ---- */

static ts_status send_cmd(ts_engine *e, int32_t cmd, int32_t a, int32_t b2, int32_t c2) {
    int32_t *h = e->desc;
    h[0] = cmd;
    h[1] = a;
    h[2] = b2;
    h[3] = c2;
    ts_status rc = e->tr->ops->bcast(e->tr, h, sizeof(int32_t) * DESC_HDR, "command header");
    if (rc != TS_OK) e->broken = true;
    return rc;
}

ts_status ts_engine_ping(ts_engine *e) {
    if (!e->tr || e->tr->world == 1 || e->tr->rank != 0) return TS_OK;
    if (e->broken) return TS_FAIL(TS_UNAVAILABLE, "the distributed engine is broken");
    return send_cmd(e, CMD_PING, 0, 0, 0);
}

double ts_engine_keepalive_s(const ts_engine *e) {
    if (!e->tr || e->tr->world == 1 || e->tr->rank != 0) return 0;
    return e->tr->timeout_s / 4;
}

bool ts_engine_broken(const ts_engine *e) { return e->broken; }

const ts_config *ts_engine_config(const ts_engine *e) { return &e->cfg; }
const ts_gguf *ts_engine_gguf(const ts_engine *e) { return e->g; }

void ts_engine_get_info(const ts_engine *e, ts_engine_info *o) {
    memset(o, 0, sizeof *o);
    o->n_ctx = e->p.n_ctx;
    o->n_seq_max = e->p.n_seq_max;
    o->n_batch = e->p.n_batch;
    o->n_chunk = e->p.n_chunk;
    o->page_size = e->p.page_size;
    o->kv_global_pages = ts_kv_global_pages(e->kv);
    o->kv_local_pages = ts_kv_local_pages(e->kv);
    o->kv_bytes = e->kv_bytes;
    o->activation_bytes = e->act_bytes;
    o->weight_bytes = e->weight_bytes;
    o->backend = e->b->ops->name;
}

ts_status ts_engine_seq_reserve(ts_engine *e, int32_t seq, int32_t n_pos) {
    if (!e->tr || e->tr->world == 1) return ts_kv_reserve(e->kv, seq, n_pos);
    if (e->tr->rank != 0) return TS_FAIL(TS_INVAL, "rank %d: only rank 0 reserves", e->tr->rank);
    if (e->broken) return TS_FAIL(TS_UNAVAILABLE, "the distributed engine is broken");
    /* every rank keeps the same page bookkeeping: rank 0 decides, the others follow */
    TS_TRY(ts_kv_reserve(e->kv, seq, n_pos));
    return send_cmd(e, CMD_RESERVE, seq, n_pos, 0);
}
void ts_engine_seq_release(ts_engine *e, int32_t seq) {
    ts_kv_release(e->kv, seq);
    if (e->tr && e->tr->world > 1 && e->tr->rank == 0 && !e->broken)
        (void)send_cmd(e, CMD_RELEASE, seq, 0, 0);
}
int64_t ts_engine_free_pages(const ts_engine *e) { return ts_kv_free_global_pages(e->kv); }
int64_t ts_engine_available_pages(const ts_engine *e) {
    return ts_kv_available_global_pages(e->kv);
}

/* Runs the page copies the KV bookkeeping queued. */
static ts_status run_copies(ts_engine *e) {
    const ts_kv_copy *cp;
    const int32_t n = ts_kv_take_copies(e->kv, &cp);
    return n > 0 ? e->b->ops->kv_copy(e->b, cp, n) : TS_OK;
}

ts_status ts_engine_seq_reserve_prefix(ts_engine *e, int32_t seq, const int32_t *prompt,
                                       int32_t n_prompt, int32_t n_pos, int32_t *n_cached) {
    *n_cached = 0;
    if (!ts_kv_prefix_enabled(e->kv)) return ts_engine_seq_reserve(e, seq, n_pos);
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= e->cfg.n_vocab)
            return TS_FAIL(TS_RANGE, "prompt token %d: id %d outside the vocabulary [0, %u)", i,
                           prompt[i], e->cfg.n_vocab);
    TS_TRY(ts_kv_reserve_prefix(e->kv, seq, prompt, n_prompt, n_pos, n_cached));
    ts_status rc = run_copies(e);
    if (rc != TS_OK) {
        ts_kv_release(e->kv, seq);
        *n_cached = 0;
    }
    return rc;
}

void ts_engine_prefix_flush(ts_engine *e) { ts_kv_prefix_flush(e->kv); }
void ts_engine_prefix_stats(const ts_engine *e, ts_kv_prefix_stats *st) {
    ts_kv_prefix_get_stats(e->kv, st);
}

/* ---- forward ---- */

static void hook(ts_engine *e, const char *name, int32_t layer, const float *dev, int64_t rows,
                 int64_t cols) {
    if (!e->p.hook) return;
    size_t n = sizeof(float) * (size_t)rows * (size_t)cols;
    if (e->b->ops->to_host(e->b, e->hook_buf, dev, n) == TS_OK)
        e->p.hook(e->p.hook_ctx, name, layer, e->hook_buf, rows, cols);
}

static ts_status check_batch(ts_engine *e, const ts_batch *bt) {
    if (!bt || bt->n_tokens <= 0 || bt->n_tokens > e->p.n_batch)
        return TS_FAIL(TS_INVAL, "batch of %d tokens (allowed 1..%d)", bt ? bt->n_tokens : 0,
                       e->p.n_batch);
    /* Per sequence: consecutive increasing positions, reserved, at most n_chunk. */
    for (int32_t i = 0; i < bt->n_tokens; i++) {
        int32_t s = bt->seq[i], p = bt->pos[i];
        if (s < 0 || s >= e->p.n_seq_max)
            return TS_FAIL(TS_INVAL, "token %d: sequence slot %d out of range", i, s);
        if (p < 0 || p >= ts_kv_reserved(e->kv, s))
            return TS_FAIL(TS_RANGE, "token %d: position %d of sequence %d is not reserved "
                           "(%d reserved)", i, p, s, ts_kv_reserved(e->kv, s));
        if (p < ts_kv_shared_positions(e->kv, s))
            return TS_FAIL(TS_INVAL, "token %d: position %d of sequence %d lies in its cached "
                           "prefix (%d positions, read-only)", i, p, s,
                           ts_kv_shared_positions(e->kv, s));
        if ((!bt->embd || !bt->embd[i]) &&
            (bt->token[i] < 0 || (uint32_t)bt->token[i] >= e->cfg.n_vocab))
            return TS_FAIL(TS_RANGE, "token %d: id %d outside the vocabulary [0, %u)", i,
                           bt->token[i], e->cfg.n_vocab);
        if (bt->attn_hi && bt->attn_hi[i] != p) {
            /* the keys it sees beyond itself must be stored in this step: same sequence,
             * later tokens of this batch */
            bool found = false;
            for (int32_t j = i + 1; j < bt->n_tokens && !found; j++)
                found = bt->seq[j] == s && bt->pos[j] == bt->attn_hi[i];
            if (bt->attn_hi[i] < p || !found)
                return TS_FAIL(TS_INVAL, "token %d (position %d): attends up to position %d, "
                               "which is not a later token of sequence %d in this step (an "
                               "image must be stepped whole)", i, p, bt->attn_hi[i], s);
        }
        int32_t count = 0, last = -1;
        for (int32_t j = 0; j < bt->n_tokens; j++)
            if (bt->seq[j] == s) {
                if (last >= 0 && bt->pos[j] != last + 1)
                    return TS_FAIL(TS_INVAL, "sequence %d: positions in a batch must be "
                                   "consecutive and increasing", s);
                last = bt->pos[j];
                count++;
            }
        if (count > e->p.n_chunk)
            return TS_FAIL(TS_INVAL, "sequence %d has %d tokens in one step (max %d)", s, count,
                           e->p.n_chunk);
    }
    return TS_OK;
}

/* Marks the engine broken on a transport failure (rank 0 then skips the STOP broadcast). */
static ts_status comm(ts_engine *e, ts_status rc) {
    if (rc != TS_OK) e->broken = true;
    return rc;
}

/* The TP all-reduce of a row-parallel matmul's partial sums y (n floats, backend memory). */
static ts_status tp_allreduce(ts_engine *e, float *y, int64_t n) {
    if (!e->tr || e->tr->tp == 1) return TS_OK;
    const size_t bytes = sizeof(float) * (size_t)n;
    TS_TRY(e->b->ops->to_host(e->b, e->xfer, y, bytes));
    TS_TRY(e->b->ops->sync(e->b));
    TS_TRY(comm(e, e->tr->ops->allreduce_sum(e->tr, e->xfer, (size_t)n)));
    return e->b->ops->to_device(e->b, y, e->xfer, bytes);
}

/* The forward pass of this rank's part. logits: rank 0 only (NULL elsewhere). */
static ts_status forward(ts_engine *e, const ts_batch *bt, float *logits) {
    const ts_config *c = &e->cfg;
    const ts_backend_ops *ops = e->b->ops;
    ts_backend *b = e->b;
    const ts_plan_rank *me = e->me;
    ts_transport *tr = e->tr;
    const int32_t n_stage = tr ? tr->pp : 1;
    const int64_t T = bt->n_tokens, d = c->n_embd, H = me->h1 - me->h0,
                  KV = me->kv1 - me->kv0, hd = c->head_dim, ff = me->f1 - me->f0;

    if (me->stage == 0) {
        const int32_t *ids = bt->token;
        if (bt->embd) { /* image soft tokens: their rows are overwritten below */
            for (int64_t i = 0; i < T; i++) e->ids_tmp[i] = bt->embd[i] ? 0 : bt->token[i];
            ids = e->ids_tmp;
        }
        TS_TRY(ops->get_rows(b, e->x, &e->tok_embd, ids, T, c->embd_scale));
        if (bt->embd)
            for (int64_t i = 0; i < T; i++)
                if (bt->embd[i])
                    TS_TRY(ops->to_device(b, e->x + i * d, bt->embd[i], sizeof(float) * (size_t)d));
        hook(e, "embed", -1, e->x, T, d);
    } else {
        TS_TRY(comm(e, tr->ops->recv(tr, me->stage - 1, e->xfer, sizeof(float) * (size_t)(T * d),
                                     TS_TAG_ACTIVATIONS, "activations")));
        TS_TRY(ops->to_device(b, e->x, e->xfer, sizeof(float) * (size_t)(T * d)));
    }

    for (uint32_t il = (uint32_t)me->l0; il < (uint32_t)me->l1; il++) {
        const layer_w *L = &e->layers[il];
        const bool global = c->is_global[il];
        const int32_t kl = (int32_t)il - me->l0; /* backend KV layer index */
        /* attention block */
        TS_TRY(ops->rmsnorm(b, e->h, e->x, L->attn_norm, T, d, c->rms_eps));
        TS_TRY(ops->matmul(b, e->q, &L->q, e->h, T));
        TS_TRY(ops->matmul(b, e->k, &L->k, e->h, T));
        TS_TRY(ops->matmul(b, e->v, &L->v, e->h, T));
        TS_TRY(ops->rmsnorm(b, e->q, e->q, L->q_norm, T * H, hd, c->rms_eps));
        TS_TRY(ops->rmsnorm(b, e->k, e->k, L->k_norm, T * KV, hd, c->rms_eps));
        const float base = global ? c->rope_base_global : c->rope_base_local;
        const float scale = global ? c->rope_scale_global : 1.0f;
        TS_TRY(ops->rope(b, e->q, bt->pos, T, H, hd, base, scale));
        TS_TRY(ops->rope(b, e->k, bt->pos, T, KV, hd, base, scale));
        TS_TRY(ops->kv_store(b, kl, global, e->k, e->v, T, bt->pos, bt->seq, e->kv));
        ts_attn_args a = {
            .layer = kl, .is_global = global, .n_tok = T, .q = e->q, .out = e->att,
            .pos = bt->pos, .seq = bt->seq, .hi = bt->attn_hi, .n_head = (int32_t)H,
            .n_head_kv = (int32_t)KV,
            .head_dim = (int32_t)hd, .window = (int32_t)c->sliding_window,
            .scale = c->attn_scale, .kv = e->kv,
        };
        TS_TRY(ops->attention(b, &a));
        TS_TRY(ops->matmul(b, e->o, &L->o, e->att, T));
        TS_TRY(tp_allreduce(e, e->o, T * d));
        TS_TRY(ops->rmsnorm(b, e->o, e->o, L->post_attn_norm, T, d, c->rms_eps));
        TS_TRY(ops->add(b, e->x, e->o, T * d));
        /* feed-forward block */
        TS_TRY(ops->rmsnorm(b, e->h, e->x, L->ffn_norm, T, d, c->rms_eps));
        TS_TRY(ops->matmul(b, e->gate, &L->gate, e->h, T));
        TS_TRY(ops->matmul(b, e->up, &L->up, e->h, T));
        TS_TRY(ops->geglu(b, e->gate, e->gate, e->up, T * ff));
        TS_TRY(ops->matmul(b, e->o, &L->down, e->gate, T));
        TS_TRY(tp_allreduce(e, e->o, T * d));
        TS_TRY(ops->rmsnorm(b, e->o, e->o, L->post_ffn_norm, T, d, c->rms_eps));
        TS_TRY(ops->add(b, e->x, e->o, T * d));
        hook(e, "layer_out", (int32_t)il, e->x, T, d);
    }

    if (me->stage < n_stage - 1) {
        TS_TRY(ops->to_host(b, e->xfer, e->x, sizeof(float) * (size_t)(T * d)));
        TS_TRY(ops->sync(b));
        TS_TRY(comm(e, tr->ops->send(tr, me->stage + 1, e->xfer, sizeof(float) * (size_t)(T * d),
                                     TS_TAG_ACTIVATIONS, "activations")));
    }
    const bool is_rank0 = !tr || tr->rank == 0;
    if (!me->lm_head && !is_rank0) return ops->sync(b);

    /* final norm + LM head for the flagged rows, n_logit_rows at a time; computed by the
     * last stage's TP rank 0, which sends each chunk to rank 0 unless it is rank 0 */
    int64_t done = 0;
    int64_t i = 0;
    while (i < T) {
        int64_t n = 0;
        for (; i < T && n < e->n_logit_rows; i++) {
            bool want = bt->want_logits ? bt->want_logits[i] != 0 : i == T - 1;
            if (!want) continue;
            if (me->lm_head)
                TS_TRY(ops->copy(b, e->xs + n * d, e->x + i * d, sizeof(float) * (size_t)d));
            n++;
        }
        if (n == 0) break;
        const size_t lbytes = sizeof(float) * (size_t)n * c->n_vocab;
        if (me->lm_head) {
            TS_TRY(ops->rmsnorm(b, e->xs, e->xs, e->output_norm, n, d, c->rms_eps));
            hook(e, "final_norm", -1, e->xs, n, d);
            TS_TRY(ops->matmul(b, e->logits, &e->output, e->xs, n));
            if (is_rank0) {
                TS_TRY(ops->to_host(b, logits + done * c->n_vocab, e->logits, lbytes));
            } else {
                TS_TRY(ops->to_host(b, e->lhost, e->logits, lbytes));
                TS_TRY(ops->sync(b));
                TS_TRY(comm(e, tr->ops->send(tr, 0, e->lhost, lbytes, TS_TAG_LOGITS, "logits")));
            }
        } else {
            TS_TRY(comm(e, tr->ops->recv(tr, n_stage - 1, logits + done * c->n_vocab, lbytes,
                                         TS_TAG_LOGITS, "logits")));
        }
        done += n;
    }
    return ops->sync(b);
}

ts_status ts_engine_step(ts_engine *e, const ts_batch *bt, float *logits) {
    TS_TRY(check_batch(e, bt));
    if (e->tr && e->tr->world > 1 && (bt->embd || bt->attn_hi))
        return TS_FAIL(TS_UNSUPPORTED, "image prompts on a distributed engine are not "
                       "implemented yet (single rank only)");
    if (e->tr && e->tr->world > 1) {
        if (e->tr->rank != 0)
            return TS_FAIL(TS_INVAL, "rank %d: only rank 0 steps (the others serve)", e->tr->rank);
        if (e->broken) return TS_FAIL(TS_UNAVAILABLE, "the distributed engine is broken");
        /* the step descriptor: header, then tokens, positions, sequences, flags */
        const int32_t n = bt->n_tokens;
        int32_t *pl = e->desc + DESC_HDR;
        memcpy(pl, bt->token, sizeof(int32_t) * (size_t)n);
        memcpy(pl + n, bt->pos, sizeof(int32_t) * (size_t)n);
        memcpy(pl + 2 * n, bt->seq, sizeof(int32_t) * (size_t)n);
        for (int32_t i = 0; i < n; i++)
            pl[3 * n + i] = bt->want_logits ? bt->want_logits[i] != 0 : i == n - 1;
        TS_TRY(send_cmd(e, CMD_STEP, n, 0, 0));
        TS_TRY(comm(e, e->tr->ops->bcast(e->tr, pl, sizeof(int32_t) * 4 * (size_t)n,
                                         "step descriptor")));
    }
    TS_TRY(forward(e, bt, logits));
    if (!ts_kv_prefix_enabled(e->kv)) return TS_OK;
    /* cache the prompt blocks this step completed (snapshots of their local pages); a
     * sequence fed embeddings (images) is keyed by placeholder ids: it caches nothing */
    if (bt->embd)
        for (int32_t i = 0; i < bt->n_tokens; i++)
            if (bt->embd[i]) ts_kv_prefix_stop(e->kv, bt->seq[i]);
    for (int32_t i = 0; i < bt->n_tokens; i++) ts_kv_prefix_commit(e->kv, bt->seq[i], bt->pos[i] + 1);
    TS_TRY(run_copies(e));
    return e->b->ops->sync(e->b);
}

ts_status ts_engine_serve(ts_engine *e) {
    if (!e->tr || e->tr->world == 1) return TS_OK;
    if (e->tr->rank == 0) return TS_FAIL(TS_INVAL, "rank 0 drives; it does not serve");
    uint8_t *want = ts_malloc((size_t)e->p.n_batch);
    if (!want) return TS_FAIL(TS_NOMEM, "serve flags");
    ts_status rc = TS_OK;
    for (;;) {
        rc = comm(e, e->tr->ops->bcast(e->tr, e->desc, sizeof(int32_t) * DESC_HDR,
                                       "command header"));
        if (rc != TS_OK) break;
        const int32_t cmd = e->desc[0], a = e->desc[1], b2 = e->desc[2];
        if (cmd == CMD_STOP) break;
        if (cmd == CMD_PING) continue;
        if (cmd == CMD_RESERVE) {
            rc = ts_kv_reserve(e->kv, a, b2);
            if (rc != TS_OK) {
                rc = TS_FAIL(TS_INTERNAL, "rank %d: reserve of %d positions for sequence %d "
                             "failed where rank 0's succeeded: %s", e->tr->rank, b2, a,
                             ts_last_error());
                break;
            }
        } else if (cmd == CMD_RELEASE) {
            if (a >= 0 && a < e->p.n_seq_max) ts_kv_release(e->kv, a);
        } else if (cmd == CMD_STEP) {
            if (a <= 0 || a > e->p.n_batch) {
                rc = TS_FAIL(TS_INTERNAL, "rank %d: step of %d tokens from rank 0", e->tr->rank, a);
                break;
            }
            int32_t *pl = e->desc + DESC_HDR;
            rc = comm(e, e->tr->ops->bcast(e->tr, pl, sizeof(int32_t) * 4 * (size_t)a,
                                           "step descriptor"));
            if (rc != TS_OK) break;
            for (int32_t i = 0; i < a; i++) want[i] = (uint8_t)(pl[3 * a + i] != 0);
            ts_batch bt = {.n_tokens = a, .token = pl, .pos = pl + a, .seq = pl + 2 * a,
                           .want_logits = want};
            rc = check_batch(e, &bt);
            if (rc == TS_OK) rc = forward(e, &bt, NULL);
            if (rc != TS_OK) break;
        } else {
            rc = TS_FAIL(TS_INTERNAL, "rank %d: unknown command %d from rank 0", e->tr->rank, cmd);
            break;
        }
    }
    ts_free(want);
    return rc;
}
