/* The consumer side: the pull subscription used by the fetch thread, the
 * accessors of fetched messages, and the lease operations, which are handed
 * to a request tracker (its thread sends them; acks and terms carry a reply
 * subject and are followed until the server confirms them). */
#include "cmn/jsconsumer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmn/headers.h"
#include "nats_priv.h"

#define MAX_UNCONFIRMED 65536
#define FAST_TIMEOUT_PAUSE_MS 50

struct cmn_jscons {
    struct cmn_nats *nats;
    char *stream, *durable;
    jsCtx *js;
    natsSubscription *sub; /* fetch thread only */
    struct tracker *tracker;
    void (*wake)(void *closure);
    void *closure;
};

natsMsg *cmn_js_msg_raw(const struct cmn_js_msg *msg)
{
    return msg->m;
}

/* An ack or term is only sent in the epoch its message was fetched in. */
static bool same_epoch(uint64_t tag, void *closure)
{
    struct cmn_jscons *c = closure;
    return tag == cmn_nats_epoch(c->nats);
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Any reply is the server's confirmation, except "no responders": nobody
 * leads the consumer right now (election, restart), so send it again. */
static enum tracker_verdict classify_ack(natsMsg *reply, struct tracker_result *r, void *closure)
{
    (void)closure;
    if (natsMsg_IsNoResponders(reply)) {
        snprintf(r->detail, sizeof(r->detail), "no responders (consumer leader unavailable)");
        return TRACKER_RETRY;
    }
    r->status = CMN_OK;
    return TRACKER_DONE;
}

enum cmn_status cmn_jscons_new(struct cmn_nats *nats, const struct cmn_jscons_config *config,
                               struct cmn_jscons **out, struct cmn_err *err)
{
    struct cmn_jscons *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    enum cmn_status st = CMN_OK;
    c->nats = nats;
    c->wake = config->wake;
    c->closure = config->closure;
    c->stream = strdup(config->stream);
    c->durable = strdup(config->durable);
    if (c->stream == NULL || c->durable == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    natsStatus s = natsConnection_JetStream(&c->js, cmn_nats_conn(nats), &jo);
    if (s != NATS_OK) {
        st = cmn_nats_err(err, s, "JetStream context");
        goto out;
    }
    struct tracker_config tc = {
        .nats = nats,
        .resend_ms = config->resend_ms > 0 ? config->resend_ms : 1000,
        .retry_ms = 250,
        .max_live = MAX_UNCONFIRMED,
        .send_on_caller = false,
        .late_ms = 0,
        .classify = classify_ack,
        .classify_closure = c,
        .still_valid = same_epoch,
        .wake = config->wake,
        .wake_closure = config->closure,
    };
    st = tracker_new(&tc, &c->tracker, err);
    if (st != CMN_OK)
        goto out;
    *out = c;
    return CMN_OK;
out:
    cmn_jscons_free(c);
    return st;
}

void cmn_jscons_free(struct cmn_jscons *c)
{
    if (c == NULL)
        return;
    if (c->tracker != NULL && cmn_nats_connected(c->nats)) {
        /* acks awaiting confirmation get a moment (the worker's drain already
         * waited for them); tracker_free sends the queued NAKs */
        for (int i = 0; i < 25 && tracker_live(c->tracker) > 0; i++)
            sleep_ms(20);
    }
    tracker_free(c->tracker);
    natsSubscription_Destroy(c->sub);
    jsCtx_Destroy(c->js);
    free(c->stream);
    free(c->durable);
    free(c);
}

enum cmn_status cmn_jscons_fetch(struct cmn_jscons *c, int batch, int64_t wait_ms,
                                 struct cmn_js_msg **msgs, int *count, struct cmn_err *err)
{
    *count = 0;
    int64_t started = cmn_nats_now_ms();
    if (!cmn_nats_ready(c->nats)) {
        /* poll briefly so work starts as soon as the set-up completes */
        while (!cmn_nats_ready(c->nats) && cmn_nats_now_ms() - started < wait_ms)
            sleep_ms(20);
        if (!cmn_nats_ready(c->nats))
            return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "NATS is not ready");
    }
    natsStatus s;
    if (c->sub == NULL) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = c->stream;
        so.Consumer = c->durable;
        jsErrCode jerr = 0;
        s = js_PullSubscribe(&c->sub, c->js, c->stream, c->durable, NULL, &so, &jerr);
        if (s != NATS_OK) {
            c->sub = NULL;
            enum cmn_status st = cmn_nats_err(err, s, "pull subscribe");
            if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr ||
                jerr == JSStreamNotFoundErr) {
                cmn_nats_kick(c->nats, "consumer not found (pull subscribe)");
                st = CMN_ERR_NOT_FOUND;
            }
            sleep_ms(wait_ms - (cmn_nats_now_ms() - started) > 200
                         ? 200
                         : wait_ms - (cmn_nats_now_ms() - started));
            return st;
        }
    }
    natsMsgList list = {0};
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = batch;
    req.Expires = wait_ms * 1000000;
    s = natsSubscription_FetchRequest(&list, c->sub, &req);
    if (s == NATS_TIMEOUT || (s == NATS_OK && list.Count == 0)) {
        natsMsgList_Destroy(&list);
        /* nats.c 3.4.1 can return at once on the stale timeout of the previous
         * pull while this pull still waits at the server: an idle worker must
         * not spin (DESIGN §9), but a message for that pull must not wait out
         * the whole `wait_ms` either, so pause briefly and ask again. */
        int64_t left = wait_ms - (cmn_nats_now_ms() - started);
        sleep_ms(left > FAST_TIMEOUT_PAUSE_MS ? FAST_TIMEOUT_PAUSE_MS : left);
        return CMN_OK;
    }
    if (s != NATS_OK) {
        natsMsgList_Destroy(&list);
        /* consumer gone or connection trouble: rebuild the subscription
         * after the keeper has reconciled */
        natsSubscription_Destroy(c->sub);
        c->sub = NULL;
        enum cmn_status st = cmn_nats_err(err, s, "fetch");
        if (s == NATS_NOT_FOUND || s == NATS_NO_RESPONDERS) {
            cmn_nats_kick(c->nats, "consumer not found (fetch)");
            st = CMN_ERR_NOT_FOUND;
        }
        int64_t left = wait_ms - (cmn_nats_now_ms() - started);
        sleep_ms(left > 200 ? 200 : left);
        return st;
    }
    int n = 0;
    uint64_t epoch = cmn_nats_epoch(c->nats);
    for (int i = 0; i < list.Count; i++) {
        struct cmn_js_msg *w = n < batch ? malloc(sizeof(*w)) : NULL;
        if (w != NULL) {
            /* not taken on allocation failure: redelivered after ack_wait */
            w->m = list.Msgs[i];
            w->epoch = epoch;
            msgs[n++] = w;
            list.Msgs[i] = NULL;
        }
    }
    natsMsgList_Destroy(&list);
    *count = n;
    return CMN_OK;
}

