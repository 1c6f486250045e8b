/* test_config.c: Gemma 3 configuration from GGUF metadata, for every size (270M..27B,
 * values from gemma3-spec.md section 1), defaults, and refusals with clear messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "gguf_write.h"
#include "quant.h"

typedef struct {
    const char *label;
    uint32_t layers, d, ff, heads, kv, hd, window, ctx;
    float rope_scale; /* 0 = no scaling keys */
    float want_scale; /* attention scale */
    uint32_t n_global;
} size_row;

static const size_row g_sizes[] = {
    {"270M", 18, 640, 2048, 4, 1, 256, 512, 32768, 0.0f, 0.0625f, 3},
    {"1B", 26, 1152, 6912, 4, 1, 256, 512, 32768, 0.0f, 0.0625f, 4},
    {"4B", 34, 2560, 10240, 8, 4, 256, 1024, 131072, 8.0f, 0.0625f, 5},
    {"12B", 48, 3840, 15360, 16, 8, 256, 1024, 131072, 8.0f, 0.0625f, 8},
    {"27B", 62, 5376, 21504, 32, 16, 128, 1024, 131072, 8.0f, 0.07715167f, 10},
};

/* Options for building a metadata image. */
typedef struct {
    const char *arch;
    const char *skip_key;     /* leave this key out */
    uint32_t vocab;           /* token_embd rows */
    int64_t tokens_len;       /* -1: no tokens array */
    bool all_tensors;         /* write every decoder tensor (tiny shapes only) */
    const char *skip_tensor;  /* leave this tensor out */
    const char *bad_tensor;   /* give this tensor a wrong shape */
} build_opts;

static void add_tensor(ts_gguf_writer *w, const build_opts *o, const char *name, int64_t ne0,
                       int64_t ne1) {
    if (o->skip_tensor && !strcmp(o->skip_tensor, name)) return;
    int64_t ne[2] = {ne0, ne1};
    if (o->bad_tensor && !strcmp(o->bad_tensor, name)) ne[ne1 ? 1 : 0] += 32;
    uint32_t type = ne1 ? TS_TYPE_Q4_0 : TS_TYPE_F32;
    size_t row, n;
    assert_true(ts_type_row_bytes(type, ne[0], &row));
    n = row * (size_t)(ne1 ? ne[1] : 1);
    uint8_t *data = calloc(1, n);
    assert_non_null(data);
    assert_int_equal(ts_gguf_w_tensor(w, name, type, ne1 ? 2 : 1, ne, data), TS_OK);
    free(data);
}

