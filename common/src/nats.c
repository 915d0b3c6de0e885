/* The NATS connection and the keeper thread. nats.c's threads report
 * connection changes here; the keeper thread alone talks to the JetStream API
 * (raw requests with JSON built and read by jansson, so every field the server
 * knows survives an update), reconciles the streams and the consumer with the
 * configuration, and refreshes the queue-depth figures. */
#include "cmn/nats.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmn/duration.h"
#include "nats_priv.h"

#define MAX_SERVERS 16
#define DEFAULT_REFRESH_MS 2000
#define DEFAULT_REQUEST_MS 2000
#define RETRY_SETUP_MS 1000
#define SETUP_GAP_MS 250

struct cmn_nats {
    struct cmn_nats_config cfg; /* strings below are owned copies */
    char *url, *client_name, *stream, *dlq, *durable, *bucket;
    natsOptions *opts;
    natsConnection *nc;

    pthread_t keeper;
    bool keeper_started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool stop, need_setup, opened, fatal, close_done;
    char kick_why[200];
    pthread_cond_t close_cv;
    /* further work-queue streams (per-function queues), under mu */
    char extra[CMN_NATS_MAX_EXTRA_STREAMS][CMN_QUEUE_MAX];
    int extra_count;
    /* queues whose stream the server cannot give us (a stream of that name
     * with other settings, subjects another stream holds), under mu */
    struct {
        char name[CMN_QUEUE_MAX];
        char why[240];
    } refused[CMN_NATS_MAX_EXTRA_STREAMS];
    int refused_count;
    const char *reserved[2]; /* {dlq, NULL}: names no queue may take */

    atomic_bool ready, connected, closed;
    atomic_int_fast64_t max_payload;
    atomic_int_fast64_t down_since_ms; /* monotonic; 0 while connected */
    atomic_uint_fast64_t failed_passes;

    pthread_mutex_t smu; /* guards stats */
    struct cmn_nats_stats stats;

    /* keeper thread only: the work-queue stream's creation time last seen, to
     * notice a re-creation (its sequences start over; a consumer re-created
     * on the same stream keeps them, and its creation time is not even stable
     * across a server crash) */
    char stream_created[64];
    atomic_uint_fast64_t epoch;
    atomic_bool told_ready; /* READY was reported since the last NOT_READY/DISCONNECTED */
};

static const char *const event_names[] = {"ready",   "not-ready", "disconnected", "connect-failed",
                                          "changed", "fatal",     "closed"};

const char *cmn_nats_event_name(enum cmn_nats_event event)
{
    if ((unsigned)event < sizeof(event_names) / sizeof(event_names[0]))
        return event_names[event];
    return "unknown";
}

int64_t cmn_nats_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum cmn_status cmn_nats_err(struct cmn_err *err, natsStatus s, const char *what)
{
    enum cmn_status st = CMN_ERR_NATS;
    if (s == NATS_TIMEOUT)
        st = CMN_ERR_TIMEOUT;
    else if (s == NATS_NOT_FOUND)
        st = CMN_ERR_NOT_FOUND;
    else if (s == NATS_CONNECTION_CLOSED || s == NATS_CONNECTION_DISCONNECTED ||
             s == NATS_NOT_YET_CONNECTED || s == NATS_NO_SERVER || s == NATS_NO_RESPONDERS)
        st = CMN_ERR_UNAVAILABLE;
    else if (s == NATS_MAX_PAYLOAD)
        st = CMN_ERR_TOO_LARGE;
    else if (s == NATS_NO_MEMORY)
        st = CMN_ERR_NOMEM;
    const char *last = nats_GetLastError(NULL);
    return cmn_err_set(err, st, (int)s, "%s: %s%s%s", what, natsStatus_GetText(s),
                       last && last[0] ? ": " : "", last ? last : "");
}

natsConnection *cmn_nats_conn(struct cmn_nats *nats)
{
    return nats->nc;
}

static void emit(struct cmn_nats *n, enum cmn_nats_event ev, const char *detail)
{
    if (n->cfg.on_event != NULL)
        n->cfg.on_event(ev, detail, n->cfg.closure);
}

static bool stopping(struct cmn_nats *n)
{
    pthread_mutex_lock(&n->mu);
    bool s = n->stop;
    pthread_mutex_unlock(&n->mu);
    return s;
}

