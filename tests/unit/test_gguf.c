/* test_gguf.c: the GGUF reader (shard/gguf.c) against
 *   - images built here byte by byte (every value type, nested and string arrays, several
 *     tensor types, out-of-order tensor infos, a zero-size tensor);
 *   - a fixture written by the `gguf` Python package (tests/tools/make_gguf_fixtures.py),
 *     checked against its small.expected.json;
 *   - every truncation of both, hand-made corruptions (absurd counts, bad shapes, offsets,
 *     duplicates, bad UTF-8, unknown types, bad alignment), each checking the status and
 *     that the message names the field;
 *   - allocation failures at every allocation (TS_NOMEM, no leak);
 *   - the real Gemma 3 270M file when TESSERA_MODEL_270M names it (skipped otherwise). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "alloc.h"
#include "gguf.h"
#include "quant.h"

#define FIX TS_TEST_DATA "/fixtures/gguf"

static size_t g_base_bytes;

static int setup(void **state) {
    (void)state;
    ts_alloc_fail_after(-1);
    g_base_bytes = ts_alloc_bytes_in_use();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ts_alloc_fail_after(-1);
    assert_int_equal(ts_alloc_bytes_in_use(), g_base_bytes);
    return 0;
}

/* ---- byte builder ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_le(bb *b, uint64_t v, int n) {
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, t, (size_t)n);
}
static void bb_u8(bb *b, uint8_t v) { bb_le(b, v, 1); }
static void bb_u16(bb *b, uint16_t v) { bb_le(b, v, 2); }
static void bb_u32(bb *b, uint32_t v) { bb_le(b, v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_le(b, v, 8); }
static void bb_f32(bb *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    bb_u32(b, u);
}
static void bb_f64(bb *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    bb_u64(b, u);
}
static void bb_strn(bb *b, const char *s, size_t n) {
    bb_u64(b, n);
    bb_put(b, s, n);
}
static void bb_str(bb *b, const char *s) { bb_strn(b, s, strlen(s)); }
static void bb_pad(bb *b, size_t align) {
    while (b->n % align) bb_u8(b, 0);
}
static void bb_patch(bb *b, size_t at, uint64_t v, int n) {
    assert_true(at + (size_t)n <= b->n);
    for (int i = 0; i < n; i++) b->p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void bb_free(bb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void hdr(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void kv_head(bb *b, const char *key, uint32_t type) {
    bb_str(b, key);
    bb_u32(b, type);
}
static void kv_u32(bb *b, const char *key, uint32_t v) {
    kv_head(b, key, TS_GGUF_UINT32);
    bb_u32(b, v);
}
static void tinfo(bb *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                  uint64_t offset) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, (uint64_t)ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* ---- the in-test image ---- */

typedef struct {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    uint64_t offset;
    size_t nbytes;
} tspec;

/* Infos deliberately not in offset order; 0-byte tensor at the very end of the data. */
static const tspec k_tensors[] = {
    {"blk.0.ffn_down.weight", 4, {256, 1, 1, 2}, TS_TYPE_Q4_K, 224, 288},
    {"a.f32", 1, {8, 1, 1, 1}, TS_TYPE_F32, 0, 32},
    {"b.f16", 2, {16, 2, 1, 1}, TS_TYPE_F16, 32, 64},
    {"c.q8_0", 2, {32, 3, 1, 1}, TS_TYPE_Q8_0, 96, 102},
    {"e.empty", 2, {0, 4, 1, 1}, TS_TYPE_BF16, 512, 0},
};
#define N_TENSORS (sizeof k_tensors / sizeof k_tensors[0])
#define DATA_BYTES 512
#define N_KV 22

typedef struct {
    size_t key0_len;      /* length field of the first key */
    size_t str_len;       /* length field of t.str's value */
    size_t vtype_u8;      /* value type field of t.u8 */
    size_t bool_val;      /* t.bool's value byte */
    size_t arr_i16_n;     /* n field of t.arr_i16 */
    size_t arr_str_n;     /* n field of t.arr_str */
    size_t arr_str_elem0; /* length field of t.arr_str[0] */
    size_t arr_bool_elem1;
    size_t nested_et;     /* elem_type field of t.nested */
    size_t t_info[N_TENSORS]; /* start of each tensor info */
    size_t t_ndims[N_TENSORS];
    size_t t_ne0[N_TENSORS];
    size_t t_type[N_TENSORS];
    size_t t_off[N_TENSORS];
    size_t infos_end;
    size_t data;
} marks;

static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + 3); }

static void build_full(bb *b, marks *m, uint32_t version) {
    marks mm;
    if (!m) m = &mm;
    memset(b, 0, sizeof *b);
    hdr(b, version, N_TENSORS, N_KV);
    m->key0_len = b->n;
    kv_head(b, "t.u8", TS_GGUF_UINT8);
    m->vtype_u8 = b->n - 4;
    bb_u8(b, 200);
    kv_head(b, "t.i8", TS_GGUF_INT8), bb_u8(b, (uint8_t)-5);
    kv_head(b, "t.u16", TS_GGUF_UINT16), bb_u16(b, 60000);
    kv_head(b, "t.i16", TS_GGUF_INT16), bb_u16(b, (uint16_t)-30000);
    kv_u32(b, "t.u32", 123456789);
    kv_head(b, "t.i32", TS_GGUF_INT32), bb_u32(b, (uint32_t)-123456789);
    kv_head(b, "t.f32", TS_GGUF_FLOAT32), bb_f32(b, 0.25f);
    kv_head(b, "t.bool", TS_GGUF_BOOL);
    m->bool_val = b->n;
    bb_u8(b, 1);
    kv_head(b, "t.str", TS_GGUF_STRING);
    m->str_len = b->n;
    bb_str(b, "h\xc3\xa9llo");
    kv_head(b, "t.u64", TS_GGUF_UINT64), bb_u64(b, 0x123456789abcdef0ull);
    kv_head(b, "t.i64", TS_GGUF_INT64), bb_u64(b, (uint64_t)-0x123456789abcll);
    kv_head(b, "t.f64", TS_GGUF_FLOAT64), bb_f64(b, 3.5e100);
    /* arrays */
    kv_head(b, "t.arr_i16", TS_GGUF_ARRAY), bb_u32(b, TS_GGUF_INT16);
    m->arr_i16_n = b->n;
    bb_u64(b, 3), bb_u16(b, 1), bb_u16(b, (uint16_t)-2), bb_u16(b, 3);
    kv_head(b, "t.arr_str", TS_GGUF_ARRAY), bb_u32(b, TS_GGUF_STRING);
    m->arr_str_n = b->n;
    bb_u64(b, 3);
    m->arr_str_elem0 = b->n;
    bb_str(b, "a"), bb_str(b, ""), bb_str(b, "ccc");
    kv_head(b, "t.arr_empty", TS_GGUF_ARRAY), bb_u32(b, TS_GGUF_UINT32), bb_u64(b, 0);
    kv_head(b, "t.arr_bool", TS_GGUF_ARRAY), bb_u32(b, TS_GGUF_BOOL), bb_u64(b, 2);
    bb_u8(b, 1);
    m->arr_bool_elem1 = b->n;
    bb_u8(b, 0);
    kv_head(b, "t.arr_f32", TS_GGUF_ARRAY), bb_u32(b, TS_GGUF_FLOAT32), bb_u64(b, 2);
    bb_f32(b, -1.5f), bb_f32(b, 1e30f);
    /* [[u8: 1, 2], [string: "x", "yz"], [array: [f64: 2.5]], [array: (empty)]] */
    kv_head(b, "t.nested", TS_GGUF_ARRAY);
    m->nested_et = b->n;
    bb_u32(b, TS_GGUF_ARRAY), bb_u64(b, 4);
    bb_u32(b, TS_GGUF_UINT8), bb_u64(b, 2), bb_u8(b, 1), bb_u8(b, 2);
    bb_u32(b, TS_GGUF_STRING), bb_u64(b, 2), bb_str(b, "x"), bb_str(b, "yz");
    bb_u32(b, TS_GGUF_ARRAY), bb_u64(b, 1);
    bb_u32(b, TS_GGUF_FLOAT64), bb_u64(b, 1), bb_f64(b, 2.5);
    bb_u32(b, TS_GGUF_ARRAY), bb_u64(b, 0);
    kv_head(b, "t.k\xc3\xbc\xe4\xb8\xad", TS_GGUF_UINT8), bb_u8(b, 0); /* UTF-8 key */
    kv_head(b, "t.small_u64", TS_GGUF_UINT64), bb_u64(b, 5);
    kv_head(b, "t.neg", TS_GGUF_INT32), bb_u32(b, (uint32_t)-1);
    kv_head(b, "t.f64_big", TS_GGUF_FLOAT64), bb_f64(b, 1e300);
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tspec *t = &k_tensors[i];
        m->t_info[i] = b->n;
        m->t_ndims[i] = b->n + 8 + strlen(t->name);
        m->t_ne0[i] = m->t_ndims[i] + 4;
        m->t_type[i] = m->t_ne0[i] + 8 * t->n_dims;
        m->t_off[i] = m->t_type[i] + 4;
        tinfo(b, t->name, t->n_dims, t->ne, t->type, t->offset);
    }
    m->infos_end = b->n;
    bb_pad(b, TS_GGUF_DEFAULT_ALIGNMENT);
    m->data = b->n;
    for (size_t i = 0; i < DATA_BYTES; i++) bb_u8(b, pattern(i));
}

