/* test_tokenizer.c: tokenizer tests.
 *
 * Built twice (tests/cmake/tokenizer.cmake):
 *   test_tokenizer        (label unit)  synthetic vocabularies: BPE ranking, byte fallback,
 *                                       added tokens, UTF-8 handling, streaming decode.
 *   test_tokenizer_model  (label model, argument --model) the Gemma 3 270M GGUF from
 *       $TESSERA_MODEL_270M: our ids == Hugging Face ids for every corpus string
 *       (tests/fixtures/tokenizer), with and without special-token parsing; decoding ==
 *       HF decoding; decode(encode(s)) == s; streaming == whole decoding; special tokens;
 *       invalid UTF-8, NUL, empty and megabyte inputs. Exits 77 (skip) without the model.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "gguf.h"
#include "tokenizer.h"

#ifndef TS_TEST_DATA
#define TS_TEST_DATA "tests"
#endif

/* ---------------------------------------------------------------- helpers */

static bool ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(int32_t)) == 0);
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    if (n > 40) fprintf(stderr, " ... (%zu)", n);
    fprintf(stderr, "\n");
}

/* Encodes and checks against expected ids; returns true on match. */
static bool encode_is(const ts_tokenizer *tok, const char *s, size_t len, unsigned flags,
                      const int32_t *want, size_t nwant) {
    ts_tokens t = {0};
    ts_status rc = ts_tokenize(tok, s, len, flags, &t);
    bool ok = rc == TS_OK && ids_equal(t.ids, t.n, want, nwant);
    if (!ok) {
        fprintf(stderr, "encode mismatch (rc %s %s) for '%.*s'\n", ts_status_name(rc),
                ts_last_error(), (int)(len > 60 ? 60 : len), s);
        print_ids("want", want, nwant);
        print_ids("got ", t.ids, t.n);
    }
    ts_tokens_free(&t);
    return ok;
}

/* Decodes ids through the streaming detokenizer; checks no piece ends mid-character. */
static char *stream_decode(const ts_tokenizer *tok, const int32_t *ids, size_t n, size_t *out_len) {
    ts_detok_stream *s;
    assert_int_equal(ts_detok_stream_init(tok, &s), TS_OK);
    size_t cap = 64, len = 0;
    char *buf = malloc(cap);
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t pl;
        if (i < n) assert_int_equal(ts_detok_stream_push(s, ids[i], &piece, &pl), TS_OK);
        else assert_int_equal(ts_detok_stream_flush(s, &piece, &pl), TS_OK);
        assert_true(ts_utf8_check(piece, pl, NULL)); /* never half a character */
        while (len + pl + 1 > cap) buf = realloc(buf, cap *= 2);
        memcpy(buf + len, piece, pl);
        len += pl;
    }
    buf[len] = 0;
    ts_detok_stream_free(s);
    *out_len = len;
    return buf;
}

/* ---------------------------------------------------------------- synthetic vocabulary */

/* A small vocabulary with the Gemma layout: specials, newline runs, space runs stored as
 * spaces, byte tokens 7..262, then normal pieces in merge-priority order. */
static const char *const k_synth_head[] = {
    "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "\n\n", "  ",
    "   ", "<start_of_image>", "<b>",
};
static const int32_t k_synth_head_type[] = {3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4};
static const char *const k_synth_tail[] = {
    "\xE2\x96\x81", "a", "b", "c", "d", "e", "h", "l", "o", "w", "r", "<", ">", "s", "t",
    "_", "\xE2\x96\x81" "\xE2\x96\x81", "ab", "bc", "abc", "he", "ll", "llo", "hello",
    "\xE2\x96\x81w", "or", "ld", "\xE2\x96\x81wor", "\xE2\x96\x81world",
    "aa", "aaa", "\xC3\xA9" /* \u00e9 */, "\xE4\xB8\xAD" /* \u4e2d */, "st", "ar", "<s", "<st",
};

typedef struct {
    const char *piece[600];
    size_t len[600];
    int32_t type[600];
    char bytes[256][7];
    size_t n;
} synth;

