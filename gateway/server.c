/* The public port's HTTP/1.1 server: http-parser callbacks fill one gw_req
 * per request; the reply is written with memcpy (no printf per header line).
 * A connection is in one of three states: reading a request, handling it (the
 * route owns the gw_req; the socket is still read so a hang-up is seen, but
 * nothing is parsed), writing the reply. */
#include "server.h"

#include <netinet/in.h>
#include <sys/queue.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <http_parser.h>

#include "cmn/framing.h"
#include "cmn/listener.h"
#include "cmn/log.h"
#include "request.h"

/* Pipelined bytes kept while a request is handled; beyond, reading pauses
 * (and a hang-up is then only seen when the reply is written). */
#define PENDING_INPUT_MAX (1024 * 1024)
#define URI_MAX (64 * 1024)
#define MAX_HEADERS 512

/* CS_LINGER: a refusal was sent while the client was still sending; the
 * write side is shut and what still arrives is read and dropped for a moment,
 * so the client reads the status instead of a reset (as nginx's lingering
 * close). */
enum conn_state { CS_READING, CS_HANDLING, CS_WRITING, CS_LINGER };

#define LINGER_MS 2000

struct gw_conn {
    struct gw_server *srv;
    struct gw_conn *prev, *next;
    struct bufferevent *bev;
    http_parser parser;
    enum conn_state state;
    struct gw_req *r; /* being parsed, or handled by a route */
    bool complete;    /* the parser finished a request */
    bool keep_alive;  /* the client allows another request on this connection */
    bool close_after; /* close once the reply is written */
    bool linger;      /* ...lingering first (a refusal mid-request) */
    bool in_message;  /* some bytes of a request were parsed */
    bool head_done;   /* headers complete: later fields are trailers, ignored */
    size_t header_count;
    int fail_code;              /* a refusal decided inside a parser callback */
    const char *fail_why;       /* its reason (static text), NULL = the code's standard text */
    struct cmn_frame_scan scan; /* the raw bytes of the request being read */
    bool want_continue;         /* "Expect: 100-continue": answer once the head is validated */
    /* the header being parsed: "name\0value" */
    char *hbuf;
    size_t hlen, hcap, name_len;
    enum { P_NONE, P_FIELD, P_VALUE } last;
    size_t uri_len;
    struct event written_ev;  /* the reply went out in one write: carry on next turn */
    struct event deadline_ev; /* head or body deadline (408) */
    bool deadline_armed;
    bool body_counted;  /* the Content-Length was counted up front (gw_req_body_reserve) */
    int64_t body_limit; /* of the request being read */
    int64_t seq;        /* accept order: lower = older */
    struct ip_slot *ip;
    char peer[GW_ADDR_MAX];
};

/* Open connections per client address (the eviction choice at the cap). */
struct ip_slot {
    struct ip_slot *next;
    size_t count;
    char addr[GW_ADDR_MAX];
};

#define IP_BUCKETS 1024

struct gw_server {
    struct gw_server_config config;
    struct evconnlistener *listener;
    struct gw_conn *conns;
    size_t conn_count;
    struct timeval idle_tv;
    int64_t next_seq;
    struct ip_slot *ips[IP_BUCKETS];
    struct gw_server_stats stats;
};

static void conn_free(struct gw_conn *c);
static void conn_feed(struct gw_conn *c);
static void after_reply(struct gw_conn *c);

/* Writes the output buffer to the socket now, the way nginx does: one send()
 * in the common case, and the write event only when the socket is full
 * (enabling it for every reply costs two epoll_ctl calls and a wake-up).
 * Returns true when everything was written. */
static bool send_now(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    evutil_socket_t fd = bufferevent_getfd(bev);
    /* A bufferevent keeps the front of its output frozen outside its own
     * write callback. */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out) > 0) {
        if (evbuffer_write(out, fd) <= 0)
            break; /* EAGAIN, or an error the read side reports */
    }
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) == 0)
        return true;
    bufferevent_enable(bev, EV_WRITE);
    return false;
}

/* ---- client addresses ----------------------------------------------------- */

