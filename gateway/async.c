/* The async route: validation, encoding with the codec, cmn_js_publish_async,
 * and the hand-off of publish outcomes from nats.c threads to the loop: the
 * nats thread fills the pending call's result fields and links it into a
 * mutex-protected completion list, then event_active() wakes the loop, which
 * replies. Each pending call lives until its callback arrives, whatever the
 * client or the safety timer did meanwhile: one owner, one free. */
#include "async.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cmn/callid.h"
#include "cmn/codec.h"
#include "cmn/headers.h"
#include "cmn/log.h"
#include "cmn/metrics.h"
#include "cmn/name.h"
#include "cmn/resolver.h"

#define ROUTE_PREFIX "/async-function/"
#define CALLBACK_URL_MAX 4096
#define CALL_CACHE_MAX 1024
#define URL_MAX 1024

struct as_call {
    struct gw_async *as;
    struct as_call *prev, *next; /* live list (loop thread), or the free cache */
    struct as_call *done_next;   /* completion list (under as->lock) */
    struct evhttp_request *req;  /* NULL once replied or the client went away */
    struct event safety;
    bool replied;
    int64_t t0_ns;
    char call_id[CMN_CALLID_MAX];
    char start[24];
    char fn_label[CMN_NAME_MAX * 2 + 24];
    /* Written by the nats thread before linking into the completion list. */
    enum cmn_status pub_status;
    bool pub_duplicate;
    char pub_detail[160];
};

struct gw_async {
    struct gw_async_config config;
    char *default_ns;
    struct cmn_js *js;
    struct as_call *live;
    size_t live_count;
    struct as_call *cache;
    int cache_count;
    struct event *done_ev;
    pthread_mutex_t lock; /* guards done_head/done_tail */
    struct as_call *done_head, *done_tail;
};

static void count(struct gw_async *as, const char *fn_label, int code)
{
    if (as->config.metrics == NULL || fn_label == NULL || fn_label[0] == '\0')
        return;
    char labels[CMN_NAME_MAX * 2 + 64];
    gw_code_label(fn_label, code, labels, sizeof(labels));
    cmn_metrics_add(as->config.metrics, "gateway_async_requests_total", labels, 1);
}

/* ---- pending calls ------------------------------------------------------ */

static struct as_call *call_alloc(struct gw_async *as)
{
    struct as_call *call = as->cache;
    if (call != NULL) {
        as->cache = call->next;
        as->cache_count--;
    } else {
        call = malloc(sizeof(*call));
        if (call == NULL)
            return NULL;
    }
    memset(call, 0, sizeof(*call));
    call->as = as;
    return call;
}

static void call_free(struct as_call *call)
{
    struct gw_async *as = call->as;
    if (as->cache_count < CALL_CACHE_MAX) {
        call->next = as->cache;
        as->cache = call;
        as->cache_count++;
    } else {
        free(call);
    }
}

static void live_add(struct gw_async *as, struct as_call *call)
{
    call->prev = NULL;
    call->next = as->live;
    if (as->live != NULL)
        as->live->prev = call;
    as->live = call;
    as->live_count++;
}

static void live_remove(struct gw_async *as, struct as_call *call)
{
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        as->live = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    as->live_count--;
}

/* Sends the one reply of a pending call (if its client is still there). */
static void call_reply(struct as_call *call, int code, const char *text)
{
    call->replied = true;
    struct evhttp_request *req = call->req;
    if (req == NULL)
        return;
    call->req = NULL;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon != NULL)
        evhttp_connection_set_closecb(evcon, NULL, NULL);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "X-Call-Id", call->call_id);
    evhttp_add_header(out, "X-Start-Time", call->start);
    gw_reply_text(req, code, text);
}

static void client_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct as_call *call = arg;
    LOG_DEBUG(call->call_id, "client went away before the publish ack");
    /* A request whose reply is pending is detached by evhttp (connection
     * NULL) and then ours to free; otherwise libevent frees it. */
    if (call->req != NULL && evhttp_request_get_connection(call->req) == NULL)
        evhttp_request_free(call->req);
    call->req = NULL;
}

static void safety_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct as_call *call = arg;
    if (call->replied)
        return;
    LOG_WARN(call->call_id, "no publish ack from NATS within %lld ms: answering 503",
             (long long)call->as->config.publish_timeout_ms + 1000);
    count(call->as, call->fn_label, 503);
    call_reply(call, 503, "NATS publish timed out, call may not be queued");
}

