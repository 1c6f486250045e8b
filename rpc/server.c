/* server.c: the gRPC core server layer (see server.h). */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "log.h"

typedef enum { T_ACCEPT, T_CLOSE, T_SEND, T_RECV } tag_kind;

typedef struct tag {
    struct ts_rpc_call *c;
    tag_kind kind;
} tag_t;

typedef struct outmsg {
    struct outmsg *next;
    grpc_byte_buffer *bb;
} outmsg;

#define UNKNOWN_METHOD (-1)
#define MAX_TRAIL 4

struct ts_rpc_call {
    int method; /* index in g_methods, or UNKNOWN_METHOD */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details; /* unregistered calls */
    grpc_metadata_array req_md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *recv_bb; /* bidi: target of GRPC_OP_RECV_MESSAGE */
    int close_cancelled;
    atomic_bool cancelled;
    pthread_mutex_t mu; /* serialises start_batch on the send side and the fields below */
    int refs;
    outmsg *qh, *qt;
    size_t queued;
    grpc_byte_buffer *inflight;
    bool send_busy, md_sent, fin_queued, fin_sent, closed;
    grpc_status_code fin_code;
    char fin_msg[512];
    grpc_metadata trail[MAX_TRAIL];
    size_t ntrail;
    tag_t t_accept, t_close, t_send, t_recv;
    void *user;
    void (*on_close)(void *user, bool cancelled);
    void (*release)(void *user);
};

static ts_rpc_method g_methods[TS_RPC_MAX_METHODS];
static void *g_reg[TS_RPC_MAX_METHODS];
static size_t g_nmethods;
static grpc_server *g_server;
static grpc_completion_queue *g_cq;
static pthread_t g_cq_threads[16];
static int g_ncq;
static atomic_bool g_draining;
static atomic_int g_live_calls;
static pthread_mutex_t g_sd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_sd_cv = PTHREAD_COND_INITIALIZER;
static bool g_sd_done;
static int g_sd_tag;
static void (*g_observer)(const char *path, int code);

void ts_rpc_set_call_observer(void (*fn)(const char *path, int code)) { g_observer = fn; }

/* ---- call objects ---- */

static ts_rpc_call *call_new(int method) {
    ts_rpc_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->method = method;
    pthread_mutex_init(&c->mu, NULL);
    grpc_metadata_array_init(&c->req_md);
    grpc_call_details_init(&c->details);
    c->t_accept = (tag_t){c, T_ACCEPT};
    c->t_close = (tag_t){c, T_CLOSE};
    c->t_send = (tag_t){c, T_SEND};
    c->t_recv = (tag_t){c, T_RECV};
    c->refs = 1; /* the pending accept */
    atomic_fetch_add(&g_live_calls, 1);
    return c;
}

void ts_rpc_call_ref(ts_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void ts_rpc_call_unref(ts_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int r = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (r) return;
    if (c->release) c->release(c->user);
    while (c->qh) {
        outmsg *m = c->qh;
        c->qh = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    if (c->inflight) grpc_byte_buffer_destroy(c->inflight);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    for (size_t i = 0; i < c->ntrail; i++) {
        grpc_slice_unref(c->trail[i].key);
        grpc_slice_unref(c->trail[i].value);
    }
    grpc_metadata_array_destroy(&c->req_md);
    grpc_call_details_destroy(&c->details);
    if (c->call) grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c);
    atomic_fetch_sub(&g_live_calls, 1);
}

ProtobufCMessage *ts_rpc_call_unpack(ts_rpc_call *c, const ProtobufCMessageDescriptor *desc) {
    grpc_byte_buffer_reader r;
    if (!c->payload || !grpc_byte_buffer_reader_init(&r, c->payload)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

/* Starts the next send batch if none is in flight. c->mu held. */
static void pump_locked(ts_rpc_call *c) {
    if (c->send_busy || c->fin_sent) return;
    if (atomic_load(&c->cancelled)) return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = true;
    }
    if (c->qh) {
        outmsg *m = c->qh;
        c->qh = m->next;
        if (!c->qh) c->qt = NULL;
        c->queued--;
        c->inflight = m->bb;
        free(m);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->inflight;
        n++;
    }
    grpc_slice details;
    bool have_details = false;
    if (!c->qh && c->fin_queued) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = c->fin_code;
        ops[n].data.send_status_from_server.trailing_metadata_count = c->ntrail;
        ops[n].data.send_status_from_server.trailing_metadata = c->trail;
        if (c->fin_msg[0]) {
            details = grpc_slice_from_copied_string(c->fin_msg);
            ops[n].data.send_status_from_server.status_details = &details;
            have_details = true;
        }
        n++;
        c->fin_sent = true;
    }
    if (!n) return;
    c->send_busy = true;
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL);
    if (have_details) grpc_slice_unref(details); /* core took its own reference */
    if (e != GRPC_CALL_OK) {
        TS_LOG_ERROR("start_batch(send) on %s: %s", ts_rpc_call_path(c),
                     grpc_call_error_to_string(e));
        c->send_busy = false;
        c->refs--;
    }
}

