/* Call records in a JetStream key-value bucket: the record's JSON form, the
 * asynchronous get / compare-and-set put on the request tracker (a get is a
 * direct get of the key's last message, a put a publish on the key's subject
 * with Nats-Expected-Last-Subject-Sequence), the cancel notices, and the
 * blocking queries for the gateway's records thread. */
#include "cmn/callrec.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cmn/codec.h"
#include "cmn/duration.h"
#include "cmn/headers.h"
#include "nats_priv.h"

#define HDR_EXPECTED "Nats-Expected-Last-Subject-Sequence"
#define WRONG_LAST_SEQUENCE 10071 /* JSStreamWrongLastSequenceErr */
#define SUBJECT_MAX 512

static const char *const state_names[] = {
    "queued", "scheduled", "running", "retrying",      "succeeded",
    "failed", "cancelled", "expired", "dead-lettered",
};
_Static_assert(sizeof(state_names) / sizeof(state_names[0]) == CMN_CALL_STATE_COUNT,
               "every call state has a name");
static const char *const cb_names[] = {"none", "pending", "posted", "failed"};

const char *cmn_call_state_name(enum cmn_call_state state)
{
    return (unsigned)state < CMN_CALL_STATE_COUNT ? state_names[state] : "unknown";
}

bool cmn_call_state_parse(const char *name, enum cmn_call_state *out)
{
    for (int i = 0; i < CMN_CALL_STATE_COUNT; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum cmn_call_state)i;
            return true;
        }
    }
    return false;
}

bool cmn_call_state_final(enum cmn_call_state state)
{
    return state >= CMN_CALL_SUCCEEDED && state < CMN_CALL_STATE_COUNT;
}

void cmn_rec_init(struct cmn_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
}

char *cmn_recs_cancel_subject(const char *bucket, char *buf, size_t size)
{
    snprintf(buf, size, "%s.cancel", bucket);
    return buf;
}

/* ---- JSON form ------------------------------------------------------------ */

static void set_time(json_t *o, const char *key, int64_t ms)
{
    if (ms <= 0)
        return;
    char buf[40];
    json_object_set_new(o, key, json_string(cmn_time_format(ms, buf, sizeof(buf))));
}

static void set_text(json_t *o, const char *key, const char *s)
{
    if (s[0] != '\0')
        json_object_set_new(o, key, json_string(s));
}

char *cmn_rec_to_json(const struct cmn_rec *rec, bool with_revision)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "call_id", json_string(rec->call_id));
    json_object_set_new(o, "function", json_string(rec->function));
    json_object_set_new(o, "state", json_string(cmn_call_state_name(rec->state)));
    json_object_set_new(o, "attempt", json_integer(rec->attempt));
    if (rec->status > 0)
        json_object_set_new(o, "status", json_integer(rec->status));
    set_time(o, "submitted", rec->submitted_ms);
    set_time(o, "not_before", rec->not_before_ms);
    set_time(o, "started", rec->started_ms);
    set_time(o, "finished", rec->finished_ms);
    if (rec->state == CMN_CALL_RUNNING)
        set_time(o, "lease_until", rec->lease_until_ms);
    if (rec->attempt > 0)
        json_object_set_new(o, "duration_seconds", json_real(rec->duration_s));
    json_object_set_new(o, "callback", json_string(cb_names[rec->callback & 3]));
    if (rec->callback_status > 0)
        json_object_set_new(o, "callback_status", json_integer(rec->callback_status));
    set_text(o, "worker", rec->worker);
    set_text(o, "reason", rec->reason);
    if (rec->redriven > 0)
        json_object_set_new(o, "redriven", json_integer(rec->redriven));
    if (with_revision) {
        json_object_set_new(o, "revision", json_integer((json_int_t)rec->revision));
    } else {
        set_text(o, "write_id", rec->write_id);
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static void get_text(json_t *o, const char *key, char *buf, size_t size)
{
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(buf, size, "%s", s != NULL ? s : "");
}

static int64_t get_time(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    int64_t ms = 0;
    if (s == NULL || !cmn_time_parse(s, &ms))
        return 0;
    return ms;
}

static int get_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

enum cmn_status cmn_rec_from_json(const void *data, size_t len, struct cmn_rec *out,
                                  struct cmn_err *err)
{
    json_error_t je;
    json_t *o = json_loadb(data, len, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "record: not a JSON object");
    }
    struct cmn_rec r;
    cmn_rec_init(&r);
    get_text(o, "call_id", r.call_id, sizeof(r.call_id));
    get_text(o, "function", r.function, sizeof(r.function));
    const char *state = json_string_value(json_object_get(o, "state"));
    bool ok = state != NULL && cmn_call_state_parse(state, &r.state) && r.call_id[0] != '\0';
    r.attempt = get_int(o, "attempt");
    r.status = get_int(o, "status");
    r.redriven = get_int(o, "redriven");
    r.callback_status = get_int(o, "callback_status");
    r.submitted_ms = get_time(o, "submitted");
    r.not_before_ms = get_time(o, "not_before");
    r.started_ms = get_time(o, "started");
    r.finished_ms = get_time(o, "finished");
    r.lease_until_ms = get_time(o, "lease_until");
    r.duration_s = json_number_value(json_object_get(o, "duration_seconds"));
    const char *cb = json_string_value(json_object_get(o, "callback"));
    for (int i = 0; cb != NULL && i < 4; i++)
        if (strcmp(cb, cb_names[i]) == 0)
            r.callback = (enum cmn_callback_state)i;
    get_text(o, "worker", r.worker, sizeof(r.worker));
    get_text(o, "reason", r.reason, sizeof(r.reason));
    get_text(o, "write_id", r.write_id, sizeof(r.write_id));
    json_decref(o);
    if (!ok)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "record: missing call_id or state");
    *out = r;
    return CMN_OK;
}

/* ---- shared message helpers ---------------------------------------------- */

static bool bucket_valid(const char *b)
{
    if (b == NULL || b[0] == '\0' || strlen(b) > 200)
        return false;
    for (const char *p = b; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* A status-only reply ("404", "408", "503"...), else NULL. */
static const char *reply_status(natsMsg *m)
{
    const char *st = NULL;
    if (natsMsg_GetDataLength(m) == 0 && natsMsgHeader_Get(m, "Status", &st) == NATS_OK)
        return st;
    return NULL;
}

static uint64_t header_u64(natsMsg *m, const char *name)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, name, &v) != NATS_OK || v == NULL)
        return 0;
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    return end != v && *end == '\0' ? (uint64_t)n : 0;
}

