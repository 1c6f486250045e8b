/* vision.c: SigLIP vision encoder + Gemma 3 multimodal projector on the CPU (vision.h).
 * ref: ../shared/docs/gemma3-spec.md 6.1 / 6.2 / 6.5; HF modeling_siglip.py,
 * modeling_gemma3.py (Gemma3MultiModalProjector); llama.cpp tools/mtmd clip.cpp (gemma3).
 *
 * DESIGN
 * Load: every tensor is converted to an fp32 host array in HF's layout (Linear weights
 * (out, in), the projection transposed once to (text, vision) so that every matmul is
 * y = x . W^T + b). The GGUF and safetensors loaders differ only in how a tensor is found
 * and its shape checked (fetch()).
 * Encode: activations x (n_patches, n_embd); per layer h = LN1(x); q, k, v = h W^T + b;
 * attention per (head, query) row over all patches (scores in a per-thread row buffer);
 * x += out_proj; h = LN2(x); x += fc2(gelu_tanh(fc1(h))). Then post LN, pooling, RMSNorm,
 * projection. The optimized path uses ts_matmul (F32 weights) and runs attention rows
 * on the thread pool; the reference path is scalar loops on one thread.
 */
#include "vision.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "cpu/matmul.h"
#include "cpu/threadpool.h"
#include "gguf.h"
#include "quant.h"
#include "safetensors.h"
#include "vision_cuda.h"

typedef ts_vision_layer_w vlayer;

struct ts_vision {
    ts_vision_config c;
    ts_vision_params p;
    float *patch_w, *patch_b; /* (D, 3 * P * P), (D) */
    float *pos;               /* (n_patches, D) */
    float *post_w, *post_b;   /* (D) */
    float *norm_w;            /* (D): 1 + w of mm_soft_emb_norm */
    float *proj;              /* (proj_dim, D): transposed mm_input_projection */
    vlayer *L;
    ts_threadpool *tp;
    ts_vision_cuda *cu; /* backend "cuda": the device copy (host weights freed) */
    /* scratch */
    float *x, *h, *q, *k, *v, *att, *ff, *cols, *pooled, *row, *pix;
    int64_t ff_chunk; /* tokens per MLP chunk: ff is (ff_chunk, n_ff) */
    void *mm_scratch;
};

/* ---- loading ---- */

typedef struct {
    ts_gguf *g;
    ts_st *st;
    char vpre[64], ppre[64]; /* HF prefixes of the vision tower and the projector */
} src_t;

/* Fetches one tensor as fp32: GGUF by `gname` (ne = reversed HF shape), safetensors by
 * HF prefix + `hname`. shape: HF order, nd dims. */
