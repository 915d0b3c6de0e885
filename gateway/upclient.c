/* One upstream HTTP/1.1 connection: bufferevent for the socket, http-parser
 * for the response. The parser callbacks only record what they saw; the read
 * handler acts on it after the parser returns, and the done callback is the
 * last thing it does, so the owner may free the connection there. */
#include "upclient.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <http_parser.h>

enum conn_state { C_IDLE, C_BUSY, C_CLOSED };

struct hdr_ref {
    size_t name, value; /* offsets into scratch; both NUL-terminated */
};

struct gw_upconn {
    struct event_base *base;
    struct bufferevent *bev; /* NULL once closed */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    enum conn_state state;
    bool connected, served_one;
    bool reused; /* the request in flight went on a connection that had served one */
    http_parser parser;
    /* the request in flight */
    const struct gw_up_callbacks *cb;
    void *arg;
    struct evbuffer *body_out;
    int64_t max_body;
    int64_t body_len;
    bool is_head, got_bytes, head_done, complete, too_large, bad;
    /* response head being collected */
    char *scratch;
    size_t scratch_len, scratch_cap;
    struct hdr_ref *hdrs;
    size_t hdr_count, hdr_cap;
    enum { IN_NONE, IN_REASON, IN_FIELD, IN_VALUE } last; /* the last head callback */
    size_t reason; /* offset of the reason phrase in scratch */
    bool have_reason;
};

const char *gw_up_result_text(enum gw_up_result r)
{
    switch (r) {
    case GW_UP_OK:
        return "ok";
    case GW_UP_CONNECT_FAILED:
        return "connection failed";
    case GW_UP_CLOSED_EARLY:
        return "connection closed";
    case GW_UP_CLOSED:
        return "connection closed during the response";
    case GW_UP_TOO_LARGE:
        return "response too large";
    case GW_UP_BAD_RESPONSE:
        return "invalid response";
    }
    return "error";
}

/* ---- collecting the head ------------------------------------------------ */

static bool scratch_add(struct gw_upconn *c, const char *at, size_t len)
{
    if (c->scratch_len + len + 1 > GW_UP_MAX_HEAD_BYTES + 1)
        return false;
    if (c->scratch_len + len + 1 > c->scratch_cap) {
        size_t cap = c->scratch_cap != 0 ? c->scratch_cap : 1024;
        while (cap < c->scratch_len + len + 1)
            cap *= 2;
        char *s = realloc(c->scratch, cap);
        if (s == NULL)
            return false;
        c->scratch = s;
        c->scratch_cap = cap;
    }
    memcpy(c->scratch + c->scratch_len, at, len);
    c->scratch_len += len;
    return true;
}

/* Ends the string being collected with a NUL. */
static bool scratch_end(struct gw_upconn *c)
{
    if (!scratch_add(c, "", 0))
        return false;
    c->scratch[c->scratch_len++] = '\0';
    return true;
}

static struct gw_upconn *of(http_parser *p)
{
    return p->data;
}

static int overflow(struct gw_upconn *c)
{
    c->too_large = true;
    return -1;
}

static int on_status(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = of(p);
    if (c->last != IN_REASON) {
        c->last = IN_REASON;
        c->reason = c->scratch_len;
        c->have_reason = true;
    }
    return scratch_add(c, at, len) ? 0 : overflow(c);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = of(p);
    if (c->last != IN_FIELD) {
        /* a new field: close the reason phrase or the previous value */
        if (c->last != IN_NONE && !scratch_end(c))
            return overflow(c);
        if (c->hdr_count == c->hdr_cap) {
            size_t cap = c->hdr_cap != 0 ? c->hdr_cap * 2 : 16;
            struct hdr_ref *h = realloc(c->hdrs, cap * sizeof(*h));
            if (h == NULL)
                return overflow(c);
            c->hdrs = h;
            c->hdr_cap = cap;
        }
        c->hdrs[c->hdr_count].name = c->scratch_len;
        c->hdrs[c->hdr_count].value = c->scratch_len; /* set on the value */
        c->hdr_count++;
        c->last = IN_FIELD;
    }
    return scratch_add(c, at, len) ? 0 : overflow(c);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = of(p);
    if (c->hdr_count == 0)
        return 0;
    if (c->last != IN_VALUE) {
        if (!scratch_end(c)) /* close the name */
            return overflow(c);
        c->hdrs[c->hdr_count - 1].value = c->scratch_len;
        c->last = IN_VALUE;
    }
    return scratch_add(c, at, len) ? 0 : overflow(c);
}

