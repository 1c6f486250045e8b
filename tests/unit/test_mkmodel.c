/* test_mkmodel.c: `tessera mkmodel`'s library (shard/mkmodel.h): the files it writes parse,
 * pass ts_config_from_gguf + ts_config_check_tensors, carry the right metadata, tensor
 * types and vocabulary, are deterministic in the seed, hold finite weights of the intended
 * std, and their size is predicted exactly (27B q4_0: ~15.2e9 bytes). */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "gguf.h"
#include "mkmodel.h"
#include "quant.h"
#include "tokenizer.h"

static const uint32_t g_types[] = {TS_TYPE_Q4_0, TS_TYPE_Q8_0, TS_TYPE_F16, TS_TYPE_F32};

typedef struct {
    uint8_t *buf;
    size_t len;
    ts_gguf *g;
} model;

static ts_mkmodel_params params(const char *size, uint32_t type, uint64_t seed, uint32_t vocab) {
    ts_mkmodel_params p = {.shape = ts_mkmodel_shape_by_name(size), .type = type, .seed = seed,
                           .n_vocab = vocab};
    assert_non_null(p.shape);
    return p;
}

/* Writes through a tmpfile, reads the image back and parses it. */
static void make(const ts_mkmodel_params *p, model *m) {
    FILE *f = tmpfile();
    assert_non_null(f);
    ts_status rc = ts_mkmodel_write(p, f);
    if (rc != TS_OK) print_error("ts_mkmodel_write: %s\n", ts_last_error());
    assert_int_equal(rc, TS_OK);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    m->len = (size_t)len;
    m->buf = malloc(m->len);
    assert_non_null(m->buf);
    assert_int_equal(fread(m->buf, 1, m->len, f), m->len);
    fclose(f);
    rc = ts_gguf_parse(m->buf, m->len, &m->g);
    if (rc != TS_OK) print_error("ts_gguf_parse: %s\n", ts_last_error());
    assert_int_equal(rc, TS_OK);
    uint64_t est = 0;
    assert_int_equal(ts_mkmodel_estimate_bytes(p, &est, NULL), TS_OK);
    assert_int_equal(est, m->len);
}

static void unmake(model *m) {
    ts_gguf_close(m->g);
    free(m->buf);
    memset(m, 0, sizeof *m);
}

static uint32_t get_u32(const ts_gguf *g, const char *k) {
    uint32_t v = 0;
    assert_int_equal(ts_gguf_get_u32(g, k, &v), TS_OK);
    return v;
}
static float get_f32(const ts_gguf *g, const char *k) {
    float v = 0;
    assert_int_equal(ts_gguf_get_f32(g, k, &v), TS_OK);
    return v;
}
static bool get_bool(const ts_gguf *g, const char *k) {
    bool v = false;
    assert_int_equal(ts_gguf_get_bool(g, k, &v), TS_OK);
    return v;
}
static void assert_str(const ts_gguf *g, const char *k, const char *want) {
    ts_gguf_str s;
    assert_int_equal(ts_gguf_get_str(g, k, &s), TS_OK);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.ptr, want, s.len);
}
static const ts_gguf_str *token(const ts_gguf *g, uint32_t id) {
    const ts_gguf_value *a;
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.tokens", &a), TS_OK);
    assert_true(id < a->v.arr.n);
    return &a->v.arr.strs[id];
}
static void assert_token(const ts_gguf *g, uint32_t id, const char *text, int type) {
    const ts_gguf_str *s = token(g, id);
    if (s->len != strlen(text) || memcmp(s->ptr, text, s->len) != 0)
        fail_msg("token %u is '%.*s', want '%s'", id, (int)s->len, s->ptr, text);
    const ts_gguf_value *t;
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.token_type", &t), TS_OK);
    assert_int_equal(ts_gguf_arr_i64(t, id), type);
}

