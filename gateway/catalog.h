/* Provider mode's function catalogue: keeps the resolver's cache of the
 * provider's functions (cmn_resolver_provider_put) fresh without ever making
 * the event loop wait.
 *  - every `refresh_ms` it fetches GET <provider>/system/functions?namespace=
 *    <default_ns> and replaces that namespace's entries;
 *  - a request for a function the cache does not know is parked while one
 *    GET <provider>/system/function/<name>?namespace=<ns> runs (lookups of
 *    one name are merged), then routed again; a name the provider denied is
 *    answered 404 at once for `negative_ms` (unless a deploy passed through
 *    the gateway meanwhile: gw_catalog_changed);
 *  - requests to the provider use libevent's HTTP client with the gateway's
 *    credentials, a 5 s timeout and a 16 MiB answer cap; a failed refresh
 *    keeps the last known cache.
 * Thread: the event-loop thread that owns `base`; nothing here blocks. */
#ifndef GW_CATALOG_H
#define GW_CATALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "cmn/name.h"
#include "cmn/status.h"
#include "request.h"

struct event_base;
struct evdns_base;
struct cmn_resolver;
struct gw_catalog;

struct gw_catalog_config {
    struct event_base *base;       /* bound */
    struct evdns_base *dns;        /* bound */
    struct cmn_resolver *resolver; /* bound; provider mode with a catalog */
    const char *provider_url;      /* copied; http://host[:port][/prefix] */
    const char *authorization;     /* copied; "Basic …" or NULL = none */
    const char *default_ns;        /* copied */
    int64_t refresh_ms;            /* period of the list refresh (> 0) */
    int64_t negative_ms;           /* how long a denied name stays denied */
};

/* Creates the catalogue and starts the first list fetch. `*out` is new
 * (gw_catalog_free). Errors: CMN_ERR_INVALID (provider URL libevent cannot
 * parse or that is not http://), CMN_ERR_NOMEM. */
enum cmn_status gw_catalog_new(const struct gw_catalog_config *config, struct gw_catalog **out,
                               struct cmn_err *err);

/* Called by the router for a request naming function `fn` that the resolver
 * does not know. Returns true when `r` was taken: it is held until the
 * provider answered, then released (gw_req_unhold) with r->resumed set and
 * handed to `resume(r, arg)`; a client hang-up meanwhile frees it, the drain
 * deadline answers 503. Returns false (nothing taken) when `r` was resumed
 * already or the name was denied within negative_ms: route it now. */
bool gw_catalog_park(struct gw_catalog *cat, struct gw_req *r, const struct cmn_fn_name *fn,
                     void (*resume)(struct gw_req *r, void *arg), void *arg);

/* A change went through the gateway to the provider (deploy, update,
 * remove, scale): forgets the denied names and refreshes the list now. */
void gw_catalog_changed(struct gw_catalog *cat);

/* Successful list refreshes since start (tests and /readyz detail). */
uint64_t gw_catalog_refreshes(const struct gw_catalog *cat);

/* Frees the catalogue; parked requests must be gone (the server closed
 * them first). Pending provider requests are cancelled. NULL allowed. */
void gw_catalog_free(struct gw_catalog *cat);

#endif
