/* tesserad.c: the tessera inference daemon (one rank, CPU engine) serving tessera.v1.Inference
 * and grpc.health.v1.Health over gRPC (rpc/, gRPC core C API).
 *
 *   tesserad [--config FILE] -m MODEL --listen HOST:PORT [--ctx N] [--slots N] [--batch N]
 *            [--threads N] [--queue N] [--max-tokens-default N] [--grace-seconds N]
 *            [--max-recv-mb N] [--cq-threads N] [--log-level L] [--api-keys FILE]
 *            [--tls-cert FILE --tls-key FILE] [--metrics HOST:PORT] [--log-format text|json]
 *
 * Every option can also be set in the --config file (libconfig syntax, same names without
 * the dashes in front: `slots = 4;`); flags override the file. See
 * deploy/tesserad.conf.example.
 *
 * Threads: main (sigwait for SIGINT/SIGTERM/SIGUSR1; SIGHUP/SIGUSR2 reload the API keys), the scheduler
 * (owns the engine), and the
 * completion-queue threads (decode requests, tokenize, validate, queue). See
 * docs/daemon.md for the API, status codes and the request lifecycle.
 */
#include <errno.h>
#include <stddef.h>
#include <strings.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <libconfig.h>

#include "alloc.h"
#include "apikeys.h"
#include "chat.h"
#include "image.h"
#include "vision.h"
#include "log.h"
#include "safety.h"
#include "safety_policy.h"
#include "shieldgemma.h"
#include "metrics.h"
#include "sched.h"
#include "server.h"
#include "tools.h"
#include "tessera/v1/inference.pb-c.h"
#include "dist.h"
#include "transport.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "0.1.0"
#endif

#define SERVICE "tessera.v1.Inference"
#define MAX_SEND_QUEUE 4096 /* messages queued for a client that does not read */

static ts_sched *g_sched;
static char g_model_name[128];
/* The main model's vision tower (--vision): NULL = text-only. Encoding is serialized. */
static ts_vision *g_vision;
static pthread_mutex_t g_vision_mu = PTHREAD_MUTEX_INITIALIZER;
static ts_mm_ids g_mm_ids = {-1, -1, -1};
#define MAX_IMAGES 16 /* per request */
static atomic_uint_fast64_t g_req_counter;

typedef struct {
    int32_t n_ctx, slots, batch, threads, queue, max_tokens_default, grace_s, max_recv_mb, cq_threads;
    int32_t tp, pp, device;
    const char *backend, *gpu_mem_limit;
    uint64_t mem_limit; /* parsed gpu_mem_limit (0: none) */
    int32_t prefix_cache_tokens;
    int32_t safety_fail_open;
    const char *model, *listen, *api_keys, *tls_cert, *tls_key, *log_level, *config;
    const char *safety_model, *safety_vision, *safety_ids; /* ShieldGemma 2 (docs/vision.md) */
    const char *safety_thresholds;                         /* the gate (docs/daemon.md) */
    const char *safety_rank;                               /* auto, N or none */
    int32_t safety_timeout;                                /* seconds (a safety rank) */
    const char *vision, *vision_ids; /* the main model's vision tower (docs/vision.md) */
    const char *metrics, *log_format;
} opts;

/* ------------------------------------------------------------------- auth */

/* API keys (--api-keys): NULL table = auth off. Swapped whole on SIGHUP. */
static pthread_rwlock_t g_keys_mu = PTHREAD_RWLOCK_INITIALIZER;
static ts_apikeys *g_keys;
static bool g_auth_on;
static const char *g_keys_path;
/* the tenant of the call being handled on this CQ thread (set by authed()) */
static _Thread_local char t_tenant[TS_TENANT_MAX];

/* Reloads the key file; on error keeps the keys in use. */
static void keys_reload(void) {
    char err[512];
    ts_apikeys *k = ts_apikeys_load(g_keys_path, err, sizeof err);
    if (!k) {
        TS_LOG_ERROR("SIGHUP: %s; keeping the keys in use", err);
        ts_metrics_reload(false);
        return;
    }
    ts_metrics_reload(true);
    pthread_rwlock_wrlock(&g_keys_mu);
    ts_apikeys *old = g_keys;
    g_keys = k;
    pthread_rwlock_unlock(&g_keys_mu);
    ts_apikeys_free(old);
    TS_LOG_INFO("SIGHUP: reloaded %s: %zu keys", g_keys_path, ts_apikeys_count(k));
}

typedef struct {
    ts_rpc_handler fn;
    void *ctx;
} authed_method;

/* Wraps every tessera.v1.Inference handler: checks `authorization: Bearer KEY` when auth is
 * on (health and reflection are not wrapped: they need no key) and records the tenant. */
static void authed(ts_rpc_call *c, void *ctx) {
    const authed_method *m = ctx;
    t_tenant[0] = '\0';
    if (g_auth_on) {
        char v[320];
        long n = ts_rpc_call_metadata(c, "authorization", v, sizeof v);
        char peer[128];
        if (n < 0) {
            ts_rpc_call_peer(c, peer, sizeof peer);
            TS_LOG_WARN("%s from %s: no API key -> UNAUTHENTICATED", ts_rpc_call_path(c), peer);
            ts_rpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED,
                               "missing API key (metadata `authorization: Bearer KEY`)");
            return;
        }
        bool ok = false;
        if ((size_t)n < sizeof v && n > 7 && !strncasecmp(v, "Bearer ", 7)) {
            pthread_rwlock_rdlock(&g_keys_mu);
            ok = ts_apikeys_lookup(g_keys, v + 7, (size_t)n - 7, t_tenant);
            pthread_rwlock_unlock(&g_keys_mu);
        }
        memset(v, 0, sizeof v);
        if (!ok) {
            ts_rpc_call_peer(c, peer, sizeof peer);
            TS_LOG_WARN("%s from %s: invalid API key -> UNAUTHENTICATED", ts_rpc_call_path(c), peer);
            ts_rpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED, "invalid API key");
            return;
        }
        TS_LOG_DEBUG("%s: tenant %s", ts_rpc_call_path(c), t_tenant);
    }
    m->fn(c, m->ctx);
}

/* ------------------------------------------------------------------ helpers */

static grpc_status_code grpc_code_of(ts_status s) {
    switch (s) {
    case TS_OK: return GRPC_STATUS_OK;
    case TS_INVAL: case TS_FORMAT: case TS_RANGE: return GRPC_STATUS_INVALID_ARGUMENT;
    case TS_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case TS_UNSUPPORTED: return GRPC_STATUS_UNIMPLEMENTED;
    case TS_EXHAUSTED: case TS_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case TS_TIMEOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
    case TS_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    case TS_CANCELLED: return GRPC_STATUS_CANCELLED;
    default: return GRPC_STATUS_INTERNAL;
    }
}

static bool model_ok(ts_rpc_call *c, const char *model) {
    if (!model || !model[0] || !strcmp(model, g_model_name)) return true;
    ts_rpc_call_finish(c, GRPC_STATUS_NOT_FOUND, "model: unknown model '%s' (serving '%s')", model,
                       g_model_name);
    return false;
}

static uint64_t random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
        s = (uint64_t)ts_now_us() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    return s;
}

/* The chat's tools as ts_tool entries (pointing into the request); n = 0 when none or when
 * tool_choice is NONE. */
static size_t chat_tools(const Tessera__V1__Chat *chat, ts_tool *t) {
    if (!chat || !chat->n_tools || chat->n_tools > TS_TOOLS_MAX ||
        (chat->tool_choice &&
         chat->tool_choice->mode == TESSERA__V1__TOOL_CHOICE__MODE__MODE_NONE))
        return 0;
    for (size_t i = 0; i < chat->n_tools; i++)
        t[i] = (ts_tool){chat->tools[i]->name, chat->tools[i]->description,
                         chat->tools[i]->parameters_json_schema};
    return chat->n_tools;
}

/* appends s[0..n) to *buf (ts_realloc'd); false on allocation failure */
static bool buf_add(char **buf, size_t *len, const char *s, size_t n) {
    char *q = ts_realloc(*buf, *len + n + 1);
    if (!q) return false;
    memcpy(q + *len, s, n);
    *len += n;
    q[*len] = 0;
    *buf = q;
    return true;
}

/* Renders a Chat into text for the tokenizer (with <bos>). On error finishes the call.
 * Function calling (tools.h): the tool declarations go in front of the first user turn,
 * a model turn's tool_calls are rendered as the calls' JSON, and ROLE_TOOL results become
 * user turns wrapping the result in ```tool_output (consecutive results: one turn). */
