/* Client-supplied URL checks (libevent's URI parser: no home-made parsing). */
#include "cmn/url.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <event2/http.h>

#include "cmn/headers.h"

/* One strict dotted-decimal IPv4 address: four parts 0..255, no leading
 * zeros (an octal spelling), nothing else. */
static bool dotted_quad(const char *h)
{
    int parts = 0;
    const char *p = h;
    while (parts < 4) {
        if (*p < '0' || *p > '9')
            return false;
        int v = 0, digits = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9' && digits < 4) {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits > 3 || v > 255 || (digits > 1 && *start == '0'))
            return false;
        parts++;
        if (parts < 4) {
            if (*p != '.')
                return false;
            p++;
        }
    }
    return *p == '\0';
}

/* A label an IPv4 parser would read as a number: digits, or 0x and hex. */
static bool numeric_label(const char *l)
{
    if (l[0] == '0' && (l[1] == 'x' || l[1] == 'X')) {
        for (const char *p = l + 2; *p != '\0'; p++)
            if (!((*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f')))
                return false;
        return true;
    }
    if (*l == '\0')
        return false;
    for (const char *p = l; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* Why `host` (as libevent returns it, IPv6 literals bracketed) is not a plain
 * DNS name, a dotted-quad IPv4 address or a bracketed IPv6 literal; NULL when
 * it is one. Numeric spellings that resolvers read as IPv4 (a bare integer,
 * hex, octal, fewer than four parts) are refused: they are how allowlists
 * get bypassed. */
static const char *host_problem(const char *host)
{
    size_t len = strlen(host);
    if (host[0] == '[') {
        char inner[64];
        struct in6_addr a6;
        if (len < 3 || host[len - 1] != ']' || len - 2 >= sizeof(inner))
            return "not a valid IPv6 literal";
        memcpy(inner, host + 1, len - 2);
        inner[len - 2] = '\0';
        return inet_pton(AF_INET6, inner, &a6) == 1 ? NULL : "not a valid IPv6 literal";
    }
    if (strchr(host, '%') != NULL)
        return "percent-encoded host";
    if (len > 253)
        return "host name too long";
    /* the last label decides: a name never ends in a numeric label */
    const char *last = strrchr(host, '.');
    if (numeric_label(last != NULL ? last + 1 : host))
        return dotted_quad(host) ? NULL : "an IPv4 address must be written as four decimal numbers";
    size_t label = 0;
    char prev = '.';
    for (const char *p = host; *p != '\0'; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0 || prev == '-')
                return "not a valid host name";
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || (c == '-' && label > 0)) {
            if (++label > 63)
                return "host name label too long";
        } else {
            return "not a valid host name";
        }
        prev = c;
    }
    if (label == 0 || prev == '-')
        return "not a valid host name";
    return NULL;
}

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
    const char *bad = host_problem(host);
    if (bad != NULL) {
        snprintf(why, size, "invalid X-Callback-Url: %s", bad);
        goto out;
    }
    int port = evhttp_uri_get_port(u);
    if (port == 0 || port > 65535) {
        snprintf(why, size, "invalid X-Callback-Url: port must be 1 to 65535");
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
