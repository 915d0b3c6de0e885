/* The process-wide logger: level filter, text or JSON lines, one write(2) per
 * line so lines from several threads never interleave. JSON escaping uses
 * jansson so a message with quotes or control bytes stays one valid object. */
#include "cmn/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum cmn_log_level cmn_log_min_level = CMN_LOG_INFO;
static bool log_json;

static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

bool cmn_log_setup(const char *level, const char *format)
{
    enum cmn_log_level lv;
    if (level == NULL || strcmp(level, "info") == 0)
        lv = CMN_LOG_INFO;
    else if (strcmp(level, "debug") == 0)
        lv = CMN_LOG_DEBUG;
    else if (strcmp(level, "warn") == 0 || strcmp(level, "warning") == 0)
        lv = CMN_LOG_WARN;
    else if (strcmp(level, "error") == 0)
        lv = CMN_LOG_ERROR;
    else
        return false;
    bool json;
    if (format == NULL || strcmp(format, "text") == 0)
        json = false;
    else if (strcmp(format, "json") == 0)
        json = true;
    else
        return false;
    cmn_log_min_level = lv;
    log_json = json;
    return true;
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void log_line(enum cmn_log_level level, const char *call_id, const char *trace_id,
                     const char *fmt, va_list ap)
{
    if ((unsigned)level > CMN_LOG_ERROR)
        level = CMN_LOG_ERROR;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char msg[2048];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        return;
    /* A message may carry outside data (URLs, reasons): never let it forge a line. */
    for (char *c = msg; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';

    char line[2304];
    if (!log_json) {
        int len;
        bool traced = trace_id != NULL && trace_id[0] != '\0';
        if (call_id != NULL && call_id[0] != '\0' && traced)
            len = snprintf(line, sizeof(line), "%s %s [%s trace=%.32s] %s\n", stamp,
                           level_text[level], call_id, trace_id, msg);
        else if (call_id != NULL && call_id[0] != '\0')
            len = snprintf(line, sizeof(line), "%s %s [%s] %s\n", stamp, level_text[level], call_id,
                           msg);
        else
            len = snprintf(line, sizeof(line), "%s %s %s\n", stamp, level_text[level], msg);
        if (len < 0)
            return;
        if ((size_t)len >= sizeof(line)) {
            len = (int)sizeof(line) - 1;
            line[len - 1] = '\n';
        }
        write_all(line, (size_t)len);
        return;
    }
    json_t *obj = json_pack("{s:s, s:s, s:s}", "ts", stamp, "level", level_json[level], "msg", msg);
    if (obj == NULL)
        return;
    if (call_id != NULL && call_id[0] != '\0')
        json_object_set_new(obj, "call_id", json_string(call_id));
    if (trace_id != NULL && trace_id[0] != '\0')
        json_object_set_new(obj, "trace_id", json_string(trace_id));
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (text == NULL)
        return;
    size_t tlen = strlen(text);
    char *out = malloc(tlen + 1);
    if (out != NULL) {
        memcpy(out, text, tlen);
        out[tlen] = '\n';
        write_all(out, tlen + 1);
        free(out);
    }
    free(text);
}

void cmn_log_write(enum cmn_log_level level, const char *call_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, call_id, NULL, fmt, ap);
    va_end(ap);
}

void cmn_log_write_traced(enum cmn_log_level level, const char *call_id, const char *trace_id,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, call_id, trace_id, fmt, ap);
    va_end(ap);
}
