/* gguf.h: reader for GGUF model files (versions 2 and 3, little-endian).
 *
 * File layout (all integers little-endian):
 *   magic "GGUF" (4 bytes) | version u32 | n_tensors u64 | n_kv u64
 *   n_kv x { key: string | value_type u32 | value }
 *   n_tensors x { name: string | n_dims u32 | ne[n_dims] u64 | type u32 | offset u64 }
 *   padding to `general.alignment` (u32 key, default 32, a power of two)
 *   data section: tensor i's bytes start at data_offset + offset_i (offset_i aligned)
 * string = len u64 | len bytes (UTF-8, not NUL-terminated)
 * value  = by type: u8 i8 u16 i16 u32 i32 f32 bool(u8: 0/1) string u64 i64 f64 (ids
 *          0..12; 9 = array: elem_type u32 | n u64 | n x value, arrays may nest)
 *
 * Validation: every count, length, size and offset read from the buffer is checked
 * against the bytes that remain before it is used or allocated for; tensor data must lie
 * inside the data section, be aligned and not overlap; keys and tensor names must be
 * unique, non-empty valid UTF-8; shapes must be whole blocks of a known type. Errors are
 * TS_FORMAT (or TS_UNSUPPORTED for version 1 / big-endian files / unknown types) with a
 * message naming the field and its byte offset, readable with ts_last_error().
 *
 * Ownership: a ts_gguf from ts_gguf_parse borrows `buf`, which must outlive it; one from
 * ts_gguf_open owns its file mapping. Keys and tensor names are owned NUL-terminated
 * copies; string values point into the buffer (ts_gguf_str, not NUL-terminated).
 * Free with ts_gguf_close (accepts NULL). A parsed ts_gguf is read-only and may be shared
 * between threads.
 */
#ifndef TS_GGUF_H
#define TS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/mapfile.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_GGUF_MAGIC "GGUF"
#define TS_GGUF_DEFAULT_ALIGNMENT 32u
#define TS_GGUF_MAX_DIMS 4
#define TS_GGUF_MAX_ARRAY_DEPTH 8

typedef enum {
    TS_GGUF_UINT8 = 0,
    TS_GGUF_INT8 = 1,
    TS_GGUF_UINT16 = 2,
    TS_GGUF_INT16 = 3,
    TS_GGUF_UINT32 = 4,
    TS_GGUF_INT32 = 5,
    TS_GGUF_FLOAT32 = 6,
    TS_GGUF_BOOL = 7,
    TS_GGUF_STRING = 8,
    TS_GGUF_ARRAY = 9,
    TS_GGUF_UINT64 = 10,
    TS_GGUF_INT64 = 11,
    TS_GGUF_FLOAT64 = 12,
    TS_GGUF_VTYPE_COUNT_
} ts_gguf_vtype;

/* "uint32", "string", "array", ...; "?" for unknown. */
const char *ts_gguf_vtype_name(uint32_t t);

typedef struct {
    const char *ptr; /* into the buffer; not NUL-terminated */
    uint64_t len;
} ts_gguf_str;

typedef struct ts_gguf_value ts_gguf_value;
struct ts_gguf_value {
    ts_gguf_vtype type;
    union {
        uint64_t u;      /* UINT8..UINT64 (zero-extended) and BOOL (0/1) */
        int64_t i;       /* INT8..INT64 (sign-extended) */
        double f;        /* FLOAT32, FLOAT64 */
        ts_gguf_str str; /* STRING */
        struct {
            ts_gguf_vtype elem_type;
            uint64_t n;
            const uint8_t *raw;  /* numeric/bool elements: n packed LE values in the buffer */
            ts_gguf_str *strs;   /* STRING elements: n entries (owned array) */
            ts_gguf_value *vals; /* ARRAY elements (nested): n entries (owned array) */
        } arr;
    } v;
};

typedef struct {
    char *key;           /* owned, NUL-terminated */
    ts_gguf_value value;
    uint64_t offset;     /* byte offset of the key in the buffer */
} ts_gguf_kv;

typedef struct {
    char *name;          /* owned, NUL-terminated */
    uint32_t n_dims;     /* 1..4 */
    int64_t ne[TS_GGUF_MAX_DIMS]; /* elements per dim, ne[0] fastest; unused dims = 1 */
    uint32_t type;       /* ts_type id (kernels/quant.h) */
    uint64_t offset;     /* relative to the data section */
    size_t nbytes;
    int64_t n_elems;
    const uint8_t *data; /* = buffer + data_offset + offset */
    uint64_t info_offset; /* byte offset of this tensor's info record */
} ts_gguf_tensor;

typedef struct ts_gguf {
    uint32_t version;
    uint64_t n_kv;
    ts_gguf_kv *kv;
    uint64_t n_tensors;
    ts_gguf_tensor *tensors;
    uint32_t alignment;
    uint64_t data_offset;  /* start of the data section in the buffer */
    const uint8_t *buf;    /* the whole file */
    size_t size;
    ts_mapfile mf;         /* set when opened from a file */
} ts_gguf;

/* Parses a GGUF image of `len` bytes at `buf` (borrowed). */
ts_status ts_gguf_parse(const uint8_t *buf, size_t len, ts_gguf **out);
/* Maps `path` and parses it; error messages start with the path. */
ts_status ts_gguf_open(const char *path, ts_gguf **out);
void ts_gguf_close(ts_gguf *g);

/* Lookup by exact key / tensor name; NULL if absent. Linear in the counts. */
const ts_gguf_kv *ts_gguf_find(const ts_gguf *g, const char *key);
const ts_gguf_tensor *ts_gguf_find_tensor(const ts_gguf *g, const char *name);

/* Typed getters. TS_NOT_FOUND if the key is absent (message names it), TS_FORMAT if its
 * type does not fit (any integer type whose value fits the target is accepted; floats
 * accept FLOAT32/FLOAT64; bools accept BOOL). */
ts_status ts_gguf_get_u32(const ts_gguf *g, const char *key, uint32_t *out);
ts_status ts_gguf_get_u64(const ts_gguf *g, const char *key, uint64_t *out);
ts_status ts_gguf_get_i64(const ts_gguf *g, const char *key, int64_t *out);
ts_status ts_gguf_get_f32(const ts_gguf *g, const char *key, float *out);
ts_status ts_gguf_get_bool(const ts_gguf *g, const char *key, bool *out);
ts_status ts_gguf_get_str(const ts_gguf *g, const char *key, ts_gguf_str *out);
/* Array value; *out borrowed from g. TS_FORMAT if the key is not an array. */
ts_status ts_gguf_get_arr(const ts_gguf *g, const char *key, const ts_gguf_value **out);

/* Element i (< arr.n) of a numeric/bool array value, widened. Caller checks the range and
 * the element type class (ts_gguf_vtype_is_int / _is_float). */
int64_t ts_gguf_arr_i64(const ts_gguf_value *arr, uint64_t i);
uint64_t ts_gguf_arr_u64(const ts_gguf_value *arr, uint64_t i);
double ts_gguf_arr_f64(const ts_gguf_value *arr, uint64_t i);
bool ts_gguf_vtype_is_int(ts_gguf_vtype t);   /* integer or bool */
bool ts_gguf_vtype_is_float(ts_gguf_vtype t);
/* Bytes of one packed element of a numeric/bool type; 0 for STRING/ARRAY/unknown. */
size_t ts_gguf_vtype_size(uint32_t t);

/* True if s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool ts_utf8_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
