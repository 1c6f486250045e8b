/* config.c: Gemma 3 configuration from GGUF metadata; see config.h. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "quant.h"

/* Optional u32 key: missing keeps *out; wrong type is an error. */
static ts_status opt_u32(const ts_gguf *g, const char *key, uint32_t *out) {
    if (!ts_gguf_find(g, key)) return TS_OK;
    return ts_gguf_get_u32(g, key, out);
}
static ts_status opt_f32(const ts_gguf *g, const char *key, float *out) {
    if (!ts_gguf_find(g, key)) return TS_OK;
    return ts_gguf_get_f32(g, key, out);
}
static ts_status req_u32(const ts_gguf *g, const char *key, uint32_t *out) {
    if (!ts_gguf_find(g, key))
        return TS_FAIL(TS_FORMAT, "required metadata key '%s' is missing", key);
    return ts_gguf_get_u32(g, key, out);
}

static ts_status check_range(const char *what, uint32_t v, uint32_t lo, uint32_t hi) {
    if (v < lo || v > hi)
        return TS_FAIL(TS_FORMAT, "%s = %u is outside the supported range [%u, %u]", what, v,
                       lo, hi);
    return TS_OK;
}

ts_status ts_config_from_gguf(const ts_gguf *g, ts_config *c) {
    if (!g || !c) return TS_FAIL(TS_INVAL, "NULL argument");
    memset(c, 0, sizeof *c);

    ts_gguf_str arch;
    if (!ts_gguf_find(g, "general.architecture"))
        return TS_FAIL(TS_FORMAT, "required metadata key 'general.architecture' is missing");
    TS_TRY(ts_gguf_get_str(g, "general.architecture", &arch));
    if (arch.len != 6 || memcmp(arch.ptr, "gemma3", 6) != 0) {
        int n = arch.len > 40 ? 40 : (int)arch.len;
        return TS_FAIL(TS_UNSUPPORTED,
                       "architecture '%.*s' is not supported: tessera serves Gemma 3 "
                       "(general.architecture = gemma3)", n, arch.ptr);
    }
    memcpy(c->arch, "gemma3", 7);
    ts_gguf_str name;
    if (ts_gguf_find(g, "general.name") && ts_gguf_get_str(g, "general.name", &name) == TS_OK)
        snprintf(c->name, sizeof c->name, "%.*s", (int)(name.len > 127 ? 127 : name.len),
                 name.ptr);

    TS_TRY(req_u32(g, "gemma3.block_count", &c->n_layer));
    TS_TRY(req_u32(g, "gemma3.embedding_length", &c->n_embd));
    TS_TRY(req_u32(g, "gemma3.feed_forward_length", &c->n_ff));
    TS_TRY(req_u32(g, "gemma3.attention.head_count", &c->n_head));
    c->n_head_kv = c->n_head;
    TS_TRY(opt_u32(g, "gemma3.attention.head_count_kv", &c->n_head_kv));
    TS_TRY(check_range("gemma3.block_count", c->n_layer, 1, TS_MAX_LAYERS));
    TS_TRY(check_range("gemma3.embedding_length", c->n_embd, 32, 65536));
    TS_TRY(check_range("gemma3.feed_forward_length", c->n_ff, 32, 1u << 20));
    TS_TRY(check_range("gemma3.attention.head_count", c->n_head, 1, 1024));
    TS_TRY(check_range("gemma3.attention.head_count_kv", c->n_head_kv, 1, c->n_head));
    if (c->n_head % c->n_head_kv != 0)
        return TS_FAIL(TS_FORMAT,
                       "gemma3.attention.head_count (%u) is not a multiple of head_count_kv (%u)",
                       c->n_head, c->n_head_kv);
    if (c->n_embd % 32 != 0)
        return TS_FAIL(TS_FORMAT, "gemma3.embedding_length %u is not a multiple of 32",
                       c->n_embd);

    c->head_dim = c->n_embd / c->n_head;
    TS_TRY(opt_u32(g, "gemma3.attention.key_length", &c->head_dim));
    uint32_t vlen = c->head_dim;
    TS_TRY(opt_u32(g, "gemma3.attention.value_length", &vlen));
    TS_TRY(check_range("gemma3.attention.key_length", c->head_dim, 2, 1024));
    if (vlen != c->head_dim)
        return TS_FAIL(TS_FORMAT, "gemma3.attention.value_length %u differs from key_length %u",
                       vlen, c->head_dim);
    if (c->head_dim % 2 != 0)
        return TS_FAIL(TS_FORMAT, "gemma3.attention.key_length %u is odd (RoPE needs pairs)",
                       c->head_dim);

    c->n_ctx_train = 8192;
    TS_TRY(opt_u32(g, "gemma3.context_length", &c->n_ctx_train));
    TS_TRY(check_range("gemma3.context_length", c->n_ctx_train, 1, 1u << 24));
    c->rms_eps = 1e-6f;
    TS_TRY(opt_f32(g, "gemma3.attention.layer_norm_rms_epsilon", &c->rms_eps));
    if (!(c->rms_eps > 0.0f && c->rms_eps < 1.0f))
        return TS_FAIL(TS_FORMAT, "gemma3.attention.layer_norm_rms_epsilon %g is not in (0, 1)",
                       (double)c->rms_eps);

    c->rope_base_global = 1000000.0f;
    c->rope_base_local = 10000.0f;
    TS_TRY(opt_f32(g, "gemma3.rope.freq_base", &c->rope_base_global));
    TS_TRY(opt_f32(g, "gemma3.rope.freq_base_swa", &c->rope_base_local));
    if (!(c->rope_base_global > 1.0f) || !(c->rope_base_local > 1.0f) ||
        !isfinite(c->rope_base_global) || !isfinite(c->rope_base_local))
        return TS_FAIL(TS_FORMAT, "rope.freq_base %g / freq_base_swa %g must be finite and > 1",
                       (double)c->rope_base_global, (double)c->rope_base_local);
    c->rope_scale_global = 1.0f;
    if (ts_gguf_find(g, "gemma3.rope.scaling.type")) {
        ts_gguf_str st;
        TS_TRY(ts_gguf_get_str(g, "gemma3.rope.scaling.type", &st));
        bool linear = st.len == 6 && memcmp(st.ptr, "linear", 6) == 0;
        bool none = st.len == 4 && memcmp(st.ptr, "none", 4) == 0;
        if (!linear && !none)
            return TS_FAIL(TS_UNSUPPORTED, "gemma3.rope.scaling.type '%.*s' (only linear)",
                           (int)(st.len > 20 ? 20 : st.len), st.ptr);
        if (linear) TS_TRY(opt_f32(g, "gemma3.rope.scaling.factor", &c->rope_scale_global));
    }
    if (!(c->rope_scale_global >= 1.0f && c->rope_scale_global <= 1024.0f))
        return TS_FAIL(TS_FORMAT, "gemma3.rope.scaling.factor %g is not in [1, 1024]",
                       (double)c->rope_scale_global);

    TS_TRY(opt_u32(g, "gemma3.attention.sliding_window", &c->sliding_window));
    /* Pattern: u32 period (default 6), or an array of bools, true = sliding (llama.cpp). */
    uint32_t period = 6;
    const ts_gguf_kv *pat = ts_gguf_find(g, "gemma3.attention.sliding_window_pattern");
    bool have_flags = false;
    if (pat && pat->value.type == TS_GGUF_ARRAY) {
        const ts_gguf_value *a = &pat->value;
        if (!ts_gguf_vtype_is_int(a->v.arr.elem_type) || a->v.arr.n != c->n_layer)
            return TS_FAIL(TS_FORMAT,
                           "gemma3.attention.sliding_window_pattern: expected %u bools",
                           c->n_layer);
        for (uint32_t i = 0; i < c->n_layer; i++)
            c->is_global[i] = ts_gguf_arr_u64(a, i) == 0;
        have_flags = true;
    } else if (pat) {
        TS_TRY(ts_gguf_get_u32(g, "gemma3.attention.sliding_window_pattern", &period));
    }
    if (!have_flags) {
        for (uint32_t i = 0; i < c->n_layer; i++)
            c->is_global[i] = c->sliding_window == 0 || period <= 1 || (i + 1) % period == 0;
    }
    if (c->sliding_window == 0)
        for (uint32_t i = 0; i < c->n_layer; i++) c->is_global[i] = 1;
    for (uint32_t i = 0; i < c->n_layer; i++) c->n_global += c->is_global[i];

    c->query_pre_attn_scalar =
        c->n_layer == 62 ? (float)c->n_embd / (float)c->n_head : (float)c->head_dim;
    TS_TRY(opt_f32(g, "gemma3.attention.query_pre_attn_scalar", &c->query_pre_attn_scalar));
    if (!(c->query_pre_attn_scalar > 0.0f) || !isfinite(c->query_pre_attn_scalar))
        return TS_FAIL(TS_FORMAT, "query_pre_attn_scalar %g must be positive",
                       (double)c->query_pre_attn_scalar);
    c->attn_scale = 1.0f / sqrtf(c->query_pre_attn_scalar);
    c->embd_scale = sqrtf((float)c->n_embd);

    const ts_gguf_tensor *emb = ts_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return TS_FAIL(TS_FORMAT, "tensor 'token_embd.weight' is missing");
    if (emb->n_dims != 2 || emb->ne[0] != (int64_t)c->n_embd || emb->ne[1] < 1 ||
        emb->ne[1] > (1 << 24))
        return TS_FAIL(TS_FORMAT, "tensor 'token_embd.weight' has shape [%lld, %lld]; "
                       "expected [%u, n_vocab]", (long long)emb->ne[0], (long long)emb->ne[1],
                       c->n_embd);
    c->n_vocab = (uint32_t)emb->ne[1];
    const ts_gguf_kv *toks = ts_gguf_find(g, "tokenizer.ggml.tokens");
    if (toks) {
        if (toks->value.type != TS_GGUF_ARRAY || toks->value.v.arr.elem_type != TS_GGUF_STRING)
            return TS_FAIL(TS_FORMAT, "tokenizer.ggml.tokens is not an array of strings");
        if (toks->value.v.arr.n != c->n_vocab)
            return TS_FAIL(TS_FORMAT, "tokenizer.ggml.tokens has %llu entries but "
                           "token_embd.weight has %u rows",
                           (unsigned long long)toks->value.v.arr.n, c->n_vocab);
    }
    return TS_OK;
}

