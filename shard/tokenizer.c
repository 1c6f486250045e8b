/* tokenizer.c: Gemma 3 tokenizer (see tokenizer.h for the contract, docs/tokenizer.md for
 * the design).
 *
 * Data:
 *   - arena: every piece's stored text, then its encode spelling (the stored text, except
 *     that all-space pieces "  ", "   ", ... are spelled with U+2581 as HF's GGUF loader
 *     respells them), then its decoded bytes.
 *   - map: open-addressing hash from encode spelling to id (lookups during BPE), and a
 *     second one from stored text to id (ts_tokenizer_find).
 *   - trie: the added tokens matched in the raw text (leftmost-longest), with a first-byte
 *     filter so that plain text is skipped with one table load per byte.
 *   - byte_id[256]: id of "<0xNN>".
 * Encoding one fragment: symbols in a doubly linked list over the normalised bytes, and a
 * binary heap of candidate merges keyed (rank, -left chars, position), validated lazily
 * when popped (a symbol only ever grows to the right; its start never moves).
 */
#include "tokenizer.h"

#include <stdio.h>
#include <string.h>

#include "base/alloc.h"

/* ---- UTF-8 ---- */

/* Classifies the sequence at s[0..n): returns its length (1..4) if complete and valid,
 * 0 if the bytes are a valid but incomplete prefix (n too short), -1 if s[0] does not
 * start a valid sequence. */
static int utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return -1;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
    }
    return need;
}

bool ts_utf8_check(const char *s, size_t len, size_t *bad_offset) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_seq(p + i, len - i);
        if (k <= 0) {
            if (bad_offset) *bad_offset = i;
            return false;
        }
        i += (size_t)k;
    }
    return true;
}

char *ts_utf8_sanitize(const char *s, size_t len, size_t *out_len) {
    size_t cap;
    if (!ts_mul_size(len, 3, &cap) || !ts_add_size(cap, 1, &cap)) return NULL;
    char *buf = ts_malloc(cap);
    if (!buf) return NULL;
    const uint8_t *p = (const uint8_t *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        int k = utf8_seq(p + i, len - i);
        if (k > 0) {
            memcpy(buf + o, p + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    buf[o] = 0;
    if (out_len) *out_len = o;
    return buf;
}

/* ---- hashing ---- */

static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        h = (h ^ rd64(p)) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t t = 0;
        memcpy(&t, p, n);
        h = (h ^ t) * 0x94d049bb133111ebull;
    }
    return mix64(h);
}

typedef struct {
    uint32_t id1; /* id + 1; 0 = empty slot */
    uint32_t tag; /* high hash bits, to skip most memcmp */
} map_slot;

typedef struct {
    map_slot *slots;
    uint32_t mask;
} idmap;

/* ---- the tokenizer ---- */

#define TRIE_NONE 0xFFFFFFFFu

typedef struct {
    uint32_t child;   /* first child, TRIE_NONE if none */
    uint32_t sibling; /* next sibling, TRIE_NONE if none */
    int32_t token;    /* token ending here, -1 if none */
    uint8_t byte;
    uint8_t special;  /* 1: matched only with TS_TOK_PARSE_SPECIAL */
} trie_node;

struct ts_tokenizer {
    uint32_t n_vocab;
    char *arena;
    uint64_t *text_off; /* stored text */
    uint32_t *text_len;
    uint64_t *enc_off; /* encode spelling */
    uint32_t *enc_len;
    uint64_t *dec_off; /* decoded bytes */
    uint32_t *dec_len;
    uint8_t *type;
    idmap enc_map;
    idmap text_map;
    trie_node *trie;
    uint32_t n_trie;
    uint8_t first_byte[256]; /* 1 if some added token starts with this byte */
    int32_t byte_id[256];
    int32_t bos, eos, eot, pad, unk;
};

static const char *const k_forced_special[] = {
    "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
    "<end_of_image>",
};

static ts_status map_build(ts_tokenizer *tok, idmap *m, const uint64_t *off, const uint32_t *len) {
    uint32_t cap = 16;
    while (cap < tok->n_vocab * 2u) cap <<= 1;
    m->slots = ts_calloc(cap, sizeof(map_slot));
    if (!m->slots) return TS_FAIL(TS_NOMEM, "hash map of %u slots", cap);
    m->mask = cap - 1;
    for (uint32_t id = 0; id < tok->n_vocab; id++) {
        const uint8_t *p = (const uint8_t *)tok->arena + off[id];
        uint64_t h = hash_bytes(p, len[id]);
        uint32_t tag = (uint32_t)(h >> 32);
        uint32_t i = (uint32_t)h & m->mask;
        for (;;) {
            map_slot *s = &m->slots[i];
            if (!s->id1) {
                s->id1 = id + 1;
                s->tag = tag;
                break;
            }
            uint32_t o = s->id1 - 1;
            /* duplicate spelling: the later id wins, as in a Python dict built in order */
            if (s->tag == tag && len[o] == len[id] &&
                memcmp(tok->arena + off[o], p, len[id]) == 0) {
                s->id1 = id + 1;
                break;
            }
            i = (i + 1) & m->mask;
        }
    }
    return TS_OK;
}

static inline int32_t map_get(const ts_tokenizer *tok, const idmap *m, const uint64_t *off,
                              const uint32_t *len, const uint8_t *p, size_t n) {
    uint64_t h = hash_bytes(p, n);
    uint32_t tag = (uint32_t)(h >> 32);
    uint32_t i = (uint32_t)h & m->mask;
    for (;;) {
        const map_slot *s = &m->slots[i];
        if (!s->id1) return -1;
        uint32_t o = s->id1 - 1;
        if (s->tag == tag && len[o] == n && memcmp(tok->arena + off[o], p, n) == 0)
            return (int32_t)o;
        i = (i + 1) & m->mask;
    }
}

static ts_status trie_add(ts_tokenizer *tok, uint32_t *cap, const uint8_t *p, size_t n,
                          int32_t id, bool special) {
    uint32_t node = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t c = tok->trie[node].child, prev = TRIE_NONE;
        while (c != TRIE_NONE && tok->trie[c].byte != p[k]) {
            prev = c;
            c = tok->trie[c].sibling;
        }
        if (c == TRIE_NONE) {
            if (tok->n_trie == *cap) {
                uint32_t nc = *cap * 2;
                trie_node *t = ts_realloc(tok->trie, (size_t)nc * sizeof(trie_node));
                if (!t) return TS_FAIL(TS_NOMEM, "added-token trie of %u nodes", nc);
                tok->trie = t;
                *cap = nc;
            }
            c = tok->n_trie++;
            tok->trie[c] = (trie_node){TRIE_NONE, TRIE_NONE, -1, p[k], 0};
            if (prev == TRIE_NONE) tok->trie[node].child = c;
            else tok->trie[prev].sibling = c;
        }
        node = c;
    }
    if (tok->trie[node].token < 0 || !special) {
        /* a text that is both: keep the always-matched one */
        tok->trie[node].token = id;
        tok->trie[node].special = special;
    }
    tok->first_byte[p[0]] = 1;
    return TS_OK;
}

