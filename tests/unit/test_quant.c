/* test_quant.c: the reference conversions, dequantizers and quantizers (kernels/quant.h)
 * against golden data from the `gguf` Python package (tests/tools/make_quant_fixtures.py,
 * files in tests/fixtures/quant) and against gcc's _Float16 conversions.
 *
 * Checks:
 *   - types.tsv (gguf.GGML_QUANT_SIZES) == ts_type_name/_block_elems/_block_bytes;
 *   - every synthetic <TYPE>.bin dequantizes bit-exactly to <TYPE>.f32, also from an
 *     unaligned source, without writing past n;
 *   - Q4_0/Q8_0 reference quantizers bit-exact with gguf.quants.quantize;
 *   - fp16 -> fp32 for all 65536 halves against _Float16, and fp16 -> fp32 -> fp16 is the
 *     identity (NaNs: quieted); fp32 -> fp16 against _Float16 on random floats, every
 *     halfway point between adjacent halves, and overflow;
 *   - bf16 rounding (ties to even, NaN quieting, overflow) and bf16 round trips;
 *   - ts_dequantize_row rejects unsupported types and bad n without writing;
 *   - quantize -> dequantize error bounds for Q4_0/Q8_0 (ggml test-quantize-fns style).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "quant.h"

#define FIXDIR TS_TEST_DATA "/fixtures/quant/"

/* ---- helpers ---- */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* splitmix64: small deterministic PRNG for the tests. */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
static float rnd_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(rnd64() >> 40) / (float)(1 << 24);
}

/* Reads a whole fixture file; fails the test if missing. */
static uint8_t *read_fixture(const char *name, size_t *size) {
    char path[1024];
    snprintf(path, sizeof path, "%s%s", FIXDIR, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        print_error("cannot open fixture %s (regenerate with tests/tools/make_quant_fixtures.py)\n",
                    path);
        fail();
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(len >= 0);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    buf[len] = 0;
    *size = (size_t)len;
    return buf;
}

/* Compares float arrays bit for bit; prints the first few mismatches. Returns the count. */
static size_t compare_floats(const char *what, const float *got, const float *want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (f2u(got[i]) != f2u(want[i])) {
            if (bad < 10)
                print_error("%s: index %zu: got %.9g (0x%08x), expected %.9g (0x%08x)\n", what, i,
                            (double)got[i], f2u(got[i]), (double)want[i], f2u(want[i]));
            bad++;
        }
    }
    if (bad) print_error("%s: %zu of %zu values differ\n", what, bad, n);
    return bad;
}

static uint16_t f16_bits_of(_Float16 h) {
    uint16_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

static _Float16 f16_from_bits(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, sizeof h);
    return h;
}

static bool f16_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }

/* ---- type table ---- */

static void test_type_table(void **state) {
    (void)state;
    size_t size;
    char *text = (char *)read_fixture("types.tsv", &size);
    bool seen[TS_TYPE_COUNT_] = {false};
    int rows = 0, unknown_here = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == 0) continue;
        unsigned id, blck, bytes;
        char name[32];
        assert_int_equal(sscanf(line, "%u\t%31s\t%u\t%u", &id, name, &blck, &bytes), 4);
        rows++;
        if (id >= TS_TYPE_COUNT_) {
            /* A type newer than tessera's table: it must be reported as unknown. */
            print_message("note: gguf type %u %s is not in tessera's table\n", id, name);
            assert_null(ts_type_name(id));
            assert_int_equal(ts_type_block_elems(id), 0);
            assert_false(ts_type_can_dequantize(id));
            unknown_here++;
            continue;
        }
        seen[id] = true;
        const char *tn = ts_type_name(id);
        if (!tn || strcmp(tn, name) != 0) {
            print_error("type %u: name %s, expected %s\n", id, tn ? tn : "(null)", name);
            fail();
        }
        if (ts_type_block_elems(id) != blck || ts_type_block_bytes(id) != bytes) {
            print_error("type %u %s: block %u elems / %u bytes, expected %u / %u\n", id, name,
                        ts_type_block_elems(id), ts_type_block_bytes(id), blck, bytes);
            fail();
        }
        size_t rb = 0;
        assert_true(ts_type_row_bytes(id, (int64_t)blck * 3, &rb));
        assert_int_equal(rb, (size_t)bytes * 3);
        if (blck > 1) assert_false(ts_type_row_bytes(id, (int64_t)blck + 1, &rb));
    }
    /* Every id tessera knows must be in gguf's list. */
    for (uint32_t id = 0; id < TS_TYPE_COUNT_; id++) {
        if (ts_type_name(id) && !seen[id]) {
            print_error("tessera knows type %u %s but gguf does not\n", id, ts_type_name(id));
            fail();
        }
        if (!ts_type_name(id)) {
            assert_int_equal(ts_type_block_elems(id), 0);
            assert_int_equal(ts_type_block_bytes(id), 0);
        }
    }
    assert_true(rows >= 30);
    print_message("%d types checked (%d unknown to tessera)\n", rows - unknown_here, unknown_here);
    /* Out-of-range ids. */
    assert_null(ts_type_name(TS_TYPE_COUNT_));
    assert_null(ts_type_name(UINT32_MAX));
    size_t rb;
    assert_false(ts_type_row_bytes(UINT32_MAX, 0, &rb));
    assert_false(ts_type_row_bytes(TS_TYPE_Q4_0, -32, &rb));
    assert_false(ts_type_row_bytes(TS_TYPE_F32, INT64_MAX, &rb)); /* size overflow */
    free(text);
}

