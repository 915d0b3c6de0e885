/* Duration parsing: plain seconds or Go's time.ParseDuration syntax, the two
 * forms OpenFaaS accepts for its timeout variables (readconfig.go). */
#include "cmn/duration.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *unit;
    double ms;
} units[] = {
    {"ns", 1e-6}, {"us", 1e-3}, {"µs", 1e-3}, {"ms", 1.0}, {"s", 1e3}, {"m", 6e4}, {"h", 3.6e6},
};

enum cmn_status cmn_duration_parse_ms(const char *text, int64_t *out_ms, struct cmn_err *err)
{
    if (text == NULL || *text == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "empty duration");
    const char *p = text;
    bool all_digits = true;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            all_digits = false;
    if (all_digits) {
        if (strlen(p) > 12)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "duration \"%s\" too large", text);
        int64_t secs = 0;
        for (; *p; p++)
            secs = secs * 10 + (*p - '0');
        *out_ms = secs * 1000;
        return CMN_OK;
    }
    double total = 0;
    while (*p) {
        if (!isdigit((unsigned char)*p) && *p != '.')
            return cmn_err_set(err, CMN_ERR_INVALID, 0,
                               "duration \"%s\": expected a number at \"%s\"", text, p);
        double whole = 0, frac = 0, scale = 1;
        bool digits = false;
        while (isdigit((unsigned char)*p)) {
            whole = whole * 10 + (*p - '0');
            p++;
            digits = true;
        }
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p)) {
                scale /= 10;
                frac += (*p - '0') * scale;
                p++;
                digits = true;
            }
        }
        if (!digits)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "duration \"%s\": bad number", text);
        size_t best = 0;
        double mult = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t ul = strlen(units[i].unit);
            if (ul > best && strncmp(p, units[i].unit, ul) == 0) {
                best = ul;
                mult = units[i].ms;
            }
        }
        if (best == 0)
            return cmn_err_set(err, CMN_ERR_INVALID, 0,
                               "duration \"%s\": missing or unknown unit (use h, m, s, ms)", text);
        p += best;
        total += (whole + frac) * mult;
        if (total > 9.0e15)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "duration \"%s\" too large", text);
    }
    *out_ms = (int64_t)total;
    return CMN_OK;
}

char *cmn_duration_format(int64_t ms, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    if (ms == 0) {
        snprintf(buf, size, "0s");
        return buf;
    }
    if (ms < 1000) {
        snprintf(buf, size, "%" PRId64 "ms", ms);
        return buf;
    }
    int64_t h = ms / 3600000, m = (ms / 60000) % 60, s = (ms / 1000) % 60, rest = ms % 1000;
    char tmp[64];
    size_t off = 0;
    if (h > 0)
        off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "%" PRId64 "h", h);
    if (h > 0 || m > 0)
        off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "%" PRId64 "m", m);
    if (rest > 0)
        snprintf(tmp + off, sizeof(tmp) - off, "%" PRId64 ".%03" PRId64 "s", s, rest);
    else
        snprintf(tmp + off, sizeof(tmp) - off, "%" PRId64 "s", s);
    snprintf(buf, size, "%s", tmp);
    return buf;
}
