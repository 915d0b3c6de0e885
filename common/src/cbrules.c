/* Callback destination rules: parsing the allowlist and matching a URL host
 * or a socket address against it. Addresses are parsed with inet_pton. */
#include "cmn/cbrules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENTRY_MAX 256

enum kind { K_NAME, K_SUFFIX, K_ADDR };

struct rule {
    enum kind kind;
    char name[ENTRY_MAX]; /* K_NAME: the name; K_SUFFIX: ".domain" */
    int family;           /* K_ADDR: AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix; /* K_ADDR: bits */
    int port;   /* 0 = any */
    char text[ENTRY_MAX];
};

struct cmn_cbrules {
    size_t count;
    bool has_addr;
    struct rule *items;
};

static bool parse_port(const char *s, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 1 || v > 65535)
        return false;
    *out = (int)v;
    return true;
}

static bool name_valid(const char *s)
{
    if (s[0] == '\0' || strlen(s) > 253 || strspn(s, "0123456789.") == strlen(s))
        return false; /* all digits and dots: a malformed address, not a name */
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_'))
            return false;
    return s[0] != '.' && s[strlen(s) - 1] != '.' && strstr(s, "..") == NULL;
}

/* "a.b.c.d", "v6", with an optional "/prefix". */
static bool parse_addr(const char *s, struct rule *r)
{
    char buf[ENTRY_MAX];
    snprintf(buf, sizeof(buf), "%s", s);
    char *slash = strchr(buf, '/');
    int prefix = -1;
    if (slash != NULL) {
        *slash = '\0';
        char *end = NULL;
        long v = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end != '\0' || v < 0 || v > 128)
            return false;
        prefix = (int)v;
    }
    if (inet_pton(AF_INET, buf, r->addr) == 1) {
        r->family = AF_INET;
        if (prefix > 32)
            return false;
        r->prefix = prefix < 0 ? 32 : prefix;
    } else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
        r->family = AF_INET6;
        r->prefix = prefix < 0 ? 128 : prefix;
    } else {
        return false;
    }
    r->kind = K_ADDR;
    return true;
}

static bool parse_entry(const char *e, struct rule *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->text, sizeof(r->text), "%s", e);
    char buf[ENTRY_MAX];
    snprintf(buf, sizeof(buf), "%s", e);
    /* [v6]:port or [v6] */
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (close == NULL)
            return false;
        *close = '\0';
        if (close[1] == ':' && !parse_port(close + 2, &r->port))
            return false;
        if (close[1] != '\0' && close[1] != ':')
            return false;
        return parse_addr(buf + 1, r) && r->family == AF_INET6;
    }
    /* a bare IPv6 address or range has more than one ':' */
    const char *colon = strchr(buf, ':');
    if (colon != NULL && strchr(colon + 1, ':') != NULL)
        return parse_addr(buf, r) && r->family == AF_INET6;
    char *c = strchr(buf, ':');
    if (c != NULL) {
        *c = '\0';
        if (!parse_port(c + 1, &r->port))
            return false;
    }
    if (parse_addr(buf, r))
        return true;
    if (strchr(buf, '/') != NULL)
        return false;
    if (strncmp(buf, "*.", 2) == 0) {
        if (!name_valid(buf + 2))
            return false;
        r->kind = K_SUFFIX;
        snprintf(r->name, sizeof(r->name), "%s", buf + 1); /* ".domain" */
        return true;
    }
    if (!name_valid(buf))
        return false;
    r->kind = K_NAME;
    snprintf(r->name, sizeof(r->name), "%s", buf);
    return true;
}

