/* backend_cuda.c: the CUDA backend (backend.h) on one device, one stream.
 *
 * DESIGN
 * - Memory: activations, weights and KV storage are plain cudaMalloc allocations. Ops are
 *   enqueued on the backend's stream and return at once; to_host waits (it copies into
 *   pageable memory and synchronizes), as does sync.
 * - Weights: load_matrix uploads the rows; Q4_0 and Q8_0 are repacked on the device into
 *   the split layout (kernels_cuda.h) that the decode kernels read with 16-byte loads, other
 *   types stay in GGUF block layout. ts_wmat.data is the device buffer; row_stride stays
 *   the GGUF row size (informational for split types).
 * - KV: per layer one K and one V array of (pages, page_size, kv_dim) floats, exactly the
 *   CPU backend's slot mapping. The page tables live on the host (ts_kvcache): per call of
 *   kv_store / attention the backend builds a small table for the batch (per token: pos
 *   and the offsets of its sequence's global page list and local ring in a flat page
 *   array). The engine calls step_begin once per step: the table is built there (host
 *   scratch sized at kv_init), copied into pinned staging and uploaded once; every layer's
 *   kv_store / attention with the same pos / seq contents and n_tok until the next sync
 *   uses it. Without step_begin (or after a sync, e.g. a TP all-reduce inside a step),
 *   kv_store / attention build the table per call and upload it when its contents
 *   changed. rope's positions and get_rows' ids are uploaded the same way. Uploads go through
 *   pinned staging buffers guarded by an event (the host waits for the previous copy out
 *   of a buffer before rewriting it). Device buffers are sized at kv_init from the KV
 *   layout (n_batch tokens); the Q8 activation buffer grows in load_matrix for the widest
 *   Q4_0 / Q8_0 matrix; the top-k scratch at kv_init for (n_logit_rows, n_vocab, 64). So a
 *   step allocates nothing; a larger request than the sizes above re-sizes after a
 *   synchronize (a logged, out-of-contract case).
 * - Memory accounting: every cudaMalloc of the backend goes through dev_alloc, which
 *   records (pointer, size) for the live total and its high-water mark (mem_stats), next
 *   to cudaMemGetInfo at create and now.
 * - topk: ts_k_topk_cuda into device (rows, k) ids / values, copied back (GPU sampling).
 * - Prefill matmuls (n_tok > 8) of Q4_0 / Q8_0 weights on sm_80+ use the same Q8
 *   activations and int8 tensor cores (ts_k_matmul_q8_tc_cuda); TESSERA_CUDA_GEMM=fp32
 *   selects the exact fp32 tiled kernel instead (always used on sm_75 and other types).
 * - Decode matmuls (n_tok <= 8) of Q4_0 / Q8_0 weights quantize the activations to Q8
 *   blocks (ts_k_quantize_act_cuda, like the CPU fast path) and use the integer-dot kernel
 *   (ts_k_matmul_q8_cuda); TESSERA_CUDA_MMV=fp32 selects the exact fp32 kernel instead.
 *   The quantized activations are cached: a matmul whose x is the same buffer (same
 *   n_tok, cols) as the previous matmul's, with no other op of this backend in between
 *   (q/k/v share one, gate/up another), reuses them. Every other op invalidates the
 *   cache, so device memory must only change through this backend's ops (or call sync,
 *   which also invalidates) between two such matmuls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "alloc.h"
#include "backend.h"
#include "kernels_cuda.h"
#include "quant.h"

#define CU TS_CUDA_TRY

/* A host -> device int32 upload whose last contents are remembered. */
typedef struct {
    int32_t *host;   /* pinned */
    int32_t *dev;
    int64_t cap, n;  /* capacity, last uploaded count (-1: none) */
    cudaEvent_t ev;
    bool ev_live;
} upload;

typedef struct {
    void *p;
    size_t n;
} alloc_rec;

enum { GRAPH_SLOTS = 8, GRAPH_KEY_MAX = 80 };

typedef struct {
    int device;
    cudaStream_t st;
    /* memory accounting */
    alloc_rec *recs;
    size_t n_recs, cap_recs;
    uint64_t alloc_now, alloc_peak, dev_total, used_at_create;
    /* the step's KV table (step_begin) */
    bool step_ready;
    int64_t step_tok;
    int32_t *step_seq;     /* host copy of the step's seq (n_batch) */
    /* top-k */
    void *tk_scratch;
    size_t tk_cap;
    int32_t *tk_ids;
    float *tk_vals;
    int64_t tk_out_cap;    /* rows * k of tk_ids / tk_vals */
    /* recorded steps (CUDA graphs; TESSERA_CUDA_GRAPH=0 turns them off) */
    bool graph_on, capturing;
    struct {
        bool used;
        size_t key_bytes;
        uint8_t key[GRAPH_KEY_MAX];
        cudaGraphExec_t exec;
    } graphs[GRAPH_SLOTS], pending;
    int graph_next;
    upload ids, pos, tab;
    upload hi;             /* attention's image bounds (ts_attn_args.hi) */
    int32_t *tab_tmp;      /* host scratch for building the table */
    int64_t tab_tmp_cap;
    int32_t *seg_seq;      /* host: distinct sequences of a batch */
    int64_t seg_cap;
    /* KV */
    bool kv_ready;
    ts_kv_layout kvl;
    uint8_t *is_global;
    float **k, **v;
    /* Q8 activations of the decode matmuls */
    bool mmv_fp32;         /* TESSERA_CUDA_MMV=fp32 */
    bool gemm_tc;          /* prefill on int8 tensor cores (TESSERA_CUDA_GEMM=fp32: off) */
    int64_t max_q8_cols;   /* widest Q4_0 / Q8_0 matrix loaded */
    void *xq;
    size_t xq_cap;
    const float *xq_src;   /* what xq holds, when xq_valid */
    int64_t xq_tok, xq_cols;
    bool xq_valid;
    /* attention kernels (TESSERA_CUDA_ATTN) */
    int attn_mode;         /* ATTN_* */
    int n_sm;              /* multiprocessors: the split-K target */
    int64_t tab_nseg;      /* distinct sequences of the last KV table built */
    float *attn_part;      /* split-K partials */
    size_t attn_part_cap;  /* floats */
} cuda_ctx;

