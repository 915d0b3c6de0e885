/* The queued-call codec, wire format version 1 (DESIGN.md §3): metadata in
 * Faas-* / Nats-Msg-Id headers, request headers copied minus reserved and
 * hop-by-hop names. The payload (raw body) is not touched here. */
#include "cmn/codec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmn/config.h"
#include "cmn/name.h"
#include "cmn/url.h"

/* Header values larger than this are refused: NATS and HTTP peers choke on them. */
#define VALUE_MAX 16384

void cmn_call_init(struct cmn_call *call)
{
    memset(call, 0, sizeof(*call));
    cmn_headers_init(&call->headers);
    cmn_fn_policy_init(&call->policy);
}

void cmn_call_free(struct cmn_call *call)
{
    if (call == NULL)
        return;
    free(call->function);
    free(call->method);
    free(call->path);
    free(call->query);
    free(call->callback_url);
    cmn_headers_free(&call->headers);
    cmn_call_init(call);
}

static enum cmn_status add_checked(cmn_header_sink sink, void *arg, const char *name,
                                   const char *value, struct cmn_err *err)
{
    if (!cmn_header_name_valid(name))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid header name \"%.64s\"", name);
    if (!cmn_header_value_safe(value, VALUE_MAX))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "header %s holds CR/LF or is too long", name);
    enum cmn_status st = sink(arg, name, value);
    if (st == CMN_ERR_NOMEM)
        return cmn_err_set(err, st, 0, "out of memory");
    if (st != CMN_OK)
        return cmn_err_set(err, st, 0, "cannot add header %s: %s", name, cmn_status_name(st));
    return CMN_OK;
}

static enum cmn_status encode_into(const struct cmn_call *call, cmn_header_sink sink, void *arg,
                                   struct cmn_err *err)
{
    /* Digits by hand: printf showed in per-request profiles. */
    char start[32], rev[24];
    size_t n = 0, len = 0;
    uint64_t u =
        call->start_ns < 0 ? (uint64_t)0 - (uint64_t)call->start_ns : (uint64_t)call->start_ns;
    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (call->start_ns < 0)
        start[len++] = '-';
    while (n > 0)
        start[len++] = rev[--n];
    start[len] = '\0';
    enum cmn_status st;
    if ((st = add_checked(sink, arg, CMN_HDR_MSG_ID, call->call_id, err)) != CMN_OK ||
        (st = add_checked(sink, arg, CMN_HDR_VERSION, CMN_WIRE_VERSION, err)) != CMN_OK ||
        (st = add_checked(sink, arg, CMN_HDR_FUNCTION, call->function, err)) != CMN_OK ||
        (st = add_checked(sink, arg, CMN_HDR_METHOD, call->method, err)) != CMN_OK ||
        (st = add_checked(sink, arg, CMN_HDR_START, start, err)) != CMN_OK)
        return st;
    /* Empty path and query are sent as absent headers: "" and absent decode alike. */
    if (call->path != NULL && call->path[0] != '\0' &&
        (st = add_checked(sink, arg, CMN_HDR_PATH, call->path, err)) != CMN_OK)
        return st;
    if (call->query != NULL && call->query[0] != '\0' &&
        (st = add_checked(sink, arg, CMN_HDR_QUERY, call->query, err)) != CMN_OK)
        return st;
    if (call->callback_url != NULL &&
        (st = add_checked(sink, arg, CMN_HDR_CALLBACK, call->callback_url, err)) != CMN_OK)
        return st;
    if (call->not_before_ns > 0) {
        char nb[32];
        snprintf(nb, sizeof(nb), "%" PRId64, call->not_before_ns);
        if ((st = add_checked(sink, arg, CMN_HDR_NOT_BEFORE, nb, err)) != CMN_OK)
            return st;
    }
    const struct cmn_fn_policy *pol = &call->policy;
    char num[32];
    if (call->parent_id[0] != '\0' &&
        (st = add_checked(sink, arg, CMN_HDR_PARENT_CALL_ID, call->parent_id, err)) != CMN_OK)
        return st;
    if (call->chain_depth > 0) {
        snprintf(num, sizeof(num), "%d", call->chain_depth);
        if ((st = add_checked(sink, arg, CMN_HDR_CHAIN_DEPTH, num, err)) != CMN_OK)
            return st;
    }
    if (pol->queue[0] != '\0' &&
        (st = add_checked(sink, arg, CMN_HDR_QUEUE, pol->queue, err)) != CMN_OK)
        return st;
    if (pol->retry_attempts >= 0) {
        snprintf(num, sizeof(num), "%d", pol->retry_attempts);
        if ((st = add_checked(sink, arg, CMN_HDR_RETRY_ATTEMPTS, num, err)) != CMN_OK)
            return st;
    }
    if (pol->retry_codes[0] != '\0' &&
        (st = add_checked(sink, arg, CMN_HDR_RETRY_CODES, pol->retry_codes, err)) != CMN_OK)
        return st;
    if (pol->retry_min_wait_ms >= 0) {
        snprintf(num, sizeof(num), "%" PRId64, pol->retry_min_wait_ms);
        if ((st = add_checked(sink, arg, CMN_HDR_RETRY_MIN_WAIT, num, err)) != CMN_OK)
            return st;
    }
    if (pol->retry_max_wait_ms >= 0) {
        snprintf(num, sizeof(num), "%" PRId64, pol->retry_max_wait_ms);
        if ((st = add_checked(sink, arg, CMN_HDR_RETRY_MAX_WAIT, num, err)) != CMN_OK)
            return st;
    }
    /* NATS refuses a header block over 64 KiB; say so as a client error
     * instead of failing later as a broker error. */
    size_t block = 0;
    for (size_t i = 0; i < call->headers.count; i++)
        block += strlen(call->headers.items[i].name) + strlen(call->headers.items[i].value) + 4;
    if (block > CMN_HEADERS_MAX_BYTES)
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "request headers take %zu bytes, more than the %d bytes a queued "
                           "call can carry",
                           block, CMN_HEADERS_MAX_BYTES);
    for (size_t i = 0; i < call->headers.count; i++) {
        const struct cmn_header *h = &call->headers.items[i];
        if (cmn_header_is_reserved(h->name) || cmn_header_is_hop_by_hop(h->name))
            continue;
        if ((st = add_checked(sink, arg, h->name, h->value, err)) != CMN_OK)
            return st;
    }
    return CMN_OK;
}

