/* image.h: image decoding (JPEG, PNG, WebP through Debian's libjpeg-turbo, libpng and
 * libwebp) and Gemma 3 preprocessing, as Hugging Face's Gemma3ImageProcessorPil does it.
 * ref: ../shared/docs/gemma3-spec.md section 6.3; docs/vision.md.
 *
 * Decoding: the format is sniffed from the bytes (never from a file name). The image size
 * is read from the header and checked against a pixel cap before any pixel is decoded
 * (decompression bombs). Truncated or corrupt data is refused (libjpeg warnings such as
 * "premature end of data" count as errors, as PIL refuses truncated files by default).
 * The result is 8-bit RGB: grayscale is replicated, palette expanded, 16-bit samples keep
 * their high byte, and images with alpha (or PNG tRNS) are composited onto white exactly
 * as PIL's Image.alpha_composite over an opaque white background (HF convert_to_rgb).
 *
 * Errors: TS_FORMAT (not an image we read, corrupt, truncated, animated WebP, CMYK JPEG),
 * TS_RANGE (over the pixel cap, or a zero dimension), TS_NOMEM. The daemon maps TS_FORMAT
 * and TS_RANGE to INVALID_ARGUMENT. Messages name the format and the problem.
 *
 * Preprocessing: resize to size x size (aspect ratio not kept) with PIL's 8-bit bilinear
 * resampler bit for bit (triangle filter widened by the downscale factor, horizontal pass
 * then vertical pass, 22-bit fixed-point coefficients, rounding and clipping to 8 bits
 * between the passes), then v = (u / 255 - mean) / std per channel, planar CHW floats.
 *
 * Thread-safe (no global state).
 */
#ifndef TS_IMAGE_H
#define TS_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default pixel cap (width * height), PIL's MAX_IMAGE_PIXELS warning threshold is 89.5 M;
 * we refuse above 50 M pixels unless the caller sets another cap. */
#define TS_IMAGE_MAX_PIXELS_DEFAULT (50ull * 1000ull * 1000ull)

typedef enum {
    TS_IMAGE_UNKNOWN = 0,
    TS_IMAGE_JPEG = 1,
    TS_IMAGE_PNG = 2,
    TS_IMAGE_WEBP = 3,
} ts_image_format;

typedef struct ts_image {
    int32_t width, height;
    uint8_t *rgb;           /* (height, width, 3) row-major, owned (ts_free) */
    ts_image_format format; /* what it was decoded from */
} ts_image;

/* "jpeg", "png", "webp" or "unknown". */
const char *ts_image_format_name(ts_image_format f);

/* The format of buf by its magic bytes (TS_IMAGE_UNKNOWN if none matches). */
ts_image_format ts_image_sniff(const uint8_t *buf, size_t len);

/* Decodes buf into *out (RGB). max_pixels 0 = TS_IMAGE_MAX_PIXELS_DEFAULT. On failure *out
 * is zeroed. */
ts_status ts_image_decode(const uint8_t *buf, size_t len, uint64_t max_pixels, ts_image *out);
void ts_image_free(ts_image *im);

/* PIL Image.resize(..., BILINEAR) of 8-bit RGB, bit for bit: src (sh, sw, 3) -> dst
 * (dh, dw, 3). TS_INVAL on a zero size, TS_NOMEM. */
ts_status ts_image_resize_bilinear(const uint8_t *src, int32_t sw, int32_t sh, uint8_t *dst,
                                   int32_t dw, int32_t dh);

/* Resize to size x size, rescale by 1/255, normalize with mean/std per channel:
 * out (3, size, size) floats. */
ts_status ts_image_preprocess(const ts_image *im, int32_t size, const float mean[3],
                              const float std[3], float *out);

#ifdef __cplusplus
}
#endif
#endif