/* Dequantized copy of a tensor (ts_free). */
static float *dequant(const ts_gguf *g, const char *name, int64_t *n) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, name);
    assert_non_null(t);
    float *x = ts_malloc((size_t)t->n_elems * sizeof *x);
    assert_non_null(x);
    assert_true(ts_dequantize_row(t->type, t->data, x, t->n_elems));
    *n = t->n_elems;
    return x;
}

static void moments(const float *x, int64_t n, double *mean, double *std) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += (x[i] - *mean) * (x[i] - *mean);
    *std = sqrt(s2 / (double)n);
}

static void check_std(const ts_gguf *g, const char *name, double want_mean, double want_std,
                      double tol) {
    int64_t n;
    float *x = dequant(g, name, &n);
    double mean, std;
    moments(x, n, &mean, &std);
    if (fabs(std / want_std - 1.0) > tol || fabs(mean - want_mean) > 0.05 * want_std + 1e-3)
        fail_msg("%s: mean %g std %g, want mean %g std %g (tol %g)", name, mean, std, want_mean,
                 want_std, tol);
    ts_free(x);
}

/* ---- tiny model, every type ---------------------------------------------------------- */

static void test_tiny_each_type(void **state) {
    (void)state;
    for (size_t ti = 0; ti < sizeof g_types / sizeof g_types[0]; ti++) {
        uint32_t type = g_types[ti];
        ts_mkmodel_params p = params("tiny", type, 42, 1024);
        model m;
        make(&p, &m);
        const ts_gguf *g = m.g;

        ts_config c;
        ts_status rc = ts_config_from_gguf(g, &c);
        if (rc != TS_OK) fail_msg("config: %s", ts_last_error());
        rc = ts_config_check_tensors(&c, g);
        if (rc != TS_OK) fail_msg("tensors: %s", ts_last_error());
        assert_int_equal(c.n_layer, 8);
        assert_int_equal(c.n_embd, 128);
        assert_int_equal(c.n_ff, 256);
        assert_int_equal(c.n_head, 4);
        assert_int_equal(c.n_head_kv, 2);
        assert_int_equal(c.head_dim, 32);
        assert_int_equal(c.n_ctx_train, 512);
        assert_int_equal(c.n_vocab, 1024);
        assert_int_equal(c.sliding_window, 16);
        assert_int_equal(c.n_global, 1);
        assert_true(c.is_global[5] && !c.is_global[4] && !c.is_global[6] && !c.is_global[7]);
        assert_float_equal(c.rope_scale_global, 8.0f, 0);
        assert_float_equal(c.rope_base_global, 1e6f, 0);
        assert_float_equal(c.rope_base_local, 1e4f, 0);
        assert_float_equal(c.rms_eps, 1e-6f, 0);
        assert_float_equal(c.query_pre_attn_scalar, 32.0f, 0);
        assert_string_equal(c.name, "tessera random tiny");

        /* metadata */
        assert_str(g, "general.architecture", "gemma3");
        assert_int_equal(get_u32(g, "general.file_type"), ts_mkmodel_file_type(type));
        assert_int_equal(get_u32(g, "general.quantization_version"), 2);
        assert_int_equal(get_u32(g, "gemma3.attention.key_length"), 32);
        assert_int_equal(get_u32(g, "gemma3.attention.value_length"), 32);
        assert_float_equal(get_f32(g, "gemma3.attention.layer_norm_rms_epsilon"), 1e-6f, 0);
        assert_str(g, "gemma3.rope.scaling.type", "linear");
        assert_null(ts_gguf_find(g, "gemma3.attention.query_pre_attn_scalar"));
        assert_null(ts_gguf_find(g, "output.weight"));
        assert_str(g, "tokenizer.ggml.model", "llama");
        assert_str(g, "tokenizer.ggml.pre", "default");
        assert_int_equal(get_u32(g, "tokenizer.ggml.bos_token_id"), 2);
        assert_int_equal(get_u32(g, "tokenizer.ggml.eos_token_id"), 1);
        assert_int_equal(get_u32(g, "tokenizer.ggml.unknown_token_id"), 3);
        assert_int_equal(get_u32(g, "tokenizer.ggml.padding_token_id"), 0);
        assert_true(get_bool(g, "tokenizer.ggml.add_bos_token"));
        assert_false(get_bool(g, "tokenizer.ggml.add_eos_token"));
        assert_false(get_bool(g, "tokenizer.ggml.add_space_prefix"));
        const ts_gguf_value *a;
        assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.scores", &a), TS_OK);
        assert_int_equal(a->v.arr.elem_type, TS_GGUF_FLOAT32);
        assert_int_equal(a->v.arr.n, 1024);
        assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.token_type", &a), TS_OK);
        assert_int_equal(a->v.arr.elem_type, TS_GGUF_INT32);
        assert_int_equal(a->v.arr.n, 1024);

        /* tensors: 2 + 13 per layer; matrices in `type`, vectors F32; all finite */
        assert_int_equal(g->n_tensors, 2 + 13 * 8);
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const ts_gguf_tensor *t = &g->tensors[i];
            assert_int_equal(t->type, t->n_dims == 2 ? type : TS_TYPE_F32);
            int64_t n;
            float *x = dequant(g, t->name, &n);
            for (int64_t k = 0; k < n; k++)
                if (!isfinite(x[k])) fail_msg("%s[%lld] = %g", t->name, (long long)k, x[k]);
            ts_free(x);
        }

        /* intended std (quantization adds a little noise; q4_0 the most) */
        double tol = type == TS_TYPE_Q4_0 ? 0.08 : 0.03;
        check_std(g, "token_embd.weight", 0.0, 1.0 / sqrt(128.0), tol);
        check_std(g, "blk.0.attn_q.weight", 0.0, 1.0 / sqrt(128.0), tol);
        check_std(g, "blk.3.attn_k.weight", 0.0, 1.0 / sqrt(128.0), tol);
        check_std(g, "blk.7.attn_output.weight", 0.0, 1.0 / sqrt(128.0), tol);
        check_std(g, "blk.5.ffn_up.weight", 0.0, 1.0 / sqrt(128.0), tol);
        check_std(g, "blk.2.ffn_down.weight", 0.0, 1.0 / sqrt(256.0), tol);
        /* 128 norm entries: std estimate is +-6%; the mean is 1 +- 0.01 */
        check_std(g, "output_norm.weight", 1.0, 0.1, 0.25);
        check_std(g, "blk.1.attn_norm.weight", 1.0, 0.1, 0.25);
        check_std(g, "blk.1.attn_q_norm.weight", 1.0, 0.1, 0.4);

        /* f32 holds exactly the documented values */
        if (type == TS_TYPE_F32) {
            const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "blk.4.ffn_gate.weight");
            const float *x = (const float *)t->data;
            for (uint64_t i = 0; i < (uint64_t)t->n_elems; i += 97) {
                float want = ts_mkmodel_weight(42, t->name, t->ne[0], i, 0.0f,
                                               1.0f / sqrtf(128.0f));
                assert_memory_equal(&x[i], &want, sizeof want);
            }
        }
        unmake(&m);
    }
}

