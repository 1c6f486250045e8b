/* cmd_client.c: client commands of `tessera` that talk to a tesserad over gRPC.
 *
 *   tessera generate --server HOST:PORT (-p TEXT | --tokens ID,ID,...) [--stream] [--json]
 *                    [-n N] [sampling flags as in `run`] [--ignore-eos] [--timeout MS]
 *   tessera chat     --server HOST:PORT -p TEXT [--system TEXT] [--json] [...]
 *   (generate and chat: --json-schema FILE constrains the reply to JSON valid for the schema)
 *   tessera health   --server HOST:PORT [--service NAME]
 *   tessera info     --server HOST:PORT [--json]
 * Every command also takes --tls-ca FILE (TLS, trusting the CA certificates in FILE) and
 * --api-key KEY (sent as `authorization: Bearer KEY`; or the TESSERA_API_KEY variable).
 *
 * Exit codes: 0 success, 1 the server answered an error (printed as CODE: message),
 * 2 usage error. Built only with TESSERA_RPC (TS_HAVE_RPC).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "commands.h"
#include "grpc/health/v1/health.pb-c.h"
#include "tessera/v1/inference.pb-c.h"

#define SVC "/tessera.v1.Inference/"
#define MAX_STOPS 16
#define MAX_IDS 65536

static const char *code_name(grpc_status_code c) {
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};
    return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "?";
}

static const char *finish_name(int r) {
    switch (r) {
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP: return "stop";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP_SEQUENCE: return "stop_sequence";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_LENGTH: return "length";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CONTEXT_LENGTH: return "context_length";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_SAFETY: return "safety";
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
    }
}

static int report(const char *cmd, const ts_rpc_result *r) {
    fprintf(stderr, "tessera %s: %s: %s", cmd, code_name(r->code), r->details ? r->details : "");
    if (r->retry_pushback_ms) fprintf(stderr, " (retry after %s ms)", r->retry_pushback_ms);
    fputc('\n', stderr);
    return 1;
}

typedef struct {
    const char *cmd, *server, *prompt, *system, *tokens, *service, *tls_ca, *api_key, *json_schema;
    bool stream, json, ignore_eos, chat;
    long long timeout_ms;
    Tessera__V1__SamplingParams sp;
    char *stops[MAX_STOPS];
} cli_opts;

static void usage(const char *cmd, FILE *f) {
    if (!strcmp(cmd, "health") || !strcmp(cmd, "info")) {
        fprintf(f, "usage: tessera %s --server HOST:PORT [--timeout MS] [--tls-ca FILE] [--api-key KEY]%s\n", cmd,
                !strcmp(cmd, "health") ? " [--service NAME]" : " [--json]");
        return;
    }
    fprintf(f,
            "usage: tessera %s --server HOST:PORT %s [options]\n\n"
            "  --server HOST:PORT       the tesserad to ask\n"
            "  -p, --prompt TEXT        %s\n"
            "%s"
            "  -n, --max-tokens N       new tokens at most (0 = server default)\n"
            "  --temp T, --top-k K, --top-p P, --min-p P, --repeat-penalty R,\n"
            "  --presence-penalty X, --frequency-penalty X, --seed S   sampling (server defaults\n"
            "                           when not given: temperature 1, top-k 64, top-p 0.95)\n"
            "  --stop STR               stop string (repeatable, up to %d)\n"
            "  --json-schema FILE       structured output: the reply is JSON valid for the JSON\n"
            "                           Schema in FILE (docs/structured-output.md)\n"
            "  --ignore-eos             do not stop at end-of-turn (benchmarks)\n"
            "  --timeout MS             deadline of the call\n"
            "  --json                   print one JSON object at the end\n"
            "  --tls-ca FILE            use TLS, trusting the CA certificate(s) in FILE (PEM)\n"
            "  --api-key KEY            API key (sent as `authorization: Bearer KEY`; default:\n"
            "                           $TESSERA_API_KEY)\n",
            cmd, !strcmp(cmd, "chat") ? "-p TEXT" : "(-p TEXT | --tokens IDS)",
            !strcmp(cmd, "chat") ? "the user message (the chat template is applied by the server)"
                                 : "raw prompt text",
            !strcmp(cmd, "chat") ? "  --system TEXT            system message\n"
                                 : "  --tokens ID,ID,...       pre-tokenized prompt\n"
                                   "  --stream                 print the text as it arrives\n",
            MAX_STOPS);
}

static int num(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "tessera %s: %s expects a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* 0 ok, 1 help printed, -1 usage error */
static int parse(int argc, char **argv, cli_opts *o) {
    const char *cmd = o->cmd;
    tessera__v1__sampling_params__init(&o->sp);
    o->sp.stop = o->stops;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(cmd, stdout);
            return 1;
        }
        if (!strcmp(a, "--stream")) { o->stream = true; continue; }
        if (!strcmp(a, "--json")) { o->json = true; continue; }
        if (!strcmp(a, "--ignore-eos")) { o->sp.ignore_eos = true; continue; }
        if (i + 1 >= argc || a[0] != '-') {
            fprintf(stderr, "tessera %s: unknown option or missing value: '%s'\n", cmd, a);
            return -1;
        }
        const char *v = argv[++i];
        double x;
        if (!strcmp(a, "--server")) o->server = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "--tokens")) o->tokens = v;
        else if (!strcmp(a, "--service")) o->service = v;
        else if (!strcmp(a, "--tls-ca")) o->tls_ca = v;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--json-schema")) o->json_schema = v;
        else if (!strcmp(a, "--timeout")) {
            if (num(cmd, a, v, 1, 1e9, &x)) return -1;
            o->timeout_ms = (long long)x;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (num(cmd, a, v, 0, 1 << 24, &x)) return -1;
            o->sp.max_tokens = (uint32_t)x;
        } else if (!strcmp(a, "--temp")) {
            if (num(cmd, a, v, -1e30, 1e30, &x)) return -1;
            o->sp._temperature_case = TESSERA__V1__SAMPLING_PARAMS___TEMPERATURE_TEMPERATURE;
            o->sp.temperature = (float)x;
        } else if (!strcmp(a, "--top-k")) {
            if (num(cmd, a, v, 0, 4294967295.0, &x)) return -1;
            o->sp._top_k_case = TESSERA__V1__SAMPLING_PARAMS___TOP_K_TOP_K;
            o->sp.top_k = (uint32_t)x;
        } else if (!strcmp(a, "--top-p")) {
            if (num(cmd, a, v, -1e30, 1e30, &x)) return -1;
            o->sp._top_p_case = TESSERA__V1__SAMPLING_PARAMS___TOP_P_TOP_P;
            o->sp.top_p = (float)x;
        } else if (!strcmp(a, "--min-p")) {
            if (num(cmd, a, v, -1e30, 1e30, &x)) return -1;
            o->sp._min_p_case = TESSERA__V1__SAMPLING_PARAMS___MIN_P_MIN_P;
            o->sp.min_p = (float)x;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (num(cmd, a, v, -1e30, 1e30, &x)) return -1;
            o->sp._repetition_penalty_case =
                TESSERA__V1__SAMPLING_PARAMS___REPETITION_PENALTY_REPETITION_PENALTY;
            o->sp.repetition_penalty = (float)x;
        } else if (!strcmp(a, "--presence-penalty")) {
            if (num(cmd, a, v, -1e30, 1e30, &x)) return -1;
            o->sp.presence_penalty = (float)x;
        } else if (!strcmp(a, "--frequency-penalty")) {
            if (num(cmd, a, v, -1e30, 1e30, &x)) return -1;
            o->sp.frequency_penalty = (float)x;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || end == v || v[0] == '-') {
                fprintf(stderr, "tessera %s: --seed expects a non-negative integer\n", cmd);
                return -1;
            }
            o->sp._seed_case = TESSERA__V1__SAMPLING_PARAMS___SEED_SEED;
            o->sp.seed = s;
        } else if (!strcmp(a, "--stop")) {
            if (o->sp.n_stop == MAX_STOPS) {
                fprintf(stderr, "tessera %s: at most %d --stop strings\n", cmd, MAX_STOPS);
                return -1;
            }
            o->stops[o->sp.n_stop++] = (char *)v;
        } else {
            fprintf(stderr, "tessera %s: unknown option '%s'\n", cmd, a);
            return -1;
        }
    }
    if (!o->server) {
        fprintf(stderr, "tessera %s: --server HOST:PORT is required\n", cmd);
        return -1;
    }
    if (!o->api_key) o->api_key = getenv("TESSERA_API_KEY");
    return 0;
}

