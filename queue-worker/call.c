/* Per-call state machine of the queue-worker: owns every fetched message from
 * the moment the main thread starts it until it is settled (ack, delayed NAK,
 * term), the invocation and callback transfers, the +WPI lease timer, the retry
 * decision and the dead-letter copy. One log line per event, each with the
 * call id, so that the log reads as the story of each call. */
#include "call.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cmn/codec.h"
#include "cmn/url.h"
#include "cmn/duration.h"
#include "cmn/log.h"
#include "cmn/name.h"
#include "cmn/trace.h"
#include "retry.h"

/* A call's log line: its call id, and its trace id when the caller sent one. */
#define CLOG(level, c, ...) CMN_LOG_TRACED(level, (c)->log_id, (c)->trace_id, __VA_ARGS__)

#define RESPONSE_MAX_BYTES ((size_t)64 * 1024 * 1024)
#define LOG_BODY_MAX 1024
/* A call delivered this many times more than its attempt budget keeps killing
 * workers (or keeps being handed back): it is dead-lettered without a run. */
#define EXTRA_DELIVERIES 5
/* Stream sequences of the calls this worker settled most recently. A broker
 * that crashes right after a delivery can forget the ack and hand the same
 * message out again as a first delivery; a worker that finished it already
 * acknowledges it again instead of running the function a second time. */
#define DONE_RING 4096
#define DONE_BUCKETS 4096 /* sequences are mostly consecutive: seq % buckets spreads them */
_Static_assert(DONE_RING < UINT16_MAX, "ring slots + 1 are stored in uint16_t");

#define M_RECEIVED "queue_worker_messages_received_total"
#define M_PROCESSED "queue_worker_messages_processed_total"
#define M_INFLIGHT "queue_worker_function_invocation_inflight"
#define M_RETRIES "queue_worker_retries_total"
#define M_DEAD "queue_worker_dead_letters_total"
#define M_CALLBACKS "queue_worker_callbacks_total"
#define M_CALLBACK_FAILURES "queue_worker_callback_failures_total"
#define M_UNCONFIRMED "queue_worker_ack_unconfirmed_total"
#define M_CALLBACK_REFUSED "queue_worker_callbacks_refused_total"

enum call_state {
    ST_CLAIMING,      /* claiming the attempt in the call record */
    ST_INVOKING,      /* function transfer running (or about to) */
    ST_CALLBACK,      /* callback POST running */
    ST_CALLBACK_WAIT, /* callback back-off timer armed */
    ST_DEAD_LETTER,   /* dead-letter copy published, awaiting the stream's answer */
    ST_SETTLING,      /* final ack or term sent, awaiting the server's confirmation */
};

/* The call-record operation in flight for a call (one at a time). */
enum rec_op {
    OP_NONE,
    OP_CLAIM_PUT,   /* claim the attempt (compare-and-set) */
    OP_CLAIM_GET,   /* read the record to decide how to claim */
    OP_REFRESH,     /* extend the lease while the call runs */
    OP_CHECK,       /* read after a conflict or a cancel notice */
    OP_GUARD,       /* confirm the claim right before posting the callback */
    OP_RETRY,       /* record a retryable failure, then NAK */
    OP_FINAL,       /* record the final state, then ack or term */
    OP_CANCEL_DONE, /* a cancelled call: record the callback outcome, then ack */
};

struct qw_call {
    struct qw_call *prev, *next;
    struct qw_calls *set;
    struct cmn_js_msg *msg;
    struct cmn_call call;
    char log_id[CMN_CALLID_MAX];     /* call id, or "seq-<n>" when undecodable */
    char trace_id[CMN_TRACE_ID_MAX]; /* the caller's W3C trace id, "" = none */
    uint64_t attempt;                /* = deliveries of the message, from 1 */
    int64_t received_ns;             /* monotonic, receipt of this delivery */
    int64_t next_wip_ms;             /* monotonic time of the next +WPI */
    int64_t wake_ms;                 /* callback back-off deadline (ST_CALLBACK_WAIT) */
    enum call_state state;
    uint64_t seq;    /* stream sequence, 0 when unknown */
    uint64_t stored; /* hash of call id and store time: seq alone repeats on a fresh stream */
    char *url;
    struct cmn_headers req_headers;
    struct qw_http_xfer *xfer;
    struct qw_http_response resp; /* the function's response */
    int status;                   /* final function status (502/504 for transport/timeout) */
    char error[320];              /* X-Function-Error, "" when none */
    const char *dead_reason;      /* set: dead-letter and terminate when settling */
    bool terminating;             /* ST_SETTLING: a term (else an ack) */
    bool slot_released;           /* ST_SETTLING: its max_inflight slot is free already */
    bool undecodable;             /* poison message (no call id) */
    double seconds;               /* receipt → end of invocation */
    int cb_attempt;
    struct cmn_headers cb_headers;
    struct qw_http_response cb_resp;
    /* the call record (env.recs): our view of it, the operation in flight */
    struct cmn_rec rec;
    uint64_t expect;       /* OP_CLAIM_PUT: the revision it must replace (0 = none) */
    enum rec_op op;        /* in flight; OP_NONE = none */
    enum rec_op queued_op; /* issued once the one in flight is answered */
    enum rec_op check_of;  /* OP_CHECK: the write that conflicted (OP_NONE: a notice) */
    int claim_rounds;
    bool claimed;            /* this worker holds the current attempt in the record */
    bool cancelled;          /* the record says cancelled */
    bool expired;            /* older than max_call_age */
    bool releasing;          /* shutdown: the claim is given up (OP_RETRY) before the NAK */
    bool zombie;             /* ended while an operation was in flight: freed by its answer */
    int64_t next_refresh_ms; /* monotonic */
    int64_t retry_delay_ms;  /* OP_RETRY: the NAK delay */
};

struct qw_calls {
    struct qw_call_env env;
    struct qw_call *head;
    struct qw_call *zombies; /* ended, awaiting their record operation's answer */
    uint64_t writes;         /* record writes, for unique write ids */
    size_t count;
    uint64_t rng;
    uint64_t done_seq[DONE_RING]; /* ring of settled (stream sequence, call id hash) */
    uint64_t done_id[DONE_RING];
    /* index over the ring, looked up for every delivery: chains of ring slots
     * per bucket, stored as slot + 1 (0 ends a chain) */
    uint16_t done_head[DONE_BUCKETS];
    uint16_t done_chain[DONE_RING];
    size_t done_next, done_used;
};

/* Both the sequence and the call id must match: a stream re-created on a
 * fresh server starts its sequences at 1 again. */
static uint64_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h;
}

static bool seq_done(const struct qw_calls *set, uint64_t seq, uint64_t idh)
{
    for (unsigned k = set->done_head[seq % DONE_BUCKETS]; k != 0; k = set->done_chain[k - 1])
        if (set->done_seq[k - 1] == seq && set->done_id[k - 1] == idh)
            return true;
    return false;
}

static bool seq_in_flight(const struct qw_calls *set, const struct qw_call *self)
{
    for (const struct qw_call *c = set->head; c != NULL; c = c->next)
        if (c != self && c->seq == self->seq && c->stored == self->stored)
            return true;
    return false;
}

static void seq_remember(struct qw_calls *set, const struct qw_call *c)
{
    if (c->seq == 0 || c->call.call_id[0] == '\0')
        return;
    size_t slot = set->done_next;
    if (set->done_used == DONE_RING) {
        /* the oldest entry leaves the ring: unlink it from its chain */
        uint16_t *link = &set->done_head[set->done_seq[slot] % DONE_BUCKETS];
        while (*link != 0 && *link != slot + 1)
            link = &set->done_chain[*link - 1];
        if (*link != 0)
            *link = set->done_chain[slot];
    } else {
        set->done_used++;
    }
    set->done_seq[slot] = c->seq;
    set->done_id[slot] = c->stored;
    uint16_t *head = &set->done_head[c->seq % DONE_BUCKETS];
    set->done_chain[slot] = *head;
    *head = (uint16_t)(slot + 1);
    set->done_next = (slot + 1) % DONE_RING;
}

/* ---------------------------------------------------------------- helpers */

int64_t qw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t qw_now_ms(void)
{
    return qw_now_ns() / 1000000;
}

static double random_unit(struct qw_calls *set)
{
    /* xorshift64*: jitter only needs to differ between replicas and calls */
    uint64_t x = set->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    set->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / (double)(1ULL << 53);
}

static int64_t wip_period_ms(const struct qw_config *cfg)
{
    int64_t p = cfg->ack_wait_ms / 3;
    return p > 0 ? p : 1;
}

