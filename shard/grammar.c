/* grammar.c: JSON Schema -> grammar compiler, byte matcher and token mask (see grammar.h). */
#include "grammar.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"

/* ---- compiled form ---- */

enum {
    K_ANY = 0, /* any JSON value (dispatch on the first byte) */
    K_OBJECT,
    K_ARRAY,
    K_STRING,
    K_NUMBER,
    K_INTEGER,
    K_LITSET, /* one of a sorted set of literal texts */
    K_UNION,  /* alternatives (flattened: none is a union) */
    K_REF,    /* during compilation only: alias of another node */
};
#define NONE UINT32_MAX
#define UNBOUNDED UINT32_MAX

typedef struct {
    uint8_t kind;
    uint32_t first, n;      /* OBJECT: props; LITSET: lits; UNION: alts */
    uint32_t sub;           /* OBJECT: additional node or NONE; ARRAY: items; REF: target */
    uint32_t lo, hi;        /* ARRAY: min/maxItems; STRING: min/maxLength */
    uint64_t required;      /* OBJECT: bit i = props[first + i] required */
} gnode;

typedef struct {
    uint32_t off, len; /* name in the arena (raw bytes; no escaping needed) */
    uint32_t node;
} gprop;

typedef struct {
    uint32_t off, len;
} glit;

struct ts_grammar {
    gnode *nodes;
    uint32_t n_nodes, cap_nodes;
    gprop *props;
    uint32_t n_props, cap_props;
    glit *lits;
    uint32_t n_lits, cap_lits;
    uint32_t *alts;
    uint32_t n_alts, cap_alts;
    char *arena;
    size_t n_arena, cap_arena;
    uint32_t root;
    uint32_t any_obj, any_arr, any_str, any_num, any_bool, any_null, any; /* built-ins */
    int max_ws;
};

/* ---- growing arrays ---- */

static bool grow(void **p, uint32_t *cap, uint32_t need, size_t elem) {
    if (need <= *cap) return true;
    uint32_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    void *q = ts_realloc(*p, (size_t)nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

static uint32_t new_node(ts_grammar *g, uint8_t kind) {
    if (g->n_nodes >= TS_GRAMMAR_MAX_NODES) return NONE;
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(gnode))) return NONE;
    gnode *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->sub = NONE;
    return g->n_nodes++;
}

static bool arena_add(ts_grammar *g, const char *s, size_t len, uint32_t *off) {
    if (len > TS_GRAMMAR_MAX_SCHEMA || g->n_arena + len > TS_GRAMMAR_MAX_SCHEMA * 4) return false;
    if (g->n_arena + len > g->cap_arena) {
        size_t nc = g->cap_arena ? g->cap_arena : 256;
        while (nc < g->n_arena + len) nc *= 2;
        char *q = ts_realloc(g->arena, nc);
        if (!q) return false;
        g->arena = q;
        g->cap_arena = nc;
    }
    if (len) memcpy(g->arena + g->n_arena, s, len);
    *off = (uint32_t)g->n_arena;
    g->n_arena += len;
    return true;
}

static const char *lit_s(const ts_grammar *g, uint32_t i) { return g->arena + g->lits[i].off; }
static uint32_t lit_n(const ts_grammar *g, uint32_t i) { return g->lits[i].len; }

static int lit_cmp(const ts_grammar *g, const glit *a, const glit *b) {
    uint32_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(g->arena + a->off, g->arena + b->off, n);
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* insertion sort + dedupe of lits[first, first+n): small sets */
static uint32_t lits_sort(ts_grammar *g, uint32_t first, uint32_t n) {
    glit *l = g->lits + first;
    for (uint32_t i = 1; i < n; i++) {
        glit x = l[i];
        uint32_t j = i;
        while (j > 0 && lit_cmp(g, &l[j - 1], &x) > 0) {
            l[j] = l[j - 1];
            j--;
        }
        l[j] = x;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (k == 0 || lit_cmp(g, &l[k - 1], &l[i]) != 0) l[k++] = l[i];
    return k;
}

static uint32_t litset_node(ts_grammar *g, const char *const *s, const size_t *len, size_t n) {
    if (g->n_lits + n > TS_GRAMMAR_MAX_LITS) return NONE;
    if (!grow((void **)&g->lits, &g->cap_lits, g->n_lits + (uint32_t)n, sizeof(glit))) return NONE;
    uint32_t first = g->n_lits;
    for (size_t i = 0; i < n; i++) {
        uint32_t off;
        if (!arena_add(g, s[i], len[i], &off)) return NONE;
        g->lits[g->n_lits++] = (glit){off, (uint32_t)len[i]};
    }
    uint32_t id = new_node(g, K_LITSET);
    if (id == NONE) return NONE;
    g->nodes[id].first = first;
    g->nodes[id].n = lits_sort(g, first, (uint32_t)n);
    g->n_lits = first + g->nodes[id].n;
    return id;
}

static ts_grammar *grammar_alloc(int max_ws) {
    ts_grammar *g = ts_calloc(1, sizeof *g);
    if (!g) return NULL;
    g->max_ws = max_ws < 0 ? TS_GRAMMAR_DEFAULT_WS : max_ws > 255 ? 255 : max_ws;
    static const char *const tf[] = {"false", "true"}, *const nl[] = {"null"};
    static const size_t tfl[] = {5, 4}, nll[] = {4};
    g->any = new_node(g, K_ANY);
    g->any_obj = new_node(g, K_OBJECT);
    g->any_arr = new_node(g, K_ARRAY);
    g->any_str = new_node(g, K_STRING);
    g->any_num = new_node(g, K_NUMBER);
    g->any_bool = litset_node(g, tf, tfl, 2);
    g->any_null = litset_node(g, nl, nll, 1);
    if (g->any_null == NONE) {
        ts_grammar_free(g);
        return NULL;
    }
    g->nodes[g->any_obj].sub = g->any;
    g->nodes[g->any_arr].sub = g->any;
    g->nodes[g->any_arr].hi = UNBOUNDED;
    g->nodes[g->any_str].hi = UNBOUNDED;
    return g;
}

void ts_grammar_free(ts_grammar *g) {
    if (!g) return;
    ts_free(g->nodes);
    ts_free(g->props);
    ts_free(g->lits);
    ts_free(g->alts);
    ts_free(g->arena);
    ts_free(g);
}

/* ---- JSON Schema compiler ---- */

#define MAX_SCHEMA_DEPTH 64
#define MAX_MEMO 4096

typedef struct {
    ts_grammar *g;
    json_t *root;
    const json_t *memo_key[MAX_MEMO];
    uint32_t memo_id[MAX_MEMO]; /* NONE = alias being resolved */
    uint32_t n_memo;
    char path[512]; /* JSON pointer of the schema being compiled */
    int ref_hops;
} cctx;

static ts_status cfail(cctx *c, const char *fmt, const char *a, const char *b) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, a, b);
    return TS_FAIL(TS_INVAL, "%s at %s", msg, c->path[0] ? c->path : "#");
}

static size_t path_push(cctx *c, const char *seg) {
    size_t old = strlen(c->path);
    if (!old) {
        c->path[0] = '#';
        c->path[1] = 0;
        old = 0;
    }
    size_t cur = strlen(c->path);
    snprintf(c->path + cur, sizeof c->path - cur, "/%s", seg);
    return old;
}
static void path_pop(cctx *c, size_t old) { c->path[old] = 0; }

static ts_status compile(cctx *c, json_t *s, int depth, uint32_t *out);

static const char *const k_ignored[] = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "format",
    "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "$anchor", NULL};
static const char *const k_known[] = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "oneOf", "minItems", "maxItems", "minLength", "maxLength", "$ref", NULL};

static bool in_list(const char *k, const char *const *l) {
    for (; *l; l++)
        if (!strcmp(k, *l)) return true;
    return false;
}

static ts_status get_count(cctx *c, json_t *s, const char *key, uint32_t dflt, uint32_t *out) {
    json_t *v = json_object_get(s, key);
    *out = dflt;
    if (!v) return TS_OK;
    double x;
    if (json_is_integer(v)) x = (double)json_integer_value(v);
    else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v)) x = json_real_value(v);
    else return cfail(c, "'%s' must be a non-negative integer%s", key, "");
    if (x < 0 || x > 1e6) return cfail(c, "'%s' must be in [0, 1000000]%s", key, "");
    *out = (uint32_t)x;
    return TS_OK;
}

