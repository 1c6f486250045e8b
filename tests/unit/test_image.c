/* test_image.c: image decoding and Gemma 3 preprocessing (shard/image.c) against Hugging
 * Face's Gemma3ImageProcessorPil outputs for committed images (tests/fixtures/image, made
 * by tests/tools/make_image_fixtures.py), and refusals: truncated and corrupt files,
 * unknown formats, decompression bombs (checked from the header, before decoding),
 * allocation failures.
 *
 * Tolerance: the 8-bit resize is PIL's bit for bit, so every tensor value must equal HF's
 * within 1e-6 absolute (float rounding of (k/255 - 0.5) / 0.5 only); a one-level 8-bit
 * difference would be 7.8e-3.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "fixture_util.h"
#include "image.h"

#define FIX TS_TEST_DATA "/fixtures/image"

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

static const float half[3] = {0.5f, 0.5f, 0.5f};

static void test_hf_fixtures(void **state) {
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(FIX "/images.json", 0, &je);
    assert_non_null(root);
    json_t *arr = json_object_get(root, "images");
    assert_true(json_array_size(arr) >= 10);
    size_t i;
    json_t *it;
    int formats[4] = {0};
    json_array_foreach(arr, i, it) {
        const char *file = json_string_value(json_object_get(it, "file"));
        const char *tensor = json_string_value(json_object_get(it, "tensor"));
        const int32_t S = (int32_t)json_integer_value(json_object_get(it, "size"));
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", file);
        size_t len;
        uint8_t *buf = read_file(path, &len);
        assert_non_null(buf);
        ts_image im;
        ts_status rc = ts_image_decode(buf, len, 0, &im);
        if (rc != TS_OK) fail_msg("%s: %s", file, ts_last_error());
        assert_int_equal(im.width, json_integer_value(json_object_get(it, "width")));
        assert_int_equal(im.height, json_integer_value(json_object_get(it, "height")));
        formats[im.format]++;
        float *out = malloc(sizeof(float) * 3 * (size_t)S * (size_t)S);
        assert_int_equal(ts_image_preprocess(&im, S, half, half, out), TS_OK);
        snprintf(path, sizeof path, FIX "/%s", tensor);
        float *ref = ts_fixture_read_f32(path, 3 * (size_t)S * (size_t)S);
        assert_non_null(ref);
        double md = 0;
        size_t at = 0;
        for (size_t k = 0; k < 3 * (size_t)S * (size_t)S; k++) {
            double d = fabs((double)out[k] - ref[k]);
            if (!(d <= md)) {
                md = d;
                at = k;
            }
        }
        printf("  %-24s -> %3dx%-3d max |diff| %.3g\n", file, S, S, md);
        if (!(md <= 1e-6))
            fail_msg("%s at %d: max diff %g at %zu (ours %g, HF %g)", file, S, md, at, out[at],
                     ref[at]);
        free(ref);
        free(out);
        ts_image_free(&im);
        free(buf);
    }
    assert_true(formats[TS_IMAGE_JPEG] >= 2 && formats[TS_IMAGE_PNG] >= 2 &&
                formats[TS_IMAGE_WEBP] >= 2);
    json_decref(root);
}

/* Every prefix of every fixture shorter than the whole is refused (never a crash, never a
 * silently gray image), with TS_FORMAT. */
static void test_truncated(void **state) {
    (void)state;
    const char *files[] = {"photo_61x45.jpg", "rgb_37x23.png", "lossy_45x31.webp",
                           "lossless_24x24.webp", "palette_trns_20x30.png"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", files[f]);
        size_t len;
        uint8_t *buf = read_file(path, &len);
        assert_non_null(buf);
        for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 7)) {
            ts_image im;
            ts_status rc = ts_image_decode(buf, cut, 0, &im);
            if (rc == TS_OK) {
                /* a PNG cut inside its trailing chunks (after the image data) decodes the
                 * whole image, as PIL does; nothing else may succeed */
                assert_true(strstr(files[f], ".png") && cut + 32 >= len);
                ts_image_free(&im);
                continue;
            }
            if (rc != TS_FORMAT) fail_msg("%s cut at %zu: %s", files[f], cut, ts_status_name(rc));
            assert_null(im.rgb);
        }
        free(buf);
    }
}

static void test_corrupt(void **state) {
    (void)state;
    ts_image im;
    const uint8_t junk[] = "GIF89a not supported";
    assert_int_equal(ts_image_decode(junk, sizeof junk, 0, &im), TS_FORMAT);
    assert_non_null(strstr(ts_last_error(), "not JPEG, PNG or WebP"));
    assert_int_equal(ts_image_decode(junk, 0, 0, &im), TS_FORMAT);
    /* flipped bytes inside the compressed data */
    const char *files[] = {"photo_61x45.jpg", "rgb_37x23.png", "lossy_45x31.webp"};
    for (size_t f = 0; f < 3; f++) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", files[f]);
        size_t len;
        uint8_t *buf = read_file(path, &len);
        int refused = 0;
        /* WebP lossy data has no checksum: flip its chunk and frame headers instead */
        const size_t a0 = f == 2 ? 4 : 40, a1 = f == 2 ? 40 : len, step = f == 2 ? 1 : 13;
        for (size_t at = a0; at < a1; at += step) {
            uint8_t *c = malloc(len);
            memcpy(c, buf, len);
            c[at] ^= 0x5a;
            ts_status rc = ts_image_decode(c, len, 0, &im);
            if (rc == TS_OK) ts_image_free(&im); /* some flips only change pixels (JPEG) */
            else {
                assert_int_equal(rc, TS_FORMAT);
                refused++;
            }
            free(c);
        }
        printf("  %s: %d corruptions refused\n", files[f], refused);
        assert_true(refused > 0);
        free(buf);
    }
}

