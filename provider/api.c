/* Routes of the faas-provider API. FunctionDeployment bodies are validated and
 * normalised here (known keys only, types checked) before store.c keeps them as
 * JSON text; FunctionStatus is rendered from that text plus the live replica
 * counts of procs.c. Status codes follow faas-cli 0.16's expectations (202 on
 * success, 404 for an unknown function on PUT so faas-cli falls back to POST). */
#include "api.h"

#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include "cmn/auth.h"
#include "cmn/duration.h"
#include "cmn/listener.h"
#include "cmn/log.h"
#include "cmn/name.h"
#include "config.h"
#include "fnproxy.h"
#include "logs.h"
#include "procs.h"
#include "store.h"

#ifndef CFAAS_VERSION
#define CFAAS_VERSION "dev"
#endif
#ifndef CFAAS_GIT_SHA
#define CFAAS_GIT_SHA ""
#endif

#define PROVIDER_NAME "cfaas-process-provider"
#define SCALE_MIN_LABEL "com.openfaas.scale.min"
#define MAX_HEADERS_BYTES (64 * 1024)
#define CREDENTIAL_MAX 512
#define PATH_BYTES 4096
#define ALL_METHODS                                                                                \
    (EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |    \
     EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS)

struct pv_api {
    struct pv_api_config c;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    char *expected_token; /* base64("user:password"); NULL = auth off */
    size_t expected_len;
};

/* ---- replies ------------------------------------------------------------ */

static void reply_text(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Go's http.Error shape: text/plain, the message and a newline. */
static void reply_text(struct evhttp_request *req, int code, const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    if (b != NULL) {
        va_list ap;
        va_start(ap, fmt);
        evbuffer_add_vprintf(b, fmt, ap);
        va_end(ap);
        evbuffer_add(b, "\n", 1);
    }
    evhttp_send_reply(req, code, NULL, b);
    if (b != NULL)
        evbuffer_free(b);
}

static void reply_empty(struct evhttp_request *req, int code)
{
    evhttp_send_reply(req, code, NULL, NULL);
}

/* Sends `doc` (taken: decref'ed here) as application/json with `code`. */
static void reply_json(struct evhttp_request *req, int code, json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        reply_text(req, 500, "out of memory");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        free(text);
        reply_text(req, 500, "out of memory");
        return;
    }
    evbuffer_add(b, text, strlen(text));
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, NULL, b);
    evbuffer_free(b);
}

static void reply_method_not_allowed(struct evhttp_request *req)
{
    reply_text(req, 405, "method not allowed");
}

/* ---- request helpers ---------------------------------------------------- */

/* The body as JSON; NULL (and a 400 sent) when it is not a JSON object. */
static json_t *body_json(struct evhttp_request *req)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(b);
    unsigned char *data = evbuffer_pullup(b, -1);
    json_error_t jerr;
    json_t *doc = len > 0 && data != NULL ? json_loadb((const char *)data, len, 0, &jerr) : NULL;
    if (doc == NULL) {
        reply_text(req, 400, "invalid request body: %s",
                   len == 0 ? "empty body, expected a JSON object" : jerr.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        reply_text(req, 400, "invalid request body: expected a JSON object");
        return NULL;
    }
    return doc;
}

/* Copies query parameter `key` into `out`; false when absent or too long. */
static bool query_param(const char *query, const char *key, char *out, size_t size)
{
    if (query == NULL)
        return false;
    struct evkeyvalq params;
    memset(&params, 0, sizeof params);
    bool found = false;
    if (evhttp_parse_query_str(query, &params) == 0) {
        const char *v = evhttp_find_header(&params, key);
        if (v != NULL && strlen(v) < size) {
            snprintf(out, size, "%s", v);
            found = true;
        }
    }
    evhttp_clear_headers(&params);
    return found;
}

/* Resolves a namespace given by the client (NULL/"" = default) into `out`.
 * Sends 400 "namespace not valid" and returns false for any other namespace. */
static bool resolve_ns(struct pv_api *api, struct evhttp_request *req, const char *given, char *out,
                       size_t size)
{
    const char *def = api->c.cfg->function_namespace;
    if (given == NULL || given[0] == '\0' || strcmp(given, def) == 0) {
        snprintf(out, size, "%s", def);
        return true;
    }
    reply_text(req, 400, "namespace not valid");
    return false;
}

