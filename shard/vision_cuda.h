/* vision_cuda.h: the CUDA path of the vision encoder + projector (internal to vision.c;
 * built when TS_HAVE_CUDA). docs/vision.md.
 *
 * The weights (fp32, HF layout as vision.c holds them: Linear (out, in), the projection
 * (proj_dim, n_embd)) are uploaded once at create; activations live on the device, sized
 * for one image; encode uploads the pixels, enqueues the whole encoder on its own stream and
 * copies the results back (synchronous). Not thread-safe (one encode at a time). */
#ifndef TS_VISION_CUDA_H
#define TS_VISION_CUDA_H

#include "status.h"
#include "vision.h"

typedef struct ts_vision_layer_w {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; /* (D, D), (D) */
    float *fc1_w, *fc1_b;                                 /* (F, D), (F) */
    float *fc2_w, *fc2_b;                                 /* (D, F), (D) */
} ts_vision_layer_w;

typedef struct ts_vision_weights {
    const float *patch_w, *patch_b; /* (D, 3 * P * P), (D) */
    const float *pos;               /* (n_patches, D) */
    const float *post_w, *post_b;   /* (D) */
    const float *norm_w;            /* (D): 1 + w */
    const float *proj;              /* (proj_dim, D) */
    const ts_vision_layer_w *L;     /* n_layer */
} ts_vision_weights;

typedef struct ts_vision_cuda ts_vision_cuda;

/* device < 0: the current device. */
ts_status ts_vision_cuda_create(const ts_vision_config *c, const ts_vision_weights *w,
                                int device, ts_vision_cuda **out);
void ts_vision_cuda_destroy(ts_vision_cuda *g);
/* Host pixels (3, S, S) -> host embd (n_tokens, proj_dim), vision_out (n_patches, n_embd)
 * when not NULL. */
ts_status ts_vision_cuda_encode(ts_vision_cuda *g, const float *pixels, float *vision_out,
                                float *embd);
/* Device bytes held (weights + activations). */
size_t ts_vision_cuda_bytes(const ts_vision_cuda *g);

#endif
