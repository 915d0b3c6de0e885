/* HTTP side of the watchdog: evhttp set-up, /_/health, and one call per request
 * (environment in the classic watchdog's Http_* form, a child via proc.c, the
 * reply mapped from the child's outcome). A call lives from its request until
 * its reply is fully written or its client has gone, so draining can wait for
 * exactly that; each call has one owner (this module) and one free. */
#include "server.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include "cmn/duration.h"
#include "cmn/hangup.h"
#include "cmn/headers.h"
#include "cmn/listener.h"
#include "cmn/framing.h"
#include "cmn/log.h"
#include "envname.h"
#include "proc.h"

extern char **environ;

#define HEALTH_PATH "/_/health"
/* stderr kept per call for the 500 body and the log line. */
#define MAX_STDERR_BYTES (1024 * 1024)
/* stderr shown in a log line. */
#define LOG_EXCERPT_BYTES 512
#define MAX_HEADERS_BYTES (1024 * 1024)
#define RUN_METHODS                                                                                \
    (EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH)

struct wd_call {
    struct wd_call *prev, *next;
    struct wd_server *srv;
    struct evhttp_request *req;     /* NULL once the reply is written or the client left */
    struct evhttp_connection *conn; /* NULL once the client left */
    struct wd_proc *proc;           /* NULL once the child is done */
    struct cmn_hangup hangup;       /* watches the client socket while the child runs */
    char call_id[72];               /* X-Call-Id, for log lines; may be empty */
    char method[12];
    char path[256]; /* for the log line, truncated */
    int status;     /* HTTP status sent, 0 = none */
    size_t out_bytes;
    double duration_s;
};

struct wd_server {
    struct event_base *base;
    const struct wd_config *cfg;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct wd_call *calls;
    size_t inflight;
    bool draining;
    wd_server_drained_cb drained_cb;
    void *drained_arg;
};

/* ---- replies ------------------------------------------------------------ */

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *body = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    if (body != NULL)
        evbuffer_add(body, text, strlen(text));
    evhttp_send_reply(req, code, reason, body);
    if (body != NULL)
        evbuffer_free(body);
}

/* Copies at most LOG_EXCERPT_BYTES of `buf` into `dst` with control
 * characters turned into spaces, so one log line stays one line. */
static void excerpt(struct evbuffer *buf, char *dst, size_t size)
{
    size_t n = evbuffer_copyout(buf, dst, size - 1) < 0 ? 0 : evbuffer_get_length(buf);
    if (n > size - 1)
        n = size - 1;
    dst[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)dst[i] < 0x20 || dst[i] == 0x7f)
            dst[i] = ' ';
}

/* ---- call lifecycle ----------------------------------------------------- */

static void on_drained_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct wd_server *srv = arg;
    (void)fd;
    (void)what;
    if (srv->drained_cb != NULL) {
        wd_server_drained_cb cb = srv->drained_cb;
        srv->drained_cb = NULL;
        cb(srv->drained_arg);
    }
}

static void schedule_drained(struct wd_server *srv)
{
    struct timeval now = {0, 0};
    if (event_base_once(srv->base, -1, EV_TIMEOUT, on_drained_deferred, srv, &now) != 0)
        LOG_ERROR(NULL, "cannot schedule the end of the drain");
}

/* The one free of a call: unlink, log, free, and tell a drain when it is over. */
static void call_finish(struct wd_call *call)
{
    struct wd_server *srv = call->srv;
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        srv->calls = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    srv->inflight--;
    if (call->status != 0)
        LOG_DEBUG(call->call_id[0] ? call->call_id : NULL, "%s %s -> %d in %.6fs (%zu bytes)",
                  call->method, call->path, call->status, call->duration_s, call->out_bytes);
    else
        LOG_DEBUG(call->call_id[0] ? call->call_id : NULL,
                  "%s %s -> client gone after %.6fs, no reply", call->method, call->path,
                  call->duration_s);
    free(call);
    if (srv->draining && srv->inflight == 0)
        schedule_drained(srv);
}

/* libevent 2.1 does not read a connection while its request is answered: the
 * shared hang-up watch (cmn/hangup.h) notices a client that leaves during a
 * long call; freeing the connection then runs on_conn_close, which kills the
 * child. */
