/* JetStream wrapper: connection lifecycle (nats.c reconnects; a setup thread
 * (re)creates the streams and the consumer after every (re)connect), async
 * publishing with a per-message token map, pull fetching and lease operations,
 * and dead-lettering. The only file that includes <nats/nats.h>. */
#include "cmn/js.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PENDING_BUCKETS 4096
#define HEADER_ROOM_BYTES 65536

/* One async publish awaiting its outcome. In the hash (by natsMsg pointer)
 * until its ack is handled or nats.c gives the message back; in the deadline
 * FIFO (deadlines only grow: one timeout for all) until it is acked or
 * expires. `answered`: the timeout callback already ran, so a late ack only
 * frees the entry. All fields are guarded by cmn_js.pmu. */
struct pending {
    natsMsg *msg;
    void *token;
    struct pending *next;          /* hash chain */
    struct pending *dprev, *dnext; /* deadline FIFO */
    int64_t deadline_ms;           /* monotonic */
    bool answered;
};

struct cmn_js {
    struct cmn_js_config cfg; /* strings below are owned copies */
    char *url, *client_name, *stream, *dlq, *durable;

    natsOptions *opts;
    natsConnection *nc;
    jsCtx *jsctx;
    natsSubscription *sub; /* pull subscription: fetch thread only */

    pthread_t setup_thread;
    bool setup_started;
    pthread_t sweep_thread; /* publish deadlines (only with on_publish) */
    bool sweep_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t sweep_cv;       /* CLOCK_MONOTONIC; signalled on stop */
    bool stop, need_setup, opened; /* opened: nc and jsctx exist */
    bool close_done;               /* on_closed finished (nats.c's last use of js) */
    pthread_cond_t close_cv;
    atomic_uint_fast64_t connects; /* (re)connections so far */

    atomic_bool ready;
    atomic_bool closed;
    atomic_int_fast64_t max_payload;

    pthread_mutex_t pmu;
    struct pending *buckets[PENDING_BUCKETS];
    struct pending *dhead, *dtail; /* deadline FIFO, oldest first */
    size_t answered_count;         /* entries whose timeout callback ran, not yet acked */
    int64_t stale_since_ms;        /* when answered_count last became non-zero */
    uint64_t stale_connects;       /* `connects` when that happened */
    int active_acks;               /* on_pub_ack calls running (guarded by pmu) */
    bool dead;                     /* cmn_js_free started: acks are dropped */
    pthread_cond_t ack_cv;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static enum cmn_status nats_err(struct cmn_err *err, natsStatus s, const char *what)
{
    enum cmn_status st = CMN_ERR_NATS;
    if (s == NATS_TIMEOUT)
        st = CMN_ERR_TIMEOUT;
    else if (s == NATS_NOT_FOUND)
        st = CMN_ERR_NOT_FOUND;
    else if (s == NATS_CONNECTION_CLOSED || s == NATS_CONNECTION_DISCONNECTED ||
             s == NATS_NOT_YET_CONNECTED || s == NATS_NO_SERVER)
        st = CMN_ERR_UNAVAILABLE;
    else if (s == NATS_MAX_PAYLOAD)
        st = CMN_ERR_TOO_LARGE;
    else if (s == NATS_NO_MEMORY)
        st = CMN_ERR_NOMEM;
    const char *last = nats_GetLastError(NULL);
    return cmn_err_set(err, st, (int)s, "%s: %s%s%s", what, natsStatus_GetText(s),
                       last && last[0] ? ": " : "", last ? last : "");
}

static void emit(struct cmn_js *js, enum cmn_js_event ev, const char *detail)
{
    if (js->cfg.on_event != NULL)
        js->cfg.on_event(ev, detail, js->cfg.closure);
}

/* --- connection events (nats.c threads) -------------------------------- */

static void request_setup(struct cmn_js *js)
{
    pthread_mutex_lock(&js->mu);
    js->need_setup = true;
    pthread_cond_signal(&js->cv);
    pthread_mutex_unlock(&js->mu);
}

static void on_connected(natsConnection *nc, void *closure)
{
    struct cmn_js *js = closure;
    atomic_store(&js->max_payload, natsConnection_GetMaxPayload(nc));
    atomic_fetch_add(&js->connects, 1);
    request_setup(js);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct cmn_js *js = closure;
    bool was_ready = atomic_exchange(&js->ready, false);
    pthread_mutex_lock(&js->mu);
    bool stopping = js->stop;
    pthread_mutex_unlock(&js->mu);
    if (was_ready && !stopping && !atomic_load(&js->closed))
        emit(js, CMN_JS_DISCONNECTED, "connection to NATS lost, reconnecting");
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    struct cmn_js *js = closure;
    atomic_store(&js->ready, false);
    if (!atomic_exchange(&js->closed, true)) {
        pthread_mutex_lock(&js->mu);
        bool stopping = js->stop;
        pthread_mutex_unlock(&js->mu);
        if (!stopping)
            emit(js, CMN_JS_CLOSED, "NATS connection closed (reconnect budget exhausted)");
    }
    /* Last touch of `js` from nats.c's callback thread: cmn_js_free waits for it. */
    pthread_mutex_lock(&js->mu);
    js->close_done = true;
    pthread_cond_broadcast(&js->close_cv);
    pthread_mutex_unlock(&js->mu);
}

/* --- stream / consumer set-up (setup thread) ---------------------------- */

static enum cmn_status ensure_stream(struct cmn_js *js, const char *name, bool work_queue,
                                     struct cmn_err *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js->jsctx, name, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return CMN_OK;
    }
    if (s != NATS_NOT_FOUND)
        return nats_err(err, s, "stream info");
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {name};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    if (work_queue) {
        sc.Retention = js_WorkQueuePolicy;
        sc.Duplicates = js->cfg.duplicate_window_ms * 1000000;
        if (js->cfg.max_msg_bytes > 0 && js->cfg.max_msg_bytes < INT32_MAX)
            sc.MaxMsgSize = (int32_t)js->cfg.max_msg_bytes;
    } else {
        sc.Retention = js_LimitsPolicy;
    }
    s = js_AddStream(&si, js->jsctx, &sc, NULL, &jerr);
    if (s != NATS_OK && jerr != JSStreamNameExistErr)
        return nats_err(err, s, "create stream");
    jsStreamInfo_Destroy(si);
    return CMN_OK;
}

