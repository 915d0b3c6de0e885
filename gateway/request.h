/* Helpers shared by every route for one incoming evhttp request: splitting the
 * request target, the client address, clocks, and the single way the gateway
 * sends a reply (which also adds "Connection: close" while draining).
 * Thread: everything here runs on the event-loop thread unless stated. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/callid.h"
#include "cmn/hangup.h"

struct evhttp_request;
struct evbuffer;
struct event_base;

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

/* ---- the request owner ----------------------------------------------------
 * Every request on the public port gets one gw_req, whatever its route. It
 * holds the client's evhttp request, the call id and start time every reply
 * carries, the hang-up watch, and the live list the drain waits on. Rules:
 * - exactly one reply: gw_req_reply* sends it, or nothing when the client is
 *   gone; later calls are ignored (and logged at debug);
 * - one free: a request nobody holds is freed by its reply; a route that
 *   keeps state past its handler calls gw_req_hold, and then gw_req_close
 *   once its work has ended (replied or not);
 * - a held request learns of a client hang-up through hooks->gone, at most
 *   once, within a second of the hang-up; the drain deadline calls
 *   hooks->abort, which must reply.
 * Thread: the event-loop thread only. */

struct gw_req;

/* Bytes of route state a request carries inline (the proxy's call is the
 * largest). */
#define GW_REQ_AREA_BYTES 1536

struct gw_req_hooks {
    /* The client went away before the reply: stop the work (cancel the
     * upstream call) and close when done. `r` stays valid until closed; its
     * replies are dropped. */
    void (*gone)(struct gw_req *r, void *state);
    /* The drain deadline passed: reply now (503) and stop. */
    void (*abort)(struct gw_req *r, void *state);
};

struct gw_req {
    struct evhttp_request *req; /* the client's request; NULL once replied or gone */
    struct gw_req *prev, *next; /* live list (held requests), or the free cache */
    const struct gw_req_hooks *hooks;
    void *state; /* the route's, given to gw_req_hold */
    struct cmn_hangup hangup;
    int method; /* enum evhttp_cmd_type */
    bool held, replied, gone;
    int64_t t0_ns;                /* monotonic, when the request was opened */
    char call_id[CMN_CALLID_MAX]; /* "" until gw_req_set_ids */
    char start[24];               /* X-Start-Time text, "" until gw_req_set_ids */
    /* The route's state lives here (gw_req_area): one allocation and one
     * free per request, whatever the route. Not zeroed by gw_req_open. */
    _Alignas(16) unsigned char area[GW_REQ_AREA_BYTES];
};

/* Room for the route's state in `r`, at least `size` bytes (a route whose
 * state is larger than GW_REQ_AREA_BYTES does not compile: see the static
 * asserts in the routes). Uninitialised. */
static inline void *gw_req_area(struct gw_req *r)
{
    return r->area;
}

/* Sets the loop the requests live on (hang-up watches). Once, at start. */
void gw_req_setup(struct event_base *base);

/* Opens the owner of `req` (borrowed from evhttp until the reply). NULL when
 * out of memory: a 503 was sent. */
struct gw_req *gw_req_open(struct evhttp_request *req);

/* Gives `r` its call id (the client's X-Call-Id when valid) and start time
 * (the client's X-Start-Time when `adopt_start` and it is a safe value, else
 * now). A present but invalid X-Call-Id makes it return false when `strict`
 * (the caller answers 400) and is replaced by a new id otherwise. */
bool gw_req_set_ids(struct gw_req *r, bool strict, bool adopt_start);

/* Keeps `r` past its handler: `hooks` (static) and `state` (the route's) are
 * called as documented above, and the hang-up watch starts. */
void gw_req_hold(struct gw_req *r, const struct gw_req_hooks *hooks, void *state);

/* Sends the one reply (see gw_reply; X-Call-Id and X-Start-Time are added
 * when set and not already present). `body` is taken; NULL = empty. Frees a
 * request that is not held. */
void gw_req_reply(struct gw_req *r, int code, const char *reason, struct evbuffer *body);

/* gw_req_reply with a text/plain body `text` (borrowed, NULL = empty). */
void gw_req_reply_text(struct gw_req *r, int code, const char *text);

/* The held route is done with `r`: frees it. A request never answered while
 * its client is still there gets a 500 first (a route bug, logged). */
void gw_req_close(struct gw_req *r);

/* Held requests not yet closed (the drain waits for 0). */
size_t gw_req_live(void);

/* Drain deadline: calls hooks->abort of every held request not yet replied. */
void gw_req_abort_all(void);

/* Frees the cache (at exit, after every request was closed). */
void gw_req_teardown(void);

#endif