static unsigned ip_hash(const char *addr)
{
    unsigned h = 2166136261u;
    for (const char *p = addr; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % IP_BUCKETS;
}

static struct ip_slot *ip_get(struct gw_server *s, const char *addr)
{
    unsigned b = ip_hash(addr);
    for (struct ip_slot *e = s->ips[b]; e != NULL; e = e->next)
        if (strcmp(e->addr, addr) == 0)
            return e;
    struct ip_slot *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    snprintf(e->addr, sizeof(e->addr), "%s", addr);
    e->next = s->ips[b];
    s->ips[b] = e;
    return e;
}

static void ip_put(struct gw_server *s, struct ip_slot *e)
{
    if (e == NULL || --e->count > 0)
        return;
    struct ip_slot **pp = &s->ips[ip_hash(e->addr)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->next;
    if (*pp == e)
        *pp = e->next;
    free(e);
}

/* ---- deadlines ------------------------------------------------------------------ */

static void arm_deadline(struct gw_conn *c, int64_t ms)
{
    if (ms <= 0) {
        event_del(&c->deadline_ev);
        c->deadline_armed = false;
        return;
    }
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(&c->deadline_ev, &tv);
    c->deadline_armed = true;
}

static void disarm_deadline(struct gw_conn *c)
{
    if (c->deadline_armed) {
        event_del(&c->deadline_ev);
        c->deadline_armed = false;
    }
}

/* ---- parsing ------------------------------------------------------------- */

static struct gw_conn *of(http_parser *p)
{
    return p->data;
}

static int refuse(struct gw_conn *c, int code)
{
    if (c->fail_code == 0)
        c->fail_code = code;
    return -1;
}

static bool hbuf_add(struct gw_conn *c, const char *at, size_t len)
{
    if (c->hlen + len + 1 > c->hcap) {
        size_t cap = c->hcap != 0 ? c->hcap : 256;
        while (cap < c->hlen + len + 1)
            cap *= 2;
        char *b = realloc(c->hbuf, cap);
        if (b == NULL)
            return false;
        c->hbuf = b;
        c->hcap = cap;
    }
    memcpy(c->hbuf + c->hlen, at, len);
    c->hlen += len;
    return true;
}

/* Stores the header collected in hbuf (trailing whitespace of the value
 * removed, as the field grammar has it). */
static int commit_header(struct gw_conn *c)
{
    size_t vlen = c->hlen - c->name_len;
    const char *v = c->hbuf + c->name_len;
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    /* Many tiny headers would cost far more memory than their bytes. */
    if (++c->header_count > MAX_HEADERS)
        return refuse(c, 431);
    if (gw_hdr_add(&c->r->in_headers, c->hbuf, c->name_len, v, vlen) != 0)
        return refuse(c, 503);
    c->hlen = 0;
    c->name_len = 0;
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct gw_conn *c = of(p);
    c->in_message = true;
    if (c->r == NULL) {
        c->r = gw_req_new(c);
        if (c->r == NULL)
            return refuse(c, 503);
        memcpy(c->r->peer, c->peer, sizeof(c->peer));
    }
    c->uri_len = 0;
    c->hlen = c->name_len = 0;
    c->last = P_NONE;
    c->head_done = false;
    c->header_count = 0;
    c->body_counted = false;
    c->want_continue = false;
    c->body_limit = c->srv->config.max_body_bytes;
    cmn_frame_scan_init(&c->scan);
    /* a later request on a kept-alive connection: its head's deadline starts
     * with its first byte (the first request's started at accept) */
    if (!c->deadline_armed)
        arm_deadline(c, c->srv->config.read_header_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct gw_conn *c = of(p);
    struct gw_req *r = c->r;
    if (c->uri_len + len + 1 > URI_MAX)
        return refuse(c, 414);
    if (c->uri_len + len + 1 > r->uri_cap) {
        size_t cap = r->uri_cap != 0 ? r->uri_cap : 256;
        while (cap < c->uri_len + len + 1)
            cap *= 2;
        char *u = realloc(r->uri, cap);
        if (u == NULL)
            return refuse(c, 503);
        r->uri = u;
        r->uri_cap = cap;
    }
    memcpy(r->uri + c->uri_len, at, len);
    c->uri_len += len;
    r->uri[c->uri_len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct gw_conn *c = of(p);
    if (c->head_done)
        return 0; /* a trailer of a chunked body: never a request header */
    if (c->last == P_VALUE && commit_header(c) != 0)
        return -1;
    c->last = P_FIELD;
    return hbuf_add(c, at, len) ? 0 : refuse(c, 503);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct gw_conn *c = of(p);
    if (c->head_done)
        return 0;
    if (c->last == P_FIELD) {
        c->name_len = c->hlen;
        c->last = P_VALUE;
    }
    return hbuf_add(c, at, len) ? 0 : refuse(c, 503);
}

static int method_of(unsigned m)
{
    switch (m) {
    case HTTP_GET:
        return EVHTTP_REQ_GET;
    case HTTP_POST:
        return EVHTTP_REQ_POST;
    case HTTP_HEAD:
        return EVHTTP_REQ_HEAD;
    case HTTP_PUT:
        return EVHTTP_REQ_PUT;
    case HTTP_DELETE:
        return EVHTTP_REQ_DELETE;
    case HTTP_OPTIONS:
        return EVHTTP_REQ_OPTIONS;
    case HTTP_PATCH:
        return EVHTTP_REQ_PATCH;
    default:
        return 0;
    }
}

static int on_headers_complete(http_parser *p)
{
    struct gw_conn *c = of(p);
    struct gw_req *r = c->r;
    if (c->last == P_FIELD) { /* a name without a value */
        c->name_len = c->hlen;
        c->last = P_VALUE;
    }
    if (c->last == P_VALUE && commit_header(c) != 0)
        return -1;
    c->last = P_NONE;
    c->head_done = true;
    if (c->uri_len == 0)
        return refuse(c, 400);
    r->method = method_of(p->method);
    if (r->method == 0)
        return refuse(c, 501);
    c->keep_alive = http_should_keep_alive(p) != 0;
    /* One framing policy for every route (cmn/framing.h): ambiguous lengths
     * and encodings are refused here, before routing. */
    const char *why = cmn_framing_check(&r->in_headers);
    if (why != NULL) {
        c->fail_why = why;
        return refuse(c, 400);
    }
    c->scan.chunked = (p->flags & F_CHUNKED) != 0;
    /* Refused before a byte of the body is read: over the route's limit, or
     * more body memory than the server may hold now. */
    const struct gw_server_config *cfg = &c->srv->config;
    if (cfg->body_limit != NULL) {
        int64_t limit = cfg->body_limit(cfg->arg, r->method, r->uri);
        if (limit >= 0 && limit < c->body_limit)
            c->body_limit = limit;
    }
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
    if (has_length && p->content_length > (uint64_t)c->body_limit)
        return refuse(c, 413);
    if (has_length && p->content_length > 0) {
        if (!gw_req_body_reserve(r, (int64_t)p->content_length)) {
            c->srv->stats.body_refused++;
            return refuse(c, 503);
        }
        c->body_counted = true;
    }
    if (chunked || (has_length && p->content_length > 0))
        arm_deadline(c, cfg->read_body_timeout_ms);
    else
        disarm_deadline(c);
    const char *expect = evhttp_find_header(&r->in_headers, "Expect");
    c->want_continue = expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
                       p->http_minor >= 1 &&
                       ((p->flags & F_CHUNKED) != 0 ||
                        ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > 0));
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct gw_conn *c = of(p);
    struct evbuffer *body = c->r->in_body;
    if ((int64_t)(evbuffer_get_length(body) + len) > c->body_limit)
        return refuse(c, 413);
    if (!c->body_counted && !gw_req_body_reserve(c->r, (int64_t)len)) {
        c->srv->stats.body_refused++;
        return refuse(c, 503);
    }
    return evbuffer_add(body, at, len) == 0 ? 0 : refuse(c, 503);
}

static int on_message_complete(http_parser *p)
{
    struct gw_conn *c = of(p);
    c->complete = true;
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- writing -------------------------------------------------------------- */

/* The Date header value, formatted once per second. */
static const char *http_date(void)
{
    static char text[40];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return text;
}

static void written_cb(struct bufferevent *bev, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

/* Writes status line, headers and body, then waits for the output to drain. */
static void write_response(struct gw_conn *c, int code, const char *reason,
                           struct evkeyvalq *headers, struct evbuffer *body, bool is_head)
{
    struct gw_head b;
    gw_head_init(&b);
    char num[GW_I64_TEXT_MAX];
    gw_fmt_i64(num, code);
    gw_head_add(&b, "HTTP/1.1 ", 9);
    gw_head_str(&b, num);
    gw_head_add(&b, " ", 1);
    gw_head_str(&b, reason != NULL ? reason : gw_reason(code));
    gw_head_add(&b, "\r\n", 2);
    bool has_length = false, has_date = false;
    if (headers != NULL) {
        for (struct evkeyval *h = headers->tqh_first; h != NULL; h = h->next.tqe_next) {
            if (strcasecmp(h->key, "Content-Length") == 0) {
                if (!is_head)
                    continue; /* recomputed from the body */
                has_length = true;
            } else if (strcasecmp(h->key, "Date") == 0) {
                has_date = true; /* the function's own */
            }
            (void)gw_head_header(&b, h->key, h->value);
        }
    }
    if (!has_date)
        (void)gw_head_header(&b, "Date", http_date());
    bool bodyless = code < 200 || code == 204 || code == 304;
    size_t body_len = body != NULL ? evbuffer_get_length(body) : 0;
    /* HEAD: only a length someone knows (the function's, for a GET). */
    if (!bodyless && !has_length && !is_head) {
        gw_fmt_i64(num, (int64_t)body_len);
        (void)gw_head_header(&b, "Content-Length", num);
    }
    if (c->close_after)
        (void)gw_head_header(&b, "Connection", "close");
    gw_head_add(&b, "\r\n", 2);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!b.failed)
        evbuffer_add(out, b.p, b.len);
    bool failed = b.failed;
    gw_head_free(&b);
    if (failed) {
        conn_free(c);
        return;
    }
    if (body_len > 0 && !is_head && !bodyless)
        evbuffer_add_buffer(out, body);
    c->state = CS_WRITING;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(c->bev, read_cb, written_cb, event_cb, c);
    if (send_now(c->bev))
        event_active(&c->written_ev, EV_TIMEOUT, 0); /* not from inside the route */
}

/* A refusal made by the server itself (no route saw the request). */
static void refuse_now(struct gw_conn *c, int code)
{
    const char *text;
    char buf[128];
    disarm_deadline(c);
    switch (code) {
    case 400:
        if (c->fail_why != NULL) {
            snprintf(buf, sizeof(buf), "malformed request: %s", c->fail_why);
            text = buf;
        } else {
            text = "malformed request";
        }
        break;
    case 408:
        text = "request not received in time";
        break;
    case 413:
        snprintf(buf, sizeof(buf), "request body too large: limit %lld bytes",
                 (long long)c->body_limit);
        text = buf;
        break;
    case 414:
        text = "request target too long";
        break;
    case 431:
        text = "request header fields too large";
        break;
    case 501:
        text = "method not supported";
        break;
    case 503:
        text = "too much request-body memory in use: try again shortly";
        break;
    default:
        text = "cannot take the request";
        break;
    }
    if (c->r != NULL) {
        gw_req_discard(c->r);
        c->r = NULL;
    }
    struct evkeyvalq h;
    TAILQ_INIT(&h);
    (void)gw_hdr_add(&h, "Content-Type", 12, "text/plain; charset=utf-8", 25);
    if (code == 503)
        (void)gw_hdr_add(&h, "Retry-After", 11, "1", 1);
    struct evbuffer *body = evbuffer_new();
    if (body != NULL)
        evbuffer_add(body, text, strlen(text));
    c->close_after = true;
    c->linger = c->in_message; /* the client may still be sending */
    write_response(c, code, NULL, &h, body, false);
    gw_hdr_clear(&h);
    if (body != NULL)
        evbuffer_free(body);
}

/* ---- the connection --------------------------------------------------------- */

static void conn_free(struct gw_conn *c)
{
    struct gw_server *s = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->conn_count--;
    event_del(&c->written_ev);
    event_del(&c->deadline_ev);
    ip_put(s, c->ip);
    struct gw_req *r = c->r;
    c->r = NULL;
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    free(c->hbuf);
    enum conn_state state = c->state;
    free(c);
    if (r != NULL) {
        if (state == CS_HANDLING)
            gw_req_client_gone(r); /* may run the route's gone hook */
        else
            gw_req_discard(r);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    if (c->state == CS_READING) {
        conn_feed(c);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->linger) { /* after a refusal: dropped */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    /* Handling or writing: keep what arrives (a pipelined request) for later. */
    if (evbuffer_get_length(in) > PENDING_INPUT_MAX)
        bufferevent_disable(bev, EV_READ);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct gw_conn *c = arg;
    if (c->state == CS_LINGER) { /* the client closed, or the moment passed */
        conn_free(c);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) != 0) {
        if (c->state == CS_READING && c->in_message) {
            refuse_now(c, 408);
            return;
        }
        /* Reading idles while a request is handled or its reply written:
         * only a stalled write, or an idle connection, ends it. */
        if (c->state == CS_READING || (what & BEV_EVENT_WRITING) != 0) {
            conn_free(c);
            return;
        }
        bufferevent_enable(c->bev, EV_READ);
        return;
    }
    if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) != 0) {
        if (c->state == CS_READING && (what & BEV_EVENT_EOF) != 0) {
            /* The end of the stream may complete a request (HTTP/1.0 style
             * bodies never apply to requests; this only finishes parsing). */
            conn_free(c);
            return;
        }
        conn_free(c); /* handling: the route learns it through hooks->gone */
    }
}

static void dispatch(struct gw_conn *c)
{
    struct gw_req *r = c->r;
    disarm_deadline(c);
    c->state = CS_HANDLING;
    c->complete = false;
    c->in_message = false;
    r->t0_ns = gw_mono_ns();
    if (gw_request_draining() || !c->keep_alive)
        c->close_after = true;
    /* Reading goes on so a hang-up is seen; the idle timeout stays armed
     * (set once per connection) and only re-enables reading while the route
     * works (event_cb), upstream_timeout bounds the call. */
    c->srv->config.on_request(r, c->srv->config.arg);
}

/* Parses buffered input until a request is complete (then hands it to the
 * route) or the input runs out. */
static void conn_feed(struct gw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    /* The first byte after an idle gap starts the head's clock, even when
     * it is one of the empty lines the parser skips before a request line
     * (a client sending CRLF every few seconds holds no connection). */
    if (c->state == CS_READING && !c->in_message && !c->deadline_armed &&
        evbuffer_get_length(in) > 0)
        arm_deadline(c, c->srv->config.read_header_timeout_ms);
    while (c->state == CS_READING && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t n = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            int code = c->fail_code;
            if (code == 0)
                code = e == HPE_HEADER_OVERFLOW ? 431 : 400;
            refuse_now(c, code);
            return;
        }
        /* what the parser took, checked where it is lenient (line ends,
         * folding, chunk lines); nothing is routed before this */
        const char *why = cmn_frame_scan_feed(&c->scan, v.iov_base, n);
        if (why != NULL) {
            c->fail_why = why;
            refuse_now(c, 400);
            return;
        }
        if (c->want_continue && c->scan.head_done) {
            c->want_continue = false;
            if (evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25) ==
                0)
                (void)send_now(c->bev);
        }
        evbuffer_drain(in, n);
        if (c->complete) {
            dispatch(c); /* may reply (and even free c) before returning */
            return;
        }
    }
}

/* The reply went out through the write event. */
static void written_cb(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0 || c->state != CS_WRITING)
        return;
    bufferevent_disable(bev, EV_WRITE);
    after_reply(c);
}