size_t ts_rpc_call_send(ts_rpc_call *c, const ProtobufCMessage *m) {
    size_t len = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(len);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    outmsg *o = malloc(sizeof *o);
    if (!o) {
        grpc_slice_unref(s);
        return 0;
    }
    o->next = NULL;
    o->bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    pthread_mutex_lock(&c->mu);
    if (c->fin_queued || atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(o->bb);
        free(o);
        return 0;
    }
    if (c->qt)
        c->qt->next = o;
    else
        c->qh = o;
    c->qt = o;
    c->queued++;
    pump_locked(c);
    size_t q = c->queued;
    pthread_mutex_unlock(&c->mu);
    return q;
}

void ts_rpc_call_finish(ts_rpc_call *c, grpc_status_code code, const char *fmt, ...) {
    pthread_mutex_lock(&c->mu);
    if (!c->fin_queued) {
        c->fin_queued = true;
        c->fin_code = code;
        c->fin_msg[0] = '\0';
        if (fmt) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->fin_msg, sizeof c->fin_msg, fmt, ap);
            va_end(ap);
        }
        pump_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
}

void ts_rpc_call_add_trailer(ts_rpc_call *c, const char *key, const char *value) {
    pthread_mutex_lock(&c->mu);
    if (c->ntrail < MAX_TRAIL && !c->fin_queued) {
        c->trail[c->ntrail].key = grpc_slice_from_copied_string(key);
        c->trail[c->ntrail].value = grpc_slice_from_copied_string(value);
        c->ntrail++;
    }
    pthread_mutex_unlock(&c->mu);
}

void ts_rpc_call_add_trailer_bin(ts_rpc_call *c, const char *key, const void *value, size_t len) {
    pthread_mutex_lock(&c->mu);
    if (c->ntrail < MAX_TRAIL && !c->fin_queued) {
        c->trail[c->ntrail].key = grpc_slice_from_copied_string(key);
        c->trail[c->ntrail].value = grpc_slice_from_copied_buffer(value, len);
        c->ntrail++;
    }
    pthread_mutex_unlock(&c->mu);
}

long ts_rpc_call_metadata(const ts_rpc_call *c, const char *key, char *out, size_t outsz) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < c->req_md.count; i++) {
        const grpc_slice *k = &c->req_md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) != kl || memcmp(GRPC_SLICE_START_PTR(*k), key, kl)) continue;
        const grpc_slice *v = &c->req_md.metadata[i].value;
        size_t vl = GRPC_SLICE_LENGTH(*v);
        if (outsz) {
            size_t n = vl < outsz - 1 ? vl : outsz - 1;
            memcpy(out, GRPC_SLICE_START_PTR(*v), n);
            out[n] = '\0';
        }
        return (long)vl;
    }
    if (outsz) out[0] = '\0';
    return -1;
}

void ts_rpc_call_peer(ts_rpc_call *c, char *out, size_t outsz) {
    char *p = grpc_call_get_peer(c->call);
    snprintf(out, outsz, "%s", p ? p : "?");
    gpr_free(p);
}

bool ts_rpc_call_cancelled(const ts_rpc_call *c) { return atomic_load(&c->cancelled); }

int64_t ts_rpc_call_deadline_ms(const ts_rpc_call *c) {
    gpr_timespec dl = c->method == UNKNOWN_METHOD ? c->details.deadline : c->deadline;
    if (gpr_time_cmp(dl, gpr_inf_future(dl.clock_type)) == 0) return INT64_MAX;
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec d = gpr_time_sub(gpr_convert_clock_type(dl, GPR_CLOCK_MONOTONIC), now);
    return (int64_t)d.tv_sec * 1000 + d.tv_nsec / 1000000;
}

const char *ts_rpc_call_path(const ts_rpc_call *c) {
    return c->method == UNKNOWN_METHOD ? "(unknown)" : g_methods[c->method].path;
}

