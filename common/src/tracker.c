/* Request tracker (see nats_priv.h): one table of requests awaiting a reply on
 * the tracker's own inbox, the thread that owns every deadline and resend,
 * and the completion list handed to the owner. One mutex guards the table; a
 * request moves SENT <-> WAIT until it is DONE, exactly once. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nats_priv.h"

#define BUCKETS 4096 /* ids are sequential: id % BUCKETS spreads them evenly */
#define IDLE_MS 1000
#define DOWN_POLL_MS 20
#define MAX_TOMBSTONES 4096

enum req_state {
    R_WAIT, /* to be sent at `at_ms` (connection down, or after a retry verdict) */
    R_SENT, /* on the wire; sent again at `at_ms` if no reply came */
    R_LATE, /* tombstone: timed out after being sent; only a late success matters */
};

struct req {
    uint64_t id;
    struct req *hnext;       /* hash chain */
    struct req *prev, *next; /* live list (WAIT/SENT), or tombstone FIFO (LATE) */
    enum req_state state;
    bool sending;  /* a thread is publishing `msg` outside the lock */
    bool dead;     /* completed while `sending`: the sender frees msg */
    bool released; /* the owner is done with it while `sending`: the sender frees it */
    natsMsg *msg;  /* NULL for tombstones */
    uint64_t tag;  /* see tracker_config.still_valid */
    int64_t at_ms, deadline_ms, late_until_ms;
    struct tracker_result r;
    struct req *done_next; /* completion list */
};

struct plain {
    struct plain *next;
    char *subject;
    size_t len;
    char data[];
};

struct tracker {
    struct tracker_config cfg;
    natsConnection *nc;
    natsSubscription *sub;
    char inbox[128];
    uint64_t next_id;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    bool started, stop;
    bool work; /* something was queued since the last pass: no wait before the next */
    struct req *buckets[BUCKETS];
    struct req *live_head, *live_tail;
    size_t live;
    struct req *late_head, *late_tail;
    size_t late;
    struct req *done_head, *done_tail;
    struct plain *plain_head, *plain_tail;
};

/* ---- table (caller holds mu) -------------------------------------------- */

static void hash_put(struct tracker *t, struct req *q)
{
    struct req **b = &t->buckets[q->id % BUCKETS];
    q->hnext = *b;
    *b = q;
}

static struct req *hash_find(struct tracker *t, uint64_t id)
{
    struct req *q = t->buckets[id % BUCKETS];
    while (q != NULL && q->id != id)
        q = q->hnext;
    return q;
}

static void hash_del(struct tracker *t, struct req *q)
{
    struct req **pp = &t->buckets[q->id % BUCKETS];
    while (*pp != NULL && *pp != q)
        pp = &(*pp)->hnext;
    if (*pp == q)
        *pp = q->hnext;
}

