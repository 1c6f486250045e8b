/* cmd_loadgen.c: `tessera loadgen`: a load generator for tesserad (gRPC GenerateStream).
 *
 *   tessera loadgen --server HOST:PORT [--conc 1,8,32,64,256] [-n TOKENS] [--requests R]
 *                   [-p TEXT] [--temp T] [--api-key KEY] [--tls-ca FILE] [--json]
 *
 * For each concurrency C in the list, C client threads (each with its own channel) run R
 * streaming requests one after the other, each generating exactly TOKENS tokens (EOS
 * ignored; greedy unless --temp). Every prompt differs from the others in its last words.
 * Reported per C: requests, errors, generated tokens per second (all streams together,
 * over the phase's wall time), requests per second, time to first token and inter-token
 * latency (p50 / p90 / p99, ms). A token's inter-token latency is the gap since the
 * previous delta of its stream divided over the delta's tokens. Figures depend on the
 * machine and the server's settings: docs/benchmarks.md records how they were made.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "commands.h"
#include "tessera/v1/inference.pb-c.h"

#define SVC "/tessera.v1.Inference/"
#define MAX_CONC 1024
#define MAX_LEVELS 16

typedef struct {
    const char *server, *prompt, *api_key, *tls_ca;
    int32_t levels[MAX_LEVELS];
    int n_levels;
    int32_t n_tokens, requests;
    float temp;
    bool has_temp, json;
    int64_t timeout_ms;
} lg_opts;

typedef struct {
    const lg_opts *o;
    char *ca_pem;
    int thread;
    /* results (owned by this thread until joined) */
    double *ttft_ms;   /* (requests) */
    double *itl_ms;    /* (requests * n_tokens) */
    size_t n_ttft, n_itl;
    uint64_t tokens;
    int32_t errors;
    char first_error[256];
} lg_worker;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void usage(FILE *f) {
    fputs("usage: tessera loadgen --server HOST:PORT [options]\n"
          "  --conc LIST        concurrent streams, comma-separated (default 1,8,32,64,256)\n"
          "  -n, --tokens N     tokens generated per request (default 64; EOS ignored)\n"
          "  --requests R       requests per stream, one after the other (default 2)\n"
          "  -p, --prompt TEXT  prompt (default: a short English sentence); each request\n"
          "                     appends its own number\n"
          "  --temp T           temperature (default 0: greedy)\n"
          "  --api-key KEY      bearer token (or TESSERA_API_KEY)\n"
          "  --tls-ca FILE      trust these CA certificates (TLS)\n"
          "  --timeout-ms MS    deadline of each request (default 600000)\n"
          "  --json             one JSON object per concurrency level\n",
          f);
}

static int parse_int(const char *s, int32_t lo, int32_t hi, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int32_t)v;
    return 0;
}

static int parse_levels(const char *s, lg_opts *o) {
    o->n_levels = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_levels == MAX_LEVELS) return -1;
        if (parse_int(t, 1, MAX_CONC, &o->levels[o->n_levels])) return -1;
        o->n_levels++;
    }
    return o->n_levels ? 0 : -1;
}

static int parse(int argc, char **argv, lg_opts *o) {
    *o = (lg_opts){.prompt = "The history of the printing press begins", .n_tokens = 64,
                   .requests = 2, .timeout_ms = 600000};
    parse_levels("1,8,32,64,256", o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tessera loadgen: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int32_t x;
        if (!strcmp(a, "--server")) {
            o->server = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--api-key")) {
            o->api_key = v;
        } else if (!strcmp(a, "--tls-ca")) {
            o->tls_ca = v;
        } else if (!strcmp(a, "--conc")) {
            if (parse_levels(v, o)) {
                fprintf(stderr, "tessera loadgen: --conc expects up to %d comma-separated "
                        "integers in [1, %d], not '%s'\n", MAX_LEVELS, MAX_CONC, v);
                return -1;
            }
        } else if (!strcmp(a, "-n") || !strcmp(a, "--tokens")) {
            if (parse_int(v, 1, 1 << 20, &o->n_tokens)) {
                fprintf(stderr, "tessera loadgen: %s expects an integer in [1, 1048576]\n", a);
                return -1;
            }
        } else if (!strcmp(a, "--requests")) {
            if (parse_int(v, 1, 100000, &o->requests)) {
                fprintf(stderr, "tessera loadgen: --requests expects an integer in [1, 100000]\n");
                return -1;
            }
        } else if (!strcmp(a, "--timeout-ms")) {
            if (parse_int(v, 1, INT32_MAX, &x)) {
                fprintf(stderr, "tessera loadgen: --timeout-ms expects a positive integer\n");
                return -1;
            }
            o->timeout_ms = x;
        } else if (!strcmp(a, "--temp")) {
            char *end;
            double t = strtod(v, &end);
            if (end == v || *end || !(t >= 0 && t <= 100)) {
                fprintf(stderr, "tessera loadgen: --temp expects a number in [0, 100]\n");
                return -1;
            }
            o->temp = (float)t;
            o->has_temp = true;
        } else {
            fprintf(stderr, "tessera loadgen: unknown option %s\n", a);
            return -1;
        }
    }
    if (!o->server) {
        fprintf(stderr, "tessera loadgen: --server HOST:PORT is required\n");
        return -1;
    }
    if (!o->api_key) o->api_key = getenv("TESSERA_API_KEY");
    return 0;
}

