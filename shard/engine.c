/* engine.c: Gemma 3 model loading and the forward pass, written once against the backend
 * interface (backend.h). ref: ../shared/docs/gemma3-spec.md section 2.
 *
 * DESIGN
 * create: open the GGUF (mapped), read the config, load every weight through the backend
 * (the CPU backend reads them in place), size the KV pools and the step buffers for
 * n_batch tokens. step: embed -> per layer (attention block, FFN block, each with pre and
 * post norms and a residual add) -> final norm and tied LM head for the flagged rows only,
 * in chunks of up to `n_logit_rows` rows.
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
    float *hook_buf;
    int64_t hook_cols;
};

/* ---- loading ---- */

static ts_status load_matrix(ts_engine *e, const char *name, ts_wmat *out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(e->g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    TS_TRY(e->b->ops->load_matrix(e->b, t, 0, t->n_dims >= 2 ? t->ne[1] : 1, out));
    e->weight_bytes += t->nbytes;
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

    /* weights */
    TS_TRY_GOTO(load_matrix(e, "token_embd.weight", &e->tok_embd), rc, fail);
    if (ts_gguf_find_tensor(e->g, "output.weight"))
        TS_TRY_GOTO(load_matrix(e, "output.weight", &e->output), rc, fail);
    else
        e->output = e->tok_embd; /* tied */
    TS_TRY_GOTO(load_norm(e, "output_norm.weight", c->n_embd, &e->output_norm), rc, fail);
    e->layers = ts_calloc(c->n_layer, sizeof *e->layers);
    if (!e->layers) {
        rc = TS_FAIL(TS_NOMEM, "layer table");
        goto fail;
    }
    for (uint32_t i = 0; i < c->n_layer; i++) {
        layer_w *L = &e->layers[i];
        char n[96];
        if (p->progress) p->progress(p->progress_ctx, (float)i / (float)c->n_layer);
#define M(field, suffix)                                                                   \
    snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix);                                  \
    TS_TRY_GOTO(load_matrix(e, n, &L->field), rc, fail)
#define N(field, suffix, len)                                                              \
    snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix);                                  \
    TS_TRY_GOTO(load_norm(e, n, len, &L->field), rc, fail)
        M(q, "attn_q"); M(k, "attn_k"); M(v, "attn_v"); M(o, "attn_output");
        M(gate, "ffn_gate"); M(up, "ffn_up"); M(down, "ffn_down");
        N(attn_norm, "attn_norm", c->n_embd);
        N(q_norm, "attn_q_norm", c->head_dim);
        N(k_norm, "attn_k_norm", c->head_dim);
        N(post_attn_norm, "post_attention_norm", c->n_embd);
        N(ffn_norm, "ffn_norm", c->n_embd);
        N(post_ffn_norm, "post_ffw_norm", c->n_embd);
#undef M
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
    };
    if (c->n_global == 0) kp.global_pages = 0;
    TS_TRY_GOTO(ts_kv_create(&kp, &e->kv), rc, fail);
    ts_kv_layout kl = {
        .n_layer = (int32_t)c->n_layer, .is_global = c->is_global,
        .global_pages = ts_kv_global_pages(e->kv), .local_pages = ts_kv_local_pages(e->kv),
        .page_size = p->page_size, .kv_dim = (int32_t)(c->n_head_kv * c->head_dim),
        .n_ctx = p->n_ctx,
    };
    TS_TRY_GOTO(e->b->ops->kv_init(e->b, &kl), rc, fail);
    e->kv_bytes = 2ull * (uint64_t)kl.kv_dim * sizeof(float) * (uint64_t)kl.page_size *
                  ((uint64_t)kl.global_pages * c->n_global +
                   (uint64_t)kl.local_pages * (c->n_layer - c->n_global));

    /* step buffers */
    const int64_t B = p->n_batch, d = c->n_embd, qd = (int64_t)c->n_head * c->head_dim,
                  kd = (int64_t)c->n_head_kv * c->head_dim;
    e->n_logit_rows = p->n_seq_max > 8 ? p->n_seq_max : 8;
    if (e->n_logit_rows > B) e->n_logit_rows = (int32_t)B;
    TS_TRY_GOTO(balloc(e, &e->x, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->h, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->q, B, qd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->k, B, kd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->v, B, kd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->att, B, qd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->o, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->gate, B, c->n_ff), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->up, B, c->n_ff), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->xs, e->n_logit_rows, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->logits, e->n_logit_rows, c->n_vocab), rc, fail);
    e->pos_tmp = ts_malloc(sizeof(int32_t) * (size_t)B);
    if (!e->pos_tmp) {
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

void ts_engine_destroy(ts_engine *e) {
    if (!e) return;
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
    ts_free(e->hook_buf);
    ts_free(e);
}

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
    return ts_kv_reserve(e->kv, seq, n_pos);
}
void ts_engine_seq_release(ts_engine *e, int32_t seq) { ts_kv_release(e->kv, seq); }
int64_t ts_engine_free_pages(const ts_engine *e) { return ts_kv_free_global_pages(e->kv); }

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
        if (bt->token[i] < 0 || (uint32_t)bt->token[i] >= e->cfg.n_vocab)
            return TS_FAIL(TS_RANGE, "token %d: id %d outside the vocabulary [0, %u)", i,
                           bt->token[i], e->cfg.n_vocab);
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

