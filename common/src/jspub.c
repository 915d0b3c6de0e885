/* The asynchronous publisher: builds the NATS message of a queued call or a
 * dead letter, hands it to a request tracker (which owns resends, retries and
 * the deadline), and reads JetStream's publish answers: stored, duplicate, or
 * a refusal whose err_code keeps its meaning (too large, storage full, stream
 * missing, no leader). */
#include "cmn/jspub.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmn/headers.h"
#include "nats_priv.h"

struct cmn_jspub {
    struct cmn_nats *nats;
    char *subject;
    int64_t timeout_ms;
    struct tracker *tracker;
    atomic_int_fast64_t full_until_ms; /* storage refusals: not ready until then */
};

/* Interprets one publish answer (nats.c subscription thread). */
static enum tracker_verdict classify_pub(natsMsg *reply, struct tracker_result *r, void *closure)
{
    struct cmn_jspub *pub = closure;
    if (natsMsg_IsNoResponders(reply)) {
        /* no stream listens on the subject: missing, or electing a leader */
        snprintf(r->detail, sizeof(r->detail),
                 "no responders (stream missing or electing a leader)");
        cmn_nats_kick(pub->nats, "publish: no responders (stream missing or without leader)");
        return TRACKER_RETRY;
    }
    json_error_t je;
    json_t *doc = json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &je);
    if (doc == NULL) {
        r->status = CMN_ERR_NATS;
        snprintf(r->detail, sizeof(r->detail), "unreadable publish answer: %s", je.text);
        return TRACKER_DONE;
    }
    enum tracker_verdict v = TRACKER_DONE;
    json_t *e = json_object_get(doc, "error");
    if (!json_is_object(e)) {
        r->status = CMN_OK;
        r->seq = (uint64_t)json_integer_value(json_object_get(doc, "seq"));
        r->duplicate = json_is_true(json_object_get(doc, "duplicate"));
        json_decref(doc);
        return v;
    }
    int code = (int)json_integer_value(json_object_get(e, "code"));
    r->js_code = (int)json_integer_value(json_object_get(e, "err_code"));
    const char *d = json_string_value(json_object_get(e, "description"));
    snprintf(r->detail, sizeof(r->detail), "%s (code %d, err_code %d)", d ? d : "refused", code,
             r->js_code);
    switch (r->js_code) {
    case JSStreamMessageExceedsMaximumErr:
        r->status = CMN_ERR_TOO_LARGE;
        break;
    case JSStorageResourcesExceededErr:
    case JSInsufficientResourcesErr:
    case JSStreamStoreFailedErr:
        r->status = CMN_ERR_UNAVAILABLE;
        r->full = true;
        break;
    case JSStreamNotFoundErr:
        cmn_nats_kick(pub->nats, "publish: stream not found");
        v = TRACKER_RETRY;
        break;
    case JSStreamNotMatchErr:
        /* a per-function queue's subjects belong to another stream: the
         * keeper finds out which, and refuses the queue */
        r->status = CMN_ERR_UNAVAILABLE;
        cmn_nats_kick(pub->nats, "publish: the queue's subjects belong to another stream");
        break;
    default:
        /* 503-class refusals (cluster or stream temporarily unavailable,
         * no leader yet) pass with time */
        if (code == 503)
            v = TRACKER_RETRY;
        else
            r->status = CMN_ERR_NATS;
        break;
    }
    json_decref(doc);
    return v;
}