static void list_add(struct req **head, struct req **tail, struct req *q)
{
    q->next = NULL;
    q->prev = *tail;
    if (*tail != NULL)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

static void list_del(struct req **head, struct req **tail, struct req *q)
{
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        *head = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    else
        *tail = q->prev;
    q->prev = q->next = NULL;
}

/* Moves a live request to the completion list; returns true when the owner
 * must be woken (the list was empty). */
static bool finish_locked(struct tracker *t, struct req *q)
{
    hash_del(t, q);
    list_del(&t->live_head, &t->live_tail, q);
    t->live--;
    if (q->sending) {
        /* the sender still reads q->msg: it frees it when done */
        q->dead = true;
    } else {
        natsMsg_Destroy(q->msg);
        q->msg = NULL;
    }
    q->done_next = NULL;
    bool wake = t->done_head == NULL;
    if (t->done_tail != NULL)
        t->done_tail->done_next = q;
    else
        t->done_head = q;
    t->done_tail = q;
    return wake;
}

/* Leaves a tombstone for a request that timed out after being sent. */
static void tombstone_locked(struct tracker *t, const struct req *q, int64_t now)
{
    if (t->cfg.late_ms <= 0 || q->r.sends == 0)
        return;
    if (t->late >= MAX_TOMBSTONES) {
        struct req *old = t->late_head;
        hash_del(t, old);
        list_del(&t->late_head, &t->late_tail, old);
        t->late--;
        free(old);
    }
    struct req *z = calloc(1, sizeof(*z));
    if (z == NULL)
        return;
    z->id = q->id;
    z->state = R_LATE;
    z->late_until_ms = now + t->cfg.late_ms;
    memcpy(z->r.label, q->r.label, sizeof(z->r.label));
    z->r.sends = q->r.sends;
    hash_put(t, z);
    list_add(&t->late_head, &t->late_tail, z);
    t->late++;
}

static void wake_owner(struct tracker *t)
{
    if (t->cfg.wake != NULL)
        t->cfg.wake(t->cfg.wake_closure);
}

static void payload_release(struct tracker *t, void *payload)
{
    if (payload == NULL)
        return;
    if (t->cfg.payload_free != NULL)
        t->cfg.payload_free(payload);
    else
        free(payload);
}

/* ---- replies (nats.c subscription thread) -------------------------------- */

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct tracker *t = closure;
    const char *subject = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subject, '.');
    char *end = NULL;
    uint64_t id = dot != NULL ? strtoull(dot + 1, &end, 10) : 0;
    if (id == 0 || end == NULL || *end != '\0') {
        natsMsg_Destroy(msg);
        return;
    }
    struct tracker_result r;
    memset(&r, 0, sizeof(r));
    enum tracker_verdict v = t->cfg.classify(msg, &r, t->cfg.classify_closure);
    natsMsg_Destroy(msg);
    void *unused = r.payload; /* cleared below when a completion takes it */
    bool wake = false;
    struct req *late = NULL;
    pthread_mutex_lock(&t->mu);
    struct req *q = hash_find(t, id);
    if (q != NULL && q->state == R_LATE) {
        if (v == TRACKER_DONE && r.status == CMN_OK) {
            hash_del(t, q);
            list_del(&t->late_head, &t->late_tail, q);
            t->late--;
            late = q;
        }
    } else if (q != NULL && v == TRACKER_DONE) {
        int sends = q->r.sends;
        char label[sizeof(q->r.label)];
        memcpy(label, q->r.label, sizeof(label));
        void *token = q->r.token;
        q->r = r;
        q->r.sends = sends;
        q->r.token = token;
        memcpy(q->r.label, label, sizeof(label));
        unused = NULL;
        wake = finish_locked(t, q);
    } else if (q != NULL && q->state == R_SENT) {
        /* transient refusal: pause, then the thread sends it again */
        q->state = R_WAIT;
        q->at_ms = cmn_nats_now_ms() + t->cfg.retry_ms;
        snprintf(q->r.detail, sizeof(q->r.detail), "%s", r.detail);
        q->r.js_code = r.js_code;
        pthread_cond_signal(&t->cv); /* may be due before what the thread waits for */
    }
    if (late != NULL) {
        /* reported once, through the same list, without a token */
        late->r.status = CMN_OK;
        late->r.late = true;
        late->r.seq = r.seq;
        late->r.duplicate = r.duplicate;
        late->r.token = NULL;
        late->done_next = NULL;
        wake = t->done_head == NULL;
        if (t->done_tail != NULL)
            t->done_tail->done_next = late;
        else
            t->done_head = late;
        t->done_tail = late;
    }
    pthread_mutex_unlock(&t->mu);
    payload_release(t, unused);
    if (wake)
        wake_owner(t);
}

/* ---- sending --------------------------------------------------------------- */

/* Publishes q->msg outside the lock; caller holds mu and set q->sending.
 * Returns false when q is no longer live (completed meanwhile; possibly
 * freed): the caller must not touch it. */
static bool send_unlocked(struct tracker *t, struct req *q)
{
    pthread_mutex_unlock(&t->mu);
    natsStatus s = natsConnection_PublishMsg(t->nc, q->msg);
    pthread_mutex_lock(&t->mu);
    q->sending = false;
    if (q->dead) {
        natsMsg_Destroy(q->msg);
        q->msg = NULL;
        if (q->released)
            free(q);
        return false;
    }
    if (s != NATS_OK && q->state == R_SENT) {
        /* not taken (connection gone meanwhile): wait for the connection */
        q->state = R_WAIT;
        q->at_ms = cmn_nats_now_ms() + t->cfg.retry_ms;
        q->r.sends--;
        snprintf(q->r.detail, sizeof(q->r.detail), "publish: %s", natsStatus_GetText(s));
        pthread_cond_signal(&t->cv);
    }
    return true;
}

static bool connected(struct tracker *t)
{
    return cmn_nats_connected(t->cfg.nats);
}

static void mark_sent(struct tracker *t, struct req *q, int64_t now)
{
    q->state = R_SENT;
    q->sending = true;
    q->r.sends++;
    q->at_ms = now + t->cfg.resend_ms;
}

/* One pass of the thread: deadlines, resends, tombstones, plain publishes.
 * Writes the monotonic time the next pass is due to `*due_ms`. */