ts_status ts_engine_step(ts_engine *e, const ts_batch *bt, float *logits) {
    TS_TRY(check_batch(e, bt));
    const ts_config *c = &e->cfg;
    const ts_backend_ops *ops = e->b->ops;
    ts_backend *b = e->b;
    const int64_t T = bt->n_tokens, d = c->n_embd, H = c->n_head, KV = c->n_head_kv,
                  hd = c->head_dim, qd = H * hd, kd = KV * hd, ff = c->n_ff;

    TS_TRY(ops->get_rows(b, e->x, &e->tok_embd, bt->token, T, c->embd_scale));
    hook(e, "embed", -1, e->x, T, d);

    for (uint32_t il = 0; il < c->n_layer; il++) {
        const layer_w *L = &e->layers[il];
        const bool global = c->is_global[il];
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
        TS_TRY(ops->kv_store(b, (int32_t)il, global, e->k, e->v, T, bt->pos, bt->seq, e->kv));
        ts_attn_args a = {
            .layer = (int32_t)il, .is_global = global, .n_tok = T, .q = e->q, .out = e->att,
            .pos = bt->pos, .seq = bt->seq, .n_head = (int32_t)H, .n_head_kv = (int32_t)KV,
            .head_dim = (int32_t)hd, .window = (int32_t)c->sliding_window,
            .scale = c->attn_scale, .kv = e->kv,
        };
        TS_TRY(ops->attention(b, &a));
        TS_TRY(ops->matmul(b, e->o, &L->o, e->att, T));
        TS_TRY(ops->rmsnorm(b, e->o, e->o, L->post_attn_norm, T, d, c->rms_eps));
        TS_TRY(ops->add(b, e->x, e->o, T * d));
        /* feed-forward block */
        TS_TRY(ops->rmsnorm(b, e->h, e->x, L->ffn_norm, T, d, c->rms_eps));
        TS_TRY(ops->matmul(b, e->gate, &L->gate, e->h, T));
        TS_TRY(ops->matmul(b, e->up, &L->up, e->h, T));
        TS_TRY(ops->geglu(b, e->gate, e->gate, e->up, T * ff));
        TS_TRY(ops->matmul(b, e->o, &L->down, e->gate, T));
        TS_TRY(ops->rmsnorm(b, e->o, e->o, L->post_ffn_norm, T, d, c->rms_eps));
        TS_TRY(ops->add(b, e->x, e->o, T * d));
        hook(e, "layer_out", (int32_t)il, e->x, T, d);
        (void)qd;
        (void)kd;
    }

    /* final norm + LM head for the flagged rows, n_logit_rows at a time */
    int64_t done = 0;
    int64_t i = 0;
    while (i < T) {
        int64_t n = 0;
        for (; i < T && n < e->n_logit_rows; i++) {
            bool want = bt->want_logits ? bt->want_logits[i] != 0 : i == T - 1;
            if (!want) continue;
            TS_TRY(ops->copy(b, e->xs + n * d, e->x + i * d, sizeof(float) * (size_t)d));
            n++;
        }
        if (n == 0) break;
        TS_TRY(ops->rmsnorm(b, e->xs, e->xs, e->output_norm, n, d, c->rms_eps));
        hook(e, "final_norm", -1, e->xs, n, d);
        TS_TRY(ops->matmul(b, e->logits, &e->output, e->xs, n));
        TS_TRY(ops->to_host(b, logits + done * c->n_vocab, e->logits,
                            sizeof(float) * (size_t)n * c->n_vocab));
        done += n;
    }
    return ops->sync(b);
}
