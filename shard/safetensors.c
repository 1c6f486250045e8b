/* safetensors.c: see safetensors.h.
 *
 * DESIGN: one ts_st holds every tensor of every shard in one array (header order, shard
 * by shard), a second array of indices sorted by name for ts_st_find (bsearch), the
 * metadata as owned key/value pairs, and the shard mappings. Parsing one image:
 *   header_len (u64 LE) -> bounds -> json_loadb(JSON_REJECT_DUPLICATES) -> per entry
 *   dtype/shape/data_offsets checks -> overlap check (entries sorted by begin).
 * Jansson allocates with plain malloc (its allocator is process-global, so it is not
 * redirected here); every json_t is released before returning. Everything else goes
 * through ts_malloc, so fault injection reaches every allocation of ours.
 * Tensor data is read with memcpy (no alignment assumed); the host is little-endian
 * like the format (x86-64, aarch64).
 */
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "mapfile.h"
#include "quant.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* Longest tensor name / key quoted in an error message (the message buffer is 1 KiB). */
#define NAME_FMT "%.200s"

typedef struct {
    char *key;
    char *value;
} st_meta;

struct ts_st {
    ts_st_tensor *tensors;
    size_t n_tensors, cap_tensors;
    size_t *by_name; /* indices into tensors, sorted by name */
    st_meta *meta;
    size_t n_meta, cap_meta;
    ts_mapfile *shards; /* ts_st_open only */
    size_t n_shards;
};

static const struct {
    const char *name;
    size_t size;
} g_dtypes[TS_ST_DTYPE_COUNT_] = {
    [TS_ST_BOOL] = {"BOOL", 1},       [TS_ST_U8] = {"U8", 1},
    [TS_ST_I8] = {"I8", 1},           [TS_ST_I16] = {"I16", 2},
    [TS_ST_U16] = {"U16", 2},         [TS_ST_F16] = {"F16", 2},
    [TS_ST_BF16] = {"BF16", 2},       [TS_ST_I32] = {"I32", 4},
    [TS_ST_U32] = {"U32", 4},         [TS_ST_F32] = {"F32", 4},
    [TS_ST_F64] = {"F64", 8},         [TS_ST_I64] = {"I64", 8},
    [TS_ST_U64] = {"U64", 8},         [TS_ST_F8_E4M3] = {"F8_E4M3", 1},
    [TS_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *ts_st_dtype_name(ts_st_dtype t) {
    if ((int)t < 0 || t >= TS_ST_DTYPE_COUNT_) return "?";
    return g_dtypes[t].name;
}

size_t ts_st_dtype_size(ts_st_dtype t) {
    if ((int)t < 0 || t >= TS_ST_DTYPE_COUNT_) return 0;
    return g_dtypes[t].size;
}

static bool dtype_from_name(const char *s, ts_st_dtype *out) {
    for (int i = 0; i < TS_ST_DTYPE_COUNT_; i++) {
        if (strcmp(s, g_dtypes[i].name) == 0) {
            *out = (ts_st_dtype)i;
            return true;
        }
    }
    return false;
}

/* ---- containers ---- */

static ts_status push_tensor(ts_st *st, ts_st_tensor **out) {
    if (st->n_tensors == st->cap_tensors) {
        size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 16, bytes;
        if (!ts_mul_size(cap, sizeof *st->tensors, &bytes))
            return TS_FAIL(TS_NOMEM, "too many tensors");
        ts_st_tensor *t = ts_realloc(st->tensors, bytes);
        if (!t) return TS_FAIL(TS_NOMEM, "tensor table (%zu entries)", cap);
        st->tensors = t;
        st->cap_tensors = cap;
    }
    *out = &st->tensors[st->n_tensors];
    memset(*out, 0, sizeof **out);
    return TS_OK;
}

static ts_status push_meta(ts_st *st, const char *key, const char *value) {
    if (st->n_meta == st->cap_meta) {
        size_t cap = st->cap_meta ? st->cap_meta * 2 : 8, bytes;
        if (!ts_mul_size(cap, sizeof *st->meta, &bytes))
            return TS_FAIL(TS_NOMEM, "too many metadata entries");
        st_meta *m = ts_realloc(st->meta, bytes);
        if (!m) return TS_FAIL(TS_NOMEM, "metadata table (%zu entries)", cap);
        st->meta = m;
        st->cap_meta = cap;
    }
    char *k = ts_strdup(key);
    char *v = k ? ts_strdup(value) : NULL;
    if (!v) {
        ts_free(k);
        return TS_FAIL(TS_NOMEM, "metadata entry");
    }
    st->meta[st->n_meta].key = k;
    st->meta[st->n_meta].value = v;
    st->n_meta++;
    return TS_OK;
}

void ts_st_close(ts_st *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) ts_free(st->tensors[i].name);
    ts_free(st->tensors);
    ts_free(st->by_name);
    for (size_t i = 0; i < st->n_meta; i++) {
        ts_free(st->meta[i].key);
        ts_free(st->meta[i].value);
    }
    ts_free(st->meta);
    for (size_t i = 0; i < st->n_shards; i++) ts_mapfile_close(&st->shards[i]);
    ts_free(st->shards);
    ts_free(st);
}

/* ---- one image ---- */

/* Reads a JSON integer >= 0 into *out; false if not an integer or negative. */
static bool json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return false;
    json_int_t i = json_integer_value(v);
    if (i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

static ts_status parse_metadata(ts_st *st, const char *fname, json_t *obj) {
    if (!json_is_object(obj))
        return TS_FAIL(TS_FORMAT, "%s: __metadata__ is not an object", fname);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!json_is_string(v))
            return TS_FAIL(TS_FORMAT, "%s: __metadata__ '" NAME_FMT "' is not a string", fname,
                           key);
        TS_TRY(push_meta(st, key, json_string_value(v)));
    }
    return TS_OK;
}