static enum cmn_status ensure_consumer(struct cmn_js *js, struct cmn_err *err)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    int64_t ack_wait_ns = js->cfg.ack_wait_ms * 1000000;
    natsStatus s = js_GetConsumerInfo(&ci, js->jsctx, js->stream, js->durable, NULL, &jerr);
    if (s == NATS_OK) {
        bool same = ci->Config != NULL && ci->Config->AckWait == ack_wait_ns;
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        if (same)
            return CMN_OK;
    } else if (s != NATS_NOT_FOUND) {
        return nats_err(err, s, "consumer info");
    }
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = js->durable;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckWait = ack_wait_ns;
    cc.MaxDeliver = -1; /* the worker counts attempts and dead-letters itself */
    cc.MaxAckPending = 20000;
    cc.MaxWaiting = 512;
    if (s == NATS_OK)
        s = js_UpdateConsumer(&ci, js->jsctx, js->stream, &cc, NULL, &jerr);
    else
        s = js_AddConsumer(&ci, js->jsctx, js->stream, &cc, NULL, &jerr);
    if (s != NATS_OK && jerr != JSConsumerNameExistErr && jerr != JSConsumerExistingActiveErr)
        return nats_err(err, s, "create consumer");
    jsConsumerInfo_Destroy(ci);
    return CMN_OK;
}

static void *setup_main(void *arg)
{
    struct cmn_js *js = arg;
    pthread_mutex_lock(&js->mu);
    for (;;) {
        while (!js->stop && !(js->need_setup && js->opened))
            pthread_cond_wait(&js->cv, &js->mu);
        if (js->stop)
            break;
        js->need_setup = false;
        pthread_mutex_unlock(&js->mu);

        struct cmn_err err;
        cmn_err_clear(&err);
        enum cmn_status st = CMN_OK;
        if (natsConnection_Status(js->nc) != NATS_CONN_STATUS_CONNECTED) {
            st = CMN_ERR_UNAVAILABLE;
        } else {
            atomic_store(&js->max_payload, natsConnection_GetMaxPayload(js->nc));
            st = ensure_stream(js, js->stream, true, &err);
            if (st == CMN_OK && js->dlq != NULL)
                st = ensure_stream(js, js->dlq, false, &err);
            if (st == CMN_OK && js->durable != NULL)
                st = ensure_consumer(js, &err);
        }
        if (st == CMN_OK) {
            if (!atomic_exchange(&js->ready, true))
                emit(js, CMN_JS_READY, "connected to NATS, stream ready");
            /* A disconnect may have slipped in while setting up. */
            if (natsConnection_Status(js->nc) != NATS_CONN_STATUS_CONNECTED)
                atomic_store(&js->ready, false);
        } else if (natsConnection_Status(js->nc) == NATS_CONN_STATUS_CONNECTED) {
            /* Connected but set-up failed (JetStream not enabled yet, timeout):
             * report and try again shortly; not ready until it succeeds. */
            atomic_store(&js->ready, false);
            emit(js, CMN_JS_DISCONNECTED, err.msg);
            sleep_ms(1000);
            pthread_mutex_lock(&js->mu);
            js->need_setup = true;
            continue;
        }
        pthread_mutex_lock(&js->mu);
    }
    pthread_mutex_unlock(&js->mu);
    return NULL;
}

