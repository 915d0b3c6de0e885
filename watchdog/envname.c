/* Header → environment name: the classic watchdog's Http_<Canonical_Name>. */
#include "envname.h"

#include <stdio.h>
#include <string.h>

static bool is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

bool wd_header_env_name(const char *header, char *dst, size_t size)
{
    int w = snprintf(dst, size, "Http_%s", header);
    if (w < 0 || (size_t)w >= size)
        return false;
    char *name = dst + 5;
    bool canonical = true;
    for (const char *c = name; *c != '\0'; c++)
        if (!is_token_char((unsigned char)*c))
            canonical = false;
    bool upper = true;
    for (char *c = name; *c != '\0'; c++) {
        if (canonical) {
            if (upper && *c >= 'a' && *c <= 'z')
                *c = (char)(*c - 'a' + 'A');
            else if (!upper && *c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        }
        upper = *c == '-';
        if (*c == '-')
            *c = '_';
    }
    return true;
}
