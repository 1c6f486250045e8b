/* client.c: blocking gRPC core client (see client.h). One pluck CQ per client. */
#include "client.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

struct ts_rpc_client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_metadata md[1]; /* authorization, when an API key is set */
    size_t n_md;
};

struct ts_rpc_stream {
    ts_rpc_client *cl;
    grpc_call *call;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *recv;
    bool ended, failed, status_started;
    int tag_start, tag_status, tag_recv;
};

void ts_rpc_result_free(ts_rpc_result *r) {
    if (!r) return;
    free(r->details);
    free(r->retry_pushback_ms);
    r->details = r->retry_pushback_ms = NULL;
}

ts_rpc_client *ts_rpc_client_open(const char *target) {
    return ts_rpc_client_open_ex(target, NULL, NULL);
}

ts_rpc_client *ts_rpc_client_open_ex(const char *target, const char *tls_ca_pem,
                                     const char *api_key) {
    grpc_init();
    ts_rpc_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        grpc_shutdown();
        return NULL;
    }
    if (api_key) {
        size_t n = strlen(api_key) + 8;
        char *v = malloc(n);
        if (!v) {
            ts_rpc_client_close(cl);
            return NULL;
        }
        snprintf(v, n, "Bearer %s", api_key);
        cl->md[0].key = grpc_slice_from_static_string("authorization");
        cl->md[0].value = grpc_slice_from_copied_string(v);
        cl->n_md = 1;
        free(v);
    }
    grpc_channel_credentials *cr = tls_ca_pem ? grpc_ssl_credentials_create(tls_ca_pem, NULL, NULL, NULL)
                                              : grpc_insecure_credentials_create();
    if (!cr) {
        ts_rpc_client_close(cl);
        return NULL;
    }
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = 64 << 20}},
    };
    grpc_channel_args ca = {1, args};
    cl->ch = grpc_channel_create(target, cr, &ca);
    grpc_channel_credentials_release(cr);
    cl->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!cl->ch || !cl->cq) {
        ts_rpc_client_close(cl);
        return NULL;
    }
    return cl;
}

void ts_rpc_client_close(ts_rpc_client *cl) {
    if (!cl) return;
    if (cl->cq) {
        grpc_completion_queue_shutdown(cl->cq);
        while (grpc_completion_queue_pluck(cl->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(cl->cq);
    }
    if (cl->ch) grpc_channel_destroy(cl->ch);
    for (size_t i = 0; i < cl->n_md; i++) {
        grpc_slice_unref(cl->md[i].key);
        grpc_slice_unref(cl->md[i].value);
    }
    free(cl);
    grpc_shutdown();
}

static grpc_byte_buffer *pack(const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb) {
    grpc_byte_buffer_reader r;
    if (!bb || !grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

static void fill_result(ts_rpc_result *res, grpc_status_code code, grpc_slice details,
                        const grpc_metadata_array *trail) {
    if (!res) return;
    res->code = code;
    res->details = grpc_slice_to_c_string(details);
    res->retry_pushback_ms = NULL;
    for (size_t i = 0; i < trail->count; i++)
        if (!grpc_slice_str_cmp(trail->metadata[i].key, "grpc-retry-pushback-ms")) {
            char *v = grpc_slice_to_c_string(trail->metadata[i].value);
            res->retry_pushback_ms = strdup(v);
            gpr_free(v);
        }
    /* grpc_slice_to_c_string uses gpr_malloc; copy to plain malloc */
    char *d = res->details;
    res->details = strdup(d ? d : "");
    gpr_free(d);
}

static gpr_timespec deadline_of(int64_t ms) {
    if (ms <= 0) return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static grpc_call *new_call(ts_rpc_client *cl, const char *path, int64_t timeout_ms) {
    grpc_slice m = grpc_slice_from_copied_string(path);
    grpc_call *c = grpc_channel_create_call(cl->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cl->cq, m, NULL,
                                            deadline_of(timeout_ms), NULL);
    grpc_slice_unref(m);
    return c;
}

static bool pluck(ts_rpc_client *cl, void *tag) {
    grpc_event ev = grpc_completion_queue_pluck(cl->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

grpc_status_code ts_rpc_unary(ts_rpc_client *cl, const char *path, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                              ProtobufCMessage **resp, ts_rpc_result *res) {
    *resp = NULL;
    grpc_call *c = new_call(cl, path, timeout_ms);
    grpc_metadata_array md_init, md_trail;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    grpc_byte_buffer *out = pack(req), *in = NULL;
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = cl->n_md;
    ops[0].data.send_initial_metadata.metadata = cl->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &in;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag;
    if (grpc_call_start_batch(c, ops, 6, &tag, NULL) != GRPC_CALL_OK) {
        st = GRPC_STATUS_INTERNAL;
    } else {
        pluck(cl, &tag);
        if (st == GRPC_STATUS_OK) {
            *resp = unpack(resp_desc, in);
            if (!*resp) st = GRPC_STATUS_INTERNAL;
        }
    }
    fill_result(res, st, details, &md_trail);
    if (res && st == GRPC_STATUS_INTERNAL && !res->details[0]) {
        free(res->details);
        res->details = strdup("undecodable response");
    }
    grpc_slice_unref(details);
    if (in) grpc_byte_buffer_destroy(in);
    grpc_byte_buffer_destroy(out);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    grpc_call_unref(c);
    return st;
}

ts_rpc_stream *ts_rpc_stream_start(ts_rpc_client *cl, const char *path,
                                   const ProtobufCMessage *req, int64_t timeout_ms) {
    ts_rpc_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cl = cl;
    s->call = new_call(cl, path, timeout_ms);
    grpc_metadata_array_init(&s->md_init);
    grpc_metadata_array_init(&s->md_trail);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_UNKNOWN;
    grpc_byte_buffer *out = pack(req);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = cl->n_md;
    ops[0].data.send_initial_metadata.metadata = cl->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
    if (grpc_call_start_batch(s->call, ops, 4, &s->tag_start, NULL) == GRPC_CALL_OK)
        pluck(cl, &s->tag_start);
    else
        s->failed = true;
    grpc_byte_buffer_destroy(out);
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s->md_trail;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &st, 1, &s->tag_status, NULL) == GRPC_CALL_OK)
        s->status_started = true;
    else
        s->failed = true;
    return s;
}

int ts_rpc_stream_next(ts_rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **msg) {
    *msg = NULL;
    if (s->ended || s->failed) return 0;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    s->recv = NULL;
    if (grpc_call_start_batch(s->call, &op, 1, &s->tag_recv, NULL) != GRPC_CALL_OK) {
        s->ended = true;
        return 0;
    }
    pluck(s->cl, &s->tag_recv);
    if (!s->recv) {
        s->ended = true;
        return 0;
    }
    *msg = unpack(desc, s->recv);
    grpc_byte_buffer_destroy(s->recv);
    s->recv = NULL;
    return *msg ? 1 : -1;
}

void ts_rpc_stream_cancel(ts_rpc_stream *s) { grpc_call_cancel(s->call, NULL); }

grpc_status_code ts_rpc_stream_finish(ts_rpc_stream *s, ts_rpc_result *res) {
    grpc_status_code st = GRPC_STATUS_INTERNAL;
    if (s->failed) grpc_call_cancel(s->call, NULL);
    if (s->status_started) {
        pluck(s->cl, &s->tag_status);
        st = s->status;
    }
    fill_result(res, st, s->details, &s->md_trail);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->md_init);
    grpc_metadata_array_destroy(&s->md_trail);
    grpc_call_unref(s->call);
    free(s);
    return st;
}