enum { ATTN_AUTO = 0, ATTN_BASIC, ATTN_FLASH, ATTN_SPLITK };

static cuda_ctx *C(ts_backend *b) { return (cuda_ctx *)b->ctx; }
/* Any op other than matmul may change device memory: drop the cached Q8 activations. */
static cuda_ctx *W(ts_backend *b) {
    cuda_ctx *c = (cuda_ctx *)b->ctx;
    c->xq_valid = false;
    return c;
}

/* Drops every recorded step (their kernels hold device pointers that are about to change). */
static void graphs_clear(cuda_ctx *c) {
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (c->graphs[i].used) {
            cudaGraphExecDestroy(c->graphs[i].exec);
            c->graphs[i].used = false;
        }
}

static void dev_forget(cuda_ctx *c, void *p) {
    for (size_t i = c->n_recs; i-- > 0;)
        if (c->recs[i].p == p) {
            c->alloc_now -= c->recs[i].n;
            c->recs[i] = c->recs[--c->n_recs];
            return;
        }
}

/* cudaMalloc with accounting (never called inside a steady-state step). */
static ts_status dev_alloc(cuda_ctx *c, size_t bytes, void **out) {
    *out = NULL;
    if (c->n_recs == c->cap_recs) {
        size_t cap = c->cap_recs ? 2 * c->cap_recs : 256;
        alloc_rec *n = ts_realloc(c->recs, cap * sizeof *n);
        if (!n) return TS_FAIL(TS_NOMEM, "CUDA backend: allocation records");
        c->recs = n;
        c->cap_recs = cap;
    }
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *out = NULL;
        return TS_FAIL(e == cudaErrorMemoryAllocation ? TS_NOMEM : TS_CUDA,
                       "CUDA backend: cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e));
    }
    c->recs[c->n_recs++] = (alloc_rec){*out, bytes};
    c->alloc_now += bytes;
    if (c->alloc_now > c->alloc_peak) c->alloc_peak = c->alloc_now;
    return TS_OK;
}

static void dev_free(cuda_ctx *c, void *p) {
    if (!p) return;
    graphs_clear(c); /* a recorded step may read p */
    dev_forget(c, p);
    cudaFree(p);
}

static void upload_free(cuda_ctx *c, upload *u) {
    if (u->host) cudaFreeHost(u->host);
    dev_free(c, u->dev);
    if (u->ev_live) cudaEventDestroy(u->ev);
    memset(u, 0, sizeof *u);
}

static ts_status upload_reserve(cuda_ctx *c, upload *u, int64_t n) {
    if (n <= u->cap) return TS_OK;
    CU(cudaStreamSynchronize(c->st));
    if (u->host) cudaFreeHost(u->host);
    dev_free(c, u->dev);
    u->host = NULL;
    u->dev = NULL;
    u->cap = 0;
    u->n = -1;
    size_t bytes = sizeof(int32_t) * (size_t)(n > 0 ? n : 1);
    CU(cudaMallocHost((void **)&u->host, bytes));
    TS_TRY(dev_alloc(c, bytes, (void **)&u->dev));
    if (!u->ev_live) {
        CU(cudaEventCreateWithFlags(&u->ev, cudaEventDisableTiming));
        u->ev_live = true;
    }
    u->cap = n;
    return TS_OK;
}

/* Makes u->dev hold src[0..n) (enqueued on the stream), skipping the copy when the last
 * upload had the same contents. */
static ts_status upload_ints(cuda_ctx *c, upload *u, const int32_t *src, int64_t n) {
    if (n == u->n && n <= u->cap && memcmp(u->host, src, sizeof(int32_t) * (size_t)n) == 0)
        return TS_OK;
    TS_TRY(upload_reserve(c, u, n));
    if (!u->ev_live) {
        CU(cudaEventCreateWithFlags(&u->ev, cudaEventDisableTiming));
        u->ev_live = true;
    }
    CU(cudaEventSynchronize(u->ev)); /* the previous copy out of u->host is done */
    memcpy(u->host, src, sizeof(int32_t) * (size_t)n);
    CU(cudaMemcpyAsync(u->dev, u->host, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice,
                       c->st));
    CU(cudaEventRecord(u->ev, c->st));
    u->n = n;
    return TS_OK;
}

static void cuda_destroy(ts_backend *b) {
    if (!b) return;
    cuda_ctx *c = C(b);
    if (c) {
        cudaSetDevice(c->device);
        if (c->st) cudaStreamSynchronize(c->st);
        graphs_clear(c);
        upload_free(c, &c->ids);
        upload_free(c, &c->pos);
        upload_free(c, &c->tab);
        upload_free(c, &c->hi);
        dev_free(c, c->xq);
        dev_free(c, c->attn_part);
        dev_free(c, c->tk_scratch);
        dev_free(c, c->tk_ids);
        dev_free(c, c->tk_vals);
        ts_free(c->tab_tmp);
        ts_free(c->seg_seq);
        ts_free(c->step_seq);
        if (c->k)
            for (int32_t l = 0; l < c->kvl.n_layer; l++) {
                dev_free(c, c->k[l]);
                dev_free(c, c->v[l]);
            }
        ts_free(c->k);
        ts_free(c->v);
        ts_free(c->is_global);
        if (c->st) cudaStreamDestroy(c->st);
        ts_free(c->recs);
        ts_free(c);
    }
    ts_free(b);
}

static ts_status cuda_alloc(ts_backend *b, size_t bytes, void **out) {
    return dev_alloc(C(b), bytes, out);
}

static void cuda_free(ts_backend *b, void *p) {
    dev_free(W(b), p);
}

/* Grows the Q8 activation buffer (outside steps) for n_tok rows of `cols`. */
static ts_status xq_reserve(cuda_ctx *c, int64_t n_tok, int64_t cols) {
    const size_t need = ts_k_act_q8_bytes_cuda(n_tok, cols);
    if (need <= c->xq_cap) return TS_OK;
    const size_t cap = need > ((size_t)1 << 20) ? need : ((size_t)1 << 20);
    CU(cudaStreamSynchronize(c->st));
    dev_free(c, c->xq);
    c->xq = NULL;
    c->xq_cap = 0;
    c->xq_valid = false;
    TS_TRY(dev_alloc(c, cap, &c->xq));
    c->xq_cap = cap;
    return TS_OK;
}

