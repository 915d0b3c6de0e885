/* Unit tests for cmn/callid.h: UUID v4 generation and client id validation. */
#include "check.h"

#include <stdlib.h>
#include "cmn/callid.h"

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static bool uuid_shape(const char *id)
{
    if (strlen(id) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = id[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return id[14] == '4' && strchr("89ab", id[19]) != NULL;
}

static void test_new(void)
{
    enum { N = 1000 };
    static char ids[N][37];
    char big[64];

    memset(big, 'x', sizeof big);
    cmn_callid_new(big);
    CHECK_INT(strlen(big), 36);
    CHECK(big[37] == 'x'); /* writes exactly 37 bytes */

    for (int i = 0; i < N; i++) {
        cmn_callid_new(ids[i]);
        check_total++;
        if (!uuid_shape(ids[i]) || !cmn_callid_valid(ids[i])) {
            check_failures++;
            fprintf(stderr, "%s:%d: bad id \"%s\"\n", __FILE__, __LINE__, ids[i]);
        }
    }
    qsort(ids, N, sizeof ids[0], cmp_ids);
    int dups = 0;
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            dups++;
    CHECK_INT(dups, 0);
}

static void test_valid(void)
{
    char buf[200];

    CHECK(cmn_callid_valid("abc"));
    CHECK(cmn_callid_valid("a"));
    CHECK(cmn_callid_valid("A.b_c:d-1"));
    CHECK(cmn_callid_valid("9f2b6d0e-0000-4000-8000-000000000001"));
    memset(buf, 'a', 128);
    buf[128] = '\0';
    CHECK(cmn_callid_valid(buf));
    memset(buf, 'a', 129);
    buf[129] = '\0';
    CHECK(!cmn_callid_valid(buf));

    CHECK(!cmn_callid_valid(""));
    CHECK(!cmn_callid_valid("a b"));
    /* a token of NATS subjects: no empty tokens */
    CHECK(cmn_callid_valid("order-42.v1"));
    CHECK(!cmn_callid_valid(".a"));
    CHECK(!cmn_callid_valid("a."));
    CHECK(!cmn_callid_valid("a..b"));
    CHECK(!cmn_callid_valid("."));
    CHECK(!cmn_callid_valid("a\n"));
    CHECK(!cmn_callid_valid("a\r\nX: y"));
    CHECK(!cmn_callid_valid("a/b"));
    CHECK(!cmn_callid_valid("a\"b"));
    CHECK(!cmn_callid_valid("caf\xc3\xa9"));
    CHECK(!cmn_callid_valid("a*"));
    CHECK(!cmn_callid_valid("a>"));
}

int main(void)
{
    test_new();
    test_valid();
    return check_report("callid_test");
}