static ts_tokenizer *synth_tokenizer(void) {
    static synth v;
    v.n = 0;
    for (size_t i = 0; i < sizeof k_synth_head / sizeof *k_synth_head; i++) {
        v.piece[v.n] = k_synth_head[i];
        v.len[v.n] = strlen(k_synth_head[i]);
        v.type[v.n++] = k_synth_head_type[i];
    }
    for (int b = 0; b < 256; b++) {
        snprintf(v.bytes[b], sizeof v.bytes[b], "<0x%02X>", b);
        v.piece[v.n] = v.bytes[b];
        v.len[v.n] = 6;
        v.type[v.n++] = TS_TOKEN_TYPE_BYTE;
    }
    for (size_t i = 0; i < sizeof k_synth_tail / sizeof *k_synth_tail; i++) {
        v.piece[v.n] = k_synth_tail[i];
        v.len[v.n] = strlen(k_synth_tail[i]);
        v.type[v.n++] = TS_TOKEN_TYPE_NORMAL;
    }
    ts_tokenizer_vocab tv = {v.n, v.piece, v.len, v.type, 2, 1, 3, 0};
    ts_tokenizer *tok;
    if (ts_tokenizer_init(&tv, &tok) != TS_OK) fail_msg("%s", ts_last_error());
    return tok;
}

static int32_t sid(const ts_tokenizer *tok, const char *s) {
    int32_t id = ts_tokenizer_find(tok, s, strlen(s));
    if (id < 0) fail_msg("no piece '%s'", s);
    return id;
}

static void test_synth_basics(void **state) {
    (void)state;
    ts_tokenizer *tok = synth_tokenizer();
    assert_int_equal(ts_tokenizer_bos(tok), 2);
    assert_int_equal(ts_tokenizer_eos(tok), 1);
    assert_int_equal(ts_tokenizer_eot(tok), 5);
    assert_true(ts_tokenizer_is_eog(tok, 1) && ts_tokenizer_is_eog(tok, 5));
    assert_false(ts_tokenizer_is_eog(tok, 2));
    assert_int_equal(ts_tokenizer_type(tok, 12), TS_TOKEN_TYPE_BYTE);
    assert_int_equal(ts_tokenizer_type(tok, -1), TS_TOKEN_TYPE_UNDEFINED);
    size_t pl;
    assert_non_null(ts_tokenizer_piece(tok, 4, &pl));
    assert_int_equal(pl, strlen("<start_of_turn>"));
    assert_null(ts_tokenizer_piece(tok, 100000, &pl));

    /* "hello world": no prefix space; merges by rank; space -> U+2581 */
    int32_t w1[] = {2, sid(tok, "hello"), sid(tok, "\xE2\x96\x81world")};
    assert_true(encode_is(tok, "hello world", 11, TS_TOK_DEFAULT, w1, 3));
    /* without BOS */
    assert_true(encode_is(tok, "hello world", 11, TS_TOK_PARSE_SPECIAL, w1 + 1, 2));
    /* "abc": ab (rank lower than bc) merges first, then abc */
    int32_t w2[] = {sid(tok, "abc")};
    assert_true(encode_is(tok, "abc", 3, 0, w2, 1));
    /* "bcab": bc and ab, never "abc" across */
    int32_t w3[] = {sid(tok, "bc"), sid(tok, "ab")};
    assert_true(encode_is(tok, "bcab", 4, 0, w3, 2));
    /* "aaaa": aa merges leftmost first: aa aa (aaa needs a+aa or aa+a; aa+aa is no piece) */
    int32_t w4[] = {sid(tok, "aa"), sid(tok, "aa")};
    assert_true(encode_is(tok, "aaaa", 4, 0, w4, 2));
    /* byte fallback for unknown chars: "x" = 0x78, "ñ" = C3 B1; known "é" and "中" stay */
    int32_t w5[] = {12 + 0x78, 12 + 0xC3, 12 + 0xB1, sid(tok, "\xC3\xA9"), sid(tok, "\xE4\xB8\xAD")};
    assert_true(encode_is(tok, "x\xC3\xB1\xC3\xA9\xE4\xB8\xAD", 8, 0, w5, 5));
    /* space runs: stored as "  ", matched as U+2581 U+2581 by BPE (HF respelling) */
    int32_t w6[] = {sid(tok, "a"), sid(tok, "\xE2\x96\x81\xE2\x96\x81"), sid(tok, "b")};
    assert_true(encode_is(tok, "a  b", 4, 0, w6, 3));
    /* newline runs are user-defined: always matched, longest first */
    int32_t w7[] = {sid(tok, "a"), 7, 6, sid(tok, "b")};
    assert_true(encode_is(tok, "a\n\n\nb", 5, 0, w7, 4));
    /* specials: on -> one token; off -> plain text (BPE) */
    int32_t w8[] = {2, 4, sid(tok, "hello"), 5};
    assert_true(encode_is(tok, "<start_of_turn>hello<end_of_turn>", 33, TS_TOK_DEFAULT, w8, 4));
    ts_tokens t = {0};
    assert_int_equal(ts_tokenize(tok, "<start_of_turn>", 15, 0, &t), TS_OK);
    assert_true(t.n > 1);
    for (size_t i = 0; i < t.n; i++) assert_int_not_equal(t.ids[i], 4);
    ts_tokens_free(&t);
    /* user-defined <start_of_image> and <b> are matched even with parsing off */
    int32_t w9[] = {10, 11};
    assert_true(encode_is(tok, "<start_of_image><b>", 19, 0, w9, 2));
    /* leftmost-longest: "\n\n\n\n" = "\n\n" "\n\n" */
    int32_t w10[] = {7, 7};
    assert_true(encode_is(tok, "\n\n\n\n", 4, 0, w10, 2));
    /* empty input */
    int32_t w11[] = {2};
    assert_true(encode_is(tok, "", 0, TS_TOK_DEFAULT, w11, 1));
    assert_true(encode_is(tok, "", 0, 0, NULL, 0));
    /* NUL bytes are characters (byte fallback here) */
    int32_t w12[] = {sid(tok, "a"), 12, sid(tok, "b")};
    assert_true(encode_is(tok, "a\0b", 3, 0, w12, 3));
    ts_tokenizer_free(tok);
}