static const char *redact_url(const char *url, char *buf, size_t size)
{
    return cmn_url_redact(url, buf, size);
}

/* Printable one-line excerpt of a body: control and non-ASCII bytes escaped. */
static void log_body(const char *id, const char *what, const void *data, size_t len)
{
    char out[LOG_BODY_MAX * 4 + 32];
    size_t o = 0;
    const unsigned char *p = data;
    size_t n = len < LOG_BODY_MAX ? len : LOG_BODY_MAX;
    for (size_t i = 0; i < n && o + 5 < sizeof(out); i++) {
        unsigned char ch = p[i];
        if (ch == '\\' || ch == '"') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch >= 0x20 && ch < 0x7f) {
            out[o++] = (char)ch;
        } else {
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", ch);
        }
    }
    out[o] = '\0';
    LOG_INFO(id, "%s bytes=%zu body=\"%s%s\"", what, len, out, len > n ? "..." : "");
}

static void metric_code(struct qw_calls *set, const char *name, int code)
{
    char labels[32];
    if (code > 0)
        snprintf(labels, sizeof(labels), "code=\"%d\"", code);
    else
        snprintf(labels, sizeof(labels), "code=\"error\"");
    cmn_metrics_add(set->env.metrics, name, labels, 1);
}

/* Makes a message safe inside a quoted log value: '"' becomes '\'', CR/LF a
 * space. In place; returns `s`. */
static char *tidy(char *s)
{
    for (char *p = s; *p; p++) {
        if (*p == '"')
            *p = '\'';
        else if (*p == '\r' || *p == '\n')
            *p = ' ';
    }
    return s;
}

/* Appends `s` to the buffer, percent-encoding bytes that cannot appear in a
 * URL as is (controls, space, non-ASCII, '#', and '?' inside a path). */
static bool append_escaped(char *buf, size_t size, size_t *len, const char *s, bool in_path)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool esc = ch <= 0x20 || ch >= 0x7f || ch == '#' || ch == '"' || ch == '<' || ch == '>' ||
                   ch == '\\' || ch == '^' || ch == '`' || ch == '{' || ch == '|' || ch == '}' ||
                   (in_path && ch == '?');
        size_t need = esc ? 3 : 1;
        if (*len + need >= size)
            return false;
        if (esc) {
            buf[(*len)++] = '%';
            buf[(*len)++] = hex[ch >> 4];
            buf[(*len)++] = hex[ch & 15];
        } else {
            buf[(*len)++] = (char)ch;
        }
    }
    buf[*len] = '\0';
    return true;
}

/* ------------------------------------------------------------- lifecycle */

static void call_end(struct qw_call *c)
{
    struct qw_calls *set = c->set;
    if (c->prev)
        c->prev->next = c->next;
    else
        set->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    set->count--;
    qw_http_cancel(c->xfer);
    c->xfer = NULL;
    cmn_js_msg_free(c->msg);
    c->msg = NULL;
    cmn_call_free(&c->call);
    cmn_headers_free(&c->req_headers);
    cmn_headers_free(&c->cb_headers);
    qw_http_response_free(&c->resp);
    qw_http_response_free(&c->cb_resp);
    free(c->url);
    c->url = NULL;
    bool slot = !c->slot_released;
    if (c->op != OP_NONE) {
        /* its record operation's answer carries it: kept until then */
        c->zombie = true;
        c->prev = NULL;
        c->next = set->zombies;
        if (set->zombies)
            set->zombies->prev = c;
        set->zombies = c;
    } else {
        free(c);
    }
    cmn_metrics_set(set->env.metrics, M_INFLIGHT, NULL, (double)set->count);
    if (slot && set->env.on_slot_free)
        set->env.on_slot_free(set->env.closure);
}