enum cmn_status cmn_cbrules_parse(const char *list, struct cmn_cbrules **out, struct cmn_err *err)
{
    struct cmn_cbrules *rules = calloc(1, sizeof(*rules));
    if (rules == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    const char *p = list != NULL ? list : "";
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len > 0) {
            char entry[ENTRY_MAX];
            struct rule r;
            if (len >= sizeof(entry)) {
                cmn_cbrules_free(rules);
                return cmn_err_set(err, CMN_ERR_INVALID, 0, "callback_allowlist: entry too long");
            }
            memcpy(entry, p, len);
            entry[len] = '\0';
            if (!parse_entry(entry, &r)) {
                cmn_cbrules_free(rules);
                return cmn_err_set(err, CMN_ERR_INVALID, 0,
                                   "callback_allowlist: \"%.100s\" is not a host, host:port, "
                                   "*.domain, address or CIDR",
                                   entry);
            }
            struct rule *grown = realloc(rules->items, (rules->count + 1) * sizeof(*grown));
            if (grown == NULL) {
                cmn_cbrules_free(rules);
                return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            }
            rules->items = grown;
            rules->items[rules->count++] = r;
            if (r.kind == K_ADDR)
                rules->has_addr = true;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (rules->count == 0 && list != NULL && strspn(list, " \t") != strlen(list)) {
        cmn_cbrules_free(rules); /* "," or similar: not "allow everything" by mistake */
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "callback_allowlist: no entry in \"%.100s\" (leave it empty to "
                           "allow every destination)",
                           list);
    }
    *out = rules;
    return CMN_OK;
}

void cmn_cbrules_free(struct cmn_cbrules *rules)
{
    if (rules == NULL)
        return;
    free(rules->items);
    free(rules);
}

bool cmn_cbrules_open(const struct cmn_cbrules *rules)
{
    return rules == NULL || rules->count == 0;
}

bool cmn_cbrules_has_addresses(const struct cmn_cbrules *rules)
{
    return rules != NULL && rules->has_addr;
}

static bool prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
    int bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

static bool addr_allowed(const struct cmn_cbrules *rules, int family, const unsigned char *addr,
                         int port)
{
    for (size_t i = 0; i < rules->count; i++) {
        const struct rule *r = &rules->items[i];
        if (r->kind != K_ADDR || r->family != family || (r->port != 0 && r->port != port))
            continue;
        if (prefix_match(addr, r->addr, r->prefix))
            return true;
    }
    return false;
}

enum cmn_cb_verdict cmn_cbrules_check_host(const struct cmn_cbrules *rules, const char *host,
                                           int port, char *why, size_t size)
{
    if (cmn_cbrules_open(rules))
        return CMN_CB_ALLOWED;
    char h[ENTRY_MAX];
    size_t len = strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        snprintf(h, sizeof(h), "%.*s", (int)(len - 2), host + 1);
    } else {
        snprintf(h, sizeof(h), "%s", host);
    }
    unsigned char a[16];
    int family = 0;
    if (inet_pton(AF_INET, h, a) == 1)
        family = AF_INET;
    else if (inet_pton(AF_INET6, h, a) == 1)
        family = AF_INET6;
    if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
        memmove(a, a + 12, 4); /* as the worker sees it: IPv4 */
        family = AF_INET;
    }
    if (family != 0) {
        if (addr_allowed(rules, family, a, port))
            return CMN_CB_ALLOWED;
        snprintf(why, size, "callback destination %.100s port %d is not in callback_allowlist", h,
                 port);
        return CMN_CB_DENIED;
    }
    size_t hl = strlen(h);
    for (size_t i = 0; i < rules->count; i++) {
        const struct rule *r = &rules->items[i];
        if (r->port != 0 && r->port != port)
            continue;
        if (r->kind == K_NAME && strcasecmp(r->name, h) == 0)
            return CMN_CB_ALLOWED;
        size_t sl = strlen(r->name);
        if (r->kind == K_SUFFIX && hl > sl && strcasecmp(h + hl - sl, r->name) == 0)
            return CMN_CB_ALLOWED;
    }
    if (rules->has_addr)
        return CMN_CB_CHECK_ADDRESS;
    snprintf(why, size, "callback destination %.100s port %d is not in callback_allowlist", h,
             port);
    return CMN_CB_DENIED;
}

bool cmn_cbrules_check_addr(const struct cmn_cbrules *rules, const struct sockaddr *sa, char *why,
                            size_t size)
{
    if (cmn_cbrules_open(rules))
        return true;
    char text[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    bool ok = false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        port = ntohs(in->sin_port);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        ok = addr_allowed(rules, AF_INET, (const unsigned char *)&in->sin_addr, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        port = ntohs(in6->sin6_port);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
        const unsigned char *b = in6->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            ok = addr_allowed(rules, AF_INET, b + 12, port);
        else
            ok = addr_allowed(rules, AF_INET6, b, port);
    }
    if (!ok)
        snprintf(why, size, "callback address %s port %d is not in callback_allowlist", text, port);
    return ok;
}
