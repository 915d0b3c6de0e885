/* Unit tests for cmn/duration.h: OpenFaaS "plain seconds or Go duration". */
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "cmn/duration.h"

static void expect_ms(const char *text, int64_t want, int line)
{
    int64_t got = -12345;
    struct cmn_err err = {0};
    enum cmn_status st = cmn_duration_parse_ms(text, &got, &err);
    check_total++;
    if (st != CMN_OK || got != want) {
        check_failures++;
        fprintf(stderr, "%s:%d: parse \"%s\": status %d (%s) value %lld, want %lld\n", __FILE__,
                line, text, (int)st, err.msg, (long long)got, (long long)want);
    }
}

static void expect_invalid(const char *text, int line)
{
    int64_t got = -12345;
    struct cmn_err err = {0};
    enum cmn_status st = cmn_duration_parse_ms(text, &got, &err);
    check_total++;
    if (st != CMN_ERR_INVALID || got != -12345 || err.msg[0] == '\0') {
        check_failures++;
        fprintf(stderr,
                "%s:%d: parse \"%s\": want CMN_ERR_INVALID with a reason and no output, got "
                "status %d value %lld msg \"%s\"\n",
                __FILE__, line, text, (int)st, (long long)got, err.msg);
    }
}

#define OK(text, ms) expect_ms((text), (ms), __LINE__)
#define BAD(text) expect_invalid((text), __LINE__)

static void test_parse(void)
{
    OK("60", 60000);
    OK("0", 0);
    OK("1", 1000);
    OK("1m05s", 65000);
    OK("1m5s", 65000);
    OK("500ms", 500);
    OK("1.5s", 1500);
    OK("1h", 3600000);
    OK("2h30m", 9000000);
    OK("0s", 0);
    OK("1500us", 1);   /* sub-millisecond rounds down */
    OK("999999ns", 0); /* rounds down */
    OK("0.5ms", 0);
    OK("10s", 10000);
    OK("120", 120000);
    OK("000060", 60000); /* Go's Atoi accepts leading zeros */
    OK("0000000000000060", 60000);

    /* Fractions are exact, as in Go (integer arithmetic), never off by one
     * because of binary floating point. */
    OK("1.001s", 1001);
    OK("0.035s", 35);
    OK("1.59m", 95400);
    OK("2.01m", 120600);
    OK("1h1m1.001s", 3661001);
    OK("1.5h", 5400000);
    OK("0.1s", 100);
    OK(".5s", 500);
    OK("5.s", 5000);

    BAD("");
    BAD("-1");
    BAD("-5s");
    BAD("5x");
    BAD("1m5"); /* Go: missing unit after 5 */
    BAD("s");
    BAD("ms");
    BAD("1.5"); /* a bare number must be an integer (OpenFaaS: Atoi, then ParseDuration) */
    BAD("1 s");
    BAD("abc");
    BAD("99999999999999999999"); /* seconds overflow int64 */
    BAD("9223372036854775807");  /* seconds * 1000 overflows */
    BAD("9223372036854775807h");
    BAD("100000000000000h");
}

static void test_null_err(void)
{
    int64_t ms = 0;
    CHECK(cmn_duration_parse_ms("5x", &ms, NULL) == CMN_ERR_INVALID);
    CHECK(cmn_duration_parse_ms("5s", &ms, NULL) == CMN_OK);
    CHECK_INT(ms, 5000);
}

static void test_format(void)
{
    char buf[64];
    CHECK_STR(cmn_duration_format(65000, buf, sizeof buf), "1m5s");
    CHECK_STR(cmn_duration_format(500, buf, sizeof buf), "500ms");
    CHECK_STR(cmn_duration_format(0, buf, sizeof buf), "0s");
    CHECK_STR(cmn_duration_format(10000, buf, sizeof buf), "10s");

    /* Whatever the exact spelling, formatting then parsing gives the value back. */
    static const int64_t values[] = {1, 999, 1000, 1500, 59999, 60000, 3600000, 3661001, 86400000};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        int64_t back = -1;
        cmn_duration_format(values[i], buf, sizeof buf);
        CHECK(cmn_duration_parse_ms(buf, &back, NULL) == CMN_OK);
        CHECK_INT(back, values[i]);
    }
}

static void test_time(void)
{
    char buf[40];
    int64_t ms = -1;
    CHECK_STR(cmn_time_format(0, buf, sizeof buf), "1970-01-01T00:00:00.000Z");
    CHECK_STR(cmn_time_format(1796186638996, buf, sizeof buf), "2026-12-02T04:43:58.996Z");
    CHECK(cmn_time_parse("2026-12-02T04:43:58.996Z", &ms));
    CHECK_INT(ms, 1796186638996);
    CHECK(cmn_time_parse("2026-12-02T04:43:58Z", &ms));
    CHECK_INT(ms, 1796186638000);
    CHECK(cmn_time_parse("2026-12-02t05:43:58.5+01:00", &ms));
    CHECK_INT(ms, 1796186638500);
    CHECK(cmn_time_parse("2026-12-01T23:43:58.123456789-05:00", &ms));
    CHECK_INT(ms, 1796186638123);
    CHECK(cmn_time_parse("2024-02-29T00:00:00Z", &ms));
    static const char *const bad[] = {
        "",
        "tomorrow",
        "2026-12-02",
        "2026-12-02T04:43:58",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-12-02T24:00:00Z",
        "2026-12-02T04:43:58.Z",
        "2026-12-02T04:43:58Zx",
        "2026-12-02 04:43:58Z",
        "2026-12-02T04:43:58+0100",
        "2026-12-02T04:43:58+25:00",
        "20261202T044358Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = -7;
        check_total++;
        if (cmn_time_parse(bad[i], &v) || v != -7) {
            check_failures++;
            fprintf(stderr, "%s:%d: \"%s\" parsed as %lld\n", __FILE__, __LINE__, bad[i],
                    (long long)v);
        }
    }
    /* format then parse gives the value back */
    static const int64_t values[] = {1, 999, 1796186638996, 4102444800000};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        int64_t back = -1;
        CHECK(cmn_time_parse(cmn_time_format(values[i], buf, sizeof buf), &back));
        CHECK_INT(back, values[i]);
    }
    /* the digit writer agrees with gmtime_r, days apart over 1900..9999
     * (leap days, century years, before 1970), and refuses what does not fit */
    for (int64_t t = -2208988800000LL; t < 253402300800000LL; t += 86400000LL * 7 + 3723123) {
        time_t secs = (time_t)(t >= 0 ? t / 1000 : (t - 999) / 1000);
        struct tm tm;
        char want[96];
        gmtime_r(&secs, &tm);
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(((t % 1000) + 1000) % 1000));
        check_total++;
        if (strcmp(cmn_time_format(t, buf, sizeof buf), want) != 0) {
            check_failures++;
            fprintf(stderr, "%s:%d: %lld formatted as %s, not %s\n", __FILE__, __LINE__,
                    (long long)t, buf, want);
            break;
        }
    }
    CHECK_STR(cmn_time_format(951782400000, buf, sizeof buf), "2000-02-29T00:00:00.000Z");
    CHECK_STR(cmn_time_format(-1, buf, sizeof buf), "1969-12-31T23:59:59.999Z");
    CHECK_STR(cmn_time_format(253402300800000LL, buf, sizeof buf), "invalid");
    char small[10];
    CHECK_STR(cmn_time_format(0, small, sizeof small), "invalid");
}

int main(void)
{
    test_parse();
    test_null_err();
    test_format();
    test_time();
    return check_report("duration_test");
}
