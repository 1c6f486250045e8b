/* test_grammar.c: the JSON Schema -> grammar compiler and matcher (shard/grammar.c), and
 * the token mask.
 *
 * Cases from tests/fixtures/grammar/cases.json (tests/tools/make_grammar_cases.py, labelled
 * by the jsonschema package): every valid instance is accepted, every invalid one
 * rejected, every refused schema gives TS_INVAL naming its keyword. Hand-written checks of
 * bounds (whitespace, nesting, number digits, UTF-8, surrogates), completion and
 * termination. The mask over a synthetic vocabulary equals the brute-force answer (feed
 * each token's bytes), with end-of-turn allowed exactly when the value is complete.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "grammar.h"
#include "tokenizer.h"

static ts_grammar *compile_ok(const char *schema) {
    ts_grammar *g = NULL;
    ts_status rc = ts_grammar_from_json_schema(schema, strlen(schema), -1, &g);
    if (rc != TS_OK) fail_msg("schema %s: %s", schema, ts_last_error());
    return g;
}

static bool acc(const ts_grammar *g, const char *s) { return ts_grammar_accepts(g, s, strlen(s)); }

static void test_fixture_cases(void **state) {
    (void)state;
    json_error_t err;
    json_t *d = json_load_file(TS_TEST_DATA "/fixtures/grammar/cases.json", 0, &err);
    if (!d) fail_msg("cases.json: %s", err.text);
    json_t *cases = json_object_get(d, "cases"), *c;
    size_t i, n_valid = 0, n_invalid = 0;
    json_array_foreach(cases, i, c) {
        const char *schema = json_string_value(json_object_get(c, "schema"));
        ts_grammar *g = compile_ok(schema);
        json_t *v;
        size_t k;
        json_array_foreach(json_object_get(c, "valid"), k, v) {
            const char *t = json_string_value(v);
            if (!ts_grammar_accepts(g, t, json_string_length(v)))
                fail_msg("schema %s: valid instance rejected: %s", schema, t);
            n_valid++;
        }
        json_array_foreach(json_object_get(c, "invalid"), k, v) {
            const char *t = json_string_value(v);
            if (ts_grammar_accepts(g, t, json_string_length(v)))
                fail_msg("schema %s: invalid instance accepted: %s", schema, t);
            n_invalid++;
        }
        ts_grammar_free(g);
    }
    json_array_foreach(json_object_get(d, "refused"), i, c) {
        const char *schema = json_string_value(json_object_get(c, "schema"));
        const char *kw = json_string_value(json_object_get(c, "keyword"));
        ts_grammar *g = NULL;
        ts_status rc = ts_grammar_from_json_schema(schema, strlen(schema), -1, &g);
        if (rc != TS_INVAL) fail_msg("schema %s: expected TS_INVAL, got %d", schema, rc);
        if (!strstr(ts_last_error(), kw))
            fail_msg("schema %s: message '%s' does not name '%s'", schema, ts_last_error(), kw);
        assert_null(g);
    }
    printf("fixture: %zu valid accepted, %zu invalid rejected, %zu schemas refused\n", n_valid,
           n_invalid, json_array_size(json_object_get(d, "refused")));
    assert_true(n_valid > 300 && n_invalid > 300);
    json_decref(d);
}

static void test_completion_and_done(void **state) {
    (void)state;
    ts_grammar *g = compile_ok("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
                               "\"required\":[\"a\"],\"additionalProperties\":false}");
    ts_gmatch *m;
    assert_int_equal(ts_gmatch_new(g, &m), TS_OK);
    assert_false(ts_gmatch_complete(m));
    assert_true(ts_gmatch_feed(m, "{\"a\":1", 6));
    assert_false(ts_gmatch_complete(m));
    assert_false(ts_gmatch_feed(m, "x", 1));   /* rejected: state unchanged */
    assert_false(ts_gmatch_feed(m, ",\"b\"", 4)); /* no other key: ',' has nowhere to go */
    assert_true(ts_gmatch_feed(m, "2}", 2));
    assert_true(ts_gmatch_complete(m));
    assert_true(ts_gmatch_done(m));
    assert_false(ts_gmatch_feed(m, " ", 1));
    ts_gmatch_free(m);
    ts_grammar_free(g);
    /* a root number may go on: complete but not done */
    g = compile_ok("{\"type\":\"number\"}");
    assert_int_equal(ts_gmatch_new(g, &m), TS_OK);
    assert_true(ts_gmatch_feed(m, "12", 2));
    assert_true(ts_gmatch_complete(m));
    assert_false(ts_gmatch_done(m));
    assert_true(ts_gmatch_feed(m, ".5e3", 4));
    assert_true(ts_gmatch_complete(m));
    ts_gmatch_free(m);
    ts_grammar_free(g);
}

