/* Process-wide logger: one line per event, one write(2) per line, newline
 * terminated, to stdout. Text form:
 *   2026-11-29T15:48:30.123Z INFO  [<call id>] <message>
 *   2026-11-29T15:48:30.123Z INFO  [<call id> trace=<trace id>] <message>
 * JSON form (log_format=json):
 *   {"ts":"…","level":"info","call_id":"…","trace_id":"…","msg":"…"}.
 * The level is checked before formatting (macro), so disabled levels cost a compare. */
#ifndef CMN_LOG_H
#define CMN_LOG_H

#include <stdbool.h>

enum cmn_log_level { CMN_LOG_DEBUG = 0, CMN_LOG_INFO, CMN_LOG_WARN, CMN_LOG_ERROR };

extern enum cmn_log_level cmn_log_min_level;

/* Sets the minimum level and output format. Call once at start-up, before any
 * other thread logs. `level`: "debug", "info", "warn", "error"; `format`: "text"
 * or "json". Returns false (and changes nothing) on an unknown value. */
bool cmn_log_setup(const char *level, const char *format);

/* Writes one line. `call_id` may be NULL (no call). Thread-safe: a line is a
 * single write(2). Blocks only as long as the write to stdout does. */
void cmn_log_write(enum cmn_log_level level, const char *call_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* cmn_log_write with the call's W3C trace id (cmn/trace.h) next to its call
 * id; `trace_id` NULL or "" = none. */
void cmn_log_write_traced(enum cmn_log_level level, const char *call_id, const char *trace_id,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define CMN_LOG_TRACED(level, call_id, trace_id, ...)                                              \
    do {                                                                                           \
        if ((level) >= cmn_log_min_level)                                                          \
            cmn_log_write_traced((level), (call_id), (trace_id), __VA_ARGS__);                     \
    } while (0)

#define CMN_LOG(level, call_id, ...)                                                               \
    do {                                                                                           \
        if ((level) >= cmn_log_min_level)                                                          \
            cmn_log_write((level), (call_id), __VA_ARGS__);                                        \
    } while (0)
#define LOG_DEBUG(id, ...) CMN_LOG(CMN_LOG_DEBUG, id, __VA_ARGS__)
#define LOG_INFO(id, ...) CMN_LOG(CMN_LOG_INFO, id, __VA_ARGS__)
#define LOG_WARN(id, ...) CMN_LOG(CMN_LOG_WARN, id, __VA_ARGS__)
#define LOG_ERROR(id, ...) CMN_LOG(CMN_LOG_ERROR, id, __VA_ARGS__)

#endif
