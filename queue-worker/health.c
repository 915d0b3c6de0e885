/* Health and metrics HTTP server of the queue-worker: one evhttp on its own
 * event base and thread. Every request gets exactly one reply, synchronously;
 * the only shared state is an atomic health state and the (locked) metrics
 * registry. */
#include "health.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct qw_health {
    struct event_base *base;
    struct evhttp *http;
    struct cmn_metrics *metrics;
    const atomic_int *state;
    pthread_t thread;
    bool started;
};

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *type,
                       const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", type);
    if (buf && body)
        evbuffer_add(buf, body, len);
    evhttp_send_reply(req, code, reason, buf);
    if (buf)
        evbuffer_free(buf);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct qw_health *h = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    size_t path_len = strcspn(uri, "?");
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    if (path_len == 8 && strncmp(uri, "/healthz", 8) == 0 && get) {
        int st = atomic_load(h->state);
        if (st == QW_HEALTH_DEAD)
            reply_text(req, 503, "Service Unavailable", "text/plain", "NATS connection lost\n", 21);
        else
            reply_text(req, 200, "OK", "text/plain", "OK", 2);
        return;
    }
    if (path_len == 8 && strncmp(uri, "/metrics", 8) == 0 && get) {
        size_t len = 0;
        char *text = cmn_metrics_render(h->metrics, &len);
        if (!text) {
            reply_text(req, 500, "Internal Server Error", "text/plain", "out of memory\n", 14);
            return;
        }
        reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
        return;
    }
    if (!get && ((path_len == 8 && strncmp(uri, "/healthz", 8) == 0) ||
                 (path_len == 8 && strncmp(uri, "/metrics", 8) == 0))) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "text/plain", "method not allowed\n", 19);
        return;
    }
    reply_text(req, 404, "Not Found", "text/plain", "not found\n", 10);
}

static void *run(void *arg)
{
    struct qw_health *h = arg;
    event_base_dispatch(h->base);
    return NULL;
}

enum cmn_status qw_health_start(int port, struct cmn_metrics *metrics, const atomic_int *state,
                                struct qw_health **out, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    static bool threads_enabled;
    if (!threads_enabled) {
        /* event_base_loopbreak from the main thread needs libevent's locking */
        if (evthread_use_pthreads() != 0)
            return cmn_err_set(err, CMN_ERR_NOMEM, 0, "evthread_use_pthreads failed");
        threads_enabled = true;
    }
    struct qw_health *h = calloc(1, sizeof(*h));
    if (!h)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    h->metrics = metrics;
    h->state = state;
    h->base = event_base_new();
    h->http = h->base ? evhttp_new(h->base) : NULL;
    if (!h->http) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "libevent: cannot create the HTTP server");
        goto out;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_timeout(h->http, 10);
    evhttp_set_gencb(h->http, on_request, h);
    errno = 0;
    if (!evhttp_bind_socket_with_handle(h->http, "0.0.0.0", (ev_uint16_t)port)) {
        int e = errno;
        st = cmn_err_set(err, CMN_ERR_IO, e, "cannot listen on 0.0.0.0:%d: %s", port,
                         e ? strerror(e) : "bind failed");
        goto out;
    }
    int rc = pthread_create(&h->thread, NULL, run, h);
    if (rc != 0) {
        st = cmn_err_set(err, CMN_ERR_IO, rc, "pthread_create: %s", strerror(rc));
        goto out;
    }
    h->started = true;
    *out = h;
    return CMN_OK;
out:
    qw_health_free(h);
    return st;
}

void qw_health_free(struct qw_health *h)
{
    if (!h)
        return;
    if (h->started) {
        event_base_loopbreak(h->base);
        pthread_join(h->thread, NULL);
    }
    if (h->http)
        evhttp_free(h->http);
    if (h->base)
        event_base_free(h->base);
    free(h);
}
