/* test_ops_unit.c: the metrics registry and endpoint (daemon/metrics.c) and the log
 * formats (shard/base/log.c).
 *   - counters and histograms are exact under concurrent updates from 4 threads;
 *   - histogram observations land in the right bucket, buckets are cumulative, +Inf ==
 *     count, and the sum is in seconds;
 *   - method labels are bounded (the 33rd path on is counted as "other"), and so are safety
 *     policy labels (32, built-ins included);
 *   - the endpoint answers GET /metrics over a real socket (200, text format), 404 and
 *     405 elsewhere; malformed addresses are refused;
 *   - JSON log lines parse (jansson), carry request_id only for "request ID: " messages and
 *     escape control characters; text lines have them replaced (one event, one line).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "../../daemon/metrics.h" /* not -I daemon/: its sched.h would shadow <sched.h> */

/* value of the first exposition line starting with `prefix ` (-1 if none) */
static double metric(const char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, prefix, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
    return -1;
}

static char *render(void) {
    size_t len = 0;
    char *t = ts_metrics_render(&len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    return t;
}

#define N_THREADS 4
#define N_ITERS 20000

static void *hammer(void *arg) {
    (void)arg;
    for (int i = 0; i < N_ITERS; i++) {
        ts_metrics_generated_tokens(1);
        ts_metrics_itl_us(1500); /* 1.5 ms: bucket le=0.0025 */
        ts_metrics_rpc_done("/tessera.v1.Inference/Generate", 0);
        ts_metrics_step_us(1, 300);
    }
    return NULL;
}

static void test_concurrent_counts(void **st) {
    (void)st;
    char *t0 = render();
    double g0 = metric(t0, "tessera_generated_tokens_total");
    double i0 = metric(t0, "tessera_inter_token_latency_seconds_count");
    ts_free(t0);
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    char *t = render();
    const double n = (double)N_THREADS * N_ITERS;
    assert_true(metric(t, "tessera_generated_tokens_total") - g0 == n);
    assert_true(metric(t, "tessera_inter_token_latency_seconds_count") - i0 == n);
    assert_true(metric(t, "tessera_requests_total{service=\"tessera.v1.Inference\",method=\"Generate\",code=\"OK\"}") == n);
    /* all observations at 1.5 ms: none at le=0.001, all from le=0.0025 on */
    assert_true(metric(t, "tessera_inter_token_latency_seconds_bucket{le=\"0.001\"}") == 0);
    assert_true(metric(t, "tessera_inter_token_latency_seconds_bucket{le=\"0.0025\"}") == n);
    assert_true(metric(t, "tessera_inter_token_latency_seconds_bucket{le=\"+Inf\"}") == n);
    double sum = metric(t, "tessera_inter_token_latency_seconds_sum");
    assert_true(sum > n * 0.0015 - 1e-6 && sum < n * 0.0015 + 1e-6);
    assert_true(metric(t, "tessera_step_duration_seconds_count{rank=\"1\"}") == n);
    assert_true(metric(t, "tessera_step_duration_seconds_bucket{rank=\"1\",le=\"0.0005\"}") == n);
    assert_null(strstr(t, "rank=\"2\""));
    assert_true(metric(t, "tessera_generated_tokens_per_second") > 0);
    ts_free(t);
}

static void test_bounded_labels_and_safety(void **st) {
    (void)st;
    char path[64];
    for (int i = 0; i < 40; i++) {
        snprintf(path, sizeof path, "/svc.S/M%d", i);
        ts_metrics_rpc_done(path, 5);
    }
    ts_metrics_rpc_done("(unknown)", 12);
    ts_metrics_rpc_done(NULL, 99); /* bad code -> UNKNOWN */
    ts_metrics_safety(TS_SAFETY_POLICY_VIOLENCE, TS_SAFETY_BLOCKED);
    ts_metrics_safety(TS_SAFETY_POLICY_COUNT, TS_SAFETY_BLOCKED); /* ignored */
    char *t = render();
    int series = 0;
    for (const char *p = t; (p = strstr(p, "\ntessera_requests_total{")); p++) series++;
    /* Generate (test above) + 31 of the M paths: 32 methods; the rest is "other", which
     * has 3 codes (NOT_FOUND, UNIMPLEMENTED, UNKNOWN) */
    assert_int_equal(series, 32 + 3);
    assert_true(metric(t, "tessera_requests_total{service=\"\",method=\"other\",code=\"NOT_FOUND\"}") == 9);
    assert_true(metric(t, "tessera_requests_total{service=\"\",method=\"other\",code=\"UNIMPLEMENTED\"}") == 1);
    assert_true(metric(t, "tessera_requests_total{service=\"\",method=\"other\",code=\"UNKNOWN\"}") == 1);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"violence\",outcome=\"blocked\"}") == 1);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"violence\",outcome=\"allowed\"}") == 0);
    ts_free(t);
    /* custom policy labels: a built-in's label is the built-in; 29 more fit (32 in all),
     * the rest count as "other" */
    ts_metrics_safety_label("violence", TS_SAFETY_BLOCKED);
    ts_metrics_safety_register("hate");
    for (int i = 0; i < 40; i++) {
        snprintf(path, sizeof path, "custom%d", i);
        ts_metrics_safety_label(path, TS_SAFETY_ALLOWED);
    }
    ts_metrics_safety_label("", TS_SAFETY_ERROR); /* no label: "other" */
    t = render();
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"violence\",outcome=\"blocked\"}") == 2);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"hate\",outcome=\"allowed\"}") == 0);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"custom27\",outcome=\"allowed\"}") == 1);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"custom28\",outcome=\"allowed\"}") == -1);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"other\",outcome=\"allowed\"}") == 12);
    assert_true(metric(t, "tessera_safety_decisions_total{policy=\"other\",outcome=\"error\"}") == 1);
    series = 0;
    for (const char *p = t; (p = strstr(p, "\ntessera_safety_decisions_total{")); p++) series++;
    assert_int_equal(series, (32 + 1) * 3);
    ts_free(t);
}

