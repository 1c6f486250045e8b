/* image.c: JPEG / PNG / WebP decoding and Gemma 3 preprocessing (image.h).
 *
 * DESIGN
 * Each decoder reads the header first, checks the size against the pixel cap, then decodes
 * into an RGBA or RGB buffer we own. libjpeg and libpng report errors by longjmp out of
 * their error handler; every object touched across setjmp is volatile or reached through
 * a struct that outlives the jump. The resampler follows Pillow's libImaging/Resample.c
 * (precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal_8bpc /
 * ImagingResampleVertical_8bpc) and the alpha compositing its AlphaComposite.c, so that the
 * preprocessed tensor equals Hugging Face's (tests/tools/make_image_fixtures.py).
 */
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "alloc.h"

const char *ts_image_format_name(ts_image_format f) {
    switch (f) {
    case TS_IMAGE_JPEG: return "jpeg";
    case TS_IMAGE_PNG: return "png";
    case TS_IMAGE_WEBP: return "webp";
    default: return "unknown";
    }
}

ts_image_format ts_image_sniff(const uint8_t *b, size_t n) {
    if (!b) return TS_IMAGE_UNKNOWN;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return TS_IMAGE_JPEG;
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return TS_IMAGE_PNG;
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return TS_IMAGE_WEBP;
    return TS_IMAGE_UNKNOWN;
}

void ts_image_free(ts_image *im) {
    if (!im) return;
    ts_free(im->rgb);
    memset(im, 0, sizeof *im);
}

static ts_status check_size(const char *fmt, uint64_t w, uint64_t h, uint64_t cap) {
    if (w == 0 || h == 0)
        return TS_FAIL(TS_RANGE, "%s image has a zero dimension (%llux%llu)", fmt,
                       (unsigned long long)w, (unsigned long long)h);
    if (w > INT32_MAX / 4 || h > INT32_MAX / 4 || w * h > cap)
        return TS_FAIL(TS_RANGE, "%s image of %llux%llu = %llu pixels exceeds the limit of %llu "
                       "pixels (decompression bomb?)", fmt, (unsigned long long)w,
                       (unsigned long long)h, (unsigned long long)(w * h),
                       (unsigned long long)cap);
    return TS_OK;
}

/* PIL's alpha_composite of src (r, g, b, a) over opaque white, then RGB (AlphaComposite.c,
 * PRECISION_BITS 7). */
static void composite_white(const uint8_t *rgba, uint8_t *rgb, size_t n_px) {
    for (size_t i = 0; i < n_px; i++) {
        const uint32_t sa = rgba[4 * i + 3];
        for (int ch = 0; ch < 3; ch++) {
            const uint32_t s = rgba[4 * i + (size_t)ch];
            if (sa == 0) {
                rgb[3 * i + (size_t)ch] = 255;
                continue;
            }
            const uint32_t blend = 255u * (255u - sa);
            const uint32_t outa255 = sa * 255u + blend;
            const uint32_t coef1 = sa * 255u * 255u * (1u << 7) / outa255;
            const uint32_t coef2 = 255u * (1u << 7) - coef1;
            const uint32_t t = s * coef1 + 255u * coef2 + (0x80u << 7);
            rgb[3 * i + (size_t)ch] = (uint8_t)((((t >> 8) + t) >> 8) >> 7);
        }
    }
}

/* ---- JPEG ---- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jerr_t;

static void jpeg_error_exit_(j_common_ptr cinfo) {
    jerr_t *e = (jerr_t *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings (level -1: corrupt data, premature end) are errors for us; trace messages
 * (level >= 0) are ignored. */
static void jpeg_emit_(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_error_exit_(cinfo);
}

static void jpeg_quiet_(j_common_ptr cinfo) { (void)cinfo; }

