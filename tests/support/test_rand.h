/* test_rand.h: deterministic random inputs and error measures shared by the kernel tests
 * (header only; each test file has its own generator state g_rng, seeded by the test). */
#ifndef TS_TEST_RAND_H
#define TS_TEST_RAND_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t g_rng;

/* Seeds g_rng from TESSERA_TEST_SEED, else the clock, and prints the seed so that a
 * failing run can be replayed. */
static inline uint64_t seed_rng(void) {
    const char *s = getenv("TESSERA_TEST_SEED");
    g_rng = s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
    printf("seed %llu (TESSERA_TEST_SEED to replay)\n", (unsigned long long)g_rng);
    return g_rng;
}

/* splitmix64 */
static inline uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static inline float frand(void) {
    return (float)((double)(rnd64() >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* x[i] uniform in [-s, s) */
static inline void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = frand() * s;
}

/* sum (a - ref)^2 / sum ref^2 (the plain sum when ref is all zero); +inf on NaN */
static inline double nmse(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (num != num) return INFINITY;
    return den > 0 ? num / den : num;
}

#endif
