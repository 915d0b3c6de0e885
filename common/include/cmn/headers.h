/* An ordered list of HTTP/NATS header (name, value) pairs with case-insensitive
 * lookup, plus the hop-by-hop rule (RFC 9110 §7.6.1; the same list OpenFaaS's
 * forwarding proxy strips). Values are copied in; the list owns them. */
#ifndef CMN_HEADERS_H
#define CMN_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include "cmn/status.h"

struct cmn_header {
    char *name;
    char *value;
};

struct cmn_headers {
    struct cmn_header *items;
    size_t count;
    size_t capacity;
};

/* Initialises an empty list (no allocation). */
void cmn_headers_init(struct cmn_headers *h);

/* Frees every pair and the array; leaves an empty list. NULL allowed. */
void cmn_headers_free(struct cmn_headers *h);

/* Appends a copy of (name, value). Returns CMN_OK or CMN_ERR_NOMEM. */
enum cmn_status cmn_headers_add(struct cmn_headers *h, const char *name, const char *value);

/* Replaces every value of `name` by one copy of `value` (adds when absent). */
enum cmn_status cmn_headers_set(struct cmn_headers *h, const char *name, const char *value);

/* First value of `name` (case-insensitive), borrowed from the list, or NULL. */
const char *cmn_headers_get(const struct cmn_headers *h, const char *name);

/* Removes every pair named `name`. */
void cmn_headers_remove(struct cmn_headers *h, const char *name);

/* True for Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate,
 * Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade, and also Host
 * and Content-Length, which every hop recomputes. */
bool cmn_header_is_hop_by_hop(const char *name);

/* True when `name` starts with "Faas-" or "Nats-" (case-insensitive): metadata
 * a client may never set (DESIGN.md §3). */
bool cmn_header_is_reserved(const char *name);

/* True when `name` is a non-empty HTTP field name: an RFC 9110 token
 * (letters, digits and !#$%&'*+-.^_`|~), at most 256 bytes. Anything else
 * could split or merge header lines on the next hop. */
bool cmn_header_name_valid(const char *name);

/* True when `s` holds no CR, LF or NUL and is at most `max` bytes: safe to put
 * in an HTTP or NATS header. */
bool cmn_header_value_safe(const char *s, size_t max);

#endif