/* Hidden states of sane size: embedding * sqrt(d) has rms ~1; a projection of the normed
 * state has rms ~1 (no softcap or huge logits anywhere). */
static void test_activation_scale(void **state) {
    (void)state;
    ts_mkmodel_params p = params("tiny", TS_TYPE_Q8_0, 3, 1024);
    model m;
    make(&p, &m);
    int64_t ne, nq;
    float *emb = dequant(m.g, "token_embd.weight", &ne);
    float *wq = dequant(m.g, "blk.0.attn_q.weight", &nq);
    const int d = 128;
    double rms_h = 0, rms_q = 0, rms_logit = 0;
    const int tokens[] = {2, 106, 300, 600, 1000};
    for (size_t k = 0; k < sizeof tokens / sizeof tokens[0]; k++) {
        const float *e = emb + (size_t)tokens[k] * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)e[i] * e[i] * d;
        double r = sqrt(ss / d);
        rms_h += r;
        /* q = Wq . (h / rms(h)) for 128 outputs */
        double sq = 0;
        for (int o = 0; o < 128; o++) {
            double acc = 0;
            for (int i = 0; i < d; i++) acc += wq[(size_t)o * d + i] * e[i] * sqrt((double)d) / r;
            sq += acc * acc;
        }
        rms_q += sqrt(sq / 128);
        /* tied-embedding logits of the normed state */
        double sl = 0;
        for (int t = 0; t < 1024; t++) {
            double acc = 0;
            for (int i = 0; i < d; i++) acc += emb[(size_t)t * d + i] * e[i] * sqrt((double)d) / r;
            sl += acc * acc;
        }
        rms_logit += sqrt(sl / 1024);
    }
    rms_h /= 5, rms_q /= 5, rms_logit /= 5;
    if (fabs(rms_h - 1) > 0.15 || fabs(rms_q - 1) > 0.25 || rms_logit > 4.0)
        fail_msg("rms: hidden %g, q %g, logits %g", rms_h, rms_q, rms_logit);
    ts_free(emb);
    ts_free(wq);
    unmake(&m);
}