static void request_setup(struct cmn_nats *n, const char *why)
{
    pthread_mutex_lock(&n->mu);
    n->need_setup = true;
    if (why != NULL)
        snprintf(n->kick_why, sizeof(n->kick_why), "%s", why);
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* ---- server list ---------------------------------------------------- */

int cmn_nats_split_servers(const char *list, char *buf, size_t size, const char **items, int max)
{
    size_t len = strlen(list);
    if (len + 1 > size)
        return -1;
    memcpy(buf, list, len + 1);
    int n = 0;
    char *p = buf;
    for (;;) {
        char *end = strchr(p, ',');
        if (end != NULL)
            *end = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        char *tail = p + strlen(p);
        while (tail > p && (tail[-1] == ' ' || tail[-1] == '\t'))
            *--tail = '\0';
        if (*p == '\0' || n == max)
            return -1;
        items[n++] = p;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return n;
}

/* ---- connection events (nats.c threads) ------------------------------ */

static void on_connected(natsConnection *nc, void *closure)
{
    struct cmn_nats *n = closure;
    atomic_store(&n->max_payload, natsConnection_GetMaxPayload(nc));
    atomic_store(&n->connected, true);
    atomic_store(&n->down_since_ms, 0);
    atomic_store(&n->failed_passes, 0);
    request_setup(n, NULL);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct cmn_nats *n = closure;
    bool was = atomic_exchange(&n->connected, false);
    if (was)
        atomic_store(&n->down_since_ms, cmn_nats_now_ms());
    atomic_store(&n->ready, false);
    atomic_store(&n->told_ready, false);
    if (was && !stopping(n) && !atomic_load(&n->closed))
        emit(n, CMN_NATS_DISCONNECTED, "connection to NATS lost, reconnecting");
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    struct cmn_nats *n = closure;
    atomic_store(&n->ready, false);
    atomic_store(&n->connected, false);
    if (!atomic_exchange(&n->closed, true) && !stopping(n))
        emit(n, CMN_NATS_CLOSED, "NATS connection closed (reconnect budget exhausted)");
    /* nats.c's last use of `n`: cmn_nats_free waits for it */
    pthread_mutex_lock(&n->mu);
    n->close_done = true;
    pthread_cond_broadcast(&n->close_cv);
    pthread_mutex_unlock(&n->mu);
}

/* Called by nats.c after each full pass over the server list failed. */
static int64_t on_reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    struct cmn_nats *n = closure;
    uint64_t pass = atomic_fetch_add(&n->failed_passes, 1) + 1;
    if (!stopping(n)) {
        char detail[sizeof(n->kick_why) + 600];
        const char *last = nats_GetLastError(NULL);
        snprintf(detail, sizeof(detail),
                 "no server of %s answered (pass %" PRIu64 ", attempt %d)%s%s", n->url, pass,
                 attempts, last && last[0] ? ": " : "", last ? last : "");
        emit(n, CMN_NATS_CONNECT_FAILED, detail);
    }
    return n->cfg.reconnect_wait_ms > 0 ? n->cfg.reconnect_wait_ms : 1000;
}

/* ---- JetStream API requests (keeper thread) ---------------------------- */

struct api_reply {
    json_t *doc;  /* whole reply, or NULL */
    int code;     /* error.code (HTTP-like), 0 = success */
    int err_code; /* error.err_code (JetStream), 0 = none */
    char text[200];
};

static void api_reply_free(struct api_reply *r)
{
    json_decref(r->doc);
    r->doc = NULL;
}

/* One request to `subject` with `body` (NULL = empty). CMN_OK: a reply was
 * parsed (it may carry an error: check r->code). */
static enum cmn_status api(struct cmn_nats *n, const char *subject, json_t *body,
                           struct api_reply *r, struct cmn_err *err)
{
    memset(r, 0, sizeof(*r));
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body != NULL && text == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    natsMsg *reply = NULL;
    int64_t wait = n->cfg.request_timeout_ms > 0 ? n->cfg.request_timeout_ms : DEFAULT_REQUEST_MS;
    natsStatus s =
        natsConnection_Request(&reply, n->nc, subject, text, text ? (int)strlen(text) : 0, wait);
    free(text);
    if (s != NATS_OK)
        return cmn_nats_err(err, s, subject);
    json_error_t je;
    r->doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &je);
    natsMsg_Destroy(reply);
    if (r->doc == NULL)
        return cmn_err_set(err, CMN_ERR_NATS, 0, "%s: unreadable reply: %s", subject, je.text);
    json_t *e = json_object_get(r->doc, "error");
    if (json_is_object(e)) {
        r->code = (int)json_integer_value(json_object_get(e, "code"));
        r->err_code = (int)json_integer_value(json_object_get(e, "err_code"));
        const char *d = json_string_value(json_object_get(e, "description"));
        snprintf(r->text, sizeof(r->text), "%s", d ? d : "error");
        if (r->code == 0)
            r->code = 500;
    }
    return CMN_OK;
}

static int64_t jint(json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static const char *jstr(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "";
}

/* Bumps the epoch when the stream's creation time differs from the last one
 * seen: it was deleted and created again (by us or by anyone), so its
 * sequences start over. */
static void note_created(struct cmn_nats *n, char *seen, size_t size, json_t *info)
{
    const char *created = json_string_value(json_object_get(info, "created"));
    if (created == NULL || created[0] == '\0')
        return;
    if (seen[0] != '\0' && strcmp(seen, created) != 0)
        atomic_fetch_add(&n->epoch, 1);
    snprintf(seen, size, "%s", created);
}

/* Appends "field old -> new" to the change list. */
static void note_change(char *buf, size_t size, const char *field, const char *from, const char *to)
{
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "%s%s %s -> %s", len ? ", " : "", field, from, to);
}

static void fmt_ns(int64_t ns, char *buf, size_t size)
{
    cmn_duration_format(ns / 1000000, buf, size);
}

static void fmt_int(int64_t v, char *buf, size_t size)
{
    snprintf(buf, size, "%" PRId64, v);
}

/* Outcome of reconciling one object. */
enum rec {
    REC_OK,
    REC_RETRY, /* transient: try again shortly (detail in err) */
    REC_FATAL, /* non-editable difference (detail in err) */
};

static enum rec api_failure(struct cmn_err *err, const char *what, const struct api_reply *r)
{
    cmn_err_set(err, CMN_ERR_NATS, r->err_code, "%s: %s (code %d, err_code %d)", what, r->text,
                r->code, r->err_code);
    if (r->err_code == JSStreamReplicasNotSupportedErr)
        return REC_FATAL;
    return REC_RETRY;
}

static json_t *desired_stream(const struct cmn_nats *n, const char *name, bool work_queue)
{
    json_t *c = json_object();
    json_object_set_new(c, "name", json_string(name));
    if (work_queue) {
        /* a call is published on "<stream>.<call id>", so that its record can
         * be derived from the stream while it waits (cmn/callrec.h); the bare
         * name stays for publishers of earlier versions */
        char any[300];
        snprintf(any, sizeof(any), "%s.>", name);
        json_object_set_new(c, "subjects", json_pack("[ss]", name, any));
    } else {
        json_object_set_new(c, "subjects", json_pack("[s]", name));
    }
    /* direct gets: status lookups and dead-letter listings read single
     * messages with their headers */
    json_object_set_new(c, "allow_direct", json_true());
    json_object_set_new(c, "retention", json_string(work_queue ? "workqueue" : "limits"));
    json_object_set_new(c, "storage", json_string("file"));
    json_object_set_new(c, "num_replicas", json_integer(n->cfg.replicas));
    json_object_set_new(c, "discard", json_string("old"));
    json_object_set_new(c, "max_consumers", json_integer(-1));
    json_object_set_new(c, "max_msgs", json_integer(-1));
    json_object_set_new(c, "max_bytes", json_integer(-1));
    json_object_set_new(c, "max_age", json_integer(0));
    json_object_set_new(c, "max_msgs_per_subject", json_integer(-1));
    if (work_queue) {
        json_object_set_new(c, "duplicate_window",
                            json_integer(n->cfg.duplicate_window_ms * 1000000));
        json_object_set_new(
            c, "max_msg_size",
            json_integer(n->cfg.max_msg_bytes > 0 && n->cfg.max_msg_bytes < INT32_MAX
                             ? n->cfg.max_msg_bytes
                             : -1));
    }
    return c;
}

