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

/* The request-line name of `cmd` (an enum evhttp_cmd_type value): "GET",
 * "POST", ...; "UNKNOWN" for anything else. Static string; any thread. */
const char *cmn_http_method_name(int cmd);

/* ---- the forwarding policy -------------------------------------------------
 * One rule, used by the gateway's proxy and async route, the codec, the
 * worker's callback and the watchdog, for which header of one message may be
 * copied onto the next hop. */

/* Receives one header (`name` and `value` borrowed for the call); returns
 * CMN_OK or an error (e.g. CMN_ERR_NOMEM) that stops the caller. */
typedef enum cmn_status (*cmn_header_sink)(void *arg, const char *name, const char *value);

enum cmn_hop {
    /* A client's request headers on their way to a function (sync proxy,
     * queued call). Also drops Faas-/Nats- (reserved), Expect (answered by
     * the gateway), X-Call-Id and X-Forwarded-For (rebuilt by
     * cmn_header_add_forwarded). */
    CMN_HOP_TO_FUNCTION,
    /* A function's response headers on their way to the client or into a
     * callback. */
    CMN_HOP_FROM_FUNCTION,
    /* A request's headers turned into a process's environment (watchdog):
     * only the hop-by-hop rule. */
    CMN_HOP_TO_PROCESS,
};

/* True when `name` is one of the comma-separated tokens of the Connection
 * field value `connection` (case-insensitive, optional whitespace; NULL = no
 * Connection header). RFC 9110 §7.6.1: such headers belong to this hop only. */
bool cmn_header_in_connection(const char *connection, const char *name);

/* True when the header `name` may be copied onto the next hop of kind `hop`:
 * not hop-by-hop (cmn_header_is_hop_by_hop), not named in `connection` (the
 * message's own Connection value, NULL if none), and not dropped by the
 * hop's own rule (see enum cmn_hop). Pure, any thread, never blocks. */
bool cmn_header_forwardable(enum cmn_hop hop, const char *name, const char *connection);

/* What the gateway adds to a request it hands to a function. Strings are
 * borrowed; NULL means absent. */
struct cmn_forwarded {
    const char *call_id;      /* X-Call-Id: always added (must not be NULL) */
    const char *start;        /* X-Start-Time, added when client_start is NULL */
    const char *client_start; /* the client's X-Start-Time (it was forwarded as is) */
    const char *client_ip;    /* appended to the client's X-Forwarded-For */
    const char *client_xff;   /* the client's X-Forwarded-For */
    const char *host;         /* the client's Host: X-Forwarded-Host when client_xfh is NULL */
    const char *client_xfh;   /* the client's X-Forwarded-Host (it was forwarded as is) */
};

/* Hands the id and X-Forwarded-* headers of `f` to `sink`: X-Call-Id,
 * X-Start-Time (unless the client sent one), X-Forwarded-For ("<client's
 * list>, <client_ip>", or the client's list alone when the address is
 * unknown), X-Forwarded-Host (unless the client sent one). Returns CMN_OK or
 * the sink's error. Any thread, never blocks. */
enum cmn_status cmn_header_add_forwarded(const struct cmn_forwarded *f, cmn_header_sink sink,
                                         void *arg);

#endif
