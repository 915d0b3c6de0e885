/* Call records: one JSON record per accepted call, keyed by call id, in a
 * JetStream key-value bucket (stream KV_<bucket>, subject $KV.<bucket>.<id>,
 * history 1, TTL call_record_ttl), the one place that knows a call's state.
 *
 * Who writes what (docs/behaviour.md, "Call records"):
 * - nobody at submission: while a call waits in the work stream (published on
 *   "<stream>.<call id>") its record is derived from that message (`queued`,
 *   or `scheduled` before its Faas-Not-Before), so a 202 costs no second
 *   write;
 * - the worker claims each attempt with a compare-and-set (expected revision:
 *   0 for a record that does not exist yet) and completes it with another; a
 *   worker whose compare-and-set fails lost the call and drops its result;
 * - cancel (gateway) is a compare-and-set to `cancelled`, followed by a plain
 *   NATS notice on "<bucket>.cancel" so the worker running it aborts at once;
 * - a re-drive (gateway) resets the record to `queued`.
 *
 * Two interfaces on one data model:
 * - cmn_recs: asynchronous get and compare-and-set put for an event loop (the
 *   worker). Nothing waits for the server on the caller's thread; outcomes
 *   come back like publisher completions (`wake` from another thread, then
 *   cmn_recs_complete on the owner's thread).
 * - cmn_recq: blocking queries and multi-step operations (status lookup,
 *   cancel, listings, dead-letter re-drive) for a thread that may wait (the
 *   gateway's records thread), never for an event loop. */
#ifndef CMN_CALLREC_H
#define CMN_CALLREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/callid.h"
#include "cmn/nats.h"
#include "cmn/fnpolicy.h"
#include "cmn/status.h"

enum cmn_call_state {
    CMN_CALL_QUEUED,        /* waiting in the work stream */
    CMN_CALL_SCHEDULED,     /* waiting for its not-before time */
    CMN_CALL_RUNNING,       /* claimed by a worker: invoking or posting the callback */
    CMN_CALL_RETRYING,      /* an attempt failed with a retryable status: waits for the next */
    CMN_CALL_SUCCEEDED,     /* final: the function answered 2xx */
    CMN_CALL_FAILED,        /* final: the function answered a non-retryable error */
    CMN_CALL_CANCELLED,     /* final: cancelled before it finished */
    CMN_CALL_EXPIRED,       /* final: older than max_call_age, not started again */
    CMN_CALL_DEAD_LETTERED, /* final: copied to the dead-letter stream */
    CMN_CALL_STATE_COUNT
};

/* "queued", "scheduled", ...; never NULL. */
const char *cmn_call_state_name(enum cmn_call_state state);

/* Parses a state name; false when unknown. */
bool cmn_call_state_parse(const char *name, enum cmn_call_state *out);

/* True for succeeded, failed, cancelled, expired and dead-lettered. */
bool cmn_call_state_final(enum cmn_call_state state);

enum cmn_callback_state {
    CMN_CB_NONE,    /* no X-Callback-Url */
    CMN_CB_PENDING, /* asked for, not posted yet */
    CMN_CB_POSTED,  /* the receiver answered 2xx */
    CMN_CB_FAILED,  /* every attempt failed */
};

#define CMN_REC_FUNCTION_MAX 256
#define CMN_REC_WORKER_MAX 96
#define CMN_REC_REASON_MAX 256
#define CMN_REC_WRITE_ID_MAX 64

/* One record. Times are wall-clock ms since the Unix epoch, 0 = not yet. */
struct cmn_rec {
    char call_id[CMN_CALLID_MAX];
    char function[CMN_REC_FUNCTION_MAX]; /* as submitted: "name" or "name.namespace" */
    enum cmn_call_state state;
    int attempt;  /* invocations started so far */
    int status;   /* the last function status (502/504 for transport/timeout), 0 = none */
    int redriven; /* times re-driven from the dead-letter stream */
    int64_t submitted_ms;
    int64_t not_before_ms;  /* delayed call: not run before, 0 = none */
    int64_t started_ms;     /* the first invocation */
    int64_t finished_ms;    /* reached a final state */
    int64_t lease_until_ms; /* running: its worker's lease; another worker may take over after */
    double duration_s;      /* the last invocation */
    enum cmn_callback_state callback;
    int callback_status;                 /* the receiver's last status, 0 = none */
    char worker[CMN_REC_WORKER_MAX];     /* the worker holding or last holding it */
    char reason[CMN_REC_REASON_MAX];     /* cancelled / expired / dead-lettered: why */
    char write_id[CMN_REC_WRITE_ID_MAX]; /* unique per write: tells a writer its own write */
    uint64_t revision; /* KV revision (stream sequence) when read; 0 = derived, not stored */
};