static ts_status fetch(src_t *s, const char *gname, const char *hname, bool projector,
                       int nd, const int64_t *shape, float **out) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *dst = ts_malloc(sizeof(float) * (size_t)n);
    if (!dst) return TS_FAIL(TS_NOMEM, "tensor '%s' (%lld floats)", gname, (long long)n);
    *out = dst;
    if (s->g) {
        const ts_gguf_tensor *t = ts_gguf_find_tensor(s->g, gname);
        if (!t) return TS_FAIL(TS_FORMAT, "mmproj: tensor '%s' is missing", gname);
        bool ok = t->n_elems == n;
        for (int i = 0; ok && i < nd; i++) ok = t->ne[i] == shape[nd - 1 - i];
        if (!ok)
            return TS_FAIL(TS_FORMAT, "mmproj: tensor '%s' has shape [%lld, %lld, %lld, %lld], "
                           "expected %lld elements", gname, (long long)t->ne[0],
                           (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                           (long long)n);
        const int64_t row = t->ne[0];
        size_t rb;
        if (!ts_type_row_bytes(t->type, row, &rb))
            return TS_FAIL(TS_UNSUPPORTED, "mmproj: tensor '%s' type %s", gname,
                           ts_type_name(t->type));
        for (int64_t r = 0; r < n / row; r++)
            if (!ts_dequantize_row(t->type, t->data + (size_t)r * rb, dst + r * row, row))
                return TS_FAIL(TS_UNSUPPORTED, "mmproj: tensor '%s' type %s", gname,
                               ts_type_name(t->type));
    } else {
        char name[256];
        snprintf(name, sizeof name, "%s%s", projector ? s->ppre : s->vpre, hname);
        const ts_st_tensor *t = ts_st_find(s->st, name);
        if (!t) return TS_FAIL(TS_FORMAT, "checkpoint: tensor '%s' is missing", name);
        bool ok = t->n_elems == n && (int)t->n_dims == nd;
        for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == shape[i];
        if (!ok)
            return TS_FAIL(TS_FORMAT, "checkpoint: tensor '%s' has %lld elements in %u dims, "
                           "expected %lld", name, (long long)t->n_elems, t->n_dims, (long long)n);
        TS_TRY(ts_st_read_f32(t, 0, n, dst));
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return TS_FAIL(TS_FORMAT, "tensor '%s' holds a non-finite value", gname);
    return TS_OK;
}

static ts_status config_gguf(ts_gguf *g, ts_vision_config *c) {
    ts_gguf_str s;
    if (ts_gguf_get_str(g, "general.architecture", &s) != TS_OK || s.len != 4 ||
        memcmp(s.ptr, "clip", 4))
        return TS_FAIL(TS_FORMAT, "not an mmproj GGUF (general.architecture is not 'clip')");
    const char *pt = "clip.projector_type";
    if (ts_gguf_get_str(g, pt, &s) != TS_OK) pt = "clip.vision.projector_type";
    if (ts_gguf_get_str(g, pt, &s) == TS_OK && !(s.len == 6 && !memcmp(s.ptr, "gemma3", 6)))
        return TS_FAIL(TS_UNSUPPORTED, "mmproj projector type '%.*s' (only gemma3)", (int)s.len,
                       s.ptr);
    uint32_t u;
#define U(key, field)                                                                      \
    TS_TRY(ts_gguf_get_u32(g, key, &u));                                                   \
    if (u == 0 || u > (1u << 20)) return TS_FAIL(TS_FORMAT, "%s = %u out of range", key, u); \
    c->field = (int32_t)u
    U("clip.vision.image_size", image_size);
    U("clip.vision.patch_size", patch_size);
    U("clip.vision.embedding_length", n_embd);
    U("clip.vision.feed_forward_length", n_ff);
    U("clip.vision.block_count", n_layer);
    U("clip.vision.attention.head_count", n_head);
#undef U
    if (ts_gguf_get_f32(g, "clip.vision.attention.layer_norm_epsilon", &c->eps) != TS_OK)
        c->eps = 1e-6f;
    c->pool = 0;
    if (ts_gguf_get_u32(g, "clip.vision.projector.scale_factor", &u) == TS_OK) c->pool = (int32_t)u;
    const char *mk[2] = {"clip.vision.image_mean", "clip.vision.image_std"};
    for (int j = 0; j < 2; j++) {
        float *dst = j ? c->std : c->mean;
        const ts_gguf_value *a;
        if (ts_gguf_get_arr(g, mk[j], &a) == TS_OK && a->v.arr.n == 3 &&
            ts_gguf_vtype_is_float(a->v.arr.elem_type))
            for (int i = 0; i < 3; i++) dst[i] = (float)ts_gguf_arr_f64(a, (uint64_t)i);
    }
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "mm.input_projection.weight");
    if (!t) return TS_FAIL(TS_FORMAT, "mmproj: tensor 'mm.input_projection.weight' is missing");
    c->proj_dim = (int32_t)t->ne[0];
    return TS_OK;
}

static ts_status json_int(json_t *o, const char *key, int32_t def, int32_t *out) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    if (!v) {
        *out = def;
        return TS_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 20))
        return TS_FAIL(TS_FORMAT, "config.json: '%s' is not a positive integer", key);
    *out = (int32_t)json_integer_value(v);
    return TS_OK;
}

/* config.json of Gemma3ForConditionalGeneration / ShieldGemma2: vision_config (defaults:
 * Gemma 3's SigLIP, which HF omits from saved configs when unchanged), mm_tokens_per_image,
 * text_config.hidden_size. */