static void test_synth_invalid_utf8(void **state) {
    (void)state;
    ts_tokenizer *tok = synth_tokenizer();
    ts_tokens t = {0};
    assert_int_equal(ts_tokenize(tok, "ab", 2, TS_TOK_DEFAULT, &t), TS_OK);
    size_t n0 = t.n;
    static const struct {
        const char *s;
        size_t len, off;
    } bad[] = {
        {"a\xFF", 2, 1},           {"\x80", 1, 0},
        {"ab\xC3", 3, 2},          /* truncated */
        {"\xC0\x80", 2, 0},        /* overlong */
        {"x\xED\xA0\x80", 4, 1},   /* surrogate */
        {"\xF4\x90\x80\x80", 4, 0}, /* > U+10FFFF */
        {"ok\xE4\xB8", 4, 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ts_tokenize(tok, bad[i].s, bad[i].len, TS_TOK_DEFAULT, &t), TS_FORMAT);
        char want[64];
        snprintf(want, sizeof want, "offset %zu", bad[i].off);
        if (!strstr(ts_last_error(), want)) fail_msg("message '%s' lacks '%s'", ts_last_error(), want);
        assert_int_equal(t.n, n0); /* output untouched */
        size_t off = 99;
        assert_false(ts_utf8_check(bad[i].s, bad[i].len, &off));
        assert_int_equal(off, bad[i].off);
    }
    size_t sl;
    char *san = ts_utf8_sanitize("a\xFF" "b", 3, &sl);
    assert_string_equal(san, "a\xEF\xBF\xBD" "b");
    ts_free(san);
    ts_tokens_free(&t);
    assert_int_equal(ts_tokenize(tok, NULL, 1, 0, &t), TS_INVAL);
    /* too long: refused before the text is read */
    assert_int_equal(ts_tokenize(tok, "x", TS_TOK_MAX_INPUT + 1, 0, &t), TS_RANGE);
    ts_tokens_free(&t);
    ts_tokenizer_free(tok);
}

