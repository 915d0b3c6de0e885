/* Unit tests for cmn/headers.h: list operations and header classification. */
#include "check.h"

#include <strings.h>
#include "cmn/headers.h"

static size_t count_named(const struct cmn_headers *h, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < h->count; i++)
        if (strcasecmp(h->items[i].name, name) == 0)
            n++;
    return n;
}

static void test_list(void)
{
    struct cmn_headers h;
    cmn_headers_init(&h);
    CHECK_INT(h.count, 0);
    CHECK(cmn_headers_get(&h, "X-A") == NULL);

    CHECK(cmn_headers_add(&h, "Content-Type", "text/plain") == CMN_OK);
    CHECK(cmn_headers_add(&h, "X-Multi", "one") == CMN_OK);
    CHECK(cmn_headers_add(&h, "x-multi", "two") == CMN_OK);
    CHECK(cmn_headers_add(&h, "X-Empty", "") == CMN_OK);
    CHECK_INT(h.count, 4);

    CHECK_STR(cmn_headers_get(&h, "content-type"), "text/plain");
    CHECK_STR(cmn_headers_get(&h, "CONTENT-TYPE"), "text/plain");
    CHECK_STR(cmn_headers_get(&h, "X-MULTI"), "one"); /* first value */
    CHECK_STR(cmn_headers_get(&h, "X-Empty"), "");
    CHECK(cmn_headers_get(&h, "Content") == NULL); /* no prefix match */
    CHECK(cmn_headers_get(&h, "Content-Type2") == NULL);

    /* order preserved */
    CHECK_STR(h.items[0].name, "Content-Type");
    CHECK_STR(h.items[1].value, "one");
    CHECK_STR(h.items[2].value, "two");

    /* values are copied */
    char value[] = "copied";
    CHECK(cmn_headers_add(&h, "X-Copy", value) == CMN_OK);
    value[0] = 'X';
    CHECK_STR(cmn_headers_get(&h, "X-Copy"), "copied");

    /* set replaces every value with one */
    CHECK(cmn_headers_set(&h, "x-MULTI", "three") == CMN_OK);
    CHECK_INT(count_named(&h, "X-Multi"), 1);
    CHECK_STR(cmn_headers_get(&h, "X-Multi"), "three");
    /* set adds when absent */
    CHECK(cmn_headers_set(&h, "X-New", "n") == CMN_OK);
    CHECK_STR(cmn_headers_get(&h, "x-new"), "n");

    cmn_headers_remove(&h, "CONTENT-type");
    CHECK(cmn_headers_get(&h, "Content-Type") == NULL);
    CHECK(cmn_headers_add(&h, "X-Dup", "1") == CMN_OK);
    CHECK(cmn_headers_add(&h, "X-DUP", "2") == CMN_OK);
    cmn_headers_remove(&h, "x-dup");
    CHECK_INT(count_named(&h, "X-Dup"), 0);
    cmn_headers_remove(&h, "Not-There");
    CHECK_STR(cmn_headers_get(&h, "X-Copy"), "copied");

    /* many adds grow the array */
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof name, "X-H%d", i);
        CHECK(cmn_headers_add(&h, name, name) == CMN_OK);
    }
    CHECK_STR(cmn_headers_get(&h, "x-h199"), "X-H199");

    cmn_headers_free(&h);
    CHECK_INT(h.count, 0);
    CHECK(cmn_headers_get(&h, "X-Copy") == NULL);
    cmn_headers_free(&h); /* twice is fine */
    cmn_headers_free(NULL);
}

static void test_classes(void)
{
    static const char *const hop[] = {"Connection",
                                      "Keep-Alive",
                                      "Proxy-Connection",
                                      "Proxy-Authenticate",
                                      "Proxy-Authorization",
                                      "TE",
                                      "Trailer",
                                      "Transfer-Encoding",
                                      "Upgrade",
                                      "Host",
                                      "Content-Length",
                                      "connection",
                                      "TRANSFER-ENCODING",
                                      "te",
                                      "host"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
        check_total++;
        if (!cmn_header_is_hop_by_hop(hop[i])) {
            check_failures++;
            fprintf(stderr, "%s:%d: %s should be hop-by-hop\n", __FILE__, __LINE__, hop[i]);
        }
    }
    static const char *const end[] = {
        "Content-Type", "X-Call-Id",   "Authorization", "X-Callback-Url",   "Accept",
        "Trailers",     "Connection2", "Hostname",      "Content-Length-X", ""};
    for (size_t i = 0; i < sizeof end / sizeof end[0]; i++) {
        check_total++;
        if (cmn_header_is_hop_by_hop(end[i])) {
            check_failures++;
            fprintf(stderr, "%s:%d: \"%s\" should be end-to-end\n", __FILE__, __LINE__, end[i]);
        }
    }

    CHECK(cmn_header_is_reserved("Faas-Function"));
    CHECK(cmn_header_is_reserved("faas-anything"));
    CHECK(cmn_header_is_reserved("FAAS-X"));
    CHECK(cmn_header_is_reserved("Nats-Msg-Id"));
    CHECK(cmn_header_is_reserved("nats-expected-stream"));
    CHECK(cmn_header_is_reserved("Faas-"));
    CHECK(!cmn_header_is_reserved("Faas"));
    CHECK(!cmn_header_is_reserved("Faasx-Y"));
    CHECK(!cmn_header_is_reserved("X-Faas-Function"));
    CHECK(!cmn_header_is_reserved("Nats"));
    CHECK(!cmn_header_is_reserved("Content-Type"));
    CHECK(!cmn_header_is_reserved(""));
}

static void test_value_safe(void)
{
    CHECK(cmn_header_value_safe("text/plain", 100));
    CHECK(cmn_header_value_safe("", 100));
    CHECK(cmn_header_value_safe("a\tb", 100)); /* HTAB is legal in field values */
    CHECK(!cmn_header_value_safe("a\r\nX-Evil: 1", 100));
    CHECK(!cmn_header_value_safe("a\rb", 100));
    CHECK(!cmn_header_value_safe("a\nb", 100));
    CHECK(cmn_header_value_safe("abcd", 4));
    CHECK(!cmn_header_value_safe("abcde", 4));
}

int main(void)
{
    test_list();
    test_classes();
    test_value_safe();
    return check_report("headers_test");
}