static void note_error(lg_worker *w, const char *what) {
    if (!w->errors++) snprintf(w->first_error, sizeof w->first_error, "%s", what);
}

/* One streaming request; appends its TTFT and inter-token gaps. */
static void one_request(lg_worker *w, ts_rpc_client *cl, int k) {
    const lg_opts *o = w->o;
    char prompt[4096];
    snprintf(prompt, sizeof prompt, "%s (stream %d, request %d)", o->prompt, w->thread, k);
    Tessera__V1__GenerateRequest req = TESSERA__V1__GENERATE_REQUEST__INIT;
    Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
    sp._temperature_case = TESSERA__V1__SAMPLING_PARAMS___TEMPERATURE_TEMPERATURE;
    sp.temperature = o->has_temp ? o->temp : 0.0f;
    sp.max_tokens = (uint32_t)o->n_tokens;
    sp.ignore_eos = true;
    req.sampling = &sp;
    req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_PROMPT;
    req.prompt = prompt;
    req.return_token_ids = true;
    const double t0 = now_ms();
    double last = t0;
    bool first = true;
    uint64_t got = 0;
    ts_rpc_stream *s = ts_rpc_stream_start(cl, SVC "GenerateStream", &req.base, o->timeout_ms);
    if (!s) {
        note_error(w, "cannot start the stream");
        return;
    }
    ProtobufCMessage *msg;
    int r;
    while ((r = ts_rpc_stream_next(s, &tessera__v1__generate_stream_response__descriptor, &msg)) == 1) {
        Tessera__V1__GenerateStreamResponse *m = (Tessera__V1__GenerateStreamResponse *)msg;
        if (m->event_case == TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_DELTA &&
            m->delta->n_token_ids > 0) {
            const double t = now_ms();
            size_t n = m->delta->n_token_ids;
            if (first) {
                w->ttft_ms[w->n_ttft++] = t - t0;
                first = false;
                n--; /* the first token's latency is the TTFT */
            }
            const size_t cap = (size_t)o->requests * (size_t)o->n_tokens;
            for (size_t i = 0; i < n && w->n_itl < cap; i++)
                w->itl_ms[w->n_itl++] = (t - last) / (double)n;
            last = t;
            got += m->delta->n_token_ids;
        }
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    ts_rpc_result res = {0};
    grpc_status_code st = ts_rpc_stream_finish(s, &res);
    if (r < 0 || st != GRPC_STATUS_OK) {
        char e[256];
        snprintf(e, sizeof e, "%s (code %d)", r < 0 ? "undecodable message" :
                 res.details ? res.details : "stream failed", (int)st);
        note_error(w, e);
    }
    ts_rpc_result_free(&res);
    w->tokens += got;
}

static void *worker_main(void *arg) {
    lg_worker *w = arg;
    ts_rpc_client *cl = ts_rpc_client_open_ex(w->o->server, w->ca_pem, w->o->api_key);
    if (!cl) {
        for (int k = 0; k < w->o->requests; k++) note_error(w, "cannot open a channel");
        return NULL;
    }
    for (int k = 0; k < w->o->requests; k++) one_request(w, cl, k);
    ts_rpc_client_close(cl);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array (0 when empty). */
static double pct(const double *v, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (i < 1) i = 1;
    if (i > n) i = n;
    return v[i - 1];
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tessera loadgen: --tls-ca %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0, got;
    char *b = malloc(cap);
    while (b && (got = fread(b + n, 1, cap - 1 - n, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *q = cap < (16u << 20) ? realloc(b, cap *= 2) : NULL;
            if (!q) free(b);
            b = q;
        }
    }
    fclose(f);
    if (!b) {
        fprintf(stderr, "tessera loadgen: --tls-ca %s: too large or out of memory\n", path);
        return NULL;
    }
    b[n] = '\0';
    return b;
}

/* One concurrency level. Returns 0, or 1 when nothing could be measured. */
static int run_level(const lg_opts *o, char *ca, int32_t conc) {
    lg_worker *ws = calloc((size_t)conc, sizeof *ws);
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    const size_t per_itl = (size_t)o->requests * (size_t)o->n_tokens;
    int rc = 1;
    if (!ws || !th) goto out;
    for (int32_t i = 0; i < conc; i++) {
        ws[i] = (lg_worker){.o = o, .ca_pem = ca, .thread = i};
        ws[i].ttft_ms = malloc((size_t)o->requests * sizeof(double));
        ws[i].itl_ms = malloc(per_itl * sizeof(double));
        if (!ws[i].ttft_ms || !ws[i].itl_ms) goto out;
    }
    const double t0 = now_ms();
    int32_t started = 0;
    for (; started < conc; started++)
        if (pthread_create(&th[started], NULL, worker_main, &ws[started]) != 0) break;
    for (int32_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    const double wall_s = (now_ms() - t0) / 1e3;
    if (started < conc)
        fprintf(stderr, "tessera loadgen: could start only %d of %d threads\n", started, conc);

    size_t n_ttft = 0, n_itl = 0;
    uint64_t tokens = 0;
    int64_t errors = (int64_t)(conc - started) * o->requests;
    const char *first_error = NULL;
    for (int32_t i = 0; i < started; i++) {
        n_ttft += ws[i].n_ttft;
        n_itl += ws[i].n_itl;
        tokens += ws[i].tokens;
        errors += ws[i].errors;
        if (ws[i].errors && !first_error) first_error = ws[i].first_error;
    }
    double *ttft = malloc((n_ttft ? n_ttft : 1) * sizeof(double));
    double *itl = malloc((n_itl ? n_itl : 1) * sizeof(double));
    if (!ttft || !itl) {
        free(ttft);
        free(itl);
        goto out;
    }
    n_ttft = n_itl = 0;
    for (int32_t i = 0; i < started; i++) {
        memcpy(ttft + n_ttft, ws[i].ttft_ms, ws[i].n_ttft * sizeof(double));
        n_ttft += ws[i].n_ttft;
        memcpy(itl + n_itl, ws[i].itl_ms, ws[i].n_itl * sizeof(double));
        n_itl += ws[i].n_itl;
    }
    qsort(ttft, n_ttft, sizeof(double), cmp_double);
    qsort(itl, n_itl, sizeof(double), cmp_double);
    const int64_t reqs = (int64_t)conc * o->requests;
    const double tps = wall_s > 0 ? (double)tokens / wall_s : 0;
    const double rps = wall_s > 0 ? (double)(reqs - errors) / wall_s : 0;
    if (o->json) {
        printf("{\"concurrency\":%d,\"requests\":%" PRId64 ",\"errors\":%" PRId64
               ",\"tokens\":%" PRIu64 ",\"wall_s\":%.3f,\"tokens_per_s\":%.2f,"
               "\"requests_per_s\":%.3f,\"ttft_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f},"
               "\"itl_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f}}\n",
               conc, reqs, errors, tokens, wall_s, tps, rps, pct(ttft, n_ttft, 50),
               pct(ttft, n_ttft, 90), pct(ttft, n_ttft, 99), pct(itl, n_itl, 50),
               pct(itl, n_itl, 90), pct(itl, n_itl, 99));
    } else {
        printf("%5d %8" PRId64 " %6" PRId64 " %9.1f %7.2f   %8.1f %8.1f %8.1f   %7.2f %7.2f %7.2f\n",
               conc, reqs, errors, tps, rps, pct(ttft, n_ttft, 50), pct(ttft, n_ttft, 90),
               pct(ttft, n_ttft, 99), pct(itl, n_itl, 50), pct(itl, n_itl, 90),
               pct(itl, n_itl, 99));
    }
    fflush(stdout);
    if (first_error) fprintf(stderr, "tessera loadgen: %d streams: first error: %s\n", conc,
                             first_error);
    free(ttft);
    free(itl);
    rc = tokens > 0 && errors == 0 ? 0 : 1;
out:
    if (ws)
        for (int32_t i = 0; i < conc; i++) {
            free(ws[i].ttft_ms);
            free(ws[i].itl_ms);
        }
    free(ws);
    free(th);
    if (rc && !ws) fprintf(stderr, "tessera loadgen: out of memory\n");
    return rc;
}

int ts_cmd_loadgen(int argc, char **argv) {
    lg_opts o;
    int pr = parse(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;
    char *ca = NULL;
    if (o.tls_ca && !(ca = read_file(o.tls_ca))) return 1;
    if (!o.json)
        printf("# tessera loadgen: %s, %d tokens per request, %d requests per stream, %s\n"
               "# conc requests errors     tok/s   req/s   ttft p50      p90      p99 ms"
               "   itl p50     p90     p99 ms\n",
               o.server, o.n_tokens, o.requests, o.has_temp && o.temp > 0 ? "sampled" : "greedy");
    int rc = 0;
    for (int i = 0; i < o.n_levels; i++)
        if (run_level(&o, ca, o.levels[i])) rc = 1;
    free(ca);
    return rc;
}