/* A direct-get reply for a key: CMN_OK (record parsed into `out`),
 * CMN_ERR_NOT_FOUND, CMN_ERR_UNAVAILABLE (no responders), other errors. */
static enum cmn_status read_kv_reply(natsMsg *m, struct cmn_rec *out, char *detail, size_t size)
{
    if (natsMsg_IsNoResponders(m)) {
        snprintf(detail, size, "no responders (bucket missing or without leader)");
        return CMN_ERR_UNAVAILABLE;
    }
    const char *st = reply_status(m);
    if (st != NULL) {
        if (strncmp(st, "404", 3) == 0)
            return CMN_ERR_NOT_FOUND;
        snprintf(detail, size, "direct get answered status %s", st);
        return CMN_ERR_NATS;
    }
    const char *op = NULL;
    if (natsMsgHeader_Get(m, "KV-Operation", &op) == NATS_OK)
        return CMN_ERR_NOT_FOUND; /* deleted or purged key */
    struct cmn_err e;
    if (cmn_rec_from_json(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), out, &e) !=
        CMN_OK) {
        snprintf(detail, size, "%.150s", e.msg);
        return CMN_ERR_NATS;
    }
    out->revision = header_u64(m, "Nats-Sequence");
    return CMN_OK;
}

/* A publish answer to a put: CMN_OK (revision), CMN_ERR_CONFLICT, or an
 * error; `*retry` is set for transient refusals. */
static enum cmn_status read_put_reply(natsMsg *m, uint64_t *revision, bool *retry, bool *full,
                                      char *detail, size_t size)
{
    *retry = false;
    *full = false;
    if (natsMsg_IsNoResponders(m)) {
        snprintf(detail, size, "no responders (bucket missing or without leader)");
        *retry = true;
        return CMN_ERR_UNAVAILABLE;
    }
    json_error_t je;
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &je);
    if (doc == NULL) {
        snprintf(detail, size, "unreadable publish answer");
        return CMN_ERR_NATS;
    }
    enum cmn_status st = CMN_OK;
    json_t *e = json_object_get(doc, "error");
    if (json_is_object(e)) {
        int code = (int)json_integer_value(json_object_get(e, "code"));
        int js = (int)json_integer_value(json_object_get(e, "err_code"));
        const char *d = json_string_value(json_object_get(e, "description"));
        snprintf(detail, size, "%s (err_code %d)", d ? d : "refused", js);
        if (js == WRONG_LAST_SEQUENCE) {
            st = CMN_ERR_CONFLICT;
        } else if (js == JSStorageResourcesExceededErr || js == JSInsufficientResourcesErr ||
                   js == JSStreamStoreFailedErr) {
            st = CMN_ERR_UNAVAILABLE;
            *full = true;
        } else {
            st = CMN_ERR_NATS;
            *retry = code == 503 || js == JSStreamNotFoundErr;
        }
    } else {
        *revision = (uint64_t)json_integer_value(json_object_get(doc, "seq"));
    }
    json_decref(doc);
    return st;
}

/* The unique id of one write: pid, a counter and the time. */
static void new_write_id(char *buf, size_t size)
{
    static atomic_uint_fast64_t counter;
    uint64_t n = atomic_fetch_add(&counter, 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    snprintf(buf, size, "%x-%" PRIx64 "-%" PRIx64, (unsigned)getpid(), n, t);
}

static natsStatus build_put(const char *bucket, const struct cmn_rec *rec, uint64_t expected,
                            const char *reply, natsMsg **out)
{
    char subject[SUBJECT_MAX];
    snprintf(subject, sizeof(subject), "$KV.%s.%s", bucket, rec->call_id);
    char *text = cmn_rec_to_json(rec, false);
    if (text == NULL)
        return NATS_NO_MEMORY;
    natsStatus s = natsMsg_Create(out, subject, reply, text, (int)strlen(text));
    free(text);
    if (s == NATS_OK && expected != CMN_REC_ANY) {
        char num[24];
        snprintf(num, sizeof(num), "%" PRIu64, expected);
        s = natsMsgHeader_Set(*out, HDR_EXPECTED, num);
    }
    return s;
}

static natsStatus build_get(const char *bucket, const char *call_id, const char *reply,
                            natsMsg **out)
{
    char subject[SUBJECT_MAX], body[SUBJECT_MAX + 40];
    snprintf(subject, sizeof(subject), "$JS.API.DIRECT.GET.KV_%s", bucket);
    int n = snprintf(body, sizeof(body), "{\"last_by_subj\":\"$KV.%s.%s\"}", bucket, call_id);
    return natsMsg_Create(out, subject, reply, body, n);
}

/* ---- asynchronous store ---------------------------------------------------- */

struct notice {
    struct notice *next;
    char id[CMN_CALLID_MAX];
};

struct cmn_recs {
    struct cmn_nats *nats;
    char *bucket;
    int64_t timeout_ms;
    struct tracker *tracker;
    natsSubscription *cancel_sub;
    pthread_mutex_t mu; /* notices */
    struct notice *head, *tail;
    void (*wake)(void *closure);
    void *closure;
};

/* Parsed on nats.c's thread, handed to the owner with the completion. */
struct parsed {
    bool has_rec;
    struct cmn_rec rec;
};

static enum tracker_verdict classify_rec(natsMsg *reply, struct tracker_result *r, void *closure)
{
    struct cmn_recs *recs = closure;
    if (natsMsg_IsNoResponders(reply)) {
        snprintf(r->detail, sizeof(r->detail), "no responders for the call-record bucket");
        cmn_nats_kick(recs->nats, "call records: no responders (bucket missing or no leader)");
        return TRACKER_RETRY;
    }
    const char *st = reply_status(reply);
    if (st != NULL || header_u64(reply, "Nats-Sequence") != 0) {
        /* a direct-get answer */
        struct parsed *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            r->status = CMN_ERR_NOMEM;
            return TRACKER_DONE;
        }
        r->status = read_kv_reply(reply, &p->rec, r->detail, sizeof(r->detail));
        if (r->status == CMN_OK) {
            p->has_rec = true;
            r->seq = p->rec.revision;
            r->payload = p;
        } else {
            free(p);
            if (st != NULL && (strncmp(st, "503", 3) == 0 || strncmp(st, "408", 3) == 0))
                return TRACKER_RETRY;
        }
        return TRACKER_DONE;
    }
    bool retry = false, full = false;
    uint64_t rev = 0;
    r->status = read_put_reply(reply, &rev, &retry, &full, r->detail, sizeof(r->detail));
    r->seq = rev;
    r->full = full;
    if (retry) {
        cmn_nats_kick(recs->nats, "call records: bucket refused a write for now");
        return TRACKER_RETRY;
    }
    return TRACKER_DONE;
}