static void call_complete(struct as_call *call)
{
    struct gw_async *as = call->as;
    event_del(&call->safety);
    if (!call->replied) {
        if (call->pub_status == CMN_OK) {
            LOG_DEBUG(call->call_id, "queued %s%s", call->fn_label,
                      call->pub_duplicate ? " (duplicate)" : "");
            count(as, call->fn_label, 202);
            call_reply(call, 202, NULL);
        } else {
            LOG_WARN(call->call_id, "publish failed (%s): %s", cmn_status_name(call->pub_status),
                     call->pub_detail);
            count(as, call->fn_label, 503);
            call_reply(call, 503,
                       call->pub_status == CMN_ERR_TIMEOUT
                           ? "NATS publish timed out, call may not be queued"
                           : "NATS rejected the call, call not queued");
        }
    } else {
        LOG_DEBUG(call->call_id, "late publish outcome %s after the reply",
                  cmn_status_name(call->pub_status));
    }
    live_remove(as, call);
    call_free(call);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_async *as = arg;
    pthread_mutex_lock(&as->lock);
    struct as_call *list = as->done_head;
    as->done_head = as->done_tail = NULL;
    pthread_mutex_unlock(&as->lock);
    while (list != NULL) {
        struct as_call *next = list->done_next;
        call_complete(list);
        list = next;
    }
}

void gw_async_on_publish(void *token, enum cmn_status status, bool duplicate, const char *detail,
                         void *closure)
{
    struct gw_async *as = closure;
    struct as_call *call = token;
    call->pub_status = status;
    call->pub_duplicate = duplicate;
    gw_strlcpy(call->pub_detail, detail != NULL ? detail : "", sizeof(call->pub_detail));
    call->done_next = NULL;
    pthread_mutex_lock(&as->lock);
    bool wake = as->done_head == NULL;
    if (as->done_tail != NULL)
        as->done_tail->done_next = call;
    else
        as->done_head = call;
    as->done_tail = call;
    pthread_mutex_unlock(&as->lock);
    if (wake)
        event_active(as->done_ev, 0, 0);
}

void gw_async_on_event(enum cmn_js_event event, const char *detail, void *closure)
{
    struct gw_async *as = closure;
    const char *d = detail != NULL ? detail : "";
    switch (event) {
    case CMN_JS_READY:
        LOG_INFO(NULL, "NATS ready: %s", d);
        break;
    case CMN_JS_DISCONNECTED:
        LOG_WARN(NULL, "NATS disconnected, reconnecting: %s", d);
        break;
    case CMN_JS_CLOSED:
        LOG_ERROR(NULL, "NATS connection closed: %s", d);
        break;
    }
    if (as->config.metrics != NULL)
        cmn_metrics_set(as->config.metrics, "gateway_nats_ready", NULL,
                        event == CMN_JS_READY ? 1 : 0);
}

/* ---- validation --------------------------------------------------------- */

/* Checks X-Callback-Url: an absolute http(s) URL with a host, no control
 * characters. Parsed with libevent's strict URI parser (libcurl's URL API
 * would do the same job but costs ~3.5 MB of resident memory for its TLS
 * and LDAP dependencies). Writes the reason into `why` on failure. */
static bool callback_url_ok(const char *url, char *why, size_t size)
{
    if (!cmn_header_value_safe(url, CALLBACK_URL_MAX)) {
        snprintf(why, size, "invalid X-Callback-Url: contains control characters or is too long");
        return false;
    }
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    if (u == NULL) {
        snprintf(why, size, "invalid X-Callback-Url: not a valid URL");
        return false;
    }
    bool ok = false;
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    if (scheme == NULL || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        snprintf(why, size, "invalid X-Callback-Url: must be an absolute http or https URL");
        goto out;
    }
    if (host == NULL || host[0] == '\0') {
        snprintf(why, size, "invalid X-Callback-Url: no host");
        goto out;
    }
    ok = true;
out:
    evhttp_uri_free(u);
    return ok;
}

static enum cmn_status copy_request_headers(struct evhttp_request *req, const struct as_call *call,
                                            struct cmn_headers *out)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    for (struct evkeyval *h = in->tqh_first; h != NULL; h = h->next.tqe_next) {
        if (strcasecmp(h->key, "X-Call-Id") == 0)
            continue;
        enum cmn_status st = cmn_headers_add(out, h->key, h->value);
        if (st != CMN_OK)
            return st;
    }
    /* What the function sees must match the sync route (proxy.c). */
    enum cmn_status st = cmn_headers_add(out, "X-Call-Id", call->call_id);
    if (st == CMN_OK && evhttp_find_header(in, "X-Start-Time") == NULL)
        st = cmn_headers_add(out, "X-Start-Time", call->start);
    if (st == CMN_OK && evhttp_find_header(in, "X-Forwarded-For") == NULL) {
        char ip[GW_ADDR_MAX];
        gw_client_ip(req, ip, sizeof(ip));
        if (ip[0] != '\0')
            st = cmn_headers_add(out, "X-Forwarded-For", ip);
    }
    if (st == CMN_OK && evhttp_find_header(in, "X-Forwarded-Host") == NULL) {
        const char *host = evhttp_find_header(in, "Host");
        if (host != NULL)
            st = cmn_headers_add(out, "X-Forwarded-Host", host);
    }
    return st;
}

