/* Per-request helpers used by every route: the request target split, the
 * client address, the two clocks, and gw_reply, the one place that sends a
 * reply (so draining can switch every response to "Connection: close"). */
#include "request.h"

#include <netinet/in.h>
#include <sys/queue.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string.h>
#include <strings.h>
#include <time.h>

#include <malloc.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cmn/headers.h"
#include "cmn/log.h"
#include "server.h"

#define REQ_CACHE_MAX 1024

static bool draining;

bool gw_target_split(const char *uri, struct gw_target *out)
{
    if (uri == NULL || uri[0] != '/')
        return false;
    const char *q = strchr(uri, '?');
    size_t len = q != NULL ? (size_t)(q - uri) : strlen(uri);
    if (len >= sizeof(out->path))
        return false;
    memcpy(out->path, uri, len);
    out->path[len] = '\0';
    out->query = q != NULL ? q + 1 : NULL;
    return true;
}

int64_t gw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t gw_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const char *gw_reason(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 508:
        return "Loop Detected";
    default:
        break;
    }
    if (code >= 200 && code < 300)
        return "OK";
    if (code >= 300 && code < 400)
        return "Redirect";
    if (code >= 400 && code < 500)
        return "Client Error";
    return "Server Error";
}

void gw_reply(struct evhttp_request *req, int code, const char *reason, struct evbuffer *body)
{
    if (draining)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    evhttp_send_reply(req, code, reason != NULL ? reason : gw_reason(code), body);
}

void gw_reply_text(struct evhttp_request *req, int code, const char *text)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *body = evhttp_request_get_output_buffer(req);
    if (text != NULL && text[0] != '\0') {
        evhttp_add_header(out, "Content-Type", "text/plain; charset=utf-8");
        /* A HEAD reply carries the headers only (RFC 9110 §9.3.2). */
        if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
            evbuffer_add(body, text, strlen(text));
    }
    gw_reply(req, code, NULL, NULL);
}

void gw_request_set_draining(void)
{
    draining = true;
}

bool gw_request_draining(void)
{
    return draining;
}