static bool render_chat(ts_rpc_call *c, const Tessera__V1__Chat *chat, const char *field,
                        char **out, size_t *out_len) {
    if (!chat || chat->n_messages == 0) {
        ts_rpc_call_finish_invalid(c, "%s.messages: must not be empty", field);
        return false;
    }
    if (chat->n_messages > 1024) {
        ts_rpc_call_finish_invalid(c, "%s.messages: at most 1024", field);
        return false;
    }
    if (chat->n_tools > TS_TOOLS_MAX) {
        ts_rpc_call_finish_invalid(c, "%s.tools: at most %d", field, TS_TOOLS_MAX);
        return false;
    }
    ts_tool tools[TS_TOOLS_MAX];
    size_t n_tools = chat_tools(chat, tools);
    ts_chat_message *msgs = ts_calloc(chat->n_messages, sizeof *msgs);
    char **owned = ts_calloc(chat->n_messages, sizeof *owned); /* synthesized contents */
    size_t total_parts = 0;
    for (size_t i = 0; i < chat->n_messages; i++) total_parts += chat->messages[i]->n_parts;
    ts_chat_part *parts = ts_calloc(total_parts ? total_parts : 1, sizeof *parts);
    char *preamble = NULL;
    size_t nm = 0;
    bool ok = false, first_user = true;
    if (!msgs || !parts || !owned) {
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (n_tools) {
        if (ts_tools_check(tools, n_tools) != TS_OK) {
            ts_rpc_call_finish_invalid(c, "%s.%s", field, ts_last_error());
            goto out;
        }
        if (ts_tools_preamble(tools, n_tools, &preamble) != TS_OK) {
            ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
    }
    size_t pi = 0;
    for (size_t i = 0; i < chat->n_messages; i++) {
        const Tessera__V1__ChatMessage *m = chat->messages[i];
        for (size_t k = 0; k < m->n_parts; k++) {
            const Tessera__V1__ContentPart *p = m->parts[k];
            if (p->part_case == TESSERA__V1__CONTENT_PART__PART_IMAGE && g_vision) {
                parts[pi] = (ts_chat_part){.kind = TS_CHAT_PART_IMAGE};
                continue;
            }
            if (p->part_case == TESSERA__V1__CONTENT_PART__PART_IMAGE) {
                ts_rpc_call_finish_invalid(c,
                                   "%s.messages[%zu].parts[%zu]: images need the vision model", field,
                                   i, k);
                goto out;
            }
            if (p->part_case != TESSERA__V1__CONTENT_PART__PART_TEXT) {
                ts_rpc_call_finish_invalid(c,
                                   "%s.messages[%zu].parts[%zu]: empty part", field, i, k);
                goto out;
            }
        }
        if (m->n_tool_calls && m->role != TESSERA__V1__ROLE__ROLE_MODEL) {
            ts_rpc_call_finish_invalid(c, "%s.messages[%zu].tool_calls: only MODEL turns make "
                                          "tool calls", field, i);
            goto out;
        }
        ts_chat_message *cm = &msgs[nm];
        bool synth = false; /* content built here into owned[nm] */
        switch (m->role) {
        case TESSERA__V1__ROLE__ROLE_SYSTEM: cm->role = "system"; break;
        case TESSERA__V1__ROLE__ROLE_USER: cm->role = "user"; synth = first_user && preamble; break;
        case TESSERA__V1__ROLE__ROLE_MODEL: cm->role = "model"; synth = m->n_tool_calls > 0; break;
        case TESSERA__V1__ROLE__ROLE_TOOL:
            cm->role = "user";
            synth = true;
            if (nm > 0 && owned[nm - 1] && !strcmp(msgs[nm - 1].role, "user") &&
                i > 0 && chat->messages[i - 1]->role == TESSERA__V1__ROLE__ROLE_TOOL) {
                cm = &msgs[--nm]; /* append to the previous tool results turn */
            }
            break;
        default:
            ts_rpc_call_finish_invalid(c,
                               "%s.messages[%zu].role: must be SYSTEM, USER, MODEL or TOOL", field, i);
            goto out;
        }
        if (!synth) {
            cm->parts = parts + pi;
            cm->n_parts = m->n_parts;
            for (size_t k = 0; k < m->n_parts; k++, pi++) {
                const Tessera__V1__ContentPart *p = m->parts[k];
                parts[pi] = p->part_case == TESSERA__V1__CONTENT_PART__PART_IMAGE
                                ? (ts_chat_part){.kind = TS_CHAT_PART_IMAGE}
                                : (ts_chat_part){.kind = TS_CHAT_PART_TEXT, .text = p->text,
                                                 .len = strlen(p->text)};
            }
        } else {
            /* synthesized turns (tool declarations, tool results, tool calls) are text */
            for (size_t k = 0; k < m->n_parts; k++)
                if (m->parts[k]->part_case == TESSERA__V1__CONTENT_PART__PART_IMAGE) {
                    ts_rpc_call_finish_invalid(c, "%s.messages[%zu].parts[%zu]: an image cannot "
                                                  "go in a turn with tools, tool calls or a tool "
                                                  "result", field, i, k);
                    goto out;
                }
            char *b = owned[nm];
            size_t bl = b ? strlen(b) : 0;
            bool mem = true;
            if (m->role == TESSERA__V1__ROLE__ROLE_USER) {
                mem = buf_add(&b, &bl, preamble, strlen(preamble));
                for (size_t k = 0; mem && k < m->n_parts; k++)
                    mem = buf_add(&b, &bl, m->parts[k]->text, strlen(m->parts[k]->text));
            } else if (m->role == TESSERA__V1__ROLE__ROLE_TOOL) {
                if (bl) mem = buf_add(&b, &bl, "\n", 1);
                mem = mem && buf_add(&b, &bl, "```tool_output\n", 15);
                for (size_t k = 0; mem && k < m->n_parts; k++)
                    mem = buf_add(&b, &bl, m->parts[k]->text, strlen(m->parts[k]->text));
                mem = mem && buf_add(&b, &bl, "\n```", 4);
            } else { /* model turn with calls: its text, then one call per line */
                for (size_t k = 0; mem && k < m->n_parts; k++)
                    mem = buf_add(&b, &bl, m->parts[k]->text, strlen(m->parts[k]->text));
                for (size_t k = 0; mem && k < m->n_tool_calls; k++) {
                    const Tessera__V1__ToolCall *tc = m->tool_calls[k];
                    char *ct = ts_tools_call_text(tc->name, tc->arguments_json);
                    if (!ct) {
                        owned[nm] = b;
                        ts_rpc_call_finish_invalid(c, "%s.messages[%zu].tool_calls[%zu].arguments_json: "
                                                      "not a JSON object", field, i, k);
                        goto out;
                    }
                    if (bl) mem = buf_add(&b, &bl, "\n", 1);
                    mem = mem && buf_add(&b, &bl, ct, strlen(ct));
                    ts_free(ct);
                }
            }
            owned[nm] = b;
            if (!mem || !b) {
                ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            cm->parts = NULL;
            cm->content = b;
            cm->content_len = bl;
        }
        if (m->role == TESSERA__V1__ROLE__ROLE_USER) first_user = false;
        nm++;
    }
    if (preamble && first_user) {
        ts_rpc_call_finish_invalid(c, "%s.tools: tools need a user message", field);
        goto out;
    }
    if (ts_chat_render(msgs, nm, true, true, out, out_len) != TS_OK) {
        ts_rpc_call_finish_invalid(c, "%s: %s", field, ts_last_error());
        goto out;
    }
    ok = true;
out:
    for (size_t i = 0; owned && i < chat->n_messages; i++) ts_free(owned[i]);
    ts_free(owned);
    ts_free(preamble);
    ts_free(msgs);
    ts_free(parts);
    return ok;
}

/* Multimodal chat (--vision): tokenizes the rendered text with each image's soft tokens
 * and encodes the images into r (img_embd, img_first). On error finishes the call. Runs on
 * the safety gate's thread for requests it screened. */
static bool encode_images(ts_rpc_call *c, const Tessera__V1__Chat *chat, const ts_tokenizer *tok,
                          const char *text, size_t len, ts_tokens *t, ts_req *r) {
    const ts_vision_config *vc = ts_vision_get_config(g_vision);
    int32_t first[MAX_IMAGES], n_img = 0;
    ts_status rc = ts_mm_tokenize(tok, text, len, TS_TOK_PARSE_SPECIAL, &g_mm_ids, vc->n_tokens, t,
                                  first, MAX_IMAGES, &n_img);
    if (rc != TS_OK) {
        ts_rpc_call_finish(c, grpc_code_of(rc), "chat: %s (at most %d images)", ts_last_error(),
                           MAX_IMAGES);
        return false;
    }
    if (n_img == 0) return true;
    size_t rows = (size_t)vc->n_tokens * (size_t)vc->proj_dim;
    r->img_embd = ts_malloc(sizeof(float) * rows * (size_t)n_img);
    r->img_first = ts_malloc(sizeof(int32_t) * (size_t)n_img);
    if (!r->img_embd || !r->img_first) {
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return false;
    }
    memcpy(r->img_first, first, sizeof(int32_t) * (size_t)n_img);
    r->n_img = n_img;
    r->n_img_tok = vc->n_tokens;
    r->img_width = vc->proj_dim;
    int32_t i = 0;
    for (size_t m = 0; m < chat->n_messages; m++)
        for (size_t k = 0; k < chat->messages[m]->n_parts; k++) {
            const Tessera__V1__ContentPart *p = chat->messages[m]->parts[k];
            if (p->part_case != TESSERA__V1__CONTENT_PART__PART_IMAGE) continue;
            if (i >= n_img) { /* a "<start_of_image>" typed in the text shifts the count */
                ts_rpc_call_finish_invalid(c, "chat.messages[%zu].parts[%zu]: image markers in "
                                           "the text do not match the image parts", m, k);
                return false;
            }
            ts_image im;
            rc = p->image ? ts_image_decode(p->image->data.data, p->image->data.len, 0, &im)
                          : TS_FAIL(TS_INVAL, "no image data");
            if (rc == TS_OK) {
                pthread_mutex_lock(&g_vision_mu);
                rc = ts_vision_encode_image(g_vision, &im, r->img_embd + rows * (size_t)i);
                pthread_mutex_unlock(&g_vision_mu);
                ts_image_free(&im);
            }
            if (rc != TS_OK) {
                ts_rpc_call_finish(c, grpc_code_of(rc), "chat.messages[%zu].parts[%zu]: %s", m, k,
                                   ts_last_error());
                return false;
            }
            i++;
        }
    if (i != n_img) {
        ts_rpc_call_finish_invalid(c, "chat: %d image markers for %d image parts", n_img, i);
        return false;
    }
    return true;
}

/* --------------------------------------------------------------- generation */

typedef struct {
    ts_rpc_call *c;
    bool stream, return_ids;
    /* function calling: the declared tool names (owned), to recognise calls in the reply */
    ts_tool tools[TS_TOOLS_MAX];
    char *tool_names[TS_TOOLS_MAX];
    size_t n_tools;
} fe_ctx;

static void fe_release(void *user) {
    fe_ctx *f = user;
    for (size_t i = 0; i < f->n_tools; i++) ts_free(f->tool_names[i]);
    ts_rpc_call_unref(f->c);
    ts_free(f);
}

/* RECV_CLOSE of the call: cancelled means the client went away or its deadline passed. */
static void fe_on_close(void *user, bool cancelled) {
    ts_req *r = user;
    if (cancelled) {
        atomic_store(&r->cancelled, true);
        ts_sched_poke(g_sched);
    }
    ts_req_unref(r); /* the call's reference */
}

static fe_ctx *fe_of(ts_req *r) { return r->user; }

static void fe_queued(ts_req *r, uint32_t pos) {
    fe_ctx *f = fe_of(r);
    if (!f->stream) return;
    Tessera__V1__GenerateStreamResponse m = TESSERA__V1__GENERATE_STREAM_RESPONSE__INIT;
    Tessera__V1__GenerateStreamResponse__Started st =
        TESSERA__V1__GENERATE_STREAM_RESPONSE__STARTED__INIT;
    st.request_id = r->id;
    st.model = g_model_name;
    st.prompt_tokens = (uint32_t)r->n_prompt;
    st.queue_position = pos;
    m.event_case = TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_STARTED;
    m.started = &st;
    ts_rpc_call_send(f->c, &m.base);
}

static void fe_delta(ts_req *r, const char *text, size_t len, const int32_t *ids, size_t n_ids) {
    fe_ctx *f = fe_of(r);
    if (!f->stream) return; /* unary: the scheduler keeps the whole text */
    Tessera__V1__GenerateStreamResponse m = TESSERA__V1__GENERATE_STREAM_RESPONSE__INIT;
    Tessera__V1__GenerateStreamResponse__Delta d = TESSERA__V1__GENERATE_STREAM_RESPONSE__DELTA__INIT;
    char *t = ts_strndup(text, len);
    if (!t) return;
    d.text = t;
    d.n_token_ids = n_ids;
    d.token_ids = (uint32_t *)(uintptr_t)ids; /* int32 ids >= 0: same bits */
    m.event_case = TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_DELTA;
    m.delta = &d;
    size_t q = ts_rpc_call_send(f->c, &m.base);
    ts_free(t);
    if (q > MAX_SEND_QUEUE) {
        TS_LOG_WARN("request %s: client is not reading (%zu messages queued); ending it", r->id, q);
        ts_rpc_call_finish(f->c, GRPC_STATUS_RESOURCE_EXHAUSTED, "client is not reading the stream");
        atomic_store(&r->cancelled, true);
    }
}

static void fill_usage_timing(ts_req *r, const ts_req_timing *t, Tessera__V1__Usage *u,
                              Tessera__V1__Timing *tm) {
    u->prompt_tokens = (uint32_t)r->n_prompt;
    u->completion_tokens = (uint32_t)r->n_gen;
    u->cached_prompt_tokens = (uint32_t)r->n_cached;
    u->image_tokens = (uint32_t)(r->n_img * r->n_img_tok);
    tm->queue_us = t->queue_us;
    tm->prefill_us = t->prefill_us;
    tm->time_to_first_token_us = t->ttft_us;
    tm->decode_us = t->decode_us;
}

static void fe_finished(ts_req *r, ts_finish_reason why, const ts_req_timing *t) {
    fe_ctx *f = fe_of(r);
    Tessera__V1__Usage u = TESSERA__V1__USAGE__INIT;
    Tessera__V1__Timing tm = TESSERA__V1__TIMING__INIT;
    fill_usage_timing(r, t, &u, &tm);
    /* function calling: a reply that is a call of a declared tool comes back structured */
    ts_tool_call calls[TS_TOOLS_MAX_CALLS];
    Tessera__V1__ToolCall tc[TS_TOOLS_MAX_CALLS], *tcp[TS_TOOLS_MAX_CALLS];
    char ids[TS_TOOLS_MAX_CALLS][32];
    size_t n_calls = 0;
    if (f->n_tools && why == TS_FINISH_STOP && r->text)
        n_calls = ts_tools_parse(r->text, r->text_len, f->tools, f->n_tools, calls,
                                 TS_TOOLS_MAX_CALLS);
    for (size_t i = 0; i < n_calls; i++) {
        tessera__v1__tool_call__init(&tc[i]);
        snprintf(ids[i], sizeof ids[i], "call-%zu", i + 1);
        tc[i].id = ids[i];
        tc[i].name = calls[i].name;
        tc[i].arguments_json = calls[i].arguments;
        tcp[i] = &tc[i];
    }
    if (n_calls) {
        why = TS_FINISH_TOOL_CALLS;
        TS_LOG_INFO("request %s: %zu tool call(s), first: %s", r->id, n_calls, calls[0].name);
    }
    if (f->stream) {
        Tessera__V1__GenerateStreamResponse m = TESSERA__V1__GENERATE_STREAM_RESPONSE__INIT;
        Tessera__V1__GenerateStreamResponse__Finished fin =
            TESSERA__V1__GENERATE_STREAM_RESPONSE__FINISHED__INIT;
        fin.finish_reason = (Tessera__V1__FinishReason)why;
        fin.usage = &u;
        fin.timing = &tm;
        fin.seed = r->sp.seed;
        fin.n_tool_calls = n_calls;
        fin.tool_calls = tcp;
        m.event_case = TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_FINISHED;
        m.finished = &fin;
        ts_rpc_call_send(f->c, &m.base);
    } else {
        Tessera__V1__GenerateResponse m = TESSERA__V1__GENERATE_RESPONSE__INIT;
        m.request_id = r->id;
        m.model = g_model_name;
        m.text = r->text ? r->text : "";
        if (f->return_ids) {
            m.n_token_ids = r->n_out_ids;
            m.token_ids = (uint32_t *)(uintptr_t)r->out_ids;
        }
        m.finish_reason = (Tessera__V1__FinishReason)why;
        m.usage = &u;
        m.timing = &tm;
        m.seed = r->sp.seed;
        m.n_tool_calls = n_calls;
        m.tool_calls = tcp;
        ts_rpc_call_send(f->c, &m.base);
    }
    ts_tool_calls_free(calls, n_calls);
    ts_rpc_call_finish(f->c, GRPC_STATUS_OK, NULL);
}

static void fe_failed(ts_req *r, ts_status code, const char *msg) {
    ts_rpc_call_finish(fe_of(r)->c, grpc_code_of(code), "request %s: %s", r->id, msg);
}

static const ts_req_sink g_sink = {
    .queued = fe_queued, .delta = fe_delta, .finished = fe_finished, .failed = fe_failed};

/* Structured output (constraint) and function calling (chat.tools / tool_choice): compiles
 * r->grammar and records the tool names; on error finishes the call and returns false. */
static bool build_constraint(ts_rpc_call *c, const Tessera__V1__GenerateRequest *q, ts_req *r) {
    const Tessera__V1__OutputConstraint *k = q->constraint;
    const Tessera__V1__Chat *chat =
        q->input_case == TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT ? q->chat : NULL;
    const Tessera__V1__ToolChoice *tch = chat ? chat->tool_choice : NULL;
    int mode = tch ? (int)tch->mode : 0;
    ts_status rc = TS_OK;
    const char *field = "constraint";
    if (k && k->kind_case) {
        switch (k->kind_case) {
        case TESSERA__V1__OUTPUT_CONSTRAINT__KIND_JSON_SCHEMA:
            field = "constraint.json_schema";
            rc = ts_grammar_from_json_schema(k->json_schema, strlen(k->json_schema), -1, &r->grammar);
            break;
        case TESSERA__V1__OUTPUT_CONSTRAINT__KIND_JSON_OBJECT:
            if (k->json_object) rc = ts_grammar_json_object(-1, &r->grammar);
            break;
        case TESSERA__V1__OUTPUT_CONSTRAINT__KIND_CHOICE:
            field = "constraint.choice";
            if (!k->choice || !k->choice->n_options) {
                ts_rpc_call_finish_invalid(c, "constraint.choice.options: must not be empty");
                return false;
            }
            rc = ts_grammar_choice((const char *const *)k->choice->options, k->choice->n_options,
                                   &r->grammar);
            break;
        default:
            ts_rpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED,
                               "constraint: regex and gbnf_grammar are not implemented (use "
                               "json_schema, json_object or choice)");
            return false;
        }
        if (rc != TS_OK) {
            if (grpc_code_of(rc) == GRPC_STATUS_INVALID_ARGUMENT)
                ts_rpc_call_finish_invalid(c, "%s: %s", field, ts_last_error());
            else
                ts_rpc_call_finish(c, grpc_code_of(rc), "%s: %s", field, ts_last_error());
            return false;
        }
    }
    if (!chat || !chat->n_tools) {
        if (mode == TESSERA__V1__TOOL_CHOICE__MODE__MODE_REQUIRED ||
            mode == TESSERA__V1__TOOL_CHOICE__MODE__MODE_NAMED) {
            ts_rpc_call_finish_invalid(c, "chat.tool_choice: REQUIRED / NAMED need chat.tools");
            return false;
        }
        return true;
    }
    if (chat->n_tools > TS_TOOLS_MAX) {
        ts_rpc_call_finish_invalid(c, "chat.tools: at most %d", TS_TOOLS_MAX);
        return false;
    }
    ts_tool tools[TS_TOOLS_MAX];
    size_t n = chat_tools(chat, tools);
    if (!n) return true; /* MODE_NONE */
    if (ts_tools_check(tools, n) != TS_OK) {
        ts_rpc_call_finish_invalid(c, "chat.%s", ts_last_error());
        return false;
    }
    fe_ctx *f = r->user;
    for (size_t i = 0; i < n; i++) {
        if (!(f->tool_names[i] = ts_strdup(tools[i].name))) {
            ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return false;
        }
        f->tools[i] = (ts_tool){f->tool_names[i], NULL, NULL};
        f->n_tools = i + 1;
    }
    if (mode == TESSERA__V1__TOOL_CHOICE__MODE__MODE_REQUIRED ||
        mode == TESSERA__V1__TOOL_CHOICE__MODE__MODE_NAMED) {
        if (r->grammar) {
            ts_rpc_call_finish_invalid(c, "chat.tool_choice: REQUIRED / NAMED cannot be combined "
                                          "with constraint");
            return false;
        }
        bool named = mode == TESSERA__V1__TOOL_CHOICE__MODE__MODE_NAMED;
        if (named && !tch->name[0]) {
            ts_rpc_call_finish_invalid(c, "chat.tool_choice.name: required with NAMED");
            return false;
        }
        char *schema = NULL;
        rc = ts_tools_call_schema(tools, n, named ? tch->name : NULL, &schema);
        if (rc == TS_OK) {
            rc = ts_grammar_from_json_schema(schema, strlen(schema), -1, &r->grammar);
            ts_free(schema);
        }
        if (rc != TS_OK) {
            if (grpc_code_of(rc) == GRPC_STATUS_INVALID_ARGUMENT)
                ts_rpc_call_finish_invalid(c, "chat.%s", ts_last_error());
            else
                ts_rpc_call_finish(c, grpc_code_of(rc), "chat.tools: %s", ts_last_error());
            return false;
        }
    }
    return true;
}

/* Validates the request and fills r; on error finishes the call and returns false. */
static bool build_request(ts_rpc_call *c, const Tessera__V1__GenerateRequest *q, const char *id,
                          ts_req *r) {
    const ts_tokenizer *tok = ts_sched_tokenizer(g_sched);
    const uint32_t n_vocab = ts_tokenizer_n_vocab(tok);
    const int32_t n_ctx = ts_sched_n_ctx(g_sched);
    if (strlen(q->request_id) > TS_REQ_ID_MAX) {
        ts_rpc_call_finish_invalid(c, "request_id: at most %d bytes",
                           TS_REQ_ID_MAX);
        return false;
    }
    if (id)
        snprintf(r->id, sizeof r->id, "%s", id); /* assigned by the safety gate */
    else if (q->request_id[0])
        snprintf(r->id, sizeof r->id, "%s", q->request_id);
    else
        snprintf(r->id, sizeof r->id, "req-%" PRIu64, (uint64_t)atomic_fetch_add(&g_req_counter, 1) + 1);
    snprintf(r->tenant, sizeof r->tenant, "%s", t_tenant);
    r->priority = q->priority;

    /* sampling parameters: unset fields take Gemma 3's generation defaults */
    const Tessera__V1__SamplingParams *sp = q->sampling;
    ts_sampler_params p = ts_sampler_params_default();
    p.temperature = 1.0f;
    p.top_k = 64;
    p.top_p = 0.95f;
    uint32_t max_tokens = 0;
    if (sp) {
        if (sp->_temperature_case) p.temperature = sp->temperature;
        if (sp->_top_k_case) p.top_k = sp->top_k;
        if (sp->_top_p_case) p.top_p = sp->top_p;
        if (sp->_min_p_case) p.min_p = sp->min_p;
        if (sp->_repetition_penalty_case) p.repetition_penalty = sp->repetition_penalty;
        p.repetition_window = sp->repetition_window;
        p.presence_penalty = sp->presence_penalty;
        p.frequency_penalty = sp->frequency_penalty;
        max_tokens = sp->max_tokens;
        r->min_tokens = (int32_t)(sp->min_tokens > INT32_MAX ? INT32_MAX : sp->min_tokens);
        r->ignore_eos = sp->ignore_eos;
        if (sp->top_logprobs) {
            ts_rpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED,
                               "sampling.top_logprobs: log-probabilities are not implemented yet");
            return false;
        }
        if (sp->n_stop > TS_REQ_MAX_STOPS) {
            ts_rpc_call_finish_invalid(c, "sampling.stop: at most %d strings",
                               TS_REQ_MAX_STOPS);
            return false;
        }
        for (size_t i = 0; i < sp->n_stop; i++) {
            size_t l = strlen(sp->stop[i]);
            if (l == 0 || l > TS_REQ_MAX_STOP_LEN) {
                ts_rpc_call_finish_invalid(c,
                                   "sampling.stop[%zu]: length must be 1..%d bytes", i,
                                   TS_REQ_MAX_STOP_LEN);
                return false;
            }
            if (!(r->stops[r->n_stops] = ts_strdup(sp->stop[i]))) {
                ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                return false;
            }
            r->n_stops++;
        }
        if (sp->n_stop_token_ids > TS_REQ_MAX_STOP_IDS) {
            ts_rpc_call_finish_invalid(c,
                               "sampling.stop_token_ids: at most %d ids", TS_REQ_MAX_STOP_IDS);
            return false;
        }
        for (size_t i = 0; i < sp->n_stop_token_ids; i++) {
            if (sp->stop_token_ids[i] >= n_vocab) {
                ts_rpc_call_finish_invalid(c,
                                   "sampling.stop_token_ids[%zu]: id %u outside the vocabulary "
                                   "[0, %u)", i, sp->stop_token_ids[i], n_vocab);
                return false;
            }
            r->stop_ids[r->n_stop_ids++] = (int32_t)sp->stop_token_ids[i];
        }
    }
    p.seed = sp && sp->_seed_case ? sp->seed : random_seed();
    if (ts_sampler_params_validate(&p) != TS_OK) {
        ts_rpc_call_finish_invalid(c, "sampling: %s", ts_last_error());
        return false;
    }
    r->sp = p;
    if (!build_constraint(c, q, r)) return false;

    /* input -> prompt token ids */
    ts_tokens t = {0};
    ts_status rc = TS_OK;
    switch (q->input_case) {
    case TESSERA__V1__GENERATE_REQUEST__INPUT_PROMPT:
        if (!q->prompt[0]) {
            ts_rpc_call_finish_invalid(c, "prompt: must not be empty");
            return false;
        }
        rc = ts_tokenize(tok, q->prompt, strlen(q->prompt), TS_TOK_DEFAULT, &t);
        break;
    case TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT: {
        char *text = NULL;
        size_t len = 0;
        if (!render_chat(c, q->chat, "chat", &text, &len)) return false;
        if (g_vision) {
            if (!encode_images(c, q->chat, tok, text, len, &t, r)) {
                ts_free(text);
                ts_tokens_free(&t);
                return false;
            }
        } else {
            rc = ts_tokenize(tok, text, len, TS_TOK_PARSE_SPECIAL, &t);
        }
        ts_free(text);
        break;
    }
    case TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS:
        if (!q->tokens || q->tokens->n_ids == 0) {
            ts_rpc_call_finish_invalid(c, "tokens.ids: must not be empty");
            return false;
        }
        if (q->tokens->n_ids >= (size_t)n_ctx) break; /* reported below */
        for (size_t i = 0; i < q->tokens->n_ids; i++)
            if (q->tokens->ids[i] >= n_vocab) {
                ts_rpc_call_finish_invalid(c,
                                   "tokens.ids[%zu]: id %u outside the vocabulary [0, %u)", i,
                                   q->tokens->ids[i], n_vocab);
                return false;
            }
        break;
    default:
        ts_rpc_call_finish_invalid(c,
                           "input: one of prompt, chat or tokens is required");
        return false;
    }
    if (rc != TS_OK) {
        ts_tokens_free(&t);
        if (grpc_code_of(rc) == GRPC_STATUS_INVALID_ARGUMENT)
            ts_rpc_call_finish_invalid(c, "prompt: %s", ts_last_error());
        else
            ts_rpc_call_finish(c, grpc_code_of(rc), "prompt: %s", ts_last_error());
        return false;
    }
    size_t n_prompt = q->input_case == TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS ? q->tokens->n_ids
                                                                                   : t.n;
    if (n_prompt + (size_t)max_tokens > (size_t)n_ctx || n_prompt >= (size_t)n_ctx) {
        ts_tokens_free(&t);
        ts_rpc_call_finish_invalid(c,
                           "sampling.max_tokens: prompt of %zu tokens plus max_tokens %u exceeds "
                           "the context of %d tokens", n_prompt, max_tokens, n_ctx);
        return false;
    }
    r->prompt = ts_malloc(sizeof(int32_t) * n_prompt);
    if (!r->prompt) {
        ts_tokens_free(&t);
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return false;
    }
    if (q->input_case == TESSERA__V1__GENERATE_REQUEST__INPUT_TOKENS)
        for (size_t i = 0; i < n_prompt; i++) r->prompt[i] = (int32_t)q->tokens->ids[i];
    else
        memcpy(r->prompt, t.ids, sizeof(int32_t) * n_prompt);
    ts_tokens_free(&t);
    r->n_prompt = n_prompt;
    if (max_tokens == 0) {
        int32_t room = n_ctx - (int32_t)n_prompt, def = ts_sched_max_tokens_default(g_sched);
        r->max_tokens = def < room ? def : room;
    } else {
        r->max_tokens = (int32_t)max_tokens;
    }
    if (r->min_tokens > r->max_tokens) {
        ts_rpc_call_finish_invalid(c,
                           "sampling.min_tokens: %d is above max_tokens %d", r->min_tokens,
                           r->max_tokens);
        return false;
    }
    int64_t dl = ts_rpc_call_deadline_ms(c);
    r->deadline_us = dl == INT64_MAX ? INT64_MAX : ts_now_us() + dl * 1000;
    return true;
}

/* Admits a request (after the safety gate, if it had images): builds it and hands it to the
 * scheduler. id: the request id the gate assigned, or NULL. Frees q. */
static void generate_admit(ts_rpc_call *c, Tessera__V1__GenerateRequest *q, bool stream,
                           const char *id) {
    ts_req *r = NULL;
    if (ts_rpc_server_draining()) {
        ts_rpc_call_finish(c, GRPC_STATUS_UNAVAILABLE, "server is shutting down");
        goto out;
    }
    if (!model_ok(c, q->model)) goto out;
    r = ts_req_new();
    fe_ctx *f = ts_calloc(1, sizeof *f);
    if (!r || !f) {
        ts_free(f);
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    ts_rpc_call_ref(c);
    f->c = c;
    f->stream = stream;
    f->return_ids = q->return_token_ids;
    r->user = f;
    r->user_release = fe_release;
    r->sink = &g_sink;
    if (!build_request(c, q, id, r)) goto out;
    /* from here the call and the scheduler share r (two references) */
    ts_rpc_call_set_user(c, r, fe_on_close, NULL);
    TS_LOG_INFO("request %s: tenant %s, %s, prompt %zu tokens, max_tokens %d, temperature %g, "
                "seed %" PRIu64, r->id, r->tenant[0] ? r->tenant : "-", stream ? "stream" : "unary",
                r->n_prompt, r->max_tokens,
                (double)r->sp.temperature, r->sp.seed);
    uint32_t pos = 0;
    ts_req *rr = r;
    r = NULL; /* both references are handed over now */
    if (ts_sched_submit(g_sched, rr, &pos) != TS_OK) {
        int64_t ms = ts_sched_retry_hint_ms(g_sched);
        ts_rpc_call_finish_retry(c, ms, "%s; retry in %" PRId64 " ms", ts_last_error(), ms);
    }
out:
    if (r) { /* not submitted: drop both references */
        ts_req_unref(r);
        ts_req_unref(r);
    }
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* ---------------------------------------------------------------- the rest */

static void handle_tokenize(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    Tessera__V1__TokenizeRequest *q = (Tessera__V1__TokenizeRequest *)ts_rpc_call_unpack(
        c, &tessera__v1__tokenize_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed TokenizeRequest");
        return;
    }
    const ts_tokenizer *tok = ts_sched_tokenizer(g_sched);
    ts_tokens t = {0};
    char *text = NULL;
    size_t len = 0;
    ProtobufCBinaryData *pieces = NULL;
    char **pbuf = NULL;
    if (!model_ok(c, q->model)) goto out;
    ts_status rc;
    if (q->input_case == TESSERA__V1__TOKENIZE_REQUEST__INPUT_CHAT) {
        if (!render_chat(c, q->chat, "chat", &text, &len)) goto out;
        rc = ts_tokenize(tok, text, len, TS_TOK_PARSE_SPECIAL, &t);
    } else {
        const char *p = q->input_case == TESSERA__V1__TOKENIZE_REQUEST__INPUT_PROMPT ? q->prompt : "";
        rc = ts_tokenize(tok, p, strlen(p),
                         TS_TOK_PARSE_SPECIAL | (q->add_special_tokens ? TS_TOK_ADD_BOS : 0), &t);
    }
    if (rc != TS_OK) {
        if (grpc_code_of(rc) == GRPC_STATUS_INVALID_ARGUMENT)
            ts_rpc_call_finish_invalid(c, "prompt: %s", ts_last_error());
        else
            ts_rpc_call_finish(c, grpc_code_of(rc), "prompt: %s", ts_last_error());
        goto out;
    }
    pieces = ts_calloc(t.n ? t.n : 1, sizeof *pieces);
    pbuf = ts_calloc(t.n ? t.n : 1, sizeof *pbuf);
    if (!pieces || !pbuf) {
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < t.n; i++) {
        size_t pl = 0;
        if (ts_detokenize(tok, &t.ids[i], 1, TS_DETOK_SPECIAL, &pbuf[i], &pl) != TS_OK) pl = 0;
        pieces[i].data = (uint8_t *)pbuf[i];
        pieces[i].len = pbuf[i] ? pl : 0;
    }
    Tessera__V1__TokenizeResponse resp = TESSERA__V1__TOKENIZE_RESPONSE__INIT;
    resp.n_ids = t.n;
    resp.ids = (uint32_t *)(uintptr_t)t.ids;
    resp.n_pieces = t.n;
    resp.pieces = pieces;
    resp.count = (uint32_t)t.n;
    ts_rpc_call_send(c, &resp.base);
    ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
out:
    for (size_t i = 0; pbuf && i < t.n; i++) ts_free(pbuf[i]);
    ts_free(pbuf);
    ts_free(pieces);
    ts_free(text);
    ts_tokens_free(&t);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void handle_detokenize(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    Tessera__V1__DetokenizeRequest *q = (Tessera__V1__DetokenizeRequest *)ts_rpc_call_unpack(
        c, &tessera__v1__detokenize_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed DetokenizeRequest");
        return;
    }
    const ts_tokenizer *tok = ts_sched_tokenizer(g_sched);
    uint32_t nv = ts_tokenizer_n_vocab(tok);
    int32_t *ids = NULL;
    char *text = NULL, *clean = NULL;
    size_t len = 0, clen = 0;
    if (!model_ok(c, q->model)) goto out;
    ids = ts_malloc(sizeof(int32_t) * (q->n_ids ? q->n_ids : 1));
    if (!ids) {
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < q->n_ids; i++) {
        if (q->ids[i] >= nv) {
            ts_rpc_call_finish_invalid(c,
                               "ids[%zu]: id %u outside the vocabulary [0, %u)", i, q->ids[i], nv);
            goto out;
        }
        ids[i] = (int32_t)q->ids[i];
    }
    if (ts_detokenize(tok, ids, q->n_ids, 0, &text, &len) != TS_OK ||
        !(clean = ts_utf8_sanitize(text, len, &clen))) {
        ts_rpc_call_finish(c, GRPC_STATUS_INTERNAL, "detokenize: %s", ts_last_error());
        goto out;
    }
    Tessera__V1__DetokenizeResponse resp = TESSERA__V1__DETOKENIZE_RESPONSE__INIT;
    resp.text = clean;
    ts_rpc_call_send(c, &resp.base);
    ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
out:
    ts_free(ids);
    ts_free(text);
    ts_free(clean);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

static ts_safety *g_safety; /* NULL: no classifier configured (CheckSafety below) */
static ts_sp_set *policies_get(void);

/* ModelInfo.safety_policies: the names of the gate's policies when a classifier is
 * configured; returns the set to release after the reply is sent (or NULL). */
static ts_sp_set *model_info_policies(Tessera__V1__ModelInfo *m, char **names) {
    if (!g_safety) return NULL;
    ts_sp_set *set = policies_get();
    for (size_t i = 0; i < set->n; i++) names[i] = set->p[i].name;
    m->n_safety_policies = set->n;
    m->safety_policies = names;
    return set;
}

static void fill_model_info(Tessera__V1__ModelInfo *m) {
    const ts_config *cfg = ts_sched_config(g_sched);
    m->name = g_model_name;
    m->version = TESSERA_VERSION;
    m->quantization = "";
    m->context_length = (uint32_t)ts_sched_n_ctx(g_sched);
    m->vocab_size = cfg->n_vocab;
    m->supports_images = false;
    m->ready = !ts_rpc_server_draining();
}

static void handle_model_info(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    Tessera__V1__GetModelInfoRequest *q = (Tessera__V1__GetModelInfoRequest *)ts_rpc_call_unpack(
        c, &tessera__v1__get_model_info_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed GetModelInfoRequest");
        return;
    }
    if (model_ok(c, q->model)) {
        Tessera__V1__ModelInfo m = TESSERA__V1__MODEL_INFO__INIT;
        fill_model_info(&m);
        char *pn[TS_SP_MAX];
        ts_sp_set *ps = model_info_policies(&m, pn);
        ts_rpc_call_send(c, &m.base);
        ts_sp_unref(ps);
        ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
    }
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void handle_list_models(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    ProtobufCMessage *q = ts_rpc_call_unpack(c, &tessera__v1__list_models_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed ListModelsRequest");
        return;
    }
    Tessera__V1__ModelInfo m = TESSERA__V1__MODEL_INFO__INIT, *mp = &m;
    fill_model_info(&m);
    char *pn[TS_SP_MAX];
    ts_sp_set *ps = model_info_policies(&m, pn);
    Tessera__V1__ListModelsResponse r = TESSERA__V1__LIST_MODELS_RESPONSE__INIT;
    r.n_models = 1;
    r.models = &mp;
    ts_rpc_call_send(c, &r.base);
    ts_sp_unref(ps);
    ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(q, NULL);
}

static const char *g_plan_desc = "1 rank (CPU)"; /* or the engine's plan */
static int32_t g_tp = 1, g_pp = 1;

static void handle_cluster_info(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    ProtobufCMessage *q = ts_rpc_call_unpack(c, &tessera__v1__get_cluster_info_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed GetClusterInfoRequest");
        return;
    }
    ts_sched_stats st;
    ts_sched_get_stats(g_sched, &st);
    Tessera__V1__ClusterInfo ci = TESSERA__V1__CLUSTER_INFO__INIT;
    ci.pipeline_parallel = (uint32_t)g_pp;
    ci.tensor_parallel = (uint32_t)g_tp;
    ci.active_requests = st.active;
    ci.queued_requests = st.queued;
    ci.max_batch = st.n_batch;
    ci.kv_cache_tokens_total = (uint64_t)st.kv_pages_total * (uint64_t)st.page_size;
    ci.kv_cache_tokens_used =
        (uint64_t)(st.kv_pages_total - st.kv_pages_free) * (uint64_t)st.page_size;
    ci.version = TESSERA_VERSION;
    ci.plan = (char *)g_plan_desc;
    ci.slots = st.slots;
    ci.kv_pages_total = (uint64_t)st.kv_pages_total;
    ci.kv_pages_used = (uint64_t)(st.kv_pages_total - st.kv_pages_free);
    ci.kv_page_size = (uint32_t)st.page_size;
    ci.requests_completed = st.completed;
    ci.requests_cancelled = st.cancelled;
    ci.requests_rejected = st.rejected;
    ci.prefix_cache_tokens = (uint64_t)st.prefix_cached_tokens;
    ci.prefix_cache_hit_tokens = st.prefix_hit_tokens;
    ts_rpc_call_send(c, &ci.base);
    ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(q, NULL);
}

static void handle_cancel(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    Tessera__V1__CancelRequest *q = (Tessera__V1__CancelRequest *)ts_rpc_call_unpack(
        c, &tessera__v1__cancel_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed CancelRequest");
        return;
    }
    Tessera__V1__CancelResponse r = TESSERA__V1__CANCEL_RESPONSE__INIT;
    r.found = q->request_id[0] && ts_sched_cancel(g_sched, q->request_id);
    ts_rpc_call_send(c, &r.base);
    ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* ------------------------------------------------------------ CheckSafety */


/* Scores every image part for the requested policies (all configured ones by default, then
 * the request's ad-hoc policy texts) with ShieldGemma 2; threshold per policy from
 * options.thresholds, else the configured one (0.5 for ad-hoc ones). One audit log line per
 * part (tenant, scores, decision; never the image or a policy text). */
static void handle_check_safety(ts_rpc_call *c, void *ctx) {
    (void)ctx;
    Tessera__V1__SafetyCheckRequest *q = (Tessera__V1__SafetyCheckRequest *)ts_rpc_call_unpack(
        c, &tessera__v1__safety_check_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed SafetyCheckRequest");
        return;
    }
    enum { MAXP = TS_SAFETY_MAX_TEXTS };
    const char *names[MAXP], *texts[MAXP];
    float dth[MAXP];
    size_t np = 0;
    ts_sp_set *set = policies_get();
    char err[256], known[TS_SP_MAX * (TS_SP_NAME_MAX + 2) + 1];
    bool bad = false;
    for (size_t i = 0; i < q->n_policies && !bad; i++) {
        if (!q->policies[i][0]) continue;
        int k = ts_sp_find(set, q->policies[i]);
        if (k < 0) {
            ts_sp_names(set, known, sizeof known);
            ts_rpc_call_finish_invalid(c, "policies[%zu]: unknown policy '%.64s' (%s; or give "
                                       "its text in policy_texts)", i, q->policies[i], known);
            bad = true;
        } else if (np == TS_SP_MAX) {
            ts_rpc_call_finish_invalid(c, "policies: more than %d names", TS_SP_MAX);
            bad = true;
        } else {
            for (size_t j = 0; j < np; j++) bad |= !strcmp(names[j], q->policies[i]);
            if (bad) {
                ts_rpc_call_finish_invalid(c, "policies[%zu]: '%.64s' appears twice", i,
                                           q->policies[i]);
            } else {
                names[np] = set->p[k].name;
                texts[np] = set->p[k].text;
                dth[np++] = set->p[k].threshold;
            }
        }
    }
    if (!bad && np == 0 && q->n_policy_texts == 0)
        for (size_t k = 0; k < set->n; k++) {
            names[np] = set->p[k].name;
            texts[np] = set->p[k].text;
            dth[np++] = set->p[k].threshold;
        }
    if (!bad && q->n_policy_texts > (size_t)(MAXP - (int)np)) {
        ts_rpc_call_finish_invalid(c, "policy_texts: %zu ad-hoc policies (at most %zu here)",
                                   q->n_policy_texts, (size_t)MAXP - np);
        bad = true;
    }
    for (size_t i = 0; i < q->n_policy_texts && !bad; i++) {
        const char *nm = q->policy_texts[i]->key, *tx = q->policy_texts[i]->value;
        if (ts_sp_check_name(nm, err, sizeof err) || ts_sp_check_text(tx, strlen(tx), err, sizeof err)) {
            ts_rpc_call_finish_invalid(c, "policy_texts[%.64s]: %s", nm, err);
            bad = true;
        } else if (ts_sp_find(set, nm) >= 0 || ts_sg_policy_text(nm)) {
            ts_rpc_call_finish_invalid(c, "policy_texts[%.64s]: a server policy has this name "
                                       "(name ad-hoc policies differently)", nm);
            bad = true;
        } else {
            for (size_t j = 0; j < np && !bad; j++) bad = !strcmp(names[j], nm);
            if (bad) ts_rpc_call_finish_invalid(c, "policy_texts[%.64s]: appears twice", nm);
        }
        if (!bad) {
            names[np] = nm;
            texts[np] = tx;
            dth[np++] = 0.5f;
        }
    }
    for (size_t t = 0; !bad && q->options && t < q->options->n_thresholds; t++) {
        const char *key = q->options->thresholds[t]->key;
        const float v = q->options->thresholds[t]->value;
        size_t k = 0;
        while (k < np && strcmp(names[k], key)) k++;
        if (k == np || !(v >= 0.0f && v <= 1.0f)) {
            ts_rpc_call_finish_invalid(c, k == np ? "options.thresholds: '%.64s' is not among "
                                                    "the policies checked"
                                                  : "options.thresholds[%.64s]: must be in [0, 1]",
                                       key);
            bad = true;
        } else {
            dth[k] = v;
        }
    }
    if (bad) {
        ts_sp_unref(set);
        protobuf_c_message_free_unpacked(&q->base, NULL);
        return;
    }
    Tessera__V1__SafetyVerdict *vs = ts_calloc(q->n_parts ? q->n_parts : 1, sizeof *vs);
    Tessera__V1__SafetyVerdict **vp = ts_calloc(q->n_parts ? q->n_parts : 1, sizeof *vp);
    Tessera__V1__PolicyScore *ps = ts_calloc((q->n_parts ? q->n_parts : 1) * np, sizeof *ps);
    Tessera__V1__PolicyScore **pp = ts_calloc((q->n_parts ? q->n_parts : 1) * np, sizeof *pp);
    float sc[MAXP];
    if (!g_safety) {
        ts_rpc_call_finish(c, GRPC_STATUS_UNAVAILABLE, "no safety classifier is configured "
                           "(tesserad --safety-model / --safety-vision)");
        goto out;
    }
    if (!vs || !vp || !ps || !pp) {
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (q->n_parts == 0) {
        ts_rpc_call_finish_invalid(c, "parts: no image to check");
        goto out;
    }
    for (size_t i = 0; i < q->n_parts; i++) {
        const Tessera__V1__ContentPart *part = q->parts[i];
        if (part->part_case != TESSERA__V1__CONTENT_PART__PART_IMAGE || !part->image) {
            ts_rpc_call_finish_invalid(c, "parts[%zu]: only images can be checked (no text "
                                       "classifier is configured)", i);
            goto out;
        }
        ts_status rc = ts_safety_score(g_safety, part->image->data.data, part->image->data.len,
                                       texts, np, sc);
        if (rc != TS_OK) {
            if (grpc_code_of(rc) == GRPC_STATUS_INVALID_ARGUMENT || rc == TS_NOT_FOUND)
                ts_rpc_call_finish_invalid(c, "parts[%zu]: %s", i, ts_last_error());
            else
                ts_rpc_call_finish(c, grpc_code_of(rc), "parts[%zu]: %s", i, ts_last_error());
            goto out;
        }
        Tessera__V1__SafetyVerdict *v = &vs[i];
        tessera__v1__safety_verdict__init(v);
        v->stage = TESSERA__V1__SAFETY_VERDICT__STAGE__STAGE_INPUT;
        v->classifier = (char *)ts_safety_name(g_safety);
        v->part_index = (uint32_t)i;
        v->n_scores = np;
        v->scores = pp + i * np;
        char audit[2048];
        size_t al = 0;
        audit[0] = '\0';
        for (size_t k = 0; k < np; k++) {
            Tessera__V1__PolicyScore *s = &ps[i * np + k];
            tessera__v1__policy_score__init(s);
            s->policy = (char *)names[k];
            s->probability = sc[k];
            s->violated = sc[k] >= dth[k];
            v->blocked |= s->violated;
            pp[i * np + k] = s;
            if (al < sizeof audit)
                al += (size_t)snprintf(audit + al, sizeof audit - al, " %s=%.4f", names[k], sc[k]);
        }
        vp[i] = v;
        TS_LOG_INFO("safety audit: CheckSafety tenant '%s' part %zu:%s -> %s", t_tenant, i, audit,
                    v->blocked ? "violates" : "ok");
    }
    Tessera__V1__SafetyCheckResponse resp = TESSERA__V1__SAFETY_CHECK_RESPONSE__INIT;
    resp.n_verdicts = q->n_parts;
    resp.verdicts = vp;
    ts_rpc_call_send(c, &resp.base);
    ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
out:
    ts_free(vs);
    ts_free(vp);
    ts_free(ps);
    ts_free(pp);
    ts_sp_unref(set);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* ------------------------------------------------------------ the safety gate */
/* Every image of a Generate/GenerateStream chat is scored by ShieldGemma 2 before the
 * request is admitted (docs/daemon.md "Safety gate"). The scoring runs on one gate thread
 * (seconds per image on the CPU), never on a completion-queue thread; a request over a
 * policy's threshold finishes with FINISH_REASON_SAFETY and its verdicts (status OK). */

#define GATE_QUEUE_MAX 64
static pthread_mutex_t g_thr_mu = PTHREAD_MUTEX_INITIALIZER;
static ts_sp_set *g_policies; /* safety-policies + safety-thresholds; SIGHUP swaps (g_thr_mu) */
static atomic_bool g_fail_open; /* safety-fail-open */

/* The policy set in use (a reference: ts_sp_unref). */
static ts_sp_set *policies_get(void) {
    pthread_mutex_lock(&g_thr_mu);
    ts_sp_set *s = ts_sp_ref(g_policies);
    pthread_mutex_unlock(&g_thr_mu);
    return s;
}

/* Installs a new set (takes the reference); its custom labels show in the metrics. */
static void policies_set(ts_sp_set *s) {
    for (size_t i = 0; i < s->n; i++) ts_metrics_safety_register(s->p[i].label);
    pthread_mutex_lock(&g_thr_mu);
    ts_sp_set *old = g_policies;
    g_policies = s;
    pthread_mutex_unlock(&g_thr_mu);
    ts_sp_unref(old);
}

typedef struct {
    ts_rpc_call *c;
    Tessera__V1__GenerateRequest *q;
    bool stream, annotate, unscreened; /* unscreened: fail open without a classifier */
    ts_sp_set *set;                    /* the policies at admission (a reference) */
    float th[TS_SP_MAX];
    char id[TS_REQ_ID_MAX + 1], tenant[TS_TENANT_MAX];
} gate_job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gate_job *jobs[GATE_QUEUE_MAX];
    size_t head, n;
    bool stop, started;
    pthread_t th;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static size_t chat_images(const Tessera__V1__GenerateRequest *q) {
    if (q->input_case != TESSERA__V1__GENERATE_REQUEST__INPUT_CHAT || !q->chat) return 0;
    size_t n = 0;
    for (size_t m = 0; m < q->chat->n_messages; m++)
        for (size_t k = 0; k < q->chat->messages[m]->n_parts; k++)
            n += q->chat->messages[m]->parts[k]->part_case == TESSERA__V1__CONTENT_PART__PART_IMAGE;
    return n;
}

static void gate_metrics(const ts_sp_set *set, const bool *violated, ts_safety_outcome none,
                         ts_safety_outcome hit) {
    for (size_t p = 0; set && p < set->n; p++)
        ts_metrics_safety_label(set->p[p].label, violated && violated[p] ? hit : none);
}

/* A blocked request: status OK, finish reason SAFETY, the verdicts, no tokens. */
static void gate_send_blocked(gate_job *j, Tessera__V1__SafetyVerdict **vp, size_t nv) {
    Tessera__V1__Usage u = TESSERA__V1__USAGE__INIT;
    Tessera__V1__Timing tm = TESSERA__V1__TIMING__INIT;
    if (j->stream) {
        Tessera__V1__GenerateStreamResponse m = TESSERA__V1__GENERATE_STREAM_RESPONSE__INIT;
        Tessera__V1__GenerateStreamResponse__Started st =
            TESSERA__V1__GENERATE_STREAM_RESPONSE__STARTED__INIT;
        st.request_id = j->id;
        st.model = g_model_name;
        m.event_case = TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_STARTED;
        m.started = &st;
        ts_rpc_call_send(j->c, &m.base);
        for (size_t i = 0; i < nv; i++) {
            Tessera__V1__GenerateStreamResponse s = TESSERA__V1__GENERATE_STREAM_RESPONSE__INIT;
            s.event_case = TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_SAFETY;
            s.safety = vp[i];
            ts_rpc_call_send(j->c, &s.base);
        }
        Tessera__V1__GenerateStreamResponse f = TESSERA__V1__GENERATE_STREAM_RESPONSE__INIT;
        Tessera__V1__GenerateStreamResponse__Finished fin =
            TESSERA__V1__GENERATE_STREAM_RESPONSE__FINISHED__INIT;
        fin.finish_reason = TESSERA__V1__FINISH_REASON__FINISH_REASON_SAFETY;
        fin.usage = &u;
        fin.timing = &tm;
        f.event_case = TESSERA__V1__GENERATE_STREAM_RESPONSE__EVENT_FINISHED;
        f.finished = &fin;
        ts_rpc_call_send(j->c, &f.base);
    } else {
        Tessera__V1__GenerateResponse m = TESSERA__V1__GENERATE_RESPONSE__INIT;
        m.request_id = j->id;
        m.model = g_model_name;
        m.text = "";
        m.finish_reason = TESSERA__V1__FINISH_REASON__FINISH_REASON_SAFETY;
        m.usage = &u;
        m.timing = &tm;
        m.n_safety = nv;
        m.safety = vp;
        ts_rpc_call_send(j->c, &m.base);
    }
    ts_rpc_call_finish(j->c, GRPC_STATUS_OK, NULL);
}

/* Scores every image of j's chat; blocks, refuses or admits the request. Frees j->q. */
static void gate_run(gate_job *j) {
    snprintf(t_tenant, sizeof t_tenant, "%s", j->tenant);
    if (j->unscreened) { /* admitted here so that the images are encoded off the CQ threads */
        generate_admit(j->c, j->q, j->stream, j->id);
        ts_rpc_call_unref(j->c);
        ts_sp_unref(j->set);
        ts_free(j);
        return;
    }
    const ts_sp_set *set = j->set;
    const size_t np = set->n;
    const char *texts[TS_SP_MAX];
    for (size_t p = 0; p < np; p++) texts[p] = set->p[p].text;
    const Tessera__V1__Chat *chat = j->q->chat;
    const char *tenant = j->tenant[0] ? j->tenant : "-";
    size_t n_img = chat_images(j->q);
    Tessera__V1__SafetyVerdict *vs = ts_calloc(n_img, sizeof *vs);
    Tessera__V1__SafetyVerdict **vp = ts_calloc(n_img, sizeof *vp);
    Tessera__V1__PolicyScore *ps = ts_calloc(n_img * np, sizeof *ps);
    Tessera__V1__PolicyScore **pp = ts_calloc(n_img * np, sizeof *pp);
    char audit[2048];
    size_t al = 0;
    audit[0] = '\0';
    bool admit = false, violated[TS_SP_MAX] = {false};
    if (!vs || !vp || !ps || !pp) {
        ts_rpc_call_finish(j->c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t vi = 0, flat = 0;
    bool blocked = false;
    for (size_t m = 0; m < chat->n_messages; m++) {
        for (size_t k = 0; k < chat->messages[m]->n_parts; k++, flat++) {
            const Tessera__V1__ContentPart *part = chat->messages[m]->parts[k];
            if (part->part_case != TESSERA__V1__CONTENT_PART__PART_IMAGE) continue;
            float sc[TS_SP_MAX];
            ts_status rc = part->image ? ts_safety_score(g_safety, part->image->data.data,
                                                         part->image->data.len, texts, np, sc)
                                       : TS_FAIL(TS_INVAL, "no image data");
            if (rc != TS_OK && grpc_code_of(rc) == GRPC_STATUS_INVALID_ARGUMENT) {
                TS_LOG_INFO("safety audit: request %s tenant %s part %zu: invalid image -> "
                            "refused", j->id, tenant, flat);
                ts_rpc_call_finish_invalid(j->c, "chat.messages[%zu].parts[%zu]: %s", m, k,
                                           ts_last_error());
                goto out;
            }
            if (rc != TS_OK) {
                gate_metrics(set, NULL, TS_SAFETY_ERROR, TS_SAFETY_ERROR);
                bool open = atomic_load(&g_fail_open);
                TS_LOG_WARN("safety audit: request %s tenant %s part %zu: classifier error (%s) "
                            "-> %s", j->id, tenant, flat, ts_last_error(),
                            open ? "allowed (safety-fail-open)" : "refused");
                if (open)
                    admit = true;
                else
                    ts_rpc_call_finish(j->c, GRPC_STATUS_UNAVAILABLE, "request %s: the safety "
                                       "classifier failed: %s", j->id, ts_last_error());
                goto out;
            }
            Tessera__V1__SafetyVerdict *v = &vs[vi];
            tessera__v1__safety_verdict__init(v);
            v->stage = TESSERA__V1__SAFETY_VERDICT__STAGE__STAGE_INPUT;
            v->classifier = (char *)ts_safety_name(g_safety);
            v->part_index = (uint32_t)flat;
            v->n_scores = np;
            v->scores = pp + vi * np;
            if (al < sizeof audit)
                al += (size_t)snprintf(audit + al, sizeof audit - al, " part %zu:", flat);
            for (size_t p = 0; p < np; p++) {
                Tessera__V1__PolicyScore *s = &ps[vi * np + p];
                tessera__v1__policy_score__init(s);
                s->policy = (char *)set->p[p].name;
                s->probability = sc[p];
                s->violated = sc[p] >= j->th[p];
                violated[p] |= s->violated;
                v->blocked |= s->violated && !j->annotate;
                pp[vi * np + p] = s;
                if (al < sizeof audit)
                    al += (size_t)snprintf(audit + al, sizeof audit - al, " %s=%.4f",
                                           set->p[p].name, (double)sc[p]);
            }
            blocked |= v->blocked;
            vp[vi++] = v;
        }
    }
    TS_LOG_INFO("safety audit: request %s tenant %s images %zu:%s -> %s", j->id, tenant, vi,
                audit, blocked ? "blocked" : j->annotate ? "allowed (annotate)" : "allowed");
    gate_metrics(set, violated, TS_SAFETY_ALLOWED, blocked ? TS_SAFETY_BLOCKED : TS_SAFETY_ALLOWED);
    if (blocked)
        gate_send_blocked(j, vp, vi);
    else
        admit = true;
out:
    ts_free(vs);
    ts_free(vp);
    ts_free(ps);
    ts_free(pp);
    if (admit)
        generate_admit(j->c, j->q, j->stream, j->id);
    else
        protobuf_c_message_free_unpacked(&j->q->base, NULL);
    ts_rpc_call_unref(j->c);
    ts_sp_unref(j->set);
    ts_free(j);
}

static void *gate_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&G.mu);
    for (;;) {
        while (!G.stop && G.n == 0) pthread_cond_wait(&G.cv, &G.mu);
        if (G.n == 0) break;
        gate_job *j = G.jobs[G.head];
        G.head = (G.head + 1) % GATE_QUEUE_MAX;
        G.n--;
        bool stop = G.stop;
        pthread_mutex_unlock(&G.mu);
        if (stop) { /* shutting down: no more scoring */
            ts_rpc_call_finish(j->c, GRPC_STATUS_UNAVAILABLE, "server is shutting down");
            protobuf_c_message_free_unpacked(&j->q->base, NULL);
            ts_rpc_call_unref(j->c);
            ts_sp_unref(j->set);
            ts_free(j);
        } else {
            gate_run(j);
        }
        pthread_mutex_lock(&G.mu);
    }
    pthread_mutex_unlock(&G.mu);
    return NULL;
}

static void gate_stop(void) {
    if (!G.started) return;
    pthread_mutex_lock(&G.mu);
    G.stop = true;
    pthread_cond_broadcast(&G.cv);
    pthread_mutex_unlock(&G.mu);
    pthread_join(G.th, NULL);
    G.started = false;
}

static void policies_free(void) {
    pthread_mutex_lock(&g_thr_mu);
    ts_sp_set *s = g_policies;
    g_policies = NULL;
    pthread_mutex_unlock(&g_thr_mu);
    ts_sp_unref(s);
}

/* "dangerous=0.5000 sexual=0.9900 ..." for logs. */
static void policies_desc(const ts_sp_set *set, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < set->n && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s=%.4f", i ? " " : "", set->p[i].name,
                               (double)set->p[i].threshold);
}

/* SIGHUP: the policy set (safety-policies, safety-thresholds), safety-fail-open and
 * safety-timeout (a safety rank's) from the
 * config file again. The set is rebuilt from the file alone (built-ins at 0.5, then the
 * file's settings); a file with neither setting keeps the set in use; any error keeps
 * everything. */
static void gate_reload(const char *path) {
    if (!path) {
        TS_LOG_INFO("SIGHUP: no --config file: safety thresholds unchanged");
        return;
    }
    config_t c;
    config_init(&c);
    if (config_read_file(&c, path) != CONFIG_TRUE) {
        TS_LOG_ERROR("SIGHUP: %s:%d: %s; keeping the safety thresholds in use", path,
                     config_error_line(&c), config_error_text(&c));
        config_destroy(&c);
        return;
    }
    const char *spec = NULL;
    int open = 0;
    const config_setting_t *list = config_lookup(&c, "safety-policies");
    if (config_lookup_string(&c, "safety-thresholds", &spec) != CONFIG_TRUE) spec = NULL;
    char err[512];
    ts_sp_set *set = list || spec ? ts_sp_build(list, spec, path, err, sizeof err)
                                  : policies_get();
    if (!set) {
        TS_LOG_ERROR("SIGHUP: %s; keeping the safety policies and thresholds in use", err);
    } else {
        policies_set(set);
        if (config_lookup_int(&c, "safety-fail-open", &open) == CONFIG_TRUE)
            atomic_store(&g_fail_open, open != 0);
        int to = 0;
        if (config_lookup_int(&c, "safety-timeout", &to) == CONFIG_TRUE) {
            if (to < 1 || to > 86400) {
                TS_LOG_ERROR("SIGHUP: %s: safety-timeout %d is not in [1, 86400]; keeping the "
                             "timeout in use", path, to);
            } else {
                ts_safety_set_timeout(g_safety, to);
                TS_LOG_INFO("SIGHUP: safety-timeout %d s", to);
            }
        }
        char d[TS_SP_MAX * (TS_SP_NAME_MAX + 16)];
        policies_desc(set, d, sizeof d);
        TS_LOG_INFO("SIGHUP: safety thresholds %s, fail %s", d,
                    atomic_load(&g_fail_open) ? "open" : "closed");
    }
    config_destroy(&c);
}

static void handle_generate(ts_rpc_call *c, void *ctx) {
    bool stream = ctx != NULL;
    Tessera__V1__GenerateRequest *q = (Tessera__V1__GenerateRequest *)ts_rpc_call_unpack(
        c, &tessera__v1__generate_request__descriptor);
    if (!q) {
        ts_rpc_call_finish_invalid(c, "malformed GenerateRequest");
        return;
    }
    /* no image, or an error that generate_admit reports before anything is scored (a
     * text-only model refuses image parts) */
    if (chat_images(q) == 0 || !g_vision || ts_rpc_server_draining() ||
        (q->model[0] && strcmp(q->model, g_model_name)) || strlen(q->request_id) > TS_REQ_ID_MAX) {
        generate_admit(c, q, stream, NULL);
        return;
    }
    gate_job *j = ts_calloc(1, sizeof *j);
    if (!j) {
        ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        protobuf_c_message_free_unpacked(&q->base, NULL);
        return;
    }
    j->c = c;
    j->q = q;
    j->stream = stream;
    snprintf(j->tenant, sizeof j->tenant, "%s", t_tenant);
    if (q->request_id[0])
        snprintf(j->id, sizeof j->id, "%s", q->request_id);
    else
        snprintf(j->id, sizeof j->id, "req-%" PRIu64,
                 (uint64_t)atomic_fetch_add(&g_req_counter, 1) + 1);
    j->set = policies_get();
    for (size_t p = 0; p < j->set->n; p++) j->th[p] = j->set->p[p].threshold;
    const Tessera__V1__SafetyOptions *so = q->safety;
    if (so && so->mode == TESSERA__V1__SAFETY_OPTIONS__MODE__MODE_OFF) {
        ts_rpc_call_finish(c, GRPC_STATUS_PERMISSION_DENIED,
                           "safety.mode: OFF is not allowed for requests with images");
        goto refuse;
    }
    j->annotate = so && so->mode == TESSERA__V1__SAFETY_OPTIONS__MODE__MODE_ANNOTATE;
    for (size_t i = 0; so && i < so->n_thresholds; i++) {
        const char *key = so->thresholds[i]->key;
        float v = so->thresholds[i]->value;
        int k = ts_sp_find(j->set, key);
        if (k < 0) {
            char names[TS_SP_MAX * (TS_SP_NAME_MAX + 2) + 1];
            ts_sp_names(j->set, names, sizeof names);
            ts_rpc_call_finish_invalid(c, "safety.thresholds: unknown policy '%.64s' (%s)", key,
                                       names);
            goto refuse;
        }
        if (!(v >= 0.0f && v <= 1.0f)) {
            ts_rpc_call_finish_invalid(c, "safety.thresholds[%.64s]: must be in [0, 1]", key);
            goto refuse;
        }
        if (v < j->th[k]) j->th[k] = v; /* a request may only make a policy stricter */
    }
    if (!g_safety) {
        gate_metrics(j->set, NULL, TS_SAFETY_ERROR, TS_SAFETY_ERROR);
        bool open = atomic_load(&g_fail_open);
        TS_LOG_WARN("safety audit: request %s tenant %s images %zu: no classifier -> %s", j->id,
                    j->tenant[0] ? j->tenant : "-", chat_images(q),
                    open ? "allowed (safety-fail-open)" : "refused");
        if (!open) {
            ts_rpc_call_finish(c, GRPC_STATUS_UNAVAILABLE, "request %s: images are refused: no "
                               "safety classifier is configured (tesserad --safety-model, or "
                               "safety-fail-open = 1)", j->id);
            goto refuse;
        }
        j->unscreened = true;
    }
    ts_rpc_call_ref(c);
    pthread_mutex_lock(&G.mu);
    bool queued = G.started && !G.stop && G.n < GATE_QUEUE_MAX;
    if (queued) {
        G.jobs[(G.head + G.n) % GATE_QUEUE_MAX] = j;
        G.n++;
        pthread_cond_signal(&G.cv);
    }
    pthread_mutex_unlock(&G.mu);
    if (queued) return;
    ts_rpc_call_unref(c);
    ts_rpc_call_finish_retry(c, 1000, "request %s: the safety filter queue is full (%d); retry in "
                             "1000 ms", j->id, GATE_QUEUE_MAX);
refuse:
    ts_sp_unref(j->set);
    ts_free(j);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* --------------------------------------------------------------------- main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: tesserad [--config FILE] -m MODEL --listen HOST:PORT [options]\n\n"
            "Serves tessera.v1.Inference, grpc.health.v1.Health and server reflection (gRPC).\n\n"
            "  -c, --config FILE         settings file (libconfig syntax; the options below\n"
            "                            without the leading dashes; flags override it)\n"
            "  -m, --model FILE          Gemma 3 GGUF file\n"
            "      --listen HOST:PORT    address to bind (port 0: any free port; printed)\n"
            "      --ctx N               context length per sequence (default min(model, 8192))\n"
            "      --slots N             sequences running at once (default 8)\n"
            "      --batch N             tokens per engine step (default 512)\n"
            "      --threads N           CPU threads (default: all)\n"
            "      --backend cpu|cuda    compute backend (default cpu)\n"
            "      --device N            CUDA device of --backend cuda (default 0)\n"
            "      --gpu-mem-limit BYTES cap on what this rank's engine allocates (e.g. 12GiB;\n"
            "                            CPU ranks: host memory); each rank may give its own\n"
            "      --queue N             waiting requests at most (default 64)\n"
            "      --max-tokens-default N  for requests with max_tokens 0 (default 256)\n"
            "      --grace-seconds N     on SIGTERM/SIGINT/SIGUSR1, time for running requests (default 30)\n"
            "      --max-recv-mb N       largest request message in MiB (default 16)\n"
            "      --cq-threads N        gRPC completion-queue threads (default 2)\n"
            "      --prefix-cache-tokens N  prefix cache size in tokens: prompts that start\n"
            "                            like an earlier one reuse its KV pages (default 4096;\n"
            "                            0 turns it off)\n"
            "      --log-level L         error, warn, info, debug, trace (default info)\n"
            "      --api-keys FILE       API keys, `KEY TENANT` per line (SIGHUP reloads);\n"
            "                            without it there is no authentication\n"
            "      --tls-cert FILE       TLS certificate chain (PEM); with --tls-key\n"
            "      --tls-key FILE        its private key (PEM)\n"
            "      --tp T, --pp P        tensor / pipeline parallel ranks under mpirun\n"
            "                            (default tp 1, pp = ranks / tp); rank 0 serves;\n"
            "                            auto: chosen from every rank's free memory\n"
            "                            (--tp auto alone: both; config: tp = \"auto\";)\n"
            "      --safety-model FILE   ShieldGemma 2 language model (GGUF) for CheckSafety\n"
            "      --safety-vision PATH  its vision tower: mmproj GGUF or HF checkpoint dir\n"
            "      --safety-ids B,E,I,Y,N  marker / answer token ids (test vocabularies)\n"
            "      --safety-thresholds P=T,...  image gate thresholds on P(violation) for\n"
            "                            dangerous, sexual, violence and custom policies\n"
            "                            (default 0.5 each; SIGHUP reloads them from the\n"
            "                            --config file, as its safety-policies list)\n"
            "      --safety-fail-open 0|1  admit images when no classifier works (default 0)\n"
            "      --safety-rank auto|N|none  under mpirun: the rank that runs ShieldGemma 2\n"
            "                            (auto: the last one when the job has tp x pp + 1\n"
            "                            ranks; none: in rank 0's process)\n"
            "      --safety-timeout S    seconds to wait for the safety rank (default 120)\n"
            "      --vision PATH         the model's vision tower (mmproj GGUF or HF checkpoint):\n"
            "                            chat messages may then carry images\n"
            "      --vision-ids B,E,I    image marker token ids (test vocabularies)\n"

            "      --metrics HOST:PORT   serve Prometheus metrics at http://HOST:PORT/metrics\n"
            "      --log-format F        text (default) or json (one object per line)\n");
}

/* The options, for the command line (--name) and the config file (name = value;). */
/* O_PAR: int or auto; O_CONFIG_ONLY: a setting read on its own from the file */
typedef enum { O_INT, O_STR, O_LOGLEVEL, O_LOGFORMAT, O_PAR, O_CONFIG_ONLY } opt_kind;
static const struct optdef {
    const char *name;
    opt_kind kind;
    int32_t lo, hi;
    size_t off;
} g_optdefs[] = {
    {"model", O_STR, 0, 0, offsetof(opts, model)},
    {"listen", O_STR, 0, 0, offsetof(opts, listen)},
    {"ctx", O_INT, 1, 1 << 20, offsetof(opts, n_ctx)},
    {"slots", O_INT, 1, 1024, offsetof(opts, slots)},
    {"batch", O_INT, 1, 65536, offsetof(opts, batch)},
    {"threads", O_INT, 1, 1024, offsetof(opts, threads)},
    {"queue", O_INT, 1, 1 << 20, offsetof(opts, queue)},
    {"max-tokens-default", O_INT, 1, 1 << 20, offsetof(opts, max_tokens_default)},
    {"grace-seconds", O_INT, 0, 86400, offsetof(opts, grace_s)},
    {"max-recv-mb", O_INT, 1, 1024, offsetof(opts, max_recv_mb)},
    {"cq-threads", O_INT, 1, 16, offsetof(opts, cq_threads)},
    {"prefix-cache-tokens", O_INT, 0, 1 << 24, offsetof(opts, prefix_cache_tokens)},
    {"log-level", O_LOGLEVEL, 0, 0, offsetof(opts, log_level)},
    {"api-keys", O_STR, 0, 0, offsetof(opts, api_keys)},
    {"tls-cert", O_STR, 0, 0, offsetof(opts, tls_cert)},
    {"tls-key", O_STR, 0, 0, offsetof(opts, tls_key)},
    {"backend", O_STR, 0, 0, offsetof(opts, backend)},
    {"gpu-mem-limit", O_STR, 0, 0, offsetof(opts, gpu_mem_limit)},
    {"device", O_INT, 0, 64, offsetof(opts, device)},
    {"tp", O_PAR, 1, 64, offsetof(opts, tp)},
    {"pp", O_PAR, 1, 64, offsetof(opts, pp)},
    {"safety-model", O_STR, 0, 0, offsetof(opts, safety_model)},
    {"safety-vision", O_STR, 0, 0, offsetof(opts, safety_vision)},
    {"safety-ids", O_STR, 0, 0, offsetof(opts, safety_ids)},
    {"safety-thresholds", O_STR, 0, 0, offsetof(opts, safety_thresholds)},
    {"vision", O_STR, 0, 0, offsetof(opts, vision)},
    {"vision-ids", O_STR, 0, 0, offsetof(opts, vision_ids)},
    {"safety-fail-open", O_INT, 0, 1, offsetof(opts, safety_fail_open)},
    {"safety-policies", O_CONFIG_ONLY, 0, 0, 0},
    {"safety-rank", O_STR, 0, 0, offsetof(opts, safety_rank)},
    {"safety-timeout", O_INT, 1, 86400, offsetof(opts, safety_timeout)},
    {"metrics", O_STR, 0, 0, offsetof(opts, metrics)},
    {"log-format", O_LOGFORMAT, 0, 0, offsetof(opts, log_format)},
};
#define N_OPTDEFS (sizeof g_optdefs / sizeof g_optdefs[0])

static const struct optdef *optdef_find(const char *name) {
    for (size_t i = 0; i < N_OPTDEFS; i++)
        if (!strcmp(g_optdefs[i].name, name)) return &g_optdefs[i];
    return NULL;
}

/* Sets one option from text (a flag's value). where: "--name" or "FILE:LINE: name". */
static int opt_set_str(opts *o, const struct optdef *d, const char *where, const char *v) {
    void *dst = (char *)o + d->off;
    if (d->kind == O_PAR && !strcmp(v, "auto")) {
        *(int32_t *)dst = TS_CMD_PAR_AUTO;
        return 0;
    }
    if (d->kind == O_INT || d->kind == O_PAR) {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < d->lo || x > d->hi) {
            fprintf(stderr, "tesserad: %s expects %san integer in [%d, %d], got '%s'\n", where,
                    d->kind == O_PAR ? "auto or " : "", d->lo, d->hi, v);
            return -1;
        }
        *(int32_t *)dst = (int32_t)x;
        return 0;
    }
    if (d->kind == O_LOGLEVEL && ts_log_parse_level(v) < 0) {
        fprintf(stderr, "tesserad: %s: unknown log level '%s'\n", where, v);
        return -1;
    }
    if (d->kind == O_CONFIG_ONLY) {
        fprintf(stderr, "tesserad: %s: this setting is only read from the --config file\n", where);
        return -1;
    }
    if (d->kind == O_LOGFORMAT && ts_log_parse_format(v) < 0) {
        fprintf(stderr, "tesserad: %s: unknown log format '%s' (text or json)\n", where, v);
        return -1;
    }
    *(const char **)dst = v;
    return 0;
}

/* The --config file: every setting must be a known option of the right type. Strings
 * point into cfg (kept until exit). */
static int load_config(opts *o, const char *path, config_t *cfg) {
    config_init(cfg);
    if (config_read_file(cfg, path) != CONFIG_TRUE) {
        if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
            fprintf(stderr, "tesserad: %s: cannot read the file: %s\n", path, strerror(errno));
        else
            fprintf(stderr, "tesserad: %s:%d: %s\n", path, config_error_line(cfg),
                    config_error_text(cfg));
        return -1;
    }
    config_setting_t *root = config_root_setting(cfg);
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        config_setting_t *st = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(st);
        int line = (int)config_setting_source_line(st);
        const struct optdef *d = name ? optdef_find(name) : NULL;
        if (!d) {
            fprintf(stderr, "tesserad: %s:%d: unknown setting '%s'\n", path, line,
                    name ? name : "?");
            return -1;
        }
        int type = config_setting_type(st);
        char where[512];
        snprintf(where, sizeof where, "%s:%d: %s", path, line, name);
        if (d->kind == O_CONFIG_ONLY) {
            continue; /* read on its own (safety-policies: parse_args, gate_reload) */
        } else if (d->kind == O_PAR && type == CONFIG_TYPE_STRING) { /* tp = "auto"; */
            if (opt_set_str(o, d, where, config_setting_get_string(st))) return -1;
        } else if (d->kind == O_INT || d->kind == O_PAR) {
            if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
                fprintf(stderr, "tesserad: %s must be an integer (e.g. %s = 8;)\n", where, name);
                return -1;
            }
            long long x = config_setting_get_int64(st);
            if (x < d->lo || x > d->hi) {
                fprintf(stderr, "tesserad: %s expects an integer in [%d, %d], got %lld\n", where,
                        d->lo, d->hi, x);
                return -1;
            }
            *(int32_t *)((char *)o + d->off) = (int32_t)x;
        } else {
            if (type != CONFIG_TYPE_STRING) {
                fprintf(stderr, "tesserad: %s must be a string (e.g. %s = \"...\";)\n", where, name);
                return -1;
            }
            if (opt_set_str(o, d, where, config_setting_get_string(st))) return -1;
        }
    }
    return 0;
}

static int parse_args(int argc, char **argv, opts *o, config_t *cfg, bool *have_cfg) {
    *o = (opts){.slots = 8, .batch = 512, .queue = 64, .max_tokens_default = 256, .grace_s = 30,
                .max_recv_mb = 16, .cq_threads = 2, .prefix_cache_tokens = 4096};
    *have_cfg = false;
    ts_log_set_level(TS_LOG_LEVEL_INFO);
    const char *env = getenv("TESSERA_LOG");
    if (env && ts_log_parse_level(env) >= 0) ts_log_set_level((ts_log_level)ts_log_parse_level(env));
    /* the config file first: flags override it */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 1;
        }
        if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) && i + 1 < argc)
            o->config = argv[i + 1];
    }
    if (o->config) {
        *have_cfg = true;
        if (load_config(o, o->config, cfg)) return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "tesserad: unknown option or missing value: '%s'\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--config") || !strcmp(a, "-c")) continue;
        const struct optdef *d = !strcmp(a, "-m") ? optdef_find("model")
                                 : !strncmp(a, "--", 2) ? optdef_find(a + 2)
                                                        : NULL;
        if (!d) {
            fprintf(stderr, "tesserad: unknown option '%s'\n", a);
            return -1;
        }
        if (opt_set_str(o, d, a, v)) return -1;
    }
    if (o->log_level) ts_log_set_level((ts_log_level)ts_log_parse_level(o->log_level));
    if (o->log_format) ts_log_set_format((ts_log_format)ts_log_parse_format(o->log_format));
    if (!o->model || !o->listen) {
        fprintf(stderr, "tesserad: -m MODEL and --listen HOST:PORT are required\n");
        return -1;
    }
    atomic_store(&g_fail_open, o->safety_fail_open != 0);
    if (!o->safety_model != !o->safety_vision) {
        fprintf(stderr, "tesserad: --safety-model and --safety-vision go together\n");
        return -1;
    }
    if (!o->tls_cert != !o->tls_key) {
        fprintf(stderr, "tesserad: --tls-cert and --tls-key go together\n");
        return -1;
    }
    if (o->backend && strcmp(o->backend, "cpu") && strcmp(o->backend, "cuda")) {
        fprintf(stderr, "tesserad: --backend expects cpu or cuda, got '%s'\n", o->backend);
        return -1;
    }
    if (o->gpu_mem_limit &&
        ts_cmd_parse_bytes("tesserad", "--gpu-mem-limit", o->gpu_mem_limit, &o->mem_limit))
        return -1;
    {
        /* the policy set: built-ins, the file's safety-policies, then safety-thresholds (the
         * flag's, else the file's) */
        char err[512];
        const config_setting_t *list = *have_cfg ? config_lookup(cfg, "safety-policies") : NULL;
        ts_sp_set *set = ts_sp_build(list, o->safety_thresholds, o->config ? o->config : "tesserad",
                                     err, sizeof err);
        if (!set) {
            fprintf(stderr, "tesserad: %s\n", err);
            return -1;
        }
        policies_set(set);
        atexit(policies_free);
    }
    return 0;
}

