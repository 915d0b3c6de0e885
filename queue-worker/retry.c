/* Back-off and Retry-After arithmetic of the queue-worker (see retry.h).
 * Pure functions only; the caller owns clocks and random numbers. HTTP-dates
 * are parsed by qw_http_parse_date (libcurl's curl_getdate, all three RFC 9110
 * forms) because http.c is the one module allowed to call libcurl. */
#include "retry.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "http.h"

int64_t qw_retry_backoff_ms(uint64_t attempt, int64_t initial_ms, int64_t max_ms, double unit)
{
    if (initial_ms < 0)
        initial_ms = 0;
    if (max_ms < initial_ms)
        max_ms = initial_ms;
    if (attempt < 1)
        attempt = 1;
    if (!(unit >= 0.0)) /* also catches NaN */
        unit = 0.0;
    if (unit > 1.0)
        unit = 1.0;
    int64_t base = initial_ms;
    for (uint64_t i = 1; i < attempt && base < max_ms; i++)
        base = base > max_ms / 2 ? max_ms : base * 2;
    if (base > max_ms)
        base = max_ms;
    int64_t delay = (int64_t)((double)base * (0.5 + 0.5 * unit));
    return qw_retry_clamp_ms(delay, initial_ms, max_ms);
}

int64_t qw_retry_clamp_ms(int64_t delay_ms, int64_t initial_ms, int64_t max_ms)
{
    if (delay_ms < initial_ms)
        delay_ms = initial_ms;
    if (delay_ms > max_ms)
        delay_ms = max_ms;
    return delay_ms;
}

bool qw_retry_after_parse_ms(const char *value, int64_t now_s, int64_t *out_ms)
{
    if (!value)
        return false;
    while (*value == ' ' || *value == '\t')
        value++;
    if (!*value)
        return false;
    if (isdigit((unsigned char)*value)) {
        char *end = NULL;
        errno = 0;
        long long s = strtoll(value, &end, 10);
        while (end && (*end == ' ' || *end == '\t'))
            end++;
        if (errno == 0 && end && *end == '\0' && s >= 0) {
            *out_ms = s > INT64_MAX / 1000 ? INT64_MAX : (int64_t)s * 1000;
            return true;
        }
        /* not delta-seconds: an HTTP-date never starts with a digit either,
         * except the obsolete forms curl still accepts; try it below */
    }
    int64_t t = qw_http_parse_date(value);
    if (t < 0)
        return false;
    *out_ms = t <= now_s ? 0 : (t - now_s) * 1000;
    return true;
}

int64_t qw_retry_callback_backoff_ms(int attempt)
{
    if (attempt < 1)
        attempt = 1;
    if (attempt > 6)
        return 60000;
    int64_t ms = (int64_t)1000 << (attempt - 1);
    return ms > 60000 ? 60000 : ms;
}