static ts_status cuda_load_matrix(ts_backend *b, const ts_gguf_tensor *t, int64_t row0,
                                  int64_t n_rows, ts_wmat *out) {
    cuda_ctx *c = C(b);
    int64_t rows = t->n_dims >= 2 ? t->ne[1] : 1;
    if (row0 < 0 || n_rows <= 0 || row0 + n_rows > rows)
        return TS_FAIL(TS_INVAL, "tensor '%s': rows [%lld, %lld) outside [0, %lld)", t->name,
                       (long long)row0, (long long)(row0 + n_rows), (long long)rows);
    if (!ts_k_matmul_cuda_supports(t->type))
        return TS_FAIL(TS_UNSUPPORTED, "tensor '%s': type %s has no CUDA kernels", t->name,
                       ts_type_name(t->type) ? ts_type_name(t->type) : "?");
    size_t stride;
    if (!ts_type_row_bytes(t->type, t->ne[0], &stride))
        return TS_FAIL(TS_FORMAT, "tensor '%s': bad row size", t->name);
    const size_t raw = stride * (size_t)n_rows;
    const size_t dev_bytes = ts_k_weight_bytes_cuda(t->type, n_rows, t->ne[0]);
    if (dev_bytes == 0) return TS_FAIL(TS_FORMAT, "tensor '%s': bad shape", t->name);
    void *d = NULL;
    TS_TRY(cuda_alloc(b, dev_bytes, &d));
    const uint8_t *src = t->data + (size_t)row0 * stride;
    ts_status rc = TS_OK;
    if (ts_k_weight_split_cuda(t->type)) {
        void *tmp = NULL;
        rc = cuda_alloc(b, raw, &tmp);
        if (rc == TS_OK) {
            /* On the backend's stream, not cudaMemcpy: a pageable-memory cudaMemcpy returns
             * once the data is staged, possibly before its DMA lands, and c->st (a
             * non-blocking stream) does not wait for the legacy stream, so the repack
             * could read stale bytes (this broke the 270M's layer matrices). */
            cudaError_t e = cudaMemcpyAsync(tmp, src, raw, cudaMemcpyHostToDevice, c->st);
            if (e != cudaSuccess)
                rc = TS_FAIL(TS_CUDA, "upload '%s': %s", t->name, cudaGetErrorString(e));
            if (rc == TS_OK)
                rc = ts_k_weight_repack_cuda(t->type, tmp, stride, n_rows, t->ne[0], d, c->st);
            if (rc == TS_OK) {
                e = cudaStreamSynchronize(c->st);
                if (e != cudaSuccess)
                    rc = TS_FAIL(TS_CUDA, "repack '%s': %s", t->name, cudaGetErrorString(e));
            }
            dev_free(c, tmp);
        }
    } else {
        cudaError_t e = cudaMemcpyAsync(d, src, raw, cudaMemcpyHostToDevice, c->st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->st);
        if (e != cudaSuccess)
            rc = TS_FAIL(TS_CUDA, "upload '%s': %s", t->name, cudaGetErrorString(e));
    }
    /* the decode matmuls' Q8 activations for this width: sized now, not in a step */
    if (rc == TS_OK && ts_k_matmul_q8_cuda_supports(t->type, 8) && t->ne[0] % 32 == 0) {
        if (t->ne[0] > c->max_q8_cols) c->max_q8_cols = t->ne[0];
        const int64_t n = c->kv_ready && c->gemm_tc && c->kvl.n_batch > 8 ? c->kvl.n_batch : 8;
        rc = xq_reserve(c, n, t->ne[0]);
    }
    if (rc != TS_OK) {
        (void)cudaGetLastError();
        dev_free(c, d);
        return rc;
    }
    out->type = t->type;
    out->rows = n_rows;
    out->cols = t->ne[0];
    out->row_stride = stride;
    out->data = d;
    return TS_OK;
}

static ts_status cuda_load_vector(ts_backend *b, const float *src, int64_t n, float **out) {
    cuda_ctx *c = C(b);
    TS_TRY(cuda_alloc(b, sizeof(float) * (size_t)n, (void **)out));
    CU(cudaMemcpyAsync(*out, src, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice, c->st));
    CU(cudaStreamSynchronize(c->st));
    return TS_OK;
}

static ts_status cuda_to_host(ts_backend *b, void *dst, const void *src, size_t n) {
    cuda_ctx *c = C(b);
    CU(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->st));
    CU(cudaStreamSynchronize(c->st));
    return TS_OK;
}

static ts_status cuda_to_device(ts_backend *b, void *dst, const void *src, size_t n) {
    cuda_ctx *c = W(b);
    CU(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->st));
    CU(cudaStreamSynchronize(c->st));
    return TS_OK;
}

static ts_status cuda_copy(ts_backend *b, void *dst, const void *src, size_t n) {
    cuda_ctx *c = W(b);
    CU(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->st));
    return TS_OK;
}

static ts_status cuda_get_rows(ts_backend *b, float *out, const ts_wmat *emb, const int32_t *ids,
                               int64_t n, float scale) {
    cuda_ctx *c = W(b);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= emb->rows)
            return TS_FAIL(TS_RANGE, "token id %d outside the vocabulary [0, %lld)", ids[i],
                           (long long)emb->rows);
    TS_TRY(upload_ints(c, &c->ids, ids, n));
    return ts_k_get_rows_cuda(emb->type, emb->data, emb->row_stride, emb->rows, emb->cols,
                              c->ids.dev, n, scale, out, c->st);
}

