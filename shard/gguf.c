/* gguf.c: see gguf.h.
 *
 * DESIGN: one forward pass over the buffer with a bounds-checked cursor (struct rd). Every
 * count read from the file is checked against the bytes that remain, divided by the
 * smallest possible encoding of one item, before anything is allocated for it, so the
 * memory used is linear in the file size whatever the counts say. Numeric arrays are not
 * copied (they point into the buffer); string arrays get one ts_gguf_str per element and
 * nested arrays one ts_gguf_value per element. Uniqueness of keys and tensor names is
 * checked by sorting pointer copies (O(n log n): hostile files may hold millions of
 * entries). Every failure path ends in ts_gguf_close, which frees whatever was built so
 * far (arrays are zeroed when allocated, so unfilled entries hold nothing to free).
 *
 * Error messages: "gguf: <where>: <what> at offset <byte offset> (<detail>)", where
 * <where> is "kv 3 'key'" or "tensor 5 'name'" once known.
 */
#include "gguf.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "quant.h"

/* Smallest encodings, used to bound counts before allocating:
 * kv     = key len u64 + >= 1 key byte + type u32 + >= 1 value byte
 * tensor = name len u64 + >= 1 name byte + n_dims u32 + >= 1 ne u64 + type u32 + offset u64
 * string = len u64; nested array = elem_type u32 + n u64 */
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_BYTES 33u
#define MIN_STRING_BYTES 8u
#define MIN_ARRAY_BYTES 12u

/* ---- UTF-8 ---- */

bool ts_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    if (len && !s) return false;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0) lo = 0xA0;      /* no overlongs */
            else if (c == 0xED) hi = 0x9F; /* no surrogates D800..DFFF */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0) lo = 0x90;      /* no overlongs */
            else if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
        } else {
            return false; /* 80..C1 (continuation / overlong lead), F5..FF */
        }
        if (len - i < n) return false;
        if (p[i + 1] < lo || p[i + 1] > hi) return false;
        for (size_t k = 2; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80) return false;
        i += n;
    }
    return true;
}

/* ---- value types ---- */

static const char *const g_vtype_names[TS_GGUF_VTYPE_COUNT_] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool", "string", "array", "uint64", "int64", "float64",
};

const char *ts_gguf_vtype_name(uint32_t t) {
    return t < TS_GGUF_VTYPE_COUNT_ ? g_vtype_names[t] : "?";
}

size_t ts_gguf_vtype_size(uint32_t t) {
    switch (t) {
    case TS_GGUF_UINT8: case TS_GGUF_INT8: case TS_GGUF_BOOL: return 1;
    case TS_GGUF_UINT16: case TS_GGUF_INT16: return 2;
    case TS_GGUF_UINT32: case TS_GGUF_INT32: case TS_GGUF_FLOAT32: return 4;
    case TS_GGUF_UINT64: case TS_GGUF_INT64: case TS_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

bool ts_gguf_vtype_is_int(ts_gguf_vtype t) {
    switch (t) {
    case TS_GGUF_UINT8: case TS_GGUF_INT8: case TS_GGUF_UINT16: case TS_GGUF_INT16:
    case TS_GGUF_UINT32: case TS_GGUF_INT32: case TS_GGUF_UINT64: case TS_GGUF_INT64:
    case TS_GGUF_BOOL:
        return true;
    default:
        return false;
    }
}

bool ts_gguf_vtype_is_float(ts_gguf_vtype t) {
    return t == TS_GGUF_FLOAT32 || t == TS_GGUF_FLOAT64;
}

static bool vtype_is_signed(uint32_t t) {
    return t == TS_GGUF_INT8 || t == TS_GGUF_INT16 || t == TS_GGUF_INT32 ||
           t == TS_GGUF_INT64;
}

static uint64_t le_u64(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) v |= (uint64_t)p[k] << (8 * k);
    return v;
}

/* Decodes one packed scalar of type t (numeric or bool) at p into val. */
static void decode_scalar(uint32_t t, const uint8_t *p, ts_gguf_value *val) {
    size_t n = ts_gguf_vtype_size(t);
    uint64_t bits = le_u64(p, n);
    val->type = (ts_gguf_vtype)t;
    switch (t) {
    case TS_GGUF_INT8: val->v.i = (int8_t)(uint8_t)bits; break;
    case TS_GGUF_INT16: val->v.i = (int16_t)(uint16_t)bits; break;
    case TS_GGUF_INT32: val->v.i = (int32_t)(uint32_t)bits; break;
    case TS_GGUF_INT64: val->v.i = (int64_t)bits; break;
    case TS_GGUF_FLOAT32: {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, sizeof f);
        val->v.f = f;
        break;
    }
    case TS_GGUF_FLOAT64: {
        double d;
        memcpy(&d, &bits, sizeof d);
        val->v.f = d;
        break;
    }
    default: val->v.u = bits; break; /* unsigned and bool */
    }
}

