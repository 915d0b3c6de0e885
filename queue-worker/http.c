/* libcurl multi wrapper of the queue-worker: owns the CURLM handle, its
 * connection cache (keep-alive reuse across invocations and callbacks), one
 * CURL easy handle per transfer (reset and reused by later ones), response
 * header/body collection, and the translation of CURLcode into enum
 * qw_http_result. Main thread only, except qw_http_wakeup. */
#include "http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ERRBUF_SIZE CURL_ERROR_SIZE

/* Easy handles of finished transfers, reset and kept for the next ones:
 * creating and destroying one per call cost more than the transfer itself. */
#define SPARE_MAX 64

struct qw_http {
    CURLM *multi;
    struct qw_http_xfer *head; /* running transfers, doubly linked */
    size_t running;
    CURL *spare[SPARE_MAX];
    size_t spares;
};

struct qw_http_xfer {
    struct qw_http_xfer *prev, *next;
    struct qw_http *http;
    CURL *easy;
    struct curl_slist *header_list;
    struct qw_http_response *response;
    size_t max_body_bytes;
    size_t body_cap;
    bool too_large;
    const struct cmn_cbrules *addr_rules;
    bool forbidden;
    char forbidden_why[200];
    qw_http_done_cb done;
    void *closure;
    char errbuf[ERRBUF_SIZE];
};

static const char *const result_names[] = {
    "QW_HTTP_OK",        "QW_HTTP_TRANSPORT", "QW_HTTP_TIMEOUT",
    "QW_HTTP_TOO_LARGE", "QW_HTTP_INVALID",   "QW_HTTP_FORBIDDEN",
};
_Static_assert(sizeof(result_names) / sizeof(result_names[0]) == QW_HTTP_RESULT_COUNT,
               "result_names must match enum qw_http_result");

const char *qw_http_result_name(enum qw_http_result result)
{
    if ((unsigned)result >= QW_HTTP_RESULT_COUNT)
        return "QW_HTTP_UNKNOWN";
    return result_names[result];
}

bool qw_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

void qw_http_global_cleanup(void)
{
    curl_global_cleanup();
}

enum cmn_status qw_http_new(int max_connections, struct qw_http **out, struct cmn_err *err)
{
    struct qw_http *http = calloc(1, sizeof(*http));
    if (!http)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    http->multi = curl_multi_init();
    if (!http->multi) {
        free(http);
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "curl_multi_init failed");
    }
    if (max_connections > 0)
        curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
    *out = http;
    return CMN_OK;
}