/* Namespace from the JSON body's "namespace", else the query's; see resolve_ns. */
static bool body_or_query_ns(struct pv_api *api, struct evhttp_request *req, json_t *body,
                             const char *query, char *out, size_t size)
{
    const char *given = json_string_value(json_object_get(body, "namespace"));
    char qns[CMN_NAME_MAX * 2];
    if ((given == NULL || given[0] == '\0') && query_param(query, "namespace", qns, sizeof qns))
        given = qns;
    return resolve_ns(api, req, given, out, size);
}

/* ---- auth --------------------------------------------------------------- */

static bool authorized(struct pv_api *api, struct evhttp_request *req)
{
    if (api->expected_token == NULL)
        return true;
    return cmn_auth_matches(
        evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization"),
        api->expected_token);
}

enum cmn_status pv_api_load_credentials(const char *dir, char *user, char *password, size_t size,
                                        struct cmn_err *err)
{
    return cmn_auth_load(dir, user, password, size, err);
}

/* ---- FunctionDeployment ------------------------------------------------- */

static bool is_string_map(json_t *v)
{
    const char *k;
    json_t *x;
    if (!json_is_object(v))
        return false;
    json_object_foreach(v, k, x) if (!json_is_string(x)) return false;
    return true;
}

static bool is_string_array(json_t *v)
{
    size_t i;
    json_t *x;
    if (!json_is_array(v))
        return false;
    json_array_foreach(v, i, x) if (!json_is_string(x)) return false;
    return true;
}

/* The fprocess a deployment runs: envVars.fprocess wins over envProcess (as
 * in faasd); NULL when neither is set. Bound to `dep`. */
static const char *dep_fprocess(json_t *dep)
{
    const char *f = json_string_value(json_object_get(json_object_get(dep, "envVars"), "fprocess"));
    if (f != NULL && f[0] != '\0')
        return f;
    f = json_string_value(json_object_get(dep, "envProcess"));
    return f != NULL && f[0] != '\0' ? f : NULL;
}

/* Validates `in` and builds the normalised deployment (new reference) with the
 * known keys only. On failure sends 400 and returns NULL. */
