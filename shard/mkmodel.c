/* mkmodel.c: random-weight Gemma 3 GGUF files; see mkmodel.h and docs/mkmodel.md.
 *
 * DESIGN: one description of the file drives both writing and sizing. `emit_model` walks
 * the metadata and tensor list through a small sink (`md`) that either forwards to the
 * GGUF writer or only counts the bytes they will occupy, so ts_mkmodel_estimate_bytes is
 * exact by construction. Tensor data is produced by the writer's fill callback, one tensor
 * at a time: each row is generated as fp32 (counter-based hashing keyed per row, so any
 * element can be recomputed on its own) and converted to the output type with the reference
 * quantizers' equivalents (bit-exact with ggml's, vectorizable).
 */
#include "mkmodel.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "gguf_write.h"
#include "quant.h"

/* ---- shapes and types ---------------------------------------------------------------- */

static const ts_mkmodel_shape g_shapes[] = {
    /* name   L   d     ff     H   KV  hd   W     ctx     rope */
    {"tiny", 8, 128, 256, 4, 2, 32, 16, 512, 8.0f},
    {"270m", 18, 640, 2048, 4, 1, 256, 512, 32768, 0.0f},
    {"1b", 26, 1152, 6912, 4, 1, 256, 512, 32768, 0.0f},
    {"4b", 34, 2560, 10240, 8, 4, 256, 1024, 131072, 8.0f},
    {"12b", 48, 3840, 15360, 16, 8, 256, 1024, 131072, 8.0f},
    {"27b", 62, 5376, 21504, 32, 16, 128, 1024, 131072, 8.0f},
};
#define N_SHAPES (sizeof g_shapes / sizeof g_shapes[0])

static bool eq_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
    return *a == *b;
}

const ts_mkmodel_shape *ts_mkmodel_shape_by_name(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < N_SHAPES; i++)
        if (eq_nocase(name, g_shapes[i].name)) return &g_shapes[i];
    return NULL;
}

const ts_mkmodel_shape *ts_mkmodel_shape_at(unsigned i) {
    return i < N_SHAPES ? &g_shapes[i] : NULL;
}

bool ts_mkmodel_type_from_name(const char *name, uint32_t *type) {
    static const struct {
        const char *name;
        uint32_t type;
    } t[] = {{"q4_0", TS_TYPE_Q4_0}, {"q8_0", TS_TYPE_Q8_0}, {"f16", TS_TYPE_F16},
             {"f32", TS_TYPE_F32}};
    if (!name) return false;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (eq_nocase(name, t[i].name)) {
            *type = t[i].type;
            return true;
        }
    return false;
}

uint32_t ts_mkmodel_file_type(uint32_t type) {
    switch (type) {
    case TS_TYPE_F32: return 0;  /* LLAMA_FTYPE_ALL_F32 */
    case TS_TYPE_F16: return 1;  /* LLAMA_FTYPE_MOSTLY_F16 */
    case TS_TYPE_Q4_0: return 2; /* LLAMA_FTYPE_MOSTLY_Q4_0 */
    case TS_TYPE_Q8_0: return 7; /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    default: return UINT32_MAX;
    }
}

/* ---- random numbers ------------------------------------------------------------------ */

#define GAMMA 0x9E3779B97F4A7C15ull

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

/* Stream key of a tensor (or other named stream) for a seed. */
static uint64_t stream_key(uint64_t seed, const char *name) {
    return mix64(fnv1a64(name) ^ mix64(seed + GAMMA));
}

/* Per-element hash: lowbias32 (Chris Wellons' 32-bit integer hash; a bijection with full
 * avalanche) of a Weyl sequence over the column index, keyed per row. Two hashes per
 * element give four 16-bit uniforms; their Irwin-Hall sum, centred, has range
 * [-131070, 131070] and std 65536/sqrt(3): times IH_UNIT it has unit variance.
 * Everything is 32-bit integer arithmetic plus one exact int->float conversion, one
 * multiply and one add, so the vector and scalar paths give identical bits. */
#define IH_UNIT (1.7320508075688772f / 65536.0f)
#define W0 0x9E3779B9u
#define W1 0x7F4A7C15u
#define LOWBIAS32(x)                                                                       \
    do {                                                                                   \
        (x) ^= (x) >> 16;                                                                  \
        (x) *= 0x7FEB352Du;                                                                \
        (x) ^= (x) >> 15;                                                                  \
        (x) *= 0x846CA68Bu;                                                                \
        (x) ^= (x) >> 16;                                                                  \
    } while (0)

static inline float elem(uint32_t k0, uint32_t k1, uint32_t c, float mean, float sc) {
    uint32_t a = c * W0 + k0, b = c * W1 + k1;
    LOWBIAS32(a);
    LOWBIAS32(b);
    int32_t s = (int32_t)((a & 0xFFFFu) + (a >> 16) + (b & 0xFFFFu) + (b >> 16)) - 131070;
    return (float)s * sc + mean;
}

#if defined(__GNUC__) && defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define TS_MK_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef TS_MK_CLONES
#define TS_MK_CLONES
#endif

#if defined(__GNUC__)
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));
#endif

/* Columns [j0, j0 + n) of row key (k0, k1): mean + std * N(0,1)-like. */
TS_MK_CLONES
static void gen_cols(uint32_t k0, uint32_t k1, uint32_t j0, float *out, int64_t n, float mean,
                     float std) {
    const float sc = std * IH_UNIT;
    int64_t j = 0;
#if defined(__GNUC__)
    const u32x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (; j + 8 <= n; j += 8) {
        u32x8 c = lane + (j0 + (uint32_t)j);
        u32x8 a = c * W0 + k0, b = c * W1 + k1;
        LOWBIAS32(a);
        LOWBIAS32(b);
        i32x8 s = (i32x8)((a & 0xFFFFu) + (a >> 16) + (b & 0xFFFFu) + (b >> 16)) - 131070;
        f32x8 f = __builtin_convertvector(s, f32x8) * sc + mean;
        memcpy(out + j, &f, sizeof f);
    }
#endif
    for (; j < n; j++) out[j] = elem(k0, k1, j0 + (uint32_t)j, mean, sc);
}