/* JSON type of an enum value against a type mask */
enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_NUM = 8, T_INT = 16, T_BOOL = 32, T_NULL = 64 };

static unsigned type_of(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return T_OBJ;
    case JSON_ARRAY: return T_ARR;
    case JSON_STRING: return T_STR;
    case JSON_INTEGER: return T_INT | T_NUM;
    case JSON_REAL: return floor(json_real_value(v)) == json_real_value(v) ? (T_INT | T_NUM) : T_NUM;
    case JSON_TRUE: case JSON_FALSE: return T_BOOL;
    default: return T_NULL;
    }
}

static ts_status parse_types(cctx *c, json_t *t, unsigned *mask) {
    static const char *const names[] = {"object", "array", "string", "number", "integer",
                                        "boolean", "null"};
    *mask = 0;
    json_t *one;
    size_t i, n = json_is_array(t) ? json_array_size(t) : 1;
    if (!json_is_array(t) && !json_is_string(t))
        return cfail(c, "'type' must be a string or an array of strings%s%s", "", "");
    if (n == 0) return cfail(c, "'type' must not be empty%s%s", "", "");
    for (i = 0; i < n; i++) {
        one = json_is_array(t) ? json_array_get(t, i) : t;
        if (!json_is_string(one)) return cfail(c, "'type' entries must be strings%s%s", "", "");
        size_t k;
        for (k = 0; k < 7; k++)
            if (!strcmp(json_string_value(one), names[k])) break;
        if (k == 7) return cfail(c, "unknown type '%s'%s", json_string_value(one), "");
        *mask |= 1u << k;
    }
    return TS_OK;
}

static ts_status resolve_ref(cctx *c, const char *ref, json_t **target) {
    if (!strcmp(ref, "#")) {
        *target = c->root;
        return TS_OK;
    }
    const char *name = NULL, *kw = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) kw = "$defs", name = ref + 8;
    else if (!strncmp(ref, "#/definitions/", 14)) kw = "definitions", name = ref + 14;
    if (!name || !*name || strchr(name, '/') || strchr(name, '~'))
        return cfail(c, "$ref '%s' is not supported (only '#', '#/$defs/NAME', "
                        "'#/definitions/NAME')%s", ref, "");
    json_t *defs = json_object_get(c->root, kw);
    json_t *t = defs ? json_object_get(defs, name) : NULL;
    if (!t) return cfail(c, "$ref '%s' does not resolve%s", ref, "");
    *target = t;
    return TS_OK;
}

static ts_status compile_object(cctx *c, json_t *s, int depth, uint32_t id) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    ts_grammar *g = c->g;
    if (props && !json_is_object(props)) return cfail(c, "'properties' must be an object%s%s", "", "");
    if (req && !json_is_array(req)) return cfail(c, "'required' must be an array%s%s", "", "");
    size_t np = props ? json_object_size(props) : 0, nr = req ? json_array_size(req) : 0;
    if (np + nr > TS_GRAMMAR_MAX_PROPS)
        return cfail(c, "too many properties (at most %s)%s", "64", "");
    /* additional: absent -> allowed only when no properties are declared */
    uint32_t add = NONE;
    if (addl && json_is_false(addl)) add = NONE;
    else if (addl && json_is_true(addl)) add = g->any;
    else if (addl) {
        size_t o = path_push(c, "additionalProperties");
        ts_status rc = compile(c, addl, depth + 1, &add);
        path_pop(c, o);
        if (rc) return rc;
    } else if (!props) add = g->any;
    /* names: declared properties, then required names not declared (they take `add`) */
    const char *names[TS_GRAMMAR_MAX_PROPS];
    uint32_t nodes[TS_GRAMMAR_MAX_PROPS];
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(props, key, v) {
        for (const char *p = key; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                return cfail(c, "property name '%s' needs escaping (not supported)%s", key, "");
        char seg[128];
        snprintf(seg, sizeof seg, "properties/%s", key);
        size_t o = path_push(c, seg);
        ts_status rc = compile(c, v, depth + 1, &nodes[n]);
        path_pop(c, o);
        if (rc) return rc;
        names[n++] = key;
    }
    uint64_t reqmask = 0;
    for (size_t i = 0; i < nr; i++) {
        json_t *r = json_array_get(req, i);
        if (!json_is_string(r)) return cfail(c, "'required' entries must be strings%s%s", "", "");
        size_t k;
        for (k = 0; k < n; k++)
            if (!strcmp(names[k], json_string_value(r))) break;
        if (k == n) {
            if (add == NONE)
                return cfail(c, "required property '%s' is not allowed by 'properties' / "
                                "'additionalProperties' (unsatisfiable)%s", json_string_value(r), "");
            for (const char *p = json_string_value(r); *p; p++)
                if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                    return cfail(c, "property name '%s' needs escaping (not supported)%s",
                                 json_string_value(r), "");
            names[n] = json_string_value(r);
            nodes[n++] = add;
        }
        reqmask |= 1ull << k;
    }
    /* sort by name (byte order), carrying the required bits */
    bool rq[TS_GRAMMAR_MAX_PROPS];
    for (size_t i = 0; i < n; i++) rq[i] = (reqmask >> i) & 1;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *tn = names[j]; names[j] = names[j - 1]; names[j - 1] = tn;
            uint32_t tnode = nodes[j]; nodes[j] = nodes[j - 1]; nodes[j - 1] = tnode;
            bool tr = rq[j]; rq[j] = rq[j - 1]; rq[j - 1] = tr;
        }
    if (!grow((void **)&g->props, &g->cap_props, g->n_props + (uint32_t)n, sizeof(gprop)))
        return TS_FAIL(TS_NOMEM, "json_schema: properties");
    uint32_t first = g->n_props;
    reqmask = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t off;
        if (!arena_add(g, names[i], strlen(names[i]), &off)) return TS_FAIL(TS_NOMEM, "json_schema");
        g->props[g->n_props++] = (gprop){off, (uint32_t)strlen(names[i]), nodes[i]};
        if (rq[i]) reqmask |= 1ull << i;
    }
    gnode *nd = &g->nodes[id];
    nd->kind = K_OBJECT;
    nd->first = first;
    nd->n = (uint32_t)n;
    nd->sub = add;
    nd->required = reqmask;
    return TS_OK;
}

static ts_status compile_type(cctx *c, json_t *s, int depth, unsigned t, uint32_t id) {
    ts_grammar *g = c->g;
    gnode *nd;
    switch (t) {
    case T_OBJ: return compile_object(c, s, depth, id);
    case T_ARR: {
        json_t *it = json_object_get(s, "items");
        uint32_t item = g->any, lo, hi;
        if (it && json_is_array(it))
            return cfail(c, "'items' as an array (tuple validation) is not supported%s%s", "", "");
        if (it && json_is_false(it)) {
            item = NONE;
        } else if (it) {
            size_t o = path_push(c, "items");
            ts_status rc = compile(c, it, depth + 1, &item);
            path_pop(c, o);
            if (rc) return rc;
        }
        TS_TRY(get_count(c, s, "minItems", 0, &lo));
        TS_TRY(get_count(c, s, "maxItems", UNBOUNDED, &hi));
        if (item == NONE) hi = 0;
        if (lo > hi) return cfail(c, "minItems is above maxItems (unsatisfiable)%s%s", "", "");
        nd = &g->nodes[id];
        nd->kind = K_ARRAY;
        nd->sub = item;
        nd->lo = lo;
        nd->hi = hi;
        return TS_OK;
    }
    case T_STR: {
        uint32_t lo, hi;
        TS_TRY(get_count(c, s, "minLength", 0, &lo));
        TS_TRY(get_count(c, s, "maxLength", UNBOUNDED, &hi));
        if (lo > hi) return cfail(c, "minLength is above maxLength (unsatisfiable)%s%s", "", "");
        nd = &g->nodes[id];
        nd->kind = K_STRING;
        nd->lo = lo;
        nd->hi = hi;
        return TS_OK;
    }
    case T_NUM: g->nodes[id].kind = K_NUMBER; return TS_OK;
    case T_INT: g->nodes[id].kind = K_INTEGER; return TS_OK;
    case T_BOOL: case T_NULL: {
        uint32_t src = t == T_BOOL ? g->any_bool : g->any_null;
        g->nodes[id] = g->nodes[src];
        return TS_OK;
    }
    }
    return TS_FAIL(TS_INTERNAL, "json_schema: type %u", t);
}

