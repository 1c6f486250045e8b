/* alloc.h: checked host allocation with counters, an optional limit and fault injection.
 *
 * All tessera host allocations go through these wrappers, so that:
 *   - usage is counted (ts_alloc_bytes_in_use, ts_alloc_count);
 *   - a hard limit can be set (ts_alloc_set_limit), beyond which allocations fail;
 *   - tests can make the Nth allocation from now fail (ts_alloc_fail_after) and check
 *     that every caller returns TS_NOMEM cleanly (SQLite faultsim style).
 * ts_free(NULL) is a no-op. Memory from these functions must be freed with ts_free.
 * Thread-safe (atomic counters).
 *
 * Size arithmetic on values from files or the wire must use ts_mul_size / ts_add_size,
 * which report overflow instead of wrapping.
 */
#ifndef TS_ALLOC_H
#define TS_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void *ts_malloc(size_t n);
void *ts_calloc(size_t count, size_t size);
void *ts_realloc(void *p, size_t n);
void ts_free(void *p);
/* Copies the NUL-terminated string s (NULL on failure). */
char *ts_strdup(const char *s);
/* Copies n bytes of s and appends a NUL (NULL on failure). */
char *ts_strndup(const char *s, size_t n);

/* Bytes currently allocated through these wrappers, and live allocation count. */
size_t ts_alloc_bytes_in_use(void);
size_t ts_alloc_count(void);
/* 0 = no limit. */
void ts_alloc_set_limit(size_t max_bytes);
/* Allocation number n (0-based) from now fails, once; n < 0 disables. */
void ts_alloc_fail_after(long n);

/* *out = a*b or a+b; false on overflow (then *out is unspecified). */
static inline bool ts_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool ts_add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool ts_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool ts_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

#ifdef __cplusplus
}
#endif
#endif
