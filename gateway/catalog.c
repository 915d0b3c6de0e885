/* The provider catalogue: two libevent HTTP client connections to the
 * provider (one for list refreshes, one for single-name lookups, so that a
 * slow list never holds a lookup back), a list of lookups in flight with the
 * requests parked on each, and a small ring of recently denied names. */
#include "catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cmn/log.h"
#include "cmn/resolver.h"

#define TIMEOUT_S 5
#define MAX_ANSWER_BYTES (16 * 1024 * 1024)
#define DENIED_MAX 64

struct cat_wait;

struct lookup {
    struct lookup *next;
    struct gw_catalog *cat;
    struct cmn_fn_name fn;
    struct cat_wait *waiters;
};

/* One parked request, in its request's area (unused until it is routed). */
struct cat_wait {
    struct lookup *lk;
    struct cat_wait *next;
    struct gw_req *r;
    void (*resume)(struct gw_req *r, void *arg);
    void *arg;
};

struct denied {
    struct cmn_fn_name fn;
    int64_t until_ns;
};

struct gw_catalog {
    struct gw_catalog_config config;
    char *provider_url, *authorization, *default_ns;
    char host_header[300];
    char prefix[1024]; /* provider URL path without a trailing '/' */
    struct evhttp_connection *list_conn, *lookup_conn;
    struct event *timer;
    bool list_busy, list_again, list_failing;
    uint64_t refreshes;
    struct lookup *lookups;
    struct denied denied[DENIED_MAX];
    unsigned denied_next;
};

_Static_assert(sizeof(struct cat_wait) <= GW_REQ_AREA_BYTES, "cat_wait must fit a request's area");

static bool same_fn(const struct cmn_fn_name *a, const struct cmn_fn_name *b)
{
    return strcmp(a->name, b->name) == 0 && strcmp(a->ns, b->ns) == 0;
}

static bool is_denied(struct gw_catalog *cat, const struct cmn_fn_name *fn)
{
    int64_t now = gw_mono_ns();
    for (int i = 0; i < DENIED_MAX; i++) {
        if (cat->denied[i].until_ns > now && same_fn(&cat->denied[i].fn, fn))
            return true;
    }
    return false;
}

static void deny(struct gw_catalog *cat, const struct cmn_fn_name *fn)
{
    struct denied *d = &cat->denied[cat->denied_next++ % DENIED_MAX];
    d->fn = *fn;
    d->until_ns = gw_mono_ns() + cat->config.negative_ms * 1000000LL;
}

static struct evhttp_request *get(struct gw_catalog *cat, struct evhttp_connection *conn,
                                  const char *uri, void (*cb)(struct evhttp_request *, void *),
                                  void *arg)
{
    struct evhttp_request *req = evhttp_request_new(cb, arg);
    if (req == NULL)
        return NULL;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", cat->host_header);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "User-Agent", "cfaas-gateway/" CFAAS_VERSION);
    if (cat->authorization != NULL)
        evhttp_add_header(h, "Authorization", cat->authorization);
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, uri) != 0)
        return NULL; /* libevent freed the request */
    return req;
}

/* ---- list refresh ---------------------------------------------------------- */

static void list_start(struct gw_catalog *cat);

static void list_done(struct evhttp_request *req, void *arg)
{
    struct gw_catalog *cat = arg;
    cat->list_busy = false;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    if (code == 200) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *body = (const char *)evbuffer_pullup(in, -1);
        struct cmn_err err;
        if (cmn_resolver_provider_put(cat->config.resolver, body != NULL ? body : "", len,
                                      cat->default_ns, cat->default_ns, &err) == CMN_OK) {
            cat->refreshes++;
            if (cat->list_failing)
                LOG_INFO(NULL, "provider %s: function list refreshed again", cat->provider_url);
            cat->list_failing = false;
        } else if (!cat->list_failing) {
            LOG_WARN(NULL, "provider %s: function list unusable (%s); keeping the last one",
                     cat->provider_url, err.msg);
            cat->list_failing = true;
        }
    } else if (!cat->list_failing) {
        LOG_WARN(NULL, "provider %s: function list failed (%s %d); keeping the last one",
                 cat->provider_url, code == 0 ? "no answer" : "status", code);
        cat->list_failing = true;
    }
    if (cat->list_again) {
        cat->list_again = false;
        list_start(cat);
    }
}