static void stop_gone_watch(struct wd_call *call)
{
    cmn_hangup_stop(&call->hangup);
}

static void start_gone_watch(struct wd_call *call)
{
    (void)cmn_hangup_watch(&call->hangup, call->srv->base, call->conn);
}

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    struct wd_call *call = arg;
    (void)conn;
    stop_gone_watch(call);
    call->req = NULL; /* evhttp frees it right after this callback */
    call->conn = NULL;
    if (call->proc != NULL) {
        LOG_INFO(call->call_id[0] ? call->call_id : NULL,
                 "%s %s: client closed the connection, killing fprocess", call->method, call->path);
        wd_proc_cancel(call->proc); /* on_proc_done finishes the call */
    } else {
        call_finish(call); /* the reply was being written */
    }
}

static void on_reply_complete(struct evhttp_request *req, void *arg)
{
    struct wd_call *call = arg;
    (void)req;
    if (call->conn != NULL)
        evhttp_connection_set_closecb(call->conn, NULL, NULL);
    call->req = NULL;
    call_finish(call);
}

static void set_error_body(struct evbuffer *body, struct evbuffer *output, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Error body: what the child printed (stderr, or combined output), then one
 * line saying what went wrong, like the classic watchdog's err.Error(). */
static void set_error_body(struct evbuffer *body, struct evbuffer *output, const char *fmt, ...)
{
    va_list ap;
    if (output != NULL)
        evbuffer_add_buffer(body, output);
    va_start(ap, fmt);
    evbuffer_add_vprintf(body, fmt, ap);
    va_end(ap);
}

static void on_proc_done(struct wd_proc *proc, const struct wd_proc_result *res, void *arg)
{
    struct wd_call *call = arg;
    const struct wd_config *cfg = call->srv->cfg;
    const char *id = call->call_id[0] ? call->call_id : NULL;
    struct evbuffer *body = NULL;
    char text[LOG_EXCERPT_BYTES + 1];

    call->proc = NULL;
    call->duration_s = res->duration_s;
    stop_gone_watch(call);
    if (call->req == NULL) /* client gone: nobody to answer */
        goto done;

    /* The reply is about to be queued; the call ends when it is written
     * (on_reply_complete) or when the client goes (on_conn_close). */
    evhttp_request_set_on_complete_cb(call->req, on_reply_complete, call);
    body = evbuffer_new();
    if (body == NULL) {
        call->status = 500;
        reply_text(call->req, 500, "Internal Server Error", "out of memory\n");
        goto sent;
    }
    /* What the child said on failure: its stderr, or everything when combined. */
    struct evbuffer *diag = cfg->combine_output ? res->out : res->err;
    int code = 500;
    const char *reason = "Internal Server Error";
    char dur[32];
    switch (res->outcome) {
    case WD_PROC_EXITED:
        if (res->exit_code == 0) {
            code = 200;
            reason = "OK";
            evbuffer_add_buffer(body, res->out);
            if (evbuffer_get_length(res->err) > 0) {
                excerpt(res->err, text, sizeof text);
                LOG_INFO(id, "fprocess stderr: %s", text);
            }
        } else {
            excerpt(diag, text, sizeof text);
            LOG_WARN(id, "%s %s: fprocess exit status %d after %.3fs: %s", call->method, call->path,
                     res->exit_code, res->duration_s, text);
            set_error_body(body, diag, "exit status %d\n", res->exit_code);
        }
        break;
    case WD_PROC_SIGNALED:
        excerpt(diag, text, sizeof text);
        LOG_WARN(id, "%s %s: fprocess killed by signal %d after %.3fs: %s", call->method,
                 call->path, res->signal, res->duration_s, text);
        set_error_body(body, diag, "killed by signal %d (%s)\n", res->signal,
                       strsignal(res->signal));
        break;
    case WD_PROC_TIMEOUT:
        code = 504;
        reason = "Gateway Timeout";
        cmn_duration_format(cfg->exec_timeout_ms, dur, sizeof dur);
        LOG_WARN(id, "%s %s: fprocess killed, exec_timeout %s exceeded", call->method, call->path,
                 dur);
        set_error_body(body, NULL, "fprocess killed: exec_timeout of %s exceeded\n", dur);
        break;
    case WD_PROC_TOO_LARGE:
        LOG_WARN(id, "%s %s: fprocess killed, output over max_output_bytes=%" PRId64, call->method,
                 call->path, cfg->max_output_bytes);
        set_error_body(body, NULL,
                       "fprocess killed: output exceeded max_output_bytes (%" PRId64 " bytes)\n",
                       cfg->max_output_bytes);
        break;
    case WD_PROC_CANCELLED:
        code = 503;
        reason = "Service Unavailable";
        set_error_body(body, NULL, "fprocess killed: the watchdog is shutting down\n");
        break;
    }

    struct evkeyvalq *out_h = evhttp_request_get_output_headers(call->req);
    const char *ctype = "text/plain; charset=utf-8";
    if (code == 200) {
        const char *req_ctype =
            evhttp_find_header(evhttp_request_get_input_headers(call->req), "Content-Type");
        ctype = cfg->content_type != NULL ? cfg->content_type
                : req_ctype != NULL       ? req_ctype
                                          : "text/plain";
    }
    evhttp_add_header(out_h, "Content-Type", ctype);
    char secs[64];
    snprintf(secs, sizeof secs, "%f", res->duration_s);
    evhttp_add_header(out_h, "X-Duration-Seconds", secs);

    call->status = code;
    call->out_bytes = evbuffer_get_length(body);
    evhttp_send_reply(call->req, code, reason, body);

sent:
    if (body != NULL)
        evbuffer_free(body);
    wd_proc_free(proc);
    return;

done:
    wd_proc_free(proc);
    call_finish(call);
}

/* ---- the child's environment -------------------------------------------- */

struct env_list {
    char **v;
    size_t n, cap;
};

static bool env_add(struct env_list *env, const char *name, const char *value)
{
    if (env->n + 1 >= env->cap)
        return false;
    size_t len = strlen(name) + 1 + strlen(value) + 1;
    char *kv = malloc(len);
    if (kv == NULL)
        return false;
    int w = snprintf(kv, len, "%s=%s", name, value);
    if (w < 0 || (size_t)w >= len) {
        free(kv);
        return false;
    }
    env->v[env->n++] = kv;
    env->v[env->n] = NULL;
    return true;
}

static void env_free(struct env_list *env)
{
    if (env->v == NULL)
        return;
    for (size_t i = 0; i < env->n; i++)
        free(env->v[i]);
    free(env->v);
    env->v = NULL;
}

static bool env_has(const struct env_list *env, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < env->n; i++)
        if (strncmp(env->v[i], name, len) == 0 && env->v[i][len] == '=')
            return true;
    return false;
}

