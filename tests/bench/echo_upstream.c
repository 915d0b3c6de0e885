/*
 * bench_echo_upstream: a minimal keep-alive HTTP function for benchmarks.
 *
 *   bench_echo_upstream [PORT]      (or env PORT / port; default 8081)
 *
 * Every request except the control paths below is answered 200 with the
 * request body echoed back and `Content-Type: application/octet-stream`.
 * Control paths (not counted):
 *   GET  /count   -> {"count":N,"first_ns":T0,"last_ns":T1}
 *                    T0/T1 are CLOCK_REALTIME ns of the first/last counted
 *                    request since start or the last reset.
 *   POST /reset   -> zeroes the counters, replies like /count (old values).
 * Single-threaded libevent evhttp; SIGTERM/SIGINT exit cleanly.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

struct counters {
    uint64_t count;
    int64_t first_ns;
    int64_t last_ns;
};

static struct counters g_counters;

static int64_t now_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

static int parse_port(const char *s, int *out)
{
    char *end = NULL;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

static void reply_counters(struct evhttp_request *req, const struct counters *c)
{
    struct evbuffer *out = evbuffer_new();

    if (out == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(
        out, "{\"count\":%" PRIu64 ",\"first_ns\":%" PRId64 ",\"last_ns\":%" PRId64 "}\n", c->count,
        c->first_ns, c->last_ns);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *in;
    struct evbuffer *out;
    int64_t now;

    (void)arg;
    if (uri != NULL && strncmp(uri, "/count", 6) == 0 && (uri[6] == '\0' || uri[6] == '?')) {
        reply_counters(req, &g_counters);
        return;
    }
    if (uri != NULL && strncmp(uri, "/reset", 6) == 0 && (uri[6] == '\0' || uri[6] == '?')) {
        struct counters old = g_counters;
        memset(&g_counters, 0, sizeof(g_counters));
        reply_counters(req, &old);
        return;
    }

    now = now_realtime_ns();
    if (g_counters.count == 0)
        g_counters.first_ns = now;
    g_counters.last_ns = now;
    g_counters.count++;

    in = evhttp_request_get_input_buffer(req);
    out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    if (in != NULL)
        evbuffer_add_buffer(out, in);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/octet-stream");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
    struct event_base *base = arg;

    (void)sig;
    (void)events;
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    const char *port_str = NULL;
    int port = 8081;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *sigterm_ev;
    struct event *sigint_ev;

    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: %s [PORT]   (or env PORT; default 8081)\n"
               "Echoes request bodies with 200; GET /count, POST /reset for counters.\n",
               argv[0]);
        return 0;
    }
    if (argc > 1)
        port_str = argv[1];
    else if (getenv("PORT") != NULL)
        port_str = getenv("PORT");
    else if (getenv("port") != NULL)
        port_str = getenv("port");
    if (port_str != NULL && parse_port(port_str, &port) != 0) {
        fprintf(stderr, "bench_echo_upstream: invalid port '%s'\n", port_str);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    if (base == NULL) {
        fprintf(stderr, "bench_echo_upstream: event_base_new failed\n");
        return 1;
    }
    http = evhttp_new(base);
    if (http == NULL) {
        fprintf(stderr, "bench_echo_upstream: evhttp_new failed\n");
        return 1;
    }
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(http, on_request, NULL);
    bound = evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)port);
    if (bound == NULL) {
        fprintf(stderr, "bench_echo_upstream: cannot bind 127.0.0.1:%d\n", port);
        return 1;
    }
    /* Disable Nagle (Linux: accepted sockets inherit it from the listener), as Go's
     * net/http does: a response written in several segments would otherwise wait
     * for the client's delayed ACK (~40 ms) on large bodies. */
    {
        int one = 1;
        if (setsockopt(evhttp_bound_socket_get_fd(bound), IPPROTO_TCP, TCP_NODELAY, &one,
                       sizeof(one)) != 0)
            fprintf(stderr, "bench_echo_upstream: warning: TCP_NODELAY failed\n");
    }
    sigterm_ev = evsignal_new(base, SIGTERM, on_signal, base);
    sigint_ev = evsignal_new(base, SIGINT, on_signal, base);
    if (sigterm_ev == NULL || sigint_ev == NULL || evsignal_add(sigterm_ev, NULL) != 0 ||
        evsignal_add(sigint_ev, NULL) != 0) {
        fprintf(stderr, "bench_echo_upstream: cannot install signal handlers\n");
        return 1;
    }
    printf("bench_echo_upstream listening on 127.0.0.1:%d\n", port);
    fflush(stdout);

    event_base_dispatch(base);

    printf("bench_echo_upstream exiting, served %" PRIu64 " counted requests\n", g_counters.count);
    event_free(sigterm_ev);
    event_free(sigint_ev);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
