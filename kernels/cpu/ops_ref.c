/* ops_ref.c: scalar reference implementations of the Gemma 3 elementwise and
 * normalization ops (kernels.h). These define the semantics; keep them plain.
 * ref: ../shared/docs/gemma3-spec.md section 2. */
#include <math.h>

#include "kernels.h"

void ts_rmsnorm_ref(float *out, const float *x, const float *w, int64_t n_row, int64_t n,
                    float eps) {
    for (int64_t r = 0; r < n_row; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double ss = 0.0; /* double: the reference should not add its own rounding noise */
        for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
        for (int64_t i = 0; i < n; i++) o[i] = xr[i] * scale * w[i];
    }
}

void ts_rope_ref(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                 float base, float scale) {
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < n_tok; t++) {
        const double p = (double)pos[t] / (double)scale;
        for (int64_t h = 0; h < n_head; h++) {
            float *v = x + (t * n_head + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                /* inv_freq as HF computes it: base^(-(2i)/head_dim) */
                double inv = pow((double)base, -(double)(2 * i) / (double)head_dim);
                double th = p * inv;
                float c = (float)cos(th), s = (float)sin(th);
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

float ts_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

void ts_geglu_ref(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = ts_gelu_tanh(gate[i]) * up[i];
}

void ts_softmax_ref(float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}
