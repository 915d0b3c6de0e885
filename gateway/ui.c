/* The portal: its files, its session, and the receiver of the callbacks of
 * the calls it made (a ring in memory). */
#include "ui.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cmn/callid.h"
#include "cmn/duration.h"
#include "cmn/log.h"
#include "cmn/status.h"
#include "system.h"
#include "ui_assets.h"

#define DEFAULT_KEEP 128
#define DEFAULT_MAX_BODY (64 * 1024)
#define RECEIVER_PREFIX "/ui/callbacks/"
#define RESULTS_PREFIX "/ui/api/results/"
#define MAX_HEADER_BYTES (16 * 1024) /* of one result's headers */

struct result {
    char call_id[CMN_CALLID_MAX];
    json_t *meta; /* what GET .../results/<id> answers */
    char *body;
    size_t body_len;
    char content_type[128];
};

#define MAC_HEX 32 /* hex digits of a receiver URL's MAC: 128 bits */

struct gw_ui {
    struct gw_system *system;
    unsigned char key[32]; /* the receiver URLs' MAC key, random at start */
    char *callback_base;   /* <base>/ui/callbacks/ */
    size_t max_body;
    struct result *ring;
    size_t keep, next, count;
    uint64_t received;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void result_clear(struct result *x)
{
    json_decref(x->meta);
    free(x->body);
    memset(x, 0, sizeof(*x));
}

enum cmn_status gw_ui_new(const struct gw_ui_config *config, struct gw_ui **out,
                          struct cmn_err *err)
{
    const char *base = config->callback_base != NULL ? config->callback_base : "";
    if (strncmp(base, "http://", 7) != 0 || strlen(base) > 400)
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "ui_callback_url \"%.80s\": expected http://host[:port]", base);
    struct gw_ui *ui = calloc(1, sizeof(*ui));
    if (ui == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "ui: out of memory");
    ui->system = config->system;
    ui->keep = config->keep > 0 ? config->keep : DEFAULT_KEEP;
    ui->max_body = config->max_body_bytes > 0 ? config->max_body_bytes : DEFAULT_MAX_BODY;
    ui->ring = calloc(ui->keep, sizeof(*ui->ring));
    size_t base_len = strlen(base);
    while (base_len > 0 && base[base_len - 1] == '/')
        base_len--;
    size_t n = base_len + sizeof(RECEIVER_PREFIX);
    ui->callback_base = malloc(n);
    if (ui->ring == NULL || ui->callback_base == NULL ||
        RAND_bytes(ui->key, sizeof(ui->key)) != 1) {
        gw_ui_free(ui);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "ui: out of memory or no randomness");
    }
    snprintf(ui->callback_base, n, "%.*s%s", (int)base_len, base, RECEIVER_PREFIX);
    *out = ui;
    return CMN_OK;
}

void gw_ui_free(struct gw_ui *ui)
{
    if (ui == NULL)
        return;
    for (size_t i = 0; ui->ring != NULL && i < ui->keep; i++)
        result_clear(&ui->ring[i]);
    free(ui->ring);
    free(ui->callback_base);
    OPENSSL_cleanse(ui->key, sizeof(ui->key));
    free(ui);
}

/* Headers that keep a page from being framed, sniffed or fed from elsewhere:
 * everything the portal needs comes from this origin. */
static void page_headers(struct gw_req *r)
{
    gw_req_header(r, "Cache-Control", "no-cache");
    gw_req_header(r, "X-Content-Type-Options", "nosniff");
    gw_req_header(r, "X-Frame-Options", "DENY");
    gw_req_header(r, "Referrer-Policy", "no-referrer");
    gw_req_header(r, "Content-Security-Policy",
                  "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
}

static void reply_json(struct gw_req *r, int code, json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        gw_req_reply_text(r, 500, "out of memory");
        return;
    }
    page_headers(r);
    gw_req_header(r, "Content-Type", "application/json");
    evbuffer_add(r->out_body, text, strlen(text));
    free(text);
    gw_req_reply(r, code, NULL);
}

static bool is_read(const struct gw_req *r)
{
    return r->method == EVHTTP_REQ_GET || r->method == EVHTTP_REQ_HEAD;
}

static void method_not_allowed(struct gw_req *r, const char *allow)
{
    gw_req_header(r, "Allow", allow);
    gw_req_reply_text(r, 405, "method not allowed");
}

static struct result *find(struct gw_ui *ui, const char *call_id)
{
    for (size_t i = 0; i < ui->keep; i++)
        if (ui->ring[i].meta != NULL && strcmp(ui->ring[i].call_id, call_id) == 0)
            return &ui->ring[i];
    return NULL;
}

/* The MAC of a receiver URL: the first MAC_HEX hex digits of
 * HMAC-SHA256(key, call id). Only the page that asked for the URL (behind
 * the auth) learns it, and it is good for that one call id: a function that
 * sees its own call's X-Callback-Url can post only its own result. */
