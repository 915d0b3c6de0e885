/* Call ids: random UUID v4 (libuuid), lowercase, dashed, as OpenFaaS generates
 * (callid_middleware.go). Client-supplied ids are accepted when they are safe to
 * carry in NATS headers and logs. */
#ifndef CMN_CALLID_H
#define CMN_CALLID_H

#include <stdbool.h>

#define CMN_CALLID_MAX 129 /* longest accepted id (128) + NUL */

/* Writes a new random id (36 chars + NUL) into `out` (>= 37 bytes). Any thread. */
void cmn_callid_new(char *out);

/* True when `id` is 1..128 characters of [A-Za-z0-9._:-], neither starting
 * nor ending with '.' and without ".." (the id is a token of NATS subjects:
 * the call's work subject and its record key). */
bool cmn_callid_valid(const char *id);

#endif
