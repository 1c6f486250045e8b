/* tokenizer.h: the Gemma 3 tokenizer (SentencePiece-style BPE with byte fallback) built from
 * a GGUF file's tokenizer.ggml.* metadata.
 *
 * Reference behaviour: the Hugging Face tokenizer that transformers builds from the same
 * GGUF (GemmaTokenizer: normalizer " " -> "\u2581", no dummy-prefix space, BPE with byte
 * fallback, merges derived from the vocabulary and ranked by token position). See
 * docs/tokenizer.md for the algorithm, the fixtures that check it and the differences from
 * llama.cpp.
 *
 * Encoding (ts_tokenize):
 *   1. Optionally push <bos> (TS_TOK_ADD_BOS).
 *   2. Added-token partition of the raw UTF-8 text, leftmost-longest: USER_DEFINED pieces
 *      (newline and tab runs, HTML tags, <start_of_image>, ...) are always matched; CONTROL
 *      and UNKNOWN pieces (<bos>, <start_of_turn>, <unusedN>, ...) and the texts <bos>,
 *      <eos>, <pad>, <start_of_turn>, <end_of_turn>, <start_of_image>, <end_of_image>
 *      (whatever their token type) are matched only with TS_TOK_PARSE_SPECIAL; a special
 *      match found with the flag off is left as plain text (as HF's split_special_tokens).
 *   3. Each remaining fragment: spaces become "\u2581", the text is split into code points,
 *      and adjacent symbols are merged while a merge applies, best rank first (rank = id of
 *      the merged piece, lower is better; ties: longer left part, then leftmost). A code
 *      point that is no piece becomes byte tokens <0xNN> (id of the piece "<0xNN>").
 * Invalid UTF-8 input is rejected with TS_FORMAT naming the byte offset. NUL bytes are
 * ordinary characters. Work is O(n log n) in the input length, with no recursion.
 * A literal U+2581 in the input is encoded like a space (as HF does), so it decodes to a
 * space: decode(encode(s)) == s holds for valid UTF-8 without U+2581.
 *
 * Decoding: NORMAL / USER_DEFINED pieces with "\u2581" -> " ", BYTE pieces -> their byte,
 * CONTROL / UNKNOWN pieces -> nothing, or their text with TS_DETOK_SPECIAL.
 *
 * Thread safety: a ts_tokenizer is immutable after load and may be shared between threads;
 * a ts_tokens or ts_detok_stream belongs to one thread at a time.
 *
 * Usage:
 *     ts_tokenizer *tok; ts_tokens t = {0};
 *     TS_TRY(ts_tokenizer_load(gguf, &tok));
 *     TS_TRY(ts_tokenize(tok, text, len, TS_TOK_DEFAULT, &t));   // t.ids[0..t.n)
 *     ...
 *     ts_tokens_free(&t); ts_tokenizer_free(tok);
 */
#ifndef TS_TOKENIZER_H
#define TS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token types as stored in tokenizer.ggml.token_type (llama.cpp's values). */
typedef enum {
    TS_TOKEN_TYPE_UNDEFINED = 0,
    TS_TOKEN_TYPE_NORMAL = 1,
    TS_TOKEN_TYPE_UNKNOWN = 2,
    TS_TOKEN_TYPE_CONTROL = 3,
    TS_TOKEN_TYPE_USER_DEFINED = 4,
    TS_TOKEN_TYPE_UNUSED = 5,
    TS_TOKEN_TYPE_BYTE = 6,
} ts_token_type;

/* ts_tokenize flags. */
#define TS_TOK_ADD_BOS 0x1u       /* prepend <bos> */
#define TS_TOK_PARSE_SPECIAL 0x2u /* match control-token texts written in the input */
#define TS_TOK_DEFAULT (TS_TOK_ADD_BOS | TS_TOK_PARSE_SPECIAL)

/* ts_detokenize flags. */
#define TS_DETOK_SPECIAL 0x1u /* render CONTROL / UNKNOWN tokens as their text */

/* Largest input ts_tokenize accepts (bytes). Encoding needs transient work memory of about
 * 90 bytes per input byte (kept in the ts_tokens between calls only up to 4 MiB). */
#define TS_TOK_MAX_INPUT ((size_t)64 << 20)

typedef struct ts_tokenizer ts_tokenizer;

/* A growable list of token ids, owned by the caller; zero-initialise it before first use
 * and reuse it across calls (it also keeps ts_tokenize's work memory up to 4 MiB, so a
 * reused list makes encoding of ordinary prompts allocation-free once warm). Free with
 * ts_tokens_free. */
typedef struct {
    int32_t *ids;
    size_t n;
    size_t cap;
    void *work_;      /* private */
    size_t work_cap_; /* private */
} ts_tokens;

void ts_tokens_free(ts_tokens *t);

