/* Client-supplied URL checks (libevent's URI parser: no home-made parsing). */
#include "cmn/url.h"

#include <stdbool.h>
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

/* A URL as logged: userinfo ("user:secret@") becomes "***@" and every query
 * value "***" (tokens often travel there), unless write_debug is on. */
const char *cmn_url_redact(const char *url, char *buf, size_t size)
{
    if (size < 8)
        return url;
    const char *scheme = strstr(url, "://");
    const char *host = scheme != NULL ? scheme + 3 : url;
    size_t auth_len = strcspn(host, "/?#");
    const char *at = scheme != NULL ? memchr(host, '@', auth_len) : NULL;
    size_t o = 0;
    const char *p = url;
    if (at) {
        o = (size_t)snprintf(buf, size, "%.*s***", (int)(host - url), url);
        p = at;
    }
    bool in_query = false, in_value = false;
    for (; *p && o + 4 < size; p++) {
        char ch = *p;
        if (ch == '#')
            break;
        if (ch == '?' && !in_query) {
            in_query = true;
        } else if (in_query && (ch == '&' || ch == ';')) {
            in_value = false;
        } else if (in_query && ch == '=' && !in_value) {
            buf[o++] = '=';
            memcpy(buf + o, "***", 3);
            o += 3;
            in_value = true;
            continue;
        }
        if (!in_value)
            buf[o++] = ch;
    }
    buf[o] = '\0';
    return buf;
}