/* Q4_0 of one row, bit-exact with ts_quantize_row_q4_0_ref (which it replaces because the
 * reference's first-maximum scan does not vectorize and dominated the run time). The
 * reference picks the first element of largest magnitude as `max`; here the block's
 * largest and smallest values decide, and only an exact tie (v and -v both extreme) falls
 * back to the scan. Exposed for the test through ts_mkmodel_quantize_q4_0. */
TS_MK_CLONES
static void quantize_q4_0(const float *x, uint8_t *out, int64_t n) {
    for (int64_t i = 0; i < n / TS_QK4_0; i++) {
        const float *b = x + i * TS_QK4_0;
        float hi = b[0], lo = b[0];
        for (int j = 1; j < TS_QK4_0; j++) {
            hi = b[j] > hi ? b[j] : hi;
            lo = b[j] < lo ? b[j] : lo;
        }
        float max;
        if (hi > -lo) {
            max = hi;
        } else if (-lo > hi) {
            max = lo;
        } else if (hi == 0.0f) {
            max = 0.0f;
        } else {
            max = 0.0f;
            float amax = 0.0f;
            for (int j = 0; j < TS_QK4_0; j++)
                if (amax < fabsf(b[j])) {
                    amax = fabsf(b[j]);
                    max = b[j];
                }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t *y = out + (size_t)i * sizeof(ts_block_q4_0);
        uint16_t dh = ts_fp32_to_fp16(d);
        memcpy(y, &dh, 2);
        int32_t q[TS_QK4_0];
        for (int j = 0; j < TS_QK4_0; j++) {
            int32_t v = (int32_t)(b[j] * id + 8.5f);
            q[j] = v > 15 ? 15 : v;
        }
        for (int j = 0; j < TS_QK4_0 / 2; j++) y[2 + j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    }
}

void ts_mkmodel_quantize_q4_0(const float *x, void *dst, int64_t n) { quantize_q4_0(x, dst, n); }

/* Q8_0 of one row, bit-exact with ts_quantize_row_q8_0_ref: roundf (halves away from
 * zero) as truncation plus a correction from the exact fractional part, which vectorizes
 * where the libm call does not. |x * id| <= 127 (+ rounding), far below 2^23. */
TS_MK_CLONES
static void quantize_q8_0(const float *x, uint8_t *out, int64_t n) {
    for (int64_t i = 0; i < n / TS_QK8_0; i++) {
        const float *b = x + i * TS_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < TS_QK8_0; j++) {
            float v = fabsf(b[j]);
            amax = v > amax ? v : amax;
        }
        const float d = amax / ((1 << 7) - 1);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t *y = out + (size_t)i * sizeof(ts_block_q8_0);
        uint16_t dh = ts_fp32_to_fp16(d);
        memcpy(y, &dh, 2);
        int8_t q[TS_QK8_0];
        for (int j = 0; j < TS_QK8_0; j++) {
            float v = b[j] * id;
            int32_t t = (int32_t)v;
            float r = v - (float)t;
            q[j] = (int8_t)(t + (r >= 0.5f) - (r <= -0.5f));
        }
        memcpy(y + 2, q, sizeof q);
    }
}

void ts_mkmodel_quantize_q8_0(const float *x, void *dst, int64_t n) { quantize_q8_0(x, dst, n); }

static void row_keys(uint64_t key, uint64_t row, uint32_t *k0, uint32_t *k1) {
    uint64_t rk = mix64(key + (row + 1) * GAMMA);
    *k0 = (uint32_t)rk;
    *k1 = (uint32_t)(rk >> 32);
}

float ts_mkmodel_weight(uint64_t seed, const char *name, int64_t ne0, uint64_t i, float mean,
                        float std) {
    uint32_t k0, k1;
    row_keys(stream_key(seed, name), i / (uint64_t)ne0, &k0, &k1);
    return elem(k0, k1, (uint32_t)(i % (uint64_t)ne0), mean, std * IH_UNIT);
}

/* ---- the metadata/tensor sink --------------------------------------------------------- */

typedef struct {
    ts_gguf_writer *w; /* NULL: only count */
    uint64_t hdr;      /* bytes of kv records + tensor infos */
    uint64_t data;     /* bytes of the data section (tensors padded to 32) */
} md;

static uint64_t str_bytes(const char *s) { return 8 + (uint64_t)strlen(s); }
static void count_key(md *m, const char *k) { m->hdr += str_bytes(k) + 4; }

static ts_status md_u32(md *m, const char *k, uint32_t v) {
    if (m->w) return ts_gguf_w_u32(m->w, k, v);
    count_key(m, k);
    m->hdr += 4;
    return TS_OK;
}
static ts_status md_f32(md *m, const char *k, float v) {
    if (m->w) return ts_gguf_w_f32(m->w, k, v);
    count_key(m, k);
    m->hdr += 4;
    return TS_OK;
}
static ts_status md_bool(md *m, const char *k, bool v) {
    if (m->w) return ts_gguf_w_bool(m->w, k, v);
    count_key(m, k);
    m->hdr += 1;
    return TS_OK;
}
static ts_status md_str(md *m, const char *k, const char *v) {
    if (m->w) return ts_gguf_w_str(m->w, k, v);
    count_key(m, k);
    m->hdr += str_bytes(v);
    return TS_OK;
}
static ts_status md_arr(md *m, const char *k, ts_gguf_vtype et, const void *e, uint64_t n) {
    if (m->w) return ts_gguf_w_arr(m->w, k, et, e, n);
    count_key(m, k);
    m->hdr += 4 + 8 + n * ts_gguf_vtype_size(et);
    return TS_OK;
}
static ts_status md_arr_str(md *m, const char *k, const char *const *s, uint64_t n) {
    if (m->w) return ts_gguf_w_arr_str(m->w, k, s, n);
    count_key(m, k);
    m->hdr += 4 + 8;
    for (uint64_t i = 0; i < n; i++) m->hdr += str_bytes(s[i]);
    return TS_OK;
}

/* ---- tensors -------------------------------------------------------------------------- */

typedef struct {
    char name[64];
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[2];
    float mean, std;
    size_t nbytes;
} tspec;

typedef struct {
    tspec *t;
    uint32_t n;
    uint64_t n_params;
    uint64_t data_bytes; /* sum of nbytes (unpadded) */
} tlist;

static ts_status add_spec(tlist *l, const char *name, uint32_t type, int64_t ne0, int64_t ne1,
                          float mean, float std) {
    tspec *s = &l->t[l->n];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->type = ne1 ? type : TS_TYPE_F32;
    s->n_dims = ne1 ? 2 : 1;
    s->ne[0] = ne0;
    s->ne[1] = ne1 ? ne1 : 1;
    s->mean = mean;
    s->std = std;
    size_t row;
    if (!ts_type_row_bytes(s->type, ne0, &row) || !ts_mul_size(row, (size_t)s->ne[1], &s->nbytes))
        return TS_FAIL(TS_INVAL, "tensor '%s': %lld elements per row do not fit type %s",
                       name, (long long)ne0, ts_type_name(s->type));
    l->n++;
    l->n_params += (uint64_t)ne0 * (uint64_t)s->ne[1];
    l->data_bytes += s->nbytes;
    return TS_OK;
}

/* Tensor list in file order: token_embd, blk.0 .. blk.L-1, output_norm. */
static ts_status build_tensors(const ts_mkmodel_shape *sh, uint32_t type, uint32_t n_vocab,
                               tlist *l) {
    memset(l, 0, sizeof *l);
    l->t = ts_calloc((size_t)sh->n_layer * 13 + 2, sizeof *l->t);
    if (!l->t) return TS_FAIL(TS_NOMEM, "tensor list");
    const int64_t d = sh->n_embd, q = (int64_t)sh->n_head * sh->head_dim,
                  kv = (int64_t)sh->n_head_kv * sh->head_dim, ff = sh->n_ff, hd = sh->head_dim;
    const float nm = 1.0f, ns = 0.1f; /* norms: 1 + 0.1 N */
    TS_TRY(add_spec(l, "token_embd.weight", type, d, n_vocab, 0.0f, 1.0f / sqrtf((float)d)));
    char n[64];
    for (uint32_t i = 0; i < sh->n_layer; i++) {
        ts_layer_tensor want[TS_LAYER_TENSORS];
        ts_layer_tensors(d, q, kv, ff, hd, want);
        for (size_t k = 0; k < TS_LAYER_TENSORS; k++) {
            snprintf(n, sizeof n, "blk.%u.%s.weight", i, want[k].suffix);
            bool norm = want[k].ne1 == 0;
            TS_TRY(add_spec(l, n, type, want[k].ne0, want[k].ne1, norm ? nm : 0.0f,
                            norm ? ns : 1.0f / sqrtf((float)want[k].ne0)));
        }
    }
    TS_TRY(add_spec(l, "output_norm.weight", type, d, 0, nm, ns));
    return TS_OK;
}

/* ---- vocabulary ----------------------------------------------------------------------- */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_BYTE = 6 };