static bool is_space_run(const char *p, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ') return false;
    return true;
}

ts_status ts_tokenizer_init(const ts_tokenizer_vocab *v, ts_tokenizer **out) {
    if (!v || !out || (v->n && (!v->piece || !v->len)))
        return TS_FAIL(TS_INVAL, "NULL argument");
    *out = NULL;
    if (v->n == 0 || v->n > (size_t)INT32_MAX / 2)
        return TS_FAIL(TS_FORMAT, "vocabulary size %zu out of range", v->n);
    ts_status rc = TS_NOMEM;
    ts_tokenizer *tok = ts_calloc(1, sizeof *tok);
    if (!tok) return TS_FAIL(TS_NOMEM, "tokenizer");
    uint32_t n = (uint32_t)v->n;
    tok->n_vocab = n;
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (v->len[i] > 0xFFFF) {
            rc = TS_FAIL(TS_FORMAT, "piece %u is %zu bytes long (limit 65535)", i, v->len[i]);
            goto fail;
        }
        if (v->len[i] && !v->piece[i]) {
            rc = TS_FAIL(TS_INVAL, "piece %u is NULL", i);
            goto fail;
        }
        /* stored + encode spelling (<= 3x) + decoded (<= stored) */
        total += (size_t)v->len[i] * 5;
    }
    tok->arena = ts_malloc(total + 1);
    tok->text_off = ts_malloc(n * sizeof(uint64_t));
    tok->enc_off = ts_malloc(n * sizeof(uint64_t));
    tok->dec_off = ts_malloc(n * sizeof(uint64_t));
    tok->text_len = ts_malloc(n * sizeof(uint32_t));
    tok->enc_len = ts_malloc(n * sizeof(uint32_t));
    tok->dec_len = ts_malloc(n * sizeof(uint32_t));
    tok->type = ts_malloc(n);
    if (!tok->arena || !tok->text_off || !tok->enc_off || !tok->dec_off || !tok->text_len ||
        !tok->enc_len || !tok->dec_len || !tok->type) {
        rc = TS_FAIL(TS_NOMEM, "tokenizer tables for %u pieces", n);
        goto fail;
    }
    for (int b = 0; b < 256; b++) tok->byte_id[b] = -1;
    size_t o = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *p = v->piece[i];
        size_t len = v->len[i];
        int32_t t = v->type ? v->type[i] : TS_TOKEN_TYPE_NORMAL;
        if (t < 0 || t > TS_TOKEN_TYPE_BYTE) {
            rc = TS_FAIL(TS_FORMAT, "token %u has unknown type %d", i, t);
            goto fail;
        }
        unsigned bv = 0;
        bool is_byte_piece = len == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' &&
                             p[5] == '>' && sscanf(p + 3, "%2X", &bv) == 1 &&
                             ((p[3] >= '0' && p[3] <= '9') || (p[3] >= 'A' && p[3] <= 'F')) &&
                             ((p[4] >= '0' && p[4] <= '9') || (p[4] >= 'A' && p[4] <= 'F'));
        if (!v->type && is_byte_piece) t = TS_TOKEN_TYPE_BYTE;
        if (t == TS_TOKEN_TYPE_BYTE && !is_byte_piece) {
            rc = TS_FAIL(TS_FORMAT, "token %u has type BYTE but its text is not <0xNN>", i);
            goto fail;
        }
        tok->type[i] = (uint8_t)t;
        if (len) memcpy(tok->arena + o, p, len);
        tok->text_off[i] = o;
        tok->text_len[i] = (uint32_t)len;
        o += len;
        /* encode spelling */
        tok->enc_off[i] = o;
        if (is_space_run(p, len)) {
            for (size_t k = 0; k < len; k++, o += 3) memcpy(tok->arena + o, "\xE2\x96\x81", 3);
        } else {
            if (len) memcpy(tok->arena + o, p, len);
            o += len;
        }
        tok->enc_len[i] = (uint32_t)(o - tok->enc_off[i]);
        /* decoded bytes */
        tok->dec_off[i] = o;
        if (t == TS_TOKEN_TYPE_BYTE) {
            tok->arena[o++] = (char)bv;
            if (tok->byte_id[bv] < 0) tok->byte_id[bv] = (int32_t)i;
        } else if (t == TS_TOKEN_TYPE_CONTROL || t == TS_TOKEN_TYPE_UNKNOWN) {
            if (len) memcpy(tok->arena + o, p, len);
            o += len;
        } else {
            for (size_t k = 0; k < len;) {
                if (k + 3 <= len && memcmp(p + k, "\xE2\x96\x81", 3) == 0) {
                    tok->arena[o++] = ' ';
                    k += 3;
                } else {
                    tok->arena[o++] = p[k++];
                }
            }
        }
        tok->dec_len[i] = (uint32_t)(o - tok->dec_off[i]);
    }
    tok->arena[o] = 0;
    TS_TRY_GOTO(map_build(tok, &tok->enc_map, tok->enc_off, tok->enc_len), rc, fail);
    TS_TRY_GOTO(map_build(tok, &tok->text_map, tok->text_off, tok->text_len), rc, fail);

    /* special ids */
    int32_t ids[4] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id};
    for (int k = 0; k < 4; k++)
        if (ids[k] < -1 || ids[k] >= (int32_t)n) {
            rc = TS_FAIL(TS_FORMAT, "special token id %d out of range (vocabulary %u)", ids[k], n);
            goto fail;
        }
    tok->bos = v->bos_id;
    tok->eos = v->eos_id;
    tok->unk = v->unk_id;
    tok->pad = v->pad_id;
    tok->eot = ts_tokenizer_find(tok, "<end_of_turn>", 13);

    /* added tokens: USER_DEFINED pieces whose stored text is also an encode spelling (HF's
     * GGUF loader skips the respelled space runs), always; CONTROL / UNKNOWN and the
     * forced-special texts, only with TS_TOK_PARSE_SPECIAL. */
    uint32_t cap = 1024;
    tok->trie = ts_malloc(cap * sizeof(trie_node));
    if (!tok->trie) {
        rc = TS_FAIL(TS_NOMEM, "added-token trie");
        goto fail;
    }
    tok->trie[0] = (trie_node){TRIE_NONE, TRIE_NONE, -1, 0, 0};
    tok->n_trie = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = tok->text_len[i];
        if (!len) continue;
        const uint8_t *p = (const uint8_t *)tok->arena + tok->text_off[i];
        if (tok->type[i] == TS_TOKEN_TYPE_USER_DEFINED) {
            if (map_get(tok, &tok->enc_map, tok->enc_off, tok->enc_len, p, len) >= 0)
                TS_TRY_GOTO(trie_add(tok, &cap, p, len, (int32_t)i, false), rc, fail);
        } else if (tok->type[i] == TS_TOKEN_TYPE_CONTROL || tok->type[i] == TS_TOKEN_TYPE_UNKNOWN) {
            TS_TRY_GOTO(trie_add(tok, &cap, p, len, (int32_t)i, true), rc, fail);
        }
    }
    for (size_t k = 0; k < sizeof k_forced_special / sizeof k_forced_special[0]; k++) {
        const char *s = k_forced_special[k];
        int32_t id = ts_tokenizer_find(tok, s, strlen(s));
        if (id >= 0 && tok->type[id] != TS_TOKEN_TYPE_USER_DEFINED &&
            tok->type[id] != TS_TOKEN_TYPE_CONTROL && tok->type[id] != TS_TOKEN_TYPE_UNKNOWN)
            TS_TRY_GOTO(trie_add(tok, &cap, (const uint8_t *)s, strlen(s), id, true), rc, fail);
    }
    *out = tok;
    return TS_OK;