static void zombie_free(struct qw_call *c)
{
    struct qw_calls *set = c->set;
    if (c->prev)
        c->prev->next = c->next;
    else
        set->zombies = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

struct qw_calls *qw_calls_new(const struct qw_call_env *env)
{
    struct qw_calls *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    set->env = *env;
    set->rng = (uint64_t)qw_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
    if (!set->rng)
        set->rng = 1;
    struct cmn_metrics *m = env->metrics;
    cmn_metrics_declare(m, M_RECEIVED, CMN_METRIC_COUNTER, "Messages (deliveries) fetched");
    cmn_metrics_declare(m, M_PROCESSED, CMN_METRIC_COUNTER,
                        "Calls finished, by final function status");
    cmn_metrics_declare(m, M_INFLIGHT, CMN_METRIC_GAUGE,
                        "Calls held by this worker (invoking or posting the callback)");
    cmn_metrics_declare(m, M_RETRIES, CMN_METRIC_COUNTER, "Invocations scheduled for a retry");
    cmn_metrics_declare(m, M_DEAD, CMN_METRIC_COUNTER, "Calls copied to the dead-letter stream");
    cmn_metrics_declare(m, M_CALLBACKS, CMN_METRIC_COUNTER,
                        "Callback POST attempts, by receiver status (\"error\": no response)");
    cmn_metrics_declare(m, M_CALLBACK_FAILURES, CMN_METRIC_COUNTER,
                        "Callbacks abandoned after their last attempt");
    cmn_metrics_set(m, M_INFLIGHT, NULL, 0);
    cmn_metrics_add(m, M_RECEIVED, NULL, 0);
    cmn_metrics_add(m, M_RETRIES, NULL, 0);
    cmn_metrics_add(m, M_DEAD, NULL, 0);
    cmn_metrics_add(m, M_CALLBACK_FAILURES, NULL, 0);
    cmn_metrics_declare(m, M_UNCONFIRMED, CMN_METRIC_COUNTER,
                        "Final acks or terms NATS never confirmed within ack_wait (the call is "
                        "delivered again)");
    cmn_metrics_add(m, M_UNCONFIRMED, NULL, 0);
    cmn_metrics_declare(m, M_CALLBACK_REFUSED, CMN_METRIC_COUNTER,
                        "Callbacks not sent: destination outside callback_allowlist");
    cmn_metrics_add(m, M_CALLBACK_REFUSED, NULL, 0);
    return set;
}

void qw_calls_free(struct qw_calls *set)
{
    if (!set)
        return;
    /* fatal exit: nothing is settled, the server redelivers after ack_wait */
    set->env.on_slot_free = NULL;
    while (set->head)
        call_end(set->head);
    while (set->zombies)
        zombie_free(set->zombies);
    free(set);
}

size_t qw_calls_count(const struct qw_calls *set)
{
    return set->count;
}

/* -------------------------------------------------------------- settling */

/* The work of the call is done, only NATS's answers are awaited: its bodies
 * go and its max_inflight slot is given to the next call (a round trip per
 * call must not cap the drain rate). */
static void release_slot(struct qw_call *c)
{
    struct qw_calls *set = c->set;
    qw_http_response_free(&c->resp);
    qw_http_response_free(&c->cb_resp);
    cmn_headers_free(&c->req_headers);
    cmn_headers_free(&c->cb_headers);
    if (c->slot_released)
        return;
    c->slot_released = true;
    if (set->env.on_slot_free)
        set->env.on_slot_free(set->env.closure);
}

static void on_confirmed(struct qw_call *c, const struct cmn_jscons_result *r);

/* The final ack or term. Without records (and for every term) it is sent by
 * the consumer's thread and re-sent until the server confirms it or the lease
 * would be over: the call stays (keeping its lease renewed, counted as held
 * for the drain) until then, but its slot is given to the next call at once:
 * the work is done, only the answer is awaited, and a round trip per call must
 * not cap the drain rate. With records an ack is sent once, unconfirmed. */
static void confirm(struct qw_call *c, bool term)
{
    struct qw_calls *set = c->set;
    struct cmn_err err;
    c->state = ST_SETTLING;
    c->terminating = term;
    if (set->env.recs != NULL && !term) {
        /* With call records the record is the commit point: the final write
         * is stored (or the record was final already) before this ack, and a
         * redelivery of a call whose record is final is acknowledged without
         * a run. So the ack needs no confirmation round trip; a lost one costs
         * one redelivery, never a second run or callback. */
        if (cmn_jscons_ack_nowait(set->env.cons, c->msg, &err) != CMN_OK) {
            CLOG(CMN_LOG_WARN, c, "ack not sent error=\"%s\"; the record settles the redelivery",
                 tidy(err.msg));
        }
        struct cmn_jscons_result r = {.token = c, .status = CMN_OK};
        release_slot(c);
        on_confirmed(c, &r);
        return;
    }
    int64_t deadline = qw_now_ms() + set->env.cfg->ack_wait_ms;
    enum cmn_status st = term ? cmn_jscons_term(set->env.cons, c->msg, deadline, c, &err)
                              : cmn_jscons_ack(set->env.cons, c->msg, deadline, c, &err);
    if (st != CMN_OK) {
        CLOG(CMN_LOG_ERROR, c, "%s failed error=\"%s\"; the call will be redelivered",
             term ? "term" : "ack", tidy(err.msg));
        call_end(c);
        return;
    }
    release_slot(c);
}

static void on_confirmed(struct qw_call *c, const struct cmn_jscons_result *r)
{
    /* this worker ran it either way: a redelivery here is settled, not run */
    seq_remember(c->set, c);
    if (r->status != CMN_OK) {
        cmn_metrics_add(c->set->env.metrics, M_UNCONFIRMED, NULL, 1);
        CLOG(CMN_LOG_ERROR, c,
             "%s not confirmed by NATS error=\"%s\"; if it is delivered again, this "
             "worker settles it without running it",
             c->terminating ? "term" : "ack", r->detail);
        call_end(c);
        return;
    }
    if (c->undecodable)
        CLOG(CMN_LOG_INFO, c, "done terminated");
    else
        CLOG(CMN_LOG_INFO, c, "done status=%d %s", c->status,
             c->terminating ? "terminated" : "acked");
    call_end(c);
}

static void dead_lettered(struct qw_call *c, const struct cmn_jspub_result *r);
static void finish(struct qw_call *c, bool term);

/* Publishes the dead-letter copy; the term follows once it is stored. */
static void dead_letter(struct qw_call *c, const char *reason)
{
    struct qw_calls *set = c->set;
    const struct qw_config *cfg = set->env.cfg;
    struct cmn_err err;
    if (cfg->dead_letter_stream == NULL || cfg->dead_letter_stream[0] == '\0') {
        CLOG(CMN_LOG_ERROR, c, "no dead_letter_stream configured: %s dropped",
             c->undecodable ? "message" : "call");
        finish(c, true);
        return;
    }
    c->state = ST_DEAD_LETTER;
    if (cmn_jspub_dead_letter(set->env.pub, cfg->dead_letter_stream, c->msg, reason, c->status,
                              (int)c->attempt, c, &err) != CMN_OK) {
        struct cmn_jspub_result r = {.token = c, .status = err.status, .detail = err.msg};
        dead_lettered(c, &r);
    }
}

static void dead_lettered(struct qw_call *c, const struct cmn_jspub_result *r)
{
    struct qw_calls *set = c->set;
    const struct qw_config *cfg = set->env.cfg;
    struct cmn_err err;
    if (r->status == CMN_ERR_TOO_LARGE || r->status == CMN_ERR_INVALID ||
        r->status == CMN_ERR_NATS) {
        /* the dead-letter stream refuses this copy for good (too large with the
         * dead-letter headers, refused): handing it back would loop forever */
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", r->detail ? r->detail : "");
        CLOG(CMN_LOG_ERROR, c, "dead-letter refused error=\"%s\" (%s); terminated without a copy",
             tidy(detail), cmn_status_name(r->status));
        finish(c, true);
        return;
    }
    if (r->status != CMN_OK) {
        /* keep the call rather than lose it: it comes back as a final attempt */
        int64_t delay = cfg->initial_retry_wait_ms;
        if (c->undecodable && delay < 1000)
            delay = 1000;
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", r->detail ? r->detail : "");
        CLOG(CMN_LOG_ERROR, c,
             "dead-letter failed error=\"%s\"; handed back for redelivery in %" PRId64 "ms",
             tidy(detail), delay);
        if (cmn_jscons_nak(set->env.cons, c->msg, delay, &err) != CMN_OK)
            CLOG(CMN_LOG_ERROR, c, "nak failed error=\"%s\"", tidy(err.msg));
        call_end(c);
        return;
    }
    cmn_metrics_add(set->env.metrics, M_DEAD, NULL, 1);
    CLOG(CMN_LOG_WARN, c, "dead-lettered reason=\"%s\" status=%d attempts=%" PRIu64 " stream=%s",
         c->undecodable ? c->error : c->dead_reason, c->status, c->attempt,
         cfg->dead_letter_stream);
    finish(c, true);
}

static void rec_issue(struct qw_call *c, enum rec_op op);

/* The final ack (or term), after the record says how the call ended. */
static void finish(struct qw_call *c, bool term)
{
    if (c->set->env.recs != NULL && c->claimed) {
        c->terminating = term;
        c->state = ST_SETTLING;
        release_slot(c);        /* first: the write may end the call at once */
        rec_issue(c, OP_FINAL); /* the ack follows */
        return;
    }
    confirm(c, term);
}

static void settle(struct qw_call *c)
{
    if (c->dead_reason)
        dead_letter(c, c->dead_reason);
    else
        finish(c, false);
}

/* An undecodable message: dead-lettered as is, then terminated. */
static void poison(struct qw_call *c, const char *why)
{
    char reason[300];
    snprintf(reason, sizeof(reason), "undecodable: %s", why);
    tidy(reason);
    snprintf(c->error, sizeof(c->error), "%s", reason);
    c->undecodable = true;
    c->dead_reason = "undecodable";
    c->status = 0;
    struct cmn_err err;
    const struct qw_config *cfg = c->set->env.cfg;
    c->state = ST_DEAD_LETTER;
    if (cfg->dead_letter_stream == NULL || cfg->dead_letter_stream[0] == '\0') {
        CLOG(CMN_LOG_ERROR, c, "no dead_letter_stream configured: message dropped");
        confirm(c, true);
        return;
    }
    if (cmn_jspub_dead_letter(c->set->env.pub, cfg->dead_letter_stream, c->msg, reason, 0,
                              (int)c->attempt, c, &err) != CMN_OK) {
        struct cmn_jspub_result r = {.token = c, .status = err.status, .detail = err.msg};
        dead_lettered(c, &r);
    }
}

static void on_cons_result(const struct cmn_jscons_result *r, void *closure)
{
    (void)closure;
    if (r->token != NULL)
        on_confirmed(r->token, r);
}

static void on_pub_result(const struct cmn_jspub_result *r, void *closure)
{
    (void)closure;
    if (r->token != NULL)
        dead_lettered(r->token, r);
}

static void on_rec_result(const struct cmn_recs_result *r, void *closure);
static void on_cancel_notice(const char *call_id, void *closure);

void qw_calls_collect(struct qw_calls *set)
{
    cmn_jscons_complete(set->env.cons, on_cons_result, set);
    cmn_jspub_complete(set->env.pub, on_pub_result, set);
    if (set->env.recs != NULL) {
        cmn_recs_complete(set->env.recs, on_rec_result, set);
        cmn_recs_cancels(set->env.recs, on_cancel_notice, set);
    }
}

/* -------------------------------------------------------------- callback */

static void post_callback(struct qw_call *c);

/* How the call ends, for the record and the callback's X-Call-State. */
static enum cmn_call_state final_state(const struct qw_call *c)
{
    if (c->cancelled)
        return CMN_CALL_CANCELLED;
    if (c->expired)
        return CMN_CALL_EXPIRED;
    if (c->dead_reason)
        return CMN_CALL_DEAD_LETTERED;
    if (c->status >= 200 && c->status <= 299)
        return CMN_CALL_SUCCEEDED;
    return CMN_CALL_FAILED;
}

/* ---- the call's retry policy: the function's overrides (com.openfaas.retry.*,
 * stamped by the gateway) over the worker's settings ---------------------- */

static int64_t retries_of(const struct qw_call *c)
{
    const struct cmn_fn_policy *p = &c->call.policy;
    return p->retry_attempts >= 0 ? p->retry_attempts : c->set->env.cfg->max_retry_attempts;
}

static int64_t min_wait_of(const struct qw_call *c)
{
    const struct cmn_fn_policy *p = &c->call.policy;
    return p->retry_min_wait_ms >= 0 ? p->retry_min_wait_ms
                                     : c->set->env.cfg->initial_retry_wait_ms;
}

static int64_t max_wait_of(const struct qw_call *c)
{
    const struct cmn_fn_policy *p = &c->call.policy;
    int64_t max =
        p->retry_max_wait_ms >= 0 ? p->retry_max_wait_ms : c->set->env.cfg->max_retry_wait_ms;
    int64_t min = min_wait_of(c);
    return max < min ? min : max;
}

/* True when `status` is one the call retries. */
static bool retried_status(const struct qw_call *c, int status)
{
    if (status < 100 || status >= 600)
        return false;
    const char *list = c->call.policy.retry_codes;
    if (list[0] == '\0')
        return c->set->env.cfg->retry_http_codes.has[status];
    for (const char *p = list; *p != '\0';) {
        char *end = NULL;
        long code = strtol(p, &end, 10);
        if (end == p)
            break;
        if (code == status)
            return true;
        p = *end == ',' ? end + 1 : end;
    }
    return false;
}

/* The caller's trace context (cmn/trace.h), as queued: kept when it is one
 * valid traceparent, else dropped with its tracestate (the function and the
 * callback get none). Its trace id goes into the call's log lines. */
static void take_trace(struct qw_call *c)
{
    size_t n = 0;
    const char *v = NULL;
    for (size_t i = 0; i < c->call.headers.count; i++) {
        if (strcasecmp(c->call.headers.items[i].name, CMN_TRACEPARENT) == 0) {
            n++;
            v = c->call.headers.items[i].value;
        }
    }
    if (n == 0 || (n == 1 && cmn_traceparent_parse(v, c->trace_id)))
        return;
    c->trace_id[0] = '\0';
    cmn_headers_remove(&c->call.headers, CMN_TRACEPARENT);
    cmn_headers_remove(&c->call.headers, CMN_TRACESTATE);
    CLOG(CMN_LOG_WARN, c, "invalid traceparent dropped");
}

/* The trace context goes on to the callback, so that the caller's trace
 * continues across the asynchronous hop. */
static enum cmn_status add_trace(struct qw_call *c, struct cmn_headers *h)
{
    if (c->trace_id[0] == '\0')
        return CMN_OK;
    enum cmn_status st = CMN_OK;
    const char *names[] = {CMN_TRACEPARENT, CMN_TRACESTATE};
    for (size_t k = 0; k < 2 && st == CMN_OK; k++) {
        const char *v = cmn_headers_get(&c->call.headers, names[k]);
        if (v != NULL)
            st = cmn_headers_set(h, names[k], v);
    }
    return st;
}

static enum cmn_status build_callback_headers(struct qw_call *c)
{
    struct cmn_headers *h = &c->cb_headers;
    enum cmn_status st = CMN_OK;
    char num[64];
    const char *connection = cmn_headers_get(&c->resp.headers, "Connection");
    for (size_t i = 0; st == CMN_OK && i < c->resp.headers.count; i++) {
        const struct cmn_header *it = &c->resp.headers.items[i];
        if (cmn_header_forwardable(CMN_HOP_FROM_FUNCTION, it->name, connection))
            st = cmn_headers_add(h, it->name, it->value);
    }
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Call-Id", c->call.call_id);
    snprintf(num, sizeof(num), "%d", c->status);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Function-Status", num);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Function-Name", c->call.function);
    snprintf(num, sizeof(num), "%.6f", c->seconds);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Duration-Seconds", num);
    snprintf(num, sizeof(num), "%" PRId64, c->call.start_ns);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Start-Time", num);
    snprintf(num, sizeof(num), "%" PRIu64, c->attempt > 0 ? c->attempt - 1 : 0);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Retry", num);
    snprintf(num, sizeof(num), "%" PRId64, retries_of(c));
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Retry-Max", num);
    if (st == CMN_OK && c->error[0])
        st = cmn_headers_set(h, "X-Function-Error", c->error);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Call-State", cmn_call_state_name(final_state(c)));
    /* where the call stands in a chain: a gateway receiving this callback on
     * its async route queues the next call one level deeper */
    snprintf(num, sizeof(num), "%d", c->call.chain_depth);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "X-Call-Depth", num);
    if (st == CMN_OK && c->call.parent_id[0] != '\0')
        st = cmn_headers_set(h, "X-Parent-Call-Id", c->call.parent_id);
    if (st == CMN_OK)
        st = add_trace(c, h);
    if (st == CMN_OK)
        st = cmn_headers_set(h, "User-Agent", "cfaas-queue-worker/" CFAAS_VERSION);
    return st;
}