static void on_cancel_notice(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct cmn_recs *recs = closure;
    char id[CMN_CALLID_MAX];
    int len = natsMsg_GetDataLength(msg);
    if (len > 0 && len < (int)sizeof(id)) {
        memcpy(id, natsMsg_GetData(msg), (size_t)len);
        id[len] = '\0';
        struct notice *n = cmn_callid_valid(id) ? malloc(sizeof(*n)) : NULL;
        if (n != NULL) {
            memcpy(n->id, id, sizeof(id));
            n->next = NULL;
            pthread_mutex_lock(&recs->mu);
            if (recs->tail != NULL)
                recs->tail->next = n;
            else
                recs->head = n;
            recs->tail = n;
            pthread_mutex_unlock(&recs->mu);
            if (recs->wake != NULL)
                recs->wake(recs->closure);
        }
    }
    natsMsg_Destroy(msg);
}

enum cmn_status cmn_recs_new(struct cmn_nats *nats, const struct cmn_recs_config *config,
                             struct cmn_recs **out, struct cmn_err *err)
{
    if (!bucket_valid(config->bucket))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid bucket name");
    struct cmn_recs *recs = calloc(1, sizeof(*recs));
    if (recs == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    recs->nats = nats;
    recs->bucket = strdup(config->bucket);
    recs->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : 5000;
    recs->wake = config->wake;
    recs->closure = config->closure;
    pthread_mutex_init(&recs->mu, NULL);
    if (recs->bucket == NULL) {
        cmn_recs_free(recs);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    struct tracker_config tc = {
        .nats = nats,
        .resend_ms = recs->timeout_ms / 4 < 250 ? 250 : recs->timeout_ms / 4,
        .retry_ms = 100,
        .max_live = 16384,
        .send_on_caller = true,
        .late_ms = 0,
        .classify = classify_rec,
        .classify_closure = recs,
        .payload_free = free,
        .wake = config->wake,
        .wake_closure = config->closure,
    };
    enum cmn_status st = tracker_new(&tc, &recs->tracker, err);
    if (st == CMN_OK && config->watch_cancels) {
        char subject[SUBJECT_MAX];
        cmn_recs_cancel_subject(recs->bucket, subject, sizeof(subject));
        natsStatus s = natsConnection_Subscribe(&recs->cancel_sub, cmn_nats_conn(nats), subject,
                                                on_cancel_notice, recs);
        if (s != NATS_OK)
            st = cmn_nats_err(err, s, "subscribe to cancel notices");
    }
    if (st != CMN_OK) {
        cmn_recs_free(recs);
        return st;
    }
    *out = recs;
    return CMN_OK;
}

void cmn_recs_free(struct cmn_recs *recs)
{
    if (recs == NULL)
        return;
    if (recs->cancel_sub != NULL) {
        natsSubscription_Unsubscribe(recs->cancel_sub);
        natsSubscription_Destroy(recs->cancel_sub);
    }
    tracker_free(recs->tracker);
    for (struct notice *n = recs->head, *next; n != NULL; n = next) {
        next = n->next;
        free(n);
    }
    pthread_mutex_destroy(&recs->mu);
    free(recs->bucket);
    free(recs);
}

static enum cmn_status submit(struct cmn_recs *recs, uint64_t id, natsMsg *m, natsStatus s,
                              void *token, const char *label, struct cmn_err *err)
{
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return cmn_nats_err(err, s, "build record message");
    }
    return tracker_submit(recs->tracker, id, &m, cmn_nats_now_ms() + recs->timeout_ms, token, label,
                          0, err);
}

enum cmn_status cmn_recs_get(struct cmn_recs *recs, const char *call_id, void *token,
                             struct cmn_err *err)
{
    if (!cmn_callid_valid(call_id))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid call id");
    char reply[200];
    uint64_t id = tracker_reply_subject(recs->tracker, reply, sizeof(reply));
    natsMsg *m = NULL;
    natsStatus s = build_get(recs->bucket, call_id, reply, &m);
    return submit(recs, id, m, s, token, call_id, err);
}

enum cmn_status cmn_recs_put(struct cmn_recs *recs, const struct cmn_rec *rec, uint64_t expected,
                             void *token, struct cmn_err *err)
{
    if (!cmn_callid_valid(rec->call_id))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid call id");
    char reply[200];
    uint64_t id = tracker_reply_subject(recs->tracker, reply, sizeof(reply));
    natsMsg *m = NULL;
    natsStatus s = build_put(recs->bucket, rec, expected, reply, &m);
    return submit(recs, id, m, s, token, rec->call_id, err);
}

struct relay {
    cmn_recs_done_cb cb;
    void *closure;
};

static void relay_result(const struct tracker_result *r, void *closure)
{
    struct relay *rl = closure;
    const struct parsed *p = r->payload;
    struct cmn_recs_result out = {
        .token = r->token,
        .status = r->status,
        .rec = p != NULL && p->has_rec ? &p->rec : NULL,
        .revision = r->seq,
        .full = r->full,
        .sends = r->sends,
        .detail = r->detail,
    };
    if (r->token != NULL)
        rl->cb(&out, rl->closure);
}

size_t cmn_recs_complete(struct cmn_recs *recs, cmn_recs_done_cb cb, void *closure)
{
    struct relay rl = {cb, closure};
    return tracker_complete(recs->tracker, relay_result, &rl);
}

size_t cmn_recs_cancels(struct cmn_recs *recs, void (*cb)(const char *call_id, void *closure),
                        void *closure)
{
    pthread_mutex_lock(&recs->mu);
    struct notice *list = recs->head;
    recs->head = recs->tail = NULL;
    pthread_mutex_unlock(&recs->mu);
    size_t n = 0;
    while (list != NULL) {
        struct notice *next = list->next;
        cb(list->id, closure);
        free(list);
        list = next;
        n++;
    }
    return n;
}

/* ---- blocking queries -------------------------------------------------------- */

#define MAX_QUEUES 32

struct cmn_recq {
    struct cmn_nats *nats;
    char *bucket, *stream, *dlq;
    int64_t timeout_ms;
    cmn_recq_queues_fn queues;
    void *queues_arg;
};

enum cmn_status cmn_recq_new(struct cmn_nats *nats, const struct cmn_recq_config *config,
                             struct cmn_recq **out, struct cmn_err *err)
{
    if (!bucket_valid(config->bucket) || config->stream == NULL || config->stream[0] == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid bucket or stream name");
    struct cmn_recq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    q->nats = nats;
    q->bucket = strdup(config->bucket);
    q->stream = strdup(config->stream);
    q->dlq = config->dead_letter_stream != NULL && config->dead_letter_stream[0] != '\0'
                 ? strdup(config->dead_letter_stream)
                 : NULL;
    q->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : 2000;
    q->queues = config->queues;
    q->queues_arg = config->queues_arg;
    if (q->bucket == NULL || q->stream == NULL) {
        cmn_recq_free(q);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    *out = q;
    return CMN_OK;
}

void cmn_recq_free(struct cmn_recq *q)
{
    if (q == NULL)
        return;
    free(q->bucket);
    free(q->stream);
    free(q->dlq);
    free(q);
}

/* One request; `*reply` is new on CMN_OK. */
static enum cmn_status request_msg(struct cmn_recq *q, natsMsg *m, natsMsg **reply,
                                   struct cmn_err *err)
{
    if (!cmn_nats_connected(q->nats))
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "NATS not connected");
    natsStatus s = natsConnection_RequestMsg(reply, cmn_nats_conn(q->nats), m, q->timeout_ms);
    if (s != NATS_OK)
        return cmn_nats_err(err, s, natsMsg_GetSubject(m));
    return CMN_OK;
}

static enum cmn_status request(struct cmn_recq *q, const char *subject, const char *body,
                               natsMsg **reply, struct cmn_err *err)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, body, body ? (int)strlen(body) : 0);
    if (s != NATS_OK)
        return cmn_nats_err(err, s, "build request");
    enum cmn_status st = request_msg(q, m, reply, err);
    natsMsg_Destroy(m);
    return st;
}