/* The channel, with TLS (--tls-ca) and the API key (--api-key) when given. */
static ts_rpc_client *open_client(const cli_opts *o) {
    char *ca = NULL;
    if (o->tls_ca) {
        FILE *f = fopen(o->tls_ca, "rb");
        if (!f) {
            fprintf(stderr, "tessera %s: --tls-ca %s: %s\n", o->cmd, o->tls_ca, strerror(errno));
            return NULL;
        }
        size_t cap = 1 << 16, n = 0, got;
        ca = malloc(cap);
        while (ca && (got = fread(ca + n, 1, cap - 1 - n, f)) > 0) {
            n += got;
            if (n + 1 == cap) {
                char *q = cap < (16u << 20) ? realloc(ca, cap *= 2) : NULL;
                if (!q) free(ca);
                ca = q;
            }
        }
        fclose(f);
        if (!ca) {
            fprintf(stderr, "tessera %s: --tls-ca %s: too large\n", o->cmd, o->tls_ca);
            return NULL;
        }
        ca[n] = '\0';
    }
    ts_rpc_client *cl = ts_rpc_client_open_ex(o->server, ca, o->api_key);
    free(ca);
    if (!cl) fprintf(stderr, "tessera %s: cannot create a channel to %s\n", o->cmd, o->server);
    return cl;
}

