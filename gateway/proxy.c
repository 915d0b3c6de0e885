/* The synchronous proxy: one px_call per request (pooled objects, one owner,
 * one free), an upstream table keyed by the resolver's base URL that holds the
 * parsed address, a 5 s DNS cache (evdns, never blocking getaddrinfo) and a
 * bounded stack of idle keep-alive upstream connections (upclient.h: a
 * bufferevent and http-parser per connection). */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "cmn/callid.h"
#include "cmn/headers.h"
#include "cmn/log.h"
#include "cmn/url.h"
#include "cmn/metrics.h"
#include "cmn/name.h"
#include "cmn/resolver.h"
#include "upclient.h"

/* The upstream path and query as logged: query values masked. */
#define LOG_URI(call) cmn_url_redact((call)->uri, (char[1024]){0}, 1024)
#define ROUTE_PREFIX "/function/"
#define DNS_TTL_NS (5LL * 1000000000LL)
#define BUCKETS 256
#define MAX_UPSTREAMS 4096
#define URI_INLINE 512
#define URL_MAX 1024
#define LABELS_MAX 200

struct px_call;

struct dns_lookup {
    struct upstream *up; /* NULL once the upstream is gone: the callback only frees */
    struct evdns_getaddrinfo_request *request;
};

struct idle_conn {
    struct gw_upconn *conn;
    unsigned gen;
};

struct upstream {
    struct upstream *next; /* hash chain */
    char *base_url;        /* key: the resolver's URL */
    char *host;            /* without IPv6 brackets */
    char *host_header;     /* value of Host */
    char *prefix;          /* base path without trailing '/', "" for none */
    int port;
    bool numeric; /* host is an IP literal: no lookup */
    bool broken;  /* not an http:// URL: every call gets 502 */
    char addr[GW_ADDR_MAX];
    struct sockaddr_storage sa; /* addr and port, for connecting */
    socklen_t sa_len;
    bool have_addr;
    int dns_result;        /* 0 or the EVUTIL_EAI_* of the last lookup */
    int64_t dns_expiry_ns; /* monotonic */
    struct dns_lookup *lookup;
    struct px_call *waiters;
    unsigned gen; /* bumped when addr changes: older connections are dropped */
    struct idle_conn *idle;
    int idle_count;
    int refs; /* calls pointing at this upstream */
};

/* One sync call, kept in its request's area (gw_req_area): the request owner
 * holds the client side, this the upstream side. */
struct px_call {
    struct gw_proxy *px;
    struct gw_req *r; /* the owner: client request, ids, hang-up watch */
    struct px_call *wait_next;
    struct upstream *up;
    struct gw_upconn *conn; /* the connection of the request in flight, or NULL */
    unsigned conn_gen;
    int status;      /* the function's status, once its head arrived */
    char reason[64]; /* its reason phrase */
    struct event deadline;
    enum evhttp_cmd_type method;
    bool waiting_dns;
    bool retried;              /* already sent once more after a stale connection */
    const char *authorization; /* forward: replaces the client's (borrowed) */
    void (*on_response)(struct gw_req *r, int *status, void *arg); /* forward: before the reply */
    void *on_arg;
    char fn_full[CMN_NAME_MAX * 2];       /* "name.ns" */
    char fn_label[CMN_NAME_MAX * 2 + 24]; /* function_name="name.ns" */
    char *uri;                            /* uri_inline or malloc'ed */
    char uri_inline[URI_INLINE];
};

struct gw_proxy {
    struct gw_proxy_config config;
    char *default_ns;
    struct upstream *buckets[BUCKETS];
    int upstream_count;
    size_t live_count;
};

static void call_finish(struct px_call *call, int code);
static void call_send(struct px_call *call);