static ts_status compile_literals(cctx *c, json_t *vals, unsigned types, uint32_t id) {
    size_t n = json_array_size(vals);
    if (n == 0) return cfail(c, "'enum' must not be empty%s%s", "", "");
    if (n > TS_GRAMMAR_MAX_LITS) return cfail(c, "'enum' has too many values%s%s", "", "");
    char **txt = ts_calloc(n, sizeof *txt);
    size_t *len = ts_calloc(n, sizeof *len);
    ts_status rc = TS_OK;
    size_t k = 0;
    if (!txt || !len) {
        rc = TS_FAIL(TS_NOMEM, "json_schema: enum");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(vals, i);
        if (types && !(type_of(v) & types)) continue;
        txt[k] = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!txt[k]) {
            rc = TS_FAIL(TS_NOMEM, "json_schema: enum value");
            goto out;
        }
        len[k] = strlen(txt[k]);
        if (len[k] > 4096) {
            k++;
            rc = cfail(c, "an 'enum'/'const' value is longer than 4096 bytes%s%s", "", "");
            goto out;
        }
        k++;
    }
    if (k == 0) {
        rc = cfail(c, "no 'enum'/'const' value has the schema's 'type' (unsatisfiable)%s%s", "", "");
        goto out;
    }
    uint32_t lid = litset_node(c->g, (const char *const *)txt, len, k);
    if (lid == NONE) {
        rc = cfail(c, "too many 'enum' values in the schema%s%s", "", "");
        goto out;
    }
    c->g->nodes[id] = c->g->nodes[lid];
out:
    for (size_t i = 0; txt && i < k; i++) free(txt[i]);
    ts_free(txt);
    ts_free(len);
    return rc;
}

static ts_status compile(cctx *c, json_t *s, int depth, uint32_t *out) {
    ts_grammar *g = c->g;
    if (depth > MAX_SCHEMA_DEPTH) return cfail(c, "schema nested too deeply (over %s levels)%s", "64", "");
    if (json_is_true(s)) {
        *out = g->any;
        return TS_OK;
    }
    if (json_is_false(s)) return cfail(c, "schema 'false' accepts nothing%s%s", "", "");
    if (!json_is_object(s)) return cfail(c, "a schema must be an object or a boolean%s%s", "", "");
    for (uint32_t i = 0; i < c->n_memo; i++)
        if (c->memo_key[i] == s) {
            if (c->memo_id[i] == NONE)
                return cfail(c, "$ref cycle with no structure in between%s%s", "", "");
            *out = c->memo_id[i];
            return TS_OK;
        }
    if (c->n_memo >= MAX_MEMO) return cfail(c, "schema too large%s%s", "", "");
    const char *key;
    json_t *v;
    json_object_foreach(s, key, v) {
        if (in_list(key, k_ignored)) continue;
        if (!in_list(key, k_known)) return cfail(c, "unsupported keyword '%s'%s", key, "");
    }
    uint32_t mi = c->n_memo++;
    c->memo_key[mi] = s;
    c->memo_id[mi] = NONE;
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        json_object_foreach(s, key, v)
            if (strcmp(key, "$ref") && !in_list(key, k_ignored))
                return cfail(c, "keyword '%s' next to '$ref' is not supported%s", key, "");
        if (!json_is_string(ref)) return cfail(c, "'$ref' must be a string%s%s", "", "");
        json_t *t = NULL;
        TS_TRY(resolve_ref(c, json_string_value(ref), &t));
        if (++c->ref_hops > 10000) return cfail(c, "too many $ref%s%s", "", "");
        char save[sizeof c->path];
        memcpy(save, c->path, sizeof save);
        snprintf(c->path, sizeof c->path, "%s", json_string_value(ref));
        ts_status rc = compile(c, t, depth + 1, out);
        memcpy(c->path, save, sizeof save);
        if (rc) return rc;
        c->memo_id[mi] = *out;
        return TS_OK;
    }
    uint32_t id = new_node(g, K_ANY);
    if (id == NONE) return cfail(c, "schema too large (over %s nodes)%s", "4096", "");
    c->memo_id[mi] = id;
    *out = id;
    json_t *any = json_object_get(s, "anyOf"), *one = json_object_get(s, "oneOf");
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    json_t *ty = json_object_get(s, "type");
    unsigned types = 0;
    if (ty) TS_TRY(parse_types(c, ty, &types));
    if (any || one) {
        const char *kw = any ? "anyOf" : "oneOf";
        json_t *alts = any ? any : one;
        if (any && one) return cfail(c, "'anyOf' together with 'oneOf' is not supported%s%s", "", "");
        json_object_foreach(s, key, v)
            if (strcmp(key, kw) && !in_list(key, k_ignored))
                return cfail(c, "keyword '%s' next to '%s' is not supported", key, kw);
        if (!json_is_array(alts) || json_array_size(alts) == 0)
            return cfail(c, "'%s' must be a non-empty array%s", kw, "");
        size_t na = json_array_size(alts);
        if (na > TS_GRAMMAR_MAX_ALTS) return cfail(c, "'%s' has more than %s alternatives", kw, "16");
        uint32_t ids[TS_GRAMMAR_MAX_ALTS];
        for (size_t i = 0; i < na; i++) {
            char seg[32];
            snprintf(seg, sizeof seg, "%s/%zu", kw, i);
            size_t o = path_push(c, seg);
            ts_status rc = compile(c, json_array_get(alts, i), depth + 1, &ids[i]);
            path_pop(c, o);
            if (rc) return rc;
        }
        if (!grow((void **)&g->alts, &g->cap_alts, g->n_alts + (uint32_t)na, sizeof(uint32_t)))
            return TS_FAIL(TS_NOMEM, "json_schema");
        gnode *nd = &g->nodes[id];
        nd->kind = K_UNION;
        nd->first = g->n_alts;
        nd->n = (uint32_t)na;
        memcpy(g->alts + g->n_alts, ids, na * sizeof(uint32_t));
        g->n_alts += (uint32_t)na;
        return TS_OK;
    }
    if (en || cn) {
        if (en && cn) return cfail(c, "'enum' together with 'const' is not supported%s%s", "", "");
        if (en && !json_is_array(en)) return cfail(c, "'enum' must be an array%s%s", "", "");
        json_t *arr = en;
        if (cn) {
            arr = json_array();
            if (!arr || json_array_append(arr, cn)) {
                json_decref(arr);
                return TS_FAIL(TS_NOMEM, "json_schema");
            }
        }
        unsigned tm = types;
        if (tm & (1u << 3)) tm |= 1u << 4; /* number includes integer */
        unsigned jm = 0;
        if (tm & 1) jm |= T_OBJ;
        if (tm & 2) jm |= T_ARR;
        if (tm & 4) jm |= T_STR;
        if (tm & 8) jm |= T_NUM;
        if (tm & 16) jm |= T_INT;
        if (tm & 32) jm |= T_BOOL;
        if (tm & 64) jm |= T_NULL;
        ts_status rc = compile_literals(c, arr, jm, id);
        if (cn) json_decref(arr);
        return rc;
    }
    if (!ty) { /* infer the type from the keywords present */
        if (json_object_get(s, "properties") || json_object_get(s, "required") ||
            json_object_get(s, "additionalProperties"))
            types = 1;
        else if (json_object_get(s, "items") || json_object_get(s, "minItems") ||
                 json_object_get(s, "maxItems"))
            types = 2;
        else if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
            types = 4;
        else
            return TS_OK; /* K_ANY */
    }
    if (types & 8) types &= ~16u; /* number covers integer */
    static const unsigned tbit[] = {T_OBJ, T_ARR, T_STR, T_NUM, T_INT, T_BOOL, T_NULL};
    unsigned nt = 0;
    for (int k = 0; k < 7; k++) nt += (types >> k) & 1;
    if (nt == 1) {
        for (int k = 0; k < 7; k++)
            if (types & (1u << k)) return compile_type(c, s, depth, tbit[k], id);
    }
    uint32_t ids[7], na = 0;
    for (int k = 0; k < 7; k++)
        if (types & (1u << k)) {
            uint32_t sub = new_node(g, K_ANY);
            if (sub == NONE) return cfail(c, "schema too large (over %s nodes)%s", "4096", "");
            TS_TRY(compile_type(c, s, depth, tbit[k], sub));
            ids[na++] = sub;
        }
    if (!grow((void **)&g->alts, &g->cap_alts, g->n_alts + na, sizeof(uint32_t)))
        return TS_FAIL(TS_NOMEM, "json_schema");
    gnode *nd = &g->nodes[id];
    nd->kind = K_UNION;
    nd->first = g->n_alts;
    nd->n = na;
    memcpy(g->alts + g->n_alts, ids, na * sizeof(uint32_t));
    g->n_alts += na;
    return TS_OK;
}

