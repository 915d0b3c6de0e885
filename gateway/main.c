/* The gateway program: its configuration table, start-up (resolver, metrics,
 * JetStream, the two evhttp listeners on one event base), request routing,
 * SIGHUP (resolver reload) and SIGTERM/SIGINT (stop accepting, drain in-flight
 * calls up to drain_timeout, exit 0). */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "cmn/config.h"
#include "cmn/headers.h"
#include "cmn/jspub.h"
#include "cmn/nats.h"
#include "cmn/listener.h"
#include "cmn/log.h"
#include "cmn/metrics.h"
#include "cmn/resolver.h"
#include "cmn/trace.h"
#include "async.h"
#include "cmn/cbrules.h"
#include "records.h"
#include "proxy.h"
#include "request.h"
#include "catalog.h"
#include "server.h"
#include "system.h"
#include "ui.h"

#define PROGRAM "gateway"
#define DRAIN_TICK_MS 50
#define FLUSH_MS 300
#define MIB (1024LL * 1024LL)

struct gw_config {
    int64_t port;
    int64_t metrics_port;
    char *nats_url;
    char *faas_nats_address;
    int64_t faas_nats_port;
    char *faas_nats_channel;
    char *faas_nats_queue_group;
    char *dead_letter_stream;
    char *callback_allowlist;
    bool call_records;
    char *call_records_bucket;
    int64_t call_record_ttl;
    int64_t stream_replicas;
    int64_t nats_ping_interval;
    char *functions_file;
    char *functions_provider_url;
    int64_t functions_cache_ttl;
    char *function_queues;
    char *ui_callback_url;
    bool direct_functions;
    char *direct_functions_suffix;
    char *function_namespace;
    int64_t max_body_bytes;
    int64_t max_sync_body_bytes;
    int64_t max_response_bytes;
    int64_t nats_publish_timeout;
    int64_t nats_max_pending;
    int64_t upstream_timeout;
    int64_t read_timeout;
    int64_t write_timeout;
    int64_t drain_timeout;
    int64_t read_header_timeout;
    int64_t read_body_timeout;
    int64_t max_connections;
    int64_t max_inflight_body_bytes;
    int64_t max_chain_depth;
    bool basic_auth;
    char *secret_mount_path;
    bool write_debug;
    char *log_level;
    char *log_format;
};

