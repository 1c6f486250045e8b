/* backend.h: the compute backend interface of one rank (CPU now; CUDA behind the same
 * table). The forward pass (forward.c) is written once against it.
 *
 * A backend owns device memory for activations, weights it uploaded and the KV storage.
 * Activation pointers passed to ops are backend memory (host memory for the CPU backend).
 * Ops are enqueued in order; `sync` waits for all of them. Every op returns ts_status.
 * Shapes: x (rows, cols) is row-major fp32.
 */
#ifndef TS_BACKEND_H
#define TS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kvcache.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_backend ts_backend;

/* A weight matrix W (rows, cols) as the backend holds it: rows of `cols` elements of
 * `type`, row r at data + r * row_stride (backend memory). */
typedef struct ts_wmat {
    uint32_t type;
    int64_t rows, cols;
    size_t row_stride;
    const void *data;
} ts_wmat;

/* KV storage layout: per layer, pages of page_size slots of kv_dim floats for K and V. */
typedef struct ts_kv_layout {
    int32_t n_layer;
    const uint8_t *is_global;  /* (n_layer) */
    int64_t global_pages, local_pages;
    int32_t page_size;
    int32_t kv_dim;            /* n_head_kv * head_dim */
    int32_t n_ctx;             /* max positions of one sequence (attention scratch) */
    int32_t n_batch;           /* max tokens of one step: step scratch is sized for it */
    int32_t n_logit_rows;      /* max rows of one topk call (0: no topk scratch) */
    int64_t n_vocab;           /* logits row width for topk (0: none) */
    int32_t n_head, head_dim;  /* query heads of this rank, head size (CUDA split-K attention
                                * scratch; 0: none, split-K attention runs unsplit) */
} ts_kv_layout;

/* One attention call over a batch of tokens of possibly different sequences. */
typedef struct ts_attn_args {
    int32_t layer;
    bool is_global;
    int64_t n_tok;
    const float *q;          /* (n_tok, n_head * head_dim), normed and rotated */
    float *out;              /* (n_tok, n_head * head_dim) */
    const int32_t *pos;      /* (n_tok) host: position of each token */
    const int32_t *seq;      /* (n_tok) host: sequence slot of each token */
    /* (n_tok) host or NULL: last key position each token sees (>= pos; NULL = pos, causal).
     * Image soft tokens see their whole image block (bidirectional, docs/vision.md); the
     * window bound below still applies to local layers. Keys up to hi are stored by this
     * step's kv_store. Backends that lack it refuse a non-NULL hi (TS_UNSUPPORTED). */
    const int32_t *hi;
    int32_t n_head, n_head_kv, head_dim;
    int32_t window;          /* local layers: key k visible from query q iff q - k < window */
    float scale;             /* query_pre_attn_scalar^-0.5 */
    const ts_kvcache *kv;    /* page tables */
} ts_attn_args;

/* Device memory of a backend (CUDA); all zero where not tracked (CPU). */
typedef struct ts_backend_mem {
    uint64_t device_total;     /* the device's memory (cudaMemGetInfo) */
    uint64_t used_at_create;   /* used on the device (by anyone) when the backend started */
    uint64_t used_now;         /* used on the device now */
    uint64_t alloc_now;        /* live bytes of this backend's own allocations */
    uint64_t alloc_peak;       /* high-water mark of alloc_now (weights, KV, step buffers,
                                * staging and load-time temporaries) */
} ts_backend_mem;

