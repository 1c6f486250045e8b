/* backend_cpu.c: the CPU backend: host memory, weights read in place from the mapped
 * GGUF, the optimized CPU kernels (kernels/cpu/matmul.h) or, in reference mode, the scalar
 * reference kernels (kernels/kernels.h). Attention runs over the paged KV cache with the
 * work split over (token, head) pairs across the thread pool.
 *
 * KV storage: per layer one K and one V array of (pages, page_size, kv_dim) floats; global
 * layers are sized by the global pool, local layers by the local pool. fp32, so that the
 * CPU engine is the exact reference for the other backends.
 */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "backend.h"
#include "sampler.h"
#include "kernels.h"
#include "cpu/matmul.h"
#include "quant.h"
#include "cpu/threadpool.h"

typedef struct {
    ts_threadpool *tp;
    int n_threads;
    bool reference;
    bool llamacpp_batch;    /* batch-size-dependent kernels as llama.cpp (not invariant) */
    void *scratch;          /* matmul scratch (quantized activations) */
    size_t scratch_bytes;
    float *row_scratch;     /* (n_threads, max cols): reference matmul / get_rows */
    int64_t row_scratch_cols;
    /* KV */
    ts_kv_layout kvl;
    uint8_t *is_global;
    float **k, **v;         /* (n_layer) */
    float *att_scratch;     /* (n_threads, n_ctx) attention scores */
    const float **att_rows; /* (n_threads, 2 * n_ctx) K and V row pointers of one query */
    float *att_acc;         /* (n_threads, TS_ROPE_CACHE_MAX * 32) KQV lane accumulators */
    int64_t max_cols[TS_TYPE_COUNT_]; /* widest matrix loaded, per weight type */
} cpu_ctx;

enum { TS_ROPE_CACHE_MAX = 1024 }; /* head_dim up to this uses the fast rope (stack cache) */

static cpu_ctx *C(ts_backend *b) { return (cpu_ctx *)b->ctx; }

static void cpu_destroy(ts_backend *b) {
    if (!b) return;
    cpu_ctx *c = C(b);
    if (c) {
        ts_threadpool_destroy(c->tp);
        ts_free(c->scratch);
        ts_free(c->row_scratch);
        if (c->k)
            for (int32_t l = 0; l < c->kvl.n_layer; l++) {
                ts_free(c->k[l]);
                ts_free(c->v[l]);
            }
        ts_free(c->k);
        ts_free(c->v);
        ts_free(c->is_global);
        ts_free(c->att_scratch);
        ts_free(c->att_rows);
        ts_free(c->att_acc);
        ts_free(c);
    }
    ts_free(b);
}

static ts_status cpu_alloc(ts_backend *b, size_t bytes, void **out) {
    (void)b;
    *out = ts_malloc(bytes ? bytes : 1);
    if (!*out) return TS_FAIL(TS_NOMEM, "CPU backend: %zu bytes", bytes);
    return TS_OK;
}

static void cpu_free(ts_backend *b, void *p) {
    (void)b;
    ts_free(p);
}

static ts_status ensure_row_scratch(cpu_ctx *c, int64_t cols) {
    if (cols <= c->row_scratch_cols) return TS_OK;
    float *n = ts_realloc(c->row_scratch, sizeof(float) * (size_t)cols * (size_t)c->n_threads);
    if (!n) return TS_FAIL(TS_NOMEM, "row scratch (%lld floats)", (long long)cols);
    c->row_scratch = n;
    c->row_scratch_cols = cols;
    return TS_OK;
}

