/* matmul_ref.c: ts_matmul_ref (kernels.h), the scalar definition of the matrix multiply.
 *
 * Each weight row is dequantized into scratch (cols floats, ts_dequantize_row), then dotted
 * with every token's x in fp32, summing sequentially from k = 0. No quantization of x:
 * this is the "exact" semantics the fast path (matmul.c, which quantizes x to Q8 like
 * llama.cpp) is measured against. Types: whatever ts_dequantize_row supports; for other
 * types (or a bad cols) y is left untouched.
 */
#include "kernels.h"
#include "quant.h"

void ts_matmul_ref(uint32_t type, const void *w, size_t row_stride, int64_t rows, int64_t cols,
                   const float *x, int64_t n_tok, float *y, float *scratch) {
    const uint8_t *wb = w;
    for (int64_t r = 0; r < rows; r++) {
        if (!ts_dequantize_row(type, wb + (size_t)r * row_stride, scratch, cols)) return;
        for (int64_t t = 0; t < n_tok; t++) {
            const float *xt = x + t * cols;
            float sum = 0.0f;
            for (int64_t k = 0; k < cols; k++) sum += scratch[k] * xt[k];
            y[t * rows + r] = sum;
        }
    }
}