static ts_status config_hf(const char *dir, ts_vision_config *c, int32_t *mm_tokens) {
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return TS_FAIL(TS_INVAL, "checkpoint path too long");
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return TS_FAIL(TS_FORMAT, "%s: %s (line %d)", path, je.text, je.line);
    json_t *vc = json_object_get(root, "vision_config");
    ts_status rc = TS_OK;
    TS_TRY_GOTO(json_int(vc, "image_size", 896, &c->image_size), rc, done);
    TS_TRY_GOTO(json_int(vc, "patch_size", 14, &c->patch_size), rc, done);
    TS_TRY_GOTO(json_int(vc, "hidden_size", 1152, &c->n_embd), rc, done);
    TS_TRY_GOTO(json_int(vc, "intermediate_size", 4304, &c->n_ff), rc, done);
    TS_TRY_GOTO(json_int(vc, "num_hidden_layers", 27, &c->n_layer), rc, done);
    TS_TRY_GOTO(json_int(vc, "num_attention_heads", 16, &c->n_head), rc, done);
    TS_TRY_GOTO(json_int(root, "mm_tokens_per_image", 256, mm_tokens), rc, done);
    json_t *e = vc ? json_object_get(vc, "layer_norm_eps") : NULL;
    c->eps = e && json_is_number(e) ? (float)json_number_value(e) : 1e-6f;
done:
    json_decref(root);
    return rc;
}

static ts_status finish_config(ts_vision_config *c, int32_t mm_tokens) {
    if (c->image_size % c->patch_size)
        return TS_FAIL(TS_FORMAT, "image size %d is not a multiple of the patch size %d",
                       c->image_size, c->patch_size);
    c->n_side = c->image_size / c->patch_size;
    c->n_patches = c->n_side * c->n_side;
    if (c->pool <= 0) {
        int32_t side = (int32_t)lround(sqrt((double)mm_tokens));
        if (side <= 0 || side * side != mm_tokens || c->n_side % side)
            return TS_FAIL(TS_FORMAT, "%d tokens per image do not pool a %dx%d patch grid",
                           mm_tokens, c->n_side, c->n_side);
        c->pool = c->n_side / side;
    }
    if (c->n_side % c->pool)
        return TS_FAIL(TS_FORMAT, "pooling kernel %d does not divide the %d-patch side", c->pool,
                       c->n_side);
    c->n_tokens = (c->n_side / c->pool) * (c->n_side / c->pool);
    if (c->n_embd % c->n_head)
        return TS_FAIL(TS_FORMAT, "vision width %d is not a multiple of %d heads", c->n_embd,
                       c->n_head);
    if ((int64_t)c->n_patches * c->n_ff > (int64_t)1 << 31 || c->proj_dim <= 0)
        return TS_FAIL(TS_FORMAT, "vision sizes out of range");
    return TS_OK;
}