#define ID_BOI 255999u
#define ID_EOI 256000u
#define WORD_MAX 16 /* bytes of a generated piece */

typedef struct {
    uint32_t n;
    char *arena;
    size_t arena_len, arena_cap;
    uint64_t *off; /* piece i = arena + off[i]; UINT64_MAX = not yet set */
    float *score;
    int32_t *type;
    const char **ptr; /* filled at the end */
    uint32_t *set;    /* open-addressing hash set of ids (UINT32_MAX = empty) */
    uint32_t set_mask;
} vocab;

static void vocab_free(vocab *v) {
    ts_free(v->arena);
    ts_free(v->off);
    ts_free(v->score);
    ts_free(v->type);
    ts_free(v->ptr);
    ts_free(v->set);
    memset(v, 0, sizeof *v);
}

static const char *piece(const vocab *v, uint32_t id) { return v->arena + v->off[id]; }

/* Slot of `s` in the set: the slot holding it, or the empty slot where it would go. */
static uint32_t set_slot(const vocab *v, const char *s, size_t len) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001B3ull;
    uint32_t i = (uint32_t)mix64(h) & v->set_mask;
    for (;;) {
        uint32_t id = v->set[i];
        if (id == UINT32_MAX) return i;
        const char *p = piece(v, id);
        if (strlen(p) == len && memcmp(p, s, len) == 0) return i;
        i = (i + 1) & v->set_mask;
    }
}

