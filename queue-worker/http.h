/* HTTP client of the queue-worker: one libcurl multi handle driving every
 * function invocation and callback POST of the process. The only module that
 * includes <curl/curl.h>; CURLcode is translated to enum qw_http_result here.
 *
 * Threads: everything runs on the main thread (the one calling qw_http_run),
 * except qw_http_wakeup, which any thread (not a signal handler) may call. */
#ifndef QW_HTTP_H
#define QW_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/cbrules.h"
#include "cmn/headers.h"
#include "cmn/status.h"

struct qw_http;
struct qw_http_xfer;

enum qw_http_result {
    QW_HTTP_OK = 0,    /* a complete HTTP response arrived (any status) */
    QW_HTTP_TRANSPORT, /* connect/send/receive failed: no (complete) response */
    QW_HTTP_TIMEOUT,   /* the request's timeout_ms passed */
    QW_HTTP_TOO_LARGE, /* the response body exceeded max_body_bytes */
    QW_HTTP_INVALID,   /* the request cannot be made (malformed URL, bad scheme) */
    QW_HTTP_FORBIDDEN, /* the address it would connect to is outside addr_rules */
    QW_HTTP_RESULT_COUNT
};

/* Returns the constant name of `result` ("QW_HTTP_TIMEOUT"); never NULL. */
const char *qw_http_result_name(enum qw_http_result result);

/* One request. Every pointer is borrowed and must stay valid until the
 * transfer completes or is cancelled (the body is sent without a copy). */
struct qw_http_request {
    const char *method;                /* "POST", "GET", ... sent as is */
    const char *url;                   /* absolute http:// or https:// URL */
    const struct cmn_headers *headers; /* sent in order; may be NULL */
    const void *body;                  /* may be NULL when body_len is 0 */
    size_t body_len;
    int64_t timeout_ms;    /* whole-transfer deadline, > 0 */
    size_t max_body_bytes; /* response body cap; 0 = discard the body */
    /* NULL, or rules every address the transfer connects to must pass
     * (checked on the resolved address just before connect) */
    const struct cmn_cbrules *addr_rules;
};

/* The outcome of one transfer, filled by the module; the caller owns it (and
 * frees it with qw_http_response_free) from the moment its done callback runs. */
struct qw_http_response {
    enum qw_http_result result;
    int status;                 /* HTTP status when result is QW_HTTP_OK, else 0 */
    struct cmn_headers headers; /* response headers of the final response, in order */
    char *body;                 /* NUL-terminated copy (NULL when empty or discarded) */
    size_t body_len;
    char error[256]; /* curl's message when result is not QW_HTTP_OK */
};

/* Runs exactly once per successfully started, not cancelled transfer, on the
 * main thread inside qw_http_run. `response` is the caller's struct given to
 * qw_http_start, now complete. The transfer handle is already freed. The
 * callback may start or cancel other transfers. */
typedef void (*qw_http_done_cb)(struct qw_http_response *response, void *closure);

/* Creates the client. `max_connections` bounds the connection cache (idle
 * keep-alive connections kept for reuse). On success `*out` is new (free with
 * qw_http_free). Errors: CMN_ERR_NOMEM, CMN_ERR_INVALID (libcurl init failed).
 * qw_http_global_init must have run. Main thread. */
enum cmn_status qw_http_new(int max_connections, struct qw_http **out, struct cmn_err *err);

/* Cancels every transfer (their callbacks never run) and frees the client.
 * NULL allowed. Main thread. */
void qw_http_free(struct qw_http *http);

/* Process-wide libcurl initialisation; call once in main() before any thread
 * starts. Returns false on failure. */
bool qw_http_global_init(void);
void qw_http_global_cleanup(void);

/* Starts one transfer. `response` (caller-owned; must be empty: zeroed or
 * after qw_http_response_free) receives the outcome; `done` runs exactly once when it completes,
 * unless qw_http_cancel is called first. `*out` (may be NULL) receives the
 * handle, valid until `done` runs or qw_http_cancel returns. Errors (then
 * `done` never runs): CMN_ERR_NOMEM, CMN_ERR_INVALID (bad request fields).
 * Never blocks. Main thread. */
enum cmn_status qw_http_start(struct qw_http *http, const struct qw_http_request *request,
                              struct qw_http_response *response, qw_http_done_cb done,
                              void *closure, struct qw_http_xfer **out, struct cmn_err *err);

/* Aborts a running transfer; its callback never runs and the handle is freed.
 * What was received so far stays in the response (free it as usual). NULL
 * allowed. Main thread. */
void qw_http_cancel(struct qw_http_xfer *xfer);

/* Waits up to `timeout_ms` for network activity, a wake-up (qw_http_wakeup)
 * or readability of `extra_fd` (-1 = none; `*extra_ready` is set accordingly,
 * NULL allowed), then advances every transfer and runs the done callbacks of
 * those that completed. Returns early whenever something happened. Errors:
 * CMN_ERR_IO (libcurl multi failure, detail in err). Main thread; blocks. */
enum cmn_status qw_http_run(struct qw_http *http, int timeout_ms, int extra_fd, bool *extra_ready,
                            struct cmn_err *err);

/* Makes a blocked or the next qw_http_run return at once. Any thread (uses
 * curl_multi_wakeup); not async-signal-safe: signal handlers use extra_fd. */
void qw_http_wakeup(struct qw_http *http);

/* Number of transfers in progress. Main thread. */
size_t qw_http_running(const struct qw_http *http);

/* Frees what `response` holds (headers, body) and leaves it empty. NULL allowed. */
void qw_http_response_free(struct qw_http_response *response);

/* Parses an HTTP-date (RFC 9110: IMF-fixdate, RFC 850, asctime) into seconds
 * since the Unix epoch; returns -1 when it is not a date. Pure, any thread. */
int64_t qw_http_parse_date(const char *text);

#endif