/* ---- dequantization fixtures ---- */

static const uint32_t k_deq_types[] = {
    TS_TYPE_F32, TS_TYPE_F16, TS_TYPE_BF16, TS_TYPE_Q4_0, TS_TYPE_Q4_1, TS_TYPE_Q5_0,
    TS_TYPE_Q5_1, TS_TYPE_Q8_0, TS_TYPE_Q4_K, TS_TYPE_Q5_K, TS_TYPE_Q6_K,
};
#define N_DEQ_TYPES (sizeof k_deq_types / sizeof k_deq_types[0])

#define SENTINEL 0xDEADBEEFu

/* Returns the number of mismatching values (all types are checked before failing). */
static size_t check_dequant_fixture(uint32_t type) {
    const char *name = ts_type_name(type);
    char fn[64];
    size_t in_size, out_size;
    snprintf(fn, sizeof fn, "%s.bin", name);
    uint8_t *in = read_fixture(fn, &in_size);
    snprintf(fn, sizeof fn, "%s.f32", name);
    uint8_t *want_bytes = read_fixture(fn, &out_size);
    assert_int_equal(out_size % 4, 0);
    const int64_t n = (int64_t)(out_size / 4);
    size_t row_bytes = 0;
    assert_true(ts_type_row_bytes(type, n, &row_bytes));
    assert_int_equal(row_bytes, in_size);
    assert_true(ts_type_can_dequantize(type));

    float *want = malloc(out_size);
    assert_non_null(want);
    memcpy(want, want_bytes, out_size);
    /* n values plus 4 sentinels that must stay untouched. */
    float *got = malloc((size_t)(n + 4) * sizeof(float));
    assert_non_null(got);
    for (int64_t i = 0; i < n + 4; i++) got[i] = u2f(SENTINEL);

    assert_true(ts_dequantize_row(type, in, got, n));
    size_t bad = compare_floats(name, got, want, (size_t)n);
    for (int i = 0; i < 4; i++) assert_int_equal(f2u(got[n + i]), SENTINEL);

    /* Same from an unaligned source (offset 1 and 3). */
    uint8_t *shifted = malloc(in_size + 3);
    assert_non_null(shifted);
    for (int off = 1; off <= 3; off += 2) {
        memcpy(shifted + off, in, in_size);
        memset(got, 0, (size_t)n * sizeof(float));
        assert_true(ts_dequantize_row(type, shifted + off, got, n));
        char what[64];
        snprintf(what, sizeof what, "%s (src offset %d)", name, off);
        bad += compare_floats(what, got, want, (size_t)n);
    }
    /* One block at a time gives the same values (rows of one block). */
    const int64_t qk = ts_type_block_elems(type);
    const size_t bs = ts_type_block_bytes(type);
    for (int64_t b = 0; b < n / qk; b++)
        assert_true(ts_dequantize_row(type, in + b * bs, got + b * qk, qk));
    bad += compare_floats(name, got, want, (size_t)n);

    print_message("%-5s %6lld values from %zu bytes: %s\n", name, (long long)n, in_size,
                  bad ? "MISMATCH" : "bit-exact");
    free(shifted);
    free(got);
    free(want);
    free(want_bytes);
    free(in);
    return bad;
}

