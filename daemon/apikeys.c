/* apikeys.c: the API key table of tesserad (see apikeys.h). */
#define _POSIX_C_SOURCE 200809L
#include "apikeys.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MIN 8
#define KEY_MAX 256

typedef struct {
    char *key;
    size_t len;
    char tenant[TS_TENANT_MAX];
} entry;

struct ts_apikeys {
    entry *e;
    size_t n, cap;
};

void ts_apikeys_free(ts_apikeys *k) {
    if (!k) return;
    for (size_t i = 0; i < k->n; i++) {
        /* do not leave secrets in freed memory */
        volatile char *p = k->e[i].key;
        for (size_t j = 0; j < k->e[i].len; j++) p[j] = 0;
        free(k->e[i].key);
    }
    free(k->e);
    free(k);
}

size_t ts_apikeys_count(const ts_apikeys *k) { return k ? k->n : 0; }

static bool tenant_ok(const char *t, size_t n) {
    if (n == 0 || n >= TS_TENANT_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool key_ok(const char *k, size_t n) {
    if (n < KEY_MIN || n > KEY_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] <= ' ' || k[i] > '~') return false;
    return true;
}

static bool ct_equal(const char *a, size_t al, const char *b, size_t bl) {
    /* constant time in the content (the length of a stored key is not secret enough to
     * matter: keys are long random strings) */
    if (al != bl) return false;
    unsigned char d = 0;
    for (size_t i = 0; i < al; i++) d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

ts_apikeys *ts_apikeys_load(const char *path, char *err, size_t errsz) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return NULL;
    }
    ts_apikeys *k = calloc(1, sizeof *k);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t got;
    bool ok = k != NULL;
    if (!ok) snprintf(err, errsz, "%s: out of memory", path);
    while (ok && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)got != strlen(line)) {
            snprintf(err, errsz, "%s:%ld: NUL byte in the line", path, lineno);
            ok = false;
            break;
        }
        /* strip a comment: '#' at the start or after whitespace */
        for (char *p = line; *p; p++)
            if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
                *p = '\0';
                break;
            }
        char *fld[3];
        size_t fl[3], nf = 0;
        char *p = line;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
            if (!*p) break;
            char *s = p;
            while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') p++;
            if (nf < 3) {
                fld[nf] = s;
                fl[nf] = (size_t)(p - s);
            }
            nf++;
        }
        if (nf == 0) continue;
        if (nf != 2) {
            snprintf(err, errsz, "%s:%ld: expected `KEY TENANT`, found %zu field%s", path, lineno,
                     nf, nf == 1 ? "" : "s");
            ok = false;
            break;
        }
        if (!key_ok(fld[0], fl[0])) {
            snprintf(err, errsz, "%s:%ld: the key must be %d..%d printable characters", path,
                     lineno, KEY_MIN, KEY_MAX);
            ok = false;
            break;
        }
        if (!tenant_ok(fld[1], fl[1])) {
            snprintf(err, errsz, "%s:%ld: the tenant must be 1..%d of [A-Za-z0-9._-]", path,
                     lineno, TS_TENANT_MAX - 1);
            ok = false;
            break;
        }
        for (size_t i = 0; i < k->n; i++)
            if (ct_equal(k->e[i].key, k->e[i].len, fld[0], fl[0])) {
                snprintf(err, errsz, "%s:%ld: duplicate key (first for tenant %s)", path, lineno,
                         k->e[i].tenant);
                ok = false;
            }
        if (!ok) break;
        if (k->n == k->cap) {
            size_t nc = k->cap ? k->cap * 2 : 16;
            entry *ne = realloc(k->e, nc * sizeof *ne);
            if (!ne) {
                snprintf(err, errsz, "%s: out of memory", path);
                ok = false;
                break;
            }
            k->e = ne;
            k->cap = nc;
        }
        entry *e = &k->e[k->n];
        e->key = malloc(fl[0] + 1);
        if (!e->key) {
            snprintf(err, errsz, "%s: out of memory", path);
            ok = false;
            break;
        }
        memcpy(e->key, fld[0], fl[0]);
        e->key[fl[0]] = '\0';
        e->len = fl[0];
        memcpy(e->tenant, fld[1], fl[1]);
        e->tenant[fl[1]] = '\0';
        k->n++;
    }
    if (ok && ferror(f)) {
        snprintf(err, errsz, "%s: read error", path);
        ok = false;
    }
    if (line) {
        memset(line, 0, cap);
        free(line);
    }
    fclose(f);
    if (!ok) {
        ts_apikeys_free(k);
        return NULL;
    }
    return k;
}

bool ts_apikeys_lookup(const ts_apikeys *k, const char *key, size_t key_len,
                       char tenant[TS_TENANT_MAX]) {
    bool found = false;
    for (size_t i = 0; k && i < k->n; i++)
        if (ct_equal(k->e[i].key, k->e[i].len, key, key_len) && !found) {
            memcpy(tenant, k->e[i].tenant, TS_TENANT_MAX);
            found = true;
        }
    return found;
}
