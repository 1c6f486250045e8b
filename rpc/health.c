/* health.c: grpc.health.v1.Health Check and Watch on the rpc/ server layer.
 * Check: SERVING / NOT_SERVING, NOT_FOUND for an unknown service (per the spec).
 * Watch: the current status at once (SERVICE_UNKNOWN for unknown services), then every
 * change; ends with UNAVAILABLE at shutdown. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "server.h"

#define MAX_SERVICES 8
#define MAX_WATCHERS 256

enum {
    SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
    NOT_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
    UNKNOWN = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN,
};

typedef struct {
    ts_rpc_call *c;
    char *service;
    int last;
} watcher;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[128];
    int status;
} g_svc[MAX_SERVICES];
static int g_nsvc;
static watcher g_w[MAX_WATCHERS];
static int g_nw;
static bool g_down;

static int lookup_locked(const char *svc) {
    for (int i = 0; i < g_nsvc; i++)
        if (!strcmp(g_svc[i].name, svc)) return g_svc[i].status;
    return -1;
}

static void send_status(ts_rpc_call *c, int st) {
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    ts_rpc_call_send(c, &r.base);
}

/* Sends changed statuses to watchers; drops cancelled ones. g_mu held. */
static void notify_locked(bool end) {
    for (int i = 0; i < g_nw;) {
        watcher *w = &g_w[i];
        if (!ts_rpc_call_cancelled(w->c)) {
            int st = lookup_locked(w->service);
            if (st < 0) st = UNKNOWN;
            if (st != w->last) {
                w->last = st;
                send_status(w->c, st);
            }
            if (end) ts_rpc_call_finish(w->c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        }
        if (end || ts_rpc_call_cancelled(w->c)) {
            ts_rpc_call_unref(w->c);
            free(w->service);
            g_w[i] = g_w[--g_nw];
        } else {
            i++;
        }
    }
}

void ts_rpc_health_set(const char *service, bool serving) {
    pthread_mutex_lock(&g_mu);
    int i = 0;
    while (i < g_nsvc && strcmp(g_svc[i].name, service)) i++;
    if (i == g_nsvc && g_nsvc < MAX_SERVICES) {
        snprintf(g_svc[i].name, sizeof g_svc[i].name, "%s", service);
        g_nsvc++;
    }
    if (i < g_nsvc) g_svc[i].status = serving ? SERVING : NOT_SERVING;
    notify_locked(false);
    pthread_mutex_unlock(&g_mu);
}

void ts_rpc_health_shutdown(void) {
    pthread_mutex_lock(&g_mu);
    g_down = true;
    for (int i = 0; i < g_nsvc; i++) g_svc[i].status = NOT_SERVING;
    notify_locked(true);
    pthread_mutex_unlock(&g_mu);
}

static void on_watch_close(void *user, bool cancelled) {
    (void)user;
    if (!cancelled) return;
    pthread_mutex_lock(&g_mu);
    notify_locked(false); /* reaps the cancelled watcher */
    pthread_mutex_unlock(&g_mu);
}

static void handle(ts_rpc_call *c, void *ctx) {
    bool watch = ctx != NULL;
    Grpc__Health__V1__HealthCheckRequest *rq = (Grpc__Health__V1__HealthCheckRequest *)
        ts_rpc_call_unpack(c, &grpc__health__v1__health_check_request__descriptor);
    if (!rq) {
        ts_rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed HealthCheckRequest");
        return;
    }
    pthread_mutex_lock(&g_mu);
    int st = lookup_locked(rq->service);
    if (!watch) {
        pthread_mutex_unlock(&g_mu);
        if (st < 0) {
            ts_rpc_call_finish(c, GRPC_STATUS_NOT_FOUND, "unknown service '%s'", rq->service);
        } else {
            send_status(c, st);
            ts_rpc_call_finish(c, GRPC_STATUS_OK, NULL);
        }
    } else if (g_down || g_nw == MAX_WATCHERS) {
        pthread_mutex_unlock(&g_mu);
        ts_rpc_call_finish(c, g_down ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_RESOURCE_EXHAUSTED,
                           g_down ? "server shutting down" : "too many Watch streams");
    } else {
        watcher *w = &g_w[g_nw];
        w->service = strdup(rq->service);
        if (!w->service) {
            pthread_mutex_unlock(&g_mu);
            ts_rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        } else {
            g_nw++;
            ts_rpc_call_ref(c);
            w->c = c;
            w->last = st < 0 ? UNKNOWN : st;
            send_status(c, w->last);
            ts_rpc_call_set_user(c, NULL, on_watch_close, NULL);
            pthread_mutex_unlock(&g_mu);
        }
    }
    protobuf_c_message_free_unpacked(&rq->base, NULL);
}

size_t ts_rpc_health_methods(ts_rpc_method *m) {
    static int watch_flag;
    m[0] = (ts_rpc_method){"/grpc.health.v1.Health/Check", handle, NULL, NULL};
    m[1] = (ts_rpc_method){"/grpc.health.v1.Health/Watch", handle, &watch_flag, NULL};
    return 2;
}
