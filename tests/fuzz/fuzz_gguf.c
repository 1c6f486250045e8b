/* fuzz_gguf.c: libFuzzer target for the GGUF reader (shard/gguf.c). Parses the input; when
 * it is accepted, walks every key-value pair (every string byte, every packed array element,
 * nested arrays) and every tensor (first and last data byte), runs the getters, and closes.
 * Allocation must stay bounded: the parser checks counts against the bytes left. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "gguf.h"
#include "quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink;

static void touch_str(ts_gguf_str s) {
    uint64_t h = s.len;
    for (uint64_t i = 0; i < s.len; i++) h = h * 31 + (uint8_t)s.ptr[i];
    g_sink += h;
}

static void walk_value(const ts_gguf_value *v) {
    switch (v->type) {
    case TS_GGUF_STRING:
        touch_str(v->v.str);
        break;
    case TS_GGUF_ARRAY: {
        ts_gguf_vtype et = v->v.arr.elem_type;
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            if (et == TS_GGUF_STRING) touch_str(v->v.arr.strs[i]);
            else if (et == TS_GGUF_ARRAY) walk_value(&v->v.arr.vals[i]);
            else if (ts_gguf_vtype_is_float(et)) g_sink += (uint64_t)(ts_gguf_arr_f64(v, i) != 0);
            else g_sink += ts_gguf_arr_u64(v, i) + (uint64_t)ts_gguf_arr_i64(v, i);
        }
        break;
    }
    default:
        g_sink += v->v.u;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t before = ts_alloc_bytes_in_use();
    ts_gguf *g = NULL;
    ts_status rc = ts_gguf_parse(data, size, &g);
    if (rc != TS_OK) {
        if (g != NULL || ts_last_error()[0] == '\0') __builtin_trap();
    } else {
        for (uint64_t i = 0; i < g->n_kv; i++) {
            const ts_gguf_kv *kv = &g->kv[i];
            g_sink += strlen(kv->key);
            if (ts_gguf_find(g, kv->key) != kv) __builtin_trap(); /* keys are unique */
            walk_value(&kv->value);
            uint32_t u32;
            uint64_t u64;
            int64_t i64;
            float f;
            bool b;
            ts_gguf_str s;
            const ts_gguf_value *a;
            (void)ts_gguf_get_u32(g, kv->key, &u32);
            (void)ts_gguf_get_u64(g, kv->key, &u64);
            (void)ts_gguf_get_i64(g, kv->key, &i64);
            (void)ts_gguf_get_f32(g, kv->key, &f);
            (void)ts_gguf_get_bool(g, kv->key, &b);
            (void)ts_gguf_get_str(g, kv->key, &s);
            (void)ts_gguf_get_arr(g, kv->key, &a);
        }
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const ts_gguf_tensor *t = &g->tensors[i];
            if (ts_gguf_find_tensor(g, t->name) != t) __builtin_trap();
            if (t->n_dims < 1 || t->n_dims > TS_GGUF_MAX_DIMS || !ts_type_name(t->type))
                __builtin_trap();
            if (t->data < data || t->nbytes > size || t->data > data + size - t->nbytes)
                __builtin_trap();
            if (t->nbytes) g_sink += t->data[0] + t->data[t->nbytes - 1];
        }
        ts_gguf_close(g);
    }
    if (ts_alloc_bytes_in_use() != before) __builtin_trap(); /* leak */
    return 0;
}
