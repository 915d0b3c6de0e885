/* Header lists: ordered (name, value) pairs, case-insensitive lookup, and the
 * hop-by-hop and reserved-name rules used by the gateway, codec and worker. */
#include "cmn/headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    static const char *const hop[] = {
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
        "TE",         "Trailer",    "Transfer-Encoding", "Upgrade",           "Host",
        "Content-Length",
    };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    return false;
}

bool cmn_header_is_reserved(const char *name)
{
    return strncasecmp(name, "Faas-", 5) == 0 || strncasecmp(name, "Nats-", 5) == 0;
}

bool cmn_header_value_safe(const char *s, size_t max)
{
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        if (i >= max || s[i] == '\r' || s[i] == '\n')
            return false;
    }
    return true;
}