/* Flattens unions (an alternative that is a union is replaced by its alternatives);
 * refuses cycles made only of unions and too many alternatives. */
static ts_status flatten(ts_grammar *g, uint32_t id, uint32_t *buf, uint32_t *n, int depth) {
    const gnode *nd = &g->nodes[id];
    if (nd->kind != K_UNION) {
        for (uint32_t i = 0; i < *n; i++)
            if (buf[i] == id) return TS_OK;
        if (*n >= TS_GRAMMAR_MAX_ALTS)
            return TS_FAIL(TS_INVAL, "nested anyOf/oneOf/type arrays give more than "
                                     "%d alternatives", TS_GRAMMAR_MAX_ALTS);
        buf[(*n)++] = id;
        return TS_OK;
    }
    if (depth > 16)
        return TS_FAIL(TS_INVAL, "anyOf/oneOf refers back to itself with no "
                                 "structure in between");
    for (uint32_t i = 0; i < nd->n; i++) TS_TRY(flatten(g, g->alts[nd->first + i], buf, n, depth + 1));
    return TS_OK;
}

static ts_status finish_unions(ts_grammar *g) {
    uint32_t n_nodes = g->n_nodes;
    for (uint32_t id = 0; id < n_nodes; id++) {
        if (g->nodes[id].kind != K_UNION) continue;
        uint32_t buf[TS_GRAMMAR_MAX_ALTS], n = 0;
        TS_TRY(flatten(g, id, buf, &n, 0));
        bool changed = n != g->nodes[id].n;
        for (uint32_t i = 0; !changed && i < n; i++) changed = buf[i] != g->alts[g->nodes[id].first + i];
        if (!changed) continue;
        if (!grow((void **)&g->alts, &g->cap_alts, g->n_alts + n, sizeof(uint32_t)))
            return TS_FAIL(TS_NOMEM, "json_schema");
        g->nodes[id].first = g->n_alts;
        g->nodes[id].n = n;
        memcpy(g->alts + g->n_alts, buf, n * sizeof(uint32_t));
        g->n_alts += n;
    }
    /* a union whose alternatives contain ANY is just ANY (the frames would duplicate) */
    return TS_OK;
}

ts_status ts_grammar_from_json_schema(const char *text, size_t len, int max_ws, ts_grammar **out) {
    *out = NULL;
    if (!text) return TS_FAIL(TS_INVAL, "NULL");
    if (len > TS_GRAMMAR_MAX_SCHEMA)
        return TS_FAIL(TS_INVAL, "%zu bytes (at most %u)", len, TS_GRAMMAR_MAX_SCHEMA);
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!root)
        return TS_FAIL(TS_INVAL, "not valid JSON: %s (line %d, column %d)", err.text,
                       err.line, err.column);
    cctx *c = ts_calloc(1, sizeof *c);
    ts_grammar *g = grammar_alloc(max_ws);
    ts_status rc;
    if (!c || !g) {
        rc = TS_FAIL(TS_NOMEM, "json_schema");
        goto fail;
    }
    c->g = g;
    c->root = root;
    TS_TRY_GOTO(compile(c, root, 0, &g->root), rc, fail);
    TS_TRY_GOTO(finish_unions(g), rc, fail);
    json_decref(root);
    ts_free(c);
    *out = g;
    return TS_OK;
fail:
    json_decref(root);
    ts_free(c);
    ts_grammar_free(g);
    return rc;
}

ts_status ts_grammar_json_object(int max_ws, ts_grammar **out) {
    *out = grammar_alloc(max_ws);
    if (!*out) return TS_FAIL(TS_NOMEM, "grammar");
    (*out)->root = (*out)->any_obj;
    return TS_OK;
}

ts_status ts_grammar_choice(const char *const *opts, size_t n, ts_grammar **out) {
    *out = NULL;
    if (n == 0) return TS_FAIL(TS_INVAL, "choice.options: must not be empty");
    if (n > TS_GRAMMAR_MAX_LITS) return TS_FAIL(TS_INVAL, "choice.options: at most %d", TS_GRAMMAR_MAX_LITS);
    size_t *len = ts_calloc(n, sizeof *len);
    if (!len) return TS_FAIL(TS_NOMEM, "choice");
    for (size_t i = 0; i < n; i++) {
        len[i] = strlen(opts[i]);
        if (len[i] == 0 || len[i] > 4096) {
            ts_free(len);
            return TS_FAIL(TS_INVAL, "choice.options[%zu]: length must be 1..4096 bytes", i);
        }
    }
    ts_grammar *g = grammar_alloc(0);
    uint32_t id = g ? litset_node(g, opts, len, n) : NONE;
    ts_free(len);
    if (id == NONE) {
        ts_grammar_free(g);
        return TS_FAIL(TS_NOMEM, "choice");
    }
    g->root = id;
    *out = g;
    return TS_OK;
}

/* ---- the matcher ---- */

enum { F_ROOT = 100, F_KEY = 101 }; /* frame kinds besides node kinds */

typedef struct {
    uint32_t node;
    uint8_t kind, st, ws, x;
    uint32_t a, b;
    uint64_t c;
} gframe;

#define MAXD TS_GRAMMAR_MAX_DEPTH
#define MAXS TS_GRAMMAR_MAX_STACKS

typedef struct {
    uint16_t nf;
    uint8_t ns, pad;
    uint8_t len[MAXS];
    gframe f[MAXS * MAXD];
} gstate;

#define STATE_BYTES(s) (offsetof(gstate, f) + (size_t)(s)->nf * sizeof(gframe))

enum { R_REJECT, R_OK, R_POP_OK, R_POP_RETRY, R_PUSH };

static bool is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

/* UTF-8 continuation: x = bytes still needed, ws = range code of the next byte */
static int utf8_lead(uint8_t c, uint8_t *need, uint8_t *rng) {
    if (c >= 0xC2 && c <= 0xDF) { *need = 1; *rng = 0; return 1; }
    if (c == 0xE0) { *need = 2; *rng = 1; return 1; }
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) { *need = 2; *rng = 0; return 1; }
    if (c == 0xED) { *need = 2; *rng = 2; return 1; }
    if (c == 0xF0) { *need = 3; *rng = 3; return 1; }
    if (c >= 0xF1 && c <= 0xF3) { *need = 3; *rng = 0; return 1; }
    if (c == 0xF4) { *need = 3; *rng = 4; return 1; }
    return 0;
}
static bool utf8_cont(uint8_t c, uint8_t rng) {
    static const uint8_t lo[] = {0x80, 0xA0, 0x80, 0x90, 0x80}, hi[] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
    return c >= lo[rng] && c <= hi[rng];
}

static bool key_available(const ts_grammar *g, const gnode *o, uint64_t seen) {
    if (o->sub != NONE) return true;
    uint64_t all = o->n == 64 ? ~0ull : ((1ull << o->n) - 1);
    return (seen & all) != all;
}

static bool required_met(const gnode *o, uint64_t seen) { return (o->required & ~seen) == 0; }

/* literal-set narrowing: the sub-range of [lo,hi) whose byte at p is c */
static void lit_narrow(const ts_grammar *g, uint32_t first, uint32_t *lo, uint32_t *hi, uint32_t p,
                       uint8_t c) {
    uint32_t a = *lo, b = *hi;
    /* key(i) = len > p ? byte[p] : -1, non-decreasing over the range */
    uint32_t l = a, h = b;
    while (l < h) {
        uint32_t m = l + (h - l) / 2;
        int k = lit_n(g, first + m) > p ? (uint8_t)lit_s(g, first + m)[p] : -1;
        if (k < c) l = m + 1;
        else h = m;
    }
    uint32_t s = l;
    h = b;
    while (l < h) {
        uint32_t m = l + (h - l) / 2;
        int k = lit_n(g, first + m) > p ? (uint8_t)lit_s(g, first + m)[p] : -1;
        if (k <= c) l = m + 1;
        else h = m;
    }
    *lo = s;
    *hi = l;
}