static ts_status cpu_load_matrix(ts_backend *b, const ts_gguf_tensor *t, int64_t row0,
                                 int64_t n_rows, ts_wmat *out) {
    cpu_ctx *c = C(b);
    int64_t rows = t->n_dims >= 2 ? t->ne[1] : 1;
    if (row0 < 0 || n_rows <= 0 || row0 + n_rows > rows)
        return TS_FAIL(TS_INVAL, "tensor '%s': rows [%lld, %lld) outside [0, %lld)", t->name,
                       (long long)row0, (long long)(row0 + n_rows), (long long)rows);
    size_t stride;
    if (!ts_type_row_bytes(t->type, t->ne[0], &stride))
        return TS_FAIL(TS_FORMAT, "tensor '%s': bad row size", t->name);
    out->type = t->type;
    out->rows = n_rows;
    out->cols = t->ne[0];
    out->row_stride = stride;
    out->data = t->data + (size_t)row0 * stride;
    if (out->cols > c->max_cols[t->type]) c->max_cols[t->type] = out->cols;
    /* Sizes the matmul scratch once for the largest matrix seen (no allocation in steps).
     * Engine calls ts_backend_cpu_reserve for the token count; here only per-row needs. */
    TS_TRY(ensure_row_scratch(c, out->cols));
    return TS_OK;
}

static ts_status cpu_load_vector(ts_backend *b, const float *src, int64_t n, float **out) {
    TS_TRY(cpu_alloc(b, sizeof(float) * (size_t)n, (void **)out));
    memcpy(*out, src, sizeof(float) * (size_t)n);
    return TS_OK;
}

static ts_status cpu_copy(ts_backend *b, void *dst, const void *src, size_t n) {
    (void)b;
    memmove(dst, src, n);
    return TS_OK;
}

static ts_status cpu_get_rows(ts_backend *b, float *out, const ts_wmat *emb, const int32_t *ids,
                              int64_t n, float scale) {
    (void)b;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= emb->rows)
            return TS_FAIL(TS_RANGE, "token id %d outside the vocabulary [0, %lld)", ids[i],
                           (long long)emb->rows);
        const uint8_t *row = (const uint8_t *)emb->data + (size_t)ids[i] * emb->row_stride;
        float *o = out + i * emb->cols;
        if (!ts_dequantize_row(emb->type, row, o, emb->cols))
            return TS_FAIL(TS_UNSUPPORTED, "embedding type %u", emb->type);
        for (int64_t j = 0; j < emb->cols; j++) o[j] *= scale;
    }
    return TS_OK;
}

/* ---- matmul ---- */

typedef struct {
    cpu_ctx *c;
    float *y;
    const ts_wmat *w;
    const float *x;
    int64_t n_tok;
} ref_mm_task;

static void ref_mm_run(void *ctx, int ith, int nth) {
    ref_mm_task *t = ctx;
    int64_t r0 = t->w->rows * ith / nth, r1 = t->w->rows * (ith + 1) / nth;
    if (r1 <= r0) return;
    float *scratch = t->c->row_scratch + (size_t)ith * (size_t)t->c->row_scratch_cols;
    /* one slice of rows: y[:, r0:r1] */
    for (int64_t tok = 0; tok < t->n_tok; tok++) {
        const float *xr = t->x + tok * t->w->cols;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)t->w->data + (size_t)r * t->w->row_stride;
            ts_matmul_ref(t->w->type, row, t->w->row_stride, 1, t->w->cols, xr, 1,
                          &t->y[tok * t->w->rows + r], scratch);
        }
    }
}

static ts_status cpu_matmul(ts_backend *b, float *y, const ts_wmat *w, const float *x,
                            int64_t n_tok) {
    cpu_ctx *c = C(b);
    if (c->reference) {
        TS_TRY(ensure_row_scratch(c, w->cols));
        ref_mm_task t = {c, y, w, x, n_tok};
        ts_threadpool_run(c->tp, ref_mm_run, &t);
        return TS_OK;
    }
    size_t need = ts_matmul_scratch_bytes(w->type, w->cols, n_tok);
    if (need > c->scratch_bytes) {
        /* kv_init sized the scratch for n_batch tokens of every loaded matrix, so this only
         * runs for a caller that exceeds the layout it declared. */
        void *n = ts_realloc(c->scratch, need);
        if (!n) return TS_FAIL(TS_NOMEM, "matmul scratch (%zu bytes)", need);
        c->scratch = n;
        c->scratch_bytes = need;
    }
    return ts_matmul_ex(c->tp, w->type, w->data, w->row_stride, w->rows, w->cols, x, n_tok, y,
                     c->scratch,
                        c->llamacpp_batch ? TS_MM_LLAMACPP_BATCH : 0u);
}