static void reply_early(struct evhttp_request *req, int code, const char *call_id, const char *text)
{
    if (call_id != NULL && call_id[0] != '\0')
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Call-Id", call_id);
    gw_reply_text(req, code, text);
}

void gw_async_handle(struct gw_async *as, struct evhttp_request *req,
                     const struct gw_target *target)
{
    char text[512];
    const char *name = NULL, *sub = NULL;
    size_t name_len = 0;
    struct cmn_fn_name fn;
    struct cmn_call qc;
    struct cmn_headers encoded;
    struct cmn_err err;
    struct as_call *call = NULL;
    cmn_call_init(&qc);
    cmn_headers_init(&encoded);

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        gw_reply_text(req, 405, NULL);
        goto out;
    }
    const char *rest = target->path + strlen(ROUTE_PREFIX);
    if (cmn_route_split(rest, &name, &name_len, &sub) != CMN_OK) {
        gw_reply_text(req, 404, "function not found: ");
        goto out;
    }
    if (cmn_name_parse(name, name_len, as->default_ns, &fn, NULL) != CMN_OK) {
        snprintf(text, sizeof(text), "invalid function name: %.*s",
                 (int)(name_len > 128 ? 128 : name_len), name);
        gw_reply_text(req, 400, text);
        goto out;
    }
    char fn_label[sizeof(call->fn_label)];
    gw_fn_label(fn.name, fn.ns, NULL, 0, fn_label, sizeof(fn_label));
    char url[URL_MAX];
    enum cmn_status st = cmn_resolver_lookup(as->config.resolver, &fn, url, sizeof(url), NULL);
    if (st != CMN_OK) {
        snprintf(text, sizeof(text), "function not found: %s.%s", fn.name, fn.ns);
        gw_reply_text(req, 404, text);
        goto out;
    }

    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    char call_id[CMN_CALLID_MAX];
    const char *client_id = evhttp_find_header(in, "X-Call-Id");
    if (client_id != NULL) {
        if (!cmn_callid_valid(client_id)) {
            count(as, fn_label, 400);
            gw_reply_text(req, 400,
                          "invalid X-Call-Id: use 1 to 128 characters of [A-Za-z0-9._:-]");
            goto out;
        }
        gw_strlcpy(call_id, client_id, sizeof(call_id));
    } else {
        cmn_callid_new(call_id);
    }

    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t body_len = evbuffer_get_length(body);
    int64_t max_body = as->config.max_body_bytes;
    int64_t max_payload = as->js != NULL ? cmn_js_max_payload(as->js) : 0;
    if (max_payload > 0 && max_payload - GW_ASYNC_HEADER_ROOM < max_body)
        max_body = max_payload - GW_ASYNC_HEADER_ROOM;
    if (max_body < 0)
        max_body = 0;
    if ((int64_t)body_len > max_body) {
        snprintf(text, sizeof(text), "request body too large (%zu bytes), maximum: %lld bytes",
                 body_len, (long long)max_body);
        count(as, fn_label, 413);
        reply_early(req, 413, call_id, text);
        goto out;
    }

    const char *callback = evhttp_find_header(in, "X-Callback-Url");
    if (callback != NULL && !callback_url_ok(callback, text, sizeof(text))) {
        count(as, fn_label, 400);
        reply_early(req, 400, call_id, text);
        goto out;
    }

    call = call_alloc(as);
    if (call == NULL) {
        reply_early(req, 503, call_id, "out of memory, call not queued");
        goto out;
    }
    memcpy(call->call_id, call_id, sizeof(call_id));
    memcpy(call->fn_label, fn_label, sizeof(fn_label));
    int64_t start_ns = gw_now_ns();
    gw_fmt_i64(call->start, start_ns);
    call->t0_ns = gw_mono_ns();

    memcpy(qc.call_id, call_id, sizeof(call_id));
    qc.function = strndup(name, name_len);
    qc.method = strdup("POST");
    qc.path = strdup(sub);
    qc.query = strdup(target->query != NULL ? target->query : "");
    qc.callback_url = callback != NULL ? strdup(callback) : NULL;
    qc.start_ns = start_ns;
    st = CMN_ERR_NOMEM;
    if (qc.function != NULL && qc.method != NULL && qc.path != NULL && qc.query != NULL &&
        (callback == NULL || qc.callback_url != NULL))
        st = copy_request_headers(req, call, &qc.headers);
    if (st != CMN_OK) {
        reply_early(req, 503, call_id, "out of memory, call not queued");
        call_free(call);
        goto out;
    }
    /* Encoded straight into the NATS message (no intermediate header list). */
    if (as->js == NULL) {
        st = cmn_call_encode(&qc, &encoded, &err); /* validation still answers 400 */
        if (st == CMN_OK)
            st = cmn_err_set(&err, CMN_ERR_UNAVAILABLE, 0, "no NATS handle");
    } else {
        const void *bytes = "";
        if (body_len > 0)
            bytes = evbuffer_pullup(body, -1);
        st = cmn_js_publish_call_async(as->js, &qc, bytes, body_len, call, &err);
    }
    if (st == CMN_ERR_INVALID) {
        snprintf(text, sizeof(text), "invalid request: %s", err.msg);
        count(as, fn_label, 400);
        reply_early(req, 400, call_id, text);
        call_free(call);
        goto out;
    }
    if (st != CMN_OK) {
        int code = st == CMN_ERR_TOO_LARGE ? 413 : 503;
        if (st == CMN_ERR_UNAVAILABLE)
            snprintf(text, sizeof(text), "NATS unavailable, call not queued");
        else if (st == CMN_ERR_TOO_LARGE)
            snprintf(text, sizeof(text),
                     "request too large for the NATS server (body %zu bytes plus headers), "
                     "call not queued",
                     body_len);
        else if (st == CMN_ERR_NOMEM)
            snprintf(text, sizeof(text), "out of memory, call not queued");
        else
            snprintf(text, sizeof(text), "NATS error, call not queued");
        LOG_WARN(call_id, "publish to NATS failed (%s): %s", cmn_status_name(st), err.msg);
        count(as, fn_label, code);
        reply_early(req, code, call_id, text);
        call_free(call);
        goto out;
    }

    /* Published: the callback will run exactly once with `call`. */
    call->req = req;
    live_add(as, call);
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), client_closed_cb, call);
    event_assign(&call->safety, as->config.base, -1, 0, safety_cb, call);
    int64_t ms = as->config.publish_timeout_ms + 1000;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(&call->safety, &tv);
    LOG_DEBUG(call_id, "publishing %zu bytes for %.*s", body_len, (int)name_len, name);