static bool has_subject(json_t *cfg, const char *subject)
{
    json_t *subs = json_object_get(cfg, "subjects");
    size_t i;
    json_t *v;
    json_array_foreach(subs, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), subject) == 0)
            return true;
    }
    return false;
}

/* Sends `update` for stream `name` when `changes` lists a difference (one
 * CHANGED event naming them); `r` is reused for the answer. A replica count
 * the server cannot have or change is REC_FATAL. */
static enum rec update_stream(struct cmn_nats *n, const char *name, json_t *update,
                              const char *changes, struct api_reply *r, struct cmn_err *err)
{
    if (changes[0] == '\0')
        return REC_OK;
    char subject[400];
    api_reply_free(r);
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.UPDATE.%s", name);
    if (api(n, subject, update, r, err) != CMN_OK)
        return REC_RETRY;
    if (r->code != 0) {
        char what[400];
        snprintf(what, sizeof(what), "update stream %.64s (%.300s)", name, changes);
        enum rec out = api_failure(err, what, r);
        if (r->err_code == JSStreamReplicasNotSupportedErr ||
            r->err_code == JSStreamReplicasNotUpdatableErr)
            out = REC_FATAL;
        return out;
    }
    char detail[800];
    snprintf(detail, sizeof(detail), "stream %s updated: %s", name, changes);
    emit(n, CMN_NATS_CHANGED, detail);
    return REC_OK;
}

static enum rec reconcile_stream(struct cmn_nats *n, const char *name, bool work_queue,
                                 struct cmn_err *err)
{
    char subject[300];
    struct api_reply r;
    enum rec out = REC_OK;
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.INFO.%s", name);
    if (api(n, subject, NULL, &r, err) != CMN_OK)
        return REC_RETRY;
    json_t *want = desired_stream(n, name, work_queue);
    if (r.code == 404 || r.err_code == JSStreamNotFoundErr) {
        api_reply_free(&r);
        snprintf(subject, sizeof(subject), "$JS.API.STREAM.CREATE.%s", name);
        if (api(n, subject, want, &r, err) != CMN_OK) {
            out = REC_RETRY;
        } else if (r.code == 0 && work_queue) {
            note_created(n, n->stream_created, sizeof(n->stream_created), r.doc);
        } else if (r.code != 0 && r.err_code != JSStreamNameExistErr) {
            out = api_failure(err, "create stream", &r);
            if (out == REC_FATAL)
                cmn_err_set(err, CMN_ERR_INVALID, r.err_code,
                            "stream %s: stream_replicas=%d but the server is not clustered; set "
                            "stream_replicas=1 or run a JetStream cluster",
                            name, n->cfg.replicas);
        }
        goto out;
    }
    if (r.code != 0) {
        out = api_failure(err, "stream info", &r);
        goto out;
    }
    if (work_queue)
        note_created(n, n->stream_created, sizeof(n->stream_created), r.doc);
    json_t *have = json_object_get(r.doc, "config");
    if (!json_is_object(have)) {
        cmn_err_set(err, CMN_ERR_NATS, 0, "stream %s: info without config", name);
        out = REC_RETRY;
        goto out;
    }
    /* Not editable: the remedy is a migration, never a silent delete. */
    const char *fields[] = {"retention", "storage"};
    for (size_t i = 0; i < 2; i++) {
        const char *h = jstr(have, fields[i]), *w = jstr(want, fields[i]);
        if (strcmp(h, w) != 0) {
            json_t *state = json_object_get(r.doc, "state");
            cmn_err_set(err, CMN_ERR_INVALID, 0,
                        "stream %s: %s=%s, not %s (not editable); left as is with %" PRId64
                        " messages: drain it and run `nats stream rm %s`, or use another "
                        "faas_nats_channel",
                        name, fields[i], h, w, jint(state, "messages", 0), name);
            out = REC_FATAL;
            goto out;
        }
    }
    char changes[600] = "", a[40], b[40];
    json_t *update = json_deep_copy(have);
    json_t *want_subs = json_object_get(want, "subjects");
    size_t si;
    json_t *sv;
    json_array_foreach(want_subs, si, sv)
    {
        const char *subj = json_string_value(sv);
        if (has_subject(have, subj))
            continue;
        json_t *subs = json_object_get(update, "subjects");
        if (!json_is_array(subs)) {
            subs = json_array();
            json_object_set_new(update, "subjects", subs);
        }
        json_array_append_new(subs, json_string(subj));
        note_change(changes, sizeof(changes), "subjects", "(without it)", subj);
    }
    if (!json_is_true(json_object_get(have, "allow_direct"))) {
        note_change(changes, sizeof(changes), "allow_direct", "false", "true");
        json_object_set_new(update, "allow_direct", json_true());
    }
    int64_t hv = jint(have, "num_replicas", 1), wv = n->cfg.replicas;
    if ((hv <= 0 ? 1 : hv) != wv) {
        fmt_int(hv, a, sizeof(a));
        fmt_int(wv, b, sizeof(b));
        note_change(changes, sizeof(changes), "replicas", a, b);
        json_object_set_new(update, "num_replicas", json_integer(wv));
    }
    if (work_queue) {
        hv = jint(have, "duplicate_window", 0);
        wv = jint(want, "duplicate_window", 0);
        if (hv != wv) {
            fmt_ns(hv, a, sizeof(a));
            fmt_ns(wv, b, sizeof(b));
            note_change(changes, sizeof(changes), "duplicate_window", a, b);
            json_object_set_new(update, "duplicate_window", json_integer(wv));
        }
        hv = jint(have, "max_msg_size", -1);
        wv = jint(want, "max_msg_size", -1);
        if (hv != wv) {
            fmt_int(hv, a, sizeof(a));
            fmt_int(wv, b, sizeof(b));
            note_change(changes, sizeof(changes), "max_msg_size", a, b);
            json_object_set_new(update, "max_msg_size", json_integer(wv));
        }
        /* limits that silently drop queued calls */
        hv = jint(have, "max_age", 0);
        if (hv != 0) {
            fmt_ns(hv, a, sizeof(a));
            note_change(changes, sizeof(changes), "max_age", a, "0 (none)");
            json_object_set_new(update, "max_age", json_integer(0));
        }
        hv = jint(have, "max_msgs_per_subject", -1);
        if (hv > 0) {
            fmt_int(hv, a, sizeof(a));
            note_change(changes, sizeof(changes), "max_msgs_per_subject", a, "-1");
            json_object_set_new(update, "max_msgs_per_subject", json_integer(-1));
        }
        bool capped = jint(have, "max_msgs", -1) > 0 || jint(have, "max_bytes", -1) > 0;
        if (capped && strcmp(jstr(have, "discard"), "new") != 0) {
            /* a full stream must refuse new calls (503), not drop queued ones */
            note_change(changes, sizeof(changes), "discard", jstr(have, "discard"), "new");
            json_object_set_new(update, "discard", json_string("new"));
        }
    }
    out = update_stream(n, name, update, changes, &r, err);
    json_decref(update);
out:
    json_decref(want);
    api_reply_free(&r);
    return out;
}