/* Sets piece `id` to s[0..len) unless that text exists; returns false if it does. */
static ts_status vocab_put(vocab *v, uint32_t id, const char *s, size_t len, int32_t type,
                           float score, bool *added) {
    uint32_t slot = set_slot(v, s, len);
    if (v->set[slot] != UINT32_MAX) {
        if (added) {
            *added = false;
            return TS_OK;
        }
        return TS_FAIL(TS_INTERNAL, "vocabulary: duplicate piece for id %u", id);
    }
    if (v->arena_len + len + 1 > v->arena_cap) {
        size_t cap = v->arena_cap ? v->arena_cap : 4096;
        while (cap < v->arena_len + len + 1) cap *= 2;
        char *a = ts_realloc(v->arena, cap);
        if (!a) return TS_FAIL(TS_NOMEM, "vocabulary text (%zu bytes)", cap);
        v->arena = a;
        v->arena_cap = cap;
    }
    memcpy(v->arena + v->arena_len, s, len);
    v->arena[v->arena_len + len] = '\0';
    v->off[id] = v->arena_len;
    v->arena_len += len + 1;
    v->type[id] = type;
    v->score[id] = score;
    v->set[slot] = id;
    if (added) *added = true;
    return TS_OK;
}

static ts_status vocab_put_str(vocab *v, uint32_t id, const char *s, int32_t type, float score) {
    return vocab_put(v, id, s, strlen(s), type, score, NULL);
}

/* Letters for generated words, roughly by English frequency. */
static const char g_letters[] = "eeeeeeeeeeetttttttaaaaaaaoooooooiiiiiinnnnnnsssssshhhhhrrrrrd"
                                "ddllllcccuuummwwffggyyppbbvkjxqz";

/* Gemma-like layout (spec 5.1); see docs/mkmodel.md. Needs n >= TS_MKMODEL_MIN_VOCAB. */
static ts_status build_vocab(uint32_t n, uint64_t seed, vocab *v) {
    memset(v, 0, sizeof *v);
    v->n = n;
    uint32_t cap = 1;
    while (cap < 2u * n) cap <<= 1;
    v->set_mask = cap - 1;
    v->off = ts_malloc((size_t)n * sizeof *v->off);
    v->score = ts_malloc((size_t)n * sizeof *v->score);
    v->type = ts_malloc((size_t)n * sizeof *v->type);
    v->ptr = ts_malloc((size_t)n * sizeof *v->ptr);
    v->set = ts_malloc((size_t)cap * sizeof *v->set);
    if (!v->off || !v->score || !v->type || !v->ptr || !v->set) {
        vocab_free(v);
        return TS_FAIL(TS_NOMEM, "vocabulary of %u pieces", n);
    }
    memset(v->set, 0xFF, (size_t)cap * sizeof *v->set);
    for (uint32_t i = 0; i < n; i++) v->off[i] = UINT64_MAX;

    ts_status rc = TS_OK;
    const float sp = -1000.0f; /* score of control / user-defined pieces */
    char buf[64];
    TS_TRY_GOTO(vocab_put_str(v, 0, "<pad>", TT_CONTROL, sp), rc, fail);
    TS_TRY_GOTO(vocab_put_str(v, 1, "<eos>", TT_CONTROL, sp), rc, fail);
    TS_TRY_GOTO(vocab_put_str(v, 2, "<bos>", TT_CONTROL, sp), rc, fail);
    TS_TRY_GOTO(vocab_put_str(v, 3, "<unk>", TT_UNKNOWN, sp), rc, fail);
    TS_TRY_GOTO(vocab_put_str(v, 4, "<mask>", TT_CONTROL, sp), rc, fail);
    TS_TRY_GOTO(vocab_put_str(v, 5, "[multimodal]", TT_USER, sp), rc, fail);
    for (uint32_t i = 6; i <= 104; i++) {
        snprintf(buf, sizeof buf, "<unused%u>", i - 6);
        TS_TRY_GOTO(vocab_put_str(v, i, buf, TT_CONTROL, sp), rc, fail);
    }
    TS_TRY_GOTO(vocab_put_str(v, 105, "<start_of_turn>", TT_CONTROL, sp), rc, fail);
    TS_TRY_GOTO(vocab_put_str(v, 106, "<end_of_turn>", TT_CONTROL, sp), rc, fail);
    /* 107..137: runs of 1..31 newlines; 138..237: runs of 2..101 spaces. */
    memset(buf, '\n', sizeof buf);
    for (uint32_t i = 107; i <= 137; i++)
        TS_TRY_GOTO(vocab_put(v, i, buf, i - 106, TT_USER, sp, NULL), rc, fail);
    char spaces[128];
    memset(spaces, ' ', sizeof spaces);
    for (uint32_t i = 138; i <= 237; i++)
        TS_TRY_GOTO(vocab_put(v, i, spaces, i - 136, TT_USER, sp, NULL), rc, fail);
    /* 238..493: byte fallback <0x00>..<0xFF>. */
    for (uint32_t b = 0; b < 256; b++) {
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        TS_TRY_GOTO(vocab_put_str(v, 238 + b, buf, TT_BYTE, 0.0f), rc, fail);
    }
    if (n > ID_EOI) {
        TS_TRY_GOTO(vocab_put_str(v, ID_BOI, "<start_of_image>", TT_USER, sp), rc, fail);
        TS_TRY_GOTO(vocab_put_str(v, ID_EOI, "<end_of_image>", TT_USER, sp), rc, fail);
    }

    /* NORMAL pieces fill every free id in order, scores 0, -1, -2, ... (earlier = better
     * merge rank): "▁", the printable ASCII characters, then generated words. */
    uint32_t next = 494, k = 0;
#define NEXT_FREE()                                                                        \
    do {                                                                                   \
        while (next < n && v->off[next] != UINT64_MAX) next++;                             \
    } while (0)
    NEXT_FREE();
    if (next < n) {
        TS_TRY_GOTO(vocab_put_str(v, next, "\xE2\x96\x81", TT_NORMAL, -(float)k++), rc, fail);
        NEXT_FREE();
    }
    for (int c = 0x21; c <= 0x7E && next < n; c++) {
        char ch = (char)c;
        TS_TRY_GOTO(vocab_put(v, next, &ch, 1, TT_NORMAL, -(float)k++, NULL), rc, fail);
        NEXT_FREE();
    }
    /* Words: prefix-closed, so the tokenizer's merges can build each from its parent.
     * Parents: "▁x" and "x" for every letter, then every accepted word; a new word is a
     * parent (biased to early, short ones) plus one letter. */
    uint32_t *parents = ts_malloc((size_t)n * sizeof *parents);
    if (!parents) {
        rc = TS_FAIL(TS_NOMEM, "vocabulary parents");
        goto fail;
    }
    uint32_t np = 0;
    for (int c = 0; c < 52 && next < n; c++) {
        char w[4] = {'\xE2', '\x96', '\x81', (char)(c < 26 ? 'a' + c : 'A' + c - 26)};
        bool added;
        TS_TRY_GOTO(vocab_put(v, next, w, 4, TT_NORMAL, -(float)k, &added), rc, fail_p);
        if (added) {
            k++;
            parents[np++] = next;
            NEXT_FREE();
        }
    }
    /* single letters (already pieces) are parents too */
    for (uint32_t i = 494; i < n && i < 494 + 95; i++)
        if (v->off[i] != UINT64_MAX && isalpha((unsigned char)piece(v, i)[0]) &&
            piece(v, i)[1] == '\0')
            parents[np++] = i;
    uint64_t st = stream_key(seed, "tokenizer.ggml.tokens");
    uint32_t misses = 0;
    while (next < n) {
        uint64_t h = mix64(st += GAMMA);
        double u = (double)(h >> 11) * 0x1.0p-53;
        uint32_t p = parents[(uint32_t)(u * u * u * np)];
        const char *ps = piece(v, p);
        size_t pl = strlen(ps);
        char w[WORD_MAX + 1];
        if (pl + 1 > WORD_MAX) continue;
        memcpy(w, ps, pl);
        w[pl] = g_letters[(h & 0xFFFF) % (sizeof g_letters - 1)];
        bool added;
        TS_TRY_GOTO(vocab_put(v, next, w, pl + 1, TT_NORMAL, -(float)k, &added), rc, fail_p);
        if (!added) {
            if (++misses > 100000000u) {
                rc = TS_FAIL(TS_INTERNAL, "vocabulary: cannot find new words");
                goto fail_p;
            }
            continue;
        }
        misses = 0;
        k++;
        parents[np++] = next;
        NEXT_FREE();
    }
#undef NEXT_FREE
    ts_free(parents);
    for (uint32_t i = 0; i < n; i++) v->ptr[i] = piece(v, i);
    return TS_OK;
fail_p:
    ts_free(parents);
fail:
    vocab_free(v);
    return rc;
}

