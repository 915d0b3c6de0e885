/* Fuzzes the route and name split of /function/<name>[/<path>] and
 * /async-function/<name>[/<path>]: the rest of the path after the prefix. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmn/name.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *rest = malloc(size + 1);
    if (rest == NULL)
        return 0;
    memcpy(rest, data, size);
    rest[size] = '\0';
    const char *name = NULL, *sub = NULL;
    size_t name_len = 0;
    if (cmn_route_split(rest, &name, &name_len, &sub) == CMN_OK) {
        struct cmn_fn_name fn;
        struct cmn_err err;
        if (cmn_name_parse(name, name_len, "openfaas-fn", &fn, &err) == CMN_OK) {
            if (strlen(fn.name) == 0 || strlen(fn.ns) == 0)
                abort(); /* a parsed name is never empty */
        }
        (void)strlen(sub);
    }
    free(rest);
    return 0;
}
