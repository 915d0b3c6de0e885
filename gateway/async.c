/* The async route: validation, encoding with the codec, the publish through
 * cmn_jspub, and the reply from its completion. The publisher owns the
 * deadline and hands exactly one completion per call to this loop (its wake
 * callback activates an event; the loop collects them), so each pending call
 * lives until its completion, whatever the client did meanwhile: one owner,
 * one reply, one free. */
#include "async.h"

#include <errno.h>
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
#include "cmn/cbrules.h"
#include "cmn/duration.h"
#include "cmn/codec.h"
#include "cmn/headers.h"
#include "cmn/jspub.h"
#include "cmn/nats.h"
#include "cmn/log.h"
#include "cmn/trace.h"
#include "cmn/metrics.h"
#include "cmn/name.h"
#include "cmn/resolver.h"
#include "cmn/url.h"
#include "records.h"

#define ROUTE_PREFIX "/async-function/"
#define URL_MAX 1024

/* One async submission, kept in its request's area (gw_req_area). */
struct as_call {
    struct gw_async *as;
    struct gw_req *r; /* the owner: client request, ids, reply-once */
    char fn_label[CMN_NAME_MAX * 2 + 24];
};

_Static_assert(sizeof(struct as_call) <= GW_REQ_AREA_BYTES, "as_call must fit a request's area");

struct gw_async {
    struct gw_async_config config;
    char *default_ns;
    struct cmn_nats *nats;
    struct cmn_jspub *pub;
    size_t live_count;
    struct event *done_ev;  /* activated by the publisher's wake (any thread) */
    struct event *fatal_ev; /* activated by a fatal NATS event (any thread) */
    bool fatal;
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

/* Sends the one reply of a call (dropped by the owner when its client is
 * gone); `retry_after_s` > 0 adds Retry-After. */
static void call_reply_retry(struct as_call *call, int code, const char *text, int retry_after_s)
{
    if (retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after_s);
        gw_req_header(call->r, "Retry-After", ra);
    }
    gw_req_reply_text(call->r, code, text);
}

static void call_reply(struct as_call *call, int code, const char *text)
{
    call_reply_retry(call, code, text, 0);
}

/* The client left before the publish outcome: the call stays until then
 * (the stream may store it; the worker runs it). */
static void call_gone(struct gw_req *r, void *state)
{
    (void)state;
    LOG_DEBUG(r->call_id, "client went away before the publish ack");
}

static void call_abort(struct gw_req *r, void *state)
{
    (void)r;
    struct as_call *call = state;
    count(call->as, call->fn_label, 503);
    call_reply(call, 503, "gateway shutting down, call may not be queued");
}

static const struct gw_req_hooks call_hooks = {.gone = call_gone, .abort = call_abort};

/* One publish outcome (loop thread). A stored call gets its 202; a refusal
 * says whether the call is queued: "not queued" whenever the broker told us
 * so (or it was never sent), "may not be queued" only for a publish sent and
 * never answered. */
static void on_result(const struct cmn_jspub_result *r, void *closure)
{
    struct gw_async *as = closure;
    if (r->late) {
        LOG_WARN(r->label,
                 "stored after all (seq %llu) although answered 503 when NATS did not confirm "
                 "it in time: the call will run",
                 (unsigned long long)r->seq);
        if (as->config.metrics != NULL)
            cmn_metrics_add(as->config.metrics, "gateway_async_stored_after_503_total", NULL, 1);
        return;
    }
    struct as_call *call = r->token;
    const char *call_id = call->r->call_id;
    if (!call->r->replied) {
        if (r->status == CMN_OK) {
            LOG_DEBUG(call_id, "queued %s seq=%llu sends=%d%s", call->fn_label,
                      (unsigned long long)r->seq, r->sends, r->duplicate ? " (duplicate)" : "");
            count(as, call->fn_label, 202);
            call_reply(call, 202, NULL);
        } else if (r->status == CMN_ERR_TOO_LARGE) {
            LOG_WARN(call_id, "stream refused the call as too large: %s", r->detail);
            count(as, call->fn_label, 413);
            call_reply(call, 413,
                       "request too large for the stream's maximum message size, "
                       "call not queued");
        } else {
            int retry_after = r->full ? CMN_JSPUB_FULL_RETRY_AFTER_S : 1;
            const char *text = r->full ? "NATS storage is full, call not queued"
                               : r->status == CMN_ERR_TIMEOUT
                                   ? "NATS did not confirm the call in time, it may or may not "
                                     "be queued"
                               : r->status == CMN_ERR_UNAVAILABLE
                                   ? "NATS unavailable, call not queued"
                                   : "NATS refused the call, call not queued";
            LOG_WARN(call_id, "publish failed (%s, %d sends): %s", cmn_status_name(r->status),
                     r->sends, r->detail);
            count(as, call->fn_label, 503);
            call_reply_retry(call, 503, text, retry_after);
        }
    } else {
        LOG_DEBUG(call_id, "publish outcome %s after the reply", cmn_status_name(r->status));
    }
    as->live_count--;
    gw_req_close(call->r);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_async *as = arg;
    if (as->pub != NULL)
        cmn_jspub_complete(as->pub, on_result, as);
}