static void written_ev_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    if (c->state == CS_WRITING)
        after_reply(c);
}

/* The reply is written: close, or read the next request. */
static void after_reply(struct gw_conn *c)
{
    if (c->close_after && c->linger && c->state != CS_LINGER) {
        c->state = CS_LINGER;
        (void)shutdown(bufferevent_getfd(c->bev), SHUT_WR);
        struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
        bufferevent_set_timeouts(c->bev, &tv, NULL);
        bufferevent_enable(c->bev, EV_READ);
        return; /* event_cb frees at EOF, error or the timeout */
    }
    if (c->close_after) {
        conn_free(c);
        return;
    }
    c->state = CS_READING;
    c->fail_code = 0;
    c->fail_why = NULL;
    http_parser_pause(&c->parser, 0);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(c->bev, EV_READ);
    conn_feed(c);
}

void gw_conn_respond(struct gw_conn *c, struct gw_req *r, int code, const char *reason)
{
    if (c->r == r)
        c->r = NULL;
    if (gw_request_draining())
        c->close_after = true;
    write_response(c, code, reason, &r->out_headers, r->out_body, r->method == EVHTTP_REQ_HEAD);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    c->deadline_armed = false;
    if (c->state != CS_READING)
        return;
    c->srv->stats.timed_out++;
    if (!c->in_message) { /* connected and never sent a byte: nothing to answer */
        LOG_DEBUG(NULL, "client %s: no request within read_header_timeout: closed", c->peer);
        conn_free(c);
        return;
    }
    LOG_DEBUG(NULL, "client %s: request %s not received in time: 408", c->peer,
              c->head_done ? "body" : "head");
    refuse_now(c, 408);
}