typedef struct ts_backend_ops {
    const char *name;
    void (*destroy)(ts_backend *b);

    ts_status (*alloc)(ts_backend *b, size_t bytes, void **out);
    void (*free)(ts_backend *b, void *p);
    /* Makes rows [row0, row0 + n_rows) of a GGUF matrix usable (CPU: points into the
     * mapping; CUDA: uploads). */
    ts_status (*load_matrix)(ts_backend *b, const ts_gguf_tensor *t, int64_t row0,
                             int64_t n_rows, ts_wmat *out);
    /* A vector of n floats (host) copied to backend memory. */
    ts_status (*load_vector)(ts_backend *b, const float *src, int64_t n, float **out);
    ts_status (*to_host)(ts_backend *b, void *dst, const void *src, size_t n);
    ts_status (*to_device)(ts_backend *b, void *dst, const void *src, size_t n);
    /* backend memory to backend memory */
    ts_status (*copy)(ts_backend *b, void *dst, const void *src, size_t n);

    /* out (n, cols) = emb rows ids[i] (host ids) * scale. */
    ts_status (*get_rows)(ts_backend *b, float *out, const ts_wmat *emb, const int32_t *ids,
                          int64_t n, float scale);
    /* y (n_tok, w.rows) = x (n_tok, w.cols) . W^T */
    ts_status (*matmul)(ts_backend *b, float *y, const ts_wmat *w, const float *x,
                        int64_t n_tok);
    ts_status (*rmsnorm)(ts_backend *b, float *out, const float *x, const float *w,
                         int64_t n_row, int64_t n, float eps);
    ts_status (*rope)(ts_backend *b, float *x, const int32_t *pos, int64_t n_tok,
                      int64_t n_head, int64_t head_dim, float base, float scale);
    ts_status (*geglu)(ts_backend *b, float *out, const float *gate, const float *up,
                       int64_t n);
    ts_status (*add)(ts_backend *b, float *x, const float *y, int64_t n);

    ts_status (*kv_init)(ts_backend *b, const ts_kv_layout *l);
    /* Stores k, v (n_tok, kv_dim) at (seq[i], pos[i]) of `layer`. */
    ts_status (*kv_store)(ts_backend *b, int32_t layer, bool is_global, const float *k,
                          const float *v, int64_t n_tok, const int32_t *pos,
                          const int32_t *seq, const ts_kvcache *kv);
    ts_status (*attention)(ts_backend *b, const ts_attn_args *a);
    ts_status (*sync)(ts_backend *b);

    /* Optional (NULL: not provided). */
    /* Called once per step before its first op with the step's positions and sequences:
     * the backend may prepare per-step state (CUDA: the KV page table of the batch, used
     * by every layer's kv_store / attention with the same pos / seq / n_tok until the next
     * sync). */
    ts_status (*step_begin)(ts_backend *b, const int32_t *pos, const int32_t *seq,
                            int64_t n_tok, const ts_kvcache *kv);
    /* Token ids of the step (host), uploaded before the step's ops so that a recorded step
     * (graph_begin) reads them from device memory. Ids are checked against n_vocab. */
    ts_status (*step_tokens)(ts_backend *b, const int32_t *ids, int64_t n, int64_t n_vocab);
    /* Recorded steps (CUDA graphs). graph_begin(key): 1 = the recording of this key was
     * launched (the caller skips the ops of the region); 0 = recording started: the caller
     * enqueues the region's ops (only ops whose per-step inputs were uploaded by
     * step_begin / step_tokens, no host reads or syncs), then calls graph_end(ok): TS_OK
     * when the recording was launched (the region is done), else the caller runs the
     * region again, unrecorded; -1 = not recording (run the ops). key NULL only asks:
     * 0 = recording is on, -1 = off (nothing starts). */
    int (*graph_begin)(ts_backend *b, const void *key, size_t key_bytes);
    ts_status (*graph_end)(ts_backend *b, bool ok);
    void (*mem_stats)(ts_backend *b, ts_backend_mem *out);
    /* For each of `rows` rows of x (rows, cols) (backend memory): the k best entries, best
     * first, into host ids[r * k ..] and vals[r * k ..]. Order: larger value first, equal
     * values by lower index; NaN ranks above everything (so a NaN row is seen by the
     * caller). 1 <= k <= cols. Synchronous (results on the host on return). */
    ts_status (*topk)(ts_backend *b, const float *x, int64_t rows, int64_t cols, int32_t k,
                      int32_t *ids, float *vals);
    /* Copies KV pages (keys and values, every layer of the copy's kind): page src to page
     * dst, in order after the ops before it (the prefix cache's snapshots). */
    ts_status (*kv_copy)(ts_backend *b, const ts_kv_copy *copies, int32_t n);
    /* Fused ops (optional; NULL: the engine runs the ops they stand for, in that order, and
     * a backend's fused op gives bit-identical results to them):
     * rmsnorm_add = rmsnorm(tmp, y, w, n_row, n, eps); add(x, tmp, n_row * n) (y unchanged).
     * qk_norm_rope = rmsnorm(q, q, qw, n_tok * n_head, head_dim, eps); rmsnorm(k, k, kw,
     * n_tok * n_head_kv, head_dim, eps); rope(q, pos, n_tok, n_head, head_dim, base, scale);
     * rope(k, pos, n_tok, n_head_kv, head_dim, base, scale). */
    ts_status (*rmsnorm_add)(ts_backend *b, float *x, const float *y, const float *w,
                             int64_t n_row, int64_t n, float eps);
    ts_status (*qk_norm_rope)(ts_backend *b, float *q, float *k, const float *qw,
                              const float *kw, const int32_t *pos, int64_t n_tok,
                              int64_t n_head, int64_t n_head_kv, int64_t head_dim, float eps,
                              float base, float scale);
} ts_backend_ops;

struct ts_backend {
    const ts_backend_ops *ops;
    void *ctx;
};

/* The CPU backend. n_threads <= 0: all online CPUs. reference = true uses the scalar
 * reference kernels throughout (slow; the semantics), else the optimized CPU path. */
ts_status ts_backend_cpu_create(int n_threads, bool reference, ts_backend **out);
/* Fast path only: choose kernels by batch size as llama.cpp does (its batched prompt
 * numerics) instead of the default batch-invariant kernels. See docs/engine.md. */
void ts_backend_cpu_set_llamacpp_batch(ts_backend *b, bool on);

/* The CUDA backend on `device` (shard/backend_cuda.c; built only with CUDA, see
 * TS_HAVE_CUDA). TS_UNSUPPORTED when there is no CUDA device or driver. */
ts_status ts_backend_cuda_create(int device, ts_backend **out);
/* The CUDA backend's stream (a cudaStream_t) that every op is enqueued on; TS_INVAL for
 * another backend. For device transports (transport.h bind_stream). */
ts_status ts_backend_cuda_stream(ts_backend *b, void **stream);

static inline void ts_backend_destroy(ts_backend *b) {
    if (b) b->ops->destroy(b);
}

#ifdef __cplusplus
}
#endif
#endif
