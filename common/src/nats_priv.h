/* Private to libcommon's NATS modules (nats.c, tracker.c, jspub.c,
 * jsconsumer.c): the shared connection and the request tracker. The only
 * header besides those .c files that includes <nats/nats.h>. */
#ifndef CMN_NATS_PRIV_H
#define CMN_NATS_PRIV_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmn/nats.h"
#include "cmn/status.h"

/* The connection of a cmn_nats handle, bound to it: valid until
 * cmn_nats_free. Never NULL after a successful cmn_nats_open. */
natsConnection *cmn_nats_conn(struct cmn_nats *nats);

/* Monotonic milliseconds. */
int64_t cmn_nats_now_ms(void);

/* Waits on `cv` (created with CLOCK_MONOTONIC; caller holds `mu`) for at most
 * `ms` milliseconds, or until signalled. */
void cmn_nats_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);

/* Changes whenever the keeper sees the work-queue stream re-created (its
 * creation time differs from the last one seen): its sequences start over. */
uint64_t cmn_nats_epoch(const struct cmn_nats *nats);

/* Translates a natsStatus into `err` (with nats.c's last error text). */
enum cmn_status cmn_nats_err(struct cmn_err *err, natsStatus s, const char *what);

struct cmn_headers;
struct cmn_js_msg;

/* A fetched message: the natsMsg and the epoch it was fetched in. */
struct cmn_js_msg {
    natsMsg *m;
    uint64_t epoch;
};

/* The natsMsg behind a fetched message (borrowed). */
natsMsg *cmn_js_msg_raw(const struct cmn_js_msg *msg);

/* Appends every header of `m` to `out`. Errors: CMN_ERR_NOMEM, CMN_ERR_NATS. */
enum cmn_status cmn_nats_msg_headers(natsMsg *m, struct cmn_headers *out, struct cmn_err *err);

/* ---- request tracker ---------------------------------------------------
 * Sends requests (a message with a reply subject on the tracker's own inbox)
 * and follows each one until a decisive reply or its deadline: a request
 * without a reply is sent again every resend_ms (same message, so a JetStream
 * publish keeps its Nats-Msg-Id), one that got a retryable reply is sent again
 * after a short pause, and one that is never sent because the connection is
 * down waits for it. Exactly one completion per accepted request, handed to
 * the owner through a list and the `wake` callback; the owner runs them on its
 * own thread with tracker_complete. A request that timed out after being sent
 * leaves a tombstone for `late_ms`, so that a success that comes later is
 * reported (CMN_OK result with `late` set and a NULL token).
 *
 * Threads: tracker_submit/tracker_plain from one owner thread (or any, under
 * the owner's own serialisation); tracker_complete on the owner thread; the
 * classify callback on nats.c's subscription thread. The tracker's own thread
 * does the resends and the deadlines (one deadline owner). */

struct tracker;

enum tracker_verdict {
    TRACKER_DONE,  /* decisive reply: complete with the result filled in */
    TRACKER_RETRY, /* transient refusal (no responders, no leader): send again */
};

struct tracker_result {
    void *token;
    enum cmn_status status; /* CMN_OK, CMN_ERR_TIMEOUT, CMN_ERR_UNAVAILABLE, ... */
    bool duplicate;         /* JetStream: already stored under this Nats-Msg-Id */
    bool late;              /* a success after the request was answered as timed out */
    bool full;              /* JetStream: storage full or insufficient resources */
    int js_code;            /* JetStream err_code, 0 = none */
    uint64_t seq;           /* JetStream: stream sequence of the stored message */
    int sends;              /* how many times it went out */
    char label[136];        /* the submitter's label (call id) */
    char detail[200];
    void *payload; /* what classify parsed for the owner (NULL = none); freed with
                      payload_free after the completion callback ran */
};

/* Interprets one reply (borrowed) into `r` (status, detail, ...). */
typedef enum tracker_verdict (*tracker_classify_cb)(natsMsg *reply, struct tracker_result *r,
                                                    void *closure);

struct tracker_config {
    struct cmn_nats *nats;
    int64_t resend_ms;   /* no reply within this: send again */
    int64_t retry_ms;    /* pause after a TRACKER_RETRY verdict */
    int max_live;        /* requests not yet completed; beyond: refused */
    bool send_on_caller; /* first send on the submitting thread when connected */
    int64_t late_ms;     /* tombstone lifetime after a timeout; 0 = none */
    tracker_classify_cb classify;
    void *classify_closure;
    /* NULL, or asked (under the tracker's lock: cheap, non-blocking) before
     * every send of a request submitted with `tag`: false completes it with
     * CMN_ERR_UNAVAILABLE instead of sending (an ack whose stream was
     * re-created would hit another message with the same sequence). */
    bool (*still_valid)(uint64_t tag, void *closure);
    void (*payload_free)(void *payload); /* frees tracker_result.payload; NULL = free() */
    void (*wake)(void *closure);         /* any thread: completions are waiting */
    void *wake_closure;
};

enum cmn_status tracker_new(const struct tracker_config *config, struct tracker **out,
                            struct cmn_err *err);
/* Stops the thread and frees everything; completions not yet collected are
 * dropped. NULL allowed. */
void tracker_free(struct tracker *t);

/* Writes the reply subject for a new request into `buf` and returns its id. */
uint64_t tracker_reply_subject(struct tracker *t, char *buf, size_t size);

/* Submits `*msg` (taken, NULLed; created with the subject of
 * tracker_reply_subject for `id`), to be decided by `deadline_ms`
 * (monotonic). On CMN_OK exactly one completion will carry `token`; on error
 * (CMN_ERR_UNAVAILABLE: too many live requests) none. */
enum cmn_status tracker_submit(struct tracker *t, uint64_t id, natsMsg **msg, int64_t deadline_ms,
                               void *token, const char *label, uint64_t tag, struct cmn_err *err);

/* Queues a fire-and-forget publish of `data` to `subject` (both copied), sent
 * by the tracker's thread. Never blocks on NATS. */
enum cmn_status tracker_plain(struct tracker *t, const char *subject, const void *data, size_t len,
                              struct cmn_err *err);

/* Runs `cb` for every completion waiting, on the calling (owner) thread;
 * returns how many ran. */
size_t tracker_complete(struct tracker *t,
                        void (*cb)(const struct tracker_result *r, void *closure), void *closure);

/* Requests not yet completed. */
size_t tracker_live(const struct tracker *t);

#endif
