/* One proxied call per request: a fresh client connection to the chosen
 * replica (loopback, so connection set-up is cheap and no pool state can go
 * stale across replica restarts), freed by libevent when the exchange ends.
 * The call is owned here from the request until the upstream callback, which
 * always runs once; a client that leaves first only clears call->req. */
#include "fnproxy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include "cmn/hangup.h"
#include "cmn/log.h"
#include "cmn/name.h"
#include "procs.h"
#include "store.h"

struct pv_fnproxy {
    struct pv_fnproxy_config cfg;
    TAILQ_HEAD(, call) calls;
};

struct call {
    TAILQ_ENTRY(call) link;
    struct pv_fnproxy *proxy;
    struct evhttp_request *req;     /* NULL once the client left */
    struct evhttp_connection *conn; /* client connection, NULL once it left */
    struct evhttp_connection *up;   /* upstream connection (frees itself on completion) */
    struct cmn_hangup hangup;
    enum evhttp_request_error up_error;
    bool up_failed;
    char fn[2 * CMN_NAME_MAX];
};

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive",     "Proxy-Authenticate", "Proxy-Authorization",
    "TE",         "Trailer",        "Transfer-Encoding",  "Upgrade",
    "Host",       "Content-Length", "Proxy-Connection",
};

static bool is_hop_by_hop(const char *name)
{
    for (size_t i = 0; i < sizeof hop_by_hop / sizeof hop_by_hop[0]; i++)
        if (strcasecmp(name, hop_by_hop[i]) == 0)
            return true;
    return false;
}

static void reply_text(struct evhttp_request *req, int code, const char *fmt, const char *arg)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    evhttp_add_header(h, "X-OpenFaaS-Internal", "proxy");
    if (b != NULL) {
        evbuffer_add_printf(b, fmt, arg);
        evbuffer_add(b, "\n", 1);
    }
    evhttp_send_reply(req, code, NULL, b);
    if (b != NULL)
        evbuffer_free(b);
}

static void call_free(struct call *c)
{
    cmn_hangup_stop(&c->hangup);
    TAILQ_REMOVE(&c->proxy->calls, c, link);
    free(c);
}

static void on_client_close(struct evhttp_connection *conn, void *arg)
{
    struct call *c = arg;
    (void)conn;
    cmn_hangup_stop(&c->hangup);
    LOG_DEBUG(NULL, "%s: client left before the reply", c->fn);
    c->req = NULL; /* evhttp frees it right after this callback */
    c->conn = NULL;
}

static void on_upstream_error(enum evhttp_request_error error, void *arg)
{
    struct call *c = arg;
    c->up_failed = true;
    c->up_error = error;
}

static void on_upstream_done(struct evhttp_request *up_req, void *arg)
{
    struct call *c = arg;
    struct evhttp_request *req = c->req;
    cmn_hangup_stop(&c->hangup);
    if (req == NULL)
        goto out;
    if (c->conn != NULL)
        evhttp_connection_set_closecb(c->conn, NULL, NULL);
    int code = up_req != NULL ? evhttp_request_get_response_code(up_req) : 0;
    if (up_req == NULL || code == 0 || c->up_failed) {
        if (c->up_failed && c->up_error == EVREQ_HTTP_TIMEOUT) {
            LOG_WARN(NULL, "%s: upstream timeout", c->fn);
            reply_text(req, 504, "Timeout waiting for: %s.", c->fn);
        } else if (c->up_failed && c->up_error == EVREQ_HTTP_DATA_TOO_LONG) {
            LOG_WARN(NULL, "%s: response over max_response_bytes", c->fn);
            reply_text(req, 502, "Response from %s is too large.", c->fn);
        } else {
            LOG_WARN(NULL, "%s: cannot reach the replica (error %d)", c->fn, (int)c->up_error);
            reply_text(req, 502, "Can't reach service for: %s.", c->fn);
        }
        goto out;
    }
    struct evkeyvalq *in = evhttp_request_get_input_headers(up_req);
    struct evkeyvalq *outh = evhttp_request_get_output_headers(req);
    for (struct evkeyval *kv = in->tqh_first; kv != NULL; kv = kv->next.tqe_next)
        if (!is_hop_by_hop(kv->key))
            evhttp_add_header(outh, kv->key, kv->value);
    if (evhttp_find_header(outh, "Content-Type") == NULL)
        evhttp_add_header(outh, "Content-Type", "text/plain");
    evhttp_send_reply(req, code, evhttp_request_get_response_code_line(up_req),
                      evhttp_request_get_input_buffer(up_req));
out:
    call_free(c);
}

struct pv_fnproxy *pv_fnproxy_new(const struct pv_fnproxy_config *cfg)
{
    struct pv_fnproxy *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->cfg = *cfg;
    TAILQ_INIT(&p->calls);
    return p;
}

void pv_fnproxy_free(struct pv_fnproxy *p)
{
    if (p == NULL)
        return;
    struct call *c;
    while ((c = TAILQ_FIRST(&p->calls)) != NULL) {
        if (c->conn != NULL)
            evhttp_connection_set_closecb(c->conn, NULL, NULL);
        if (c->up != NULL)
            evhttp_connection_free(c->up); /* frees the upstream request, no callback */
        call_free(c);
    }
    free(p);
}