static void test_synth_decode(void **state) {
    (void)state;
    ts_tokenizer *tok = synth_tokenizer();
    int32_t ids[] = {2, 4, sid(tok, "hello"), sid(tok, "\xE2\x96\x81world"), 8, 12 + 'x', 5};
    char *s;
    size_t n;
    assert_int_equal(ts_detokenize(tok, ids, 7, 0, &s, &n), TS_OK);
    assert_string_equal(s, "hello world  x");
    ts_free(s);
    assert_int_equal(ts_detokenize(tok, ids, 7, TS_DETOK_SPECIAL, &s, &n), TS_OK);
    assert_string_equal(s, "<bos><start_of_turn>hello world  x<end_of_turn>");
    ts_free(s);
    int32_t bad[] = {2, 1 << 20};
    assert_int_equal(ts_detokenize(tok, bad, 2, 0, &s, &n), TS_RANGE);
    assert_non_null(strstr(ts_last_error(), "position 1"));

    /* streaming: "中" split over three byte tokens, then a control token, then text */
    int32_t st[] = {12 + 0xE4, 12 + 0xB8, 4, 12 + 0xAD, sid(tok, "a")};
    ts_detok_stream *ds;
    assert_int_equal(ts_detok_stream_init(tok, &ds), TS_OK);
    const char *p;
    size_t pl;
    assert_int_equal(ts_detok_stream_push(ds, st[0], &p, &pl), TS_OK);
    assert_int_equal(pl, 0);
    assert_int_equal(ts_detok_stream_push(ds, st[1], &p, &pl), TS_OK);
    assert_int_equal(pl, 0);
    assert_int_equal(ts_detok_stream_push(ds, st[2], &p, &pl), TS_OK); /* control: nothing */
    assert_int_equal(pl, 0);
    assert_int_equal(ts_detok_stream_push(ds, st[3], &p, &pl), TS_OK);
    assert_int_equal(pl, 3);
    assert_memory_equal(p, "\xE4\xB8\xAD", 3);
    assert_int_equal(ts_detok_stream_push(ds, st[4], &p, &pl), TS_OK);
    assert_int_equal(pl, 1);
    /* invalid: a lone continuation byte, then a truncated lead followed by ASCII */
    assert_int_equal(ts_detok_stream_push(ds, 12 + 0x80, &p, &pl), TS_OK);
    assert_int_equal(pl, 3);
    assert_memory_equal(p, "\xEF\xBF\xBD", 3);
    assert_int_equal(ts_detok_stream_push(ds, 12 + 0xE4, &p, &pl), TS_OK);
    assert_int_equal(pl, 0);
    assert_int_equal(ts_detok_stream_push(ds, sid(tok, "a"), &p, &pl), TS_OK);
    assert_int_equal(pl, 4);
    assert_memory_equal(p, "\xEF\xBF\xBD" "a", 4);
    /* held bytes at the end come out on flush */
    assert_int_equal(ts_detok_stream_push(ds, 12 + 0xF0, &p, &pl), TS_OK);
    assert_int_equal(pl, 0);
    assert_int_equal(ts_detok_stream_flush(ds, &p, &pl), TS_OK);
    assert_int_equal(pl, 3);
    assert_int_equal(ts_detok_stream_push(ds, -1, &p, &pl), TS_RANGE);
    ts_detok_stream_free(ds);
    ts_tokenizer_free(tok);
}

static void test_synth_big_inputs(void **state) {
    (void)state;
    ts_tokenizer *tok = synth_tokenizer();
    size_t n = 1 << 20;
    char *s = malloc(n);
    ts_tokens t = {0};
    /* 1 MiB of one letter, of spaces, of a two-piece pattern, and mixed text with NULs */
    const char *pats[] = {"a", " ", "ab", "hello world\n\n<b>\0\xE4\xB8\xAD "};
    size_t plen[] = {1, 1, 2, 21};
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < n; i++) s[i] = pats[k][i % plen[k]];
        size_t len = n - n % plen[k];
        t.n = 0;
        assert_int_equal(ts_tokenize(tok, s, len, 0, &t), TS_OK);
        assert_true(t.n > 0);
        char *d;
        size_t dl;
        assert_int_equal(ts_detokenize(tok, t.ids, t.n, TS_DETOK_SPECIAL, &d, &dl), TS_OK);
        assert_int_equal(dl, len);
        assert_memory_equal(d, s, len);
        ts_free(d);
    }
    free(s);
    ts_tokens_free(&t);
    ts_tokenizer_free(tok);
}

