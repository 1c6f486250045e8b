/* ops_fast.c: the fast CPU path's elementwise ops (kernels.h, *_fast). They follow
 * llama.cpp's CPU backend (ggml-cpu) operation for operation, so that tessera's fast path
 * tracks llama.cpp's numerics closely enough for greedy decoding to agree (docs/engine.md).
 * The *_ref ops define the exact math; these deliberately reproduce ggml's roundings:
 *   gelu: ggml-cpu is built with GGML_GELU_FP16: x is rounded to fp16 and looked up in a
 *     65536-entry table of fp16(gelu(x)) (gelu as 0.5x(1 + tanh(sqrt(2/pi) x (1 + a x^2)))
 *     in fp32); x <= -10 gives 0, x >= 10 gives x (ggml_vec_geglu_f32).
 *   rope: ggml_rope_cache_init: theta starts at pos * freq_scale and is multiplied by
 *     theta_scale = powf(base, -2/n_dims) in fp32 once per pair (not pow per pair);
 *     cos/sin in fp32 (cosf/sinf).
 *   rmsnorm: ggml_compute_forward_rms_norm_f32: sum of fp32 squares x*x in double, mean
 *     rounded to fp32, scale = 1/sqrtf(mean + eps) in fp32; then x*scale, then * w (the
 *     separate ggml_mul of the norm weight).
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"

static uint16_t g_gelu_f16[1 << 16];
static pthread_once_t g_gelu_once = PTHREAD_ONCE_INIT;

/* ggml_gelu_f32 (the table's source). */
static float gelu_ggml(float x) {
    const float a = 0.044715f, s = 0.79788456080286535587989211986876f;
    return 0.5f * x * (1.0f + tanhf(s * x * (1.0f + a * x * x)));
}

static void gelu_table_init(void) {
    for (uint32_t i = 0; i < (1u << 16); i++)
        g_gelu_f16[i] = ts_fp32_to_fp16(gelu_ggml(ts_fp16_to_fp32((uint16_t)i)));
}

void ts_fast_ops_init(void) { pthread_once(&g_gelu_once, gelu_table_init); }

float ts_gelu_fast(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    ts_fast_ops_init();
    return ts_fp16_to_fp32(g_gelu_f16[ts_fp32_to_fp16(x)]);
}

void ts_geglu_fast(float *out, const float *gate, const float *up, int64_t n) {
    ts_fast_ops_init();
    for (int64_t i = 0; i < n; i++) {
        const float x = gate[i];
        if (x <= -10.0f)
            out[i] = 0.0f;
        else if (x >= 10.0f)
            out[i] = x * up[i];
        else
            out[i] = ts_fp16_to_fp32(g_gelu_f16[ts_fp32_to_fp16(x)]) * up[i];
    }
}

void ts_rope_fast(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                  float base, float scale, float *cache) {
    const int64_t half = head_dim / 2;
    const float theta_scale = powf(base, -2.0f / (float)head_dim);
    const float freq_scale = 1.0f / scale;
    for (int64_t t = 0; t < n_tok; t++) {
        float theta = (float)pos[t];
        for (int64_t i = 0; i < half; i++) {
            const float th = freq_scale * theta;
            cache[2 * i] = cosf(th);
            cache[2 * i + 1] = sinf(th);
            theta *= theta_scale;
        }
        for (int64_t h = 0; h < n_head; h++) {
            float *v = x + (t * n_head + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                const float c = cache[2 * i], s = cache[2 * i + 1];
                const float a = v[i], b = v[i + half];
                /* ggml-cpu's rotate_pairs as compiled in llama.cpp's x86 build (GCC
                 * contracts it; checked in the disassembly of libggml-cpu.so): x0*cos -
                 * x1*sin = fma(x0, cos, -(x1*sin)), x0*sin + x1*cos = fma(x0, sin, x1*cos). */
                v[i] = fmaf(a, c, -(b * s));
                v[i + half] = fmaf(a, s, b * c);
            }
        }
    }
}

void ts_rmsnorm_fast(float *out, const float *x, const float *w, int64_t n_row, int64_t n,
                     float eps) {
    for (int64_t r = 0; r < n_row; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += (double)(xr[i] * xr[i]);
        const float mean = (float)(sum / (double)n);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t i = 0; i < n; i++) {
            const float y = xr[i] * scale;
            o[i] = y * w[i];
        }
    }
}
