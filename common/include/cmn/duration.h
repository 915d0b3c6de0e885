/* Duration parsing with OpenFaaS semantics: a bare non-negative integer is
 * seconds ("60"), otherwise a Go-style duration ("1m05s", "500ms", "1h", "1.5s").
 * Source: reference/openfaas-async.md §1.7 (gateway readconfig.go). */
#ifndef CMN_DURATION_H
#define CMN_DURATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/status.h"

/* Parses `text` (borrowed, NUL-terminated) into milliseconds in `*out_ms`
 * (written only on success). Units: h, m, s, ms, us, ns; fractions allowed;
 * sub-millisecond results round down. Returns CMN_OK or CMN_ERR_INVALID (empty,
 * negative, unknown unit, overflow). Pure function: any thread, never blocks. */
enum cmn_status cmn_duration_parse_ms(const char *text, int64_t *out_ms, struct cmn_err *err);

/* Formats `ms` Go-style ("1m5s", "500ms", "0s") into `buf` of `size` bytes.
 * Returns `buf`. Any thread. */
char *cmn_duration_format(int64_t ms, char *buf, size_t size);

/* Formats wall-clock `ms` (since the Unix epoch) as an RFC 3339 UTC time with
 * milliseconds, "2026-12-02T05:01:02.123Z", into `buf` of `size` bytes.
 * A time outside the years 0000-9999, or a `buf` under 25 bytes, gives
 * "invalid" (cut to `size`). Returns `buf`. Pure: any thread, never blocks. */
char *cmn_time_format(int64_t ms, char *buf, size_t size);

/* Parses an RFC 3339 date-time (RFC 3339 §5.6: "2026-12-02T05:01:02Z", an
 * optional fraction, "Z" or a +hh:mm / -hh:mm offset; 't' and 'z' accepted)
 * into ms since the Unix epoch (fraction below 1 ms dropped). Returns false
 * for anything else, including out-of-range fields. Pure, any thread. */
bool cmn_time_parse(const char *text, int64_t *out_ms);

#endif