static bool tick_locked(struct tracker *t, int64_t *due_ms)
{
    int64_t now = cmn_nats_now_ms();
    bool wake = false, up = connected(t);
    for (struct req *q = t->live_head, *next; q != NULL; q = next) {
        next = q->next;
        if (q->sending)
            continue;
        if (now >= q->deadline_ms) {
            if (q->r.sends > 0) {
                q->r.status = CMN_ERR_TIMEOUT;
                char d[sizeof(q->r.detail)];
                snprintf(d, sizeof(d), "no reply after %d send%s%s%.150s", q->r.sends,
                         q->r.sends == 1 ? "" : "s", q->r.detail[0] ? "; last: " : "", q->r.detail);
                memcpy(q->r.detail, d, sizeof(d));
                tombstone_locked(t, q, now);
            } else {
                q->r.status = CMN_ERR_UNAVAILABLE;
                char d[sizeof(q->r.detail)];
                snprintf(d, sizeof(d), "never sent: %.150s",
                         q->r.detail[0] ? q->r.detail : "NATS not connected");
                memcpy(q->r.detail, d, sizeof(d));
            }
            wake |= finish_locked(t, q);
            continue;
        }
        if (q->at_ms <= now && up && t->cfg.still_valid != NULL &&
            !t->cfg.still_valid(q->tag, t->cfg.classify_closure)) {
            q->r.status = CMN_ERR_UNAVAILABLE;
            snprintf(q->r.detail, sizeof(q->r.detail),
                     "void: the stream was re-created since the message was fetched");
            wake |= finish_locked(t, q);
            continue;
        }
        if (q->at_ms <= now && up) {
            mark_sent(t, q, now);
            /* the list may change while unlocked: continue from q if it is
             * still live, else rescan (sent ones wait for their at_ms) */
            next = send_unlocked(t, q) ? q->next : t->live_head;
        }
    }
    while (t->late_head != NULL && t->late_head->late_until_ms <= now) {
        struct req *z = t->late_head;
        hash_del(t, z);
        list_del(&t->late_head, &t->late_tail, z);
        t->late--;
        free(z);
    }
    /* Sleep until something is due: a deadline, a resend, a tombstone to
     * drop; while disconnected, look again soon (a reconnect does not wake
     * this thread). Idle, the thread wakes once a second. */
    int64_t due = now + IDLE_MS;
    int64_t later = cmn_nats_now_ms();
    for (struct req *q = t->live_head; q != NULL; q = q->next) {
        int64_t at = q->at_ms;
        if (!connected(t) && at <= later)
            at = later + DOWN_POLL_MS;
        if (at < due)
            due = at;
        if (q->deadline_ms < due)
            due = q->deadline_ms;
    }
    if (t->late_head != NULL && t->late_head->late_until_ms < due)
        due = t->late_head->late_until_ms;
    *due_ms = due;
    while (t->plain_head != NULL) {
        struct plain *p = t->plain_head;
        t->plain_head = p->next;
        if (t->plain_head == NULL)
            t->plain_tail = NULL;
        pthread_mutex_unlock(&t->mu);
        natsConnection_Publish(t->nc, p->subject, p->data, (int)p->len);
        free(p->subject);
        free(p);
        pthread_mutex_lock(&t->mu);
    }
    return wake;
}

static void *thread_main(void *arg)
{
    struct tracker *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        int64_t due = 0;
        bool wake = tick_locked(t, &due);
        if (wake) {
            pthread_mutex_unlock(&t->mu);
            wake_owner(t);
            pthread_mutex_lock(&t->mu);
        }
        if (t->stop || t->plain_head != NULL || t->work) {
            t->work = false;
            continue;
        }
        int64_t wait = due - cmn_nats_now_ms();
        if (wait > 0)
            cmn_nats_cond_wait_ms(&t->cv, &t->mu, wait);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- API ------------------------------------------------------------------- */

enum cmn_status tracker_new(const struct tracker_config *config, struct tracker **out,
                            struct cmn_err *err)
{
    struct tracker *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    t->cfg = *config;
    if (t->cfg.resend_ms <= 0)
        t->cfg.resend_ms = 1000;
    if (t->cfg.retry_ms <= 0)
        t->cfg.retry_ms = 200;
    if (t->cfg.max_live <= 0)
        t->cfg.max_live = 4096;
    t->nc = cmn_nats_conn(config->nats);
    t->next_id = 1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s == NATS_OK) {
        snprintf(t->inbox, sizeof(t->inbox), "%s", (const char *)inbox);
        natsInbox_Destroy(inbox);
        char wild[160];
        snprintf(wild, sizeof(wild), "%s.*", t->inbox);
        /* nats.c re-subscribes after every reconnect */
        s = natsConnection_Subscribe(&t->sub, t->nc, wild, on_reply, t);
    }
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(t->sub, -1, -1);
    if (s != NATS_OK) {
        enum cmn_status st = cmn_nats_err(err, s, "reply subscription");
        tracker_free(t);
        return st;
    }
    if (pthread_create(&t->thread, NULL, thread_main, t) != 0) {
        tracker_free(t);
        return cmn_err_set(err, CMN_ERR_NOMEM, errno, "cannot start a NATS tracker thread");
    }
    t->started = true;
    *out = t;
    return CMN_OK;
}