static json_t *normalise_deployment(struct pv_api *api, struct evhttp_request *req, json_t *in,
                                    struct cmn_fn_name *fn)
{
    static const char *const strings[] = {"image", "envProcess"};
    static const char *const maps[] = {"envVars", "labels", "annotations"};
    static const char *const arrays[] = {"secrets", "constraints"};
    static const char *const resources[] = {"limits", "requests"};
    json_t *out = json_object();
    const char *service = json_string_value(json_object_get(in, "service"));
    if (out == NULL) {
        reply_text(req, 500, "out of memory");
        return NULL;
    }
    if (service == NULL || service[0] == '\0') {
        reply_text(req, 400, "service is required: the function name");
        goto fail;
    }
    if (!cmn_name_label_valid(service, strlen(service))) {
        reply_text(req, 400,
                   "invalid service name \"%s\": use lower-case letters, digits and '-' "
                   "(a DNS label, at most 63 characters)",
                   service);
        goto fail;
    }
    if (!resolve_ns(api, req, json_string_value(json_object_get(in, "namespace")), fn->ns,
                    sizeof fn->ns))
        goto fail;
    snprintf(fn->name, sizeof fn->name, "%s", service);
    json_object_set_new(out, "service", json_string(service));
    json_object_set_new(out, "namespace", json_string(fn->ns));
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        json_t *v = json_object_get(in, strings[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_string(v)) {
            reply_text(req, 400, "%s must be a string", strings[i]);
            goto fail;
        }
        json_object_set(out, strings[i], v);
    }
    if (json_object_get(out, "image") == NULL)
        json_object_set_new(out, "image", json_string(""));
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        json_t *v = json_object_get(in, maps[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!is_string_map(v)) {
            reply_text(req, 400, "%s must be an object of strings", maps[i]);
            goto fail;
        }
        json_object_set(out, maps[i], v);
    }
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        json_t *v = json_object_get(in, arrays[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!is_string_array(v)) {
            reply_text(req, 400, "%s must be an array of strings", arrays[i]);
            goto fail;
        }
        json_object_set(out, arrays[i], v);
    }
    for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++) {
        json_t *v = json_object_get(in, resources[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!is_string_map(v)) {
            reply_text(req, 400, "%s must be an object of strings (memory, cpu)", resources[i]);
            goto fail;
        }
        json_object_set(out, resources[i], v);
    }
    json_t *ro = json_object_get(in, "readOnlyRootFilesystem");
    if (ro != NULL && !json_is_null(ro)) {
        if (!json_is_boolean(ro)) {
            reply_text(req, 400, "readOnlyRootFilesystem must be a boolean");
            goto fail;
        }
        if (json_is_true(ro))
            json_object_set_new(out, "readOnlyRootFilesystem", json_true());
    }
    if (dep_fprocess(out) == NULL) {
        reply_text(req, 400,
                   "fprocess required: this provider runs no container images, so set the "
                   "command to run in envProcess (faas-cli: fprocess in stack.yml or --fprocess) "
                   "or as envVars.fprocess");
        goto fail;
    }
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(out, "secrets"), i, s)
    {
        const char *name = json_string_value(s);
        if (!pv_store_secret_exists(api->c.store, name, fn->ns)) {
            reply_text(req, 400, "unable to find secret: %s", name);
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static int64_t initial_replicas(struct pv_api *api, json_t *dep)
{
    const char *v =
        json_string_value(json_object_get(json_object_get(dep, "labels"), SCALE_MIN_LABEL));
    if (v == NULL)
        return 1;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < 0)
        return 1;
    return n > api->c.cfg->max_replicas ? api->c.cfg->max_replicas : n;
}

static void free_env(char **env)
{
    if (env == NULL)
        return;
    for (char **p = env; *p != NULL; p++)
        free(*p);
    free(env);
}

static char *kv(const char *key, const char *value)
{
    size_t len = strlen(key) + strlen(value) + 2;
    char *s = malloc(len);
    if (s != NULL)
        snprintf(s, len, "%s=%s", key, value);
    return s;
}

/* Starts (or restarts with a new spec) the replicas of a stored function. */
static enum cmn_status run_function(struct pv_api *api, const struct pv_fn_rec *rec,
                                    struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    char **env = NULL;
    char log_path[PATH_BYTES], log_dir[PATH_BYTES], secrets[PATH_BYTES];
    json_t *dep = json_loads(rec->deployment, 0, NULL);
    const char *fprocess = dep != NULL ? dep_fprocess(dep) : NULL;
    if (fprocess == NULL) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s.%s: stored deployment has no fprocess",
                         rec->name, rec->ns);
        goto out;
    }
    if ((st = pv_store_log_dir(api->c.store, rec->ns, log_dir, sizeof log_dir, err)) != CMN_OK ||
        (st = pv_store_log_path(api->c.store, rec->name, rec->ns, log_path, sizeof log_path,
                                err)) != CMN_OK ||
        (st = pv_store_secret_dir(api->c.store, rec->ns, secrets, sizeof secrets, err)) != CMN_OK)
        goto out;
    json_t *vars = json_object_get(dep, "envVars");
    size_t n = json_object_size(vars) + 4, k = 0;
    env = calloc(n + 1, sizeof *env);
    if (env == NULL)
        goto nomem;
    const struct pv_config *cfg = api->c.cfg;
    /* PATH and HOME of the provider unless the function sets its own; each key
     * appears once, since getenv in the watchdog would see only the first. */
    if (cfg->env_path != NULL && json_object_get(vars, "PATH") == NULL &&
        (env[k++] = kv("PATH", cfg->env_path)) == NULL)
        goto nomem;
    if (cfg->env_home != NULL && json_object_get(vars, "HOME") == NULL &&
        (env[k++] = kv("HOME", cfg->env_home)) == NULL)
        goto nomem;
    if ((env[k++] = kv("secret_mount_path", secrets)) == NULL)
        goto nomem;
    const char *key;
    json_t *val;
    json_object_foreach(vars, key, val)
    {
        /* fprocess was resolved above; secret_mount_path is the provider's. */
        if (strcmp(key, "fprocess") == 0 || strcmp(key, "secret_mount_path") == 0 ||
            key[0] == '\0' || strchr(key, '=') != NULL)
            continue;
        if ((env[k++] = kv(key, json_string_value(val))) == NULL)
            goto nomem;
    }
    struct pv_fn_spec spec = {.name = rec->name,
                              .ns = rec->ns,
                              .fprocess = fprocess,
                              .env = (const char *const *)env,
                              .log_path = log_path};
    st = pv_procs_deploy(api->c.procs, &spec, rec->replicas, err);
    goto out;
nomem:
    st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