static ts_status cuda_matmul(ts_backend *b, float *y, const ts_wmat *w, const float *x,
                             int64_t n_tok) {
    cuda_ctx *c = C(b);
    const bool shape_ok = w->cols % 32 == 0 && (uintptr_t)x % 4 == 0;
    const bool dec = !c->mmv_fp32 && ts_k_matmul_q8_cuda_supports(w->type, n_tok) && shape_ok;
    const bool tc = !dec && n_tok > 8 && c->gemm_tc && shape_ok &&
                    ts_k_matmul_q8_tc_cuda_supports(w->type);
    if (!dec && !tc) {
        c->xq_valid = false;
        return ts_k_matmul_cuda(w->type, w->data, w->row_stride, w->rows, w->cols, x, n_tok,
                                y, c->st);
    }
    if (!(c->xq_valid && c->xq_src == x && c->xq_tok == n_tok && c->xq_cols == w->cols)) {
        c->xq_valid = false;
        if (ts_k_act_q8_bytes_cuda(n_tok, w->cols) > c->xq_cap) {
            TS_LOG_WARN("CUDA backend: Q8 activations grow inside a step (%lld x %lld)",
                   (long long)n_tok, (long long)w->cols);
            TS_TRY(xq_reserve(c, n_tok, w->cols));
        }
        TS_TRY(ts_k_quantize_act_cuda(x, n_tok, w->cols, c->xq, c->st));
        c->xq_src = x;
        c->xq_tok = n_tok;
        c->xq_cols = w->cols;
        c->xq_valid = true;
    }
    ts_status rc = tc ? ts_k_matmul_q8_tc_cuda(w->type, w->data, w->rows, w->cols, c->xq,
                                               n_tok, y, c->st)
                      : ts_k_matmul_q8_cuda(w->type, w->data, w->rows, w->cols, c->xq, n_tok,
                                            y, c->st);
    /* y overlapping x (never in the engine) invalidates */
    if (rc != TS_OK || (y < x + n_tok * w->cols && x < y + n_tok * w->rows)) c->xq_valid = false;
    return rc;
}

static ts_status cuda_rmsnorm(ts_backend *b, float *out, const float *x, const float *w,
                              int64_t n_row, int64_t n, float eps) {
    return ts_k_rmsnorm_cuda(out, x, w, n_row, n, eps, W(b)->st);
}

static ts_status cuda_rope(ts_backend *b, float *x, const int32_t *pos, int64_t n_tok,
                           int64_t n_head, int64_t head_dim, float base, float scale) {
    cuda_ctx *c = W(b);
    TS_TRY(upload_ints(c, &c->pos, pos, n_tok));
    return ts_k_rope_cuda(x, c->pos.dev, n_tok, n_head, head_dim, base, scale, c->st);
}

static ts_status cuda_rmsnorm_add(ts_backend *b, float *x, const float *y, const float *w,
                                  int64_t n_row, int64_t n, float eps) {
    return ts_k_rmsnorm_add_cuda(x, y, w, n_row, n, eps, W(b)->st);
}

static ts_status cuda_qk_norm_rope(ts_backend *b, float *q, float *k, const float *qw,
                                   const float *kw, const int32_t *pos, int64_t n_tok,
                                   int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                   float eps, float base, float scale) {
    cuda_ctx *c = W(b);
    TS_TRY(upload_ints(c, &c->pos, pos, n_tok));
    return ts_k_qk_norm_rope_cuda(q, k, qw, kw, c->pos.dev, n_tok, n_head, n_head_kv, head_dim,
                                  eps, base, scale, c->st);
}

static ts_status cuda_geglu(ts_backend *b, float *out, const float *gate, const float *up,
                            int64_t n) {
    return ts_k_geglu_cuda(out, gate, up, n, W(b)->st);
}

static ts_status cuda_add(ts_backend *b, float *x, const float *y, int64_t n) {
    return ts_k_add_cuda(x, y, n, W(b)->st);
}

/* ---- top-k ---- */

static ts_status topk_reserve(cuda_ctx *c, int64_t rows, int64_t cols, int32_t k) {
    const size_t need = ts_k_topk_scratch_bytes_cuda(rows, cols, k);
    if (need > c->tk_cap) {
        CU(cudaStreamSynchronize(c->st));
        dev_free(c, c->tk_scratch);
        c->tk_scratch = NULL;
        c->tk_cap = 0;
        TS_TRY(dev_alloc(c, need, &c->tk_scratch));
        c->tk_cap = need;
    }
    if (rows * k > c->tk_out_cap) {
        CU(cudaStreamSynchronize(c->st));
        dev_free(c, c->tk_ids);
        dev_free(c, c->tk_vals);
        c->tk_ids = NULL;
        c->tk_vals = NULL;
        c->tk_out_cap = 0;
        TS_TRY(dev_alloc(c, sizeof(int32_t) * (size_t)(rows * k), (void **)&c->tk_ids));
        TS_TRY(dev_alloc(c, sizeof(float) * (size_t)(rows * k), (void **)&c->tk_vals));
        c->tk_out_cap = rows * k;
    }
    return TS_OK;
}

static ts_status cuda_topk(ts_backend *b, const float *x, int64_t rows, int64_t cols,
                           int32_t k, int32_t *ids, float *vals) {
    cuda_ctx *c = C(b);
    if (rows <= 0) return rows == 0 ? TS_OK : TS_FAIL(TS_INVAL, "topk: rows %lld", (long long)rows);
    if (k < 1 || k > TS_K_TOPK_MAX || k > cols)
        return TS_FAIL(TS_INVAL, "topk: k %d outside 1..min(%lld, %d)", k, (long long)cols,
                       TS_K_TOPK_MAX);
    if (ts_k_topk_scratch_bytes_cuda(rows, cols, k) > c->tk_cap || rows * k > c->tk_out_cap) {
        TS_LOG_WARN("CUDA backend: top-k scratch grows (%lld rows, k %d)", (long long)rows, k);
        TS_TRY(topk_reserve(c, rows, cols, k));
    }
    TS_TRY(ts_k_topk_cuda(x, rows, cols, k, c->tk_scratch, c->tk_ids, c->tk_vals, c->st));
    CU(cudaMemcpyAsync(ids, c->tk_ids, sizeof(int32_t) * (size_t)(rows * k),
                       cudaMemcpyDeviceToHost, c->st));
    CU(cudaMemcpyAsync(vals, c->tk_vals, sizeof(float) * (size_t)(rows * k),
                       cudaMemcpyDeviceToHost, c->st));
    CU(cudaStreamSynchronize(c->st));
    return TS_OK;
}

static void cuda_mem_stats(ts_backend *b, ts_backend_mem *o) {
    cuda_ctx *c = C(b);
    memset(o, 0, sizeof *o);
    o->device_total = c->dev_total;
    o->used_at_create = c->used_at_create;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) o->used_now = (uint64_t)(tot - fr);
    else (void)cudaGetLastError();
    o->alloc_now = c->alloc_now;
    o->alloc_peak = c->alloc_peak;
}