/* ---- helpers ---- */

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *b = malloc(n ? (size_t)n : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Parses an exact-size heap copy (so ASan sees overreads); returns the status. */
static ts_status parse_copy(const uint8_t *p, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n) memcpy(c, p, n);
    ts_gguf *g = (ts_gguf *)1;
    ts_clear_error();
    ts_status rc = ts_gguf_parse(c, n, &g);
    if (rc == TS_OK) {
        assert_non_null(g);
        ts_gguf_close(g);
    } else {
        assert_null(g);
    }
    free(c);
    assert_int_equal(ts_alloc_bytes_in_use(), g_base_bytes);
    return rc;
}

/* Expects parsing to fail with `want`, the message mentioning each of the words. */
#define expect_fail(p, n, want, ...) expect_fail_((p), (n), (want), __LINE__, __VA_ARGS__, NULL)
static void expect_fail_(const uint8_t *p, size_t n, ts_status want, int line, ...) {
    ts_status rc = parse_copy(p, n);
    const char *msg = ts_last_error();
    if (rc != want) {
        print_error("line %d: got %s (%s), want %s\n", line, ts_status_name(rc), msg,
                    ts_status_name(want));
        fail();
    }
    if (strncmp(msg, "gguf: ", 6) != 0) {
        print_error("line %d: message '%s' does not start with 'gguf: '\n", line, msg);
        fail();
    }
    va_list ap;
    va_start(ap, line);
    const char *w;
    while ((w = va_arg(ap, const char *)) != NULL) {
        if (!strstr(msg, w)) {
            print_error("line %d: message '%s' lacks '%s'\n", line, msg, w);
            fail();
        }
    }
    va_end(ap);
}

