/* The gateway's HTTP/1.1 server for the public port: an evconnlistener, one
 * bufferevent per client connection, and requests parsed by the packaged
 * http-parser library (Debian's libhttp-parser, nodejs/http-parser 2.9). Each
 * complete request becomes a gw_req (request.h) handed to the route callback;
 * its reply is written by gw_req_reply through gw_conn_respond.
 *
 * Per connection: one request at a time, in order (pipelined requests wait in
 * the input buffer until the reply before them is written); keep-alive as the
 * client asks; "Expect: 100-continue" answered before the body is read; a
 * body over max_body_bytes refused with 413 as soon as its Content-Length (or
 * the running count of a chunked body) passes the limit; the head capped at
 * max_header_bytes (431). The connection is read while its request is being
 * handled, so a client that hangs up is noticed at once (hooks->gone).
 *
 * Bounded against abusive clients:
 * - the request line and headers must arrive within read_header_timeout of
 *   the connection's start (first request) or of the request's first byte
 *   (later ones), the body within read_body_timeout of the head: else 408;
 * - at most max_connections open: a new one beyond takes the place of a
 *   connection that holds no request being handled (waiting for its next
 *   request, or still sending its head or body), chosen from the client
 *   address holding the most connections, oldest first, which is closed; when
 *   every connection is busy the new one gets a 503 and is closed;
 * - request bodies are counted against the cap of gw_req_body_reserve: a
 *   Content-Length that does not fit is refused (503, Retry-After) before a
 *   byte of it is read; a chunked body when its running count does not;
 * - body_limit gives each request its route's limit (413 before the body).
 *
 * Thread: the event-loop thread that owns `base`; nothing here blocks. */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/status.h"

struct event_base;
struct gw_server;
struct gw_conn;
struct gw_req;

struct gw_server_config {
    struct event_base *base;        /* bound: must outlive the server */
    int64_t max_body_bytes;         /* longest request body, bytes (413 beyond) */
    size_t max_header_bytes;        /* longest request head, bytes (431 beyond) */
    int64_t idle_timeout_ms;        /* read or write inactivity that closes a connection */
    int64_t read_header_timeout_ms; /* request line + headers deadline (408), 0 = none */
    int64_t read_body_timeout_ms;   /* body deadline from the end of the head (408), 0 = none */
    size_t max_connections;         /* open client connections (see above), 0 = no cap */
    /* The body limit of a request (method as enum evhttp_cmd_type, the target
     * as sent), bytes, at most max_body_bytes; NULL = max_body_bytes. Loop
     * thread; must not keep `uri`. */
    int64_t (*body_limit)(void *arg, int method, const char *uri);
    /* A complete request (`r` is taken: it gets exactly one reply). */
    void (*on_request)(struct gw_req *r, void *arg);
    void *arg;
};

/* Creates the server (not listening yet). Errors: CMN_ERR_NOMEM. */
enum cmn_status gw_server_new(const struct gw_server_config *config, struct gw_server **out,
                              struct cmn_err *err);

/* Listens on 0.0.0.0:`port` (TCP_NODELAY on every connection, the
 * pause-on-EMFILE guard of cmn/listener.h). Errors: CMN_ERR_IO. */
enum cmn_status gw_server_listen(struct gw_server *s, int port, struct cmn_err *err);

/* Stops accepting (draining); open connections are closed after their
 * current reply ("Connection: close"). */
void gw_server_stop_accepting(struct gw_server *s);

/* Open client connections. */
size_t gw_server_connections(const struct gw_server *s);

/* Connections closed or refused to protect the server since start: `evicted`
 * (their place taken at the cap), `refused` (503 at the cap), `timed_out`
 * (408: head or body too slow), `body_refused` (503: body memory cap). */
struct gw_server_stats {
    uint64_t evicted, refused, timed_out, body_refused;
};
void gw_server_stats(const struct gw_server *s, struct gw_server_stats *out);

/* Closes every connection (a request in flight learns it through
 * hooks->gone) and frees the server. NULL allowed. */
void gw_server_free(struct gw_server *s);

/* For request.c: writes the reply of `r` (its out_headers and out_body, status
 * `code`, `reason` or the standard phrase) on `c`, then reads the next request
 * or closes the connection. `r` is detached from `c`. */
void gw_conn_respond(struct gw_conn *c, struct gw_req *r, int code, const char *reason);

#endif
