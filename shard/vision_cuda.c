/* vision_cuda.c: the SigLIP encoder + Gemma 3 projector on one CUDA device
 * (vision_cuda.h). The same steps as vision.c's ts_vision_encode, on the device:
 *   im2col -> ts_k_matmul_cuda (F32: the tiled fp32 kernel) + bias + position embedding;
 *   per layer: LayerNorm, q / k / v matmuls + bias, ts_k_vit_attention_cuda (full,
 *   non-causal), out_proj + bias, residual add, LayerNorm, fc1 + bias + GELU (tanh), fc2 +
 *   bias, residual add; post LayerNorm; k x k average pooling; RMSNorm (1 + w folded in at
 *   load); projection. Weights and activations fp32; the matmuls of more than 8 tokens and
 *   the attention run on TF32 tensor cores (sm_80+, fp32 accumulation;
 *   ts_k_linear_tf32_cuda, ts_k_vit_attention_tf32_cuda) unless TESSERA_CUDA_GEMM=fp32 (as
 *   for the text backend's prefill) selects the exact fp32 kernels (ts_k_matmul_cuda,
 *   ts_k_vit_attention_cuda), which agree with the CPU to fp32 rounding.
 *   tests/gpu/test_cuda_vision.c states both tolerances.
 */
#include "vision_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "alloc.h"
#include "kernels_cuda.h"
#include "kernels_cuda_vision.h"
#include "log.h"
#include "quant.h"

#define CU TS_CUDA_TRY

enum { NPTR = 16 };

struct ts_vision_cuda {
    ts_vision_config c;
    int device;
    cudaStream_t st;
    size_t bytes;
    bool tf32; /* matmuls of more than 8 tokens on TF32 tensor cores */
    /* device weights */
    float *patch_w, *patch_b, *pos, *post_w, *post_b, *norm_w, *proj;
    ts_vision_layer_w *L;
    /* device activations */
    float *pix, *cols, *x, *h, *q, *k, *v, *att, *ff, *pooled, *embd;
};

static ts_status dalloc(ts_vision_cuda *g, size_t n_floats, float **p) {
    size_t b;
    if (!ts_mul_size(n_floats ? n_floats : 1, sizeof(float), &b))
        return TS_FAIL(TS_NOMEM, "vision device buffer size overflows");
    CU(cudaMalloc((void **)p, b));
    g->bytes += b;
    return TS_OK;
}

static ts_status up(ts_vision_cuda *g, const float *src, size_t n, float **dst) {
    TS_TRY(dalloc(g, n, dst));
    CU(cudaMemcpy(*dst, src, sizeof(float) * n, cudaMemcpyHostToDevice));
    return TS_OK;
}

static float **layer_ptrs(ts_vision_layer_w *L, float **out) {
    float *const *f[NPTR] = {&L->ln1_w, &L->ln1_b, &L->ln2_w, &L->ln2_b, &L->q_w, &L->q_b,
                             &L->k_w, &L->k_b, &L->v_w, &L->v_b, &L->o_w, &L->o_b,
                             &L->fc1_w, &L->fc1_b, &L->fc2_w, &L->fc2_b};
    for (int i = 0; i < NPTR; i++) out[i] = *f[i];
    return out;
}

void ts_vision_cuda_destroy(ts_vision_cuda *g) {
    if (!g) return;
    cudaSetDevice(g->device);
    if (g->st) cudaStreamSynchronize(g->st);
    if (g->L)
        for (int32_t l = 0; l < g->c.n_layer; l++) {
            float *p[NPTR];
            layer_ptrs(&g->L[l], p);
            for (int i = 0; i < NPTR; i++) cudaFree(p[i]);
        }
    float *f[] = {g->patch_w, g->patch_b, g->pos, g->post_w, g->post_b, g->norm_w, g->proj,
                  g->pix, g->cols, g->x, g->h, g->q, g->k, g->v, g->att, g->ff, g->pooled,
                  g->embd};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) cudaFree(f[i]);
    if (g->st) cudaStreamDestroy(g->st);
    ts_free(g->L);
    ts_free(g);
}

