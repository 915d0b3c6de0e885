/* Fuzzes the request framing the gateway's server applies to raw client bytes:
 * http-parser (the server's parser, same limits) splits the request and its
 * header fields, cmn_framing_check judges the fields and cmn_frame_scan the
 * bytes the parser consumed, fed in two pieces split where the input says.
 * Invariants: nothing crashes, and an accepted request never carries two
 * lengths, a non-"chunked" Transfer-Encoding or a control character in a
 * header value. The first input byte chooses the split point. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>
#include <http_parser.h>

#include "cmn/framing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct state {
    struct evkeyvalq headers;
    char name[256], value[1024];
    size_t name_len, value_len;
    int last; /* 0 none, 1 field, 2 value */
    bool head_done, chunked;
};

static void commit(struct state *st)
{
    if (st->last != 2)
        return;
    struct evkeyval *kv = calloc(1, sizeof(*kv));
    if (kv == NULL)
        abort();
    kv->key = strndup(st->name, st->name_len);
    kv->value = strndup(st->value, st->value_len);
    TAILQ_INSERT_TAIL(&st->headers, kv, next);
    st->name_len = st->value_len = 0;
    st->last = 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    struct state *st = p->data;
    if (st->head_done)
        return 0;
    if (st->last == 2)
        commit(st);
    st->last = 1;
    size_t room = sizeof(st->name) - st->name_len;
    if (len > room)
        len = room;
    memcpy(st->name + st->name_len, at, len);
    st->name_len += len;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    struct state *st = p->data;
    if (st->head_done)
        return 0;
    st->last = 2;
    size_t room = sizeof(st->value) - st->value_len;
    if (len > room)
        len = room;
    memcpy(st->value + st->value_len, at, len);
    st->value_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct state *st = p->data;
    commit(st);
    st->head_done = true;
    st->chunked = (p->flags & F_CHUNKED) != 0;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {.on_header_field = on_field,
                                              .on_header_value = on_value,
                                              .on_headers_complete = on_headers_complete,
                                              .on_message_complete = on_message_complete};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    size_t split = data[0] % (size);
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    if (split > len)
        split = len;
    struct state st;
    memset(&st, 0, sizeof(st));
    TAILQ_INIT(&st.headers);
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &st;
    struct cmn_frame_scan scan;
    cmn_frame_scan_init(&scan);
    const char *why = NULL;
    size_t pieces[2] = {split, len - split};
    size_t off = 0;
    bool failed = false;
    for (int i = 0; i < 2 && !failed; i++) {
        size_t n = http_parser_execute(&p, &settings, buf + off, pieces[i]);
        enum http_errno e = HTTP_PARSER_ERRNO(&p);
        if (e != HPE_OK && e != HPE_PAUSED) {
            failed = true;
            break;
        }
        scan.chunked = st.chunked;
        if (st.head_done && why == NULL)
            why = cmn_framing_check(&st.headers);
        if (why == NULL)
            why = cmn_frame_scan_feed(&scan, buf + off, n);
        off += pieces[i];
        if (e == HPE_PAUSED)
            break;
    }
    if (!failed && why == NULL && st.head_done) {
        /* accepted: the fields must be unambiguous */
        int lengths = 0, encodings = 0;
        for (struct evkeyval *h = st.headers.tqh_first; h != NULL; h = h->next.tqe_next) {
            for (const unsigned char *c = (const unsigned char *)h->value; *c; c++)
                if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
                    abort();
            if (strcasecmp(h->key, "Content-Length") == 0)
                lengths++;
            if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
                encodings++;
                if (strcmp(h->value, "chunked") != 0)
                    abort();
            }
        }
        if (lengths > 1 || encodings > 1 || (lengths && encodings))
            abort();
    }
    while (st.headers.tqh_first != NULL) {
        struct evkeyval *h = st.headers.tqh_first;
        TAILQ_REMOVE(&st.headers, h, next);
        free(h->key);
        free(h->value);
        free(h);
    }
    return 0;
}