/* Reads a whole (small) file; NULL with a message on error. */
static char *slurp(const char *what, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tesserad: %s %s: %s\n", what, path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            if (cap > (16u << 20)) {
                fprintf(stderr, "tesserad: %s %s: too large\n", what, path);
                free(b);
                b = NULL;
                break;
            }
            char *q = realloc(b, cap *= 2);
            if (!q) {
                free(b);
                b = NULL;
                break;
            }
            b = q;
        }
        size_t got = fread(b + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (b) b[n] = '\0';
    return b;
}

static bool is_loopback(const char *listen) {
    static const char *const lo[] = {"127.", "localhost:", "[::1]:", "unix:", "ipv4:127.",
                                     "ipv6:[::1]:"};
    for (size_t i = 0; i < sizeof lo / sizeof lo[0]; i++)
        if (!strncmp(listen, lo[i], strlen(lo[i]))) return true;
    return false;
}

/* The signals main sigwait()s for on rank 0 (and the other ranks ignore): SIGINT, SIGTERM
 * and SIGUSR1 (a graceful stop mpirun forwards; SIGTERM it does not) drain; SIGHUP and
 * SIGUSR2 (a reload mpirun forwards; SIGHUP ends its job) reload. */
static void daemon_sigset(sigset_t *ss) {
    sigemptyset(ss);
    sigaddset(ss, SIGINT);
    sigaddset(ss, SIGTERM);
    sigaddset(ss, SIGHUP);
    sigaddset(ss, SIGUSR1);
    sigaddset(ss, SIGUSR2);
}