static bool str_eq(ts_gguf_str s, const char *c) {
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* ---- tests: valid images ---- */

static void check_full(const ts_gguf *g, const uint8_t *buf, size_t len, uint32_t version) {
    assert_int_equal(g->version, version);
    assert_int_equal(g->n_kv, N_KV);
    assert_int_equal(g->n_tensors, N_TENSORS);
    assert_int_equal(g->alignment, 32);
    assert_ptr_equal(g->buf, buf);
    assert_int_equal(g->size, len);
    assert_int_equal(g->data_offset, len - DATA_BYTES);
    assert_int_equal(g->data_offset % 32, 0);

    const ts_gguf_kv *kv = ts_gguf_find(g, "t.u8");
    assert_non_null(kv);
    assert_ptr_equal(kv, &g->kv[0]);
    assert_int_equal(kv->offset, 24);
    assert_int_equal(kv->value.type, TS_GGUF_UINT8);
    assert_int_equal(kv->value.v.u, 200);
    kv = ts_gguf_find(g, "t.i8");
    assert_int_equal(kv->value.type, TS_GGUF_INT8);
    assert_true(kv->value.v.i == -5);
    assert_int_equal(ts_gguf_find(g, "t.u16")->value.v.u, 60000);
    assert_true(ts_gguf_find(g, "t.i16")->value.v.i == -30000);
    assert_int_equal(ts_gguf_find(g, "t.u32")->value.v.u, 123456789);
    assert_true(ts_gguf_find(g, "t.i32")->value.v.i == -123456789);
    assert_true(ts_gguf_find(g, "t.f32")->value.v.f == 0.25);
    assert_int_equal(ts_gguf_find(g, "t.bool")->value.type, TS_GGUF_BOOL);
    assert_int_equal(ts_gguf_find(g, "t.bool")->value.v.u, 1);
    kv = ts_gguf_find(g, "t.str");
    assert_int_equal(kv->value.type, TS_GGUF_STRING);
    assert_true(str_eq(kv->value.v.str, "h\xc3\xa9llo"));
    assert_true((const uint8_t *)kv->value.v.str.ptr > buf &&
                (const uint8_t *)kv->value.v.str.ptr < buf + len); /* borrowed */
    assert_int_equal(ts_gguf_find(g, "t.u64")->value.v.u, 0x123456789abcdef0ull);
    assert_true(ts_gguf_find(g, "t.i64")->value.v.i == -0x123456789abcll);
    assert_true(ts_gguf_find(g, "t.f64")->value.v.f == 3.5e100);
    assert_null(ts_gguf_find(g, "t.missing"));
    assert_null(ts_gguf_find(g, "t.u"));
    assert_non_null(ts_gguf_find(g, "t.k\xc3\xbc\xe4\xb8\xad"));

    /* arrays */
    const ts_gguf_value *a;
    assert_int_equal(ts_gguf_get_arr(g, "t.arr_i16", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_INT16);
    assert_int_equal(a->v.arr.n, 3);
    assert_true(ts_gguf_arr_i64(a, 0) == 1 && ts_gguf_arr_i64(a, 1) == -2 &&
                ts_gguf_arr_i64(a, 2) == 3);
    assert_true(ts_gguf_arr_f64(a, 1) == -2.0);
    assert_int_equal(ts_gguf_get_arr(g, "t.arr_str", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_STRING);
    assert_int_equal(a->v.arr.n, 3);
    assert_true(str_eq(a->v.arr.strs[0], "a"));
    assert_true(str_eq(a->v.arr.strs[1], ""));
    assert_true(str_eq(a->v.arr.strs[2], "ccc"));
    assert_int_equal(ts_gguf_get_arr(g, "t.arr_empty", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_UINT32);
    assert_int_equal(a->v.arr.n, 0);
    assert_int_equal(ts_gguf_get_arr(g, "t.arr_bool", &a), TS_OK);
    assert_int_equal(a->v.arr.n, 2);
    assert_int_equal(ts_gguf_arr_u64(a, 0), 1);
    assert_int_equal(ts_gguf_arr_u64(a, 1), 0);
    assert_int_equal(ts_gguf_get_arr(g, "t.arr_f32", &a), TS_OK);
    assert_true(ts_gguf_arr_f64(a, 0) == -1.5 && ts_gguf_arr_f64(a, 1) == (double)1e30f);
    assert_true(ts_gguf_arr_i64(a, 0) == -1);

    assert_int_equal(ts_gguf_get_arr(g, "t.nested", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_ARRAY);
    assert_int_equal(a->v.arr.n, 4);
    const ts_gguf_value *e = &a->v.arr.vals[0];
    assert_int_equal(e->type, TS_GGUF_ARRAY);
    assert_int_equal(e->v.arr.elem_type, TS_GGUF_UINT8);
    assert_int_equal(e->v.arr.n, 2);
    assert_int_equal(ts_gguf_arr_u64(e, 0), 1);
    assert_int_equal(ts_gguf_arr_u64(e, 1), 2);
    e = &a->v.arr.vals[1];
    assert_int_equal(e->v.arr.elem_type, TS_GGUF_STRING);
    assert_true(str_eq(e->v.arr.strs[0], "x") && str_eq(e->v.arr.strs[1], "yz"));
    e = &a->v.arr.vals[2];
    assert_int_equal(e->v.arr.elem_type, TS_GGUF_ARRAY);
    assert_int_equal(e->v.arr.n, 1);
    assert_int_equal(e->v.arr.vals[0].v.arr.elem_type, TS_GGUF_FLOAT64);
    assert_true(ts_gguf_arr_f64(&e->v.arr.vals[0], 0) == 2.5);
    e = &a->v.arr.vals[3];
    assert_int_equal(e->v.arr.elem_type, TS_GGUF_ARRAY);
    assert_int_equal(e->v.arr.n, 0);

    /* tensors */
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tspec *s = &k_tensors[i];
        const ts_gguf_tensor *t = &g->tensors[i];
        assert_string_equal(t->name, s->name);
        assert_ptr_equal(ts_gguf_find_tensor(g, s->name), t);
        assert_int_equal(t->n_dims, s->n_dims);
        int64_t n = 1;
        for (int d = 0; d < 4; d++) {
            assert_true(t->ne[d] == s->ne[d]);
            n *= s->ne[d];
        }
        assert_true(t->n_elems == n);
        assert_int_equal(t->type, s->type);
        assert_int_equal(t->offset, s->offset);
        assert_int_equal(t->nbytes, s->nbytes);
        assert_ptr_equal(t->data, buf + g->data_offset + s->offset);
        for (size_t k = 0; k < t->nbytes; k++) assert_int_equal(t->data[k], pattern(s->offset + k));
    }
    assert_null(ts_gguf_find_tensor(g, "a.f3"));
    assert_null(ts_gguf_find_tensor(g, "nope"));
}

static void test_full_image(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        bb b;
        marks m;
        build_full(&b, &m, version);
        ts_gguf *g = NULL;
        assert_int_equal(ts_gguf_parse(b.p, b.n, &g), TS_OK);
        check_full(g, b.p, b.n, version);
        for (size_t i = 0; i < N_TENSORS; i++)
            assert_int_equal(g->tensors[i].info_offset, m.t_info[i]);
        assert_int_equal(g->data_offset, m.data);
        ts_gguf_close(g);
        bb_free(&b);
    }
}

static void test_getters(void **state) {
    (void)state;
    bb b;
    build_full(&b, NULL, 3);
    ts_gguf *g = NULL;
    assert_int_equal(ts_gguf_parse(b.p, b.n, &g), TS_OK);
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    bool bo;
    ts_gguf_str s;
    const ts_gguf_value *a;

    assert_int_equal(ts_gguf_get_u32(g, "t.u32", &u32), TS_OK);
    assert_int_equal(u32, 123456789);
    assert_int_equal(ts_gguf_get_u32(g, "t.u8", &u32), TS_OK); /* widening */
    assert_int_equal(u32, 200);
    assert_int_equal(ts_gguf_get_u32(g, "t.small_u64", &u32), TS_OK); /* fits */
    assert_int_equal(u32, 5);
    assert_int_equal(ts_gguf_get_u32(g, "t.u64", &u32), TS_FORMAT); /* too big */
    assert_non_null(strstr(ts_last_error(), "t.u64"));
    assert_int_equal(ts_gguf_get_u32(g, "t.neg", &u32), TS_FORMAT); /* negative */
    assert_non_null(strstr(ts_last_error(), "-1"));
    assert_int_equal(ts_gguf_get_u32(g, "t.i16", &u32), TS_FORMAT);
    assert_int_equal(ts_gguf_get_u32(g, "t.f32", &u32), TS_FORMAT);
    assert_int_equal(ts_gguf_get_u32(g, "t.bool", &u32), TS_FORMAT);
    assert_int_equal(ts_gguf_get_u32(g, "t.str", &u32), TS_FORMAT);
    assert_non_null(strstr(ts_last_error(), "string"));
    assert_int_equal(ts_gguf_get_u32(g, "t.absent", &u32), TS_NOT_FOUND);
    assert_non_null(strstr(ts_last_error(), "t.absent"));

    assert_int_equal(ts_gguf_get_u64(g, "t.u64", &u64), TS_OK);
    assert_int_equal(u64, 0x123456789abcdef0ull);
    assert_int_equal(ts_gguf_get_u64(g, "t.u16", &u64), TS_OK);
    assert_int_equal(u64, 60000);
    assert_int_equal(ts_gguf_get_u64(g, "t.i64", &u64), TS_FORMAT);
    assert_int_equal(ts_gguf_get_u64(g, "t.absent", &u64), TS_NOT_FOUND);

    assert_int_equal(ts_gguf_get_i64(g, "t.i64", &i64), TS_OK);
    assert_true(i64 == -0x123456789abcll);
    assert_int_equal(ts_gguf_get_i64(g, "t.i8", &i64), TS_OK);
    assert_true(i64 == -5);
    assert_int_equal(ts_gguf_get_i64(g, "t.u64", &i64), TS_OK); /* 0x1234.. < 2^63 */
    assert_true(i64 == 0x123456789abcdef0ll);
    assert_int_equal(ts_gguf_get_i64(g, "t.f64", &i64), TS_FORMAT);

    assert_int_equal(ts_gguf_get_f32(g, "t.f32", &f), TS_OK);
    assert_true(f == 0.25f);
    assert_int_equal(ts_gguf_get_f32(g, "t.f64_big", &f), TS_FORMAT); /* out of range */
    assert_int_equal(ts_gguf_get_f32(g, "t.u32", &f), TS_FORMAT);
    assert_int_equal(ts_gguf_get_f32(g, "t.absent", &f), TS_NOT_FOUND);

    assert_int_equal(ts_gguf_get_bool(g, "t.bool", &bo), TS_OK);
    assert_true(bo);
    assert_int_equal(ts_gguf_get_bool(g, "t.u8", &bo), TS_FORMAT);
    assert_int_equal(ts_gguf_get_bool(g, "t.absent", &bo), TS_NOT_FOUND);

    assert_int_equal(ts_gguf_get_str(g, "t.str", &s), TS_OK);
    assert_true(str_eq(s, "h\xc3\xa9llo"));
    assert_int_equal(ts_gguf_get_str(g, "t.arr_str", &s), TS_FORMAT);
    assert_int_equal(ts_gguf_get_str(g, "t.absent", &s), TS_NOT_FOUND);

    assert_int_equal(ts_gguf_get_arr(g, "t.str", &a), TS_FORMAT);
    assert_non_null(strstr(ts_last_error(), "array"));
    assert_int_equal(ts_gguf_get_arr(g, "t.absent", &a), TS_NOT_FOUND);

    ts_gguf_close(g);
    bb_free(&b);
}

static void test_misc_api(void **state) {
    (void)state;
    ts_gguf *g = NULL;
    ts_gguf_close(NULL);
    assert_int_equal(ts_gguf_parse(NULL, 10, &g), TS_INVAL);
    assert_int_equal(ts_gguf_parse((const uint8_t *)"GGUF", 4, NULL), TS_INVAL);
    assert_int_equal(ts_gguf_open(NULL, &g), TS_INVAL);
    assert_null(ts_gguf_find(NULL, "x"));
    assert_null(ts_gguf_find_tensor(NULL, "x"));
    assert_string_equal(ts_gguf_vtype_name(TS_GGUF_UINT32), "uint32");
    assert_string_equal(ts_gguf_vtype_name(TS_GGUF_ARRAY), "array");
    assert_string_equal(ts_gguf_vtype_name(TS_GGUF_FLOAT64), "float64");
    assert_string_equal(ts_gguf_vtype_name(13), "?");
    assert_int_equal(ts_gguf_vtype_size(TS_GGUF_BOOL), 1);
    assert_int_equal(ts_gguf_vtype_size(TS_GGUF_INT16), 2);
    assert_int_equal(ts_gguf_vtype_size(TS_GGUF_FLOAT32), 4);
    assert_int_equal(ts_gguf_vtype_size(TS_GGUF_UINT64), 8);
    assert_int_equal(ts_gguf_vtype_size(TS_GGUF_STRING), 0);
    assert_int_equal(ts_gguf_vtype_size(TS_GGUF_ARRAY), 0);
    assert_int_equal(ts_gguf_vtype_size(99), 0);
    assert_true(ts_gguf_vtype_is_int(TS_GGUF_BOOL) && ts_gguf_vtype_is_int(TS_GGUF_INT64));
    assert_false(ts_gguf_vtype_is_int(TS_GGUF_FLOAT32) || ts_gguf_vtype_is_int(TS_GGUF_STRING));
    assert_true(ts_gguf_vtype_is_float(TS_GGUF_FLOAT64));
    assert_false(ts_gguf_vtype_is_float(TS_GGUF_INT32));

    /* no tensors, no kvs: 24 bytes; and zero tensors ending right after the infos */
    bb b = {0};
    hdr(&b, 3, 0, 0);
    assert_int_equal(ts_gguf_parse(b.p, b.n, &g), TS_OK);
    assert_int_equal(g->n_kv, 0);
    assert_int_equal(g->n_tensors, 0);
    assert_int_equal(g->data_offset, 32);
    ts_gguf_close(g);
    bb_free(&b);
    hdr(&b, 2, 0, 1);
    kv_u32(&b, "general.alignment", 256);
    assert_int_equal(ts_gguf_parse(b.p, b.n, &g), TS_OK);
    assert_int_equal(g->alignment, 256);
    assert_int_equal(g->data_offset, 256);
    ts_gguf_close(g);
    bb_free(&b);
}

static void test_open(void **state) {
    (void)state;
    ts_gguf *g = (ts_gguf *)1;
    assert_int_equal(ts_gguf_open("/nonexistent/x.gguf", &g), TS_IO);
    assert_null(g);
    assert_true(strncmp(ts_last_error(), "/nonexistent/x.gguf: ", 21) == 0);

    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    bb b;
    build_full(&b, NULL, 3);
    b.p[0] = 'X';
    assert_int_equal(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    assert_int_equal(ts_gguf_open(path, &g), TS_FORMAT);
    assert_true(strncmp(ts_last_error(), path, strlen(path)) == 0);
    assert_non_null(strstr(ts_last_error(), "gguf: bad magic"));
    /* empty file */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(ts_gguf_open(path, &g), TS_FORMAT);
    assert_non_null(strstr(ts_last_error(), "magic"));
    unlink(path);
    bb_free(&b);
}

/* ---- the fixture from the Python writer ---- */

static int64_t jint64(const json_t *j) {
    if (json_is_string(j)) return strtoll(json_string_value(j), NULL, 10);
    assert_true(json_is_integer(j));
    return (int64_t)json_integer_value(j);
}
static uint64_t juint64(const json_t *j) {
    if (json_is_string(j)) return strtoull(json_string_value(j), NULL, 10);
    assert_true(json_is_integer(j));
    return (uint64_t)json_integer_value(j);
}

static void check_elem(const ts_gguf_value *arr, uint64_t i, const json_t *j) {
    ts_gguf_vtype t = arr->v.arr.elem_type;
    switch (t) {
    case TS_GGUF_STRING:
        assert_true(json_is_string(j));
        assert_int_equal(arr->v.arr.strs[i].len, json_string_length(j));
        assert_memory_equal(arr->v.arr.strs[i].ptr, json_string_value(j),
                            json_string_length(j));
        break;
    case TS_GGUF_BOOL:
        assert_true(json_is_boolean(j));
        assert_int_equal(ts_gguf_arr_u64(arr, i), json_is_true(j) ? 1 : 0);
        break;
    case TS_GGUF_FLOAT32:
    case TS_GGUF_FLOAT64:
        assert_true(ts_gguf_arr_f64(arr, i) == json_number_value(j));
        break;
    case TS_GGUF_INT8:
    case TS_GGUF_INT16:
    case TS_GGUF_INT32:
    case TS_GGUF_INT64:
        assert_true(ts_gguf_arr_i64(arr, i) == jint64(j));
        break;
    default:
        assert_true(ts_gguf_arr_u64(arr, i) == juint64(j));
    }
}

static void check_value(const ts_gguf_value *v, const json_t *j);

static void check_array(const ts_gguf_value *v, const json_t *j) {
    assert_int_equal(v->type, TS_GGUF_ARRAY);
    assert_string_equal(ts_gguf_vtype_name(v->v.arr.elem_type),
                        json_string_value(json_object_get(j, "elem_type")));
    const json_t *vals = json_object_get(j, "values");
    assert_int_equal(v->v.arr.n, json_array_size(vals));
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        if (v->v.arr.elem_type == TS_GGUF_ARRAY)
            check_array(&v->v.arr.vals[i], json_array_get(vals, i));
        else
            check_elem(v, i, json_array_get(vals, i));
    }
}

static void check_value(const ts_gguf_value *v, const json_t *j) {
    switch (v->type) {
    case TS_GGUF_ARRAY: check_array(v, j); break;
    case TS_GGUF_STRING:
        assert_int_equal(v->v.str.len, json_string_length(j));
        assert_memory_equal(v->v.str.ptr, json_string_value(j), json_string_length(j));
        break;
    case TS_GGUF_BOOL: assert_int_equal(v->v.u, json_is_true(j) ? 1 : 0); break;
    case TS_GGUF_FLOAT32:
    case TS_GGUF_FLOAT64: assert_true(v->v.f == json_number_value(j)); break;
    case TS_GGUF_INT8:
    case TS_GGUF_INT16:
    case TS_GGUF_INT32:
    case TS_GGUF_INT64: assert_true(v->v.i == jint64(j)); break;
    default: assert_true(v->v.u == juint64(j)); break;
    }
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void test_fixture(void **state) {
    (void)state;
    json_error_t jerr;
    json_t *exp = json_load_file(FIX "/small.expected.json", 0, &jerr);
    if (!exp) print_error("%s:%d: %s\n", jerr.source, jerr.line, jerr.text);
    assert_non_null(exp);
    ts_gguf *g = NULL;
    assert_int_equal(ts_gguf_open(FIX "/small.gguf", &g), TS_OK);
    assert_int_equal(g->version, json_integer_value(json_object_get(exp, "version")));
    assert_int_equal(g->alignment, json_integer_value(json_object_get(exp, "alignment")));
    assert_int_equal(g->data_offset, json_integer_value(json_object_get(exp, "data_offset")));
    assert_int_equal(g->size, json_integer_value(json_object_get(exp, "file_size")));

    const json_t *kvs = json_object_get(exp, "kv");
    assert_int_equal(g->n_kv, json_array_size(kvs));
    for (size_t i = 0; i < g->n_kv; i++) {
        const json_t *e = json_array_get(kvs, i);
        const ts_gguf_kv *kv = &g->kv[i];
        assert_string_equal(kv->key, json_string_value(json_object_get(e, "key")));
        assert_string_equal(ts_gguf_vtype_name(kv->value.type),
                            json_string_value(json_object_get(e, "type")));
        check_value(&kv->value, json_object_get(e, "value"));
        assert_ptr_equal(ts_gguf_find(g, kv->key), kv);
    }
    const json_t *ts = json_object_get(exp, "tensors");
    assert_int_equal(g->n_tensors, json_array_size(ts));
    for (size_t i = 0; i < g->n_tensors; i++) {
        const json_t *e = json_array_get(ts, i);
        const ts_gguf_tensor *t = &g->tensors[i];
        assert_string_equal(t->name, json_string_value(json_object_get(e, "name")));
        assert_int_equal(t->type, json_integer_value(json_object_get(e, "type")));
        assert_string_equal(ts_type_name(t->type),
                            json_string_value(json_object_get(e, "type_name")));
        const json_t *ne = json_object_get(e, "ne");
        assert_int_equal(t->n_dims, json_array_size(ne));
        int64_t n = 1;
        for (uint32_t d = 0; d < 4; d++) {
            int64_t want = d < t->n_dims ? json_integer_value(json_array_get(ne, d)) : 1;
            assert_true(t->ne[d] == want);
            n *= want;
        }
        assert_true(t->n_elems == n);
        assert_int_equal(t->offset, json_integer_value(json_object_get(e, "offset")));
        assert_int_equal(t->nbytes, json_integer_value(json_object_get(e, "nbytes")));
        assert_ptr_equal(t->data, g->buf + g->data_offset + t->offset);
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fnv1a64(t->data, t->nbytes));
        assert_string_equal(hex, json_string_value(json_object_get(e, "fnv1a64")));
    }
    /* a few values through the getters */
    uint32_t u32;
    assert_int_equal(ts_gguf_get_u32(g, "general.alignment", &u32), TS_OK);
    assert_int_equal(u32, 64);
    const ts_gguf_value *a;
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.tokens", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_STRING);
    ts_gguf_close(g);
    json_decref(exp);
}

/* ---- truncation and allocation failure ---- */

/* Every truncation must fail, except those that only drop padding after the last tensor's
 * data (the parser does not require trailing padding). */
static void truncate_all(const uint8_t *p, size_t n) {
    ts_gguf *g = NULL;
    assert_int_equal(ts_gguf_parse(p, n, &g), TS_OK);
    size_t min_ok = (size_t)g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        size_t end = (size_t)(g->data_offset + g->tensors[i].offset) + g->tensors[i].nbytes;
        if (end > min_ok) min_ok = end;
    }
    ts_gguf_close(g);
    assert_true(min_ok > 0 && min_ok <= n);
    for (size_t len = 0; len < n; len++) {
        ts_status rc = parse_copy(p, len);
        if (len >= min_ok) {
            assert_int_equal(rc, TS_OK);
            continue;
        }
        if (rc == TS_OK || ts_last_error()[0] == '\0') {
            print_error("truncated to %zu of %zu bytes: %s '%s'\n", len, n, ts_status_name(rc),
                        ts_last_error());
            fail();
        }
        assert_true(rc == TS_FORMAT);
        assert_non_null(strstr(ts_last_error(), "offset"));
    }
    assert_int_equal(parse_copy(p, n), TS_OK);
}

static void test_truncation_image(void **state) {
    (void)state;
    bb b;
    build_full(&b, NULL, 3);
    truncate_all(b.p, b.n);
    bb_free(&b);
}

static void test_truncation_fixture(void **state) {
    (void)state;
    size_t n;
    uint8_t *p = read_all(FIX "/small.gguf", &n);
    truncate_all(p, n);
    free(p);
}

static void fault_loop(const uint8_t *p, size_t n) {
    long i;
    for (i = 0;; i++) {
        assert_true(i < 100000);
        size_t before = ts_alloc_bytes_in_use();
        ts_gguf *g = (ts_gguf *)1;
        ts_alloc_fail_after(i);
        ts_status rc = ts_gguf_parse(p, n, &g);
        ts_alloc_fail_after(-1);
        if (rc == TS_OK) {
            assert_non_null(g);
            ts_gguf_close(g);
            assert_int_equal(ts_alloc_bytes_in_use(), before);
            break;
        }
        if (rc != TS_NOMEM) {
            print_error("allocation %ld failed: %s '%s'\n", i, ts_status_name(rc),
                        ts_last_error());
            fail();
        }
        assert_null(g);
        assert_true(ts_last_error()[0] != '\0');
        assert_int_equal(ts_alloc_bytes_in_use(), before);
    }
    assert_true(i > 3); /* the parser does allocate: the loop really injected failures */
}

static void test_alloc_failures(void **state) {
    (void)state;
    bb b;
    build_full(&b, NULL, 3);
    fault_loop(b.p, b.n);
    bb_free(&b);
    size_t n;
    uint8_t *p = read_all(FIX "/small.gguf", &n);
    fault_loop(p, n);
    free(p);
    /* ts_gguf_open: the mapping's path copy too */
    for (long i = 0;; i++) {
        ts_gguf *g = NULL;
        ts_alloc_fail_after(i);
        ts_status rc = ts_gguf_open(FIX "/small.gguf", &g);
        ts_alloc_fail_after(-1);
        if (rc == TS_OK) {
            ts_gguf_close(g);
            break;
        }
        assert_int_equal(rc, TS_NOMEM);
        assert_non_null(strstr(ts_last_error(), "small.gguf"));
        assert_int_equal(ts_alloc_bytes_in_use(), g_base_bytes);
    }
}

/* ---- corruptions ---- */

static void test_header_errors(void **state) {
    (void)state;
    bb b;
    marks m;
    build_full(&b, &m, 3);
    b.p[0] = 'g';
    expect_fail(b.p, b.n, TS_FORMAT, "magic", "offset 0");
    b.p[0] = 'G';
    memcpy(b.p, "GGML", 4);
    expect_fail(b.p, b.n, TS_FORMAT, "magic");
    memcpy(b.p, "GGUF", 4);
    bb_patch(&b, 4, 1, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "version 1");
    bb_patch(&b, 4, 4, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "version 4");
    bb_patch(&b, 4, 0, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "version 0");
    bb_patch(&b, 4, 0x03000000u, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "big-endian");
    bb_patch(&b, 4, 0x02000000u, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "big-endian");
    bb_patch(&b, 4, 3, 4);

    static const uint64_t huge[] = {1ull << 63, UINT64_MAX, 1ull << 40, 1000};
    for (size_t i = 0; i < 4; i++) {
        bb_patch(&b, 8, huge[i], 8);
        expect_fail(b.p, b.n, TS_FORMAT, "n_tensors", "offset 8");
        bb_patch(&b, 8, N_TENSORS, 8);
        bb_patch(&b, 16, huge[i], 8);
        expect_fail(b.p, b.n, TS_FORMAT, "n_kv", "offset 16");
        bb_patch(&b, 16, N_KV, 8);
    }
    /* n_tensors larger than what the bytes after the metadata can hold */
    size_t left = b.n - m.t_info[0];
    bb_patch(&b, 8, left / 33 + 1, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "n_tensors");
    /* more tensors than infos but still plausible: runs into the data as infos */
    bb_patch(&b, 8, N_TENSORS + 1, 8);
    assert_int_not_equal(parse_copy(b.p, b.n), TS_OK);
    bb_patch(&b, 8, N_TENSORS, 8);
    assert_int_equal(parse_copy(b.p, b.n), TS_OK);
    bb_free(&b);
}

static void test_kv_errors(void **state) {
    (void)state;
    bb b;
    marks m;
    build_full(&b, &m, 3);
    /* key length */
    bb_patch(&b, m.key0_len, UINT64_MAX, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "kv 0", "key length", "offset 24");
    bb_patch(&b, m.key0_len, 1ull << 63, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "key length");
    bb_patch(&b, m.key0_len, 0, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "empty key", "offset 24");
    bb_patch(&b, m.key0_len, 4, 8);
    /* string length */
    static const uint64_t huge[] = {UINT64_MAX, 1ull << 63, 1ull << 40};
    for (size_t i = 0; i < 3; i++) {
        bb_patch(&b, m.str_len, huge[i], 8);
        expect_fail(b.p, b.n, TS_FORMAT, "'t.str'", "string value length");
    }
    bb_patch(&b, m.str_len, b.n - m.str_len - 8 + 1, 8); /* one past the end */
    expect_fail(b.p, b.n, TS_FORMAT, "string value length");
    bb_patch(&b, m.str_len, 6, 8);
    /* array lengths */
    static const uint64_t hn[] = {UINT64_MAX, 1ull << 63, UINT64_MAX / 2 + 1, 1ull << 62};
    for (size_t i = 0; i < 4; i++) {
        bb_patch(&b, m.arr_i16_n, hn[i], 8);
        expect_fail(b.p, b.n, TS_FORMAT, "'t.arr_i16'", "array length", "int16");
        bb_patch(&b, m.arr_str_n, hn[i], 8);
        bb_patch(&b, m.arr_i16_n, 3, 8);
        expect_fail(b.p, b.n, TS_FORMAT, "'t.arr_str'", "array length", "string");
        bb_patch(&b, m.arr_str_n, 3, 8);
    }
    bb_patch(&b, m.arr_str_elem0, UINT64_MAX, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "'t.arr_str'", "array string length");
    bb_patch(&b, m.arr_str_elem0, 1, 8);
    /* value types */
    bb_patch(&b, m.vtype_u8, 13, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "'t.u8'", "value type 13");
    bb_patch(&b, m.vtype_u8, UINT32_MAX, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "value type 4294967295");
    bb_patch(&b, m.vtype_u8, TS_GGUF_UINT8, 4);
    bb_patch(&b, m.nested_et, 13, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "'t.nested'", "element type 13");
    bb_patch(&b, m.nested_et, TS_GGUF_ARRAY, 4);
    /* bools */
    b.p[m.bool_val] = 2;
    expect_fail(b.p, b.n, TS_FORMAT, "'t.bool'", "bool value 2");
    b.p[m.bool_val] = 0xff;
    expect_fail(b.p, b.n, TS_FORMAT, "bool value 255");
    b.p[m.bool_val] = 1;
    b.p[m.arr_bool_elem1] = 7;
    expect_fail(b.p, b.n, TS_FORMAT, "'t.arr_bool'", "bool value 7");
    b.p[m.arr_bool_elem1] = 0;
    assert_int_equal(parse_copy(b.p, b.n), TS_OK);
    /* duplicate key: rename t.i8 to t.u8 (same length) */
    size_t k1 = m.key0_len + 8 + 4 + 4 + 1; /* second kv */
    assert_memory_equal(b.p + k1 + 8, "t.i8", 4);
    b.p[k1 + 8 + 2] = 'u';
    expect_fail(b.p, b.n, TS_FORMAT, "duplicate key 't.u8'", "offset");
    b.p[k1 + 8 + 2] = 'i';
    assert_int_equal(parse_copy(b.p, b.n), TS_OK);
    bb_free(&b);
}

static void test_bad_utf8_keys(void **state) {
    (void)state;
    static const char *const bad[] = {"\xc0\x80", "\xff", "\xed\xa0\x80", "a\x80", "\xe4\xb8",
                                      "\xf4\x90\x80\x80", "\xc1\xbf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb b = {0};
        hdr(&b, 3, 0, 2);
        kv_u32(&b, "ok", 1);
        kv_u32(&b, bad[i], 1);
        expect_fail(b.p, b.n, TS_FORMAT, "kv 1", "key", "UTF-8", "offset");
        bb_free(&b);
        /* as a tensor name */
        hdr(&b, 3, 1, 0);
        int64_t ne[1] = {1};
        tinfo(&b, bad[i], 1, ne, TS_TYPE_F32, 0);
        bb_pad(&b, 32);
        bb_u32(&b, 0);
        expect_fail(b.p, b.n, TS_FORMAT, "tensor 0", "name", "UTF-8");
        bb_free(&b);
    }
    /* embedded NUL */
    bb b = {0};
    hdr(&b, 3, 0, 1);
    bb_strn(&b, "a\0b", 3);
    bb_u32(&b, TS_GGUF_UINT8);
    bb_u8(&b, 0);
    expect_fail(b.p, b.n, TS_FORMAT, "NUL");
    bb_free(&b);
    /* valid UTF-8 keys are fine */
    hdr(&b, 3, 0, 1);
    kv_u32(&b, "\xf0\x9f\x98\x80.\xf4\x8f\xbf\xbf", 1);
    assert_int_equal(parse_copy(b.p, b.n), TS_OK);
    bb_free(&b);
}

static void test_nesting(void **state) {
    (void)state;
    /* depth exactly TS_GGUF_MAX_ARRAY_DEPTH is fine, one more is not */
    for (int depth = TS_GGUF_MAX_ARRAY_DEPTH; depth <= TS_GGUF_MAX_ARRAY_DEPTH + 1; depth++) {
        bb b = {0};
        hdr(&b, 3, 0, 1);
        kv_head(&b, "deep", TS_GGUF_ARRAY);
        for (int d = 1; d < depth; d++) bb_u32(&b, TS_GGUF_ARRAY), bb_u64(&b, 1);
        bb_u32(&b, TS_GGUF_UINT8), bb_u64(&b, 1), bb_u8(&b, 42);
        if (depth == TS_GGUF_MAX_ARRAY_DEPTH) {
            ts_gguf *g = NULL;
            assert_int_equal(ts_gguf_parse(b.p, b.n, &g), TS_OK);
            const ts_gguf_value *v = &g->kv[0].value;
            for (int d = 1; d < depth; d++) v = &v->v.arr.vals[0];
            assert_int_equal(v->v.arr.elem_type, TS_GGUF_UINT8);
            assert_int_equal(v->v.arr.raw[0], 42);
            ts_gguf_close(g);
        } else {
            expect_fail(b.p, b.n, TS_FORMAT, "'deep'", "nested deeper");
        }
        bb_free(&b);
    }
    /* a nested array with an absurd count */
    bb b = {0};
    hdr(&b, 3, 0, 1);
    kv_head(&b, "n", TS_GGUF_ARRAY);
    bb_u32(&b, TS_GGUF_ARRAY), bb_u64(&b, 1ull << 60);
    bb_u32(&b, TS_GGUF_UINT8), bb_u64(&b, 0);
    expect_fail(b.p, b.n, TS_FORMAT, "array length", "array");
    bb_free(&b);
}

static void test_alignment_errors(void **state) {
    (void)state;
    static const uint32_t bad[] = {0, 3, 24, 0x80000001u};
    for (size_t i = 0; i < 4; i++) {
        bb b = {0};
        hdr(&b, 3, 0, 1);
        kv_u32(&b, "general.alignment", bad[i]);
        expect_fail(b.p, b.n, TS_FORMAT, "general.alignment", "power of two", "offset");
        bb_free(&b);
    }
    bb b = {0};
    hdr(&b, 3, 0, 1);
    kv_head(&b, "general.alignment", TS_GGUF_UINT64), bb_u64(&b, 32);
    expect_fail(b.p, b.n, TS_FORMAT, "general.alignment", "uint64", "uint32");
    bb_free(&b);
    /* alignment 1 and 2^31 are valid; offsets honour them */
    hdr(&b, 3, 1, 1);
    kv_u32(&b, "general.alignment", 1);
    int64_t ne[1] = {1};
    tinfo(&b, "t", 1, ne, TS_TYPE_I8, 0);
    bb_u8(&b, 9);
    ts_gguf *g = NULL;
    assert_int_equal(ts_gguf_parse(b.p, b.n, &g), TS_OK);
    assert_int_equal(g->data_offset, b.n - 1);
    assert_int_equal(g->tensors[0].data[0], 9);
    ts_gguf_close(g);
    bb_free(&b);
    hdr(&b, 3, 1, 1);
    kv_u32(&b, "general.alignment", 0x80000000u);
    tinfo(&b, "t", 1, ne, TS_TYPE_I8, 0);
    expect_fail(b.p, b.n, TS_FORMAT, "data section", "past the end");
    bb_free(&b);
    /* data offset not a multiple of a custom alignment */
    hdr(&b, 3, 1, 1);
    kv_u32(&b, "general.alignment", 64);
    tinfo(&b, "t", 1, ne, TS_TYPE_I8, 32);
    bb_pad(&b, 64);
    for (int k = 0; k < 64; k++) bb_u8(&b, 0);
    expect_fail(b.p, b.n, TS_FORMAT, "tensor 0 't'", "offset 32", "alignment 64");
    bb_free(&b);
}

static void test_tensor_errors(void **state) {
    (void)state;
    bb b;
    marks m;
    build_full(&b, &m, 3);
    /* n_dims */
    bb_patch(&b, m.t_ndims[1], 5, 4);
    expect_fail(b.p, b.n, TS_FORMAT, "tensor 1 'a.f32'", "n_dims 5", "offset");
    bb_patch(&b, m.t_ndims[1], 0, 4);
    expect_fail(b.p, b.n, TS_FORMAT, "n_dims 0");
    bb_patch(&b, m.t_ndims[1], UINT32_MAX, 4);
    expect_fail(b.p, b.n, TS_FORMAT, "n_dims 4294967295");
    bb_patch(&b, m.t_ndims[1], 1, 4);
    /* ne */
    bb_patch(&b, m.t_ne0[1], 1ull << 63, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "ne[0]", "negative");
    bb_patch(&b, m.t_ne0[1], UINT64_MAX, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "ne[0]", "negative");
    bb_patch(&b, m.t_ne0[1], 1ull << 40, 8); /* plausible shape, data not there */
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "past the end", "offset");
    bb_patch(&b, m.t_ne0[1], 1ull << 62, 8); /* 2^62 * 4 bytes overflows size_t */
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "overflows");
    bb_patch(&b, m.t_ne0[1], 8, 8);
    bb_patch(&b, m.t_ne0[2] + 8, 1ull << 62, 8); /* b.f16 ne[1]: 16 * 2^62 overflows */
    expect_fail(b.p, b.n, TS_FORMAT, "'b.f16'", "ne[1]", "overflow");
    bb_patch(&b, m.t_ne0[2] + 8, 2, 8);
    bb_patch(&b, m.t_ne0[0] + 24, INT64_MAX, 8); /* Q4_K ne[3]: 256 * 2^63 overflows */
    expect_fail(b.p, b.n, TS_FORMAT, "ne[3]", "overflow");
    bb_patch(&b, m.t_ne0[0] + 24, 2, 8);
    bb_patch(&b, m.t_ne0[3], 33, 8); /* Q8_0 rows must be whole blocks */
    expect_fail(b.p, b.n, TS_FORMAT, "'c.q8_0'", "ne[0] 33", "block size 32");
    bb_patch(&b, m.t_ne0[3], 32, 8);
    /* type */
    bb_patch(&b, m.t_type[2], 99, 4);
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "'b.f16'", "tensor type 99", "offset");
    bb_patch(&b, m.t_type[2], 4, 4); /* removed Q4_2 */
    expect_fail(b.p, b.n, TS_UNSUPPORTED, "tensor type 4");
    bb_patch(&b, m.t_type[2], TS_TYPE_F16, 4);
    /* offsets */
    bb_patch(&b, m.t_off[1], 4, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "offset 4", "alignment 32");
    bb_patch(&b, m.t_off[1], 1ull << 40, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "past the end", "offset");
    bb_patch(&b, m.t_off[1], UINT64_MAX - 31, 8); /* offset + nbytes wraps */
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "past the end");
    bb_patch(&b, m.t_off[1], DATA_BYTES, 8); /* 32 bytes at the end: 32 past */
    expect_fail(b.p, b.n, TS_FORMAT, "'a.f32'", "past the end");
    bb_patch(&b, m.t_off[1], DATA_BYTES - 32, 8); /* inside the Q4_K tensor */
    expect_fail(b.p, b.n, TS_FORMAT, "overlaps", "a.f32", "blk.0.ffn_down.weight");
    bb_patch(&b, m.t_off[2], 0, 8); /* b.f16 at a.f32's offset */
    bb_patch(&b, m.t_off[1], 0, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "overlaps");
    bb_patch(&b, m.t_off[2], 32, 8);
    bb_patch(&b, m.t_off[4], DATA_BYTES + 32, 8); /* empty tensor past the end */
    expect_fail(b.p, b.n, TS_FORMAT, "'e.empty'", "past the end");
    bb_patch(&b, m.t_off[4], 64, 8); /* empty tensor inside another: no overlap */
    assert_int_equal(parse_copy(b.p, b.n), TS_OK);
    bb_patch(&b, m.t_off[4], DATA_BYTES, 8);
    /* duplicate tensor name: "b.f16" -> "a.f16"? names differ; make c.q8_0's 'c' into
     * ... use a same-length rename of b.f16 to a.f32 */
    memcpy(b.p + m.t_info[2] + 8, "a.f32", 5);
    expect_fail(b.p, b.n, TS_FORMAT, "duplicate tensor name 'a.f32'", "offset");
    memcpy(b.p + m.t_info[2] + 8, "b.f16", 5);
    /* empty tensor name */
    bb_patch(&b, m.t_info[1], 0, 8);
    expect_fail(b.p, b.n, TS_FORMAT, "tensor 1", "empty name");
    bb_patch(&b, m.t_info[1], 5, 8);
    assert_int_equal(parse_copy(b.p, b.n), TS_OK);
    bb_free(&b);

    /* tensors present, file ends at the infos: the data section is missing */
    bb c;
    build_full(&c, &m, 3);
    expect_fail(c.p, m.infos_end, TS_FORMAT, "data section", "past the end");
    bb_free(&c);
}