/* One callback attempt failed with `why`: back off and try again, or give up
 * (at once when `last`, i.e. at the shutdown deadline). */
static void callback_failed(struct qw_call *c, const char *why, bool last)
{
    const struct qw_config *cfg = c->set->env.cfg;
    char ubuf[512];
    const char *url = redact_url(c->call.callback_url, ubuf, sizeof(ubuf));
    if (!last && c->cb_attempt < cfg->callback_max_attempts) {
        int64_t delay = qw_retry_callback_backoff_ms(c->cb_attempt);
        CLOG(CMN_LOG_WARN, c,
             "callback failed url=%s error=\"%s\" attempt=%d/%" PRId64 " next_in=%" PRId64 "ms",
             url, why, c->cb_attempt, cfg->callback_max_attempts, delay);
        c->state = ST_CALLBACK_WAIT;
        c->wake_ms = qw_now_ms() + delay;
        return;
    }
    CLOG(CMN_LOG_ERROR, c, "callback failed url=%s error=\"%s\" attempt=%d/%" PRId64 " giving up",
         url, why, c->cb_attempt, cfg->callback_max_attempts);
    cmn_metrics_add(c->set->env.metrics, M_CALLBACK_FAILURES, NULL, 1);
    c->rec.callback = CMN_CB_FAILED;
    settle(c);
}

/* The destination is outside callback_allowlist: no attempt is made (now
 * or later), the call is settled as usual. */
static void callback_refused(struct qw_call *c, const char *why)
{
    char ubuf[512];
    CLOG(CMN_LOG_ERROR, c, "callback refused url=%s error=\"%s\"",
         redact_url(c->call.callback_url, ubuf, sizeof(ubuf)), why);
    cmn_metrics_add(c->set->env.metrics, M_CALLBACK_REFUSED, NULL, 1);
    c->rec.callback = CMN_CB_FAILED;
    settle(c);
}

static void on_callback_done(struct qw_http_response *r, void *closure)
{
    struct qw_call *c = closure;
    c->xfer = NULL;
    char why[300];
    if (r->result == QW_HTTP_FORBIDDEN) {
        snprintf(why, sizeof(why), "%s", r->error);
        qw_http_response_free(r);
        callback_refused(c, why);
        return;
    }
    metric_code(c->set, M_CALLBACKS, r->result == QW_HTTP_OK ? r->status : 0);
    if (r->result == QW_HTTP_OK && r->status >= 200 && r->status <= 299) {
        char ubuf[512];
        CLOG(CMN_LOG_INFO, c, "callback posted url=%s status=%d attempt=%d",
             redact_url(c->call.callback_url, ubuf, sizeof(ubuf)), r->status, c->cb_attempt);
        c->rec.callback = CMN_CB_POSTED;
        c->rec.callback_status = r->status;
        qw_http_response_free(r);
        settle(c);
        return;
    }
    if (r->result == QW_HTTP_OK)
        snprintf(why, sizeof(why), "status %d", r->status);
    else
        snprintf(why, sizeof(why), "%s", r->error);
    c->rec.callback_status = r->result == QW_HTTP_OK ? r->status : 0;
    qw_http_response_free(r);
    callback_failed(c, tidy(why), false);
}

static void post_callback(struct qw_call *c)
{
    const struct qw_config *cfg = c->set->env.cfg;
    const struct cmn_cbrules *rules = c->set->env.callback_rules;
    struct cmn_err err;
    c->cb_attempt++;
    c->state = ST_CALLBACK;
    c->wake_ms = 0;
    /* the destination rules, again before every attempt: by name here, by
     * the resolved address at connect time (libcurl's open-socket hook) */
    const struct cmn_cbrules *addr_rules = NULL;
    if (!cmn_cbrules_open(rules)) {
        char host[256], why[300];
        int port = 0;
        enum cmn_cb_verdict v = CMN_CB_DENIED;
        snprintf(why, sizeof(why), "callback URL without a usable host");
        if (cmn_callback_url_host(c->call.callback_url, host, sizeof(host), &port))
            v = cmn_cbrules_check_host(rules, host, port, why, sizeof(why));
        if (v == CMN_CB_DENIED) {
            callback_refused(c, why);
            return;
        }
        if (v == CMN_CB_CHECK_ADDRESS)
            addr_rules = rules;
    }
    /* signed per attempt: a fresh timestamp every time, the same id */
    if (qw_signer_keys(c->set->env.signer) > 0) {
        char ts[24], sig[48 * 8 + 16];
        int64_t now_s = (int64_t)time(NULL);
        snprintf(ts, sizeof(ts), "%" PRId64, now_s);
        if (!qw_signer_sign(c->set->env.signer, c->call.call_id, now_s, c->resp.body,
                            c->resp.body_len, sig, sizeof(sig)) ||
            cmn_headers_set(&c->cb_headers, "webhook-id", c->call.call_id) != CMN_OK ||
            cmn_headers_set(&c->cb_headers, "webhook-timestamp", ts) != CMN_OK ||
            cmn_headers_set(&c->cb_headers, "webhook-signature", sig) != CMN_OK) {
            callback_failed(c, "cannot sign the callback", false);
            return;
        }
    }
    struct qw_http_request req = {
        .method = "POST",
        .url = c->call.callback_url,
        .headers = &c->cb_headers,
        .body = c->resp.body,
        .body_len = c->resp.body_len,
        .timeout_ms = cfg->callback_timeout_ms,
        .max_body_bytes = 0,
        .addr_rules = addr_rules,
    };
    if (qw_http_start(c->set->env.http, &req, &c->cb_resp, on_callback_done, c, &c->xfer, &err) !=
        CMN_OK) {
        c->xfer = NULL;
        callback_failed(c, tidy(err.msg), false);
    }
}