static void test_synth_alloc_failures(void **state) {
    (void)state;
    /* every allocation failure during init and encode is reported cleanly */
    size_t live0 = ts_alloc_count();
    for (long k = 0; k < 40; k++) {
        ts_alloc_fail_after(k);
        ts_tokenizer *tok = NULL;
        static synth v;
        v.n = 0;
        for (size_t i = 0; i < sizeof k_synth_head / sizeof *k_synth_head; i++) {
            v.piece[v.n] = k_synth_head[i];
            v.len[v.n] = strlen(k_synth_head[i]);
            v.type[v.n++] = k_synth_head_type[i];
        }
        ts_tokenizer_vocab tv = {v.n, v.piece, v.len, v.type, 2, 1, 3, 0};
        ts_status rc0 = ts_tokenizer_init(&tv, &tok);
        assert_true(rc0 == TS_OK || rc0 == TS_NOMEM);
        ts_alloc_fail_after(-1);
        if (!tok) continue;
        ts_tokenizer *t2 = tok;
        ts_tokens t = {0};
        ts_alloc_fail_after(0);
        ts_status rc = ts_tokenize(t2, "a<bos>b", 7, TS_TOK_DEFAULT, &t);
        ts_alloc_fail_after(-1);
        assert_true(rc == TS_OK || rc == TS_NOMEM);
        ts_tokens_free(&t);
        ts_tokenizer_free(t2);
    }
    assert_int_equal(ts_alloc_count(), live0);
}

/* ---------------------------------------------------------------- the real vocabulary */

static ts_tokenizer *g_tok;

typedef struct {
    char *text;
    size_t len;
    int32_t *ids, *ids_ns;
    size_t n_ids, n_ids_ns;
    char *decoded;
    size_t decoded_len;
} fixture;

static fixture *g_fx;
static size_t g_nfx;

static int32_t *json_ids(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *ids = malloc((*n + 1) * sizeof(int32_t));
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

/* U+2581 decodes to a space (as in HF), so text containing it cannot round-trip. */
static bool has_lower_block(const char *s, size_t n) {
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(s + i, "\xE2\x96\x81", 3) == 0) return true;
    return false;
}

static void load_fixtures(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures/tokenizer/corpus.jsonl", TS_TEST_DATA);
    FILE *fc = fopen(path, "r");
    snprintf(path, sizeof path, "%s/fixtures/tokenizer/expected_hf.jsonl", TS_TEST_DATA);
    FILE *fe = fopen(path, "r");
    if (!fc || !fe) fail_msg("cannot open the fixtures under %s/fixtures/tokenizer", TS_TEST_DATA);
    char *lc = NULL, *le = NULL;
    size_t cc = 0, ce = 0;
    size_t cap = 0;
    while (getline(&lc, &cc, fc) > 0) {
        if (getline(&le, &ce, fe) <= 0) fail_msg("expected_hf.jsonl is shorter than corpus.jsonl");
        json_error_t err;
        json_t *jc = json_loads(lc, JSON_ALLOW_NUL, &err);
        json_t *je = json_loads(le, JSON_ALLOW_NUL, &err);
        if (!jc || !je) fail_msg("bad fixture line %zu: %s", g_nfx + 1, err.text);
        assert_int_equal(json_integer_value(json_object_get(jc, "id")),
                         json_integer_value(json_object_get(je, "id")));
        if (g_nfx == cap) g_fx = realloc(g_fx, (cap = cap ? cap * 2 : 256) * sizeof *g_fx);
        fixture *f = &g_fx[g_nfx++];
        json_t *t = json_object_get(jc, "text");
        f->len = json_string_length(t);
        f->text = malloc(f->len + 1);
        memcpy(f->text, json_string_value(t), f->len + 1);
        f->ids = json_ids(json_object_get(je, "ids"), &f->n_ids);
        f->ids_ns = json_ids(json_object_get(je, "ids_no_special"), &f->n_ids_ns);
        json_t *d = json_object_get(je, "decoded");
        f->decoded_len = json_string_length(d);
        f->decoded = malloc(f->decoded_len + 1);
        memcpy(f->decoded, json_string_value(d), f->decoded_len + 1);
        json_decref(jc);
        json_decref(je);
    }
    free(lc);
    free(le);
    fclose(fc);
    fclose(fe);
    assert_true(g_nfx >= 200);
}

static int model_setup(void **state) {
    (void)state;
    const char *p = getenv("TESSERA_MODEL_270M");
    ts_gguf *g;
    if (ts_gguf_open(p, &g) != TS_OK) {
        fprintf(stderr, "%s\n", ts_last_error());
        return -1;
    }
    ts_status rc = ts_tokenizer_load(g, &g_tok);
    ts_gguf_close(g);
    if (rc != TS_OK) {
        fprintf(stderr, "%s\n", ts_last_error());
        return -1;
    }
    load_fixtures();
    return 0;
}