static const uint8_t *arr_elem(const ts_gguf_value *arr, uint64_t i) {
    return arr->v.arr.raw + i * ts_gguf_vtype_size(arr->v.arr.elem_type);
}

int64_t ts_gguf_arr_i64(const ts_gguf_value *arr, uint64_t i) {
    ts_gguf_value e;
    decode_scalar(arr->v.arr.elem_type, arr_elem(arr, i), &e);
    if (vtype_is_signed(e.type)) return e.v.i;
    if (ts_gguf_vtype_is_float(e.type)) {
        if (!(e.v.f >= -9223372036854775808.0 && e.v.f < 9223372036854775808.0)) return 0;
        return (int64_t)e.v.f;
    }
    return (int64_t)e.v.u;
}

uint64_t ts_gguf_arr_u64(const ts_gguf_value *arr, uint64_t i) {
    ts_gguf_value e;
    decode_scalar(arr->v.arr.elem_type, arr_elem(arr, i), &e);
    if (vtype_is_signed(e.type)) return (uint64_t)e.v.i;
    if (ts_gguf_vtype_is_float(e.type)) {
        if (!(e.v.f >= 0.0 && e.v.f < 18446744073709551616.0)) return 0;
        return (uint64_t)e.v.f;
    }
    return e.v.u;
}

double ts_gguf_arr_f64(const ts_gguf_value *arr, uint64_t i) {
    ts_gguf_value e;
    decode_scalar(arr->v.arr.elem_type, arr_elem(arr, i), &e);
    if (vtype_is_signed(e.type)) return (double)e.v.i;
    if (ts_gguf_vtype_is_float(e.type)) return e.v.f;
    return (double)e.v.u;
}

/* ---- cursor ---- */

typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    char ctx[160]; /* "kv 3 'key': " or "" */
} rd;

TS_PRINTF(3, 4)
static ts_status rd_fail(const rd *r, ts_status code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return TS_FAIL(code, "gguf: %s%s", r->ctx, msg);
}

static size_t rd_left(const rd *r) { return r->len - r->pos; }

/* Fails unless n bytes remain; `what` names the field. */
static ts_status rd_need(const rd *r, uint64_t n, const char *what) {
    if (n > rd_left(r))
        return rd_fail(r, TS_FORMAT,
                       "%s at offset %zu: truncated (needs %" PRIu64 " bytes, %zu left)", what,
                       r->pos, n, rd_left(r));
    return TS_OK;
}

static ts_status rd_u32(rd *r, const char *what, uint32_t *out) {
    TS_TRY(rd_need(r, 4, what));
    *out = (uint32_t)le_u64(r->buf + r->pos, 4);
    r->pos += 4;
    return TS_OK;
}

static ts_status rd_u64(rd *r, const char *what, uint64_t *out) {
    TS_TRY(rd_need(r, 8, what));
    *out = le_u64(r->buf + r->pos, 8);
    r->pos += 8;
    return TS_OK;
}

/* A string: length then bytes (borrowed). */
static ts_status rd_str(rd *r, const char *what, ts_gguf_str *out) {
    size_t at = r->pos;
    uint64_t n;
    TS_TRY(rd_u64(r, what, &n));
    if (n > rd_left(r))
        return rd_fail(r, TS_FORMAT,
                       "%s length %" PRIu64 " at offset %zu exceeds the %zu bytes left", what, n,
                       at, rd_left(r));
    out->ptr = (const char *)(r->buf + r->pos);
    out->len = n;
    r->pos += (size_t)n;
    return TS_OK;
}

