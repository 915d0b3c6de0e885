/* Function logs: the line format of logs/<ns>/<name>.log (one JSON object per
 * line: {"instance":"<pid>","timestamp":"<RFC 3339, ns>","text":"<line>"}) and
 * GET /system/logs, which answers faas-provider's NDJSON stream
 * ({"name","namespace","instance","timestamp","text"} per line) from that file,
 * with tail, since, instance and follow (a chunked reply polling the file until
 * the client leaves).
 * Thread: the event-loop thread; reads of the local log file block briefly. */
#ifndef PV_LOGS_H
#define PV_LOGS_H

#include <stddef.h>
#include <time.h>
#include "cmn/status.h"

struct event_base;
struct evhttp_request;
struct pv_logs; /* opaque: the follow streams */

/* Encodes one output line `text` (`len` bytes, borrowed, no newline; invalid
 * UTF-8 bytes become U+FFFD) of replica `instance` at wall time `when` as one
 * log-file line, newline included. Returns a new string (caller frees) with its
 * length in `*out_len`, or NULL when out of memory. Pure, any thread. */
char *pv_logs_encode(const char *instance, const struct timespec *when, const char *text,
                     size_t len, size_t *out_len);

/* Creates the follow-stream registry on `base` (borrowed). NULL when out of memory. */
struct pv_logs *pv_logs_new(struct event_base *base);

/* Ends every follow stream (their replies are finished) and frees. NULL allowed. */
void pv_logs_free(struct pv_logs *logs);

/* Answers GET /system/logs for the function `name`.`ns` (borrowed; the caller
 * checked it exists) from `path` (borrowed), with the request's raw `query`
 * (NULL allowed). Always replies exactly once: 422 for a bad tail/since, 500 when
 * the file cannot be read, else 200 application/x-ndjson, streaming with
 * follow=true/1 until the client leaves or pv_logs_free. */
void pv_logs_handle(struct pv_logs *logs, struct evhttp_request *req, const char *name,
                    const char *ns, const char *path, const char *query);

#endif