static ts_gguf *build(const size_row *s, const build_opts *o, uint8_t **img) {
    ts_gguf_writer *w;
    assert_int_equal(ts_gguf_writer_init(&w), TS_OK);
#define SKIP(k) (o->skip_key && !strcmp(o->skip_key, (k)))
    if (!SKIP("general.architecture"))
        assert_int_equal(ts_gguf_w_str(w, "general.architecture", o->arch ? o->arch : "gemma3"), TS_OK);
    const char *a = o->arch ? o->arch : "gemma3";
    char k[128];
#define U32(suffix, v)                                                                     \
    snprintf(k, sizeof k, "%s.%s", a, suffix);                                             \
    if (!SKIP(k)) assert_int_equal(ts_gguf_w_u32(w, k, v), TS_OK)
    U32("context_length", s->ctx);
    U32("embedding_length", s->d);
    U32("block_count", s->layers);
    U32("feed_forward_length", s->ff);
    U32("attention.head_count", s->heads);
    U32("attention.head_count_kv", s->kv);
    U32("attention.key_length", s->hd);
    U32("attention.value_length", s->hd);
    U32("attention.sliding_window", s->window);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", a);
    assert_int_equal(ts_gguf_w_f32(w, k, 1e-6f), TS_OK);
    snprintf(k, sizeof k, "%s.rope.freq_base", a);
    assert_int_equal(ts_gguf_w_f32(w, k, 1e6f), TS_OK);
    if (s->rope_scale > 0) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", a);
        assert_int_equal(ts_gguf_w_str(w, k, "linear"), TS_OK);
        snprintf(k, sizeof k, "%s.rope.scaling.factor", a);
        assert_int_equal(ts_gguf_w_f32(w, k, s->rope_scale), TS_OK);
    }
    uint32_t vocab = o->vocab ? o->vocab : 64;
    if (o->tokens_len >= 0) {
        const char **strs = calloc((size_t)o->tokens_len + 1, sizeof *strs);
        for (int64_t i = 0; i < o->tokens_len; i++) strs[i] = "t";
        assert_int_equal(ts_gguf_w_arr_str(w, "tokenizer.ggml.tokens", strs, (uint64_t)o->tokens_len), TS_OK);
        free(strs);
    }
    add_tensor(w, o, "token_embd.weight", s->d, vocab);
    if (o->all_tensors) {
        int64_t d = s->d, q = (int64_t)s->heads * s->hd, kv = (int64_t)s->kv * s->hd;
        add_tensor(w, o, "output_norm.weight", d, 0);
        for (uint32_t i = 0; i < s->layers; i++) {
            char n[64];
#define T(suffix, a0, a1) snprintf(n, sizeof n, "blk.%u.%s.weight", i, suffix); add_tensor(w, o, n, a0, a1)
            T("attn_norm", d, 0); T("attn_q", d, q); T("attn_k", d, kv); T("attn_v", d, kv);
            T("attn_q_norm", s->hd, 0); T("attn_k_norm", s->hd, 0); T("attn_output", q, d);
            T("post_attention_norm", d, 0); T("ffn_norm", d, 0); T("ffn_gate", d, s->ff);
            T("ffn_up", d, s->ff); T("ffn_down", s->ff, d); T("post_ffw_norm", d, 0);
#undef T
        }
    }
    size_t len;
    assert_int_equal(ts_gguf_w_to_buffer(w, img, &len), TS_OK);
    ts_gguf_writer_free(w);
    ts_gguf *g = NULL;
    assert_int_equal(ts_gguf_parse(*img, len, &g), TS_OK);
    return g;
#undef U32
#undef SKIP
}

static void test_every_size(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof g_sizes / sizeof g_sizes[0]; i++) {
        const size_row *s = &g_sizes[i];
        build_opts o = {.tokens_len = -1, .vocab = 96};
        uint8_t *img;
        ts_gguf *g = build(s, &o, &img);
        ts_config c;
        assert_int_equal(ts_config_from_gguf(g, &c), TS_OK);
        assert_string_equal(ts_config_size_label(&c), s->label);
        assert_int_equal(c.n_layer, s->layers);
        assert_int_equal(c.n_embd, s->d);
        assert_int_equal(c.n_ff, s->ff);
        assert_int_equal(c.n_head, s->heads);
        assert_int_equal(c.n_head_kv, s->kv);
        assert_int_equal(c.head_dim, s->hd);
        assert_int_equal(c.sliding_window, s->window);
        assert_int_equal(c.n_ctx_train, s->ctx);
        assert_int_equal(c.n_vocab, 96);
        assert_int_equal(c.n_global, s->n_global);
        for (uint32_t l = 0; l < c.n_layer; l++)
            assert_int_equal(c.is_global[l], (l + 1) % 6 == 0);
        assert_float_equal(c.attn_scale, s->want_scale, 1e-6);
        assert_float_equal(c.rope_scale_global, s->rope_scale > 0 ? s->rope_scale : 1.0f, 0);
        assert_float_equal(c.rope_base_global, 1e6f, 0);
        assert_float_equal(c.rope_base_local, 1e4f, 0); /* default: key absent */
        assert_float_equal(c.embd_scale, sqrtf((float)s->d), 0);
        ts_gguf_close(g);
        ts_free(img);
    }
}

static void test_27b_attention_scale_is_168(void **state) {
    (void)state;
    build_opts o = {.tokens_len = -1};
    uint8_t *img;
    ts_gguf *g = build(&g_sizes[4], &o, &img);
    ts_config c;
    assert_int_equal(ts_config_from_gguf(g, &c), TS_OK);
    assert_float_equal(c.query_pre_attn_scalar, 168.0f, 0);
    ts_gguf_close(g);
    ts_free(img);
}