/* A key or tensor name: non-empty valid UTF-8 without NUL; *out is an owned copy. */
static ts_status rd_name(rd *r, const char *what, char **out) {
    size_t at = r->pos;
    ts_gguf_str s;
    TS_TRY(rd_str(r, what, &s));
    if (s.len == 0) return rd_fail(r, TS_FORMAT, "empty %s at offset %zu", what, at);
    if (!ts_utf8_valid(s.ptr, (size_t)s.len))
        return rd_fail(r, TS_FORMAT, "%s at offset %zu is not valid UTF-8", what, at);
    if (memchr(s.ptr, '\0', (size_t)s.len))
        return rd_fail(r, TS_FORMAT, "%s at offset %zu contains a NUL byte", what, at);
    *out = ts_strndup(s.ptr, (size_t)s.len);
    if (!*out) return rd_fail(r, TS_NOMEM, "out of memory copying %s", what);
    return TS_OK;
}

/* ---- values ---- */

static void free_value(ts_gguf_value *v) {
    if (v->type != TS_GGUF_ARRAY) return;
    ts_free(v->v.arr.strs);
    if (v->v.arr.vals) {
        for (uint64_t i = 0; i < v->v.arr.n; i++) free_value(&v->v.arr.vals[i]);
        ts_free(v->v.arr.vals);
    }
    v->v.arr.strs = NULL;
    v->v.arr.vals = NULL;
}

static ts_status check_bools(rd *r, const uint8_t *p, uint64_t n, size_t at) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return rd_fail(r, TS_FORMAT, "bool value %u at offset %" PRIu64 " (must be 0 or 1)",
                           p[i], (uint64_t)at + i);
    return TS_OK;
}

static ts_status rd_value(rd *r, uint32_t type, int depth, ts_gguf_value *out);

static ts_status rd_array(rd *r, int depth, ts_gguf_value *out) {
    size_t at = r->pos;
    uint32_t et;
    uint64_t n;
    out->type = TS_GGUF_ARRAY;
    if (depth >= TS_GGUF_MAX_ARRAY_DEPTH)
        return rd_fail(r, TS_FORMAT, "array at offset %zu nested deeper than %d levels", at,
                       TS_GGUF_MAX_ARRAY_DEPTH);
    TS_TRY(rd_u32(r, "array element type", &et));
    if (et >= TS_GGUF_VTYPE_COUNT_)
        return rd_fail(r, TS_UNSUPPORTED, "unknown array element type %" PRIu32 " at offset %zu",
                       et, at);
    size_t n_at = r->pos;
    TS_TRY(rd_u64(r, "array length", &n));
    out->v.arr.elem_type = (ts_gguf_vtype)et;
    size_t esize = ts_gguf_vtype_size(et);
    size_t min = esize ? esize : et == TS_GGUF_STRING ? MIN_STRING_BYTES : MIN_ARRAY_BYTES;
    if (n > rd_left(r) / min)
        return rd_fail(r, TS_FORMAT,
                       "array length %" PRIu64 " of %s at offset %zu exceeds the %zu bytes left",
                       n, ts_gguf_vtype_name(et), n_at, rd_left(r));
    out->v.arr.n = n;
    if (esize) {
        out->v.arr.raw = r->buf + r->pos;
        if (et == TS_GGUF_BOOL) TS_TRY(check_bools(r, r->buf + r->pos, n, r->pos));
        r->pos += (size_t)n * esize; /* n * esize <= left: no overflow */
        return TS_OK;
    }
    if (n == 0) return TS_OK;
    if (et == TS_GGUF_STRING) {
        out->v.arr.strs = ts_calloc((size_t)n, sizeof *out->v.arr.strs);
        if (!out->v.arr.strs)
            return rd_fail(r, TS_NOMEM, "out of memory for %" PRIu64 " strings", n);
        for (uint64_t i = 0; i < n; i++)
            TS_TRY(rd_str(r, "array string", &out->v.arr.strs[i]));
        return TS_OK;
    }
    out->v.arr.vals = ts_calloc((size_t)n, sizeof *out->v.arr.vals);
    if (!out->v.arr.vals)
        return rd_fail(r, TS_NOMEM, "out of memory for %" PRIu64 " nested arrays", n);
    for (uint64_t i = 0; i < n; i++)
        TS_TRY(rd_array(r, depth + 1, &out->v.arr.vals[i]));
    return TS_OK;
}