/* ---- the file ------------------------------------------------------------------------- */

static ts_status check_params(const ts_mkmodel_params *p, uint32_t *n_vocab, uint32_t *n_ctx) {
    if (!p || !p->shape) return TS_FAIL(TS_INVAL, "mkmodel: no size given");
    if (ts_mkmodel_file_type(p->type) == UINT32_MAX)
        return TS_FAIL(TS_INVAL, "mkmodel: type %s is not supported (q4_0, q8_0, f16, f32)",
                       ts_type_name(p->type) ? ts_type_name(p->type) : "?");
    *n_vocab = p->n_vocab ? p->n_vocab : TS_MKMODEL_DEFAULT_VOCAB;
    if (*n_vocab < TS_MKMODEL_MIN_VOCAB || *n_vocab > TS_MKMODEL_MAX_VOCAB)
        return TS_FAIL(TS_INVAL, "mkmodel: vocabulary size %u is outside [%u, %u]", *n_vocab,
                       TS_MKMODEL_MIN_VOCAB, TS_MKMODEL_MAX_VOCAB);
    *n_ctx = p->n_ctx ? p->n_ctx : p->shape->n_ctx;
    if (*n_ctx > (1u << 24))
        return TS_FAIL(TS_INVAL, "mkmodel: context length %u is above %u", *n_ctx, 1u << 24);
    return TS_OK;
}