/* --- async publish results (nats.c thread) ------------------------------ */

static size_t bucket_of(const natsMsg *m)
{
    uintptr_t p = (uintptr_t)m;
    return (size_t)((p >> 4) ^ (p >> 16)) % PENDING_BUCKETS;
}

static void fifo_unlink(struct cmn_js *js, struct pending *p)
{
    if (p->dprev != NULL)
        p->dprev->dnext = p->dnext;
    else
        js->dhead = p->dnext;
    if (p->dnext != NULL)
        p->dnext->dprev = p->dprev;
    else
        js->dtail = p->dprev;
    p->dprev = p->dnext = NULL;
}

static void pending_put(struct cmn_js *js, struct pending *p)
{
    size_t b = bucket_of(p->msg);
    pthread_mutex_lock(&js->pmu);
    p->next = js->buckets[b];
    js->buckets[b] = p;
    p->dnext = NULL;
    p->dprev = js->dtail;
    if (js->dtail != NULL)
        js->dtail->dnext = p;
    else
        js->dhead = p;
    js->dtail = p;
    pthread_mutex_unlock(&js->pmu);
}

/* Removes the entry of `m` from the hash and the FIFO; caller holds pmu. */
static struct pending *pending_take_locked(struct cmn_js *js, const natsMsg *m)
{
    struct pending **pp = &js->buckets[bucket_of(m)];
    while (*pp != NULL && (*pp)->msg != m)
        pp = &(*pp)->next;
    struct pending *p = *pp;
    if (p == NULL)
        return NULL;
    *pp = p->next;
    if (p->answered)
        js->answered_count--;
    else
        fifo_unlink(js, p);
    return p;
}

static struct pending *pending_take(struct cmn_js *js, const natsMsg *m)
{
    pthread_mutex_lock(&js->pmu);
    struct pending *p = pending_take_locked(js, m);
    pthread_mutex_unlock(&js->pmu);
    return p;
}

static void on_pub_ack(jsCtx *jsctx, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)jsctx;
    struct cmn_js *js = closure;
    pthread_mutex_lock(&js->pmu);
    if (js->dead) { /* cmn_js_free is tearing down: no callback after it returns */
        pthread_mutex_unlock(&js->pmu);
        natsMsg_Destroy(msg);
        return;
    }
    js->active_acks++;
    pthread_mutex_unlock(&js->pmu);
    struct pending *p = pending_take(js, msg);
    if (p != NULL && !p->answered) {
        if (pa != NULL) {
            js->cfg.on_publish(p->token, CMN_OK, pa->Duplicate, "", js->cfg.closure);
        } else {
            natsStatus s = pae ? pae->Err : NATS_ERR;
            enum cmn_status st = s == NATS_TIMEOUT ? CMN_ERR_TIMEOUT : CMN_ERR_NATS;
            char detail[256];
            snprintf(detail, sizeof(detail), "%s%s%s", natsStatus_GetText(s),
                     pae && pae->ErrText ? ": " : "", pae && pae->ErrText ? pae->ErrText : "");
            js->cfg.on_publish(p->token, st, false, detail, js->cfg.closure);
        }
    }
    free(p);
    natsMsg_Destroy(msg);
    pthread_mutex_lock(&js->pmu);
    if (--js->active_acks == 0)
        pthread_cond_broadcast(&js->ack_cv);
    pthread_mutex_unlock(&js->pmu);
}

/* --- publish deadlines (sweep thread) ------------------------------------
 * Publishes carry no jsPubOptions.MaxWait: nats.c 3.4.1 keeps a timeout
 * record per message until its deadline even after the ack (memory grows
 * with rate x timeout) and then dispatches a synthetic timeout message for
 * each one. Instead this thread answers expired entries with
 * CMN_ERR_TIMEOUT itself; their late acks only free them. Acks that never
 * come (lost with a connection) would hold nats.c's pending slots forever,
 * so once answered entries stayed unacked for another timeout, the pending
 * list is taken back from nats.c: answered messages are dropped, the others
 * are published again (same Nats-Msg-Id: the stream de-duplicates). */

