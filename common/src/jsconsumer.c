/* The consumer side: the pull requests of the fetch thread, the accessors of
 * fetched messages, and the lease operations, which are handed to a request
 * tracker (its thread sends them; acks and terms carry a reply subject and
 * are followed until the server confirms them).
 *
 * Pulls are made here, not with nats.c's js_PullSubscribe/FetchRequest:
 * 3.4.1's fetch writes past the array it allocated when messages of an
 * earlier pull are already queued for the subscription (it lowers the
 * request's batch by the number taken and then loops on the lowered value),
 * which corrupted the worker's heap under load. Here a plain subscription on
 * an inbox wildcard receives every pull's messages; each fetch first takes
 * what is already queued, then sends one $JS.API.CONSUMER.MSG.NEXT request
 * for the rest and reads until the batch is full or the server ends that
 * pull (404/408/409 status on its own reply subject). */
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

struct cmn_jscons {
    struct cmn_nats *nats;
    char *stream, *durable;
    natsSubscription *sub; /* fetch thread only: <inbox>.* */
    char inbox[128];       /* fetch thread only */
    char next_subject[512];
    uint64_t pull_id;
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
    int n = snprintf(c->next_subject, sizeof(c->next_subject), "$JS.API.CONSUMER.MSG.NEXT.%s.%s",
                     c->stream, c->durable);
    if (n < 0 || (size_t)n >= sizeof(c->next_subject)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "stream or consumer name too long");
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
    free(c->stream);
    free(c->durable);
    free(c);
}

/* Fetch thread: the inbox subscription every pull answers on. */
static enum cmn_status subscribe(struct cmn_jscons *c, struct cmn_err *err)
{
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK)
        return cmn_nats_err(err, s, "inbox");
    snprintf(c->inbox, sizeof(c->inbox), "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    char subject[sizeof(c->inbox) + 2];
    snprintf(subject, sizeof(subject), "%s.*", c->inbox);
    s = natsConnection_SubscribeSync(&c->sub, cmn_nats_conn(c->nats), subject);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(c->sub, -1, -1);
    if (s != NATS_OK) {
        natsSubscription_Destroy(c->sub);
        c->sub = NULL;
        return cmn_nats_err(err, s, "pull subscription");
    }
    return CMN_OK;
}

/* One message from the inbox. A status message (no body, a Status header)
 * is dropped; on the current pull's `reply` subject, 404/408/409 end the
 * pull (*ended) and 503 "no responders" means the consumer does not exist
 * (CMN_ERR_NOT_FOUND). Heartbeats and statuses of older pulls are ignored.
 * Anything else is a call: wrapped into msgs[(*n)++]. Takes `m`. */
static enum cmn_status take(struct cmn_jscons *c, natsMsg *m, const char *reply, uint64_t epoch,
                            struct cmn_js_msg **msgs, int *n, bool *ended)
{
    (void)c;
    const char *status = NULL;
    if (natsMsg_GetDataLength(m) == 0 && natsMsgHeader_Get(m, "Status", &status) == NATS_OK &&
        status != NULL) {
        bool ours = reply != NULL && strcmp(natsMsg_GetSubject(m), reply) == 0;
        enum cmn_status st = CMN_OK;
        if (ours && natsMsg_IsNoResponders(m))
            st = CMN_ERR_NOT_FOUND;
        else if (ours && status[0] == '4')
            *ended = true;
        natsMsg_Destroy(m);
        return st;
    }
    struct cmn_js_msg *w = malloc(sizeof(*w));
    if (w == NULL) {
        natsMsg_Destroy(m); /* not taken: redelivered after ack_wait */
        return CMN_OK;
    }
    w->m = m;
    w->epoch = epoch;
    msgs[(*n)++] = w;
    return CMN_OK;
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
    if (c->sub == NULL) {
        enum cmn_status st = subscribe(c, err);
        if (st != CMN_OK) {
            int64_t left = wait_ms - (cmn_nats_now_ms() - started);
            sleep_ms(left > 200 ? 200 : left);
            return st;
        }
    }
    int n = 0;
    uint64_t epoch = cmn_nats_epoch(c->nats);
    bool ended = false;
    enum cmn_status st = CMN_OK;