/* Clears `rec` to an empty record (state queued, no callback). */
void cmn_rec_init(struct cmn_rec *rec);

/* The record as one JSON object (malloc'd NUL-terminated text, caller frees;
 * NULL when out of memory). `with_revision` adds "revision" (API answers;
 * the stored form has none). Any thread. */
char *cmn_rec_to_json(const struct cmn_rec *rec, bool with_revision);

/* Parses a stored record (`len` bytes) into `out`. Errors: CMN_ERR_INVALID.
 * Any thread. */
enum cmn_status cmn_rec_from_json(const void *data, size_t len, struct cmn_rec *out,
                                  struct cmn_err *err);

/* "<bucket>.cancel" into `buf`: the subject of cancel notices (payload: the
 * call id). Returns `buf`. */
char *cmn_recs_cancel_subject(const char *bucket, char *buf, size_t size);

/* ---- asynchronous store (event loops) ---------------------------------- */

struct cmn_recs;

struct cmn_recs_config {
    const char *bucket;          /* copied */
    int64_t timeout_ms;          /* each operation's deadline; 0 = 5000 */
    bool watch_cancels;          /* subscribe to cancel notices (cmn_recs_cancels) */
    void (*wake)(void *closure); /* any thread: outcomes or notices are waiting */
    void *closure;
};

/* Creates the store on `nats` (bound: free the store first). `*out` is new.
 * Errors: CMN_ERR_INVALID (bucket name), CMN_ERR_NOMEM, CMN_ERR_NATS. */
enum cmn_status cmn_recs_new(struct cmn_nats *nats, const struct cmn_recs_config *config,
                             struct cmn_recs **out, struct cmn_err *err);

/* Stops and frees; outcomes not collected are dropped. NULL allowed. */
void cmn_recs_free(struct cmn_recs *recs);

/* Expected revision for cmn_recs_put: write whatever is stored. */
#define CMN_REC_ANY UINT64_MAX

/* Reads the record of `call_id`. On CMN_OK exactly one outcome carries
 * `token`: CMN_OK with `rec`, CMN_ERR_NOT_FOUND, CMN_ERR_TIMEOUT,
 * CMN_ERR_UNAVAILABLE or CMN_ERR_NATS. Errors: CMN_ERR_INVALID,
 * CMN_ERR_NOMEM, CMN_ERR_UNAVAILABLE (too many operations pending). */
enum cmn_status cmn_recs_get(struct cmn_recs *recs, const char *call_id, void *token,
                             struct cmn_err *err);

/* Writes `rec` (borrowed; its call id is the key) if the stored revision is
 * `expected` (0: no record yet; CMN_REC_ANY: any). On CMN_OK exactly one
 * outcome carries `token`: CMN_OK with the new `revision`, CMN_ERR_CONFLICT
 * (the record changed or exists: read it again; when `sends` > 1 the
 * conflict may be our own earlier copy, which `write_id` tells), or the
 * errors of cmn_recs_get. Errors as cmn_recs_get. */
enum cmn_status cmn_recs_put(struct cmn_recs *recs, const struct cmn_rec *rec, uint64_t expected,
                             void *token, struct cmn_err *err);

/* Outcome of one operation (borrowed by the callback). */
struct cmn_recs_result {
    void *token;
    enum cmn_status status;
    const struct cmn_rec *rec; /* get with CMN_OK; else NULL */
    uint64_t revision;         /* put with CMN_OK: the new revision */
    bool full;                 /* CMN_ERR_UNAVAILABLE: JetStream storage is full */
    int sends;
    const char *detail;
};
typedef void (*cmn_recs_done_cb)(const struct cmn_recs_result *result, void *closure);

/* Runs `cb` for every outcome waiting; returns how many. Owner's thread. */
size_t cmn_recs_complete(struct cmn_recs *recs, cmn_recs_done_cb cb, void *closure);