typedef struct {
    uint64_t begin, end;
    size_t idx; /* into st->tensors */
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Checks one tensor entry and appends it (name copied). */
static ts_status parse_entry(ts_st *st, const char *fname, const char *name, json_t *e,
                             const uint8_t *data, uint64_t data_size, uint32_t shard,
                             span *sp) {
    if (!json_is_object(e))
        return TS_FAIL(TS_FORMAT, "%s: tensor '" NAME_FMT "': entry is not an object", fname,
                       name);
    json_t *jd = json_object_get(e, "dtype");
    json_t *js = json_object_get(e, "shape");
    json_t *jo = json_object_get(e, "data_offsets");
    if (!jd || !json_is_string(jd))
        return TS_FAIL(TS_FORMAT, "%s: tensor '" NAME_FMT "': dtype %s", fname, name,
                       jd ? "is not a string" : "missing");
    ts_st_dtype dt;
    if (!dtype_from_name(json_string_value(jd), &dt))
        return TS_FAIL(TS_FORMAT, "%s: tensor '" NAME_FMT "': dtype '%.40s' unknown", fname,
                       name, json_string_value(jd));
    if (!js || !json_is_array(js))
        return TS_FAIL(TS_FORMAT, "%s: tensor '" NAME_FMT "': shape %s", fname, name,
                       js ? "is not an array" : "missing");
    size_t nd = json_array_size(js);
    if (nd > TS_ST_MAX_DIMS)
        return TS_FAIL(TS_UNSUPPORTED, "%s: tensor '" NAME_FMT "': shape has %zu dims (max %d)",
                       fname, name, nd, TS_ST_MAX_DIMS);
    int64_t shape[TS_ST_MAX_DIMS] = {0};
    uint64_t count = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        uint64_t v;
        if (!json_uint(d, &v))
            return TS_FAIL(TS_FORMAT,
                           "%s: tensor '" NAME_FMT "': shape[%zu] is not a non-negative integer",
                           fname, name, i);
        shape[i] = (int64_t)v;
        if (!ts_mul_u64(count, v, &count)) overflow = true;
    }
    if (!overflow && count > (uint64_t)INT64_MAX) overflow = true;
    uint64_t nbytes = 0;
    if (overflow || !ts_mul_u64(count, g_dtypes[dt].size, &nbytes) || nbytes > SIZE_MAX)
        return TS_FAIL(TS_FORMAT, "%s: tensor '" NAME_FMT "': shape size overflows", fname,
                       name);
    if (!jo || !json_is_array(jo) || json_array_size(jo) != 2)
        return TS_FAIL(TS_FORMAT, "%s: tensor '" NAME_FMT "': data_offsets %s", fname, name,
                       !jo ? "missing" : "is not an array of 2 integers");
    uint64_t begin, end;
    if (!json_uint(json_array_get(jo, 0), &begin) || !json_uint(json_array_get(jo, 1), &end))
        return TS_FAIL(TS_FORMAT,
                       "%s: tensor '" NAME_FMT "': data_offsets are not non-negative integers",
                       fname, name);
    if (begin > end)
        return TS_FAIL(TS_FORMAT,
                       "%s: tensor '" NAME_FMT "': data_offsets [%" PRIu64 ", %" PRIu64
                       "] (begin > end)",
                       fname, name, begin, end);
    if (end > data_size)
        return TS_FAIL(TS_FORMAT,
                       "%s: tensor '" NAME_FMT "': data_offsets [%" PRIu64 ", %" PRIu64
                       "] past the end of the data (%" PRIu64 " bytes)",
                       fname, name, begin, end, data_size);
    if (end - begin != nbytes)
        return TS_FAIL(TS_FORMAT,
                       "%s: tensor '" NAME_FMT "': data_offsets [%" PRIu64 ", %" PRIu64
                       "] hold %" PRIu64 " bytes but shape x %s needs %" PRIu64,
                       fname, name, begin, end, end - begin, g_dtypes[dt].name, nbytes);

    ts_st_tensor *t = NULL;
    TS_TRY(push_tensor(st, &t));
    t->name = ts_strdup(name);
    if (!t->name) return TS_FAIL(TS_NOMEM, "tensor name");
    t->dtype = dt;
    t->n_dims = (uint32_t)nd;
    memcpy(t->shape, shape, sizeof shape);
    t->n_elems = (int64_t)count;
    t->nbytes = (size_t)nbytes;
    t->data = data + begin; /* data may be NULL only when data_size == 0: begin == 0 */
    t->shard = shard;
    sp->begin = begin;
    sp->end = end;
    sp->idx = st->n_tensors;
    st->n_tensors++;
    return TS_OK;
}