/* ---- upstream table ---------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void upstream_drop_idle(struct upstream *up)
{
    for (int i = 0; i < up->idle_count; i++)
        gw_upconn_free(up->idle[i].conn);
    up->idle_count = 0;
}

static void upstream_free(struct upstream *up)
{
    if (up == NULL)
        return;
    upstream_drop_idle(up);
    if (up->lookup != NULL) {
        struct dns_lookup *lk = up->lookup;
        lk->up = NULL;
        up->lookup = NULL;
        if (lk->request != NULL)
            evdns_getaddrinfo_cancel(lk->request);
    }
    free(up->idle);
    free(up->base_url);
    free(up->host);
    free(up->host_header);
    free(up->prefix);
    free(up);
}

/* up->sa from up->addr (an IP literal) and up->port. */
static void set_sockaddr(struct upstream *up)
{
    memset(&up->sa, 0, sizeof(up->sa));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&up->sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&up->sa;
    if (evutil_inet_pton(AF_INET, up->addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)up->port);
        up->sa_len = sizeof(*v4);
    } else if (evutil_inet_pton(AF_INET6, up->addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)up->port);
        up->sa_len = sizeof(*v6);
    } else {
        up->sa_len = 0;
    }
}

/* Parses the resolver's base URL with libevent's strict URI parser. */
static bool upstream_parse(struct upstream *up)
{
    bool ok = false;
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(up->base_url, 0);
    if (u == NULL)
        return false;
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    const char *path = evhttp_uri_get_path(u);
    if (scheme == NULL || strcasecmp(scheme, "http") != 0 || host == NULL || host[0] == '\0')
        goto out;
    up->port = evhttp_uri_get_port(u);
    if (up->port < 0)
        up->port = 80;
    if (up->port == 0 || up->port > 65535)
        goto out;
    if (path == NULL)
        path = "";

    size_t hlen = strlen(host);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']')
        up->host = strndup(host + 1, hlen - 2);
    else
        up->host = strdup(host);
    size_t hh_size = hlen + 8;
    up->host_header = malloc(hh_size);
    size_t plen = strlen(path);
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    up->prefix = strndup(path, plen);
    if (up->host == NULL || up->host_header == NULL || up->prefix == NULL)
        goto out;
    if (up->port == 80)
        snprintf(up->host_header, hh_size, "%s", host);
    else
        snprintf(up->host_header, hh_size, "%s:%d", host, up->port);

    unsigned char raw[sizeof(struct in6_addr)];
    if (evutil_inet_pton(AF_INET, up->host, raw) == 1 ||
        evutil_inet_pton(AF_INET6, up->host, raw) == 1) {
        up->numeric = true;
        up->have_addr = true;
        snprintf(up->addr, sizeof(up->addr), "%s", up->host);
        set_sockaddr(up);
    }
    ok = true;
out:
    evhttp_uri_free(u);
    return ok;
}

/* Drops upstreams nobody uses when the table is full (DNS mode lets clients
 * name arbitrary functions; the table must stay bounded). */
static void upstream_evict(struct gw_proxy *px)
{
    for (int b = 0; b < BUCKETS; b++) {
        struct upstream **pp = &px->buckets[b];
        while (*pp != NULL) {
            struct upstream *up = *pp;
            if (up->refs == 0 && up->waiters == NULL && up->lookup == NULL) {
                *pp = up->next;
                upstream_free(up);
                px->upstream_count--;
            } else {
                pp = &up->next;
            }
        }
    }
}

static struct upstream *upstream_get(struct gw_proxy *px, const char *base_url)
{
    uint32_t b = hash_str(base_url) % BUCKETS;
    for (struct upstream *up = px->buckets[b]; up != NULL; up = up->next)
        if (strcmp(up->base_url, base_url) == 0)
            return up;
    if (px->upstream_count >= MAX_UPSTREAMS)
        upstream_evict(px);
    struct upstream *up = calloc(1, sizeof(*up));
    if (up == NULL)
        return NULL;
    up->base_url = strdup(base_url);
    up->idle = calloc((size_t)px->config.max_idle_per_upstream, sizeof(*up->idle));
    if (up->base_url == NULL || up->idle == NULL) {
        upstream_free(up);
        return NULL;
    }
    if (!upstream_parse(up))
        up->broken = true;
    up->next = px->buckets[b];
    px->buckets[b] = up;
    px->upstream_count++;
    return up;
}

