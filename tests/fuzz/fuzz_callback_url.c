/* Fuzzes the X-Callback-Url check, its host split and the destination
 * rules (the input as a URL checked against fixed rules, and as a rule list). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmn/cbrules.h"
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
    static struct cmn_cbrules *fixed;
    if (fixed == NULL && cmn_cbrules_parse("a.example,*.b.example:8080,10.0.0.0/8,[fd00::1]:443",
                                           &fixed, NULL) != CMN_OK)
        abort();
    char host[256];
    int port = 0;
    if (cmn_callback_url_host(url, host, sizeof(host), &port)) {
        if (port < 0 || port > 65535)
            abort();
        why[0] = '\0';
        if (cmn_cbrules_check_host(fixed, host, port, why, sizeof(why)) == CMN_CB_DENIED &&
            why[0] == '\0')
            abort();
    }
    struct cmn_cbrules *rules = NULL;
    if (cmn_cbrules_parse(url, &rules, NULL) == CMN_OK) {
        (void)cmn_cbrules_check_host(rules, "a.example", 80, why, sizeof(why));
        cmn_cbrules_free(rules);
    }
    free(url);
    return 0;
}