/* ---- UTF-8 ---- */

static void test_utf8(void **state) {
    (void)state;
    static const char *const good[] = {
        "", "abc", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
        "\xed\x9f\xbf", "\xee\x80\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80", "\xc2\x80",
        "\xdf\xbf", "\xef\xbf\xbf", "a\xc3\xa9z\xe2\x82\xac",
    };
    static const char *const bad[] = {
        "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80",
        "\xf0\x8f\xbf\xbf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xff", "\xfe", "\x80", "\xbf", "\xc3",
        "\xe4\xb8", "\xf0\x9f\x98", "\xc3\x28", "\xe4\x28\xad", "\xe4\xb8\x28",
        "\xf0\x9f\x28\x80", "\xf0\x9f\x98\x28", "ab\xc3", "\xc3\xa9\xa9",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!ts_utf8_valid(good[i], strlen(good[i]))) {
            print_error("good[%zu] rejected\n", i);
            fail();
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (ts_utf8_valid(bad[i], strlen(bad[i]))) {
            print_error("bad[%zu] accepted\n", i);
            fail();
        }
    }
    assert_true(ts_utf8_valid("a\0b", 3)); /* U+0000 is valid UTF-8 */
    assert_true(ts_utf8_valid(NULL, 0));
    /* length bounds the scan: a valid prefix of a longer buffer */
    assert_true(ts_utf8_valid("\xc3\xa9\xff", 2));
    assert_false(ts_utf8_valid("\xc3\xa9\xff", 3));
    /* exhaustive over all 1..3 byte sequences with a first byte >= 0x80: compare with a
     * decoder written from the definition */
    for (unsigned c0 = 0x80; c0 < 0x100; c0++) {
        for (unsigned c1 = 0; c1 < 0x100; c1++) {
            unsigned char s[2] = {(unsigned char)c0, (unsigned char)c1};
            bool want = c0 >= 0xc2 && c0 <= 0xdf && (c1 & 0xc0) == 0x80;
            assert_int_equal(ts_utf8_valid((const char *)s, 2), want);
        }
    }
    for (unsigned c0 = 0xe0; c0 < 0xf0; c0++)
        for (unsigned c1 = 0x80; c1 < 0xc0; c1++) {
            unsigned char s[3] = {(unsigned char)c0, (unsigned char)c1, 0x80};
            unsigned cp = ((c0 & 0x0f) << 12) | ((c1 & 0x3f) << 6);
            bool want = cp >= 0x800 && !(cp >= 0xd800 && cp <= 0xdfff);
            assert_int_equal(ts_utf8_valid((const char *)s, 3), want);
        }
    for (unsigned c0 = 0xf0; c0 < 0xf8; c0++)
        for (unsigned c1 = 0x80; c1 < 0xc0; c1++) {
            unsigned char s[4] = {(unsigned char)c0, (unsigned char)c1, 0x80, 0x80};
            unsigned cp = ((c0 & 0x07) << 18) | ((c1 & 0x3f) << 12);
            bool want = cp >= 0x10000 && cp <= 0x10ffff;
            assert_int_equal(ts_utf8_valid((const char *)s, 4), want);
        }
}