static ts_status rd_value(rd *r, uint32_t type, int depth, ts_gguf_value *out) {
    if (type == TS_GGUF_ARRAY) return rd_array(r, depth, out);
    if (type == TS_GGUF_STRING) {
        out->type = TS_GGUF_STRING;
        return rd_str(r, "string value", &out->v.str);
    }
    size_t n = ts_gguf_vtype_size(type);
    if (!n) return rd_fail(r, TS_INTERNAL, "value type %" PRIu32, type); /* checked by caller */
    TS_TRY(rd_need(r, n, ts_gguf_vtype_name(type)));
    if (type == TS_GGUF_BOOL) TS_TRY(check_bools(r, r->buf + r->pos, 1, r->pos));
    decode_scalar(type, r->buf + r->pos, out);
    r->pos += n;
    return TS_OK;
}

/* ---- close ---- */

void ts_gguf_close(ts_gguf *g) {
    if (!g) return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) {
            ts_free(g->kv[i].key);
            free_value(&g->kv[i].value);
        }
        ts_free(g->kv);
    }
    if (g->tensors) {
        for (uint64_t i = 0; i < g->n_tensors; i++) ts_free(g->tensors[i].name);
        ts_free(g->tensors);
    }
    ts_mapfile_close(&g->mf);
    ts_free(g);
}

/* ---- uniqueness and overlap ---- */