/* Builds the child's environment: the watchdog's own (minus stale Http_*), then
 * Http_Method, Http_Path, Http_Query, Http_ContentType, Http_ContentLength,
 * Http_Content_Length and Http_<Header> per request header (first value wins;
 * Host and Transfer-Encoding are not headers in Go's r.Header either). */
static bool build_env(struct evhttp_request *req, size_t body_bytes, struct env_list *env)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evkeyval *kv;
    size_t count = 0;
    char *path = NULL;
    bool ok = false;

    for (char **e = environ; e != NULL && *e != NULL; e++)
        count++;
    for (kv = headers->tqh_first; kv != NULL; kv = kv->next.tqe_next)
        count++;
    env->cap = count + 16;
    env->n = 0;
    env->v = calloc(env->cap, sizeof *env->v);
    if (env->v == NULL)
        goto out;

    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "Http_", 5) == 0)
            continue;
        char *dup = strdup(*e);
        if (dup == NULL)
            goto out;
        env->v[env->n++] = dup;
    }

    const char *raw_path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    if (raw_path == NULL || raw_path[0] == '\0')
        raw_path = "/";
    path = evhttp_uridecode(raw_path, 0, NULL);
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    const char *ctype = evhttp_find_header(headers, "Content-Type");
    char len_text[32];
    snprintf(len_text, sizeof len_text, "%zu", body_bytes);

    if (!env_add(env, "Http_Method", cmn_http_method_name((int)evhttp_request_get_command(req))) ||
        !env_add(env, "Http_Path", path != NULL ? path : raw_path) ||
        (query != NULL && query[0] != '\0' && !env_add(env, "Http_Query", query)) ||
        (ctype != NULL && !env_add(env, "Http_ContentType", ctype)) ||
        !env_add(env, "Http_ContentLength", len_text) ||
        !env_add(env, "Http_Content_Length", len_text))
        goto out;

    const char *connection = evhttp_find_header(headers, "Connection");
    for (kv = headers->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        char name[256];
        if (!cmn_header_forwardable(CMN_HOP_TO_PROCESS, kv->key, connection))
            continue;
        if (!wd_header_env_name(kv->key, name, sizeof name) || env_has(env, name))
            continue;
        if (!env_add(env, name, kv->value))
            goto out;
    }
    ok = true;