static int parse_ids(const char *s, uint32_t **out, size_t *n) {
    size_t cap = 16;
    uint32_t *ids = malloc(cap * sizeof *ids);
    *n = 0;
    while (ids && *s) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || v > UINT32_MAX || *n == MAX_IDS) break;
        if (*n == cap) {
            uint32_t *q = realloc(ids, (cap *= 2) * sizeof *ids);
            if (!q) break;
            ids = q;
        }
        ids[(*n)++] = (uint32_t)v;
        s = end;
        if (*s == ',' || *s == ' ') s++;
        else if (*s) break;
    }
    if (!ids || *s || *n == 0) {
        free(ids);
        return -1;
    }
    *out = ids;
    return 0;
}

static void print_json(const char *id, const char *text, size_t len, const uint32_t *ids, size_t n,
                       int finish, uint32_t pt, uint32_t ct, uint64_t seed, uint64_t ttft_us,
                       uint32_t cached) {
    json_t *o = json_object(), *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    json_object_set_new(o, "request_id", json_string(id ? id : ""));
    json_object_set_new(o, "text", json_stringn(text ? text : "", len));
    json_object_set_new(o, "ids", a);
    json_object_set_new(o, "finish_reason", json_string(finish_name(finish)));
    json_object_set_new(o, "prompt_tokens", json_integer(pt));
    json_object_set_new(o, "completion_tokens", json_integer(ct));
    json_object_set_new(o, "cached_prompt_tokens", json_integer(cached));
    json_object_set_new(o, "seed", json_integer((json_int_t)seed));
    json_object_set_new(o, "ttft_us", json_integer((json_int_t)ttft_us));
    json_dumpf(o, stdout, JSON_COMPACT);
    putchar('\n');
    json_decref(o);
}

