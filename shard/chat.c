/* chat.c: Gemma 3 IT chat template (see chat.h). */
#include "chat.h"

#include <stdint.h>
#include <string.h>

#include "base/alloc.h"

/* Length of the whitespace character at s[0..n) (Python's str.isspace set), or 0. */
static size_t space_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (c == 0xC2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (c == 0xE1 && n >= 3 && s[1] == 0x9A && s[2] == 0x80) return 3; /* U+1680 */
    if (c == 0xE2 && n >= 3) {
        if (s[1] == 0x80 && (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
            return 3; /* U+2000..U+200A, U+2028, U+2029, U+202F */
        if (s[1] == 0x81 && s[2] == 0x9F) return 3; /* U+205F */
    }
    if (c == 0xE3 && n >= 3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    return 0;
}

void ts_chat_trim(const char *str, size_t len, size_t *start, size_t *end) {
    const unsigned char *s = (const unsigned char *)str;
    size_t a = 0, b = len;
    while (a < b) {
        size_t k = space_len(s + a, b - a);
        if (!k) break;
        a += k;
    }
    /* from the end: step back to the start of the last character */
    while (b > a) {
        size_t c = b - 1;
        while (c > a && (s[c] & 0xC0) == 0x80 && b - c < 4) c--;
        size_t k = space_len(s + c, b - c);
        if (k != b - c) break;
        b = c;
    }
    *start = a;
    *end = b;
}

typedef struct {
    char *p;
    size_t n, cap;
    ts_status rc;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->rc != TS_OK) return;
    size_t need;
    if (!ts_add_size(b->n, n, &need) || !ts_add_size(need, 1, &need)) {
        b->rc = TS_FAIL(TS_NOMEM, "chat text too long");
        return;
    }
    if (need > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < need) nc *= 2;
        char *q = ts_realloc(b->p, nc);
        if (!q) {
            b->rc = TS_FAIL(TS_NOMEM, "chat text of %zu bytes", nc);
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_trimmed(sbuf *b, const char *s, size_t n) {
    size_t a, e;
    if (!s) return;
    ts_chat_trim(s, n, &a, &e);
    put(b, s + a, e - a);
}

static void put_content(sbuf *b, const ts_chat_message *m) {
    if (!m->parts) {
        put_trimmed(b, m->content, m->content_len);
        return;
    }
    for (size_t k = 0; k < m->n_parts; k++) {
        if (m->parts[k].kind == TS_CHAT_PART_IMAGE) puts_(b, "<start_of_image>");
        else put_trimmed(b, m->parts[k].text, m->parts[k].len);
    }
}

ts_status ts_chat_render(const ts_chat_message *msgs, size_t n, bool add_generation_prompt,
                         bool include_bos, char **out, size_t *out_len) {
    if (!out || (!msgs && n)) return TS_FAIL(TS_INVAL, "NULL argument");
    *out = NULL;
    if (n == 0) return TS_FAIL(TS_INVAL, "empty conversation");
    size_t first = 0;
    const ts_chat_message *sys = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r) return TS_FAIL(TS_INVAL, "message %zu has no role", i);
        if (!strcmp(r, "system")) {
            if (i != 0)
                return TS_FAIL(TS_INVAL, "message %zu: a system message may only come first", i);
            sys = &msgs[0];
            first = 1;
        } else if (strcmp(r, "user") && strcmp(r, "model") && strcmp(r, "assistant")) {
            return TS_FAIL(TS_INVAL,
                           "message %zu: unknown role '%s' (expected system, user, model or assistant)",
                           i, r);
        }
    }
    if (sys && n == 1)
        return TS_FAIL(TS_INVAL, "a system message needs a user message after it");
    for (size_t i = first; i < n; i++) {
        bool want_user = (i - first) % 2 == 0;
        bool is_user = !strcmp(msgs[i].role, "user");
        if (want_user != is_user)
            return TS_FAIL(TS_INVAL,
                           "message %zu has role '%s' but %s was expected: roles must alternate "
                           "user/model/user/... (after an optional first system message)",
                           i, msgs[i].role, want_user ? "user" : "model");
    }
    sbuf b = {0};
    if (include_bos) puts_(&b, "<bos>");
    for (size_t i = first; i < n; i++) {
        const ts_chat_message *m = &msgs[i];
        puts_(&b, "<start_of_turn>");
        puts_(&b, !strcmp(m->role, "user") ? "user" : "model");
        puts_(&b, "\n");
        if (i == first && sys) {
            /* as the Jinja template: the system text (first part's text) as is, then "\n\n" */
            if (!sys->parts) {
                if (sys->content) put(&b, sys->content, sys->content_len);
            } else {
                for (size_t k = 0; k < sys->n_parts; k++)
                    if (sys->parts[k].kind == TS_CHAT_PART_TEXT) {
                        if (sys->parts[k].text) put(&b, sys->parts[k].text, sys->parts[k].len);
                        break;
                    }
            }
            puts_(&b, "\n\n");
        }
        put_content(&b, m);
        puts_(&b, "<end_of_turn>\n");
    }
    if (add_generation_prompt) puts_(&b, "<start_of_turn>model\n");
    if (b.rc != TS_OK) {
        ts_free(b.p);
        return b.rc;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return TS_OK;
}