/* An idle connection to `up` (when `may_reuse`; *reused says so) or a new one. */
static struct gw_upconn *pool_get(struct gw_proxy *px, struct upstream *up, unsigned *gen,
                                  bool may_reuse, bool *reused)
{
    *reused = false;
    while (may_reuse && up->idle_count > 0) {
        struct idle_conn ic = up->idle[--up->idle_count];
        if (ic.gen == up->gen && gw_upconn_usable(ic.conn)) {
            *gen = ic.gen;
            *reused = true;
            return ic.conn;
        }
        gw_upconn_free(ic.conn); /* closed by the function while idle, or stale */
    }
    if (up->sa_len == 0)
        return NULL;
    *gen = up->gen;
    return gw_upconn_new(px->config.base, (const struct sockaddr *)&up->sa, up->sa_len);
}

static void pool_put(struct gw_proxy *px, struct upstream *up, struct gw_upconn *conn, unsigned gen)
{
    if (gen == up->gen && gw_upconn_usable(conn) &&
        up->idle_count < px->config.max_idle_per_upstream) {
        up->idle[up->idle_count].conn = conn;
        up->idle[up->idle_count].gen = gen;
        up->idle_count++;
        return;
    }
    gw_upconn_free(conn);
}

/* ---- DNS ---------------------------------------------------------------- */

static bool no_such_name(int result)
{
    return result == EVUTIL_EAI_NONAME || result == EVUTIL_EAI_NODATA;
}

static void dns_fail(struct px_call *call, int result)
{
    struct gw_proxy *px = call->px;
    if (px->config.direct_functions && no_such_name(result)) {
        call_finish(call, 404);
        return;
    }
    LOG_WARN(call->r->call_id, "cannot resolve upstream %s: %s", call->up->host,
             evutil_gai_strerror(result));
    call_finish(call, 502);
}

/* Hands every call waiting for `up`'s address on: sent when `dns_error` is 0,
 * failed with it otherwise. Loop thread. */
static void release_waiters(struct upstream *up, int dns_error)
{
    struct px_call *w = up->waiters;
    up->waiters = NULL;
    while (w != NULL) {
        struct px_call *next = w->wait_next;
        w->wait_next = NULL;
        w->waiting_dns = false;
        if (dns_error == 0)
            call_send(w);
        else
            dns_fail(w, dns_error);
        w = next;
    }
}