/* ---- determinism ---------------------------------------------------------------------- */

static void test_deterministic(void **state) {
    (void)state;
    ts_mkmodel_params p = params("tiny", TS_TYPE_Q4_0, 1, 1024);
    model a, b, c;
    make(&p, &a);
    make(&p, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.buf, b.buf, a.len);
    p.seed = 2;
    make(&p, &c);
    const ts_gguf_tensor *ta = ts_gguf_find_tensor(a.g, "blk.0.attn_q.weight");
    const ts_gguf_tensor *tc = ts_gguf_find_tensor(c.g, "blk.0.attn_q.weight");
    assert_int_equal(ta->nbytes, tc->nbytes);
    assert_true(memcmp(ta->data, tc->data, ta->nbytes) != 0);
    assert_true(a.len != c.len || memcmp(a.buf, c.buf, a.len) != 0);
    /* different tensors of one file differ too */
    const ts_gguf_tensor *tk = ts_gguf_find_tensor(a.g, "blk.1.attn_q.weight");
    assert_true(memcmp(ta->data, tk->data, ta->nbytes) != 0);
    unmake(&a);
    unmake(&b);
    unmake(&c);

    /* the type changes only the rounding: q8_0 dequantizes close to the f32 file */
    model f, q;
    p = params("tiny", TS_TYPE_F32, 9, 512);
    make(&p, &f);
    p.type = TS_TYPE_Q8_0;
    make(&p, &q);
    int64_t n1, n2;
    float *x = dequant(f.g, "blk.6.ffn_down.weight", &n1);
    float *y = dequant(q.g, "blk.6.ffn_down.weight", &n2);
    assert_int_equal(n1, n2);
    double err = 0;
    for (int64_t i = 0; i < n1; i++) err = fmax(err, fabs((double)x[i] - y[i]));
    assert_true(err < 0.01 * 3.47 / 16.0); /* < 1% of the largest possible value */
    ts_free(x);
    ts_free(y);
    unmake(&f);
    unmake(&q);
}

