/* traceparent checks (W3C Trace Context, level 1 §3.2). */
#include "cmn/trace.h"

#include <string.h>

static bool lower_hex(const char *p, size_t n, bool *all_zero)
{
    bool zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        if (c != '0')
            zero = false;
    }
    if (all_zero != NULL)
        *all_zero = zero;
    return true;
}

bool cmn_traceparent_parse(const char *v, char *trace_id)
{
    if (trace_id != NULL)
        trace_id[0] = '\0';
    if (v == NULL)
        return false;
    size_t len = strlen(v);
    bool zero = false;
    if (len < 55 || !lower_hex(v, 2, NULL) || strncmp(v, "ff", 2) == 0 || v[2] != '-' ||
        v[35] != '-' || v[52] != '-')
        return false;
    if (!lower_hex(v + 3, 32, &zero) || zero)
        return false;
    if (!lower_hex(v + 36, 16, &zero) || zero)
        return false;
    if (!lower_hex(v + 53, 2, NULL))
        return false;
    /* version 00 has exactly four fields; a later one may add fields */
    if (strncmp(v, "00", 2) == 0 ? len != 55 : (len > 55 && v[55] != '-'))
        return false;
    if (trace_id != NULL) {
        memcpy(trace_id, v + 3, 32);
        trace_id[32] = '\0';
    }
    return true;
}