fail:
    ts_tokenizer_free(tok);
    return rc;
}

static ts_status get_id(const ts_gguf *g, const char *key, uint32_t n, int32_t *out) {
    uint32_t v;
    if (!ts_gguf_find(g, key)) {
        *out = -1;
        return TS_OK;
    }
    TS_TRY(ts_gguf_get_u32(g, key, &v));
    if (v >= n) return TS_FAIL(TS_FORMAT, "%s = %u is not below the vocabulary size %u", key, v, n);
    *out = (int32_t)v;
    return TS_OK;
}

ts_status ts_tokenizer_load(const ts_gguf *g, ts_tokenizer **out) {
    if (!g || !out) return TS_FAIL(TS_INVAL, "NULL argument");
    *out = NULL;
    ts_gguf_str model;
    TS_TRY(ts_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (!(model.len == 5 && memcmp(model.ptr, "llama", 5) == 0))
        return TS_FAIL(TS_UNSUPPORTED, "tokenizer.ggml.model is '%.*s'; only 'llama' (SentencePiece) is supported",
                       (int)(model.len > 64 ? 64 : model.len), model.ptr);
    const ts_gguf_value *toks, *types = NULL;
    TS_TRY(ts_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks));
    if (toks->v.arr.elem_type != TS_GGUF_STRING)
        return TS_FAIL(TS_FORMAT, "tokenizer.ggml.tokens is an array of %s, not strings",
                       ts_gguf_vtype_name(toks->v.arr.elem_type));
    uint64_t n = toks->v.arr.n;
    if (n == 0 || n > (uint64_t)INT32_MAX / 2)
        return TS_FAIL(TS_FORMAT, "tokenizer.ggml.tokens has %llu entries", (unsigned long long)n);
    if (ts_gguf_find(g, "tokenizer.ggml.token_type")) {
        TS_TRY(ts_gguf_get_arr(g, "tokenizer.ggml.token_type", &types));
        if (!ts_gguf_vtype_is_int(types->v.arr.elem_type) || types->v.arr.n != n)
            return TS_FAIL(TS_FORMAT, "tokenizer.ggml.token_type: %llu entries of %s for %llu tokens",
                           (unsigned long long)types->v.arr.n, ts_gguf_vtype_name(types->v.arr.elem_type),
                           (unsigned long long)n);
    }
    ts_tokenizer_vocab v = {0};
    v.n = (size_t)n;
    const char **piece = ts_malloc(v.n * sizeof(char *));
    size_t *len = ts_malloc(v.n * sizeof(size_t));
    int32_t *type = types ? ts_malloc(v.n * sizeof(int32_t)) : NULL;
    ts_status rc = TS_OK;
    if (!piece || !len || (types && !type)) {
        rc = TS_FAIL(TS_NOMEM, "vocabulary of %zu pieces", v.n);
        goto done;
    }
    for (size_t i = 0; i < v.n; i++) {
        const ts_gguf_str *s = &toks->v.arr.strs[i];
        piece[i] = s->ptr;
        len[i] = (size_t)s->len;
        if (s->len > 0xFFFF) {
            rc = TS_FAIL(TS_FORMAT, "tokenizer.ggml.tokens[%zu] is %llu bytes long", i,
                         (unsigned long long)s->len);
            goto done;
        }
        if (types) {
            int64_t t = ts_gguf_arr_i64(types, i);
            if (t < 0 || t > TS_TOKEN_TYPE_BYTE) {
                rc = TS_FAIL(TS_FORMAT, "tokenizer.ggml.token_type[%zu] = %lld is not a known type", i,
                             (long long)t);
                goto done;
            }
            type[i] = (int32_t)t;
        }
    }
    v.piece = piece;
    v.len = len;
    v.type = type;
    uint32_t nv = (uint32_t)n;
    TS_TRY_GOTO(get_id(g, "tokenizer.ggml.bos_token_id", nv, &v.bos_id), rc, done);
    TS_TRY_GOTO(get_id(g, "tokenizer.ggml.eos_token_id", nv, &v.eos_id), rc, done);
    TS_TRY_GOTO(get_id(g, "tokenizer.ggml.unknown_token_id", nv, &v.unk_id), rc, done);
    TS_TRY_GOTO(get_id(g, "tokenizer.ggml.padding_token_id", nv, &v.pad_id), rc, done);
    rc = ts_tokenizer_init(&v, out);
done:
    ts_free(piece);
    ts_free(len);
    ts_free(type);
    return rc;
}