/* ---- vocabulary ----------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    const ts_gguf_str *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->ptr, y->ptr, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void check_vocab_layout(const ts_gguf *g, uint32_t n) {
    assert_token(g, 0, "<pad>", 3);
    assert_token(g, 1, "<eos>", 3);
    assert_token(g, 2, "<bos>", 3);
    assert_token(g, 3, "<unk>", 2);
    assert_token(g, 4, "<mask>", 3);
    assert_token(g, 5, "[multimodal]", 4);
    assert_token(g, 6, "<unused0>", 3);
    assert_token(g, 104, "<unused98>", 3);
    assert_token(g, 105, "<start_of_turn>", 3);
    assert_token(g, 106, "<end_of_turn>", 3);
    assert_token(g, 107, "\n", 4);
    assert_token(g, 108, "\n\n", 4);
    assert_token(g, 138, "  ", 4);
    assert_token(g, 238, "<0x00>", 6);
    assert_token(g, 238 + 0x41, "<0x41>", 6);
    assert_token(g, 493, "<0xFF>", 6);
    assert_token(g, 494, "\xE2\x96\x81", 1);
    assert_token(g, 495, "!", 1);
    if (n > 256000) {
        assert_token(g, 255999, "<start_of_image>", 4);
        assert_token(g, 256000, "<end_of_image>", 4);
    }
    /* unique texts; NORMAL scores strictly decreasing with the id */
    const ts_gguf_value *toks, *scores, *types;
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks), TS_OK);
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.scores", &scores), TS_OK);
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.token_type", &types), TS_OK);
    assert_int_equal(toks->v.arr.n, n);
    ts_gguf_str *sorted = malloc(n * sizeof *sorted);
    assert_non_null(sorted);
    memcpy(sorted, toks->v.arr.strs, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    for (uint32_t i = 1; i < n; i++)
        if (cmp_str(&sorted[i - 1], &sorted[i]) == 0)
            fail_msg("duplicate token '%.*s'", (int)sorted[i].len, sorted[i].ptr);
    free(sorted);
    double last = INFINITY;
    uint32_t n_normal = 0;
    for (uint32_t i = 0; i < n; i++) {
        assert_true(ts_utf8_valid(toks->v.arr.strs[i].ptr, toks->v.arr.strs[i].len));
        if (ts_gguf_arr_i64(types, i) != 1) continue;
        double s = ts_gguf_arr_f64(scores, i);
        assert_true(s < last);
        last = s;
        n_normal++;
    }
    assert_int_equal(n_normal, n - 494 - (n > 256000 ? 2 : 0));
}

static void check_roundtrip(const ts_gguf *g, const char *text, size_t *n_tokens) {
    ts_tokenizer *tok;
    ts_status rc = ts_tokenizer_load(g, &tok);
    if (rc != TS_OK) fail_msg("tokenizer: %s", ts_last_error());
    ts_tokens t = {0};
    assert_int_equal(ts_tokenize(tok, text, strlen(text), TS_TOK_DEFAULT, &t), TS_OK);
    assert_true(t.n >= 1);
    assert_int_equal(t.ids[0], 2);
    char *out = NULL;
    size_t len = 0;
    rc = ts_detokenize(tok, t.ids + 1, t.n - 1, TS_DETOK_SPECIAL, &out, &len);
    if (rc != TS_OK) fail_msg("detokenize: %s", ts_last_error());
    assert_int_equal(len, strlen(text));
    assert_memory_equal(out, text, len);
    *n_tokens = t.n - 1;
    ts_free(out);
    ts_tokens_free(&t);
    ts_tokenizer_free(tok);
}

static const char g_text[] =
    "The quick brown fox jumps over the lazy dog, then the other one sat on a mat.\n\n"
    "Unicode: caf\xC3\xA9 \xE2\x98\x83 \xF0\x9F\x98\x80 and <start_of_turn>user  spaced\ttab";

static void test_vocab_small(void **state) {
    (void)state;
    ts_mkmodel_params p = params("tiny", TS_TYPE_Q4_0, 5, 512);
    model m;
    make(&p, &m);
    check_vocab_layout(m.g, 512);
    size_t n;
    check_roundtrip(m.g, g_text, &n);
    unmake(&m);
}

static void test_vocab_full(void **state) {
    (void)state;
    ts_mkmodel_params p = params("tiny", TS_TYPE_Q4_0, 5, 0);
    model m;
    make(&p, &m);
    ts_config c;
    assert_int_equal(ts_config_from_gguf(m.g, &c), TS_OK);
    assert_int_equal(c.n_vocab, TS_MKMODEL_DEFAULT_VOCAB);
    assert_int_equal(ts_config_check_tensors(&c, m.g), TS_OK);
    check_vocab_layout(m.g, TS_MKMODEL_DEFAULT_VOCAB);
    size_t n;
    check_roundtrip(m.g, g_text, &n);
    /* generated words merge: far fewer tokens than bytes */
    assert_true(n < strlen(g_text) * 3 / 4);
    unmake(&m);
}

