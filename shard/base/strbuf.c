/* strbuf.c: see strbuf.h. */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ts_str_append(char *buf, size_t cap, const char *fmt, ...) {
    if (!buf || cap == 0) return;
    size_t n = strnlen(buf, cap);
    if (n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

const char *ts_str_gib(uint64_t b, char *buf, size_t cap) {
    if (b >= (1ull << 30)) snprintf(buf, cap, "%.1f GiB", (double)b / 1073741824.0);
    else snprintf(buf, cap, "%.1f MiB", (double)b / 1048576.0);
    return buf;
}