out:
    free_env(env);
    json_decref(dep);
    return st;
}

static void deploy(struct pv_api *api, struct evhttp_request *req, bool update)
{
    struct cmn_fn_name fn;
    struct cmn_err err = {0};
    char *text = NULL;
    json_t *in = body_json(req);
    json_t *dep = NULL;
    if (in == NULL)
        return;
    memset(&fn, 0, sizeof fn);
    dep = normalise_deployment(api, req, in, &fn);
    if (dep == NULL)
        goto out;
    const struct pv_fn_rec *old = pv_store_find(api->c.store, fn.name, fn.ns);
    if (update && old == NULL) {
        reply_text(req, 404, "function: %s.%s not found", fn.name, fn.ns);
        goto out;
    }
    if (!update && old != NULL) {
        reply_text(req, 400,
                   "function %s.%s already exists: update it with PUT /system/functions "
                   "(faas-cli deploy does)",
                   fn.name, fn.ns);
        goto out;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t created_ms =
        old != NULL ? old->created_ms : (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    int64_t replicas = old != NULL ? old->replicas : initial_replicas(api, dep);
    text = json_dumps(dep, JSON_COMPACT);
    if (text == NULL) {
        reply_text(req, 500, "out of memory");
        goto out;
    }
    if (pv_store_put(api->c.store, fn.name, fn.ns, text, replicas, created_ms, &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s %s.%s: cannot save the state: %s", update ? "update" : "deploy",
                  fn.name, fn.ns, err.msg);
        reply_text(req, 500, "cannot save the function: %s", err.msg);
        goto out;
    }
    if (run_function(api, pv_store_find(api->c.store, fn.name, fn.ns), &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s %s.%s: cannot start: %s", update ? "update" : "deploy", fn.name, fn.ns,
                  err.msg);
        reply_text(req, 500, "cannot start the function: %s", err.msg);
        goto out;
    }
    LOG_INFO(NULL, "%s %s.%s: fprocess=\"%s\", %" PRId64 " replica(s)",
             update ? "updated" : "deployed", fn.name, fn.ns, dep_fprocess(dep), replicas);
    reply_empty(req, 202);
out:
    free(text);
    json_decref(dep);
    json_decref(in);
}

static void remove_function(struct pv_api *api, struct evhttp_request *req, const char *query)
{
    struct cmn_err err = {0};
    char ns[CMN_NAME_MAX];
    json_t *in = body_json(req);
    if (in == NULL)
        return;
    const char *name = json_string_value(json_object_get(in, "functionName"));
    if (name == NULL || name[0] == '\0') {
        reply_text(req, 400, "functionName is required");
        goto out;
    }
    if (!body_or_query_ns(api, req, in, query, ns, sizeof ns))
        goto out;
    if (pv_store_find(api->c.store, name, ns) == NULL) {
        reply_text(req, 404, "function %s.%s not found", name, ns);
        goto out;
    }
    pv_procs_remove(api->c.procs, name, ns);
    if (pv_store_remove(api->c.store, name, ns, &err) != CMN_OK)
        LOG_ERROR(NULL, "remove %s.%s: cannot save the state: %s", name, ns, err.msg);
    LOG_INFO(NULL, "removed %s.%s", name, ns);
    reply_empty(req, 202);
out:
    json_decref(in);
}

/* ---- FunctionStatus ----------------------------------------------------- */

static json_t *function_status(struct pv_api *api, const struct pv_fn_rec *rec)
{
    static const char *const copied[] = {
        "envProcess", "envVars",  "constraints",           "secrets",
        "limits",     "requests", "readOnlyRootFilesystem"};
    json_t *dep = json_loads(rec->deployment, 0, NULL);
    json_t *st = json_object();
    if (st == NULL) {
        json_decref(dep);
        return NULL;
    }
    char created[40];
    cmn_time_format(rec->created_ms, created, sizeof created);
    const char *image = json_string_value(json_object_get(dep, "image"));
    json_object_set_new(st, "name", json_string(rec->name));
    json_object_set_new(st, "image", json_string(image != NULL ? image : ""));
    json_object_set_new(st, "namespace", json_string(rec->ns));
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
        json_t *v = json_object_get(dep, copied[i]);
        if (v != NULL)
            json_object_set(st, copied[i], v);
    }
    json_t *labels = json_object_get(dep, "labels");
    json_t *annotations = json_object_get(dep, "annotations");
    json_object_set_new(st, "labels", labels != NULL ? json_incref(labels) : json_object());
    json_object_set_new(st, "annotations",
                        annotations != NULL ? json_incref(annotations) : json_object());
    json_object_set_new(st, "invocationCount", json_integer(0));
    json_object_set_new(st, "replicas", json_integer(rec->replicas));
    json_object_set_new(
        st, "availableReplicas",
        json_integer((json_int_t)pv_procs_available(api->c.procs, rec->name, rec->ns)));
    json_object_set_new(st, "createdAt", json_string(created));
    json_decref(dep);
    return st;
}

static void list_functions(struct pv_api *api, struct evhttp_request *req, const char *query)
{
    char given[CMN_NAME_MAX * 2] = "", ns[CMN_NAME_MAX];
    (void)query_param(query, "namespace", given, sizeof given);
    if (!resolve_ns(api, req, given, ns, sizeof ns))
        return;
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < pv_store_count(api->c.store); i++) {
        const struct pv_fn_rec *rec = pv_store_at(api->c.store, i);
        if (strcmp(rec->ns, ns) == 0)
            json_array_append_new(arr, function_status(api, rec));
    }
    reply_json(req, 200, arr);
}

