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
};

/* Creates the proxy. `*out` is new (gw_proxy_free). Errors: CMN_ERR_NOMEM.
 * Never blocks. */
enum cmn_status gw_proxy_new(const struct gw_proxy_config *config, struct gw_proxy **out,
                             struct cmn_err *err);

/* Handles one request whose path starts with "/function/". `req` (borrowed
 * from evhttp) gets exactly one reply, now or later; `target` (borrowed) is
 * only read during the call. Replies: the upstream's answer; 400 invalid name;
 * 404 unknown function; 502 upstream unreachable; 504 after upstream_timeout. */
void gw_proxy_handle(struct gw_proxy *px, struct evhttp_request *req,
                     const struct gw_target *target);

/* Calls that still owe their client a reply (for draining). */
size_t gw_proxy_inflight(const struct gw_proxy *px);

/* Drain deadline passed: cancels every in-flight upstream request and replies
 * 503 to its client. */
void gw_proxy_abort_all(struct gw_proxy *px);

/* Frees the proxy: aborts in-flight calls (503), closes pooled connections,
 * orphans pending DNS lookups. Call before evdns_base_free and event_base_free.
 * NULL allowed. */
void gw_proxy_free(struct gw_proxy *px);

#endif