#define OFF(f) offsetof(struct gw_config, f)
#define NO_RANGE 1, 0
static const struct cmn_config_entry config_table[] = {
    {"port", CMN_CFG_INT, "8080", 1, 65535, OFF(port), false, "HTTP port of the gateway API"},
    {"metrics_port", CMN_CFG_INT, "8082", 0, 65535, OFF(metrics_port), false,
     "port of /metrics and /healthz; 0 = off"},
    {"nats_url", CMN_CFG_STRING, "nats://127.0.0.1:4222", NO_RANGE, OFF(nats_url), false,
     "NATS server URL(s), comma separated"},
    {"faas_nats_address", CMN_CFG_STRING, NULL, NO_RANGE, OFF(faas_nats_address), false,
     "NATS host (OpenFaaS name); with faas_nats_port it overrides nats_url"},
    {"faas_nats_port", CMN_CFG_INT, NULL, 1, 65535, OFF(faas_nats_port), false,
     "NATS port (OpenFaaS name); with faas_nats_address it overrides nats_url"},
    {"faas_nats_channel", CMN_CFG_STRING, "faas-request", NO_RANGE, OFF(faas_nats_channel), false,
     "JetStream stream name and subject of queued calls"},
    {"faas_nats_queue_group", CMN_CFG_STRING, "faas-workers", NO_RANGE, OFF(faas_nats_queue_group),
     false, "the workers' durable consumer, whose backlog the queue gauges export"},
    {"dead_letter_stream", CMN_CFG_STRING, "faas-request-dlq", NO_RANGE, OFF(dead_letter_stream),
     false, "dead-letter stream (created like the worker does; its size is exported)"},
    {"callback_allowlist", CMN_CFG_STRING, "", NO_RANGE, OFF(callback_allowlist), false,
     "allowed X-Callback-Url destinations: host, host:port, *.domain, address, CIDR, comma "
     "separated; empty = any (warned at start); others get 400"},
    {"call_records", CMN_CFG_BOOL, "true", NO_RANGE, OFF(call_records), false,
     "keep a record per call (status, cancel, exactly one callback); must match the workers'"},
    {"call_records_bucket", CMN_CFG_STRING, "faas-calls", NO_RANGE, OFF(call_records_bucket), false,
     "JetStream key-value bucket of the call records"},
    {"call_record_ttl", CMN_CFG_DURATION, "24h", 60000, 365LL * 86400000, OFF(call_record_ttl),
     false, "how long a call record is kept after its last change"},
    {"stream_replicas", CMN_CFG_INT, "1", 1, 5, OFF(stream_replicas), false,
     "replicas of the streams (3 on a JetStream cluster)"},
    {"nats_ping_interval", CMN_CFG_DURATION, "1s", 100, 600000, OFF(nats_ping_interval), false,
     "ping period; a server silent for 2 pings is left for another"},
    {"functions_file", CMN_CFG_STRING, NULL, NO_RANGE, OFF(functions_file), false,
     "functions.json for the static resolver (reloaded on SIGHUP)"},
    {"max_chain_depth", CMN_CFG_INT, "10", 1, 1000, OFF(max_chain_depth), false,
     "calls queued in a row from callbacks (X-Callback-Url pointing at /async-function/...) "
     "before the next one is refused with 508"},
    {"functions_provider_url", CMN_CFG_STRING, NULL, NO_RANGE, OFF(functions_provider_url), false,
     "OpenFaaS provider (faas-provider API, e.g. the process provider): functions are resolved "
     "and invoked through it and /system/* is relayed to it"},
    {"functions_cache_ttl", CMN_CFG_DURATION, "5s", 100, 3600000, OFF(functions_cache_ttl), false,
     "provider mode: period of the function list refresh (an unknown name is looked up at once)"},
    {"function_queues", CMN_CFG_STRING, "", NO_RANGE, OFF(function_queues), false,
     "name[.namespace]=queue pairs, comma separated: the queue of functions without a "
     "com.openfaas.queue annotation (DNS mode has no annotations)"},
    {"ui_callback_url", CMN_CFG_STRING, "", NO_RANGE, OFF(ui_callback_url), false,
     "http://host:port at which the queue-workers reach this gateway: async calls made in the "
     "portal (/ui/) post their results to <it>/ui/callbacks/<token>; empty = "
     "http://127.0.0.1:<port>"},
    {"direct_functions", CMN_CFG_BOOL, "false", NO_RANGE, OFF(direct_functions), false,
     "resolve functions through DNS as <name>.<namespace>.<suffix>:8080"},
    {"direct_functions_suffix", CMN_CFG_STRING, "svc.cluster.local", NO_RANGE,
     OFF(direct_functions_suffix), false, "DNS suffix used when direct_functions=true"},
    {"function_namespace", CMN_CFG_STRING, "openfaas-fn", NO_RANGE, OFF(function_namespace), false,
     "namespace of function names without a dot"},
    {"max_body_bytes", CMN_CFG_INT, "983040", 0, 64 * MIB, OFF(max_body_bytes), false,
     "largest async request body (bytes); larger gets 413"},
    {"max_sync_body_bytes", CMN_CFG_INT, "67108864", 0, 1024 * MIB, OFF(max_sync_body_bytes), false,
     "largest sync request body (bytes); larger gets 413"},
    {"max_response_bytes", CMN_CFG_INT, "67108864", 1, 1024 * MIB, OFF(max_response_bytes), false,
     "largest sync response body a function may return (bytes); larger gets 502"},
    {"nats_publish_timeout", CMN_CFG_DURATION, "5s", 100, 60000, OFF(nats_publish_timeout), false,
     "deadline for the stream to confirm a call (re-sent meanwhile, within the stream's 2 min "
     "duplicate window) before 503"},
    {"nats_max_pending", CMN_CFG_INT, "4096", 1, 1000000, OFF(nats_max_pending), false,
     "async publishes awaiting their ack before new ones get 503"},
    {"upstream_timeout", CMN_CFG_DURATION, "60s", 1, 86400000, OFF(upstream_timeout), false,
     "deadline of a sync call to a function (then 504)"},
    {"read_timeout", CMN_CFG_DURATION, "60s", 1, 86400000, OFF(read_timeout), false,
     "client connection inactivity timeout (libevent uses max(read, write))"},
    {"write_timeout", CMN_CFG_DURATION, "60s", 1, 86400000, OFF(write_timeout), false,
     "client connection inactivity timeout (libevent uses max(read, write))"},
    {"drain_timeout", CMN_CFG_DURATION, "30s", 0, 3600000, OFF(drain_timeout), false,
     "on SIGTERM, how long in-flight calls may finish"},
    {"read_header_timeout", CMN_CFG_DURATION, "5s", 0, 3600000, OFF(read_header_timeout), false,
     "deadline for a request line and headers (from the connection's start, or the request's "
     "first byte on a kept-alive one); then 408 and close; 0 = none"},
    {"read_body_timeout", CMN_CFG_DURATION, "60s", 0, 86400000, OFF(read_body_timeout), false,
     "deadline for a request body, from the end of its head; then 408 and close; 0 = none"},
    {"max_connections", CMN_CFG_INT, "10000", 0, 1000000, OFF(max_connections), false,
     "open client connections; a new one beyond replaces an idle or slow connection of the "
     "address holding the most, or gets 503; 0 = no cap"},
    {"max_inflight_body_bytes", CMN_CFG_INT, "268435456", 0, 64LL * 1024 * MIB,
     OFF(max_inflight_body_bytes), false,
     "request-body memory held at once by all requests (bytes); a body that does not fit "
     "gets 503 with Retry-After before it is read; 0 = no cap"},
    {"basic_auth", CMN_CFG_BOOL, "false", NO_RANGE, OFF(basic_auth), false,
     "protect /system/* with HTTP Basic auth"},
    {"secret_mount_path", CMN_CFG_STRING, "/var/secrets", NO_RANGE, OFF(secret_mount_path), false,
     "directory with basic-auth-user and basic-auth-password"},
    {"write_debug", CMN_CFG_BOOL, "false", NO_RANGE, OFF(write_debug), false,
     "log every request (same as log_level=debug)"},
    {"log_level", CMN_CFG_STRING, "info", NO_RANGE, OFF(log_level), false,
     "debug, info, warn or error"},
    {"log_format", CMN_CFG_STRING, "text", NO_RANGE, OFF(log_format), false, "text or json"},
};
#define CONFIG_COUNT (sizeof(config_table) / sizeof(config_table[0]))