/* ---- KV ---- */

/* Split-K attention: splits per (token, KV head) so that the step has about 4 blocks per SM,
 * at most TS_K_ATTN_MAX_SPLIT and no more than chunks of 64 of max_keys keys. A function of
 * the step's size only (not of positions): a recorded step keeps its launch shape while the
 * kernel cuts the actual key range on the device. */
static int32_t attn_splits(const cuda_ctx *c, int64_t n_tok, int32_t n_head_kv,
                           int32_t max_keys) {
    const int64_t blocks = n_tok * (n_head_kv > 0 ? n_head_kv : 1);
    int64_t s = 4 * (int64_t)(c->n_sm > 0 ? c->n_sm : 1) / (blocks > 0 ? blocks : 1);
    const int64_t by_keys = ((int64_t)max_keys + 63) / 64;
    if (s > by_keys) s = by_keys;
    if (s > TS_K_ATTN_MAX_SPLIT) s = TS_K_ATTN_MAX_SPLIT;
    return s < 1 ? 1 : (int32_t)s;
}

static ts_status cuda_kv_init(ts_backend *b, const ts_kv_layout *l) {
    cuda_ctx *c = C(b);
    if (c->kv_ready) return TS_FAIL(TS_INVAL, "KV storage already initialized");
    c->kvl = *l;
    c->is_global = ts_malloc((size_t)(l->n_layer > 0 ? l->n_layer : 1));
    c->k = ts_calloc((size_t)(l->n_layer > 0 ? l->n_layer : 1), sizeof *c->k);
    c->v = ts_calloc((size_t)(l->n_layer > 0 ? l->n_layer : 1), sizeof *c->v);
    if (!c->is_global || !c->k || !c->v) return TS_FAIL(TS_NOMEM, "KV tables");
    memcpy(c->is_global, l->is_global, (size_t)l->n_layer);
    c->kvl.is_global = c->is_global;
    c->kv_ready = true;
    for (int32_t i = 0; i < l->n_layer; i++) {
        int64_t pages = l->is_global[i] ? l->global_pages : l->local_pages;
        size_t n;
        if (!ts_mul_size((size_t)pages * (size_t)l->page_size, (size_t)l->kv_dim, &n) ||
            !ts_mul_size(n, sizeof(float), &n))
            return TS_FAIL(TS_NOMEM, "KV layer %d size overflows", i);
        TS_TRY(dev_alloc(c, n, (void **)&c->k[i]));
        TS_TRY(dev_alloc(c, n, (void **)&c->v[i]));
        CU(cudaMemsetAsync(c->k[i], 0, n ? n : 1, c->st));
        CU(cudaMemsetAsync(c->v[i], 0, n ? n : 1, c->st));
    }
    /* Step uploads and host scratch: a step has at most n_batch tokens (else: at most one
     * token per KV slot); the page lists of its sequences are distinct pages, at most all
     * pages of both pools. */
    int64_t gp = l->global_pages, lp = l->local_pages;
    int64_t max_tok = l->n_batch;
    if (max_tok <= 0) {
        max_tok = (gp > lp ? gp : lp) * l->page_size;
        if (max_tok > (int64_t)l->n_ctx * 64) max_tok = (int64_t)l->n_ctx * 64;
    }
    if (max_tok < 1) max_tok = 1;
    const int64_t tab_n = 3 * max_tok + gp + lp + 1;
    TS_TRY(upload_reserve(c, &c->tab, tab_n));
    TS_TRY(upload_reserve(c, &c->pos, max_tok));
    TS_TRY(upload_reserve(c, &c->ids, max_tok));
    c->tab_tmp = ts_malloc(sizeof(int32_t) * (size_t)tab_n);
    c->seg_seq = ts_malloc(sizeof(int32_t) * 2 * (size_t)max_tok);
    c->step_seq = ts_malloc(sizeof(int32_t) * (size_t)max_tok);
    if (!c->tab_tmp || !c->seg_seq || !c->step_seq) return TS_FAIL(TS_NOMEM, "KV table scratch");
    c->tab_tmp_cap = tab_n;
    c->seg_cap = max_tok;
    if (c->gemm_tc && l->n_batch > 8 && c->max_q8_cols > 0)
        TS_TRY(xq_reserve(c, l->n_batch, c->max_q8_cols));
    CU(cudaSetDevice(c->device)); /* the flash kernels' limits are set per device */
    TS_TRY(ts_k_attn_prepare_cuda());
    /* split-K partials for the largest split of any step size (attn_splits: n_tok x heads x
     * splits stays under ~4 blocks per SM, so this is small) */
    if (l->n_head > 0 && l->head_dim > 0 && l->kv_dim % l->head_dim == 0) {
        size_t need = 0;
        const int32_t n_kv = l->kv_dim / l->head_dim;
        for (int64_t n = 1; n <= max_tok && n <= 4 * (int64_t)c->n_sm; n++) {
            const size_t f = ts_k_attn_split_scratch_floats(n, l->n_head, l->head_dim,
                                                            attn_splits(c, n, n_kv, l->n_ctx));
            if (f > need) need = f;
        }
        if (need > 0) {
            TS_TRY(dev_alloc(c, sizeof(float) * need, (void **)&c->attn_part));
            c->attn_part_cap = need;
        }
    }
    if (l->n_logit_rows > 0 && l->n_vocab > 0) {
        const int32_t k = l->n_vocab < 64 ? (int32_t)l->n_vocab : 64;
        TS_TRY(topk_reserve(c, l->n_logit_rows, l->n_vocab, k));
    }
    CU(cudaStreamSynchronize(c->st));
    return TS_OK;
}

static ts_status kv_args(cuda_ctx *c, const ts_kvcache *kv, int64_t n_tok, bool is_global,
                         ts_k_kv_args *a);