void ts_tokenizer_free(ts_tokenizer *tok) {
    if (!tok) return;
    ts_free(tok->arena);
    ts_free(tok->text_off);
    ts_free(tok->text_len);
    ts_free(tok->enc_off);
    ts_free(tok->enc_len);
    ts_free(tok->dec_off);
    ts_free(tok->dec_len);
    ts_free(tok->type);
    ts_free(tok->enc_map.slots);
    ts_free(tok->text_map.slots);
    ts_free(tok->trie);
    ts_free(tok);
}

uint32_t ts_tokenizer_n_vocab(const ts_tokenizer *tok) { return tok->n_vocab; }
int32_t ts_tokenizer_bos(const ts_tokenizer *tok) { return tok->bos; }
int32_t ts_tokenizer_eos(const ts_tokenizer *tok) { return tok->eos; }
int32_t ts_tokenizer_eot(const ts_tokenizer *tok) { return tok->eot; }
int32_t ts_tokenizer_pad(const ts_tokenizer *tok) { return tok->pad; }
int32_t ts_tokenizer_unk(const ts_tokenizer *tok) { return tok->unk; }

bool ts_tokenizer_is_eog(const ts_tokenizer *tok, int32_t id) {
    return id >= 0 && (id == tok->eos || id == tok->eot);
}