enum drain_phase { RUNNING, DRAINING, FLUSHING };

struct gateway {
    struct gw_config cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct cmn_resolver *resolver;
    struct cmn_metrics *metrics;
    struct cmn_nats *nats;
    struct cmn_jspub *pub;
    struct gw_proxy *proxy;
    struct gw_async *async;
    struct gw_system *system;
    struct gw_records *records;
    struct gw_catalog *catalog;
    struct gw_ui *ui;
    struct cmn_cbrules *callback_rules;
    struct gw_server *server;
    struct evhttp *metrics_http;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *drain_tick;
    enum drain_phase phase;
    int64_t drain_deadline_ns;
    int64_t flush_deadline_ns;
};

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void route(struct gw_req *r, void *arg);

/* Small bodies only on routes other than the function routes (the system
 * API, health, unknown paths): they are refused before they are read. */
#define OTHER_ROUTES_MAX_BODY (1024 * 1024)

/* The body limit of each route, for the server (413 before the body). */
static int64_t body_limit(void *arg, int method, const char *uri)
{
    struct gateway *gw = arg;
    if (strncmp(uri, "/async-function/", 16) == 0)
        return method == EVHTTP_REQ_POST ? gw_async_body_limit(gw->async) : OTHER_ROUTES_MAX_BODY;
    if (strncmp(uri, "/function/", 10) == 0)
        return gw->cfg.max_sync_body_bytes;
    return OTHER_ROUTES_MAX_BODY;
}

/* Provider mode: a call naming a function the cache does not know waits for
 * one provider lookup (gw_catalog_park), then is routed again. */
static bool park_unknown(struct gateway *gw, struct gw_req *r, const char *rest)
{
    const char *name = NULL, *sub = NULL;
    size_t name_len = 0;
    struct cmn_fn_name fn;
    char url[1024];
    if (cmn_route_split(rest, &name, &name_len, &sub) != CMN_OK ||
        cmn_name_parse(name, name_len, gw->cfg.function_namespace, &fn, NULL) != CMN_OK)
        return false; /* the route answers it */
    if (cmn_resolver_lookup(gw->resolver, &fn, url, sizeof(url), NULL) != CMN_ERR_NOT_FOUND)
        return false;
    return gw_catalog_park(gw->catalog, r, &fn, route, gw);
}

/* The caller's W3C trace context (cmn/trace.h) goes on to the function (and
 * through the queue to the callback) when it is one valid traceparent; an
 * invalid or repeated one is dropped with its tracestate, as the
 * specification asks of a receiver that cannot parse it. */
static void check_trace_context(struct gw_req *r)
{
    int n = 0;
    const char *v = NULL;
    for (struct evkeyval *h = r->in_headers.tqh_first; h != NULL; h = h->next.tqe_next) {
        if (strcasecmp(h->key, CMN_TRACEPARENT) == 0) {
            n++;
            v = h->value;
        }
    }
    if (n == 0 || (n == 1 && cmn_traceparent_parse(v, NULL)))
        return;
    LOG_DEBUG(r->call_id, "invalid traceparent dropped");
    gw_hdr_remove(&r->in_headers, CMN_TRACEPARENT);
    gw_hdr_remove(&r->in_headers, CMN_TRACESTATE);
}