static bool call_encodable(const struct cmn_call *call)
{
    return cmn_callid_valid(call->call_id) && call->function != NULL && call->method != NULL;
}

static enum cmn_status list_sink(void *arg, const char *name, const char *value)
{
    return cmn_headers_add(arg, name, value);
}

enum cmn_status cmn_call_encode(const struct cmn_call *call, struct cmn_headers *out,
                                struct cmn_err *err)
{
    if (!call_encodable(call))
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "a valid call id, a function and a method are required");
    /* Appended in place (no temporary copy: this runs per async request); on
     * error the pairs added so far are removed again, so `out` is unchanged. */
    size_t keep = out->count;
    enum cmn_status st = encode_into(call, list_sink, out, err);
    if (st != CMN_OK) {
        for (size_t i = keep; i < out->count; i++) {
            free(out->items[i].name);
            free(out->items[i].value);
        }
        out->count = keep;
    }
    return st;
}

enum cmn_status cmn_call_encode_each(const struct cmn_call *call, cmn_header_sink sink, void *arg,
                                     struct cmn_err *err)
{
    if (!call_encodable(call))
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "a valid call id, a function and a method are required");
    return encode_into(call, sink, arg, err);
}

static enum cmn_status dup_field(char **slot, const char *value, struct cmn_err *err)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    free(*slot);
    *slot = copy;
    return CMN_OK;
}

/* A path ("" or "/...") or query as the worker will send it: no space, no
 * control character, no '#', and for a path no '?'. */
static bool target_part_ok(const char *v, bool path)
{
    if (path && v[0] != '\0' && v[0] != '/')
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
        if (*p <= 0x20 || *p == 0x7f || *p == '#' || (path && *p == '?'))
            return false;
    return true;
}