void gw_set_nodelay(int fd)
{
    if (fd < 0)
        return;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

size_t gw_fmt_i64(char *out, int64_t v)
{
    char tmp[GW_I64_TEXT_MAX];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

size_t gw_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

void gw_fn_label(const char *name, const char *ns, char *full, size_t full_size, char *out,
                 size_t size)
{
    static const char head[] = "function_name=\"";
    size_t nl = strlen(name), sl = strlen(ns);
    if (full != NULL) {
        if (nl + 1 + sl < full_size) {
            memcpy(full, name, nl);
            full[nl] = '.';
            memcpy(full + nl + 1, ns, sl + 1);
        } else {
            full[0] = '\0';
        }
    }
    size_t need = sizeof(head) - 1 + nl + 1 + sl + 1;
    if (need >= size) {
        out[0] = '\0';
        return;
    }
    char *p = out;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    memcpy(p, name, nl);
    p += nl;
    *p++ = '.';
    memcpy(p, ns, sl);
    p += sl;
    *p++ = '"';
    *p = '\0';
}

void gw_code_label(const char *fn_label, int code, char *out, size_t size)
{
    static const char mid[] = ",code=\"";
    char num[GW_I64_TEXT_MAX];
    size_t fl = strlen(fn_label), nl = gw_fmt_i64(num, code);
    size_t need = fl + sizeof(mid) - 1 + nl + 2;
    if (need > size) {
        out[0] = '\0';
        return;
    }
    char *p = out;
    memcpy(p, fn_label, fl);
    p += fl;
    memcpy(p, mid, sizeof(mid) - 1);
    p += sizeof(mid) - 1;
    memcpy(p, num, nl);
    p += nl;
    *p++ = '"';
    *p = '\0';
}

void gw_head_init(struct gw_head *b)
{
    b->p = b->inline_bytes;
    b->len = 0;
    b->cap = sizeof(b->inline_bytes);
    b->failed = false;
}

void gw_head_add(struct gw_head *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        char *np = b->p == b->inline_bytes ? malloc(cap) : realloc(b->p, cap);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        if (b->p == b->inline_bytes)
            memcpy(np, b->inline_bytes, b->len);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void gw_head_str(struct gw_head *b, const char *s)
{
    gw_head_add(b, s, strlen(s));
}

enum cmn_status gw_head_header(void *arg, const char *name, const char *value)
{
    struct gw_head *b = arg;
    gw_head_str(b, name);
    gw_head_add(b, ": ", 2);
    gw_head_str(b, value);
    gw_head_add(b, "\r\n", 2);
    return b->failed ? CMN_ERR_NOMEM : CMN_OK;
}

void gw_head_free(struct gw_head *b)
{
    if (b->p != b->inline_bytes)
        free(b->p);
    gw_head_init(b);
}

/* ---- the request owner -------------------------------------------------- */

static struct gw_req *live_head;
static size_t live_count;
static struct gw_req *cache_head;
static size_t cache_count;

int gw_hdr_add(struct evkeyvalq *q, const char *name, size_t name_len, const char *value,
               size_t value_len)
{
    struct evkeyval *kv = malloc(sizeof(*kv) + name_len + value_len + 2);
    if (kv == NULL)
        return -1;
    char *k = (char *)(kv + 1);
    memcpy(k, name, name_len);
    k[name_len] = '\0';
    char *v = k + name_len + 1;
    memcpy(v, value, value_len);
    v[value_len] = '\0';
    kv->key = k;
    kv->value = v;
    TAILQ_INSERT_TAIL(q, kv, next);
    return 0;
}

void gw_hdr_clear(struct evkeyvalq *q)
{
    struct evkeyval *kv;
    while ((kv = TAILQ_FIRST(q)) != NULL) {
        TAILQ_REMOVE(q, kv, next);
        free(kv);
    }
}

size_t gw_hdr_remove(struct evkeyvalq *q, const char *name)
{
    size_t n = 0;
    struct evkeyval *kv = TAILQ_FIRST(q);
    while (kv != NULL) {
        struct evkeyval *next = TAILQ_NEXT(kv, next);
        if (strcasecmp(kv->key, name) == 0) {
            TAILQ_REMOVE(q, kv, next);
            free(kv);
            n++;
        }
        kv = next;
    }
    return n;
}

void gw_req_header(struct gw_req *r, const char *name, const char *value)
{
    if (!r->replied)
        (void)gw_hdr_add(&r->out_headers, name, strlen(name), value, strlen(value));
}

static void live_remove(struct gw_req *r)
{
    if (r->held) {
        if (r->prev != NULL)
            r->prev->next = r->next;
        else
            live_head = r->next;
        if (r->next != NULL)
            r->next->prev = r->prev;
        live_count--;
        r->held = false;
    }
}

void gw_req_unhold(struct gw_req *r)
{
    live_remove(r);
    r->prev = r->next = NULL;
    r->hooks = NULL;
    r->state = NULL;
}

/* ---- request-body memory held at once ---------------------------------- */

static int64_t body_cap = -1; /* -1 = no cap */
static int64_t body_held;
static int64_t body_peak; /* since the last trim */

/* After a burst of large bodies, freed memory goes back to the system (the
 * body chains are many small allocations that free() alone keeps). */
#define TRIM_AFTER_BYTES (16LL * 1024 * 1024)

void gw_req_set_body_cap(int64_t cap)
{
    body_cap = cap;
}

bool gw_req_body_reserve(struct gw_req *r, int64_t bytes)
{
    if (bytes <= 0)
        return true;
    if (body_cap >= 0 && body_held + bytes > body_cap)
        return false;
    body_held += bytes;
    r->body_reserved += bytes;
    if (body_held > body_peak)
        body_peak = body_held;
    return true;
}

int64_t gw_req_body_held(void)
{
    return body_held;
}

/* Called once the body's buffers are freed. */
static void body_release(int64_t bytes)
{
    if (bytes == 0)
        return;
    body_held -= bytes;
    if (body_held == 0 && body_peak >= TRIM_AFTER_BYTES) {
        body_peak = 0;
        (void)malloc_trim(0);
    }
}

static void req_free(struct gw_req *r)
{
    int64_t reserved = r->body_reserved;
    r->body_reserved = 0;
    live_remove(r);
    gw_hdr_clear(&r->in_headers);
    gw_hdr_clear(&r->out_headers);
    /* Large buffers are not kept in the cache: memory returns after a burst. */
    bool big = evbuffer_get_length(r->in_body) > 65536 ||
               evbuffer_get_length(r->out_body) > 65536 || r->uri_cap > 8192;
    if (cache_count < REQ_CACHE_MAX && !big) {
        evbuffer_drain(r->in_body, evbuffer_get_length(r->in_body));
        evbuffer_drain(r->out_body, evbuffer_get_length(r->out_body));
        r->next = cache_head;
        cache_head = r;
        cache_count++;
    } else {
        evbuffer_free(r->in_body);
        evbuffer_free(r->out_body);
        free(r->uri);
        free(r);
    }
    body_release(reserved);
}

struct gw_req *gw_req_new(struct gw_conn *c)
{
    struct gw_req *r = cache_head;
    if (r != NULL) {
        cache_head = r->next;
        cache_count--;
    } else {
        r = malloc(sizeof(*r));
        if (r == NULL)
            return NULL;
        memset(r, 0, offsetof(struct gw_req, area));
        r->in_body = evbuffer_new();
        r->out_body = evbuffer_new();
        if (r->in_body == NULL || r->out_body == NULL) {
            if (r->in_body != NULL)
                evbuffer_free(r->in_body);
            if (r->out_body != NULL)
                evbuffer_free(r->out_body);
            free(r);
            return NULL;
        }
    }
    r->conn = c;
    r->prev = r->next = NULL;
    r->hooks = NULL;
    r->state = NULL;
    r->method = 0;
    r->held = r->replied = r->gone = false;
    r->resumed = false;
    r->body_reserved = 0;
    r->t0_ns = 0;
    if (r->uri != NULL)
        r->uri[0] = '\0';
    TAILQ_INIT(&r->in_headers);
    TAILQ_INIT(&r->out_headers);
    r->peer[0] = '\0';
    r->call_id[0] = '\0';
    r->start[0] = '\0';
    return r;
}

void gw_req_discard(struct gw_req *r)
{
    r->conn = NULL;
    req_free(r);
}

bool gw_req_set_ids(struct gw_req *r, bool strict, bool adopt_start)
{
    const char *id = evhttp_find_header(&r->in_headers, "X-Call-Id");
    if (id != NULL && cmn_callid_valid(id)) {
        gw_strlcpy(r->call_id, id, sizeof(r->call_id));
    } else {
        if (id != NULL && strict)
            return false;
        cmn_callid_new(r->call_id);
    }
    const char *start = adopt_start ? evhttp_find_header(&r->in_headers, "X-Start-Time") : NULL;
    if (start != NULL && strlen(start) < sizeof(r->start) &&
        cmn_header_value_safe(start, sizeof(r->start) - 1))
        gw_strlcpy(r->start, start, sizeof(r->start));
    else
        gw_fmt_i64(r->start, gw_now_ns());
    return true;
}

void gw_req_set_fresh_ids(struct gw_req *r)
{
    cmn_callid_new(r->call_id);
    gw_fmt_i64(r->start, gw_now_ns());
}

void gw_req_client_gone(struct gw_req *r)
{
    r->conn = NULL;
    r->gone = true;
    LOG_DEBUG(r->call_id[0] != '\0' ? r->call_id : NULL, "client went away before the reply");
    if (r->held) {
        if (!r->replied && r->hooks != NULL && r->hooks->gone != NULL)
            r->hooks->gone(r, r->state); /* may close r */
        return;
    }
    req_free(r); /* a route still running synchronously cannot be here */
}

void gw_req_hold(struct gw_req *r, const struct gw_req_hooks *hooks, void *state)
{
    r->hooks = hooks;
    r->state = state;
    if (!r->held) {
        r->held = true;
        r->prev = NULL;
        r->next = live_head;
        if (live_head != NULL)
            live_head->prev = r;
        live_head = r;
        live_count++;
    }
}

void gw_req_reply(struct gw_req *r, int code, const char *reason)
{
    if (r->replied) {
        LOG_DEBUG(r->call_id[0] != '\0' ? r->call_id : NULL, "second reply %d dropped", code);
        return;
    }
    r->replied = true;
    struct gw_conn *c = r->conn;
    r->conn = NULL;
    if (c != NULL) {
        if (r->call_id[0] != '\0') {
            if (evhttp_find_header(&r->out_headers, "X-Call-Id") == NULL)
                (void)gw_hdr_add(&r->out_headers, "X-Call-Id", 9, r->call_id, strlen(r->call_id));
            if (evhttp_find_header(&r->out_headers, "X-Start-Time") == NULL)
                (void)gw_hdr_add(&r->out_headers, "X-Start-Time", 12, r->start, strlen(r->start));
        }
        gw_conn_respond(c, r, code, reason);
    }
    if (!r->held)
        req_free(r);
}

void gw_req_reply_text(struct gw_req *r, int code, const char *text)
{
    if (r->conn != NULL && !r->replied && text != NULL && text[0] != '\0') {
        gw_req_header(r, "Content-Type", "text/plain; charset=utf-8");
        /* A HEAD reply carries the headers only (RFC 9110 §9.3.2). */
        if (r->method != EVHTTP_REQ_HEAD)
            evbuffer_add(r->out_body, text, strlen(text));
    }
    gw_req_reply(r, code, NULL);
}

void gw_req_close(struct gw_req *r)
{
    if (!r->replied && r->conn != NULL) {
        LOG_ERROR(r->call_id[0] != '\0' ? r->call_id : NULL,
                  "request closed without a reply: answering 500");
        bool held = r->held;
        r->held = true; /* the reply must not free: close does */
        gw_req_reply_text(r, 500, "internal error: no reply");
        r->held = held;
    }
    req_free(r);
}

size_t gw_req_live(void)
{
    return live_count;
}

void gw_req_abort_all(void)
{
    struct gw_req *r = live_head;
    while (r != NULL) {
        struct gw_req *next = r->next;
        if (!r->replied && r->hooks != NULL && r->hooks->abort != NULL)
            r->hooks->abort(r, r->state); /* may close r */
        r = next;
    }
}

static void free_one(struct gw_req *r)
{
    gw_hdr_clear(&r->in_headers);
    gw_hdr_clear(&r->out_headers);
    evbuffer_free(r->in_body);
    evbuffer_free(r->out_body);
    free(r->uri);
    free(r);
}

void gw_req_teardown(void)
{
    while (live_head != NULL) {
        struct gw_req *r = live_head;
        live_head = r->next;
        free_one(r);
    }
    live_count = 0;
    while (cache_head != NULL) {
        struct gw_req *next = cache_head->next;
        free_one(cache_head);
        cache_head = next;
    }
    cache_count = 0;
}