static void route(struct gw_req *r, void *arg)
{
    struct gateway *gw = arg;
    struct gw_target target;
    if (!gw_target_split(r->uri, &target)) {
        if (r->uri != NULL && r->uri[0] == '/')
            gw_req_reply_text(r, 414, "request target too long");
        else
            gw_req_reply_text(r, 404, "404 page not found");
        return;
    }
    /* A header name that is not an HTTP token could split or merge header
     * lines on the way to a function (request smuggling): refuse it here,
     * for every route. */
    for (struct evkeyval *h = r->in_headers.tqh_first; h != NULL; h = h->next.tqe_next) {
        if (!cmn_header_name_valid(h->key)) {
            gw_req_reply_text(r, 400, "invalid header name");
            return;
        }
    }
    const char *p = target.path;
    if (has_prefix(p, "/function/") || has_prefix(p, "/async-function/"))
        check_trace_context(r);
    if (gw->catalog != NULL && !r->resumed &&
        ((has_prefix(p, "/function/") && park_unknown(gw, r, p + 10)) ||
         (has_prefix(p, "/async-function/") && r->method == EVHTTP_REQ_POST &&
          park_unknown(gw, r, p + 16))))
        return;
    if (has_prefix(p, "/function/")) {
        gw_proxy_handle(gw->proxy, r, &target);
    } else if (has_prefix(p, "/async-function/")) {
        gw_async_handle(gw->async, r, &target);
    } else if (has_prefix(p, "/async-calls/")) {
        gw_records_handle(gw->records, r, &target);
    } else if (strcmp(p, "/healthz") == 0 || strcmp(p, "/readyz") == 0) {
        gw_system_health(gw->system, r, &target);
    } else if (has_prefix(p, "/system/")) {
        gw_system_handle(gw->system, r, &target);
    } else if (strcmp(p, "/ui") == 0 || has_prefix(p, "/ui/")) {
        gw_ui_handle(gw->ui, r, &target);
    } else {
        gw_req_reply_text(r, 404, "404 page not found");
    }
}

static size_t inflight(const struct gateway *gw)
{
    (void)gw;
    return gw_req_live();
}

static void drain_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gateway *gw = arg;
    int64_t now = gw_mono_ns();
    if (gw->phase == DRAINING) {
        if (inflight(gw) == 0) {
            LOG_INFO(NULL, "drained, exiting");
            event_base_loopbreak(gw->base);
            return;
        }
        if (now >= gw->drain_deadline_ns) {
            LOG_WARN(NULL, "drain_timeout passed with %zu calls in flight: answering 503",
                     inflight(gw));
            gw_req_abort_all();
            gw->phase = FLUSHING;
            gw->flush_deadline_ns = now + (int64_t)FLUSH_MS * 1000000;
        }
    } else if (gw->phase == FLUSHING && now >= gw->flush_deadline_ns) {
        event_base_loopbreak(gw->base);
        return;
    }
    struct timeval tv = {0, DRAIN_TICK_MS * 1000};
    event_add(gw->drain_tick, &tv);
}

static void stop_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct gateway *gw = arg;
    if (gw->phase != RUNNING) {
        LOG_WARN(NULL, "second signal %d: exiting now", (int)sig);
        event_base_loopbreak(gw->base);
        return;
    }
    LOG_INFO(NULL, "signal %d: stop accepting, draining %zu in-flight calls (up to %lld ms)",
             (int)sig, inflight(gw), (long long)gw->cfg.drain_timeout);
    gw->phase = DRAINING;
    gw_request_set_draining();
    if (gw->server != NULL)
        gw_server_stop_accepting(gw->server);
    gw->drain_deadline_ns = gw_mono_ns() + gw->cfg.drain_timeout * 1000000;
    drain_tick_cb(-1, 0, gw);
}

/* Every per-function queue the resolver knows gets its stream now, so that
 * its calls are stored even before a worker for it starts. */
static void keep_queues(struct gateway *gw)
{
    char names[CMN_NATS_MAX_EXTRA_STREAMS][CMN_QUEUE_MAX];
    size_t n = cmn_resolver_queues(gw->resolver, names, CMN_NATS_MAX_EXTRA_STREAMS);
    char why[240];
    for (size_t i = 0; i < n && gw->nats != NULL; i++)
        if (strcmp(names[i], gw->cfg.faas_nats_channel) != 0 &&
            !cmn_nats_add_stream(gw->nats, names[i], why, sizeof(why)))
            LOG_WARN(NULL, "queue %s cannot be used: %s", names[i], why);
}

static size_t records_queues(void *arg, char (*out)[CMN_QUEUE_MAX], size_t max)
{
    struct gateway *gw = arg;
    return cmn_resolver_queues(gw->resolver, out, max);
}