out:
    free(path);
    return ok;
}

/* ---- request handling --------------------------------------------------- */

static void start_call(struct wd_server *srv, struct evhttp_request *req, const char *path)
{
    const struct wd_config *cfg = srv->cfg;
    struct env_list env = {0};
    struct cmn_err err = {0};
    struct wd_call *call = NULL;
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    const char *call_id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Call-Id");

    call = calloc(1, sizeof *call);
    if (call == NULL || !build_env(req, evbuffer_get_length(body), &env)) {
        LOG_ERROR(call_id, "out of memory preparing fprocess");
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        goto out;
    }
    call->srv = srv;
    call->req = req;
    call->conn = evhttp_request_get_connection(req);
    snprintf(call->call_id, sizeof call->call_id, "%s", call_id != NULL ? call_id : "");
    snprintf(call->method, sizeof call->method, "%s",
             cmn_http_method_name((int)evhttp_request_get_command(req)));
    snprintf(call->path, sizeof call->path, "%s", path);

    struct wd_proc_spec spec = {
        .command = cfg->fprocess,
        .envp = env.v,
        .stdin_body = body,
        .timeout_ms = cfg->exec_timeout_ms,
        .max_stdout_bytes = (size_t)cfg->max_output_bytes,
        .max_stderr_bytes = MAX_STDERR_BYTES,
        .combine_output = cfg->combine_output,
    };
    if (wd_proc_start(&spec, on_proc_done, call, &call->proc, &err) != CMN_OK) {
        LOG_ERROR(call_id, "cannot start fprocess: %s", err.msg);
        char text[320];
        snprintf(text, sizeof text, "cannot start fprocess: %s\n", err.msg);
        reply_text(req, 500, "Internal Server Error", text);
        goto out;
    }
    call->next = srv->calls;
    if (srv->calls != NULL)
        srv->calls->prev = call;
    srv->calls = call;
    srv->inflight++;
    if (call->conn != NULL) {
        evhttp_connection_set_closecb(call->conn, on_conn_close, call);
        start_gone_watch(call);
    }
    call = NULL;

out:
    free(call);
    env_free(&env);
}

static void handle_request(struct evhttp_request *req, void *arg)
{
    struct wd_server *srv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Call-Id");

    if (path == NULL || path[0] == '\0')
        path = "/";
    /* the project's one framing policy (cmn/framing.h); evhttp has read the
     * body already, but no function runs for an ambiguous request */
    const char *bad = cmn_framing_check(evhttp_request_get_input_headers(req));
    if (bad != NULL) {
        char text[160];
        snprintf(text, sizeof text, "malformed request: %s\n", bad);
        LOG_DEBUG(id, "%s %s -> 400 (%s)", cmn_http_method_name((int)cmd), path, bad);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_text(req, 400, "Bad Request", text);
        return;
    }
    if (strcmp(path, HEALTH_PATH) == 0) {
        if (srv->draining)
            reply_text(req, 503, "Service Unavailable", "shutting down\n");
        else
            reply_text(req, 200, "OK", "OK");
        return;
    }
    if ((cmd & RUN_METHODS) == 0) {
        LOG_DEBUG(id, "%s %s -> 405", cmn_http_method_name((int)cmd), path);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          "GET, POST, PUT, DELETE, PATCH");
        reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
        return;
    }
    if (srv->draining) {
        LOG_DEBUG(id, "%s %s -> 503 (draining)", cmn_http_method_name((int)cmd), path);
        reply_text(req, 503, "Service Unavailable", "the watchdog is shutting down\n");
        return;
    }
    if (srv->cfg->max_inflight > 0 && srv->inflight >= (size_t)srv->cfg->max_inflight) {
        char text[128];
        snprintf(text, sizeof text,
                 "Concurrent request limit exceeded. Max concurrent requests: %" PRId64 "\n",
                 srv->cfg->max_inflight);
        LOG_DEBUG(id, "%s %s -> 429", cmn_http_method_name((int)cmd), path);
        reply_text(req, 429, "Too Many Requests", text);
        return;
    }
    start_call(srv, req, path);
}