/* The last message on `subject` of `stream` (direct get); `*out` new on OK. */
static enum cmn_status direct_get(struct cmn_recq *q, const char *stream, const char *json,
                                  natsMsg **out, struct cmn_err *err)
{
    char subject[SUBJECT_MAX];
    snprintf(subject, sizeof(subject), "$JS.API.DIRECT.GET.%s", stream);
    natsMsg *reply = NULL;
    enum cmn_status st = request(q, subject, json, &reply, err);
    if (st != CMN_OK)
        return st;
    if (natsMsg_IsNoResponders(reply)) {
        natsMsg_Destroy(reply);
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "%s: no responders", stream);
    }
    const char *status = reply_status(reply);
    if (status != NULL) {
        enum cmn_status out_st = strncmp(status, "404", 3) == 0 ? CMN_ERR_NOT_FOUND : CMN_ERR_NATS;
        cmn_err_set(err, out_st, 0, "%s: direct get status %s", stream, status);
        natsMsg_Destroy(reply);
        return out_st;
    }
    *out = reply;
    return CMN_OK;
}

static enum cmn_status kv_read(struct cmn_recq *q, const char *call_id, struct cmn_rec *out,
                               struct cmn_err *err)
{
    natsMsg *m = NULL;
    char subject[SUBJECT_MAX];
    snprintf(subject, sizeof(subject), "$JS.API.DIRECT.GET.KV_%s", q->bucket);
    natsMsg *req = NULL;
    natsStatus s = build_get(q->bucket, call_id, NULL, &req);
    if (s != NATS_OK)
        return cmn_nats_err(err, s, "build get");
    enum cmn_status st = request_msg(q, req, &m, err);
    natsMsg_Destroy(req);
    if (st != CMN_OK)
        return st;
    char detail[200] = "";
    st = read_kv_reply(m, out, detail, sizeof(detail));
    natsMsg_Destroy(m);
    if (st != CMN_OK)
        return cmn_err_set(err, st, 0, "record %s: %s", call_id, detail[0] ? detail : "not found");
    return CMN_OK;
}

static enum cmn_status kv_write(struct cmn_recq *q, const struct cmn_rec *rec, uint64_t expected,
                                uint64_t *revision, struct cmn_err *err)
{
    natsMsg *m = NULL, *reply = NULL;
    natsStatus s = build_put(q->bucket, rec, expected, NULL, &m);
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return cmn_nats_err(err, s, "build put");
    }
    enum cmn_status st = request_msg(q, m, &reply, err);
    natsMsg_Destroy(m);
    if (st != CMN_OK)
        return st;
    bool retry = false, full = false;
    char detail[200] = "";
    uint64_t rev = 0;
    st = read_put_reply(reply, &rev, &retry, &full, detail, sizeof(detail));
    natsMsg_Destroy(reply);
    if (st != CMN_OK)
        return cmn_err_set(err, st, 0, "record %s: %s", rec->call_id, detail);
    if (revision != NULL)
        *revision = rev;
    return CMN_OK;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t header_ns_ms(natsMsg *m, const char *name)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, name, &v) != NATS_OK || v == NULL)
        return 0;
    char *end = NULL;
    long long ns = strtoll(v, &end, 10);
    return end != v && *end == '\0' && ns > 0 ? ns / 1000000 : 0;
}

/* The record of a call still waiting in work stream `stream`; `*seq` its
 * stream sequence. */
/* The record a call waiting in a work stream implies (message `m`). */
static void rec_of_waiting(natsMsg *m, const char *call_id, struct cmn_rec *out, uint64_t *seq)
{
    struct cmn_rec r;
    cmn_rec_init(&r);
    snprintf(r.call_id, sizeof(r.call_id), "%s", call_id);
    const char *fn = NULL, *cb = NULL;
    if (natsMsgHeader_Get(m, CMN_HDR_FUNCTION, &fn) == NATS_OK && fn != NULL)
        snprintf(r.function, sizeof(r.function), "%s", fn);
    if (natsMsgHeader_Get(m, CMN_HDR_CALLBACK, &cb) == NATS_OK && cb != NULL && cb[0] != '\0')
        r.callback = CMN_CB_PENDING;
    r.submitted_ms = header_ns_ms(m, CMN_HDR_START);
    r.not_before_ms = header_ns_ms(m, CMN_HDR_NOT_BEFORE);
    r.state = r.not_before_ms > wall_ms() ? CMN_CALL_SCHEDULED : CMN_CALL_QUEUED;
    if (seq != NULL)
        *seq = header_u64(m, "Nats-Sequence");
    *out = r;
}