/* ------------------------------------------------------------ several ranks */

static ts_transport *g_tr; /* NULL: one rank */
static ts_cmd_dist g_dist; /* the layout and budgets (dist.h) */

/* A rank other than 0 of `mpirun -np N tesserad`: holds its slice of the model and runs
 * rank 0's commands until rank 0 stops (after its drain) or the job breaks. The shutdown
 * signals are rank 0's business: here they are ignored (mpirun ends a broken job). */
static int serve_rank(const opts *o, ts_transport *tr) {
    sigset_t ss;
    daemon_sigset(&ss);
    pthread_sigmask(SIG_BLOCK, &ss, NULL);
    ts_engine_params ep = {.model_path = o->model, .n_threads = o->threads, .n_ctx = o->n_ctx,
                           .n_seq_max = o->slots, .n_batch = o->batch,
                           .backend = o->backend,
                           .device = tr->device >= 0 ? tr->device : o->device,
                           .mem_limit = o->mem_limit, .transport = tr, .tp = g_dist.tp,
                           .pp = g_dist.pp, .rank_mem = g_dist.rank_mem};
    ts_engine *e = NULL;
    ts_status st = ts_engine_create(&ep, &e);
    if (st != TS_OK) {
        /* plan refusals are the same on every rank: rank 0 reports them */
        if (st != TS_INVAL) {
            fprintf(stderr, "tesserad: rank %d: %s\n", tr->rank, ts_last_error());
            tr->ops->abort(tr, 1);
        }
        ts_transport_close(tr);
        return 1;
    }
    const ts_plan_rank *me = ts_engine_plan_rank(e);
    TS_LOG_INFO("rank %d: stage %d, tp rank %d, layers [%d, %d): serving rank 0's steps",
                tr->rank, me->stage, me->tp_rank, me->l0, me->l1);
    int rc = 0;
    if (ts_engine_serve(e) != TS_OK) {
        fprintf(stderr, "tesserad: rank %d: %s\n", tr->rank, ts_last_error());
        tr->ops->abort(tr, 1);
        rc = 1;
    }
    ts_engine_destroy(e);
    ts_transport_close(tr);
    return rc;
}