int32_t ts_tokenizer_find(const ts_tokenizer *tok, const char *text, size_t len) {
    if (!text && len) return -1;
    return map_get(tok, &tok->text_map, tok->text_off, tok->text_len, (const uint8_t *)text, len);
}

const char *ts_tokenizer_piece(const ts_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= tok->n_vocab) return NULL;
    if (len) *len = tok->text_len[id];
    return tok->arena + tok->text_off[id];
}

ts_token_type ts_tokenizer_type(const ts_tokenizer *tok, int32_t id) {
    if (id < 0 || (uint32_t)id >= tok->n_vocab) return TS_TOKEN_TYPE_UNDEFINED;
    return (ts_token_type)tok->type[id];
}

bool ts_tokenizer_is_control(const ts_tokenizer *tok, int32_t id) {
    ts_token_type t = ts_tokenizer_type(tok, id);
    return t == TS_TOKEN_TYPE_CONTROL || t == TS_TOKEN_TYPE_UNKNOWN;
}

/* ---- encoding ---- */

void ts_tokens_free(ts_tokens *t) {
    if (!t) return;
    ts_free(t->ids);
    ts_free(t->work_);
    *t = (ts_tokens){0};
}

static ts_status push_id(ts_tokens *out, int32_t id) {
    if (out->n == out->cap) {
        size_t nc = out->cap ? out->cap * 2 : 64;
        int32_t *p = ts_realloc(out->ids, nc * sizeof(int32_t));
        if (!p) return TS_FAIL(TS_NOMEM, "token list of %zu ids", nc);
        out->ids = p;
        out->cap = nc;
    }
    out->ids[out->n++] = id;
    return TS_OK;
}

typedef struct {
    uint32_t start; /* byte offset in the normalised fragment */
    uint32_t len;   /* bytes; 0 = merged away */
    uint32_t nchars;
    int32_t prev, next;
    int32_t id; /* piece id, -1 if this code point is no piece */
} symbol;

