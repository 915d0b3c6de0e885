/* The synchronous route, ANY /function/<name>[/<path>][?q]: resolves the
 * function, forwards the request to its upstream over pooled keep-alive
 * connections (libevent HTTP client) and relays the answer.
 * Thread: every function runs on the event-loop thread that owns `base`;
 * nothing here blocks (upstream host names are resolved with evdns). */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/status.h"
#include "request.h"

struct event_base;
struct evdns_base;
struct evhttp_request;
struct cmn_resolver;
struct cmn_metrics;
struct gw_proxy;

struct gw_proxy_config {
    struct event_base *base;       /* bound: must outlive the proxy */
    struct evdns_base *dns;        /* bound: resolves upstream host names */
    struct cmn_resolver *resolver; /* bound */
    struct cmn_metrics *metrics;   /* bound; NULL = no metrics */
    const char *default_ns;        /* copied; namespace of names without a dot */
    bool direct_functions;         /* DNS mode: a name that does not resolve is 404 */
    int64_t upstream_timeout_ms;   /* whole-call deadline, connect to last byte */
    int max_idle_per_upstream;     /* idle keep-alive connections kept per upstream */
    int64_t max_response_bytes;    /* longest response body relayed (then 502), bytes */
};

/* Creates the proxy. `*out` is new (gw_proxy_free). Errors: CMN_ERR_NOMEM.
 * Never blocks. */
enum cmn_status gw_proxy_new(const struct gw_proxy_config *config, struct gw_proxy **out,
                             struct cmn_err *err);

/* Handles one request whose path starts with "/function/"; takes `r` (it
 * gets exactly one reply, now or later, and is closed by the proxy);
 * `target` (borrowed) is only read during the call. Replies: the upstream's
 * answer; 400 invalid name; 404 unknown function; 502 upstream unreachable or
 * its response over max_response_bytes; 504 after upstream_timeout. A client
 * hang-up cancels the upstream request; the drain deadline answers 503. A
 * kept-alive connection that fails before any response byte is retried once
 * on a fresh connection. */
void gw_proxy_handle(struct gw_proxy *px, struct gw_req *r, const struct gw_target *target);

/* A request relayed to a fixed upstream rather than a function: the
 * provider's /system API in provider mode. */
struct gw_forward {
    const char *base_url;      /* "http://host:port[/prefix]"; borrowed, must outlive the call */
    const char *authorization; /* replaces the client's Authorization (borrowed, must outlive
                                  the call); NULL = the client's passes */
    /* Called on the loop thread with the upstream's whole answer already in
     * r->out_headers / r->out_body, before the reply; may rewrite them and
     * `*status`. Not called for gateway-made answers (502, 504). NULL =
     * relay as is. */
    void (*on_response)(struct gw_req *r, int *status, void *arg);
    void *arg;
};

/* Relays `r` (taken, as gw_proxy_handle) to fwd->base_url + the request's
 * path unchanged + its query, with the same header rules, bounds, timeout
 * and hang-up handling as a function call; no function metrics. `fwd` is
 * copied. */
void gw_proxy_forward(struct gw_proxy *px, struct gw_req *r, const struct gw_target *target,
                      const struct gw_forward *fwd);

/* Calls in flight (their requests are also counted by gw_req_live). */
size_t gw_proxy_inflight(const struct gw_proxy *px);

/* Frees the proxy: closes pooled connections, orphans pending DNS lookups.
 * Every call must have ended (evhttp_free runs first). Call before
 * evdns_base_free and event_base_free. NULL allowed. */
void gw_proxy_free(struct gw_proxy *px);

#endif