/* Parses one image into st; fname names it in messages. */
static ts_status parse_image(ts_st *st, const char *fname, const uint8_t *buf, size_t len,
                             uint32_t shard) {
    if (!buf && len) return TS_FAIL(TS_INVAL, "buf is NULL");
    if (len < 8)
        return TS_FAIL(TS_FORMAT, "%s: %zu bytes, too short for the header length", fname, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > TS_ST_MAX_HEADER)
        return TS_FAIL(TS_FORMAT, "%s: header length %" PRIu64 " exceeds the limit (%u)", fname,
                       hlen, TS_ST_MAX_HEADER);
    if (hlen > (uint64_t)(len - 8))
        return TS_FAIL(TS_FORMAT, "%s: header length %" PRIu64 " past the end of the file (%zu bytes)",
                       fname, hlen, len);
    const char *hdr = (const char *)buf + 8;
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_size = (uint64_t)(len - 8 - hlen);

    json_error_t jerr;
    json_t *root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return TS_FAIL(TS_FORMAT, "%s: header JSON error at line %d column %d: %s", fname,
                       jerr.line, jerr.column, jerr.text);
    ts_status rc = TS_OK;
    span *spans = NULL;
    if (!json_is_object(root)) {
        rc = TS_FAIL(TS_FORMAT, "%s: header is not a JSON object", fname);
        goto done;
    }
    size_t n = json_object_size(root);
    spans = ts_calloc(n ? n : 1, sizeof *spans);
    if (!spans) {
        rc = TS_FAIL(TS_NOMEM, "span table (%zu entries)", n);
        goto done;
    }
    size_t ns = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            TS_TRY_GOTO(parse_metadata(st, fname, v), rc, done);
            continue;
        }
        TS_TRY_GOTO(parse_entry(st, fname, key, v, data, data_size, shard, &spans[ns]), rc,
                    done);
        ns++;
    }
    qsort(spans, ns, sizeof *spans, span_cmp);
    for (size_t i = 1; i < ns; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            const span *a = &spans[i - 1], *b = &spans[i];
            rc = TS_FAIL(TS_FORMAT,
                         "%s: tensor '" NAME_FMT "': data_offsets [%" PRIu64 ", %" PRIu64
                         "] overlap tensor '" NAME_FMT "' [%" PRIu64 ", %" PRIu64 "]",
                         fname, st->tensors[b->idx].name, b->begin, b->end,
                         st->tensors[a->idx].name, a->begin, a->end);
            goto done;
        }
    }
