/* System API and probes: the FunctionStatus JSON comes from the resolver, the
 * info document is built here, Basic auth compares the whole expected
 * "user:password" token in constant time, and the metrics listener renders
 * the shared registry. */
#include "system.h"

#include "catalog.h"
#include "proxy.h"
#include "records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "cmn/auth.h"
#include "cmn/jspub.h"
#include "cmn/nats.h"
#include "cmn/metrics.h"
#include "cmn/name.h"
#include "cmn/resolver.h"

struct gw_system {
    struct gw_system_config config;
    char *default_ns;
    char *expected_token; /* base64("user:password"), NULL when auth is off */
    char *authorization;  /* "Basic <expected_token>", NULL when auth is off */
    char *provider_url;   /* provider mode, NULL otherwise */
    struct gw_records *records;
    size_t expected_len;
    char arch[65];
};

enum cmn_status gw_system_load_credentials(const char *dir, char *user, char *password,
                                           struct cmn_err *err)
{
    return cmn_auth_load(dir, user, password, GW_SECRET_MAX, err);
}

static bool authorized(struct gw_system *sys, struct gw_req *r)
{
    if (sys->expected_token == NULL)
        return true;
    return cmn_auth_matches(evhttp_find_header(&r->in_headers, "Authorization"),
                            sys->expected_token);
}

static void reply_json(struct gw_req *r, char *json)
{
    if (json == NULL) {
        gw_req_reply_text(r, 500, "out of memory");
        return;
    }
    gw_req_header(r, "Content-Type", "application/json");
    evbuffer_add(r->out_body, json, strlen(json));
    free(json);
    gw_req_reply(r, 200, NULL);
}

/* The "namespace" query parameter, copied into `out`; false when absent. */
static bool query_namespace(const struct gw_target *target, char *out, size_t size)
{
    if (target->query == NULL)
        return false;
    struct evkeyvalq params; /* evhttp_parse_query_str initialises it */
    memset(&params, 0, sizeof(params));
    bool found = false;
    if (evhttp_parse_query_str(target->query, &params) == 0) {
        const char *ns = evhttp_find_header(&params, "namespace");
        if (ns != NULL && ns[0] != '\0' && strlen(ns) < size) {
            memcpy(out, ns, strlen(ns) + 1);
            found = true;
        }
    }
    evhttp_clear_headers(&params);
    return found;
}

static void reply_method_not_allowed(struct gw_req *r)
{
    gw_req_header(r, "Allow", "GET");
    gw_req_reply_text(r, 405, NULL);
}

static bool is_get(struct gw_req *r)
{
    int m = r->method;
    return m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
}

static void system_info(struct gw_system *sys, struct gw_req *r)
{
    char json[1024];
    const char *mode =
        cmn_resolver_mode(sys->config.resolver) == CMN_RESOLVER_DNS ? "dns" : "static";
    /* provider mode relays /system/info (provider_route) */
    snprintf(json, sizeof(json),
             "{\"provider\":{\"provider\":\"cfaas\",\"orchestration\":\"%s\","
             "\"version\":{\"release\":\"%s\",\"sha\":\"\",\"commit_message\":\"\"}},"
             "\"version\":{\"release\":\"%s\",\"sha\":\"\",\"commit_message\":\"\"},"
             "\"arch\":\"%s\"}",
             mode, CFAAS_VERSION, CFAAS_VERSION, sys->arch);
    reply_json(r, strdup(json));
}

static void system_function(struct gw_system *sys, struct gw_req *r, const struct gw_target *target,
                            const char *name)
{
    char ns[CMN_NAME_MAX];
    const char *default_ns = sys->default_ns;
    if (strchr(name, '.') == NULL && query_namespace(target, ns, sizeof(ns)))
        default_ns = ns;
    struct cmn_fn_name fn;
    char text[CMN_NAME_MAX * 2 + 64];
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '/')
        len--;
    if (cmn_name_parse(name, len, default_ns, &fn, NULL) != CMN_OK) {
        snprintf(text, sizeof(text), "invalid function name: %.*s", (int)(len > 128 ? 128 : len),
                 name);
        gw_req_reply_text(r, 400, text);
        return;
    }
    char *json = cmn_resolver_function_json(sys->config.resolver, &fn, gw_system_invocations, sys);
    if (json == NULL) {
        snprintf(text, sizeof(text), "function not found: %s.%s", fn.name, fn.ns);
        gw_req_reply_text(r, 404, text);
        return;
    }
    reply_json(r, json);
}

