/* log.h: leveled logging to stderr.
 *
 * The level comes from ts_log_set_level() or, at first use, from the environment variable
 * TESSERA_LOG (error, warn, info, debug, trace; default warn). Each line carries a UTC
 * timestamp, the level and the calling function. Thread-safe: one write(2) per line.
 *
 * Two formats (ts_log_set_format; env TESSERA_LOG_FORMAT=json at first use):
 *   text: `2026-01-02T03:04:05.678Z info  admit: request req-7: admitted to slot 2 ...`
 *   json: one object per line, `{"ts":"2026-01-02T03:04:05.678Z","level":"info",
 *         "func":"admit","request_id":"req-7","msg":"request req-7: admitted ..."}`.
 * Convention: a message about a request starts with `request ID: `; the JSON format then
 * carries ID in "request_id" as well (absent on other lines). Messages are escaped as JSON
 * strings (control characters as \u00XX; bytes >= 0x80 are passed through). In the text
 * format control characters are replaced by '?': one event is always one line.
 */
#ifndef TS_LOG_H
#define TS_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TS_LOG_LEVEL_ERROR = 0,
    TS_LOG_LEVEL_WARN = 1,
    TS_LOG_LEVEL_INFO = 2,
    TS_LOG_LEVEL_DEBUG = 3,
    TS_LOG_LEVEL_TRACE = 4,
} ts_log_level;

typedef enum { TS_LOG_FORMAT_TEXT = 0, TS_LOG_FORMAT_JSON = 1 } ts_log_format;

void ts_log_set_level(ts_log_level level);
void ts_log_set_format(ts_log_format f);
/* "text" or "json" -> the format; -1 if unknown. */
int ts_log_parse_format(const char *s);
ts_log_level ts_log_get_level(void);
/* Parses "error".."trace" (or "0".."4"); returns -1 if unknown. */
int ts_log_parse_level(const char *s);

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void ts_log_(ts_log_level level, const char *func, const char *fmt, ...);

#define TS_LOG_AT(lvl, ...)                                                                \
    do {                                                                                   \
        if ((lvl) <= ts_log_get_level()) ts_log_((lvl), __func__, __VA_ARGS__);           \
    } while (0)
#define TS_LOG_ERROR(...) TS_LOG_AT(TS_LOG_LEVEL_ERROR, __VA_ARGS__)
#define TS_LOG_WARN(...) TS_LOG_AT(TS_LOG_LEVEL_WARN, __VA_ARGS__)
#define TS_LOG_INFO(...) TS_LOG_AT(TS_LOG_LEVEL_INFO, __VA_ARGS__)
#define TS_LOG_DEBUG(...) TS_LOG_AT(TS_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define TS_LOG_TRACE(...) TS_LOG_AT(TS_LOG_LEVEL_TRACE, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