static ts_status cpu_rmsnorm(ts_backend *b, float *out, const float *x, const float *w,
                             int64_t n_row, int64_t n, float eps) {
    if (C(b)->reference)
        ts_rmsnorm_ref(out, x, w, n_row, n, eps);
    else
        ts_rmsnorm_fast(out, x, w, n_row, n, eps);
    return TS_OK;
}

static ts_status cpu_rope(ts_backend *b, float *x, const int32_t *pos, int64_t n_tok,
                          int64_t n_head, int64_t head_dim, float base, float scale) {
    float cache[TS_ROPE_CACHE_MAX];
    if (C(b)->reference || head_dim > TS_ROPE_CACHE_MAX)
        ts_rope_ref(x, pos, n_tok, n_head, head_dim, base, scale);
    else
        ts_rope_fast(x, pos, n_tok, n_head, head_dim, base, scale, cache);
    return TS_OK;
}

static ts_status cpu_geglu(ts_backend *b, float *out, const float *gate, const float *up,
                           int64_t n) {
    if (C(b)->reference)
        ts_geglu_ref(out, gate, up, n);
    else
        ts_geglu_fast(out, gate, up, n);
    return TS_OK;
}

static ts_status cpu_add(ts_backend *b, float *x, const float *y, int64_t n) {
    (void)b;
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
    return TS_OK;
}

/* ---- KV cache and attention ---- */

static ts_status cpu_kv_init(ts_backend *b, const ts_kv_layout *l) {
    cpu_ctx *c = C(b);
    if (c->k) return TS_FAIL(TS_INVAL, "KV storage already initialized");
    c->kvl = *l;
    c->is_global = ts_malloc((size_t)l->n_layer);
    c->k = ts_calloc((size_t)l->n_layer, sizeof *c->k);
    c->v = ts_calloc((size_t)l->n_layer, sizeof *c->v);
    c->att_scratch = ts_malloc(sizeof(float) * (size_t)l->n_ctx * (size_t)c->n_threads);
    c->att_rows = ts_malloc(sizeof(float *) * 2 * (size_t)l->n_ctx * (size_t)c->n_threads);
    c->att_acc = ts_malloc(sizeof(float) * TS_ROPE_CACHE_MAX * 32 * (size_t)c->n_threads);
    if (!c->is_global || !c->k || !c->v || !c->att_scratch || !c->att_rows || !c->att_acc)
        return TS_FAIL(TS_NOMEM, "KV tables");
    memcpy(c->is_global, l->is_global, (size_t)l->n_layer);
    /* The matmul scratch for the largest step, now: nothing is allocated inside steps. */
    size_t need = 0;
    for (int ty = 0; ty < TS_TYPE_COUNT_; ty++)
        if (c->max_cols[ty] > 0) {
            size_t s = ts_matmul_scratch_bytes((uint32_t)ty, c->max_cols[ty],
                                               l->n_batch > 0 ? l->n_batch : 1);
            if (s > need) need = s;
        }
    if (need > c->scratch_bytes) {
        void *n = ts_realloc(c->scratch, need);
        if (!n) return TS_FAIL(TS_NOMEM, "matmul scratch (%zu bytes)", need);
        c->scratch = n;
        c->scratch_bytes = need;
    }
    c->kvl.is_global = c->is_global;
    for (int32_t i = 0; i < l->n_layer; i++) {
        int64_t pages = l->is_global[i] ? l->global_pages : l->local_pages;
        size_t n;
        if (!ts_mul_size((size_t)pages * (size_t)l->page_size, (size_t)l->kv_dim, &n) ||
            !ts_mul_size(n, sizeof(float), &n))
            return TS_FAIL(TS_NOMEM, "KV layer %d size overflows", i);
        c->k[i] = ts_calloc(1, n ? n : 1);
        c->v[i] = ts_calloc(1, n ? n : 1);
        if (!c->k[i] || !c->v[i])
            return TS_FAIL(TS_NOMEM, "KV cache layer %d: %zu bytes", i, 2 * n);
    }
    return TS_OK;
}

