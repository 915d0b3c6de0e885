/* Call ids: random UUIDs from libuuid, and the rule for client-supplied ids. */
#include "cmn/callid.h"

#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <uuid/uuid.h>

void cmn_callid_new(char *out)
{
    uuid_t u;
    /* libuuid's uuid_generate_random re-seeds random(3) on every call, which
     * showed in gateway profiles; take the 16 random bytes from the kernel and
     * let libuuid do the version/variant-free formatting. */
    if (getrandom(u, sizeof(u), 0) != (ssize_t)sizeof(u)) {
        uuid_generate_random(u);
    } else {
        u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4 (RFC 9562 §5.4) */
        u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* variant 10 */
    }
    uuid_unparse_lower(u, out);
}

bool cmn_callid_valid(const char *id)
{
    if (id == NULL)
        return false;
    size_t len = strlen(id);
    if (len == 0 || len > CMN_CALLID_MAX - 1 || id[0] == '.' || id[len - 1] == '.' ||
        strstr(id, "..") != NULL)
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