static void expect_fail(const build_opts *o, ts_status want, const char *needle) {
    uint8_t *img;
    ts_gguf *g = build(&g_sizes[0], o, &img);
    ts_config c;
    ts_status rc = ts_config_from_gguf(g, &c);
    if (rc == TS_OK) rc = ts_config_check_tensors(&c, g);
    assert_int_equal(rc, want);
    if (!strstr(ts_last_error(), needle)) fail_msg("message '%s' lacks '%s'", ts_last_error(), needle);
    ts_gguf_close(g);
    ts_free(img);
}

static void test_refusals(void **state) {
    (void)state;
    expect_fail(&(build_opts){.arch = "llama", .tokens_len = -1}, TS_UNSUPPORTED, "'llama'");
    expect_fail(&(build_opts){.skip_key = "general.architecture", .tokens_len = -1}, TS_FORMAT,
                "general.architecture");
    const char *required[] = {"gemma3.block_count", "gemma3.embedding_length",
                              "gemma3.feed_forward_length", "gemma3.attention.head_count"};
    for (size_t i = 0; i < 4; i++)
        expect_fail(&(build_opts){.skip_key = required[i], .tokens_len = -1}, TS_FORMAT, required[i]);
    expect_fail(&(build_opts){.tokens_len = 10, .vocab = 64}, TS_FORMAT, "tokenizer.ggml.tokens");
    expect_fail(&(build_opts){.tokens_len = -1, .all_tensors = true,
                              .skip_tensor = "blk.3.ffn_up.weight"}, TS_FORMAT, "blk.3.ffn_up.weight");
    expect_fail(&(build_opts){.tokens_len = -1, .all_tensors = true,
                              .bad_tensor = "blk.7.attn_k.weight"}, TS_FORMAT, "blk.7.attn_k.weight");
    expect_fail(&(build_opts){.tokens_len = -1, .all_tensors = true,
                              .bad_tensor = "blk.0.attn_q_norm.weight"}, TS_FORMAT,
                "blk.0.attn_q_norm.weight");
}

static void test_complete_tiny_model_passes(void **state) {
    (void)state;
    size_row tiny = {"custom", 7, 64, 128, 4, 2, 32, 16, 512, 0.0f, 0, 1};
    build_opts o = {.tokens_len = 64, .vocab = 64, .all_tensors = true};
    uint8_t *img;
    ts_gguf *g = build(&tiny, &o, &img);
    ts_config c;
    assert_int_equal(ts_config_from_gguf(g, &c), TS_OK);
    assert_int_equal(ts_config_check_tensors(&c, g), TS_OK);
    assert_string_equal(ts_config_size_label(&c), "custom");
    assert_int_equal(c.n_global, 1);
    assert_true(c.is_global[5] && !c.is_global[6]);
    ts_gguf_close(g);
    ts_free(img);
}

static void test_real_270m(void **state) {
    (void)state;
    const char *p = getenv("TESSERA_MODEL_270M");
    if (!p || !*p) skip();
    ts_gguf *g;
    if (ts_gguf_open(p, &g) != TS_OK) fail_msg("%s", ts_last_error());
    ts_config c;
    assert_int_equal(ts_config_from_gguf(g, &c), TS_OK);
    assert_int_equal(ts_config_check_tensors(&c, g), TS_OK);
    assert_int_equal(c.n_layer, 18);
    assert_int_equal(c.n_embd, 640);
    assert_int_equal(c.n_head, 4);
    assert_int_equal(c.n_head_kv, 1);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.sliding_window, 512);
    assert_int_equal(c.n_vocab, 262144);
    assert_int_equal(c.n_global, 3);
    assert_true(c.is_global[5] && c.is_global[11] && c.is_global[17]);
    assert_float_equal(c.rope_scale_global, 1.0f, 0);
    ts_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_size),
        cmocka_unit_test(test_27b_attention_scale_is_168),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_complete_tiny_model_passes),
        cmocka_unit_test(test_real_270m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