/* A PNG header claiming w x h with a valid CRC and no data. */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    uint8_t c[17] = {'I', 'H', 'D', 'R', (uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8),
                     (uint8_t)w, (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8),
                     (uint8_t)h, 8, 2, 0, 0, 0};
    b[8] = 0, b[9] = 0, b[10] = 0, b[11] = 13;
    memcpy(b + 12, c, 17);
    uint32_t crc = 0xffffffffu;
    for (int i = 0; i < 17; i++) {
        crc ^= c[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    crc ^= 0xffffffffu;
    b[29] = (uint8_t)(crc >> 24), b[30] = (uint8_t)(crc >> 16), b[31] = (uint8_t)(crc >> 8);
    b[32] = (uint8_t)crc;
    /* an empty IDAT chunk (png_read_info reads up to the first IDAT header) */
    static const uint8_t idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xaf, 0x06, 0x1e};
    memcpy(b + 33, idat, 12);
    return 45;
}

static void test_bombs(void **state) {
    (void)state;
    ts_image im;
    uint8_t b[64];
    size_t n = png_header(b, 100000, 100000); /* 10^10 pixels, 30 GB of RGB */
    size_t before = ts_alloc_bytes_in_use();
    assert_int_equal(ts_image_decode(b, n, 0, &im), TS_RANGE);
    assert_non_null(strstr(ts_last_error(), "exceeds the limit"));
    assert_int_equal(ts_alloc_bytes_in_use(), before);
    n = png_header(b, 1000, 1000);
    assert_int_equal(ts_image_decode(b, n, 999999, &im), TS_RANGE);
    /* the same header under the cap gets past the size check, then fails on missing data */
    assert_int_equal(ts_image_decode(b, n, 1000000, &im), TS_FORMAT);
    /* real files over a small cap: refused from the header (JPEG SOF, WebP VP8 header) */
    const char *files[] = {"photo_61x45.jpg", "lossy_45x31.webp", "rgb_37x23.png"};
    for (int f = 0; f < 3; f++) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", files[f]);
        size_t len;
        uint8_t *buf = read_file(path, &len);
        assert_int_equal(ts_image_decode(buf, len, 100, &im), TS_RANGE);
        free(buf);
    }
    /* the JPEG fixture with its SOF dimensions patched to 65000 x 65000: refused after
     * the header, before the 12 GB of pixels would be allocated */
    size_t len;
    uint8_t *jpg = read_file(FIX "/photo_61x45.jpg", &len);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < len && !sof; i++)
        if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) sof = i;
    assert_true(sof > 0);
    jpg[sof + 5] = 0xFD, jpg[sof + 6] = 0xE8, jpg[sof + 7] = 0xFD, jpg[sof + 8] = 0xE8;
    before = ts_alloc_bytes_in_use();
    assert_int_equal(ts_image_decode(jpg, len, 0, &im), TS_RANGE);
    assert_int_equal(ts_alloc_bytes_in_use(), before);
    free(jpg);
}

static void test_sniff(void **state) {
    (void)state;
    assert_int_equal(ts_image_sniff((const uint8_t *)"\xff\xd8\xff\xe0", 4), TS_IMAGE_JPEG);
    assert_int_equal(ts_image_sniff((const uint8_t *)"\x89PNG\r\n\x1a\n", 8), TS_IMAGE_PNG);
    assert_int_equal(ts_image_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16), TS_IMAGE_WEBP);
    assert_int_equal(ts_image_sniff((const uint8_t *)"RIFF\0\0\0\0WAVE", 12), TS_IMAGE_UNKNOWN);
    assert_int_equal(ts_image_sniff((const uint8_t *)"\x89PNG", 4), TS_IMAGE_UNKNOWN);
}

/* Identity size: a copy; a constant image stays constant at every size (weights sum to 1). */
static void test_resize_props(void **state) {
    (void)state;
    uint8_t src[7 * 5 * 3], dst[64 * 64 * 3];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 37);
    assert_int_equal(ts_image_resize_bilinear(src, 7, 5, dst, 7, 5), TS_OK);
    assert_memory_equal(src, dst, sizeof src);
    memset(src, 173, sizeof src);
    const int32_t sizes[][2] = {{1, 1}, {3, 64}, {64, 2}, {13, 17}};
    for (int s = 0; s < 4; s++) {
        assert_int_equal(ts_image_resize_bilinear(src, 7, 5, dst, sizes[s][0], sizes[s][1]), TS_OK);
        for (int32_t i = 0; i < sizes[s][0] * sizes[s][1] * 3; i++) assert_int_equal(dst[i], 173);
    }
    assert_int_equal(ts_image_resize_bilinear(src, 0, 5, dst, 3, 3), TS_INVAL);
}

static void test_alloc_failures(void **state) {
    (void)state;
    const char *files[] = {"photo_61x45.jpg", "rgba_33x47.png", "alpha_29x35.webp"};
    for (int f = 0; f < 3; f++) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", files[f]);
        size_t len;
        uint8_t *buf = read_file(path, &len);
        for (long k = 0; k < 16; k++) {
            size_t before = ts_alloc_bytes_in_use();
            ts_alloc_fail_after(k);
            ts_image im;
            ts_status rc = ts_image_decode(buf, len, 0, &im);
            float out[3 * 16 * 16];
            if (rc == TS_OK) {
                rc = ts_image_preprocess(&im, 16, half, half, out);
                ts_image_free(&im);
            }
            ts_alloc_fail_after(-1);
            assert_true(rc == TS_OK || rc == TS_NOMEM);
            assert_int_equal(ts_alloc_bytes_in_use(), before);
        }
        free(buf);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_hf_fixtures),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_bombs),
        cmocka_unit_test(test_resize_props),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