double gw_system_invocations(void *arg, const char *name, const char *ns)
{
    struct gw_system *sys = arg;
    if (sys->config.metrics == NULL)
        return 0;
    char prefix[CMN_NAME_MAX * 2 + 32];
    snprintf(prefix, sizeof(prefix), "function_name=\"%s.%s\",", name, ns);
    /* each call once: sync calls answered, async calls accepted; the
     * worker's attempts through the sync route are not counted again */
    char fn_label[CMN_NAME_MAX * 2 + 32];
    snprintf(fn_label, sizeof(fn_label), "function_name=\"%s.%s\"", name, ns);
    double n =
        cmn_metrics_sum(sys->config.metrics, "gateway_function_invocation_total", prefix, NULL) +
        cmn_metrics_sum(sys->config.metrics, "gateway_async_requests_total", prefix,
                        "code=\"202\"") -
        cmn_metrics_sum(sys->config.metrics, "gateway_function_queued_invocations_total", fn_label,
                        NULL);
    return n > 0 ? n : 0;
}

const char *gw_system_authorization(const struct gw_system *sys)
{
    return sys->authorization;
}

/* ---- provider mode ---------------------------------------------------------- */

/* Replaces the reply body with `json` (taken) as application/json. */
static void set_json_body(struct gw_req *r, char *json)
{
    evbuffer_drain(r->out_body, evbuffer_get_length(r->out_body));
    evbuffer_add(r->out_body, json, strlen(json));
    free(json);
    gw_hdr_clear(&r->out_headers);
    gw_req_header(r, "Content-Type", "application/json");
}

/* The request's own target again (the forward callbacks only get `r`). */
static bool request_target(const struct gw_req *r, struct gw_target *t)
{
    return gw_target_split(r->uri, t);
}

/* GET /system/functions: the provider's list, cached, with our counts. */
static void on_list(struct gw_req *r, int *status, void *arg)
{
    struct gw_system *sys = arg;
    struct gw_target t;
    if (*status != 200 || !request_target(r, &t))
        return;
    char ns[CMN_NAME_MAX];
    const char *use = query_namespace(&t, ns, sizeof(ns)) ? ns : sys->default_ns;
    size_t len = evbuffer_get_length(r->out_body);
    const char *body = (const char *)evbuffer_pullup(r->out_body, -1);
    char *json = NULL;
    if (body == NULL ||
        cmn_status_json_enrich(body, len, use, gw_system_invocations, sys, &json) != CMN_OK) {
        /* the Go gateway answers 500 for a list it cannot read */
        evbuffer_drain(r->out_body, len);
        gw_hdr_clear(&r->out_headers);
        gw_req_header(r, "Content-Type", "text/plain; charset=utf-8");
        evbuffer_add_printf(r->out_body, "Unable to parse list of functions from provider");
        *status = 500;
        return;
    }
    (void)cmn_resolver_provider_put(sys->config.resolver, body, len, use, use, NULL);
    set_json_body(r, json);
}

/* GET /system/function/<name>: the provider's status, cached, with our count. */
static void on_function(struct gw_req *r, int *status, void *arg)
{
    struct gw_system *sys = arg;
    struct gw_target t;
    if (!request_target(r, &t) || strncmp(t.path, "/system/function/", 17) != 0)
        return;
    char ns[CMN_NAME_MAX];
    const char *name = t.path + 17;
    const char *default_ns = sys->default_ns;
    if (strchr(name, '.') == NULL && query_namespace(&t, ns, sizeof(ns)))
        default_ns = ns;
    struct cmn_fn_name fn;
    if (cmn_name_parse(name, strlen(name), default_ns, &fn, NULL) != CMN_OK)
        return;
    if (*status == 404) {
        cmn_resolver_provider_drop(sys->config.resolver, &fn);
        return;
    }
    if (*status != 200)
        return;
    size_t len = evbuffer_get_length(r->out_body);
    const char *body = (const char *)evbuffer_pullup(r->out_body, -1);
    char *json = NULL;
    if (body == NULL ||
        cmn_status_json_enrich(body, len, fn.ns, gw_system_invocations, sys, &json) != CMN_OK)
        return; /* relayed as the provider sent it */
    (void)cmn_resolver_provider_put(sys->config.resolver, body, len, NULL, fn.ns, NULL);
    set_json_body(r, json);
}