void pv_fnproxy_handle(struct pv_fnproxy *p, struct evhttp_request *req, const char *rest,
                       const char *query)
{
    const char *name_s = NULL, *sub = NULL;
    size_t name_len = 0;
    struct cmn_fn_name fn;
    struct call *c = NULL;
    struct evhttp_request *up_req = NULL;
    char *target = NULL;

    if (cmn_route_split(rest, &name_s, &name_len, &sub) != CMN_OK) {
        reply_text(req, 400, "%s", "Provide function name in the request path");
        return;
    }
    if (cmn_name_parse(name_s, name_len, p->cfg.default_ns, &fn, NULL) != CMN_OK ||
        pv_store_find(p->cfg.store, fn.name, fn.ns) == NULL) {
        char full[2 * CMN_NAME_MAX + 8];
        snprintf(full, sizeof full, "%.*s", (int)(name_len > 128 ? 128 : name_len), name_s);
        if (memchr(name_s, '.', name_len) == NULL)
            snprintf(full, sizeof full, "%.*s.%s", (int)(name_len > 63 ? 63 : name_len), name_s,
                     p->cfg.default_ns);
        reply_text(req, 404, "function not found: %s", full);
        return;
    }
    int port = pv_procs_pick(p->cfg.procs, fn.name, fn.ns);
    if (port <= 0) {
        reply_text(req, 503, "No endpoints available for: %s.", fn.name);
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        reply_text(req, 500, "%s", "out of memory");
        return;
    }
    c->proxy = p;
    snprintf(c->fn, sizeof c->fn, "%s.%s", fn.name, fn.ns);
    TAILQ_INSERT_TAIL(&p->calls, c, link);

    size_t tlen = strlen(sub) + (query != NULL ? strlen(query) : 0) + 3;
    target = malloc(tlen);
    if (target == NULL)
        goto fail;
    snprintf(target, tlen, "%s%s%s%s", sub[0] == '/' ? "" : "/", sub, query != NULL ? "?" : "",
             query != NULL ? query : "");

    c->up = evhttp_connection_base_new(p->cfg.base, NULL, "127.0.0.1", (ev_uint16_t)port);
    if (c->up == NULL)
        goto fail;
    struct timeval tv = {(time_t)(p->cfg.upstream_timeout_ms / 1000),
                         (suseconds_t)((p->cfg.upstream_timeout_ms % 1000) * 1000)};
    evhttp_connection_set_timeout_tv(c->up, &tv);
    evhttp_connection_set_retries(c->up, 0);
    evhttp_connection_set_max_body_size(c->up, (ev_ssize_t)p->cfg.max_response_bytes);
    up_req = evhttp_request_new(on_upstream_done, c);
    if (up_req == NULL)
        goto fail;
    evhttp_request_set_error_cb(up_req, on_upstream_error);

    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(up_req);
    const char *host = evhttp_find_header(in, "Host");
    for (struct evkeyval *kv = in->tqh_first; kv != NULL; kv = kv->next.tqe_next)
        if (!is_hop_by_hop(kv->key))
            evhttp_add_header(out, kv->key, kv->value);
    char up_host[32];
    snprintf(up_host, sizeof up_host, "127.0.0.1:%d", port);
    evhttp_add_header(out, "Host", up_host);
    if (host != NULL && evhttp_find_header(out, "X-Forwarded-Host") == NULL)
        evhttp_add_header(out, "X-Forwarded-Host", host);
    char *peer = NULL;
    ev_uint16_t peer_port = 0;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn != NULL)
        evhttp_connection_get_peer(conn, &peer, &peer_port);
    if (peer != NULL && evhttp_find_header(out, "X-Forwarded-For") == NULL)
        evhttp_add_header(out, "X-Forwarded-For", peer);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (evbuffer_get_length(body) > 0 || method == EVHTTP_REQ_POST || method == EVHTTP_REQ_PUT ||
        method == EVHTTP_REQ_PATCH) {
        char len_s[32];
        snprintf(len_s, sizeof len_s, "%zu", evbuffer_get_length(body));
        evhttp_add_header(out, "Content-Length", len_s);
        evbuffer_add_buffer(evhttp_request_get_output_buffer(up_req), body);
    }
    if (evhttp_make_request(c->up, up_req, method, target) != 0) {
        up_req = NULL; /* freed by evhttp_make_request */
        goto fail;
    }
    up_req = NULL;
    evhttp_connection_free_on_completion(c->up);
    c->req = req;
    c->conn = conn;
    if (conn != NULL) {
        evhttp_connection_set_closecb(conn, on_client_close, c);
        (void)cmn_hangup_watch(&c->hangup, p->cfg.base, conn);
    }
    free(target);
    return;

fail:
    if (up_req != NULL)
        evhttp_request_free(up_req);
    if (c->up != NULL)
        evhttp_connection_free(c->up);
    call_free(c);
    free(target);
    reply_text(req, 502, "Can't reach service for: %s.", fn.name);
}
