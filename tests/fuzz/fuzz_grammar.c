/* fuzz_grammar.c: the JSON Schema -> grammar compiler and matcher (shard/grammar.c).
 *
 * Input: a schema text, optionally followed by a NUL byte and bytes to feed the matcher.
 * Checks (abort on failure): compiling never crashes and fails only with TS_INVAL or
 * TS_NOMEM; the bytes are fed one at a time, and the longest accepted prefix, when the
 * matcher calls it complete, parses as JSON (jansson) — or, for a `choice`-like literal
 * root, at least never exceeds the input; the token mask over a small synthetic vocabulary
 * equals feeding each token's bytes (brute force), with end-of-turn allowed exactly when
 * the value is complete.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "grammar.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ts_tokenizer *g_tok;
static ts_gvocab *g_voc;

static void setup(void) {
    static const char *const pieces[] = {
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "{", "}", "[", "]",
        "\"", ":", ",", " ", "\n", "{\"", "\":", "\",", "\"}", "true", "false", "null", "nu", "0",
        "1", "12", "-", ".", "e", "a", "b", "\\", "u", "d8", "00", "\xc3\xa9", "<0xC3>", "<0xA9>",
        "}}", "]}", "1,", ",\"", "x", "name", "\"name\":", "E+", "9",
    };
    enum { N = sizeof pieces / sizeof pieces[0] };
    static size_t len[N];
    static int32_t type[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = strlen(pieces[i]);
        type[i] = i < 6 ? 3 : (pieces[i][0] == '<' && pieces[i][1] == '0' ? 6 : 1);
    }
    ts_tokenizer_vocab tv = {N, pieces, len, type, 2, 1, 3, 0};
    if (ts_tokenizer_init(&tv, &g_tok) != TS_OK || ts_gvocab_build(g_tok, &g_voc) != TS_OK) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_voc) setup();
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    const char *inst = nul ? (const char *)nul + 1 : "";
    size_t ilen = nul ? size - slen - 1 : 0;
    ts_grammar *g = NULL;
    ts_status rc = ts_grammar_from_json_schema((const char *)data, slen, -1, &g);
    if (rc != TS_OK) {
        if (rc != TS_INVAL && rc != TS_NOMEM) abort();
        return 0;
    }
    ts_gmatch *m;
    if (ts_gmatch_new(g, &m) != TS_OK) abort();
    size_t fed = 0;
    for (; fed < ilen; fed++)
        if (!ts_gmatch_feed(m, inst + fed, 1)) break;
    if (ts_gmatch_complete(m)) {
        json_error_t err;
        json_t *j = json_loadb(inst, fed, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!j) {
            fprintf(stderr, "accepted but not JSON: %.*s (%s)\n", (int)fed, inst, err.text);
            abort();
        }
        json_decref(j);
    }
    /* the mask of this state against brute force */
    uint32_t nv = ts_gvocab_n_vocab(g_voc);
    uint64_t mask[1] = {0};
    size_t n = 0;
    if (ts_gmatch_mask(m, g_voc, mask, &n) != TS_OK) abort();
    /* (n may be 0 here: this small vocabulary has no token for some bytes; Gemma's has
     * byte tokens for all 256) */
    for (uint32_t i = 0; i < nv; i++) {
        bool want;
        size_t l;
        const char *b = ts_gvocab_bytes(g_voc, (int32_t)i, &l);
        if (ts_tokenizer_is_eog(g_tok, (int32_t)i)) {
            want = ts_gmatch_complete(m);
        } else if (!b) {
            want = false;
        } else {
            ts_gmatch *c;
            if (ts_gmatch_new(g, &c) != TS_OK) abort();
            want = ts_gmatch_feed(c, inst, fed) && ts_gmatch_feed(c, b, l);
            ts_gmatch_free(c);
        }
        if (want != (bool)((mask[0] >> i) & 1)) abort();
    }
    ts_gmatch_free(m);
    ts_grammar_free(g);
    return 0;
}
