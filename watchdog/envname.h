/* The watchdog's request-header → environment-variable name mapping.
 * Pure, any thread, never blocks. */
#ifndef WD_ENVNAME_H
#define WD_ENVNAME_H

#include <stdbool.h>
#include <stddef.h>

/* Writes the variable name for request header `header` into `dst` (`size`
 * bytes): "x-call-id" → "Http_X_Call_Id", i.e. Go's CanonicalMIMEHeaderKey
 * (what the classic watchdog sees in r.Header), then '-' → '_'. A name with
 * bytes outside the token set stays as sent, as in Go. Returns false (dst
 * unspecified) when it does not fit. */
bool wd_header_env_name(const char *header, char *dst, size_t size);

#endif