static enum cmn_status derive_in(struct cmn_recq *q, const char *stream, const char *call_id,
                                 struct cmn_rec *out, uint64_t *seq, struct cmn_err *err)
{
    char json[SUBJECT_MAX + 40];
    snprintf(json, sizeof(json), "{\"last_by_subj\":\"%s.%s\"}", stream, call_id);
    natsMsg *m = NULL;
    enum cmn_status st = direct_get(q, stream, json, &m, err);
    if (st != CMN_OK)
        return st;
    rec_of_waiting(m, call_id, out, seq);
    natsMsg_Destroy(m);
    return CMN_OK;
}

/* derive_in over the default stream, then every per-function queue; the
 * stream that holds the call goes to `found` (CMN_QUEUE_MAX bytes) when not
 * NULL. A queue without a stream counts as not holding it. */
static enum cmn_status derive(struct cmn_recq *q, const char *call_id, struct cmn_rec *out,
                              uint64_t *seq, char *found, struct cmn_err *err)
{
    enum cmn_status st = derive_in(q, q->stream, call_id, out, seq, err);
    if (st == CMN_OK && found != NULL)
        snprintf(found, CMN_QUEUE_MAX, "%s", q->stream);
    if (st != CMN_ERR_NOT_FOUND || q->queues == NULL)
        return st;
    char names[MAX_QUEUES][CMN_QUEUE_MAX];
    size_t n = q->queues(q->queues_arg, names, MAX_QUEUES);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], q->stream) == 0)
            continue;
        struct cmn_err e2;
        st = derive_in(q, names[i], call_id, out, seq, &e2);
        if (st == CMN_OK) {
            if (found != NULL)
                snprintf(found, CMN_QUEUE_MAX, "%s", names[i]);
            return CMN_OK;
        }
        if (st != CMN_ERR_NOT_FOUND && st != CMN_ERR_NATS) {
            if (err != NULL)
                *err = e2;
            return st;
        }
    }
    return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "no waiting call %s", call_id);
}

enum cmn_status cmn_recq_lookup(struct cmn_recq *q, const char *call_id, struct cmn_rec *out,
                                struct cmn_err *err)
{
    if (!cmn_callid_valid(call_id))
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "invalid call id");
    enum cmn_status st = kv_read(q, call_id, out, err);
    if (st != CMN_ERR_NOT_FOUND)
        return st;
    st = derive(q, call_id, out, NULL, NULL, err);
    if (st != CMN_ERR_NOT_FOUND)
        return st;
    /* a worker may have claimed and finished it between the two reads */
    return kv_read(q, call_id, out, err);
}

static enum cmn_status delete_msg(struct cmn_recq *q, const char *stream, uint64_t seq,
                                  struct cmn_err *err)
{
    char subject[SUBJECT_MAX], body[64];
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.MSG.DELETE.%s", stream);
    snprintf(body, sizeof(body), "{\"seq\":%" PRIu64 ",\"no_erase\":true}", seq);
    natsMsg *reply = NULL;
    enum cmn_status st = request(q, subject, body, &reply, err);
    if (st != CMN_OK)
        return st;
    json_t *doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, NULL);
    natsMsg_Destroy(reply);
    bool ok = json_is_true(json_object_get(doc, "success"));
    json_t *e = json_object_get(doc, "error");
    if (!ok) {
        const char *d = json_string_value(json_object_get(e, "description"));
        cmn_err_set(err, CMN_ERR_NATS, 0, "delete %s seq %" PRIu64 ": %s", stream, seq,
                    d ? d : "refused");
    }
    json_decref(doc);
    return ok ? CMN_OK : CMN_ERR_NATS;
}

/* Publishes an empty copy of the waiting call `call_id` without its
 * not-before time (Nats-Msg-Id "<id>.c"); true once stored. */
static bool requeue_now(struct cmn_recq *q, const char *stream, const char *call_id,
                        struct cmn_err *err)
{
    char json[SUBJECT_MAX + 40], subject[SUBJECT_MAX], msg_id[CMN_CALLID_MAX + 8];
    snprintf(json, sizeof(json), "{\"last_by_subj\":\"%s.%s\"}", stream, call_id);
    natsMsg *orig = NULL, *m = NULL, *reply = NULL;
    if (direct_get(q, stream, json, &orig, err) != CMN_OK)
        return false;
    struct cmn_headers h;
    cmn_headers_init(&h);
    enum cmn_status st = cmn_nats_msg_headers(orig, &h, err);
    snprintf(subject, sizeof(subject), "%s.%s", stream, call_id);
    /* '/' cannot occur in a call id: no client id can collide with it */
    snprintf(msg_id, sizeof(msg_id), "%s/c", call_id);
    natsStatus s = natsMsg_Create(&m, subject, NULL, NULL, 0);
    for (size_t i = 0; st == CMN_OK && s == NATS_OK && i < h.count; i++) {
        const char *name = h.items[i].name;
        if (strncasecmp(name, "Nats-", 5) == 0 || strcasecmp(name, CMN_HDR_NOT_BEFORE) == 0 ||
            strcasecmp(name, CMN_HDR_CALL_ID) == 0 || h.items[i].value[0] == '\0')
            continue;
        s = natsMsgHeader_Add(m, name, h.items[i].value);
    }
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, CMN_HDR_MSG_ID, msg_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, CMN_HDR_CALL_ID, call_id);
    bool ok = false;
    if (st == CMN_OK && s == NATS_OK && request_msg(q, m, &reply, err) == CMN_OK) {
        bool retry = false, full = false;
        char detail[200];
        uint64_t rev = 0;
        ok = read_put_reply(reply, &rev, &retry, &full, detail, sizeof(detail)) == CMN_OK;
    }
    cmn_headers_free(&h);
    natsMsg_Destroy(orig);
    natsMsg_Destroy(m);
    natsMsg_Destroy(reply);
    return ok;
}

static void notify_cancel(struct cmn_recq *q, const char *call_id)
{
    char subject[SUBJECT_MAX];
    cmn_recs_cancel_subject(q->bucket, subject, sizeof(subject));
    natsConnection_PublishString(cmn_nats_conn(q->nats), subject, call_id);
    natsConnection_Flush(cmn_nats_conn(q->nats));
}