typedef struct {
    uint32_t rank;  /* id of the merged piece: lower merges first */
    uint32_t lchar; /* chars in the left part: more merges first */
    uint32_t left, right;
    uint32_t size; /* bytes of the merged piece, to detect stale entries */
} bigram;

static inline bool bigram_before(const bigram *a, const bigram *b) {
    if (a->rank != b->rank) return a->rank < b->rank;
    if (a->lchar != b->lchar) return a->lchar > b->lchar;
    return a->left < b->left;
}

typedef struct {
    bigram *h;
    size_t n;
} heap;

static void heap_push(heap *q, bigram b) {
    size_t i = q->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &q->h[p])) break;
        q->h[i] = q->h[p];
        i = p;
    }
    q->h[i] = b;
}

static bigram heap_pop(heap *q) {
    bigram top = q->h[0];
    bigram last = q->h[--q->n];
    size_t i = 0, n = q->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_before(&q->h[c + 1], &q->h[c])) c++;
        if (!bigram_before(&q->h[c], &last)) break;
        q->h[i] = q->h[c];
        i = c;
    }
    if (n) q->h[i] = last;
    return top;
}

typedef struct {
    const ts_tokenizer *tok;
    uint8_t *norm; /* normalised fragment */
    symbol *sym;
    heap q;
} encoder;

static inline void try_bigram(encoder *e, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const symbol *a = &e->sym[l], *b = &e->sym[r];
    if (a->id < 0 || b->id < 0) return;
    uint32_t size = a->len + b->len;
    int32_t id = map_get(e->tok, &e->tok->enc_map, e->tok->enc_off, e->tok->enc_len,
                         e->norm + a->start, size);
    if (id < 0) return;
    heap_push(&e->q, (bigram){(uint32_t)id, a->nchars, (uint32_t)l, (uint32_t)r, size});
}

/* Encodes one fragment of valid UTF-8 (no added tokens inside). */
static ts_status encode_fragment(encoder *e, const uint8_t *text, size_t len, ts_tokens *out) {
    const ts_tokenizer *tok = e->tok;
    /* normalise: " " -> U+2581 */
    size_t nl = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(e->norm + nl, "\xE2\x96\x81", 3);
            nl += 3;
        } else {
            e->norm[nl++] = text[i];
        }
    }
    /* one symbol per code point */
    int32_t ns = 0;
    for (size_t i = 0; i < nl;) {
        uint8_t c = e->norm[i];
        uint32_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        symbol *s = &e->sym[ns];
        s->start = (uint32_t)i;
        s->len = k;
        s->nchars = 1;
        s->prev = ns - 1;
        s->next = ns + 1;
        s->id = map_get(tok, &tok->enc_map, tok->enc_off, tok->enc_len, e->norm + i, k);
        ns++;
        i += k;
    }
    if (ns == 0) return TS_OK;
    e->sym[ns - 1].next = -1;
    e->q.n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) try_bigram(e, i, i + 1);
    while (e->q.n) {
        bigram b = heap_pop(&e->q);
        symbol *l = &e->sym[b.left], *r = &e->sym[b.right];
        if (l->len == 0 || r->len == 0 || l->next != (int32_t)b.right || l->len + r->len != b.size)
            continue;
        l->len += r->len;
        l->nchars += r->nchars;
        l->id = (int32_t)b.rank;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = (int32_t)b.left;
        r->len = 0;
        try_bigram(e, l->prev, (int32_t)b.left);
        try_bigram(e, (int32_t)b.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) {
        const symbol *s = &e->sym[i];
        if (s->id >= 0) {
            TS_TRY(push_id(out, s->id));
        } else {
            for (uint32_t k = 0; k < s->len; k++) {
                int32_t id = tok->byte_id[e->norm[s->start + k]];
                if (id < 0) id = tok->unk;
                if (id < 0)
                    return TS_FAIL(TS_FORMAT, "no piece, byte token or <unk> for byte 0x%02X",
                                   e->norm[s->start + k]);
                TS_TRY(push_id(out, id));
            }
        }
    }
    return TS_OK;
}

/* Longest added token at p[0..n) allowed by flags: its id and byte length, or -1.
 * *any_len gets the longest match of any kind (special or not), 0 if none. */