/* Builds and uploads the batch's page table (kernels_cuda.h ts_k_kv_args). */
static ts_status kv_table(cuda_ctx *c, const int32_t *pos, const int32_t *seq, int64_t n_tok,
                          const ts_kvcache *kv, bool is_global, ts_k_kv_args *a) {
    if (!c->kv_ready) return TS_FAIL(TS_INVAL, "KV storage is not initialized");
    const int32_t ps = ts_kv_page_size(kv);
    const int32_t ring = ts_kv_ring_pages(kv);
    const bool have_g = ts_kv_global_pages(kv) > 0, have_l = ts_kv_local_pages(kv) > 0;
    if (ps != c->kvl.page_size) return TS_FAIL(TS_INVAL, "KV page size mismatch");
    if (n_tok < 1 || n_tok > c->seg_cap)
        return TS_FAIL(TS_INVAL, "a step of %lld tokens (KV storage sized for %lld)",
                       (long long)n_tok, (long long)c->seg_cap);
    /* distinct sequences and their highest position in this batch */
    int32_t *sseq = c->seg_seq, *smax = c->seg_seq + n_tok;
    int64_t n_seg = 0, n_entries = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        if (pos[t] < 0 || pos[t] >= c->kvl.n_ctx)
            return TS_FAIL(TS_RANGE, "position %d outside the context of %d", pos[t],
                           c->kvl.n_ctx);
        int64_t s = 0;
        while (s < n_seg && sseq[s] != seq[t]) s++;
        if (s == n_seg) {
            sseq[n_seg] = seq[t];
            smax[n_seg++] = pos[t];
        } else if (pos[t] > smax[s]) {
            smax[s] = pos[t];
        }
    }
    for (int64_t s = 0; s < n_seg; s++)
        n_entries += (have_g ? smax[s] / ps + 1 : 0) + (have_l ? ring : 0);
    const int64_t total = 3 * n_tok + n_entries;
    c->tab_nseg = n_seg;
    if (total > c->tab_tmp_cap) /* distinct pages: cannot exceed both pools */
        return TS_FAIL(TS_INTERNAL, "KV table of %lld entries (room for %lld)",
                       (long long)total, (long long)c->tab_tmp_cap);
    int32_t *tab = c->tab_tmp, *pt = tab + 3 * n_tok;
    int64_t off = 0;
    /* per sequence: [global pages 0..max/ps][ring pages 0..ring-1]; offsets stored in the
     * sequence's first slot of smax/sseq reuse: goff in sseq order */
    for (int64_t s = 0; s < n_seg; s++) {
        int32_t goff = (int32_t)off;
        if (have_g)
            for (int32_t pi = 0; pi <= smax[s] / ps; pi++)
                pt[off++] = ts_kv_global_page(kv, sseq[s], pi * ps);
        int32_t loff = (int32_t)off;
        if (have_l)
            for (int32_t ri = 0; ri < ring; ri++)
                pt[off++] = ts_kv_local_page(kv, sseq[s], ri * ps);
        for (int64_t t = 0; t < n_tok; t++)
            if (seq[t] == sseq[s]) {
                tab[3 * t] = pos[t];
                tab[3 * t + 1] = goff;
                tab[3 * t + 2] = loff;
            }
    }
    TS_TRY(upload_ints(c, &c->tab, tab, total));
    c->step_ready = false;
    return kv_args(c, kv, n_tok, is_global, a);
}

static ts_status kv_args(cuda_ctx *c, const ts_kvcache *kv, int64_t n_tok, bool is_global,
                         ts_k_kv_args *a) {
    const int32_t ps = ts_kv_page_size(kv);
    const int32_t ring = ts_kv_ring_pages(kv);
    const bool have_g = ts_kv_global_pages(kv) > 0, have_l = ts_kv_local_pages(kv) > 0;
    if (is_global ? !have_g : !have_l)
        return TS_FAIL(TS_INVAL, "no %s KV pages", is_global ? "global" : "local");
    a->tab = c->tab.dev;
    a->n_tok = n_tok;
    a->page_size = ps;
    a->ring = ring > 0 ? ring : 1;
    a->kv_dim = c->kvl.kv_dim;
    a->is_global = is_global;
    a->hi = NULL;
    return TS_OK;
}

/* The step's table (step_begin) when this call has the step's n_tok, pos and seq (checked
 * by contents: the table is uploaded, so only pos / seq / pages matter, and pages do not
 * change inside a step); else a per-call table. */
static ts_status kv_lookup(cuda_ctx *c, const int32_t *pos, const int32_t *seq, int64_t n_tok,
                           const ts_kvcache *kv, bool is_global, ts_k_kv_args *a) {
    if (c->step_ready && n_tok == c->step_tok && c->tab.n >= 3 * n_tok) {
        bool same = memcmp(seq, c->step_seq, sizeof(int32_t) * (size_t)n_tok) == 0;
        for (int64_t t = 0; same && t < n_tok; t++) same = c->tab.host[3 * t] == pos[t];
        if (same) return kv_args(c, kv, n_tok, is_global, a);
    }
    return kv_table(c, pos, seq, n_tok, kv, is_global, a);
}

static ts_status cuda_step_begin(ts_backend *b, const int32_t *pos, const int32_t *seq,
                                 int64_t n_tok, const ts_kvcache *kv) {
    cuda_ctx *c = W(b);
    ts_k_kv_args a;
    c->step_ready = false;
    /* builds the table with both pools' offsets; is_global only picks kv_args' check */
    TS_TRY(kv_table(c, pos, seq, n_tok, kv, ts_kv_global_pages(kv) > 0, &a));
    memcpy(c->step_seq, seq, sizeof(int32_t) * (size_t)n_tok);
    c->step_tok = n_tok;
    c->step_ready = true;
    /* rope's positions: uploaded once here too (rope skips an unchanged upload) */
    return upload_ints(c, &c->pos, pos, n_tok);
}

static ts_status cuda_step_tokens(ts_backend *b, const int32_t *ids, int64_t n,
                                  int64_t n_vocab) {
    cuda_ctx *c = W(b);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab)
            return TS_FAIL(TS_RANGE, "token id %d outside the vocabulary [0, %lld)", ids[i],
                           (long long)n_vocab);
    return upload_ints(c, &c->ids, ids, n);
}