/* The callback of a final outcome (its claim confirmed when records are on). */
static void start_callback(struct qw_call *c)
{
    if (build_callback_headers(c) != CMN_OK) {
        callback_failed(c, "out of memory", false);
        return;
    }
    post_callback(c);
}

/* The invocation's outcome is final: count it, then callback (if any), settle.
 * With records, the claim is confirmed (OP_GUARD) right before the callback:
 * a worker that lost the call meanwhile never posts it. */
static void final_outcome(struct qw_call *c)
{
    if (!c->cancelled)
        metric_code(c->set, M_PROCESSED, c->status);
    if (!c->call.callback_url || !c->call.callback_url[0]) {
        settle(c);
        return;
    }
    if (c->set->env.recs != NULL && c->claimed && !c->cancelled) {
        c->state = ST_CALLBACK;
        rec_issue(c, OP_GUARD);
        return;
    }
    start_callback(c);
}

/* ----------------------------------------------------------- call records */

static void run_claimed(struct qw_call *c);
static void start_callback(struct qw_call *c);
static void retry_nak(struct qw_call *c);

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Hands the message back after `delay_ms` without running it, and ends the
 * call here. */
static void hand_back(struct qw_call *c, int64_t delay_ms, const char *why)
{
    struct cmn_err err;
    if (cmn_jscons_nak(c->set->env.cons, c->msg, delay_ms, &err) != CMN_OK)
        CLOG(CMN_LOG_ERROR, c, "nak failed error=\"%s\"", tidy(err.msg));
    CLOG(CMN_LOG_INFO, c, "handed back for %.3fs: %s", (double)delay_ms / 1000.0, why);
    call_end(c);
}

/* Another worker holds the call now: drop whatever this one has, without
 * an ack (the delivery is someone else's) and without a callback. */
static void lost(struct qw_call *c, const struct cmn_rec *stored)
{
    c->queued_op = OP_NONE;
    CLOG(CMN_LOG_WARN, c,
         "lost the call to %s (record %s, attempt %d): this worker's result is dropped, "
         "no callback, no ack",
         stored && stored->worker[0] ? stored->worker : "another worker",
         stored ? cmn_call_state_name(stored->state) : "gone", stored ? stored->attempt : 0);
    call_end(c);
}

/* The record says cancelled: abort what runs, post the cancellation if a
 * callback is due, ack. */
static void cancelled_call(struct qw_call *c, const struct cmn_rec *stored)
{
    bool running = c->xfer != NULL && c->state == ST_INVOKING;
    c->queued_op = OP_NONE;
    qw_http_cancel(c->xfer);
    c->xfer = NULL;
    c->rec = *stored;
    c->cancelled = true;
    c->claimed = true; /* the outcome of the callback goes into this record */
    c->dead_reason = NULL;
    c->status = 499;
    snprintf(c->error, sizeof(c->error), "cancelled");
    qw_http_response_free(&c->resp);
    memset(&c->resp, 0, sizeof(c->resp));
    cmn_headers_init(&c->resp.headers);
    CLOG(CMN_LOG_INFO, c, "cancelled%s reason=\"%s\"", running ? ": invocation aborted" : "",
         stored->reason);
    if (c->call.callback_url && c->call.callback_url[0] && stored->callback == CMN_CB_PENDING) {
        c->state = ST_CALLBACK;
        start_callback(c);
        return;
    }
    confirm(c, false);
}

/* Claimed: the attempt is this worker's. */
static void claimed(struct qw_call *c, uint64_t revision)
{
    c->rec.revision = revision;
    c->claimed = true;
    c->attempt = c->rec.attempt > 0 ? (uint64_t)c->rec.attempt : 1;
    c->next_refresh_ms = qw_now_ms() + wip_period_ms(c->set->env.cfg);
    run_claimed(c);
}

/* Decides from the stored record (NULL: none) whether and how to claim. */
static void claim_from(struct qw_call *c, const struct cmn_rec *stored)
{
    const struct qw_config *cfg = c->set->env.cfg;
    int64_t now = wall_ms();
    struct cmn_rec next;
    if (stored != NULL) {
        if (c->rec.write_id[0] != '\0' && strcmp(stored->write_id, c->rec.write_id) == 0) {
            c->rec = *stored;
            claimed(c, stored->revision); /* our own claim landed */
            return;
        }
        if (stored->state == CMN_CALL_CANCELLED) {
            cancelled_call(c, stored);
            return;
        }
        if (cmn_call_state_final(stored->state)) {
            CLOG(CMN_LOG_WARN, c,
                 "delivered again delivery=%" PRIu64 " but the call is %s already; "
                 "acknowledged without running",
                 c->attempt, cmn_call_state_name(stored->state));
            seq_remember(c->set, c);
            confirm(c, false);
            return;
        }
        if (stored->state == CMN_CALL_RUNNING && stored->lease_until_ms > now &&
            strcmp(stored->worker, c->set->env.worker) != 0) {
            char why[300];
            snprintf(why, sizeof(why), "running on %s (lease for %.3fs more)", stored->worker,
                     (double)(stored->lease_until_ms - now) / 1000.0);
            hand_back(c, stored->lease_until_ms - now + 1000, why);
            return;
        }
        next = *stored;
        c->expect = stored->revision;
    } else {
        cmn_rec_init(&next);
        snprintf(next.call_id, sizeof(next.call_id), "%s", c->call.call_id);
        snprintf(next.function, sizeof(next.function), "%s", c->call.function);
        next.submitted_ms = c->call.start_ns / 1000000;
        next.not_before_ms = c->call.not_before_ns / 1000000;
        next.callback =
            c->call.callback_url && c->call.callback_url[0] ? CMN_CB_PENDING : CMN_CB_NONE;
        c->expect = 0;
    }
    if (++c->claim_rounds > 5) {
        hand_back(c, 1000, "the call record keeps changing");
        return;
    }
    next.state = CMN_CALL_RUNNING;
    next.attempt = (stored != NULL ? stored->attempt : 0) + 1;
    if (next.started_ms == 0)
        next.started_ms = now;
    next.finished_ms = 0;
    next.lease_until_ms = now + cfg->ack_wait_ms;
    snprintf(next.worker, sizeof(next.worker), "%s", c->set->env.worker);
    c->rec = next;
    rec_issue(c, OP_CLAIM_PUT);
}

/* Fills the record for `op` and sends it; one operation at a time (a write
 * asked for meanwhile is queued; a lease refresh is skipped). */