static ts_status load_weights(ts_vision *v, src_t *s) {
    const ts_vision_config *c = &v->c;
    const int64_t D = c->n_embd, F = c->n_ff, P = c->patch_size;
    bool swap = false; /* legacy mmproj: fc1 under ffn_down, fc2 under ffn_up */
    if (s->g) {
        const ts_gguf_tensor *t = ts_gguf_find_tensor(s->g, "v.blk.0.ffn_down.weight");
        swap = t && F != D && t->ne[0] == D;
    }
    const int64_t sh_patch[4] = {D, 3, P, P}, sh_d[1] = {D}, sh_pos[2] = {c->n_patches, D},
                  sh_dd[2] = {D, D}, sh_fd[2] = {F, D}, sh_df[2] = {D, F}, sh_f[1] = {F},
                  sh_proj[2] = {D, c->proj_dim};
    TS_TRY(fetch(s, "v.patch_embd.weight", "embeddings.patch_embedding.weight", false, 4, sh_patch,
                 &v->patch_w));
    TS_TRY(fetch(s, "v.patch_embd.bias", "embeddings.patch_embedding.bias", false, 1, sh_d,
                 &v->patch_b));
    TS_TRY(fetch(s, "v.position_embd.weight", "embeddings.position_embedding.weight", false, 2,
                 sh_pos, &v->pos));
    for (int32_t l = 0; l < c->n_layer; l++) {
        vlayer *L = &v->L[l];
        char g[96], h[128];
#define T(field, gs, hs, nd, shape)                                                        \
    snprintf(g, sizeof g, "v.blk.%d.%s", l, gs);                                           \
    snprintf(h, sizeof h, "encoder.layers.%d.%s", l, hs);                                  \
    TS_TRY(fetch(s, g, h, false, nd, shape, &L->field))
        T(ln1_w, "ln1.weight", "layer_norm1.weight", 1, sh_d);
        T(ln1_b, "ln1.bias", "layer_norm1.bias", 1, sh_d);
        T(ln2_w, "ln2.weight", "layer_norm2.weight", 1, sh_d);
        T(ln2_b, "ln2.bias", "layer_norm2.bias", 1, sh_d);
        T(q_w, "attn_q.weight", "self_attn.q_proj.weight", 2, sh_dd);
        T(q_b, "attn_q.bias", "self_attn.q_proj.bias", 1, sh_d);
        T(k_w, "attn_k.weight", "self_attn.k_proj.weight", 2, sh_dd);
        T(k_b, "attn_k.bias", "self_attn.k_proj.bias", 1, sh_d);
        T(v_w, "attn_v.weight", "self_attn.v_proj.weight", 2, sh_dd);
        T(v_b, "attn_v.bias", "self_attn.v_proj.bias", 1, sh_d);
        T(o_w, "attn_out.weight", "self_attn.out_proj.weight", 2, sh_dd);
        T(o_b, "attn_out.bias", "self_attn.out_proj.bias", 1, sh_d);
        T(fc1_w, swap ? "ffn_down.weight" : "ffn_up.weight", "mlp.fc1.weight", 2, sh_fd);
        T(fc1_b, swap ? "ffn_down.bias" : "ffn_up.bias", "mlp.fc1.bias", 1, sh_f);
        T(fc2_w, swap ? "ffn_up.weight" : "ffn_down.weight", "mlp.fc2.weight", 2, sh_df);
        T(fc2_b, swap ? "ffn_up.bias" : "ffn_down.bias", "mlp.fc2.bias", 1, sh_d);
#undef T
    }
    TS_TRY(fetch(s, "v.post_ln.weight", "post_layernorm.weight", false, 1, sh_d, &v->post_w));
    TS_TRY(fetch(s, "v.post_ln.bias", "post_layernorm.bias", false, 1, sh_d, &v->post_b));
    TS_TRY(fetch(s, "mm.soft_emb_norm.weight", "mm_soft_emb_norm.weight", true, 1, sh_d,
                 &v->norm_w));
    if (!s->g) /* HF stores w; the GGUF converter bakes in the + 1 */
        for (int64_t i = 0; i < D; i++) v->norm_w[i] += 1.0f;
    float *pj = NULL;
    ts_status rc = fetch(s, "mm.input_projection.weight", "mm_input_projection_weight", true, 2,
                         sh_proj, &pj);
    if (rc == TS_OK) {
        v->proj = ts_malloc(sizeof(float) * (size_t)D * (size_t)c->proj_dim);
        if (!v->proj) rc = TS_FAIL(TS_NOMEM, "projection");
        else
            for (int64_t i = 0; i < D; i++)
                for (int64_t j = 0; j < c->proj_dim; j++) v->proj[j * D + i] = pj[i * c->proj_dim + j];
    }
    ts_free(pj);
    return rc;
}

/* The directory of an HF checkpoint path (the path itself if it is a directory). */
static void hf_dir(const char *path, char *dir, size_t n) {
    size_t len = strlen(path);
    const bool file = (len > 12 && !strcmp(path + len - 12, ".safetensors")) ||
                      (len > 5 && !strcmp(path + len - 5, ".json"));
    snprintf(dir, n, "%s", path);
    if (file) {
        char *sl = strrchr(dir, '/');
        if (sl) *sl = 0;
        else snprintf(dir, n, ".");
    }
}

