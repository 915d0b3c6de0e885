/* Retry arithmetic of the queue-worker, as pure functions (no clock, no
 * randomness of their own, no I/O) so that a unit test can pin every case:
 * exponential back-off with equal jitter, Retry-After parsing, callback
 * back-off. Units are milliseconds; "attempt" counts from 1 (first delivery). */
#ifndef QW_RETRY_H
#define QW_RETRY_H

#include <stdbool.h>
#include <stdint.h>

/* Delay before attempt `attempt` + 1, after attempt `attempt` (>= 1) failed:
 *   base  = min(max_ms, initial_ms × 2^(attempt-1))
 *   delay = base × (0.5 + 0.5 × unit)          (equal jitter, 50–100 %)
 * then floored at initial_ms and capped at max_ms, so the first retry waits
 * exactly initial_ms and no retry ever waits less. `unit` is a random number
 * in [0, 1] supplied by the caller (clamped). Pure, any thread. */
int64_t qw_retry_backoff_ms(uint64_t attempt, int64_t initial_ms, int64_t max_ms, double unit);

/* Parses a Retry-After value (`value` borrowed): delta-seconds ("120") or an
 * HTTP-date, relative to `now_s` (seconds since the Unix epoch). Writes the
 * delay in ms to `*out_ms` (dates in the past give 0) and returns true; returns
 * false and leaves `*out_ms` alone for anything else. Pure, any thread. */
bool qw_retry_after_parse_ms(const char *value, int64_t now_s, int64_t *out_ms);

/* Clamps `delay_ms` to [initial_ms, max_ms] (the rule applied to Retry-After). */
int64_t qw_retry_clamp_ms(int64_t delay_ms, int64_t initial_ms, int64_t max_ms);

/* Delay before callback attempt `attempt` + 1 after attempt `attempt` (>= 1)
 * failed: 1 s, 2 s, 4 s, ... capped at 60 s. Pure. */
int64_t qw_retry_callback_backoff_ms(int attempt);

#endif