static int cuda_graph_begin(ts_backend *b, const void *key, size_t key_bytes) {
    cuda_ctx *c = C(b);
    if (!c->graph_on || c->capturing || key_bytes > GRAPH_KEY_MAX) return -1;
    if (!key) return 0;
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (c->graphs[i].used && c->graphs[i].key_bytes == key_bytes &&
            memcmp(c->graphs[i].key, key, key_bytes) == 0) {
            if (cudaGraphLaunch(c->graphs[i].exec, c->st) == cudaSuccess) {
                c->xq_valid = false;
                return 1;
            }
            (void)cudaGetLastError();
            return -1;
        }
    if (cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    c->capturing = true;
    c->pending.key_bytes = key_bytes;
    memcpy(c->pending.key, key, key_bytes);
    return 0;
}

static ts_status cuda_graph_end(ts_backend *b, bool ok) {
    cuda_ctx *c = C(b);
    if (!c->capturing) return TS_FAIL(TS_INVAL, "graph_end without graph_begin");
    c->capturing = false;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->st, &g);
    cudaGraphExec_t exec = NULL;
    if (ok && e == cudaSuccess && g) e = cudaGraphInstantiate(&exec, g, 0);
    if (g) cudaGraphDestroy(g);
    if (!ok || e != cudaSuccess || !exec) {
        (void)cudaGetLastError();
        c->xq_valid = false; /* nothing recorded ran: the host-side cache is stale */
        return TS_FAIL(TS_CUDA, "step recording failed (%s): the step runs unrecorded",
                       ok ? cudaGetErrorName(e) : "an op failed");
    }
    e = cudaGraphLaunch(exec, c->st);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cudaGraphExecDestroy(exec);
        c->xq_valid = false;
        return TS_FAIL(TS_CUDA, "cudaGraphLaunch: %s", cudaGetErrorName(e));
    }
    const int i = c->graph_next;
    c->graph_next = (c->graph_next + 1) % GRAPH_SLOTS;
    if (c->graphs[i].used) cudaGraphExecDestroy(c->graphs[i].exec);
    c->graphs[i].used = true;
    c->graphs[i].key_bytes = c->pending.key_bytes;
    memcpy(c->graphs[i].key, c->pending.key, c->pending.key_bytes);
    c->graphs[i].exec = exec;
    return TS_OK;
}

static ts_status cuda_kv_store(ts_backend *b, int32_t layer, bool is_global, const float *k,
                               const float *v, int64_t n_tok, const int32_t *pos,
                               const int32_t *seq, const ts_kvcache *kv) {
    cuda_ctx *c = W(b);
    if (layer < 0 || layer >= c->kvl.n_layer) return TS_FAIL(TS_INVAL, "layer %d", layer);
    ts_k_kv_args a;
    TS_TRY(kv_lookup(c, pos, seq, n_tok, kv, is_global, &a));
    return ts_k_kv_store_cuda(&a, c->k[layer], c->v[layer], k, v, c->st);
}

static ts_status cuda_attention(ts_backend *b, const ts_attn_args *x) {
    cuda_ctx *c = W(b);
    if (x->layer < 0 || x->layer >= c->kvl.n_layer) return TS_FAIL(TS_INVAL, "layer %d", x->layer);
    ts_k_kv_args a;
    TS_TRY(kv_lookup(c, x->pos, x->seq, x->n_tok, x->kv, x->is_global, &a));
    if (x->hi) { /* image blocks: keys up to hi[t] (backend_cpu.c), stored by this step */
        for (int64_t t = 0; t < x->n_tok; t++) {
            /* the step's page table covers each sequence up to its highest position in
             * the batch: hi must be one of them */
            bool covered = x->hi[t] == x->pos[t];
            const int64_t g = t + (int64_t)x->hi[t] - x->pos[t]; /* an image stepped in order */
            if (!covered && g >= 0 && g < x->n_tok)
                covered = x->seq[g] == x->seq[t] && x->pos[g] >= x->hi[t];
            for (int64_t u = 0; !covered && u < x->n_tok; u++)
                covered = x->seq[u] == x->seq[t] && x->pos[u] >= x->hi[t];
            if (x->hi[t] < x->pos[t] || x->hi[t] >= c->kvl.n_ctx || !covered)
                return TS_FAIL(TS_RANGE, "token %lld at position %d attends up to %d: outside "
                               "the context of %d or beyond its sequence's last position in "
                               "the step", (long long)t, x->pos[t], x->hi[t], c->kvl.n_ctx);
        }
        TS_TRY(upload_ints(c, &c->hi, x->hi, x->n_tok));
        a.hi = c->hi.dev;
    }
    const float *K = c->k[x->layer], *V = c->v[x->layer];
    const int32_t group = x->n_head_kv > 0 ? x->n_head / x->n_head_kv : 0;
    const bool flash_ok = ts_k_attn_flash_supports_cuda(x->head_dim, group);
    const bool split_ok = ts_k_attn_split_supports_cuda(x->head_dim, group);
    /* prefill-like: many tokens per sequence. A recorded step keeps the choice made while
     * recording; a replay with another layout of the same size and logit flags (the
     * recording key) runs that kernel, which is right for any layout (only its speed was
     * chosen for the recorded one), and recorded and unrecorded runs of a step agree. */
    const bool prefill = x->n_tok >= 16 && c->tab_nseg > 0 && x->n_tok >= 4 * c->tab_nseg;
    /* forced modes fall back flash -> split-K -> basic where a kernel lacks the shape */
    const int mode = c->attn_mode;
    const bool use_flash = flash_ok && (mode == ATTN_FLASH || (mode == ATTN_AUTO && prefill));
    if (use_flash)
        return ts_k_attn_flash_cuda(&a, K, V, x->q, x->out, a.hi, x->n_head, x->n_head_kv,
                                    x->head_dim, x->window, x->scale, c->st);
    if (split_ok && mode != ATTN_BASIC) {
        const int32_t max_keys = x->is_global || x->window <= 0 || x->window > c->kvl.n_ctx
                                     ? c->kvl.n_ctx : x->window;
        int32_t ns = attn_splits(c, x->n_tok, x->n_head_kv, max_keys);
        if (mode == ATTN_SPLITK && ns < 2) ns = 2; /* forced: split when it fits */
        while (ns > 1 && ts_k_attn_split_scratch_floats(x->n_tok, x->n_head, x->head_dim, ns) >
                             c->attn_part_cap)
            ns--;
        return ts_k_attn_split_cuda(&a, K, V, x->q, x->out, a.hi, x->n_head, x->n_head_kv,
                                    x->head_dim, x->window, x->scale, ns, c->attn_part,
                                    c->attn_part_cap, c->st);
    }
    return ts_k_attention_cuda(&a, K, V, x->q, x->out, x->n_head, x->n_head_kv, x->head_dim,
                               x->window, x->scale, c->st);
}