void gw_async_wake(void *closure)
{
    struct gw_async *as = closure;
    event_active(as->done_ev, 0, 0);
}

static void fatal_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_async *as = arg;
    as->fatal = true;
    event_base_loopbreak(as->config.base);
}

void gw_async_on_event(enum cmn_nats_event event, const char *detail, void *closure)
{
    struct gw_async *as = closure;
    const char *d = detail != NULL ? detail : "";
    switch (event) {
    case CMN_NATS_READY:
        LOG_INFO(NULL, "NATS ready: %s", d);
        break;
    case CMN_NATS_CHANGED:
        LOG_INFO(NULL, "NATS reconciled: %s", d);
        break;
    case CMN_NATS_NOT_READY:
        LOG_WARN(NULL, "NATS not ready: %s", d);
        break;
    case CMN_NATS_DISCONNECTED:
        LOG_WARN(NULL, "NATS disconnected, reconnecting: %s", d);
        break;
    case CMN_NATS_CONNECT_FAILED:
        LOG_WARN(NULL, "NATS connect failed: %s", d);
        break;
    case CMN_NATS_FATAL:
        LOG_ERROR(NULL, "NATS set-up impossible, exiting: %s", d);
        event_active(as->fatal_ev, 0, 0);
        break;
    case CMN_NATS_CLOSED:
        LOG_ERROR(NULL, "NATS connection closed: %s", d);
        break;
    }
    if (as->config.metrics != NULL && event != CMN_NATS_CHANGED && event != CMN_NATS_CONNECT_FAILED)
        cmn_metrics_set(as->config.metrics, "gateway_nats_ready", NULL,
                        event == CMN_NATS_READY ? 1 : 0);
}

int64_t gw_async_body_limit(const struct gw_async *as)
{
    int64_t max_body = as->config.max_body_bytes;
    int64_t max_payload = as->nats != NULL ? cmn_nats_max_payload(as->nats) : 0;
    if (max_payload > 0 && max_payload - GW_ASYNC_HEADER_ROOM < max_body)
        max_body = max_payload - GW_ASYNC_HEADER_ROOM;
    return max_body < 0 ? 0 : max_body;
}

bool gw_async_fatal(const struct gw_async *as)
{
    return as->fatal;
}

/* ---- validation --------------------------------------------------------- */

static enum cmn_status add_list(void *arg, const char *name, const char *value)
{
    return cmn_headers_add(arg, name, value);
}

/* The client's headers as the function will see them: the same policy and
 * forwarding headers as the sync route (cmn_header_forwardable,
 * cmn_header_add_forwarded). */
static enum cmn_status copy_request_headers(const struct gw_req *r, struct cmn_headers *out)
{
    const struct evkeyvalq *in = &r->in_headers;
    const char *connection = evhttp_find_header(in, "Connection");
    for (struct evkeyval *h = in->tqh_first; h != NULL; h = h->next.tqe_next) {
        if (!cmn_header_forwardable(CMN_HOP_TO_FUNCTION, h->key, connection))
            continue;
        enum cmn_status st = cmn_headers_add(out, h->key, h->value);
        if (st != CMN_OK)
            return st;
    }
    struct cmn_forwarded fwd = {.call_id = r->call_id,
                                .start = r->start,
                                .client_start = evhttp_find_header(in, "X-Start-Time"),
                                .client_ip = r->peer,
                                .client_xff = evhttp_find_header(in, "X-Forwarded-For"),
                                .host = evhttp_find_header(in, "Host"),
                                .client_xfh = evhttp_find_header(in, "X-Forwarded-Host")};
    return cmn_header_add_forwarded(&fwd, add_list, out);
}