static void list_start(struct gw_catalog *cat)
{
    if (cat->list_busy) {
        cat->list_again = true;
        return;
    }
    char uri[1400];
    snprintf(uri, sizeof(uri), "%s/system/functions?namespace=%s", cat->prefix, cat->default_ns);
    if (get(cat, cat->list_conn, uri, list_done, cat) != NULL)
        cat->list_busy = true;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    list_start(arg);
}

void gw_catalog_changed(struct gw_catalog *cat)
{
    memset(cat->denied, 0, sizeof(cat->denied));
    list_start(cat);
}

uint64_t gw_catalog_refreshes(const struct gw_catalog *cat)
{
    return cat->refreshes;
}

/* ---- lookups of one name ------------------------------------------------- */

static const struct gw_req_hooks wait_hooks;

static void wait_remove(struct cat_wait *w)
{
    struct cat_wait **pp = &w->lk->waiters;
    while (*pp != NULL && *pp != w)
        pp = &(*pp)->next;
    if (*pp == w)
        *pp = w->next;
}

static void wait_gone(struct gw_req *r, void *state)
{
    wait_remove(state);
    gw_req_close(r);
}

static void wait_abort(struct gw_req *r, void *state)
{
    wait_remove(state);
    gw_req_reply_text(r, 503, "gateway shutting down");
    gw_req_close(r);
}

static const struct gw_req_hooks wait_hooks = {.gone = wait_gone, .abort = wait_abort};

static void lookup_done(struct evhttp_request *req, void *arg)
{
    struct lookup *lk = arg;
    struct gw_catalog *cat = lk->cat;
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    const char *full_ns = lk->fn.ns;
    if (code == 200) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *body = (const char *)evbuffer_pullup(in, -1);
        struct cmn_err err;
        if (cmn_resolver_provider_put(cat->config.resolver, body != NULL ? body : "", len, NULL,
                                      full_ns, &err) != CMN_OK) {
            LOG_WARN(NULL, "provider %s: answer for %s.%s unusable: %s", cat->provider_url,
                     lk->fn.name, lk->fn.ns, err.msg);
            deny(cat, &lk->fn);
        }
    } else {
        if (code == 404) {
            cmn_resolver_provider_drop(cat->config.resolver, &lk->fn);
        } else {
            LOG_WARN(NULL, "provider %s: lookup of %s.%s failed (%s %d)", cat->provider_url,
                     lk->fn.name, lk->fn.ns, code == 0 ? "no answer" : "status", code);
        }
        deny(cat, &lk->fn);
    }
    struct lookup **pp = &cat->lookups;
    while (*pp != NULL && *pp != lk)
        pp = &(*pp)->next;
    if (*pp == lk)
        *pp = lk->next;
    struct cat_wait *w = lk->waiters;
    lk->waiters = NULL;
    free(lk);
    while (w != NULL) {
        struct cat_wait *next = w->next;
        struct gw_req *r = w->r;
        void (*resume)(struct gw_req *, void *) = w->resume;
        void *rarg = w->arg;
        gw_req_unhold(r);
        r->resumed = true;
        resume(r, rarg); /* may reuse r's area: w is not touched after this */
        w = next;
    }
}

bool gw_catalog_park(struct gw_catalog *cat, struct gw_req *r, const struct cmn_fn_name *fn,
                     void (*resume)(struct gw_req *r, void *arg), void *arg)
{
    if (r->resumed || is_denied(cat, fn))
        return false;
    struct lookup *lk = cat->lookups;
    while (lk != NULL && !same_fn(&lk->fn, fn))
        lk = lk->next;
    if (lk == NULL) {
        lk = calloc(1, sizeof(*lk));
        if (lk == NULL)
            return false;
        lk->cat = cat;
        lk->fn = *fn;
        char uri[1400];
        snprintf(uri, sizeof(uri), "%s/system/function/%s?namespace=%s", cat->prefix, fn->name,
                 fn->ns);
        if (get(cat, cat->lookup_conn, uri, lookup_done, lk) == NULL) {
            free(lk);
            return false;
        }
        lk->next = cat->lookups;
        cat->lookups = lk;
        LOG_DEBUG(NULL, "provider lookup of %s.%s", fn->name, fn->ns);
    }
    struct cat_wait *w = gw_req_area(r);
    w->lk = lk;
    w->r = r;
    w->resume = resume;
    w->arg = arg;
    w->next = lk->waiters;
    lk->waiters = w;
    gw_req_hold(r, &wait_hooks, w);
    return true;
}

