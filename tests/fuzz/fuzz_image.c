/* fuzz_image.c: the image decoding path (shard/image.c): sniff, decode JPEG / PNG / WebP
 * with a pixel cap, then preprocess to a small square. Must never crash, leak or trip
 * ASan/UBSan; bounded time through the cap (1 M pixels here). Corpus: tests/fuzz/corpus/image
 * (the fixture images of tests/fixtures/image plus truncations). */
#include <stddef.h>
#include <stdint.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_image im;
    if (ts_image_decode(data, size, 1000000, &im) == TS_OK) {
        static const float half[3] = {0.5f, 0.5f, 0.5f};
        static float out[3 * 24 * 24];
        (void)ts_image_preprocess(&im, 24, half, half, out);
        ts_image_free(&im);
    }
    return 0;
}
