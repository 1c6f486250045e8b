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
    uint8_t *want;             /* the step's logit flags (n_batch) */
    float *xfer;               /* host staging: (n_batch, d) */
    float *lhost;              /* host staging of this rank's logits (n_logit_rows, v1 - v0) */
    bool split;                /* vocab-split LM head over the last stage's TP group */
    float *lfull_h;            /* split, logits: zero-padded full rows (n_logit_rows, n_vocab) */
    float *lfull;              /* the same in backend memory (device transports) */
    float *amx_h, *amx_d;      /* split, ids: (row, tp rank) -> (max, id), host / backend */
    int32_t *ids_h;            /* (n_logit_rows) greedy ids of a chunk */
    int32_t *ids_d;            /* backend memory: ids to / from rank 0 (device transports) */
    int32_t *ids_all;          /* (n_batch) the step's greedy ids (last stage, TP rank 0) */
    bool dev;                  /* device transport: activations move in backend memory */
    bool broken;
    uint64_t charged;          /* bytes counted against p.mem_limit */
};

enum { CMD_STOP = 1, CMD_STEP = 2, CMD_RESERVE = 3, CMD_RELEASE = 4, CMD_PING = 5 };
enum { STEP_LOGITS = 0, STEP_IDS = 1 };
enum { DESC_HDR = 4 };

/* ---- loading ---- */

static const char *human(uint64_t b, char *buf, size_t n) {
    if (b >= (1ull << 30)) snprintf(buf, n, "%.2f GiB", (double)b / 1073741824.0);
    else if (b >= (1ull << 20)) snprintf(buf, n, "%.1f MiB", (double)b / 1048576.0);
    else snprintf(buf, n, "%.1f KiB", (double)b / 1024.0);
    return buf;
}

/* Counts `bytes` of device memory against --gpu-mem-limit (params.mem_limit). */
static ts_status charge(ts_engine *e, uint64_t bytes, const char *what) {
    const uint64_t lim = e->p.mem_limit;
    if (lim && e->charged + bytes > lim) {
        char b0[32], b1[32], b2[32], b3[32], b4[32], b5[32];
        return TS_FAIL(TS_NOMEM, "%s (%s) does not fit the memory limit of %s "
                       "(--gpu-mem-limit): %s are already allocated (weights %s, KV %s, step "
                       "buffers %s); use more ranks, a smaller --ctx or --batch, or a higher "
                       "limit", what, human(bytes, b0, sizeof b0), human(lim, b1, sizeof b1),
                       human(e->charged, b2, sizeof b2), human(e->weight_bytes, b3, sizeof b3),
                       human(e->kv_bytes, b4, sizeof b4), human(e->act_bytes, b5, sizeof b5));
    }
    e->charged += bytes;
    return TS_OK;
}

