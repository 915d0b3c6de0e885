/* Fuzzes the header rules: name and value validation, the Connection token
 * list, the forwarding policy, the forwarded-header builder and call ids. The
 * input is "name\0connection\0value". */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmn/callid.h"
#include "cmn/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum cmn_status check_sink(void *arg, const char *name, const char *value)
{
    (void)arg;
    /* What the builder emits must itself be valid on the wire. */
    if (!cmn_header_name_valid(name) || strchr(value, '\r') != NULL || strchr(value, '\n') != NULL)
        abort();
    return CMN_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[4096 * 3];
    if (size >= sizeof(buf) - 2)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    buf[size + 1] = '\0';
    /* buf ends with two NULs, so both later fields exist (maybe empty). */
    const char *name = buf;
    size_t at = strlen(name) + 1;
    const char *connection = at <= size ? buf + at : buf + size + 1;
    at += strlen(connection) + 1;
    const char *value = at <= size ? buf + at : buf + size + 1;

    bool valid = cmn_header_name_valid(name);
    bool safe = cmn_header_value_safe(value, 4096);
    (void)cmn_header_is_hop_by_hop(name);
    (void)cmn_header_is_reserved(name);
    bool listed = cmn_header_in_connection(connection, name);
    for (int hop = CMN_HOP_TO_FUNCTION; hop <= CMN_HOP_TO_PROCESS; hop++) {
        bool fwd = cmn_header_forwardable((enum cmn_hop)hop, name, connection);
        if (fwd && (listed || cmn_header_is_hop_by_hop(name)))
            abort();
    }
    if (cmn_callid_valid(name) && !cmn_header_value_safe(name, CMN_CALLID_MAX))
        abort(); /* a valid call id is always a safe header value */
    if (safe && valid) {
        struct cmn_forwarded f = {.call_id = "id-1",
                                  .start = "1",
                                  .client_ip = "127.0.0.1",
                                  .client_xff = value,
                                  .host = value,
                                  .client_xfh = NULL};
        (void)cmn_header_add_forwarded(&f, check_sink, NULL);
    }
    return 0;
}