/* A vocabulary given directly (tests, fuzzing): n pieces (bytes piece[i][0..len[i]), may
 * be non-NUL-terminated), their types (ts_token_type values; NULL = all NORMAL except
 * "<0xNN>" pieces, which are BYTE) and the special ids (-1 = none). Everything is copied. */
typedef struct {
    size_t n;
    const char *const *piece;
    const size_t *len;
    const int32_t *type;
    int32_t bos_id, eos_id, unk_id, pad_id;
} ts_tokenizer_vocab;

/* Builds the tokenizer from tokenizer.ggml.{model,tokens,token_type,*_token_id}. The model
 * must be "llama" (SentencePiece); add_space_prefix is ignored (always false). Everything
 * needed is copied: g may be closed afterwards. Errors: TS_NOT_FOUND (missing key),
 * TS_FORMAT (bad types, counts, ids or pieces), TS_UNSUPPORTED (other tokenizer models),
 * TS_NOMEM. */
ts_status ts_tokenizer_load(const ts_gguf *g, ts_tokenizer **out);
ts_status ts_tokenizer_init(const ts_tokenizer_vocab *v, ts_tokenizer **out);
void ts_tokenizer_free(ts_tokenizer *tok);

uint32_t ts_tokenizer_n_vocab(const ts_tokenizer *tok);
int32_t ts_tokenizer_bos(const ts_tokenizer *tok); /* -1 if none */
int32_t ts_tokenizer_eos(const ts_tokenizer *tok);
int32_t ts_tokenizer_eot(const ts_tokenizer *tok); /* <end_of_turn>, or -1 */
int32_t ts_tokenizer_pad(const ts_tokenizer *tok);
int32_t ts_tokenizer_unk(const ts_tokenizer *tok);
/* True for <eos> and <end_of_turn>: generation stops there. */
bool ts_tokenizer_is_eog(const ts_tokenizer *tok, int32_t id);

/* Id of the piece whose text (as stored in the file) is text[0..len), or -1. */
int32_t ts_tokenizer_find(const ts_tokenizer *tok, const char *text, size_t len);
/* The stored text of piece id (not NUL-terminated), or NULL if id is out of range. */
const char *ts_tokenizer_piece(const ts_tokenizer *tok, int32_t id, size_t *len);
/* TS_TOKEN_TYPE_UNDEFINED if id is out of range. */
ts_token_type ts_tokenizer_type(const ts_tokenizer *tok, int32_t id);
/* True for the tokens that decode to nothing by default (CONTROL, UNKNOWN). */
bool ts_tokenizer_is_control(const ts_tokenizer *tok, int32_t id);

/* Encodes text[0..len) and appends the ids to out (out->n grows). Errors: TS_FORMAT
 * (invalid UTF-8, message names the byte offset), TS_RANGE (len > TS_TOK_MAX_INPUT),
 * TS_NOMEM; on error out->n is restored. */
ts_status ts_tokenize(const ts_tokenizer *tok, const char *text, size_t len, unsigned flags,
                      ts_tokens *out);

/* Decodes ids[0..n) into a new NUL-terminated buffer (*out, free with ts_free; *out_len
 * excludes the NUL). The result is the exact byte concatenation (it may be invalid UTF-8
 * when the ids are arbitrary). TS_RANGE names the position of an out-of-range id. */
ts_status ts_detokenize(const ts_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *out_len);

/* Streaming detokenizer: push ids one at a time; each push returns the text that became
 * complete. Incomplete UTF-8 sequences are held until they complete; bytes that cannot
 * start or continue a valid sequence are emitted as U+FFFD; control tokens emit nothing.
 * So the concatenated output is always valid UTF-8, and equals ts_detokenize's result
 * whenever that is valid UTF-8. The returned text (*len bytes, followed by a NUL) stays
 * valid until the next call on the stream. */
typedef struct ts_detok_stream ts_detok_stream;
ts_status ts_detok_stream_init(const ts_tokenizer *tok, ts_detok_stream **out);
ts_status ts_detok_stream_push(ts_detok_stream *s, int32_t id, const char **text, size_t *len);
/* Emits what is still held (as U+FFFD per byte) and resets the stream. */
ts_status ts_detok_stream_flush(ts_detok_stream *s, const char **text, size_t *len);
void ts_detok_stream_free(ts_detok_stream *s);

/* UTF-8 helpers. ts_utf8_check returns true if s[0..len) is valid UTF-8; otherwise false
 * with *bad_offset = the offset of the first byte that does not begin a valid sequence. */
bool ts_utf8_check(const char *s, size_t len, size_t *bad_offset);
/* Copies s[0..len) into a new NUL-terminated buffer, replacing each byte that is not part
 * of a valid sequence with U+FFFD. Returns NULL on allocation failure. */
char *ts_utf8_sanitize(const char *s, size_t len, size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif
