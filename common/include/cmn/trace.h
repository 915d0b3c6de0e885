/* W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent`
 * header a caller sends is checked at the gateway, carried through the queue
 * with the call's other headers, passed to the function and to the callback,
 * and its trace id is written next to the call id in the logs. The project
 * takes part in no trace itself (it records no spans), so a valid header
 * passes unchanged, as an intermediary that does not trace passes it; an
 * invalid one is dropped with its `tracestate`. Pure functions, any thread. */
#ifndef CMN_TRACE_H
#define CMN_TRACE_H

#include <stdbool.h>
#include <stddef.h>

#define CMN_TRACEPARENT "traceparent"
#define CMN_TRACESTATE "tracestate"
/* A trace id: 32 lowercase hex digits, + NUL. */
#define CMN_TRACE_ID_MAX 33

/* True when `value` (NUL-terminated) is a traceparent this version of the
 * specification accepts: "<version>-<trace-id>-<parent-id>-<flags>" with
 * 2, 32, 16 and 2 lowercase hex digits, version not "ff", trace id and
 * parent id not all zeros; version 00 exactly 55 characters, a later
 * version at least 55 followed by '-' and more. The trace id goes to
 * `trace_id` (CMN_TRACE_ID_MAX bytes, may be NULL); "" when invalid. */
bool cmn_traceparent_parse(const char *value, char *trace_id);

#endif
