/* log.h: leveled logging to stderr.
 *
 * The level comes from ts_log_set_level() or, at first use, from the environment variable
 * TESSERA_LOG (error, warn, info, debug, trace; default warn). Each line carries a UTC
 * timestamp, the level and the calling function. Thread-safe: one write(2) per line.
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

void ts_log_set_level(ts_log_level level);
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
