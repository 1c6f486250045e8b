/* cmd_tokenize.c: `tessera tokenize` and `tessera detokenize`.
 *
 *   tessera tokenize -m MODEL [--no-bos] [--no-special] [--jsonl] [TEXT]
 *       TEXT (or all of stdin when TEXT is absent) -> one JSON array of ids on stdout.
 *       --jsonl: each stdin line is a JSON string; each output line the JSON array of its
 *       ids, in order. A line that is not a JSON string is an error naming its number.
 *   tessera detokenize -m MODEL [--special] [--jsonl] [IDS...]
 *       ids -> text (raw bytes, then a newline). --jsonl: each stdin line is a JSON array
 *       of ids; each output line the JSON string of its text (invalid UTF-8 -> U+FFFD).
 * Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "commands.h"
#include "gguf.h"
#include "tokenizer.h"

typedef struct {
    const char *model;
    bool no_bos, no_special, jsonl, special;
    int first_pos; /* index of the first positional argument, or argc */
} opts;

static void tok_usage(FILE *f) {
    fprintf(f,
            "usage: tessera tokenize -m MODEL [--no-bos] [--no-special] [--jsonl] [TEXT]\n\n"
            "Encodes TEXT (or all of stdin) with the model's tokenizer and prints the token ids\n"
            "as one JSON array.\n\n"
            "  -m, --model MODEL  GGUF file with the tokenizer\n"
            "  --no-bos           do not prepend <bos>\n"
            "  --no-special       do not recognise control-token texts such as <start_of_turn>\n"
            "  --jsonl            read one JSON string per line on stdin, write one JSON array\n"
            "                     of ids per line, in order\n");
}

static void detok_usage(FILE *f) {
    fprintf(f,
            "usage: tessera detokenize -m MODEL [--special] [--jsonl] [IDS...]\n\n"
            "Decodes token ids to text. Control tokens (<bos>, <end_of_turn>, ...) print nothing\n"
            "unless --special is given.\n\n"
            "  -m, --model MODEL  GGUF file with the tokenizer\n"
            "  --special          print control tokens as their text\n"
            "  --jsonl            read one JSON array of ids per line on stdin, write one JSON\n"
            "                     string per line, in order\n");
}

/* Returns -1 to continue, else an exit code. */
static int parse(int argc, char **argv, bool detok, opts *o) {
    memset(o, 0, sizeof *o);
    o->first_pos = argc;
    void (*usage)(FILE *) = detok ? detok_usage : tok_usage;
    const char *name = detok ? "detokenize" : "tokenize";
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tessera %s: %s needs a value\n", name, a);
                return 2;
            }
            o->model = argv[++i];
        } else if (!strncmp(a, "--model=", 8)) {
            o->model = a + 8;
        } else if (!strcmp(a, "--jsonl")) {
            o->jsonl = true;
        } else if (!detok && !strcmp(a, "--no-bos")) {
            o->no_bos = true;
        } else if (!detok && !strcmp(a, "--no-special")) {
            o->no_special = true;
        } else if (detok && !strcmp(a, "--special")) {
            o->special = true;
        } else if (a[0] == '-' && a[1] && !(detok && a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "tessera %s: unknown option '%s'\n\n", name, a);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    o->first_pos = i;
    if (!o->model) {
        fprintf(stderr, "tessera %s: -m MODEL is required\n\n", name);
        usage(stderr);
        return 2;
    }
    int npos = argc - i;
    if (o->jsonl && npos > 0) {
        fprintf(stderr, "tessera %s: --jsonl reads stdin and takes no positional arguments\n", name);
        return 2;
    }
    if (!detok && npos > 1) {
        fprintf(stderr, "tessera tokenize: one TEXT argument expected, got %d (quote the text)\n", npos);
        return 2;
    }
    return -1;
}

static int load(const char *cmd, const char *path, ts_tokenizer **tok) {
    ts_gguf *g;
    if (ts_gguf_open(path, &g) != TS_OK) {
        fprintf(stderr, "tessera %s: %s\n", cmd, ts_last_error());
        return 1;
    }
    ts_status rc = ts_tokenizer_load(g, tok);
    ts_gguf_close(g);
    if (rc != TS_OK) {
        fprintf(stderr, "tessera %s: %s: %s\n", cmd, path, ts_last_error());
        return 1;
    }
    return 0;
}