static ts_status load_matrix(ts_engine *e, const char *name, ts_wmat *out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(e->g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    TS_TRY(charge(e, t->nbytes, name));
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
    TS_TRY(charge(e, t->nbytes / (size_t)rows * (size_t)(r1 - r0), name));
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
    TS_TRY(charge(e, (uint64_t)part * (uint64_t)rows, name));
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
    TS_TRY(charge(e, sizeof(float) * (uint64_t)n, name));
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
    TS_TRY(charge(e, n, "step buffer"));
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
                              .f0 = 0, .f1 = (int32_t)c->n_ff, .v0 = 0,
                              .v1 = (int32_t)c->n_vocab, .embed = true, .lm_head = true};
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
            uint64_t *budget = NULL;
            if (p->mem_limit || p->rank_mem) {
                /* every rank's budget (rank_mem, or the limit on every rank), less an upper
                 * bound of the step buffers (the plan counts weights and KV) */
                const uint64_t work = ts_plan_step_bytes(c, pl.tp, p->n_batch, p->n_seq_max,
                                                         align);
                budget = ts_malloc(sizeof(uint64_t) * (size_t)e->tr->world);
                if (!budget) {
                    rc = TS_FAIL(TS_NOMEM, "plan budgets");
                    goto fail;
                }
                for (int32_t r = 0; r < e->tr->world; r++) {
                    const uint64_t b = p->rank_mem ? p->rank_mem[r] : p->mem_limit;
                    if (work >= b) {
                        char b0[32], b1[32];
                        rc = TS_FAIL(TS_INVAL, "the step buffers for a batch of %d tokens alone "
                                     "need about %s, more than the memory limit of %s%s; use a "
                                     "smaller --batch or a higher limit", p->n_batch,
                                     human(work, b0, sizeof b0), human(b, b1, sizeof b1),
                                     p->rank_mem ? " of a rank (its budget)" : " (--gpu-mem-limit)");
                        if (p->rank_mem) {
                            char msg[1024];
                            snprintf(msg, sizeof msg, "%s", ts_last_error());
                            rc = TS_FAIL(TS_INVAL, "rank %d: %s", r, msg);
                        }
                        ts_free(budget);
                        goto fail;
                    }
                    budget[r] = b - work;
                }
                pl.mem_bytes = budget;
            }
            rc = ts_plan_make(c, &pl, e->plan);
            if (rc != TS_OK && (p->mem_limit || p->rank_mem)) {
                char msg[1024], b0[32];
                snprintf(msg, sizeof msg, "%s", ts_last_error());
                bool same = true;
                for (int32_t r = 1; p->rank_mem && r < e->tr->world; r++)
                    same = same && p->rank_mem[r] == p->rank_mem[0];
                if (!p->rank_mem || same) {
                    rc = TS_FAIL(rc, "%s (each rank's budget: %s%s less the step buffers)", msg,
                                 p->rank_mem ? "" : "--gpu-mem-limit ",
                                 human(p->rank_mem ? p->rank_mem[0] : p->mem_limit, b0,
                                       sizeof b0));
                } else {
                    char list[256] = "";
                    size_t n = 0;
                    for (int32_t r = 0; r < e->tr->world && n + 40 < sizeof list; r++)
                        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", r ? ", " : "",
                                              human(p->rank_mem[r], b0, sizeof b0));
                    rc = TS_FAIL(rc, "%s (the ranks' budgets: %s%s, each less the step "
                                 "buffers)", msg, list, n + 40 >= sizeof list ? ", ..." : "");
                }
            }
            ts_free(budget);
            if (rc != TS_OK) goto fail;
        }
        if (e->plan->world != e->tr->world || e->plan->tp != e->tr->tp ||
            e->tr->rank >= e->plan->world) {
            rc = TS_FAIL(TS_INVAL, "plan (tp %d x pp %d) does not match the transport (%d ranks, "
                         "tp %d)", e->plan->tp, e->plan->pp, e->tr->world, e->tr->tp);
            goto fail;
        }
        e->me = &e->plan->rank[e->tr->rank];
        if (e->tr->device_buffers) {
            /* device transport (NCCL): activations stay in backend memory, ordered against
             * the backend's stream. The CPU backend's memory is host memory: only the MPI
             * transport's device emulation (tests) may move it this way. */
            void *stream = NULL;
            const bool cuda = !strcmp(e->b->ops->name, "cuda");
            if (!cuda && strcmp(e->tr->ops->name, "mpi") != 0) {
                rc = TS_FAIL(TS_INVAL, "the %s transport moves device buffers: it needs the "
                             "cuda backend (--backend cuda), not '%s'", e->tr->ops->name,
                             e->b->ops->name);
                goto fail;
            }
            if (cuda && e->tr->device >= 0 && p->device != e->tr->device) {
                rc = TS_FAIL(TS_INVAL, "rank %d: the %s transport uses GPU %d but the backend "
                             "was created on GPU %d", e->tr->rank, e->tr->ops->name,
                             e->tr->device, p->device);
                goto fail;
            }
#ifdef TS_HAVE_CUDA
            if (cuda) TS_TRY_GOTO(ts_backend_cuda_stream(e->b, &stream), rc, fail);
#endif
            TS_TRY_GOTO(e->tr->ops->bind_stream(e->tr, stream), rc, fail);
            e->dev = true;
        }
    }
    const ts_plan_rank *me = e->me;
    const int64_t hd_ = c->head_dim;

    /* weights; with tp > 1 the last stage's TP ranks split the LM head by vocabulary rows */
    e->split = e->tr && e->tr->tp > 1 && me->lm_head;
    if (me->lm_head && (me->v0 < 0 || me->v1 > (int32_t)c->n_vocab || me->v1 <= me->v0 ||
                        (!e->split && (me->v0 != 0 || me->v1 != (int32_t)c->n_vocab)))) {
        rc = TS_FAIL(TS_INVAL, "plan: LM head vocabulary slice [%d, %d) of %u", me->v0, me->v1,
                     c->n_vocab);
        goto fail;
    }
    if (e->split && c->n_vocab > (1u << 24)) {
        rc = TS_FAIL(TS_UNSUPPORTED, "a vocabulary of %u ids is too large for the split LM head",
                     c->n_vocab);
        goto fail;
    }
    if (me->embed || (me->lm_head && !e->split))
        TS_TRY_GOTO(load_matrix(e, "token_embd.weight", &e->tok_embd), rc, fail);
    if (me->lm_head) {
        const char *oname = ts_gguf_find_tensor(e->g, "output.weight") ? "output.weight"
                                                                        : "token_embd.weight";
        if (e->split)
            TS_TRY_GOTO(load_rows(e, oname, me->v0, me->v1, &e->output), rc, fail);
        else if (oname[0] == 'o')
            TS_TRY_GOTO(load_matrix(e, oname, &e->output), rc, fail);
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
    e->n_logit_rows = p->n_seq_max > 8 ? p->n_seq_max : 8;
    if (e->n_logit_rows > p->n_batch) e->n_logit_rows = p->n_batch;
    ts_kv_layout kl = {
        .n_layer = me->l1 - me->l0, .is_global = c->is_global + me->l0,
        .global_pages = ts_kv_global_pages(e->kv), .local_pages = ts_kv_local_pages(e->kv),
        .page_size = p->page_size, .kv_dim = (int32_t)((me->kv1 - me->kv0) * c->head_dim),
        .n_ctx = p->n_ctx,
        .n_batch = p->n_batch,
        .n_logit_rows = me->lm_head ? e->n_logit_rows : 0,
        .n_vocab = me->lm_head ? (int64_t)c->n_vocab : 0,
        .n_head = (int32_t)(me->h1 - me->h0), .head_dim = (int32_t)c->head_dim,
    };
    uint32_t n_glob = 0;
    for (int32_t il = me->l0; il < me->l1; il++) n_glob += c->is_global[il] ? 1u : 0u;
    const uint64_t kv_need = 2ull * (uint64_t)kl.kv_dim * sizeof(float) * (uint64_t)kl.page_size *
                             ((uint64_t)kl.global_pages * n_glob +
                              (uint64_t)kl.local_pages * ((uint32_t)kl.n_layer - n_glob));
    {
        char what[96];
        snprintf(what, sizeof what, "the KV cache for %lld tokens of context",
                 (long long)p->kv_tokens);
        TS_TRY_GOTO(charge(e, kv_need, what), rc, fail);
    }
    TS_TRY_GOTO(e->b->ops->kv_init(e->b, &kl), rc, fail);
    e->kv_bytes = kv_need;

    /* step buffers */
    const int64_t B = p->n_batch, d = c->n_embd, qd = (int64_t)(me->h1 - me->h0) * c->head_dim,
                  kd = (int64_t)(me->kv1 - me->kv0) * c->head_dim,
                  ffr = (int64_t)(me->f1 - me->f0);
    TS_TRY_GOTO(balloc(e, &e->x, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->h, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->q, B, qd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->k, B, kd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->v, B, kd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->att, B, qd), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->o, B, d), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->gate, B, ffr), rc, fail);
    TS_TRY_GOTO(balloc(e, &e->up, B, ffr), rc, fail);
    const int64_t R = e->n_logit_rows, Vs = me->lm_head ? me->v1 - me->v0 : 0;
    const int64_t tpn = e->tr ? e->tr->tp : 1;
    if (me->lm_head) {
        TS_TRY_GOTO(balloc(e, &e->xs, R, d), rc, fail);
        TS_TRY_GOTO(balloc(e, &e->logits, R, Vs), rc, fail);
        if (e->split && e->dev) {
            TS_TRY_GOTO(balloc(e, &e->lfull, R, c->n_vocab), rc, fail);
            TS_TRY_GOTO(balloc(e, &e->amx_d, R * tpn, 2), rc, fail);
        }
    } else if (e->dev && e->tr->rank == 0) { /* rank 0 receives the logits on its device */
        TS_TRY_GOTO(balloc(e, &e->logits, R, c->n_vocab), rc, fail);
    }
    if (e->dev && (me->lm_head || e->tr->rank == 0))
        TS_TRY_GOTO(balloc(e, (float **)&e->ids_d, B, 1), rc, fail);
    e->ids_h = ts_malloc(sizeof(int32_t) * (size_t)R);
    e->ids_all = ts_malloc(sizeof(int32_t) * (size_t)B);
    e->want = ts_malloc((size_t)B);
    if (me->lm_head) {
        e->lhost = ts_malloc(sizeof(float) * (size_t)R * (size_t)Vs);
        if (e->split) {
            e->lfull_h = ts_malloc(sizeof(float) * (size_t)R * c->n_vocab);
            e->amx_h = ts_malloc(sizeof(float) * 2 * (size_t)(R * tpn));
        }
    }
    if (!e->ids_h || !e->ids_all || !e->want || (me->lm_head && (!e->lhost || (e->split && (!e->lfull_h || !e->amx_h))))) {
        rc = TS_FAIL(TS_NOMEM, "LM head buffers");
        goto fail;
    }
    if (e->tr) {
        e->desc = ts_malloc(sizeof(int32_t) * (DESC_HDR + 4 * (size_t)B));
        if (!e->dev) e->xfer = ts_malloc(sizeof(float) * (size_t)B * (size_t)d);
        if (!e->desc || (!e->dev && !e->xfer)) {
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
    if (e->dev) { /* the transport outlives this engine's stream */
        if (!e->broken) (void)e->tr->ops->fence(e->tr);
        (void)e->tr->ops->bind_stream(e->tr, NULL);
    }
    if (e->b) {
        float *bufs[] = {e->x, e->h, e->q, e->k, e->v, e->att, e->o, e->gate, e->up, e->xs,
                         e->logits, e->output_norm, e->lfull, e->amx_d, (float *)e->ids_d};
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
    ts_free(e->want);
    ts_free(e->xfer);
    ts_free(e->lhost);
    ts_free(e->lfull_h);
    ts_free(e->amx_h);
    ts_free(e->ids_h);
    ts_free(e->ids_all);
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
    if (e->b->ops->mem_stats) {
        ts_backend_mem m;
        e->b->ops->mem_stats(e->b, &m);
        o->device_total_bytes = m.device_total;
        o->device_used_at_create = m.used_at_create;
        o->device_used_bytes = m.used_now;
        o->backend_alloc_bytes = m.alloc_now;
        o->backend_alloc_peak = m.alloc_peak;
    }
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
    if (e->dev && e->tr->ops->fence(e->tr) != TS_OK) return;
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
    if (e->dev) return comm(e, e->tr->ops->allreduce_sum(e->tr, y, (size_t)n));
    const size_t bytes = sizeof(float) * (size_t)n;
    TS_TRY(e->b->ops->to_host(e->b, e->xfer, y, bytes));
    TS_TRY(e->b->ops->sync(e->b));
    TS_TRY(comm(e, e->tr->ops->allreduce_sum(e->tr, e->xfer, (size_t)n)));
    return e->b->ops->to_device(e->b, y, e->xfer, bytes);
}

/* ---- LM head (the last stage) ---- */

/* The first index of the maximum of x[0..n); TS_INVAL on NaN / +inf. */
static ts_status row_argmax(const float *x, int64_t n, int64_t row, float *m_out, int64_t *am) {
    float m = -INFINITY;
    int64_t a = -1;
    for (int64_t j = 0; j < n; j++) {
        const float v = x[j];
        if (v != v || v == INFINITY)
            return TS_FAIL(TS_INVAL, "logit %lld of row %lld is %s", (long long)j, (long long)row,
                           v != v ? "NaN" : "+inf");
        if (v > m) {
            m = v;
            a = j;
        }
    }
    if (a < 0) return TS_FAIL(TS_INVAL, "row %lld: no finite logit", (long long)row);
    *m_out = m;
    *am = a;
    return TS_OK;
}

/* Greedy ids of the chunk's n rows (e->logits: this rank's vocabulary slice) into
 * e->ids_h on the last stage's TP rank 0: the argmax of each slice, combined in the TP
 * group through a sum of zero-padded (max, id) slots (the same first-max rule as one rank:
 * slices are in vocabulary order). */
static ts_status lm_ids(ts_engine *e, int64_t n) {
    const ts_plan_rank *me = e->me;
    const int64_t Vs = me->v1 - me->v0;
    ts_transport *tr = e->tr;
    if (e->dev) TS_TRY(comm(e, tr->ops->fence(tr)));
    TS_TRY(e->b->ops->to_host(e->b, e->lhost, e->logits, sizeof(float) * (size_t)(n * Vs)));
    const int64_t tpn = e->split ? tr->tp : 1, slot = e->split ? tr->tp_rank : 0;
    if (e->split) memset(e->amx_h, 0, sizeof(float) * 2 * (size_t)(n * tpn));
    for (int64_t r = 0; r < n; r++) {
        float m = 0;
        int64_t am = 0;
        TS_TRY(row_argmax(e->lhost + r * Vs, Vs, r, &m, &am));
        if (!e->split) {
            e->ids_h[r] = (int32_t)(me->v0 + am);
        } else {
            e->amx_h[2 * (r * tpn + slot)] = m;
            e->amx_h[2 * (r * tpn + slot) + 1] = (float)(me->v0 + am);
        }
    }
    if (!e->split) return TS_OK;
    const size_t cnt = 2 * (size_t)(n * tpn);
    if (e->dev) {
        TS_TRY(e->b->ops->to_device(e->b, e->amx_d, e->amx_h, sizeof(float) * cnt));
        TS_TRY(comm(e, tr->ops->allreduce_sum(tr, e->amx_d, cnt)));
        TS_TRY(comm(e, tr->ops->fence(tr)));
        TS_TRY(e->b->ops->to_host(e->b, e->amx_h, e->amx_d, sizeof(float) * cnt));
    } else {
        TS_TRY(comm(e, tr->ops->allreduce_sum(tr, e->amx_h, cnt)));
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t best = 0;
        for (int64_t k = 1; k < tpn; k++) /* strictly greater: ties keep the lower ids */
            if (e->amx_h[2 * (r * tpn + k)] > e->amx_h[2 * (r * tpn + best)]) best = k;
        e->ids_h[r] = (int32_t)e->amx_h[2 * (r * tpn + best) + 1];
    }
    return TS_OK;
}

/* Split LM head, logits wanted: every TP rank's slice into zero-padded full rows, summed
 * in the TP group (exact: one nonzero term per element): e->lfull (device transports) or
 * e->lfull_h hold the chunk's full logits. */
static ts_status lm_gather(ts_engine *e, int64_t n) {
    const ts_plan_rank *me = e->me;
    const int64_t V = e->cfg.n_vocab, Vs = me->v1 - me->v0;
    ts_transport *tr = e->tr;
    if (e->dev) TS_TRY(comm(e, tr->ops->fence(tr)));
    TS_TRY(e->b->ops->to_host(e->b, e->lhost, e->logits, sizeof(float) * (size_t)(n * Vs)));
    memset(e->lfull_h, 0, sizeof(float) * (size_t)(n * V));
    for (int64_t r = 0; r < n; r++)
        memcpy(e->lfull_h + r * V + me->v0, e->lhost + r * Vs, sizeof(float) * (size_t)Vs);
    if (e->dev) {
        TS_TRY(e->b->ops->to_device(e->b, e->lfull, e->lfull_h, sizeof(float) * (size_t)(n * V)));
        return comm(e, tr->ops->allreduce_sum(tr, e->lfull, (size_t)(n * V)));
    }
    return comm(e, tr->ops->allreduce_sum(tr, e->lfull_h, (size_t)(n * V)));
}

/* The last stage's TP rank 0: the chunk's logits to rank 0 (or into the caller's array
 * when it is rank 0). */
static ts_status deliver(ts_engine *e, int64_t n, float *logits, int64_t done) {
    ts_transport *tr = e->tr;
    ts_backend *b = e->b;
    const bool is_rank0 = !tr || tr->rank == 0;
    const int64_t V = e->cfg.n_vocab;
    const size_t lbytes = sizeof(float) * (size_t)(n * V);
    if (e->split && !e->dev) { /* full rows on the host */
        if (is_rank0) {
            memcpy(logits + done * V, e->lfull_h, lbytes);
            return TS_OK;
        }
        return comm(e, tr->ops->send(tr, 0, e->lfull_h, lbytes, TS_TAG_LOGITS, "logits"));
    }
    const float *src = e->split ? e->lfull : e->logits; /* backend memory */
    if (is_rank0) {
        if (e->dev) TS_TRY(comm(e, tr->ops->fence(tr)));
        return b->ops->to_host(b, logits + done * V, src, lbytes);
    }
    if (e->dev) return comm(e, tr->ops->send(tr, 0, src, lbytes, TS_TAG_LOGITS, "logits"));
    TS_TRY(b->ops->to_host(b, e->lhost, src, lbytes));
    TS_TRY(b->ops->sync(b));
    return comm(e, tr->ops->send(tr, 0, e->lhost, lbytes, TS_TAG_LOGITS, "logits"));
}

/* With top_k > 0 (single rank only), top_ids / top_vals get each flagged row's top_k best
 * (backend topk) instead of logits. */
static ts_status forward_sel(ts_engine *e, const ts_batch *bt, float *logits, int32_t top_k,
                             int32_t *top_ids, float *top_vals);
enum { FWD_FULL = 0, FWD_REGION = 1 };
static ts_status forward_part(ts_engine *e, const ts_batch *bt, bool want_ids, float *logits,
                              int64_t ids0, int32_t top_k, int32_t *top_ids, float *top_vals,
                              int mode);

static bool graphable(const ts_engine *e, const ts_batch *bt, int64_t *n_want);
static ts_status forward_graph(ts_engine *e, const ts_batch *bt, bool want_ids, float *logits,
                               int64_t ids0, int32_t top_k, int32_t *top_ids, float *top_vals,
                               int64_t n_want);

/* One (micro-)batch through this rank's part. Logits mode: rank 0 gets the flagged rows'
 * logits in `logits`. Ids mode: the last stage's TP rank 0 stores the greedy ids in
 * e->ids_all from index ids0 on (run_micro sends them to rank 0 after the step). */
static ts_status forward(ts_engine *e, const ts_batch *bt, bool want_ids, float *logits,
                         int64_t ids0) {
    if (!want_ids) return forward_sel(e, bt, logits, 0, NULL, NULL); /* may replay a graph */
    int64_t n_want = 0;
    if (e->tr && e->tr->world > 1 && graphable(e, bt, &n_want)) /* a TP group */
        return forward_graph(e, bt, true, NULL, ids0, 0, NULL, NULL, n_want);
    return forward_part(e, bt, want_ids, logits, ids0, 0, NULL, NULL, FWD_FULL);
}

/* A recorded step (backend graph_begin / graph_end, CUDA graphs): one stage (a single rank,
 * or a tensor-parallel group whose device transport can record its all-reduces: NCCL), no
 * hook, no image rows, at most GRAPH_MAX_TOK tokens and one chunk of logit rows. The region
 * from the embedding to the LM head's matmul (the TP all-reduces included) is recorded
 * once per (n_tok, flags) and replayed; its per-step inputs (ids, positions, the KV table)
 * are uploaded before it. Every rank of the group takes the same decision from the same
 * step (the ranks run one build with one environment); even where one did not, the
 * sequence of collectives is the same recorded or not. */
enum { GRAPH_MAX_TOK = 64 };
static bool graph_transport(const ts_engine *e) {
    const ts_transport *tr = e->tr;
    if (!tr || tr->world == 1) return true;
    return tr->pp == 1 && e->dev && tr->ops->graph_ok && tr->ops->graph_replayed &&
           tr->ops->graph_ok((ts_transport *)tr);
}
static bool graphable(const ts_engine *e, const ts_batch *bt, int64_t *n_want) {
    const ts_backend_ops *ops = e->b->ops;
    if (!ops->graph_begin || !ops->graph_end || !ops->step_tokens || !ops->step_begin ||
        !graph_transport(e) || e->p.hook || !e->me->lm_head || e->me->stage != 0 ||
        bt->embd || bt->attn_hi || bt->n_tokens > GRAPH_MAX_TOK ||
        ops->graph_begin(e->b, NULL, 0) < 0)
        return false;
    int64_t n = 0;
    for (int32_t i = 0; i < bt->n_tokens; i++)
        n += bt->want_logits ? bt->want_logits[i] != 0 : i == bt->n_tokens - 1;
    *n_want = n;
    return n >= 1 && n <= e->n_logit_rows;
}

/* want_ids / ids0: as forward(); top_k: single rank only. */
static ts_status forward_graph(ts_engine *e, const ts_batch *bt, bool want_ids, float *logits,
                               int64_t ids0, int32_t top_k, int32_t *top_ids, float *top_vals,
                               int64_t n_want) {
    const ts_backend_ops *ops = e->b->ops;
    ts_backend *b = e->b;
    ts_transport *tr = e->tr;
    const bool group = tr && tr->world > 1;
    const int32_t T = bt->n_tokens;
    TS_TRY(ops->step_begin(b, bt->pos, bt->seq, T, e->kv));
    TS_TRY(ops->step_tokens(b, bt->token, T, (int64_t)e->cfg.n_vocab));
    uint8_t key[4 + GRAPH_MAX_TOK];
    memcpy(key, &T, 4);
    for (int32_t i = 0; i < T; i++)
        key[4 + i] = (uint8_t)(bt->want_logits ? bt->want_logits[i] != 0 : i == T - 1);
    const int g = ops->graph_begin(b, key, 4 + (size_t)T);
    ts_status rc = TS_OK;
    if (g == 1 && group && tr->tp > 1) { /* the replayed region's all-reduces, as counted */
        const uint64_t n_ar = 2ull * (uint64_t)(e->me->l1 - e->me->l0);
        tr->ops->graph_replayed(tr, n_ar, n_ar,
                                n_ar * sizeof(float) * (uint64_t)T * e->cfg.n_embd);
    }
    if (g != 1) {
        rc = forward_part(e, bt, false, NULL, 0, 0, NULL, NULL, FWD_REGION);
        if (g == 0) {
            const ts_status rg = ops->graph_end(b, rc == TS_OK);
            if (group && (rc != TS_OK || rg != TS_OK)) {
                /* the recorded collectives never ran; running the region again could pair
                 * this rank's all-reduces differently with its peers': stop instead */
                e->broken = true;
                return TS_FAIL(rc != TS_OK ? rc : rg, "rank %d: recording a tensor-parallel "
                               "step failed (%s); set TESSERA_CUDA_GRAPH=0 on every rank to "
                               "run steps unrecorded", tr->rank, ts_last_error());
            }
            if (rc != TS_OK || rg != TS_OK)
                rc = forward_part(e, bt, false, NULL, 0, 0, NULL, NULL, FWD_REGION);
        }
    }
    TS_TRY(rc);
    const int64_t V = e->cfg.n_vocab;
    if (group) { /* a TP group (one stage): combine the vocabulary slices as forward_part */
        const bool lm0 = tr->tp_rank == 0;
        if (want_ids) {
            TS_TRY(lm_ids(e, n_want));
            if (lm0) memcpy(e->ids_all + ids0, e->ids_h, sizeof(int32_t) * (size_t)n_want);
        } else {
            if (e->split) TS_TRY(lm_gather(e, n_want));
            if (lm0) TS_TRY(deliver(e, n_want, logits, 0));
        }
        TS_TRY(comm(e, tr->ops->fence(tr)));
        return ops->sync(b);
    }
    if (top_k > 0) TS_TRY(ops->topk(b, e->logits, n_want, V, top_k, top_ids, top_vals));
    else TS_TRY(ops->to_host(b, logits, e->logits, sizeof(float) * (size_t)(n_want * V)));
    return ops->sync(b);
}

static ts_status forward_sel(ts_engine *e, const ts_batch *bt, float *logits, int32_t top_k,
                             int32_t *top_ids, float *top_vals) {
    int64_t n_want = 0;
    if (graphable(e, bt, &n_want) && (top_k == 0 || !e->tr || e->tr->world == 1))
        return forward_graph(e, bt, false, logits, 0, top_k, top_ids, top_vals, n_want);
    return forward_part(e, bt, false, logits, 0, top_k, top_ids, top_vals, FWD_FULL);
}

/* FWD_FULL: the whole step. FWD_REGION (forward_graph): without step_begin, up to the LM
 * head's matmul into e->logits (one chunk), no copy out, no sync. */
static ts_status forward_part(ts_engine *e, const ts_batch *bt, bool want_ids, float *logits,
                              int64_t ids0, int32_t top_k, int32_t *top_ids, float *top_vals,
                              int mode) {
    const ts_config *c = &e->cfg;
    const ts_backend_ops *ops = e->b->ops;
    ts_backend *b = e->b;
    const ts_plan_rank *me = e->me;
    ts_transport *tr = e->tr;
    const int32_t n_stage = tr ? tr->pp : 1;
    const int64_t T = bt->n_tokens, d = c->n_embd, H = me->h1 - me->h0,
                  KV = me->kv1 - me->kv0, hd = c->head_dim, ff = me->f1 - me->f0;

    if (ops->step_begin && mode == FWD_FULL)
        TS_TRY(ops->step_begin(b, bt->pos, bt->seq, T, e->kv));
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
    } else if (e->dev) {
        TS_TRY(comm(e, tr->ops->recv(tr, me->stage - 1, e->x, sizeof(float) * (size_t)(T * d),
                                     TS_TAG_ACTIVATIONS, "activations")));
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
        const float base = global ? c->rope_base_global : c->rope_base_local;
        const float scale = global ? c->rope_scale_global : 1.0f;
        if (ops->qk_norm_rope) { /* fused (backend.h): the same results as the four ops */
            TS_TRY(ops->qk_norm_rope(b, e->q, e->k, L->q_norm, L->k_norm, bt->pos, T, H, KV, hd,
                                     c->rms_eps, base, scale));
        } else {
            TS_TRY(ops->rmsnorm(b, e->q, e->q, L->q_norm, T * H, hd, c->rms_eps));
            TS_TRY(ops->rmsnorm(b, e->k, e->k, L->k_norm, T * KV, hd, c->rms_eps));
            TS_TRY(ops->rope(b, e->q, bt->pos, T, H, hd, base, scale));
            TS_TRY(ops->rope(b, e->k, bt->pos, T, KV, hd, base, scale));
        }
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
        if (ops->rmsnorm_add) {
            TS_TRY(ops->rmsnorm_add(b, e->x, e->o, L->post_attn_norm, T, d, c->rms_eps));
        } else {
            TS_TRY(ops->rmsnorm(b, e->o, e->o, L->post_attn_norm, T, d, c->rms_eps));
            TS_TRY(ops->add(b, e->x, e->o, T * d));
        }
        /* feed-forward block */
        TS_TRY(ops->rmsnorm(b, e->h, e->x, L->ffn_norm, T, d, c->rms_eps));
        TS_TRY(ops->matmul(b, e->gate, &L->gate, e->h, T));
        TS_TRY(ops->matmul(b, e->up, &L->up, e->h, T));
        TS_TRY(ops->geglu(b, e->gate, e->gate, e->up, T * ff));
        TS_TRY(ops->matmul(b, e->o, &L->down, e->gate, T));
        TS_TRY(tp_allreduce(e, e->o, T * d));
        if (ops->rmsnorm_add) {
            TS_TRY(ops->rmsnorm_add(b, e->x, e->o, L->post_ffn_norm, T, d, c->rms_eps));
        } else {
            TS_TRY(ops->rmsnorm(b, e->o, e->o, L->post_ffn_norm, T, d, c->rms_eps));
            TS_TRY(ops->add(b, e->x, e->o, T * d));
        }
        hook(e, "layer_out", (int32_t)il, e->x, T, d);
    }

    if (me->stage < n_stage - 1 && e->dev) {
        TS_TRY(comm(e, tr->ops->send(tr, me->stage + 1, e->x, sizeof(float) * (size_t)(T * d),
                                     TS_TAG_ACTIVATIONS, "activations")));
    } else if (me->stage < n_stage - 1) {
        TS_TRY(ops->to_host(b, e->xfer, e->x, sizeof(float) * (size_t)(T * d)));
        TS_TRY(ops->sync(b));
        TS_TRY(comm(e, tr->ops->send(tr, me->stage + 1, e->xfer, sizeof(float) * (size_t)(T * d),
                                     TS_TAG_ACTIVATIONS, "activations")));
    }
    const bool is_rank0 = !tr || tr->rank == 0;
    if (!me->lm_head && (!is_rank0 || want_ids)) {
        if (e->dev) TS_TRY(comm(e, tr->ops->fence(tr)));
        return ops->sync(b);
    }

    /* final norm + LM head for the flagged rows, n_logit_rows at a time, on the last
     * stage (each TP rank its vocabulary slice [v0, v1)); its TP rank 0 ("lm0") delivers
     * each chunk's logits or greedy ids to rank 0, or is rank 0 */
    const int64_t V = c->n_vocab;
    const bool lm0 = me->lm_head && (!tr || tr->tp_rank == 0);
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
        if (me->lm_head) {
            TS_TRY(ops->rmsnorm(b, e->xs, e->xs, e->output_norm, n, d, c->rms_eps));
            hook(e, "final_norm", -1, e->xs, n, d);
            TS_TRY(ops->matmul(b, e->logits, &e->output, e->xs, n));
            if (mode == FWD_REGION) return TS_OK;
            if (want_ids) {
                TS_TRY(lm_ids(e, n));
                if (lm0) memcpy(e->ids_all + ids0 + done, e->ids_h, sizeof(int32_t) * (size_t)n);
            } else if (top_k > 0) { /* single rank (ts_engine_can_step_top) */
                TS_TRY(ops->topk(b, e->logits, n, c->n_vocab, top_k, top_ids + done * top_k,
                                 top_vals + done * top_k));
            } else {
                if (e->split) TS_TRY(lm_gather(e, n));
                if (lm0) TS_TRY(deliver(e, n, logits, done));
            }
        } else {
            const size_t lbytes = sizeof(float) * (size_t)n * V;
            if (e->dev) {
                TS_TRY(comm(e, tr->ops->recv(tr, n_stage - 1, e->logits, lbytes, TS_TAG_LOGITS,
                                             "logits")));
                TS_TRY(comm(e, tr->ops->fence(tr)));
                TS_TRY(ops->to_host(b, logits + done * V, e->logits, lbytes));
            } else {
                TS_TRY(comm(e, tr->ops->recv(tr, n_stage - 1, logits + done * V, lbytes,
                                             TS_TAG_LOGITS, "logits")));
            }
        }
        done += n;
    }
    if (e->dev) TS_TRY(comm(e, tr->ops->fence(tr)));
    return ops->sync(b);
}