enum cmn_status cmn_recq_cancel(struct cmn_recq *q, const char *call_id, const char *reason,
                                struct cmn_rec *out, struct cmn_err *err)
{
    if (!cmn_callid_valid(call_id))
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "invalid call id");
    for (int round = 0; round < 6; round++) {
        struct cmn_rec r;
        uint64_t expected = 0, seq = 0;
        char stream[CMN_QUEUE_MAX] = "";
        enum cmn_status st = kv_read(q, call_id, &r, err);
        if (st == CMN_OK) {
            if (cmn_call_state_final(r.state)) {
                *out = r;
                return cmn_err_set(err, CMN_ERR_CONFLICT, 0, "call %s is %s already", call_id,
                                   cmn_call_state_name(r.state));
            }
            expected = r.revision;
        } else if (st == CMN_ERR_NOT_FOUND) {
            st = derive(q, call_id, &r, &seq, stream, err);
            if (st == CMN_ERR_NOT_FOUND && round == 0)
                continue; /* claimed meanwhile: read the record again */
            if (st != CMN_OK)
                return st;
        } else {
            return st;
        }
        r.state = CMN_CALL_CANCELLED;
        r.finished_ms = wall_ms();
        r.lease_until_ms = 0;
        snprintf(r.reason, sizeof(r.reason), "%s", reason != NULL ? reason : "cancelled");
        new_write_id(r.write_id, sizeof(r.write_id));
        uint64_t rev = 0;
        st = kv_write(q, &r, expected, &rev, err);
        if (st == CMN_ERR_CONFLICT)
            continue;
        if (st != CMN_OK)
            return st;
        r.revision = rev;
        /* A waiting call nobody needs to hear about is removed at once; one
         * with a callback stays, so that a worker posts the cancellation (a
         * delayed one is replaced by an empty copy due now, so that the
         * cancellation is not posted only when the call would have run). */
        struct cmn_err ignored;
        if (seq != 0 && r.callback == CMN_CB_NONE)
            delete_msg(q, stream, seq, &ignored);
        else if (seq != 0 && r.not_before_ms > wall_ms() &&
                 requeue_now(q, stream, call_id, &ignored))
            delete_msg(q, stream, seq, &ignored);
        notify_cancel(q, call_id);
        *out = r;
        return CMN_OK;
    }
    return cmn_err_set(err, CMN_ERR_CONFLICT, 0, "call %s keeps changing; try again", call_id);
}

/* first and last sequence of `stream` */
static enum cmn_status stream_bounds(struct cmn_recq *q, const char *stream, uint64_t *first,
                                     uint64_t *last, struct cmn_err *err)
{
    char subject[SUBJECT_MAX];
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.INFO.%s", stream);
    natsMsg *reply = NULL;
    enum cmn_status st = request(q, subject, NULL, &reply, err);
    if (st != CMN_OK)
        return st;
    json_t *doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, NULL);
    natsMsg_Destroy(reply);
    json_t *state = json_object_get(doc, "state");
    if (!json_is_object(state)) {
        json_decref(doc);
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "stream %s not found", stream);
    }
    *first = (uint64_t)json_integer_value(json_object_get(state, "first_seq"));
    *last = (uint64_t)json_integer_value(json_object_get(state, "last_seq"));
    json_decref(doc);
    return CMN_OK;
}

static bool function_matches(const char *have, const char *want)
{
    if (want == NULL || want[0] == '\0')
        return true;
    size_t n = strlen(want);
    return strncmp(have, want, n) == 0 && (have[n] == '\0' || have[n] == '.');
}

static enum cmn_status dump_array(json_t *arr, char **json, struct cmn_err *err)
{
    *json = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return *json != NULL ? CMN_OK : cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
}

static bool listed(json_t *arr, const char *call_id)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *id = json_string_value(json_object_get(o, "call_id"));
        if (id != NULL && strcmp(id, call_id) == 0)
            return true;
    }
    return false;
}

static bool append_rec(json_t *arr, const struct cmn_rec *r)
{
    char *text = cmn_rec_to_json(r, true);
    json_t *o = text != NULL ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return o != NULL && json_array_append_new(arr, o) == 0;
}

/* What a listing keeps of the messages it reads. */
struct list_ctx {
    struct cmn_recq *q;
    const char *stream; /* the stream being read */
    const char *function;
    int state;
    json_t *arr;
};

/* Reads `stream` backwards by sequence from `last` down to `first`, giving
 * `visit` each message still there (it keeps nothing of `m`; true = it
 * listed one); stops after `limit` listed or 20 × limit probes. */
static enum cmn_status walk_back(struct list_ctx *c, uint64_t first, uint64_t last, int limit,
                                 bool (*visit)(struct list_ctx *c, natsMsg *m, uint64_t seq),
                                 struct cmn_err *err)
{
    int found = 0;
    long probes = 0, max_probes = 20L * limit;
    for (uint64_t s = last; s >= first && s > 0 && found < limit && probes < max_probes; s--) {
        probes++;
        char body[64];
        snprintf(body, sizeof(body), "{\"seq\":%" PRIu64 "}", s);
        natsMsg *m = NULL;
        enum cmn_status st = direct_get(c->q, c->stream, body, &m, err);
        if (st == CMN_ERR_NOT_FOUND)
            continue; /* gone: acknowledged, superseded by a later revision, expired */
        if (st != CMN_OK)
            return st;
        if (visit(c, m, s))
            found++;
        natsMsg_Destroy(m);
    }
    return CMN_OK;
}

static bool keep_rec(struct list_ctx *c, const struct cmn_rec *r)
{
    return function_matches(r->function, c->function) &&
           (c->state < 0 || (int)r->state == c->state) && append_rec(c->arr, r);
}

/* A record of the bucket. */
static bool visit_record(struct list_ctx *c, natsMsg *m, uint64_t seq)
{
    struct cmn_rec r;
    char detail[200];
    if (read_kv_reply(m, &r, detail, sizeof(detail)) != CMN_OK)
        return false;
    r.revision = seq;
    return keep_rec(c, &r);
}

/* A call waiting in a work stream that the listing does not hold yet: its
 * record when it has one (a retry waits with a record), else the one it
 * implies. */
static bool visit_waiting(struct list_ctx *c, natsMsg *m, uint64_t seq)
{
    (void)seq;
    /* a direct get answers on an inbox; the stored subject is a header */
    const char *subject = NULL;
    if (natsMsgHeader_Get(m, "Nats-Subject", &subject) != NATS_OK)
        subject = NULL;
    size_t prefix = strlen(c->stream);
    const char *id =
        subject != NULL && strncmp(subject, c->stream, prefix) == 0 && subject[prefix] == '.'
            ? subject + prefix + 1
            : "";
    if (!cmn_callid_valid(id) || listed(c->arr, id))
        return false;
    struct cmn_rec r;
    struct cmn_err e2;
    enum cmn_status ks = kv_read(c->q, id, &r, &e2);
    if (ks == CMN_ERR_NOT_FOUND)
        rec_of_waiting(m, id, &r, NULL);
    else if (ks != CMN_OK)
        return false;
    return keep_rec(c, &r);
}