void tracker_free(struct tracker *t)
{
    if (t == NULL)
        return;
    /* fire-and-forget operations queued last (NAKs at shutdown) go out first */
    for (int i = 0; i < 25 && connected(t); i++) {
        pthread_mutex_lock(&t->mu);
        bool empty = t->plain_head == NULL;
        pthread_mutex_unlock(&t->mu);
        if (empty)
            break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (t->sub != NULL) {
        /* a drain returns once a running on_reply is over; bounded, since a
         * frozen server never completes it */
        if (connected(t) && natsSubscription_Drain(t->sub) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(t->sub, 500);
        else
            natsSubscription_Unsubscribe(t->sub);
    }
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->started)
        pthread_join(t->thread, NULL);
    natsSubscription_Destroy(t->sub);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct req *q = t->buckets[b], *next; q != NULL; q = next) {
            next = q->hnext;
            natsMsg_Destroy(q->msg);
            free(q);
        }
    }
    for (struct req *q = t->done_head, *next; q != NULL; q = next) {
        next = q->done_next;
        natsMsg_Destroy(q->msg);
        payload_release(t, q->r.payload);
        free(q);
    }
    for (struct plain *p = t->plain_head, *next; p != NULL; p = next) {
        next = p->next;
        free(p->subject);
        free(p);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

uint64_t tracker_reply_subject(struct tracker *t, char *buf, size_t size)
{
    pthread_mutex_lock(&t->mu);
    uint64_t id = t->next_id++;
    pthread_mutex_unlock(&t->mu);
    snprintf(buf, size, "%s.%" PRIu64, t->inbox, id);
    return id;
}

enum cmn_status tracker_submit(struct tracker *t, uint64_t id, natsMsg **msg, int64_t deadline_ms,
                               void *token, const char *label, uint64_t tag, struct cmn_err *err)
{
    struct req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        natsMsg_Destroy(*msg);
        *msg = NULL;
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    q->id = id;
    q->tag = tag;
    q->msg = *msg;
    *msg = NULL;
    q->deadline_ms = deadline_ms;
    q->r.token = token;
    snprintf(q->r.label, sizeof(q->r.label), "%s", label != NULL ? label : "");
    int64_t now = cmn_nats_now_ms();
    pthread_mutex_lock(&t->mu);
    if (t->live >= (size_t)t->cfg.max_live) {
        pthread_mutex_unlock(&t->mu);
        natsMsg_Destroy(q->msg);
        free(q);
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0,
                           "%d requests already await a reply from NATS", t->cfg.max_live);
    }
    hash_put(t, q);
    list_add(&t->live_head, &t->live_tail, q);
    t->live++;
    bool now_send = t->cfg.send_on_caller && connected(t);
    if (now_send) {
        mark_sent(t, q, now);
        /* the thread sleeps until its earliest due request; later ones are due
         * later, so it only needs a nudge when it had nothing to wait for */
        if (t->live == 1)
            pthread_cond_signal(&t->cv);
        (void)send_unlocked(t, q);
    } else {
        q->state = R_WAIT;
        q->at_ms = now;
        t->work = true; /* a signal sent while the thread is busy would be lost */
        pthread_cond_signal(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return CMN_OK;
}

enum cmn_status tracker_plain(struct tracker *t, const char *subject, const void *data, size_t len,
                              struct cmn_err *err)
{
    struct plain *p = malloc(sizeof(*p) + len + 1);
    char *subj = strdup(subject);
    if (p == NULL || subj == NULL) {
        free(p);
        free(subj);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    }
    p->next = NULL;
    p->subject = subj;
    p->len = len;
    memcpy(p->data, data, len);
    p->data[len] = '\0';
    pthread_mutex_lock(&t->mu);
    if (t->plain_tail != NULL)
        t->plain_tail->next = p;
    else
        t->plain_head = p;
    t->plain_tail = p;
    t->work = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return CMN_OK;
}

size_t tracker_complete(struct tracker *t,
                        void (*cb)(const struct tracker_result *r, void *closure), void *closure)
{
    pthread_mutex_lock(&t->mu);
    struct req *list = t->done_head;
    t->done_head = t->done_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    size_t n = 0;
    while (list != NULL) {
        struct req *next = list->done_next;
        cb(&list->r, closure);
        payload_release(t, list->r.payload);
        list->r.payload = NULL;
        pthread_mutex_lock(&t->mu);
        bool busy = list->sending;
        if (busy)
            list->released = true; /* the sender frees it */
        pthread_mutex_unlock(&t->mu);
        if (!busy)
            free(list);
        n++;
        list = next;
    }
    return n;
}

size_t tracker_live(const struct tracker *t)
{
    struct tracker *m = (struct tracker *)t;
    pthread_mutex_lock(&m->mu);
    size_t n = m->live;
    pthread_mutex_unlock(&m->mu);
    return n;
}
