/* Fuzzes the X-Callback-Url check. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmn/url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (url == NULL)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    char why[256];
    why[0] = '\0';
    if (!cmn_callback_url_check(url, why, sizeof(why)) && why[0] == '\0')
        abort(); /* a refusal always says why */
    free(url);
    return 0;
}