/* The calls waiting in work stream `stream`, newest first, at most `limit`
 * more; a queue without a stream holds none. */
static enum cmn_status list_waiting(struct list_ctx *c, const char *stream, int limit,
                                    struct cmn_err *err)
{
    uint64_t first = 0, last = 0;
    struct cmn_err e2;
    if (stream_bounds(c->q, stream, &first, &last, &e2) != CMN_OK)
        return CMN_OK;
    c->stream = stream;
    return walk_back(c, first, last, limit, visit_waiting, err);
}

static int newest_first(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "submitted"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "submitted"));
    return strcmp(y != NULL ? y : "", x != NULL ? x : "");
}

enum cmn_status cmn_recq_list(struct cmn_recq *q, const char *function, int state, int limit,
                              char **json, struct cmn_err *err)
{
    if (limit < 1)
        limit = 1;
    if (limit > 1000)
        limit = 1000;
    char stream[SUBJECT_MAX];
    snprintf(stream, sizeof(stream), "KV_%s", q->bucket);
    uint64_t first = 0, last = 0;
    enum cmn_status st = stream_bounds(q, stream, &first, &last, err);
    if (st != CMN_OK)
        return st;
    json_t *arr = json_array();
    if (arr == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    struct list_ctx c = {
        .q = q, .stream = stream, .function = function, .state = state, .arr = arr};
    st = walk_back(&c, first, last, limit, visit_record, err);
    /* Calls still waiting have no record yet (it is derived from the
     * stream): they are listed from the work streams. */
    if (st == CMN_OK && (state < 0 || state == CMN_CALL_QUEUED || state == CMN_CALL_SCHEDULED)) {
        st = list_waiting(&c, q->stream, limit, err);
        char names[MAX_QUEUES][CMN_QUEUE_MAX];
        size_t n = q->queues != NULL ? q->queues(q->queues_arg, names, MAX_QUEUES) : 0;
        for (size_t i = 0; st == CMN_OK && i < n; i++)
            if (strcmp(names[i], q->stream) != 0)
                st = list_waiting(&c, names[i], limit, err);
    }
    if (st != CMN_OK) {
        json_decref(arr);
        return st;
    }
    size_t count = json_array_size(arr);
    json_t **items = malloc((count > 0 ? count : 1) * sizeof(*items));
    if (items == NULL) {
        json_decref(arr);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < count; i++)
        items[i] = json_incref(json_array_get(arr, i));
    qsort(items, count, sizeof(*items), newest_first);
    json_array_clear(arr);
    for (size_t i = 0; i < count; i++) {
        if (i < (size_t)limit)
            json_array_append(arr, items[i]);
        json_decref(items[i]);
    }
    free(items);
    return dump_array(arr, json, err);
}

static const char *hdr(natsMsg *m, const char *name)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, name, &v) != NATS_OK || v == NULL)
        return "";
    return v;
}

/* Walks the dead-letter stream from its first message; `visit` returns
 * false to stop (and keeps the message by taking it: sets *m to NULL). */
static enum cmn_status walk_dead_letters(struct cmn_recq *q,
                                         bool (*visit)(natsMsg **m, uint64_t seq, void *arg),
                                         void *arg, struct cmn_err *err)
{
    if (q->dlq == NULL)
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "no dead_letter_stream configured");
    uint64_t first = 0, last = 0;
    enum cmn_status st = stream_bounds(q, q->dlq, &first, &last, err);
    if (st != CMN_OK)
        return st;
    uint64_t s = first > 0 ? first : 1;
    while (s <= last) {
        char body[SUBJECT_MAX + 64];
        snprintf(body, sizeof(body), "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s\"}", s, q->dlq);
        natsMsg *m = NULL;
        st = direct_get(q, q->dlq, body, &m, err);
        if (st == CMN_ERR_NOT_FOUND)
            return CMN_OK;
        if (st != CMN_OK)
            return st;
        uint64_t seq = header_u64(m, "Nats-Sequence");
        bool more = visit(&m, seq, arg);
        natsMsg_Destroy(m);
        if (!more || seq < s)
            return CMN_OK;
        s = seq + 1;
    }
    return CMN_OK;
}

/* A decimal header value; 0 when absent or not a number. */
static int hdr_int(natsMsg *m, const char *name)
{
    const char *v = hdr(m, name);
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || n < 0 || n > INT32_MAX)
        return 0;
    return (int)n;
}

struct dl_list {
    json_t *arr;
    int limit;
    int64_t now_ms;
};

static bool list_visit(natsMsg **m, uint64_t seq, void *arg)
{
    struct dl_list *l = arg;
    json_t *o = json_object();
    const char *id = hdr(*m, CMN_HDR_CALL_ID);
    int64_t start_ms = header_ns_ms(*m, CMN_HDR_START);
    json_object_set_new(o, "call_id", json_string(id));
    json_object_set_new(o, "function", json_string(hdr(*m, CMN_HDR_FUNCTION)));
    json_object_set_new(o, "reason", json_string(hdr(*m, CMN_HDR_DEAD_REASON)));
    json_object_set_new(o, "last_status", json_integer(hdr_int(*m, CMN_HDR_LAST_STATUS)));
    json_object_set_new(o, "attempts", json_integer(hdr_int(*m, CMN_HDR_ATTEMPTS)));
    if (start_ms > 0) {
        char buf[40];
        json_object_set_new(o, "submitted", json_string(cmn_time_format(start_ms, buf, 40)));
        json_object_set_new(o, "age_seconds", json_real((double)(l->now_ms - start_ms) / 1000.0));
    }
    json_object_set_new(o, "dead_lettered", json_string(hdr(*m, "Nats-Time-Stamp")));
    json_object_set_new(o, "seq", json_integer((json_int_t)seq));
    json_array_append_new(l->arr, o);
    return (int)json_array_size(l->arr) < l->limit;
}

enum cmn_status cmn_recq_dead_letters(struct cmn_recq *q, int limit, char **json,
                                      struct cmn_err *err)
{
    struct dl_list l = {json_array(), limit < 1 ? 1 : limit > 1000 ? 1000 : limit, wall_ms()};
    enum cmn_status st = walk_dead_letters(q, list_visit, &l, err);
    if (st != CMN_OK) {
        json_decref(l.arr);
        return st;
    }
    return dump_array(l.arr, json, err);
}