/* The call-record bucket: a JetStream key-value bucket as nats.c and the nats
 * CLI create it (stream KV_<bucket>, subjects $KV.<bucket>.>, history 1),
 * with the record TTL as max_age. */
static json_t *desired_bucket(const struct cmn_nats *n, const char *stream)
{
    char subj[300];
    snprintf(subj, sizeof(subj), "$KV.%s.>", n->bucket);
    json_t *c = json_object();
    json_object_set_new(c, "name", json_string(stream));
    json_object_set_new(c, "subjects", json_pack("[s]", subj));
    json_object_set_new(c, "retention", json_string("limits"));
    json_object_set_new(c, "storage", json_string("file"));
    json_object_set_new(c, "num_replicas", json_integer(n->cfg.replicas));
    json_object_set_new(c, "discard", json_string("new"));
    json_object_set_new(c, "max_consumers", json_integer(-1));
    json_object_set_new(c, "max_msgs", json_integer(-1));
    json_object_set_new(c, "max_bytes", json_integer(-1));
    json_object_set_new(c, "max_msg_size", json_integer(-1));
    json_object_set_new(c, "max_msgs_per_subject", json_integer(1));
    json_object_set_new(c, "max_age", json_integer(n->cfg.record_ttl_ms * 1000000));
    int64_t dup = n->cfg.record_ttl_ms < 120000 ? n->cfg.record_ttl_ms : 120000;
    json_object_set_new(c, "duplicate_window", json_integer(dup * 1000000));
    json_object_set_new(c, "allow_direct", json_true());
    json_object_set_new(c, "allow_rollup_hdrs", json_true());
    json_object_set_new(c, "deny_delete", json_true());
    json_object_set_new(c, "deny_purge", json_false());
    return c;
}

static enum rec reconcile_bucket(struct cmn_nats *n, struct cmn_err *err)
{
    char stream[300], subject[400];
    snprintf(stream, sizeof(stream), "KV_%s", n->bucket);
    struct api_reply r;
    enum rec out = REC_OK;
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.INFO.%s", stream);
    if (api(n, subject, NULL, &r, err) != CMN_OK)
        return REC_RETRY;
    json_t *want = desired_bucket(n, stream);
    if (r.code == 404 || r.err_code == JSStreamNotFoundErr) {
        api_reply_free(&r);
        snprintf(subject, sizeof(subject), "$JS.API.STREAM.CREATE.%s", stream);
        if (api(n, subject, want, &r, err) != CMN_OK)
            out = REC_RETRY;
        else if (r.code != 0 && r.err_code != JSStreamNameExistErr)
            out = api_failure(err, "create call-record bucket", &r);
        goto out;
    }
    if (r.code != 0) {
        out = api_failure(err, "bucket info", &r);
        goto out;
    }
    json_t *have = json_object_get(r.doc, "config");
    if (!json_is_object(have)) {
        cmn_err_set(err, CMN_ERR_NATS, 0, "stream %s: info without config", stream);
        out = REC_RETRY;
        goto out;
    }
    /* a bucket that became a work queue (or was made one by hand) loses
     * every record it is asked to keep: not editable, so said, not fixed */
    const char *retention = jstr(have, "retention");
    if (strcmp(retention, "limits") != 0) {
        cmn_err_set(err, CMN_ERR_INVALID, 0,
                    "call-record bucket %s: stream %s has retention=%s, not limits (not "
                    "editable); records kept there are lost: remove it with `nats stream rm %s` "
                    "(the records go with it) or use another call_record_bucket",
                    n->bucket, stream, retention, stream);
        out = REC_FATAL;
        goto out;
    }
    char changes[400] = "", a[40], b[40];
    json_t *update = json_deep_copy(have);
    json_t *want_subject = json_array_get(json_object_get(want, "subjects"), 0);
    if (!has_subject(have, json_string_value(want_subject))) {
        json_object_set(update, "subjects", json_object_get(want, "subjects"));
        note_change(changes, sizeof(changes), "subjects", "(without it)",
                    json_string_value(want_subject));
    }
    const char *fields[] = {"num_replicas", "max_age", "max_msgs_per_subject"};
    for (size_t i = 0; i < 3; i++) {
        int64_t hv = jint(have, fields[i], 0), wv = jint(want, fields[i], 0);
        if (i == 0 && hv <= 0)
            hv = 1;
        if (hv == wv)
            continue;
        if (i == 1) {
            fmt_ns(hv, a, sizeof(a));
            fmt_ns(wv, b, sizeof(b));
            /* the duplicate window may not exceed max_age */
            json_object_set(update, "duplicate_window", json_object_get(want, "duplicate_window"));
        } else {
            fmt_int(hv, a, sizeof(a));
            fmt_int(wv, b, sizeof(b));
        }
        note_change(changes, sizeof(changes), fields[i], a, b);
        json_object_set(update, fields[i], json_object_get(want, fields[i]));
    }
    if (!json_is_true(json_object_get(have, "allow_direct"))) {
        note_change(changes, sizeof(changes), "allow_direct", "false", "true");
        json_object_set_new(update, "allow_direct", json_true());
    }
    out = update_stream(n, stream, update, changes, &r, err);
    json_decref(update);
out:
    json_decref(want);
    api_reply_free(&r);
    return out;
}

