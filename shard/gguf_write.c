/* gguf_write.c: see gguf_write.h.
 *
 * DESIGN: metadata and tensor infos are serialized into a growable header buffer as they
 * are added; tensor data offsets are assigned at declaration (aligned to 32). Writing
 * emits the header, padding, then each tensor's bytes (copied or filled by callback)
 * followed by its alignment padding.
 */
#include "gguf_write.h"

#include <string.h>

#include "alloc.h"
#include "quant.h"

#define W_ALIGN TS_GGUF_DEFAULT_ALIGNMENT

typedef struct {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[TS_GGUF_MAX_DIMS];
    size_t nbytes;
    uint64_t offset;
    uint8_t *data; /* owned copy or NULL */
} w_tensor;

struct ts_gguf_writer {
    uint8_t *kv;      /* serialized kv records */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    w_tensor *t;
    uint64_t n_t, cap_t;
    uint64_t data_size;
};

static ts_status put(ts_gguf_writer *w, const void *p, size_t n) {
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 256;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *nb = ts_realloc(w->kv, cap);
        if (!nb) return TS_FAIL(TS_NOMEM, "gguf writer: %zu bytes", cap);
        w->kv = nb;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return TS_OK;
}
static ts_status put_u32(ts_gguf_writer *w, uint32_t v) { return put(w, &v, 4); }
static ts_status put_u64(ts_gguf_writer *w, uint64_t v) { return put(w, &v, 8); }
static ts_status put_str(ts_gguf_writer *w, const char *s) {
    uint64_t n = strlen(s);
    TS_TRY(put_u64(w, n));
    return put(w, s, n);
}
static ts_status key(ts_gguf_writer *w, const char *k, ts_gguf_vtype t) {
    if (!k || !*k) return TS_FAIL(TS_INVAL, "gguf writer: empty key");
    TS_TRY(put_str(w, k));
    TS_TRY(put_u32(w, (uint32_t)t));
    w->n_kv++;
    return TS_OK;
}

ts_status ts_gguf_writer_init(ts_gguf_writer **out) {
    *out = ts_calloc(1, sizeof **out);
    if (!*out) return TS_FAIL(TS_NOMEM, "gguf writer");
    return TS_OK;
}

void ts_gguf_writer_free(ts_gguf_writer *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_t; i++) {
        ts_free(w->t[i].name);
        ts_free(w->t[i].data);
    }
    ts_free(w->t);
    ts_free(w->kv);
    ts_free(w);
}

ts_status ts_gguf_w_u32(ts_gguf_writer *w, const char *k, uint32_t v) {
    TS_TRY(key(w, k, TS_GGUF_UINT32));
    return put_u32(w, v);
}
ts_status ts_gguf_w_i32(ts_gguf_writer *w, const char *k, int32_t v) {
    TS_TRY(key(w, k, TS_GGUF_INT32));
    return put(w, &v, 4);
}
ts_status ts_gguf_w_f32(ts_gguf_writer *w, const char *k, float v) {
    TS_TRY(key(w, k, TS_GGUF_FLOAT32));
    return put(w, &v, 4);
}
ts_status ts_gguf_w_bool(ts_gguf_writer *w, const char *k, bool v) {
    TS_TRY(key(w, k, TS_GGUF_BOOL));
    uint8_t b = v ? 1 : 0;
    return put(w, &b, 1);
}
ts_status ts_gguf_w_str(ts_gguf_writer *w, const char *k, const char *v) {
    TS_TRY(key(w, k, TS_GGUF_STRING));
    return put_str(w, v);
}
ts_status ts_gguf_w_arr(ts_gguf_writer *w, const char *k, ts_gguf_vtype et, const void *elems,
                        uint64_t n) {
    size_t es = ts_gguf_vtype_size(et), bytes;
    if (!es) return TS_FAIL(TS_INVAL, "gguf writer: array of %s", ts_gguf_vtype_name(et));
    if (!ts_mul_size(es, (size_t)n, &bytes)) return TS_FAIL(TS_INVAL, "array too large");
    TS_TRY(key(w, k, TS_GGUF_ARRAY));
    TS_TRY(put_u32(w, (uint32_t)et));
    TS_TRY(put_u64(w, n));
    return put(w, elems, bytes);
}
ts_status ts_gguf_w_arr_str(ts_gguf_writer *w, const char *k, const char *const *strs,
                            uint64_t n) {
    TS_TRY(key(w, k, TS_GGUF_ARRAY));
    TS_TRY(put_u32(w, TS_GGUF_STRING));
    TS_TRY(put_u64(w, n));
    for (uint64_t i = 0; i < n; i++) TS_TRY(put_str(w, strs[i]));
    return TS_OK;
}

