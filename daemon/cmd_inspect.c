/* cmd_inspect.c: `tessera inspect FILE [--json]`.
 *
 * GGUF files: format summary, architecture and hyperparameters (for gemma3), tokenizer
 * summary, metadata keys, the tensor table (name, type, shape, bytes) and bytes by type.
 * safetensors files (or index .json / checkpoint directories): metadata and the tensor
 * table. Exit 0 on success; 1 with a message naming the problem on any error; 2 on usage.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "commands.h"
#include "config.h"
#include "gguf.h"
#include "quant.h"
#include "safetensors.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tessera inspect FILE [--json]\n\n"
            "Shows a model file: for GGUF the architecture, hyperparameters, tokenizer,\n"
            "metadata and tensors (name, type, shape, bytes) with bytes by type; for\n"
            "safetensors (a file, an index .json or a checkpoint directory) the metadata and\n"
            "tensors.\n\n"
            "  --json   one JSON object on stdout instead of text\n");
}

/* ---- small helpers ---- */

/* A JSON string from bytes that may not be valid UTF-8: invalid bytes become U+FFFD. */
static json_t *jstr(const char *s, size_t n) {
    if (ts_utf8_valid(s, n)) return json_stringn(s, n);
    size_t cap = n * 3 + 1;
    char *buf = ts_malloc(cap);
    if (!buf) return json_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xC0) len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (i + len <= n && ts_utf8_valid(s + i, len)) {
            memcpy(buf + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    json_t *j = json_stringn(buf, o);
    ts_free(buf);
    return j;
}

static void print_escaped(const char *s, uint64_t n, size_t max) {
    putchar('"');
    for (uint64_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    if (n > max) fputs("...", stdout);
    putchar('"');
}

static json_t *value_json(const ts_gguf_value *v, int depth);

static json_t *arr_elem_json(const ts_gguf_value *a, uint64_t i, int depth) {
    ts_gguf_vtype t = a->v.arr.elem_type;
    if (t == TS_GGUF_STRING) return jstr(a->v.arr.strs[i].ptr, a->v.arr.strs[i].len);
    if (t == TS_GGUF_ARRAY) return value_json(&a->v.arr.vals[i], depth + 1);
    if (t == TS_GGUF_BOOL) return json_boolean(ts_gguf_arr_u64(a, i) != 0);
    if (ts_gguf_vtype_is_float(t)) return json_real(ts_gguf_arr_f64(a, i));
    if (t == TS_GGUF_UINT64) return json_integer((json_int_t)ts_gguf_arr_u64(a, i));
    return json_integer((json_int_t)ts_gguf_arr_i64(a, i));
}

/* Scalars as JSON values; arrays as {"type":"array","elem_type":...,"length":n,
 * "values":[first 16]} so that a 262144-entry vocabulary stays readable. */
static json_t *value_json(const ts_gguf_value *v, int depth) {
    switch (v->type) {
    case TS_GGUF_UINT8: case TS_GGUF_UINT16: case TS_GGUF_UINT32: case TS_GGUF_UINT64:
        return json_integer((json_int_t)v->v.u);
    case TS_GGUF_INT8: case TS_GGUF_INT16: case TS_GGUF_INT32: case TS_GGUF_INT64:
        return json_integer((json_int_t)v->v.i);
    case TS_GGUF_FLOAT32: case TS_GGUF_FLOAT64:
        return json_real(v->v.f);
    case TS_GGUF_BOOL:
        return json_boolean(v->v.u != 0);
    case TS_GGUF_STRING:
        return jstr(v->v.str.ptr, v->v.str.len);
    case TS_GGUF_ARRAY: {
        json_t *o = json_object();
        json_object_set_new(o, "type", json_string("array"));
        json_object_set_new(o, "elem_type", json_string(ts_gguf_vtype_name(v->v.arr.elem_type)));
        json_object_set_new(o, "length", json_integer((json_int_t)v->v.arr.n));
        json_t *vals = json_array();
        for (uint64_t i = 0; i < v->v.arr.n && i < 16 && depth < 4; i++)
            json_array_append_new(vals, arr_elem_json(v, i, depth));
        json_object_set_new(o, "values", vals);
        return o;
    }
    default:
        return json_null();
    }
}

static void print_value(const ts_gguf_value *v) {
    switch (v->type) {
    case TS_GGUF_STRING:
        print_escaped(v->v.str.ptr, v->v.str.len, 72);
        break;
    case TS_GGUF_ARRAY: {
        printf("[%s x %llu]", ts_gguf_vtype_name(v->v.arr.elem_type),
               (unsigned long long)v->v.arr.n);
        uint64_t show = v->v.arr.n < 4 ? v->v.arr.n : 4;
        if (show && v->v.arr.elem_type != TS_GGUF_ARRAY) {
            printf(" ");
            for (uint64_t i = 0; i < show; i++) {
                json_t *e = arr_elem_json(v, i, 0);
                char *s = json_dumps(e, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
                printf("%s%s", i ? ", " : "", s ? s : "?");
                free(s);
                json_decref(e);
            }
            if (v->v.arr.n > show) printf(", ...");
        }
        break;
    }
    default: {
        json_t *j = value_json(v, 0);
        char *s = json_dumps(j, JSON_ENCODE_ANY);
        printf("%s", s ? s : "?");
        free(s);
        json_decref(j);
    }
    }
}

static void shape_str(const int64_t *ne, uint32_t n, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (uint32_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static void human_bytes(double b, char *buf, size_t cap) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024.0 && i < 4) {
        b /= 1024.0;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

/* ---- tokenizer summary ---- */

typedef struct {
    const char *model;
    uint64_t n_tokens;
    uint64_t by_type[7]; /* index = token_type 1..6 */
    int64_t bos, eos, unk, pad;
    int add_bos, add_eos, add_space_prefix; /* -1 = absent */
    uint64_t chat_template_len;
    bool has_chat_template;
    uint64_t n_merges;
} tok_summary;

static int64_t opt_id(const ts_gguf *g, const char *key) {
    uint32_t v;
    if (!ts_gguf_find(g, key) || ts_gguf_get_u32(g, key, &v) != TS_OK) return -1;
    return v;
}
static int opt_bool(const ts_gguf *g, const char *key) {
    bool b;
    if (!ts_gguf_find(g, key) || ts_gguf_get_bool(g, key, &b) != TS_OK) return -1;
    return b;
}

static char g_tok_model[64];

static void tokenizer_summary(const ts_gguf *g, tok_summary *t) {
    memset(t, 0, sizeof *t);
    ts_gguf_str m;
    if (ts_gguf_find(g, "tokenizer.ggml.model") &&
        ts_gguf_get_str(g, "tokenizer.ggml.model", &m) == TS_OK) {
        snprintf(g_tok_model, sizeof g_tok_model, "%.*s", (int)(m.len > 60 ? 60 : m.len), m.ptr);
        t->model = g_tok_model;
    }
    const ts_gguf_value *a;
    if (ts_gguf_find(g, "tokenizer.ggml.tokens") &&
        ts_gguf_get_arr(g, "tokenizer.ggml.tokens", &a) == TS_OK)
        t->n_tokens = a->v.arr.n;
    if (ts_gguf_find(g, "tokenizer.ggml.token_type") &&
        ts_gguf_get_arr(g, "tokenizer.ggml.token_type", &a) == TS_OK &&
        ts_gguf_vtype_is_int(a->v.arr.elem_type))
        for (uint64_t i = 0; i < a->v.arr.n; i++) {
            int64_t ty = ts_gguf_arr_i64(a, i);
            if (ty >= 1 && ty <= 6) t->by_type[ty]++;
        }
    if (ts_gguf_find(g, "tokenizer.ggml.merges") &&
        ts_gguf_get_arr(g, "tokenizer.ggml.merges", &a) == TS_OK)
        t->n_merges = a->v.arr.n;
    t->bos = opt_id(g, "tokenizer.ggml.bos_token_id");
    t->eos = opt_id(g, "tokenizer.ggml.eos_token_id");
    t->unk = opt_id(g, "tokenizer.ggml.unknown_token_id");
    t->pad = opt_id(g, "tokenizer.ggml.padding_token_id");
    t->add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token");
    t->add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token");
    t->add_space_prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix");
    ts_gguf_str ct;
    if (ts_gguf_find(g, "tokenizer.chat_template") &&
        ts_gguf_get_str(g, "tokenizer.chat_template", &ct) == TS_OK) {
        t->has_chat_template = true;
        t->chat_template_len = ct.len;
    }
}

static const char *const g_token_type_names[7] = {"", "normal", "unknown", "control",
                                                  "user_defined", "unused", "byte"};

/* ---- GGUF ---- */

typedef struct {
    uint64_t count, bytes;
} type_total;

static int inspect_gguf(const char *path, bool json) {
    ts_gguf *g = NULL;
    if (ts_gguf_open(path, &g) != TS_OK) {
        fprintf(stderr, "tessera inspect: %s\n", ts_last_error());
        return 1;
    }
    ts_config cfg;
    ts_status crc = ts_config_from_gguf(g, &cfg);
    char cfg_err[1024] = "";
    if (crc == TS_OK) crc = ts_config_check_tensors(&cfg, g);
    if (crc != TS_OK) snprintf(cfg_err, sizeof cfg_err, "%s", ts_last_error());
    bool is_gemma3 = crc == TS_OK;
    ts_gguf_str arch = {"", 0};
    if (ts_gguf_find(g, "general.architecture"))
        (void)ts_gguf_get_str(g, "general.architecture", &arch);

    tok_summary tok;
    tokenizer_summary(g, &tok);
    type_total totals[TS_TYPE_COUNT_];
    memset(totals, 0, sizeof totals);
    uint64_t total_bytes = 0, total_elems = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ts_gguf_tensor *t = &g->tensors[i];
        totals[t->type].count++;
        totals[t->type].bytes += t->nbytes;
        total_bytes += t->nbytes;
        total_elems += (uint64_t)t->n_elems;
    }

    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(path));
        json_object_set_new(o, "format", json_string("gguf"));
        json_object_set_new(o, "file_bytes", json_integer((json_int_t)g->size));
        json_object_set_new(o, "version", json_integer(g->version));
        json_object_set_new(o, "alignment", json_integer(g->alignment));
        json_object_set_new(o, "data_offset", json_integer((json_int_t)g->data_offset));
        json_object_set_new(o, "architecture", jstr(arch.ptr, arch.len));
        if (is_gemma3) {
            json_t *h = json_object();
            json_object_set_new(h, "name", json_string(cfg.name));
            json_object_set_new(h, "size", json_string(ts_config_size_label(&cfg)));
            json_object_set_new(h, "n_layer", json_integer(cfg.n_layer));
            json_object_set_new(h, "n_embd", json_integer(cfg.n_embd));
            json_object_set_new(h, "n_ff", json_integer(cfg.n_ff));
            json_object_set_new(h, "n_head", json_integer(cfg.n_head));
            json_object_set_new(h, "n_head_kv", json_integer(cfg.n_head_kv));
            json_object_set_new(h, "head_dim", json_integer(cfg.head_dim));
            json_object_set_new(h, "n_ctx_train", json_integer(cfg.n_ctx_train));
            json_object_set_new(h, "n_vocab", json_integer(cfg.n_vocab));
            json_object_set_new(h, "rms_eps", json_real(cfg.rms_eps));
            json_object_set_new(h, "sliding_window", json_integer(cfg.sliding_window));
            json_t *gl = json_array();
            for (uint32_t i = 0; i < cfg.n_layer; i++)
                if (cfg.is_global[i]) json_array_append_new(gl, json_integer(i));
            json_object_set_new(h, "global_layers", gl);
            json_object_set_new(h, "rope_base_local", json_real(cfg.rope_base_local));
            json_object_set_new(h, "rope_base_global", json_real(cfg.rope_base_global));
            json_object_set_new(h, "rope_scale_global", json_real(cfg.rope_scale_global));
            json_object_set_new(h, "query_pre_attn_scalar", json_real(cfg.query_pre_attn_scalar));
            json_object_set_new(h, "attn_scale", json_real(cfg.attn_scale));
            json_object_set_new(h, "n_params", json_integer((json_int_t)ts_config_n_params(&cfg)));
            json_object_set_new(o, "hyperparameters", h);
        } else {
            json_object_set_new(o, "config_error", json_string(cfg_err));
        }
        json_t *tk = json_object();
        json_object_set_new(tk, "model", tok.model ? json_string(tok.model) : json_null());
        json_object_set_new(tk, "n_tokens", json_integer((json_int_t)tok.n_tokens));
        json_t *bt = json_object();
        for (int i = 1; i <= 6; i++)
            json_object_set_new(bt, g_token_type_names[i], json_integer((json_int_t)tok.by_type[i]));
        json_object_set_new(tk, "token_types", bt);
        json_object_set_new(tk, "bos_id", json_integer(tok.bos));
        json_object_set_new(tk, "eos_id", json_integer(tok.eos));
        json_object_set_new(tk, "unk_id", json_integer(tok.unk));
        json_object_set_new(tk, "pad_id", json_integer(tok.pad));
        json_object_set_new(tk, "n_merges", json_integer((json_int_t)tok.n_merges));
        json_object_set_new(tk, "has_chat_template", json_boolean(tok.has_chat_template));
        json_object_set_new(o, "tokenizer", tk);
        json_t *md = json_array();
        for (uint64_t i = 0; i < g->n_kv; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "key", json_string(g->kv[i].key));
            json_object_set_new(e, "type", json_string(ts_gguf_vtype_name(g->kv[i].value.type)));
            json_object_set_new(e, "value", value_json(&g->kv[i].value, 0));
            json_array_append_new(md, e);
        }
        json_object_set_new(o, "metadata", md);
        json_t *ts = json_array();
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const ts_gguf_tensor *t = &g->tensors[i];
            json_t *e = json_object();
            json_object_set_new(e, "name", json_string(t->name));
            json_object_set_new(e, "type", json_string(ts_type_name(t->type)));
            json_t *sh = json_array();
            for (uint32_t d = 0; d < t->n_dims; d++) json_array_append_new(sh, json_integer(t->ne[d]));
            json_object_set_new(e, "shape", sh);
            json_object_set_new(e, "bytes", json_integer((json_int_t)t->nbytes));
            json_object_set_new(e, "offset", json_integer((json_int_t)t->offset));
            json_array_append_new(ts, e);
        }
        json_object_set_new(o, "tensors", ts);
        json_t *by = json_object();
        for (int i = 0; i < TS_TYPE_COUNT_; i++) {
            if (!totals[i].count) continue;
            json_t *e = json_object();
            json_object_set_new(e, "tensors", json_integer((json_int_t)totals[i].count));
            json_object_set_new(e, "bytes", json_integer((json_int_t)totals[i].bytes));
            json_object_set_new(by, ts_type_name((uint32_t)i), e);
        }
        json_object_set_new(o, "bytes_by_type", by);
        json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)total_bytes));
        json_object_set_new(o, "n_elements", json_integer((json_int_t)total_elems));
        if (json_dumpf(o, stdout, JSON_INDENT(1)) != 0) {
            json_decref(o);
            ts_gguf_close(g);
            fprintf(stderr, "tessera inspect: cannot write JSON\n");
            return 1;
        }
        putchar('\n');
        json_decref(o);
        ts_gguf_close(g);
        return 0;
    }

    char hb[32];
    human_bytes((double)g->size, hb, sizeof hb);
    printf("file:          %s (%s)\n", path, hb);
    printf("format:        GGUF v%u, %llu metadata keys, %llu tensors, alignment %u, data at "
           "offset %llu\n",
           g->version, (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors,
           g->alignment, (unsigned long long)g->data_offset);
    printf("architecture:  %.*s", (int)(arch.len > 60 ? 60 : arch.len), arch.ptr);
    if (is_gemma3)
        printf(" (Gemma 3 %s%s%s%s)\n", ts_config_size_label(&cfg), cfg.name[0] ? ", \"" : "",
               cfg.name, cfg.name[0] ? "\"" : "");
    else
        printf("\n");
    if (is_gemma3) {
        printf("hyperparameters:\n");
        printf("  layers %u, hidden %u, ffn %u, heads %u, kv heads %u, head_dim %u\n",
               cfg.n_layer, cfg.n_embd, cfg.n_ff, cfg.n_head, cfg.n_head_kv, cfg.head_dim);
        printf("  vocab %u, context %u, rms eps %g, parameters %.1fM\n", cfg.n_vocab,
               cfg.n_ctx_train, (double)cfg.rms_eps, (double)ts_config_n_params(&cfg) / 1e6);
        if (cfg.sliding_window)
            printf("  sliding window %u on %u local layers; %u global layers:", cfg.sliding_window,
                   cfg.n_layer - cfg.n_global, cfg.n_global);
        else
            printf("  no sliding window: all %u layers global:", cfg.n_layer);
        for (uint32_t i = 0; i < cfg.n_layer; i++)
            if (cfg.is_global[i]) printf(" %u", i);
        printf("\n");
        printf("  rope: local base %g, global base %g, global linear scaling %s%g\n",
               (double)cfg.rope_base_local, (double)cfg.rope_base_global,
               cfg.rope_scale_global == 1.0f ? "none, factor " : "factor ",
               (double)cfg.rope_scale_global);
        printf("  attention scale %.7g (query_pre_attn_scalar %g)\n", (double)cfg.attn_scale,
               (double)cfg.query_pre_attn_scalar);
    } else {
        printf("not a usable Gemma 3 model: %s\n", cfg_err);
    }
    printf("tokenizer:     %s, %llu tokens", tok.model ? tok.model : "(none)",
           (unsigned long long)tok.n_tokens);
    if (tok.n_tokens) {
        printf(" (");
        int first = 1;
        for (int i = 1; i <= 6; i++)
            if (tok.by_type[i]) {
                printf("%s%s %llu", first ? "" : ", ", g_token_type_names[i],
                       (unsigned long long)tok.by_type[i]);
                first = 0;
            }
        printf(")");
    }
    printf("\n  bos %lld, eos %lld, unk %lld, pad %lld; add_bos %s, add_space_prefix %s, "
           "merges %llu, chat template %s\n",
           (long long)tok.bos, (long long)tok.eos, (long long)tok.unk, (long long)tok.pad,
           tok.add_bos < 0 ? "-" : tok.add_bos ? "yes" : "no",
           tok.add_space_prefix < 0 ? "-" : tok.add_space_prefix ? "yes" : "no",
           (unsigned long long)tok.n_merges, tok.has_chat_template ? "yes" : "none");
    printf("metadata:\n");
    for (uint64_t i = 0; i < g->n_kv; i++) {
        printf("  %-44s %-8s ", g->kv[i].key, ts_gguf_vtype_name(g->kv[i].value.type));
        print_value(&g->kv[i].value);
        printf("\n");
    }
    printf("tensors:\n  %-40s %-6s %-22s %14s\n", "name", "type", "shape", "bytes");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ts_gguf_tensor *t = &g->tensors[i];
        char sh[96];
        shape_str(t->ne, t->n_dims, sh, sizeof sh);
        printf("  %-40s %-6s %-22s %14zu\n", t->name, ts_type_name(t->type), sh, t->nbytes);
    }
    printf("bytes by type:\n");
    for (int i = 0; i < TS_TYPE_COUNT_; i++) {
        if (!totals[i].count) continue;
        human_bytes((double)totals[i].bytes, hb, sizeof hb);
        printf("  %-6s %5llu tensors %14llu bytes (%s)\n", ts_type_name((uint32_t)i),
               (unsigned long long)totals[i].count, (unsigned long long)totals[i].bytes, hb);
    }
    human_bytes((double)total_bytes, hb, sizeof hb);
    printf("  total  %5llu tensors %14llu bytes (%s), %.1f bits per weight\n",
           (unsigned long long)g->n_tensors, (unsigned long long)total_bytes, hb,
           total_elems ? 8.0 * (double)total_bytes / (double)total_elems : 0.0);
    ts_gguf_close(g);
    return 0;
}

