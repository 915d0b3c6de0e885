/* Unit tests for cmn/trace.h: the traceparent forms W3C Trace Context
 * accepts and the ones it does not. */
#include "check.h"

#include "cmn/trace.h"

static void test_valid(void)
{
    char id[CMN_TRACE_ID_MAX];
    CHECK(cmn_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id));
    CHECK_STR(id, "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(cmn_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", NULL));
    /* a later version may carry more fields after a '-' */
    CHECK(cmn_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", id));
    CHECK(cmn_traceparent_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id));
}

static void test_invalid(void)
{
    const char *bad[] = {
        "",
        "00",
        /* upper case hex */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        /* all-zero trace id, all-zero parent id */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* version ff is forbidden; version 00 has exactly four fields */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        /* short fields, wrong separators, non-hex */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char id[CMN_TRACE_ID_MAX] = "x";
        CHECK(!cmn_traceparent_parse(bad[i], id));
        CHECK_STR(id, "");
    }
    CHECK(!cmn_traceparent_parse(NULL, NULL));
}

int main(void)
{
    test_valid();
    test_invalid();
    return check_report("trace_test");
}
