/* The /function/<name>[.<ns>][/<path>] reverse proxy: picks a ready replica of
 * the function (round-robin, procs.h) and forwards method, sub-path, raw query,
 * headers (minus hop-by-hop) and body over a libevent HTTP client connection to
 * 127.0.0.1:<replica port>; relays status, headers and body.
 * Errors: unknown function 404, no ready replica 503, transport error 502,
 * upstream_timeout 504, response over max_response_bytes 502.
 * Thread: the event-loop thread; never blocks. */
#ifndef PV_FNPROXY_H
#define PV_FNPROXY_H

#include <stdint.h>
#include "cmn/status.h"

struct event_base;
struct evhttp_request;
struct pv_procs;
struct pv_store;
struct pv_fnproxy; /* opaque: the calls in flight */

struct pv_fnproxy_config {
    struct event_base *base; /* borrowed */
    struct pv_procs *procs;  /* borrowed: replica lookup */
    struct pv_store *store;  /* borrowed: is the function deployed */
    const char *default_ns;  /* borrowed, outlives the proxy */
    int64_t upstream_timeout_ms;
    int64_t max_response_bytes;
};

/* New proxy (pv_fnproxy_free), or NULL when out of memory. */
struct pv_fnproxy *pv_fnproxy_new(const struct pv_fnproxy_config *cfg);

/* Drops every call in flight (their clients get no reply: only at exit). NULL allowed. */
void pv_fnproxy_free(struct pv_fnproxy *proxy);

/* Handles one request whose path starts with "/function/"; `rest` (borrowed)
 * is the path after that prefix, `query` the raw query or NULL. Replies exactly
 * once, now or when the replica answers (also if the client leaves first). */
void pv_fnproxy_handle(struct pv_fnproxy *proxy, struct evhttp_request *req, const char *rest,
                       const char *query);

#endif
