/* test_safetensors.c: the safetensors reader against fixtures written by the reference
 * Python package (tests/tools/make_safetensors_fixtures.py), hand-made corrupt headers,
 * bad index files, every truncation of a valid file, and allocation failures. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "alloc.h"
#include "safetensors.h"

#define FIX TS_TEST_DATA "/fixtures/safetensors"

static size_t g_base_bytes;

static int setup(void **state) {
    (void)state;
    g_base_bytes = ts_alloc_bytes_in_use();
    ts_alloc_fail_after(-1);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ts_alloc_fail_after(-1);
    assert_int_equal(ts_alloc_bytes_in_use(), g_base_bytes);
    return 0;
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

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* header_len (explicit) | header bytes | data_len bytes of 0xAB, in an exact-size block. */
static uint8_t *build_raw(uint64_t hlen, const char *hdr, size_t hdr_bytes, size_t data_len,
                          size_t *len) {
    *len = 8 + hdr_bytes + data_len;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_bytes);
    memset(b + 8 + hdr_bytes, 0xAB, data_len);
    return b;
}

static uint8_t *build(const char *hdr, size_t data_len, size_t *len) {
    return build_raw(strlen(hdr), hdr, strlen(hdr), data_len, len);
}

static void expect_parse_error(const uint8_t *buf, size_t len, ts_status want,
                               const char *needle) {
    ts_st *st = (ts_st *)(uintptr_t)1;
    ts_clear_error();
    ts_status rc = ts_st_parse(buf, len, &st);
    if (rc != want || (needle && !strstr(ts_last_error(), needle)))
        fail_msg("want %s with \"%s\", got %s: \"%s\"", ts_status_name(want),
                 needle ? needle : "", ts_status_name(rc), ts_last_error());
    assert_null(st);
}

static void expect_header_error(const char *hdr, size_t data_len, ts_status want,
                                const char *needle) {
    size_t len;
    uint8_t *b = build(hdr, data_len, &len);
    expect_parse_error(b, len, want, needle);
    free(b);
}