/* Splits "name" or "name.ns" (path segment) with ?namespace= as the fallback. */
static bool path_function(struct pv_api *api, struct evhttp_request *req, const char *seg,
                          const char *query, struct cmn_fn_name *fn, const char *body_ns)
{
    char given[CMN_NAME_MAX * 2] = "";
    if (body_ns != NULL && body_ns[0] != '\0')
        snprintf(given, sizeof given, "%s", body_ns);
    else
        (void)query_param(query, "namespace", given, sizeof given);
    char ns[CMN_NAME_MAX];
    if (!resolve_ns(api, req, given, ns, sizeof ns))
        return false;
    if (seg[0] == '\0' || cmn_name_parse(seg, strlen(seg), ns, fn, NULL) != CMN_OK) {
        reply_text(req, 404, "function %s not found", seg);
        return false;
    }
    if (strcmp(fn->ns, api->c.cfg->function_namespace) != 0) {
        reply_text(req, 400, "namespace not valid");
        return false;
    }
    return true;
}

static void describe_function(struct pv_api *api, struct evhttp_request *req, const char *seg,
                              const char *query)
{
    struct cmn_fn_name fn;
    if (!path_function(api, req, seg, query, &fn, NULL))
        return;
    const struct pv_fn_rec *rec = pv_store_find(api->c.store, fn.name, fn.ns);
    if (rec == NULL) {
        reply_empty(req, 404);
        return;
    }
    reply_json(req, 200, function_status(api, rec));
}

static void scale_function(struct pv_api *api, struct evhttp_request *req, const char *seg,
                           const char *query)
{
    struct cmn_fn_name fn;
    struct cmn_err err = {0};
    json_t *in = body_json(req);
    if (in == NULL)
        return;
    if (!path_function(api, req, seg, query, &fn,
                       json_string_value(json_object_get(in, "namespace"))))
        goto out;
    json_t *rep = json_object_get(in, "replicas");
    int64_t max = api->c.cfg->max_replicas;
    if (rep != NULL && !json_is_integer(rep)) {
        reply_text(req, 400, "replicas must be a non-negative integer");
        goto out;
    }
    int64_t replicas = rep != NULL ? json_integer_value(rep) : 0;
    if (replicas < 0 || replicas > max) {
        reply_text(req, 400, "replicas must be between 0 and max_replicas (%" PRId64 ")", max);
        goto out;
    }
    const struct pv_fn_rec *rec = pv_store_find(api->c.store, fn.name, fn.ns);
    if (rec == NULL) {
        reply_text(req, 404, "function %s.%s not found", fn.name, fn.ns);
        goto out;
    }
    int64_t was = rec->replicas;
    if (pv_store_set_replicas(api->c.store, fn.name, fn.ns, replicas, &err) != CMN_OK)
        LOG_ERROR(NULL, "scale %s.%s: cannot save the state: %s", fn.name, fn.ns, err.msg);
    if (pv_procs_scale(api->c.procs, fn.name, fn.ns, replicas, &err) != CMN_OK) {
        reply_text(req, 500, "cannot scale: %s", err.msg);
        goto out;
    }
    LOG_INFO(NULL, "scaled %s.%s from %" PRId64 " to %" PRId64 " replica(s)", fn.name, fn.ns, was,
             replicas);
    reply_empty(req, 202);
out:
    json_decref(in);
}