out:
    cmn_call_free(&qc);
    cmn_headers_free(&encoded);
}

/* ---- lifecycle ---------------------------------------------------------- */

enum cmn_status gw_async_new(const struct gw_async_config *config, struct gw_async **out,
                             struct cmn_err *err)
{
    struct gw_async *as = calloc(1, sizeof(*as));
    if (as == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "async: out of memory");
    as->config = *config;
    pthread_mutex_init(&as->lock, NULL);
    as->default_ns = strdup(config->default_ns != NULL ? config->default_ns : "");
    as->done_ev = event_new(config->base, -1, 0, done_cb, as);
    if (as->default_ns == NULL || as->done_ev == NULL) {
        gw_async_free(as);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "async: out of memory");
    }
    as->config.default_ns = as->default_ns;
    *out = as;
    return CMN_OK;
}

void gw_async_set_js(struct gw_async *as, struct cmn_js *js)
{
    as->js = js;
}

size_t gw_async_inflight(const struct gw_async *as)
{
    return as->live_count;
}

void gw_async_abort_all(struct gw_async *as)
{
    for (struct as_call *call = as->live; call != NULL; call = call->next) {
        if (!call->replied) {
            count(as, call->fn_label, 503);
            call_reply(call, 503, "gateway shutting down, call may not be queued");
        }
    }
}

void gw_async_free(struct gw_async *as)
{
    if (as == NULL)
        return;
    /* Outcomes that arrived but were not processed yet are in the live list too. */
    gw_async_abort_all(as);
    while (as->live != NULL) {
        struct as_call *call = as->live;
        event_del(&call->safety);
        live_remove(as, call);
        free(call);
    }
    while (as->cache != NULL) {
        struct as_call *next = as->cache->next;
        free(as->cache);
        as->cache = next;
    }
    if (as->done_ev != NULL)
        event_free(as->done_ev);
    pthread_mutex_destroy(&as->lock);
    free(as->default_ns);
    free(as);
}