#define SWEEP_TICK_MS 50
#define SWEEP_BATCH 256

static int64_t publish_timeout_ms(const struct cmn_js *js)
{
    return js->cfg.publish_timeout_ms > 0 ? js->cfg.publish_timeout_ms : 5000;
}

/* Answers every expired entry with CMN_ERR_TIMEOUT, exactly once. */
static void sweep_expired(struct cmn_js *js)
{
    void *tokens[SWEEP_BATCH];
    for (;;) {
        int n = 0;
        int64_t now = now_ms();
        pthread_mutex_lock(&js->pmu);
        while (n < SWEEP_BATCH && js->dhead != NULL && js->dhead->deadline_ms <= now) {
            struct pending *p = js->dhead;
            fifo_unlink(js, p);
            p->answered = true;
            if (js->answered_count++ == 0) {
                js->stale_since_ms = now;
                js->stale_connects = atomic_load(&js->connects);
            }
            tokens[n++] = p->token;
        }
        pthread_mutex_unlock(&js->pmu);
        char detail[96];
        snprintf(detail, sizeof(detail), "no publish ack within %" PRId64 " ms",
                 publish_timeout_ms(js));
        for (int i = 0; i < n; i++)
            js->cfg.on_publish(tokens[i], CMN_ERR_TIMEOUT, false, detail, js->cfg.closure);
        if (n < SWEEP_BATCH)
            return;
    }
}

/* Takes nats.c's pending list back when acks look lost (see above). */
static void reclaim_lost(struct cmn_js *js)
{
    int64_t now = now_ms();
    pthread_mutex_lock(&js->pmu);
    /* Only after a reconnect: acks are lost with a connection, whereas a
     * merely slow server still answers, and re-publishing would add load. */
    bool due = js->answered_count > 0 && now - js->stale_since_ms >= publish_timeout_ms(js) &&
               atomic_load(&js->connects) != js->stale_connects;
    pthread_mutex_unlock(&js->pmu);
    if (!due || js->jsctx == NULL)
        return;
    natsMsgList list = {0};
    if (js_PublishAsyncGetPendingList(&list, js->jsctx) != NATS_OK)
        list.Count = 0;
    for (int i = 0; i < list.Count; i++) {
        natsMsg *m = list.Msgs[i];
        list.Msgs[i] = NULL;
        pthread_mutex_lock(&js->pmu);
        struct pending **pp = &js->buckets[bucket_of(m)];
        while (*pp != NULL && (*pp)->msg != m)
            pp = &(*pp)->next;
        bool answered = *pp == NULL || (*pp)->answered;
        struct pending *p = answered ? pending_take_locked(js, m) : NULL;
        pthread_mutex_unlock(&js->pmu);
        if (answered) {
            free(p);
            natsMsg_Destroy(m);
            continue;
        }
        natsMsg *again = m;
        natsStatus s = js_PublishMsgAsync(js->jsctx, &again, NULL);
        if (s != NATS_OK) {
            p = pending_take(js, m);
            if (p != NULL) {
                char detail[160];
                snprintf(detail, sizeof(detail), "publish again after lost acks: %s",
                         natsStatus_GetText(s));
                js->cfg.on_publish(p->token, CMN_ERR_TIMEOUT, false, detail, js->cfg.closure);
                free(p);
            }
            natsMsg_Destroy(again);
        }
    }
    natsMsgList_Destroy(&list);
    pthread_mutex_lock(&js->pmu);
    js->stale_since_ms = now_ms();
    js->stale_connects = atomic_load(&js->connects);
    pthread_mutex_unlock(&js->pmu);
}

static void *sweep_main(void *arg)
{
    struct cmn_js *js = arg;
    pthread_mutex_lock(&js->mu);
    while (!js->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += SWEEP_TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&js->sweep_cv, &js->mu, &ts);
        if (js->stop || !js->opened)
            continue;
        pthread_mutex_unlock(&js->mu);
        sweep_expired(js);
        reclaim_lost(js);
        pthread_mutex_lock(&js->mu);
    }
    pthread_mutex_unlock(&js->mu);
    return NULL;
}