void ts_rpc_call_set_user(ts_rpc_call *c, void *user, void (*on_close)(void *, bool),
                          void (*release)(void *)) {
    pthread_mutex_lock(&c->mu);
    c->user = user;
    c->on_close = on_close;
    c->release = release;
    bool closed = c->closed; /* RECV_CLOSE already came: run on_close here, once */
    pthread_mutex_unlock(&c->mu);
    if (closed && on_close) on_close(user, atomic_load(&c->cancelled));
}

/* ---- accepting ---- */

static void request_call(int method) {
    if (atomic_load(&g_draining)) return;
    ts_rpc_call *c = call_new(method);
    if (!c) {
        TS_LOG_ERROR("out of memory arming %d", method);
        return;
    }
    grpc_call_error e;
    if (method == UNKNOWN_METHOD)
        e = grpc_server_request_call(g_server, &c->call, &c->details, &c->req_md, g_cq, g_cq,
                                     &c->t_accept);
    else
        e = grpc_server_request_registered_call(g_server, g_reg[method], &c->call, &c->deadline,
                                                &c->req_md,
                                                g_methods[method].on_msg ? NULL : &c->payload,
                                                g_cq, g_cq, &c->t_accept);
    if (e != GRPC_CALL_OK) {
        TS_LOG_ERROR("request_call: %s", grpc_call_error_to_string(e));
        ts_rpc_call_unref(c);
    }
}

/* Bidi: arms the next RECV_MESSAGE. */
static void start_recv(ts_rpc_call *c) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL);
    if (e != GRPC_CALL_OK) c->refs--;
    pthread_mutex_unlock(&c->mu);
}

static void on_recv(ts_rpc_call *c, int ok) {
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!ok || atomic_load(&c->cancelled)) {
        /* call over */
    } else if (!bb) { /* the client half-closed */
        ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
    } else {
        grpc_byte_buffer_reader r;
        if (grpc_byte_buffer_reader_init(&r, bb)) {
            grpc_slice s = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            const ts_rpc_method *m = &g_methods[c->method];
            m->on_msg(c, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), m->ctx);
            grpc_slice_unref(s);
        }
        pthread_mutex_lock(&c->mu);
        bool fin = c->fin_queued;
        pthread_mutex_unlock(&c->mu);
        if (!fin) start_recv(c);
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    ts_rpc_call_unref(c);
}

static void on_accept(ts_rpc_call *c, int ok) {
    if (!ok) { /* shutting down: the pending request was cancelled */
        ts_rpc_call_unref(c);
        return;
    }
    request_call(c->method); /* keep one request armed per method */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL);
    if (e != GRPC_CALL_OK) c->refs--;
    pthread_mutex_unlock(&c->mu);

    if (c->method == UNKNOWN_METHOD) {
        char *m = grpc_slice_to_c_string(c->details.method);
        TS_LOG_INFO("unknown method %s -> UNIMPLEMENTED", m);
        ts_rpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, "method %s is not implemented", m);
        gpr_free(m);
    } else {
        const ts_rpc_method *m = &g_methods[c->method];
        if (m->fn) m->fn(c, m->ctx);
        if (m->on_msg) {
            pthread_mutex_lock(&c->mu);
            bool fin = c->fin_queued;
            pthread_mutex_unlock(&c->mu);
            if (!fin) start_recv(c);
        }
    }
    ts_rpc_call_unref(c); /* the accept's reference */
}

static void on_send_done(ts_rpc_call *c, int ok) {
    pthread_mutex_lock(&c->mu);
    c->send_busy = false;
    if (c->inflight) {
        grpc_byte_buffer_destroy(c->inflight);
        c->inflight = NULL;
    }
    if (ok) pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    ts_rpc_call_unref(c);
}

static void on_close(ts_rpc_call *c) {
    bool cancelled = c->close_cancelled != 0;
    if (cancelled) {
        atomic_store(&c->cancelled, true);
        TS_LOG_INFO("%s: cancelled by the client or its deadline", ts_rpc_call_path(c));
    }
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    void *user = c->user;
    void (*cb)(void *, bool) = c->on_close;
    int code = cancelled ? GRPC_STATUS_CANCELLED : c->fin_sent ? (int)c->fin_code : GRPC_STATUS_UNKNOWN;
    pthread_mutex_unlock(&c->mu);
    if (g_observer) g_observer(ts_rpc_call_path(c), code);
    if (cb) cb(user, cancelled);
    ts_rpc_call_unref(c);
}

