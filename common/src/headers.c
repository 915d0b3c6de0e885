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