static void test_dequant_fixtures(void **state) {
    (void)state;
    size_t bad = 0;
    for (size_t i = 0; i < N_DEQ_TYPES; i++) bad += check_dequant_fixture(k_deq_types[i]);
    assert_int_equal(bad, 0);
}

/* ---- quantization fixtures ---- */

static void check_quant_fixture(const char *stem, uint32_t type,
                                void (*quant)(const float *, void *, int64_t)) {
    char fn[64];
    size_t in_size, out_size;
    snprintf(fn, sizeof fn, "%s_quant_in.f32", stem);
    uint8_t *in_bytes = read_fixture(fn, &in_size);
    snprintf(fn, sizeof fn, "%s_quant_out.bin", stem);
    uint8_t *want = read_fixture(fn, &out_size);
    assert_int_equal(in_size % (4 * 32), 0);
    const int64_t n = (int64_t)(in_size / 4);
    size_t row_bytes;
    assert_true(ts_type_row_bytes(type, n, &row_bytes));
    assert_int_equal(row_bytes, out_size);

    float *x = malloc(in_size);
    uint8_t *got = malloc(out_size + 8);
    assert_non_null(x);
    assert_non_null(got);
    memcpy(x, in_bytes, in_size);
    memset(got, 0xA5, out_size + 8);
    quant(x, got, n);
    for (size_t i = out_size; i < out_size + 8; i++) assert_int_equal(got[i], 0xA5);

    const size_t bs = ts_type_block_bytes(type);
    size_t bad = 0;
    for (size_t i = 0; i < out_size; i++) {
        if (got[i] != want[i]) {
            if (bad < 10)
                print_error("%s: block %zu byte %zu: got 0x%02x, expected 0x%02x\n", stem,
                            i / bs, i % bs, got[i], want[i]);
            bad++;
        }
    }
    print_message("%s quantize: %lld values -> %zu bytes: %s\n", stem, (long long)n, out_size,
                  bad ? "MISMATCH" : "bit-exact");
    free(got);
    free(x);
    free(want);
    free(in_bytes);
    assert_int_equal(bad, 0);
}

static void test_quant_fixtures(void **state) {
    (void)state;
    check_quant_fixture("q4_0", TS_TYPE_Q4_0, ts_quantize_row_q4_0_ref);
    check_quant_fixture("q8_0", TS_TYPE_Q8_0, ts_quantize_row_q8_0_ref);
}

/* ---- fp16 ---- */

static void test_fp16_exhaustive(void **state) {
    (void)state;
    size_t bad = 0;
    for (uint32_t u = 0; u < 0x10000; u++) {
        const uint16_t h = (uint16_t)u;
        const float got = ts_fp16_to_fp32(h);
        const float want = (float)f16_from_bits(h); /* gcc/libgcc conversion */
        if (f2u(got) != f2u(want)) {
            if (bad < 10)
                print_error("fp16 0x%04x -> 0x%08x, _Float16 gives 0x%08x\n", h, f2u(got),
                            f2u(want));
            bad++;
        }
        const uint16_t back = ts_fp32_to_fp16(got);
        /* Identity for every non-NaN; a NaN comes back quieted with its payload. */
        const uint16_t expect_back = f16_is_nan(h) ? (uint16_t)(h | 0x200) : h;
        if (back != expect_back) {
            if (bad < 10) print_error("fp16 0x%04x -> fp32 -> 0x%04x\n", h, back);
            bad++;
        }
        if (f16_is_nan(h)) assert_true(isnan(got));
    }
    /* A few values by hand. */
    assert_int_equal(f2u(ts_fp16_to_fp32(0x0001)), f2u(0x1p-24f));
    assert_int_equal(f2u(ts_fp16_to_fp32(0x03FF)), f2u(0x3FFp-24f));
    assert_int_equal(f2u(ts_fp16_to_fp32(0x0400)), f2u(0x1p-14f));
    assert_int_equal(f2u(ts_fp16_to_fp32(0x7BFF)), f2u(65504.0f));
    assert_int_equal(f2u(ts_fp16_to_fp32(0x8000)), 0x80000000u);
    assert_int_equal(f2u(ts_fp16_to_fp32(0xFC00)), 0xFF800000u);
    assert_int_equal(bad, 0);
}

