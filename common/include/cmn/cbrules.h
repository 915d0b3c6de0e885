/* Callback destination rules (callback_allowlist): which receivers a
 * callback may be posted to. Entries, comma separated:
 *   host            a DNS name, any port ("receiver.example.com")
 *   host:port       that name on that port
 *   *.domain        any name below the domain ("*.example.com": not
 *                   "example.com" itself), any port
 *   address         an IPv4 or IPv6 address ("10.0.0.7", "::1"), any port
 *   [v6]:port, v4:port   that address on that port
 *   cidr            an address range ("10.0.0.0/8", "fd00::/8"), any port
 * An empty list allows every destination. Name entries allow a URL whose
 * host is that name (whatever it resolves to); address entries allow a
 * connection to such an address, whatever the URL spelled (a name, a
 * literal). Matching is case-insensitive for names.
 *
 * Pure functions on an immutable parsed list: any thread, never block. */
#ifndef CMN_CBRULES_H
#define CMN_CBRULES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cmn/status.h"

struct cmn_cbrules;

/* Parses `list` (NULL or "" = allow everything). `*out` is new
 * (cmn_cbrules_free). Errors: CMN_ERR_INVALID naming the bad entry,
 * CMN_ERR_NOMEM. */
enum cmn_status cmn_cbrules_parse(const char *list, struct cmn_cbrules **out, struct cmn_err *err);

void cmn_cbrules_free(struct cmn_cbrules *rules);

/* True when the list is empty (every destination allowed). */
bool cmn_cbrules_open(const struct cmn_cbrules *rules);

/* True when the list has address or CIDR entries. */
bool cmn_cbrules_has_addresses(const struct cmn_cbrules *rules);

enum cmn_cb_verdict {
    CMN_CB_ALLOWED,       /* allowed now */
    CMN_CB_DENIED,        /* no entry can allow it */
    CMN_CB_CHECK_ADDRESS, /* a name no name entry allows: only its resolved address can */
};

/* The check of a URL's host (as the URL spells it; an IPv6 literal with or
 * without brackets) and port: an address literal is decided by the address
 * entries, a name by the name entries, else CMN_CB_CHECK_ADDRESS when the
 * list has address entries. On CMN_CB_DENIED writes a reason into `why`. */
enum cmn_cb_verdict cmn_cbrules_check_host(const struct cmn_cbrules *rules, const char *host,
                                           int port, char *why, size_t size);

/* The check of the address a connection is about to be made to (AF_INET or
 * AF_INET6; an IPv4-mapped IPv6 address counts as IPv4). False with the
 * reason in `why` when no address entry allows it. */
bool cmn_cbrules_check_addr(const struct cmn_cbrules *rules, const struct sockaddr *sa, char *why,
                            size_t size);

#endif