/* key names: sorted props of an object, matched like a literal set, skipping seen ones */
static bool key_lit_alive(const ts_grammar *g, const gnode *o, uint32_t lo, uint32_t hi, uint64_t seen) {
    for (uint32_t i = lo; i < hi; i++)
        if (!((seen >> i) & 1)) return true;
    (void)g;
    (void)o;
    return false;
}

static void key_narrow(const ts_grammar *g, const gnode *o, uint32_t *lo, uint32_t *hi, uint32_t p,
                       uint8_t c) {
    uint32_t l = *lo, h = *hi, nlo = h, nhi = h;
    for (uint32_t i = l; i < h; i++) { /* at most 64 */
        const gprop *pr = &g->props[o->first + i];
        bool m = pr->len > p && (uint8_t)g->arena[pr->off + p] == c;
        if (m && nlo == h) nlo = i;
        if (m) nhi = i + 1;
    }
    if (nlo == h) nlo = nhi = 0;
    *lo = nlo;
    *hi = nhi;
}

static void frame_init(gframe *f, const ts_grammar *g, uint32_t node) {
    memset(f, 0, sizeof *f);
    f->node = node;
    f->kind = g->nodes[node].kind;
    if (f->kind == K_LITSET) {
        f->a = 0;
        f->b = g->nodes[node].n;
    }
}

static bool frame_endable(const ts_grammar *g, const gframe *f) {
    if (f->kind == K_NUMBER || f->kind == K_INTEGER) return f->st == 2 || f->st == 3 || f->st == 5 || f->st == 8;
    if (f->kind == K_LITSET) {
        const gnode *n = &g->nodes[f->node];
        return f->a < f->b && lit_n(g, n->first + f->a) == f->c;
    }
    return false;
}

/* One byte into the top frame f (parent: the frame below, or NULL).
 * *push: node to push for R_PUSH (with *push_key true: a key frame of object f->node). */
static int step_frame(const ts_grammar *g, gframe *f, gframe *parent, uint8_t c, uint32_t *push,
                      bool *push_key) {
    const gnode *n = f->kind == F_ROOT ? NULL : &g->nodes[f->node];
    *push_key = false;
    switch (f->kind) {
    case F_ROOT:
        if (f->st != 0) return R_REJECT;
        f->st = 1;
        *push = g->root;
        return R_PUSH;
    case K_OBJECT:
        switch (f->st) {
        case 0:
            if (c != '{') return R_REJECT;
            f->st = 1;
            return R_OK;
        case 1: case 4: case 5: /* after '{' / after a value / after ',' */
            if (is_ws(c)) {
                if (f->ws >= g->max_ws) return R_REJECT;
                f->ws++;
                return R_OK;
            }
            if (c == '"' && f->st != 4 && key_available(g, n, f->c)) {
                f->ws = 0;
                f->st = 2;
                *push = f->node;
                *push_key = true;
                return R_PUSH;
            }
            if (c == '}' && f->st != 5 && required_met(n, f->c)) return R_POP_OK;
            if (c == ',' && f->st == 4 && key_available(g, n, f->c)) {
                f->ws = 0;
                f->st = 5;
                return R_OK;
            }
            return R_REJECT;
        case 2: /* after the key: ':' */
            if (is_ws(c)) {
                if (f->ws >= g->max_ws) return R_REJECT;
                f->ws++;
                return R_OK;
            }
            if (c != ':') return R_REJECT;
            f->ws = 0;
            f->st = 3;
            return R_OK;
        case 3: /* the value */
            if (is_ws(c)) {
                if (f->ws >= g->max_ws) return R_REJECT;
                f->ws++;
                return R_OK;
            }
            f->ws = 0;
            f->st = 4;
            *push = f->a == NONE ? n->sub : g->props[n->first + f->a].node;
            return R_PUSH;
        }
        return R_REJECT;
    case F_KEY: {
        /* node: the object; a,b: candidate range; c: position; st bit0 lit path alive
         * (implied by a < b), bit1 other-key path alive; x/ws: UTF-8 state of the other path */
        const gnode *o = &g->nodes[f->node];
        if (f->st == 0) {
            if (c != '"') return R_REJECT;
            f->st = 1 | (o->sub != NONE ? 2 : 0);
            f->a = 0;
            f->b = o->n;
            return R_OK;
        }
        uint64_t seen = parent->c;
        if (c == '"' && f->x == 0) {
            /* close: an exact declared name (unseen), else another key */
            uint32_t lo = f->a, hi = f->b;
            bool exact = lo < hi && g->props[o->first + lo].len == f->c;
            if (exact) {
                if ((seen >> lo) & 1) return R_REJECT;
                parent->c |= 1ull << lo;
                parent->a = lo;
                return R_POP_OK;
            }
            if (!(f->st & 2)) return R_REJECT;
            parent->a = NONE;
            return R_POP_OK;
        }
        bool other = f->st & 2;
        if (other) {
            if (f->x) {
                if (!utf8_cont(c, f->ws)) other = false;
                else {
                    f->x--;
                    f->ws = 0;
                }
            } else if (c < 0x20 || c == '\\') {
                other = false;
            } else if (c >= 0x80) {
                if (!utf8_lead(c, &f->x, &f->ws)) other = false;
            }
        }
        uint32_t lo = f->a, hi = f->b;
        if (lo < hi) key_narrow(g, o, &lo, &hi, (uint32_t)f->c, c);
        /* the range is kept while it is not empty (a seen name must still be recognised
         * at the closing quote, to refuse the duplicate); it only keeps the key alive while
         * an unseen name is in it */
        bool lit = lo < hi && key_lit_alive(g, o, lo, hi, seen);
        if (!lit && !other) return R_REJECT;
        f->a = lo < hi ? lo : 0;
        f->b = lo < hi ? hi : 0;
        f->st = (uint8_t)(1 | (other ? 2 : 0));
        if (!other) {
            f->x = 0;
            f->ws = 0;
        }
        f->c++;
        if (!other && f->c > 4096) return R_REJECT;
        if (other && f->c > 4096) f->c = 4096; /* position only matters for the declared names */
        return R_OK;
    }
    case K_ARRAY:
        switch (f->st) {
        case 0:
            if (c != '[') return R_REJECT;
            f->st = 1;
            return R_OK;
        case 1: case 2: case 3: /* after '[' / after a value / after ',' */
            if (is_ws(c)) {
                if (f->ws >= g->max_ws) return R_REJECT;
                f->ws++;
                return R_OK;
            }
            if (c == ']' && f->st != 3 && f->a >= n->lo) return R_POP_OK;
            if (c == ',' && f->st == 2 && f->a < n->hi) {
                f->ws = 0;
                f->st = 3;
                return R_OK;
            }
            if (f->st != 2 && f->a < n->hi && c != ']' && c != ',') {
                f->ws = 0;
                f->st = 2;
                f->a++;
                if (n->hi == UNBOUNDED && f->a > n->lo) f->a = n->lo; /* canonical */
                *push = n->sub;
                return R_PUSH;
            }
            return R_REJECT;
        }
        return R_REJECT;
    case K_STRING:
        switch (f->st) {
        case 0:
            if (c != '"') return R_REJECT;
            f->st = 1;
            return R_OK;
        case 1:
            if (c == '"') return f->a >= n->lo ? R_POP_OK : R_REJECT;
            if (c < 0x20) return R_REJECT;
            if (f->a >= n->hi) return R_REJECT;
            if (c == '\\') f->st = 2;
            else if (c >= 0x80) {
                if (!utf8_lead(c, &f->x, &f->ws)) return R_REJECT;
                f->st = 3;
            }
            f->a++;
            if (n->hi == UNBOUNDED && f->a > n->lo) f->a = n->lo; /* canonical */
            return R_OK;
        case 2: /* after '\' */
            if (c == 'u') {
                f->st = 4;
                f->x = 0;
                f->ws = 0;
                return R_OK;
            }
            if (!strchr("\"\\/bfnrt", c) || !c) return R_REJECT;
            f->st = 1;
            return R_OK;
        case 3: /* UTF-8 continuation */
            if (!utf8_cont(c, f->ws)) return R_REJECT;
            f->ws = 0;
            if (--f->x == 0) f->st = 1;
            return R_OK;
        case 4: { /* \uXXXX: x digits seen; ws=1 after a leading d/D */
            bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
            if (!hex) return R_REJECT;
            if (f->x == 0 && (c == 'd' || c == 'D')) f->ws = 1;
            if (f->x == 1 && f->ws == 1 && !(c >= '0' && c <= '7')) return R_REJECT; /* surrogate */
            if (++f->x == 4) {
                f->st = 1;
                f->x = 0;
                f->ws = 0;
            }
            return R_OK;
        }
        }
        return R_REJECT;
    case K_NUMBER: case K_INTEGER: {
        bool frac = f->kind == K_NUMBER, digit = c >= '0' && c <= '9';
        /* 0 start, 1 '-', 2 zero, 3 int, 4 '.', 5 frac, 6 'e', 7 exp sign, 8 exp */
        switch (f->st) {
        case 0:
            if (c == '-') { f->st = 1; return R_OK; }
            /* fallthrough */
        case 1:
            if (c == '0') { f->st = 2; return R_OK; }
            if (digit) { f->st = 3; f->a = 1; return R_OK; }
            return R_REJECT;
        case 2: case 3:
            if (digit && f->st == 3 && f->a < 15) { f->a++; return R_OK; }
            if (frac && c == '.') { f->st = 4; return R_OK; }
            if (frac && (c == 'e' || c == 'E')) { f->st = 6; return R_OK; }
            return digit ? R_REJECT : R_POP_RETRY;
        case 4:
            if (digit) { f->st = 5; f->a = 1; return R_OK; }
            return R_REJECT;
        case 5:
            if (digit) return f->a < 15 ? (f->a++, R_OK) : R_REJECT;
            if (c == 'e' || c == 'E') { f->st = 6; return R_OK; }
            return R_POP_RETRY;
        case 6:
            if (c == '+' || c == '-') { f->st = 7; return R_OK; }
            /* fallthrough */
        case 7:
            if (digit) { f->st = 8; f->a = 1; return R_OK; }
            return R_REJECT;
        case 8:
            if (digit) return f->a < 2 ? (f->a++, R_OK) : R_REJECT; /* |exp| < 100: a double */
            return R_POP_RETRY;
        }
        return R_REJECT;
    }
    case K_LITSET: {
        uint32_t lo = f->a, hi = f->b, p = (uint32_t)f->c;
        lit_narrow(g, n->first, &lo, &hi, p, c);
        if (lo >= hi) return frame_endable(g, f) ? R_POP_RETRY : R_REJECT;
        f->a = lo;
        f->b = hi;
        f->c = p + 1;
        if (hi - lo == 1 && lit_n(g, n->first + lo) == p + 1) return R_POP_OK;
        return R_OK;
    }
    }
    return R_REJECT;
}