static ts_status alloc_f(float **p, int64_t a, int64_t b) {
    size_t n;
    if (!ts_mul_size((size_t)a, (size_t)b, &n) || !ts_mul_size(n, sizeof(float), &n))
        return TS_FAIL(TS_NOMEM, "vision buffer size overflows");
    *p = ts_malloc(n ? n : 1);
    return *p ? TS_OK : TS_FAIL(TS_NOMEM, "vision buffer (%zu bytes)", n);
}

static void free_layer(vlayer *L) {
    float *f[] = {L->ln1_w, L->ln1_b, L->ln2_w, L->ln2_b, L->q_w, L->q_b, L->k_w,
                  L->k_b, L->v_w, L->v_b, L->o_w, L->o_b, L->fc1_w, L->fc1_b,
                  L->fc2_w, L->fc2_b};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ts_free(f[i]);
    memset(L, 0, sizeof *L);
}

/* Uploads the weights to the device (vision_cuda.c) and frees the host copies. */
static ts_status cuda_init(ts_vision *v) {
#ifdef TS_HAVE_CUDA
    const ts_vision_weights w = {.patch_w = v->patch_w, .patch_b = v->patch_b, .pos = v->pos,
                                 .post_w = v->post_w, .post_b = v->post_b,
                                 .norm_w = v->norm_w, .proj = v->proj, .L = v->L};
    TS_TRY(ts_vision_cuda_create(&v->c, &w, v->p.device, &v->cu));
    for (int32_t l = 0; l < v->c.n_layer; l++) free_layer(&v->L[l]);
    float **f[] = {&v->patch_w, &v->patch_b, &v->pos, &v->post_w, &v->post_b, &v->norm_w,
                   &v->proj};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        ts_free(*f[i]);
        *f[i] = NULL;
    }
    return TS_OK;
#else
    (void)v;
    return TS_FAIL(TS_UNSUPPORTED, "vision backend 'cuda': this build has no CUDA "
                   "(configure with -DTESSERA_CUDA=ON)");
#endif
}