static size_t kv_slot(const ts_kvcache *kv, bool is_global, int32_t seq, int32_t pos) {
    int32_t ps = ts_kv_page_size(kv);
    int32_t page = is_global ? ts_kv_global_page(kv, seq, pos) : ts_kv_local_page(kv, seq, pos);
    return (size_t)page * (size_t)ps + (size_t)(pos % ps);
}

static ts_status cpu_kv_store(ts_backend *b, int32_t layer, bool is_global, const float *k,
                              const float *v, int64_t n_tok, const int32_t *pos,
                              const int32_t *seq, const ts_kvcache *kv) {
    cpu_ctx *c = C(b);
    const int32_t kd = c->kvl.kv_dim;
    for (int64_t t = 0; t < n_tok; t++) {
        size_t slot = kv_slot(kv, is_global, seq[t], pos[t]);
        memcpy(c->k[layer] + slot * (size_t)kd, k + t * kd, sizeof(float) * (size_t)kd);
        memcpy(c->v[layer] + slot * (size_t)kd, v + t * kd, sizeof(float) * (size_t)kd);
    }
    return TS_OK;
}

static ts_status cpu_kv_copy(ts_backend *b, const ts_kv_copy *cp, int32_t n) {
    cpu_ctx *c = C(b);
    if (!c->k) return TS_FAIL(TS_INVAL, "KV storage is not initialized");
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
            memcpy(c->k[l] + (size_t)cp[i].dst * page, c->k[l] + (size_t)cp[i].src * page,
                   sizeof(float) * page);
            memcpy(c->v[l] + (size_t)cp[i].dst * page, c->v[l] + (size_t)cp[i].src * page,
                   sizeof(float) * page);
        }
    }
    return TS_OK;
}

typedef struct {
    cpu_ctx *c;
    const ts_attn_args *a;
} attn_task;