static int do_generate(cli_opts *o) {
    const char *cmd = o->cmd;
    Tessera__V1__GenerateRequest req = TESSERA__V1__GENERATE_REQUEST__INIT;
    Tessera__V1__Chat chat = TESSERA__V1__CHAT__INIT;
    Tessera__V1__ChatMessage m_sys = TESSERA__V1__CHAT_MESSAGE__INIT, m_user = TESSERA__V1__CHAT_MESSAGE__INIT;
    Tessera__V1__ContentPart p_sys = TESSERA__V1__CONTENT_PART__INIT, p_user = TESSERA__V1__CONTENT_PART__INIT;
    Tessera__V1__ChatMessage *msgs[2];
    Tessera__V1__ContentPart *ps_sys[1] = {&p_sys}, *ps_user[1] = {&p_user};
    Tessera__V1__TokenIds tids = TESSERA__V1__TOKEN_IDS__INIT;
    uint32_t *ids = NULL;
    Tessera__V1__OutputConstraint con = TESSERA__V1__OUTPUT_CONSTRAINT__INIT;
    char *schema = NULL;
    req.sampling = &o->sp;
    req.return_token_ids = true;
    if (o->chat) {
        if (!o->prompt) {
            fprintf(stderr, "tessera chat: -p TEXT is required\n");
            return 2;
        }
        size_t n = 0;
        if (o->system) {
            p_sys.part_case = TESSERA__V1__CONTENT_PART__PART_TEXT;
            p_sys.text = (char *)o->system;
            m_sys.role = TESSERA__V1__ROLE__ROLE_SYSTEM;
            m_sys.n_parts = 1;
            m_sys.parts = ps_sys;
            msgs[n++] = &m_sys;
        }
        p_user.part_case = TESSERA__V1__CONTENT_PART__PART_TEXT;
        p_user.text = (char *)o->prompt;
        m_user.role = TESSERA__V1__ROLE__ROLE_USER;
        m_user.n_parts = 1;
        m_user.parts = ps_user;
        msgs[n++] = &m_user;
        chat.n_messages = n;
        chat.messages = msgs;
        chat.add_generation_prompt = true;
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT;
        req.chat = &chat;
        o->stream = true;
    } else if (o->tokens) {
        size_t n;
        if (parse_ids(o->tokens, &ids, &n)) {
            fprintf(stderr, "tessera %s: --tokens expects comma-separated token ids\n", cmd);
            return 2;
        }
        tids.ids = ids;
        tids.n_ids = n;
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS;
        req.tokens = &tids;
    } else if (o->prompt) {
        req.input_case = TESSERA__V1__GENERATE_REQUEST__INPUT_PROMPT;
        req.prompt = (char *)o->prompt;
    } else {
        fprintf(stderr, "tessera %s: -p TEXT or --tokens IDS is required\n", cmd);
        return 2;
    }
    if (o->json_schema) {
        FILE *f = fopen(o->json_schema, "rb");
        size_t n = 0;
        if (f) {
            schema = malloc((1u << 20) + 1);
            if (schema) n = fread(schema, 1, 1u << 20, f);
            if (schema && (ferror(f) || !feof(f) || fgetc(f) != EOF)) {
                free(schema);
                schema = NULL;
                errno = EFBIG;
            }
            fclose(f);
        }
        if (!schema) {
            fprintf(stderr, "tessera %s: --json-schema %s: %s\n", cmd, o->json_schema,
                    errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
            free(ids);
            return 2;
        }
        schema[n] = 0;
        con.kind_case = TESSERA__V1__OUTPUT_CONSTRAINT__KIND_JSON_SCHEMA;
        con.json_schema = schema;
        req.constraint = &con;
    }
    ts_rpc_client *cl = open_client(o);
    if (!cl) {
        free(ids);
        free(schema);
        return 1;
    }
    int ret = 0;
    ts_rpc_result res = {0};
    if (!o->stream) {
        ProtobufCMessage *resp;
        if (ts_rpc_unary(cl, SVC "Generate", &req.base, &tessera__v1__generate_response__descriptor,
                         o->timeout_ms, &resp, &res) != GRPC_STATUS_OK) {
            ret = report(cmd, &res);
        } else {
            Tessera__V1__GenerateResponse *r = (Tessera__V1__GenerateResponse *)resp;
            if (o->json)
                print_json(r->request_id, r->text, strlen(r->text), r->token_ids, r->n_token_ids,
                           r->finish_reason, r->usage ? r->usage->prompt_tokens : 0,
                           r->usage ? r->usage->completion_tokens : 0, r->seed,
                           r->timing ? r->timing->time_to_first_token_us : 0,
                           r->usage ? r->usage->cached_prompt_tokens : 0);
            else
                printf("%s\n", r->text);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    } else {
        ts_rpc_stream *s = ts_rpc_stream_start(cl, SVC "GenerateStream", &req.base, o->timeout_ms);
        char *text = NULL, *req_id = NULL;
        size_t tl = 0, nids = 0, cap = 0;
        uint32_t *all = NULL;
        int finish = 0;
        uint32_t pt = 0, ct = 0, cached = 0;
        uint64_t seed = 0, ttft = 0;
        ProtobufCMessage *msg;
        int k;
        while (s && (k = ts_rpc_stream_next(s, &tessera__v1__generate_stream_response__descriptor, &msg)) == 1) {
            Tessera__V1__GenerateStreamResponse *m = (Tessera__V1__GenerateStreamResponse *)msg;
            if (m->event_case == TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_STARTED) {
                free(req_id);
                req_id = strdup(m->started->request_id);
            } else if (m->event_case == TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_DELTA) {
                size_t dl = strlen(m->delta->text);
                if (o->json) {
                    char *q = realloc(text, tl + dl + 1);
                    if (q) {
                        text = q;
                        memcpy(text + tl, m->delta->text, dl + 1);
                        tl += dl;
                    }
                    if (nids + m->delta->n_token_ids > cap) {
                        size_t nc = (nids + m->delta->n_token_ids) * 2;
                        uint32_t *qa = realloc(all, nc * sizeof *all);
                        if (qa) {
                            all = qa;
                            cap = nc;
                        }
                    }
                    for (size_t i = 0; i < m->delta->n_token_ids && nids < cap; i++)
                        all[nids++] = m->delta->token_ids[i];
                } else {
                    fwrite(m->delta->text, 1, dl, stdout);
                    fflush(stdout);
                }
            } else if (m->event_case == TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_FINISHED) {
                finish = m->finished->finish_reason;
                seed = m->finished->seed;
                if (m->finished->usage) {
                    pt = m->finished->usage->prompt_tokens;
                    ct = m->finished->usage->completion_tokens;
                    cached = m->finished->usage->cached_prompt_tokens;
                }
                if (m->finished->timing) ttft = m->finished->timing->time_to_first_token_us;
            }
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        if (!s || ts_rpc_stream_finish(s, &res) != GRPC_STATUS_OK) {
            if (!o->json) putchar('\n');
            ret = s ? report(cmd, &res) : 1;
        } else if (o->json) {
            print_json(req_id, text, tl, all, nids, finish, pt, ct, seed, ttft, cached);
        } else {
            putchar('\n');
        }
        free(text);
        free(all);
        free(req_id);
    }
    ts_rpc_result_free(&res);
    ts_rpc_client_close(cl);
    free(ids);
    free(schema);
    return ret;
}

int ts_cmd_generate(int argc, char **argv) {
    cli_opts o = {.cmd = "generate"};
    int pr = parse(argc, argv, &o);
    return pr > 0 ? 0 : pr < 0 ? 2 : do_generate(&o);
}

int ts_cmd_chat(int argc, char **argv) {
    cli_opts o = {.cmd = "chat", .chat = true};
    int pr = parse(argc, argv, &o);
    return pr > 0 ? 0 : pr < 0 ? 2 : do_generate(&o);
}

int ts_cmd_health(int argc, char **argv) {
    cli_opts o = {.cmd = "health"};
    int pr = parse(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;
    ts_rpc_client *cl = open_client(&o);
    if (!cl) return 1;
    Grpc__Health__V1__HealthCheckRequest q = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    q.service = (char *)(o.service ? o.service : "");
    ProtobufCMessage *resp;
    ts_rpc_result res = {0};
    int ret;
    if (ts_rpc_unary(cl, "/grpc.health.v1.Health/Check", &q.base,
                     &grpc__health__v1__health_check_response__descriptor,
                     o.timeout_ms ? o.timeout_ms : 5000, &resp, &res) != GRPC_STATUS_OK) {
        ret = report("health", &res);
    } else {
        int st = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        printf("%s\n", st == 1 ? "SERVING" : st == 2 ? "NOT_SERVING" : "UNKNOWN");
        ret = st == 1 ? 0 : 1;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    ts_rpc_result_free(&res);
    ts_rpc_client_close(cl);
    return ret;
}

int ts_cmd_info(int argc, char **argv) {
    cli_opts o = {.cmd = "info"};
    int pr = parse(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;
    ts_rpc_client *cl = open_client(&o);
    if (!cl) return 1;
    int ret = 1;
    Tessera__V1__GetModelInfoRequest mq = TESSERA__V1__GET_MODEL_INFO_REQUEST__INIT;
    Tessera__V1__GetClusterInfoRequest cq = TESSERA__V1__GET_CLUSTER_INFO_REQUEST__INIT;
    ProtobufCMessage *m1 = NULL, *m2 = NULL;
    ts_rpc_result res = {0};
    long long to = o.timeout_ms ? o.timeout_ms : 10000;
    if (ts_rpc_unary(cl, SVC "GetModelInfo", &mq.base, &tessera__v1__model_info__descriptor, to, &m1,
                     &res) != GRPC_STATUS_OK) {
        report("info", &res);
    } else {
        ts_rpc_result_free(&res);
        if (ts_rpc_unary(cl, SVC "GetClusterInfo", &cq.base, &tessera__v1__cluster_info__descriptor,
                         to, &m2, &res) != GRPC_STATUS_OK) {
            report("info", &res);
        } else {
            Tessera__V1__ModelInfo *mi = (Tessera__V1__ModelInfo *)m1;
            Tessera__V1__ClusterInfo *ci = (Tessera__V1__ClusterInfo *)m2;
            if (o.json) {
                /* Jansson escapes the strings (a plan has newlines, a name may have quotes) */
                json_t *j = json_pack(
                    "{s:{s:s, s:s, s:i, s:i, s:b, s:b}, s:{s:s, s:i, s:i, s:i, s:i, s:i, s:i, "
                    "s:I, s:I, s:i, s:I, s:I, s:I, s:I, s:I, s:s}}",
                    "model", "name", mi->name, "version", mi->version,
                    "context_length", (int)mi->context_length, "vocab_size", (int)mi->vocab_size,
                    "supports_images", (int)mi->supports_images, "ready", (int)mi->ready,
                    "cluster", "plan", ci->plan, "tensor_parallel", (int)ci->tensor_parallel,
                    "pipeline_parallel", (int)ci->pipeline_parallel, "slots", (int)ci->slots,
                    "max_batch", (int)ci->max_batch, "active_requests", (int)ci->active_requests,
                    "queued_requests", (int)ci->queued_requests,
                    "kv_pages_total", (json_int_t)ci->kv_pages_total,
                    "kv_pages_used", (json_int_t)ci->kv_pages_used,
                    "kv_page_size", (int)ci->kv_page_size,
                    "requests_completed", (json_int_t)ci->requests_completed,
                    "requests_cancelled", (json_int_t)ci->requests_cancelled,
                    "requests_rejected", (json_int_t)ci->requests_rejected,
                    "prefix_cache_tokens", (json_int_t)ci->prefix_cache_tokens,
                    "prefix_cache_hit_tokens", (json_int_t)ci->prefix_cache_hit_tokens,
                    "version", ci->version);
                char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
                if (txt) {
                    puts(txt);
                    ret = 0;
                } else {
                    fprintf(stderr, "tessera info: cannot format the reply as JSON\n");
                    ret = 1;
                }
                free(txt);
                json_decref(j);
            } else {
                printf("model       %s (context %u, vocab %u%s)\n", mi->name, mi->context_length,
                       mi->vocab_size, mi->ready ? "" : ", not ready");
                printf("plan        %s\n", ci->plan);
                printf("slots       %u (batch %u tokens per step)\n", ci->slots, ci->max_batch);
                printf("requests    %u active, %u queued; %" PRIu64 " completed, %" PRIu64
                       " cancelled, %" PRIu64 " rejected\n",
                       ci->active_requests, ci->queued_requests, ci->requests_completed,
                       ci->requests_cancelled, ci->requests_rejected);
                printf("kv cache    %" PRIu64 " / %" PRIu64 " pages used (%u tokens each)\n",
                       ci->kv_pages_used, ci->kv_pages_total, ci->kv_page_size);
                printf("prefix cache %" PRIu64 " tokens cached, %" PRIu64 " prompt tokens served\n",
                       ci->prefix_cache_tokens, ci->prefix_cache_hit_tokens);
                printf("version     tesserad %s\n", ci->version);
                ret = 0;
            }
        }
    }
    if (m1) protobuf_c_message_free_unpacked(m1, NULL);
    if (m2) protobuf_c_message_free_unpacked(m2, NULL);
    ts_rpc_result_free(&res);
    ts_rpc_client_close(cl);
    return ret;
}
