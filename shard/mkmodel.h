/* mkmodel.h: random-weight Gemma 3 GGUF files at real shapes (`tessera mkmodel`).
 *
 * The file has the exact Gemma 3 text-decoder layout of a llama.cpp conversion
 * (../shared/docs/gemma3-spec.md sections 1, 3, 4, 5): the gemma3.* and tokenizer.ggml.*
 * metadata keys, a synthetic vocabulary laid out like Gemma's (specials, newline/space runs,
 * byte-fallback tokens, then unique pseudo-word pieces) and every decoder tensor with its
 * GGUF name and shape. Only the weights are random. See docs/mkmodel.md.
 *
 * Weights are a pure function of (seed, tensor name, element index): the same seed gives
 * the same bytes on every machine, and the same underlying fp32 values whatever the output
 * type (which only changes the rounding). Values are approximately normal: the Irwin-Hall
 * sum of four 16-bit uniforms (two 32-bit integer hashes per element, keyed per row by
 * splitmix64), centred and scaled to unit variance (bounded at +-2*sqrt(3) = +-3.46 sigma,
 * so no outliers). Std per tensor:
 *   token_embd      1/sqrt(d)        (Gemma scales the embedding by sqrt(d): unit hidden)
 *   projections     1/sqrt(fan_in)   (fan_in = ne[0], the reduction dimension)
 *   norm vectors    1 + 0.1 * N      (GGUF norms have the +1 baked in), always F32
 *
 * Streaming: ts_mkmodel_write declares everything, then generates one tensor at a time
 * through the GGUF writer's fill callback, quantizing row by row; peak memory is the
 * largest tensor (the embedding) plus the vocabulary.
 */
#ifndef TS_MKMODEL_H
#define TS_MKMODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_MKMODEL_DEFAULT_VOCAB 262144u
#define TS_MKMODEL_MIN_VOCAB 512u
#define TS_MKMODEL_MAX_VOCAB (1u << 24)

/* Hyperparameters of one size (spec table 1.1; "tiny" is a small test shape). */
typedef struct {
    const char *name;        /* "tiny", "270m", "1b", "4b", "12b", "27b" */
    uint32_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim;
    uint32_t sliding_window; /* W */
    uint32_t n_ctx;          /* context_length */
    float rope_scale;        /* linear factor on global layers; 0 = no scaling keys */
} ts_mkmodel_shape;

/* The shape named `name` (case-insensitive), or NULL. */
const ts_mkmodel_shape *ts_mkmodel_shape_by_name(const char *name);
/* The i-th known shape (NULL past the end), for listings. */
const ts_mkmodel_shape *ts_mkmodel_shape_at(unsigned i);

/* "q4_0", "q8_0", "f16", "f32" (case-insensitive) -> TS_TYPE_*; false if unknown. */
bool ts_mkmodel_type_from_name(const char *name, uint32_t *type);
/* llama.cpp's general.file_type (LLAMA_FTYPE_*) for an output type: F32 0, F16 1,
 * Q4_0 2, Q8_0 7; UINT32_MAX for other types. */
uint32_t ts_mkmodel_file_type(uint32_t type);

/* Progress: called after each tensor with the data bytes written so far and the total. */
typedef void (*ts_mkmodel_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct {
    const ts_mkmodel_shape *shape; /* required */
    uint32_t type;                 /* TS_TYPE_Q4_0, Q8_0, F16 or F32 (matrices) */
    uint64_t seed;
    uint32_t n_vocab;              /* 0 = TS_MKMODEL_DEFAULT_VOCAB; else >= 512 */
    uint32_t n_ctx;                /* 0 = the shape's context length */
    ts_mkmodel_progress_fn progress; /* optional */
    void *progress_ctx;
} ts_mkmodel_params;

/* Writes the whole GGUF to f (which must be open for writing at its start). Errors:
 * TS_INVAL (bad parameters, message says which), TS_NOMEM, TS_IO (a failed write: disk
 * full etc.; fflush is included, fclose is the caller's). */
ts_status ts_mkmodel_write(const ts_mkmodel_params *p, FILE *f);

/* Exact size in bytes of the file ts_mkmodel_write would produce, without writing it
 * (builds the vocabulary to size the metadata). Also returns the parameter count
 * (n_params may be NULL). */
ts_status ts_mkmodel_estimate_bytes(const ts_mkmodel_params *p, uint64_t *bytes,
                                    uint64_t *n_params);

/* The fp32 value ts_mkmodel_write generates before conversion for element `i` (row-major,
 * rows of ne0) of the tensor `name`: an N(0,1)-like sample times std plus mean (for tests;
 * the std and mean of each tensor are listed above). */
float ts_mkmodel_weight(uint64_t seed, const char *name, int64_t ne0, uint64_t i, float mean,
                        float std);

/* The Q4_0 row quantizer ts_mkmodel_write uses: bit-exact with ts_quantize_row_q4_0_ref
 * for finite input, and faster (vectorizable). n % 32 == 0. */
void ts_mkmodel_quantize_q4_0(const float *x, void *dst, int64_t n);
/* Likewise for Q8_0 (bit-exact with ts_quantize_row_q8_0_ref for finite input). */
void ts_mkmodel_quantize_q8_0(const float *x, void *dst, int64_t n);

/* ---- random mmproj (vision tower + projector) ----
 * A llama.cpp-style Gemma 3 mmproj GGUF (general.architecture "clip", clip.vision.* keys,
 * v.* / mm.* tensors, as shard/vision.c reads them) with random weights from the same
 * generator: matrices std 1/sqrt(fan_in) (the patch embedding's fan_in is 3 * patch^2),
 * biases std 0.02, LayerNorm weights 1 + 0.1 N, biases 0.02 N, the position embedding std
 * 0.02, the soft-embedding norm 1 + 0.1 N (+1 baked in, as llama.cpp's converter writes
 * it). Matrices in `type` (F32 or F16), vectors F32. */
typedef struct {
    uint32_t image_size, patch_size, n_embd, n_ff, n_layer, n_head, pool, proj_dim;
    uint32_t type; /* TS_TYPE_F32 or TS_TYPE_F16 */
    uint64_t seed;
} ts_mkmodel_mmproj_params;

/* Gemma 3's SigLIP so400m (896 / 14, width 1152, MLP 4304, 27 layers, 16 heads, 4 x 4
 * pooling to 256 tokens), F16, projecting to proj_dim (the text width: 2560 for 4B). */
ts_mkmodel_mmproj_params ts_mkmodel_mmproj_gemma3(uint32_t proj_dim);
/* Writes the mmproj GGUF to f. TS_INVAL names a bad parameter. */
ts_status ts_mkmodel_write_mmproj(const ts_mkmodel_mmproj_params *p, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
