/* alloc.c: see alloc.h.
 *
 * DESIGN: each block carries a 16-byte header holding its size, so that ts_free can keep
 * the byte counter exact without malloc_usable_size. The header keeps 16-byte alignment.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TS_HDR 16

static atomic_size_t g_bytes;
static atomic_size_t g_count;
static atomic_size_t g_limit;
static atomic_long g_fail_after = -1;

static bool should_fail(size_t n) {
    long f = atomic_load(&g_fail_after);
    if (f >= 0) {
        long prev = atomic_fetch_sub(&g_fail_after, 1);
        if (prev == 0) return true;
        if (prev < 0) atomic_store(&g_fail_after, -1);
    }
    size_t lim = atomic_load(&g_limit);
    if (lim && atomic_load(&g_bytes) + n > lim) return true;
    return false;
}

void *ts_malloc(size_t n) {
    size_t total;
    if (!ts_add_size(n, TS_HDR, &total)) return NULL;
    if (should_fail(n)) return NULL;
    unsigned char *p = malloc(total);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    atomic_fetch_add(&g_bytes, n);
    atomic_fetch_add(&g_count, 1);
    return p + TS_HDR;
}

void *ts_calloc(size_t count, size_t size) {
    size_t n;
    if (!ts_mul_size(count, size, &n)) return NULL;
    void *p = ts_malloc(n);
    if (p) memset(p, 0, n);
    return p;
}

void ts_free(void *p) {
    if (!p) return;
    unsigned char *b = (unsigned char *)p - TS_HDR;
    size_t n;
    memcpy(&n, b, sizeof n);
    atomic_fetch_sub(&g_bytes, n);
    atomic_fetch_sub(&g_count, 1);
    free(b);
}

void *ts_realloc(void *p, size_t n) {
    if (!p) return ts_malloc(n);
    unsigned char *b = (unsigned char *)p - TS_HDR;
    size_t old, total;
    memcpy(&old, b, sizeof old);
    if (!ts_add_size(n, TS_HDR, &total)) return NULL;
    if (n > old && should_fail(n - old)) return NULL;
    unsigned char *nb = realloc(b, total);
    if (!nb) return NULL;
    memcpy(nb, &n, sizeof n);
    atomic_fetch_add(&g_bytes, n);
    atomic_fetch_sub(&g_bytes, old);
    return nb + TS_HDR;
}

char *ts_strndup(const char *s, size_t n) {
    size_t total;
    if (!ts_add_size(n, 1, &total)) return NULL;
    char *d = ts_malloc(total);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ts_strdup(const char *s) { return ts_strndup(s, strlen(s)); }

size_t ts_alloc_bytes_in_use(void) { return atomic_load(&g_bytes); }
size_t ts_alloc_count(void) { return atomic_load(&g_count); }
void ts_alloc_set_limit(size_t max_bytes) { atomic_store(&g_limit, max_bytes); }
void ts_alloc_fail_after(long n) { atomic_store(&g_fail_after, n < 0 ? -1 : n); }