/* Declares all metadata and tensors on m (writer or counter). */
static ts_status emit_model(md *m, const ts_mkmodel_params *p, uint32_t n_vocab,
                            uint32_t n_ctx, const vocab *v, const tlist *tl) {
    const ts_mkmodel_shape *sh = p->shape;
    char name[64];
    snprintf(name, sizeof name, "tessera random %s", sh->name);
    TS_TRY(md_str(m, "general.architecture", "gemma3"));
    TS_TRY(md_str(m, "general.name", name));
    TS_TRY(md_u32(m, "general.file_type", ts_mkmodel_file_type(p->type)));
    TS_TRY(md_u32(m, "general.quantization_version", 2));
    TS_TRY(md_u32(m, "gemma3.context_length", n_ctx));
    TS_TRY(md_u32(m, "gemma3.embedding_length", sh->n_embd));
    TS_TRY(md_u32(m, "gemma3.block_count", sh->n_layer));
    TS_TRY(md_u32(m, "gemma3.feed_forward_length", sh->n_ff));
    TS_TRY(md_u32(m, "gemma3.attention.head_count", sh->n_head));
    TS_TRY(md_u32(m, "gemma3.attention.head_count_kv", sh->n_head_kv));
    TS_TRY(md_u32(m, "gemma3.attention.key_length", sh->head_dim));
    TS_TRY(md_u32(m, "gemma3.attention.value_length", sh->head_dim));
    TS_TRY(md_f32(m, "gemma3.attention.layer_norm_rms_epsilon", 1e-6f));
    TS_TRY(md_f32(m, "gemma3.rope.freq_base", 1000000.0f));
    TS_TRY(md_u32(m, "gemma3.attention.sliding_window", sh->sliding_window));
    if (sh->rope_scale > 0.0f) {
        TS_TRY(md_str(m, "gemma3.rope.scaling.type", "linear"));
        TS_TRY(md_f32(m, "gemma3.rope.scaling.factor", sh->rope_scale));
    }
    TS_TRY(md_str(m, "tokenizer.ggml.model", "llama"));
    TS_TRY(md_str(m, "tokenizer.ggml.pre", "default"));
    TS_TRY(md_arr_str(m, "tokenizer.ggml.tokens", v->ptr, n_vocab));
    TS_TRY(md_arr(m, "tokenizer.ggml.scores", TS_GGUF_FLOAT32, v->score, n_vocab));
    TS_TRY(md_arr(m, "tokenizer.ggml.token_type", TS_GGUF_INT32, v->type, n_vocab));
    TS_TRY(md_u32(m, "tokenizer.ggml.bos_token_id", 2));
    TS_TRY(md_u32(m, "tokenizer.ggml.eos_token_id", 1));
    TS_TRY(md_u32(m, "tokenizer.ggml.unknown_token_id", 3));
    TS_TRY(md_u32(m, "tokenizer.ggml.padding_token_id", 0));
    TS_TRY(md_bool(m, "tokenizer.ggml.add_bos_token", true));
    TS_TRY(md_bool(m, "tokenizer.ggml.add_eos_token", false));
    TS_TRY(md_bool(m, "tokenizer.ggml.add_space_prefix", false));

    for (uint32_t i = 0; i < tl->n; i++) {
        const tspec *t = &tl->t[i];
        if (m->w) {
            TS_TRY(ts_gguf_w_tensor(m->w, t->name, t->type, t->n_dims, t->ne, NULL));
        } else {
            m->hdr += str_bytes(t->name) + 4 + 8ull * t->n_dims + 4 + 8;
        }
        m->data += (t->nbytes + TS_GGUF_DEFAULT_ALIGNMENT - 1) / TS_GGUF_DEFAULT_ALIGNMENT *
                   TS_GGUF_DEFAULT_ALIGNMENT;
    }
    return TS_OK;
}

typedef struct {
    const ts_mkmodel_params *p;
    const tlist *tl;
    float *row;
    uint64_t done, total;
} fill_ctx;

static ts_status fill(void *vctx, uint64_t index, const char *name, uint32_t type,
                      const int64_t *ne, uint8_t *dst, size_t nbytes) {
    fill_ctx *c = vctx;
    if (index >= c->tl->n || strcmp(c->tl->t[index].name, name) != 0)
        return TS_FAIL(TS_INTERNAL, "mkmodel: fill for unexpected tensor '%s'", name);
    const tspec *t = &c->tl->t[index];
    const int64_t ne0 = ne[0], rows = ne[1];
    size_t row_bytes;
    if (!ts_type_row_bytes(type, ne0, &row_bytes) || row_bytes * (size_t)rows != nbytes)
        return TS_FAIL(TS_INTERNAL, "mkmodel: size mismatch for '%s'", name);
    const uint64_t key = stream_key(c->p->seed, name);
    for (int64_t r = 0; r < rows; r++) {
        float *x = c->row;
        uint8_t *out = dst + (size_t)r * row_bytes;
        uint32_t k0, k1;
        row_keys(key, (uint64_t)r, &k0, &k1);
        gen_cols(k0, k1, 0, x, ne0, t->mean, t->std);
        switch (type) {
        case TS_TYPE_F32: memcpy(out, x, row_bytes); break;
        case TS_TYPE_F16:
            for (int64_t j = 0; j < ne0; j++) {
                uint16_t h = ts_fp32_to_fp16(x[j]);
                memcpy(out + 2 * j, &h, 2);
            }
            break;
        case TS_TYPE_Q4_0: quantize_q4_0(x, out, ne0); break;
        case TS_TYPE_Q8_0: quantize_q8_0(x, out, ne0); break;
        default: return TS_FAIL(TS_INTERNAL, "mkmodel: type %u", type);
        }
    }
    c->done += nbytes;
    if (c->p->progress) c->p->progress(c->p->progress_ctx, c->done, c->total);
    return TS_OK;
}

ts_status ts_mkmodel_estimate_bytes(const ts_mkmodel_params *p, uint64_t *bytes,
                                    uint64_t *n_params) {
    uint32_t n_vocab, n_ctx;
    TS_TRY(check_params(p, &n_vocab, &n_ctx));
    tlist tl;
    vocab v;
    ts_status rc = build_tensors(p->shape, p->type, n_vocab, &tl);
    if (rc != TS_OK) {
        ts_free(tl.t);
        return rc;
    }
    rc = build_vocab(n_vocab, p->seed, &v);
    if (rc == TS_OK) {
        md m = {0};
        rc = emit_model(&m, p, n_vocab, n_ctx, &v, &tl);
        if (rc == TS_OK) {
            uint64_t hdr = 4 + 4 + 8 + 8 + m.hdr;
            hdr = (hdr + TS_GGUF_DEFAULT_ALIGNMENT - 1) / TS_GGUF_DEFAULT_ALIGNMENT *
                  TS_GGUF_DEFAULT_ALIGNMENT;
            if (bytes) *bytes = hdr + m.data;
            if (n_params) *n_params = tl.n_params;
        }
        vocab_free(&v);
    }
    ts_free(tl.t);
    return rc;
}