/* Pipeline micro-batches for a step of n tokens: params.micro_batches, or (0, auto) the
 * number of stages; at most n. 1 without pipeline stages, with llama.cpp's batch-size-
 * dependent kernels (micro-batches must not change any result) and for logits steps (their
 * outputs are large: the last stage would have to hold them until rank 0 can receive). */
static int32_t micro_batches(const ts_engine *e, int32_t n, bool want_ids) {
    if (!e->tr || e->tr->pp <= 1 || e->p.llamacpp_batch || !want_ids) return 1;
    int32_t m = e->p.micro_batches > 0 ? e->p.micro_batches : e->tr->pp;
    return m < n ? m : n;
}

/* Every rank: the step's tokens (e->want holds the flags) in m contiguous micro-batches,
 * each through this rank's part in order, so that stage s works on micro-batch k while
 * stage s + 1 works on k - 1. Ids mode: the last stage's TP rank 0 sends all ids to rank 0
 * after the last micro-batch (so no stage ever waits on rank 0 mid-step). */
/* embd / attn_hi: the step's image rows (single rank only; NULL elsewhere). */
static ts_status run_micro(ts_engine *e, const int32_t *tok, const int32_t *pos,
                           const int32_t *seq, const float *const *embd, const int32_t *attn_hi,
                           int32_t n, int32_t m, bool want_ids, float *logits, int32_t *ids) {
    const int64_t V = e->cfg.n_vocab;
    int64_t out0 = 0;
    for (int32_t k = 0; k < m; k++) {
        const int32_t a = (int32_t)((int64_t)n * k / m), z = (int32_t)((int64_t)n * (k + 1) / m);
        ts_batch mb = {.n_tokens = z - a, .token = tok + a, .pos = pos + a, .seq = seq + a,
                       .want_logits = e->want + a, .embd = embd ? embd + a : NULL,
                       .attn_hi = attn_hi ? attn_hi + a : NULL};
        TS_TRY(forward(e, &mb, want_ids, logits ? logits + out0 * V : NULL, out0));
        for (int32_t i = a; i < z; i++) out0 += e->want[i] ? 1 : 0;
    }
    if (!want_ids || out0 == 0) return TS_OK;
    ts_transport *tr = e->tr;
    const bool is_rank0 = !tr || tr->rank == 0;
    const bool lm0 = e->me->lm_head && (!tr || tr->tp_rank == 0);
    const size_t ib = sizeof(int32_t) * (size_t)out0;
    if (lm0 && is_rank0) {
        memcpy(ids, e->ids_all, ib);
    } else if (lm0) {
        if (e->dev) {
            TS_TRY(e->b->ops->to_device(e->b, e->ids_d, e->ids_all, ib));
            TS_TRY(comm(e, tr->ops->send(tr, 0, e->ids_d, ib, TS_TAG_LOGITS, "token ids")));
            TS_TRY(comm(e, tr->ops->fence(tr)));
        } else {
            TS_TRY(comm(e, tr->ops->send(tr, 0, e->ids_all, ib, TS_TAG_LOGITS, "token ids")));
        }
    } else if (is_rank0) {
        if (e->dev) {
            TS_TRY(comm(e, tr->ops->recv(tr, tr->pp - 1, e->ids_d, ib, TS_TAG_LOGITS,
                                         "token ids")));
            TS_TRY(comm(e, tr->ops->fence(tr)));
            TS_TRY(e->b->ops->to_host(e->b, ids, e->ids_d, ib));
        } else {
            TS_TRY(comm(e, tr->ops->recv(tr, tr->pp - 1, ids, ib, TS_TAG_LOGITS, "token ids")));
        }
    }
    return TS_OK;
}