static inline int32_t match_added(const ts_tokenizer *tok, const uint8_t *p, size_t n,
                                  unsigned flags, size_t *mlen, bool *skipped) {
    uint32_t node = 0;
    int32_t best = -1;
    bool best_special = false;
    size_t best_len = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t c = tok->trie[node].child;
        while (c != TRIE_NONE && tok->trie[c].byte != p[k]) c = tok->trie[c].sibling;
        if (c == TRIE_NONE) break;
        node = c;
        if (tok->trie[c].token >= 0) {
            best = tok->trie[c].token;
            best_special = tok->trie[c].special;
            best_len = k + 1;
        }
    }
    *mlen = best_len;
    *skipped = false;
    if (best >= 0 && best_special && !(flags & TS_TOK_PARSE_SPECIAL)) {
        *skipped = true; /* HF: the match is consumed but left as plain text */
        return -1;
    }
    return best;
}

/* Work memory is about 90 bytes per input byte; keep it between calls only while small. */
#define WORK_KEEP_MAX ((size_t)4 << 20)

static void release_big_work(ts_tokens *out) {
    if (out->work_cap_ > WORK_KEEP_MAX) {
        ts_free(out->work_);
        out->work_ = NULL;
        out->work_cap_ = 0;
    }
}

ts_status ts_tokenize(const ts_tokenizer *tok, const char *text, size_t len, unsigned flags,
                      ts_tokens *out) {
    if (!tok || !out || (!text && len)) return TS_FAIL(TS_INVAL, "NULL argument");
    if (len > TS_TOK_MAX_INPUT)
        return TS_FAIL(TS_RANGE, "input of %zu bytes exceeds the limit of %zu bytes", len,
                       (size_t)TS_TOK_MAX_INPUT);
    size_t bad;
    if (!ts_utf8_check(text, len, &bad))
        return TS_FAIL(TS_FORMAT, "input is not valid UTF-8: byte 0x%02X at offset %zu",
                       (unsigned)(uint8_t)text[bad], bad);
    size_t n0 = out->n;
    ts_status rc = TS_OK;
    if ((flags & TS_TOK_ADD_BOS) && tok->bos >= 0) TS_TRY_GOTO(push_id(out, tok->bos), rc, fail);
    if (len == 0) return TS_OK;

    /* work memory for the longest fragment (at most len bytes): normalised bytes (3x),
     * symbols (one per byte at most) and the heap (each merge adds at most 2 entries). */
    size_t need = len * 3 + 8 + len * sizeof(symbol) + (3 * len + 4) * sizeof(bigram) + 64;
    if (out->work_cap_ < need) {
        void *w = ts_realloc(out->work_, need);
        if (!w) {
            rc = TS_FAIL(TS_NOMEM, "tokenizer work memory of %zu bytes", need);
            goto fail;
        }
        out->work_ = w;
        out->work_cap_ = need;
    }
    encoder e;
    e.tok = tok;
    uint8_t *w = out->work_;
    size_t sym_off = (len * 3 + 8 + 15) & ~(size_t)15;
    e.norm = w;
    e.sym = (symbol *)(void *)(w + sym_off);
    e.q.h = (bigram *)(void *)(w + ((sym_off + len * sizeof(symbol) + 15) & ~(size_t)15));
    e.q.n = 0;

    const uint8_t *p = (const uint8_t *)text;
    size_t frag = 0, i = 0;
    while (i < len) {
        if (!tok->first_byte[p[i]]) {
            i++;
            continue;
        }
        size_t mlen;
        bool skipped;
        int32_t id = match_added(tok, p + i, len - i, flags, &mlen, &skipped);
        if (id >= 0) {
            if (i > frag) TS_TRY_GOTO(encode_fragment(&e, p + frag, i - frag, out), rc, fail);
            TS_TRY_GOTO(push_id(out, id), rc, fail);
            i += mlen;
            frag = i;
        } else if (skipped) {
            i += mlen; /* searching resumes after the special text, which stays plain text */
        } else {
            i++;
        }
    }
    if (len > frag) TS_TRY_GOTO(encode_fragment(&e, p + frag, len - frag, out), rc, fail);
    release_big_work(out);
    return TS_OK;
fail:
    release_big_work(out);
    out->n = n0;
    return rc;
}

/* ---- decoding ---- */

ts_status ts_detokenize(const ts_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *out_len) {
    if (!tok || !out || (!ids && n)) return TS_FAIL(TS_INVAL, "NULL argument");
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= tok->n_vocab)
            return TS_FAIL(TS_RANGE, "token id %d at position %zu is out of range (vocabulary %u)",
                           ids[i], i, tok->n_vocab);
        total += tok->dec_len[ids[i]];
    }
    char *buf = ts_malloc(total + 1);
    if (!buf) return TS_FAIL(TS_NOMEM, "decoded text of %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (!(flags & TS_DETOK_SPECIAL) && ts_tokenizer_is_control(tok, id)) continue;
        memcpy(buf + o, tok->arena + tok->dec_off[id], tok->dec_len[id]);
        o += tok->dec_len[id];
    }
    buf[o] = 0;
    *out = buf;
    if (out_len) *out_len = o;
    return TS_OK;
}