static bool same_float(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Checks st against expected.json[key]; shard_of(name) given for sharded files. */
static void check_against_expected(const ts_st *st, const char *key) {
    json_error_t jerr;
    json_t *root = json_load_file(FIX "/expected.json", 0, &jerr);
    if (!root) fail_msg("expected.json: %s", jerr.text);
    json_t *exp = json_object_get(root, key);
    assert_non_null(exp);
    json_t *tensors = json_object_get(exp, "tensors");
    assert_int_equal(ts_st_count(st), json_object_size(tensors));

    const char *name;
    json_t *e;
    json_t *shard_ids = json_object(); /* shard file -> our shard index */
    json_object_foreach(tensors, name, e) {
        const ts_st_tensor *t = ts_st_find(st, name);
        if (!t) fail_msg("tensor %s missing", name);
        assert_string_equal(t->name, name);
        assert_string_equal(ts_st_dtype_name(t->dtype),
                            json_string_value(json_object_get(e, "dtype")));
        json_t *shape = json_object_get(e, "shape");
        assert_int_equal(t->n_dims, json_array_size(shape));
        int64_t count = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            int64_t v = json_integer_value(json_array_get(shape, d));
            assert_int_equal(t->shape[d], v);
            count *= v;
        }
        assert_int_equal(t->n_elems, count);
        assert_int_equal(t->nbytes, (size_t)count * ts_st_dtype_size(t->dtype));
        json_t *sf = json_object_get(e, "shard");
        if (sf) {
            json_t *id = json_object_get(shard_ids, json_string_value(sf));
            if (id)
                assert_int_equal(t->shard, json_integer_value(id));
            else
                json_object_set_new(shard_ids, json_string_value(sf), json_integer(t->shard));
        } else {
            assert_int_equal(t->shard, 0);
        }
        json_t *vals = json_object_get(e, "values");
        json_t *ivals = json_object_get(e, "int_values");
        if (vals) {
            assert_int_equal(json_array_size(vals), (size_t)count);
            float *buf = malloc(((size_t)count + 1) * sizeof *buf);
            assert_non_null(buf);
            assert_int_equal(ts_st_read_f32(t, 0, count, buf), TS_OK);
            for (int64_t i = 0; i < count; i++) {
                float want = (float)json_number_value(json_array_get(vals, (size_t)i));
                if (!same_float(buf[i], want))
                    fail_msg("%s[%lld] = %a, want %a", name, (long long)i, buf[i], want);
            }
            /* a sub-range lands at the right place */
            if (count >= 3) {
                float two[2];
                assert_int_equal(ts_st_read_f32(t, count - 2, 2, two), TS_OK);
                assert_true(same_float(two[0], buf[count - 2]));
                assert_true(same_float(two[1], buf[count - 1]));
            }
            free(buf);
        } else {
            assert_non_null(ivals);
            assert_int_equal(ts_st_dtype_size(t->dtype), 8);
            for (size_t i = 0; i < json_array_size(ivals); i++) {
                int64_t v;
                memcpy(&v, t->data + i * 8, 8);
                assert_int_equal(v, json_integer_value(json_array_get(ivals, i)));
            }
            float f;
            assert_int_equal(ts_st_read_f32(t, 0, 1, &f), TS_UNSUPPORTED);
            assert_non_null(strstr(ts_last_error(), name));
        }
    }
    /* distinct shard files map to distinct shard indices */
    if (json_object_size(shard_ids) > 0) {
        assert_int_equal(ts_st_shard_count(st), json_object_size(shard_ids));
        const char *f1, *f2;
        json_t *i1, *i2;
        json_object_foreach(shard_ids, f1, i1) {
            json_object_foreach(shard_ids, f2, i2) {
                if (strcmp(f1, f2) != 0)
                    assert_int_not_equal(json_integer_value(i1), json_integer_value(i2));
            }
        }
    } else {
        assert_int_equal(ts_st_shard_count(st), 1);
    }
    json_t *meta = json_object_get(exp, "metadata");
    json_t *mv;
    json_object_foreach(meta, name, mv) {
        const char *got = ts_st_metadata(st, name);
        if (!got) fail_msg("metadata %s missing", name);
        assert_string_equal(got, json_string_value(mv));
    }
    assert_null(ts_st_metadata(st, "no such key"));
    assert_null(ts_st_find(st, "no such tensor"));
    assert_null(ts_st_get(st, ts_st_count(st)));
    for (size_t i = 0; i < ts_st_count(st); i++)
        assert_ptr_equal(ts_st_find(st, ts_st_get(st, i)->name), ts_st_get(st, i));
    json_decref(shard_ids);
    json_decref(root);
}

/* ---- fixtures ---- */

static void test_small_open(void **state) {
    (void)state;
    ts_st *st = NULL;
    assert_int_equal(ts_st_open(FIX "/small.safetensors", &st), TS_OK);
    check_against_expected(st, "small.safetensors");
    ts_st_close(st);
}

static void test_small_parse(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = read_all(FIX "/small.safetensors", &len);
    ts_st *st = NULL;
    assert_int_equal(ts_st_parse(buf, len, &st), TS_OK);
    check_against_expected(st, "small.safetensors");

    const ts_st_tensor *t = ts_st_find(st, "f32");
    assert_non_null(t);
    float f[8];
    assert_int_equal(ts_st_read_f32(t, 0, 0, f), TS_OK);
    assert_int_equal(ts_st_read_f32(t, 6, 0, f), TS_OK);
    assert_int_equal(ts_st_read_f32(t, 0, 7, f), TS_RANGE);
    assert_non_null(strstr(ts_last_error(), "'f32'"));
    assert_int_equal(ts_st_read_f32(t, 6, 1, f), TS_RANGE);
    assert_int_equal(ts_st_read_f32(t, 7, 0, f), TS_RANGE);
    assert_int_equal(ts_st_read_f32(t, -1, 1, f), TS_RANGE);
    assert_int_equal(ts_st_read_f32(t, 0, -1, f), TS_RANGE);
    assert_int_equal(ts_st_read_f32(t, 1, INT64_MAX, f), TS_RANGE);
    assert_int_equal(ts_st_read_f32(t, INT64_MAX, INT64_MAX, f), TS_RANGE);
    assert_int_equal(ts_st_read_f32(NULL, 0, 1, f), TS_INVAL);
    assert_int_equal(ts_st_read_f32(t, 0, 1, NULL), TS_INVAL);
    const ts_st_tensor *s = ts_st_find(st, "scalar");
    assert_int_equal(s->n_dims, 0);
    assert_int_equal(s->n_elems, 1);
    const ts_st_tensor *e = ts_st_find(st, "empty");
    assert_int_equal(e->n_elems, 0);
    assert_int_equal(e->nbytes, 0);
    assert_int_equal(ts_st_read_f32(e, 0, 0, f), TS_OK);
    ts_st_close(st);
    free(buf);
}