/* GET /system/info: GatewayInfo around the provider's ProviderInfo, always
 * 200 with a non-null provider (faas-cli version dereferences it). */
static void on_info(struct gw_req *r, int *status, void *arg)
{
    struct gw_system *sys = arg;
    json_t *provider = NULL;
    if (*status == 200) {
        size_t len = evbuffer_get_length(r->out_body);
        const char *body = (const char *)evbuffer_pullup(r->out_body, -1);
        provider = body != NULL ? json_loadb(body, len, 0, NULL) : NULL;
        if (!json_is_object(provider) || !json_is_object(json_object_get(provider, "version"))) {
            json_decref(provider);
            provider = NULL;
        }
    }
    if (provider == NULL)
        provider = json_pack("{s:s,s:s,s:{s:s,s:s}}", "provider", "unknown", "orchestration",
                             "unknown", "version", "release", "", "sha", "");
    json_t *info =
        json_pack("{s:o,s:{s:s,s:s,s:s},s:s}", "provider", provider, "version", "release",
                  CFAAS_VERSION, "sha", "", "commit_message", "", "arch", sys->arch);
    char *json = info != NULL ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);
    if (json == NULL)
        return;
    set_json_body(r, json);
    *status = 200;
}

/* Deploy, update, remove, scale: the catalogue learns of it at once. */
static void on_change(struct gw_req *r, int *status, void *arg)
{
    (void)r;
    struct gw_system *sys = arg;
    if (*status >= 200 && *status < 300 && sys->config.catalog != NULL)
        gw_catalog_changed(sys->config.catalog);
}

/* Copies `query` into `out` with every follow=<v> parameter made
 * follow=false; false when there was none (or it does not fit). */
static bool unfollow(const char *query, char *out, size_t size)
{
    size_t n = 0;
    bool changed = false;
    const char *p = query;
    while (*p != '\0') {
        size_t len = strcspn(p, "&");
        const char *item = p;
        size_t item_len = len;
        if (len >= 7 && strncmp(p, "follow=", 7) == 0) {
            item = "follow=false";
            item_len = 12;
            changed = true;
        }
        if (n + item_len + 2 > size)
            return false;
        if (n > 0)
            out[n++] = '&';
        memcpy(out + n, item, item_len);
        n += item_len;
        p += len;
        if (*p == '&')
            p++;
    }
    out[n] = '\0';
    return changed;
}

static void provider_route(struct gw_system *sys, struct gw_req *r, const struct gw_target *target)
{
    const char *path = target->path;
    struct gw_forward fwd = {
        .base_url = sys->provider_url, .authorization = sys->authorization, .arg = sys};
    bool get = is_get(r);
    if (strcmp(path, "/system/functions") == 0)
        fwd.on_response = get ? on_list : on_change;
    else if (strncmp(path, "/system/function/", 17) == 0 && get)
        fwd.on_response = on_function;
    else if (strcmp(path, "/system/info") == 0 && get)
        fwd.on_response = on_info;
    else if (strncmp(path, "/system/scale-function/", 23) == 0)
        fwd.on_response = on_change;
    if (strcmp(path, "/system/logs") == 0 && target->query != NULL) {
        /* The relay returns whole answers: a follow stream would only end in
         * a 504, so the provider is asked for the lines so far instead. */
        struct gw_target t = *target;
        char query[4096];
        if (unfollow(target->query, query, sizeof(query))) {
            t.query = query;
            gw_proxy_forward(sys->config.proxy, r, &t, &fwd);
            return;
        }
    }
    gw_proxy_forward(sys->config.proxy, r, target, &fwd);
}

bool gw_system_authorize(struct gw_system *sys, struct gw_req *r)
{
    if (authorized(sys, r))
        return true;
    gw_req_header(r, "WWW-Authenticate", "Basic realm=\"Restricted\"");
    gw_req_reply_text(r, 401, "invalid credentials");
    return false;
}

