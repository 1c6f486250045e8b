/* log.c: leveled logging; see log.h. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = -1;
static atomic_int g_format = -1;

static const char *const g_level_names[] = {"error", "warn", "info", "debug", "trace"};

int ts_log_parse_level(const char *s) {
    if (!s) return -1;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, g_level_names[i]) == 0) return i;
    if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0') return s[0] - '0';
    return -1;
}

void ts_log_set_level(ts_log_level level) { atomic_store(&g_level, (int)level); }

int ts_log_parse_format(const char *s) {
    if (!s) return -1;
    if (!strcasecmp(s, "text")) return TS_LOG_FORMAT_TEXT;
    if (!strcasecmp(s, "json")) return TS_LOG_FORMAT_JSON;
    return -1;
}

void ts_log_set_format(ts_log_format f) { atomic_store(&g_format, (int)f); }

static int get_format(void) {
    int f = atomic_load(&g_format);
    if (f < 0) {
        f = ts_log_parse_format(getenv("TESSERA_LOG_FORMAT"));
        if (f < 0) f = TS_LOG_FORMAT_TEXT;
        atomic_store(&g_format, f);
    }
    return f;
}

/* Appends s[0, n) as the body of a JSON string; returns the new length (truncated to cap). */
static size_t json_esc(char *out, size_t o, size_t cap, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && o + 7 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (ch == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(out + o, "\\u00", 4);
            o += 4;
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    return o;
}

/* The ID of a message that starts with "request ID: " (ID without spaces), else NULL. */
static const char *request_id_of(const char *msg, size_t *len) {
    if (strncmp(msg, "request ", 8) != 0) return NULL;
    const char *id = msg + 8, *e = id;
    while ((unsigned char)*e > 0x20 && *e != ':' && *e != 0x7f) e++; /* printable, no space */
    if (e == id || *e != ':') return NULL;
    *len = (size_t)(e - id);
    return id;
}

ts_log_level ts_log_get_level(void) {
    int l = atomic_load(&g_level);
    if (l < 0) {
        l = ts_log_parse_level(getenv("TESSERA_LOG"));
        if (l < 0) l = TS_LOG_LEVEL_WARN;
        atomic_store(&g_level, l);
    }
    return (ts_log_level)l;
}

void ts_log_(ts_log_level level, const char *func, const char *fmt, ...) {
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (get_format() == TS_LOG_FORMAT_JSON) {
        char msg[2048], out[4608];
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (m < 0) return;
        size_t ml = (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
        int n = snprintf(out, sizeof out,
                         "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"func\":\"",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, ts.tv_nsec / 1000000L,
                         g_level_names[level < 0 || level > 4 ? 0 : level]);
        if (n < 0) return;
        size_t o = json_esc(out, (size_t)n, sizeof out - 16, func, strlen(func));
        size_t il = 0;
        const char *id = request_id_of(msg, &il);
        if (id) {
            memcpy(out + o, "\",\"request_id\":\"", 16);
            o = json_esc(out, o + 16, sizeof out - 16, id, il);
        }
        memcpy(out + o, "\",\"msg\":\"", 9);
        o = json_esc(out, o + 9, sizeof out - 4, msg, ml);
        memcpy(out + o, "\"}\n", 3);
        o += 3;
        ssize_t w = write(STDERR_FILENO, out, o);
        (void)w;
        return;
    }
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L,
                     g_level_names[level < 0 || level > 4 ? 0 : level], func);
    if (n < 0) return;
    if ((size_t)n < sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0) n += m;
    }
    if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
    /* one event, one line: control characters (a client's request id, a method path)
     * cannot forge or split lines */
    for (int i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) line[i] = '?';
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