static void dns_done(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dns_lookup *lk = arg;
    struct upstream *up = lk->up;
    free(lk);
    if (up == NULL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    up->lookup = NULL;
    /* Prefer IPv4: "localhost" often lists ::1 first while functions listen
     * on 127.0.0.1. */
    struct evutil_addrinfo *pick = NULL;
    for (struct evutil_addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
        if (pick == NULL && ai->ai_family == AF_INET6)
            pick = ai;
    }
    if (result == 0 && pick != NULL) {
        char text[GW_ADDR_MAX];
        const void *src = pick->ai_family == AF_INET
                              ? (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
        if (evutil_inet_ntop(pick->ai_family, src, text, sizeof(text)) != NULL) {
            if (!up->have_addr || strcmp(text, up->addr) != 0) {
                snprintf(up->addr, sizeof(up->addr), "%s", text);
                set_sockaddr(up);
                up->gen++;
            }
            up->have_addr = true;
            up->dns_result = 0;
        } else {
            up->dns_result = EVUTIL_EAI_FAIL;
        }
    } else if (up->have_addr && !no_such_name(result)) {
        /* A failed refresh (DNS timeout, server failure) keeps the last good
         * address; only "no such name" makes the function disappear. */
        up->dns_result = 0;
    } else {
        up->dns_result = result != 0 ? result : EVUTIL_EAI_NONAME;
        up->have_addr = false;
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    up->dns_expiry_ns = gw_mono_ns() + DNS_TTL_NS;

    release_waiters(up,
                    up->have_addr ? 0 : (up->dns_result != 0 ? up->dns_result : EVUTIL_EAI_FAIL));
}

/* Starts a lookup for `up` unless one runs. The callback may run before this
 * returns (hosts file, cached answers): callers must not touch waiters after. */
static void dns_start(struct gw_proxy *px, struct upstream *up)
{
    if (up->lookup != NULL)
        return;
    struct dns_lookup *lk = calloc(1, sizeof(*lk));
    if (lk == NULL) {
        release_waiters(up, EVUTIL_EAI_MEMORY);
        return;
    }
    lk->up = up;
    up->lookup = lk;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    struct evdns_getaddrinfo_request *r =
        evdns_getaddrinfo(px->config.dns, up->host, NULL, &hints, dns_done, lk);
    /* NULL: the callback already ran and freed lk. */
    if (r != NULL && up->lookup == lk)
        lk->request = r;
}

static void waiters_remove(struct px_call *call)
{
    struct px_call **pp = &call->up->waiters;
    while (*pp != NULL && *pp != call)
        pp = &(*pp)->wait_next;
    if (*pp == call)
        *pp = call->wait_next;
    call->wait_next = NULL;
    call->waiting_dns = false;
}

/* ---- calls -------------------------------------------------------------- */

static const struct gw_req_hooks call_hooks;

static void call_release(struct px_call *call)
{
    if (event_initialized(&call->deadline))
        event_del(&call->deadline);
    if (call->up != NULL)
        call->up->refs--;
    if (call->uri != call->uri_inline)
        free(call->uri);
    call->px->live_count--;
    gw_req_close(call->r);
}

static void record_metrics(struct px_call *call, int code)
{
    struct cmn_metrics *m = call->px->config.metrics;
    /* No series for 404 (a name that does not resolve) or for calls that
     * never reached an upstream: bounded cardinality. */
    if (m == NULL || call->fn_label[0] == '\0' || code == 404)
        return;
    char labels[LABELS_MAX];
    gw_code_label(call->fn_label, code, labels, sizeof(labels));
    double seconds = (double)(gw_mono_ns() - call->r->t0_ns) / 1e9;
    cmn_metrics_add(m, "gateway_function_invocation_total", labels, 1);
    cmn_metrics_observe(m, "gateway_functions_seconds", labels, seconds);
    /* an attempt of a queued call (the worker invoking through the gateway):
     * invocationCount counted it when it was accepted */
    if (evhttp_find_header(&call->r->in_headers, "X-Call-Attempt") != NULL)
        cmn_metrics_add(m, "gateway_function_queued_invocations_total", call->fn_label, 1);
}

/* Stops whatever the call waits for (DNS, upstream request) without replying. */
static void call_detach_upstream(struct px_call *call)
{
    if (call->waiting_dns)
        waiters_remove(call);
    if (call->conn != NULL) {
        /* Closing the connection cancels the request (no callback) and tells
         * the function its caller is gone. */
        gw_upconn_free(call->conn);
        call->conn = NULL;
    }
}

/* Replies `code` with a short text body (gateway-made answers: `why` adds a
 * reason, NULL for none) and frees the call. */
static void clear_partial_reply(struct px_call *call);

static void call_finish_why(struct px_call *call, int code, const char *why)
{
    /* A gateway-made answer carries nothing of a response that started. */
    clear_partial_reply(call);
    char text[CMN_NAME_MAX * 2 + 160];
    switch (code) {
    case 404:
        snprintf(text, sizeof(text), "function not found: %s", call->fn_full);
        break;
    case 502:
        snprintf(text, sizeof(text), "upstream unreachable%s%s", why != NULL ? ": " : "",
                 why != NULL ? why : "");
        break;
    case 503:
        snprintf(text, sizeof(text), "%s", why != NULL ? why : "gateway shutting down");
        break;
    case 504:
        snprintf(text, sizeof(text), "upstream timeout");
        break;
    default:
        text[0] = '\0';
        break;
    }
    gw_req_reply_text(call->r, code, text);
    record_metrics(call, code);
    call_release(call);
}

static void call_finish(struct px_call *call, int code)
{
    call_finish_why(call, code, NULL);
}

static void call_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct px_call *call = arg;
    LOG_WARN(call->r->call_id, "upstream timeout after %lld ms: %s%s",
             (long long)call->px->config.upstream_timeout_ms,
             call->up != NULL ? call->up->base_url : "", LOG_URI(call));
    call_detach_upstream(call);
    call_finish(call, 504);
}

/* The client hung up: the upstream call is cancelled (the function sees its
 * connection reset) and nothing is counted as an invocation outcome. */
static void call_gone(struct gw_req *r, void *state)
{
    (void)r;
    struct px_call *call = state;
    LOG_INFO(call->r->call_id, "client went away during the call to %s%s: cancelled",
             call->up != NULL ? call->up->base_url : "", LOG_URI(call));
    if (call->px->config.metrics != NULL && call->fn_label[0] != '\0')
        cmn_metrics_add(call->px->config.metrics, "gateway_function_cancelled_total",
                        call->fn_label, 1);
    call_detach_upstream(call);
    call_release(call);
}

static void call_abort(struct gw_req *r, void *state)
{
    (void)r;
    struct px_call *call = state;
    call_detach_upstream(call);
    call_finish(call, 503);
}

static const struct gw_req_hooks call_hooks = {.gone = call_gone, .abort = call_abort};

/* The function's response head: its headers go straight to the client's
 * reply, through the header policy. */
static void up_head_cb(void *arg, int status, const char *reason, const struct gw_up_header *h,
                       size_t count)
{
    struct px_call *call = arg;
    call->status = status;
    gw_strlcpy(call->reason, reason, sizeof(call->reason));
    struct gw_req *r = call->r;
    if (r->conn == NULL)
        return;
    const char *connection = NULL;
    for (size_t i = 0; i < count; i++)
        if (strcasecmp(h[i].name, "Connection") == 0)
            connection = h[i].value;
    for (size_t i = 0; i < count; i++) {
        if (cmn_header_forwardable(CMN_HOP_FROM_FUNCTION, h[i].name, connection) ||
            (call->method == EVHTTP_REQ_HEAD && strcasecmp(h[i].name, "Content-Length") == 0))
            gw_req_header(r, h[i].name, h[i].value); /* HEAD: what a GET would have carried */
    }
}

/* Takes back whatever a failed response had already put into the reply. */
static void clear_partial_reply(struct px_call *call)
{
    gw_hdr_clear(&call->r->out_headers);
    evbuffer_drain(call->r->out_body, evbuffer_get_length(call->r->out_body));
}

static void up_done_cb(void *arg, enum gw_up_result result)
{
    struct px_call *call = arg;
    struct gw_proxy *px = call->px;
    struct gw_upconn *conn = call->conn;
    call->conn = NULL;
    if (result == GW_UP_OK) {
        pool_put(px, call->up, conn, call->conn_gen);
        const char *reason = call->reason[0] != '\0' ? call->reason : NULL;
        if (call->on_response != NULL) {
            int status = call->status;
            call->on_response(call->r, &status, call->on_arg);
            if (status != call->status)
                reason = NULL;
            call->status = status;
        }
        gw_req_reply(call->r, call->status, reason); /* the body is in the reply */
        record_metrics(call, call->status);
        LOG_DEBUG(call->r->call_id, "proxied %s%s -> %d", call->up->base_url, LOG_URI(call),
                  call->status);
        call_release(call);
        return;
    }
    bool reused = gw_upconn_reused(conn);
    gw_upconn_free(conn);
    /* A kept-alive connection the function closed just as it was reused
     * (the watchdog closes idle ones) fails before any response byte: the
     * function never answered the request, so it is sent once more, on a
     * fresh connection. */
    if (result == GW_UP_CLOSED_EARLY && reused && !call->retried) {
        call->retried = true;
        LOG_DEBUG(call->r->call_id, "kept-alive connection to %s closed on reuse: sending again",
                  call->up->base_url);
        if (px->config.metrics != NULL)
            cmn_metrics_add(px->config.metrics, "gateway_upstream_retries_total", NULL, 1);
        call_send(call);
        return;
    }
    clear_partial_reply(call);
    char why[128];
    if (result == GW_UP_TOO_LARGE)
        snprintf(why, sizeof(why),
                 "response over max_response_bytes (%lld bytes) or a head over %d bytes",
                 (long long)px->config.max_response_bytes, GW_UP_MAX_HEAD_BYTES);
    else if (result == GW_UP_BAD_RESPONSE)
        snprintf(why, sizeof(why), "invalid response (not HTTP/1.x, or a 1xx final status)");
    else
        snprintf(why, sizeof(why), "%s", gw_up_result_text(result));
    LOG_WARN(call->r->call_id, "upstream %s%s: %s", call->up->base_url, LOG_URI(call), why);
    call_finish_why(call, 502, why);
}

static const struct gw_up_callbacks up_callbacks = {.head = up_head_cb, .done = up_done_cb};

static void call_send(struct px_call *call)
{
    struct gw_proxy *px = call->px;
    struct upstream *up = call->up;
    struct gw_req *r = call->r;
    if (r->conn == NULL) { /* cannot happen: a gone client cancels the call */
        call_release(call);
        return;
    }
    bool reused = false;
    call->conn = pool_get(px, up, &call->conn_gen, !call->retried, &reused);
    if (call->conn == NULL) {
        call_finish_why(call, 502, "no connection");
        return;
    }
    call->status = 0;
    call->reason[0] = '\0';

    struct gw_head b;
    gw_head_init(&b);
    gw_head_str(&b, cmn_http_method_name((int)call->method));
    gw_head_add(&b, " ", 1);
    gw_head_str(&b, call->uri);
    gw_head_add(&b, " HTTP/1.1\r\nHost: ", 17);
    gw_head_str(&b, up->host_header);
    gw_head_add(&b, "\r\n", 2);
    /* One pass for the headers the forwarding rules read, one to copy. */
    struct cmn_forwarded fwd = {.call_id = r->call_id, .start = r->start, .client_ip = r->peer};
    const char *connection = NULL;
    for (struct evkeyval *h = r->in_headers.tqh_first; h != NULL; h = h->next.tqe_next) {
        const char *k = h->key;
        switch (strlen(k)) {
        case 4:
            if (fwd.host == NULL && strcasecmp(k, "Host") == 0)
                fwd.host = h->value;
            break;
        case 10:
            if (connection == NULL && strcasecmp(k, "Connection") == 0)
                connection = h->value;
            break;
        case 12:
            if (fwd.client_start == NULL && strcasecmp(k, "X-Start-Time") == 0)
                fwd.client_start = h->value;
            break;
        case 15:
            if (fwd.client_xff == NULL && strcasecmp(k, "X-Forwarded-For") == 0)
                fwd.client_xff = h->value;
            break;
        case 16:
            if (fwd.client_xfh == NULL && strcasecmp(k, "X-Forwarded-Host") == 0)
                fwd.client_xfh = h->value;
            break;
        default:
            break;
        }
    }
    for (struct evkeyval *h = r->in_headers.tqh_first; h != NULL; h = h->next.tqe_next) {
        if (call->authorization != NULL && strcasecmp(h->key, "Authorization") == 0)
            continue;
        if (cmn_header_forwardable(CMN_HOP_TO_FUNCTION, h->key, connection))
            (void)gw_head_header(&b, h->key, h->value);
    }
    if (call->authorization != NULL)
        (void)gw_head_header(&b, "Authorization", call->authorization);
    (void)cmn_header_add_forwarded(&fwd, gw_head_header, &b);
    struct evbuffer *body = r->in_body;
    size_t body_len = evbuffer_get_length(body);
    if (body_len > 0 || call->method == EVHTTP_REQ_POST || call->method == EVHTTP_REQ_PUT ||
        call->method == EVHTTP_REQ_PATCH) {
        char len[GW_I64_TEXT_MAX];
        gw_fmt_i64(len, (int64_t)body_len);
        (void)gw_head_header(&b, "Content-Length", len);
    }
    gw_head_add(&b, "\r\n", 2);

    /* Counted here, once the function is known to exist: in DNS mode a
     * client could otherwise create a series per made-up name. */
    if (px->config.metrics != NULL && !call->retried && call->fn_label[0] != '\0')
        cmn_metrics_add(px->config.metrics, "gateway_function_invocation_started", call->fn_label,
                        1);
    /* The body is sent by reference: it stays in the client's request for a
     * second send on a fresh connection. */
    int rc = b.failed ? -1
                      : gw_upconn_request(call->conn, b.p, b.len, body_len > 0 ? body : NULL,
                                          r->out_body, px->config.max_response_bytes,
                                          call->method == EVHTTP_REQ_HEAD, &up_callbacks, call);
    gw_head_free(&b);
    if (rc != 0) {
        gw_upconn_free(call->conn);
        call->conn = NULL;
        LOG_WARN(call->r->call_id, "cannot send to upstream %s%s", up->base_url, LOG_URI(call));
        call_finish_why(call, 502, "connection failed");
    }
}

static bool build_uri(struct px_call *call, const char *prefix, const char *sub, const char *query)
{
    if (sub[0] == '\0' && prefix[0] == '\0')
        sub = "/";
    size_t need = strlen(prefix) + strlen(sub) + (query != NULL ? strlen(query) + 1 : 0) + 1;
    if (need > sizeof(call->uri_inline)) {
        call->uri = malloc(need);
        if (call->uri == NULL) {
            call->uri = call->uri_inline;
            return false;
        }
    }
    char *p = call->uri;
    size_t n = strlen(prefix);
    memcpy(p, prefix, n);
    p += n;
    n = strlen(sub);
    memcpy(p, sub, n);
    p += n;
    if (query != NULL) {
        *p++ = '?';
        n = strlen(query);
        memcpy(p, query, n);
        p += n;
    }
    *p = '\0';
    return true;
}

_Static_assert(sizeof(struct px_call) <= GW_REQ_AREA_BYTES, "px_call must fit a request's area");

/* A call in `r`'s area, held by the proxy. */
static struct px_call *call_new(struct gw_proxy *px, struct gw_req *r)
{
    struct px_call *call = gw_req_area(r);
    memset(call, 0, offsetof(struct px_call, uri_inline));
    call->px = px;
    call->r = r;
    call->uri = call->uri_inline;
    call->method = (enum evhttp_cmd_type)r->method;
    px->live_count++;
    gw_req_hold(r, &call_hooks, call);
    return call;
}

/* Sends `call` to base URL `url` + `sub` + `query` (`path`: for the logs),
 * once the upstream's address is known. */
static void call_start(struct px_call *call, const char *url, const char *sub, const char *query,
                       const char *path)
{
    struct gw_proxy *px = call->px;
    struct gw_req *r = call->r;
    struct upstream *up = upstream_get(px, url);
    if (up == NULL || up->broken) {
        LOG_WARN(r->call_id, "unusable upstream URL for %s: %s (only http:// is supported)",
                 call->fn_full, url);
        call_finish(call, 502);
        return;
    }
    call->up = up;
    up->refs++;
    if (!build_uri(call, up->prefix, sub, query)) {
        call_finish_why(call, 503, "out of memory");
        return;
    }

    event_assign(&call->deadline, px->config.base, -1, 0, call_deadline_cb, call);
    struct timeval tv = {.tv_sec = (time_t)(px->config.upstream_timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(px->config.upstream_timeout_ms % 1000) * 1000};
    event_add(&call->deadline, &tv);
    LOG_DEBUG(r->call_id, "proxy %s -> %s%s", path, up->base_url, LOG_URI(call));

    int64_t now = gw_mono_ns();
    if (up->numeric || (up->have_addr && now < up->dns_expiry_ns)) {
        call_send(call);
        return;
    }
    if (up->have_addr) {
        /* Stale positive answer: use it and refresh in the background. */
        call_send(call);
        dns_start(px, up);
        return;
    }
    if (up->lookup == NULL && now < up->dns_expiry_ns) {
        dns_fail(call, up->dns_result); /* negative cache */
        return;
    }
    call->waiting_dns = true;
    call->wait_next = up->waiters;
    up->waiters = call;
    dns_start(px, up); /* may complete (and free the call) before returning */
}

void gw_proxy_handle(struct gw_proxy *px, struct gw_req *r, const struct gw_target *target)
{
    const char *rest = target->path + strlen(ROUTE_PREFIX);
    const char *name = NULL, *sub = NULL;
    size_t name_len = 0;
    struct cmn_fn_name fn;
    char text[CMN_NAME_MAX * 2 + 64];

    if (cmn_route_split(rest, &name, &name_len, &sub) != CMN_OK) {
        gw_req_reply_text(r, 404, "function not found: ");
        return;
    }
    if (cmn_name_parse(name, name_len, px->default_ns, &fn, NULL) != CMN_OK) {
        snprintf(text, sizeof(text), "invalid function name: %.*s",
                 (int)(name_len > 128 ? 128 : name_len), name);
        gw_req_reply_text(r, 400, text);
        return;
    }
    char url[URL_MAX];
    enum cmn_status st = cmn_resolver_lookup(px->config.resolver, &fn, url, sizeof(url), NULL);
    if (st != CMN_OK) {
        if (st == CMN_ERR_NOT_FOUND)
            snprintf(text, sizeof(text), "function not found: %s.%s", fn.name, fn.ns);
        else
            snprintf(text, sizeof(text), "cannot resolve function %s.%s", fn.name, fn.ns);
        gw_req_reply_text(r, st == CMN_ERR_NOT_FOUND ? 404 : 502, text);
        return;
    }
    (void)gw_req_set_ids(r, false, true);
    struct px_call *call = call_new(px, r);
    gw_fn_label(fn.name, fn.ns, call->fn_full, sizeof(call->fn_full), call->fn_label,
                sizeof(call->fn_label));
    call_start(call, url, sub, target->query, target->path);
}

void gw_proxy_forward(struct gw_proxy *px, struct gw_req *r, const struct gw_target *target,
                      const struct gw_forward *fwd)
{
    (void)gw_req_set_ids(r, false, true);
    struct px_call *call = call_new(px, r);
    snprintf(call->fn_full, sizeof(call->fn_full), "%s", "provider");
    call->authorization = fwd->authorization;
    call->on_response = fwd->on_response;
    call->on_arg = fwd->arg;
    call_start(call, fwd->base_url, target->path, target->query, target->path);
}

enum cmn_status gw_proxy_new(const struct gw_proxy_config *config, struct gw_proxy **out,
                             struct cmn_err *err)
{
    struct gw_proxy *px = calloc(1, sizeof(*px));
    if (px == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "proxy: out of memory");
    px->config = *config;
    if (px->config.max_idle_per_upstream <= 0)
        px->config.max_idle_per_upstream = 1;
    px->default_ns = strdup(config->default_ns != NULL ? config->default_ns : "");
    if (px->default_ns == NULL) {
        gw_proxy_free(px);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "proxy: out of memory");
    }
    px->config.default_ns = px->default_ns;
    *out = px;
    return CMN_OK;
}

size_t gw_proxy_inflight(const struct gw_proxy *px)
{
    return px->live_count;
}

void gw_proxy_free(struct gw_proxy *px)
{
    if (px == NULL)
        return;
    for (int b = 0; b < BUCKETS; b++) {
        struct upstream *up = px->buckets[b];
        while (up != NULL) {
            struct upstream *next = up->next;
            upstream_free(up);
            up = next;
        }
    }
    free(px->default_ns);
    free(px);
}
