/* status.c: status names and the thread-local last-error message. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const g_names[] = {
#define TS_X_NAME(name, text) #name,
    TS_STATUS_MAP(TS_X_NAME)
#undef TS_X_NAME
};
static const char *const g_texts[] = {
#define TS_X_TEXT(name, text) text,
    TS_STATUS_MAP(TS_X_TEXT)
#undef TS_X_TEXT
};

#define TS_ERRBUF_SIZE 1024
static _Thread_local char g_err[TS_ERRBUF_SIZE];

const char *ts_status_name(ts_status s) {
    if ((int)s < 0 || s >= TS_STATUS_COUNT_) return "TS_?";
    return g_names[s];
}

const char *ts_status_text(ts_status s) {
    if ((int)s < 0 || s >= TS_STATUS_COUNT_) return "unknown status";
    return g_texts[s];
}

const char *ts_last_error(void) { return g_err; }

void ts_clear_error(void) { g_err[0] = '\0'; }

ts_status ts_fail_(ts_status code, const char *func, const char *file, int line,
                   const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    TS_LOG_DEBUG("%s (%s:%d in %s)", g_err, file, line, func);
    return code;
}

void ts_error_prefix(const char *fmt, ...) {
    char prefix[256];
    char old[TS_ERRBUF_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    /* "prefix: old", truncated to the buffer (old may itself be near full size). */
    size_t np = strnlen(prefix, sizeof prefix), no = strnlen(old, sizeof old - 1);
    size_t o = 0;
    for (size_t i = 0; i < np && o < sizeof g_err - 1; i++) g_err[o++] = prefix[i];
    for (size_t i = 0; i < 2 && o < sizeof g_err - 1; i++) g_err[o++] = ": "[i];
    for (size_t i = 0; i < no && o < sizeof g_err - 1; i++) g_err[o++] = old[i];
    g_err[o] = '\0';
}
