/* fuzz_tokenizer.c: random bytes -> encode (specials on and off) -> decode.
 *
 * The vocabulary: the Gemma 3 270M GGUF named by $TESSERA_MODEL_270M (loaded once), or, if
 * that is unset, a synthetic one built in memory (specials, newline and space runs, the 256
 * byte tokens, ASCII letters and a few hundred merged pieces), so that CI needs no model.
 * Input: byte 0 picks the flags, the rest is the text.
 * Checks (abort on failure): encoding succeeds iff the text is valid UTF-8; every id is in
 * range; for valid text without U+2581, decode(encode(text)) == text with specials rendered;
 * the streaming detokenizer's output is valid UTF-8 and equals the whole decoding (with
 * invalid bytes replaced) when control tokens are skipped.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ts_tokenizer *g_tok;

static ts_tokenizer *synthetic(void) {
    static const char *const head[] = {
        "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
        "<unused0>", "\n", "\n\n", "\n\n\n", "  ", "   ", "\t", "\t\t", "<start_of_image>",
        "<end_of_image>", "<b>", "</b>", "[multimodal]",
    };
    static const int32_t head_type[] = {3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
    enum { NHEAD = sizeof head / sizeof head[0], MAXP = 2048 };
    static char store[MAXP][8];
    static const char *piece[MAXP];
    static size_t len[MAXP];
    static int32_t type[MAXP];
    size_t n = 0;
    for (size_t i = 0; i < NHEAD; i++, n++) {
        piece[n] = head[i];
        len[n] = strlen(head[i]);
        type[n] = head_type[i];
    }
    for (int b = 0; b < 256; b++, n++) {
        snprintf(store[n], sizeof store[n], "<0x%02X>", b);
        piece[n] = store[n];
        len[n] = 6;
        type[n] = TS_TOKEN_TYPE_BYTE;
    }
    /* single characters: printable ASCII except space, U+2581, a few non-ASCII */
    static const char *const extra[] = {"\xE2\x96\x81", "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80",
                                        "\xE2\x96\x81\xE2\x96\x81", "<s", "<st", "<start", "_of"};
    for (int c = 33; c < 127; c++, n++) {
        store[n][0] = (char)c;
        store[n][1] = 0;
        piece[n] = store[n];
        len[n] = 1;
        type[n] = TS_TOKEN_TYPE_NORMAL;
    }
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++, n++) {
        piece[n] = extra[i];
        len[n] = strlen(extra[i]);
        type[n] = TS_TOKEN_TYPE_NORMAL;
    }
    /* pairs and triples of lowercase letters from a fixed pseudo-random sequence, and
     * U+2581 + letter, in "merge order" */
    uint32_t x = 12345;
    while (n < 900) {
        x = x * 1103515245u + 12345u;
        int k = 2 + (int)((x >> 16) % 3);
        char *p = store[n];
        size_t o = 0;
        if (((x >> 8) & 3) == 0) {
            memcpy(p, "\xE2\x96\x81", 3);
            o = 3;
            k -= 1;
        }
        for (int j = 0; j < k; j++) {
            x = x * 1103515245u + 12345u;
            p[o++] = (char)('a' + (x >> 16) % 6);
        }
        p[o] = 0;
        bool dup = false;
        for (size_t m = 0; m < n && !dup; m++) dup = len[m] == o && !memcmp(piece[m], p, o);
        if (dup) continue;
        piece[n] = p;
        len[n] = o;
        type[n] = TS_TOKEN_TYPE_NORMAL;
        n++;
    }
    ts_tokenizer_vocab v = {n, piece, len, type, 2, 1, 3, 0};
    ts_tokenizer *tok = NULL;
    if (ts_tokenizer_init(&v, &tok) != TS_OK) {
        fprintf(stderr, "fuzz_tokenizer: synthetic vocabulary: %s\n", ts_last_error());
        abort();
    }
    return tok;
}

static void init(void) {
    if (g_tok) return;
    const char *p = getenv("TESSERA_MODEL_270M");
    if (p && *p) {
        ts_gguf *g;
        if (ts_gguf_open(p, &g) != TS_OK || ts_tokenizer_load(g, &g_tok) != TS_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", ts_last_error());
            abort();
        }
        ts_gguf_close(g);
        return;
    }
    g_tok = synthetic();
}

#define CHECK(c)                                                                           \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            fprintf(stderr, "fuzz_tokenizer: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    if (size == 0) return 0;
    unsigned sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    bool valid = ts_utf8_check(text, len, NULL);
    bool lower_block = false;
    for (size_t i = 0; i + 3 <= len; i++)
        if (!memcmp(text + i, "\xE2\x96\x81", 3)) lower_block = true;
    uint32_t nv = ts_tokenizer_n_vocab(g_tok);
    ts_tokens t = {0};
    for (int pass = 0; pass < 2; pass++) {
        unsigned flags = (pass ? 0 : TS_TOK_PARSE_SPECIAL) | ((sel & 1) ? TS_TOK_ADD_BOS : 0);
        t.n = 0;
        ts_status rc = ts_tokenize(g_tok, text, len, flags, &t);
        if (!valid) {
            CHECK(rc == TS_FORMAT);
            CHECK(t.n == 0);
            break;
        }
        CHECK(rc == TS_OK);
        for (size_t i = 0; i < t.n; i++) CHECK(t.ids[i] >= 0 && (uint32_t)t.ids[i] < nv);
        size_t skip = (sel & 1) ? 1 : 0;
        CHECK(t.n >= skip);
        char *d;
        size_t dl;
        CHECK(ts_detokenize(g_tok, t.ids + skip, t.n - skip, TS_DETOK_SPECIAL, &d, &dl) == TS_OK);
        if (!lower_block) CHECK(dl == len && memcmp(d, text, len) == 0);
        ts_free(d);
        /* streaming == whole (sanitised), control tokens skipped */
        CHECK(ts_detokenize(g_tok, t.ids, t.n, 0, &d, &dl) == TS_OK);
        size_t sl;
        char *want = ts_utf8_sanitize(d, dl, &sl);
        CHECK(want);
        ts_detok_stream *s;
        CHECK(ts_detok_stream_init(g_tok, &s) == TS_OK);
        size_t o = 0;
        for (size_t i = 0; i <= t.n; i++) {
            const char *piece;
            size_t pl;
            if (i < t.n) CHECK(ts_detok_stream_push(s, t.ids[i], &piece, &pl) == TS_OK);
            else CHECK(ts_detok_stream_flush(s, &piece, &pl) == TS_OK);
            CHECK(ts_utf8_check(piece, pl, NULL));
            CHECK(o + pl <= sl && memcmp(want + o, piece, pl) == 0);
            o += pl;
        }
        CHECK(o == sl);
        ts_detok_stream_free(s);
        ts_free(want);
        ts_free(d);
    }
    ts_tokens_free(&t);
    return 0;
}
