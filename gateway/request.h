/* The request owner of the public port (gw_req, below) and helpers shared by
 * every route: the request target split, clocks, number formatting, and the
 * evhttp reply used by the metrics port.
 * Thread: everything here runs on the event-loop thread unless stated. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/keyvalq_struct.h>

#include "cmn/callid.h"
#include "cmn/status.h"

struct evhttp_request;
struct evbuffer;
struct event_base;
struct gw_conn;
struct gw_req;

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

/* Splits the request target `uri` (borrowed; NUL-terminated, as sent) into
 * `out`. Returns false when the target is not an origin-form path ("/...") or
 * the path is longer than GW_PATH_MAX - 1 bytes. Never blocks. */
bool gw_target_split(const char *uri, struct gw_target *out);

/* Wall clock, nanoseconds since the Unix epoch (X-Start-Time). Any thread. */
int64_t gw_now_ns(void);

/* Monotonic clock in nanoseconds (durations and deadlines). Any thread. */
int64_t gw_mono_ns(void);

/* evhttp replies (the metrics port only): status `code` with `reason` (NULL =
 * standard phrase) and the body in `body` (its content is moved into the
 * reply; NULL = the request's output buffer). Adds "Connection: close" while
 * the gateway drains. `req` must not be used by the caller afterwards. */
void gw_reply(struct evhttp_request *req, int code, const char *reason, struct evbuffer *body);

/* gw_reply with a text/plain body `text` (borrowed, may be NULL = empty). */
void gw_reply_text(struct evhttp_request *req, int code, const char *text);

/* Switches every later reply to "Connection: close" (set when SIGTERM arrives). */
void gw_request_set_draining(void);

/* True once gw_request_set_draining was called. */
bool gw_request_draining(void);

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

/* A message head being built (request or status line and headers), with
 * memcpy instead of printf per line: inline storage first, the heap beyond.
 * On allocation failure `failed` is set and later adds do nothing. */
struct gw_head {
    char *p;
    size_t len, cap;
    bool failed;
    char inline_bytes[4096];
};

/* Empties `b` onto its inline storage. */
void gw_head_init(struct gw_head *b);

/* Appends `n` bytes of `s`. */
void gw_head_add(struct gw_head *b, const char *s, size_t n);

/* Appends the NUL-terminated `s`. */
void gw_head_str(struct gw_head *b, const char *s);

/* Appends "name: value\r\n". Returns CMN_OK, or CMN_ERR_NOMEM once failed
 * (a cmn_header_sink). */
enum cmn_status gw_head_header(void *b, const char *name, const char *value);

/* Frees heap storage (the inline bytes need nothing). */
void gw_head_free(struct gw_head *b);

/* ---- the request owner ----------------------------------------------------
 * Every request on the public port is one gw_req, whatever its route: the
 * parsed request (server.h), the reply being built, the call id and start
 * time every reply carries, and the live list the drain waits on. Rules:
 * - exactly one reply: gw_req_reply* sends it, or nothing when the client is
 *   gone; later calls are ignored (and logged at debug);
 * - one free: a request nobody holds is freed by its reply; a route that
 *   keeps state past its handler calls gw_req_hold, and then gw_req_close
 *   once its work has ended (replied or not);
 * - a held request learns of a client hang-up through hooks->gone, at most
 *   once, within a second of the hang-up; the drain deadline calls
 *   hooks->abort, which must reply.
 * Thread: the event-loop thread only. */

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
    struct gw_conn *conn;       /* the client's connection; NULL once replied or gone */
    struct gw_req *prev, *next; /* live list (held requests), or the free cache */
    const struct gw_req_hooks *hooks;
    void *state; /* the route's, given to gw_req_hold */
    int method;  /* enum evhttp_cmd_type */
    bool held, replied, gone;
    bool resumed;          /* routed once more after a wait (provider lookups): do not wait again */
    int64_t body_reserved; /* request-body bytes counted for it (gw_req_body_reserve) */
    int64_t t0_ns;         /* monotonic, when the request was complete */
    /* The request, owned (filled by the server): the target as sent, the
     * headers in order (gw_hdr_* nodes), the body. */
    char *uri;
    size_t uri_cap;
    struct evkeyvalq in_headers;
    struct evbuffer *in_body;
    /* The reply being built: headers (add with gw_req_header) and body. */
    struct evkeyvalq out_headers;
    struct evbuffer *out_body;
    char peer[GW_ADDR_MAX];       /* client IP, "" if unknown */
    char call_id[CMN_CALLID_MAX]; /* "" until gw_req_set_ids */
    char start[24];               /* X-Start-Time text, "" until gw_req_set_ids */
    /* The route's state lives here (gw_req_area): one allocation and one
     * free per request, whatever the route. Not zeroed between requests. */
    _Alignas(16) unsigned char area[GW_REQ_AREA_BYTES];
};