    /* 1. Messages of earlier pulls that arrived after their fetch returned. */
    int queued = 0;
    if (natsSubscription_GetPending(c->sub, &queued, NULL) == NATS_OK) {
        for (int i = 0; i < queued && n < batch && st == CMN_OK; i++) {
            natsMsg *m = NULL;
            if (natsSubscription_NextMsg(&m, c->sub, 1) != NATS_OK)
                break;
            st = take(c, m, NULL, epoch, msgs, &n, &ended);
        }
    }
    /* 2. One pull for the rest, read until it is full or the server ends it. */
    if (n < batch && st == CMN_OK) {
        char reply[160], body[96];
        snprintf(reply, sizeof(reply), "%s.%" PRIu64, c->inbox, ++c->pull_id);
        int len = snprintf(body, sizeof(body), "{\"batch\":%d,\"expires\":%" PRId64 "}", batch - n,
                           wait_ms * 1000000);
        natsStatus s = natsConnection_PublishRequest(cmn_nats_conn(c->nats), c->next_subject, reply,
                                                     body, len);
        if (s != NATS_OK) {
            st = cmn_nats_err(err, s, "pull request");
        } else {
            /* The server answers 408 at `expires`; a little longer here so
             * that answer, not our own clock, ends an idle pull. */
            int64_t deadline = started + wait_ms + 200;
            ended = false;
            while (n < batch && !ended && st == CMN_OK) {
                int64_t left = deadline - cmn_nats_now_ms();
                if (left <= 0)
                    break;
                natsMsg *m = NULL;
                s = natsSubscription_NextMsg(&m, c->sub, left);
                if (s == NATS_TIMEOUT)
                    break;
                if (s != NATS_OK) {
                    st = cmn_nats_err(err, s, "fetch");
                    break;
                }
                st = take(c, m, reply, epoch, msgs, &n, &ended);
            }
        }
    }
    *count = n;
    if (st == CMN_ERR_NOT_FOUND) {
        cmn_nats_kick(c->nats, "consumer not found (pull)");
        if (err != NULL)
            cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "consumer not found (no responders)");
    }
    if (st != CMN_OK && n == 0) {
        /* connection trouble or no consumer: a new subscription after the
         * keeper has reconciled */
        natsSubscription_Destroy(c->sub);
        c->sub = NULL;
        int64_t left = wait_ms - (cmn_nats_now_ms() - started);
        sleep_ms(left > 200 ? 200 : left);
        return st;
    }
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

/* The reply subject an ack-type answer for `msg` goes to. NULL with *st set
 * when nothing is to be sent: CMN_ERR_INVALID (no reply subject), or CMN_OK
 * for a message of an earlier epoch (a +WPI, NAK or ack for a message of a
 * re-created stream would touch the new stream's message with the same
 * sequence: the old message is gone anyway). */
static const char *answer_subject(struct cmn_jscons *c, const struct cmn_js_msg *msg,
                                  enum cmn_status *st, struct cmn_err *err)
{
    const char *to = natsMsg_GetReply(cmn_js_msg_raw(msg));
    if (to == NULL || to[0] == '\0') {
        *st = cmn_err_set(err, CMN_ERR_INVALID, 0, "message has no reply subject");
        return NULL;
    }
    *st = CMN_OK;
    return msg->epoch == cmn_nats_epoch(c->nats) ? to : NULL;
}

static enum cmn_status plain(struct cmn_jscons *c, const struct cmn_js_msg *msg, const char *what,
                             struct cmn_err *err)
{
    enum cmn_status st;
    const char *to = answer_subject(c, msg, &st, err);
    return to != NULL ? tracker_plain(c->tracker, to, what, strlen(what), err) : st;
}

enum cmn_status cmn_jscons_ack_nowait(struct cmn_jscons *c, const struct cmn_js_msg *msg,
                                      struct cmn_err *err)
{
    enum cmn_status st;
    const char *to = answer_subject(c, msg, &st, err);
    if (to == NULL)
        return st;
    /* straight from the caller's thread: no hand-off to the tracker's */
    natsStatus s = natsConnection_Publish(cmn_nats_conn(c->nats), to, "+ACK", 4);
    if (s != NATS_OK)
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "ack not sent: %s", natsStatus_GetText(s));
    return CMN_OK;
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

/* The delivery facts JetStream puts in a message's ack subject:
 * $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>
 * or, with a domain and account, $JS.ACK.<domain>.<account>.<stream>.... (12+
 * tokens). Read here because the pull is not a nats.c JetStream subscription. */
void cmn_js_msg_info(const struct cmn_js_msg *msg, struct cmn_js_msg_info *out)
{
    out->delivered = 1;
    out->seq = 0;
    out->stored_ns = 0;
    const char *reply = natsMsg_GetReply(cmn_js_msg_raw(msg));
    if (reply == NULL || strncmp(reply, "$JS.ACK.", 8) != 0)
        return;
    const char *tok[16];
    size_t len[16];
    int count = 0;
    const char *p = reply;
    while (count < 16) {
        const char *dot = strchr(p, '.');
        tok[count] = p;
        len[count] = dot != NULL ? (size_t)(dot - p) : strlen(p);
        count++;
        if (dot == NULL)
            break;
        p = dot + 1;
    }
    int base = count == 9 ? 4 : count >= 12 ? 6 : -1; /* index of <delivered> */
    if (base < 0)
        return;
    uint64_t v[3];
    for (int i = 0; i < 3; i++) {
        int at = i == 2 ? base + 3 : base + i; /* delivered, stream seq, timestamp */
        char num[24];
        if (len[at] == 0 || len[at] >= sizeof(num))
            return;
        memcpy(num, tok[at], len[at]);
        num[len[at]] = '\0';
        char *end = NULL;
        errno = 0;
        unsigned long long x = strtoull(num, &end, 10);
        if (errno != 0 || end == NULL || *end != '\0')
            return;
        v[i] = (uint64_t)x;
    }
    out->delivered = v[0] != 0 ? v[0] : 1;
    out->seq = v[1];
    out->stored_ns = (int64_t)v[2];
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