static int on_headers_complete(http_parser *p)
{
    struct gw_upconn *c = of(p);
    if (c->last == IN_FIELD) { /* a name without a value: the value is "" */
        if (!scratch_end(c))
            return overflow(c);
        c->hdrs[c->hdr_count - 1].value = c->scratch_len;
    }
    if (c->last != IN_NONE && !scratch_end(c))
        return overflow(c);
    int status = p->status_code;
    if (status < 200 || status > 599) {
        /* A 1xx (we never send Expect) or out-of-range status is not a final
         * answer this proxy can relay. */
        c->bad = true;
        return -1;
    }
    /* The header array the owner sees: pointers into scratch, which does not
     * move any more for this response. */
    struct gw_up_header small[32];
    struct gw_up_header *list = small;
    if (c->hdr_count > 32) {
        list = malloc(c->hdr_count * sizeof(*list));
        if (list == NULL)
            return overflow(c);
    }
    for (size_t i = 0; i < c->hdr_count; i++) {
        list[i].name = c->scratch + c->hdrs[i].name;
        list[i].value = c->scratch + c->hdrs[i].value;
    }
    const char *reason = c->have_reason ? c->scratch + c->reason : "";
    c->head_done = true;
    c->cb->head(c->arg, status, reason, list, c->hdr_count);
    if (list != small)
        free(list);
    /* 1: no body follows (the answer to a HEAD request). */
    /* The answer to a HEAD request, a 204 and a 304 have no body, whatever
     * Content-Length says (RFC 9110 §6.4.1). */
    return c->is_head || status == 204 || status == 304 ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = of(p);
    if (c->body_len + (int64_t)len > c->max_body) {
        c->too_large = true;
        return -1;
    }
    c->body_len += (int64_t)len;
    return evbuffer_add(c->body_out, at, len) == 0 ? 0 : -1;
}

static int on_message_complete(http_parser *p)
{
    struct gw_upconn *c = of(p);
    c->complete = true;
    /* Stop at the end of this response: anything after it is not ours. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the connection ------------------------------------------------------ */

static void close_bev(struct gw_upconn *c)
{
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->state = C_CLOSED;
}

/* The request ended: the last thing any handler does (the owner may free c). */
static void finish(struct gw_upconn *c, enum gw_up_result result, bool keep)
{
    const struct gw_up_callbacks *cb = c->cb;
    void *arg = c->arg;
    c->cb = NULL;
    c->arg = NULL;
    c->body_out = NULL;
    c->served_one = true;
    if (keep && c->bev != NULL) {
        c->state = C_IDLE;
    } else {
        close_bev(c);
    }
    cb->done(arg, result);
}

static enum gw_up_result failure(const struct gw_upconn *c)
{
    if (c->too_large)
        return GW_UP_TOO_LARGE;
    if (c->bad)
        return GW_UP_BAD_RESPONSE;
    return GW_UP_BAD_RESPONSE;
}

/* Parses what arrived. Returns true when the request finished (then `c` may
 * be gone: the caller returns at once). */
static bool feed(struct gw_upconn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (evbuffer_get_length(in) > 0 && !c->complete) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        c->got_bytes = true;
        size_t n = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            if (e == HPE_HEADER_OVERFLOW)
                c->too_large = true;
            finish(c, failure(c), false);
            return true;
        }
        evbuffer_drain(in, n);
    }
    if (c->complete) {
        /* Reusable only when the function keeps it alive and sent nothing
         * beyond this response. */
        bool keep = http_should_keep_alive(&c->parser) && evbuffer_get_length(in) == 0 &&
                    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
        finish(c, GW_UP_OK, keep);
        return true;
    }
    return false;
}

static void idle_read_cb(struct bufferevent *bev, void *arg);
static void idle_event_cb(struct bufferevent *bev, short what, void *arg);

static void busy_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct gw_upconn *c = arg;
    if (c->state != C_BUSY) {
        idle_read_cb(bev, arg);
        return;
    }
    (void)feed(c);
}