void gw_system_handle(struct gw_system *sys, struct gw_req *r, const struct gw_target *target)
{
    if (!gw_system_authorize(sys, r))
        return;
    const char *path = target->path;
    if (strncmp(path, "/system/async-calls", 19) == 0 ||
        strncmp(path, "/system/dead-letters", 20) == 0) {
        gw_records_system(sys->records, r, target);
        return;
    }
    if (sys->provider_url != NULL && sys->config.proxy != NULL) {
        provider_route(sys, r, target);
        return;
    }
    if (strcmp(path, "/system/functions") == 0 || strcmp(path, "/system/functions/") == 0) {
        if (!is_get(r)) {
            reply_method_not_allowed(r);
            return;
        }
        char ns[CMN_NAME_MAX];
        const char *use = query_namespace(target, ns, sizeof(ns)) ? ns : sys->default_ns;
        reply_json(r,
                   cmn_resolver_list_json(sys->config.resolver, use, gw_system_invocations, sys));
        return;
    }
    if (strncmp(path, "/system/function/", 17) == 0 && path[17] != '\0') {
        if (!is_get(r)) {
            reply_method_not_allowed(r);
            return;
        }
        system_function(sys, r, target, path + 17);
        return;
    }
    if (strcmp(path, "/system/info") == 0) {
        if (!is_get(r)) {
            reply_method_not_allowed(r);
            return;
        }
        system_info(sys, r);
        return;
    }
    gw_req_reply_text(r, 404, "404 page not found");
}

void gw_system_health(struct gw_system *sys, struct gw_req *r, const struct gw_target *target)
{
    if (!is_get(r)) {
        reply_method_not_allowed(r);
        return;
    }
    if (strcmp(target->path, "/readyz") == 0) {
        if (sys->config.nats == NULL || !cmn_nats_ready(sys->config.nats)) {
            gw_req_reply_text(r, 503, "NATS not ready");
            return;
        }
        if (sys->config.pub != NULL && cmn_jspub_storage_full(sys->config.pub)) {
            gw_req_reply_text(r, 503, "NATS storage full");
            return;
        }
    }
    gw_req_reply_text(r, 200, "OK");
}

void gw_system_declare_queue_metrics(struct cmn_metrics *m)
{
    cmn_metrics_declare(m, GW_M_QUEUE_PENDING, CMN_METRIC_GAUGE,
                        "Queued calls not yet delivered to a worker (consumer num_pending)");
    cmn_metrics_declare(m, GW_M_QUEUE_ACK_PENDING, CMN_METRIC_GAUGE,
                        "Calls delivered and not yet acknowledged: running or parked for a "
                        "retry (consumer num_ack_pending)");
    cmn_metrics_declare(m, GW_M_QUEUE_REDELIVERED, CMN_METRIC_GAUGE,
                        "Unacknowledged calls delivered more than once (consumer "
                        "num_redelivered)");
    cmn_metrics_declare(m, GW_M_QUEUE_MESSAGES, CMN_METRIC_GAUGE,
                        "Messages stored in the work-queue stream");
    cmn_metrics_declare(m, GW_M_DEAD_LETTERS, CMN_METRIC_GAUGE,
                        "Messages stored in the dead-letter stream");
    cmn_metrics_declare(m, GW_M_QUEUE_WAITING, CMN_METRIC_GAUGE,
                        "Pull requests of queue-workers waiting for calls (consumer "
                        "num_waiting): 0 with calls pending means no worker is consuming");
}

/* The keeper thread refreshes the figures every few seconds; a scrape copies
 * the latest ones. Unknown figures (-1) are not exported. */
