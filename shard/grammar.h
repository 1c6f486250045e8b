/* grammar.h: structured output. A JSON Schema (or "any JSON object", or a list of choices)
 * compiled to a grammar, an incremental byte-level matcher over it, and the token mask
 * that keeps sampling inside the grammar (see docs/structured-output.md).
 *
 * Compiled form: a graph of nodes (object, array, string, number, integer, literal set,
 * union, any). The matcher is a pushdown automaton: a state is a set of at most
 * TS_GRAMMAR_MAX_STACKS stacks (anyOf/oneOf fork a stack per alternative; stacks die when a
 * byte does not fit them), each at most TS_GRAMMAR_MAX_DEPTH frames deep. Every state
 * reached by feeding bytes is a prefix of at least one complete value the grammar accepts
 * (no dead ends: the compiler refuses unsatisfiable schemas), so masking with it never
 * leaves the model without a way to finish.
 *
 * The language accepted is a subset of the schema's instances:
 *   - whitespace: at most `max_ws` bytes (space, tab, CR, LF) in each gap between tokens of
 *     the JSON text (default TS_GRAMMAR_DEFAULT_WS), none before or after the root value;
 *   - numbers: at most 15 integer digits, 15 fraction digits, 2 exponent digits;
 *     "integer" is written without fraction or exponent;
 *   - object keys: no backslash escapes; any order; each declared key at most once
 *     (additional keys are not checked for duplicates: that needs unbounded state);
 *     objects with "properties" and no "additionalProperties" take only the declared keys
 *     (additionalProperties true or a schema allows other keys);
 *   - string escapes \uD800-\uDFFF (surrogates) are refused; raw UTF-8 must be valid;
 *   - enum / const values are written in compact canonical form (jansson JSON_COMPACT);
 *   - oneOf is compiled as anyOf (exclusivity is not enforced).
 * Supported keywords: type (and type arrays), properties, required, additionalProperties,
 * items, enum, const, anyOf, oneOf, minItems, maxItems, minLength, maxLength, $ref to
 * "#", "#/$defs/NAME" or "#/definitions/NAME", $defs, definitions; annotations (title,
 * description, default, examples, $schema, $id, $comment, format, deprecated, readOnly,
 * writeOnly) are ignored. Any other keyword is refused with TS_INVAL naming it and its
 * place ("unsupported keyword 'pattern' at #/properties/name").
 *
 * Thread safety: a ts_grammar and a ts_gvocab are immutable after creation and may be
 * shared; a ts_gmatch belongs to one thread at a time.
 */
#ifndef TS_GRAMMAR_H
#define TS_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_GRAMMAR_MAX_DEPTH 32   /* frames per stack (JSON nesting + 1) */
#define TS_GRAMMAR_MAX_STACKS 16  /* alternatives alive at once */
#define TS_GRAMMAR_MAX_NODES 4096
#define TS_GRAMMAR_MAX_PROPS 64   /* properties of one object schema */
#define TS_GRAMMAR_MAX_LITS 4096  /* enum/const values in all */
#define TS_GRAMMAR_MAX_ALTS 16    /* alternatives of one anyOf/oneOf/type array */
#define TS_GRAMMAR_MAX_SCHEMA (1u << 20) /* schema text bytes */
#define TS_GRAMMAR_DEFAULT_WS 16

typedef struct ts_grammar ts_grammar;

/* Compiles JSON Schema text (draft 2020-12 subset, see above). Errors: TS_INVAL with a
 * message naming the keyword and its JSON pointer (unsupported keywords, bad values,
 * unsatisfiable or too large schemas, unresolvable $ref), TS_FORMAT (not JSON), TS_NOMEM. */
ts_status ts_grammar_from_json_schema(const char *text, size_t len, int max_ws,
                                      ts_grammar **out);
/* Any JSON object. */
ts_status ts_grammar_json_object(int max_ws, ts_grammar **out);
/* Exactly one of the strings opts[0..n) (raw text, not JSON). n >= 1, each 1..4096 bytes. */
ts_status ts_grammar_choice(const char *const *opts, size_t n, ts_grammar **out);
void ts_grammar_free(ts_grammar *g);

/* ---- the matcher ---- */

typedef struct ts_gmatch ts_gmatch;

ts_status ts_gmatch_new(const ts_grammar *g, ts_gmatch **out);
void ts_gmatch_free(ts_gmatch *m);
/* Feeds bytes; false (and the state unchanged) when they do not continue a valid prefix. */
bool ts_gmatch_feed(ts_gmatch *m, const char *bytes, size_t n);
/* The bytes fed so far form a complete value (end-of-turn may come now). */
bool ts_gmatch_complete(const ts_gmatch *m);
/* Complete, and no byte can follow: generation is over. */
bool ts_gmatch_done(const ts_gmatch *m);

/* Convenience: true if text[0..len) is a complete value of g. */
bool ts_grammar_accepts(const ts_grammar *g, const char *text, size_t len);

/* ---- the token mask ---- */

typedef struct ts_gvocab ts_gvocab;

/* The decoded bytes of every token, in a byte trie. Control, unknown and unused tokens,
 * and tokens that decode to nothing, are never allowed by a mask (except end-of-generation
 * tokens, which are allowed exactly when the value is complete). */
ts_status ts_gvocab_build(const ts_tokenizer *tok, ts_gvocab **out);
void ts_gvocab_free(ts_gvocab *v);
uint32_t ts_gvocab_n_vocab(const ts_gvocab *v);
/* Longest token in bytes (a matcher keeps that many states + 1 while masking, ~12 KiB each). */
uint32_t ts_gvocab_max_len(const ts_gvocab *v);
/* Decoded bytes of token id (NULL for control tokens). */
const char *ts_gvocab_bytes(const ts_gvocab *v, int32_t id, size_t *len);

/* mask[(n_vocab + 63) / 64]: bit i set = token i keeps the output a valid prefix. Returns
 * the number of allowed tokens. m's cache of recent masks makes repeated states O(1). */
ts_status ts_gmatch_mask(ts_gmatch *m, const ts_gvocab *v, uint64_t *mask, size_t *n_allowed);
/* Sets logits[i] = -inf for every token the grammar does not allow now. TS_INVAL when no
 * token is allowed (cannot happen for a state reached through ts_gmatch_feed). */
ts_status ts_gmatch_apply(ts_gmatch *m, const ts_gvocab *v, float *logits);
/* Feeds the bytes of token id; false if the grammar does not allow it. */
bool ts_gmatch_accept_token(ts_gmatch *m, const ts_gvocab *v, int32_t id);

#ifdef __cplusplus
}
#endif
#endif