enum cmn_status cmn_jspub_new(struct cmn_nats *nats, const struct cmn_jspub_config *config,
                              struct cmn_jspub **out, struct cmn_err *err)
{
    struct cmn_jspub *pub = calloc(1, sizeof(*pub));
    if (pub == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    pub->nats = nats;
    pub->subject = strdup(config->subject != NULL ? config->subject : "");
    pub->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : 5000;
    atomic_init(&pub->full_until_ms, 0);
    if (pub->subject == NULL) {
        cmn_jspub_free(pub);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    /* An unanswered publish is sent again about three times within its
     * deadline: its answer, or the answer to a copy, decides. Without a
     * Nats-Msg-Id (dead letters) a copy could be stored twice: sent once. */
    int64_t resend = config->single_send ? pub->timeout_ms + 1000 : pub->timeout_ms / 4;
    struct tracker_config tc = {
        .nats = nats,
        .resend_ms = resend < 250    ? 250
                     : resend > 2000 ? 2000
                                     : resend,
        .retry_ms = 200,
        .max_live = config->max_pending > 0 ? config->max_pending : 4096,
        .send_on_caller = config->send_on_caller,
        .late_ms = 120000, /* the stream's duplicate window */
        .classify = classify_pub,
        .classify_closure = pub,
        .wake = config->wake,
        .wake_closure = config->closure,
    };
    enum cmn_status st = tracker_new(&tc, &pub->tracker, err);
    if (st != CMN_OK) {
        cmn_jspub_free(pub);
        return st;
    }
    *out = pub;
    return CMN_OK;
}

void cmn_jspub_free(struct cmn_jspub *pub)
{
    if (pub == NULL)
        return;
    tracker_free(pub->tracker);
    free(pub->subject);
    free(pub);
}

static enum cmn_status size_check(struct cmn_jspub *pub, size_t body_len, size_t header_bytes,
                                  struct cmn_err *err)
{
    int64_t max = cmn_nats_max_payload(pub->nats);
    if (body_len > INT32_MAX || (max > 0 && (int64_t)(body_len + header_bytes) > max))
        return cmn_err_set(err, CMN_ERR_TOO_LARGE, 0,
                           "message of %zu bytes exceeds the NATS max payload %" PRId64 " bytes",
                           body_len + header_bytes, max);
    return CMN_OK;
}

/* A publish is taken while connected even when the keeper is reconciling:
 * the tracker retries within the deadline, which bridges a leader election
 * or a re-created stream. While the connection is down it is taken only in
 * the first `timeout_ms` of the outage (a reconnect to another server may
 * come in time); a longer outage is answered at once. */
static enum cmn_status ready_check(struct cmn_jspub *pub, struct cmn_err *err)
{
    int64_t down = cmn_nats_down_ms(pub->nats);
    if (down > pub->timeout_ms)
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "NATS unreachable for %lld ms",
                           (long long)down);
    return CMN_OK;
}

struct msg_sink {
    natsMsg *msg;
    size_t bytes;
    natsStatus status;
};

static enum cmn_status msg_sink_add(void *arg, const char *name, const char *value)
{
    struct msg_sink *ms = arg;
    /* nats.c 3.4.1 mis-parses an empty header value on receipt (the next
     * line becomes the value), so empty values are not sent; the codec
     * treats absent and empty alike. */
    if (value[0] == '\0')
        return CMN_OK;
    ms->bytes += strlen(name) + strlen(value) + 4;
    ms->status = natsMsgHeader_Add(ms->msg, name, value);
    if (ms->status == NATS_OK)
        return CMN_OK;
    return ms->status == NATS_NO_MEMORY ? CMN_ERR_NOMEM : CMN_ERR_NATS;
}

enum cmn_status cmn_jspub_call(struct cmn_jspub *pub, const struct cmn_call *call, const void *body,
                               size_t body_len, void *token, struct cmn_err *err)
{
    if (body_len > INT32_MAX)
        return size_check(pub, body_len, 0, err);
    char reply[200];
    uint64_t id = tracker_reply_subject(pub->tracker, reply, sizeof(reply));
    struct msg_sink ms = {.msg = NULL, .bytes = 16 + strlen(reply), .status = NATS_OK};
    /* "<stream>.<call id>": the call can be found by its id while it waits;
     * a function with a queue of its own goes to that queue's stream */
    char subject[512];
    const char *queue = call->policy.queue[0] != '\0' ? call->policy.queue : pub->subject;
    if (!cmn_callid_valid(call->call_id) ||
        snprintf(subject, sizeof(subject), "%s.%s", queue, call->call_id) >= (int)sizeof(subject))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "invalid call id");
    natsStatus s = natsMsg_Create(&ms.msg, subject, reply, body, (int)body_len);
    if (s != NATS_OK)
        return cmn_nats_err(err, s, "build message");
    /* encoding errors (400 for the gateway) come before availability (503) */
    enum cmn_status st = cmn_call_encode_each(call, msg_sink_add, &ms, err);
    /* A queue's subjects may be held by a stream that is not the queue's
     * own (created by someone else before the keeper could): the server
     * refuses the call rather than storing it where no worker looks. */
    if (st == CMN_OK && call->policy.queue[0] != '\0')
        st = msg_sink_add(&ms, "Nats-Expected-Stream", call->policy.queue);
    if (st == CMN_OK)
        st = ready_check(pub, err);
    if (st == CMN_OK)
        st = size_check(pub, body_len, ms.bytes, err);
    if (st != CMN_OK) {
        natsMsg_Destroy(ms.msg);
        return st;
    }
    return tracker_submit(pub->tracker, id, &ms.msg, cmn_nats_now_ms() + pub->timeout_ms, token,
                          call->call_id, 0, err);
}

