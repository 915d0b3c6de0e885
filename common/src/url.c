/* Client-supplied URL checks (libevent's URI parser: no home-made parsing). */
#include "cmn/url.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

#include "cmn/headers.h"

bool cmn_callback_url_check(const char *url, char *why, size_t size)
{
    if (!cmn_header_value_safe(url, CMN_CALLBACK_URL_MAX)) {
        snprintf(why, size, "invalid X-Callback-Url: contains control characters or is too long");
        return false;
    }
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    if (u == NULL) {
        snprintf(why, size, "invalid X-Callback-Url: not a valid URL");
        return false;
    }
    bool ok = false;
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    if (scheme == NULL || (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        snprintf(why, size, "invalid X-Callback-Url: must be an absolute http or https URL");
        goto out;
    }
    if (host == NULL || host[0] == '\0') {
        snprintf(why, size, "invalid X-Callback-Url: no host");
        goto out;
    }
    ok = true;
out:
    evhttp_uri_free(u);
    return ok;
}

bool cmn_callback_url_host(const char *url, char *host, size_t size, int *port)
{
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    if (u == NULL)
        return false;
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *h = evhttp_uri_get_host(u);
    int p = evhttp_uri_get_port(u);
    bool ok = h != NULL && h[0] != '\0' && scheme != NULL && p <= 65535;
    if (ok) {
        size_t len = strlen(h);
        if (len >= 2 && h[0] == '[' && h[len - 1] == ']') {
            h++;
            len -= 2;
        }
        ok = len < size;
        if (ok) {
            memcpy(host, h, len);
            host[len] = '\0';
        }
        *port = p > 0 ? p : strcasecmp(scheme, "https") == 0 ? 443 : 80;
    }
    evhttp_uri_free(u);
    return ok;
}
