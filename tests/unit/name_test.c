/* Unit tests for cmn/name.h: DNS-label names, name.namespace, route split. */
#include "check.h"

#include "cmn/name.h"

static bool label(const char *s)
{
    return cmn_name_label_valid(s, strlen(s));
}

static void test_label(void)
{
    char buf[80];

    CHECK(label("figlet"));
    CHECK(label("a"));
    CHECK(label("1"));
    CHECK(label("a-b"));
    CHECK(label("a--b"));
    CHECK(label("env2"));
    CHECK(label("openfaas-fn"));

    CHECK(!label(""));
    CHECK(!label("Figlet"));
    CHECK(!label("figleT"));
    CHECK(!label("-a"));
    CHECK(!label("a-"));
    CHECK(!label("-"));
    CHECK(!label("a_b"));
    CHECK(!label("a.b"));
    CHECK(!label("a b"));
    CHECK(!label("a/b"));

    memset(buf, 'a', 63);
    buf[63] = '\0';
    CHECK(label(buf));
    memset(buf, 'a', 64);
    buf[64] = '\0';
    CHECK(!label(buf));

    /* The length argument is honoured: a prefix of a longer string. */
    CHECK(cmn_name_label_valid("figlet/x", 6));
    CHECK(!cmn_name_label_valid("figlet-", 7));
    CHECK(cmn_name_label_valid("figlet-", 6));
}

static void test_parse(void)
{
    struct cmn_fn_name fn;
    struct cmn_err err = {0};
    char buf[160];

    memset(&fn, 0, sizeof fn);
    CHECK(cmn_name_parse("figlet", 6, "openfaas-fn", &fn, &err) == CMN_OK);
    CHECK_STR(fn.name, "figlet");
    CHECK_STR(fn.ns, "openfaas-fn");

    CHECK(cmn_name_parse("figlet.dev", 10, "openfaas-fn", &fn, &err) == CMN_OK);
    CHECK_STR(fn.name, "figlet");
    CHECK_STR(fn.ns, "dev");

    CHECK(cmn_name_parse("figlet.openfaas-fn", 18, "other", &fn, &err) == CMN_OK);
    CHECK_STR(fn.name, "figlet");
    CHECK_STR(fn.ns, "openfaas-fn");

    /* len limits the input: "figlet.dev/x" with len 10 */
    CHECK(cmn_name_parse("figlet.dev/x", 10, "openfaas-fn", &fn, &err) == CMN_OK);
    CHECK_STR(fn.ns, "dev");

    /* The namespace is what follows the LAST dot; the rest ("a.b") is the name,
     * which is not a DNS label, so the whole name is rejected. */
    struct cmn_fn_name keep = {.name = "keep", .ns = "keep"};
    fn = keep;
    CHECK(cmn_name_parse("a.b.c", 5, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK_STR(fn.name, "keep"); /* written only on success */

    err.msg[0] = '\0';
    CHECK(cmn_name_parse("figlet.", 7, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(err.msg[0] != '\0');
    CHECK(cmn_name_parse(".dev", 4, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("", 0, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("Figlet", 6, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("figlet.Dev", 10, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("fig_let", 7, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("-figlet", 7, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("figlet-", 7, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    CHECK(cmn_name_parse("figlet", 6, "openfaas-fn", &fn, NULL) == CMN_OK);

    /* 63-character name and namespace are fine; 64 are not. */
    memset(buf, 'a', 63);
    buf[63] = '.';
    memset(buf + 64, 'b', 63);
    buf[127] = '\0';
    CHECK(cmn_name_parse(buf, 127, "openfaas-fn", &fn, &err) == CMN_OK);
    CHECK_INT(strlen(fn.name), 63);
    CHECK_INT(strlen(fn.ns), 63);
    memset(buf, 'a', 64);
    buf[64] = '\0';
    CHECK(cmn_name_parse(buf, 64, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
    memset(buf, 'a', 10);
    buf[10] = '.';
    memset(buf + 11, 'b', 64);
    buf[75] = '\0';
    CHECK(cmn_name_parse(buf, 75, "openfaas-fn", &fn, &err) == CMN_ERR_INVALID);
}

static void test_route_split(void)
{
    const char *name = NULL, *sub = NULL;
    size_t len = 99;
    const char *in;

    in = "figlet";
    CHECK(cmn_route_split(in, &name, &len, &sub) == CMN_OK);
    CHECK(name == in);
    CHECK_INT(len, 6);
    CHECK_STR(sub, "");

    in = "figlet/";
    CHECK(cmn_route_split(in, &name, &len, &sub) == CMN_OK);
    CHECK_INT(len, 6);
    CHECK_STR(sub, "/");
    CHECK(sub == in + 6);

    in = "figlet/a/b";
    CHECK(cmn_route_split(in, &name, &len, &sub) == CMN_OK);
    CHECK_INT(len, 6);
    CHECK_STR(sub, "/a/b");

    in = "figlet.openfaas-fn/x";
    CHECK(cmn_route_split(in, &name, &len, &sub) == CMN_OK);
    CHECK_INT(len, 18);
    CHECK_STR(sub, "/x");

    CHECK(cmn_route_split("", &name, &len, &sub) == CMN_ERR_INVALID);
    CHECK(cmn_route_split("/x", &name, &len, &sub) == CMN_ERR_INVALID);
    CHECK(cmn_route_split("/", &name, &len, &sub) == CMN_ERR_INVALID);
}

int main(void)
{
    test_label();
    test_parse();
    test_route_split();
    return check_report("name_test");
}