/* ---- secrets ------------------------------------------------------------ */

static void secrets_list(struct pv_api *api, struct evhttp_request *req, const char *query)
{
    char given[CMN_NAME_MAX * 2] = "", ns[CMN_NAME_MAX];
    char **names = NULL;
    size_t count = 0;
    struct cmn_err err = {0};
    (void)query_param(query, "namespace", given, sizeof given);
    if (!resolve_ns(api, req, given, ns, sizeof ns))
        return;
    if (pv_store_secret_list(api->c.store, ns, &names, &count, &err) != CMN_OK) {
        reply_text(req, 500, "cannot list secrets: %s", err.msg);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < count; i++) {
        if (arr != NULL)
            json_array_append_new(arr, json_pack("{s:s,s:s}", "name", names[i], "namespace", ns));
        free(names[i]);
    }
    free(names);
    reply_json(req, 200, arr);
}

static void secrets_write(struct pv_api *api, struct evhttp_request *req, const char *query,
                          enum pv_secret_mode mode)
{
    char ns[CMN_NAME_MAX];
    struct cmn_err err = {0};
    unsigned char *raw = NULL;
    json_t *in = body_json(req);
    if (in == NULL)
        return;
    const char *name = json_string_value(json_object_get(in, "name"));
    if (name == NULL || !pv_store_secret_name_valid(name)) {
        reply_text(req, 400,
                   "invalid secret name: lower-case letters, digits, '-' and '.' (a DNS-1123 "
                   "subdomain)");
        goto out;
    }
    if (!body_or_query_ns(api, req, in, query, ns, sizeof ns))
        goto out;
    const char *raw_b64 = json_string_value(json_object_get(in, "rawValue"));
    const char *value = json_string_value(json_object_get(in, "value"));
    const void *data = value != NULL ? value : "";
    size_t len = value != NULL ? strlen(value) : 0;
    if (raw_b64 != NULL && raw_b64[0] != '\0') {
        raw = cmn_base64_decode(raw_b64, &len);
        if (raw == NULL) {
            reply_text(req, 400, "rawValue is not base64");
            goto out;
        }
        data = raw;
    }
    enum cmn_status st = pv_store_secret_write(api->c.store, name, ns, data, len, mode, &err);
    if (st == CMN_ERR_CONFLICT)
        reply_text(req, 409, "secret %s already exists", name);
    else if (st == CMN_ERR_NOT_FOUND)
        reply_text(req, 404, "unable to find secret: %s", name);
    else if (st != CMN_OK)
        reply_text(req, 500, "cannot write secret: %s", err.msg);
    else {
        LOG_INFO(NULL, "secret %s.%s %s (%zu bytes)", name, ns,
                 mode == PV_SECRET_CREATE ? "created" : "updated", len);
        reply_empty(req, 202);
    }
out:
    free(raw);
    json_decref(in);
}

static void secrets_delete(struct pv_api *api, struct evhttp_request *req, const char *query)
{
    char ns[CMN_NAME_MAX];
    struct cmn_err err = {0};
    json_t *in = body_json(req);
    if (in == NULL)
        return;
    const char *name = json_string_value(json_object_get(in, "name"));
    if (name == NULL || !pv_store_secret_name_valid(name)) {
        reply_text(req, 400, "invalid secret name");
        goto out;
    }
    if (!body_or_query_ns(api, req, in, query, ns, sizeof ns))
        goto out;
    enum cmn_status st = pv_store_secret_delete(api->c.store, name, ns, &err);
    if (st == CMN_ERR_NOT_FOUND)
        reply_text(req, 404, "unable to find secret: %s", name);
    else if (st != CMN_OK)
        reply_text(req, 500, "cannot delete secret: %s", err.msg);
    else {
        LOG_INFO(NULL, "secret %s.%s deleted", name, ns);
        reply_empty(req, 202);
    }
out:
    json_decref(in);
}

static void secrets(struct pv_api *api, struct evhttp_request *req, const char *query)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET:
        secrets_list(api, req, query);
        break;
    case EVHTTP_REQ_POST:
        secrets_write(api, req, query, PV_SECRET_CREATE);
        break;
    case EVHTTP_REQ_PUT:
        secrets_write(api, req, query, PV_SECRET_UPDATE);
        break;
    case EVHTTP_REQ_DELETE:
        secrets_delete(api, req, query);
        break;
    default:
        reply_method_not_allowed(req);
    }
}