/* ---- real shapes ----------------------------------------------------------------------- */

static void test_270m_shape(void **state) {
    (void)state;
    ts_mkmodel_params p = params("270M", TS_TYPE_Q4_0, 7, 1024);
    p.n_ctx = 4096;
    model m;
    make(&p, &m);
    ts_config c;
    assert_int_equal(ts_config_from_gguf(m.g, &c), TS_OK);
    assert_int_equal(ts_config_check_tensors(&c, m.g), TS_OK);
    assert_string_equal(ts_config_size_label(&c), "270M");
    assert_int_equal(c.n_layer, 18);
    assert_int_equal(c.n_embd, 640);
    assert_int_equal(c.n_ff, 2048);
    assert_int_equal(c.n_head, 4);
    assert_int_equal(c.n_head_kv, 1);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.sliding_window, 512);
    assert_int_equal(c.n_ctx_train, 4096);
    assert_int_equal(c.n_global, 3);
    assert_true(c.is_global[5] && c.is_global[11] && c.is_global[17]);
    assert_float_equal(c.rope_scale_global, 1.0f, 0);
    assert_float_equal(c.attn_scale, 0.0625f, 0);
    assert_null(ts_gguf_find(m.g, "gemma3.rope.scaling.type"));
    assert_str(m.g, "general.name", "tessera random 270m");
    check_std(m.g, "blk.17.ffn_down.weight", 0.0, 1.0 / sqrt(2048.0), 0.08);
    unmake(&m);
}

static void test_estimates(void **state) {
    (void)state;
    /* 27B q4_0, full vocabulary: every weight 4.5 bits, plus the header */
    ts_mkmodel_params p = params("27b", TS_TYPE_Q4_0, 0, 0);
    uint64_t bytes = 0, n_params = 0;
    assert_int_equal(ts_mkmodel_estimate_bytes(&p, &bytes, &n_params), TS_OK);
    assert_int_equal(n_params, 27009002240ull);
    assert_true(bytes > 15.15e9 && bytes < 15.25e9);
    double gib = (double)bytes / (1024.0 * 1024.0 * 1024.0);
    assert_true(gib > 14.14 && gib < 14.17);
    assert_true(bytes > n_params / 32 * 18);
    /* all sizes: params as spec 1.1 (non-embedding + 262144 * d); bytes grow with the type */
    static const struct {
        const char *name;
        double non_embd_m; /* millions, spec 1.1 */
    } want[] = {{"270m", 100.3}, {"1b", 697.8}, {"4b", 3208.6}, {"12b", 10758.4},
                {"27b", 25598.4}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint64_t prev = 0;
        for (size_t ti = 0; ti < sizeof g_types / sizeof g_types[0]; ti++) {
            p = params(want[i].name, g_types[ti], 0, 0);
            assert_int_equal(ts_mkmodel_estimate_bytes(&p, &bytes, &n_params), TS_OK);
            uint64_t non_embd = n_params - 262144ull * p.shape->n_embd;
            if (fabs((double)non_embd / 1e6 / want[i].non_embd_m - 1.0) > 1e-3)
                fail_msg("%s: %llu non-embedding parameters, spec says %.1fM", want[i].name,
                         (unsigned long long)non_embd, want[i].non_embd_m);
            assert_true(bytes > prev);
            prev = bytes;
        }
    }
}