/* X-Delay-Seconds: N or X-Not-Before: <RFC 3339> into `*out_ms` (wall ms,
 * 0 = run now); false with the 400 text in `text`. */
static bool delay_of(const struct gw_req *r, int64_t *out_ms, char *text, size_t size)
{
    const char *delay = evhttp_find_header(&r->in_headers, "X-Delay-Seconds");
    const char *nb = evhttp_find_header(&r->in_headers, "X-Not-Before");
    int64_t now_ms = strtoll(r->start, NULL, 10) / 1000000;
    *out_ms = 0;
    if (delay != NULL && nb != NULL) {
        snprintf(text, size, "use X-Delay-Seconds or X-Not-Before, not both");
        return false;
    }
    if (delay != NULL) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(delay, &end, 10);
        if (end == delay || *end != '\0' || errno != 0 || v < 0 || v > GW_ASYNC_MAX_DELAY_S) {
            snprintf(text, size,
                     "invalid X-Delay-Seconds: use whole seconds from 0 to %d (30 days)",
                     GW_ASYNC_MAX_DELAY_S);
            return false;
        }
        *out_ms = v > 0 ? now_ms + v * 1000 : 0;
        return true;
    }
    if (nb != NULL) {
        int64_t at = 0;
        if (!cmn_time_parse(nb, &at)) {
            snprintf(text, size,
                     "invalid X-Not-Before: use an RFC 3339 time such as 2026-12-02T10:00:00Z");
            return false;
        }
        if (at > now_ms + (int64_t)GW_ASYNC_MAX_DELAY_S * 1000) {
            snprintf(text, size, "X-Not-Before more than 30 days ahead");
            return false;
        }
        *out_ms = at > now_ms ? at : 0;
    }
    return true;
}