static void update_queue_gauges(struct gw_system *sys)
{
    if (sys->config.nats == NULL || sys->config.metrics == NULL)
        return;
    struct cmn_nats_stats st;
    cmn_nats_stats_get(sys->config.nats, &st);
    char labels[300];
    snprintf(labels, sizeof(labels), "queue=\"%s\"", sys->config.queue_name);
    const struct {
        const char *name;
        int64_t value;
    } g[] = {
        {GW_M_QUEUE_PENDING, st.pending},
        {GW_M_QUEUE_ACK_PENDING, st.ack_pending},
        {GW_M_QUEUE_REDELIVERED, st.redelivered},
        {GW_M_QUEUE_MESSAGES, st.stream_messages},
        {GW_M_DEAD_LETTERS, st.dead_letter_messages},
        {GW_M_QUEUE_WAITING, st.waiting},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
        if (g[i].value >= 0)
            cmn_metrics_set(sys->config.metrics, g[i].name, labels, (double)g[i].value);
}

void gw_system_metrics_request(struct evhttp_request *req, void *arg)
{
    struct gw_system *sys = arg;
    struct gw_target target;
    if (!gw_target_split(evhttp_request_get_uri(req), &target)) {
        gw_reply_text(req, 404, "404 page not found");
        return;
    }
    if (strcmp(target.path, "/metrics") == 0) {
        update_queue_gauges(sys);
        size_t len = 0;
        char *text = sys->config.metrics != NULL ? cmn_metrics_render(sys->config.metrics, &len)
                                                 : strdup("");
        if (text == NULL) {
            gw_reply_text(req, 500, "out of memory");
            return;
        }
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        evbuffer_add(evhttp_request_get_output_buffer(req), text, len);
        free(text);
        gw_reply(req, 200, NULL, NULL);
        return;
    }
    if (strcmp(target.path, "/healthz") == 0) {
        enum evhttp_cmd_type m = evhttp_request_get_command(req);
        if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
            gw_reply_text(req, 405, NULL);
            return;
        }
        gw_reply_text(req, 200, "OK");
        return;
    }
    gw_reply_text(req, 404, "404 page not found");
}

enum cmn_status gw_system_new(const struct gw_system_config *config, struct gw_system **out,
                              struct cmn_err *err)
{
    struct gw_system *sys = calloc(1, sizeof(*sys));
    if (sys == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "system: out of memory");
    sys->config = *config;
    sys->config.auth_user = NULL;
    sys->config.auth_password = NULL;
    sys->default_ns = strdup(config->default_ns != NULL ? config->default_ns : "");
    if (sys->default_ns == NULL)
        goto nomem;
    sys->config.default_ns = sys->default_ns;
    struct utsname u;
    snprintf(sys->arch, sizeof(sys->arch), "%s", uname(&u) == 0 ? u.machine : "unknown");
    if (config->basic_auth) {
        if (config->auth_user == NULL || config->auth_password == NULL) {
            gw_system_free(sys);
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "basic_auth needs a user and password");
        }
        sys->expected_token = cmn_auth_token(config->auth_user, config->auth_password);
        if (sys->expected_token == NULL)
            goto nomem;
        sys->expected_len = strlen(sys->expected_token);
        sys->authorization = malloc(sys->expected_len + 7);
        if (sys->authorization == NULL)
            goto nomem;
        memcpy(sys->authorization, "Basic ", 6);
        memcpy(sys->authorization + 6, sys->expected_token, sys->expected_len + 1);
    }
    if (config->provider_url != NULL) {
        sys->provider_url = strdup(config->provider_url);
        if (sys->provider_url == NULL)
            goto nomem;
        size_t n = strlen(sys->provider_url);
        while (n > 0 && sys->provider_url[n - 1] == '/')
            sys->provider_url[--n] = '\0';
    }
    sys->config.provider_url = sys->provider_url;
    *out = sys;
    return CMN_OK;
nomem:
    gw_system_free(sys);
    return cmn_err_set(err, CMN_ERR_NOMEM, 0, "system: out of memory");
}

void gw_system_set_catalog(struct gw_system *sys, struct gw_catalog *catalog)
{
    sys->config.catalog = catalog;
}

void gw_system_set_records(struct gw_system *sys, struct gw_records *records)
{
    sys->records = records;
}

void gw_system_free(struct gw_system *sys)
{
    if (sys == NULL)
        return;
    cmn_auth_token_free(sys->expected_token);
    if (sys->authorization != NULL) {
        memset(sys->authorization, 0, strlen(sys->authorization));
        free(sys->authorization);
    }
    free(sys->provider_url);
    free(sys->default_ns);
    free(sys);
}