/* At the cap: the connection to close for a new one, or NULL when every
 * connection has a request being handled or answered. */
static struct gw_conn *pick_victim(struct gw_server *s)
{
    struct gw_conn *best = NULL;
    for (struct gw_conn *c = s->conns; c != NULL; c = c->next) {
        if (c->state != CS_READING && c->state != CS_LINGER)
            continue;
        if (best == NULL) {
            best = c;
            continue;
        }
        size_t n = c->ip != NULL ? c->ip->count : 0, bn = best->ip != NULL ? best->ip->count : 0;
        if (n > bn || (n == bn && c->seq < best->seq))
            best = c;
    }
    return best;
}

/* A new connection nobody can take: a short 503, then closed. */
static void refuse_connection(struct gw_server *s, evutil_socket_t fd)
{
    static const char reply[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\n"
                                "Retry-After: 1\r\nConnection: close\r\nContent-Length: 32\r\n\r\n"
                                "too many connections: try again\n";
    s->stats.refused++;
    (void)send(fd, reply, sizeof(reply) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    evutil_closesocket(fd);
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)lev;
    (void)socklen;
    struct gw_server *s = arg;
    if (s->config.max_connections > 0 && s->conn_count >= s->config.max_connections) {
        struct gw_conn *victim = pick_victim(s);
        if (victim == NULL) {
            refuse_connection(s, fd);
            return;
        }
        s->stats.evicted++;
        LOG_DEBUG(NULL, "at max_connections: closing an idle or slow connection of %s",
                  victim->peer);
        conn_free(victim);
    }
    struct gw_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->bev = bufferevent_socket_new(s->config.base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (sa->sa_family == AF_INET)
        evutil_inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof(c->peer));
    else if (sa->sa_family == AF_INET6)
        evutil_inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer,
                         sizeof(c->peer));
    c->srv = s;
    c->state = CS_READING;
    c->seq = s->next_seq++;
    c->body_limit = s->config.max_body_bytes;
    c->ip = ip_get(s, c->peer);
    if (c->ip != NULL)
        c->ip->count++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->conn_count++;
    event_assign(&c->written_ev, s->config.base, -1, 0, written_ev_cb, c);
    evtimer_assign(&c->deadline_ev, s->config.base, deadline_cb, c);
    arm_deadline(c, s->config.read_header_timeout_ms);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_set_timeouts(c->bev, &s->idle_tv, &s->idle_tv);
    /* EV_WRITE (on by default in a new bufferevent) only when a write is
     * short: otherwise every reply adds and removes the write event. */
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_READ);
}

