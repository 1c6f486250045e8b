/* strbuf.h: appending formatted text to a fixed-size, NUL-terminated buffer (messages and
 * descriptions built piece by piece). */
#ifndef TS_STRBUF_H
#define TS_STRBUF_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Appends printf-formatted text to buf (cap bytes, already NUL-terminated); text that does
 * not fit is cut off, and buf stays terminated. */
void ts_str_append(char *buf, size_t cap, const char *fmt, ...) TS_PRINTF(3, 4);

/* A byte count for messages: "14.2 GiB" (>= 1 GiB), else "3.5 MiB"; returns buf. */
const char *ts_str_gib(uint64_t bytes, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