ts_status ts_vision_cuda_create(const ts_vision_config *c, const ts_vision_weights *w,
                                int device, ts_vision_cuda **out) {
    *out = NULL;
    int n_dev = 0;
    TS_TRY(ts_cuda_device_count(&n_dev));
    if (n_dev == 0) return TS_FAIL(TS_UNSUPPORTED, "vision on CUDA: no CUDA device");
    if (device < 0) CU(cudaGetDevice(&device));
    if (device >= n_dev)
        return TS_FAIL(TS_INVAL, "vision on CUDA: device %d of %d", device, n_dev);
    if (c->n_embd / c->n_head > 128)
        return TS_FAIL(TS_UNSUPPORTED, "vision on CUDA: head size %d (at most 128)",
                       c->n_embd / c->n_head);
    CU(cudaSetDevice(device));
    ts_vision_cuda *g = ts_calloc(1, sizeof *g);
    if (!g) return TS_FAIL(TS_NOMEM, "vision on CUDA");
    g->c = *c;
    g->device = device;
    const char *gemm = getenv("TESSERA_CUDA_GEMM");
    g->tf32 = !(gemm && !strcmp(gemm, "fp32")) && ts_k_linear_tf32_cuda_supports(4);
    ts_status rc = TS_OK;
    if (cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking) != cudaSuccess) {
        (void)cudaGetLastError();
        g->st = NULL;
        rc = TS_FAIL(TS_CUDA, "vision on CUDA: stream");
        goto fail;
    }
    g->L = ts_calloc((size_t)c->n_layer, sizeof *g->L);
    if (!g->L) {
        rc = TS_FAIL(TS_NOMEM, "vision layers");
        goto fail;
    }
    {
        const size_t N = (size_t)c->n_patches, D = (size_t)c->n_embd, F = (size_t)c->n_ff,
                     K = 3 * (size_t)c->patch_size * (size_t)c->patch_size;
        TS_TRY_GOTO(up(g, w->patch_w, D * K, &g->patch_w), rc, fail);
        TS_TRY_GOTO(up(g, w->patch_b, D, &g->patch_b), rc, fail);
        TS_TRY_GOTO(up(g, w->pos, N * D, &g->pos), rc, fail);
        TS_TRY_GOTO(up(g, w->post_w, D, &g->post_w), rc, fail);
        TS_TRY_GOTO(up(g, w->post_b, D, &g->post_b), rc, fail);
        TS_TRY_GOTO(up(g, w->norm_w, D, &g->norm_w), rc, fail);
        TS_TRY_GOTO(up(g, w->proj, (size_t)c->proj_dim * D, &g->proj), rc, fail);
        for (int32_t l = 0; l < c->n_layer; l++) {
            const ts_vision_layer_w *s = &w->L[l];
            ts_vision_layer_w *d = &g->L[l];
#define U(f, n) TS_TRY_GOTO(up(g, s->f, n, &d->f), rc, fail)
            U(ln1_w, D); U(ln1_b, D); U(ln2_w, D); U(ln2_b, D);
            U(q_w, D * D); U(q_b, D); U(k_w, D * D); U(k_b, D);
            U(v_w, D * D); U(v_b, D); U(o_w, D * D); U(o_b, D);
            U(fc1_w, F * D); U(fc1_b, F); U(fc2_w, D * F); U(fc2_b, D);
#undef U
        }
        const size_t S = (size_t)c->image_size;
        TS_TRY_GOTO(dalloc(g, 3 * S * S, &g->pix), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * K, &g->cols), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * D, &g->x), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * D, &g->h), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * D, &g->q), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * D, &g->k), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * D, &g->v), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * D, &g->att), rc, fail);
        TS_TRY_GOTO(dalloc(g, N * F, &g->ff), rc, fail);
        TS_TRY_GOTO(dalloc(g, (size_t)c->n_tokens * D, &g->pooled), rc, fail);
        TS_TRY_GOTO(dalloc(g, (size_t)c->n_tokens * (size_t)c->proj_dim, &g->embd), rc, fail);
    }
    TS_LOG_INFO("vision on CUDA device %d: %.1f MiB, matmuls %s", device,
                (double)g->bytes / 1048576.0,
                g->tf32 ? "and attention on TF32 tensor cores (TESSERA_CUDA_GEMM=fp32: exact fp32)"
                        : "and attention in fp32");
    *out = g;
    return TS_OK;
fail:
    ts_vision_cuda_destroy(g);
    return rc;
}

size_t ts_vision_cuda_bytes(const ts_vision_cuda *g) { return g ? g->bytes : 0; }

