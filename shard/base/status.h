/* status.h: the one error type of tessera.
 *
 * Every fallible function returns a ts_status. TS_OK is 0. The codes separate who is at
 * fault (NCCL's split): the caller (TS_INVAL), the input data (TS_FORMAT, TS_UNSUPPORTED),
 * the environment (TS_IO, TS_NOMEM, TS_SYSTEM, TS_CUDA, TS_NCCL, TS_MPI, TS_TIMEOUT,
 * TS_UNAVAILABLE) and tessera itself (TS_INTERNAL). The RPC layer maps them to gRPC codes.
 *
 * A failure site calls TS_FAIL(code, fmt, ...): it formats a message into a thread-local
 * buffer (read back with ts_last_error()), logs it at DEBUG level with the function name,
 * and evaluates to `code`. Callers propagate with TS_TRY / TS_TRY_GOTO, which leave a
 * TRACE breadcrumb at every level.
 */
#ifndef TS_STATUS_H
#define TS_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, short text). The order fixes the numeric values: append only. */
#define TS_STATUS_MAP(X)                                   \
    X(TS_OK, "ok")                                         \
    X(TS_INVAL, "invalid argument")                        \
    X(TS_FORMAT, "malformed data")                         \
    X(TS_UNSUPPORTED, "unsupported")                       \
    X(TS_NOT_FOUND, "not found")                           \
    X(TS_RANGE, "out of range")                            \
    X(TS_NOMEM, "out of memory")                           \
    X(TS_IO, "I/O error")                                  \
    X(TS_SYSTEM, "system error")                           \
    X(TS_CUDA, "CUDA error")                               \
    X(TS_NCCL, "NCCL error")                               \
    X(TS_MPI, "MPI error")                                 \
    X(TS_TIMEOUT, "timed out")                             \
    X(TS_UNAVAILABLE, "unavailable")                       \
    X(TS_EXHAUSTED, "resource exhausted")                  \
    X(TS_CANCELLED, "cancelled")                           \
    X(TS_INTERNAL, "internal error")

typedef enum {
#define TS_X_ENUM(name, text) name,
    TS_STATUS_MAP(TS_X_ENUM)
#undef TS_X_ENUM
    TS_STATUS_COUNT_
} ts_status;

/* "TS_FORMAT" etc.; "TS_?" for values outside the table. */
const char *ts_status_name(ts_status s);
/* "malformed data" etc. */
const char *ts_status_text(ts_status s);

/* The message of the last TS_FAIL on this thread ("" if none). Valid until the next
 * TS_FAIL on the same thread. */
const char *ts_last_error(void);
/* Clears the thread's last error message. */
void ts_clear_error(void);

#if defined(__GNUC__)
#define TS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TS_PRINTF(a, b)
#endif

/* Implementation of TS_FAIL: records "func: message" and returns code. */
ts_status ts_fail_(ts_status code, const char *func, const char *file, int line,
                   const char *fmt, ...) TS_PRINTF(5, 6);

#define TS_FAIL(code, ...) ts_fail_((code), __func__, __FILE__, __LINE__, __VA_ARGS__)

/* Adds context in front of the current last error: "ctx: previous message". */
void ts_error_prefix(const char *fmt, ...) TS_PRINTF(1, 2);

#define TS_TRY(expr)                                                                       \
    do {                                                                                   \
        ts_status ts_rc_ = (expr);                                                         \
        if (ts_rc_ != TS_OK) {                                                             \
            TS_LOG_TRACE("-> %s", ts_status_name(ts_rc_));                                 \
            return ts_rc_;                                                                 \
        }                                                                                  \
    } while (0)

#define TS_TRY_GOTO(expr, rc, label)                                                       \
    do {                                                                                   \
        (rc) = (expr);                                                                     \
        if ((rc) != TS_OK) {                                                               \
            TS_LOG_TRACE("-> %s", ts_status_name(rc));                                     \
            goto label;                                                                    \
        }                                                                                  \
    } while (0)

#ifdef __cplusplus
}
#endif

#include "log.h"

#endif