static void test_sharded_index(void **state) {
    (void)state;
    ts_st *st = NULL;
    ts_status rc = ts_st_open(FIX "/model.safetensors.index.json", &st);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    assert_int_equal(ts_st_shard_count(st), 2);
    check_against_expected(st, "model.safetensors.index.json");
    /* a shard's tensor absent from the weight map is still listed */
    assert_non_null(ts_st_find(st, "model.vision_tower.vision_model.post_layernorm.bias"));
    ts_st_close(st);
}

static void test_sharded_dir(void **state) {
    (void)state;
    ts_st *st = NULL;
    ts_status rc = ts_st_open(FIX, &st);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    check_against_expected(st, "model.safetensors.index.json");
    ts_st_close(st);
    rc = ts_st_open(FIX "/", &st);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    assert_int_equal(ts_st_shard_count(st), 2);
    ts_st_close(st);
}

/* ---- temporary directories ---- */

static char g_tmp[256];

static void tmp_make(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_safetensors.XXXXXX");
    assert_non_null(mkdtemp(g_tmp));
}

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", g_tmp, name);
}

static void tmp_write(const char *name, const void *data, size_t len) {
    char p[512];
    tmp_path(p, sizeof p, name);
    write_all(p, data, len);
}

static void tmp_remove(const char *const *names) {
    char p[512];
    for (; *names; names++) {
        tmp_path(p, sizeof p, *names);
        unlink(p);
    }
    rmdir(g_tmp);
}

static void test_dir_single(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = read_all(FIX "/small.safetensors", &len);
    tmp_make();
    tmp_write("model.safetensors", buf, len);
    ts_st *st = NULL;
    ts_status rc = ts_st_open(g_tmp, &st);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    check_against_expected(st, "small.safetensors");
    ts_st_close(st);
    const char *names[] = {"model.safetensors", NULL};
    tmp_remove(names);
    /* now empty: neither file */
    tmp_make();
    assert_int_equal(ts_st_open(g_tmp, &st), TS_IO);
    assert_null(st);
    assert_non_null(strstr(ts_last_error(), "model.safetensors"));
    const char *none[] = {NULL};
    tmp_remove(none);
    free(buf);
}

/* ---- corruption ---- */

static void test_truncation(void **state) {
    (void)state;
    size_t len;
    uint8_t *full = read_all(FIX "/small.safetensors", &len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *b = malloc(n ? n : 1); /* exact size: ASan sees any overread */
        assert_non_null(b);
        memcpy(b, full, n);
        ts_st *st = (ts_st *)(uintptr_t)1;
        ts_status rc = ts_st_parse(n ? b : NULL, n, &st);
        if (rc != TS_FORMAT) fail_msg("length %zu: %s", n, ts_status_name(rc));
        assert_null(st);
        assert_true(ts_last_error()[0] != '\0');
        free(b);
    }
    free(full);
}

static void test_header_len(void **state) {
    (void)state;
    size_t len;
    const char *h = "{}";
    uint8_t *b = build_raw(1000, h, 2, 0, &len);
    expect_parse_error(b, len, TS_FORMAT, "header length 1000 past the end");
    free(b);
    b = build_raw(UINT64_MAX, h, 2, 0, &len);
    expect_parse_error(b, len, TS_FORMAT, "header length 18446744073709551615 exceeds");
    free(b);
    b = build_raw((uint64_t)TS_ST_MAX_HEADER + 1, h, 2, 0, &len);
    expect_parse_error(b, len, TS_FORMAT, "exceeds the limit");
    free(b);
    b = build_raw(3, h, 2, 0, &len); /* one byte past */
    expect_parse_error(b, len, TS_FORMAT, "past the end");
    free(b);
    b = build_raw(0, h, 2, 0, &len); /* empty header, "{}" counted as data */
    expect_parse_error(b, len, TS_FORMAT, "JSON error");
    free(b);
    uint8_t tiny[7] = {2, 0, 0, 0, 0, 0, 0};
    expect_parse_error(tiny, sizeof tiny, TS_FORMAT, "too short");
    expect_parse_error(NULL, 0, TS_FORMAT, "too short");
    expect_parse_error(NULL, 10, TS_INVAL, NULL);
    ts_st *st;
    assert_int_equal(ts_st_parse(tiny, sizeof tiny, NULL), TS_INVAL);
    assert_int_equal(ts_st_open(NULL, &st), TS_INVAL);
    assert_int_equal(ts_st_open(FIX "/small.safetensors", NULL), TS_INVAL);
}