static void policy_warn(void *arg, const char *line)
{
    (void)arg;
    LOG_WARN(NULL, "%s", line);
}

static void hup_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct gateway *gw = arg;
    struct cmn_err err;
    if (cmn_resolver_mode(gw->resolver) != CMN_RESOLVER_STATIC) {
        LOG_INFO(NULL, "SIGHUP: %s resolver mode, nothing to reload",
                 cmn_resolver_mode(gw->resolver) == CMN_RESOLVER_DNS ? "DNS" : "provider");
        return;
    }
    if (cmn_resolver_reload(gw->resolver, &err) == CMN_OK) {
        LOG_INFO(NULL, "SIGHUP: reloaded %s", gw->cfg.functions_file);
        keep_queues(gw);
    } else
        LOG_WARN(NULL, "SIGHUP: reload of %s failed, keeping the previous functions: %s",
                 gw->cfg.functions_file, err.msg);
}

static void declare_metrics(struct cmn_metrics *m)
{
    cmn_metrics_declare(m, "gateway_function_invocation_total", CMN_METRIC_COUNTER,
                        "Function invocations (sync route) by function and status code");
    cmn_metrics_declare(m, "gateway_functions_seconds", CMN_METRIC_HISTOGRAM,
                        "Function call duration in seconds (sync route)");
    cmn_metrics_declare(m, "gateway_function_invocation_started", CMN_METRIC_COUNTER,
                        "Function invocations started (sync route)");
    cmn_metrics_declare(m, "gateway_async_requests_total", CMN_METRIC_COUNTER,
                        "Async submissions by function and status code");
    cmn_metrics_declare(m, "gateway_nats_ready", CMN_METRIC_GAUGE,
                        "1 when the gateway is connected to NATS and the stream exists");
    cmn_metrics_set(m, "gateway_nats_ready", NULL, 0);
    cmn_metrics_declare(m, "gateway_async_stored_after_503_total", CMN_METRIC_COUNTER,
                        "Calls answered 503 (not confirmed in time) that the stream stored later");
    cmn_metrics_add(m, "gateway_async_stored_after_503_total", NULL, 0);
    cmn_metrics_declare(m, "gateway_function_queued_invocations_total", CMN_METRIC_COUNTER,
                        "Sync-route invocations that were attempts of queued calls "
                        "(X-Call-Attempt: the queue-worker invoking through the gateway)");
    cmn_metrics_declare(m, "gateway_function_cancelled_total", CMN_METRIC_COUNTER,
                        "Sync calls cancelled because the client hung up (by function)");
    cmn_metrics_declare(m, "gateway_upstream_retries_total", CMN_METRIC_COUNTER,
                        "Sync calls sent again after a kept-alive connection closed on reuse");
    cmn_metrics_add(m, "gateway_upstream_retries_total", NULL, 0);
    gw_system_declare_queue_metrics(m);
}

static struct evhttp *http_new(struct gateway *gw, int64_t max_body)
{
    struct evhttp *http = evhttp_new(gw->base);
    if (http == NULL)
        return NULL;
    int64_t timeout_ms =
        gw->cfg.read_timeout > gw->cfg.write_timeout ? gw->cfg.read_timeout : gw->cfg.write_timeout;
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(http, &tv);
    evhttp_set_max_headers_size(http, 1024 * 1024);
    evhttp_set_max_body_size(http, (ev_ssize_t)max_body);
    evhttp_set_default_content_type(http, NULL);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_PATCH);
    return http;
}

static void shutdown_all(struct gateway *gw)
{
    /* Order matters: no publish callback may arrive once the async module is
     * gone, evhttp_free runs the close callbacks of pending calls, the proxy
     * orphans its DNS lookups before evdns goes. */
    cmn_jspub_free(gw->pub);
    gw->pub = NULL;
    gw_records_free(gw->records); /* its thread uses NATS */
    gw->records = NULL;
    cmn_nats_free(gw->nats);
    gw->nats = NULL;
    gw_server_free(gw->server); /* requests in flight learn it through hooks->gone */
    gw->server = NULL;
    if (gw->metrics_http != NULL)
        evhttp_free(gw->metrics_http);
    gw_async_free(gw->async);
    gw_proxy_free(gw->proxy);
    gw_req_teardown();
    gw_catalog_free(gw->catalog);
    gw_ui_free(gw->ui);
    gw_system_free(gw->system);
    if (gw->dns != NULL)
        evdns_base_free(gw->dns, 1); /* runs orphaned lookups' callbacks: they free */
    if (gw->sig_term != NULL)
        event_free(gw->sig_term);
    if (gw->sig_int != NULL)
        event_free(gw->sig_int);
    if (gw->sig_hup != NULL)
        event_free(gw->sig_hup);
    if (gw->drain_tick != NULL)
        event_free(gw->drain_tick);
    cmn_resolver_free(gw->resolver);
    cmn_cbrules_free(gw->callback_rules);
    cmn_metrics_free(gw->metrics);
    if (gw->base != NULL)
        event_base_free(gw->base);
    cmn_config_free(config_table, CONFIG_COUNT, &gw->cfg);
}