ts_status ts_gguf_w_tensor(ts_gguf_writer *w, const char *name, uint32_t type,
                           uint32_t n_dims, const int64_t *ne, const void *data) {
    if (!name || !*name || n_dims < 1 || n_dims > TS_GGUF_MAX_DIMS)
        return TS_FAIL(TS_INVAL, "gguf writer: bad tensor '%s'", name ? name : "(null)");
    for (uint64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return TS_FAIL(TS_INVAL, "gguf writer: duplicate tensor '%s'", name);
    size_t row, nbytes = 0;
    if (!ts_type_row_bytes(type, ne[0], &row))
        return TS_FAIL(TS_INVAL, "gguf writer: tensor '%s': ne[0]=%lld is not whole blocks of "
                       "type %u", name, (long long)ne[0], type);
    nbytes = row;
    for (uint32_t d = 1; d < n_dims; d++)
        if (ne[d] < 0 || !ts_mul_size(nbytes, (size_t)ne[d], &nbytes))
            return TS_FAIL(TS_INVAL, "gguf writer: tensor '%s' too large", name);
    if (w->n_t == w->cap_t) {
        uint64_t cap = w->cap_t ? w->cap_t * 2 : 64;
        w_tensor *nt = ts_realloc(w->t, cap * sizeof *nt);
        if (!nt) return TS_FAIL(TS_NOMEM, "gguf writer tensors");
        w->t = nt;
        w->cap_t = cap;
    }
    w_tensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = ts_strdup(name);
    if (!t->name) return TS_FAIL(TS_NOMEM, "tensor name");
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < TS_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    t->offset = w->data_size;
    if (data) {
        t->data = ts_malloc(nbytes ? nbytes : 1);
        if (!t->data) {
            ts_free(t->name);
            return TS_FAIL(TS_NOMEM, "tensor '%s' data (%zu bytes)", name, nbytes);
        }
        memcpy(t->data, data, nbytes);
    }
    w->n_t++;
    w->data_size += (nbytes + W_ALIGN - 1) / W_ALIGN * W_ALIGN;
    return TS_OK;
}

/* Header = magic, version, counts, kv records, tensor infos, padding. */
static ts_status header(ts_gguf_writer *w, uint8_t **out, size_t *len) {
    ts_gguf_writer h = {0};
    ts_status rc = TS_OK;
    uint32_t version = 3;
    TS_TRY_GOTO(put(&h, TS_GGUF_MAGIC, 4), rc, fail);
    TS_TRY_GOTO(put_u32(&h, version), rc, fail);
    TS_TRY_GOTO(put_u64(&h, w->n_t), rc, fail);
    TS_TRY_GOTO(put_u64(&h, w->n_kv), rc, fail);
    if (w->kv_len) TS_TRY_GOTO(put(&h, w->kv, w->kv_len), rc, fail);
    for (uint64_t i = 0; i < w->n_t; i++) {
        const w_tensor *t = &w->t[i];
        TS_TRY_GOTO(put_str(&h, t->name), rc, fail);
        TS_TRY_GOTO(put_u32(&h, t->n_dims), rc, fail);
        for (uint32_t d = 0; d < t->n_dims; d++) TS_TRY_GOTO(put_u64(&h, (uint64_t)t->ne[d]), rc, fail);
        TS_TRY_GOTO(put_u32(&h, t->type), rc, fail);
        TS_TRY_GOTO(put_u64(&h, t->offset), rc, fail);
    }
    static const uint8_t zeros[W_ALIGN];
    size_t pad = (W_ALIGN - h.kv_len % W_ALIGN) % W_ALIGN;
    if (pad) TS_TRY_GOTO(put(&h, zeros, pad), rc, fail);
    *out = h.kv;
    *len = h.kv_len;
    return TS_OK;
fail:
    ts_free(h.kv);
    return rc;
}

typedef ts_status (*sink_fn)(void *sctx, const void *p, size_t n);

static ts_status emit(ts_gguf_writer *w, sink_fn sink, void *sctx, ts_gguf_fill_fn fill,
                      void *ctx) {
    uint8_t *hdr = NULL;
    size_t hlen = 0;
    TS_TRY(header(w, &hdr, &hlen));
    ts_status rc = sink(sctx, hdr, hlen);
    ts_free(hdr);
    if (rc != TS_OK) return rc;
    static const uint8_t zeros[W_ALIGN];
    for (uint64_t i = 0; i < w->n_t; i++) {
        const w_tensor *t = &w->t[i];
        if (t->data) {
            TS_TRY(sink(sctx, t->data, t->nbytes));
        } else {
            if (!fill) return TS_FAIL(TS_INVAL, "tensor '%s' has no data and no fill", t->name);
            uint8_t *tmp = ts_malloc(t->nbytes ? t->nbytes : 1);
            if (!tmp) return TS_FAIL(TS_NOMEM, "tensor '%s' buffer (%zu bytes)", t->name, t->nbytes);
            rc = fill(ctx, i, t->name, t->type, t->ne, tmp, t->nbytes);
            if (rc == TS_OK) rc = sink(sctx, tmp, t->nbytes);
            ts_free(tmp);
            if (rc != TS_OK) return rc;
        }
        size_t pad = (W_ALIGN - t->nbytes % W_ALIGN) % W_ALIGN;
        if (pad) TS_TRY(sink(sctx, zeros, pad));
    }
    return TS_OK;
}

static ts_status sink_file(void *sctx, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, (FILE *)sctx) != n) return TS_FAIL(TS_IO, "gguf writer: write failed");
    return TS_OK;
}

ts_status ts_gguf_w_write(ts_gguf_writer *w, FILE *f, ts_gguf_fill_fn fill, void *ctx) {
    return emit(w, sink_file, f, fill, ctx);
}

static ts_status sink_mem(void *sctx, const void *p, size_t n) {
    return put((ts_gguf_writer *)sctx, p, n);
}

ts_status ts_gguf_w_to_buffer(ts_gguf_writer *w, uint8_t **buf, size_t *len) {
    ts_gguf_writer m = {0};
    ts_status rc = emit(w, sink_mem, &m, NULL, NULL);
    if (rc != TS_OK) {
        ts_free(m.kv);
        return rc;
    }
    *buf = m.kv;
    *len = m.kv_len;
    return TS_OK;
}
