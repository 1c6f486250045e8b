/* safetensors.h: reader for Hugging Face safetensors checkpoints, single-file or sharded.
 *
 * File layout: header_len u64 (little-endian) | header: header_len bytes of UTF-8 JSON |
 * data. The JSON object maps tensor names to {"dtype": "F32"|"F16"|"BF16"|..., "shape":
 * [dims...], "data_offsets": [begin, end]} (offsets relative to the data start) and may
 * hold "__metadata__": {string: string}. Sharded checkpoints come with an index file
 * (model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file}})
 * naming shard files in the same directory.
 *
 * Validation: header length within the file; JSON parsed by Jansson (a Debian library);
 * each entry's dtype known, shape dims non-negative, element count x dtype size equal to
 * end - begin without overflow, begin <= end <= data size; tensors must not overlap;
 * names unique. Index files: shard names must be plain file names (no '/', no ".."),
 * every tensor named in the weight map must exist in its shard. Errors are TS_FORMAT /
 * TS_IO / TS_UNSUPPORTED with a message naming the file, the tensor and the field.
 *
 * Ownership: ts_st_parse borrows `buf`; ts_st_open owns its mappings. Free with
 * ts_st_close (accepts NULL).
 */
#ifndef TS_SAFETENSORS_H
#define TS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TS_ST_MAX_DIMS 8
#define TS_ST_MAX_HEADER (100u * 1024u * 1024u) /* safetensors' own limit */

typedef enum {
    TS_ST_BOOL, TS_ST_U8, TS_ST_I8, TS_ST_I16, TS_ST_U16, TS_ST_F16, TS_ST_BF16,
    TS_ST_I32, TS_ST_U32, TS_ST_F32, TS_ST_F64, TS_ST_I64, TS_ST_U64,
    TS_ST_F8_E4M3, TS_ST_F8_E5M2,
    TS_ST_DTYPE_COUNT_
} ts_st_dtype;

const char *ts_st_dtype_name(ts_st_dtype t);
size_t ts_st_dtype_size(ts_st_dtype t);

typedef struct {
    char *name;                 /* owned */
    ts_st_dtype dtype;
    uint32_t n_dims;            /* 0..TS_ST_MAX_DIMS (0 = scalar) */
    int64_t shape[TS_ST_MAX_DIMS]; /* row-major, slowest first (PyTorch order) */
    int64_t n_elems;
    size_t nbytes;
    const uint8_t *data;        /* into the file's mapping / buffer */
    uint32_t shard;             /* index into the shard list (0 for single files) */
} ts_st_tensor;

typedef struct ts_st ts_st;     /* opaque */

/* Parses one safetensors image (borrowed buffer). */
ts_status ts_st_parse(const uint8_t *buf, size_t len, ts_st **out);
/* Opens a .safetensors file, or an index .json naming shards (by file extension
 * ".json"), or a directory holding model.safetensors or model.safetensors.index.json. */
ts_status ts_st_open(const char *path, ts_st **out);
void ts_st_close(ts_st *st);

size_t ts_st_count(const ts_st *st);
const ts_st_tensor *ts_st_get(const ts_st *st, size_t i);
const ts_st_tensor *ts_st_find(const ts_st *st, const char *name);
/* "__metadata__" (or the index's "metadata") string value for key; NULL if absent. */
const char *ts_st_metadata(const ts_st *st, const char *key);
size_t ts_st_shard_count(const ts_st *st);

/* Converts element range [first, first+n) of an F32/F16/BF16 tensor to float. */
ts_status ts_st_read_f32(const ts_st_tensor *t, int64_t first, int64_t n, float *dst);

#ifdef __cplusplus
}
#endif
#endif