static void rec_issue(struct qw_call *c, enum rec_op op)
{
    struct qw_calls *set = c->set;
    const struct qw_config *cfg = set->env.cfg;
    if (c->op != OP_NONE) {
        if (op != OP_REFRESH && op != OP_CHECK)
            c->queued_op = op;
        return;
    }
    struct cmn_rec *r = &c->rec;
    int64_t now = wall_ms();
    uint64_t expected = r->revision;
    enum cmn_status st;
    struct cmn_err err;
    switch (op) {
    case OP_CLAIM_GET:
    case OP_CHECK:
        c->op = op;
        st = cmn_recs_get(set->env.recs, c->call.call_id, c, &err);
        goto sent;
    case OP_CLAIM_PUT:
        expected = c->expect;
        break;
    case OP_REFRESH:
    case OP_GUARD:
        r->lease_until_ms = now + cfg->ack_wait_ms;
        break;
    case OP_RETRY:
        r->state = c->releasing ? CMN_CALL_QUEUED : CMN_CALL_RETRYING;
        r->lease_until_ms = 0;
        break;
    case OP_FINAL:
    case OP_CANCEL_DONE:
        if (!c->cancelled) {
            r->state = final_state(c);
            r->finished_ms = now;
            if (c->dead_reason)
                snprintf(r->reason, sizeof(r->reason), "%s", c->dead_reason);
        }
        r->lease_until_ms = 0;
        break;
    case OP_NONE:
        return;
    }
    if (op == OP_GUARD || (op == OP_RETRY && !c->releasing) || op == OP_FINAL) {
        if (!c->cancelled && c->status > 0)
            r->status = c->status;
        r->duration_s = c->seconds;
    }
    snprintf(r->write_id, sizeof(r->write_id), "%.40s#%" PRIu64, set->env.worker, ++set->writes);
    c->op = op;
    st = cmn_recs_put(set->env.recs, r, expected, c, &err);
sent:
    if (st != CMN_OK) {
        /* refused at once (too many pending): the same path as a failed answer */
        struct cmn_recs_result res = {.token = c, .status = st, .detail = err.msg};
        on_rec_result(&res, set);
    }
}

/* A write of ours conflicted: read the record to learn why. */
static void check_after(struct qw_call *c, enum rec_op of)
{
    c->check_of = of;
    rec_issue(c, OP_CHECK);
}

static void on_check(struct qw_call *c, const struct cmn_recs_result *r)
{
    enum rec_op of = c->check_of;
    c->check_of = OP_NONE;
    if (r->status != CMN_OK) {
        if (r->status == CMN_ERR_NOT_FOUND) {
            lost(c, NULL);
            return;
        }
        /* unknown (NATS trouble): go on as if the write had landed */
        CLOG(CMN_LOG_WARN, c, "call record unreadable error=\"%s\"; going on", r->detail);
    } else if (strcmp(r->rec->write_id, c->rec.write_id) == 0) {
        c->rec.revision = r->rec->revision; /* our earlier copy had landed */
    } else if (r->rec->state == CMN_CALL_CANCELLED && !c->cancelled) {
        cancelled_call(c, r->rec);
        return;
    } else if (of == OP_NONE) {
        /* a cancel notice for a call the record does not say is cancelled */
        if (strcmp(r->rec->worker, c->set->env.worker) != 0 || r->rec->attempt != c->rec.attempt) {
            lost(c, r->rec);
            return;
        }
        c->rec.revision = r->rec->revision;
        return;
    } else if (of == OP_CANCEL_DONE || (of == OP_FINAL && c->cancelled)) {
        confirm(c, false);
        return;
    } else {
        lost(c, r->rec);
        return;
    }
    switch (of) {
    case OP_GUARD:
        start_callback(c);
        break;
    case OP_RETRY:
        retry_nak(c);
        break;
    case OP_FINAL:
    case OP_CANCEL_DONE:
        confirm(c, c->terminating);
        break;
    default:
        if (c->queued_op != OP_NONE) {
            enum rec_op next = c->queued_op;
            c->queued_op = OP_NONE;
            rec_issue(c, next);
        }
        break;
    }
}

static void on_rec_result(const struct cmn_recs_result *r, void *closure)
{
    (void)closure;
    struct qw_call *c = r->token;
    enum rec_op op = c->op;
    c->op = OP_NONE;
    if (c->zombie) {
        zombie_free(c);
        return;
    }
    if (r->status == CMN_OK && op != OP_CLAIM_GET && op != OP_CHECK)
        c->rec.revision = r->revision;
    switch (op) {
    case OP_CLAIM_PUT:
        if (r->status == CMN_OK) {
            claimed(c, r->revision);
        } else if (r->status == CMN_ERR_CONFLICT) {
            rec_issue(c, OP_CLAIM_GET);
        } else if (r->full) {
            /* JetStream is out of storage: running the queued calls is what
             * frees it, so run without a claim (at-least-once, like
             * call_records=false) rather than block the queue */
            CLOG(CMN_LOG_WARN, c,
                 "call record not written (JetStream storage full): running "
                 "without a claim");
            run_claimed(c);
        } else {
            hand_back(c, 1000, "call record unavailable, claim impossible");
        }
        return;
    case OP_CLAIM_GET:
        if (r->status == CMN_OK || r->status == CMN_ERR_NOT_FOUND)
            claim_from(c, r->status == CMN_OK ? r->rec : NULL);
        else
            hand_back(c, 1000, "call record unavailable, claim impossible");
        return;
    case OP_CHECK:
        on_check(c, r); /* may end the call; issues the queued write itself */
        return;
    case OP_REFRESH:
        if (r->status == CMN_ERR_CONFLICT) {
            check_after(c, OP_REFRESH);
            return;
        }
        if (r->status != CMN_OK)
            CLOG(CMN_LOG_WARN, c, "lease in the call record not extended error=\"%s\"", r->detail);
        break;
    case OP_GUARD:
    case OP_RETRY:
    case OP_FINAL:
    case OP_CANCEL_DONE:
        if (r->status == CMN_ERR_CONFLICT) {
            check_after(c, op);
            return;
        }
        if (r->status != CMN_OK)
            CLOG(CMN_LOG_WARN, c, "call record not written error=\"%s\"; going on", r->detail);
        if (op == OP_GUARD)
            start_callback(c);
        else if (op == OP_RETRY)
            retry_nak(c);
        else
            confirm(c, c->terminating);
        return;
    case OP_NONE:
        break;
    }
    if (c->op == OP_NONE && c->queued_op != OP_NONE) {
        enum rec_op next = c->queued_op;
        c->queued_op = OP_NONE;
        rec_issue(c, next);
    }
}

/* A cancel notice (any worker may hear it): the call, if held here, checks
 * its record and stops when it says cancelled. */
static void on_cancel_notice(const char *call_id, void *closure)
{
    struct qw_calls *set = closure;
    for (struct qw_call *c = set->head; c != NULL; c = c->next) {
        if (!c->claimed || c->cancelled || strcmp(c->call.call_id, call_id) != 0)
            continue;
        if (c->state != ST_INVOKING && c->state != ST_CALLBACK_WAIT)
            continue;
        if (c->op == OP_NONE)
            check_after(c, OP_NONE);
    }
}

/* ------------------------------------------------------------ invocation */

/* Hands the call back for its next attempt after c->retry_delay_ms. */
static void retry_nak(struct qw_call *c)
{
    struct cmn_err err;
    if (cmn_jscons_nak(c->set->env.cons, c->msg, c->retry_delay_ms, &err) != CMN_OK)
        CLOG(CMN_LOG_ERROR, c, "nak failed error=\"%s\"; redelivered after ack_wait instead",
             tidy(err.msg));
    call_end(c);
}

static void schedule_retry(struct qw_call *c)
{
    struct qw_calls *set = c->set;
    const struct qw_config *cfg = set->env.cfg;
    int64_t min_wait = min_wait_of(c);
    int64_t delay = qw_retry_backoff_ms(c->attempt, min_wait, max_wait_of(c), random_unit(set));
    const char *source = "backoff";
    const char *ra = cmn_headers_get(&c->resp.headers, "Retry-After");
    int64_t ra_ms = 0;
    if (ra && qw_retry_after_parse_ms(ra, (int64_t)time(NULL), &ra_ms)) {
        int64_t cap = cfg->max_retry_after_ms > min_wait ? cfg->max_retry_after_ms : min_wait;
        delay = qw_retry_clamp_ms(ra_ms, min_wait, cap);
        source = "retry-after";
    }
    cmn_metrics_add(set->env.metrics, M_RETRIES, NULL, 1);
    CLOG(CMN_LOG_INFO, c,
         "retry scheduled attempt=%" PRIu64 "/%" PRId64 " status=%d delay=%.3fs"
         " source=%s%s",
         c->attempt, retries_of(c) + 1, c->status, (double)delay / 1000.0, source,
         cmn_fn_policy_set(&c->call.policy) ? " policy=function" : "");
    c->retry_delay_ms = delay;
    if (set->env.recs != NULL && c->claimed) {
        rec_issue(c, OP_RETRY); /* the NAK follows */
        return;
    }
    retry_nak(c);
}