/* y (n, rows) = x (n, cols) . W^T (+ b, GELU) */
static ts_status linear(ts_vision_cuda *g, float *y, const float *W, const float *b,
                        int64_t rows, int64_t cols, const float *x, int64_t n, int gelu) {
    if (g->tf32 && n > 8 && cols % 4 == 0)
        TS_TRY(ts_k_linear_tf32_cuda(x, W, n, rows, cols, y, g->st));
    else
        TS_TRY(ts_k_matmul_cuda(TS_TYPE_F32, W, sizeof(float) * (size_t)cols, rows, cols, x, n,
                                y, g->st));
    if (b || gelu) TS_TRY(ts_k_bias_act_cuda(y, b, n, rows, gelu, g->st));
    return TS_OK;
}

ts_status ts_vision_cuda_encode(ts_vision_cuda *g, const float *pixels, float *vision_out,
                                float *embd) {
    if (!g || !pixels || !embd) return TS_FAIL(TS_INVAL, "NULL argument");
    const ts_vision_config *c = &g->c;
    const int64_t N = c->n_patches, D = c->n_embd, F = c->n_ff, P = c->patch_size,
                  S = c->image_size, K = 3 * P * P, hd = D / c->n_head;
    CU(cudaSetDevice(g->device));
    CU(cudaMemcpyAsync(g->pix, pixels, sizeof(float) * (size_t)(3 * S * S),
                       cudaMemcpyHostToDevice, g->st));
    TS_TRY(ts_k_im2col_cuda(g->pix, c->n_side, c->patch_size, g->cols, g->st));
    TS_TRY(linear(g, g->x, g->patch_w, g->patch_b, D, K, g->cols, N, 0));
    TS_TRY(ts_k_add_cuda(g->x, g->pos, N * D, g->st));
    const float scale = 1.0f / sqrtf((float)hd);
    for (int32_t l = 0; l < c->n_layer; l++) {
        const ts_vision_layer_w *L = &g->L[l];
        TS_TRY(ts_k_layernorm_cuda(g->h, g->x, L->ln1_w, L->ln1_b, N, D, c->eps, g->st));
        TS_TRY(linear(g, g->q, L->q_w, L->q_b, D, D, g->h, N, 0));
        TS_TRY(linear(g, g->k, L->k_w, L->k_b, D, D, g->h, N, 0));
        TS_TRY(linear(g, g->v, L->v_w, L->v_b, D, D, g->h, N, 0));
        if (g->tf32)
            TS_TRY(ts_k_vit_attention_tf32_cuda(g->q, g->k, g->v, g->att, N, c->n_head,
                                                (int32_t)hd, scale, g->st));
        else
            TS_TRY(ts_k_vit_attention_cuda(g->q, g->k, g->v, g->att, N, c->n_head, (int32_t)hd,
                                           scale, g->st));
        TS_TRY(linear(g, g->h, L->o_w, L->o_b, D, D, g->att, N, 0));
        TS_TRY(ts_k_add_cuda(g->x, g->h, N * D, g->st));
        TS_TRY(ts_k_layernorm_cuda(g->h, g->x, L->ln2_w, L->ln2_b, N, D, c->eps, g->st));
        TS_TRY(linear(g, g->ff, L->fc1_w, L->fc1_b, F, D, g->h, N, 1));
        TS_TRY(linear(g, g->att, L->fc2_w, L->fc2_b, D, F, g->ff, N, 0));
        TS_TRY(ts_k_add_cuda(g->x, g->att, N * D, g->st));
    }
    TS_TRY(ts_k_layernorm_cuda(g->x, g->x, g->post_w, g->post_b, N, D, c->eps, g->st));
    TS_TRY(ts_k_avgpool_cuda(g->x, c->n_side, c->pool, D, g->pooled, g->st));
    TS_TRY(ts_k_rmsnorm_cuda(g->pooled, g->pooled, g->norm_w, c->n_tokens, D, c->eps, g->st));
    TS_TRY(linear(g, g->embd, g->proj, NULL, c->proj_dim, D, g->pooled, c->n_tokens, 0));
    if (vision_out)
        CU(cudaMemcpyAsync(vision_out, g->x, sizeof(float) * (size_t)(N * D),
                           cudaMemcpyDeviceToHost, g->st));
    CU(cudaMemcpyAsync(embd, g->embd, sizeof(float) * (size_t)c->n_tokens * (size_t)c->proj_dim,
                       cudaMemcpyDeviceToHost, g->st));
    CU(cudaStreamSynchronize(g->st));
    return TS_OK;
}
