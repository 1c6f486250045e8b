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

static const char *const g_level_names[] = {"error", "warn", "info", "debug", "trace"};

int ts_log_parse_level(const char *s) {
    if (!s) return -1;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, g_level_names[i]) == 0) return i;
    if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0') return s[0] - '0';
    return -1;
}

void ts_log_set_level(ts_log_level level) { atomic_store(&g_level, (int)level); }

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
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