static void on_invoke_done(struct qw_http_response *r, void *closure)
{
    struct qw_call *c = closure;
    const struct qw_config *cfg = c->set->env.cfg;
    bool retryable = false;
    c->xfer = NULL;
    c->seconds = (double)(qw_now_ns() - c->received_ns) / 1e9;
    switch (r->result) {
    case QW_HTTP_OK:
        c->status = r->status;
        retryable = retried_status(c, r->status);
        break;
    case QW_HTTP_TIMEOUT:
        c->status = 504;
        if (cfg->upstream_timeout_ms % 1000 == 0)
            snprintf(c->error, sizeof(c->error), "timeout after %" PRId64 "s",
                     cfg->upstream_timeout_ms / 1000);
        else
            snprintf(c->error, sizeof(c->error), "timeout after %.3fs",
                     (double)cfg->upstream_timeout_ms / 1000.0);
        retryable = true;
        break;
    case QW_HTTP_TRANSPORT:
        c->status = 502;
        snprintf(c->error, sizeof(c->error), "connection failed: %s", r->error);
        retryable = true;
        break;
    case QW_HTTP_TOO_LARGE:
        c->status = 502;
        snprintf(c->error, sizeof(c->error), "%s", r->error);
        break;
    case QW_HTTP_INVALID:
    default:
        c->status = 502;
        snprintf(c->error, sizeof(c->error), "invalid request: %s", r->error);
        c->dead_reason = "invalid request";
        break;
    }
    tidy(c->error);
    if (c->error[0])
        CLOG(CMN_LOG_INFO, c, "invoked function=%s status=%d seconds=%.6f error=\"%s\"",
             c->call.function, c->status, c->seconds, c->error);
    else
        CLOG(CMN_LOG_INFO, c, "invoked function=%s status=%d seconds=%.6f bytes=%zu",
             c->call.function, c->status, c->seconds, r->body_len);
    if (cfg->write_debug && r->body_len)
        log_body(c->log_id, "response", r->body, r->body_len);
    if (retryable) {
        if (c->attempt < (uint64_t)retries_of(c) + 1) {
            schedule_retry(c);
            return;
        }
        c->dead_reason = "retries exhausted";
    }
    final_outcome(c);
}

/* Writes the function URL into c->url. Returns 0, or the final status to
 * report without invoking (404 unknown function, 400 invalid name). */
static int build_url(struct qw_call *c)
{
    const struct qw_config *cfg = c->set->env.cfg;
    struct cmn_fn_name fn;
    struct cmn_err err;
    const char *f = c->call.function;
    if (cmn_name_parse(f, strlen(f), cfg->function_namespace, &fn, &err) != CMN_OK) {
        snprintf(c->error, sizeof(c->error), "%s", err.msg);
        return 400;
    }
    size_t size = strlen(f) + 3 * (strlen(c->call.path) + strlen(c->call.query)) + 600;
    char *url = malloc(size);
    if (!url) {
        snprintf(c->error, sizeof(c->error), "out of memory");
        return 502;
    }
    size_t len = 0;
    if (cfg->gateway_invoke) {
        int n = snprintf(url, size, "http://%s:%" PRId64 "/function/%s", cfg->faas_gateway_address,
                         cfg->faas_gateway_port, f);
        len = n > 0 ? (size_t)n : 0;
    } else {
        if (cmn_resolver_lookup(c->set->env.resolver, &fn, url, size - 3, &err) != CMN_OK) {
            free(url);
            snprintf(c->error, sizeof(c->error), "%s", err.msg);
            return 404;
        }
        len = strlen(url);
    }
    bool ok = len > 0 && len < size;
    const char *path = c->call.path;
    if (ok && path[0] != '/')
        ok = append_escaped(url, size, &len, "/", true);
    if (ok)
        ok = append_escaped(url, size, &len, path, true);
    if (ok && c->call.query[0]) {
        ok = append_escaped(url, size, &len, "?", false) &&
             append_escaped(url, size, &len, c->call.query, false);
    }
    if (!ok) {
        free(url);
        snprintf(c->error, sizeof(c->error), "function URL too long");
        return 400;
    }
    c->url = url;
    return 0;
}

static void invoke(struct qw_call *c)
{
    const struct qw_config *cfg = c->set->env.cfg;
    struct cmn_err err;
    char num[32];
    int early = build_url(c);
    if (early) {
        tidy(c->error);
        c->status = early;
        c->seconds = (double)(qw_now_ns() - c->received_ns) / 1e9;
        if (early == 400)
            c->dead_reason = "invalid request";
        CLOG(CMN_LOG_WARN, c, "not invoked function=%s status=%d error=\"%s\"", c->call.function,
             c->status, c->error);
        final_outcome(c);
        return;
    }
    enum cmn_status st = CMN_OK;
    for (size_t i = 0; st == CMN_OK && i < c->call.headers.count; i++)
        st = cmn_headers_add(&c->req_headers, c->call.headers.items[i].name,
                             c->call.headers.items[i].value);
    snprintf(num, sizeof(num), "%" PRId64, c->call.start_ns);
    if (st == CMN_OK)
        st = cmn_headers_set(&c->req_headers, "X-Call-Id", c->call.call_id);
    if (st == CMN_OK)
        st = cmn_headers_set(&c->req_headers, "X-Start-Time", num);
    if (st == CMN_OK && c->call.parent_id[0] != '\0')
        st = cmn_headers_set(&c->req_headers, "X-Parent-Call-Id", c->call.parent_id);
    /* the attempt number (1 = first): a function can tell a retry, and a
     * gateway counts this call once, at its acceptance */
    snprintf(num, sizeof(num), "%" PRIu64, c->attempt);
    if (st == CMN_OK)
        st = cmn_headers_set(&c->req_headers, "X-Call-Attempt", num);
    size_t body_len = 0;
    const void *body = cmn_js_msg_body(c->msg, &body_len);
    char ubuf[1024];
    CLOG(CMN_LOG_INFO, c, "invoking method=%s url=%s", c->call.method,
         redact_url(c->url, ubuf, sizeof(ubuf)));
    struct qw_http_request req = {
        .method = c->call.method,
        .url = c->url,
        .headers = &c->req_headers,
        .body = body_len ? body : NULL,
        .body_len = body_len,
        .timeout_ms = cfg->upstream_timeout_ms,
        .max_body_bytes = RESPONSE_MAX_BYTES,
    };
    c->state = ST_INVOKING;
    if (st != CMN_OK || qw_http_start(c->set->env.http, &req, &c->resp, on_invoke_done, c, &c->xfer,
                                      &err) != CMN_OK) {
        /* same path as a transfer that failed at once */
        c->xfer = NULL;
        memset(&c->resp, 0, sizeof(c->resp));
        c->resp.result = QW_HTTP_TRANSPORT;
        snprintf(c->resp.error, sizeof(c->resp.error), "%s",
                 st != CMN_OK ? "out of memory" : err.msg);
        on_invoke_done(&c->resp, c);
    }
}