static int http(int port, const char *req, char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return -1;
    }
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd, out + n, cap - 1 - n)) > 0) n += (size_t)k;
    out[n] = '\0';
    close(fd);
    return (int)n;
}

static void fill(ts_metrics_gauges *g, void *ctx) {
    (void)ctx;
    g->queued = 3;
    g->running = 2;
    g->kv_pages_total = 100;
    g->kv_pages_free = 60;
    g->n_ranks = 1;
    g->weight_bytes[0] = 1234;
}

static void test_endpoint(void **st) {
    (void)st;
    int port = 0;
    assert_int_equal(ts_metrics_start("nocolon", NULL, NULL, &port), TS_INVAL);
    assert_int_equal(ts_metrics_start("127.0.0.1:", NULL, NULL, &port), TS_INVAL);
    assert_int_equal(ts_metrics_start("127.0.0.1:70000", NULL, NULL, &port), TS_INVAL);
    assert_int_equal(ts_metrics_start("no.such.host.invalid:0", NULL, NULL, &port), TS_INVAL);
    assert_int_equal(ts_metrics_start("127.0.0.1:0", fill, NULL, &port), TS_OK);
    assert_true(port > 0);
    static char buf[1 << 20];
    assert_true(http(port, "GET /metrics HTTP/1.0\r\n\r\n", buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "HTTP/1.0 200") ? buf : strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(buf, "\ntessera_queue_depth 3\n"));
    assert_non_null(strstr(buf, "\ntessera_kv_pages_used 40\n"));
    assert_non_null(strstr(buf, "\ntessera_device_memory_bytes{rank=\"0\",use=\"weights\"} 1234\n"));
    assert_true(http(port, "GET /other HTTP/1.0\r\n\r\n", buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, " 404 "));
    assert_true(http(port, "DELETE /metrics HTTP/1.0\r\n\r\n", buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, " 405 "));
    assert_int_equal(ts_metrics_start("127.0.0.1:0", fill, NULL, &port), TS_INVAL); /* one */
    ts_metrics_stop();
    ts_metrics_stop(); /* idempotent */
}

/* Runs fn with stderr sent to a file; returns the file's text (ts_free it). */
static char *capture_stderr(void (*fn)(void)) {
    char path[] = "/tmp/test_ops_logXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *t = ts_malloc((size_t)n + 1);
    assert_non_null(t);
    assert_int_equal(pread(fd, t, (size_t)n, 0), n);
    t[n] = '\0';
    close(fd);
    unlink(path);
    return t;
}

static void log_lines(void) {
    TS_LOG_INFO("request req-7: admitted to slot %d", 2);
    TS_LOG_WARN("plain line with \"quotes\", a \\ and a\nnewline\x01");
    TS_LOG_INFO("request evil\nid: x"); /* not an id: it has a newline before ':' */
    TS_LOG_DEBUG("not shown at info");
}

static void test_log_json(void **st) {
    (void)st;
    ts_log_set_level(TS_LOG_LEVEL_INFO);
    ts_log_set_format(TS_LOG_FORMAT_JSON);
    char *t = capture_stderr(log_lines);
    ts_log_set_format(TS_LOG_FORMAT_TEXT);
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *o = json_loads(l, 0, &e);
        assert_non_null(o);
        const char *msg = json_string_value(json_object_get(o, "msg"));
        assert_non_null(msg);
        assert_non_null(json_object_get(o, "ts"));
        assert_non_null(json_object_get(o, "func"));
        json_t *rid = json_object_get(o, "request_id");
        if (lines == 0) {
            assert_string_equal(json_string_value(rid), "req-7");
            assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
            assert_string_equal(msg, "request req-7: admitted to slot 2");
        } else if (lines == 1) {
            assert_null(rid);
            assert_string_equal(msg, "plain line with \"quotes\", a \\ and a\nnewline\x01");
            assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
        } else {
            assert_null(rid);
        }
        json_decref(o);
        lines++;
    }
    assert_int_equal(lines, 3);
    ts_free(t);
}

static void test_log_text(void **st) {
    (void)st;
    ts_log_set_level(TS_LOG_LEVEL_INFO);
    ts_log_set_format(TS_LOG_FORMAT_TEXT);
    char *t = capture_stderr(log_lines);
    int lines = 0;
    for (const char *p = t; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 3); /* the newlines inside messages did not split them */
    assert_non_null(strstr(t, "info  log_lines: request req-7: admitted to slot 2\n"));
    assert_non_null(strstr(t, "a?newline?\n"));
    ts_free(t);
    assert_int_equal(ts_log_parse_format("json"), TS_LOG_FORMAT_JSON);
    assert_int_equal(ts_log_parse_format("TEXT"), TS_LOG_FORMAT_TEXT);
    assert_int_equal(ts_log_parse_format("xml"), -1);
    assert_int_equal(ts_log_parse_format(NULL), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_counts),
        cmocka_unit_test(test_bounded_labels_and_safety),
        cmocka_unit_test(test_endpoint),
        cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