/* A copy of `v` (NULL = "") without surrounding SP/HTAB; NULL when out of
 * memory. */
static char *trimmed(const char *v)
{
    if (v == NULL)
        v = "";
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return strndup(v, n);
}

/* A whole number in [lo, hi], or false. */
static bool whole(const char *v, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0 || n < lo || n > hi)
        return false;
    *out = n;
    return true;
}

static enum cmn_status decode_policy(const struct cmn_headers *in, struct cmn_fn_policy *p,
                                     struct cmn_err *err)
{
    long long n = 0;
    const char *v = cmn_headers_get(in, CMN_HDR_QUEUE);
    if (v != NULL) {
        if (!cmn_queue_name_valid(v, strlen(v)))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.64s\"", CMN_HDR_QUEUE, v);
        snprintf(p->queue, sizeof(p->queue), "%s", v);
    }
    if ((v = cmn_headers_get(in, CMN_HDR_RETRY_ATTEMPTS)) != NULL) {
        if (!whole(v, 0, CMN_RETRY_ATTEMPTS_MAX, &n))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.32s\"", CMN_HDR_RETRY_ATTEMPTS,
                               v);
        p->retry_attempts = (int)n;
    }
    if ((v = cmn_headers_get(in, CMN_HDR_RETRY_CODES)) != NULL) {
        struct cmn_config_codes set;
        char why[160];
        if (strlen(v) >= sizeof(p->retry_codes) ||
            cmn_config_codes_parse(v, &set, why, sizeof(why)) != CMN_OK)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.64s\"", CMN_HDR_RETRY_CODES, v);
        snprintf(p->retry_codes, sizeof(p->retry_codes), "%s", v);
    }
    if ((v = cmn_headers_get(in, CMN_HDR_RETRY_MIN_WAIT)) != NULL) {
        if (!whole(v, 1, CMN_RETRY_WAIT_MAX_MS, &n))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.32s\"", CMN_HDR_RETRY_MIN_WAIT,
                               v);
        p->retry_min_wait_ms = n;
    }
    if ((v = cmn_headers_get(in, CMN_HDR_RETRY_MAX_WAIT)) != NULL) {
        if (!whole(v, 1, CMN_RETRY_WAIT_MAX_MS, &n))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.32s\"", CMN_HDR_RETRY_MAX_WAIT,
                               v);
        p->retry_max_wait_ms = n;
    }
    return CMN_OK;
}

enum cmn_status cmn_call_decode(const struct cmn_headers *in, struct cmn_call *call,
                                struct cmn_err *err)
{
    struct cmn_call c;
    cmn_call_init(&c);
    enum cmn_status st = CMN_OK;