static ts_status cuda_kv_copy(ts_backend *b, const ts_kv_copy *cp, int32_t n) {
    cuda_ctx *c = C(b);
    if (!c->kv_ready) return TS_FAIL(TS_INVAL, "KV storage is not initialized");
    const size_t page = (size_t)c->kvl.page_size * (size_t)c->kvl.kv_dim;
    for (int32_t i = 0; i < n; i++) {
        const int64_t np = cp[i].is_global ? c->kvl.global_pages : c->kvl.local_pages;
        if (cp[i].dst < 0 || cp[i].dst >= np || cp[i].src < 0 || cp[i].src >= np)
            return TS_FAIL(TS_INVAL, "KV page copy %d -> %d outside the %s pool of %lld pages",
                           cp[i].src, cp[i].dst, cp[i].is_global ? "global" : "local",
                           (long long)np);
        if (cp[i].dst == cp[i].src) continue;
        for (int32_t l = 0; l < c->kvl.n_layer; l++) {
            if ((c->is_global[l] != 0) != cp[i].is_global) continue;
            CU(cudaMemcpyAsync(c->k[l] + (size_t)cp[i].dst * page,
                               c->k[l] + (size_t)cp[i].src * page, sizeof(float) * page,
                               cudaMemcpyDeviceToDevice, c->st));
            CU(cudaMemcpyAsync(c->v[l] + (size_t)cp[i].dst * page,
                               c->v[l] + (size_t)cp[i].src * page, sizeof(float) * page,
                               cudaMemcpyDeviceToDevice, c->st));
        }
    }
    return TS_OK;
}

static ts_status cuda_sync(ts_backend *b) {
    cuda_ctx *c = W(b);
    c->step_ready = false;
    CU(cudaStreamSynchronize(c->st));
    return TS_OK;
}

static const ts_backend_ops g_cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .load_matrix = cuda_load_matrix,
    .load_vector = cuda_load_vector,
    .to_host = cuda_to_host,
    .to_device = cuda_to_device,
    .copy = cuda_copy,
    .get_rows = cuda_get_rows,
    .matmul = cuda_matmul,
    .rmsnorm = cuda_rmsnorm,
    .rope = cuda_rope,
    .geglu = cuda_geglu,
    .add = cuda_add,
    .kv_init = cuda_kv_init,
    .kv_store = cuda_kv_store,
    .kv_copy = cuda_kv_copy,
    .attention = cuda_attention,
    .sync = cuda_sync,
    .step_begin = cuda_step_begin,
    .step_tokens = cuda_step_tokens,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .mem_stats = cuda_mem_stats,
    .topk = cuda_topk,
    .rmsnorm_add = cuda_rmsnorm_add,
    .qk_norm_rope = cuda_qk_norm_rope,
};

ts_status ts_backend_cuda_create(int device, ts_backend **out) {
    *out = NULL;
    int n = 0;
    TS_TRY(ts_cuda_device_count(&n));
    if (n == 0) return TS_FAIL(TS_UNSUPPORTED, "CUDA backend: no CUDA device (or no driver)");
    if (device < 0 || device >= n)
        return TS_FAIL(TS_INVAL, "CUDA backend: device %d (have %d)", device, n);
    CU(cudaSetDevice(device));
    ts_backend *b = ts_calloc(1, sizeof *b);
    cuda_ctx *c = ts_calloc(1, sizeof *c);
    if (!b || !c) {
        ts_free(b);
        ts_free(c);
        return TS_FAIL(TS_NOMEM, "CUDA backend");
    }
    b->ops = &g_cuda_ops;
    b->ctx = c;
    c->device = device;
    c->ids.n = c->pos.n = c->tab.n = c->hi.n = -1;
    const char *mmv = getenv("TESSERA_CUDA_MMV");
    c->mmv_fp32 = mmv && !strcmp(mmv, "fp32");
    const char *gemm = getenv("TESSERA_CUDA_GEMM");
    c->gemm_tc = !(gemm && !strcmp(gemm, "fp32"));
    const char *graph = getenv("TESSERA_CUDA_GRAPH");
    /* on by default (checked on an H100: bit-identical logits in test_cuda_topk, identical
     * greedy tokens over 300 / 200 steps of the 270M / 27B shapes, tg128 68.7 -> 79.7 tok/s
     * on the 27B); TESSERA_CUDA_GRAPH=0 turns it off */
    c->graph_on = !(graph && !strcmp(graph, "0"));
    /* attention kernels: auto (default) | basic | flash | splitk (docs/engine.md) */
    const char *attn = getenv("TESSERA_CUDA_ATTN");
    if (!attn || !*attn || !strcmp(attn, "auto")) c->attn_mode = ATTN_AUTO;
    else if (!strcmp(attn, "basic")) c->attn_mode = ATTN_BASIC;
    else if (!strcmp(attn, "flash")) c->attn_mode = ATTN_FLASH;
    else if (!strcmp(attn, "splitk")) c->attn_mode = ATTN_SPLITK;
    else {
        ts_free(b);
        ts_free(c);
        return TS_FAIL(TS_INVAL, "TESSERA_CUDA_ATTN=%s: expected auto, basic, flash or splitk",
                       attn);
    }
    if (cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        (void)cudaGetLastError();
        c->n_sm = 1;
    }
    cudaError_t e = cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        c->st = NULL;
        cuda_destroy(b);
        return TS_FAIL(TS_CUDA, "cudaStreamCreate: %s", cudaGetErrorString(e));
    }
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        c->dev_total = tot;
        c->used_at_create = tot - fr;
    } else {
        (void)cudaGetLastError();
    }
    *out = b;
    return TS_OK;
}

ts_status ts_backend_cuda_stream(ts_backend *b, void **stream) {
    *stream = NULL;
    if (!b || b->ops != &g_cuda_ops) return TS_FAIL(TS_INVAL, "not the CUDA backend");
    (void)W(b); /* device memory will change outside the backend's ops */
    *stream = (void *)C(b)->st;
    return TS_OK;
}