/* ---- public API --------------------------------------------------------- */

enum cmn_status wd_server_new(struct event_base *base, const struct wd_config *cfg,
                              struct wd_server **out, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    struct wd_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    srv->base = base;
    srv->cfg = cfg;
    srv->http = evhttp_new(base);
    if (srv->http == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "evhttp_new failed");
        goto out;
    }
    evhttp_set_allowed_methods(srv->http, RUN_METHODS | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)cfg->max_body_bytes);
    evhttp_set_max_headers_size(srv->http, MAX_HEADERS_BYTES);
    /* Read the whole oversized body before answering 413: a client still
     * sending would otherwise see a reset instead of the status. */
    evhttp_set_flags(srv->http, EVHTTP_SERVER_LINGERING_CLOSE);
    /* libevent 2.1 has one idle timeout per connection for reads and writes;
     * the larger of read_timeout and write_timeout is used. */
    int64_t idle_ms =
        cfg->read_timeout_ms > cfg->write_timeout_ms ? cfg->read_timeout_ms : cfg->write_timeout_ms;
    if (idle_ms > 0) {
        struct timeval tv = {(time_t)(idle_ms / 1000), (suseconds_t)((idle_ms % 1000) * 1000)};
        evhttp_set_timeout_tv(srv->http, &tv);
    }
    evhttp_set_gencb(srv->http, handle_request, srv);
    srv->bound =
        evhttp_bind_socket_with_handle(srv->http, cfg->bind_address, (ev_uint16_t)cfg->port);
    if (srv->bound == NULL) {
        int e = errno;
        st = cmn_err_set(err, CMN_ERR_IO, e, "cannot listen on %s:%" PRId64 ": %s",
                         cfg->bind_address, cfg->port, strerror(e));
        goto out;
    }
    cmn_listener_guard(base, srv->bound);
    *out = srv;
    srv = NULL;

out:
    wd_server_free(srv);
    return st;
}

void wd_server_drain(struct wd_server *srv, wd_server_drained_cb cb, void *arg)
{
    if (srv->draining)
        return;
    srv->draining = true;
    srv->drained_cb = cb;
    srv->drained_arg = arg;
    if (srv->bound != NULL) {
        evhttp_del_accept_socket(srv->http, srv->bound);
        srv->bound = NULL;
    }
    if (srv->inflight == 0)
        schedule_drained(srv);
}

void wd_server_kill_all(struct wd_server *srv)
{
    for (struct wd_call *c = srv->calls; c != NULL; c = c->next)
        if (c->proc != NULL)
            wd_proc_cancel(c->proc);
}

size_t wd_server_inflight(const struct wd_server *srv)
{
    return srv->inflight;
}

void wd_server_free(struct wd_server *srv)
{
    if (srv == NULL)
        return;
    while (srv->calls != NULL) {
        struct wd_call *c = srv->calls;
        srv->calls = c->next;
        stop_gone_watch(c);
        if (c->conn != NULL)
            evhttp_connection_set_closecb(c->conn, NULL, NULL);
        if (c->req != NULL && c->proc == NULL)
            evhttp_request_set_on_complete_cb(c->req, NULL, NULL);
        wd_proc_free(c->proc);
        free(c);
    }
    srv->inflight = 0;
    if (srv->http != NULL)
        evhttp_free(srv->http);
    free(srv);
}