/* --- open / free -------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

enum cmn_status cmn_js_open(const struct cmn_js_config *config, struct cmn_js **out,
                            struct cmn_err *err)
{
    if (config->url == NULL || config->stream == NULL || config->stream[0] == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "NATS url and stream are required");
    struct cmn_js *js = calloc(1, sizeof(*js));
    if (js == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    enum cmn_status st = CMN_OK;
    pthread_mutex_init(&js->mu, NULL);
    pthread_cond_init(&js->cv, NULL);
    pthread_cond_init(&js->close_cv, NULL);
    pthread_cond_init(&js->ack_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&js->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&js->pmu, NULL);
    js->cfg = *config;
    js->url = dup_or_null(config->url);
    js->client_name = dup_or_null(config->client_name ? config->client_name : "cfaas");
    js->stream = dup_or_null(config->stream);
    js->dlq = config->dead_letter_stream && config->dead_letter_stream[0]
                  ? dup_or_null(config->dead_letter_stream)
                  : NULL;
    js->durable = config->durable && config->durable[0] ? dup_or_null(config->durable) : NULL;
    if (js->url == NULL || js->client_name == NULL || js->stream == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }

    natsStatus s = natsOptions_Create(&js->opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(js->opts, js->url);
    if (s == NATS_OK)
        s = natsOptions_SetName(js->opts, js->client_name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(js->opts, config->max_reconnect);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(
            js->opts, config->reconnect_wait_ms > 0 ? config->reconnect_wait_ms : 2000);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(js->opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(js->opts, 5000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(js->opts, 2);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(js->opts, on_disconnected, js);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(js->opts, on_connected, js);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(js->opts, on_closed, js);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(js->opts, true, on_connected, js);
    if (s != NATS_OK) {
        st = nats_err(err, s, "NATS options");
        goto out;
    }

    if (pthread_create(&js->setup_thread, NULL, setup_main, js) != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, errno, "cannot start NATS setup thread");
        goto out;
    }
    js->setup_started = true;

    s = natsConnection_Connect(&js->nc, js->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        st = nats_err(err, s, "NATS connect");
        goto out;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = config->publish_timeout_ms > 0 ? config->publish_timeout_ms : 5000;
    jo.PublishAsync.MaxPending =
        config->max_pending_publishes > 0 ? config->max_pending_publishes : 4096;
    jo.PublishAsync.StallWait = 1;
    if (config->on_publish != NULL) {
        jo.PublishAsync.AckHandler = on_pub_ack;
        jo.PublishAsync.AckHandlerClosure = js;
    }
    s = natsConnection_JetStream(&js->jsctx, js->nc, &jo);
    if (s != NATS_OK) {
        st = nats_err(err, s, "JetStream context");
        goto out;
    }
    if (config->on_publish != NULL) {
        if (pthread_create(&js->sweep_thread, NULL, sweep_main, js) != 0) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, errno, "cannot start NATS publish sweep thread");
            goto out;
        }
        js->sweep_started = true;
    }
    pthread_mutex_lock(&js->mu);
    js->opened = true;
    pthread_cond_signal(&js->cv);
    pthread_mutex_unlock(&js->mu);
    if (natsConnection_Status(js->nc) == NATS_CONN_STATUS_CONNECTED)
        on_connected(js->nc, js);
    *out = js;
    return CMN_OK;
out:
    cmn_js_free(js);
    return st;
}

void cmn_js_free(struct cmn_js *js)
{
    if (js == NULL)
        return;
    pthread_mutex_lock(&js->mu);
    js->stop = true;
    pthread_cond_signal(&js->cv);
    pthread_cond_signal(&js->sweep_cv);
    pthread_mutex_unlock(&js->mu);
    if (js->setup_started)
        pthread_join(js->setup_thread, NULL);
    if (js->sweep_started)
        pthread_join(js->sweep_thread, NULL);
    if (js->sub != NULL)
        natsSubscription_Destroy(js->sub);
    if (js->nc != NULL) {
        natsConnection_Close(js->nc);
        /* Close only posts the disconnected/closed callbacks: wait for them
         * (a few seconds at most) before freeing what they touch. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&js->mu);
        while (!js->close_done &&
               pthread_cond_timedwait(&js->close_cv, &js->mu, &until) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&js->mu);
    }
    struct timespec until_acks;
    clock_gettime(CLOCK_REALTIME, &until_acks);
    until_acks.tv_sec += 5;
    pthread_mutex_lock(&js->pmu);
    js->dead = true;
    while (js->active_acks > 0 &&
           pthread_cond_timedwait(&js->ack_cv, &js->pmu, &until_acks) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&js->pmu);
    jsCtx_Destroy(js->jsctx);
    natsConnection_Destroy(js->nc);
    natsOptions_Destroy(js->opts);
    for (size_t b = 0; b < PENDING_BUCKETS; b++) {
        struct pending *p = js->buckets[b];
        while (p != NULL) {
            struct pending *next = p->next;
            free(p);
            p = next;
        }
    }
    pthread_mutex_destroy(&js->pmu);
    pthread_mutex_destroy(&js->mu);
    pthread_cond_destroy(&js->cv);
    pthread_cond_destroy(&js->sweep_cv);
    pthread_cond_destroy(&js->close_cv);
    pthread_cond_destroy(&js->ack_cv);
    free(js->url);
    free(js->client_name);
    free(js->stream);
    free(js->dlq);
    free(js->durable);
    free(js);
}

bool cmn_js_ready(const struct cmn_js *js)
{
    return atomic_load(&((struct cmn_js *)js)->ready);
}

int64_t cmn_js_max_payload(const struct cmn_js *js)
{
    return atomic_load(&((struct cmn_js *)js)->max_payload);
}

/* --- publishing --------------------------------------------------------- */