/* ---- lease operations ------------------------------------------------------ */

static enum cmn_status confirmed(struct cmn_jscons *c, const struct cmn_js_msg *msg,
                                 const char *what, int64_t deadline_ms, void *token,
                                 struct cmn_err *err)
{
    const char *to = natsMsg_GetReply(cmn_js_msg_raw(msg));
    if (to == NULL || to[0] == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "message has no reply subject");
    char reply[200];
    uint64_t id = tracker_reply_subject(c->tracker, reply, sizeof(reply));
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, to, reply, what, (int)strlen(what));
    if (s != NATS_OK)
        return cmn_nats_err(err, s, "ack message");
    return tracker_submit(c->tracker, id, &m, deadline_ms, token, NULL, msg->epoch, err);
}

enum cmn_status cmn_jscons_ack(struct cmn_jscons *c, const struct cmn_js_msg *msg,
                               int64_t deadline_ms, void *token, struct cmn_err *err)
{
    return confirmed(c, msg, "+ACK", deadline_ms, token, err);
}

enum cmn_status cmn_jscons_term(struct cmn_jscons *c, const struct cmn_js_msg *msg,
                                int64_t deadline_ms, void *token, struct cmn_err *err)
{
    return confirmed(c, msg, "+TERM", deadline_ms, token, err);
}

