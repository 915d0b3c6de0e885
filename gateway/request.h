/* Helpers shared by every route for one incoming evhttp request: splitting the
 * request target, the client address, clocks, and the single way the gateway
 * sends a reply (which also adds "Connection: close" while draining).
 * Thread: everything here runs on the event-loop thread unless stated. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evhttp_request;
struct evbuffer;

/* Longest request path (without the query) the routes accept. */
#define GW_PATH_MAX 8192
/* Room for an IPv6 address text. */
#define GW_ADDR_MAX 64

/* The request target split into its parts. `path` is a NUL-terminated copy of
 * the raw (still percent-encoded) path; `query` is borrowed from the request's
 * URI (valid while the request lives), NULL when there was no '?'. */
struct gw_target {
    char path[GW_PATH_MAX];
    const char *query;
};

/* Splits the request target of `req` (borrowed) into `out`. Returns false when
 * the target is not an origin-form path ("/...") or the path is longer than
 * GW_PATH_MAX - 1 bytes. Never blocks. */
bool gw_target_split(struct evhttp_request *req, struct gw_target *out);

/* Writes the peer IP of the client connection of `req` into `out` (`size`
 * bytes); "" when unknown (e.g. the client already went away). */
void gw_client_ip(struct evhttp_request *req, char *out, size_t size);

/* Wall clock, nanoseconds since the Unix epoch (X-Start-Time). Any thread. */
int64_t gw_now_ns(void);

/* Monotonic clock in nanoseconds (durations and deadlines). Any thread. */
int64_t gw_mono_ns(void);

/* Sends the reply: status `code` with `reason` (NULL = standard phrase) and the
 * body in `body` (taken: its content is moved into the reply; NULL = empty).
 * Adds "Connection: close" while the gateway drains. `req` must not be used by
 * the caller afterwards. */
void gw_reply(struct evhttp_request *req, int code, const char *reason, struct evbuffer *body);

/* Sends a text/plain reply whose body is `text` (borrowed, may be NULL = empty). */
void gw_reply_text(struct evhttp_request *req, int code, const char *text);

/* Switches every later reply to "Connection: close" (set when SIGTERM arrives). */
void gw_request_set_draining(void);

/* Standard reason phrase for `code` ("Accepted"); never NULL. */
const char *gw_reason(int code);

/* Writes the decimal text of `v` and a NUL into `out` (at least
 * GW_I64_TEXT_MAX bytes); returns the length without the NUL. printf-free:
 * it runs several times per request. Any thread. */
#define GW_I64_TEXT_MAX 21
size_t gw_fmt_i64(char *out, int64_t v);

/* Writes "function_name=\"<name>.<ns>\"" (the metrics label of a function)
 * into `out` of `size` bytes, and "<name>.<ns>" into `full` of `full_size`
 * bytes when `full` is not NULL; both truncated safely. Any thread. */
void gw_fn_label(const char *name, const char *ns, char *full, size_t full_size, char *out,
                 size_t size);

/* Writes "<fn_label>,code=\"<code>\"" into `out` of `size` bytes ("" when it
 * does not fit). Any thread. */
void gw_code_label(const char *fn_label, int code, char *out, size_t size);

/* Copies the NUL-terminated `src` into `dst` of `size` (> 0) bytes,
 * truncating; returns the copied length. */
size_t gw_strlcpy(char *dst, const char *src, size_t size);

/* Sets TCP_NODELAY on socket `fd` (ignored when fd < 0 or not TCP). Loop
 * thread; never blocks. */
void gw_set_nodelay(int fd);

#endif
