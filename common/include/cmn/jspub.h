/* Asynchronous JetStream publisher: queued calls (gateway) and dead letters
 * (queue-worker), each followed until the stream says stored or refused, or
 * its deadline passes. A publish without an answer is sent again with the
 * same Nats-Msg-Id (the stream de-duplicates), so that an answer to any copy
 * tells whether the call is stored; "no responders" and "no leader" answers
 * (a stream missing or electing a leader) are retried within the deadline and
 * ask the keeper to reconcile. Exactly one completion per accepted publish.
 *
 * Threads: publishes and cmn_jspub_complete from the owner's thread (one
 * thread); `wake` runs on a nats.c or the publisher's thread whenever
 * completions become available and must only signal the owner's loop (for
 * example event_active); the owner then calls cmn_jspub_complete, which runs
 * the completion callback on the owner's thread. No program state is touched
 * from another thread. Nothing here waits for the server; with
 * send_on_caller the first copy is one buffered write into nats.c on the
 * caller's thread, made only while connected (it takes nats.c's connection
 * lock briefly). */
#ifndef CMN_JSPUB_H
#define CMN_JSPUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/codec.h"
#include "cmn/jsconsumer.h"
#include "cmn/nats.h"
#include "cmn/status.h"

struct cmn_jspub;

struct cmn_jspub_config {
    const char *subject; /* work-queue subject of cmn_jspub_call (copied) */
    int64_t timeout_ms;  /* decision deadline of each publish */
    int max_pending;     /* publishes awaiting an answer; beyond: CMN_ERR_UNAVAILABLE */
    bool send_on_caller; /* true: first send on the caller's thread when connected (a
                            buffered write); false: every send on the publisher's thread */
    bool single_send;    /* true: never send a copy again (a message without a
                            Nats-Msg-Id, such as a dead letter, would be stored twice);
                            "no responders" answers are still retried */
    void (*wake)(void *closure);
    void *closure;
};

/* Outcome of one publish (borrowed by the completion callback). */
struct cmn_jspub_result {
    void *token;            /* the caller's token; NULL for a `late` report */
    enum cmn_status status; /* see below */
    bool duplicate;         /* already stored under this Nats-Msg-Id (CMN_OK) */
    bool late;              /* a publish answered CMN_ERR_TIMEOUT was stored after all */
    bool full;              /* refused: JetStream storage full / insufficient resources */
    int js_code;            /* JetStream err_code of a refusal, 0 = none */
    uint64_t seq;           /* stream sequence when stored */
    int sends;              /* copies sent (0: never sent) */
    const char *label;      /* the call id given at submission */
    const char *detail;     /* one line */
};
/* status: CMN_OK stored; CMN_ERR_TOO_LARGE over the stream's max message size
 * (not stored); CMN_ERR_UNAVAILABLE not stored (never sent: not connected, or
 * `full`); CMN_ERR_TIMEOUT sent but no answer by the deadline: may or may not
 * be stored (a later success is reported as `late`); CMN_ERR_NATS refused for
 * another reason (not stored), reason in `detail`. */

typedef void (*cmn_jspub_done_cb)(const struct cmn_jspub_result *result, void *closure);

/* Creates a publisher on `nats` (bound: free the publisher first). `*out` is
 * new. Errors: CMN_ERR_NOMEM, CMN_ERR_NATS (inbox subscription). */
enum cmn_status cmn_jspub_new(struct cmn_nats *nats, const struct cmn_jspub_config *config,
                              struct cmn_jspub **out, struct cmn_err *err);

/* Stops and frees; completions not yet collected are dropped. NULL allowed. */
void cmn_jspub_free(struct cmn_jspub *pub);

/* Publishes `call` (borrowed, wire format of cmn/codec.h, its call id becomes
 * the Nats-Msg-Id) on "<subject>.<call id>" (or "<queue>.<call id>" when its
 * policy names a queue: the caller makes sure that stream is kept,
 * cmn_nats_add_stream) with `body` (copied, `body_len` bytes). On CMN_OK
 * exactly one completion carries `token`; on error none. Errors: CMN_ERR_INVALID (the call cannot
 * be encoded), CMN_ERR_TOO_LARGE (over the server's max payload), CMN_ERR_UNAVAILABLE (NATS
 * unreachable for longer than timeout_ms, or max_pending reached), CMN_ERR_NOMEM. While connected
 * (even while the keeper reconciles) or briefly disconnected, the publish is taken and retried
 * within its deadline. */
enum cmn_status cmn_jspub_call(struct cmn_jspub *pub, const struct cmn_call *call, const void *body,
                               size_t body_len, void *token, struct cmn_err *err);

/* Publishes a copy of `msg` (borrowed; all headers and the body) to the
 * stream `stream` (copied) as a dead letter, with Faas-Dead-Reason `reason`,
 * Faas-Last-Status `last_status` (0 = none) and Faas-Attempts `attempts`;
 * Nats-Msg-Id becomes Faas-Call-Id so that a re-drive is not de-duplicated
 * away. Same completion rule and errors as cmn_jspub_call. */
enum cmn_status cmn_jspub_dead_letter(struct cmn_jspub *pub, const char *stream,
                                      const struct cmn_js_msg *msg, const char *reason,
                                      int last_status, int attempts, void *token,
                                      struct cmn_err *err);

/* Runs `cb` for every completion waiting; returns how many. Owner's thread. */
size_t cmn_jspub_complete(struct cmn_jspub *pub, cmn_jspub_done_cb cb, void *closure);

/* Publishes awaiting their answer. Any thread. */
size_t cmn_jspub_pending(const struct cmn_jspub *pub);

/* True while the stream recently refused a publish for lack of storage (for
 * `retry_after_s` seconds after the last such refusal). Any thread. */
bool cmn_jspub_storage_full(const struct cmn_jspub *pub);

/* Seconds a client should wait after a refusal for lack of storage. */
#define CMN_JSPUB_FULL_RETRY_AFTER_S 5

#endif