static ts_status check_tensor(const ts_gguf *g, const char *name, int64_t ne0, int64_t ne1) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, name);
    if (!t) return TS_FAIL(TS_FORMAT, "tensor '%s' is missing", name);
    int want_dims = ne1 > 0 ? 2 : 1;
    if ((int)t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 > 0 && t->ne[1] != ne1)) {
        if (ne1 > 0)
            return TS_FAIL(TS_FORMAT, "tensor '%s' has shape [%lld, %lld]; expected [%lld, %lld]",
                           name, (long long)t->ne[0], (long long)t->ne[1], (long long)ne0,
                           (long long)ne1);
        return TS_FAIL(TS_FORMAT, "tensor '%s' has %u dims, ne[0] %lld; expected [%lld]", name,
                       t->n_dims, (long long)t->ne[0], (long long)ne0);
    }
    if (!ts_type_can_dequantize(t->type))
        return TS_FAIL(TS_UNSUPPORTED, "tensor '%s' has type %s, which tessera cannot read",
                       name, ts_type_name(t->type) ? ts_type_name(t->type) : "?");
    return TS_OK;
}

ts_status ts_config_check_tensors(const ts_config *c, const ts_gguf *g) {
    const int64_t d = c->n_embd, q = (int64_t)c->n_head * c->head_dim,
                  kv = (int64_t)c->n_head_kv * c->head_dim, ff = c->n_ff, hd = c->head_dim;
    TS_TRY(check_tensor(g, "token_embd.weight", d, c->n_vocab));
    TS_TRY(check_tensor(g, "output_norm.weight", d, 0));
    const ts_gguf_tensor *out = ts_gguf_find_tensor(g, "output.weight");
    if (out) TS_TRY(check_tensor(g, "output.weight", d, c->n_vocab));
    char n[96];
    for (uint32_t i = 0; i < c->n_layer; i++) {
        ts_layer_tensor want[TS_LAYER_TENSORS];
        ts_layer_tensors(d, q, kv, ff, hd, want);
        for (size_t k = 0; k < TS_LAYER_TENSORS; k++) {
            snprintf(n, sizeof n, "blk.%u.%s.weight", i, want[k].suffix);
            TS_TRY(check_tensor(g, n, want[k].ne0, want[k].ne1));
        }
    }
    return TS_OK;
}

