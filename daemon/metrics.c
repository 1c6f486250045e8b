/* metrics.c: Prometheus metrics registry and the libmicrohttpd endpoint (see metrics.h). */
#include "metrics.h"

#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "alloc.h"
#include "log.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "0.1.0"
#endif

/* ---- histograms: fixed bucket bounds (seconds), atomic non-cumulative counts ---- */

#define MAX_BUCKETS 16

typedef struct {
    const double *le; /* upper bounds in seconds, ascending */
    int n;            /* number of bounds (+Inf is implicit) */
    atomic_uint_fast64_t bucket[MAX_BUCKETS + 1];
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us;
} histo;

static const double k_ttft_le[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
static const double k_itl_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                  0.25,  0.5,    1,     2.5,  5,     10};
static const double k_step_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NB(a) ((int)(sizeof a / sizeof a[0]))

static void histo_observe(histo *h, int64_t us) {
    if (us < 0) us = 0;
    double s = (double)us / 1e6;
    int i = 0;
    while (i < h->n && s > h->le[i]) i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/* ---- the registry ---- */

#define N_CODES 17 /* gRPC status codes 0..16 */
#define OTHER_METHOD TS_METRICS_MAX_METHODS

static const char *const k_code_names[N_CODES] = {
    "OK",        "CANCELLED",         "UNKNOWN",        "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
static const char *const k_policy_names[TS_SAFETY_POLICY_COUNT] = {
    "dangerous_content", "sexually_explicit", "violence"};
static const char *const k_outcome_names[TS_SAFETY_OUTCOME_COUNT] = {"allowed", "blocked",
                                                                     "error"};

#define RATE_WINDOW 10 /* seconds of the tokens/s gauge */
#define RATE_SLOTS 16

static struct {
    pthread_mutex_t mu; /* methods[] registration, the rate ring */
    char methods[TS_METRICS_MAX_METHODS][128]; /* registered paths */
    int n_methods;
    atomic_uint_fast64_t requests[TS_METRICS_MAX_METHODS + 1][N_CODES];
    atomic_uint_fast64_t prompt_tokens, generated_tokens, cached_tokens;
    atomic_uint_fast64_t safety[TS_METRICS_MAX_POLICIES + 1][TS_SAFETY_OUTCOME_COUNT];
    char policies[TS_METRICS_MAX_POLICIES][64]; /* labels (under mu); [0, 3): the built-ins */
    int n_policies;
    atomic_uint_fast64_t reloads_ok, reloads_err;
    histo ttft, itl;
    histo step[TS_METRICS_MAX_RANKS];
    atomic_bool rank_seen[TS_METRICS_MAX_RANKS];
    int64_t rate_sec[RATE_SLOTS];  /* mu: the second each slot counts */
    uint64_t rate_n[RATE_SLOTS];   /* mu */
    int64_t start_sec;             /* monotonic second of the first use */
    struct timespec start_real;
    pthread_once_t once;
    /* endpoint */
    struct MHD_Daemon *mhd;
    ts_metrics_gauge_fn gauge_fn;
    void *gauge_ctx;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static int64_t mono_sec(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec;
}

static void init_once(void) {
    R.ttft.le = k_ttft_le;
    R.ttft.n = NB(k_ttft_le);
    R.itl.le = k_itl_le;
    R.itl.n = NB(k_itl_le);
    for (int r = 0; r < TS_METRICS_MAX_RANKS; r++) {
        R.step[r].le = k_step_le;
        R.step[r].n = NB(k_step_le);
    }
    R.start_sec = mono_sec();
    clock_gettime(CLOCK_REALTIME, &R.start_real);
    for (int p = 0; p < TS_SAFETY_POLICY_COUNT; p++)
        snprintf(R.policies[R.n_policies++], sizeof R.policies[0], "%s", k_policy_names[p]);
}
static void init(void) { pthread_once(&R.once, init_once); }

/* ---- hooks ---- */

static int method_index(const char *path) {
    if (!path || path[0] != '/') return OTHER_METHOD;
    pthread_mutex_lock(&R.mu);
    int i = 0;
    while (i < R.n_methods && strcmp(R.methods[i], path)) i++;
    if (i == R.n_methods) {
        if (R.n_methods < TS_METRICS_MAX_METHODS && strlen(path) < sizeof R.methods[0])
            snprintf(R.methods[R.n_methods++], sizeof R.methods[0], "%s", path);
        else
            i = OTHER_METHOD;
    }
    pthread_mutex_unlock(&R.mu);
    return i;
}

void ts_metrics_rpc_done(const char *path, int code) {
    init();
    if (code < 0 || code >= N_CODES) code = 2; /* UNKNOWN */
    atomic_fetch_add_explicit(&R.requests[method_index(path)][code], 1, memory_order_relaxed);
}

void ts_metrics_prompt_tokens(uint64_t n) {
    atomic_fetch_add_explicit(&R.prompt_tokens, n, memory_order_relaxed);
}

void ts_metrics_cached_tokens(uint64_t n) {
    atomic_fetch_add_explicit(&R.cached_tokens, n, memory_order_relaxed);
}

void ts_metrics_generated_tokens(uint64_t n) {
    init();
    atomic_fetch_add_explicit(&R.generated_tokens, n, memory_order_relaxed);
    int64_t now = mono_sec();
    pthread_mutex_lock(&R.mu);
    int k = (int)(now % RATE_SLOTS);
    if (R.rate_sec[k] != now) {
        R.rate_sec[k] = now;
        R.rate_n[k] = 0;
    }
    R.rate_n[k] += n;
    pthread_mutex_unlock(&R.mu);
}

void ts_metrics_ttft_us(int64_t us) {
    init();
    histo_observe(&R.ttft, us);
}

void ts_metrics_itl_us(int64_t us) {
    init();
    histo_observe(&R.itl, us);
}

void ts_metrics_step_us(int32_t rank, int64_t us) {
    init();
    if (rank < 0 || rank >= TS_METRICS_MAX_RANKS) return;
    atomic_store_explicit(&R.rank_seen[rank], true, memory_order_relaxed);
    histo_observe(&R.step[rank], us);
}

void ts_metrics_safety(ts_safety_policy policy, ts_safety_outcome outcome) {
    if ((unsigned)policy >= TS_SAFETY_POLICY_COUNT || (unsigned)outcome >= TS_SAFETY_OUTCOME_COUNT)
        return;
    init();
    atomic_fetch_add_explicit(&R.safety[policy][outcome], 1, memory_order_relaxed);
}

/* The index of a policy label (registered if new and there is room; else "other"). */
static int policy_index(const char *label) {
    init();
    if (!label || !*label || strlen(label) >= sizeof R.policies[0]) return TS_METRICS_MAX_POLICIES;
    pthread_mutex_lock(&R.mu);
    int i = 0;
    while (i < R.n_policies && strcmp(R.policies[i], label)) i++;
    if (i == R.n_policies) {
        if (R.n_policies < TS_METRICS_MAX_POLICIES)
            snprintf(R.policies[R.n_policies++], sizeof R.policies[0], "%s", label);
        else
            i = TS_METRICS_MAX_POLICIES;
    }
    pthread_mutex_unlock(&R.mu);
    return i;
}

void ts_metrics_safety_register(const char *label) { (void)policy_index(label); }

void ts_metrics_safety_label(const char *label, ts_safety_outcome outcome) {
    if ((unsigned)outcome >= TS_SAFETY_OUTCOME_COUNT) return;
    atomic_fetch_add_explicit(&R.safety[policy_index(label)][outcome], 1, memory_order_relaxed);
}

void ts_metrics_reload(bool ok) {
    atomic_fetch_add_explicit(ok ? &R.reloads_ok : &R.reloads_err, 1, memory_order_relaxed);
}

/* ---- rendering ---- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

#define SBUF_MAX (8u << 20) /* bounded label sets keep it far below this */

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (m < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)m < b->cap - b->n) {
            b->n += (size_t)m;
            return;
        }
        size_t cap = b->cap * 2;
        while (cap - b->n <= (size_t)m) cap *= 2;
        char *q = cap <= SBUF_MAX ? ts_realloc(b->p, cap) : NULL;
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
}

static void head(sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t ld(atomic_uint_fast64_t *a) { return atomic_load_explicit(a, memory_order_relaxed); }

/* labels: "" or `rank="0"` (without braces) */
static void histo_render(sbuf *b, const char *name, const char *labels, histo *h) {
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i <= h->n; i++) {
        cum += ld(&h->bucket[i]);
        if (i < h->n)
            sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->le[i],
                      (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                      (unsigned long long)cum);
    }
    /* count is the +Inf bucket's total so the two agree even mid-update */
    if (labels[0]) {
        sb_printf(b, "%s_sum{%s} %.6f\n", name, labels, (double)ld(&h->sum_us) / 1e6);
        sb_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
    } else {
        sb_printf(b, "%s_sum %.6f\n", name, (double)ld(&h->sum_us) / 1e6);
        sb_printf(b, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}

/* "/tessera.v1.Inference/Generate" -> service "tessera.v1.Inference", method "Generate" */
static void split_path(const char *path, char *svc, size_t svcsz, const char **method) {
    const char *slash = strrchr(path, '/');
    size_t n = slash && slash > path ? (size_t)(slash - path - 1) : 0;
    if (n >= svcsz) n = svcsz - 1;
    memcpy(svc, path + 1, n);
    svc[n] = '\0';
    *method = slash ? slash + 1 : path;
}

char *ts_metrics_render(size_t *len) {
    init();
    sbuf b = {.cap = 16384};
    b.p = ts_malloc(b.cap);
    if (!b.p) return NULL;
    b.p[0] = '\0';

    ts_metrics_gauges g;
    memset(&g, 0, sizeof g);
    if (R.gauge_fn) R.gauge_fn(&g, R.gauge_ctx);
    if (g.n_ranks > TS_METRICS_MAX_RANKS) g.n_ranks = TS_METRICS_MAX_RANKS;

    head(&b, "tessera_build_info", "gauge", "Version of tesserad (always 1).");
    sb_printf(&b, "tessera_build_info{version=\"%s\"} 1\n", TESSERA_VERSION);
    head(&b, "tessera_start_time_seconds", "gauge", "Start time of the process (Unix seconds).");
    sb_printf(&b, "tessera_start_time_seconds %lld.%03ld\n", (long long)R.start_real.tv_sec,
              R.start_real.tv_nsec / 1000000L);

    head(&b, "tessera_requests_total", "counter",
         "Finished gRPC calls by service, method and status code.");
    char methods[TS_METRICS_MAX_METHODS][128];
    pthread_mutex_lock(&R.mu);
    int nm = R.n_methods;
    memcpy(methods, R.methods, sizeof methods);
    pthread_mutex_unlock(&R.mu);
    for (int m = 0; m <= TS_METRICS_MAX_METHODS; m++) {
        if (m >= nm && m != OTHER_METHOD) continue;
        char svc[128];
        const char *meth = "other";
        svc[0] = '\0';
        if (m != OTHER_METHOD) split_path(methods[m], svc, sizeof svc, &meth);
        for (int c = 0; c < N_CODES; c++) {
            uint64_t v = ld(&R.requests[m][c]);
            if (v)
                sb_printf(&b, "tessera_requests_total{service=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
                          svc, meth, k_code_names[c], (unsigned long long)v);
        }
    }

    head(&b, "tessera_queue_depth", "gauge", "Requests waiting for a sequence slot.");
    sb_printf(&b, "tessera_queue_depth %lld\n", (long long)g.queued);
    head(&b, "tessera_running_sequences", "gauge", "Sequences being prefilled or decoded.");
    sb_printf(&b, "tessera_running_sequences %lld\n", (long long)g.running);
    head(&b, "tessera_sequence_slots", "gauge", "Sequences that can run at once (--slots).");
    sb_printf(&b, "tessera_sequence_slots %lld\n", (long long)g.slots);
    head(&b, "tessera_kv_pages_used", "gauge", "KV cache pages reserved by running sequences.");
    sb_printf(&b, "tessera_kv_pages_used %lld\n", (long long)(g.kv_pages_total - g.kv_pages_free));
    head(&b, "tessera_kv_pages_free", "gauge", "KV cache pages free.");
    sb_printf(&b, "tessera_kv_pages_free %lld\n", (long long)g.kv_pages_free);
    head(&b, "tessera_kv_page_tokens", "gauge", "Positions per KV cache page.");
    sb_printf(&b, "tessera_kv_page_tokens %lld\n", (long long)g.kv_page_size);

    head(&b, "tessera_prompt_tokens_total", "counter", "Prompt tokens admitted for prefill.");
    sb_printf(&b, "tessera_prompt_tokens_total %llu\n", (unsigned long long)ld(&R.prompt_tokens));
    head(&b, "tessera_prompt_tokens_cached_total", "counter",
         "Prompt tokens taken from the prefix cache (part of tessera_prompt_tokens_total).");
    sb_printf(&b, "tessera_prompt_tokens_cached_total %llu\n",
              (unsigned long long)ld(&R.cached_tokens));
    head(&b, "tessera_generated_tokens_total", "counter", "Tokens generated (sampled).");
    sb_printf(&b, "tessera_generated_tokens_total %llu\n",
              (unsigned long long)ld(&R.generated_tokens));
    {
        int64_t now = mono_sec();
        int64_t span = now - R.start_sec + 1;
        if (span > RATE_WINDOW) span = RATE_WINDOW;
        uint64_t n = 0;
        pthread_mutex_lock(&R.mu);
        for (int k = 0; k < RATE_SLOTS; k++)
            if (R.rate_sec[k] > now - span && R.rate_sec[k] <= now) n += R.rate_n[k];
        pthread_mutex_unlock(&R.mu);
        head(&b, "tessera_generated_tokens_per_second", "gauge",
             "Tokens generated per second over the last 10 s.");
        sb_printf(&b, "tessera_generated_tokens_per_second %.3f\n", (double)n / (double)span);
    }

    head(&b, "tessera_time_to_first_token_seconds", "histogram",
         "From the request's arrival to its first generated token.");
    histo_render(&b, "tessera_time_to_first_token_seconds", "", &R.ttft);
    head(&b, "tessera_inter_token_latency_seconds", "histogram",
         "Time between two consecutive tokens of one request.");
    histo_render(&b, "tessera_inter_token_latency_seconds", "", &R.itl);

    head(&b, "tessera_step_duration_seconds", "histogram", "Engine step time per rank.");
    for (int r = 0; r < TS_METRICS_MAX_RANKS; r++) {
        if (!atomic_load_explicit(&R.rank_seen[r], memory_order_relaxed)) continue;
        char l[32];
        snprintf(l, sizeof l, "rank=\"%d\"", r);
        histo_render(&b, "tessera_step_duration_seconds", l, &R.step[r]);
    }
    head(&b, "tessera_device_memory_bytes", "gauge",
         "Device memory per rank by use (weights, kv_cache, activations).");
    for (int r = 0; r < g.n_ranks; r++) {
        sb_printf(&b, "tessera_device_memory_bytes{rank=\"%d\",use=\"weights\"} %llu\n", r,
                  (unsigned long long)g.weight_bytes[r]);
        sb_printf(&b, "tessera_device_memory_bytes{rank=\"%d\",use=\"kv_cache\"} %llu\n", r,
                  (unsigned long long)g.kv_bytes[r]);
        sb_printf(&b, "tessera_device_memory_bytes{rank=\"%d\",use=\"activations\"} %llu\n", r,
                  (unsigned long long)g.activation_bytes[r]);
    }

    head(&b, "tessera_safety_decisions_total", "counter",
         "Safety classifier decisions by policy and outcome.");
    char labels[TS_METRICS_MAX_POLICIES][64];
    pthread_mutex_lock(&R.mu);
    const int np = R.n_policies;
    memcpy(labels, R.policies, sizeof labels);
    pthread_mutex_unlock(&R.mu);
    uint64_t other = 0;
    for (int o = 0; o < TS_SAFETY_OUTCOME_COUNT; o++)
        other += ld(&R.safety[TS_METRICS_MAX_POLICIES][o]);
    for (int p = 0; p <= np; p++) {
        if (p == np && other == 0) break;
        for (int o = 0; o < TS_SAFETY_OUTCOME_COUNT; o++)
            sb_printf(&b, "tessera_safety_decisions_total{policy=\"%s\",outcome=\"%s\"} %llu\n",
                      p == np ? "other" : labels[p], k_outcome_names[o],
                      (unsigned long long)ld(&R.safety[p == np ? TS_METRICS_MAX_POLICIES : p][o]));
    }
    head(&b, "tessera_config_reloads_total", "counter", "SIGHUP reloads by result.");
    sb_printf(&b, "tessera_config_reloads_total{result=\"ok\"} %llu\n",
              (unsigned long long)ld(&R.reloads_ok));
    sb_printf(&b, "tessera_config_reloads_total{result=\"error\"} %llu\n",
              (unsigned long long)ld(&R.reloads_err));

    if (b.oom) {
        ts_free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

/* ---- the HTTP endpoint ---- */

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned code, const char *text) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)(uintptr_t)text, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/plain; charset=utf-8");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)cls;
    (void)version;
    (void)upload_data;
    if (!*con_cls) { /* first call: headers only; answer on the next one */
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a body: ignore it (GET /metrics has none) */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0) return answer(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    size_t len = 0;
    char *text = ts_metrics_render(&len);
    if (!text) return answer(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, text, ts_free);
    if (!r) {
        ts_free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    TS_LOG_WARN("metrics endpoint: %s", msg);
}

ts_status ts_metrics_start(const char *listen, ts_metrics_gauge_fn gauges, void *ctx,
                           int *port_out) {
    init();
    if (R.mhd) return TS_FAIL(TS_INVAL, "the metrics endpoint is already running");
    char host[256], port[16];
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || !colon[1] || strlen(colon + 1) >= sizeof port ||
        (size_t)(colon - listen) >= sizeof host)
        return TS_FAIL(TS_INVAL, "metrics address '%s': expected HOST:PORT", listen ? listen : "");
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    snprintf(port, sizeof port, "%s", colon + 1);
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9') return TS_FAIL(TS_INVAL, "metrics address '%s': bad port", listen);
    if (atoi(port) > 65535) return TS_FAIL(TS_INVAL, "metrics address '%s': bad port", listen);
    /* "[::1]" -> "::1"; "" or "*" -> any address */
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int e = getaddrinfo(h[0] && strcmp(h, "*") ? h : NULL, port, &hints, &ai);
    if (e || !ai)
        return TS_FAIL(TS_INVAL, "metrics address '%s': %s", listen, e ? gai_strerror(e) : "none");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    R.gauge_fn = gauges;
    R.gauge_ctx = ctx;
    R.mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER,
                             mhd_log, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!R.mhd) return TS_FAIL(TS_SYSTEM, "metrics endpoint: cannot listen on %s", listen);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(R.mhd, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = di ? (int)di->port : atoi(port);
    return TS_OK;
}

void ts_metrics_stop(void) {
    if (!R.mhd) return;
    MHD_stop_daemon(R.mhd);
    R.mhd = NULL;
    R.gauge_fn = NULL;
}