static void test_bounds(void **state) {
    (void)state;
    ts_grammar *g = compile_ok("{}");
    /* whitespace per gap: 16 */
    char buf[256];
    snprintf(buf, sizeof buf, "[%*s1]", 16, "");
    assert_true(acc(g, buf));
    snprintf(buf, sizeof buf, "[%*s1]", 17, "");
    assert_false(acc(g, buf));
    /* digits */
    assert_true(acc(g, "123456789012345"));
    assert_false(acc(g, "1234567890123456"));
    assert_true(acc(g, "1e99"));
    assert_false(acc(g, "1e123"));
    assert_false(acc(g, "01"));
    assert_false(acc(g, "-"));
    /* strings: UTF-8, escapes, surrogates, controls */
    assert_true(acc(g, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
    assert_false(acc(g, "\"\xc3\""));
    assert_false(acc(g, "\"\xc0\xaf\""));       /* overlong */
    assert_false(acc(g, "\"\xed\xa0\x80\""));   /* UTF-8 surrogate */
    assert_false(acc(g, "\"\xf4\x90\x80\x80\"")); /* above U+10FFFF */
    assert_true(acc(g, "\"\\u00e9\\n\\\"\""));
    assert_false(acc(g, "\"\\ud83d\\ude00\""));
    assert_false(acc(g, "\"\\x\""));
    assert_false(acc(g, "\"a\nb\""));
    /* keys: no escapes */
    assert_true(acc(g, "{\"k\":1}"));
    assert_false(acc(g, "{\"\\u006b\":1}"));
    /* nesting depth: 31 levels of arrays fit (root frame + 31), 32 do not */
    char deep[80];
    memset(deep, '[', 31);
    memset(deep + 31, ']', 31);
    deep[62] = 0;
    assert_true(acc(g, deep));
    memset(deep, '[', 32);
    memset(deep + 32, ']', 32);
    deep[64] = 0;
    assert_false(acc(g, deep));
    ts_grammar_free(g);
    /* duplicate declared keys (additional keys are not tracked: see grammar.h) */
    g = compile_ok("{\"properties\":{\"k\":{}},\"additionalProperties\":true}");
    assert_false(acc(g, "{\"k\":1,\"k\":2}"));
    assert_true(acc(g, "{\"k\":1,\"kk\":2}"));
    ts_grammar_free(g);
    /* zero whitespace */
    assert_int_equal(ts_grammar_from_json_schema("{}", 2, 0, &g), TS_OK);
    assert_true(acc(g, "[1,2]"));
    assert_false(acc(g, "[1, 2]"));
    ts_grammar_free(g);
    /* string length counts code points and escapes as one */
    g = compile_ok("{\"type\":\"string\",\"minLength\":2,\"maxLength\":2}");
    assert_true(acc(g, "\"\xf0\x9f\x98\x80\\n\""));
    assert_false(acc(g, "\"\xf0\x9f\x98\x80\""));
    assert_false(acc(g, "\"abc\""));
    ts_grammar_free(g);
}

static void test_json_object_and_choice(void **state) {
    (void)state;
    ts_grammar *g;
    assert_int_equal(ts_grammar_json_object(-1, &g), TS_OK);
    assert_true(acc(g, "{}"));
    assert_true(acc(g, "{\"a\":[1,{\"b\":null}],\"c\":\"d\"}"));
    assert_false(acc(g, "[]"));
    assert_false(acc(g, "\"x\""));
    ts_grammar_free(g);
    const char *opts[] = {"yes", "no", "yes please"};
    assert_int_equal(ts_grammar_choice(opts, 3, &g), TS_OK);
    assert_true(acc(g, "yes"));
    assert_true(acc(g, "yes please"));
    assert_true(acc(g, "no"));
    assert_false(acc(g, "ye"));
    assert_false(acc(g, "nope"));
    ts_grammar_free(g);
    const char *bad[] = {""};
    assert_int_equal(ts_grammar_choice(bad, 1, &g), TS_INVAL);
}

static void test_refused_limits(void **state) {
    (void)state;
    ts_grammar *g = NULL;
    /* too many anyOf alternatives */
    char s[4096] = "{\"anyOf\":[";
    for (int i = 0; i < 17; i++) strcat(s, i ? ",{\"const\":1}" : "{\"const\":1}");
    strcat(s, "]}");
    assert_int_equal(ts_grammar_from_json_schema(s, strlen(s), -1, &g), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "anyOf"));
    /* a schema nested deeper than 64 levels */
    char d[2048] = "";
    for (int i = 0; i < 70; i++) strcat(d, "{\"items\":");
    strcat(d, "{}");
    for (int i = 0; i < 70; i++) strcat(d, "}");
    assert_int_equal(ts_grammar_from_json_schema(d, strlen(d), -1, &g), TS_INVAL);
    assert_non_null(strstr(ts_last_error(), "nested too deeply"));
    /* anyOf that refers to itself with no structure in between */
    const char *cyc = "{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"null\"}]}},"
                      "\"$ref\":\"#/$defs/a\"}";
    assert_int_equal(ts_grammar_from_json_schema(cyc, strlen(cyc), -1, &g), TS_INVAL);
    /* allocation failures: clean TS_NOMEM */
    const char *ok = "{\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[1,2,\"x\"]},"
                     "\"b\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"array\"}]}}}";
    for (long n = 0; n < 200; n++) {
        ts_alloc_fail_after(n);
        ts_status rc = ts_grammar_from_json_schema(ok, strlen(ok), -1, &g);
        ts_alloc_fail_after(-1);
        if (rc == TS_OK) {
            ts_grammar_free(g);
            break;
        }
        assert_int_equal(rc, TS_NOMEM);
    }
}

/* ---- masks over a synthetic vocabulary ---- */

static ts_tokenizer *synthetic_tok(void) {
    static const char *const pieces[] = {
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "{", "}", "[", "]",
        "\"", ":", ",", " ", "\n", "  ", "{\"", "\":", "\",", "\"}", "\u2581\"", "true", "false",
        "null", "nu", "ll", "0", "1", "12", "-", ".", "5", "e", "a", "b", "name", "\"name", "age",
        "\":\"", "\"a\"", "ab", "\\", "n", "u", "d8", "00", "\xc3\xa9", "<0xC3>", "<0xA9>", "<0x22>",
        "}}", "]}", "1,", ",\"", "\u2581\u2581", "xyz", "<unused0>",
    };
    enum { N = sizeof pieces / sizeof pieces[0] };
    static size_t len[N];
    static int32_t type[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = strlen(pieces[i]);
        type[i] = i < 6 ? 3 : (pieces[i][0] == '<' && pieces[i][1] == '0' ? 6 : 1);
        if (!strcmp(pieces[i], "<unused0>")) type[i] = 5;
    }
    ts_tokenizer_vocab tv = {N, pieces, len, type, 2, 1, 3, 0};
    ts_tokenizer *tok = NULL;
    if (ts_tokenizer_init(&tv, &tok) != TS_OK) fail_msg("%s", ts_last_error());
    return tok;
}

/* brute force: a copy of the matcher fed each token's bytes */
static void check_mask_bf(const ts_grammar *g, const char *prefix, const ts_gvocab *v,
                          const ts_tokenizer *tok) {
    ts_gmatch *m;
    assert_int_equal(ts_gmatch_new(g, &m), TS_OK);
    assert_true(ts_gmatch_feed(m, prefix, strlen(prefix)));
    uint64_t mask[8] = {0};
    size_t n = 0;
    for (int rep = 0; rep < 2; rep++) { /* the second time from the cache */
        memset(mask, 0, sizeof mask);
        assert_int_equal(ts_gmatch_mask(m, v, mask, &n), TS_OK);
        size_t count = 0;
        for (uint32_t i = 0; i < ts_gvocab_n_vocab(v); i++) {
            bool want;
            size_t l;
            const char *b = ts_gvocab_bytes(v, (int32_t)i, &l);
            if (ts_tokenizer_is_eog(tok, (int32_t)i)) {
                want = ts_gmatch_complete(m);
            } else if (!b) {
                want = false;
            } else {
                ts_gmatch *c;
                assert_int_equal(ts_gmatch_new(g, &c), TS_OK);
                want = ts_gmatch_feed(c, prefix, strlen(prefix)) && ts_gmatch_feed(c, b, l);
                ts_gmatch_free(c);
            }
            bool got = (mask[i >> 6] >> (i & 63)) & 1;
            if (want != got) fail_msg("prefix '%s': token %u: mask %d, brute force %d", prefix, i, got, want);
            count += got;
        }
        assert_int_equal(count, n);
    }
    /* apply: -inf exactly where not allowed */
    float logits[512];
    for (uint32_t i = 0; i < ts_gvocab_n_vocab(v); i++) logits[i] = 1.0f;
    ts_status rc = ts_gmatch_apply(m, v, logits);
    if (n == 0) assert_int_equal(rc, TS_INVAL);
    else {
        assert_int_equal(rc, TS_OK);
        for (uint32_t i = 0; i < ts_gvocab_n_vocab(v); i++)
            assert_true(((mask[i >> 6] >> (i & 63)) & 1) ? logits[i] == 1.0f : isinf(logits[i]));
    }
    ts_gmatch_free(m);
}

static void test_mask_bruteforce(void **state) {
    (void)state;
    ts_tokenizer *tok = synthetic_tok();
    ts_gvocab *v;
    assert_int_equal(ts_gvocab_build(tok, &v), TS_OK);
    const char *schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":3},"
        "\"age\":{\"type\":\"integer\"}},\"required\":[\"name\"],\"additionalProperties\":false}",
        "{}",
        "{\"enum\":[\"a\",\"ab\",1,12,null,true]}",
        "{\"type\":\"array\",\"items\":{\"type\":[\"number\",\"null\"]},\"maxItems\":2}",
    };
    const char *prefixes[][8] = {
        {"", "{", "{\"", "{\"name", "{\"name\":\"", "{\"name\":\"ab", "{\"name\":\"abc", "{\"name\":\"a\","},
        {"", "{", "[1", "\"\\", "\"\\u", "\"\\ud", "tr", "{\"a\":{}"},
        {"", "\"", "\"a", "1", "n", "t", NULL, NULL},
        {"", "[", "[1", "[1,", "[1,n", "[1,2", "[1,2]", NULL},
    };
    for (size_t s = 0; s < 4; s++) {
        ts_grammar *g = compile_ok(schemas[s]);
        for (size_t p = 0; p < 8 && prefixes[s][p]; p++) check_mask_bf(g, prefixes[s][p], v, tok);
        ts_grammar_free(g);
    }
    ts_gvocab_free(v);
    ts_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_cases),
        cmocka_unit_test(test_completion_and_done),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_json_object_and_choice),
        cmocka_unit_test(test_refused_limits),
        cmocka_unit_test(test_mask_bruteforce),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