/* Runs `cb` with the call id of every cancel notice received since the last
 * call (watch_cancels); returns how many. Owner's thread. */
size_t cmn_recs_cancels(struct cmn_recs *recs, void (*cb)(const char *call_id, void *closure),
                        void *closure);

/* ---- blocking queries (a thread that may wait, never an event loop) ------ */

struct cmn_recq;

/* Writes up to `max` names of further work-queue streams (per-function
 * queues, cmn/fnpolicy.h) into `out`; returns how many. Called on the
 * querying thread. */
typedef size_t (*cmn_recq_queues_fn)(void *arg, char (*out)[CMN_QUEUE_MAX], size_t max);

struct cmn_recq_config {
    const char *bucket;             /* copied */
    const char *stream;             /* work-queue stream (calls on "<stream>.<id>"); copied */
    const char *dead_letter_stream; /* copied; NULL = none */
    int64_t timeout_ms;             /* each NATS request; 0 = 2000 */
    cmn_recq_queues_fn queues;      /* NULL = `stream` only; waiting calls are looked for in
                                       `stream`, then in each of these */
    void *queues_arg;
};

/* Errors: CMN_ERR_INVALID, CMN_ERR_NOMEM. `nats` is bound. */
enum cmn_status cmn_recq_new(struct cmn_nats *nats, const struct cmn_recq_config *config,
                             struct cmn_recq **out, struct cmn_err *err);
void cmn_recq_free(struct cmn_recq *q);

/* The record of `call_id` into `out`: the stored one, else the one derived
 * from the call still waiting in the work stream (revision 0). Errors:
 * CMN_ERR_NOT_FOUND (unknown or expired), CMN_ERR_TIMEOUT,
 * CMN_ERR_UNAVAILABLE, CMN_ERR_NATS. Blocks up to a few request timeouts. */
enum cmn_status cmn_recq_lookup(struct cmn_recq *q, const char *call_id, struct cmn_rec *out,
                                struct cmn_err *err);

/* Cancels `call_id`: a compare-and-set of its record to `cancelled` (reason
 * `reason`), then a cancel notice. `out` receives the record as it now is.
 * CMN_OK: cancelled now (a queued call never runs; a running one is aborted
 * by its worker). CMN_ERR_CONFLICT: it was final already (`out` says how).
 * Other errors as cmn_recq_lookup. Blocks. */
enum cmn_status cmn_recq_cancel(struct cmn_recq *q, const char *call_id, const char *reason,
                                struct cmn_rec *out, struct cmn_err *err);

/* Newest records first (by submission), at most `limit` (1..1000), the
 * calls still waiting in the work streams among them (their derived
 * record: queued or scheduled), filtered by function
 * (NULL/"" = any; "name" matches "name" and "name.<ns>") and state (-1 =
 * any), as a JSON array text (malloc'd) in `*json`. Blocks: reads the bucket
 * and each work stream backwards, at most 20 × limit messages each. */
enum cmn_status cmn_recq_list(struct cmn_recq *q, const char *function, int state, int limit,
                              char **json, struct cmn_err *err);

/* Dead letters, oldest first, at most `limit` (1..1000): JSON array of
 * {call_id, function, reason, last_status, attempts, age_seconds,
 * dead_lettered, seq} in `*json` (malloc'd). Errors: CMN_ERR_NOT_FOUND (no
 * dead-letter stream configured), NATS errors. Blocks. */
enum cmn_status cmn_recq_dead_letters(struct cmn_recq *q, int limit, char **json,
                                      struct cmn_err *err);

/* Puts the dead letter of `call_id` back into its work stream (its
 * Faas-Queue, else `stream`) under the same
 * call id (its record reset to `queued`, `redriven` + 1), then removes the
 * dead letter. Errors: CMN_ERR_NOT_FOUND (no such dead letter), NATS errors
 * (nothing removed). Blocks. */
enum cmn_status cmn_recq_redrive(struct cmn_recq *q, const char *call_id, struct cmn_err *err);

/* Removes the dead letter of `call_id`. Errors: CMN_ERR_NOT_FOUND, NATS
 * errors. Blocks. */
enum cmn_status cmn_recq_drop_dead_letter(struct cmn_recq *q, const char *call_id,
                                          struct cmn_err *err);

#endif