static json_t *desired_consumer(const struct cmn_nats *n)
{
    json_t *c = json_object();
    json_object_set_new(c, "durable_name", json_string(n->durable));
    json_object_set_new(c, "deliver_policy", json_string("all"));
    json_object_set_new(c, "ack_policy", json_string("explicit"));
    json_object_set_new(c, "ack_wait", json_integer(n->cfg.ack_wait_ms * 1000000));
    /* the worker counts attempts and dead-letters itself */
    json_object_set_new(c, "max_deliver", json_integer(-1));
    json_object_set_new(c, "max_ack_pending", json_integer(n->cfg.max_ack_pending));
    json_object_set_new(c, "max_waiting", json_integer(512));
    json_object_set_new(c, "replay_policy", json_string("instant"));
    json_object_set_new(c, "num_replicas", json_integer(n->cfg.replicas));
    return c;
}

static enum rec reconcile_consumer(struct cmn_nats *n, struct cmn_err *err)
{
    char subject[400];
    struct api_reply r;
    enum rec out = REC_OK;
    json_t *want = desired_consumer(n);
    json_t *body = NULL;
    snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.INFO.%s.%s", n->stream, n->durable);
    if (api(n, subject, NULL, &r, err) != CMN_OK) {
        json_decref(want);
        return REC_RETRY;
    }
    snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.DURABLE.CREATE.%s.%s", n->stream,
             n->durable);
    char changes[600] = "", a[40], b[40];
    if (r.code == 404 || r.err_code == JSConsumerNotFoundErr) {
        body = json_pack("{s:s, s:O}", "stream_name", n->stream, "config", want);
    } else if (r.code != 0) {
        out = api_failure(err, "consumer info", &r);
        goto out;
    } else {
        json_t *have = json_object_get(r.doc, "config");
        if (jstr(have, "deliver_subject")[0] != '\0') {
            cmn_err_set(err, CMN_ERR_INVALID, 0,
                        "consumer %s: a push consumer (deliver_subject), not a pull one (not "
                        "editable): run `nats consumer rm %s %s` so it is created again",
                        n->durable, n->stream, n->durable);
            out = REC_FATAL;
            goto out;
        }
        const char *fixed[] = {"ack_policy", "deliver_policy"};
        for (size_t i = 0; i < 2; i++) {
            const char *h = jstr(have, fixed[i]), *w = jstr(want, fixed[i]);
            if (strcmp(h, w) != 0) {
                cmn_err_set(err, CMN_ERR_INVALID, 0,
                            "consumer %s on stream %s has %s=%s but %s=%s is required and "
                            "cannot be edited: delete it (nats consumer rm %s %s) so it is "
                            "created again",
                            n->durable, n->stream, fixed[i], h, fixed[i], w, n->stream, n->durable);
                out = REC_FATAL;
                goto out;
            }
        }
        json_t *update = json_deep_copy(have);
        int64_t hv = jint(have, "ack_wait", 0), wv = jint(want, "ack_wait", 0);
        if (hv != wv) {
            fmt_ns(hv, a, sizeof(a));
            fmt_ns(wv, b, sizeof(b));
            note_change(changes, sizeof(changes), "ack_wait", a, b);
            json_object_set_new(update, "ack_wait", json_integer(wv));
        }
        hv = jint(have, "max_ack_pending", 0);
        wv = n->cfg.max_ack_pending;
        if (hv != wv) {
            fmt_int(hv, a, sizeof(a));
            fmt_int(wv, b, sizeof(b));
            note_change(changes, sizeof(changes), "max_ack_pending", a, b);
            json_object_set_new(update, "max_ack_pending", json_integer(wv));
        }
        hv = jint(have, "max_deliver", -1);
        if (hv != -1) {
            fmt_int(hv, a, sizeof(a));
            note_change(changes, sizeof(changes), "max_deliver", a, "-1");
            json_object_set_new(update, "max_deliver", json_integer(-1));
        }
        if (json_is_true(json_object_get(have, "headers_only"))) {
            note_change(changes, sizeof(changes), "headers_only", "true", "false");
            json_object_set_new(update, "headers_only", json_false());
        }
        const char *filter = jstr(have, "filter_subject");
        if (filter[0] != '\0' && strcmp(filter, n->stream) != 0) {
            note_change(changes, sizeof(changes), "filter_subject", filter, "(none)");
            json_object_del(update, "filter_subject");
        }
        hv = jint(have, "num_replicas", 0);
        if (hv != 0 && hv != n->cfg.replicas) {
            fmt_int(hv, a, sizeof(a));
            fmt_int(n->cfg.replicas, b, sizeof(b));
            note_change(changes, sizeof(changes), "replicas", a, b);
            json_object_set_new(update, "num_replicas", json_integer(n->cfg.replicas));
        }
        if (changes[0] != '\0')
            body = json_pack("{s:s, s:o}", "stream_name", n->stream, "config", update);
        else
            json_decref(update);
    }
    if (body != NULL) {
        api_reply_free(&r);
        if (api(n, subject, body, &r, err) != CMN_OK) {
            out = REC_RETRY;
        } else if (r.code != 0 && r.err_code != JSConsumerNameExistErr &&
                   r.err_code != JSConsumerExistingActiveErr) {
            char what[700];
            snprintf(what, sizeof(what), "%s consumer %.64s%s%.300s%s",
                     changes[0] ? "update" : "create", n->durable, changes[0] ? " (" : "", changes,
                     changes[0] ? ")" : "");
            out = api_failure(err, what, &r);
            /* an edit the server refuses is not editable on this server */
            if (changes[0] != '\0' && r.code == 400)
                out = REC_FATAL;
        } else {
            if (changes[0] != '\0') {
                char detail[800];
                snprintf(detail, sizeof(detail), "consumer %s on stream %s updated: %s", n->durable,
                         n->stream, changes);
                emit(n, CMN_NATS_CHANGED, detail);
            }
        }
    }
