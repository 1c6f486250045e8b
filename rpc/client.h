/* client.h: a minimal blocking gRPC client on the gRPC core C API (plaintext or TLS),
 * for the `tessera` client commands and tests. Unary and server-streaming calls with
 * protobuf-c messages. Not thread-safe per object; one channel per ts_rpc_client. */
#ifndef TS_RPC_CLIENT_H
#define TS_RPC_CLIENT_H

#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_rpc_client ts_rpc_client;
typedef struct ts_rpc_stream ts_rpc_stream;

/* Result of a call: the gRPC status code and its message (owned by the call/stream). */
typedef struct ts_rpc_result {
    grpc_status_code code;
    char *details;          /* malloc'd, may be NULL */
    char *retry_pushback_ms; /* trailing grpc-retry-pushback-ms, or NULL */
} ts_rpc_result;
void ts_rpc_result_free(ts_rpc_result *r);

/* target: "host:port". NULL on failure. Calls grpc_init (balanced by close). */
ts_rpc_client *ts_rpc_client_open(const char *target);
/* Same with options: tls_ca_pem (PEM text of the CA certificates to trust; non-NULL: TLS,
 * the server's certificate must name the target's host), api_key (non-NULL: every call
 * sends `authorization: Bearer KEY`). Both are copied. */
ts_rpc_client *ts_rpc_client_open_ex(const char *target, const char *tls_ca_pem,
                                     const char *api_key);
void ts_rpc_client_close(ts_rpc_client *cl);

/* Unary call. timeout_ms <= 0: none. *resp (when code is OK) is decoded with resp_desc
 * (free with protobuf_c_message_free_unpacked). Returns the status code. */
grpc_status_code ts_rpc_unary(ts_rpc_client *cl, const char *path, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                              ProtobufCMessage **resp, ts_rpc_result *res);

/* Server-streaming call: start, then next() until it returns 0 (end; the status is in
 * res after ts_rpc_stream_finish) or -1 (error). */
ts_rpc_stream *ts_rpc_stream_start(ts_rpc_client *cl, const char *path,
                                   const ProtobufCMessage *req, int64_t timeout_ms);
/* 1: *msg decoded; 0: end of stream; -1: undecodable message. */
int ts_rpc_stream_next(ts_rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **msg);
/* Cancels the call if still running. */
void ts_rpc_stream_cancel(ts_rpc_stream *s);
/* Waits for the status, frees the stream. */
grpc_status_code ts_rpc_stream_finish(ts_rpc_stream *s, ts_rpc_result *res);

#ifdef __cplusplus
}
#endif
#endif
