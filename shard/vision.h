/* vision.h: the Gemma 3 vision encoder (SigLIP) and multimodal projector on the CPU.
 * ref: ../shared/docs/gemma3-spec.md sections 6.1, 6.2, 6.5; docs/vision.md.
 *
 * pixels (3, S, S) -> patch embedding (Conv2d P x P, stride P, with bias; patch index =
 * row * (S/P) + col) + learned position embedding -> n_layer pre-LN blocks (LayerNorm, full
 * bidirectional multi-head attention with biases, scale head_dim^-0.5; LayerNorm, MLP fc1,
 * gelu tanh-approx, fc2) -> post LayerNorm -> (projector) average pooling k x k over the
 * (S/P) x (S/P) grid -> Gemma RMSNorm (1 + w) -> x . P (P: vision width x text width).
 * Output: n_tokens soft-token embeddings of the text width (not scaled by sqrt(d)).
 *
 * Everything is configuration-driven (sizes from the file), so tiny test models work.
 * Weights (all converted to fp32 host arrays at load) come from either
 *   - a llama.cpp mmproj GGUF (general.architecture "clip", clip.vision.* keys, v.* / mm.*
 *     tensors; legacy files with fc1/fc2 stored under swapped names are detected by shape),
 *   - a Hugging Face checkpoint: a directory (or its model.safetensors / index .json) of
 *     Gemma3ForConditionalGeneration or ShieldGemma2ForImageClassification, with config.json
 *     beside it; tensor names with or without the "model." / "vision_model." levels.
 * Compute paths: reference (plain scalar loops, one thread: the semantics), the default
 * optimized path (kernels/cpu matmul and the thread pool), and CUDA (params backend "cuda":
 * fp32 on the device, vision_cuda.c).
 *
 * Not thread-safe: one thread encodes at a time on a ts_vision (scratch is owned).
 */
#ifndef TS_VISION_H
#define TS_VISION_H

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_vision_config {
    int32_t image_size;   /* S: input is S x S */
    int32_t patch_size;   /* P */
    int32_t n_side;       /* S / P patches per side */
    int32_t n_patches;    /* n_side^2 */
    int32_t n_embd;       /* vision width (1152) */
    int32_t n_ff;         /* MLP width (4304) */
    int32_t n_layer;      /* 27 */
    int32_t n_head;       /* 16 */
    float eps;            /* LayerNorm and soft-embedding RMSNorm epsilon */
    int32_t pool;         /* average-pooling kernel and stride (4) */
    int32_t n_tokens;     /* (n_side / pool)^2 soft tokens per image (256) */
    int32_t proj_dim;     /* text width */
    float mean[3], std[3]; /* preprocessing normalization */
} ts_vision_config;

typedef struct ts_vision_params {
    int n_threads;   /* <= 0: all CPUs */
    bool reference;  /* scalar reference path */
    const char *backend; /* NULL or "cpu": the CPU paths above; "cuda": the encoder and
                          * projector on a CUDA device (vision_cuda.c; weights uploaded at
                          * load, host copies freed; TS_UNSUPPORTED in a build without CUDA
                          * or without a device) */
    int device;      /* CUDA device index (backend "cuda") */
} ts_vision_params;

typedef struct ts_vision ts_vision;

/* path: a ".gguf" mmproj file, else a Hugging Face checkpoint (directory, .safetensors or
 * index .json; config.json read from the same directory). Errors name the missing or
 * mis-shaped tensor / key (TS_FORMAT), TS_UNSUPPORTED for another projector type. */
ts_status ts_vision_load(const char *path, const ts_vision_params *p, ts_vision **out);
void ts_vision_destroy(ts_vision *v);
const ts_vision_config *ts_vision_get_config(const ts_vision *v);
/* "cpu" or "cuda". */
const char *ts_vision_backend(const ts_vision *v);

/* pixels (3, S, S) preprocessed -> embd (n_tokens, proj_dim). vision_out (n_patches,
 * n_embd) receives the encoder output (after post_layernorm) when not NULL. */
ts_status ts_vision_encode(ts_vision *v, const float *pixels, float *vision_out, float *embd);

/* Preprocesses a decoded image (image.h, with the model's size, mean and std) and encodes
 * it: embd (n_tokens, proj_dim). */
ts_status ts_vision_encode_image(ts_vision *v, const ts_image *im, float *embd);

#ifdef __cplusplus
}
#endif
#endif