/* The request is out: no write event until the next short write. */
static void busy_write_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE);
}

static void busy_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct gw_upconn *c = arg;
    if (c->state != C_BUSY) {
        idle_event_cb(bev, what, arg);
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        int one = 1;
        (void)setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (!c->connected) {
        finish(c, GW_UP_CONNECT_FAILED, false);
        return;
    }
    /* Whatever is still buffered comes first, then the end of the stream:
     * a body delimited by the close completes here. */
    if (feed(c))
        return;
    (void)http_parser_execute(&c->parser, &settings, NULL, 0);
    if (c->complete) {
        finish(c, GW_UP_OK, false);
        return;
    }
    if (c->too_large || c->bad) {
        finish(c, failure(c), false);
        return;
    }
    finish(c, c->got_bytes ? GW_UP_CLOSED : GW_UP_CLOSED_EARLY, false);
}

/* An idle connection: the function closing it, or sending anything at all,
 * ends it (nothing is owed to anyone). */
static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    close_bev(arg);
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        close_bev(arg);
}

struct gw_upconn *gw_upconn_new(struct event_base *base, const struct sockaddr *addr,
                                socklen_t addr_len)
{
    if (addr_len > sizeof(struct sockaddr_storage))
        return NULL;
    struct gw_upconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    memcpy(&c->addr, addr, addr_len);
    c->addr_len = addr_len;
    c->state = C_IDLE;
    return c;
}

int gw_upconn_request(struct gw_upconn *c, const char *head, size_t head_len, struct evbuffer *body,
                      struct evbuffer *body_out, int64_t max_body_bytes, bool is_head,
                      const struct gw_up_callbacks *cb, void *arg)
{
    if (c->state != C_IDLE || (c->served_one && c->bev == NULL))
        return -1;
    bool fresh = c->bev == NULL;
    if (fresh) {
        c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL)
            return -1;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_add(out, head, head_len) != 0 || (body != NULL && evbuffer_get_length(body) > 0 &&
                                                   evbuffer_add_buffer_reference(out, body) != 0)) {
        close_bev(c);
        return -1;
    }
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->cb = cb;
    c->arg = arg;
    c->body_out = body_out;
    c->max_body = max_body_bytes;
    c->body_len = 0;
    c->is_head = is_head;
    c->got_bytes = c->head_done = c->complete = c->too_large = c->bad = false;
    c->scratch_len = 0;
    c->hdr_count = 0;
    c->last = IN_NONE;
    c->have_reason = false;
    c->reason = 0;
    c->reused = c->served_one;
    c->state = C_BUSY;
    bufferevent_setcb(c->bev, busy_read_cb, busy_write_cb, busy_event_cb, c);
    /* A kept-alive connection writes the request at once (one send(), no
     * write event); a new one lets the bufferevent write it once connected. */
    if (!fresh)
        bufferevent_disable(c->bev, EV_WRITE); /* on by default in a bufferevent */
    if (bufferevent_enable(c->bev, fresh ? EV_READ | EV_WRITE : EV_READ) != 0) {
        close_bev(c);
        return -1;
    }
    if (!fresh) {
        struct evbuffer *o = bufferevent_get_output(c->bev);
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        evbuffer_unfreeze(o, 1); /* frozen outside the bufferevent's own callbacks */
        while (evbuffer_get_length(o) > 0 && evbuffer_write(o, fd) > 0) {
        }
        evbuffer_freeze(o, 1);
        if (evbuffer_get_length(o) > 0)
            bufferevent_enable(c->bev, EV_WRITE);
    }
    if (fresh) {
        c->connected = false;
        if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&c->addr, (int)c->addr_len) !=
            0) {
            /* Refused at once (e.g. no route): -1, no callback. */
            close_bev(c);
            c->state = C_IDLE;
            c->served_one = false;
            return -1;
        }
    }
    return 0;
}

bool gw_upconn_usable(const struct gw_upconn *c)
{
    return c->state == C_IDLE && c->bev != NULL;
}

bool gw_upconn_reused(const struct gw_upconn *c)
{
    return c->reused;
}

void gw_upconn_free(struct gw_upconn *c)
{
    if (c == NULL)
        return;
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    free(c->scratch);
    free(c->hdrs);
    free(c);
}