/* The scheduler lost the distributed engine: the running and queued requests were failed
 * with an error; give their replies a moment to leave, then end the whole job (a restart
 * by mpirun's caller, e.g. systemd, brings the service back). */
static void on_engine_lost(void *ctx, const char *msg) {
    (void)ctx;
    ts_rpc_health_set("", false);
    ts_rpc_health_set(SERVICE, false);
    fprintf(stderr, "tesserad: %s: ending the job\n", msg);
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    if (g_tr) g_tr->ops->abort(g_tr, 1);
    _exit(1);
}

/* Scrape-time gauges of the metrics endpoint (its thread). */
static void metrics_gauges(ts_metrics_gauges *g, void *ctx) {
    (void)ctx;
    ts_sched_stats st;
    ts_sched_get_stats(g_sched, &st);
    g->queued = st.queued;
    g->running = st.active;
    g->slots = st.slots;
    g->kv_pages_total = st.kv_pages_total;
    g->kv_pages_free = st.kv_pages_free;
    g->kv_page_size = st.page_size;
    g->n_ranks = 1;
    g->weight_bytes[0] = st.weight_bytes;
    g->kv_bytes[0] = st.kv_bytes;
    g->activation_bytes[0] = st.activation_bytes;
    /* several ranks: rank 0's own figures, the planner's estimates for the others */
    const ts_plan *pl = g_tr ? ts_engine_plan(ts_sched_engine(g_sched)) : NULL;
    if (pl) {
        g->n_ranks = pl->world < TS_METRICS_MAX_RANKS ? pl->world : TS_METRICS_MAX_RANKS;
        for (int32_t r = 1; r < g->n_ranks; r++) {
            g->weight_bytes[r] = pl->rank[r].weight_bytes;
            g->kv_bytes[r] = pl->rank[r].kv_bytes;
            g->activation_bytes[r] = 0;
        }
    }
}