/* ---- life cycle --------------------------------------------------------------- */

static struct evhttp_connection *connection(struct gw_catalog *cat, const char *host, int port)
{
    struct evhttp_connection *c =
        evhttp_connection_base_new(cat->config.base, cat->config.dns, host, (unsigned short)port);
    if (c == NULL)
        return NULL;
    evhttp_connection_set_timeout(c, TIMEOUT_S);
    evhttp_connection_set_max_body_size(c, MAX_ANSWER_BYTES);
    evhttp_connection_set_max_headers_size(c, 64 * 1024);
    evhttp_connection_set_retries(c, 0);
    return c;
}

enum cmn_status gw_catalog_new(const struct gw_catalog_config *config, struct gw_catalog **out,
                               struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    struct evhttp_uri *u = NULL;
    struct gw_catalog *cat = calloc(1, sizeof(*cat));
    if (cat == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "catalog: out of memory");
    cat->config = *config;
    cat->provider_url = strdup(config->provider_url);
    cat->default_ns = strdup(config->default_ns);
    cat->authorization = config->authorization != NULL ? strdup(config->authorization) : NULL;
    if (cat->provider_url == NULL || cat->default_ns == NULL ||
        (config->authorization != NULL && cat->authorization == NULL)) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "catalog: out of memory");
        goto out;
    }
    u = evhttp_uri_parse(config->provider_url);
    const char *scheme = u != NULL ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u != NULL ? evhttp_uri_get_host(u) : NULL;
    if (scheme == NULL || strcmp(scheme, "http") != 0 || host == NULL || host[0] == '\0') {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0,
                         "functions_provider_url \"%.200s\": not an http:// URL",
                         config->provider_url);
        goto out;
    }
    int port = evhttp_uri_get_port(u);
    if (port < 0)
        port = 80;
    if (port == 80)
        snprintf(cat->host_header, sizeof(cat->host_header), "%s", host);
    else
        snprintf(cat->host_header, sizeof(cat->host_header), "%s:%d", host, port);
    const char *path = evhttp_uri_get_path(u);
    snprintf(cat->prefix, sizeof(cat->prefix), "%s", path != NULL ? path : "");
    size_t n = strlen(cat->prefix);
    while (n > 0 && cat->prefix[n - 1] == '/')
        cat->prefix[--n] = '\0';
    /* libevent wants the host without IPv6 brackets */
    cat->list_conn = connection(cat, host, port);
    cat->lookup_conn = connection(cat, host, port);
    cat->timer = event_new(config->base, -1, EV_PERSIST, timer_cb, cat);
    if (cat->list_conn == NULL || cat->lookup_conn == NULL || cat->timer == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "catalog: out of memory");
        goto out;
    }
    struct timeval tv = {.tv_sec = (time_t)(config->refresh_ms / 1000),
                         .tv_usec = (suseconds_t)(config->refresh_ms % 1000) * 1000};
    event_add(cat->timer, &tv);
    list_start(cat);
    *out = cat;
    cat = NULL;
out:
    if (u != NULL)
        evhttp_uri_free(u);
    gw_catalog_free(cat);
    return st;
}

void gw_catalog_free(struct gw_catalog *cat)
{
    if (cat == NULL)
        return;
    if (cat->timer != NULL)
        event_free(cat->timer);
    /* freeing the connections drops their pending requests without callbacks */
    if (cat->list_conn != NULL)
        evhttp_connection_free(cat->list_conn);
    if (cat->lookup_conn != NULL)
        evhttp_connection_free(cat->lookup_conn);
    struct lookup *lk = cat->lookups;
    while (lk != NULL) {
        struct lookup *next = lk->next;
        free(lk);
        lk = next;
    }
    free(cat->provider_url);
    free(cat->authorization);
    free(cat->default_ns);
    free(cat);
}