static void attn_run(void *ctx, int ith, int nth) {
    attn_task *t = ctx;
    const ts_attn_args *a = t->a;
    cpu_ctx *c = t->c;
    const int64_t hd = a->head_dim, kd = (int64_t)a->n_head_kv * hd;
    const int64_t group = a->n_head / a->n_head_kv;
    const int64_t total = a->n_tok * a->n_head;
    float *score = c->att_scratch + (size_t)ith * (size_t)c->kvl.n_ctx;
    const float *K = c->k[a->layer], *V = c->v[a->layer];
    for (int64_t w = total * ith / nth; w < total * (ith + 1) / nth; w++) {
        int64_t tok = w / a->n_head, h = w % a->n_head, kvh = h / group;
        int32_t p = a->pos[tok], s = a->seq[tok];
        int32_t lo = a->is_global ? 0 : (p - a->window + 1 > 0 ? p - a->window + 1 : 0);
        const int32_t hi = a->hi ? a->hi[tok] : p; /* image blocks: bidirectional */
        const float *q = a->q + (tok * a->n_head + h) * hd;
        float m = -INFINITY;
        for (int32_t j = lo; j <= hi; j++) {
            const float *kr = K + kv_slot(a->kv, a->is_global, s, j) * (size_t)kd + kvh * hd;
            float d = 0.0f;
            for (int64_t i = 0; i < hd; i++) d += q[i] * kr[i];
            d *= a->scale;
            score[j - lo] = d;
            if (d > m) m = d;
        }
        float sum = 0.0f;
        for (int32_t j = lo; j <= hi; j++) {
            float e = expf(score[j - lo] - m);
            score[j - lo] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        float *o = a->out + (tok * a->n_head + h) * hd;
        for (int64_t i = 0; i < hd; i++) o[i] = 0.0f;
        for (int32_t j = lo; j <= hi; j++) {
            const float *vr = V + kv_slot(a->kv, a->is_global, s, j) * (size_t)kd + kvh * hd;
            float wj = score[j - lo] * inv;
            for (int64_t i = 0; i < hd; i++) o[i] += wj * vr[i];
        }
    }
}

/* Fast path (llama.cpp order, docs/engine.md): Q is scaled first (ggml_scale), KQ and
 * KQV dot products sum as ggml-cpu's f32 kernels. llamafile's sgemm refuses n < 2, so a
 * single-token step runs ggml_vec_dot_f32 for both KQ and KQV (4 x 8 FMA lanes over
 * blocks of 32 -- KV cell index j for KQV -- reduced (a0+a2)+(a1+a3), then
 * ((0+4)+(1+5))+((2+6)+(3+7))); with several tokens KQ stays ggml_vec_dot_f32 (Q is a
 * permuted, non-contiguous view) and KQV is tinyBLAS (8 FMA lanes, lane = j % 8, summed
 * ((0+4)+(2+6))+((1+5)+(3+7))). Softmax: ggml_v_expf, per group of 8 cells an fp32
 * hsum, group sums in double, scaled by the fp32 reciprocal. */
/* ggml_v_expf (ggml-cpu vec.h, AVX2+FMA branch) for one lane, bit for bit: the ARM
 * optimized-routines exp (range reduction by n = round(x / ln2), degree-5 polynomial, scale
 * by 2^n through the exponent bits, special cases for |n| > 126 and > 192). */
static inline float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline __attribute__((always_inline)) float ggml_expf(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const uint32_t e = u_of(z) << 23;
    const float k = f_of(e + u_of(1.0f));
    const bool c = fabsf(n) > 126.0f;
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                              fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, 0x1.ffffecp-1f * b);
    if (!c) return fmaf(j, k, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    const float s1 = f_of(g + 0x7f000000u);
    const float s2 = f_of(e - g);
    if (fabsf(n) > 192.0f) return s1 * s1;
    return fmaf(s2, j, s2) * s1;
}

static float hsum8_tb(const float *l) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* GGML_F32_VEC_REDUCE (AVX2) of ggml_vec_dot_f32's 4 x 8 lanes. */
static float reduce_ggml_f32(float a[4][8]) {
    float l[8];
    for (int k = 0; k < 8; k++) l[k] = (a[0][k] + a[2][k]) + (a[1][k] + a[3][k]);
    float t[4];
    for (int k = 0; k < 4; k++) t[k] = l[k] + l[k + 4];
    return (t[0] + t[1]) + (t[2] + t[3]);
}

static inline __attribute__((always_inline)) float dot_ggml_f32(const float *x, const float *y,
                                                                  int64_t n) {
    float a[4][8] = {{0}};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 8; k++) a[j][k] = fmaf(x[i + 8 * j + k], y[i + 8 * j + k], a[j][k]);
    float r = reduce_ggml_f32(a);
    for (; i < n; i++) r += x[i] * y[i];
    return r;
}

/* One (token, head) work item per call. The K and V rows of the visible positions are
 * looked up once; KQV runs with the positions outer and head_dim inner, but every output
 * element still receives exactly the same sequence of FMAs as ggml's kernels (lane by
 * position, positions ascending), so the results are bit-identical to the element-outer
 * form. target_clones: fmaf is one instruction where the CPU has FMA (dispatched at load
 * time), the libm call elsewhere; the value is the same either way. */