static void test_valid_variants(void **state) {
    (void)state;
    /* empty object, padding with spaces, __metadata__ alone, extra keys ignored, zero-size */
    static const char *const ok[] = {
        "{}",
        "{}        ",
        "{\"__metadata__\":{\"a\":\"b\"}}",
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":[1,{}]}}  ",
        "{\"x\":{\"dtype\":\"U8\",\"shape\":[0,7],\"data_offsets\":[4,4]},"
        " \"y\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}",
        "\n{ \"x\" : { \"shape\" : [ 2 , 2 ] , \"data_offsets\" : [0, 4], \"dtype\": \"BOOL\" } }\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t len;
        uint8_t *b = build(ok[i], 4, &len);
        ts_st *st = NULL;
        ts_status rc = ts_st_parse(b, len, &st);
        if (rc != TS_OK) fail_msg("case %zu: %s", i, ts_last_error());
        ts_st_close(st);
        free(b);
    }
    /* unaligned F32 data reads correctly; F16/BF16 conversion */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1,5]},"
                    "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[5,9]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[9,11]}}";
    size_t len;
    uint8_t *b = build(h, 11, &len);
    uint8_t *d = b + len - 11;
    float one = 1.5f;
    memcpy(d + 1, &one, 4);
    const uint8_t half[4] = {0x00, 0x3c, 0x00, 0xc0}; /* 1.0, -2.0 */
    memcpy(d + 5, half, 4);
    const uint8_t bf[2] = {0x49, 0x40}; /* 3.140625 */
    memcpy(d + 9, bf, 2);
    ts_st *st = NULL;
    assert_int_equal(ts_st_parse(b, len, &st), TS_OK);
    float f[2];
    assert_int_equal(ts_st_read_f32(ts_st_find(st, "a"), 0, 1, f), TS_OK);
    assert_true(f[0] == 1.5f);
    assert_int_equal(ts_st_read_f32(ts_st_find(st, "h"), 0, 2, f), TS_OK);
    assert_true(f[0] == 1.0f && f[1] == -2.0f);
    assert_int_equal(ts_st_read_f32(ts_st_find(st, "b"), 0, 1, f), TS_OK);
    assert_true(f[0] == 3.140625f);
    assert_int_equal(ts_st_count(st), 3);
    assert_int_equal(ts_st_shard_count(st), 1);
    ts_st_close(st);
    free(b);
}

typedef struct {
    const char *hdr;
    size_t data_len;
    ts_status want;
    const char *needle;
} bad_case;