static int cmp_namep(const void *a, const void *b) {
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

/* Looks for two equal names among n entries `stride` bytes apart, the first name field at
 * `first`. *dup = true and *ia < *ib their indices if found. */
static ts_status find_duplicate(char *const *first, size_t stride, uint64_t n, bool *dup,
                                uint64_t *ia, uint64_t *ib) {
    *dup = false;
    if (n < 2) return TS_OK;
    char *const **names = ts_malloc((size_t)n * sizeof *names);
    if (!names) return TS_FAIL(TS_NOMEM, "gguf: out of memory checking for duplicate names");
    for (uint64_t i = 0; i < n; i++)
        names[i] = (char *const *)((const char *)first + i * stride);
    qsort(names, (size_t)n, sizeof *names, cmp_namep);
    for (uint64_t i = 1; i < n; i++) {
        if (strcmp(*names[i - 1], *names[i]) == 0) {
            uint64_t a = (uint64_t)((const char *)names[i - 1] - (const char *)first) / stride;
            uint64_t b = (uint64_t)((const char *)names[i] - (const char *)first) / stride;
            *ia = a < b ? a : b;
            *ib = a < b ? b : a;
            *dup = true;
            break;
        }
    }
    ts_free(names);
    return TS_OK;
}

static ts_status check_unique_kv(const ts_gguf *g) {
    bool dup;
    uint64_t a, b;
    if (g->n_kv < 2) return TS_OK;
    TS_TRY(find_duplicate(&g->kv[0].key, sizeof g->kv[0], g->n_kv, &dup, &a, &b));
    if (!dup) return TS_OK;
    return TS_FAIL(TS_FORMAT,
                   "gguf: kv %" PRIu64 ": duplicate key '%.80s' at offset %" PRIu64
                   " (first at offset %" PRIu64 ", kv %" PRIu64 ")",
                   b, g->kv[b].key, g->kv[b].offset, g->kv[a].offset, a);
}

static ts_status check_unique_tensors(const ts_gguf *g) {
    bool dup;
    uint64_t a, b;
    if (g->n_tensors < 2) return TS_OK;
    TS_TRY(find_duplicate(&g->tensors[0].name, sizeof g->tensors[0], g->n_tensors, &dup, &a,
                          &b));
    if (!dup) return TS_OK;
    return TS_FAIL(TS_FORMAT,
                   "gguf: tensor %" PRIu64 ": duplicate tensor name '%.80s' at offset %" PRIu64
                   " (first at offset %" PRIu64 ", tensor %" PRIu64 ")",
                   b, g->tensors[b].name, g->tensors[b].info_offset,
                   g->tensors[a].info_offset, a);
}

static int cmp_tensor_off(const void *a, const void *b) {
    const ts_gguf_tensor *x = *(const ts_gguf_tensor *const *)a;
    const ts_gguf_tensor *y = *(const ts_gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static ts_status check_overlap(const ts_gguf *g) {
    if (g->n_tensors < 2) return TS_OK;
    const ts_gguf_tensor **t = ts_malloc((size_t)g->n_tensors * sizeof *t);
    if (!t) return TS_FAIL(TS_NOMEM, "gguf: out of memory checking tensor overlap");
    size_t m = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].nbytes) t[m++] = &g->tensors[i]; /* empty tensors overlap nothing */
    qsort(t, m, sizeof *t, cmp_tensor_off);
    ts_status rc = TS_OK;
    for (size_t i = 1; i < m; i++) {
        const ts_gguf_tensor *p = t[i - 1], *c = t[i];
        uint64_t pend = p->offset + p->nbytes; /* checked against the data size already */
        if (c->offset < pend) {
            rc = TS_FAIL(TS_FORMAT,
                         "gguf: tensor '%.80s' (info at offset %" PRIu64 "): data at offset %"
                         PRIu64 " overlaps tensor '%.80s' (info at offset %" PRIu64
                         ") at [%" PRIu64 ", %" PRIu64 ")",
                         c->name, c->info_offset, c->offset, p->name, p->info_offset,
                         p->offset, pend);
            break;
        }
    }
    ts_free(t);
    return rc;
}

/* ---- parse ---- */

static ts_status parse_header(rd *r, ts_gguf *g) {
    if (r->len < 4)
        return rd_fail(r, TS_FORMAT, "magic at offset 0: truncated (file is %zu bytes)", r->len);
    if (memcmp(r->buf, TS_GGUF_MAGIC, 4) != 0)
        return rd_fail(r, TS_FORMAT,
                       "bad magic %02x %02x %02x %02x at offset 0 (expected \"GGUF\")",
                       r->buf[0], r->buf[1], r->buf[2], r->buf[3]);
    r->pos = 4;
    uint32_t v;
    TS_TRY(rd_u32(r, "version", &v));
    g->version = v;
    if (v != 2 && v != 3) {
        uint32_t sw = __builtin_bswap32(v);
        if (sw >= 1 && sw <= 3)
            return rd_fail(r, TS_UNSUPPORTED,
                           "version at offset 4 reads 0x%08" PRIx32 ": a big-endian (byte-"
                           "swapped) GGUF v%" PRIu32 ", only little-endian files are supported",
                           v, sw);
        if (v == 1)
            return rd_fail(r, TS_UNSUPPORTED,
                           "version 1 at offset 4 is not supported (32-bit counts; "
                           "re-convert the model)");
        return rd_fail(r, TS_UNSUPPORTED,
                       "version %" PRIu32 " at offset 4 is not supported (only 2 and 3)", v);
    }
    TS_TRY(rd_u64(r, "n_tensors", &g->n_tensors));
    TS_TRY(rd_u64(r, "n_kv", &g->n_kv));
    if (g->n_kv > rd_left(r) / MIN_KV_BYTES)
        return rd_fail(r, TS_FORMAT,
                       "n_kv %" PRIu64 " at offset 16 is impossible: %zu bytes left hold at "
                       "most %zu key-value pairs",
                       g->n_kv, rd_left(r), rd_left(r) / MIN_KV_BYTES);
    if (g->n_tensors > rd_left(r) / MIN_TENSOR_BYTES)
        return rd_fail(r, TS_FORMAT,
                       "n_tensors %" PRIu64 " at offset 8 is impossible: %zu bytes left hold at "
                       "most %zu tensor infos",
                       g->n_tensors, rd_left(r), rd_left(r) / MIN_TENSOR_BYTES);
    return TS_OK;
}

static ts_status parse_kvs(rd *r, ts_gguf *g) {
    uint64_t n = g->n_kv;
    g->n_kv = 0; /* entries counted only once allocated */
    if (n == 0) return TS_OK;
    g->kv = ts_calloc((size_t)n, sizeof *g->kv);
    if (!g->kv) return TS_FAIL(TS_NOMEM, "gguf: out of memory for %" PRIu64 " key-value pairs", n);
    g->n_kv = n;
    for (uint64_t i = 0; i < n; i++) {
        ts_gguf_kv *kv = &g->kv[i];
        snprintf(r->ctx, sizeof r->ctx, "kv %" PRIu64 ": ", i);
        kv->offset = r->pos;
        TS_TRY(rd_name(r, "key", &kv->key));
        snprintf(r->ctx, sizeof r->ctx, "kv %" PRIu64 " '%.80s': ", i, kv->key);
        size_t type_at = r->pos;
        uint32_t type;
        TS_TRY(rd_u32(r, "value type", &type));
        if (type >= TS_GGUF_VTYPE_COUNT_)
            return rd_fail(r, TS_UNSUPPORTED, "unknown value type %" PRIu32 " at offset %zu",
                           type, type_at);
        TS_TRY(rd_value(r, type, 0, &kv->value));
        if (strcmp(kv->key, "general.alignment") == 0) {
            if (type != TS_GGUF_UINT32)
                return rd_fail(r, TS_FORMAT,
                               "general.alignment at offset %zu has type %s (must be uint32)",
                               type_at, ts_gguf_vtype_name(type));
            uint64_t a = kv->value.v.u;
            if (a == 0 || (a & (a - 1)) != 0)
                return rd_fail(r, TS_FORMAT,
                               "general.alignment %" PRIu64 " at offset %zu is not a non-zero "
                               "power of two",
                               a, type_at + 4);
            g->alignment = (uint32_t)a;
        }
    }
    r->ctx[0] = '\0';
    return check_unique_kv(g);
}

static ts_status parse_tensor_info(rd *r, ts_gguf *g, uint64_t i) {
    ts_gguf_tensor *t = &g->tensors[i];
    snprintf(r->ctx, sizeof r->ctx, "tensor %" PRIu64 ": ", i);
    t->info_offset = r->pos;
    TS_TRY(rd_name(r, "name", &t->name));
    snprintf(r->ctx, sizeof r->ctx, "tensor %" PRIu64 " '%.80s': ", i, t->name);
    size_t at = r->pos;
    TS_TRY(rd_u32(r, "n_dims", &t->n_dims));
    if (t->n_dims == 0 || t->n_dims > TS_GGUF_MAX_DIMS)
        return rd_fail(r, TS_FORMAT, "n_dims %" PRIu32 " at offset %zu (must be 1..%d)",
                       t->n_dims, at, TS_GGUF_MAX_DIMS);
    int64_t n_elems = 1;
    for (int d = 0; d < TS_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        at = r->pos;
        uint64_t ne;
        TS_TRY(rd_u64(r, "ne", &ne));
        if (ne > (uint64_t)INT64_MAX)
            return rd_fail(r, TS_FORMAT, "ne[%" PRIu32 "] %" PRId64 " at offset %zu is negative",
                           d, (int64_t)ne, at);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_elems, (int64_t)ne, &n_elems))
            return rd_fail(r, TS_FORMAT,
                           "ne[%" PRIu32 "] %" PRIu64 " at offset %zu: element count overflows",
                           d, ne, at);
    }
    t->n_elems = n_elems;
    at = r->pos;
    TS_TRY(rd_u32(r, "type", &t->type));
    const char *tname = ts_type_name(t->type);
    if (!tname)
        return rd_fail(r, TS_UNSUPPORTED, "unknown tensor type %" PRIu32 " at offset %zu",
                       t->type, at);
    uint32_t blk = ts_type_block_elems(t->type);
    size_t row;
    if (t->ne[0] % blk != 0)
        return rd_fail(r, TS_FORMAT,
                       "ne[0] %" PRId64 " is not a multiple of the %s block size %" PRIu32
                       " (type at offset %zu)",
                       t->ne[0], tname, blk, at);
    size_t nbytes;
    if (!ts_type_row_bytes(t->type, t->ne[0], &row) ||
        !ts_mul_size(row, (size_t)t->ne[1], &nbytes) ||
        !ts_mul_size(nbytes, (size_t)t->ne[2], &nbytes) ||
        !ts_mul_size(nbytes, (size_t)t->ne[3], &nbytes))
        return rd_fail(r, TS_FORMAT, "byte size of %" PRId64 " %s elements overflows", n_elems,
                       tname);
    t->nbytes = nbytes;
    at = r->pos;
    TS_TRY(rd_u64(r, "offset", &t->offset));
    if (t->offset % g->alignment != 0)
        return rd_fail(r, TS_FORMAT,
                       "data offset %" PRIu64 " at offset %zu is not a multiple of the "
                       "alignment %" PRIu32,
                       t->offset, at, g->alignment);
    return TS_OK;
}