/* After a step: cache the prompt blocks it completed (snapshots of their local pages); a
 * sequence fed embeddings (images) is keyed by placeholder ids: it caches nothing. */
static ts_status prefix_commit(ts_engine *e, const ts_batch *bt) {
    if (!ts_kv_prefix_enabled(e->kv)) return TS_OK;
    if (bt->embd)
        for (int32_t i = 0; i < bt->n_tokens; i++)
            if (bt->embd[i]) ts_kv_prefix_stop(e->kv, bt->seq[i]);
    for (int32_t i = 0; i < bt->n_tokens; i++)
        ts_kv_prefix_commit(e->kv, bt->seq[i], bt->pos[i] + 1);
    TS_TRY(run_copies(e));
    return e->b->ops->sync(e->b);
}

static ts_status step(ts_engine *e, const ts_batch *bt, float *logits, int32_t *ids) {
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
        TS_TRY(send_cmd(e, CMD_STEP, n, ids ? STEP_IDS : STEP_LOGITS,
                        micro_batches(e, n, ids != NULL)));
        TS_TRY(comm(e, e->tr->ops->bcast(e->tr, pl, sizeof(int32_t) * 4 * (size_t)n,
                                         "step descriptor")));
    }
    for (int32_t i = 0; i < bt->n_tokens; i++)
        e->want[i] = (uint8_t)(bt->want_logits ? bt->want_logits[i] != 0 : i == bt->n_tokens - 1);
    TS_TRY(run_micro(e, bt->token, bt->pos, bt->seq, bt->embd, bt->attn_hi, bt->n_tokens,
                     micro_batches(e, bt->n_tokens, ids != NULL), ids != NULL, logits, ids));
    return prefix_commit(e, bt);
}