static void test_bad_headers(void **state) {
    (void)state;
    static const bad_case cases[] = {
        {"hello", 0, TS_FORMAT, "header JSON error at line 1 column"},
        {"{\"x\": ", 0, TS_FORMAT, "header JSON error"},
        {"{} trailing", 0, TS_FORMAT, "header JSON error"},
        {"[1, 2]", 0, TS_FORMAT, "header is not a JSON object"},
        {"{\"x\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TS_FORMAT,
         "tensor 'x': dtype 'F12' unknown"},
        {"{\"x\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TS_FORMAT,
         "dtype 'f32' unknown"},
        {"{\"x\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TS_FORMAT,
         "tensor 'x': dtype is not a string"},
        {"{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TS_FORMAT, "dtype missing"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, TS_FORMAT,
         "tensor 'x': shape[0] is not a non-negative integer"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1, 2.0],\"data_offsets\":[0,8]}}", 8, TS_FORMAT,
         "shape[1]"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", 4, TS_FORMAT,
         "shape is not an array"},
        {"{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, TS_FORMAT, "shape missing"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         TS_UNSUPPORTED, "9 dims"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
         4, TS_FORMAT, "overflows"},
        {"{\"x\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}",
         4, TS_FORMAT, "overflows"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, TS_FORMAT,
         "tensor 'x': data_offsets [0, 4] hold 4 bytes but shape x F32 needs 8"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, TS_FORMAT,
         "needs 4"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, TS_FORMAT,
         "tensor 'x': data_offsets [0, 8] past the end of the data (4 bytes)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[5,5]}}", 4, TS_FORMAT,
         "past the end"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[10,4]}}", 16, TS_FORMAT,
         "tensor 'x': data_offsets [10, 4] (begin > end)"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, TS_FORMAT,
         "tensor 'x': data_offsets are not non-negative"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, TS_FORMAT,
         "data_offsets is not an array of 2"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, TS_FORMAT,
         "data_offsets is not an array of 2"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, TS_FORMAT, "data_offsets missing"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}",
         4, TS_FORMAT, "JSON error"},
        {"{\"x\":[1]}", 0, TS_FORMAT, "tensor 'x': entry is not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, TS_FORMAT, "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
        {"{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
         4, TS_FORMAT, "overlap"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
         8, TS_FORMAT, "overlap"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, TS_FORMAT, "duplicate object key"},
        {"{\"__metadata__\":{\"a\":\"b\"},\"__metadata__\":{}}", 0, TS_FORMAT, "duplicate"},
        {"{\"__metadata__\":[]}", 0, TS_FORMAT, "__metadata__ is not an object"},
        {"{\"__metadata__\":{\"k\":1}}", 0, TS_FORMAT, "__metadata__ 'k' is not a string"},
        {"{\"x\\u0000y\":{}}", 0, TS_FORMAT, "JSON error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        size_t len;
        uint8_t *b = build(c->hdr, c->data_len, &len);
        ts_st *st = (ts_st *)(uintptr_t)1;
        ts_status rc = ts_st_parse(b, len, &st);
        if (rc != c->want || !strstr(ts_last_error(), c->needle))
            fail_msg("case %zu (%s): want %s with \"%s\", got %s: \"%s\"", i, c->hdr,
                     ts_status_name(c->want), c->needle, ts_status_name(rc), ts_last_error());
        assert_null(st);
        free(b);
    }
}

static void test_invalid_utf8(void **state) {
    (void)state;
    /* 0xFF is never valid; C0 80 is an overlong NUL; ED A0 80 a surrogate */
    expect_header_error("{\"x\xff\":{}}", 0, TS_FORMAT, "header JSON error");
    expect_header_error("{\"x\xc0\x80\":{}}", 0, TS_FORMAT, "header JSON error");
    expect_header_error("{\"x\xed\xa0\x80\":{}}", 0, TS_FORMAT, "header JSON error");
    expect_header_error("{\"__metadata__\":{\"k\":\"\xfe\"}}", 0, TS_FORMAT,
                        "header JSON error");
    expect_header_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\xff",
                        4, TS_FORMAT, "header JSON error");
    /* a raw NUL byte inside the header (JSON forbids it, C strings would cut there) */
    static const char nul[] = "{\"x\":{}}\0  ";
    size_t nlen;
    uint8_t *nb = build_raw(sizeof nul - 1, nul, sizeof nul - 1, 0, &nlen);
    expect_parse_error(nb, nlen, TS_FORMAT, "header JSON error");
    free(nb);
    static const char nul2[] = "{\"x\0\":{}}";
    nb = build_raw(sizeof nul2 - 1, nul2, sizeof nul2 - 1, 0, &nlen);
    expect_parse_error(nb, nlen, TS_FORMAT, "header JSON error");
    free(nb);
    /* valid UTF-8 in names is fine */
    size_t len;
    uint8_t *b = build("{\"\xc3\xa9t\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[1],"
                       "\"data_offsets\":[0,1]}}",
                       1, &len);
    ts_st *st = NULL;
    assert_int_equal(ts_st_parse(b, len, &st), TS_OK);
    assert_non_null(ts_st_find(st, "\xc3\xa9t\xc3\xa9"));
    ts_st_close(st);
    free(b);
}

