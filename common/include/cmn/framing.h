/* The request framing every HTTP server of the project accepts (RFC 9112 §6,
 * RFC 9110 §5.5), decided in one place (gateway/server.c, watchdog/server.c):
 *  - at most one Content-Length field, its value 1*DIGIT (no list, no sign,
 *    no spaces);
 *  - Transfer-Encoding at most once, exactly "chunked", and never together
 *    with Content-Length;
 *  - no header value holding a control character other than HTAB (NUL, CR,
 *    LF, DEL, ...);
 * plus, for servers that see the raw bytes (cmn_frame_scan), no bare LF or
 * bare CR line ends and no obs-fold continuation lines in the head, a request
 * line of printable ASCII only (no HTAB, FF, NUL, DEL, no byte above 0x7f:
 * a URI is ASCII, RFC 9112 §3.2, RFC 3986 §2) and without a
 * fragment ('#', which clients never send: RFC 9112 §3.2.1), and chunk
 * size lines that are 1*HEXDIG CRLF (no extensions, no spaces). Anything else
 * is a 400 with the returned reason, before routing, proxying or queueing.
 * Pure functions, any thread. */
#ifndef CMN_FRAMING_H
#define CMN_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/keyvalq_struct.h>

/* Checks a request's header fields (`headers`, in order as received; names
 * and values as parsed). Returns NULL when acceptable, else a short reason
 * (static text). */
const char *cmn_framing_check(const struct evkeyvalq *headers);

/* A scanner of a request's raw bytes, fed with exactly the bytes the HTTP
 * parser consumed for that request (from its first byte to its end). */
struct cmn_frame_scan {
    int state;
    bool chunked;        /* set by the server once the head declared a chunked body */
    bool head_done;      /* the empty line ending the head was seen */
    bool started;        /* the request line began (leading empty lines skipped) */
    bool request_line;   /* inside the request line */
    uint64_t chunk_left; /* data bytes of the current chunk still to skip */
    unsigned digits;     /* hex digits of the current chunk size */
};

/* Resets `s` for a new request. */
void cmn_frame_scan_init(struct cmn_frame_scan *s);

/* Feeds `len` bytes of `p`. Returns NULL, or the reason for a 400 (static
 * text); after a reason, `s` must be reset before reuse. */
const char *cmn_frame_scan_feed(struct cmn_frame_scan *s, const char *p, size_t len);

#endif