ts_status ts_vision_load(const char *path, const ts_vision_params *p, ts_vision **out) {
    *out = NULL;
    if (!path) return TS_FAIL(TS_INVAL, "vision model path is NULL");
    ts_vision *v = ts_calloc(1, sizeof *v);
    if (!v) return TS_FAIL(TS_NOMEM, "vision model");
    if (p) v->p = *p;
    ts_vision_config *c = &v->c;
    for (int i = 0; i < 3; i++) c->mean[i] = c->std[i] = 0.5f;
    src_t s = {0};
    ts_status rc = TS_OK;
    int32_t mm_tokens = 256;
    const size_t len = strlen(path);
    if (len > 5 && !strcmp(path + len - 5, ".gguf")) {
        TS_TRY_GOTO(ts_gguf_open(path, &s.g), rc, fail);
        TS_TRY_GOTO(config_gguf(s.g, c), rc, fail);
    } else {
        char dir[4096];
        hf_dir(path, dir, sizeof dir);
        TS_TRY_GOTO(ts_st_open(path, &s.st), rc, fail);
        TS_TRY_GOTO(config_hf(dir, c, &mm_tokens), rc, fail);
        /* tensor name prefixes: original checkpoints ("vision_tower.vision_model.",
         * "multi_modal_projector."), transformers 5 ("vision_tower."), ShieldGemma 2 and
         * in-memory names ("model." in front), ShieldGemma 2 saved by transformers 5
         * ("model.model.") */
        static const char *vp[] = {"vision_tower.vision_model.", "vision_tower.",
                                   "model.vision_tower.vision_model.", "model.vision_tower.",
                                   "model.model.vision_tower.vision_model.",
                                   "model.model.vision_tower."};
        static const char *pp[] = {"multi_modal_projector.", "model.multi_modal_projector.",
                                   "model.model.multi_modal_projector."};
        char name[256];
        for (size_t i = 0; i < 6 && !s.vpre[0]; i++) {
            snprintf(name, sizeof name, "%sembeddings.patch_embedding.weight", vp[i]);
            if (ts_st_find(s.st, name)) snprintf(s.vpre, sizeof s.vpre, "%s", vp[i]);
        }
        for (size_t i = 0; i < 3 && !s.ppre[0]; i++) {
            snprintf(name, sizeof name, "%smm_input_projection_weight", pp[i]);
            const ts_st_tensor *t = ts_st_find(s.st, name);
            if (t && t->n_dims == 2) {
                snprintf(s.ppre, sizeof s.ppre, "%s", pp[i]);
                c->proj_dim = (int32_t)t->shape[1];
            }
        }
        if (!s.vpre[0] || !s.ppre[0]) {
            rc = TS_FAIL(TS_FORMAT, "%s: no vision tower / multimodal projector tensors "
                         "(vision_tower.*, multi_modal_projector.*)", path);
            goto fail;
        }
    }
    TS_TRY_GOTO(finish_config(c, mm_tokens), rc, fail);
    v->L = ts_calloc((size_t)c->n_layer, sizeof *v->L);
    if (!v->L) {
        rc = TS_FAIL(TS_NOMEM, "vision layers");
        goto fail;
    }
    TS_TRY_GOTO(load_weights(v, &s), rc, fail);
    if (v->p.backend && strcmp(v->p.backend, "cpu")) {
        if (strcmp(v->p.backend, "cuda")) {
            rc = TS_FAIL(TS_INVAL, "vision backend '%s' (cpu or cuda)", v->p.backend);
            goto fail;
        }
        TS_TRY_GOTO(cuda_init(v), rc, fail);
        v->p.backend = "cuda";
        TS_TRY_GOTO(alloc_f(&v->pix, 3, (int64_t)c->image_size * c->image_size), rc, fail);
        ts_gguf_close(s.g);
        ts_st_close(s.st);
        *out = v;
        return TS_OK;
    }
    v->p.backend = "cpu";
    TS_TRY_GOTO(ts_threadpool_create(v->p.reference ? 1 : v->p.n_threads, &v->tp), rc, fail);
    const int64_t N = c->n_patches, D = c->n_embd;
    const int nth = ts_threadpool_size(v->tp);
    TS_TRY_GOTO(alloc_f(&v->x, N, D), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->h, N, D), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->q, N, D), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->k, N, D), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->v, N, D), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->att, N, D), rc, fail);
    v->ff_chunk = N < 256 ? N : 256;
    TS_TRY_GOTO(alloc_f(&v->ff, v->ff_chunk, c->n_ff), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->cols, N, 3 * (int64_t)c->patch_size * c->patch_size), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->pooled, c->n_tokens, D), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->row, nth, N), rc, fail);
    TS_TRY_GOTO(alloc_f(&v->pix, 3, (int64_t)c->image_size * c->image_size), rc, fail);
    {
        int64_t widest = D > c->n_ff ? D : c->n_ff;
        if (3 * c->patch_size * c->patch_size > widest) widest = 3 * c->patch_size * c->patch_size;
        size_t sb = ts_matmul_scratch_bytes(TS_TYPE_F32, widest, N);
        v->mm_scratch = ts_malloc(sb ? sb : 1);
        if (!v->mm_scratch) {
            rc = TS_FAIL(TS_NOMEM, "matmul scratch");
            goto fail;
        }
    }
    ts_gguf_close(s.g);
    ts_st_close(s.st);
    *out = v;
    return TS_OK;
fail:
    ts_error_prefix("%s", path);
    ts_gguf_close(s.g);
    ts_st_close(s.st);
    ts_vision_destroy(v);
    return rc;
}

void ts_vision_destroy(ts_vision *v) {
    if (!v) return;
    if (v->L)
        for (int32_t l = 0; l < v->c.n_layer; l++) free_layer(&v->L[l]);
#ifdef TS_HAVE_CUDA
    ts_vision_cuda_destroy(v->cu);
#endif
    float *f[] = {v->patch_w, v->patch_b, v->pos, v->post_w, v->post_b, v->norm_w, v->proj,
                  v->x, v->h, v->q, v->k, v->v, v->att, v->ff, v->cols, v->pooled, v->row, v->pix};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ts_free(f[i]);
    ts_free(v->L);
    ts_free(v->mm_scratch);
    ts_threadpool_destroy(v->tp);
    ts_free(v);
}

