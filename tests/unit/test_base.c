/* test_base.c: status table and messages, allocation counters and fault injection,
 * overflow helpers, file mapping, log levels. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "mapfile.h"
#include "status.h"

static void test_status_table(void **state) {
    (void)state;
    for (int s = 0; s < TS_STATUS_COUNT_; s++) {
        assert_non_null(ts_status_name((ts_status)s));
        assert_true(strncmp(ts_status_name((ts_status)s), "TS_", 3) == 0);
        assert_true(strlen(ts_status_text((ts_status)s)) > 0);
        for (int t = 0; t < s; t++)
            assert_string_not_equal(ts_status_name((ts_status)s), ts_status_name((ts_status)t));
    }
    assert_string_equal(ts_status_name(TS_OK), "TS_OK");
    assert_string_equal(ts_status_name(TS_FORMAT), "TS_FORMAT");
    assert_string_equal(ts_status_name((ts_status)999), "TS_?");
}

static ts_status inner(int x) {
    if (x < 0) return TS_FAIL(TS_RANGE, "x = %d is negative", x);
    return TS_OK;
}
static ts_status outer(int x) {
    TS_TRY(inner(x));
    return TS_OK;
}

static void test_fail_and_propagate(void **state) {
    (void)state;
    ts_clear_error();
    assert_string_equal(ts_last_error(), "");
    assert_int_equal(outer(1), TS_OK);
    assert_int_equal(outer(-5), TS_RANGE);
    assert_string_equal(ts_last_error(), "x = -5 is negative");
    ts_error_prefix("file '%s'", "a.gguf");
    assert_string_equal(ts_last_error(), "file 'a.gguf': x = -5 is negative");
    /* long messages are truncated, not overflowed */
    char big[4096];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(TS_FAIL(TS_INVAL, "%s", big), TS_INVAL);
    assert_true(strlen(ts_last_error()) < 1024);
}

static void test_alloc_counters(void **state) {
    (void)state;
    size_t b0 = ts_alloc_bytes_in_use(), c0 = ts_alloc_count();
    char *p = ts_malloc(100);
    assert_non_null(p);
    assert_int_equal(ts_alloc_bytes_in_use(), b0 + 100);
    assert_int_equal(ts_alloc_count(), c0 + 1);
    p = ts_realloc(p, 1000);
    assert_non_null(p);
    assert_int_equal(ts_alloc_bytes_in_use(), b0 + 1000);
    ts_free(p);
    ts_free(NULL);
    assert_int_equal(ts_alloc_bytes_in_use(), b0);
    assert_int_equal(ts_alloc_count(), c0);
    int *z = ts_calloc(10, sizeof *z);
    for (int i = 0; i < 10; i++) assert_int_equal(z[i], 0);
    ts_free(z);
    assert_null(ts_calloc(SIZE_MAX / 2, 4)); /* overflow is refused, not wrapped */
    assert_null(ts_malloc(SIZE_MAX - 4));
    char *s = ts_strdup("hello");
    assert_string_equal(s, "hello");
    ts_free(s);
    s = ts_strndup("hello", 3);
    assert_string_equal(s, "hel");
    ts_free(s);
}

static void test_alloc_fault_injection_and_limit(void **state) {
    (void)state;
    ts_alloc_fail_after(2);
    void *a = ts_malloc(8), *b = ts_malloc(8), *c = ts_malloc(8), *d = ts_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c); /* the third allocation (index 2) fails, once */
    assert_non_null(d);
    ts_free(a);
    ts_free(b);
    ts_free(d);
    ts_alloc_fail_after(-1);
    size_t base = ts_alloc_bytes_in_use();
    ts_alloc_set_limit(base + 1000);
    void *e = ts_malloc(900);
    assert_non_null(e);
    assert_null(ts_malloc(200));
    ts_free(e);
    ts_alloc_set_limit(0);
    e = ts_malloc(1 << 20);
    assert_non_null(e);
    ts_free(e);
}

static void test_overflow_helpers(void **state) {
    (void)state;
    size_t s;
    uint64_t u;
    assert_true(ts_mul_size(1000, 1000, &s) && s == 1000000);
    assert_false(ts_mul_size(SIZE_MAX, 2, &s));
    assert_false(ts_add_size(SIZE_MAX, 1, &s));
    assert_true(ts_add_u64(1, 2, &u) && u == 3);
    assert_false(ts_mul_u64(UINT64_MAX / 3 + 1, 3, &u));
}

static void test_mapfile(void **state) {
    (void)state;
    ts_mapfile mf;
    assert_int_equal(ts_mapfile_open("/nonexistent/x.gguf", &mf), TS_IO);
    assert_non_null(strstr(ts_last_error(), "/nonexistent/x.gguf"));
    assert_int_equal(ts_mapfile_open("/tmp", &mf), TS_IO);
    assert_non_null(strstr(ts_last_error(), "not a regular file"));
    char path[] = "/tmp/ts_test_mapfile_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ts_mapfile_open(path, &mf), TS_OK); /* empty file */
    assert_null(mf.data);
    assert_int_equal(mf.size, 0);
    ts_mapfile_close(&mf);
    assert_int_equal(write(fd, "GGUF1234", 8), 8);
    close(fd);
    assert_int_equal(ts_mapfile_open(path, &mf), TS_OK);
    assert_int_equal(mf.size, 8);
    assert_memory_equal(mf.data, "GGUF1234", 8);
    ts_mapfile_close(&mf);
    ts_mapfile_close(&mf); /* closing twice is harmless */
    unlink(path);
}

static void test_log_levels(void **state) {
    (void)state;
    assert_int_equal(ts_log_parse_level("error"), TS_LOG_LEVEL_ERROR);
    assert_int_equal(ts_log_parse_level("TRACE"), TS_LOG_LEVEL_TRACE);
    assert_int_equal(ts_log_parse_level("3"), TS_LOG_LEVEL_DEBUG);
    assert_int_equal(ts_log_parse_level("loud"), -1);
    assert_int_equal(ts_log_parse_level(NULL), -1);
    ts_log_level old = ts_log_get_level();
    ts_log_set_level(TS_LOG_LEVEL_DEBUG);
    assert_int_equal(ts_log_get_level(), TS_LOG_LEVEL_DEBUG);
    TS_LOG_DEBUG("a debug line from the test (%d)", 42);
    ts_log_set_level(old);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_table),
        cmocka_unit_test(test_fail_and_propagate),
        cmocka_unit_test(test_alloc_counters),
        cmocka_unit_test(test_alloc_fault_injection_and_limit),
        cmocka_unit_test(test_overflow_helpers),
        cmocka_unit_test(test_mapfile),
        cmocka_unit_test(test_log_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