static void test_bad_params(void **state) {
    (void)state;
    assert_null(ts_mkmodel_shape_by_name("28b"));
    assert_null(ts_mkmodel_shape_by_name(NULL));
    assert_non_null(ts_mkmodel_shape_by_name("TINY"));
    assert_non_null(ts_mkmodel_shape_at(5));
    assert_null(ts_mkmodel_shape_at(6));
    uint32_t t;
    assert_true(ts_mkmodel_type_from_name("Q4_0", &t) && t == TS_TYPE_Q4_0);
    assert_true(ts_mkmodel_type_from_name("f16", &t) && t == TS_TYPE_F16);
    assert_false(ts_mkmodel_type_from_name("q4_k", &t));
    uint64_t b;
    ts_mkmodel_params p = params("tiny", TS_TYPE_Q4_0, 0, 511);
    assert_int_equal(ts_mkmodel_estimate_bytes(&p, &b, NULL), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "vocabulary size 511"));
    p.n_vocab = TS_MKMODEL_MAX_VOCAB + 1;
    assert_int_equal(ts_mkmodel_estimate_bytes(&p, &b, NULL), TS_INVAL);
    p.n_vocab = 512;
    p.type = TS_TYPE_Q4_K;
    assert_int_equal(ts_mkmodel_estimate_bytes(&p, &b, NULL), TS_INVAL);
    p.type = TS_TYPE_Q4_0;
    p.shape = NULL;
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(ts_mkmodel_write(&p, f), TS_INVAL);
    assert_int_equal(ts_mkmodel_write(NULL, f), TS_INVAL);
    fclose(f);
}

/* A full disk is reported, not ignored. */
static void test_disk_full(void **state) {
    (void)state;
    FILE *f = fopen("/dev/full", "wb");
    if (!f) skip();
    ts_mkmodel_params p = params("tiny", TS_TYPE_Q8_0, 0, 512);
    assert_int_equal(ts_mkmodel_write(&p, f), TS_IO);
    fclose(f);
}

/* The fast Q4_0 / Q8_0 quantizers match the references bit for bit, ties, halves and zeros
 * included. */
static void test_quant_exact(void **state) {
    (void)state;
    enum { N = 32 * 64 };
    float x[N];
    uint8_t a[N / 32 * 34], b[N / 32 * 34];
    for (int rep = 0; rep < 20; rep++) {
        for (int i = 0; i < N; i++)
            x[i] = ts_mkmodel_weight((uint64_t)rep, "q", N, (uint64_t)i, 0.0f, 1.0f);
        /* block 0 all zero; block 1 tie v/-v (negative first); block 2 tie (positive first);
         * block 3 a single nonzero; block 4 constant; block 5 -0.0 */
        for (int j = 0; j < 32; j++) x[j] = 0.0f;
        x[32 + 3] = -4.0f, x[32 + 9] = 4.0f;
        x[64 + 1] = 4.0f, x[64 + 30] = -4.0f;
        for (int j = 0; j < 32; j++) x[96 + j] = j == 17 ? -0.5f : 0.0f;
        for (int j = 0; j < 32; j++) x[128 + j] = 0.25f;
        for (int j = 0; j < 32; j++) x[160 + j] = -0.0f;
        if (rep & 1)
            for (int i = 0; i < N; i++) x[i] *= 1e-3f * (float)(rep + 1);
        ts_quantize_row_q4_0_ref(x, a, N);
        ts_mkmodel_quantize_q4_0(x, b, N);
        assert_memory_equal(a, b, N / 32 * 18);
        /* block 6: exact halves after scaling (amax 127 -> id 1) */
        for (int j = 0; j < 32; j++) x[192 + j] = j == 0 ? 127.0f : (float)(j - 16) + 0.5f;
        /* block 7: values just below a half */
        for (int j = 0; j < 32; j++) x[224 + j] = j == 0 ? -127.0f : 0.49999997f * (float)(j % 3);
        ts_quantize_row_q8_0_ref(x, a, N);
        ts_mkmodel_quantize_q8_0(x, b, N);
        assert_memory_equal(a, b, N / 32 * 34);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_each_type), cmocka_unit_test(test_activation_scale),
        cmocka_unit_test(test_deterministic),  cmocka_unit_test(test_vocab_small),
        cmocka_unit_test(test_vocab_full),     cmocka_unit_test(test_270m_shape),
        cmocka_unit_test(test_estimates),      cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_disk_full),      cmocka_unit_test(test_quant_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
