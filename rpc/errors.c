/* errors.c: the gRPC rich error model on the rpc/ server layer: a google.rpc.Status
 * (rpc/proto/google/rpc/status_min.proto, wire-compatible with googleapis) with
 * RetryInfo or BadRequest details in the grpc-status-details-bin trailer. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/status_min.pb-c.h"
#include "server.h"

/* Packs Status{code, message, [any]} and attaches it. */
static void attach_status(ts_rpc_call *c, grpc_status_code code, const char *msg,
                          const char *type_url, const ProtobufCMessage *detail) {
    size_t dn = protobuf_c_message_get_packed_size(detail);
    uint8_t *db = malloc(dn ? dn : 1);
    if (!db) return;
    protobuf_c_message_pack(detail, db);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, *anys[1] = {&any};
    any.type_url = (char *)type_url;
    any.value.data = db;
    any.value.len = dn;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = (int32_t)code;
    st.message = (char *)msg;
    st.n_details = 1;
    st.details = anys;
    size_t n = google__rpc__status__get_packed_size(&st);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        google__rpc__status__pack(&st, buf);
        ts_rpc_call_add_trailer_bin(c, "grpc-status-details-bin", buf, n);
        free(buf);
    }
    free(db);
}

static bool ident_char(char ch) {
    return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '[' || ch == ']';
}

void ts_rpc_call_finish_invalid(ts_rpc_call *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* field: the "a.b[3]" before ": "; plus a leading "name = " of the description */
    char field[256] = "";
    const char *desc = msg;
    const char *colon = strstr(msg, ": ");
    if (colon && colon > msg && (size_t)(colon - msg) < sizeof field) {
        bool ok = true;
        for (const char *p = msg; p < colon; p++) ok = ok && ident_char(*p);
        if (ok) {
            memcpy(field, msg, (size_t)(colon - msg));
            field[colon - msg] = '\0';
            desc = colon + 2;
            const char *eq = strstr(desc, " = ");
            size_t fl = strlen(field);
            if (eq && eq > desc && fl + 1 + (size_t)(eq - desc) < sizeof field) {
                bool id = true;
                for (const char *p = desc; p < eq; p++) id = id && ident_char(*p);
                if (id) {
                    field[fl] = '.';
                    memcpy(field + fl + 1, desc, (size_t)(eq - desc));
                    field[fl + 1 + (eq - desc)] = '\0';
                }
            }
        }
    }
    Google__Rpc__BadRequest__FieldViolation fv = GOOGLE__RPC__BAD_REQUEST__FIELD_VIOLATION__INIT,
                                            *fvs[1] = {&fv};
    fv.field = field;
    fv.description = (char *)desc;
    Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
    br.n_field_violations = 1;
    br.field_violations = fvs;
    attach_status(c, GRPC_STATUS_INVALID_ARGUMENT, msg, "type.googleapis.com/google.rpc.BadRequest",
                  &br.base);
    ts_rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", msg);
}

void ts_rpc_call_finish_retry(ts_rpc_call *c, int64_t retry_ms, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (retry_ms < 0) retry_ms = 0;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = retry_ms / 1000;
    d.nanos = (int32_t)(retry_ms % 1000) * 1000000;
    Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
    ri.retry_delay = &d;
    attach_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, "type.googleapis.com/google.rpc.RetryInfo",
                  &ri.base);
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)retry_ms);
    ts_rpc_call_add_trailer(c, "grpc-retry-pushback-ms", ms);
    ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", msg);
}
