/* Unit tests of the queue-worker's retry arithmetic (queue-worker/retry.c):
 * exponential back-off with equal jitter, Retry-After in both forms, clamping,
 * callback back-off. Case A14 of cases/async-acceptance.md uses 1 s / 8 s. */
#include "../../queue-worker/retry.h"
#include "check.h"

int main(void)
{
    /* attempt 1 failed: the first retry waits exactly initial */
    CHECK_INT(qw_retry_backoff_ms(1, 1000, 8000, 0.0), 1000);
    CHECK_INT(qw_retry_backoff_ms(1, 1000, 8000, 1.0), 1000);
    /* attempt 2: base 2 s, equal jitter 1..2 s */
    CHECK_INT(qw_retry_backoff_ms(2, 1000, 8000, 1.0), 2000);
    CHECK_INT(qw_retry_backoff_ms(2, 1000, 8000, 0.0), 1000);
    CHECK_INT(qw_retry_backoff_ms(3, 1000, 8000, 1.0), 4000);
    CHECK_INT(qw_retry_backoff_ms(3, 1000, 8000, 0.5), 3000);
    /* capped at max, also for huge attempt numbers (no overflow) */
    CHECK_INT(qw_retry_backoff_ms(10, 1000, 8000, 1.0), 8000);
    CHECK_INT(qw_retry_backoff_ms(200, 10000, 120000, 1.0), 120000);
    CHECK(qw_retry_backoff_ms(200, 10000, 120000, 0.0) >= 60000);
    /* out-of-range jitter input is clamped */
    CHECK_INT(qw_retry_backoff_ms(3, 1000, 8000, 7.0), 4000);
    CHECK_INT(qw_retry_backoff_ms(3, 1000, 8000, -3.0), 2000);

    int64_t ms = -1;
    CHECK(qw_retry_after_parse_ms("5", 0, &ms));
    CHECK_INT(ms, 5000);
    CHECK(qw_retry_after_parse_ms("0", 0, &ms));
    CHECK_INT(ms, 0);
    /* HTTP-date, 10 s after "now" (Sun, 06 Nov 1994 08:49:37 GMT = 784111777) */
    CHECK(qw_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:47 GMT", 784111777, &ms));
    CHECK_INT(ms, 10000);
    /* a date in the past means "now" */
    CHECK(qw_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111800, &ms));
    CHECK_INT(ms, 0);
    ms = 42;
    CHECK(!qw_retry_after_parse_ms("soon", 0, &ms));
    CHECK(!qw_retry_after_parse_ms("", 0, &ms));
    CHECK(!qw_retry_after_parse_ms("-5", 0, &ms));
    CHECK_INT(ms, 42); /* untouched on failure */

    CHECK_INT(qw_retry_clamp_ms(0, 1000, 8000), 1000);
    CHECK_INT(qw_retry_clamp_ms(5000, 1000, 8000), 5000);
    CHECK_INT(qw_retry_clamp_ms(50000, 1000, 8000), 8000);

    CHECK_INT(qw_retry_callback_backoff_ms(1), 1000);
    CHECK_INT(qw_retry_callback_backoff_ms(2), 2000);
    CHECK_INT(qw_retry_callback_backoff_ms(3), 4000);
    CHECK_INT(qw_retry_callback_backoff_ms(30), 60000);
    return check_report("retry_test");
}