void qw_calls_start(struct qw_calls *set, struct cmn_js_msg **msgp)
{
    const struct qw_config *cfg = set->env.cfg;
    struct cmn_js_msg *msg = *msgp;
    struct cmn_err err;
    *msgp = NULL;
    struct cmn_js_msg_info info;
    cmn_js_msg_info(msg, &info);
    uint64_t seq = info.seq;
    struct qw_call *c = calloc(1, sizeof(*c));
    if (!c) {
        LOG_ERROR(NULL, "out of memory: message seq=%" PRIu64 " handed back", seq);
        cmn_jscons_nak(set->env.cons, msg, 1000, NULL);
        cmn_js_msg_free(msg);
        if (set->env.on_slot_free)
            set->env.on_slot_free(set->env.closure);
        return;
    }
    c->set = set;
    c->msg = msg;
    c->seq = seq;
    c->next = set->head;
    if (set->head)
        set->head->prev = c;
    set->head = c;
    set->count++;
    cmn_call_init(&c->call);
    cmn_headers_init(&c->req_headers);
    cmn_headers_init(&c->cb_headers);
    c->attempt = info.delivered;
    if (c->attempt < 1)
        c->attempt = 1;
    c->received_ns = qw_now_ns();
    c->next_wip_ms = c->received_ns / 1000000 + wip_period_ms(cfg);
    cmn_metrics_add(set->env.metrics, M_RECEIVED, NULL, 1);
    cmn_metrics_set(set->env.metrics, M_INFLIGHT, NULL, (double)set->count);

    size_t body_len = 0;
    const void *body = cmn_js_msg_body(msg, &body_len);
    c->trace_id[0] = '\0';
    if (cmn_js_msg_decode(msg, &c->call, &err) != CMN_OK) {
        snprintf(c->log_id, sizeof(c->log_id), "seq-%" PRIu64, seq);
        CLOG(CMN_LOG_WARN, c,
             "received undecodable message delivery=%" PRIu64 " bytes=%zu "
             "error=\"%s\"",
             c->attempt, body_len, tidy(err.msg));
        poison(c, err.msg);
        return;
    }
    snprintf(c->log_id, sizeof(c->log_id), "%s", c->call.call_id);
    take_trace(c);
    if (c->seq != 0) {
        c->stored = id_hash(c->call.call_id) ^ ((uint64_t)info.stored_ns * 0x9E3779B97F4A7C15ULL);
        bool done = seq_done(set, c->seq, c->stored);
        if (done || seq_in_flight(set, c)) {
            /* A second delivery of a message this worker already finished (its
             * ack was lost, e.g. the broker restarted right after delivering)
             * or is still running (the lease continues through the first
             * handle): never run it twice here. */
            if (done && cmn_jscons_ack(set->env.cons, msg, qw_now_ms() + cfg->ack_wait_ms, NULL,
                                       &err) != CMN_OK)
                CLOG(CMN_LOG_WARN, c, "re-ack failed error=\"%s\"", tidy(err.msg));
            CLOG(CMN_LOG_WARN, c,
                 "delivered again delivery=%" PRIu64 " seq=%" PRIu64
                 " while %s here; not run again",
                 c->attempt, c->seq, done ? "already settled" : "still running");
            call_end(c);
            return;
        }
    }
    CLOG(CMN_LOG_INFO, c, "received function=%s delivery=%" PRIu64 " bytes=%zu seq=%" PRIu64,
         c->call.function, c->attempt, body_len, seq);
    if (cfg->faas_print_body && body_len)
        log_body(c->log_id, "request", body, body_len);
    int64_t now_ms = wall_ms();
    if (c->call.not_before_ns / 1000000 > now_ms + 20) {
        /* a delayed call: parked on the server (delayed NAK) until its time,
         * holding no slot here; its record stays derived ("scheduled") */
        char when[40];
        int64_t wait = c->call.not_before_ns / 1000000 - now_ms;
        CLOG(CMN_LOG_INFO, c, "scheduled not_before=%s in=%.3fs",
             cmn_time_format(c->call.not_before_ns / 1000000, when, sizeof(when)),
             (double)wait / 1000.0);
        if (cmn_jscons_nak(set->env.cons, msg, wait, &err) != CMN_OK)
            CLOG(CMN_LOG_ERROR, c, "nak failed error=\"%s\"", tidy(err.msg));
        call_end(c);
        return;
    }
    if (c->call.not_before_ns > 0 && c->attempt > 1)
        c->attempt--; /* the delivery that parked it ran nothing */
    if (set->env.recs != NULL) {
        c->state = ST_CLAIMING;
        if (c->attempt == 1)
            claim_from(c, NULL); /* a first delivery: create the record */
        else
            rec_issue(c, OP_CLAIM_GET);
        return;
    }
    run_claimed(c);
}

/* Older than max_call_age (from submission, or from its not-before time). */
static bool too_old(const struct qw_call *c)
{
    int64_t max = c->set->env.cfg->max_call_age_ms;
    if (max <= 0)
        return false;
    int64_t from =
        c->call.not_before_ns > c->call.start_ns ? c->call.not_before_ns : c->call.start_ns;
    return wall_ms() - from / 1000000 > max;
}

/* The attempt is this worker's (claimed, or records off): run it. */
static void run_claimed(struct qw_call *c)
{
    const struct qw_config *cfg = c->set->env.cfg;
    uint64_t budget = (uint64_t)retries_of(c) + 1;
    if (too_old(c)) {
        char age[32];
        c->expired = true;
        c->status = 410;
        snprintf(c->error, sizeof(c->error), "older than max_call_age %s",
                 cmn_duration_format(cfg->max_call_age_ms, age, sizeof(age)));
        c->dead_reason = "expired";
        if (c->claimed && c->rec.attempt > 0 && --c->rec.attempt == 0)
            c->rec.started_ms = 0; /* claimed, but never invoked */
        CLOG(CMN_LOG_WARN, c, "not invoked function=%s status=%d error=\"%s\"", c->call.function,
             c->status, c->error);
        final_outcome(c);
        return;
    }
    if (c->attempt > budget + EXTRA_DELIVERIES) {
        c->status = 502;
        snprintf(c->error, sizeof(c->error),
                 "delivery limit reached: delivered %" PRIu64 " times for %" PRIu64
                 " attempts (workers crashed or shut down while running it)",
                 c->attempt, budget);
        c->dead_reason = "delivery limit reached";
        CLOG(CMN_LOG_WARN, c, "not invoked function=%s status=%d error=\"%s\"", c->call.function,
             c->status, c->error);
        final_outcome(c);
        return;
    }
    invoke(c);
}

/* ----------------------------------------------------------------- timers */

int64_t qw_calls_run_timers(struct qw_calls *set, int64_t now_ms)
{
    int64_t next = INT64_MAX;
    int64_t period = wip_period_ms(set->env.cfg);
    struct qw_call *c, *n;
    for (c = set->head; c; c = n) {
        n = c->next;
        if (now_ms >= c->next_wip_ms) {
            struct cmn_err err;
            if (cmn_jscons_in_progress(set->env.cons, c->msg, &err) != CMN_OK)
                CLOG(CMN_LOG_WARN, c, "in-progress ack failed error=\"%s\"", tidy(err.msg));
            else
                CLOG(CMN_LOG_DEBUG, c, "lease renewed (+WPI)");
            c->next_wip_ms = now_ms + period;
            /* the record's lease follows the server's */
            if (set->env.recs != NULL && c->claimed && !c->cancelled &&
                (c->state == ST_INVOKING || c->state == ST_CALLBACK ||
                 c->state == ST_CALLBACK_WAIT))
                rec_issue(c, OP_REFRESH);
        }
        if (c->next_wip_ms < next)
            next = c->next_wip_ms;
        if (c->state == ST_CALLBACK_WAIT) {
            if (now_ms >= c->wake_ms) {
                post_callback(c); /* may settle and free c */
                continue;
            }
            if (c->wake_ms < next)
                next = c->wake_ms;
        }
    }
    return next;
}

/* --------------------------------------------------------------- shutdown */

void qw_calls_abort_all(struct qw_calls *set)
{
    struct qw_call *c, *next;
    for (c = set->head; c != NULL; c = next) {
        next = c->next;
        struct cmn_err err;
        if (c->state == ST_SETTLING || c->state == ST_DEAD_LETTER)
            continue; /* settled already; only the server's answer is awaited */
        if (c->state == ST_CLAIMING) {
            if (cmn_jscons_nak(set->env.cons, c->msg, 0, &err) != CMN_OK)
                CLOG(CMN_LOG_ERROR, c, "nak failed error=\"%s\"", tidy(err.msg));
            CLOG(CMN_LOG_WARN, c, "shutdown: handed back before it started");
            call_end(c);
            continue;
        }
        qw_http_cancel(c->xfer);
        c->xfer = NULL;
        if (c->state == ST_INVOKING) {
            double s = (double)(qw_now_ns() - c->received_ns) / 1e9;
            CLOG(CMN_LOG_WARN, c,
                 "shutdown: invocation aborted after %.3fs, handed back for "
                 "another worker",
                 s);
            c->retry_delay_ms = 0;
            if (set->env.recs != NULL && c->claimed && !c->cancelled) {
                /* give the claim up first, or the next replica would wait
                 * for this worker's lease to run out */
                c->releasing = true;
                rec_issue(c, OP_RETRY); /* the NAK follows */
                continue;
            }
            retry_nak(c);
        } else {
            qw_http_response_free(&c->cb_resp);
            /* the function already ran: settle rather than run it again */
            callback_failed(c, "worker shutting down", true);
        }
    }
}

void qw_calls_hand_back(struct qw_calls *set, struct cmn_js_msg **msgp)
{
    struct cmn_js_msg *msg = *msgp;
    struct cmn_err err;
    *msgp = NULL;
    char id[64];
    snprintf(id, sizeof(id), "seq-%" PRIu64, cmn_js_msg_seq(msg));
    if (cmn_jscons_nak(set->env.cons, msg, 0, &err) != CMN_OK)
        LOG_ERROR(id, "nak failed error=\"%s\"", tidy(err.msg));
    else
        LOG_INFO(id, "shutdown: fetched message handed back unstarted");
    cmn_js_msg_free(msg);
    if (set->env.on_slot_free)
        set->env.on_slot_free(set->env.closure);
}
