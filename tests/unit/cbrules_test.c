/* Unit tests for cmn/cbrules.h: parsing callback_allowlist and matching hosts
 * and socket addresses. */
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "cmn/cbrules.h"

static struct cmn_cbrules *parse(const char *list)
{
    struct cmn_cbrules *r = NULL;
    CHECK(cmn_cbrules_parse(list, &r, NULL) == CMN_OK);
    return r;
}

static enum cmn_cb_verdict host(struct cmn_cbrules *r, const char *h, int port)
{
    char why[200] = "";
    enum cmn_cb_verdict v = cmn_cbrules_check_host(r, h, port, why, sizeof(why));
    if (v == CMN_CB_DENIED)
        CHECK(why[0] != '\0');
    return v;
}

static bool addr4(struct cmn_cbrules *r, const char *a, int port)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, a, &in.sin_addr);
    char why[200];
    return cmn_cbrules_check_addr(r, (struct sockaddr *)&in, why, sizeof(why));
}

static bool addr6(struct cmn_cbrules *r, const char *a, int port)
{
    struct sockaddr_in6 in = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    inet_pton(AF_INET6, a, &in.sin6_addr);
    char why[200];
    return cmn_cbrules_check_addr(r, (struct sockaddr *)&in, why, sizeof(why));
}

int main(void)
{
    struct cmn_cbrules *open = parse("");
    CHECK(cmn_cbrules_open(open));
    CHECK(host(open, "anything", 1) == CMN_CB_ALLOWED);
    CHECK(addr4(open, "127.0.0.1", 22));
    cmn_cbrules_free(open);
    open = parse(NULL);
    CHECK(cmn_cbrules_open(open));
    cmn_cbrules_free(open);

    struct cmn_cbrules *r =
        parse(" receiver.example.com , hooks.example.org:8443,*.corp.example, 10.0.0.0/8,"
              "192.168.1.7:9000, [fd00::1]:443, 2001:db8::/32 ");
    CHECK(!cmn_cbrules_open(r) && cmn_cbrules_has_addresses(r));
    CHECK(host(r, "receiver.example.com", 80) == CMN_CB_ALLOWED);
    CHECK(host(r, "RECEIVER.example.COM", 443) == CMN_CB_ALLOWED);
    CHECK(host(r, "hooks.example.org", 8443) == CMN_CB_ALLOWED);
    CHECK(host(r, "hooks.example.org", 443) == CMN_CB_CHECK_ADDRESS);
    CHECK(host(r, "a.corp.example", 80) == CMN_CB_ALLOWED);
    CHECK(host(r, "b.a.corp.example", 80) == CMN_CB_ALLOWED);
    CHECK(host(r, "corp.example", 80) == CMN_CB_CHECK_ADDRESS);
    CHECK(host(r, "evilcorp.example", 80) == CMN_CB_CHECK_ADDRESS);
    CHECK(host(r, "10.1.2.3", 80) == CMN_CB_ALLOWED);
    CHECK(host(r, "11.1.2.3", 80) == CMN_CB_DENIED);
    CHECK(host(r, "192.168.1.7", 9000) == CMN_CB_ALLOWED);
    CHECK(host(r, "192.168.1.7", 9001) == CMN_CB_DENIED);
    CHECK(host(r, "[fd00::1]", 443) == CMN_CB_ALLOWED);
    CHECK(host(r, "fd00::1", 80) == CMN_CB_DENIED);
    CHECK(host(r, "2001:db8:1::5", 80) == CMN_CB_ALLOWED);
    CHECK(host(r, "::1", 80) == CMN_CB_DENIED);
    CHECK(host(r, "[::ffff:10.1.2.3]", 80) == CMN_CB_ALLOWED); /* mapped IPv4, as the worker */
    CHECK(host(r, "::ffff:127.0.0.1", 80) == CMN_CB_DENIED);
    CHECK(addr4(r, "10.255.0.1", 1));
    CHECK(!addr4(r, "127.0.0.1", 80));
    CHECK(!addr4(r, "169.254.169.254", 80));
    CHECK(addr6(r, "::ffff:10.0.0.1", 80)); /* IPv4-mapped counts as IPv4 */
    CHECK(!addr6(r, "::ffff:127.0.0.1", 80));
    CHECK(addr6(r, "2001:db8::9", 80));
    CHECK(!addr6(r, "2001:db9::9", 80));
    cmn_cbrules_free(r);

    /* names only: a name nothing allows is denied at once */
    r = parse("receiver.example.com");
    CHECK(!cmn_cbrules_has_addresses(r));
    CHECK(host(r, "other.example.com", 80) == CMN_CB_DENIED);
    CHECK(host(r, "127.0.0.1", 80) == CMN_CB_DENIED);
    CHECK(!addr4(r, "127.0.0.1", 80));
    cmn_cbrules_free(r);

    /* a /0 allows every address of its family; prefixes in the middle of a byte */
    r = parse("0.0.0.0/0,172.16.0.0/12");
    CHECK(addr4(r, "8.8.8.8", 53));
    CHECK(!addr6(r, "::1", 80));
    cmn_cbrules_free(r);
    r = parse("172.16.0.0/12");
    CHECK(addr4(r, "172.31.255.255", 1) && !addr4(r, "172.32.0.0", 1));
    cmn_cbrules_free(r);

    static const char *const bad[] = {
        "10.0.0.0/33", "fd00::/129", "host:0",   "host:99999", "*.",    "a..b",         "[::1",
        "[::1]x",      "ho st",      "http://x", "a/b",        "*.*.x", "[10.0.0.1]:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cmn_cbrules *x = NULL;
        struct cmn_err err = {0};
        check_total++;
        if (cmn_cbrules_parse(bad[i], &x, &err) != CMN_ERR_INVALID || x != NULL ||
            strstr(err.msg, "callback_allowlist") == NULL) {
            check_failures++;
            fprintf(stderr, "%s:%d: \"%s\" accepted\n", __FILE__, __LINE__, bad[i]);
            cmn_cbrules_free(x);
        }
    }
    return check_report("cbrules_test");
}
