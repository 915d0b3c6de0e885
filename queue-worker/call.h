/* The per-call state machine of the queue-worker and the set of calls in
 * flight: decode → invoke → (retry via delayed NAK | final outcome → callback
 * with bounded retries → dead letter when exhausted → ack), with +WPI lease
 * renewal every ack_wait/3 for as long as a call is held. NATS is never
 * waited on: lease operations are queued to the consumer's thread, the final
 * ack (or term) is confirmed by the server before the call counts as done,
 * and a dead letter is published asynchronously; both outcomes come back
 * through qw_calls_collect.
 *
 * Threads: everything here runs on the main thread (the one that runs
 * qw_http_run); the services in struct qw_call_env are borrowed.
 *
 * Decisions (documented behaviour):
 *  - attempt = the server's delivery count, so a worker crash, a kill, or a
 *    shutdown hand-back also uses up an attempt; a delivery past the budget
 *    still runs once (no further retry), and a call delivered more than
 *    1 + max_retry_attempts + 5 times is dead-lettered without running
 *    (a call that keeps killing workers), with a 502 callback;
 *  - transport error → X-Function-Status 502, timeout → 504, both with
 *    X-Function-Error; both are retried like retry_http_codes;
 *  - X-Retry = attempt - 1 (may exceed X-Retry-Max after crashes);
 *  - a final outcome with retries exhausted is called back, then copied to the
 *    dead-letter stream and terminated; if that copy fails the call is NAK'd
 *    (initial_retry_wait) rather than lost, and may be called back again;
 *  - at the shutdown deadline a running invocation is NAK'd (no delay); a call
 *    whose function already ran gives up its callback and is settled, so a
 *    function never runs twice because of a shutdown. */
#ifndef QW_CALL_H
#define QW_CALL_H

#include <stddef.h>
#include <stdint.h>
#include "cmn/callrec.h"
#include "cmn/jsconsumer.h"
#include "cmn/jspub.h"
#include "cmn/metrics.h"
#include "cmn/resolver.h"
#include "config.h"
#include "http.h"
#include "sign.h"

/* Called once per call when the worker lets go of it (acked, NAK'd, terminated
 * or abandoned), i.e. when its max_inflight slot becomes free. Main thread. */
typedef void (*qw_slot_free_cb)(void *closure);

/* Services the calls use; all borrowed, owned by main.c, outliving the set. */
struct qw_call_env {
    const struct qw_config *cfg;
    struct cmn_jscons *cons;                  /* lease operations and confirmed acks */
    struct cmn_jspub *pub;                    /* dead letters */
    struct cmn_recs *recs;                    /* call records; NULL = call_records=false */
    const char *worker;                       /* this worker's name in the records (host-pid) */
    const struct cmn_cbrules *callback_rules; /* NULL or empty = any destination */
    const struct qw_signer *signer;           /* NULL or no key = unsigned callbacks */
    struct qw_http *http;
    struct cmn_resolver *resolver; /* NULL when gateway_invoke */
    struct cmn_metrics *metrics;
    qw_slot_free_cb on_slot_free;
    void *closure;
};

struct qw_calls;

/* Creates the empty set. `env` is copied (its pointers stay borrowed).
 * Returns NULL on allocation failure. Main thread. */
struct qw_calls *qw_calls_new(const struct qw_call_env *env);

/* Cancels every transfer and releases every held message WITHOUT settling it
 * (the server redelivers after ack_wait): for a fatal exit only; a drain uses
 * qw_calls_abort_all first. NULL allowed. Main thread. */
void qw_calls_free(struct qw_calls *calls);

/* Starts processing `*msg` at once: takes the message (sets `*msg` to NULL).
 * Never fails: an undecodable message is dead-lettered, then terminated.
 * Main thread. */
void qw_calls_start(struct qw_calls *calls, struct cmn_js_msg **msg);

/* Fires due timers (+WPI lease renewal, callback back-off) at monotonic time
 * `now_ms` and returns the monotonic time of the next one (INT64_MAX: none).
 * Never blocks except for the asynchronous lease sends. Main thread. */
int64_t qw_calls_run_timers(struct qw_calls *calls, int64_t now_ms);

/* Runs the NATS outcomes that arrived (ack/term confirmations, dead-letter
 * publishes, call-record reads and writes, cancel notices); call whenever
 * the loop wakes. Main thread, never blocks. */
void qw_calls_collect(struct qw_calls *calls);

/* Number of calls held (invoking, posting a callback or waiting to retry it,
 * or waiting for the server to confirm its settlement). */
size_t qw_calls_count(const struct qw_calls *calls);

/* Shutdown deadline: a call still invoking its function is aborted and NAK'd
 * with no delay so another replica starts it at once; a call whose function
 * already ran but whose callback is still pending gives up the callback (logged
 * and counted as a callback failure) and is settled as usual, so the function
 * never runs twice. Afterwards only calls awaiting the server's confirmation
 * of their settlement remain. Main thread. */
void qw_calls_abort_all(struct qw_calls *calls);

/* Releases a message the worker fetched but will not start (shutdown): NAK
 * with no delay, then frees it. Takes `*msg`. Main thread. */
void qw_calls_hand_back(struct qw_calls *calls, struct cmn_js_msg **msg);

/* Monotonic clock in milliseconds / nanoseconds. Any thread. */
int64_t qw_now_ms(void);
int64_t qw_now_ns(void);

#endif