enum cmn_status gw_server_new(const struct gw_server_config *config, struct gw_server **out,
                              struct cmn_err *err)
{
    struct gw_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "server: out of memory");
    s->config = *config;
    s->idle_tv.tv_sec = (time_t)(config->idle_timeout_ms / 1000);
    s->idle_tv.tv_usec = (suseconds_t)(config->idle_timeout_ms % 1000) * 1000;
    /* The library's head limit is process-wide: the request limit. The
     * upstream client keeps its smaller one itself (upclient.h). */
    http_parser_set_max_header_size((uint32_t)config->max_header_bytes);
    *out = s;
    return CMN_OK;
}

enum cmn_status gw_server_listen(struct gw_server *s, int port, struct cmn_err *err)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_ANY);
    s->listener = evconnlistener_new_bind(s->config.base, accept_cb, s,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
                                          (struct sockaddr *)&sin, sizeof(sin));
    if (s->listener == NULL)
        return cmn_err_set(err, CMN_ERR_IO, 0, "cannot listen on port %d", port);
    (void)cmn_listener_guard_lev(s->config.base, s->listener);
    return CMN_OK;
}

void gw_server_stop_accepting(struct gw_server *s)
{
    if (s->listener != NULL) {
        cmn_listener_unguard(s->listener);
        evconnlistener_free(s->listener);
        s->listener = NULL;
    }
    /* Idle keep-alive connections have nothing to finish. */
    struct gw_conn *c = s->conns;
    while (c != NULL) {
        struct gw_conn *next = c->next;
        if (c->state == CS_READING && !c->in_message)
            conn_free(c);
        c = next;
    }
}

size_t gw_server_connections(const struct gw_server *s)
{
    return s->conn_count;
}

void gw_server_stats(const struct gw_server *s, struct gw_server_stats *out)
{
    *out = s->stats;
}

void gw_server_free(struct gw_server *s)
{
    if (s == NULL)
        return;
    if (s->listener != NULL) {
        cmn_listener_unguard(s->listener);
        evconnlistener_free(s->listener);
    }
    while (s->conns != NULL)
        conn_free(s->conns);
    for (int b = 0; b < IP_BUCKETS; b++) {
        while (s->ips[b] != NULL) {
            struct ip_slot *e = s->ips[b];
            s->ips[b] = e->next;
            free(e);
        }
    }
    free(s);
}