static int model_teardown(void **state) {
    (void)state;
    for (size_t i = 0; i < g_nfx; i++) {
        free(g_fx[i].text);
        free(g_fx[i].ids);
        free(g_fx[i].ids_ns);
        free(g_fx[i].decoded);
    }
    free(g_fx);
    ts_tokenizer_free(g_tok);
    return 0;
}

static void test_model_vocab(void **state) {
    (void)state;
    assert_int_equal(ts_tokenizer_n_vocab(g_tok), 262144);
    assert_int_equal(ts_tokenizer_bos(g_tok), 2);
    assert_int_equal(ts_tokenizer_eos(g_tok), 1);
    assert_int_equal(ts_tokenizer_pad(g_tok), 0);
    assert_int_equal(ts_tokenizer_eot(g_tok), 106);
    assert_int_equal(ts_tokenizer_find(g_tok, "<start_of_turn>", 15), 105);
    assert_int_equal(ts_tokenizer_find(g_tok, "<start_of_image>", 16), 255999);
    assert_int_equal(ts_tokenizer_find(g_tok, "<0x00>", 6), 238);
    assert_int_equal(ts_tokenizer_find(g_tok, "\t", 1), 255968);
    assert_int_equal(ts_tokenizer_find(g_tok, "no such piece \x01", 15), -1);
    for (int b = 0; b < 256; b++) assert_int_equal(ts_tokenizer_type(g_tok, 238 + b), TS_TOKEN_TYPE_BYTE);
}

/* Our ids == HF ids for every corpus string, specials parsed and not. */
static void test_model_corpus_hf(void **state) {
    (void)state;
    size_t bad = 0, bad_ns = 0;
    for (size_t i = 0; i < g_nfx; i++) {
        const fixture *f = &g_fx[i];
        if (!encode_is(g_tok, f->text, f->len, TS_TOK_DEFAULT, f->ids, f->n_ids)) bad++;
        if (!encode_is(g_tok, f->text, f->len, TS_TOK_ADD_BOS, f->ids_ns, f->n_ids_ns)) bad_ns++;
    }
    fprintf(stderr, "corpus: %zu strings; mismatches with HF: %zu (specials on), %zu (off)\n", g_nfx,
            bad, bad_ns);
    assert_int_equal(bad, 0);
    assert_int_equal(bad_ns, 0);
}

/* decode(encode(s)) == s; decode == HF decode; streaming == whole. */
static void test_model_roundtrip(void **state) {
    (void)state;
    ts_tokens t = {0};
    size_t bad = 0;
    for (size_t i = 0; i < g_nfx; i++) {
        const fixture *f = &g_fx[i];
        for (int pass = 0; pass < 2; pass++) {
            t.n = 0;
            unsigned fl = pass ? TS_TOK_ADD_BOS : TS_TOK_DEFAULT;
            assert_int_equal(ts_tokenize(g_tok, f->text, f->len, fl, &t), TS_OK);
            char *d;
            size_t dl;
            assert_int_equal(ts_detokenize(g_tok, t.ids + 1, t.n - 1, TS_DETOK_SPECIAL, &d, &dl), TS_OK);
            if (!has_lower_block(f->text, f->len) && (dl != f->len || memcmp(d, f->text, dl) != 0)) {
                fprintf(stderr, "round trip #%zu differs: '%s'\n", i, d);
                bad++;
            }
            if (pass == 0 && (dl != f->decoded_len || memcmp(d, f->decoded, dl) != 0)) {
                fprintf(stderr, "decode #%zu differs from HF: '%s' vs '%s'\n", i, d, f->decoded);
                bad++;
            }
            ts_free(d);
            /* streaming, control tokens skipped == whole decoding without specials */
            assert_int_equal(ts_detokenize(g_tok, t.ids, t.n, 0, &d, &dl), TS_OK);
            size_t sl;
            char *s = stream_decode(g_tok, t.ids, t.n, &sl);
            if (sl != dl || memcmp(s, d, dl) != 0) {
                fprintf(stderr, "streaming #%zu differs: '%s' vs '%s'\n", i, s, d);
                bad++;
            }
            free(s);
            ts_free(d);
        }
    }
    ts_tokens_free(&t);
    assert_int_equal(bad, 0);
}