int main(int argc, char **argv)
{
    static struct gateway gw;
    struct cmn_err err;
    int rc = 1;
    char auth_user[GW_SECRET_MAX] = "", auth_password[GW_SECRET_MAX] = "";

    int code = cmn_config_handle_args(argc, argv, PROGRAM, config_table, CONFIG_COUNT);
    if (code >= 0)
        return code;
    if (cmn_config_load(config_table, CONFIG_COUNT, &gw.cfg, &err) != CMN_OK) {
        fprintf(stderr, "config: %s\n", err.msg);
        cmn_config_free(config_table, CONFIG_COUNT, &gw.cfg);
        return 2;
    }
    const char *level = gw.cfg.write_debug ? "debug" : gw.cfg.log_level;
    if (!cmn_log_setup(level, gw.cfg.log_format)) {
        fprintf(stderr, "config: log_level \"%s\" or log_format \"%s\" is not valid\n",
                gw.cfg.log_level, gw.cfg.log_format);
        cmn_config_free(config_table, CONFIG_COUNT, &gw.cfg);
        return 2;
    }
    cmn_config_log(PROGRAM, config_table, CONFIG_COUNT, &gw.cfg);

    char nats_url[512];
    if (gw.cfg.faas_nats_address != NULL && gw.cfg.faas_nats_port != 0)
        snprintf(nats_url, sizeof(nats_url), "nats://%s:%lld", gw.cfg.faas_nats_address,
                 (long long)gw.cfg.faas_nats_port);
    else
        snprintf(nats_url, sizeof(nats_url), "%s", gw.cfg.nats_url);

    if (gw.cfg.basic_auth && gw_system_load_credentials(gw.cfg.secret_mount_path, auth_user,
                                                        auth_password, &err) != CMN_OK) {
        LOG_ERROR(NULL, "basic_auth: %s", err.msg);
        cmn_config_free(config_table, CONFIG_COUNT, &gw.cfg);
        return 2;
    }

    struct cmn_resolver_config rcfg = {.functions_file = gw.cfg.functions_file,
                                       .direct_functions = gw.cfg.direct_functions,
                                       .direct_suffix = gw.cfg.direct_functions_suffix,
                                       .provider_url = gw.cfg.functions_provider_url,
                                       .provider_catalog = true,
                                       .function_queues = gw.cfg.function_queues,
                                       .dead_letter_stream = gw.cfg.dead_letter_stream,
                                       .warn = policy_warn,
                                       .http_only = true};
    if (cmn_resolver_new(&rcfg, &gw.resolver, &err) != CMN_OK) {
        LOG_ERROR(NULL, "resolver: %s", err.msg);
        cmn_config_free(config_table, CONFIG_COUNT, &gw.cfg);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    cmn_listener_raise_fd_limit();
    if (evthread_use_pthreads() != 0) {
        LOG_ERROR(NULL, "libevent: no pthreads support");
        goto out;
    }
    /* The changelist folds the many enable/disable pairs evhttp makes per
     * request into one epoll_ctl per fd and loop iteration. */
    struct event_config *ecfg = event_config_new();
    if (ecfg != NULL) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        gw.base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    gw.metrics = cmn_metrics_new();
    if (gw.base == NULL || gw.metrics == NULL) {
        LOG_ERROR(NULL, "out of memory at start-up");
        goto out;
    }
    declare_metrics(gw.metrics);
    gw.dns = evdns_base_new(gw.base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (gw.dns == NULL) {
        LOG_ERROR(NULL, "evdns: cannot read /etc/resolv.conf");
        goto out;
    }

    struct gw_proxy_config pcfg = {.base = gw.base,
                                   .dns = gw.dns,
                                   .resolver = gw.resolver,
                                   .metrics = gw.metrics,
                                   .default_ns = gw.cfg.function_namespace,
                                   .direct_functions = gw.cfg.direct_functions,
                                   .upstream_timeout_ms = gw.cfg.upstream_timeout,
                                   .max_idle_per_upstream = 256,
                                   .max_response_bytes = gw.cfg.max_response_bytes};
    if (cmn_cbrules_parse(gw.cfg.callback_allowlist, &gw.callback_rules, &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s", err.msg);
        rc = 2;
        goto out;
    }
    if (cmn_cbrules_open(gw.callback_rules))
        LOG_WARN(NULL, "callback_allowlist is empty: X-Callback-Url may name any destination, "
                       "including internal services");
    struct gw_async_config acfg = {.base = gw.base,
                                   .callback_rules = gw.callback_rules,
                                   .resolver = gw.resolver,
                                   .metrics = gw.metrics,
                                   .default_ns = gw.cfg.function_namespace,
                                   .max_body_bytes = gw.cfg.max_body_bytes,
                                   .publish_timeout_ms = gw.cfg.nats_publish_timeout,
                                   .max_chain_depth = (int)gw.cfg.max_chain_depth,
                                   .default_queue = gw.cfg.faas_nats_channel};
    if (gw_proxy_new(&pcfg, &gw.proxy, &err) != CMN_OK ||
        gw_async_new(&acfg, &gw.async, &err) != CMN_OK) {
        LOG_ERROR(NULL, "start-up: %s", err.msg);
        goto out;
    }

    struct cmn_nats_config ncfg = {.url = nats_url,
                                   .client_name = "cfaas-gateway",
                                   .stream = gw.cfg.faas_nats_channel,
                                   .max_msg_bytes = gw.cfg.max_body_bytes + GW_ASYNC_HEADER_ROOM,
                                   .duplicate_window_ms = 120000,
                                   .replicas = (int)gw.cfg.stream_replicas,
                                   .dead_letter_stream = gw.cfg.dead_letter_stream,
                                   .records_bucket =
                                       gw.cfg.call_records ? gw.cfg.call_records_bucket : NULL,
                                   .record_ttl_ms = gw.cfg.call_record_ttl,
                                   .durable = gw.cfg.faas_nats_queue_group,
                                   .manage_consumer = false,
                                   .max_reconnect = -1,
                                   .reconnect_wait_ms = 1000,
                                   .ping_interval_ms = gw.cfg.nats_ping_interval,
                                   .refresh_interval_ms = 1000,
                                   .on_event = gw_async_on_event,
                                   .closure = gw.async};
    if (cmn_nats_open(&ncfg, &gw.nats, &err) != CMN_OK) {
        LOG_ERROR(NULL, "NATS %s: %s", nats_url, err.msg);
        rc = 2;
        goto out;
    }
    struct cmn_jspub_config pubcfg = {.subject = gw.cfg.faas_nats_channel,
                                      .timeout_ms = gw.cfg.nats_publish_timeout,
                                      .max_pending = (int)gw.cfg.nats_max_pending,
                                      .send_on_caller = true,
                                      .wake = gw_async_wake,
                                      .closure = gw.async};
    if (cmn_jspub_new(gw.nats, &pubcfg, &gw.pub, &err) != CMN_OK) {
        LOG_ERROR(NULL, "NATS publisher: %s", err.msg);
        goto out;
    }
    gw_async_set_nats(gw.async, gw.nats, gw.pub);
    keep_queues(&gw);
    struct gw_records_config reccfg = {.base = gw.base,
                                       .nats = gw.cfg.call_records ? gw.nats : NULL,
                                       .bucket = gw.cfg.call_records_bucket,
                                       .stream = gw.cfg.faas_nats_channel,
                                       .dead_letter_stream = gw.cfg.dead_letter_stream,
                                       .max_jobs = 1024,
                                       .queues = records_queues,
                                       .queues_arg = &gw};
    if (gw_records_new(&reccfg, &gw.records, &err) != CMN_OK) {
        LOG_ERROR(NULL, "start-up: %s", err.msg);
        goto out;
    }
    if (gw.cfg.call_records)
        gw_async_set_records(gw.async, gw.records);

    struct gw_system_config scfg = {.resolver = gw.resolver,
                                    .metrics = gw.metrics,
                                    .nats = gw.nats,
                                    .pub = gw.pub,
                                    .queue_name = gw.cfg.faas_nats_channel,
                                    .default_ns = gw.cfg.function_namespace,
                                    .basic_auth = gw.cfg.basic_auth,
                                    .auth_user = auth_user,
                                    .auth_password = auth_password,
                                    .provider_url = gw.cfg.functions_provider_url,
                                    .proxy = gw.proxy};
    enum cmn_status sst = gw_system_new(&scfg, &gw.system, &err);
    if (sst == CMN_OK && gw.cfg.functions_provider_url != NULL) {
        struct gw_catalog_config ccfg = {.base = gw.base,
                                         .dns = gw.dns,
                                         .resolver = gw.resolver,
                                         .provider_url = gw.cfg.functions_provider_url,
                                         .authorization = gw_system_authorization(gw.system),
                                         .default_ns = gw.cfg.function_namespace,
                                         .refresh_ms = gw.cfg.functions_cache_ttl,
                                         .negative_ms = 1000};
        sst = gw_catalog_new(&ccfg, &gw.catalog, &err);
        if (sst == CMN_OK)
            gw_system_set_catalog(gw.system, gw.catalog);
    }
    if (sst == CMN_OK)
        gw_system_set_records(gw.system, gw.records);
    if (sst == CMN_OK) {
        char base[300];
        if (gw.cfg.ui_callback_url != NULL && gw.cfg.ui_callback_url[0] != '\0')
            snprintf(base, sizeof(base), "%s", gw.cfg.ui_callback_url);
        else
            snprintf(base, sizeof(base), "http://127.0.0.1:%lld", (long long)gw.cfg.port);
        struct gw_ui_config ucfg = {.system = gw.system, .callback_base = base};
        sst = gw_ui_new(&ucfg, &gw.ui, &err);
    }
    memset(auth_password, 0, sizeof(auth_password));
    if (sst != CMN_OK) {
        LOG_ERROR(NULL, "start-up: %s", err.msg);
        goto out;
    }

    int64_t max_body = gw.cfg.max_sync_body_bytes > gw.cfg.max_body_bytes
                           ? gw.cfg.max_sync_body_bytes
                           : gw.cfg.max_body_bytes;
    int64_t idle_ms =
        gw.cfg.read_timeout > gw.cfg.write_timeout ? gw.cfg.read_timeout : gw.cfg.write_timeout;
    struct gw_server_config srvcfg = {.base = gw.base,
                                      .max_body_bytes = max_body,
                                      .max_header_bytes = 1024 * 1024,
                                      .idle_timeout_ms = idle_ms,
                                      .read_header_timeout_ms = gw.cfg.read_header_timeout,
                                      .read_body_timeout_ms = gw.cfg.read_body_timeout,
                                      .max_connections = (size_t)gw.cfg.max_connections,
                                      .body_limit = body_limit,
                                      .on_request = route,
                                      .arg = &gw};
    gw_req_set_body_cap(gw.cfg.max_inflight_body_bytes > 0 ? gw.cfg.max_inflight_body_bytes : -1);
    if (gw_server_new(&srvcfg, &gw.server, &err) != CMN_OK ||
        gw_server_listen(gw.server, (int)gw.cfg.port, &err) != CMN_OK) {
        LOG_ERROR(NULL, "start-up: %s", err.msg);
        goto out;
    }
    if (gw.cfg.metrics_port != 0) {
        gw.metrics_http = http_new(&gw, 4096);
        if (gw.metrics_http == NULL ||
            evhttp_bind_socket_with_handle(gw.metrics_http, "0.0.0.0",
                                           (ev_uint16_t)gw.cfg.metrics_port) == NULL) {
            LOG_ERROR(NULL, "cannot listen on metrics port %lld", (long long)gw.cfg.metrics_port);
            goto out;
        }
        evhttp_set_gencb(gw.metrics_http, gw_system_metrics_request, gw.system);
    }

    gw.sig_term = evsignal_new(gw.base, SIGTERM, stop_signal_cb, &gw);
    gw.sig_int = evsignal_new(gw.base, SIGINT, stop_signal_cb, &gw);
    gw.sig_hup = evsignal_new(gw.base, SIGHUP, hup_signal_cb, &gw);
    gw.drain_tick = evtimer_new(gw.base, drain_tick_cb, &gw);
    if (gw.sig_term == NULL || gw.sig_int == NULL || gw.sig_hup == NULL || gw.drain_tick == NULL ||
        event_add(gw.sig_term, NULL) != 0 || event_add(gw.sig_int, NULL) != 0 ||
        event_add(gw.sig_hup, NULL) != 0) {
        LOG_ERROR(NULL, "cannot install signal handlers");
        goto out;
    }

    LOG_INFO(NULL,
             "gateway %s listening on :%lld (metrics :%lld), NATS %s stream %s, resolver %s%s",
             CFAAS_VERSION, (long long)gw.cfg.port, (long long)gw.cfg.metrics_port, nats_url,
             gw.cfg.faas_nats_channel,
             cmn_resolver_mode(gw.resolver) == CMN_RESOLVER_DNS        ? "dns suffix "
             : cmn_resolver_mode(gw.resolver) == CMN_RESOLVER_PROVIDER ? "provider "
                                                                       : "static ",
             cmn_resolver_mode(gw.resolver) == CMN_RESOLVER_DNS ? gw.cfg.direct_functions_suffix
             : gw.cfg.functions_provider_url != NULL            ? gw.cfg.functions_provider_url
             : gw.cfg.functions_file != NULL                    ? gw.cfg.functions_file
                                                                : "");

    event_base_dispatch(gw.base);
    rc = gw_async_fatal(gw.async) ? 1 : 0;
out:
    shutdown_all(&gw);
    return rc;
}