__attribute__((target_clones("fma", "default")))
static void attn_one_fast(const ts_attn_args *a, cpu_ctx *c, int ith, int64_t w) {
    const int64_t hd = a->head_dim, kd = (int64_t)a->n_head_kv * hd;
    const int64_t group = a->n_head / a->n_head_kv;
    float *score = c->att_scratch + (size_t)ith * (size_t)c->kvl.n_ctx;
    const float **krow = c->att_rows + (size_t)ith * 2 * (size_t)c->kvl.n_ctx;
    const float **vrow = krow + c->kvl.n_ctx;
    float *acc = c->att_acc + (size_t)ith * TS_ROPE_CACHE_MAX * 32;
    const float *K = c->k[a->layer], *V = c->v[a->layer];
    float qs[TS_ROPE_CACHE_MAX];
    const int64_t tok = w / a->n_head, h = w % a->n_head, kvh = h / group;
    const int32_t p = a->pos[tok], s = a->seq[tok];
    const int32_t lo = a->is_global ? 0 : (p - a->window + 1 > 0 ? p - a->window + 1 : 0);
    /* last visible key: the token itself (causal) or the end of its image block (the
     * bidirectional image mask; a CUDA kernel must follow the same rule) */
    const int32_t hi = a->hi ? a->hi[tok] : p;
    const int32_t ps = ts_kv_page_size(a->kv);
    for (int32_t j = lo; j <= hi; j++) {
        const int32_t page = a->is_global ? ts_kv_global_page(a->kv, s, j)
                                          : ts_kv_local_page(a->kv, s, j);
        const size_t off = ((size_t)page * (size_t)ps + (size_t)(j % ps)) * (size_t)kd +
                           (size_t)(kvh * hd);
        krow[j - lo] = K + off;
        vrow[j - lo] = V + off;
    }
    const float *q = a->q + (tok * a->n_head + h) * hd;
    for (int64_t i = 0; i < hd; i++) qs[i] = q[i] * a->scale;
    float m = -INFINITY;
    for (int32_t j = lo; j <= hi; j++) {
        const float d = dot_ggml_f32(krow[j - lo], qs, hd);
        score[j - lo] = d;
        if (d > m) m = d;
    }
    /* ggml_vec_soft_max_f32 (AVX2): ggml_v_expf over groups of 8 KV cells (cell =
     * position), each group's 8 values summed as hsum_float_8 in fp32, the group sums
     * added in double. Masked cells give exactly 0 and drop out of the hsum. */
    double sum = 0.0;
    for (int32_t g0 = lo & ~7; g0 <= hi; g0 += 8) {
        float l[8] = {0};
        for (int32_t j = g0 > lo ? g0 : lo; j < g0 + 8 && j <= hi; j++) {
            const float e = ggml_expf(score[j - lo] - m);
            score[j - lo] = e;
            l[j - g0] = e;
        }
        sum += (double)hsum8_tb(l);
    }
    const float inv = (float)(1.0 / sum);
    for (int32_t j = lo; j <= hi; j++) score[j - lo] *= inv;
    float *o = a->out + (tok * a->n_head + h) * hd;
    /* batch-invariant default: every token as llama.cpp's single-token step */
    if (!c->llamacpp_batch || a->n_tok == 1) {
        /* ggml_vec_dot_f32 over KV cells: lanes (j % 32) / 8, j % 8; acc[lane][hd] */
        memset(acc, 0, sizeof(float) * (size_t)hd * 32);
        for (int32_t j = lo; j <= hi; j++) {
            const float *vr = vrow[j - lo];
            const float sj = score[j - lo];
            float *al = acc + (size_t)(j & 31) * (size_t)hd;
            for (int64_t i = 0; i < hd; i++) al[i] = fmaf(vr[i], sj, al[i]);
        }
        for (int64_t i = 0; i < hd; i++) {
            float l4[4][8];
            for (int r = 0; r < 4; r++)
                for (int k = 0; k < 8; k++) l4[r][k] = acc[(size_t)(8 * r + k) * (size_t)hd + i];
            o[i] = reduce_ggml_f32(l4);
        }
    } else { /* tinyBLAS: lane j % 8; acc[i][8] */
        memset(acc, 0, sizeof(float) * (size_t)hd * 8);
        for (int32_t j = lo; j <= hi; j++) {
            const float *vr = vrow[j - lo];
            const float sj = score[j - lo];
            const int lane = j & 7;
            for (int64_t i = 0; i < hd; i++) acc[i * 8 + lane] = fmaf(vr[i], sj, acc[i * 8 + lane]);
        }
        for (int64_t i = 0; i < hd; i++) o[i] = hsum8_tb(acc + i * 8);
    }
}