/* ShieldGemma 2 on a rank of its own (docs/vision.md "Where the classifier runs"): every
 * rank decides alike from the options and the job's size. *srank: the world rank set aside
 * for it, or -1 (it runs in rank 0's process); *me: this process's world rank. -1 with a
 * message on bad options. */
static int safety_rank_plan(const opts *o, int32_t *srank, int32_t *me) {
    *srank = -1;
    *me = 0;
    const char *sr = o->safety_rank ? o->safety_rank : "auto";
    long n = -1;
    if (strcmp(sr, "auto") && strcmp(sr, "none")) {
        char *end;
        errno = 0;
        n = strtol(sr, &end, 10);
        if (errno || *end || end == sr || n < 0 || n > 4096) {
            fprintf(stderr, "tesserad: --safety-rank expects auto, none or a rank number, got "
                    "'%s'\n", sr);
            return -1;
        }
    }
    if (n > 0 && !o->safety_model) {
        fprintf(stderr, "tesserad: --safety-rank %ld: there is no --safety-model\n", n);
        return -1;
    }
    if (!strcmp(sr, "none") || n == 0 || !o->safety_model) return 0;
    if (!ts_transport_mpi_launched()) {
        if (n > 0) {
            fprintf(stderr, "tesserad: --safety-rank %ld: the daemon was not started by "
                    "mpirun\n", n);
            return -1;
        }
        return 0;
    }
#ifdef TS_HAVE_MPI
    int32_t world = 1;
    bool multiple = false;
    if (ts_transport_mpi_init(me, &world, &multiple) != TS_OK) {
        fprintf(stderr, "tesserad: %s\n", ts_last_error());
        return -1;
    }
    const int32_t tp = o->tp > 0 ? o->tp : 1;
    if (n > 0) {
        if (n >= world) {
            if (*me == 0)
                fprintf(stderr, "tesserad: --safety-rank %ld: the job has %d ranks\n", n, world);
            return -1;
        }
        *srank = (int32_t)n;
    } else if (o->tp >= 0 && o->pp > 0 && world == tp * o->pp + 1) { /* tp, pp fixed */
        *srank = world - 1;
    }
    if (*srank < 0) return 0;
    if (!multiple) {
        if (*me == 0)
            fprintf(stderr, "tesserad: a safety rank needs MPI_THREAD_MULTIPLE, which this MPI "
                    "library does not give (--safety-rank none runs the classifier in rank 0's "
                    "process)\n");
        return -1;
    }
    if (ts_transport_mpi_set_aside(*srank) != TS_OK) {
        fprintf(stderr, "tesserad: rank %d: %s\n", *me, ts_last_error());
        return -1;
    }
    return 0;
#else
    if (n > 0) {
        fprintf(stderr, "tesserad: --safety-rank %ld needs a build with MPI\n", n);
        return -1;
    }
    return 0;
#endif
}