done:
    ts_free(spans);
    json_decref(root);
    return rc;
}

/* ---- name index ---- */

/* Builds the sorted name index; rejects duplicate names (across shards). */
static ts_status build_index(ts_st *st) {
    st->by_name = ts_malloc(st->n_tensors ? st->n_tensors * sizeof(size_t) : 1);
    if (!st->by_name) return TS_FAIL(TS_NOMEM, "name index (%zu entries)", st->n_tensors);
    for (size_t i = 0; i < st->n_tensors; i++) st->by_name[i] = i;
    /* stable bottom-up merge sort (qsort has no context argument in C17) */
    size_t n = st->n_tensors;
    size_t *tmp = ts_malloc(n ? n * sizeof(size_t) : 1);
    if (!tmp) return TS_FAIL(TS_NOMEM, "name index (%zu entries)", n);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (strcmp(st->tensors[st->by_name[j]].name, st->tensors[st->by_name[i]].name) < 0)
                    tmp[k++] = st->by_name[j++];
                else
                    tmp[k++] = st->by_name[i++];
            }
            while (i < mid) tmp[k++] = st->by_name[i++];
            while (j < hi) tmp[k++] = st->by_name[j++];
        }
        memcpy(st->by_name, tmp, n * sizeof(size_t));
    }
    ts_free(tmp);
    for (size_t i = 1; i < n; i++) {
        const ts_st_tensor *a = &st->tensors[st->by_name[i - 1]];
        const ts_st_tensor *b = &st->tensors[st->by_name[i]];
        if (strcmp(a->name, b->name) == 0) {
            const char *fa = st->n_shards ? st->shards[a->shard].path : "<memory>";
            const char *fb = st->n_shards ? st->shards[b->shard].path : "<memory>";
            return TS_FAIL(TS_FORMAT, "tensor '" NAME_FMT "' appears in both %.300s and %.300s",
                           a->name, fa, fb);
        }
    }
    return TS_OK;
}

/* ---- public: parse / accessors ---- */

ts_status ts_st_parse(const uint8_t *buf, size_t len, ts_st **out) {
    if (!out) return TS_FAIL(TS_INVAL, "out is NULL");
    *out = NULL;
    ts_st *st = ts_calloc(1, sizeof *st);
    if (!st) return TS_FAIL(TS_NOMEM, "ts_st");
    ts_status rc;
    TS_TRY_GOTO(parse_image(st, "<memory>", buf, len, 0), rc, fail);
    TS_TRY_GOTO(build_index(st), rc, fail);
    *out = st;
    return TS_OK;
fail:
    ts_st_close(st);
    return rc;
}

size_t ts_st_count(const ts_st *st) { return st ? st->n_tensors : 0; }

const ts_st_tensor *ts_st_get(const ts_st *st, size_t i) {
    if (!st || i >= st->n_tensors) return NULL;
    return &st->tensors[i];
}