static void attn_run_fast(void *ctx, int ith, int nth) {
    attn_task *t = ctx;
    const int64_t total = t->a->n_tok * t->a->n_head;
    for (int64_t w = total * ith / nth; w < total * (ith + 1) / nth; w++)
        attn_one_fast(t->a, t->c, ith, w);
}

static ts_status cpu_attention(ts_backend *b, const ts_attn_args *a) {
    cpu_ctx *c = C(b);
    for (int64_t t = 0; t < a->n_tok; t++)
        if (a->pos[t] < 0 || a->pos[t] >= c->kvl.n_ctx ||
            (a->hi && (a->hi[t] < a->pos[t] || a->hi[t] >= c->kvl.n_ctx)))
            return TS_FAIL(TS_RANGE, "position %d (attending up to %d) outside the context of %d",
                           a->pos[t], a->hi ? a->hi[t] : a->pos[t], c->kvl.n_ctx);
    attn_task t = {c, a};
    ts_threadpool_run(c->tp, c->reference || a->head_dim > TS_ROPE_CACHE_MAX ? attn_run : attn_run_fast, &t);
    return TS_OK;
}

static ts_status cpu_sync(ts_backend *b) {
    (void)b;
    return TS_OK;
}

/* Host memory: the reference top-k (sampler.h) per row. */
static ts_status cpu_topk(ts_backend *b, const float *x, int64_t rows, int64_t cols, int32_t k,
                          int32_t *ids, float *vals) {
    (void)b;
    if (rows < 0 || k < 1 || k > cols)
        return TS_FAIL(TS_INVAL, "topk: rows %lld, k %d of %lld", (long long)rows, k,
                       (long long)cols);
    for (int64_t r = 0; r < rows; r++)
        ts_topk_best_first(x + r * cols, cols, k, ids + r * k, vals + r * k);
    return TS_OK;
}

static const ts_backend_ops g_cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .load_matrix = cpu_load_matrix,
    .load_vector = cpu_load_vector,
    .to_host = cpu_copy,
    .to_device = cpu_copy,
    .copy = cpu_copy,
    .get_rows = cpu_get_rows,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .geglu = cpu_geglu,
    .add = cpu_add,
    .kv_init = cpu_kv_init,
    .kv_store = cpu_kv_store,
    .kv_copy = cpu_kv_copy,
    .attention = cpu_attention,
    .sync = cpu_sync,
    .topk = cpu_topk,
};

ts_status ts_backend_cpu_create(int n_threads, bool reference, ts_backend **out) {
    *out = NULL;
    ts_backend *b = ts_calloc(1, sizeof *b);
    cpu_ctx *c = ts_calloc(1, sizeof *c);
    if (!b || !c) {
        ts_free(b);
        ts_free(c);
        return TS_FAIL(TS_NOMEM, "CPU backend");
    }
    b->ops = &g_cpu_ops;
    b->ctx = c;
    c->reference = reference;
    if (!reference) ts_fast_ops_init();
    ts_status rc = ts_threadpool_create(n_threads, &c->tp);
    if (rc != TS_OK) {
        cpu_destroy(b);
        return rc;
    }
    c->n_threads = ts_threadpool_size(c->tp);
    *out = b;
    return TS_OK;
}

void ts_backend_cpu_set_llamacpp_batch(ts_backend *b, bool on) {
    if (b && b->ops == &g_cpu_ops) C(b)->llamacpp_batch = on;
}