static void emit(gstate *out, const gframe *buf, int len) {
    /* dedupe */
    uint32_t off = 0;
    for (uint8_t i = 0; i < out->ns; i++) {
        if (out->len[i] == len && !memcmp(out->f + off, buf, (size_t)len * sizeof(gframe))) return;
        off += out->len[i];
    }
    if (out->ns >= MAXS || (size_t)out->nf + (size_t)len > MAXS * MAXD) {
        out->pad = 1; /* overflow: this alternative is dropped */
        return;
    }
    memcpy(out->f + out->nf, buf, (size_t)len * sizeof(gframe));
    out->len[out->ns++] = (uint8_t)len;
    out->nf = (uint16_t)(out->nf + len);
}

static void feed_stack(const ts_grammar *g, const gframe *s, int len, uint8_t c, gstate *out);

static void push_value(const ts_grammar *g, const gframe *s, int len, uint32_t node, bool key,
                       uint8_t c, gstate *out) {
    if (len >= MAXD) return;
    gframe buf[MAXD];
    memcpy(buf, s, (size_t)len * sizeof(gframe));
    if (key) {
        memset(&buf[len], 0, sizeof(gframe));
        buf[len].node = node;
        buf[len].kind = F_KEY;
        feed_stack(g, buf, len + 1, c, out);
        return;
    }
    const gnode *n = &g->nodes[node];
    if (n->kind == K_UNION) {
        for (uint32_t i = 0; i < n->n; i++) push_value(g, s, len, g->alts[n->first + i], false, c, out);
        return;
    }
    if (n->kind == K_ANY) {
        switch (c) {
        case '{': node = g->any_obj; break;
        case '[': node = g->any_arr; break;
        case '"': node = g->any_str; break;
        case 't': case 'f': node = g->any_bool; break;
        case 'n': node = g->any_null; break;
        default:
            if (c == '-' || (c >= '0' && c <= '9')) node = g->any_num;
            else return;
        }
    }
    frame_init(&buf[len], g, node);
    feed_stack(g, buf, len + 1, c, out);
}

static void feed_stack(const ts_grammar *g, const gframe *s, int len, uint8_t c, gstate *out) {
    gframe buf[MAXD];
    memcpy(buf, s, (size_t)len * sizeof(gframe));
    for (;;) {
        if (len == 0) return;
        gframe *f = &buf[len - 1];
        uint32_t push = NONE;
        bool key = false;
        int r = step_frame(g, f, len > 1 ? &buf[len - 2] : NULL, c, &push, &key);
        switch (r) {
        case R_REJECT: return;
        case R_OK: emit(out, buf, len); return;
        case R_POP_OK: emit(out, buf, len - 1); return;
        case R_POP_RETRY: len--; continue;
        case R_PUSH:
            if (push == NONE) return;
            push_value(g, buf, len, push, key, c, out);
            return;
        }
        return;
    }
}

/* in -> out by one byte; out->ns == 0: rejected */
static void state_feed(const ts_grammar *g, const gstate *in, uint8_t c, gstate *out) {
    out->nf = 0;
    out->ns = 0;
    out->pad = 0;
    uint32_t off = 0;
    for (uint8_t i = 0; i < in->ns; i++) {
        feed_stack(g, in->f + off, in->len[i], c, out);
        off += in->len[i];
    }
}

static bool state_complete(const ts_grammar *g, const gstate *s) {
    uint32_t off = 0;
    for (uint8_t i = 0; i < s->ns; i++) {
        const gframe *f = s->f + off;
        int len = s->len[i];
        if (len == 1 && f[0].st == 1) return true;
        if (len == 2 && frame_endable(g, &f[1])) return true;
        off += s->len[i];
    }
    return false;
}

static bool state_done(const gstate *s) {
    uint32_t off = 0;
    for (uint8_t i = 0; i < s->ns; i++) {
        if (!(s->len[i] == 1 && s->f[off].st == 1)) return false;
        off += s->len[i];
    }
    return s->ns > 0;
}

/* ---- matcher objects ---- */

#define CACHE_N 4

struct ts_gmatch {
    const ts_grammar *g;
    gstate cur, tmp, tmp2;
    uint64_t *maskbuf;
    gstate *dfs; /* per trie depth, allocated on first mask */
    size_t dfs_n;
    /* mask cache: state bytes -> mask */
    struct {
        void *key;
        size_t key_len;
        uint64_t *mask;
        size_t n_allowed;
        uint64_t hash;
    } cache[CACHE_N];
    uint32_t cache_next, mask_words;
};

ts_status ts_gmatch_new(const ts_grammar *g, ts_gmatch **out) {
    *out = NULL;
    ts_gmatch *m = ts_calloc(1, sizeof *m);
    if (!m) return TS_FAIL(TS_NOMEM, "grammar matcher");
    m->g = g;
    m->cur.ns = 1;
    m->cur.len[0] = 1;
    m->cur.nf = 1;
    memset(&m->cur.f[0], 0, sizeof(gframe));
    m->cur.f[0].kind = F_ROOT;
    *out = m;
    return TS_OK;
}

void ts_gmatch_free(ts_gmatch *m) {
    if (!m) return;
    ts_free(m->dfs);
    ts_free(m->maskbuf);
    for (int i = 0; i < CACHE_N; i++) {
        ts_free(m->cache[i].key);
        ts_free(m->cache[i].mask);
    }
    ts_free(m);
}