static size_t check_f32_to_f16(float f) {
    const uint16_t got = ts_fp32_to_fp16(f);
    const uint16_t want = f16_bits_of((_Float16)f);
    if (got == want) return 0;
    if (isnan(f) && f16_is_nan(got) && f16_is_nan(want) && (got & 0x8000) == (want & 0x8000))
        return 0; /* NaN payload conventions may differ; NaN-ness and sign may not */
    print_error("fp32 %.9g (0x%08x) -> fp16 0x%04x, _Float16 gives 0x%04x\n", (double)f,
                f2u(f), got, want);
    return 1;
}

static void test_fp32_to_fp16(void **state) {
    (void)state;
    size_t bad = 0;
    /* Random bit patterns over all floats, and concentrated where halves live. */
    for (int i = 0; i < 2000000 && bad < 10; i++) bad += check_f32_to_f16(u2f(rnd32()));
    for (int i = 0; i < 2000000 && bad < 10; i++) {
        const uint32_t e = 98 + rnd32() % 50; /* 2^-29 .. 2^20 */
        bad += check_f32_to_f16(u2f((rnd32() & 0x807FFFFFu) | (e << 23)));
    }
    /* Every halfway point between adjacent finite halves (exact in fp32: 12 significant
     * bits), and the floats one ulp either side of it. Ties go to the even half. */
    for (uint32_t u = 0; u < 0x7C00 && bad < 10; u++) {
        const float lo = ts_fp16_to_fp32((uint16_t)u);
        const float hi = u == 0x7BFF ? 65536.0f : ts_fp16_to_fp32((uint16_t)(u + 1));
        const float mid = (lo + hi) / 2; /* exact */
        for (int s = 0; s < 2; s++) {
            const float m = s ? -mid : mid;
            bad += check_f32_to_f16(m);
            bad += check_f32_to_f16(nextafterf(m, 0));
            bad += check_f32_to_f16(nextafterf(m, s ? -INFINITY : INFINITY));
        }
        const uint16_t r = ts_fp32_to_fp16(mid);
        if (u < 0x7BFF) assert_true(r == (u & 1 ? u + 1 : u));
    }
    /* Overflow and specials by hand. */
    assert_int_equal(ts_fp32_to_fp16(65504.0f), 0x7BFF);
    assert_int_equal(ts_fp32_to_fp16(65519.996f), 0x7BFF);
    assert_int_equal(ts_fp32_to_fp16(65520.0f), 0x7C00);
    assert_int_equal(ts_fp32_to_fp16(-65520.0f), 0xFC00);
    assert_int_equal(ts_fp32_to_fp16(1e30f), 0x7C00);
    assert_int_equal(ts_fp32_to_fp16(INFINITY), 0x7C00);
    assert_int_equal(ts_fp32_to_fp16(-INFINITY), 0xFC00);
    assert_int_equal(ts_fp32_to_fp16(-0.0f), 0x8000);
    assert_int_equal(ts_fp32_to_fp16(0x1p-25f), 0x0000);              /* tie -> even (0) */
    assert_int_equal(ts_fp32_to_fp16(nextafterf(0x1p-25f, 1)), 0x0001);
    assert_int_equal(ts_fp32_to_fp16(0x3p-25f), 0x0002);              /* 1.5 ulp -> 2 */
    assert_int_equal(ts_fp32_to_fp16(0x1p-149f), 0x0000);             /* float subnormal */
    assert_int_equal(ts_fp32_to_fp16(0x1.ffcp-15f), 0x0400);          /* rounds up to normal */
    assert_true(f16_is_nan(ts_fp32_to_fp16(NAN)));
    assert_int_equal(ts_fp32_to_fp16(u2f(0xFFC00000u)), 0xFE00);
    assert_int_equal(ts_fp32_to_fp16(u2f(0x7F800001u)) & 0xFE00, 0x7E00); /* sNaN quieted */
    for (int i = 0; i < 9; i++) {
        const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65520.0f, 1e-8f,
                                  -1e-8f, 0x1p-24f};
        bad += check_f32_to_f16(specials[i]);
    }
    assert_int_equal(bad, 0);
}

/* ---- bf16 ---- */

