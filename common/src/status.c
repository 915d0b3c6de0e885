/* Status names and the error-detail helper used by every libcommon module. */
#include "cmn/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
    [CMN_OK] = "CMN_OK",
    [CMN_ERR_INVALID] = "CMN_ERR_INVALID",
    [CMN_ERR_NOMEM] = "CMN_ERR_NOMEM",
    [CMN_ERR_NOT_FOUND] = "CMN_ERR_NOT_FOUND",
    [CMN_ERR_IO] = "CMN_ERR_IO",
    [CMN_ERR_TIMEOUT] = "CMN_ERR_TIMEOUT",
    [CMN_ERR_NATS] = "CMN_ERR_NATS",
    [CMN_ERR_TOO_LARGE] = "CMN_ERR_TOO_LARGE",
    [CMN_ERR_UNAVAILABLE] = "CMN_ERR_UNAVAILABLE",
    [CMN_ERR_DUPLICATE] = "CMN_ERR_DUPLICATE",
    [CMN_ERR_CONFLICT] = "CMN_ERR_CONFLICT",
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == CMN_STATUS_COUNT,
               "status_names must name every enum cmn_status value");

const char *cmn_status_name(enum cmn_status status)
{
    if ((unsigned)status >= CMN_STATUS_COUNT)
        return "CMN_STATUS_UNKNOWN";
    return status_names[status];
}

enum cmn_status cmn_err_set(struct cmn_err *err, enum cmn_status status, int code, const char *fmt,
                            ...)
{
    if (err == NULL)
        return status;
    err->status = status;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        err->msg[0] = '\0';
    return status;
}

void cmn_err_clear(struct cmn_err *err)
{
    if (err == NULL)
        return;
    err->status = CMN_OK;
    err->code = 0;
    err->msg[0] = '\0';
}