static enum cmn_status build_msg(natsMsg **out, const char *subject,
                                 const struct cmn_headers *headers, const void *body,
                                 size_t body_len, struct cmn_err *err)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, body, (int)body_len);
    for (size_t i = 0; s == NATS_OK && i < headers->count; i++) {
        /* nats.c 3.4.1 mis-parses an empty header value on receipt (the next
         * line becomes the value), so empty values are not sent; the codec
         * treats absent and empty alike. */
        if (headers->items[i].value[0] == '\0')
            continue;
        s = natsMsgHeader_Add(m, headers->items[i].name, headers->items[i].value);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return nats_err(err, s, "build message");
    }
    *out = m;
    return CMN_OK;
}

/* Registers `m` (taken) with `token` and hands it to nats.c. */
static enum cmn_status publish_msg(struct cmn_js *js, natsMsg *m, void *token, struct cmn_err *err)
{
    struct pending *p = malloc(sizeof(*p));
    if (p == NULL) {
        natsMsg_Destroy(m);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    p->msg = m;
    p->token = token;
    p->answered = false;
    p->deadline_ms = now_ms() + publish_timeout_ms(js);
    /* Registered before publishing: the ack can arrive before the call returns.
     * No MaxWait: the sweep thread enforces the deadline (see above). */
    pending_put(js, p);
    natsMsg *keep = m;
    natsStatus s = js_PublishMsgAsync(js->jsctx, &m, NULL);
    if (s != NATS_OK) {
        /* The library did not take the message: no callback will come. */
        struct pending *mine = pending_take(js, keep);
        free(mine);
        natsMsg_Destroy(m);
        if (s == NATS_TIMEOUT)
            return cmn_err_set(err, CMN_ERR_UNAVAILABLE, (int)s,
                               "too many publishes awaiting acknowledgement");
        return nats_err(err, s, "publish");
    }
    return CMN_OK;
}

static enum cmn_status publish_checks(struct cmn_js *js, size_t body_len, size_t header_bytes,
                                      struct cmn_err *err)
{
    if (js->cfg.on_publish == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "no publish callback configured");
    if (!atomic_load(&js->ready))
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "NATS is not connected");
    int64_t max = atomic_load(&js->max_payload);
    if (body_len > INT32_MAX || (max > 0 && (int64_t)(body_len + header_bytes) > max))
        return cmn_err_set(err, CMN_ERR_TOO_LARGE, 0,
                           "message of %zu bytes exceeds the NATS max payload %" PRId64 " bytes",
                           body_len + header_bytes, max);
    return CMN_OK;
}

enum cmn_status cmn_js_publish_async(struct cmn_js *js, const struct cmn_headers *headers,
                                     const void *body, size_t body_len, void *token,
                                     struct cmn_err *err)
{
    size_t header_bytes = 16;
    for (size_t i = 0; i < headers->count; i++)
        header_bytes += strlen(headers->items[i].name) + strlen(headers->items[i].value) + 4;
    enum cmn_status st = publish_checks(js, body_len, header_bytes, err);
    if (st != CMN_OK)
        return st;
    natsMsg *m = NULL;
    st = build_msg(&m, js->stream, headers, body, body_len, err);
    if (st != CMN_OK)
        return st;
    return publish_msg(js, m, token, err);
}

struct msg_sink {
    natsMsg *msg;
    size_t bytes;
    natsStatus status;
};