    const char *version = cmn_headers_get(in, CMN_HDR_VERSION);
    /* a re-driven dead letter names its call id apart from its Nats-Msg-Id */
    const char *id = cmn_headers_get(in, CMN_HDR_CALL_ID);
    if (id == NULL)
        id = cmn_headers_get(in, CMN_HDR_MSG_ID);
    const char *function = cmn_headers_get(in, CMN_HDR_FUNCTION);
    const char *method = cmn_headers_get(in, CMN_HDR_METHOD);
    const char *start = cmn_headers_get(in, CMN_HDR_START);
    if (version == NULL) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "missing %s header", CMN_HDR_VERSION);
        goto out;
    }
    if (strcmp(version, CMN_WIRE_VERSION) != 0) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "unsupported wire format version \"%.20s\"",
                         version);
        goto out;
    }
    if (id == NULL || !cmn_callid_valid(id)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "missing or invalid %s", CMN_HDR_MSG_ID);
        goto out;
    }
    if (function == NULL || function[0] == '\0') {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "missing %s header", CMN_HDR_FUNCTION);
        goto out;
    }
    if (method == NULL || method[0] == '\0') {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "missing %s header", CMN_HDR_METHOD);
        goto out;
    }
    if (start == NULL) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "missing %s header", CMN_HDR_START);
        goto out;
    }
    char *end = NULL;
    errno = 0;
    long long start_ns = strtoll(start, &end, 10);
    if (end == start || *end != '\0' || errno != 0 || start_ns < 0) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.32s\"", CMN_HDR_START, start);
        goto out;
    }
    snprintf(c.call_id, sizeof(c.call_id), "%s", id);
    c.start_ns = start_ns;
    const char *nb = cmn_headers_get(in, CMN_HDR_NOT_BEFORE);
    if (nb != NULL && nb[0] != '\0') {
        errno = 0;
        long long v = strtoll(nb, &end, 10);
        if (end == nb || *end != '\0' || errno != 0 || v < 0) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.32s\"", CMN_HDR_NOT_BEFORE, nb);
            goto out;
        }
        c.not_before_ns = v;
    }
    if ((st = decode_policy(in, &c.policy, err)) != CMN_OK)
        goto out;
    const char *parent = cmn_headers_get(in, CMN_HDR_PARENT_CALL_ID);
    if (parent != NULL) {
        if (!cmn_callid_valid(parent)) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s", CMN_HDR_PARENT_CALL_ID);
            goto out;
        }
        snprintf(c.parent_id, sizeof(c.parent_id), "%s", parent);
    }
    const char *depth = cmn_headers_get(in, CMN_HDR_CHAIN_DEPTH);
    if (depth != NULL) {
        long long d = 0;
        if (!whole(depth, 0, 1000, &d)) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "bad %s \"%.32s\"", CMN_HDR_CHAIN_DEPTH,
                             depth);
            goto out;
        }
        c.chain_depth = (int)d;
    }
    /* what the worker puts on the wire must be what was queued: no field may
     * smuggle a request line, a header or another function */
    struct cmn_fn_name fn_name;
    if (!cmn_header_name_valid(method)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s \"%.32s\" is not an HTTP method token",
                         CMN_HDR_METHOD, method);
        goto out;
    }
    if (cmn_name_parse(function, strlen(function), "default", &fn_name, NULL) != CMN_OK) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s \"%.64s\" is not a function name",
                         CMN_HDR_FUNCTION, function);
        goto out;
    }
    /* surrounding blanks are not part of a header value (an empty one may
     * arrive as " ") */
    char *path_v = trimmed(cmn_headers_get(in, CMN_HDR_PATH));
    char *query_v = trimmed(cmn_headers_get(in, CMN_HDR_QUERY));
    if (path_v == NULL || query_v == NULL) {
        free(path_v);
        free(query_v);
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }
    c.path = path_v;
    c.query = query_v;
    if (!target_part_ok(c.path, true)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s \"%.64s\" is not a path", CMN_HDR_PATH,
                         c.path);
        goto out;
    }
    if (!target_part_ok(c.query, false)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s \"%.64s\" is not a query", CMN_HDR_QUERY,
                         c.query);
        goto out;
    }
    const char *cbu = cmn_headers_get(in, CMN_HDR_CALLBACK);
    char why[200];
    if (cbu != NULL && cbu[0] != '\0' && !cmn_callback_url_check(cbu, why, sizeof(why))) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: %s", CMN_HDR_CALLBACK, why);
        goto out;
    }
    const char *callback = cmn_headers_get(in, CMN_HDR_CALLBACK);
    if ((st = dup_field(&c.function, function, err)) != CMN_OK ||
        (st = dup_field(&c.method, method, err)) != CMN_OK)
        goto out;
    if (callback != NULL && callback[0] != '\0' &&
        (st = dup_field(&c.callback_url, callback, err)) != CMN_OK)
        goto out;
    for (size_t i = 0; i < in->count; i++) {
        const struct cmn_header *h = &in->items[i];
        if (cmn_header_is_reserved(h->name) || cmn_header_is_hop_by_hop(h->name))
            continue;
        if (!cmn_header_name_valid(h->name) || !cmn_header_value_safe(h->value, VALUE_MAX)) {
            /* Replaying it would let a raw publisher split headers on the next hop. */
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid request header \"%.64s\"", h->name);
            goto out;
        }
        if (cmn_headers_add(&c.headers, h->name, h->value) != CMN_OK) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
    }
    *call = c;
    return CMN_OK;
out:
    cmn_call_free(&c);
    return st;
}