/* Room for the route's state in `r`, at least `size` bytes (a route whose
 * state is larger than GW_REQ_AREA_BYTES does not compile: see the static
 * asserts in the routes). Uninitialised. */
static inline void *gw_req_area(struct gw_req *r)
{
    return r->area;
}

/* For the server: a fresh request for connection `c` (empty lists and
 * buffers, from the cache). NULL when out of memory. */
struct gw_req *gw_req_new(struct gw_conn *c);

/* For the server: frees a request that was never handed to a route (a
 * refused or incomplete one). */
void gw_req_discard(struct gw_req *r);

/* For the server: the client of `r` went away before the reply: detaches
 * it and calls hooks->gone (a held request) or frees it. */
void gw_req_client_gone(struct gw_req *r);

/* Appends (name, value) to `q` as one allocation (lengths in bytes, need
 * not be NUL-terminated). Returns 0, or -1 when out of memory. The list must
 * only ever hold gw_hdr nodes (freed by gw_hdr_clear, never by
 * evhttp_clear_headers); evhttp_find_header reads it as usual. */
int gw_hdr_add(struct evkeyvalq *q, const char *name, size_t name_len, const char *value,
               size_t value_len);

/* Frees every node of `q`, leaving it empty. */
void gw_hdr_clear(struct evkeyvalq *q);

/* Removes (and frees) every node of `q` named `name` (any case); returns how
 * many. Never evhttp_remove_header on these lists. */
size_t gw_hdr_remove(struct evkeyvalq *q, const char *name);

/* Adds a reply header to `r` (ignored once replied). */
void gw_req_header(struct gw_req *r, const char *name, const char *value);

/* Gives `r` its call id (the client's X-Call-Id when valid) and start time
 * (the client's X-Start-Time when `adopt_start` and it is a safe value, else
 * now). A present but invalid X-Call-Id makes it return false when `strict`
 * (the caller answers 400) and is replaced by a new id otherwise. */
bool gw_req_set_ids(struct gw_req *r, bool strict, bool adopt_start);

/* Gives `r` a new call id and the start time now, whatever it carries. */
void gw_req_set_fresh_ids(struct gw_req *r);

/* Keeps `r` past its handler: `hooks` (static) and `state` (the route's) are
 * called as documented above. */
void gw_req_hold(struct gw_req *r, const struct gw_req_hooks *hooks, void *state);

/* Request-body memory held at once by every request (being read or
 * handled), against the cap `cap` bytes (max_inflight_body_bytes; -1 = none).
 * Set once at start-up. */
void gw_req_set_body_cap(int64_t cap);

/* Counts `bytes` more of body memory for `r` (its Content-Length up front,
 * or each chunk of a chunked body); false, counting nothing, when that would
 * pass the cap (the server answers 503). Released when `r` is freed, after
 * its buffers; when the last body of a burst of at least 16 MiB goes, freed
 * memory is returned to the system (malloc_trim). */
bool gw_req_body_reserve(struct gw_req *r, int64_t bytes);

/* Body bytes counted now (tests and metrics). */
int64_t gw_req_body_held(void);

/* Undoes gw_req_hold for a request that is neither replied nor gone, so
 * that it can be routed again as if new (a route that waited for something
 * before choosing the handler). */
void gw_req_unhold(struct gw_req *r);

/* Sends the one reply: status `code`, `reason` (NULL = standard phrase),
 * r->out_headers (plus X-Call-Id and X-Start-Time when set and not already
 * present) and r->out_body. Frees a request that is not held. */
void gw_req_reply(struct gw_req *r, int code, const char *reason);

/* gw_req_reply with a text/plain body `text` (borrowed, NULL = empty). */
void gw_req_reply_text(struct gw_req *r, int code, const char *text);

/* The held route is done with `r`: frees it. A request never answered while
 * its client is still there gets a 500 first (a route bug, logged). */
void gw_req_close(struct gw_req *r);

/* Held requests not yet closed (the drain waits for 0). */
size_t gw_req_live(void);

/* Drain deadline: calls hooks->abort of every held request not yet replied. */
void gw_req_abort_all(void);

/* Frees the cache and what is left of the live list (at exit). */
void gw_req_teardown(void);

#endif