void gw_async_handle(struct gw_async *as, struct gw_req *r, const struct gw_target *target)
{
    char text[512];
    const char *name = NULL, *sub = NULL;
    size_t name_len = 0;
    struct cmn_fn_name fn;
    struct cmn_call qc;
    struct cmn_err err;
    cmn_call_init(&qc);

    const char *rest = target->path + strlen(ROUTE_PREFIX);
    if (r->method == EVHTTP_REQ_DELETE && as->config.records != NULL) {
        /* OpenFaaS Pro's cancel route: DELETE /async-function/<call id> */
        gw_records_cancel(as->config.records, r, rest);
        goto out;
    }
    if (r->method != EVHTTP_REQ_POST) {
        gw_req_header(r, "Allow", as->config.records != NULL ? "POST, DELETE" : "POST");
        gw_req_reply_text(r, 405, NULL);
        goto out;
    }
    if (cmn_route_split(rest, &name, &name_len, &sub) != CMN_OK) {
        gw_req_reply_text(r, 404, "function not found: ");
        goto out;
    }
    if (cmn_name_parse(name, name_len, as->default_ns, &fn, NULL) != CMN_OK) {
        snprintf(text, sizeof(text), "invalid function name: %.*s",
                 (int)(name_len > 128 ? 128 : name_len), name);
        gw_req_reply_text(r, 400, text);
        goto out;
    }
    char fn_label[CMN_NAME_MAX * 2 + 24];
    gw_fn_label(fn.name, fn.ns, NULL, 0, fn_label, sizeof(fn_label));
    char url[URL_MAX];
    enum cmn_status st =
        cmn_resolver_lookup_policy(as->config.resolver, &fn, url, sizeof(url), &qc.policy, NULL);
    if (st != CMN_OK) {
        snprintf(text, sizeof(text), "function not found: %s.%s", fn.name, fn.ns);
        gw_req_reply_text(r, 404, text);
        goto out;
    }
    /* A callback delivered to the async route (a chain: it carries the
     * X-Function-Status of the call that produced it) is a new call, under
     * its own id; the id it carries is its parent's. Chains are bounded. */
    const char *fstatus = evhttp_find_header(&r->in_headers, "X-Function-Status");
    const char *parent = fstatus != NULL ? evhttp_find_header(&r->in_headers, "X-Call-Id") : NULL;
    if (fstatus != NULL) {
        const char *d = evhttp_find_header(&r->in_headers, "X-Call-Depth");
        char *end = NULL;
        long depth_in = d != NULL ? strtol(d, &end, 10) : 0;
        if (d != NULL && (end == d || *end != '\0' || depth_in < 0 || depth_in > 1000))
            depth_in = 0;
        qc.chain_depth = (int)depth_in + 1;
        if (qc.chain_depth > as->config.max_chain_depth) {
            snprintf(text, sizeof(text),
                     "callback chain deeper than max_chain_depth (%d): call not queued",
                     as->config.max_chain_depth);
            count(as, fn_label, 508);
            gw_req_reply_text(r, 508, text);
            goto out;
        }
        if (parent != NULL && cmn_callid_valid(parent))
            snprintf(qc.parent_id, sizeof(qc.parent_id), "%s", parent);
        gw_req_set_fresh_ids(r);
    } else if (!gw_req_set_ids(r, true, false)) {
        count(as, fn_label, 400);
        gw_req_reply_text(r, 400, "invalid X-Call-Id: use 1 to 128 characters of [A-Za-z0-9._:-]");
        goto out;
    }

    struct evkeyvalq *in = &r->in_headers;
    struct evbuffer *body = r->in_body;
    size_t body_len = evbuffer_get_length(body);
    int64_t max_body = gw_async_body_limit(as);
    if ((int64_t)body_len > max_body) {
        snprintf(text, sizeof(text), "request body too large (%zu bytes), maximum: %lld bytes",
                 body_len, (long long)max_body);
        count(as, fn_label, 413);
        gw_req_reply_text(r, 413, text);
        goto out;
    }

    const char *callback = evhttp_find_header(in, "X-Callback-Url");
    if (callback != NULL && !cmn_callback_url_check(callback, text, sizeof(text))) {
        count(as, fn_label, 400);
        gw_req_reply_text(r, 400, text);
        goto out;
    }
    if (callback != NULL && !cmn_cbrules_open(as->config.callback_rules)) {
        char host[256];
        int port = 0;
        if (!cmn_callback_url_host(callback, host, sizeof(host), &port)) {
            snprintf(text, sizeof(text), "invalid X-Callback-Url: host too long");
        } else if (cmn_cbrules_check_host(as->config.callback_rules, host, port, text,
                                          sizeof(text)) != CMN_CB_DENIED) {
            text[0] = '\0'; /* allowed, or decided by the worker on the resolved address */
        }
        if (text[0] != '\0') {
            count(as, fn_label, 400);
            gw_req_reply_text(r, 400, text);
            goto out;
        }
    }

    int64_t not_before_ms = 0;
    if (!delay_of(r, &not_before_ms, text, sizeof(text))) {
        count(as, fn_label, 400);
        gw_req_reply_text(r, 400, text);
        goto out;
    }
    if (not_before_ms > 0) {
        char when[40];
        gw_req_header(r, "X-Not-Before", cmn_time_format(not_before_ms, when, sizeof(when)));
        qc.not_before_ns = not_before_ms * 1000000;
    }

    /* A function with a queue of its own: its calls go to that stream, kept
     * by the keeper from now on (the first call waits for its creation
     * within the publish deadline). */
    if (qc.policy.queue[0] != '\0' && as->config.default_queue != NULL &&
        strcmp(qc.policy.queue, as->config.default_queue) == 0)
        qc.policy.queue[0] = '\0';
    char why[240];
    if (qc.policy.queue[0] != '\0' && as->nats != NULL &&
        !cmn_nats_add_stream(as->nats, qc.policy.queue, why, sizeof(why))) {
        snprintf(text, sizeof(text),
                 "queue %s of function %s.%s cannot be used (%s), call not queued", qc.policy.queue,
                 fn.name, fn.ns, why);
        count(as, fn_label, 503);
        gw_req_reply_text(r, 503, text);
        goto out;
    }
    memcpy(qc.call_id, r->call_id, sizeof(qc.call_id));
    qc.function = strndup(name, name_len);
    qc.method = strdup("POST");
    qc.path = strdup(sub);
    qc.query = strdup(target->query != NULL ? target->query : "");
    qc.callback_url = callback != NULL ? strdup(callback) : NULL;
    qc.start_ns = strtoll(r->start, NULL, 10);
    st = CMN_ERR_NOMEM;
    if (qc.function != NULL && qc.method != NULL && qc.path != NULL && qc.query != NULL &&
        (callback == NULL || qc.callback_url != NULL))
        st = copy_request_headers(r, &qc.headers);
    if (st != CMN_OK) {
        gw_req_reply_text(r, 503, "out of memory, call not queued");
        goto out;
    }
    struct as_call *call = gw_req_area(r);
    call->as = as;
    call->r = r;
    memcpy(call->fn_label, fn_label, sizeof(fn_label));
    /* Encoded straight into the NATS message (no intermediate header list). */
    if (as->pub == NULL) {
        struct cmn_headers encoded;
        cmn_headers_init(&encoded);
        st = cmn_call_encode(&qc, &encoded, &err); /* validation still answers 400 */
        cmn_headers_free(&encoded);
        if (st == CMN_OK)
            st = cmn_err_set(&err, CMN_ERR_UNAVAILABLE, 0, "no NATS handle");
    } else {
        const void *bytes = "";
        if (body_len > 0)
            bytes = evbuffer_pullup(body, -1);
        st = cmn_jspub_call(as->pub, &qc, bytes, body_len, call, &err);
    }
    if (st == CMN_ERR_INVALID) {
        snprintf(text, sizeof(text), "invalid request: %s", err.msg);
        count(as, fn_label, 400);
        gw_req_reply_text(r, 400, text);
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
        char trace[CMN_TRACE_ID_MAX];
        cmn_traceparent_parse(evhttp_find_header(&r->in_headers, CMN_TRACEPARENT), trace);
        CMN_LOG_TRACED(CMN_LOG_WARN, r->call_id, trace, "publish to NATS failed (%s): %s",
                       cmn_status_name(st), err.msg);
        count(as, fn_label, code);
        if (code == 503)
            gw_req_header(r, "Retry-After", "1");
        gw_req_reply_text(r, code, text);
        goto out;
    }

    /* Published: exactly one completion will carry `call`; the request is
     * held until then. */
    as->live_count++;
    gw_req_hold(r, &call_hooks, call);
    if (cmn_log_min_level <= CMN_LOG_DEBUG) {
        char trace[CMN_TRACE_ID_MAX];
        cmn_traceparent_parse(evhttp_find_header(&r->in_headers, CMN_TRACEPARENT), trace);
        CMN_LOG_TRACED(CMN_LOG_DEBUG, r->call_id, trace, "publishing %zu bytes for %.*s", body_len,
                       (int)name_len, name);
    }
out:
    cmn_call_free(&qc);
}

