/* Checks of URLs that come from clients. Pure, any thread, never blocks. */
#ifndef CMN_URL_H
#define CMN_URL_H

#include <stdbool.h>
#include <stddef.h>

/* Longest X-Callback-Url accepted, bytes. */
#define CMN_CALLBACK_URL_MAX 4096

/* True when `url` (NUL-terminated) is usable as X-Callback-Url: an absolute
 * http or https URL, parsed by libevent's strict URI parser, no control
 * characters, at most CMN_CALLBACK_URL_MAX bytes, whose host is a plain DNS
 * name (letters, digits, '-', '_'; labels of 1..63; not ending in a numeric
 * label), a dotted-quad IPv4 address (four decimal parts, no leading zeros)
 * or a bracketed IPv6 literal, and whose port, if given, is 1..65535 (a bare
 * integer, hex or octal IPv4 spelling, a percent-encoded host and port 0 are
 * refused). Otherwise writes the reason ("invalid X-Callback-Url: ...") into
 * `why` (`size` bytes). */
bool cmn_callback_url_check(const char *url, char *why, size_t size);

/* The host (as spelled, IPv6 literals without brackets) and port (the
 * scheme's default when absent) of a URL that passed cmn_callback_url_check.
 * False when it cannot be parsed or the host does not fit `size`. */
bool cmn_callback_url_host(const char *url, char *host, size_t size, int *port);

/* `url` (absolute, or a path with a query) as it may be logged: userinfo
 * ("user:secret@") becomes "***@", every query value "***", a fragment is
 * dropped. Writes into `buf` and returns it (or `url` itself when `size` is
 * too small to say anything). */
const char *cmn_url_redact(const char *url, char *buf, size_t size);

#endif
