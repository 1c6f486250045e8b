/* server.h: a small gRPC server layer on the gRPC core C API (grpc/grpc.h, Debian 12's
 * 1.51) with protobuf-c messages. All gRPC calls of the daemon go through rpc/ (the core
 * API is not a stable public API; keep it in one place).
 *
 * Model (see ../shared/docs/grpc-c-core.md):
 *   - one completion queue, N CQ threads; a method table {path, handler} registered with
 *     host = NULL, plus one grpc_server_request_call always armed for unknown methods
 *     (answered UNIMPLEMENTED);
 *   - each call is a ref-counted ts_rpc_call with embedded tags; RECV_CLOSE_ON_SERVER is
 *     started on accept and is the only cancellation signal (client cancel, deadline);
 *   - sends are queued per call: one send batch in flight, the next started from the
 *     completion of the previous. ts_rpc_call_send / _finish may be called from any thread
 *     (the scheduler thread pushes tokens directly).
 * A handler runs on a CQ thread with the request message already received (unary and
 * server-streaming methods only). It must not block: hand long work to another thread,
 * taking a reference (ts_rpc_call_ref) that the other thread drops when done.
 */
#ifndef TS_RPC_SERVER_H
#define TS_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_rpc_call ts_rpc_call;

typedef void (*ts_rpc_handler)(ts_rpc_call *c, void *ctx);
/* Bidi methods: one call per request message (data/len; the message bytes), on a CQ
 * thread; the next message is read after it returns. When the client half-closes, the
 * call is finished with OK (unless the handler finished it already). */
typedef void (*ts_rpc_msg_handler)(ts_rpc_call *c, const uint8_t *data, size_t len, void *ctx);

typedef struct ts_rpc_method {
    const char *path; /* "/pkg.Service/Method" */
    ts_rpc_handler fn;          /* unary / server-streaming: runs once, with the request */
    void *ctx;
    ts_rpc_msg_handler on_msg;  /* non-NULL: a bidi (or client-streaming) method; fn may be
                                   NULL or run first, at accept, without a request */
} ts_rpc_method;

typedef struct ts_rpc_server_opts {
    const char *listen;      /* "host:port"; port 0 = any free port */
    int max_recv_bytes;      /* largest request message (core answers RESOURCE_EXHAUSTED) */
    int max_streams;         /* concurrent streams per connection */
    int cq_threads;          /* 1..16 */
    const char *tls_cert_pem; /* both set: TLS (server certificate chain and its key, PEM */
    const char *tls_key_pem;  /* text; copied); both NULL: plaintext */
} ts_rpc_server_opts;

#define TS_RPC_MAX_METHODS 32

/* Creates the server, registers the methods (copied; at most TS_RPC_MAX_METHODS), binds
 * and starts it, arms the requests and starts the CQ threads. Returns the bound port, or
 * 0 on failure (message logged). One server per process. grpc_init is called here. */
int ts_rpc_server_start(const ts_rpc_server_opts *o, const ts_rpc_method *methods, size_t n);

/* True once ts_rpc_server_shutdown began (handlers answer UNAVAILABLE then). */
bool ts_rpc_server_draining(void);

/* Graceful shutdown: stops accepting, waits up to grace_ms for in-flight calls to end
 * (before_cancel, if not NULL, is called first: e.g. to end Watch streams), then cancels
 * the rest and waits for them. Returns the number of calls cancelled by the grace
 * period (0 = clean). Afterwards call ts_rpc_server_destroy (after stopping the threads
 * that still hold call references). */
int ts_rpc_server_shutdown(int64_t grace_ms);
/* Shuts the CQ down, joins the CQ threads, destroys the server, grpc_shutdown. */
void ts_rpc_server_destroy(void);

/* ---- calls ---- */
void ts_rpc_call_ref(ts_rpc_call *c);
void ts_rpc_call_unref(ts_rpc_call *c);

/* The request message decoded with desc (free with protobuf_c_message_free_unpacked), or
 * NULL if it is missing or malformed. */
ProtobufCMessage *ts_rpc_call_unpack(ts_rpc_call *c, const ProtobufCMessageDescriptor *desc);