/* Ends MPI where safety_rank_plan started it (else the transport's close did). */
static void mpi_done(void) {
#ifdef TS_HAVE_MPI
    if (ts_transport_mpi_launched()) ts_transport_mpi_end();
#endif
}

int main(int argc, char **argv) {
    opts o;
    config_t conf;
    bool have_cfg;
    int pr = parse_args(argc, argv, &o, &conf, &have_cfg);
    if (pr != 0) {
        if (have_cfg) config_destroy(&conf);
        return pr > 0 ? 0 : 2;
    }
    /* The signals main sigwait()s for (rank 0) or ignores (other ranks) are blocked before
     * any thread exists (MPI's, gRPC's, the engine's): a thread without the mask would take
     * them with the default action and end the process mid-drain. */
    {
        sigset_t early;
        daemon_sigset(&early);
        pthread_sigmask(SIG_BLOCK, &early, NULL);
    }
    /* ShieldGemma 2 on its own rank, when the job has one for it */
    int32_t srank = -1;
    {
        int32_t me = 0;
        if (safety_rank_plan(&o, &srank, &me)) {
            if (have_cfg) config_destroy(&conf);
            return 2;
        }
#ifdef TS_HAVE_MPI
        if (srank > 0 && me == srank) {
            int rc = ts_safety_serve_rank(o.safety_model, o.safety_vision, o.safety_ids,
                                          o.threads, o.backend);
            if (have_cfg) config_destroy(&conf);
            mpi_done();
            return rc;
        }
#endif
    }
    /* Under mpirun (or with --tp / --pp): one rank of a distributed engine (NCCL between
     * GPU ranks in a build with NCCL, else MPI). */
    {
        ts_cmd_dist_params dp = {.tp = o.tp, .pp = o.pp, .backend = o.backend, .model = o.model,
                                 .mem_limit = o.mem_limit, .n_ctx = o.n_ctx, .n_seq = o.slots,
                                 .n_batch = o.batch};
        int dr = ts_cmd_dist_open("tesserad", &dp, &g_dist);
        g_tr = g_dist.tr;
        if (dr) {
            if (have_cfg) config_destroy(&conf);
            return dr;
        }
        if (g_tr && g_tr->rank != 0) {
            int rc = serve_rank(&o, g_tr);
            if (have_cfg) config_destroy(&conf);
            mpi_done();
            return rc;
        }
    }
    int exit_code = 1;
    char *tls_cert = NULL, *tls_key = NULL;
    if (o.api_keys) {
        char err[512];
        g_keys_path = o.api_keys;
        if (!(g_keys = ts_apikeys_load(o.api_keys, err, sizeof err))) {
            fprintf(stderr, "tesserad: --api-keys %s\n", err);
            if (have_cfg) config_destroy(&conf);
            if (g_tr) g_tr->ops->abort(g_tr, 2); /* the other ranks wait for the engine */
            return 2;
        }
        g_auth_on = true;
        if (ts_apikeys_count(g_keys) == 0)
            TS_LOG_WARN("%s holds no keys: every Inference call will be refused", o.api_keys);
    }
    if (o.tls_cert && (!(tls_cert = slurp("--tls-cert", o.tls_cert)) ||
                       !(tls_key = slurp("--tls-key", o.tls_key)))) {
        free(tls_cert);
        ts_apikeys_free(g_keys);
        if (have_cfg) config_destroy(&conf);
        if (g_tr) g_tr->ops->abort(g_tr, 2);
        return 2;
    }

    /* Block the shutdown signals in every thread (engine, scheduler and gRPC threads
     * inherit the mask); main sigwait()s. */
    sigset_t ss;
    daemon_sigset(&ss);
    pthread_sigmask(SIG_BLOCK, &ss, NULL);
    signal(SIGPIPE, SIG_IGN);

    ts_sched_params sp = {
        .engine = {.model_path = o.model, .n_threads = o.threads, .n_ctx = o.n_ctx,
                   .n_seq_max = o.slots, .n_batch = o.batch,
                   .backend = o.backend,
                   .device = g_tr && g_tr->device >= 0 ? g_tr->device : o.device,
                   .mem_limit = o.mem_limit, .transport = g_tr, .tp = g_dist.tp,
                   .pp = g_dist.pp, .rank_mem = g_dist.rank_mem,
                   .prefix_cache_tokens = o.prefix_cache_tokens},
        .queue_max = o.queue,
        .max_tokens_default = o.max_tokens_default,
        .fatal = on_engine_lost,
    };
    ts_status cst = ts_sched_create(&sp, &g_sched);
    if (cst != TS_OK) {
        fprintf(stderr, "tesserad: %s\n", ts_last_error());
        /* a failure of this rank alone would leave the others waiting */
        if (g_tr && cst != TS_INVAL) g_tr->ops->abort(g_tr, 1);
        goto out;
    }
    if (g_tr) {
        const ts_plan *pl = ts_engine_plan(ts_sched_engine(g_sched));
        fputs(g_dist.report, stderr);
        fputs(pl->desc, stderr);
        g_plan_desc = pl->desc;
        g_tp = pl->tp;
        g_pp = pl->pp;
    }
    const ts_config *cfg = ts_sched_config(g_sched);
    if (cfg->name[0]) {
        snprintf(g_model_name, sizeof g_model_name, "%s", cfg->name);
    } else {
        const char *b = strrchr(o.model, '/');
        snprintf(g_model_name, sizeof g_model_name, "%s", b ? b + 1 : o.model);
    }
    if (ts_sched_start(g_sched) != TS_OK) {
        fprintf(stderr, "tesserad: %s\n", ts_last_error());
        ts_sched_destroy(g_sched);
        goto out;
    }

    if (o.safety_model) {
        /* in rank 0's process: on rank 0's device (backend cuda), beside its engine */
        const int sdev = g_tr && g_tr->device >= 0 ? g_tr->device : o.device;
#ifdef TS_HAVE_MPI
        ts_status src = srank > 0 ? ts_safety_open_remote(srank, o.safety_timeout > 0
                                                                     ? o.safety_timeout : 120,
                                                          &g_safety)
                                  : ts_safety_open(o.safety_model, o.safety_vision,
                                                   o.safety_ids, o.threads, o.backend, sdev,
                                                   &g_safety);
#else
        ts_status src = ts_safety_open(o.safety_model, o.safety_vision, o.safety_ids, o.threads,
                                       o.backend, sdev, &g_safety);
#endif
        if (src != TS_OK) {
            fprintf(stderr, "tesserad: safety classifier: %s\n", ts_last_error());
            ts_sched_destroy(g_sched);
            goto out;
        }
        /* part of the plan: where the classifier runs */
        fprintf(stderr, "safety classifier %s on %s (%s)\n", ts_safety_name(g_safety),
                ts_safety_where(g_safety),
                srank > 0 ? "a rank of its own" : "sharing rank 0's device with the engine");
        TS_LOG_INFO("safety classifier %s loaded on %s", ts_safety_name(g_safety),
                    ts_safety_where(g_safety));
    }

    if (o.vision) {
        ts_engine_info ei;
        ts_engine_get_info(ts_sched_engine(g_sched), &ei);
        ts_vision_params vp = {.n_threads = o.threads, .backend = o.backend, .device = o.device};
        ts_status vrc = g_tr && g_tr->world > 1
                            ? TS_FAIL(TS_UNSUPPORTED, "images need a single-rank engine for now")
                            : ts_vision_load(o.vision, &vp, &g_vision);
        if (vrc == TS_OK && o.vision_ids &&
            sscanf(o.vision_ids, "%d,%d,%d", &g_mm_ids.boi, &g_mm_ids.eoi, &g_mm_ids.image) != 3)
            vrc = TS_FAIL(TS_INVAL, "--vision-ids '%s': expected BOI,EOI,IMAGE", o.vision_ids);
        if (vrc == TS_OK) vrc = ts_mm_ids_lookup(ts_sched_tokenizer(g_sched), &g_mm_ids);
        const ts_vision_config *vc = vrc == TS_OK ? ts_vision_get_config(g_vision) : NULL;
        if (vc && (uint32_t)vc->proj_dim != ts_sched_config(g_sched)->n_embd)
            vrc = TS_FAIL(TS_FORMAT, "the vision projector outputs %d values per token, the model "
                          "takes %u", vc->proj_dim, ts_sched_config(g_sched)->n_embd);
        else if (vc && (vc->n_tokens > ei.n_chunk || vc->n_tokens + o.slots > ei.n_batch))
            vrc = TS_FAIL(TS_INVAL, "an image's %d tokens must fit one step: --batch %d is below "
                          "%d + --slots or the engine's chunk of %d", vc->n_tokens, ei.n_batch,
                          vc->n_tokens, ei.n_chunk);
        if (vrc != TS_OK) {
            fprintf(stderr, "tesserad: --vision %s: %s\n", o.vision, ts_last_error());
            gate_stop();
            ts_sched_destroy(g_sched);
            goto out;
        }
        TS_LOG_INFO("vision tower %s: %d tokens per image", o.vision, vc->n_tokens);
    }
    /* the gate thread scores and encodes images (only requests with images use it) */
    if (g_safety || g_vision) {
        if (pthread_create(&G.th, NULL, gate_main, NULL)) {
            fprintf(stderr, "tesserad: cannot start the safety gate thread\n");
            ts_sched_destroy(g_sched);
            goto out;
        }
        G.started = true;
    }

    static int stream_flag;
    /* tessera.v1.Inference: every method behind the API key check */
    static authed_method inf[] = {
        {handle_generate, NULL}, {handle_generate, &stream_flag}, {handle_cancel, NULL},
        {handle_tokenize, NULL}, {handle_detokenize, NULL},       {handle_list_models, NULL},
        {handle_model_info, NULL}, {handle_cluster_info, NULL},   {handle_check_safety, NULL}};
    static const char *const inf_names[] = {"Generate", "GenerateStream", "Cancel", "Tokenize",
                                            "Detokenize", "ListModels", "GetModelInfo",
                                            "GetClusterInfo", "CheckSafety"};
    static char paths[9][64];
    ts_rpc_method methods[16];
    size_t nm = 0;
    for (size_t i = 0; i < 9; i++) {
        snprintf(paths[i], sizeof paths[i], "/" SERVICE "/%s", inf_names[i]);
        methods[nm++] = (ts_rpc_method){.path = paths[i], .fn = authed, .ctx = &inf[i]};
    }
    nm += ts_rpc_health_methods(methods + nm);
    nm += ts_rpc_reflection_methods(methods + nm);
    ts_rpc_health_set("", true);
    ts_rpc_health_set(SERVICE, true);
    ts_rpc_set_call_observer(ts_metrics_rpc_done);
    int mport = 0;
    if (o.metrics && ts_metrics_start(o.metrics, metrics_gauges, NULL, &mport) != TS_OK) {
        fprintf(stderr, "tesserad: --metrics %s\n", ts_last_error());
        ts_sched_destroy(g_sched);
        exit_code = 2;
        goto out;
    }
    ts_rpc_server_opts ro = {.listen = o.listen, .max_recv_bytes = o.max_recv_mb << 20,
                             .max_streams = 1000, .cq_threads = o.cq_threads,
                             .tls_cert_pem = tls_cert, .tls_key_pem = tls_key};
    int port = ts_rpc_server_start(&ro, methods, nm);
    if (tls_key) memset(tls_key, 0, strlen(tls_key)); /* core has its own copy */
    if (!port) {
        fprintf(stderr, "tesserad: cannot serve on %s\n", o.listen);
        ts_metrics_stop();
        ts_sched_destroy(g_sched);
        goto out;
    }
    if (!g_auth_on && !is_loopback(o.listen))
        TS_LOG_WARN("listening on %s without --api-keys: anyone who can reach it may use it",
                    o.listen);
    if (g_auth_on && !tls_cert && !is_loopback(o.listen))
        TS_LOG_WARN("API keys over plaintext on %s: use --tls-cert/--tls-key off a private network",
                    o.listen);
    char host[256];
    snprintf(host, sizeof host, "%s", o.listen);
    char *colon = strrchr(host, ':');
    if (colon) *colon = '\0';
    printf("tesserad: serving %s on %s:%d (slots %d, batch %d, queue %d%s%s, ranks %d, pid %d)\n",
           g_model_name, host, port, o.slots, o.batch, o.queue, tls_cert ? ", tls" : "",
           g_auth_on ? ", api keys" : "", (g_tr ? g_tr->world : 1) + (srank > 0), (int)getpid());
    if (o.metrics) {
        char mh[256];
        snprintf(mh, sizeof mh, "%s", o.metrics);
        char *mc = strrchr(mh, ':');
        if (mc) *mc = '\0';
        printf("tesserad: metrics at http://%s:%d/metrics\n", mh[0] ? mh : "0.0.0.0", mport);
    }
    fflush(stdout);
    TS_LOG_INFO("serving %s on %s:%d (tls %s, auth %s)", g_model_name, host, port,
                tls_cert ? "on" : "off", g_auth_on ? "on" : "off");

    int sig = 0;
    for (;;) {
        sigwait(&ss, &sig);
        if (sig != SIGHUP && sig != SIGUSR2) break;
        /* SIGHUP (SIGUSR2 through mpirun): reload what can change without dropping
         * requests (the API keys; the safety gate's thresholds) */
        if (g_auth_on)
            keys_reload();
        else
            TS_LOG_INFO("SIGHUP: no --api-keys file to reload");
        gate_reload(o.config);
    }
    TS_LOG_INFO("signal %d: draining (grace %d s)", sig, o.grace_s);
    ts_rpc_health_shutdown();
    int left = ts_rpc_server_shutdown((int64_t)o.grace_s * 1000);
    gate_stop(); /* images still waiting: UNAVAILABLE */
    ts_metrics_stop(); /* its gauges read the scheduler */
    ts_sched_stop(g_sched);
    ts_rpc_server_destroy();
    ts_sched_stats st;
    ts_sched_get_stats(g_sched, &st);
    ts_sched_destroy(g_sched);
    TS_LOG_INFO("stopped: %" PRIu64 " completed, %" PRIu64 " cancelled, %" PRIu64
                " rejected%s", st.completed, st.cancelled, st.rejected,
                left ? "; calls were cancelled at the end of the grace period" : "");
    exit_code = 0;
out:
    free(tls_cert);
    free(tls_key);
    ts_safety_close(g_safety);
    g_safety = NULL;
    ts_vision_destroy(g_vision);
    g_vision = NULL;
    ts_apikeys_free(g_keys);
    g_keys = NULL;
    if (have_cfg) config_destroy(&conf);
    ts_transport_close(g_tr); /* after the engine: its destroy released the other ranks */
    g_tr = NULL;
    mpi_done();
    return exit_code;
}