const ts_st_tensor *ts_st_find(const ts_st *st, const char *name) {
    if (!st || !name || !st->by_name) return NULL;
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ts_st_tensor *t = &st->tensors[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *ts_st_metadata(const ts_st *st, const char *key) {
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

size_t ts_st_shard_count(const ts_st *st) {
    if (!st) return 0;
    return st->n_shards ? st->n_shards : 1;
}

ts_status ts_st_read_f32(const ts_st_tensor *t, int64_t first, int64_t n, float *dst) {
    if (!t || (!dst && n > 0)) return TS_FAIL(TS_INVAL, "tensor or dst is NULL");
    if (first < 0 || n < 0 || first > t->n_elems || n > t->n_elems - first)
        return TS_FAIL(TS_RANGE,
                       "tensor '" NAME_FMT "': elements [%" PRId64 ", +%" PRId64
                       ") outside [0, %" PRId64 ")",
                       t->name ? t->name : "?", first, n, t->n_elems);
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case TS_ST_F32:
        if (n) memcpy(dst, src + (size_t)first * 4, (size_t)n * 4);
        return TS_OK;
    case TS_ST_F16:
    case TS_ST_BF16: {
        const uint8_t *p = src + (size_t)first * 2;
        bool bf = t->dtype == TS_ST_BF16;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + (size_t)i * 2, 2);
            dst[i] = bf ? ts_bf16_to_fp32(h) : ts_fp16_to_fp32(h);
        }
        return TS_OK;
    }
    default:
        return TS_FAIL(TS_UNSUPPORTED, "tensor '" NAME_FMT "': dtype %s cannot be read as F32",
                       t->name ? t->name : "?", ts_st_dtype_name(t->dtype));
    }
}

/* ---- public: open (file, index, directory) ---- */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* "dir/name" (dir may be empty = current directory). */
static char *path_join(const char *dir, size_t dir_len, const char *name) {
    size_t nl = strlen(name), total;
    if (dir_len == 0) return ts_strdup(name);
    if (!ts_add_size(dir_len, nl, &total) || !ts_add_size(total, 2, &total)) return NULL;
    char *p = ts_malloc(total);
    if (!p) return NULL;
    memcpy(p, dir, dir_len);
    p[dir_len] = '/';
    memcpy(p + dir_len + 1, name, nl + 1);
    return p;
}

static ts_status open_single(ts_st *st, const char *path) {
    st->shards = ts_calloc(1, sizeof *st->shards);
    if (!st->shards) return TS_FAIL(TS_NOMEM, "shard table");
    TS_TRY(ts_mapfile_open(path, &st->shards[0]));
    st->n_shards = 1;
    return parse_image(st, path, st->shards[0].data, st->shards[0].size, 0);
}

static bool valid_shard_name(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 &&
           strcmp(s, "..") != 0;
}

static ts_status index_metadata(ts_st *st, const char *path, json_t *m) {
    if (!json_is_object(m)) return TS_FAIL(TS_FORMAT, "%s: metadata is not an object", path);
    const char *key;
    json_t *v;
    json_object_foreach(m, key, v) {
        if (json_is_string(v)) {
            TS_TRY(push_meta(st, key, json_string_value(v)));
        } else if (json_is_integer(v)) { /* "total_size": 123 */
            char num[32];
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            TS_TRY(push_meta(st, key, num));
        } /* other value types are not exposed */
    }
    return TS_OK;
}