void ts_layer_tensors(int64_t d, int64_t q, int64_t kv, int64_t ff, int64_t hd,
                      ts_layer_tensor out[TS_LAYER_TENSORS]) {
    const ts_layer_tensor t[TS_LAYER_TENSORS] = {
        {"attn_norm", d, 0},   {"attn_q", d, q},           {"attn_k", d, kv},
        {"attn_v", d, kv},     {"attn_q_norm", hd, 0},     {"attn_k_norm", hd, 0},
        {"attn_output", q, d}, {"post_attention_norm", d, 0}, {"ffn_norm", d, 0},
        {"ffn_gate", d, ff},   {"ffn_up", d, ff},          {"ffn_down", ff, d},
        {"post_ffw_norm", d, 0},
    };
    for (int i = 0; i < TS_LAYER_TENSORS; i++) out[i] = t[i];
}

const char *ts_config_size_label(const ts_config *c) {
    if (c->n_layer == 18 && c->n_embd == 640) return "270M";
    if (c->n_layer == 26 && c->n_embd == 1152) return "1B";
    if (c->n_layer == 34 && c->n_embd == 2560) return "4B";
    if (c->n_layer == 48 && c->n_embd == 3840) return "12B";
    if (c->n_layer == 62 && c->n_embd == 5376) return "27B";
    return "custom";
}

uint64_t ts_config_n_params(const ts_config *c) {
    uint64_t d = c->n_embd, q = (uint64_t)c->n_head * c->head_dim,
             kv = (uint64_t)c->n_head_kv * c->head_dim, ff = c->n_ff;
    uint64_t per_layer = d * q + 2 * d * kv + q * d + 3 * d * ff + 4 * d + 2 * c->head_dim;
    return per_layer * c->n_layer + (uint64_t)c->n_vocab * d + d;
}
