/* fixture_util.h: small helpers shared by the tests that compare against committed
 * reference fixtures (tests/fixtures/hf, .../llamacpp): reading raw float32 files and the
 * error metric used throughout, max|a - ref| / max|ref|. Header-only (static). */
#ifndef TS_FIXTURE_UTIL_H
#define TS_FIXTURE_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* n_floats little-endian float32 values of a file (malloc'd; NULL if missing or short). */
static inline float *ts_fixture_read_f32(const char *path, size_t n_floats) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *p = malloc(n_floats * sizeof(float));
    size_t got = p ? fread(p, sizeof(float), n_floats, f) : 0;
    fclose(f);
    if (got != n_floats) {
        free(p);
        return NULL;
    }
    return p;
}

/* max|a - ref| / max|ref| over n values (NaN in a propagates as a failure). */
static inline double ts_fixture_rel_err(const float *a, const float *ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0 ? md / mr : md;
}

#endif