static ts_status decode_jpeg(const uint8_t *buf, size_t len, uint64_t cap, ts_image *out) {
    struct jpeg_decompress_struct ci;
    jerr_t je;
    uint8_t *volatile px = NULL;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jpeg_error_exit_;
    je.pub.emit_message = jpeg_emit_;
    je.pub.output_message = jpeg_quiet_;
    je.msg[0] = 0;
    if (setjmp(je.jb)) {
        jpeg_destroy_decompress(&ci);
        ts_free(px);
        return TS_FAIL(TS_FORMAT, "corrupt or truncated JPEG: %s", je.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    ts_status rc = check_size("JPEG", ci.image_width, ci.image_height, cap);
    if (rc != TS_OK) {
        jpeg_destroy_decompress(&ci);
        return rc;
    }
    if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&ci);
        return TS_FAIL(TS_FORMAT, "CMYK JPEG images are not supported (convert to RGB)");
    }
    ci.out_color_space = JCS_RGB; /* grayscale is replicated by libjpeg */
    jpeg_start_decompress(&ci);
    if (ci.output_components != 3) {
        jpeg_destroy_decompress(&ci);
        return TS_FAIL(TS_FORMAT, "JPEG decodes to %d components", ci.output_components);
    }
    const size_t w = ci.output_width, h = ci.output_height;
    px = ts_malloc(w * h * 3);
    if (!px) {
        jpeg_destroy_decompress(&ci);
        return TS_FAIL(TS_NOMEM, "JPEG pixels (%zux%zu)", w, h);
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = px + (size_t)ci.output_scanline * w * 3;
        if (jpeg_read_scanlines(&ci, &row, 1) != 1) {
            snprintf(je.msg, sizeof je.msg, "no data for row %u", ci.output_scanline);
            longjmp(je.jb, 1);
        }
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    out->width = (int32_t)w;
    out->height = (int32_t)h;
    out->rgb = px;
    return TS_OK;
}

/* ---- PNG ---- */

typedef struct {
    const uint8_t *buf;
    size_t len, off;
    char msg[160];
    jmp_buf jb;
} pngsrc_t;

static void png_read_mem_(png_structp p, png_bytep dst, size_t n) {
    pngsrc_t *s = png_get_io_ptr(p);
    if (n > s->len - s->off) png_error(p, "unexpected end of data (truncated)");
    memcpy(dst, s->buf + s->off, n);
    s->off += n;
}

static void png_error_(png_structp p, png_const_charp msg) {
    pngsrc_t *s = png_get_error_ptr(p);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    longjmp(s->jb, 1);
}

static void png_warn_(png_structp p, png_const_charp msg) {
    (void)p;
    (void)msg;
}

static ts_status decode_png(const uint8_t *buf, size_t len, uint64_t cap, ts_image *out) {
    pngsrc_t src = {.buf = buf, .len = len, .off = 0};
    png_structp volatile p = NULL;
    png_infop volatile info = NULL;
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    ts_status volatile rc = TS_OK;
    p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_error_, png_warn_);
    if (!p) return TS_FAIL(TS_NOMEM, "PNG reader");
    info = png_create_info_struct(p);
    if (!info) {
        png_destroy_read_struct((png_structpp)&p, NULL, NULL);
        return TS_FAIL(TS_NOMEM, "PNG reader");
    }
    if (setjmp(src.jb)) {
        if (rc == TS_OK) rc = TS_FAIL(TS_FORMAT, "corrupt or truncated PNG: %s", src.msg);
        goto done;
    }
    png_set_read_fn(p, &src, png_read_mem_);
    png_set_user_limits(p, 0x7fffffff, 0x7fffffff);
    png_set_chunk_malloc_max(p, 64u << 20);
    png_read_info(p, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(p, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    rc = check_size("PNG", w, h, cap);
    if (rc != TS_OK) goto done;
    /* 8-bit RGBA whatever the input: palette and low-bit gray expanded, tRNS to alpha,
     * 16-bit samples to their high byte (PIL's RGB;16B unpacker), gray replicated. */
    png_set_expand(p);
    png_set_strip_16(p);
    png_set_gray_to_rgb(p);
    png_set_add_alpha(p, 0xff, PNG_FILLER_AFTER);
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    if (png_get_rowbytes(p, info) != (size_t)w * 4 || png_get_channels(p, info) != 4) {
        rc = TS_FAIL(TS_FORMAT, "PNG transforms gave %u channels", png_get_channels(p, info));
        goto done;
    }
    px = ts_malloc((size_t)w * h * 4);
    rows = ts_malloc(sizeof(png_bytep) * h);
    if (!px || !rows) {
        rc = TS_FAIL(TS_NOMEM, "PNG pixels (%ux%u)", (unsigned)w, (unsigned)h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = px + (size_t)y * w * 4;
    png_read_image(p, rows);
    uint8_t *rgb = ts_malloc((size_t)w * h * 3);
    if (!rgb) {
        rc = TS_FAIL(TS_NOMEM, "PNG pixels (%ux%u)", (unsigned)w, (unsigned)h);
        goto done;
    }
    composite_white(px, rgb, (size_t)w * h);
    out->width = (int32_t)w;
    out->height = (int32_t)h;
    out->rgb = rgb;
done:
    png_destroy_read_struct((png_structpp)&p, (png_infopp)&info, NULL);
    ts_free(px);
    ts_free(rows);
    return rc;
}

/* ---- WebP ---- */

static ts_status decode_webp(const uint8_t *buf, size_t len, uint64_t cap, ts_image *out) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(buf, len, &f);
    if (st != VP8_STATUS_OK)
        return TS_FAIL(TS_FORMAT, "corrupt or truncated WebP header (libwebp status %d)", (int)st);
    TS_TRY(check_size("WebP", (uint64_t)f.width, (uint64_t)f.height, cap));
    if (f.has_animation) return TS_FAIL(TS_FORMAT, "animated WebP images are not supported");
    const size_t n = (size_t)f.width * (size_t)f.height;
    uint8_t *px = ts_malloc(n * 4);
    if (!px) return TS_FAIL(TS_NOMEM, "WebP pixels (%dx%d)", f.width, f.height);
    if (!WebPDecodeRGBAInto(buf, len, px, n * 4, f.width * 4)) {
        ts_free(px);
        return TS_FAIL(TS_FORMAT, "corrupt or truncated WebP image data");
    }
    uint8_t *rgb = ts_malloc(n * 3);
    if (!rgb) {
        ts_free(px);
        return TS_FAIL(TS_NOMEM, "WebP pixels (%dx%d)", f.width, f.height);
    }
    if (f.has_alpha) {
        composite_white(px, rgb, n);
    } else {
        for (size_t i = 0; i < n; i++) memcpy(rgb + 3 * i, px + 4 * i, 3);
    }
    ts_free(px);
    out->width = f.width;
    out->height = f.height;
    out->rgb = rgb;
    return TS_OK;
}

ts_status ts_image_decode(const uint8_t *buf, size_t len, uint64_t max_pixels, ts_image *out) {
    if (!out) return TS_FAIL(TS_INVAL, "output is NULL");
    memset(out, 0, sizeof *out);
    if (!buf || len == 0) return TS_FAIL(TS_FORMAT, "empty image data");
    if (max_pixels == 0) max_pixels = TS_IMAGE_MAX_PIXELS_DEFAULT;
    const ts_image_format f = ts_image_sniff(buf, len);
    ts_status rc;
    switch (f) {
    case TS_IMAGE_JPEG: rc = decode_jpeg(buf, len, max_pixels, out); break;
    case TS_IMAGE_PNG: rc = decode_png(buf, len, max_pixels, out); break;
    case TS_IMAGE_WEBP: rc = decode_webp(buf, len, max_pixels, out); break;
    default:
        return TS_FAIL(TS_FORMAT, "image data (%zu bytes) is not JPEG, PNG or WebP", len);
    }
    if (rc != TS_OK) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->format = f;
    return TS_OK;
}

/* ---- PIL bilinear resampling (Resample.c) ---- */

enum { PB = 32 - 8 - 2 }; /* PRECISION_BITS */

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

/* Coefficients of each output pixel: bounds (out, 2) = (first input index, count), kk (out,
 * ksize) fixed point. Returns ksize, 0 on allocation failure. */
static int precompute(int32_t in_size, int32_t out_size, int32_t **bounds_out, int32_t **kk_out) {
    const double support0 = 1.0; /* bilinear */
    const double scale = (double)in_size / (double)out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = support0 * filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    double *pre = ts_malloc(sizeof(double) * (size_t)out_size * (size_t)ksize);
    int32_t *bounds = ts_malloc(sizeof(int32_t) * 2 * (size_t)out_size);
    int32_t *kk = ts_malloc(sizeof(int32_t) * (size_t)out_size * (size_t)ksize);
    if (!pre || !bounds || !kk) {
        ts_free(pre);
        ts_free(bounds);
        ts_free(kk);
        return 0;
    }
    for (int32_t xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale;
        double ww = 0.0;
        const double ss = 1.0 / filterscale;
        int32_t xmin = (int32_t)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int32_t xmax = (int32_t)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = pre + (size_t)xx * (size_t)ksize;
        int32_t x = 0;
        for (; x < xmax; x++) {
            const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        bounds[xx * 2 + 0] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * (size_t)ksize; i++)
        kk[i] = pre[i] < 0 ? (int32_t)(-0.5 + pre[i] * (1 << PB))
                           : (int32_t)(0.5 + pre[i] * (1 << PB));
    ts_free(pre);
    *bounds_out = bounds;
    *kk_out = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PB;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

ts_status ts_image_resize_bilinear(const uint8_t *src, int32_t sw, int32_t sh, uint8_t *dst,
                                   int32_t dw, int32_t dh) {
    if (sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0)
        return TS_FAIL(TS_INVAL, "resize %dx%d -> %dx%d", sw, sh, dw, dh);
    if (sw == dw && sh == dh) { /* PIL returns a copy */
        memcpy(dst, src, (size_t)sw * (size_t)sh * 3);
        return TS_OK;
    }
    int32_t *bh = NULL, *kh = NULL, *bv = NULL, *kv = NULL;
    uint8_t *tmp = NULL;
    ts_status rc = TS_OK;
    const int ksh = precompute(sw, dw, &bh, &kh);
    const int ksv = precompute(sh, dh, &bv, &kv);
    if (!ksh || !ksv) {
        rc = TS_FAIL(TS_NOMEM, "resize coefficients");
        goto done;
    }
    const bool need_h = sw != dw, need_v = sh != dh;
    const uint8_t *vin = src;
    int32_t y_first = 0;
    if (need_h) {
        /* horizontal pass over the source rows the vertical pass reads */
        y_first = bv[0];
        const int32_t y_last = bv[dh * 2 - 2] + bv[dh * 2 - 1];
        const int32_t th = need_v ? y_last - y_first : sh;
        if (!need_v) y_first = 0;
        tmp = ts_malloc((size_t)dw * (size_t)th * 3);
        if (!tmp) {
            rc = TS_FAIL(TS_NOMEM, "resize buffer");
            goto done;
        }
        for (int32_t y = 0; y < th; y++) {
            const uint8_t *row = src + (size_t)(y + y_first) * (size_t)sw * 3;
            uint8_t *o = tmp + (size_t)y * (size_t)dw * 3;
            for (int32_t xx = 0; xx < dw; xx++) {
                const int32_t xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
                const int32_t *k = kh + (size_t)xx * (size_t)ksh;
                for (int ch = 0; ch < 3; ch++) {
                    int32_t ss = 1 << (PB - 1);
                    for (int32_t x = 0; x < xmax; x++)
                        ss += row[(size_t)(x + xmin) * 3 + (size_t)ch] * k[x];
                    o[(size_t)xx * 3 + (size_t)ch] = clip8(ss);
                }
            }
        }
        if (!need_v) {
            memcpy(dst, tmp, (size_t)dw * (size_t)dh * 3);
            goto done;
        }
        vin = tmp;
    }
    /* vertical pass (bounds shifted to the rows of tmp) */
    for (int32_t yy = 0; yy < dh; yy++) {
        const int32_t ymin = bv[yy * 2] - (need_h ? y_first : 0), ymax = bv[yy * 2 + 1];
        const int32_t *k = kv + (size_t)yy * (size_t)ksv;
        uint8_t *o = dst + (size_t)yy * (size_t)dw * 3;
        for (int32_t xx = 0; xx < dw * 3; xx++) {
            int32_t ss = 1 << (PB - 1);
            for (int32_t y = 0; y < ymax; y++)
                ss += vin[(size_t)(y + ymin) * (size_t)dw * 3 + (size_t)xx] * k[y];
            o[xx] = clip8(ss);
        }
    }
done:
    ts_free(bh);
    ts_free(kh);
    ts_free(bv);
    ts_free(kv);
    ts_free(tmp);
    return rc;
}

ts_status ts_image_preprocess(const ts_image *im, int32_t size, const float mean[3],
                              const float std[3], float *out) {
    if (!im || !im->rgb || size <= 0 || size > 16384)
        return TS_FAIL(TS_INVAL, "preprocess: no image or bad size %d", size);
    const size_t n = (size_t)size * (size_t)size;
    uint8_t *r = ts_malloc(n * 3);
    if (!r) return TS_FAIL(TS_NOMEM, "resized image");
    ts_status rc = ts_image_resize_bilinear(im->rgb, im->width, im->height, r, size, size);
    if (rc == TS_OK)
        for (int ch = 0; ch < 3; ch++) {
            /* HF: float64 u * (1/255) cast to float32, then (v - mean) / std in float32 */
            const float m = mean[ch], s = std[ch];
            float *o = out + (size_t)ch * n;
            for (size_t i = 0; i < n; i++) {
                const float v = (float)((double)r[3 * i + (size_t)ch] * (1.0 / 255.0));
                o[i] = (v - m) / s;
            }
        }
    ts_free(r);
    return rc;
}