static void spare_put(struct qw_http *http, CURL *easy)
{
    if (http->spares < SPARE_MAX) {
        curl_easy_reset(easy); /* every option back to its default */
        http->spare[http->spares++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

static CURL *spare_take(struct qw_http *http)
{
    return http->spares > 0 ? http->spare[--http->spares] : curl_easy_init();
}

static void xfer_destroy(struct qw_http_xfer *x)
{
    struct qw_http *http = x->http;
    if (x->prev)
        x->prev->next = x->next;
    else
        http->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    http->running--;
    curl_multi_remove_handle(http->multi, x->easy);
    spare_put(http, x->easy);
    curl_slist_free_all(x->header_list);
    free(x);
}

void qw_http_free(struct qw_http *http)
{
    if (!http)
        return;
    while (http->head)
        xfer_destroy(http->head);
    while (http->spares > 0)
        curl_easy_cleanup(http->spare[--http->spares]);
    curl_multi_cleanup(http->multi);
    free(http);
}

void qw_http_response_free(struct qw_http_response *response)
{
    if (!response)
        return;
    cmn_headers_free(&response->headers);
    free(response->body);
    response->body = NULL;
    response->body_len = 0;
}

static void response_reset(struct qw_http_response *r)
{
    memset(r, 0, sizeof(*r));
    cmn_headers_init(&r->headers);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct qw_http_xfer *x = userdata;
    struct qw_http_response *r = x->response;
    size_t n = size * nmemb;
    if (x->max_body_bytes == 0 || n == 0)
        return n;
    if (r->body_len + n > x->max_body_bytes) {
        x->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->body_len + n + 1 > x->body_cap) {
        size_t cap = x->body_cap ? x->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *p = realloc(r->body, cap);
        if (!p)
            return 0;
        r->body = p;
        x->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

/* Header lines arrive one at a time, status lines included; a new status line
 * (1xx interim responses) starts a fresh header list so only the final
 * response's headers are kept. Folded continuation lines are dropped. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct qw_http_xfer *x = userdata;
    struct qw_http_response *r = x->response;
    size_t n = size * nmemb;
    size_t len = n;
    while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n'))
        len--;
    if (len == 0)
        return n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        cmn_headers_free(&r->headers);
        cmn_headers_init(&r->headers);
        return n;
    }
    if (data[0] == ' ' || data[0] == '\t')
        return n;
    const char *colon = memchr(data, ':', len);
    if (!colon || colon == data)
        return n;
    size_t name_len = (size_t)(colon - data);
    const char *v = colon + 1;
    const char *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    char *name = strndup(data, name_len);
    char *value = strndup(v, (size_t)(end - v));
    enum cmn_status st = CMN_ERR_NOMEM;
    if (name && value)
        st = cmn_headers_add(&r->headers, name, value);
    free(name);
    free(value);
    return st == CMN_OK ? n : 0;
}

/* One "Name: value" line for curl. An empty value must be written "Name;"
 * because "Name:" tells curl to remove the header instead. */
static bool append_header(struct curl_slist **list, const char *name, const char *value)
{
    size_t need = strlen(name) + strlen(value) + 3;
    char *line = malloc(need);
    if (!line)
        return false;
    if (value[0])
        snprintf(line, need, "%s: %s", name, value);
    else
        snprintf(line, need, "%s;", name);
    struct curl_slist *l = curl_slist_append(*list, line);
    free(line);
    if (!l)
        return false;
    *list = l;
    return true;
}

static bool build_header_list(const struct qw_http_request *req, struct curl_slist **out)
{
    struct curl_slist *list = NULL;
    const struct cmn_headers *h = req->headers;
    bool has_ct = false, has_accept = false;
    for (size_t i = 0; h && i < h->count; i++) {
        if (!append_header(&list, h->items[i].name, h->items[i].value))
            goto fail;
        if (strcasecmp(h->items[i].name, "Content-Type") == 0)
            has_ct = true;
        if (strcasecmp(h->items[i].name, "Accept") == 0)
            has_accept = true;
    }
    /* "Name:" removes a header curl would add on its own: no form content type,
     * no Accept the client never sent, no 100-continue round trip. */
    struct curl_slist *l = curl_slist_append(list, "Expect:");
    if (!l)
        goto fail;
    list = l;
    if (!has_ct) {
        if (!(l = curl_slist_append(list, "Content-Type:")))
            goto fail;
        list = l;
    }
    if (!has_accept) {
        if (!(l = curl_slist_append(list, "Accept:")))
            goto fail;
        list = l;
    }
    *out = list;
    return true;
fail:
    curl_slist_free_all(list);
    return false;
}

/* Every connection of a transfer with addr_rules: the resolved address is
 * checked before the socket exists, whatever the URL spelled. */
static curl_socket_t open_checked(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct qw_http_xfer *x = clientp;
    (void)purpose;
    if (!cmn_cbrules_check_addr(x->addr_rules, &a->addr, x->forbidden_why,
                                sizeof(x->forbidden_why))) {
        x->forbidden = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

enum cmn_status qw_http_start(struct qw_http *http, const struct qw_http_request *req,
                              struct qw_http_response *response, qw_http_done_cb done,
                              void *closure, struct qw_http_xfer **out, struct cmn_err *err)
{
    if (!req->method || !req->url || req->timeout_ms <= 0 || (!req->body && req->body_len))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "incomplete HTTP request");
    response_reset(response);
    struct qw_http_xfer *x = calloc(1, sizeof(*x));
    if (!x)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    x->http = http;
    x->response = response;
    x->max_body_bytes = req->max_body_bytes;
    x->done = done;
    x->closure = closure;
    x->easy = spare_take(http);
    if (!x->easy || !build_header_list(req, &x->header_list)) {
        if (x->easy)
            spare_put(http, x->easy);
        free(x);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory (curl handle)");
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* Send the path exactly as queued: curl would otherwise squash "/../"
     * and turn /function/echo/../status into a call of another function. */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->header_list);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    /* redirects are never followed (a receiver could point elsewhere) */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    if (req->addr_rules != NULL) {
        x->addr_rules = req->addr_rules;
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_checked);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    }
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "GET") == 0 && req->body_len == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        /* POSTFIELDS also for other verbs so that a body and its
         * Content-Length are sent; CUSTOMREQUEST then sets the verb. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body_len ? req->body : "");
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    }
    CURLMcode mc = curl_multi_add_handle(http->multi, e);
    if (mc != CURLM_OK) {
        spare_put(http, e);
        curl_slist_free_all(x->header_list);
        free(x);
        return cmn_err_set(err, CMN_ERR_INVALID, (int)mc, "curl_multi_add_handle: %s",
                           curl_multi_strerror(mc));
    }
    x->next = http->head;
    if (http->head)
        http->head->prev = x;
    http->head = x;
    http->running++;
    if (out)
        *out = x;
    return CMN_OK;
}

void qw_http_cancel(struct qw_http_xfer *xfer)
{
    if (xfer)
        xfer_destroy(xfer);
}

static void complete(struct qw_http_xfer *x, CURLcode code)
{
    struct qw_http_response *r = x->response;
    if (code == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        r->result = QW_HTTP_OK;
        r->status = (int)status;
    } else {
        const char *msg = x->errbuf[0] ? x->errbuf : curl_easy_strerror(code);
        snprintf(r->error, sizeof(r->error), "%s", msg);
        r->status = 0;
        if (x->forbidden) {
            r->result = QW_HTTP_FORBIDDEN;
            snprintf(r->error, sizeof(r->error), "%s", x->forbidden_why);
        } else if (x->too_large) {
            r->result = QW_HTTP_TOO_LARGE;
            snprintf(r->error, sizeof(r->error), "response body over %zu bytes", x->max_body_bytes);
        } else if (code == CURLE_OPERATION_TIMEDOUT) {
            r->result = QW_HTTP_TIMEOUT;
        } else if (code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL) {
            r->result = QW_HTTP_INVALID;
        } else {
            r->result = QW_HTTP_TRANSPORT;
        }
    }
    qw_http_done_cb done = x->done;
    void *closure = x->closure;
    xfer_destroy(x);
    done(r, closure);
}

enum cmn_status qw_http_run(struct qw_http *http, int timeout_ms, int extra_fd, bool *extra_ready,
                            struct cmn_err *err)
{
    struct curl_waitfd wfd = {.fd = extra_fd, .events = CURL_WAIT_POLLIN, .revents = 0};
    int numfds = 0;
    if (extra_ready)
        *extra_ready = false;
    if (timeout_ms < 0)
        timeout_ms = 0;
    CURLMcode mc = curl_multi_poll(http->multi, extra_fd >= 0 ? &wfd : NULL, extra_fd >= 0 ? 1 : 0,
                                   timeout_ms, &numfds);
    if (mc != CURLM_OK)
        return cmn_err_set(err, CMN_ERR_IO, (int)mc, "curl_multi_poll: %s",
                           curl_multi_strerror(mc));
    if (extra_ready && extra_fd >= 0 && (wfd.revents & CURL_WAIT_POLLIN))
        *extra_ready = true;
    int still = 0;
    mc = curl_multi_perform(http->multi, &still);
    if (mc != CURLM_OK)
        return cmn_err_set(err, CMN_ERR_IO, (int)mc, "curl_multi_perform: %s",
                           curl_multi_strerror(mc));
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(http->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            complete((struct qw_http_xfer *)(void *)priv, m->data.result);
    }
    return CMN_OK;
}

void qw_http_wakeup(struct qw_http *http)
{
    curl_multi_wakeup(http->multi);
}

size_t qw_http_running(const struct qw_http *http)
{
    return http->running;
}

int64_t qw_http_parse_date(const char *text)
{
    time_t t = curl_getdate(text, NULL);
    return t == (time_t)-1 ? -1 : (int64_t)t;
}