const ts_vision_config *ts_vision_get_config(const ts_vision *v) { return &v->c; }

const char *ts_vision_backend(const ts_vision *v) { return v->cu ? "cuda" : "cpu"; }

/* ---- compute ---- */

/* y (n, rows) = x (n, cols) . W^T + b; big matrices chunked over tokens to bound the
 * scratch (sized for n_patches rows at load). */
static ts_status linear(ts_vision *v, float *y, const float *W, const float *b, int64_t rows,
                        int64_t cols, const float *x, int64_t n) {
    if (v->p.reference) {
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < rows; r++) {
                const float *w = W + r * cols, *xr = x + t * cols;
                float s = 0.0f;
                for (int64_t i = 0; i < cols; i++) s += w[i] * xr[i];
                y[t * rows + r] = s + (b ? b[r] : 0.0f);
            }
        return TS_OK;
    }
    TS_TRY(ts_matmul(v->tp, TS_TYPE_F32, W, sizeof(float) * (size_t)cols, rows, cols, x, n, y,
                     v->mm_scratch));
    if (b)
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < rows; r++) y[t * rows + r] += b[r];
    return TS_OK;
}

static void layernorm(float *out, const float *x, const float *w, const float *b, int64_t n,
                      int64_t d, float eps) {
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * d;
        double m = 0, var = 0;
        for (int64_t i = 0; i < d; i++) m += xr[i];
        m /= (double)d;
        for (int64_t i = 0; i < d; i++) var += (xr[i] - m) * (xr[i] - m);
        var /= (double)d;
        const float inv = (float)(1.0 / sqrt(var + eps));
        float *o = out + t * d;
        for (int64_t i = 0; i < d; i++) o[i] = (float)(xr[i] - m) * inv * w[i] + b[i];
    }
}

static float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

typedef struct {
    ts_vision *v;
} att_task;

/* Rows (head, query) split over threads: out[q, h] = softmax(q_h . K_h^T * s) V_h. */
static void att_run(void *ctx, int ith, int nth) {
    ts_vision *v = ((att_task *)ctx)->v;
    const int64_t N = v->c.n_patches, D = v->c.n_embd, H = v->c.n_head, hd = D / H;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = v->row + (size_t)ith * (size_t)N;
    const int64_t total = N * H;
    for (int64_t w = total * ith / nth; w < total * (ith + 1) / nth; w++) {
        const int64_t h = w / N, i = w % N;
        const float *q = v->q + i * D + h * hd;
        float m = -INFINITY;
        for (int64_t j = 0; j < N; j++) {
            const float *k = v->k + j * D + h * hd;
            float s = 0.0f;
            for (int64_t e = 0; e < hd; e++) s += q[e] * k[e];
            s *= scale;
            sc[j] = s;
            if (s > m) m = s;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < N; j++) {
            sc[j] = expf(sc[j] - m);
            sum += sc[j];
        }
        const float inv = 1.0f / sum;
        float *o = v->att + i * D + h * hd;
        for (int64_t e = 0; e < hd; e++) o[e] = 0.0f;
        for (int64_t j = 0; j < N; j++) {
            const float *vr = v->v + j * D + h * hd;
            const float p = sc[j] * inv;
            for (int64_t e = 0; e < hd; e++) o[e] += p * vr[e];
        }
    }
}