static void mac_of(const struct gw_ui *ui, const char *call_id, char out[MAC_HEX + 1])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    static const char hex[] = "0123456789abcdef";
    out[0] = '\0';
    if (HMAC(EVP_sha256(), ui->key, (int)sizeof(ui->key), (const unsigned char *)call_id,
             strlen(call_id), mac, &len) == NULL ||
        len * 2 < MAC_HEX)
        return;
    for (size_t i = 0; i < MAC_HEX / 2; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[MAC_HEX] = '\0';
}

/* X-Function-Status as a number, 0 when absent or not a status 100..599. */
static int status_of(const char *v)
{
    if (v == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    return end != v && *end == '\0' && errno == 0 && n >= 100 && n <= 599 ? (int)n : 0;
}

static bool mac_ok(const struct gw_ui *ui, const char *call_id, const char *given)
{
    char want[MAC_HEX + 1];
    mac_of(ui, call_id, want);
    return want[0] != '\0' && strlen(given) == MAC_HEX && CRYPTO_memcmp(given, want, MAC_HEX) == 0;
}

/* POST /ui/callbacks/<call-id>/<mac>: a queue-worker delivers the result
 * of that call. */
static void receive(struct gw_ui *ui, struct gw_req *r, const char *rest)
{
    char path_id[CMN_CALLID_MAX];
    const char *slash = strchr(rest, '/');
    size_t n = slash != NULL ? (size_t)(slash - rest) : 0;
    if (n == 0 || n >= sizeof(path_id)) {
        gw_req_reply_text(r, 404, "404 page not found");
        return;
    }
    memcpy(path_id, rest, n);
    path_id[n] = '\0';
    if (!cmn_callid_valid(path_id) || !mac_ok(ui, path_id, slash + 1)) {
        gw_req_reply_text(r, 404, "404 page not found");
        return;
    }
    if (r->method != EVHTTP_REQ_POST) {
        method_not_allowed(r, "POST");
        return;
    }
    const char *id = evhttp_find_header(&r->in_headers, "X-Call-Id");
    if (id == NULL || strcmp(id, path_id) != 0) {
        gw_req_reply_text(r, 400, "X-Call-Id missing or not the call this URL is for");
        return;
    }
    json_t *meta = json_object();
    json_t *headers = json_object();
    if (meta == NULL || headers == NULL) {
        json_decref(meta);
        json_decref(headers);
        gw_req_reply_text(r, 503, "out of memory");
        return;
    }
    size_t kept = 0;
    for (struct evkeyval *h = r->in_headers.tqh_first; h != NULL; h = h->next.tqe_next) {
        /* what the worker adds and the function answered; not the hop's own */
        if (strcasecmp(h->key, "Host") == 0 || strcasecmp(h->key, "Content-Length") == 0 ||
            strcasecmp(h->key, "Connection") == 0 || strcasecmp(h->key, "Authorization") == 0)
            continue;
        /* what one result may hold of headers is bounded like its body */
        size_t cost = strlen(h->key) + strlen(h->value);
        if (kept + cost > MAX_HEADER_BYTES)
            break;
        json_t *v = json_string(h->value);
        if (v != NULL) {
            json_object_set_new(headers, h->key, v);
            kept += cost;
        }
    }
    size_t len = evbuffer_get_length(r->in_body);
    size_t keep = len < ui->max_body ? len : ui->max_body;
    const char *status = evhttp_find_header(&r->in_headers, "X-Function-Status");
    const char *type = evhttp_find_header(&r->in_headers, "Content-Type");
    struct result *slot = find(ui, id);
    if (slot == NULL) {
        slot = &ui->ring[ui->next];
        ui->next = (ui->next + 1) % ui->keep;
        if (ui->count < ui->keep)
            ui->count++;
    }
    result_clear(slot);
    snprintf(slot->call_id, sizeof(slot->call_id), "%s", id);
    snprintf(slot->content_type, sizeof(slot->content_type), "%s",
             type != NULL && strchr(type, '\n') == NULL ? type : "application/octet-stream");
    slot->body = malloc(keep + 1);
    if (slot->body != NULL) {
        evbuffer_copyout(r->in_body, slot->body, keep);
        slot->body_len = keep;
    }
    char when[40];
    json_object_set_new(meta, "call_id", json_string(id));
    json_object_set_new(meta, "received", json_true());
    json_object_set_new(meta, "function_status", json_integer(status_of(status)));
    json_object_set_new(meta, "headers", headers);
    json_object_set_new(meta, "body_bytes", json_integer((json_int_t)len));
    json_object_set_new(meta, "body_truncated", json_boolean(keep < len));
    json_object_set_new(meta, "received_at",
                        json_string(cmn_time_format(wall_ms(), when, sizeof(when))));
    slot->meta = meta;
    ui->received++;
    LOG_DEBUG(id, "portal: callback received (status %s, %zu bytes)", status ? status : "-", len);
    gw_req_reply_text(r, 200, "OK");
}

static void serve_result(struct gw_ui *ui, struct gw_req *r, const char *rest)
{
    if (!is_read(r)) {
        method_not_allowed(r, "GET");
        return;
    }
    char id[CMN_CALLID_MAX];
    const char *slash = strchr(rest, '/');
    size_t n = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
    bool body = slash != NULL && strcmp(slash, "/body") == 0;
    if (n == 0 || n >= sizeof(id) || (slash != NULL && !body)) {
        gw_req_reply_text(r, 404, "404 page not found");
        return;
    }
    memcpy(id, rest, n);
    id[n] = '\0';
    struct result *x = find(ui, id);
    if (x == NULL && !body) {
        /* not (yet) received, or another receiver's: a state, not an error */
        json_t *doc = json_object();
        if (doc != NULL) {
            json_object_set_new(doc, "call_id", json_string(id));
            json_object_set_new(doc, "received", json_false());
        }
        reply_json(r, 200, doc);
        return;
    }
    if (x == NULL) {
        page_headers(r);
        gw_req_reply_text(r, 404, "no callback received for this call");
        return;
    }
    if (!body) {
        reply_json(r, 200, json_incref(x->meta));
        return;
    }
    page_headers(r);
    gw_req_header(r, "Content-Type", x->content_type);
    /* shown as text by the page, never rendered as this origin's HTML */
    gw_req_header(r, "Content-Disposition", "attachment");
    if (x->body != NULL)
        evbuffer_add(r->out_body, x->body, x->body_len);
    gw_req_reply(r, 200, NULL);
}

static void serve_session(struct gw_ui *ui, struct gw_req *r)
{
    if (!is_read(r)) {
        method_not_allowed(r, "GET");
        return;
    }
    json_t *doc = json_object();
    if (doc != NULL) {
        json_object_set_new(doc, "results_kept", json_integer((json_int_t)ui->keep));
        json_object_set_new(doc, "callbacks_received", json_integer((json_int_t)ui->received));
    }
    reply_json(r, 200, doc);
}

/* POST /ui/api/callback: a fresh call id and the receiver URL for it, for
 * the page's next async call (it sends both as X-Call-Id and
 * X-Callback-Url). */
static void serve_callback(struct gw_ui *ui, struct gw_req *r)
{
    if (r->method != EVHTTP_REQ_POST) {
        method_not_allowed(r, "POST");
        return;
    }
    char id[CMN_CALLID_MAX], mac[MAC_HEX + 1];
    cmn_callid_new(id);
    mac_of(ui, id, mac);
    size_t n = strlen(ui->callback_base) + strlen(id) + MAC_HEX + 2;
    char *url = malloc(n);
    json_t *doc = url != NULL && mac[0] != '\0' ? json_object() : NULL;
    if (doc != NULL) {
        snprintf(url, n, "%s%s/%s", ui->callback_base, id, mac);
        json_object_set_new(doc, "call_id", json_string(id));
        json_object_set_new(doc, "callback_url", json_string(url));
    }
    free(url);
    reply_json(r, 200, doc);
}

static void serve_file(struct gw_req *r, const char *name)
{
    if (!is_read(r)) {
        method_not_allowed(r, "GET, HEAD");
        return;
    }
    if (*name == '\0')
        name = "index.html";
    for (const struct gw_ui_asset *a = gw_ui_assets; a->name != NULL; a++) {
        if (strcmp(a->name, name) != 0)
            continue;
        page_headers(r);
        gw_req_header(r, "Content-Type", a->content_type);
        evbuffer_add_reference(r->out_body, a->data, a->size, NULL, NULL);
        gw_req_reply(r, 200, NULL);
        return;
    }
    gw_req_reply_text(r, 404, "404 page not found");
}

void gw_ui_handle(struct gw_ui *ui, struct gw_req *r, const struct gw_target *target)
{
    const char *path = target->path;
    if (strncmp(path, RECEIVER_PREFIX, sizeof(RECEIVER_PREFIX) - 1) == 0) {
        receive(ui, r, path + sizeof(RECEIVER_PREFIX) - 1);
        return;
    }
    if (!gw_system_authorize(ui->system, r))
        return;
    if (strcmp(path, "/ui") == 0) {
        gw_req_header(r, "Location", "/ui/");
        gw_req_reply_text(r, 301, "the portal is at /ui/");
        return;
    }
    const char *rest = path + 4; /* after "/ui/" */
    if (strcmp(path, "/ui/api/session") == 0)
        serve_session(ui, r);
    else if (strcmp(path, "/ui/api/callback") == 0)
        serve_callback(ui, r);
    else if (strncmp(path, RESULTS_PREFIX, sizeof(RESULTS_PREFIX) - 1) == 0)
        serve_result(ui, r, path + sizeof(RESULTS_PREFIX) - 1);
    else if (strchr(rest, '/') == NULL)
        serve_file(r, rest);
    else
        gw_req_reply_text(r, 404, "404 page not found");
}