/* ---- index files ---- */

static const char *const g_tmp_files[] = {"a.safetensors", "b.safetensors", "i.json", NULL};

static void write_index(const char *json) { tmp_write("i.json", json, strlen(json)); }

static void expect_index_error(const char *json, ts_status want, const char *needle) {
    char p[512];
    write_index(json);
    tmp_path(p, sizeof p, "i.json");
    ts_st *st = (ts_st *)(uintptr_t)1;
    ts_clear_error();
    ts_status rc = ts_st_open(p, &st);
    if (rc != want || !strstr(ts_last_error(), needle))
        fail_msg("index %s: want %s with \"%s\", got %s: \"%s\"", json, ts_status_name(want),
                 needle, ts_status_name(rc), ts_last_error());
    assert_null(st);
}

static void test_index_errors(void **state) {
    (void)state;
    size_t len;
    uint8_t *small = read_all(FIX "/small.safetensors", &len);
    tmp_make();
    tmp_write("a.safetensors", small, len);
    tmp_write("b.safetensors", small, len);
    free(small);

    /* a good one first */
    char p[512];
    write_index("{\"metadata\":{\"total_size\":123,\"x\":\"y\",\"z\":[1]},"
                "\"weight_map\":{\"f32\":\"a.safetensors\",\"i64\":\"a.safetensors\"}}");
    tmp_path(p, sizeof p, "i.json");
    ts_st *st = NULL;
    ts_status rc = ts_st_open(p, &st);
    if (rc != TS_OK) fail_msg("%s", ts_last_error());
    assert_int_equal(ts_st_count(st), 6); /* the shard's unmapped tensors too */
    assert_int_equal(ts_st_shard_count(st), 1);
    assert_string_equal(ts_st_metadata(st, "total_size"), "123");
    assert_string_equal(ts_st_metadata(st, "x"), "y");
    assert_string_equal(ts_st_metadata(st, "format"), "pt");
    assert_null(ts_st_metadata(st, "z"));
    ts_st_close(st);

    expect_index_error("{\"weight_map\":{\"f32\":\"../etc/passwd\"}}", TS_FORMAT,
                       "shard file '../etc/passwd' is not a plain file name");
    expect_index_error("{\"weight_map\":{\"f32\":\"a/b\"}}", TS_FORMAT,
                       "weight_map 'f32': shard file 'a/b' is not a plain file name");
    expect_index_error("{\"weight_map\":{\"f32\":\"..\"}}", TS_FORMAT, "plain file name");
    expect_index_error("{\"weight_map\":{\"f32\":\"\"}}", TS_FORMAT, "plain file name");
    expect_index_error("{\"weight_map\":{\"f32\":\"/etc/passwd\"}}", TS_FORMAT,
                       "plain file name");
    expect_index_error("{\"weight_map\":{\"f32\":3}}", TS_FORMAT, "is not a string");
    expect_index_error("{\"weight_map\":{\"f32\":\"missing.safetensors\"}}", TS_IO,
                       "missing.safetensors");
    expect_index_error("{\"weight_map\":{\"ghost\":\"a.safetensors\"}}", TS_FORMAT,
                       "weight_map tensor 'ghost' not found in a.safetensors");
    expect_index_error("{\"weight_map\":{\"f32\":\"a.safetensors\",\"i64\":\"b.safetensors\"}}",
                       TS_FORMAT, "appears in both");
    expect_index_error("{\"metadata\":{}}", TS_FORMAT, "weight_map missing");
    expect_index_error("{\"weight_map\":[]}", TS_FORMAT, "weight_map is not an object");
    expect_index_error("{\"metadata\":[],\"weight_map\":{}}", TS_FORMAT,
                       "metadata is not an object");
    expect_index_error("{\"weight_map\":{\"f32\":\"a.safetensors\",\"f32\":\"a.safetensors\"}}",
                       TS_FORMAT, "duplicate object key");
    expect_index_error("not json", TS_FORMAT, "JSON error at line 1");
    expect_index_error("[]", TS_FORMAT, "not a JSON object");
    expect_index_error("", TS_FORMAT, "JSON error");

    /* a shard that is not a valid safetensors file: message names the shard */
    tmp_write("b.safetensors", "garbage!garbage!", 16);
    expect_index_error("{\"weight_map\":{\"f32\":\"b.safetensors\"}}", TS_FORMAT,
                       "b.safetensors: header length");
    /* empty weight map: nothing to open */
    write_index("{\"weight_map\":{}}");
    assert_int_equal(ts_st_open(p, &st), TS_OK);
    assert_int_equal(ts_st_count(st), 0);
    ts_st_close(st);

    /* a missing single file */
    tmp_path(p, sizeof p, "nope.safetensors");
    assert_int_equal(ts_st_open(p, &st), TS_IO);
    assert_null(st);
    assert_non_null(strstr(ts_last_error(), "nope.safetensors"));
    tmp_remove(g_tmp_files);
}

