/* reflection.c: grpc.reflection.v1 and v1alpha ServerReflectionInfo (bidi; the two share
 * the wire format, so one protoc-c codec serves both). The descriptors served are a
 * FileDescriptorSet built at build time by `protoc --include_imports
 * --descriptor_set_out` (tessera/v1/inference.proto, grpc health and reflection) and
 * embedded as bytes (rpc/CMakeLists.txt, rpc/embed.cmake). The set is split raw, so the
 * exact bytes protoc produced are served; each file is also decoded (descriptor.pb-c) to
 * index its package, messages, enums and services. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "log.h"
#include "server.h"

extern const unsigned char ts_descriptor_set[];
extern const unsigned int ts_descriptor_set_len;

#define MAX_FILES 32
#define MAX_SERVICES 32

static struct {
    ProtobufCBinaryData raw;
    Google__Protobuf__FileDescriptorProto *fd;
} g_files[MAX_FILES];
static int g_nfiles;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int s = 0; *p < end && s < 64; s += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return 1;
    }
    return 0;
}

static void free_files(void) {
    for (int i = 0; i < g_nfiles; i++)
        google__protobuf__file_descriptor_proto__free_unpacked(g_files[i].fd, NULL);
    g_nfiles = 0;
}

/* FileDescriptorSet { repeated FileDescriptorProto file = 1; } */
static void load(void) {
    const uint8_t *p = ts_descriptor_set, *end = p + ts_descriptor_set_len;
    while (p < end && g_nfiles < MAX_FILES) {
        uint64_t key, len;
        if (!read_varint(&p, end, &key) || key != ((1u << 3) | 2)) break;
        if (!read_varint(&p, end, &len) || len > (uint64_t)(end - p)) break;
        Google__Protobuf__FileDescriptorProto *fd =
            google__protobuf__file_descriptor_proto__unpack(NULL, (size_t)len, p);
        if (fd && fd->name) {
            g_files[g_nfiles].raw.data = (uint8_t *)p;
            g_files[g_nfiles].raw.len = (size_t)len;
            g_files[g_nfiles].fd = fd;
            g_nfiles++;
        } else if (fd) {
            google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
        }
        p += len;
    }
    atexit(free_files);
    TS_LOG_DEBUG("reflection: %d descriptor files", g_nfiles);
}

static int find_file(const char *name) {
    for (int i = 0; i < g_nfiles; i++)
        if (!strcmp(g_files[i].fd->name, name)) return i;
    return -1;
}

static bool sym_match(const char *pkg, const char *name, const char *sym) {
    char full[512];
    snprintf(full, sizeof full, "%s%s%s", pkg, pkg[0] ? "." : "", name);
    size_t n = strlen(full);
    return !strncmp(sym, full, n) && (sym[n] == '\0' || sym[n] == '.');
}

/* The file defining sym (a top-level message, enum or service, or anything under one:
 * nested types, fields, methods). */
static int find_symbol(const char *sym) {
    for (int i = 0; i < g_nfiles; i++) {
        const Google__Protobuf__FileDescriptorProto *f = g_files[i].fd;
        const char *pkg = f->package ? f->package : "";
        for (size_t k = 0; k < f->n_message_type; k++)
            if (sym_match(pkg, f->message_type[k]->name, sym)) return i;
        for (size_t k = 0; k < f->n_enum_type; k++)
            if (sym_match(pkg, f->enum_type[k]->name, sym)) return i;
        for (size_t k = 0; k < f->n_service; k++)
            if (sym_match(pkg, f->service[k]->name, sym)) return i;
    }
    return -1;
}

/* file idx and its transitive dependencies, each once */
static void collect(int idx, uint64_t *sent, ProtobufCBinaryData *out, size_t *n) {
    if (idx < 0 || (*sent & (1ull << idx))) return;
    *sent |= 1ull << idx;
    out[(*n)++] = g_files[idx].raw;
    const Google__Protobuf__FileDescriptorProto *f = g_files[idx].fd;
    for (size_t k = 0; k < f->n_dependency; k++) collect(find_file(f->dependency[k]), sent, out, n);
}

static void on_msg(ts_rpc_call *c, const uint8_t *data, size_t len, void *ctx) {
    (void)ctx;
    Grpc__Reflection__V1alpha__ServerReflectionRequest *rq =
        grpc__reflection__v1alpha__server_reflection_request__unpack(NULL, len, data);
    if (!rq) {
        ts_rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed ServerReflectionRequest");
        return;
    }
    Grpc__Reflection__V1alpha__ServerReflectionResponse rs =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse ls =
        GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ServiceResponse svc[MAX_SERVICES], *svcp[MAX_SERVICES];
    char names[MAX_SERVICES][160];
    Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    ProtobufCBinaryData files[MAX_FILES];
    Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ExtensionNumberResponse ext =
        GRPC__REFLECTION__V1ALPHA__EXTENSION_NUMBER_RESPONSE__INIT;
    rs.valid_host = rq->host;
    rs.original_request = rq;
    int idx = -2; /* -2: answered already; -1: not found; >= 0: a file */
    const char *what = "";
    switch (rq->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
        size_t n = 0;
        for (int i = 0; i < g_nfiles; i++) {
            const Google__Protobuf__FileDescriptorProto *f = g_files[i].fd;
            for (size_t k = 0; k < f->n_service && n < MAX_SERVICES; k++, n++) {
                snprintf(names[n], sizeof names[n], "%s%s%s", f->package ? f->package : "",
                         f->package && f->package[0] ? "." : "", f->service[k]->name);
                grpc__reflection__v1alpha__service_response__init(&svc[n]);
                svc[n].name = names[n];
                svcp[n] = &svc[n];
            }
        }
        ls.n_service = n;
        ls.service = svcp;
        rs.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        rs.list_services_response = &ls;
        break;
    }
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        what = rq->file_by_filename;
        idx = find_file(what);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        what = rq->file_containing_symbol;
        idx = find_symbol(what);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        what = rq->all_extension_numbers_of_type;
        if (find_symbol(what) >= 0) { /* we define no extensions: an empty list */
            ext.base_type_name = rq->all_extension_numbers_of_type;
            rs.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            rs.all_extension_numbers_response = &ext;
        } else {
            idx = -1;
        }
        break;
    default: /* file_containing_extension: no extensions here */
        what = "extension";
        idx = -1;
        break;
    }
    char emsg[300];
    if (idx >= 0) {
        size_t n = 0;
        uint64_t sent = 0;
        collect(idx, &sent, files, &n);
        fdr.n_file_descriptor_proto = n;
        fdr.file_descriptor_proto = files;
        rs.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        rs.file_descriptor_response = &fdr;
    } else if (idx == -1) {
        snprintf(emsg, sizeof emsg, "not found: %s", what ? what : "");
        er.error_code = GRPC_STATUS_NOT_FOUND;
        er.error_message = emsg;
        rs.message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        rs.error_response = &er;
    }
    ts_rpc_call_send(c, &rs.base);
    grpc__reflection__v1alpha__server_reflection_request__free_unpacked(rq, NULL);
}

size_t ts_rpc_reflection_methods(ts_rpc_method *m) {
    pthread_once(&g_once, load);
    m[0] = (ts_rpc_method){"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", NULL, NULL,
                           on_msg};
    m[1] = (ts_rpc_method){"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", NULL,
                           NULL, on_msg};
    return 2;
}