/* Independent bf16 rounding: nearest representable by comparing distances in double. */
static uint16_t bf16_slow(float f) {
    const uint32_t u = f2u(f);
    const uint16_t down = (uint16_t)(u >> 16);
    if ((u & 0xFFFF) == 0) return down;
    const uint16_t up = (uint16_t)(down + 1); /* next magnitude (may become inf) */
    /* For rounding, inf sits where the next binade would start: 2^128. */
    const double vup = (up & 0x7FFF) == 0x7F80 ? copysign(0x1p128, (double)f)
                                                 : (double)ts_bf16_to_fp32(up);
    const double dd = fabs((double)f - (double)ts_bf16_to_fp32(down));
    const double du = fabs(vup - (double)f);
    if (dd < du) return down;
    if (du < dd) return up;
    return (down & 1) ? up : down;
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(ts_fp32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(ts_fp32_to_bf16(u2f(0x3F808000u)), 0x3F80); /* tie, even stays */
    assert_int_equal(ts_fp32_to_bf16(u2f(0x3F818000u)), 0x3F82); /* tie, odd rounds up */
    assert_int_equal(ts_fp32_to_bf16(u2f(0x3F808001u)), 0x3F81);
    assert_int_equal(ts_fp32_to_bf16(u2f(0x3F807FFFu)), 0x3F80);
    assert_int_equal(ts_fp32_to_bf16(u2f(0xBF818000u)), 0xBF82);
    assert_int_equal(ts_fp32_to_bf16(u2f(0x7F7FFFFFu)), 0x7F80); /* overflow -> inf */
    assert_int_equal(ts_fp32_to_bf16(INFINITY), 0x7F80);
    assert_int_equal(ts_fp32_to_bf16(-INFINITY), 0xFF80);
    assert_int_equal(ts_fp32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(ts_fp32_to_bf16(u2f(0x00008000u)), 0x0000); /* subnormal tie */
    assert_int_equal(ts_fp32_to_bf16(u2f(0x00018000u)), 0x0002);
    assert_int_equal(ts_fp32_to_bf16(u2f(0x7F800001u)), 0x7FC0); /* sNaN -> quiet */
    assert_int_equal(ts_fp32_to_bf16(u2f(0xFFC00001u)), 0xFFC0);
    assert_int_equal(ts_fp32_to_bf16(u2f(0x7FFFFFFFu)), 0x7FFF);  /* no carry into sign */
    assert_int_equal(f2u(ts_bf16_to_fp32(0x3F80)), 0x3F800000u);
    assert_int_equal(f2u(ts_bf16_to_fp32(0xFF81)), 0xFF810000u);  /* NaN bits kept */

    size_t bad = 0;
    for (uint32_t u = 0; u < 0x10000; u++) {
        const uint16_t h = (uint16_t)u;
        const float f = ts_bf16_to_fp32(h);
        assert_int_equal(f2u(f), u << 16);
        const bool nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F);
        const uint16_t want = nan ? (uint16_t)(h | 0x40) : h;
        if (ts_fp32_to_bf16(f) != want) bad++;
    }
    for (int i = 0; i < 2000000; i++) {
        const float f = u2f(rnd32());
        if (isnan(f)) continue;
        const uint16_t got = ts_fp32_to_bf16(f), want = bf16_slow(f);
        if (got != want) {
            if (bad < 10)
                print_error("bf16(0x%08x) = 0x%04x, expected 0x%04x\n", f2u(f), got, want);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* ---- argument checking ---- */

static void test_dequant_rejects(void **state) {
    (void)state;
    uint8_t src[4096];
    float dst[1024];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)rnd32();
    const uint32_t bad_types[] = {
        TS_TYPE_Q8_1, TS_TYPE_Q2_K, TS_TYPE_Q3_K, TS_TYPE_Q8_K, TS_TYPE_IQ2_XXS,
        TS_TYPE_IQ4_NL, TS_TYPE_IQ4_XS, TS_TYPE_I8, TS_TYPE_I32, TS_TYPE_F64,
        TS_TYPE_TQ1_0, TS_TYPE_MXFP4, 4, 5, 31, TS_TYPE_COUNT_, 1000, UINT32_MAX,
    };
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        for (size_t j = 0; j < 1024; j++) dst[j] = u2f(SENTINEL);
        assert_false(ts_type_can_dequantize(bad_types[i]));
        assert_false(ts_dequantize_row(bad_types[i], src, dst, 256));
        for (size_t j = 0; j < 1024; j++) assert_int_equal(f2u(dst[j]), SENTINEL);
    }
    /* Bad n: negative, not a whole number of blocks. */
    for (size_t t = 0; t < N_DEQ_TYPES; t++) {
        const uint32_t type = k_deq_types[t];
        const int64_t qk = ts_type_block_elems(type);
        const int64_t ns[] = {-1, -qk, qk + 1, qk / 2, 2 * qk - 1, INT64_MIN};
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            if (qk == 1 && ns[k] >= 0) continue; /* every n >= 0 is whole for F32/F16/BF16 */
            for (size_t j = 0; j < 1024; j++) dst[j] = u2f(SENTINEL);
            assert_false(ts_dequantize_row(type, src, dst, ns[k]));
            for (size_t j = 0; j < 1024; j++) assert_int_equal(f2u(dst[j]), SENTINEL);
        }
        /* n = 0: nothing to do, succeeds, writes nothing. */
        dst[0] = u2f(SENTINEL);
        assert_true(ts_dequantize_row(type, src, dst, 0));
        assert_int_equal(f2u(dst[0]), SENTINEL);
        /* Exactly one block works. */
        assert_true(ts_dequantize_row(type, src, dst, qk));
    }
}

/* ---- round-trip error (ggml tests/test-quantize-fns.cpp style) ---- */

/* sqrt(sum of squared errors) / n, as ggml's array_rmse. */
static float total_error(const float *a, const float *b, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        sum += d * d;
    }
    return (float)(sqrt(sum) / (double)n);
}