struct ts_detok_stream {
    const ts_tokenizer *tok;
    uint8_t pend[4];
    size_t npend;
    char *buf;
    size_t cap;
};

ts_status ts_detok_stream_init(const ts_tokenizer *tok, ts_detok_stream **out) {
    if (!tok || !out) return TS_FAIL(TS_INVAL, "NULL argument");
    ts_detok_stream *s = ts_calloc(1, sizeof *s);
    if (!s) return TS_FAIL(TS_NOMEM, "detokenizer stream");
    s->tok = tok;
    *out = s;
    return TS_OK;
}

void ts_detok_stream_free(ts_detok_stream *s) {
    if (!s) return;
    ts_free(s->buf);
    ts_free(s);
}

static ts_status stream_reserve(ts_detok_stream *s, size_t need) {
    if (need <= s->cap) return TS_OK;
    size_t nc = s->cap ? s->cap : 64;
    while (nc < need) nc *= 2;
    char *b = ts_realloc(s->buf, nc);
    if (!b) return TS_FAIL(TS_NOMEM, "detokenizer buffer of %zu bytes", nc);
    s->buf = b;
    s->cap = nc;
    return TS_OK;
}

ts_status ts_detok_stream_push(ts_detok_stream *s, int32_t id, const char **text, size_t *len) {
    if (!s || !text || !len) return TS_FAIL(TS_INVAL, "NULL argument");
    const ts_tokenizer *tok = s->tok;
    *text = "";
    *len = 0;
    if (id < 0 || (uint32_t)id >= tok->n_vocab)
        return TS_FAIL(TS_RANGE, "token id %d is out of range (vocabulary %u)", id, tok->n_vocab);
    if (ts_tokenizer_is_control(tok, id)) return TS_OK;
    const uint8_t *d = (const uint8_t *)tok->arena + tok->dec_off[id];
    size_t dn = tok->dec_len[id];
    /* worst case: every held and new byte becomes U+FFFD */
    TS_TRY(stream_reserve(s, (s->npend + dn) * 3 + 1));
    size_t o = 0;
    /* complete the held sequence byte by byte */
    size_t k = 0;
    while (s->npend && k < dn) {
        s->pend[s->npend++] = d[k++];
        int r = utf8_seq(s->pend, s->npend);
        if (r == 0) continue;
        if (r > 0) {
            memcpy(s->buf + o, s->pend, (size_t)r);
            o += (size_t)r;
            s->npend = 0;
        } else {
            /* the lead byte is bad: replace it and rescan the rest */
            memcpy(s->buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            size_t rest = s->npend - 1;
            uint8_t tmp[4];
            memcpy(tmp, s->pend + 1, rest);
            s->npend = 0;
            for (size_t j = 0; j < rest; j++) {
                s->pend[s->npend++] = tmp[j];
                int r2 = utf8_seq(s->pend, s->npend);
                if (r2 > 0) {
                    memcpy(s->buf + o, s->pend, (size_t)r2);
                    o += (size_t)r2;
                    s->npend = 0;
                } else if (r2 < 0) {
                    memcpy(s->buf + o, "\xEF\xBF\xBD", 3);
                    o += 3;
                    s->npend = 0; /* a bad byte alone: drop it (replaced) */
                }
            }
        }
    }
    while (k < dn) {
        int r = utf8_seq(d + k, dn - k);
        if (r > 0) {
            memcpy(s->buf + o, d + k, (size_t)r);
            o += (size_t)r;
            k += (size_t)r;
        } else if (r == 0) {
            memcpy(s->pend, d + k, dn - k);
            s->npend = dn - k;
            k = dn;
        } else {
            memcpy(s->buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            k++;
        }
    }
    s->buf[o] = 0;
    *text = s->buf;
    *len = o;
    return TS_OK;
}

ts_status ts_detok_stream_flush(ts_detok_stream *s, const char **text, size_t *len) {
    if (!s || !text || !len) return TS_FAIL(TS_INVAL, "NULL argument");
    TS_TRY(stream_reserve(s, s->npend * 3 + 1));
    size_t o = 0;
    for (size_t i = 0; i < s->npend; i++, o += 3) memcpy(s->buf + o, "\xEF\xBF\xBD", 3);
    s->npend = 0;
    s->buf[o] = 0;
    *text = s->buf;
    *len = o;
    return TS_OK;
}
