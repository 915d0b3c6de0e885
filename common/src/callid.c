/* Call ids: random UUIDs from libuuid, and the rule for client-supplied ids. */
#include "cmn/callid.h"

#include <string.h>
#include <uuid/uuid.h>

void cmn_callid_new(char *out)
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool cmn_callid_valid(const char *id)
{
    if (id == NULL)
        return false;
    size_t len = strlen(id);
    if (len == 0 || len > CMN_CALLID_MAX - 1)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}