enum cmn_status cmn_jspub_dead_letter(struct cmn_jspub *pub, const char *stream,
                                      const struct cmn_js_msg *msg, const char *reason,
                                      int last_status, int attempts, void *token,
                                      struct cmn_err *err)
{
    struct cmn_headers h;
    cmn_headers_init(&h);
    natsMsg *dm = NULL;
    char label[136] = "";
    enum cmn_status st = cmn_nats_msg_headers(cmn_js_msg_raw(msg), &h, err);
    if (st != CMN_OK)
        goto out;
    /* a re-driven call already names its call id (its Nats-Msg-Id is the
     * re-drive's own): the dead letter is always keyed by the call id */
    const char *call_id = cmn_headers_get(&h, CMN_HDR_CALL_ID);
    const char *id = cmn_headers_get(&h, CMN_HDR_MSG_ID);
    if (call_id != NULL || id != NULL) {
        snprintf(label, sizeof(label), "%s", call_id != NULL ? call_id : id);
        cmn_headers_remove(&h, CMN_HDR_MSG_ID);
        st = cmn_headers_set(&h, CMN_HDR_CALL_ID, label);
        if (st != CMN_OK)
            goto out;
    }
    char status[16], count[16], safe_reason[512];
    snprintf(status, sizeof(status), "%d", last_status);
    snprintf(count, sizeof(count), "%d", attempts);
    size_t j = 0;
    for (size_t i = 0; reason && reason[i] && j + 1 < sizeof(safe_reason); i++)
        safe_reason[j++] = (reason[i] == '\r' || reason[i] == '\n') ? ' ' : reason[i];
    safe_reason[j] = '\0';
    if (cmn_headers_set(&h, CMN_HDR_DEAD_REASON, safe_reason) != CMN_OK ||
        cmn_headers_set(&h, CMN_HDR_LAST_STATUS, status) != CMN_OK ||
        cmn_headers_set(&h, CMN_HDR_ATTEMPTS, count) != CMN_OK) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }
    char reply[200];
    uint64_t rid = tracker_reply_subject(pub->tracker, reply, sizeof(reply));
    size_t len = 0;
    const void *body = cmn_js_msg_body(msg, &len);
    natsStatus s = natsMsg_Create(&dm, stream, reply, body, (int)len);
    size_t bytes = 16 + strlen(reply);
    for (size_t i = 0; s == NATS_OK && i < h.count; i++) {
        if (h.items[i].value[0] == '\0') /* see msg_sink_add */
            continue;
        /* the call's publish expectations (its queue's stream) are not the
         * dead letter's */
        if (strncasecmp(h.items[i].name, "Nats-Expected-", 14) == 0)
            continue;
        bytes += strlen(h.items[i].name) + strlen(h.items[i].value) + 4;
        s = natsMsgHeader_Add(dm, h.items[i].name, h.items[i].value);
    }
    if (s != NATS_OK) {
        st = cmn_nats_err(err, s, "build dead letter");
        goto out;
    }
    st = size_check(pub, len, bytes, err);
    if (st != CMN_OK)
        goto out;
    st = tracker_submit(pub->tracker, rid, &dm, cmn_nats_now_ms() + pub->timeout_ms, token, label,
                        0, err);
out:
    natsMsg_Destroy(dm);
    cmn_headers_free(&h);
    return st;
}

struct relay {
    struct cmn_jspub *pub;
    cmn_jspub_done_cb cb;
    void *closure;
};

static void relay_result(const struct tracker_result *r, void *closure)
{
    struct relay *rl = closure;
    if (r->full)
        atomic_store(&rl->pub->full_until_ms,
                     cmn_nats_now_ms() + CMN_JSPUB_FULL_RETRY_AFTER_S * 1000);
    struct cmn_jspub_result out = {
        .token = r->token,
        .status = r->status,
        .duplicate = r->duplicate,
        .late = r->late,
        .full = r->full,
        .js_code = r->js_code,
        .seq = r->seq,
        .sends = r->sends,
        .label = r->label,
        .detail = r->detail,
    };
    rl->cb(&out, rl->closure);
}

size_t cmn_jspub_complete(struct cmn_jspub *pub, cmn_jspub_done_cb cb, void *closure)
{
    struct relay rl = {pub, cb, closure};
    return tracker_complete(pub->tracker, relay_result, &rl);
}

size_t cmn_jspub_pending(const struct cmn_jspub *pub)
{
    return tracker_live(pub->tracker);
}

bool cmn_jspub_storage_full(const struct cmn_jspub *pub)
{
    return cmn_nats_now_ms() < atomic_load(&((struct cmn_jspub *)pub)->full_until_ms);
}