static void check_roundtrip(uint32_t type, void (*quant)(const float *, void *, int64_t),
                            float per_elem_factor) {
    enum { N = 32 * 128 };
    static float x[N], y[N];
    static uint8_t q[N / 32 * 34];
    const char *name = ts_type_name(type);

    /* ggml's synthetic data: 0.1 + 2 cos(i + offset). */
    for (int i = 0; i < N; i++) x[i] = 0.1f + 2.0f * cosf((float)i + 0.0f);
    quant(x, q, N);
    assert_true(ts_dequantize_row(type, q, y, N));
    const float err = total_error(x, y, N);
    print_message("%s round trip: total error %.6g (limit 0.002)\n", name, (double)err);
    assert_true(err < 0.002f);

    /* Random data at several scales: every element within factor * |d| of its input,
     * d being the block's stored fp16 scale. */
    const size_t bs = ts_type_block_bytes(type);
    for (int rep = 0; rep < 20; rep++) {
        /* 2^-6 .. 2^12: d stays a normal fp16 */
        const float scale = ldexpf(1.0f, (int)(rnd32() % 19) - 6);
        for (int i = 0; i < N; i++) x[i] = rnd_uniform(-1.0f, 1.0f) * scale;
        if (rep == 0)
            for (int i = 0; i < 32; i++) x[i] = 0.0f; /* a zero block round trips to zeros */
        quant(x, q, N);
        assert_true(ts_dequantize_row(type, q, y, N));
        for (int b = 0; b < N / 32; b++) {
            uint16_t dh;
            memcpy(&dh, q + (size_t)b * bs, 2);
            const float d = fabsf(ts_fp16_to_fp32(dh));
            for (int j = 0; j < 32; j++) {
                const int i = b * 32 + j;
                const float e = fabsf(x[i] - y[i]);
                if (!(e <= per_elem_factor * d + 1e-30f)) {
                    print_error("%s: scale %g block %d elem %d: x %.9g y %.9g d %.9g\n", name,
                                (double)scale, b, j, (double)x[i], (double)y[i], (double)d);
                    fail();
                }
            }
        }
        if (rep == 0)
            for (int i = 0; i < 32; i++) assert_true(y[i] == 0.0f); /* Q4_0 gives -0 */
    }
}

static void test_quant_roundtrip(void **state) {
    (void)state;
    /* Q8_0: |x/d - round(x/d)| <= 1/2, plus the fp16 rounding of d (|q| <= 127,
     * relative 2^-11): 0.5 + 127 * 2^-11 < 0.57. Q4_0: the positive end x/d = +8 clips
     * from 16 to 15, so up to 1 step, plus 8 * 2^-11 for d. */
    check_roundtrip(TS_TYPE_Q8_0, ts_quantize_row_q8_0_ref, 0.57f);
    check_roundtrip(TS_TYPE_Q4_0, ts_quantize_row_q4_0_ref, 1.01f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_dequant_fixtures),
        cmocka_unit_test(test_quant_fixtures),
        cmocka_unit_test(test_fp16_exhaustive),
        cmocka_unit_test(test_fp32_to_fp16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_rejects),
        cmocka_unit_test(test_quant_roundtrip),
    };
    return cmocka_run_group_tests_name("quant", tests, NULL, NULL);
}
