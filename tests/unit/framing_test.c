/* Unit tests for cmn/framing.h (the framing policy of every server) and the
 * callback-URL host rules of cmn/url.h: each refused form and each accepted
 * one, and the byte scanner fed whole and one byte at a time. */
#include "check.h"

#include <stdlib.h>
#include <sys/queue.h>

#include "cmn/framing.h"
#include "cmn/url.h"

static void add(struct evkeyvalq *q, const char *k, const char *v)
{
    struct evkeyval *kv = calloc(1, sizeof(*kv));
    kv->key = strdup(k);
    kv->value = strdup(v);
    TAILQ_INSERT_TAIL(q, kv, next);
}

static void clear(struct evkeyvalq *q)
{
    while (q->tqh_first != NULL) {
        struct evkeyval *kv = q->tqh_first;
        TAILQ_REMOVE(q, kv, next);
        free(kv->key);
        free(kv->value);
        free(kv);
    }
}

/* NULL-terminated list of name, value pairs -> the reason or NULL */
static const char *check(const char *const *kv)
{
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    for (size_t i = 0; kv[i] != NULL; i += 2)
        add(&q, kv[i], kv[i + 1]);
    const char *why = cmn_framing_check(&q);
    clear(&q);
    return why;
}

static void test_fields(void)
{
    const char *ok1[] = {"Host", "x", "Content-Length", "5", NULL};
    const char *ok2[] = {"Transfer-Encoding", "chunked", "X-Tab", "a\tb", NULL};
    const char *ok3[] = {"X-Utf8", "caf\xc3\xa9", NULL};
    CHECK(check(ok1) == NULL);
    CHECK(check(ok2) == NULL);
    CHECK(check(ok3) == NULL);
    const char *bad[][5] = {
        {"Content-Length", "5, 5", NULL},
        {"Content-Length", "5", "content-length", "5", NULL},
        {"Content-Length", "+5", NULL},
        {"Content-Length", "", NULL},
        {"Transfer-Encoding", "gzip, chunked", NULL},
        {"Transfer-Encoding", "chunked, gzip", NULL},
        {"Transfer-Encoding", "Chunked", NULL},
        {"Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked", NULL},
        {"Transfer-Encoding", "chunked", "Content-Length", "3", NULL},
        {"X-Callback-Url", "http://a\rb/", NULL},
        {"X-Call-Id", "a\x7f", NULL},
        {"X-A", "a\nb", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = check(bad[i]);
        CHECK(why != NULL);
    }
}

/* feeds `req` whole, then one byte at a time; both must agree */
static const char *scan(const char *req, bool chunked)
{
    struct cmn_frame_scan s;
    cmn_frame_scan_init(&s);
    s.chunked = chunked;
    const char *whole = cmn_frame_scan_feed(&s, req, strlen(req));
    cmn_frame_scan_init(&s);
    s.chunked = chunked;
    const char *bytes = NULL;
    for (size_t i = 0; req[i] != '\0' && bytes == NULL; i++)
        bytes = cmn_frame_scan_feed(&s, req + i, 1);
    CHECK((whole == NULL) == (bytes == NULL));
    return whole;
}

static void test_scanner(void)
{
    CHECK(scan("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false) == NULL);
    CHECK(scan("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", false) == NULL); /* leading CRLF */
    /* HTAB and '#' stay allowed in header values */
    CHECK(scan("GET /a?b=%23 HTTP/1.1\r\nX-A: a\tb#c\r\n\r\n", false) == NULL);
    /* a header value may hold bytes above 0x7f (obs-text) */
    CHECK(scan("GET /caf%C3%A9 HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n", false) == NULL);
    CHECK(scan("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na\nb", false) == NULL);
    CHECK(scan("POST / HTTP/1.1\r\nT: c\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true) == NULL);
    CHECK(scan("POST / HTTP/1.1\r\nT: c\r\n\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", true) ==
          NULL);
    CHECK(scan("POST / HTTP/1.1\r\nT: c\r\n\r\n5\r\nhe\nlo\r\n0\r\n\r\n", true) == NULL);
    const char *bad[] = {
        "GET / HTTP/1.1\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: one\r\n\ttwo\r\n\r\n",
        "\nGET / HTTP/1.1\r\n\r\n",
        "GET /a\tb HTTP/1.1\r\n\r\n",
        "GET /a\fb HTTP/1.1\r\n\r\n",
        "GET /a?q=\x7f HTTP/1.1\r\n\r\n",
        "GET\t/ HTTP/1.1\r\n\r\n",
        "\r\n\x01GET / HTTP/1.1\r\n\r\n",
        "GET /a#f HTTP/1.1\r\n\r\n",
        "GET /a?x=1#f HTTP/1.1\r\n\r\n",
        "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        "GET /a?q=\xff HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(scan(bad[i], false) != NULL);
    const char *bad_chunked[] = {
        "POST / HTTP/1.1\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n5\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
        "POST / HTTP/1.1\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad_chunked) / sizeof(bad_chunked[0]); i++)
        CHECK(scan(bad_chunked[i], true) != NULL);
    /* what follows the end of the request is not its business (pipelining) */
    CHECK(scan("GET / HTTP/1.1\r\n\r\nGARBAGE\n\n", false) == NULL);
    CHECK(scan("POST / HTTP/1.1\r\n\r\n0\r\n\r\nnext\n", true) == NULL);
}

static bool url_ok(const char *u)
{
    char why[256];
    return cmn_callback_url_check(u, why, sizeof(why));
}

static void test_callback_hosts(void)
{
    const char *good[] = {"http://127.0.0.1:9/",
                          "http://10.1.2.3/x",
                          "https://[::1]:8443/",
                          "http://[2001:db8::1]/",
                          "http://sink.example.com:8080/cb",
                          "http://my_service/",
                          "http://a-b.c/",
                          "http://0.0.0.0:1/",
                          "http://1.2.3.4.nip.io/",
                          "http://x1/"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        bool ok = url_ok(good[i]);
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  refused: %s\n", good[i]);
    }
    const char *bad[] = {
        "http://2130706433/", "http://0x7f000001/",    "http://0x7f.0.0.1/", "http://0177.0.0.1/",
        "http://127.1/",      "http://127.0.0.01/",    "http://256.1.1.1/",  "http://1.2.3.4.5/",
        "http://%31.2.3.4/",  "http://ex%61mple.com/", "http://host:0/",     "http://host:65536/",
        "http://-a.b/",       "http://a-.b/",          "http://a..b/",       "http://.a/",
        "http://a!b/",        "http://[::g]/",         "http://1.2.3/",      "http://08.0.0.1/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bool ok = url_ok(bad[i]);
        CHECK(!ok);
        if (ok)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
}

int main(void)
{
    test_fields();
    test_scanner();
    test_callback_hosts();
    return check_report("framing_test");
}