out:
    json_decref(body);
    json_decref(want);
    api_reply_free(&r);
    return out;
}

/* ---- queue state (keeper thread) ----------------------------------------- */

/* Reads stream and consumer state into the stats; returns false when the
 * work-queue stream or a managed consumer is missing (`why` says which). */
static bool refresh(struct cmn_nats *n, char *why, size_t size)
{
    struct cmn_nats_stats s = {-1, -1, -1, -1, -1, -1, -1};
    bool present = true;
    char subject[400];
    struct api_reply r;
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.INFO.%s", n->stream);
    if (api(n, subject, NULL, &r, NULL) == CMN_OK) {
        if (r.code == 0) {
            json_t *st = json_object_get(r.doc, "state");
            s.stream_messages = jint(st, "messages", -1);
            s.stream_bytes = jint(st, "bytes", -1);
            note_created(n, n->stream_created, sizeof(n->stream_created), r.doc);
            /* re-created by hand with other settings: reconcile (it exits on
             * a non-editable difference rather than queue calls nobody runs) */
            json_t *cfg = json_object_get(r.doc, "config");
            if (strcmp(jstr(cfg, "retention"), "workqueue") != 0 ||
                strcmp(jstr(cfg, "storage"), "file") != 0) {
                present = false;
                snprintf(why, size, "stream %s has other settings", n->stream);
            }
        } else if (r.err_code == JSStreamNotFoundErr || r.code == 404) {
            present = false;
            snprintf(why, size, "stream %s not found", n->stream);
        }
    }
    api_reply_free(&r);
    if (n->durable != NULL && present) {
        snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.INFO.%s.%s", n->stream, n->durable);
        if (api(n, subject, NULL, &r, NULL) == CMN_OK) {
            if (r.code == 0) {
                s.pending = jint(r.doc, "num_pending", -1);
                s.ack_pending = jint(r.doc, "num_ack_pending", -1);
                s.redelivered = jint(r.doc, "num_redelivered", -1);
                s.waiting = jint(r.doc, "num_waiting", -1);
            } else if ((r.err_code == JSConsumerNotFoundErr || r.code == 404) &&
                       n->cfg.manage_consumer) {
                present = false;
                snprintf(why, size, "consumer %s not found", n->durable);
            }
        }
        api_reply_free(&r);
    }
    if (n->dlq != NULL) {
        snprintf(subject, sizeof(subject), "$JS.API.STREAM.INFO.%s", n->dlq);
        if (api(n, subject, NULL, &r, NULL) == CMN_OK && r.code == 0)
            s.dead_letter_messages = jint(json_object_get(r.doc, "state"), "messages", -1);
        api_reply_free(&r);
    }
    pthread_mutex_lock(&n->smu);
    n->stats = s;
    pthread_mutex_unlock(&n->smu);
    return present;
}

/* ---- the keeper thread ------------------------------------------------- */

/* A per-function queue's stream the server will not give us: dropped from
 * what the keeper keeps, so that the rest of the set-up stays ready, and
 * remembered so that its calls are answered with the reason. */
static void refuse_extra(struct cmn_nats *n, const char *name, const char *why)
{
    pthread_mutex_lock(&n->mu);
    for (int i = 0; i < n->extra_count; i++) {
        if (strcmp(n->extra[i], name) != 0)
            continue;
        memmove(&n->extra[i], &n->extra[i + 1],
                (size_t)(n->extra_count - i - 1) * sizeof(n->extra[0]));
        n->extra_count--;
        break;
    }
    if (n->refused_count < CMN_NATS_MAX_EXTRA_STREAMS) {
        snprintf(n->refused[n->refused_count].name, CMN_QUEUE_MAX, "%.63s", name);
        snprintf(n->refused[n->refused_count].why, sizeof(n->refused[0].why), "%.239s", why);
        n->refused_count++;
    }
    pthread_mutex_unlock(&n->mu);
    char line[512];
    snprintf(line, sizeof(line), "queue %.63s refused, its calls are answered 503: %.380s", name,
             why);
    emit(n, CMN_NATS_CHANGED, line);
}

/* The configured objects decide readiness; a per-function queue's stream is
 * its own matter: one that cannot be had is refused (refuse_extra), one that
 * failed for a passing reason sets `*extra_retry`. */
static enum rec reconcile_all(struct cmn_nats *n, bool *extra_retry, struct cmn_err *err)
{
    atomic_store(&n->max_payload, natsConnection_GetMaxPayload(n->nc));
    *extra_retry = false;
    enum rec r = reconcile_stream(n, n->stream, true, err);
    if (r == REC_OK && n->dlq != NULL)
        r = reconcile_stream(n, n->dlq, false, err);
    if (r == REC_OK && n->bucket != NULL)
        r = reconcile_bucket(n, err);
    if (r == REC_OK && n->durable != NULL && n->cfg.manage_consumer)
        r = reconcile_consumer(n, err);
    if (r != REC_OK)
        return r;
    char extra[CMN_NATS_MAX_EXTRA_STREAMS][CMN_QUEUE_MAX];
    pthread_mutex_lock(&n->mu);
    int extra_count = n->extra_count;
    memcpy(extra, n->extra, sizeof(extra));
    pthread_mutex_unlock(&n->mu);
    for (int i = 0; i < extra_count; i++) {
        struct cmn_err e;
        cmn_err_clear(&e);
        enum rec x = reconcile_stream(n, extra[i], true, &e);
        if (x == REC_FATAL || (x == REC_RETRY && e.code == JSStreamSubjectOverlapErr))
            refuse_extra(n, extra[i], e.msg);
        else if (x == REC_RETRY)
            *extra_retry = true;
    }
    return REC_OK;
}