static void *cq_main(void *arg) {
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        if (ev.tag == &g_sd_tag) {
            pthread_mutex_lock(&g_sd_mu);
            g_sd_done = true;
            pthread_cond_broadcast(&g_sd_cv);
            pthread_mutex_unlock(&g_sd_mu);
            continue;
        }
        tag_t *t = ev.tag;
        switch (t->kind) {
        case T_ACCEPT: on_accept(t->c, ev.success); break;
        case T_CLOSE: on_close(t->c); break;
        case T_SEND: on_send_done(t->c, ev.success); break;
        case T_RECV: on_recv(t->c, ev.success); break;
        }
    }
    return NULL;
}

int ts_rpc_server_start(const ts_rpc_server_opts *o, const ts_rpc_method *methods, size_t n) {
    if (n > TS_RPC_MAX_METHODS) {
        TS_LOG_ERROR("too many methods (%zu)", n);
        return 0;
    }
    grpc_init();
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = o->max_recv_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = 64 << 20}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_CONCURRENT_STREAMS, {.integer = o->max_streams}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 60000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 20000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, {.integer = 1}},
        {GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, {.integer = 10000}},
    };
    grpc_channel_args cargs = {sizeof args / sizeof args[0], args};
    g_server = grpc_server_create(&cargs, NULL);
    g_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g_server, g_cq, NULL);
    g_nmethods = n;
    for (size_t i = 0; i < n; i++) {
        g_methods[i] = methods[i];
        /* host NULL: any :authority; the request message arrives with the call */
        g_reg[i] = grpc_server_register_method(g_server, methods[i].path, NULL,
                                               methods[i].on_msg
                                                   ? GRPC_SRM_PAYLOAD_NONE
                                                   : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                               0);
        if (!g_reg[i]) {
            TS_LOG_ERROR("register_method %s failed", methods[i].path);
            return 0;
        }
    }
    grpc_server_credentials *creds;
    if (o->tls_cert_pem && o->tls_key_pem) {
        /* core copies the PEM strings */
        grpc_ssl_pem_key_cert_pair pair = {o->tls_key_pem, o->tls_cert_pem};
        creds = grpc_ssl_server_credentials_create_ex(NULL, &pair, 1,
                                                      GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    if (!creds) {
        TS_LOG_ERROR("cannot create the server credentials (TLS certificate or key invalid?)");
        grpc_server_destroy(g_server);
        grpc_completion_queue_shutdown(g_cq);
        while (grpc_completion_queue_next(g_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(g_cq);
        grpc_shutdown();
        return 0;
    }
    int port = grpc_server_add_http2_port(g_server, o->listen, creds);
    grpc_server_credentials_release(creds);
    if (!port) {
        TS_LOG_ERROR("cannot listen on %s", o->listen);
        grpc_server_destroy(g_server);
        grpc_completion_queue_shutdown(g_cq);
        while (grpc_completion_queue_next(g_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(g_cq);
        grpc_shutdown();
        return 0;
    }
    grpc_server_start(g_server);
    g_ncq = o->cq_threads < 1 ? 1 : o->cq_threads > 16 ? 16 : o->cq_threads;
    for (int i = 0; i < g_ncq; i++) pthread_create(&g_cq_threads[i], NULL, cq_main, NULL);
    for (size_t i = 0; i < n; i++) request_call((int)i);
    request_call(UNKNOWN_METHOD);
    return port;
}

bool ts_rpc_server_draining(void) { return atomic_load(&g_draining); }

static bool wait_sd(int64_t ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g_sd_mu);
    while (!g_sd_done)
        if (pthread_cond_timedwait(&g_sd_cv, &g_sd_mu, &until) == ETIMEDOUT) break;
    bool done = g_sd_done;
    pthread_mutex_unlock(&g_sd_mu);
    return done;
}

int ts_rpc_server_shutdown(int64_t grace_ms) {
    atomic_store(&g_draining, true);
    grpc_server_shutdown_and_notify(g_server, g_cq, &g_sd_tag);
    if (wait_sd(grace_ms)) return 0;
    int left = atomic_load(&g_live_calls);
    TS_LOG_WARN("grace period over: cancelling the remaining calls");
    grpc_server_cancel_all_calls(g_server);
    while (!wait_sd(1000)) {
    }
    return left > 0 ? left : 1;
}

void ts_rpc_server_destroy(void) {
    grpc_completion_queue_shutdown(g_cq);
    for (int i = 0; i < g_ncq; i++) pthread_join(g_cq_threads[i], NULL);
    grpc_server_destroy(g_server);
    grpc_completion_queue_destroy(g_cq);
    g_server = NULL;
    g_cq = NULL;
    grpc_shutdown();
}
