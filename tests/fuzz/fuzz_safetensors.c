/* fuzz_safetensors.c: ts_st_parse on arbitrary bytes; on success walks every tensor (find
 * by name, bounds of the data, read as float in bounded chunks when convertible, range
 * errors) and the metadata. Seeds: tests/fuzz/corpus/safetensors/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_st *st = NULL;
    if (ts_st_parse(data, size, &st) != TS_OK) {
        if (st) abort(); /* must stay NULL on failure */
        return 0;
    }
    float buf[64];
    size_t n = ts_st_count(st);
    for (size_t i = 0; i < n; i++) {
        const ts_st_tensor *t = ts_st_get(st, i);
        if (!t || !t->name) abort();
        if (ts_st_find(st, t->name) != t) abort();
        if (t->n_dims > TS_ST_MAX_DIMS || t->n_elems < 0) abort();
        if (t->nbytes != (size_t)t->n_elems * ts_st_dtype_size(t->dtype)) abort();
        /* the data lies inside the input */
        if (t->nbytes && (t->data < data || t->data + t->nbytes > data + size)) abort();
        volatile uint8_t sink = 0;
        if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
        (void)sink;
        bool convertible = t->dtype == TS_ST_F32 || t->dtype == TS_ST_F16 ||
                           t->dtype == TS_ST_BF16;
        for (int64_t first = 0; first < t->n_elems; first += 64) {
            int64_t k = t->n_elems - first < 64 ? t->n_elems - first : 64;
            ts_status rc = ts_st_read_f32(t, first, k, buf);
            if (convertible ? rc != TS_OK : rc != TS_UNSUPPORTED) abort();
        }
        if (ts_st_read_f32(t, t->n_elems, 1, buf) != TS_RANGE) abort();
        if (ts_st_read_f32(t, 0, INT64_MAX, buf) != TS_RANGE) abort();
    }
    if (ts_st_get(st, n) != NULL) abort();
    (void)ts_st_metadata(st, "format");
    (void)ts_st_find(st, "");
    ts_st_close(st);
    return 0;
}