void cmn_nats_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

static void wait_locked(struct cmn_nats *n, int64_t ms)
{
    cmn_nats_cond_wait_ms(&n->cv, &n->mu, ms);
}

static void *keeper_main(void *arg)
{
    struct cmn_nats *n = arg;
    int64_t refresh_ms =
        n->cfg.refresh_interval_ms > 0 ? n->cfg.refresh_interval_ms : DEFAULT_REFRESH_MS;
    char last_problem[300] = "";
    int64_t next_refresh = 0, next_setup = 0;
    pthread_mutex_lock(&n->mu);
    while (!n->stop) {
        int64_t now = cmn_nats_now_ms();
        if (!n->opened || n->fatal) {
            pthread_cond_wait(&n->cv, &n->mu);
            continue;
        }
        /* Kicks come with every failed publish: one reconciliation at a time,
         * at most every SETUP_GAP_MS, covers them all. */
        if (n->need_setup && now < next_setup) {
            wait_locked(n, next_setup - now);
            continue;
        }
        if (!n->need_setup && now < next_refresh) {
            wait_locked(n, next_refresh - now);
            continue;
        }
        bool setup = n->need_setup;
        char why[sizeof(n->kick_why)];
        snprintf(why, sizeof(why), "%s", n->kick_why);
        n->kick_why[0] = '\0';
        n->need_setup = false;
        pthread_mutex_unlock(&n->mu);

        bool connected = natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
        bool missing_now = false;
        if (connected && !setup) {
            char missing[200] = "";
            next_refresh = now + refresh_ms;
            if (!refresh(n, missing, sizeof(missing))) {
                setup = true;
                missing_now = true;
                snprintf(why, sizeof(why), "%s", missing);
            }
        } else if (!connected) {
            next_refresh = now + refresh_ms;
        }
        if (connected && setup) {
            next_setup = now + SETUP_GAP_MS;
            if (missing_now) {
                /* known missing or changed: not ready until reconciled */
                atomic_store(&n->ready, false);
                if (atomic_exchange(&n->told_ready, false) || strcmp(last_problem, why) != 0)
                    emit(n, CMN_NATS_NOT_READY, why);
                snprintf(last_problem, sizeof(last_problem), "%s", why);
            }
            struct cmn_err err;
            cmn_err_clear(&err);
            bool extra_retry = false;
            enum rec r = reconcile_all(n, &extra_retry, &err);
            if (r == REC_OK) {
                if (extra_retry) {
                    /* a queue's stream is not there yet: again shortly,
                     * without making the rest not ready */
                    next_setup = cmn_nats_now_ms() + RETRY_SETUP_MS;
                    pthread_mutex_lock(&n->mu);
                    n->need_setup = true;
                    pthread_mutex_unlock(&n->mu);
                }
                last_problem[0] = '\0';
                atomic_store(&n->ready, true);
                /* a disconnect may have slipped in meanwhile */
                if (natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED)
                    atomic_store(&n->ready, false);
                else if (!atomic_exchange(&n->told_ready, true))
                    emit(n, CMN_NATS_READY, "connected to NATS, set-up checked");
                char ignored[200];
                refresh(n, ignored, sizeof(ignored));
                next_refresh = cmn_nats_now_ms() + refresh_ms;
            } else if (r == REC_FATAL) {
                atomic_store(&n->ready, false);
                atomic_store(&n->told_ready, false);
                pthread_mutex_lock(&n->mu);
                n->fatal = true;
                pthread_mutex_unlock(&n->mu);
                emit(n, CMN_NATS_FATAL, err.msg);
            } else {
                atomic_store(&n->ready, false);
                /* the same problem is told once, not every second */
                if (atomic_exchange(&n->told_ready, false) || strcmp(last_problem, err.msg) != 0)
                    emit(n, CMN_NATS_NOT_READY, err.msg);
                snprintf(last_problem, sizeof(last_problem), "%s", err.msg);
                next_setup = cmn_nats_now_ms() + RETRY_SETUP_MS;
                pthread_mutex_lock(&n->mu);
                n->need_setup = true;
                pthread_mutex_unlock(&n->mu);
            }
        }
        pthread_mutex_lock(&n->mu);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

/* ---- open / free ------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

enum cmn_status cmn_nats_open(const struct cmn_nats_config *config, struct cmn_nats **out,
                              struct cmn_err *err)
{
    if (config->url == NULL || config->stream == NULL || config->stream[0] == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "NATS url and stream are required");
    if (config->replicas < 1 || config->replicas > 5)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "stream_replicas must be 1 to 5, not %d",
                           config->replicas);
    char list[2048];
    const char *servers[MAX_SERVERS];
    int count = cmn_nats_split_servers(config->url, list, sizeof(list), servers, MAX_SERVERS);
    if (count < 0)
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "nats_url \"%s\": expected one URL or a comma-separated list of up "
                           "to %d, without empty entries",
                           config->url, MAX_SERVERS);
    struct cmn_nats *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    enum cmn_status st = CMN_OK;
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->smu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&n->close_cv, NULL);
    struct cmn_nats_stats unknown = {-1, -1, -1, -1, -1, -1, -1};
    n->stats = unknown;
    atomic_init(&n->down_since_ms, cmn_nats_now_ms());
    n->cfg = *config;
    n->url = strdup(config->url);
    n->client_name = strdup(config->client_name ? config->client_name : "cfaas");
    n->stream = strdup(config->stream);
    n->dlq = dup_or_null(config->dead_letter_stream);
    n->bucket = dup_or_null(config->records_bucket);
    n->durable = dup_or_null(config->durable);
    if (n->url == NULL || n->client_name == NULL || n->stream == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }
    n->cfg.url = n->url;
    n->cfg.client_name = n->client_name;
    n->cfg.stream = n->stream;
    n->cfg.dead_letter_stream = n->dlq;
    n->cfg.records_bucket = n->bucket;
    n->cfg.durable = n->durable;
    n->reserved[0] = n->dlq;
    const char *taken = cmn_queue_name_reserved(n->stream, n->reserved);
    if (taken != NULL) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "faas_nats_channel \"%s\" is reserved (%s)",
                         n->stream, taken);
        goto out;
    }

    int64_t ping = config->ping_interval_ms > 0 ? config->ping_interval_ms : 2000;
    /* No lock spinning: nats.c spins up to 2000 times on a contended mutex by
     * default, which on a few shared cores burns the time slice the lock
     * holder needs (20k instructions per async call on the gateway). Only the
     * first open of the library sets this. */
    natsStatus s = nats_Open(0);
    if (s == NATS_OK)
        s = natsOptions_Create(&n->opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(n->opts, servers, count);
    if (s == NATS_OK)
        s = natsOptions_SetName(n->opts, n->client_name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(n->opts, config->max_reconnect);
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(n->opts, on_reconnect_delay, n);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(n->opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(n->opts, ping);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(n->opts, 2);
    /* nats.c's flusher waits 1 ms before it writes buffered publishes: a
     * round trip per call step (fetch, claim, outcome) costs that much each */
    if (s == NATS_OK && config->send_asap)
        s = natsOptions_SetSendAsap(n->opts, true);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(n->opts, on_connected, n);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(n->opts, on_closed, n);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
    if (s != NATS_OK) {
        st = cmn_nats_err(err, s, "NATS options");
        goto out;
    }
    if (pthread_create(&n->keeper, NULL, keeper_main, n) != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, errno, "cannot start the NATS keeper thread");
        goto out;
    }
    n->keeper_started = true;
    s = natsConnection_Connect(&n->nc, n->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        st = cmn_nats_err(err, s, "NATS connect");
        goto out;
    }
    if (s == NATS_NOT_YET_CONNECTED) {
        char detail[2300];
        const char *last = nats_GetLastError(NULL);
        snprintf(detail, sizeof(detail), "no server of %s answered the first attempt%s%s; retrying",
                 n->url, last && last[0] ? ": " : "", last ? last : "");
        emit(n, CMN_NATS_CONNECT_FAILED, detail);
    }
    pthread_mutex_lock(&n->mu);
    n->opened = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED)
        on_connected(n->nc, n);
    *out = n;
    return CMN_OK;
out:
    cmn_nats_free(n);
    return st;
}

void cmn_nats_free(struct cmn_nats *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->mu);
    n->stop = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (n->keeper_started)
        pthread_join(n->keeper, NULL);
    if (n->nc != NULL) {
        /* what was published last (unconfirmed acks, NAKs) reaches the server */
        if (natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED)
            natsConnection_FlushTimeout(n->nc, 500);
        natsConnection_Close(n->nc);
        /* Close only posts the closed callback: wait for it (bounded). */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&n->mu);
        while (!n->close_done && pthread_cond_timedwait(&n->close_cv, &n->mu, &until) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&n->mu);
        natsConnection_Destroy(n->nc);
    }
    natsOptions_Destroy(n->opts);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->smu);
    pthread_cond_destroy(&n->cv);
    pthread_cond_destroy(&n->close_cv);
    free(n->url);
    free(n->client_name);
    free(n->stream);
    free(n->dlq);
    free(n->bucket);
    free(n->durable);
    free(n);
}