/* ---- safetensors ---- */

static int inspect_safetensors(const char *path, bool json) {
    ts_st *st = NULL;
    if (ts_st_open(path, &st) != TS_OK) {
        fprintf(stderr, "tessera inspect: %s\n", ts_last_error());
        return 1;
    }
    size_t n = ts_st_count(st);
    uint64_t by[TS_ST_DTYPE_COUNT_][2];
    memset(by, 0, sizeof by);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const ts_st_tensor *t = ts_st_get(st, i);
        by[t->dtype][0]++;
        by[t->dtype][1] += t->nbytes;
        total += t->nbytes;
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(path));
        json_object_set_new(o, "format", json_string("safetensors"));
        json_object_set_new(o, "shards", json_integer((json_int_t)ts_st_shard_count(st)));
        json_t *ts = json_array();
        for (size_t i = 0; i < n; i++) {
            const ts_st_tensor *t = ts_st_get(st, i);
            json_t *e = json_object();
            json_object_set_new(e, "name", json_string(t->name));
            json_object_set_new(e, "type", json_string(ts_st_dtype_name(t->dtype)));
            json_t *sh = json_array();
            for (uint32_t d = 0; d < t->n_dims; d++) json_array_append_new(sh, json_integer(t->shape[d]));
            json_object_set_new(e, "shape", sh);
            json_object_set_new(e, "bytes", json_integer((json_int_t)t->nbytes));
            json_object_set_new(e, "shard", json_integer(t->shard));
            json_array_append_new(ts, e);
        }
        json_object_set_new(o, "tensors", ts);
        json_t *bt = json_object();
        for (int i = 0; i < TS_ST_DTYPE_COUNT_; i++) {
            if (!by[i][0]) continue;
            json_t *e = json_object();
            json_object_set_new(e, "tensors", json_integer((json_int_t)by[i][0]));
            json_object_set_new(e, "bytes", json_integer((json_int_t)by[i][1]));
            json_object_set_new(bt, ts_st_dtype_name((ts_st_dtype)i), e);
        }
        json_object_set_new(o, "bytes_by_type", bt);
        json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)total));
        json_dumpf(o, stdout, JSON_INDENT(1));
        putchar('\n');
        json_decref(o);
    } else {
        printf("file:          %s\n", path);
        printf("format:        safetensors, %zu shard(s), %zu tensors\n", ts_st_shard_count(st), n);
        const char *fmt = ts_st_metadata(st, "format");
        if (fmt) printf("metadata:      format = %s\n", fmt);
        printf("tensors:\n  %-64s %-6s %-24s %14s\n", "name", "type", "shape", "bytes");
        for (size_t i = 0; i < n; i++) {
            const ts_st_tensor *t = ts_st_get(st, i);
            char sh[128];
            shape_str(t->shape, t->n_dims, sh, sizeof sh);
            printf("  %-64s %-6s %-24s %14zu\n", t->name, ts_st_dtype_name(t->dtype), sh, t->nbytes);
        }
        printf("bytes by type:\n");
        char hb[32];
        for (int i = 0; i < TS_ST_DTYPE_COUNT_; i++) {
            if (!by[i][0]) continue;
            human_bytes((double)by[i][1], hb, sizeof hb);
            printf("  %-6s %5llu tensors %14llu bytes (%s)\n", ts_st_dtype_name((ts_st_dtype)i),
                   (unsigned long long)by[i][0], (unsigned long long)by[i][1], hb);
        }
        human_bytes((double)total, hb, sizeof hb);
        printf("  total  %5zu tensors %14llu bytes (%s)\n", n, (unsigned long long)total, hb);
    }
    ts_st_close(st);
    return 0;
}

/* GGUF by magic; otherwise safetensors (file, index .json or directory). */
static bool looks_like_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char m[4];
    bool yes = fread(m, 1, 4, f) == 4 && memcmp(m, TS_GGUF_MAGIC, 4) == 0;
    fclose(f);
    return yes;
}

int ts_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tessera inspect: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "tessera inspect: more than one FILE given ('%s', '%s')\n", path,
                    argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "tessera inspect: cannot open '%s': no such file or directory\n", path);
        return 1;
    }
    size_t plen = strlen(path);
    bool st_like = S_ISDIR(sb.st_mode) || (plen > 5 && !strcmp(path + plen - 5, ".json")) ||
                   (plen > 12 && !strcmp(path + plen - 12, ".safetensors"));
    if (!S_ISDIR(sb.st_mode) && looks_like_gguf(path)) return inspect_gguf(path, json);
    if (st_like) return inspect_safetensors(path, json);
    /* Neither by magic nor by name: let the GGUF parser name the problem. */
    return inspect_gguf(path, json);
}
