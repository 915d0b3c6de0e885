/* Fuzzes the wire-format decoder (what the worker reads from the queue): the
 * input is a list of "name\0value\0" pairs turned into a header list, decoded,
 * and when it decodes, encoded again (the two must agree on what is valid). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cmn/codec.h"
#include "cmn/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[8192];
    if (size >= sizeof(buf))
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    struct cmn_headers in;
    cmn_headers_init(&in);
    size_t i = 0;
    while (i < size) {
        const char *name = buf + i;
        i += strlen(name) + 1;
        const char *value = i < size ? buf + i : "";
        if (i < size)
            i += strlen(value) + 1;
        if (cmn_headers_add(&in, name, value) != CMN_OK)
            break;
    }
    struct cmn_call call;
    struct cmn_err err;
    cmn_call_init(&call);
    if (cmn_call_decode(&in, &call, &err) == CMN_OK) {
        struct cmn_headers out;
        cmn_headers_init(&out);
        (void)cmn_call_encode(&call, &out, &err);
        cmn_headers_free(&out);
    }
    cmn_call_free(&call);
    cmn_headers_free(&in);
    return 0;
}