/* ---- the real model ---- */

static void test_real_model(void **state) {
    (void)state;
    const char *path = getenv("TESSERA_MODEL_270M");
    if (!path || !*path || access(path, R_OK) != 0) {
        print_message("TESSERA_MODEL_270M unset or unreadable: skipped\n");
        skip();
    }
    ts_gguf *g = NULL;
    ts_status rc = ts_gguf_open(path, &g);
    if (rc != TS_OK) print_error("%s\n", ts_last_error());
    assert_int_equal(rc, TS_OK);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->n_tensors, 236);
    assert_int_equal(g->n_kv, 33);
    assert_int_equal(g->alignment, 32);
    ts_gguf_str s;
    assert_int_equal(ts_gguf_get_str(g, "general.architecture", &s), TS_OK);
    assert_true(str_eq(s, "gemma3"));
    uint32_t u32;
    assert_int_equal(ts_gguf_get_u32(g, "gemma3.block_count", &u32), TS_OK);
    assert_int_equal(u32, 18);
    assert_int_equal(ts_gguf_get_u32(g, "gemma3.embedding_length", &u32), TS_OK);
    assert_int_equal(u32, 640);
    float eps;
    assert_int_equal(ts_gguf_get_f32(g, "gemma3.attention.layer_norm_rms_epsilon", &eps), TS_OK);
    assert_true(eps > 0.9e-6f && eps < 1.1e-6f);
    bool add_bos;
    assert_int_equal(ts_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos), TS_OK);
    assert_true(add_bos);
    const ts_gguf_value *a;
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.tokens", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_STRING);
    assert_int_equal(a->v.arr.n, 262144);
    assert_true(str_eq(a->v.arr.strs[2], "<bos>"));
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.scores", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_FLOAT32);
    assert_int_equal(a->v.arr.n, 262144);
    assert_int_equal(ts_gguf_get_arr(g, "tokenizer.ggml.token_type", &a), TS_OK);
    assert_int_equal(a->v.arr.elem_type, TS_GGUF_INT32);
    assert_int_equal(a->v.arr.n, 262144);
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_true(t->ne[0] == 640 && t->ne[1] == 262144);
    assert_int_equal(t->type, TS_TYPE_Q8_0);
    assert_int_equal(t->nbytes, (size_t)262144 * 640 / 32 * 34);
    assert_non_null(ts_gguf_find_tensor(g, "blk.17.ffn_down.weight"));
    assert_null(ts_gguf_find_tensor(g, "blk.18.ffn_down.weight"));
    size_t total = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) total += g->tensors[i].nbytes;
    assert_true(total <= g->size - g->data_offset);
    ts_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_image, setup, teardown),
        cmocka_unit_test_setup_teardown(test_getters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misc_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_image, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_fixture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_utf8_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nesting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alignment_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tensor_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_model, setup, teardown),
    };
    return cmocka_run_group_tests_name("gguf", tests, NULL, NULL);
}
