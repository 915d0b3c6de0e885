/* Fuzzes the watchdog's header → environment name mapping. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envname.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = malloc(size + 1);
    if (name == NULL)
        return 0;
    memcpy(name, data, size);
    name[size] = '\0';
    char env[256];
    if (wd_header_env_name(name, env, sizeof(env))) {
        if (strncmp(env, "Http_", 5) != 0 || strchr(env, '-') != NULL)
            abort();
    }
    free(name);
    return 0;
}