/* ---- allocation failures ---- */

static void test_alloc_failures(void **state) {
    (void)state;
    size_t len;
    uint8_t *buf = read_all(FIX "/small.safetensors", &len);
    size_t base = ts_alloc_bytes_in_use();
    bool done = false;
    for (long i = 0; i < 10000 && !done; i++) {
        ts_alloc_fail_after(i);
        ts_st *st = NULL;
        ts_status rc = ts_st_parse(buf, len, &st);
        ts_alloc_fail_after(-1);
        if (rc == TS_OK) {
            assert_true(i > 2);
            check_against_expected(st, "small.safetensors");
            ts_st_close(st);
            done = true;
        } else {
            if (rc != TS_NOMEM) fail_msg("fail_after %ld: %s", i, ts_last_error());
            assert_null(st);
        }
        assert_int_equal(ts_alloc_bytes_in_use(), base);
    }
    assert_true(done);
    done = false;
    for (long i = 0; i < 10000 && !done; i++) {
        ts_alloc_fail_after(i);
        ts_st *st = NULL;
        ts_status rc = ts_st_open(FIX "/model.safetensors.index.json", &st);
        ts_alloc_fail_after(-1);
        if (rc == TS_OK) {
            check_against_expected(st, "model.safetensors.index.json");
            ts_st_close(st);
            done = true;
        } else {
            if (rc != TS_NOMEM) fail_msg("fail_after %ld: %s", i, ts_last_error());
            assert_null(st);
        }
        assert_int_equal(ts_alloc_bytes_in_use(), base);
    }
    assert_true(done);
    free(buf);
}

static void test_dtypes(void **state) {
    (void)state;
    assert_string_equal(ts_st_dtype_name(TS_ST_BF16), "BF16");
    assert_string_equal(ts_st_dtype_name(TS_ST_F8_E5M2), "F8_E5M2");
    assert_int_equal(ts_st_dtype_size(TS_ST_F32), 4);
    assert_int_equal(ts_st_dtype_size(TS_ST_I64), 8);
    assert_int_equal(ts_st_dtype_size(TS_ST_BOOL), 1);
    assert_int_equal(ts_st_dtype_size(TS_ST_DTYPE_COUNT_), 0);
    for (int i = 0; i < TS_ST_DTYPE_COUNT_; i++) {
        assert_true(ts_st_dtype_size((ts_st_dtype)i) > 0);
        /* every name parses back (as a one-element tensor) */
        char hdr[160];
        size_t sz = ts_st_dtype_size((ts_st_dtype)i);
        snprintf(hdr, sizeof hdr, "{\"t\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,%zu]}}",
                 ts_st_dtype_name((ts_st_dtype)i), sz);
        size_t len;
        uint8_t *b = build(hdr, sz, &len);
        ts_st *st = NULL;
        assert_int_equal(ts_st_parse(b, len, &st), TS_OK);
        assert_int_equal(ts_st_get(st, 0)->dtype, i);
        ts_st_close(st);
        free(b);
    }
    ts_st_close(NULL);
    assert_int_equal(ts_st_count(NULL), 0);
    assert_null(ts_st_get(NULL, 0));
    assert_null(ts_st_find(NULL, "x"));
    assert_null(ts_st_metadata(NULL, "x"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_small_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_single, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_len, setup, teardown),
        cmocka_unit_test_setup_teardown(test_valid_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dtypes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
