/* chat.h: the Gemma 3 instruction-tuned chat template, rendered to text.
 *
 * Follows the Jinja template shipped with the Gemma 3 IT checkpoints (docs/tokenizer.md):
 *     "<bos>" + for each turn: "<start_of_turn>" + role + "\n" + content + "<end_of_turn>\n"
 *     [+ "<start_of_turn>model\n" when add_generation_prompt]
 *   - roles: "user", "model" ("assistant" is accepted and rendered as "model"), and
 *     "system" only as the first message: its text + "\n\n" is put in front of the first
 *     user turn's content (not trimmed, as in the Jinja template);
 *   - turns after the system message must alternate user, model, user, ... starting with
 *     user; anything else is TS_INVAL with a message naming the message index;
 *   - content text is trimmed of leading/trailing whitespace (Python str.strip set);
 *   - a message may instead have parts: text parts (each trimmed) and image parts (rendered
 *     as "<start_of_image>"), concatenated with no separator.
 * The result is meant to be encoded with TS_TOK_PARSE_SPECIAL and without TS_TOK_ADD_BOS
 * (it starts with "<bos>" itself), or with ts_chat_render's include_bos = false and the
 * tokenizer adding BOS.
 */
#ifndef TS_CHAT_H
#define TS_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TS_CHAT_PART_TEXT = 0,
    TS_CHAT_PART_IMAGE = 1,
} ts_chat_part_kind;

typedef struct {
    ts_chat_part_kind kind;
    const char *text; /* TEXT parts: text[0..len) */
    size_t len;
} ts_chat_part;

typedef struct {
    const char *role;    /* NUL-terminated */
    const char *content; /* used when parts == NULL: content[0..content_len) */
    size_t content_len;
    const ts_chat_part *parts; /* or NULL */
    size_t n_parts;
} ts_chat_message;

/* Renders msgs[0..n) into a new NUL-terminated buffer (*out, free with ts_free; *out_len
 * excludes the NUL). include_bos: start with "<bos>". Errors: TS_INVAL (unknown role,
 * system message not first, roles not alternating, empty conversation), TS_NOMEM. */
ts_status ts_chat_render(const ts_chat_message *msgs, size_t n, bool add_generation_prompt,
                         bool include_bos, char **out, size_t *out_len);

/* The [start, end) of s[0..len) without leading and trailing whitespace (the characters
 * Python's str.strip removes; s must be valid UTF-8 for non-ASCII spaces to be seen). */
void ts_chat_trim(const char *s, size_t len, size_t *start, size_t *end);

#ifdef __cplusplus
}
#endif
#endif
