/* The proxy's upstream client: one HTTP/1.1 connection to a function, on a
 * libevent bufferevent, with responses parsed by the packaged http-parser
 * library (nodejs/http-parser 2.9, Debian's libhttp-parser). One request at a
 * time per connection; kept alive between requests when the function allows.
 *
 * Bounded: the response head is at most GW_UP_MAX_HEAD_BYTES and the body at
 * most the request's `max_body_bytes`; beyond either the request fails and
 * the connection is closed, so nothing a function sends grows the gateway
 * past those caps.
 *
 * Thread: the event-loop thread that owns `base`; nothing here blocks. The
 * callbacks run on that thread, never from inside gw_upconn_request (which
 * returns -1 instead when it cannot send). */
#ifndef GW_UPCLIENT_H
#define GW_UPCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;
struct gw_upconn;

/* Longest response head (status line and headers), bytes. */
#define GW_UP_MAX_HEAD_BYTES (64 * 1024)

enum gw_up_result {
    GW_UP_OK,             /* a whole response arrived */
    GW_UP_CONNECT_FAILED, /* no connection (refused, unreachable) */
    GW_UP_CLOSED_EARLY,   /* closed or reset before any response byte */
    GW_UP_CLOSED,         /* closed or reset in the middle of the response */
    GW_UP_TOO_LARGE,      /* body over max_body_bytes, or head over GW_UP_MAX_HEAD_BYTES */
    GW_UP_BAD_RESPONSE,   /* not HTTP/1.x, or a 1xx status as the answer */
};

/* Short text for `r` ("connection closed"). */
const char *gw_up_result_text(enum gw_up_result r);

/* One response header, both strings NUL-terminated and borrowed until the
 * head callback returns. */
struct gw_up_header {
    const char *name;
    const char *value;
};

struct gw_up_callbacks {
    /* The response head: status (200..599), reason phrase ("" if none), every
     * header in order. Body bytes then go to the request's `body_out`. */
    void (*head)(void *arg, int status, const char *reason, const struct gw_up_header *headers,
                 size_t count);
    /* The request ended (exactly once per gw_upconn_request that returned 0).
     * On GW_UP_OK the connection is idle again, or already closed when the
     * function did not keep it alive (gw_upconn_usable says which). */
    void (*done)(void *arg, enum gw_up_result result);
};

/* Opens a connection to `addr` (copied; `addr_len` bytes). Connecting starts
 * with the first request. NULL when out of memory. */
struct gw_upconn *gw_upconn_new(struct event_base *base, const struct sockaddr *addr,
                                socklen_t addr_len);

/* Sends one request: `head` (`head_len` bytes: request line and headers,
 * ending with the empty line; copied) then `body` (NULL = none; referenced,
 * not copied: it must stay unchanged until the done callback). The response
 * body is appended to `body_out` (borrowed until done), at most
 * `max_body_bytes`. `is_head`: a HEAD request (its response has no body).
 * `cb` (static) and `arg` receive the outcome. Returns 0, or -1 when nothing
 * was sent (connection closed or busy; no callback then). */
int gw_upconn_request(struct gw_upconn *c, const char *head, size_t head_len, struct evbuffer *body,
                      struct evbuffer *body_out, int64_t max_body_bytes, bool is_head,
                      const struct gw_up_callbacks *cb, void *arg);

/* True when `c` is idle and open: a new request may be sent on it (it may
 * still turn out closed by the peer: GW_UP_CLOSED_EARLY). */
bool gw_upconn_usable(const struct gw_upconn *c);

/* True when the last request sent on `c` went on a connection that had
 * already served one (a reused, kept-alive connection). */
bool gw_upconn_reused(const struct gw_upconn *c);

/* Closes and frees `c`, cancelling a request in flight (its done callback is
 * not called). Safe from inside `c`'s own callbacks. NULL allowed. */
void gw_upconn_free(struct gw_upconn *c);

#endif