/* ---- logs, info, namespaces --------------------------------------------- */

static void logs(struct pv_api *api, struct evhttp_request *req, const char *query)
{
    char name[CMN_NAME_MAX * 2] = "", given[CMN_NAME_MAX * 2] = "", ns[CMN_NAME_MAX];
    char path[PATH_BYTES];
    if (!query_param(query, "name", name, sizeof name) || name[0] == '\0') {
        reply_text(req, 422, "could not parse the log request");
        return;
    }
    (void)query_param(query, "namespace", given, sizeof given);
    if (!resolve_ns(api, req, given, ns, sizeof ns))
        return;
    if (pv_store_find(api->c.store, name, ns) == NULL) {
        reply_text(req, 404, "function %s.%s not found", name, ns);
        return;
    }
    if (pv_store_log_path(api->c.store, name, ns, path, sizeof path, NULL) != CMN_OK) {
        reply_text(req, 500, "function log request failed");
        return;
    }
    pv_logs_handle(api->c.logs, req, name, ns, path, query);
}

static void info(struct evhttp_request *req)
{
    reply_json(req, 200,
               json_pack("{s:s,s:s,s:{s:s,s:s}}", "provider", PROVIDER_NAME, "orchestration",
                         "process", "version", "sha", CFAAS_GIT_SHA, "release", CFAAS_VERSION));
}

static void namespace_get(struct pv_api *api, struct evhttp_request *req, const char *ns)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply_text(req, 501,
                   "namespaces cannot be created, changed or deleted here: the process provider "
                   "serves the one namespace function_namespace names");
        return;
    }
    if (strcmp(ns, api->c.cfg->function_namespace) != 0) {
        reply_text(req, 404, "namespace %s not found", ns);
        return;
    }
    reply_json(
        req, 200,
        json_pack("{s:s,s:{s:s},s:{}}", "name", ns, "labels", "openfaas", "1", "annotations"));
}

/* ---- dispatch ----------------------------------------------------------- */

static bool is(struct evhttp_request *req, enum evhttp_cmd_type m)
{
    return evhttp_request_get_command(req) == m;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct pv_api *api = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    if (path == NULL || path[0] == '\0') {
        reply_text(req, 400, "bad request");
        return;
    }
    if (strncmp(path, "/function/", 10) == 0) {
        pv_fnproxy_handle(api->c.proxy, req, path + 10, query);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        if (!is(req, EVHTTP_REQ_GET) && !is(req, EVHTTP_REQ_HEAD))
            reply_method_not_allowed(req);
        else
            reply_text(req, 200, "OK");
        return;
    }
    if (strcmp(path, "/system/namespaces") == 0) {
        if (!is(req, EVHTTP_REQ_GET))
            reply_method_not_allowed(req);
        else
            reply_json(req, 200, json_pack("[s]", api->c.cfg->function_namespace));
        return;
    }
    if (strncmp(path, "/system/namespace/", 18) == 0) {
        namespace_get(api, req, path + 18);
        return;
    }
    enum { R_FUNCTIONS, R_FUNCTION, R_SCALE, R_INFO, R_SECRETS, R_LOGS, R_NONE } route = R_NONE;
    const char *seg = NULL;
    if (strcmp(path, "/system/functions") == 0)
        route = R_FUNCTIONS;
    else if (strncmp(path, "/system/function/", 17) == 0)
        route = R_FUNCTION, seg = path + 17;
    else if (strncmp(path, "/system/scale-function/", 23) == 0)
        route = R_SCALE, seg = path + 23;
    else if (strcmp(path, "/system/info") == 0)
        route = R_INFO;
    else if (strcmp(path, "/system/secrets") == 0)
        route = R_SECRETS;
    else if (strcmp(path, "/system/logs") == 0)
        route = R_LOGS;
    if (route == R_NONE) {
        reply_text(req, 404, "404 page not found");
        return;
    }
    if (!authorized(api, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Basic realm=\"Restricted\"");
        reply_text(req, 401, "Unauthorized");
        return;
    }
    switch (route) {
    case R_FUNCTIONS:
        if (is(req, EVHTTP_REQ_GET))
            list_functions(api, req, query);
        else if (is(req, EVHTTP_REQ_POST))
            deploy(api, req, false);
        else if (is(req, EVHTTP_REQ_PUT))
            deploy(api, req, true);
        else if (is(req, EVHTTP_REQ_DELETE))
            remove_function(api, req, query);
        else
            reply_method_not_allowed(req);
        break;
    case R_FUNCTION:
        if (is(req, EVHTTP_REQ_GET))
            describe_function(api, req, seg, query);
        else
            reply_method_not_allowed(req);
        break;
    case R_SCALE:
        if (is(req, EVHTTP_REQ_POST))
            scale_function(api, req, seg, query);
        else
            reply_method_not_allowed(req);
        break;
    case R_INFO:
        if (is(req, EVHTTP_REQ_GET))
            info(req);
        else
            reply_method_not_allowed(req);
        break;
    case R_SECRETS:
        secrets(api, req, query);
        break;
    case R_LOGS:
        if (is(req, EVHTTP_REQ_GET))
            logs(api, req, query);
        else
            reply_method_not_allowed(req);
        break;
    case R_NONE:
        break;
    }
}

