/* config.h: Gemma 3 model configuration, read from GGUF metadata (never hard-coded).
 *
 * ts_config_from_gguf reads `gemma3.*` keys (../shared/docs/gemma3-spec.md section 3.2)
 * and the token embedding's shape, applies the documented defaults for optional keys and
 * validates the result. It refuses other architectures (TS_UNSUPPORTED) and missing or
 * inconsistent required keys (TS_FORMAT), naming the key.
 *
 * Rules (spec section 1, 2):
 *   - layer i is global (full attention, rope base `rope_base_global` with linear scaling
 *     `rope_scale_global`) iff the sliding-window pattern says so; the default pattern is
 *     period 6: global iff (i + 1) % 6 == 0. With no sliding window, all layers are global.
 *   - local layers: rope base `rope_base_local` (key rope.freq_base_swa, default 10000),
 *     no scaling, window `sliding_window` keys (q - k < W).
 *   - attention scale = query_pre_attn_scalar^-0.5, where query_pre_attn_scalar is
 *     hidden/heads for the 62-layer 27B (llama.cpp's rule; 168) and head_dim otherwise;
 *     the key `gemma3.attention.query_pre_attn_scalar` (written by tessera's own model
 *     generator for test configurations) overrides both.
 */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_MAX_LAYERS 256

typedef struct ts_config {
    char arch[32];          /* "gemma3" */
    char name[128];         /* general.name, or "" */
    uint32_t n_layer;
    uint32_t n_embd;        /* hidden size d */
    uint32_t n_ff;          /* FFN intermediate size */
    uint32_t n_head;        /* query heads */
    uint32_t n_head_kv;     /* key/value heads */
    uint32_t head_dim;      /* key_length (== value_length) */
    uint32_t n_ctx_train;   /* context_length */
    uint32_t n_vocab;       /* rows of token_embd */
    float rms_eps;
    float rope_base_global;
    float rope_base_local;
    float rope_scale_global; /* linear factor (positions divided by it); 1 = none */
    uint32_t sliding_window; /* 0 = none (all layers global) */
    float query_pre_attn_scalar;
    float attn_scale;        /* query_pre_attn_scalar^-0.5 */
    float embd_scale;        /* sqrt(n_embd), exact fp32 (llama.cpp; HF at f32) */
    uint32_t n_global;       /* number of global layers */
    uint8_t is_global[TS_MAX_LAYERS];
} ts_config;

ts_status ts_config_from_gguf(const ts_gguf *g, ts_config *out);

/* Checks that every tensor the Gemma 3 text decoder needs exists with the expected shape
 * and a supported type; the message names the first offending tensor. */
ts_status ts_config_check_tensors(const ts_config *c, const ts_gguf *g);

/* The 13 tensors of one decoder layer, in GGUF order and naming ("blk.N.<suffix>.weight"):
 * ne0 x ne1 (ne1 == 0: a vector of ne0). Dimensions for hidden d, query width q = heads *
 * head_dim, key/value width kv, FFN ff, head_dim hd. The one list the loader, the tensor
 * check and the model generator share. */
#define TS_LAYER_TENSORS 13
typedef struct {
    const char *suffix;
    int64_t ne0, ne1;
} ts_layer_tensor;
void ts_layer_tensors(int64_t d, int64_t q, int64_t kv, int64_t ff, int64_t hd,
                      ts_layer_tensor out[TS_LAYER_TENSORS]);

/* "270M", "1B", "4B", "12B", "27B" by layer count and width, or "custom". */
const char *ts_config_size_label(const ts_config *c);

/* Parameters of the text decoder (embedding counted once: it is tied). */
uint64_t ts_config_n_params(const ts_config *c);

#ifdef __cplusplus
}
#endif
#endif