static ts_status parse_tensors(rd *r, ts_gguf *g) {
    uint64_t n = g->n_tensors;
    g->n_tensors = 0;
    if (n > rd_left(r) / MIN_TENSOR_BYTES)
        return rd_fail(r, TS_FORMAT,
                       "n_tensors %" PRIu64 " at offset 8 is impossible: the %zu bytes left "
                       "after the metadata (offset %zu) hold at most %zu tensor infos",
                       n, rd_left(r), r->pos, rd_left(r) / MIN_TENSOR_BYTES);
    if (n > 0) {
        g->tensors = ts_calloc((size_t)n, sizeof *g->tensors);
        if (!g->tensors)
            return TS_FAIL(TS_NOMEM, "gguf: out of memory for %" PRIu64 " tensor infos", n);
        g->n_tensors = n;
    }
    for (uint64_t i = 0; i < n; i++) TS_TRY(parse_tensor_info(r, g, i));
    r->ctx[0] = '\0';

    /* data section: end of the infos aligned up */
    uint64_t end = r->pos, data;
    if (!ts_add_u64(end, g->alignment - 1, &data))
        return rd_fail(r, TS_FORMAT, "data section offset overflows");
    data -= data % g->alignment;
    g->data_offset = data;
    if (n == 0) return TS_OK; /* may end right after the infos */
    if (data > r->len)
        return rd_fail(r, TS_FORMAT,
                       "data section at offset %" PRIu64 " (infos end at %" PRIu64
                       ", alignment %" PRIu32 ") is past the end of the file (%zu bytes)",
                       data, end, g->alignment, r->len);
    uint64_t data_size = r->len - data;
    for (uint64_t i = 0; i < n; i++) {
        ts_gguf_tensor *t = &g->tensors[i];
        uint64_t tend;
        if (!ts_add_u64(t->offset, t->nbytes, &tend) || tend > data_size)
            return TS_FAIL(TS_FORMAT,
                           "gguf: tensor %" PRIu64 " '%.80s': data offset %" PRIu64 " + %zu bytes "
                           "(info at offset %" PRIu64 ") runs past the end of the data section "
                           "(%" PRIu64 " bytes at offset %" PRIu64 ")",
                           i, t->name, t->offset, t->nbytes, t->info_offset, data_size, data);
        t->data = r->buf + data + t->offset;
    }
    TS_TRY(check_unique_tensors(g));
    return check_overlap(g);
}