bool cmn_nats_ready(const struct cmn_nats *n)
{
    return atomic_load(&((struct cmn_nats *)n)->ready);
}

bool cmn_nats_connected(const struct cmn_nats *n)
{
    return atomic_load(&((struct cmn_nats *)n)->connected);
}

uint64_t cmn_nats_epoch(const struct cmn_nats *n)
{
    return atomic_load(&((struct cmn_nats *)n)->epoch);
}

int64_t cmn_nats_down_ms(const struct cmn_nats *n)
{
    int64_t since = atomic_load(&((struct cmn_nats *)n)->down_since_ms);
    return since == 0 ? 0 : cmn_nats_now_ms() - since;
}

int64_t cmn_nats_max_payload(const struct cmn_nats *n)
{
    return atomic_load(&((struct cmn_nats *)n)->max_payload);
}

bool cmn_nats_add_stream(struct cmn_nats *n, const char *name, char *why, size_t why_size)
{
    char ignored[8];
    if (why == NULL || why_size == 0) {
        why = ignored;
        why_size = sizeof(ignored);
    }
    why[0] = '\0';
    const char *taken = NULL;
    if (!cmn_queue_name_valid(name, strlen(name))) {
        snprintf(why, why_size, "not a queue name (1 to 63 of A-Z a-z 0-9 - _)");
        return false;
    }
    if ((taken = cmn_queue_name_reserved(name, n->reserved)) != NULL) {
        snprintf(why, why_size, "reserved: %s", taken);
        return false;
    }
    pthread_mutex_lock(&n->mu);
    bool known = strcmp(name, n->stream) == 0;
    for (int i = 0; i < n->extra_count && !known; i++)
        known = strcmp(n->extra[i], name) == 0;
    for (int i = 0; i < n->refused_count; i++) {
        if (strcmp(n->refused[i].name, name) == 0) {
            snprintf(why, why_size, "%s", n->refused[i].why);
            pthread_mutex_unlock(&n->mu);
            return false;
        }
    }
    bool room = n->extra_count < CMN_NATS_MAX_EXTRA_STREAMS;
    if (!known && room)
        snprintf(n->extra[n->extra_count++], CMN_QUEUE_MAX, "%s", name);
    pthread_mutex_unlock(&n->mu);
    if (!known && !room)
        snprintf(why, why_size, "no room for another stream (at most %d queues)",
                 CMN_NATS_MAX_EXTRA_STREAMS);
    if (!known && room)
        request_setup(n, NULL);
    return known || room;
}

void cmn_nats_kick(struct cmn_nats *n, const char *why)
{
    request_setup(n, why != NULL && why[0] ? why : "reconciliation requested");
}

void cmn_nats_stats_get(const struct cmn_nats *n, struct cmn_nats_stats *out)
{
    struct cmn_nats *m = (struct cmn_nats *)n;
    pthread_mutex_lock(&m->smu);
    *out = m->stats;
    pthread_mutex_unlock(&m->smu);
}
