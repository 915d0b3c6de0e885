/* Header lists: ordered (name, value) pairs, case-insensitive lookup, and the
 * hop-by-hop and reserved-name rules used by the gateway, codec and worker. */
#include "cmn/headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

void cmn_headers_init(struct cmn_headers *h)
{
    h->items = NULL;
    h->count = 0;
    h->capacity = 0;
}

void cmn_headers_free(struct cmn_headers *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->count; i++) {
        free(h->items[i].name);
        free(h->items[i].value);
    }
    free(h->items);
    cmn_headers_init(h);
}

enum cmn_status cmn_headers_add(struct cmn_headers *h, const char *name, const char *value)
{
    if (h->count == h->capacity) {
        size_t cap = h->capacity ? h->capacity * 2 : 16;
        struct cmn_header *items = realloc(h->items, cap * sizeof(*items));
        if (items == NULL)
            return CMN_ERR_NOMEM;
        h->items = items;
        h->capacity = cap;
    }
    char *n = strdup(name);
    char *v = strdup(value ? value : "");
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return CMN_ERR_NOMEM;
    }
    h->items[h->count].name = n;
    h->items[h->count].value = v;
    h->count++;
    return CMN_OK;
}

enum cmn_status cmn_headers_set(struct cmn_headers *h, const char *name, const char *value)
{
    cmn_headers_remove(h, name);
    return cmn_headers_add(h, name, value);
}

const char *cmn_headers_get(const struct cmn_headers *h, const char *name)
{
    for (size_t i = 0; i < h->count; i++)
        if (strcasecmp(h->items[i].name, name) == 0)
            return h->items[i].value;
    return NULL;
}

void cmn_headers_remove(struct cmn_headers *h, const char *name)
{
    size_t w = 0;
    for (size_t r = 0; r < h->count; r++) {
        if (strcasecmp(h->items[r].name, name) == 0) {
            free(h->items[r].name);
            free(h->items[r].value);
            continue;
        }
        h->items[w++] = h->items[r];
    }
    h->count = w;
}

bool cmn_header_is_hop_by_hop(const char *name)
{
    /* Called for every header of every proxied request: dispatch on the
     * length first so most names cost one strlen and no strcasecmp. */
    switch (strlen(name)) {
    case 2:
        return strcasecmp(name, "TE") == 0;
    case 4:
        return strcasecmp(name, "Host") == 0;
    case 7:
        return strcasecmp(name, "Trailer") == 0 || strcasecmp(name, "Upgrade") == 0;
    case 10:
        return strcasecmp(name, "Connection") == 0 || strcasecmp(name, "Keep-Alive") == 0;
    case 14:
        return strcasecmp(name, "Content-Length") == 0;
    case 16:
        return strcasecmp(name, "Proxy-Connection") == 0;
    case 17:
        return strcasecmp(name, "Transfer-Encoding") == 0;
    case 18:
        return strcasecmp(name, "Proxy-Authenticate") == 0;
    case 19:
        return strcasecmp(name, "Proxy-Authorization") == 0;
    default:
        return false;
    }
}

bool cmn_header_is_reserved(const char *name)
{
    return strncasecmp(name, "Faas-", 5) == 0 || strncasecmp(name, "Nats-", 5) == 0;
}

bool cmn_header_value_safe(const char *s, size_t max)
{
    /* strcspn is vectorised; this runs for every header of every async call. */
    size_t n = strcspn(s, "\r\n");
    return s[n] == '\0' && n <= max;
}

bool cmn_header_name_valid(const char *name)
{
    size_t i = 0;
    for (; name[i] != '\0'; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        if (!ok || i >= 256)
            return false;
    }
    return i > 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool cmn_header_in_connection(const char *connection, const char *name)
{
    if (connection == NULL)
        return false;
    size_t nlen = strlen(name);
    const char *p = connection;
    while (*p != '\0') {
        while (is_ows(*p) || *p == ',')
            p++;
        const char *tok = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > tok && is_ows(end[-1]))
            end--;
        if ((size_t)(end - tok) == nlen && nlen > 0 && strncasecmp(tok, name, nlen) == 0)
            return true;
    }
    return false;
}

bool cmn_header_forwardable(enum cmn_hop hop, const char *name, const char *connection)
{
    if (cmn_header_is_hop_by_hop(name) || cmn_header_in_connection(connection, name))
        return false;
    switch (hop) {
    case CMN_HOP_TO_FUNCTION:
        return !cmn_header_is_reserved(name) && strcasecmp(name, "Expect") != 0 &&
               strcasecmp(name, "X-Call-Id") != 0 && strcasecmp(name, "X-Forwarded-For") != 0;
    case CMN_HOP_FROM_FUNCTION:
    case CMN_HOP_TO_PROCESS:
        return true;
    }
    return false;
}

enum cmn_status cmn_header_add_forwarded(const struct cmn_forwarded *f, cmn_header_sink sink,
                                         void *arg)
{
    enum cmn_status st = sink(arg, "X-Call-Id", f->call_id);
    if (st == CMN_OK && f->client_start == NULL && f->start != NULL)
        st = sink(arg, "X-Start-Time", f->start);
    if (st == CMN_OK) {
        const char *ip = f->client_ip != NULL && f->client_ip[0] != '\0' ? f->client_ip : NULL;
        if (ip != NULL && f->client_xff != NULL && f->client_xff[0] != '\0') {
            /* An IPv6 address is at most 45 bytes; a list beyond 4 KiB is
             * passed on without our hop rather than truncated. */
            char list[4096 + 64];
            size_t n = strlen(f->client_xff);
            if (n + 2 + strlen(ip) < sizeof(list)) {
                memcpy(list, f->client_xff, n);
                list[n] = ',';
                list[n + 1] = ' ';
                memcpy(list + n + 2, ip, strlen(ip) + 1);
                st = sink(arg, "X-Forwarded-For", list);
            } else {
                st = sink(arg, "X-Forwarded-For", f->client_xff);
            }
        } else if (ip != NULL) {
            st = sink(arg, "X-Forwarded-For", ip);
        } else if (f->client_xff != NULL) {
            st = sink(arg, "X-Forwarded-For", f->client_xff);
        }
    }
    if (st == CMN_OK && f->client_xfh == NULL && f->host != NULL)
        st = sink(arg, "X-Forwarded-Host", f->host);
    return st;
}

const char *cmn_http_method_name(int cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "UNKNOWN";
    }
}