ts_status ts_vision_encode(ts_vision *v, const float *pixels, float *vision_out, float *embd) {
    if (!v || !pixels || !embd) return TS_FAIL(TS_INVAL, "NULL argument");
#ifdef TS_HAVE_CUDA
    if (v->cu) return ts_vision_cuda_encode(v->cu, pixels, vision_out, embd);
#endif
    const ts_vision_config *c = &v->c;
    const int64_t N = c->n_patches, D = c->n_embd, F = c->n_ff, P = c->patch_size,
                  S = c->image_size, side = c->n_side, K = 3 * P * P;
    /* patch embedding: each patch unrolled in (channel, ky, kx) order = the conv weight's */
    for (int64_t pr = 0; pr < side; pr++)
        for (int64_t pc = 0; pc < side; pc++) {
            float *col = v->cols + (pr * side + pc) * K;
            for (int64_t ch = 0; ch < 3; ch++)
                for (int64_t ky = 0; ky < P; ky++)
                    for (int64_t kx = 0; kx < P; kx++)
                        *col++ = pixels[(ch * S + pr * P + ky) * S + pc * P + kx];
        }
    TS_TRY(linear(v, v->x, v->patch_w, v->patch_b, D, K, v->cols, N));
    for (int64_t i = 0; i < N * D; i++) v->x[i] += v->pos[i];
    att_task at = {v};
    for (int32_t l = 0; l < c->n_layer; l++) {
        const vlayer *L = &v->L[l];
        layernorm(v->h, v->x, L->ln1_w, L->ln1_b, N, D, c->eps);
        TS_TRY(linear(v, v->q, L->q_w, L->q_b, D, D, v->h, N));
        TS_TRY(linear(v, v->k, L->k_w, L->k_b, D, D, v->h, N));
        TS_TRY(linear(v, v->v, L->v_w, L->v_b, D, D, v->h, N));
        if (v->p.reference) att_run(&at, 0, 1);
        else ts_threadpool_run(v->tp, att_run, &at);
        TS_TRY(linear(v, v->h, L->o_w, L->o_b, D, D, v->att, N));
        for (int64_t i = 0; i < N * D; i++) v->x[i] += v->h[i];
        layernorm(v->h, v->x, L->ln2_w, L->ln2_b, N, D, c->eps);
        /* MLP in chunks of ff_chunk tokens (bounded scratch) */
        for (int64_t t0 = 0; t0 < N; t0 += v->ff_chunk) {
            const int64_t n = N - t0 < v->ff_chunk ? N - t0 : v->ff_chunk;
            TS_TRY(linear(v, v->ff, L->fc1_w, L->fc1_b, F, D, v->h + t0 * D, n));
            for (int64_t i = 0; i < n * F; i++) v->ff[i] = gelu_tanh(v->ff[i]);
            TS_TRY(linear(v, v->att + t0 * D, L->fc2_w, L->fc2_b, D, F, v->ff, n));
        }
        for (int64_t i = 0; i < N * D; i++) v->x[i] += v->att[i];
    }
    layernorm(v->x, v->x, v->post_w, v->post_b, N, D, c->eps);
    if (vision_out) memcpy(vision_out, v->x, sizeof(float) * (size_t)(N * D));
    /* projector: k x k average pooling over the patch grid, RMSNorm (1 + w), projection */
    const int64_t k = c->pool, ts = side / k;
    for (int64_t r = 0; r < ts; r++)
        for (int64_t cc = 0; cc < ts; cc++) {
            float *o = v->pooled + (r * ts + cc) * D;
            for (int64_t e = 0; e < D; e++) {
                float s = 0.0f;
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++) s += v->x[((r * k + i) * side + cc * k + j) * D + e];
                o[e] = s / (float)(k * k);
            }
        }
    for (int64_t t = 0; t < c->n_tokens; t++) {
        float *o = v->pooled + t * D;
        double ss = 0;
        for (int64_t e = 0; e < D; e++) ss += (double)o[e] * o[e];
        const float inv = (float)(1.0 / sqrt(ss / (double)D + c->eps));
        for (int64_t e = 0; e < D; e++) o[e] = o[e] * inv * v->norm_w[e];
    }
    return linear(v, embd, v->proj, NULL, c->proj_dim, D, v->pooled, c->n_tokens);
}

ts_status ts_vision_encode_image(ts_vision *v, const ts_image *im, float *embd) {
    if (!v || !im) return TS_FAIL(TS_INVAL, "NULL argument");
    TS_TRY(ts_image_preprocess(im, v->c.image_size, v->c.mean, v->c.std, v->pix));
    return ts_vision_encode(v, v->pix, NULL, embd);
}