static void print_ids(const int32_t *ids, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    fputs("]\n", stdout);
}

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = ts_malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *b = ts_realloc(buf, cap *= 2);
            if (!b) {
                ts_free(buf);
                return NULL;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        ts_free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int ts_cmd_tokenize(int argc, char **argv) {
    opts o;
    int rc = parse(argc, argv, false, &o);
    if (rc >= 0) return rc;
    ts_tokenizer *tok;
    if (load("tokenize", o.model, &tok)) return 1;
    unsigned flags = (o.no_bos ? 0 : TS_TOK_ADD_BOS) | (o.no_special ? 0 : TS_TOK_PARSE_SPECIAL);
    ts_tokens t = {0};
    rc = 0;
    if (!o.jsonl) {
        char *stdin_buf = NULL;
        const char *text;
        size_t len;
        if (o.first_pos < argc) {
            text = argv[o.first_pos];
            len = strlen(text);
        } else {
            stdin_buf = read_all(stdin, &len);
            if (!stdin_buf) {
                fprintf(stderr, "tessera tokenize: cannot read stdin: %s\n", strerror(errno));
                rc = 1;
                goto out;
            }
            text = stdin_buf;
        }
        if (ts_tokenize(tok, text, len, flags, &t) != TS_OK) {
            fprintf(stderr, "tessera tokenize: %s\n", ts_last_error());
            rc = 1;
        } else {
            print_ids(t.ids, t.n);
        }
        ts_free(stdin_buf);
        goto out;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    for (size_t lineno = 1; (got = getline(&line, &cap, stdin)) >= 0; lineno++) {
        json_error_t err;
        json_t *j = json_loadb(line, (size_t)got, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
        if (!j || !json_is_string(j)) {
            fprintf(stderr, "tessera tokenize: stdin line %zu: %s\n", lineno,
                    j ? "expected a JSON string" : err.text);
            json_decref(j);
            rc = 1;
            break;
        }
        t.n = 0;
        if (ts_tokenize(tok, json_string_value(j), json_string_length(j), flags, &t) != TS_OK) {
            fprintf(stderr, "tessera tokenize: stdin line %zu: %s\n", lineno, ts_last_error());
            json_decref(j);
            rc = 1;
            break;
        }
        json_decref(j);
        print_ids(t.ids, t.n);
        fflush(stdout);
    }
    free(line);
out:
    if (fflush(stdout) != 0) {
        fprintf(stderr, "tessera tokenize: write error: %s\n", strerror(errno));
        rc = 1;
    }
    ts_tokens_free(&t);
    ts_tokenizer_free(tok);
    return rc;
}

static bool parse_id(const char *s, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT32_MIN || v > INT32_MAX) return false;
    *out = (int32_t)v;
    return true;
}

int ts_cmd_detokenize(int argc, char **argv) {
    opts o;
    int rc = parse(argc, argv, true, &o);
    if (rc >= 0) return rc;
    unsigned flags = o.special ? TS_DETOK_SPECIAL : 0;
    int32_t *ids = NULL;
    size_t n = 0;
    if (!o.jsonl) {
        n = (size_t)(argc - o.first_pos);
        ids = ts_malloc((n + 1) * sizeof(int32_t));
        if (!ids) return 1;
        for (size_t i = 0; i < n; i++)
            if (!parse_id(argv[o.first_pos + (int)i], &ids[i])) {
                fprintf(stderr, "tessera detokenize: '%s' is not a token id\n", argv[o.first_pos + (int)i]);
                ts_free(ids);
                return 2;
            }
    }
    ts_tokenizer *tok;
    if (load("detokenize", o.model, &tok)) {
        ts_free(ids);
        return 1;
    }
    rc = 0;
    if (!o.jsonl) {
        char *text;
        size_t len;
        if (ts_detokenize(tok, ids, n, flags, &text, &len) != TS_OK) {
            fprintf(stderr, "tessera detokenize: %s\n", ts_last_error());
            rc = 1;
        } else {
            fwrite(text, 1, len, stdout);
            putchar('\n');
            ts_free(text);
        }
        goto out;
    }
    char *line = NULL;
    size_t cap = 0, idcap = 0;
    ssize_t got;
    for (size_t lineno = 1; (got = getline(&line, &cap, stdin)) >= 0; lineno++) {
        json_error_t err;
        json_t *j = json_loadb(line, (size_t)got, JSON_DECODE_ANY, &err);
        const char *why = !j ? err.text : !json_is_array(j) ? "expected a JSON array of token ids" : NULL;
        n = j && !why ? json_array_size(j) : 0;
        if (!why && n + 1 > idcap) {
            int32_t *p = ts_realloc(ids, (n + 1) * sizeof(int32_t));
            if (!p) why = "out of memory";
            else {
                ids = p;
                idcap = n + 1;
            }
        }
        for (size_t i = 0; !why && i < n; i++) {
            json_t *v = json_array_get(j, i);
            json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
            if (!json_is_integer(v) || x < INT32_MIN || x > INT32_MAX) why = "expected a JSON array of integers";
            else ids[i] = (int32_t)x;
        }
        json_decref(j);
        if (why) {
            fprintf(stderr, "tessera detokenize: stdin line %zu: %s\n", lineno, why);
            rc = 1;
            break;
        }
        char *text;
        size_t len;
        if (ts_detokenize(tok, ids, n, flags, &text, &len) != TS_OK) {
            fprintf(stderr, "tessera detokenize: stdin line %zu: %s\n", lineno, ts_last_error());
            rc = 1;
            break;
        }
        size_t sl;
        char *clean = ts_utf8_sanitize(text, len, &sl);
        ts_free(text);
        json_t *js = clean ? json_stringn(clean, sl) : NULL;
        ts_free(clean);
        char *dump = js ? json_dumps(js, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(js);
        if (!dump) {
            fprintf(stderr, "tessera detokenize: stdin line %zu: out of memory\n", lineno);
            rc = 1;
            break;
        }
        fputs(dump, stdout);
        putchar('\n');
        free(dump);
        fflush(stdout);
    }
    free(line);
out:
    if (fflush(stdout) != 0) {
        fprintf(stderr, "tessera detokenize: write error: %s\n", strerror(errno));
        rc = 1;
    }
    ts_free(ids);
    ts_tokenizer_free(tok);
    return rc;
}
