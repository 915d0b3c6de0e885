/* Per-request helpers used by every route: the request target split, the
 * client address, the two clocks, and gw_reply, the one place that sends a
 * reply (so draining can switch every response to "Connection: close"). */
#include "request.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

static bool draining;

bool gw_target_split(struct evhttp_request *req, struct gw_target *out)
{
    const char *uri = evhttp_request_get_uri(req);
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

void gw_client_ip(struct evhttp_request *req, char *out, size_t size)
{
    out[0] = '\0';
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon == NULL)
        return;
    char *address = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evcon, &address, &port);
    if (address == NULL)
        return;
    size_t n = strlen(address);
    if (n >= size)
        return;
    memcpy(out, address, n + 1);
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
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
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