static enum cmn_status msg_sink_add(void *arg, const char *name, const char *value)
{
    struct msg_sink *ms = arg;
    /* Empty values are not sent: see build_msg. */
    if (value[0] == '\0')
        return CMN_OK;
    ms->bytes += strlen(name) + strlen(value) + 4;
    ms->status = natsMsgHeader_Add(ms->msg, name, value);
    if (ms->status == NATS_OK)
        return CMN_OK;
    return ms->status == NATS_NO_MEMORY ? CMN_ERR_NOMEM : CMN_ERR_NATS;
}

enum cmn_status cmn_js_publish_call_async(struct cmn_js *js, const struct cmn_call *call,
                                          const void *body, size_t body_len, void *token,
                                          struct cmn_err *err)
{
    /* Encoding errors (400 for the gateway) come before availability (503),
     * as with cmn_call_encode + cmn_js_publish_async. */
    if (body_len > INT32_MAX)
        return publish_checks(js, body_len, 0, err);
    struct msg_sink ms = {.msg = NULL, .bytes = 16, .status = NATS_OK};
    natsStatus s = natsMsg_Create(&ms.msg, js->stream, NULL, body, (int)body_len);
    if (s != NATS_OK)
        return nats_err(err, s, "build message");
    enum cmn_status st = cmn_call_encode_each(call, msg_sink_add, &ms, err);
    if (st == CMN_OK)
        st = publish_checks(js, body_len, ms.bytes, err);
    if (st != CMN_OK) {
        natsMsg_Destroy(ms.msg);
        return st;
    }
    return publish_msg(js, ms.msg, token, err);
}

/* --- pull consumer ------------------------------------------------------ */

enum cmn_status cmn_js_fetch(struct cmn_js *js, int batch, int64_t wait_ms,
                             struct cmn_js_msg **msgs, int *count, struct cmn_err *err)
{
    *count = 0;
    int64_t started = now_ms();
    if (js->durable == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "no durable consumer configured");
    if (!atomic_load(&js->ready)) {
        /* Poll briefly so work starts as soon as the set-up completes. */
        while (!atomic_load(&js->ready) && now_ms() - started < wait_ms)
            sleep_ms(20);
        if (!atomic_load(&js->ready))
            return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "NATS is not connected");
    }
    natsStatus s;
    if (js->sub == NULL) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = js->stream;
        so.Consumer = js->durable;
        jsErrCode jerr = 0;
        s = js_PullSubscribe(&js->sub, js->jsctx, js->stream, js->durable, NULL, &so, &jerr);
        if (s != NATS_OK) {
            js->sub = NULL;
            sleep_ms(wait_ms);
            return nats_err(err, s, "pull subscribe");
        }
    }
    natsMsgList list = {0};
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = batch;
    req.Expires = wait_ms * 1000000;
    s = natsSubscription_FetchRequest(&list, js->sub, &req);
    if (s == NATS_TIMEOUT || (s == NATS_OK && list.Count == 0)) {
        natsMsgList_Destroy(&list);
        /* Guard against an immediate timeout after a previous one (DESIGN §9):
         * an idle worker must not spin. */
        sleep_ms(wait_ms - (now_ms() - started));
        return CMN_OK;
    }
    if (s != NATS_OK) {
        natsMsgList_Destroy(&list);
        /* Consumer gone (fresh server) or connection trouble: rebuild the
         * subscription next time, after the setup thread re-created things. */
        natsSubscription_Destroy(js->sub);
        js->sub = NULL;
        if (natsConnection_Status(js->nc) == NATS_CONN_STATUS_CONNECTED)
            request_setup(js);
        sleep_ms(wait_ms - (now_ms() - started) > 200 ? 200 : wait_ms - (now_ms() - started));
        return nats_err(err, s, "fetch");
    }
    int n = 0;
    for (int i = 0; i < list.Count; i++) {
        if (n < batch) {
            msgs[n++] = (struct cmn_js_msg *)list.Msgs[i];
            list.Msgs[i] = NULL;
        }
    }
    natsMsgList_Destroy(&list);
    *count = n;
    return CMN_OK;
}

static natsMsg *raw(const struct cmn_js_msg *msg)
{
    return (natsMsg *)(void *)msg;
}