bool ts_gmatch_feed(ts_gmatch *m, const char *bytes, size_t n) {
    if (n == 0) return true;
    const gstate *a = &m->cur;
    gstate *bufs[2] = {&m->tmp, &m->tmp2};
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        state_feed(m->g, a, (uint8_t)bytes[i], bufs[k]);
        if (bufs[k]->ns == 0) return false;
        a = bufs[k];
        k ^= 1;
    }
    memcpy(&m->cur, a, STATE_BYTES(a));
    return true;
}

bool ts_gmatch_complete(const ts_gmatch *m) { return state_complete(m->g, &m->cur); }
bool ts_gmatch_done(const ts_gmatch *m) { return state_done(&m->cur); }

bool ts_grammar_accepts(const ts_grammar *g, const char *text, size_t len) {
    ts_gmatch *m;
    if (ts_gmatch_new(g, &m) != TS_OK) return false;
    bool ok = ts_gmatch_feed(m, text, len) && ts_gmatch_complete(m);
    ts_gmatch_free(m);
    return ok;
}

/* ---- vocabulary trie ---- */

typedef struct {
    uint32_t first_child, n_child; /* edges[first_child ..] */
    uint32_t first_tok, n_tok;     /* toks[first_tok ..] */
} tnode;

typedef struct {
    uint8_t byte;
    uint32_t child;
} tedge;

typedef struct {
    tnode *nodes;
    uint32_t n_nodes, cap_nodes;
    tedge *edges;
    uint32_t n_edges, cap_edges;
    uint32_t *toks; /* token ids sorted by bytes */
} trie;

#define PLAIN_MAX 64 /* longest "plain" token, in characters */

struct ts_gvocab {
    uint32_t n_vocab;
    uint32_t *off, *len; /* bytes of each token in `bytes`; len = 0: never allowed */
    char *bytes;
    int32_t eog[4];
    int n_eog;
    trie all;      /* every allowed token */
    trie special;  /* the tokens that are not plain string text */
    /* Plain tokens: whole UTF-8 characters with no '"', '\\' or control byte, at most
     * PLAIN_MAX characters. Inside a JSON string they are accepted exactly when the length
     * budget allows their characters: plain[r] = the plain tokens of at most r characters
     * (masks of n_vocab bits). */
    uint64_t *plain;
    uint32_t max_len;
};

static void trie_free(trie *t) {
    ts_free(t->nodes);
    ts_free(t->edges);
    ts_free(t->toks);
}

void ts_gvocab_free(ts_gvocab *v) {
    if (!v) return;
    ts_free(v->off);
    ts_free(v->len);
    ts_free(v->bytes);
    trie_free(&v->all);
    trie_free(&v->special);
    ts_free(v->plain);
    ts_free(v);
}

uint32_t ts_gvocab_n_vocab(const ts_gvocab *v) { return v->n_vocab; }
uint32_t ts_gvocab_max_len(const ts_gvocab *v) { return v->max_len; }

const char *ts_gvocab_bytes(const ts_gvocab *v, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= v->n_vocab || !v->len[id]) return NULL;
    *len = v->len[id];
    return v->bytes + v->off[id];
}

