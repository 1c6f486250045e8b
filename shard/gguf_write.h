/* gguf_write.h: a GGUF v3 writer (used by `tessera mkmodel` and tests).
 *
 * Usage: ts_gguf_writer_init; add metadata with ts_gguf_w_* (keys are copied); declare
 * tensors with ts_gguf_w_tensor (name, type, shape; data supplied later, in the same
 * order, by ts_gguf_w_write's callback, or inline with `data`); then ts_gguf_w_write to a
 * FILE* or ts_gguf_w_to_buffer for an in-memory image. Free with ts_gguf_writer_free.
 * Errors: TS_NOMEM, TS_INVAL (bad shape for the type, duplicate names), TS_IO.
 */
#ifndef TS_GGUF_WRITE_H
#define TS_GGUF_WRITE_H

#include <stdint.h>
#include <stdio.h>

#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_gguf_writer ts_gguf_writer;

ts_status ts_gguf_writer_init(ts_gguf_writer **out);
void ts_gguf_writer_free(ts_gguf_writer *w);

ts_status ts_gguf_w_u32(ts_gguf_writer *w, const char *key, uint32_t v);
ts_status ts_gguf_w_i32(ts_gguf_writer *w, const char *key, int32_t v);
ts_status ts_gguf_w_f32(ts_gguf_writer *w, const char *key, float v);
ts_status ts_gguf_w_bool(ts_gguf_writer *w, const char *key, bool v);
ts_status ts_gguf_w_str(ts_gguf_writer *w, const char *key, const char *v);
/* Arrays of scalars: elem_type one of the numeric/bool types; n packed LE elements. */
ts_status ts_gguf_w_arr(ts_gguf_writer *w, const char *key, ts_gguf_vtype elem_type,
                        const void *elems, uint64_t n);
/* Array of n strings (NUL-terminated). */
ts_status ts_gguf_w_arr_str(ts_gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t n);

/* Declares a tensor. `data` (nbytes as the type and shape imply) is copied if non-NULL;
 * if NULL, the fill callback of ts_gguf_w_write provides it. ne: n_dims entries. */
ts_status ts_gguf_w_tensor(ts_gguf_writer *w, const char *name, uint32_t type,
                           uint32_t n_dims, const int64_t *ne, const void *data);

/* Called once per tensor declared without data, in declaration order: write exactly
 * nbytes into dst. Return TS_OK or an error to abort. */
typedef ts_status (*ts_gguf_fill_fn)(void *ctx, uint64_t index, const char *name,
                                     uint32_t type, const int64_t *ne, uint8_t *dst,
                                     size_t nbytes);

ts_status ts_gguf_w_write(ts_gguf_writer *w, FILE *f, ts_gguf_fill_fn fill, void *ctx);
/* Whole image in memory (owned by the caller, free with ts_free). */
ts_status ts_gguf_w_to_buffer(ts_gguf_writer *w, uint8_t **buf, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