ts_status ts_mkmodel_write(const ts_mkmodel_params *p, FILE *f) {
    if (!f) return TS_FAIL(TS_INVAL, "mkmodel: no output file");
    uint32_t n_vocab, n_ctx;
    TS_TRY(check_params(p, &n_vocab, &n_ctx));
    tlist tl;
    vocab v = {0};
    ts_gguf_writer *w = NULL;
    float *row = NULL;
    md m = {0};
    fill_ctx c = {0};
    int64_t max_row = 0;
    ts_status rc = build_tensors(p->shape, p->type, n_vocab, &tl);
    if (rc != TS_OK) goto done;
    TS_TRY_GOTO(build_vocab(n_vocab, p->seed, &v), rc, done);
    TS_TRY_GOTO(ts_gguf_writer_init(&w), rc, done);
    m.w = w;
    TS_TRY_GOTO(emit_model(&m, p, n_vocab, n_ctx, &v, &tl), rc, done);
    /* The writer has copied the metadata: the vocabulary can go before the weights. */
    vocab_free(&v);
    for (uint32_t i = 0; i < tl.n; i++)
        if (tl.t[i].ne[0] > max_row) max_row = tl.t[i].ne[0];
    row = ts_malloc((size_t)max_row * sizeof *row);
    if (!row) {
        rc = TS_FAIL(TS_NOMEM, "mkmodel: row buffer");
        goto done;
    }
    c = (fill_ctx){.p = p, .tl = &tl, .row = row, .done = 0, .total = tl.data_bytes};
    TS_TRY_GOTO(ts_gguf_w_write(w, f, fill, &c), rc, done);
    if (fflush(f) != 0 || ferror(f)) {
        rc = TS_FAIL(TS_IO, "mkmodel: write failed (disk full?)");
        goto done;
    }
done:
    ts_free(row);
    ts_gguf_writer_free(w);
    vocab_free(&v);
    ts_free(tl.t);
    return rc;
}

/* ---- random mmproj ------------------------------------------------------------------- */

ts_mkmodel_mmproj_params ts_mkmodel_mmproj_gemma3(uint32_t proj_dim) {
    return (ts_mkmodel_mmproj_params){.image_size = 896, .patch_size = 14, .n_embd = 1152,
                                      .n_ff = 4304, .n_layer = 27, .n_head = 16, .pool = 4,
                                      .proj_dim = proj_dim, .type = TS_TYPE_F16, .seed = 0};
}

typedef struct {
    char name[64];
    uint32_t type, n_dims;
    int64_t ne[4];
    float mean, std;
} mspec;

typedef struct {
    const ts_mkmodel_mmproj_params *p;
    const mspec *t;
    uint32_t n;
    float *row;
} mfill_ctx;

static ts_status mm_fill(void *vctx, uint64_t index, const char *name, uint32_t type,
                         const int64_t *ne, uint8_t *dst, size_t nbytes) {
    mfill_ctx *c = vctx;
    if (index >= c->n || strcmp(c->t[index].name, name) != 0)
        return TS_FAIL(TS_INTERNAL, "mkmodel: fill for unexpected tensor '%s'", name);
    const mspec *t = &c->t[index];
    int64_t rows = 1;
    for (uint32_t i = 1; i < t->n_dims; i++) rows *= t->ne[i];
    size_t row_bytes;
    if (!ts_type_row_bytes(type, ne[0], &row_bytes) || row_bytes * (size_t)rows != nbytes)
        return TS_FAIL(TS_INTERNAL, "mkmodel: size mismatch for '%s'", name);
    const uint64_t key = stream_key(c->p->seed, name);
    for (int64_t r = 0; r < rows; r++) {
        uint32_t k0, k1;
        row_keys(key, (uint64_t)r, &k0, &k1);
        gen_cols(k0, k1, 0, c->row, ne[0], t->mean, t->std);
        uint8_t *out = dst + (size_t)r * row_bytes;
        if (type == TS_TYPE_F32) {
            memcpy(out, c->row, row_bytes);
        } else {
            for (int64_t j = 0; j < ne[0]; j++) {
                uint16_t h = ts_fp32_to_fp16(c->row[j]);
                memcpy(out + 2 * j, &h, 2);
            }
        }
    }
    return TS_OK;
}