static void test_model_special(void **state) {
    (void)state;
    int32_t w1[] = {2, 105, 2364, 107, 2202, 106};
    const char *s1 = "<start_of_turn>user\nhi<end_of_turn>";
    assert_true(encode_is(g_tok, s1, strlen(s1), TS_TOK_DEFAULT, w1, 6));
    ts_tokens t = {0};
    assert_int_equal(ts_tokenize(g_tok, s1, strlen(s1), 0, &t), TS_OK);
    for (size_t i = 0; i < t.n; i++) assert_true(t.ids[i] != 105 && t.ids[i] != 106);
    t.n = 0;
    /* <start_of_image> is user-defined: matched with parsing off too */
    assert_int_equal(ts_tokenize(g_tok, "<start_of_image>", 16, 0, &t), TS_OK);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ids[0], 255999);
    t.n = 0;
    /* "Who are you?" -> Who ▁are ▁you ? (no prefix space) */
    int32_t w2[] = {2, 15938, 659, 611, 236881};
    assert_true(encode_is(g_tok, "Who are you?", 12, TS_TOK_DEFAULT, w2, 5));
    assert_true(encode_is(g_tok, "", 0, TS_TOK_DEFAULT, w2, 1));
    /* NUL -> <0x00> */
    int32_t w3[] = {238};
    assert_true(encode_is(g_tok, "\0", 1, 0, w3, 1));
    /* invalid UTF-8 */
    assert_int_equal(ts_tokenize(g_tok, "abc\xC3(", 5, TS_TOK_DEFAULT, &t), TS_FORMAT);
    assert_non_null(strstr(ts_last_error(), "offset 3"));
    ts_tokens_free(&t);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 1 MiB inputs: the corpus concatenated, one repeated letter, one emoji, all spaces. */
static void test_model_megabyte(void **state) {
    (void)state;
    size_t n = 1 << 20;
    char *s = malloc(n + 64);
    ts_tokens t = {0};
    for (int k = 0; k < 4; k++) {
        size_t len = 0;
        if (k == 0) {
            for (size_t i = 0; len < n; i = (i + 1) % g_nfx) {
                size_t c = g_fx[i].len < n - len ? g_fx[i].len : n - len;
                if (has_lower_block(g_fx[i].text, g_fx[i].len)) continue;
                if (!ts_utf8_check(g_fx[i].text, c, NULL)) break;
                memcpy(s + len, g_fx[i].text, c);
                len += c;
            }
        } else {
            const char *pat = k == 1 ? "a" : k == 2 ? "\xF0\x9F\x98\x80" : " ";
            size_t pl = strlen(pat);
            while (len + pl <= n) {
                memcpy(s + len, pat, pl);
                len += pl;
            }
        }
        t.n = 0;
        double t0 = now_s();
        assert_int_equal(ts_tokenize(g_tok, s, len, TS_TOK_DEFAULT, &t), TS_OK);
        double t1 = now_s();
        char *d;
        size_t dl;
        assert_int_equal(ts_detokenize(g_tok, t.ids + 1, t.n - 1, TS_DETOK_SPECIAL, &d, &dl), TS_OK);
        assert_int_equal(dl, len);
        assert_memory_equal(d, s, len);
        ts_free(d);
        fprintf(stderr, "1 MiB input %d: %zu tokens in %.3f s\n", k, t.n, t1 - t0);
        assert_true(t1 - t0 < 20.0);
    }
    free(s);
    ts_tokens_free(&t);
}

int main(int argc, char **argv) {
    bool model = argc > 1 && !strcmp(argv[1], "--model");
    if (!model) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_synth_basics),
            cmocka_unit_test(test_synth_invalid_utf8),
            cmocka_unit_test(test_synth_decode),
            cmocka_unit_test(test_synth_big_inputs),
            cmocka_unit_test(test_synth_alloc_failures),
        };
        return cmocka_run_group_tests_name("tokenizer (synthetic)", tests, NULL, NULL);
    }
    const char *p = getenv("TESSERA_MODEL_270M");
    FILE *f = p && *p ? fopen(p, "rb") : NULL;
    if (!f) {
        printf("TESSERA_MODEL_270M unset or unreadable: skipping the model tests\n");
        return 77;
    }
    fclose(f);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_vocab),
        cmocka_unit_test(test_model_corpus_hf),
        cmocka_unit_test(test_model_roundtrip),
        cmocka_unit_test(test_model_special),
        cmocka_unit_test(test_model_megabyte),
    };
    return cmocka_run_group_tests_name("tokenizer (Gemma 3 270M)", tests, model_setup, model_teardown);
}