ts_status ts_engine_step(ts_engine *e, const ts_batch *bt, float *logits) {
    if (!logits) return TS_FAIL(TS_INVAL, "logits is NULL");
    return step(e, bt, logits, NULL);
}

ts_status ts_engine_step_greedy(ts_engine *e, const ts_batch *bt, int32_t *ids) {
    if (!ids) return TS_FAIL(TS_INVAL, "ids is NULL");
    return step(e, bt, NULL, ids);
}

bool ts_engine_can_step_top(const ts_engine *e) {
    return (!e->tr || e->tr->world == 1) && e->b->ops->topk != NULL;
}

ts_status ts_engine_step_top(ts_engine *e, const ts_batch *bt, int32_t k, int32_t *ids,
                             float *vals) {
    if (!ts_engine_can_step_top(e))
        return TS_FAIL(TS_UNSUPPORTED, "top-k steps need a single rank and a backend with topk");
    if (!ids || !vals || k < 1 || k > TS_ENGINE_TOP_MAX || (uint32_t)k > e->cfg.n_vocab)
        return TS_FAIL(TS_INVAL, "top-k step: k %d outside 1..min(n_vocab, %d)", k,
                       TS_ENGINE_TOP_MAX);
    TS_TRY(check_batch(e, bt));
    TS_TRY(forward_sel(e, bt, NULL, k, ids, vals));
    return prefix_commit(e, bt);
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
            const int32_t m = e->desc[3];
            if (rc == TS_OK && (m < 1 || m > a))
                rc = TS_FAIL(TS_INTERNAL, "rank %d: %d micro-batches for %d tokens from rank 0",
                             e->tr->rank, m, a);
            memcpy(e->want, want, (size_t)a);
            if (rc == TS_OK)
                rc = run_micro(e, pl, pl + a, pl + 2 * a, NULL, NULL, a, m, b2 == STEP_IDS, NULL,
                               NULL);
            if (rc != TS_OK) break;
        } else {
            rc = TS_FAIL(TS_INTERNAL, "rank %d: unknown command %d from rank 0", e->tr->rank, cmd);
            break;
        }
    }
    ts_free(want);
    return rc;
}
