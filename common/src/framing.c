/* Framing checks: the header-level rules on the parsed fields, and a small
 * byte scanner for what a parser that is lenient on its own (line ends,
 * folding, chunk lines) lets through. The scanner only validates; the
 * parser stays the one that splits requests and bodies. */
#include "cmn/framing.h"

#include <string.h>
#include <strings.h>

static bool all_digits(const char *v)
{
    if (*v == '\0')
        return false;
    for (; *v != '\0'; v++)
        if (*v < '0' || *v > '9')
            return false;
    return true;
}

static bool value_clean(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

const char *cmn_framing_check(const struct evkeyvalq *headers)
{
    int lengths = 0, encodings = 0;
    for (const struct evkeyval *h = headers->tqh_first; h != NULL; h = h->next.tqe_next) {
        if (!value_clean(h->value))
            return "control character in a header value";
        if (strcasecmp(h->key, "Content-Length") == 0) {
            if (++lengths > 1)
                return "more than one Content-Length";
            if (!all_digits(h->value))
                return "Content-Length is not a number";
        } else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
            if (++encodings > 1)
                return "more than one Transfer-Encoding";
            if (strcmp(h->value, "chunked") != 0)
                return "Transfer-Encoding other than chunked";
        }
    }
    if (lengths > 0 && encodings > 0)
        return "both Content-Length and Transfer-Encoding";
    return NULL;
}

enum {
    S_LINE,       /* inside a head line */
    S_LINE_CR,    /* a CR ended a head line: LF next */
    S_LINE_START, /* at the start of a head line after CRLF */
    S_END_CR,     /* CR of the empty line: LF next */
    S_SIZE,       /* chunk size digits */
    S_SIZE_CR,    /* CR after the size: LF next */
    S_DATA,       /* chunk data */
    S_DATA_CR,    /* CR after the data */
    S_DATA_LF,    /* LF after the data */
    S_TRAILER,    /* inside a trailer line */
    S_TRAILER_CR,
    S_TRAILER_START,
    S_TRAILER_END_CR,
    S_DONE,
};

void cmn_frame_scan_init(struct cmn_frame_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->state = S_LINE_START;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

const char *cmn_frame_scan_feed(struct cmn_frame_scan *s, const char *p, size_t len)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = b[i];
        switch (s->state) {
        case S_LINE_START:
            if (!s->started) { /* empty lines before the request line are ignored */
                if (c == '\r') {
                    s->state = S_LINE_CR;
                    break;
                }
                if (c == '\n')
                    return "bare LF in the request head";
                s->started = true;
                s->request_line = true;
                s->state = S_LINE;
                if (c < 0x20 || c == 0x7f)
                    return "control character in the request line";
                if (c >= 0x80)
                    return "non-ASCII byte in the request line (percent-encode it)";
                break;
            }
            if (c == ' ' || c == '\t')
                return "obs-fold continuation line in the request head";
            if (c == '\r') {
                s->state = S_END_CR;
                break;
            }
            if (c == '\n')
                return "bare LF in the request head";
            s->state = S_LINE;
            break;
        case S_LINE:
            if (c == '\r') {
                s->state = S_LINE_CR;
                s->request_line = false;
            } else if (c == '\n') {
                return "bare LF in the request head";
            } else if (s->request_line) {
                /* method SP request-target SP version: SP is the only
                 * separator, and an origin-form target has no fragment */
                if ((c < 0x20 || c == 0x7f))
                    return "control character in the request line";
                if (c >= 0x80)
                    return "non-ASCII byte in the request line (percent-encode it)";
                if (c == '#')
                    return "fragment (#) in the request target";
            }
            break;
        case S_LINE_CR:
            if (c != '\n')
                return "bare CR in the request head";
            s->state = S_LINE_START;
            break;
        case S_END_CR:
            if (c != '\n')
                return "bare CR in the request head";
            s->head_done = true;
            if (!s->chunked) {
                s->state = S_DONE; /* a Content-Length body is the parser's to count */
                return NULL;
            }
            s->state = S_SIZE;
            s->digits = 0;
            s->chunk_left = 0;
            break;
        case S_SIZE:
            if (is_hex(c)) {
                if (++s->digits > 15)
                    return "chunk size too large";
                unsigned v = c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
                s->chunk_left = s->chunk_left * 16 + v;
                break;
            }
            if (c == '\r' && s->digits > 0) {
                s->state = S_SIZE_CR;
                break;
            }
            if (c == ';')
                return "chunk extensions are not accepted";
            return "invalid chunk size line";
        case S_SIZE_CR:
            if (c != '\n')
                return "invalid chunk size line";
            s->state = s->chunk_left > 0 ? S_DATA : S_TRAILER_START;
            break;
        case S_DATA: {
            uint64_t take = len - i;
            if (take > s->chunk_left)
                take = s->chunk_left;
            s->chunk_left -= take;
            i += (size_t)take - 1;
            if (s->chunk_left == 0)
                s->state = S_DATA_CR;
            break;
        }
        case S_DATA_CR:
            if (c != '\r')
                return "chunk data longer than its size";
            s->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (c != '\n')
                return "bare CR after chunk data";
            s->state = S_SIZE;
            s->digits = 0;
            s->chunk_left = 0;
            break;
        case S_TRAILER_START:
            if (c == '\r') {
                s->state = S_TRAILER_END_CR;
                break;
            }
            if (c == ' ' || c == '\t')
                return "obs-fold continuation line in the trailers";
            if (c == '\n')
                return "bare LF in the trailers";
            s->state = S_TRAILER;
            break;
        case S_TRAILER:
            if (c == '\r')
                s->state = S_TRAILER_CR;
            else if (c == '\n')
                return "bare LF in the trailers";
            break;
        case S_TRAILER_CR:
            if (c != '\n')
                return "bare CR in the trailers";
            s->state = S_TRAILER_START;
            break;
        case S_TRAILER_END_CR:
            if (c != '\n')
                return "bare CR in the trailers";
            s->state = S_DONE;
            return NULL;
        case S_DONE:
        default:
            return NULL;
        }
    }
    return NULL;
}