ts_status ts_mkmodel_write_mmproj(const ts_mkmodel_mmproj_params *p, FILE *f) {
    if (!p || !f) return TS_FAIL(TS_INVAL, "mkmodel mmproj: no parameters or output file");
    if (p->type != TS_TYPE_F32 && p->type != TS_TYPE_F16)
        return TS_FAIL(TS_INVAL, "mkmodel mmproj: type must be f32 or f16");
    const uint32_t S = p->image_size, P = p->patch_size, D = p->n_embd, F = p->n_ff;
    if (!S || !P || !D || !F || !p->n_layer || !p->n_head || !p->pool || !p->proj_dim ||
        S > 8192 || D > 65536 || F > 262144 || p->n_layer > 1024 || p->proj_dim > 65536 ||
        S % P || (S / P) % p->pool || D % p->n_head)
        return TS_FAIL(TS_INVAL, "mkmodel mmproj: inconsistent shape (image %u patch %u width "
                       "%u ff %u layers %u heads %u pool %u proj %u)", S, P, D, F, p->n_layer,
                       p->n_head, p->pool, p->proj_dim);
    const int64_t side = S / P, N = side * side;
    const uint32_t n_t = 7 + 16 * p->n_layer;
    mspec *t = ts_calloc(n_t, sizeof *t);
    float *row = NULL;
    ts_gguf_writer *w = NULL;
    ts_status rc = TS_OK;
    if (!t) return TS_FAIL(TS_NOMEM, "mkmodel mmproj: tensor list");
    uint32_t n = 0;
#define ADD(nm, ty, nd, e0, e1, e2, e3, mu, sd)                                                do {                                                                                           mspec *s_ = &t[n++];                                                                       snprintf(s_->name, sizeof s_->name, "%s", nm);                                             s_->type = ty;                                                                             s_->n_dims = nd;                                                                           s_->ne[0] = e0, s_->ne[1] = e1, s_->ne[2] = e2, s_->ne[3] = e3;                            s_->mean = mu, s_->std = sd;                                                           } while (0)
    const uint32_t mt = p->type;
    const float sd_d = 1.0f / sqrtf((float)D), sd_f = 1.0f / sqrtf((float)F);
    ADD("v.patch_embd.weight", mt, 4, P, P, 3, D, 0.0f, 1.0f / sqrtf(3.0f * (float)(P * P)));
    ADD("v.patch_embd.bias", TS_TYPE_F32, 1, D, 1, 1, 1, 0.0f, 0.02f);
    ADD("v.position_embd.weight", mt, 2, D, N, 1, 1, 0.0f, 0.02f);
    for (uint32_t l = 0; l < p->n_layer; l++) {
        char nm[64];
#define B(suffix, ty, nd, e0, e1, mu, sd)                                                      snprintf(nm, sizeof nm, "v.blk.%u.%s", l, suffix);                                         ADD(nm, ty, nd, e0, e1, 1, 1, mu, sd)
        B("ln1.weight", TS_TYPE_F32, 1, D, 1, 1.0f, 0.1f);
        B("ln1.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
        B("attn_q.weight", mt, 2, D, D, 0.0f, sd_d);
        B("attn_q.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
        B("attn_k.weight", mt, 2, D, D, 0.0f, sd_d);
        B("attn_k.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
        B("attn_v.weight", mt, 2, D, D, 0.0f, sd_d);
        B("attn_v.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
        B("attn_out.weight", mt, 2, D, D, 0.0f, sd_d);
        B("attn_out.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
        B("ln2.weight", TS_TYPE_F32, 1, D, 1, 1.0f, 0.1f);
        B("ln2.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
        B("ffn_up.weight", mt, 2, D, F, 0.0f, sd_d);
        B("ffn_up.bias", TS_TYPE_F32, 1, F, 1, 0.0f, 0.02f);
        B("ffn_down.weight", mt, 2, F, D, 0.0f, sd_f);
        B("ffn_down.bias", TS_TYPE_F32, 1, D, 1, 0.0f, 0.02f);
#undef B
    }
    ADD("v.post_ln.weight", TS_TYPE_F32, 1, D, 1, 1, 1, 1.0f, 0.1f);
    ADD("v.post_ln.bias", TS_TYPE_F32, 1, D, 1, 1, 1, 0.0f, 0.02f);
    ADD("mm.soft_emb_norm.weight", TS_TYPE_F32, 1, D, 1, 1, 1, 1.0f, 0.1f);
    ADD("mm.input_projection.weight", mt, 2, p->proj_dim, D, 1, 1, 0.0f, sd_d);
#undef ADD
    int64_t max_row = 0;
    for (uint32_t i = 0; i < n; i++)
        if (t[i].ne[0] > max_row) max_row = t[i].ne[0];
    row = ts_malloc(sizeof(float) * (size_t)max_row);
    if (!row) {
        rc = TS_FAIL(TS_NOMEM, "mkmodel mmproj: row buffer");
        goto done;
    }
    TS_TRY_GOTO(ts_gguf_writer_init(&w), rc, done);
    const float mean_std[3] = {0.5f, 0.5f, 0.5f};
    TS_TRY_GOTO(ts_gguf_w_str(w, "general.architecture", "clip"), rc, done);
    TS_TRY_GOTO(ts_gguf_w_str(w, "general.name", "tessera random mmproj"), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "general.file_type", ts_mkmodel_file_type(mt)), rc, done);
    TS_TRY_GOTO(ts_gguf_w_bool(w, "clip.has_vision_encoder", true), rc, done);
    TS_TRY_GOTO(ts_gguf_w_str(w, "clip.projector_type", "gemma3"), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.image_size", S), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.patch_size", P), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.embedding_length", D), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.feed_forward_length", F), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.projection_dim", p->proj_dim), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.block_count", p->n_layer), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.attention.head_count", p->n_head), rc, done);
    TS_TRY_GOTO(ts_gguf_w_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-6f), rc, done);
    TS_TRY_GOTO(ts_gguf_w_u32(w, "clip.vision.projector.scale_factor", p->pool), rc, done);
    TS_TRY_GOTO(ts_gguf_w_arr(w, "clip.vision.image_mean", TS_GGUF_FLOAT32, mean_std, 3), rc, done);
    TS_TRY_GOTO(ts_gguf_w_arr(w, "clip.vision.image_std", TS_GGUF_FLOAT32, mean_std, 3), rc, done);
    for (uint32_t i = 0; i < n; i++)
        TS_TRY_GOTO(ts_gguf_w_tensor(w, t[i].name, t[i].type, t[i].n_dims, t[i].ne, NULL), rc,
                    done);
    mfill_ctx c = {.p = p, .t = t, .n = n, .row = row};
    TS_TRY_GOTO(ts_gguf_w_write(w, f, mm_fill, &c), rc, done);
    if (fflush(f) != 0 || ferror(f)) rc = TS_FAIL(TS_IO, "mkmodel mmproj: write failed (disk full?)");
done:
    ts_gguf_writer_free(w);
    ts_free(row);
    ts_free(t);
    return rc;
}