static enum cmn_status plain(struct cmn_jscons *c, const struct cmn_js_msg *msg, const char *what,
                             struct cmn_err *err)
{
    const char *to = natsMsg_GetReply(cmn_js_msg_raw(msg));
    if (to == NULL || to[0] == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "message has no reply subject");
    /* a +WPI or NAK for a message of a re-created stream would touch the new
     * stream's message with the same sequence: the old message is gone anyway */
    if (msg->epoch != cmn_nats_epoch(c->nats))
        return CMN_OK;
    return tracker_plain(c->tracker, to, what, strlen(what), err);
}

enum cmn_status cmn_jscons_in_progress(struct cmn_jscons *c, const struct cmn_js_msg *msg,
                                       struct cmn_err *err)
{
    /* JetStream's token for "in progress" is +WPI */
    return plain(c, msg, "+WPI", err);
}

enum cmn_status cmn_jscons_nak(struct cmn_jscons *c, const struct cmn_js_msg *msg, int64_t delay_ms,
                               struct cmn_err *err)
{
    if (delay_ms <= 0)
        return plain(c, msg, "-NAK", err);
    char what[64];
    snprintf(what, sizeof(what), "-NAK {\"delay\":%" PRId64 "}", delay_ms * 1000000);
    return plain(c, msg, what, err);
}

struct relay {
    cmn_jscons_done_cb cb;
    void *closure;
};

static void relay_result(const struct tracker_result *r, void *closure)
{
    struct relay *rl = closure;
    struct cmn_jscons_result out = {
        .token = r->token,
        .status = r->status,
        .sends = r->sends,
        .detail = r->detail,
    };
    rl->cb(&out, rl->closure);
}

size_t cmn_jscons_complete(struct cmn_jscons *c, cmn_jscons_done_cb cb, void *closure)
{
    struct relay rl = {cb, closure};
    return tracker_complete(c->tracker, relay_result, &rl);
}

/* ---- fetched messages ------------------------------------------------------ */

enum cmn_status cmn_nats_msg_headers(natsMsg *m, struct cmn_headers *out, struct cmn_err *err)
{
    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(m, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return CMN_OK;
    if (s != NATS_OK)
        return cmn_nats_err(err, s, "message headers");
    enum cmn_status st = CMN_OK;
    for (int i = 0; i < nkeys && st == CMN_OK; i++) {
        const char **values = NULL;
        int nvalues = 0;
        if (natsMsgHeader_Values(m, keys[i], &values, &nvalues) != NATS_OK)
            continue;
        for (int j = 0; j < nvalues && st == CMN_OK; j++)
            if (cmn_headers_add(out, keys[i], values[j]) != CMN_OK)
                st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        free((void *)values);
    }
    free((void *)keys);
    return st;
}

enum cmn_status cmn_js_msg_decode(const struct cmn_js_msg *msg, struct cmn_call *call,
                                  struct cmn_err *err)
{
    struct cmn_headers h;
    cmn_headers_init(&h);
    enum cmn_status st = cmn_nats_msg_headers(cmn_js_msg_raw(msg), &h, err);
    if (st == CMN_OK)
        st = cmn_call_decode(&h, call, err);
    cmn_headers_free(&h);
    return st;
}

const void *cmn_js_msg_body(const struct cmn_js_msg *msg, size_t *len)
{
    int n = natsMsg_GetDataLength(cmn_js_msg_raw(msg));
    *len = n > 0 ? (size_t)n : 0;
    return natsMsg_GetData(cmn_js_msg_raw(msg));
}

void cmn_js_msg_info(const struct cmn_js_msg *msg, struct cmn_js_msg_info *out)
{
    out->delivered = 1;
    out->seq = 0;
    out->stored_ns = 0;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, cmn_js_msg_raw(msg)) != NATS_OK)
        return;
    out->delivered = meta->NumDelivered ? meta->NumDelivered : 1;
    out->seq = meta->Sequence.Stream;
    out->stored_ns = meta->Timestamp;
    jsMsgMetaData_Destroy(meta);
}

uint64_t cmn_js_msg_seq(const struct cmn_js_msg *msg)
{
    struct cmn_js_msg_info info;
    cmn_js_msg_info(msg, &info);
    return info.seq;
}

void cmn_js_msg_free(struct cmn_js_msg *msg)
{
    if (msg != NULL) {
        natsMsg_Destroy(msg->m);
        free(msg);
    }
}