static enum cmn_status msg_headers(natsMsg *m, struct cmn_headers *out, struct cmn_err *err)
{
    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(m, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return CMN_OK;
    if (s != NATS_OK)
        return nats_err(err, s, "message headers");
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
    enum cmn_status st = msg_headers(raw(msg), &h, err);
    if (st == CMN_OK)
        st = cmn_call_decode(&h, call, err);
    cmn_headers_free(&h);
    return st;
}

const void *cmn_js_msg_body(const struct cmn_js_msg *msg, size_t *len)
{
    int n = natsMsg_GetDataLength(raw(msg));
    *len = n > 0 ? (size_t)n : 0;
    return natsMsg_GetData(raw(msg));
}

void cmn_js_msg_info(const struct cmn_js_msg *msg, struct cmn_js_msg_info *out)
{
    out->delivered = 1;
    out->seq = 0;
    out->stored_ns = 0;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, raw(msg)) != NATS_OK)
        return;
    out->delivered = meta->NumDelivered ? meta->NumDelivered : 1;
    out->seq = meta->Sequence.Stream;
    out->stored_ns = meta->Timestamp;
    jsMsgMetaData_Destroy(meta);
}

uint64_t cmn_js_msg_delivered(const struct cmn_js_msg *msg)
{
    struct cmn_js_msg_info info;
    cmn_js_msg_info(msg, &info);
    return info.delivered;
}

uint64_t cmn_js_msg_seq(const struct cmn_js_msg *msg)
{
    struct cmn_js_msg_info info;
    cmn_js_msg_info(msg, &info);
    return info.seq;
}

enum cmn_status cmn_js_msg_ack(struct cmn_js_msg *msg, struct cmn_err *err)
{
    natsStatus s = natsMsg_Ack(raw(msg), NULL);
    return s == NATS_OK ? CMN_OK : nats_err(err, s, "ack");
}

enum cmn_status cmn_js_msg_in_progress(struct cmn_js_msg *msg, struct cmn_err *err)
{
    natsStatus s = natsMsg_InProgress(raw(msg), NULL);
    return s == NATS_OK ? CMN_OK : nats_err(err, s, "in-progress ack");
}

enum cmn_status cmn_js_msg_nak_delay(struct cmn_js_msg *msg, int64_t delay_ms, struct cmn_err *err)
{
    natsStatus s =
        delay_ms > 0 ? natsMsg_NakWithDelay(raw(msg), delay_ms, NULL) : natsMsg_Nak(raw(msg), NULL);
    return s == NATS_OK ? CMN_OK : nats_err(err, s, "nak");
}

enum cmn_status cmn_js_msg_term(struct cmn_js_msg *msg, struct cmn_err *err)
{
    natsStatus s = natsMsg_Term(raw(msg), NULL);
    return s == NATS_OK ? CMN_OK : nats_err(err, s, "term");
}

enum cmn_status cmn_js_dead_letter(struct cmn_js *js, const struct cmn_js_msg *msg,
                                   const char *reason, int last_status, int attempts,
                                   struct cmn_err *err)
{
    if (js->dlq == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "no dead-letter stream configured");
    struct cmn_headers h;
    cmn_headers_init(&h);
    natsMsg *dm = NULL;
    jsPubAck *pa = NULL;
    enum cmn_status st = msg_headers(raw(msg), &h, err);
    if (st != CMN_OK)
        goto out;
    const char *id = cmn_headers_get(&h, CMN_HDR_MSG_ID);
    if (id != NULL) {
        char *copy = strdup(id);
        if (copy == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
        cmn_headers_remove(&h, CMN_HDR_MSG_ID);
        st = cmn_headers_set(&h, "Faas-Call-Id", copy);
        free(copy);
        if (st != CMN_OK)
            goto out;
    }
    char status[16], count[16];
    snprintf(status, sizeof(status), "%d", last_status);
    snprintf(count, sizeof(count), "%d", attempts);
    char safe_reason[512];
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
    size_t len = 0;
    const void *body = cmn_js_msg_body(msg, &len);
    st = build_msg(&dm, js->dlq, &h, body, len, err);
    if (st != CMN_OK)
        goto out;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = js->cfg.publish_timeout_ms > 0 ? js->cfg.publish_timeout_ms : 5000;
    jsErrCode jerr = 0;
    natsStatus s = js_PublishMsg(&pa, js->jsctx, dm, &po, &jerr);
    if (s != NATS_OK)
        st = nats_err(err, s, "dead-letter publish");
out:
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(dm);
    cmn_headers_free(&h);
    return st;
}

void cmn_js_msg_free(struct cmn_js_msg *msg)
{
    if (msg != NULL)
        natsMsg_Destroy(raw(msg));
}

int64_t cmn_js_consumer_pending(struct cmn_js *js)
{
    if (js->durable == NULL || !atomic_load(&js->ready))
        return -1;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, js->jsctx, js->stream, js->durable, NULL, &jerr) != NATS_OK)
        return -1;
    int64_t n = (int64_t)ci->NumPending;
    jsConsumerInfo_Destroy(ci);
    return n;
}