ts_status ts_gguf_parse(const uint8_t *buf, size_t len, ts_gguf **out) {
    if (!out) return TS_FAIL(TS_INVAL, "gguf: out is NULL");
    *out = NULL;
    if (!buf && len) return TS_FAIL(TS_INVAL, "gguf: buf is NULL");
    ts_gguf *g = ts_calloc(1, sizeof *g);
    if (!g) return TS_FAIL(TS_NOMEM, "gguf: out of memory");
    g->buf = buf;
    g->size = len;
    g->alignment = TS_GGUF_DEFAULT_ALIGNMENT;
    rd r = {.buf = buf, .len = len, .pos = 0, .ctx = ""};
    ts_status rc;
    TS_TRY_GOTO(parse_header(&r, g), rc, fail);
    TS_TRY_GOTO(parse_kvs(&r, g), rc, fail);
    TS_TRY_GOTO(parse_tensors(&r, g), rc, fail);
    *out = g;
    return TS_OK;
fail:
    ts_gguf_close(g);
    return rc;
}

ts_status ts_gguf_open(const char *path, ts_gguf **out) {
    if (!path || !out) return TS_FAIL(TS_INVAL, "gguf: path or out is NULL");
    *out = NULL;
    ts_mapfile mf;
    ts_status rc = ts_mapfile_open(path, &mf);
    if (rc != TS_OK) {
        ts_error_prefix("%s", path);
        return rc;
    }
    ts_gguf *g;
    rc = ts_gguf_parse(mf.data, mf.size, &g);
    if (rc != TS_OK) {
        ts_mapfile_close(&mf);
        ts_error_prefix("%s", path);
        return rc;
    }
    g->mf = mf;
    *out = g;
    return TS_OK;
}

/* ---- lookup ---- */