/* ---- lifecycle ---------------------------------------------------------- */

enum cmn_status gw_async_new(const struct gw_async_config *config, struct gw_async **out,
                             struct cmn_err *err)
{
    struct gw_async *as = calloc(1, sizeof(*as));
    if (as == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "async: out of memory");
    as->config = *config;
    as->default_ns = strdup(config->default_ns != NULL ? config->default_ns : "");
    as->done_ev = event_new(config->base, -1, 0, done_cb, as);
    as->fatal_ev = event_new(config->base, -1, 0, fatal_cb, as);
    if (as->default_ns == NULL || as->done_ev == NULL || as->fatal_ev == NULL) {
        gw_async_free(as);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "async: out of memory");
    }
    as->config.default_ns = as->default_ns;
    *out = as;
    return CMN_OK;
}

void gw_async_set_nats(struct gw_async *as, struct cmn_nats *nats, struct cmn_jspub *pub)
{
    as->nats = nats;
    as->pub = pub;
}

void gw_async_set_records(struct gw_async *as, struct gw_records *records)
{
    as->config.records = records;
}

size_t gw_async_inflight(const struct gw_async *as)
{
    return as->live_count;
}

void gw_async_free(struct gw_async *as)
{
    if (as == NULL)
        return;
    if (as->done_ev != NULL)
        event_free(as->done_ev);
    if (as->fatal_ev != NULL)
        event_free(as->fatal_ev);
    free(as->default_ns);
    free(as);
}