static ts_status open_index(ts_st *st, const char *path) {
    ts_mapfile idx;
    TS_TRY(ts_mapfile_open(path, &idx));
    ts_status rc = TS_OK;
    json_t *root = NULL;
    const char **names = NULL; /* distinct shard names, borrowed from root */
    size_t n_names = 0;
    char *full = NULL;
    json_error_t jerr;
    root = json_loadb((const char *)idx.data, idx.size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = TS_FAIL(TS_FORMAT, "%s: JSON error at line %d column %d: %s", path, jerr.line,
                     jerr.column, jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        rc = TS_FAIL(TS_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    /* the index's metadata go first, then each shard's __metadata__ (first match wins) */
    json_t *meta = json_object_get(root, "metadata");
    if (meta && !json_is_null(meta)) TS_TRY_GOTO(index_metadata(st, path, meta), rc, done);
    json_t *wm = json_object_get(root, "weight_map");
    if (!wm || !json_is_object(wm)) {
        rc = TS_FAIL(TS_FORMAT, "%s: weight_map %s", path,
                     wm ? "is not an object" : "missing");
        goto done;
    }
    size_t n_map = json_object_size(wm);
    names = ts_calloc(n_map ? n_map : 1, sizeof *names);
    if (!names) {
        rc = TS_FAIL(TS_NOMEM, "shard name table");
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = TS_FAIL(TS_FORMAT, "%s: weight_map '" NAME_FMT "': shard file is not a string",
                         path, key);
            goto done;
        }
        const char *f = json_string_value(v);
        if (!valid_shard_name(f)) {
            rc = TS_FAIL(TS_FORMAT,
                         "%s: weight_map '" NAME_FMT "': shard file '" NAME_FMT
                         "' is not a plain file name",
                         path, key, f);
            goto done;
        }
        size_t j = 0;
        while (j < n_names && strcmp(names[j], f) != 0) j++;
        if (j == n_names) names[n_names++] = f;
    }
    /* shards live in the index's directory */
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) : 0;
    if (slash && dir_len == 0) dir_len = 1; /* "/x.json": root directory, join gives "//f" */
    st->shards = ts_calloc(n_names ? n_names : 1, sizeof *st->shards);
    if (!st->shards) {
        rc = TS_FAIL(TS_NOMEM, "shard table");
        goto done;
    }
    for (size_t j = 0; j < n_names; j++) {
        full = path_join(path, dir_len, names[j]);
        if (!full) {
            rc = TS_FAIL(TS_NOMEM, "shard path");
            goto done;
        }
        rc = ts_mapfile_open(full, &st->shards[j]);
        if (rc != TS_OK) {
            ts_error_prefix("%.300s: shard '" NAME_FMT "'", path, names[j]);
            goto done;
        }
        st->n_shards = j + 1;
        TS_TRY_GOTO(parse_image(st, full, st->shards[j].data, st->shards[j].size, (uint32_t)j),
                    rc, done);
        ts_free(full);
        full = NULL;
    }
    TS_TRY_GOTO(build_index(st), rc, done);
    json_object_foreach(wm, key, v) {
        const char *f = json_string_value(v);
        const ts_st_tensor *t = ts_st_find(st, key);
        if (!t) {
            rc = TS_FAIL(TS_FORMAT, "%s: weight_map tensor '" NAME_FMT "' not found in %.300s",
                         path, key, f);
            goto done;
        }
        if (strcmp(names[t->shard], f) != 0) {
            rc = TS_FAIL(TS_FORMAT,
                         "%s: weight_map tensor '" NAME_FMT "' is in %.300s, not in %.300s", path,
                         key, names[t->shard], f);
            goto done;
        }
    }
done:
    ts_free(full);
    ts_free(names);
    json_decref(root);
    ts_mapfile_close(&idx);
    return rc;
}

ts_status ts_st_open(const char *path, ts_st **out) {
    if (!out) return TS_FAIL(TS_INVAL, "out is NULL");
    *out = NULL;
    if (!path) return TS_FAIL(TS_INVAL, "path is NULL");
    ts_st *st = ts_calloc(1, sizeof *st);
    if (!st) return TS_FAIL(TS_NOMEM, "ts_st");
    ts_status rc;
    char *p = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t dl = strlen(path);
        while (dl > 1 && path[dl - 1] == '/') dl--;
        p = path_join(path, dl, "model.safetensors.index.json");
        if (!p) {
            rc = TS_FAIL(TS_NOMEM, "path");
            goto fail;
        }
        if (stat(p, &sb) == 0) {
            TS_TRY_GOTO(open_index(st, p), rc, fail);
        } else {
            ts_free(p);
            p = path_join(path, dl, "model.safetensors");
            if (!p) {
                rc = TS_FAIL(TS_NOMEM, "path");
                goto fail;
            }
            if (stat(p, &sb) != 0) {
                rc = TS_FAIL(TS_IO,
                             "%.300s: directory holds neither model.safetensors.index.json nor "
                             "model.safetensors",
                             path);
                goto fail;
            }
            TS_TRY_GOTO(open_single(st, p), rc, fail);
            TS_TRY_GOTO(build_index(st), rc, fail);
        }
    } else if (ends_with(path, ".json")) {
        TS_TRY_GOTO(open_index(st, path), rc, fail);
    } else {
        TS_TRY_GOTO(open_single(st, path), rc, fail);
        TS_TRY_GOTO(build_index(st), rc, fail);
    }
    ts_free(p);
    *out = st;
    return TS_OK;
fail:
    ts_free(p);
    ts_st_close(st);
    return rc;
}