/* Queues a message (packed now; m may be freed on return). Dropped once the call is
 * finished or cancelled. Returns the number of messages queued and not yet sent. */
size_t ts_rpc_call_send(ts_rpc_call *c, const ProtobufCMessage *m);
/* Queues the status (once; later calls are ignored); it goes out after the queued
 * messages. fmt may be NULL. */
void ts_rpc_call_finish(ts_rpc_call *c, grpc_status_code code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Adds trailing metadata (before finish; at most 4). */
void ts_rpc_call_add_trailer(ts_rpc_call *c, const char *key, const char *value);
/* Same with raw bytes (keys ending in "-bin"; core base64-encodes them on the wire). */
void ts_rpc_call_add_trailer_bin(ts_rpc_call *c, const char *key, const void *value, size_t len);
/* Copies the value of request metadata `key` (lower case) into out (NUL-terminated,
 * truncated to outsz - 1). Returns the value's full length, or -1 if absent. */
long ts_rpc_call_metadata(const ts_rpc_call *c, const char *key, char *out, size_t outsz);
/* The peer address (for logs; never for authentication), copied into out. */
void ts_rpc_call_peer(ts_rpc_call *c, char *out, size_t outsz);

/* ---- rich errors (rpc/errors.c): google.rpc.Status in grpc-status-details-bin ---- */
/* INVALID_ARGUMENT with a google.rpc.BadRequest field violation. The message follows the
 * daemon's "field: description" convention; the field is the text before the first ": "
 * (when it has no spaces), extended by "name = " at the start of the description
 * ("sampling: temperature = 500 ..." -> field "sampling.temperature"). */
void ts_rpc_call_finish_invalid(ts_rpc_call *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* RESOURCE_EXHAUSTED with google.rpc.RetryInfo{retry_delay = retry_ms} in the details and
 * grpc-retry-pushback-ms (gRFC A6). */
void ts_rpc_call_finish_retry(ts_rpc_call *c, int64_t retry_ms, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- server reflection v1 and v1alpha (rpc/reflection.c) ---- */
/* Appends the two ServerReflectionInfo methods to m (room for 2). Serves the
 * FileDescriptorSet embedded at build time (tessera.v1, health, reflection). Returns 2. */
size_t ts_rpc_reflection_methods(ts_rpc_method *m);

/* True once RECV_CLOSE reported a cancel (client cancel, deadline, transport failure). */
bool ts_rpc_call_cancelled(const ts_rpc_call *c);
/* Milliseconds until the call's deadline (INT64_MAX if none; <= 0 when passed). */
int64_t ts_rpc_call_deadline_ms(const ts_rpc_call *c);
/* The method path (for logs). */
const char *ts_rpc_call_path(const ts_rpc_call *c);

/* Attaches user data with a callback run (on a CQ thread) when the call ends: cancelled
 * is true for client cancel / deadline. release(user) runs when the call is freed.
 * Either callback may be NULL. Set at most once, from the handler. */
void ts_rpc_call_set_user(ts_rpc_call *c, void *user, void (*on_close)(void *user, bool cancelled),
                          void (*release)(void *user));

/* Observer of finished calls (metrics): called once per call, on a CQ thread, when it
 * ends, with its method path ("(unknown)" for unregistered methods) and the status sent,
 * or GRPC_STATUS_CANCELLED when the client cancelled or its deadline passed. Set before
 * ts_rpc_server_start; NULL = none. */
void ts_rpc_set_call_observer(void (*fn)(const char *path, int code));

/* ---- grpc.health.v1.Health (rpc/health.c) ---- */
/* Appends the Check and Watch methods to m (room for 2). Returns 2. */
size_t ts_rpc_health_methods(ts_rpc_method *m);
/* Sets a service's status ("" = the whole server). Up to 8 services. */
void ts_rpc_health_set(const char *service, bool serving);
/* Every service NOT_SERVING; Watch streams get that, then end with UNAVAILABLE. */
void ts_rpc_health_shutdown(void);

#ifdef __cplusplus
}
#endif
#endif