const ts_gguf_kv *ts_gguf_find(const ts_gguf *g, const char *key) {
    if (!g || !key) return NULL;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const ts_gguf_tensor *ts_gguf_find_tensor(const ts_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static ts_status find_kv(const ts_gguf *g, const char *key, const ts_gguf_kv **kv) {
    if (!g || !key) return TS_FAIL(TS_INVAL, "gguf: g or key is NULL");
    *kv = ts_gguf_find(g, key);
    if (!*kv) return TS_FAIL(TS_NOT_FOUND, "gguf: key '%s' not found", key);
    return TS_OK;
}

static ts_status wrong_type(const ts_gguf_kv *kv, const char *want) {
    return TS_FAIL(TS_FORMAT, "gguf: key '%s' (offset %" PRIu64 ") has type %s, expected %s",
                   kv->key, kv->offset, ts_gguf_vtype_name(kv->value.type), want);
}

/* Integer value of kv as (negative, magnitude) for range checks. */
static bool kv_int(const ts_gguf_kv *kv, bool *neg, uint64_t *u, int64_t *i) {
    ts_gguf_vtype t = kv->value.type;
    if (t == TS_GGUF_BOOL || !ts_gguf_vtype_is_int(t)) return false;
    if (vtype_is_signed(t)) {
        *i = kv->value.v.i;
        *neg = *i < 0;
        *u = *neg ? 0 : (uint64_t)*i;
    } else {
        *u = kv->value.v.u;
        *neg = false;
        *i = *u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)*u;
    }
    return true;
}

static ts_status get_uint(const ts_gguf *g, const char *key, uint64_t max, const char *want,
                          uint64_t *out) {
    const ts_gguf_kv *kv;
    TS_TRY(find_kv(g, key, &kv));
    bool neg;
    uint64_t u;
    int64_t i;
    if (!kv_int(kv, &neg, &u, &i)) return wrong_type(kv, want);
    if (neg || u > max)
        return TS_FAIL(TS_FORMAT, "gguf: key '%s' value %s%" PRIu64 " does not fit %s", key,
                       neg ? "-" : "", neg ? (uint64_t)0 - (uint64_t)i : u, want);
    *out = u;
    return TS_OK;
}

ts_status ts_gguf_get_u32(const ts_gguf *g, const char *key, uint32_t *out) {
    uint64_t v;
    TS_TRY(get_uint(g, key, UINT32_MAX, "uint32", &v));
    *out = (uint32_t)v;
    return TS_OK;
}

ts_status ts_gguf_get_u64(const ts_gguf *g, const char *key, uint64_t *out) {
    return get_uint(g, key, UINT64_MAX, "uint64", out);
}

ts_status ts_gguf_get_i64(const ts_gguf *g, const char *key, int64_t *out) {
    const ts_gguf_kv *kv;
    TS_TRY(find_kv(g, key, &kv));
    bool neg;
    uint64_t u;
    int64_t i;
    if (!kv_int(kv, &neg, &u, &i)) return wrong_type(kv, "int64");
    if (!neg && u > (uint64_t)INT64_MAX)
        return TS_FAIL(TS_FORMAT, "gguf: key '%s' value %" PRIu64 " does not fit int64", key, u);
    *out = i;
    return TS_OK;
}

ts_status ts_gguf_get_f32(const ts_gguf *g, const char *key, float *out) {
    const ts_gguf_kv *kv;
    TS_TRY(find_kv(g, key, &kv));
    if (!ts_gguf_vtype_is_float(kv->value.type)) return wrong_type(kv, "float32");
    double d = kv->value.v.f;
    if (isfinite(d) && (d > FLT_MAX || d < -FLT_MAX))
        return TS_FAIL(TS_FORMAT, "gguf: key '%s' value %g does not fit float32", key, d);
    *out = (float)d;
    return TS_OK;
}

ts_status ts_gguf_get_bool(const ts_gguf *g, const char *key, bool *out) {
    const ts_gguf_kv *kv;
    TS_TRY(find_kv(g, key, &kv));
    if (kv->value.type != TS_GGUF_BOOL) return wrong_type(kv, "bool");
    *out = kv->value.v.u != 0;
    return TS_OK;
}

ts_status ts_gguf_get_str(const ts_gguf *g, const char *key, ts_gguf_str *out) {
    const ts_gguf_kv *kv;
    TS_TRY(find_kv(g, key, &kv));
    if (kv->value.type != TS_GGUF_STRING) return wrong_type(kv, "string");
    *out = kv->value.v.str;
    return TS_OK;
}

ts_status ts_gguf_get_arr(const ts_gguf *g, const char *key, const ts_gguf_value **out) {
    const ts_gguf_kv *kv;
    TS_TRY(find_kv(g, key, &kv));
    if (kv->value.type != TS_GGUF_ARRAY) return wrong_type(kv, "array");
    *out = &kv->value;
    return TS_OK;
}