/* ---- public API --------------------------------------------------------- */

enum cmn_status pv_api_new(const struct pv_api_config *c, struct pv_api **out, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    struct pv_api *api = calloc(1, sizeof *api);
    if (api == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    api->c = *c;
    api->c.auth_user = api->c.auth_password = NULL;
    if (c->auth_user != NULL && c->auth_password != NULL) {
        api->expected_token = cmn_auth_token(c->auth_user, c->auth_password);
        if (api->expected_token == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
            goto out;
        }
    }
    api->http = evhttp_new(c->base);
    if (api->http == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "evhttp_new failed");
        goto out;
    }
    evhttp_set_allowed_methods(api->http, ALL_METHODS);
    evhttp_set_max_body_size(api->http, (ev_ssize_t)c->cfg->max_body_bytes);
    evhttp_set_max_headers_size(api->http, MAX_HEADERS_BYTES);
    evhttp_set_flags(api->http, EVHTTP_SERVER_LINGERING_CLOSE);
    if (c->cfg->read_timeout_ms > 0) {
        /* The idle timeout must not cut a proxied call short. */
        int64_t ms = c->cfg->read_timeout_ms > c->cfg->upstream_timeout_ms
                         ? c->cfg->read_timeout_ms
                         : c->cfg->upstream_timeout_ms + 1000;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
        evhttp_set_timeout_tv(api->http, &tv);
    }
    evhttp_set_gencb(api->http, handle, api);
    api->bound =
        evhttp_bind_socket_with_handle(api->http, c->cfg->bind_address, (ev_uint16_t)c->cfg->port);
    if (api->bound == NULL) {
        int e = errno;
        st = cmn_err_set(err, CMN_ERR_IO, e, "cannot listen on %s:%" PRId64 ": %s",
                         c->cfg->bind_address, c->cfg->port, strerror(e));
        goto out;
    }
    cmn_listener_guard(c->base, api->bound);
    *out = api;
    api = NULL;
out:
    pv_api_free(api);
    return st;
}

enum cmn_status pv_api_restore(struct pv_api *api, struct cmn_err *err)
{
    (void)err;
    for (size_t i = 0; i < pv_store_count(api->c.store); i++) {
        const struct pv_fn_rec *rec = pv_store_at(api->c.store, i);
        struct cmn_err e = {0};
        if (run_function(api, rec, &e) != CMN_OK) {
            LOG_ERROR(NULL, "restore %s.%s: %s", rec->name, rec->ns, e.msg);
            continue;
        }
        char created[40];
        cmn_time_format(rec->created_ms, created, sizeof created);
        LOG_INFO(NULL, "restored %s.%s: %" PRId64 " replica(s), created %s", rec->name, rec->ns,
                 rec->replicas, created);
    }
    return CMN_OK;
}

void pv_api_stop_listening(struct pv_api *api)
{
    if (api->bound != NULL) {
        cmn_listener_unguard(evhttp_bound_socket_get_listener(api->bound));
        evhttp_del_accept_socket(api->http, api->bound);
        api->bound = NULL;
    }
}

void pv_api_free(struct pv_api *api)
{
    if (api == NULL)
        return;
    if (api->bound != NULL)
        cmn_listener_unguard(evhttp_bound_socket_get_listener(api->bound));
    if (api->http != NULL)
        evhttp_free(api->http);
    cmn_auth_token_free(api->expected_token);
    free(api);
}