static const ts_gvocab *g_sort_v;
static int cmp_tok(const void *pa, const void *pb) {
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    const ts_gvocab *v = g_sort_v;
    uint32_t n = v->len[a] < v->len[b] ? v->len[a] : v->len[b];
    int c = memcmp(v->bytes + v->off[a], v->bytes + v->off[b], n);
    if (c) return c;
    if (v->len[a] != v->len[b]) return v->len[a] < v->len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

/* builds the trie over t->toks[lo, hi) (sorted by bytes), partitioned by the byte at d */
static ts_status trie_build(const ts_gvocab *v, trie *t, uint32_t lo, uint32_t hi, uint32_t d,
                            uint32_t node) {
    uint32_t i = lo;
    t->nodes[node].first_tok = lo;
    while (i < hi && v->len[t->toks[i]] == d) i++; /* tokens that end here sort first */
    t->nodes[node].n_tok = i - lo;
    uint32_t nch = 0;
    for (uint32_t j = i; j < hi;) {
        uint8_t c = (uint8_t)v->bytes[v->off[t->toks[j]] + d];
        uint32_t k = j;
        while (k < hi && (uint8_t)v->bytes[v->off[t->toks[k]] + d] == c) k++;
        nch++;
        j = k;
    }
    uint32_t first_edge = t->n_edges;
    if (t->n_edges + nch > t->cap_edges || t->n_nodes + nch > t->cap_nodes)
        return TS_FAIL(TS_INTERNAL, "trie size");
    t->n_edges += nch;
    t->nodes[node].first_child = first_edge;
    t->nodes[node].n_child = nch;
    uint32_t e = first_edge;
    for (uint32_t j = i; j < hi;) {
        uint8_t c = (uint8_t)v->bytes[v->off[t->toks[j]] + d];
        uint32_t k = j;
        while (k < hi && (uint8_t)v->bytes[v->off[t->toks[k]] + d] == c) k++;
        uint32_t ch = t->n_nodes++;
        t->edges[e].byte = c;
        t->edges[e].child = ch;
        e++;
        TS_TRY(trie_build(v, t, j, k, d + 1, ch));
        j = k;
    }
    return TS_OK;
}

/* a trie over ids[0..n) (copied and sorted); total = their byte count */
static ts_status trie_make(const ts_gvocab *v, trie *t, const uint32_t *ids, uint32_t n, size_t total) {
    t->cap_nodes = t->cap_edges = (uint32_t)total + 1;
    t->nodes = ts_calloc(total + 1, sizeof *t->nodes);
    t->edges = ts_calloc(total + 1, sizeof *t->edges);
    t->toks = ts_malloc(sizeof(uint32_t) * (n ? n : 1));
    if (!t->nodes || !t->edges || !t->toks) return TS_FAIL(TS_NOMEM, "grammar vocabulary trie");
    memcpy(t->toks, ids, sizeof(uint32_t) * n);
    g_sort_v = v; /* qsort has no context argument; built once, at start */
    qsort(t->toks, n, sizeof *t->toks, cmp_tok);
    t->n_nodes = 1;
    TS_TRY(trie_build(v, t, 0, n, 0, 0));
    /* give back the unused capacity (the bound above is the total byte count) */
    tnode *nn = ts_realloc(t->nodes, sizeof *t->nodes * t->n_nodes);
    if (nn) t->nodes = nn;
    tedge *ne = ts_realloc(t->edges, sizeof *t->edges * (t->n_edges ? t->n_edges : 1));
    if (ne) t->edges = ne;
    return TS_OK;
}

/* characters of a plain token (see struct ts_gvocab), or 0 if not plain */
static uint32_t plain_chars(const uint8_t *b, uint32_t n) {
    uint32_t chars = 0;
    for (uint32_t i = 0; i < n;) {
        uint8_t c = b[i], need, rng;
        if (c < 0x20 || c == '"' || c == '\\') return 0;
        if (c < 0x80) {
            i++;
        } else {
            if (!utf8_lead(c, &need, &rng)) return 0;
            if ((uint32_t)need >= n - i) return 0; /* a character cut by the token's end */
            if (!utf8_cont(b[i + 1], rng)) return 0;
            for (uint32_t k = 2; k <= need; k++)
                if (!utf8_cont(b[i + k], 0)) return 0;
            i += 1u + need;
        }
        if (++chars > PLAIN_MAX) return 0;
    }
    return chars;
}

ts_status ts_gvocab_build(const ts_tokenizer *tok, ts_gvocab **out) {
    *out = NULL;
    uint32_t nv = ts_tokenizer_n_vocab(tok);
    ts_gvocab *v = ts_calloc(1, sizeof *v);
    if (!v) return TS_FAIL(TS_NOMEM, "grammar vocabulary");
    v->n_vocab = nv;
    v->off = ts_calloc(nv, sizeof *v->off);
    v->len = ts_calloc(nv, sizeof *v->len);
    uint32_t *ids = NULL, *sids = NULL;
    ts_status rc = TS_OK;
    size_t cap = 1 << 20, used = 0, words = ((size_t)nv + 63) / 64;
    v->bytes = ts_malloc(cap);
    v->plain = ts_calloc((PLAIN_MAX + 1) * words, sizeof(uint64_t));
    if (!v->off || !v->len || !v->bytes || !v->plain) {
        rc = TS_FAIL(TS_NOMEM, "grammar vocabulary");
        goto fail;
    }
    uint32_t n_ok = 0;
    for (uint32_t i = 0; i < nv; i++) {
        if (ts_tokenizer_is_eog(tok, (int32_t)i)) {
            if (v->n_eog < 4) v->eog[v->n_eog++] = (int32_t)i;
            continue;
        }
        ts_token_type t = ts_tokenizer_type(tok, (int32_t)i);
        if (t == TS_TOKEN_TYPE_CONTROL || t == TS_TOKEN_TYPE_UNKNOWN || t == TS_TOKEN_TYPE_UNUSED ||
            t == TS_TOKEN_TYPE_UNDEFINED)
            continue;
        int32_t id = (int32_t)i;
        char *txt;
        size_t tl;
        if (ts_detokenize(tok, &id, 1, 0, &txt, &tl) != TS_OK) {
            rc = TS_FAIL(TS_NOMEM, "grammar vocabulary: token %u", i);
            goto fail;
        }
        if (tl > 0 && tl < 65536) {
            if (used + tl > cap) {
                while (used + tl > cap) cap *= 2;
                char *q = ts_realloc(v->bytes, cap);
                if (!q) {
                    ts_free(txt);
                    rc = TS_FAIL(TS_NOMEM, "grammar vocabulary");
                    goto fail;
                }
                v->bytes = q;
            }
            memcpy(v->bytes + used, txt, tl);
            v->off[i] = (uint32_t)used;
            v->len[i] = (uint32_t)tl;
            used += tl;
            n_ok++;
            if (tl > v->max_len) v->max_len = (uint32_t)tl;
        }
        ts_free(txt);
    }
    ids = ts_malloc(sizeof(uint32_t) * (n_ok ? n_ok : 1));
    sids = ts_malloc(sizeof(uint32_t) * (n_ok ? n_ok : 1));
    if (!ids || !sids) {
        rc = TS_FAIL(TS_NOMEM, "grammar vocabulary");
        goto fail;
    }
    uint32_t k = 0, ns = 0;
    size_t sbytes = 0;
    for (uint32_t i = 0; i < nv; i++) {
        if (!v->len[i]) continue;
        ids[k++] = i;
        uint32_t pc = plain_chars((const uint8_t *)v->bytes + v->off[i], v->len[i]);
        if (pc) {
            for (uint32_t r = pc; r <= PLAIN_MAX; r++) v->plain[r * words + (i >> 6)] |= 1ull << (i & 63);
        } else {
            sids[ns++] = i;
            sbytes += v->len[i];
        }
    }
    TS_TRY_GOTO(trie_make(v, &v->all, ids, n_ok, used), rc, fail);
    TS_TRY_GOTO(trie_make(v, &v->special, sids, ns, sbytes), rc, fail);
    ts_free(ids);
    ts_free(sids);
    *out = v;
    return TS_OK;
fail:
    ts_free(ids);
    ts_free(sids);
    ts_gvocab_free(v);
    return rc;
}

static uint64_t fnv(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ORs into mask every token of trie t whose bytes the state m->dfs[0] accepts */
static size_t trie_walk(ts_gmatch *m, const trie *t, uint64_t *mask) {
    uint32_t node_st[4096], edge_st[4096];
    size_t sp = 0, n = 0;
    node_st[0] = 0;
    edge_st[0] = 0;
    while (true) {
        const tnode *tn = &t->nodes[node_st[sp]];
        if (edge_st[sp] >= tn->n_child) {
            if (sp == 0) break;
            sp--;
            continue;
        }
        const tedge *e = &t->edges[tn->first_child + edge_st[sp]++];
        gstate *nx = &m->dfs[sp + 1];
        state_feed(m->g, &m->dfs[sp], e->byte, nx);
        if (nx->ns == 0) continue;
        const tnode *cn = &t->nodes[e->child];
        for (uint32_t i = 0; i < cn->n_tok; i++) {
            uint32_t id = t->toks[cn->first_tok + i];
            uint64_t bit = 1ull << (id & 63);
            n += !(mask[id >> 6] & bit);
            mask[id >> 6] |= bit;
        }
        if (cn->n_child && sp + 2 < m->dfs_n && sp + 1 < 4096) {
            sp++;
            node_st[sp] = e->child;
            edge_st[sp] = 0;
        }
    }
    return n;
}

ts_status ts_gmatch_mask(ts_gmatch *m, const ts_gvocab *v, uint64_t *mask, size_t *n_allowed) {
    size_t words = ((size_t)v->n_vocab + 63) / 64, kb = STATE_BYTES(&m->cur);
    uint64_t h = fnv(&m->cur, kb);
    for (int i = 0; i < CACHE_N; i++)
        if (m->cache[i].mask && m->cache[i].hash == h && m->cache[i].key_len == kb &&
            !memcmp(m->cache[i].key, &m->cur, kb)) {
            memcpy(mask, m->cache[i].mask, words * sizeof(uint64_t));
            *n_allowed = m->cache[i].n_allowed;
            return TS_OK;
        }
    if (!m->dfs) {
        m->dfs_n = (size_t)v->max_len + 1;
        m->dfs = ts_malloc(m->dfs_n * sizeof(gstate));
        if (!m->dfs) return TS_FAIL(TS_NOMEM, "grammar mask scratch");
    }
    memcpy(&m->dfs[0], &m->cur, kb);
    size_t n = 0;
    /* fast path: one stack, inside a JSON string (no escape or UTF-8 sequence pending):
     * the plain tokens by the length budget, and a walk over the other tokens only */
    const gframe *top = &m->cur.f[m->cur.len[0] - 1];
    if (m->cur.ns == 1 && top->kind == K_STRING && top->st == 1) {
        const gnode *sn = &m->g->nodes[top->node];
        uint32_t r = sn->hi == UNBOUNDED ? PLAIN_MAX
                     : sn->hi - top->a > PLAIN_MAX ? PLAIN_MAX : sn->hi - top->a;
        memcpy(mask, v->plain + (size_t)r * words, words * sizeof(uint64_t));
        for (size_t w = 0; w < words; w++) n += (size_t)__builtin_popcountll(mask[w]);
        n += trie_walk(m, &v->special, mask);
    } else {
        memset(mask, 0, words * sizeof(uint64_t));
        n = trie_walk(m, &v->all, mask);
    }
    if (state_complete(m->g, &m->cur))
        for (int i = 0; i < v->n_eog; i++) {
            mask[v->eog[i] >> 6] |= 1ull << (v->eog[i] & 63);
            n++;
        }
    *n_allowed = n;
    /* remember it */
    uint32_t ci = m->cache_next++ % CACHE_N;
    if (!m->cache[ci].mask) m->cache[ci].mask = ts_malloc(words * sizeof(uint64_t));
    void *key = ts_realloc(m->cache[ci].key, kb);
    if (key) m->cache[ci].key = key;
    if (m->cache[ci].mask && key) {
        memcpy(m->cache[ci].mask, mask, words * sizeof(uint64_t));
        memcpy(m->cache[ci].key, &m->cur, kb);
        m->cache[ci].key_len = kb;
        m->cache[ci].hash = h;
        m->cache[ci].n_allowed = n;
    } else {
        m->cache[ci].key_len = 0;
    }
    return TS_OK;
}

ts_status ts_gmatch_apply(ts_gmatch *m, const ts_gvocab *v, float *logits) {
    size_t words = ((size_t)v->n_vocab + 63) / 64;
    if (!m->maskbuf && !(m->maskbuf = ts_malloc(words * sizeof(uint64_t))))
        return TS_FAIL(TS_NOMEM, "grammar mask");
    uint64_t *mask = m->maskbuf;
    size_t n = 0;
    TS_TRY(ts_gmatch_mask(m, v, mask, &n));
    if (n == 0) return TS_FAIL(TS_INVAL, "grammar: no token can continue the output");
    for (size_t w = 0; w < words; w++) {
        uint64_t bits = mask[w];
        if (bits == ~0ull) continue;
        size_t end = (w + 1) * 64 < v->n_vocab ? (w + 1) * 64 : v->n_vocab;
        for (size_t i = w * 64; i < end; i++)
            if (!((bits >> (i & 63)) & 1)) logits[i] = -INFINITY;
    }
    return TS_OK;
}

bool ts_gmatch_accept_token(ts_gmatch *m, const ts_gvocab *v, int32_t id) {
    size_t len;
    const char *b = ts_gvocab_bytes(v, id, &len);
    if (!b) return false;
    return ts_gmatch_feed(m, b, len);
}