struct dl_find {
    const char *call_id;
    natsMsg *m;
    uint64_t seq;
};

static bool find_visit(natsMsg **m, uint64_t seq, void *arg)
{
    struct dl_find *f = arg;
    if (strcmp(hdr(*m, CMN_HDR_CALL_ID), f->call_id) != 0)
        return true;
    f->m = *m;
    *m = NULL;
    f->seq = seq;
    return false;
}

static enum cmn_status find_dead_letter(struct cmn_recq *q, const char *call_id, struct dl_find *f,
                                        struct cmn_err *err)
{
    memset(f, 0, sizeof(*f));
    f->call_id = call_id;
    if (!cmn_callid_valid(call_id))
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "invalid call id");
    enum cmn_status st = walk_dead_letters(q, find_visit, f, err);
    if (st != CMN_OK)
        return st;
    if (f->m == NULL)
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "no dead letter for call %s", call_id);
    return CMN_OK;
}

/* The work-queue message of a re-drive: the dead letter's headers minus the
 * dead-letter and stream ones, under a Nats-Msg-Id of its own (the original
 * id may still be inside the duplicate window). */
static enum cmn_status build_redrive(struct cmn_recq *q, const struct dl_find *f, natsMsg **out,
                                     struct cmn_err *err)
{
    struct cmn_headers h;
    cmn_headers_init(&h);
    enum cmn_status st = cmn_nats_msg_headers(f->m, &h, err);
    char subject[SUBJECT_MAX], msg_id[CMN_CALLID_MAX + 32];
    /* back to the queue it came from (a per-function queue names itself) */
    const char *queue = NULL;
    if (natsMsgHeader_Get(f->m, CMN_HDR_QUEUE, &queue) != NATS_OK || queue == NULL ||
        !cmn_queue_name_valid(queue, strlen(queue)))
        queue = q->stream;
    snprintf(subject, sizeof(subject), "%s.%s", queue, f->call_id);
    snprintf(msg_id, sizeof(msg_id), "%s/r%" PRIu64, f->call_id, f->seq);
    natsMsg *m = NULL;
    natsStatus s = NATS_OK;
    if (st == CMN_OK)
        s = natsMsg_Create(&m, subject, NULL, natsMsg_GetData(f->m), natsMsg_GetDataLength(f->m));
    for (size_t i = 0; st == CMN_OK && s == NATS_OK && i < h.count; i++) {
        const char *name = h.items[i].name;
        if (strncasecmp(name, "Nats-", 5) == 0 || strcasecmp(name, CMN_HDR_DEAD_REASON) == 0 ||
            strcasecmp(name, CMN_HDR_LAST_STATUS) == 0 || strcasecmp(name, CMN_HDR_ATTEMPTS) == 0 ||
            h.items[i].value[0] == '\0')
            continue;
        s = natsMsgHeader_Add(m, name, h.items[i].value);
    }
    if (st == CMN_OK && s == NATS_OK)
        s = natsMsgHeader_Set(m, CMN_HDR_MSG_ID, msg_id);
    if (st == CMN_OK && s == NATS_OK)
        s = natsMsgHeader_Set(m, CMN_HDR_CALL_ID, f->call_id);
    cmn_headers_free(&h);
    if (st == CMN_OK && s != NATS_OK)
        st = cmn_nats_err(err, s, "build re-drive");
    if (st != CMN_OK) {
        natsMsg_Destroy(m);
        return st;
    }
    *out = m;
    return CMN_OK;
}

enum cmn_status cmn_recq_redrive(struct cmn_recq *q, const char *call_id, struct cmn_err *err)
{
    struct dl_find f;
    enum cmn_status st = find_dead_letter(q, call_id, &f, err);
    if (st != CMN_OK)
        return st;
    /* 1. the record back to queued, so that the worker runs it */
    for (int round = 0; round < 5; round++) {
        struct cmn_rec r;
        uint64_t expected = 0;
        st = kv_read(q, call_id, &r, err);
        if (st == CMN_OK) {
            expected = r.revision;
        } else if (st == CMN_ERR_NOT_FOUND) {
            cmn_rec_init(&r);
            snprintf(r.call_id, sizeof(r.call_id), "%s", call_id);
            snprintf(r.function, sizeof(r.function), "%s", hdr(f.m, CMN_HDR_FUNCTION));
            r.submitted_ms = header_ns_ms(f.m, CMN_HDR_START);
        } else {
            break;
        }
        r.state = CMN_CALL_QUEUED;
        r.attempt = 0;
        r.status = 0;
        r.started_ms = 0;
        r.duration_s = 0;
        r.worker[0] = '\0';
        r.finished_ms = 0;
        r.lease_until_ms = 0;
        r.reason[0] = '\0';
        r.redriven++;
        r.callback = hdr(f.m, CMN_HDR_CALLBACK)[0] != '\0' ? CMN_CB_PENDING : CMN_CB_NONE;
        r.callback_status = 0;
        new_write_id(r.write_id, sizeof(r.write_id));
        st = kv_write(q, &r, expected, NULL, err);
        if (st != CMN_ERR_CONFLICT)
            break;
    }
    /* 2. the call back into the work stream */
    natsMsg *m = NULL, *reply = NULL;
    if (st == CMN_OK)
        st = build_redrive(q, &f, &m, err);
    if (st == CMN_OK)
        st = request_msg(q, m, &reply, err);
    if (st == CMN_OK) {
        bool retry = false, full = false;
        char detail[200] = "";
        uint64_t rev = 0;
        st = read_put_reply(reply, &rev, &retry, &full, detail, sizeof(detail));
        if (st != CMN_OK)
            cmn_err_set(err, st, 0, "re-drive refused: %s", detail);
    }
    natsMsg_Destroy(m);
    natsMsg_Destroy(reply);
    /* 3. stored: the dead letter goes */
    if (st == CMN_OK)
        st = delete_msg(q, q->dlq, f.seq, err);
    natsMsg_Destroy(f.m);
    return st;
}

enum cmn_status cmn_recq_drop_dead_letter(struct cmn_recq *q, const char *call_id,
                                          struct cmn_err *err)
{
    struct dl_find f;
    enum cmn_status st = find_dead_letter(q, call_id, &f, err);
    if (st != CMN_OK)
        return st;
    st = delete_msg(q, q->dlq, f.seq, err);
    natsMsg_Destroy(f.m);
    return st;
}
