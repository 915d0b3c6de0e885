/* The shared durable pull consumer: fetching messages, reading them, and the
 * lease operations on a fetched message (ack, +WPI, delayed NAK, term).
 *
 * Threads: cmn_jscons_fetch blocks (up to its wait) and runs on a dedicated
 * fetch thread, one caller at a time. Every lease operation returns at once
 * without touching the network on the caller's thread: the operation is queued
 * for the consumer's own thread, so an event loop never waits on NATS (not
 * even on nats.c's connection lock while it reconnects). Acks and terms are
 * confirmed: sent with a reply subject and sent again until the server
 * answers or the caller's deadline (the end of the lease) passes; their
 * outcome reaches the owner like publisher completions: `wake` from another
 * thread, then cmn_jscons_complete on the owner's thread runs the callback.
 * Message accessors are pure and run on any thread. */
#ifndef CMN_JSCONSUMER_H
#define CMN_JSCONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/codec.h"
#include "cmn/nats.h"
#include "cmn/status.h"

struct cmn_jscons;
struct cmn_js_msg;

struct cmn_jscons_config {
    const char *stream;  /* copied */
    const char *durable; /* copied */
    int64_t resend_ms;   /* unanswered ack/term sent again after this; 0 = 1000 */
    void (*wake)(void *closure);
    void *closure;
};

/* Creates the consumer side on `nats` (bound: free it first). `*out` is new.
 * Errors: CMN_ERR_NOMEM, CMN_ERR_NATS. */
enum cmn_status cmn_jscons_new(struct cmn_nats *nats, const struct cmn_jscons_config *config,
                               struct cmn_jscons **out, struct cmn_err *err);

/* Stops the operation thread and frees. While connected, acks awaiting their
 * confirmation get up to 0.5 s and queued fire-and-forget operations are sent
 * first (up to 0.5 s). NULL allowed. */
void cmn_jscons_free(struct cmn_jscons *cons);

/* Fetches up to `batch` messages: first those of earlier pulls that arrived
 * late, then one pull request (expiring after `wait_ms`) for the rest; it
 * returns when `batch` messages came or the pull ended. Writes new handles to
 * `msgs` and their number to `*count` (0 on timeout, CMN_OK). Each message is
 * leased from the moment the server sent it. (Our own pull: nats.c 3.4.1's
 * fetch overflows its array when late messages are queued.)
 * Errors: CMN_ERR_UNAVAILABLE (not ready: slept up to `wait_ms`),
 * CMN_ERR_NOT_FOUND (consumer or stream missing: reconciliation was asked
 * for), CMN_ERR_NATS. Blocks up to `wait_ms`; fetch thread only. */
enum cmn_status cmn_jscons_fetch(struct cmn_jscons *cons, int batch, int64_t wait_ms,
                                 struct cmn_js_msg **msgs, int *count, struct cmn_err *err);

/* Outcome of a confirmed operation (borrowed by the callback). */
struct cmn_jscons_result {
    void *token;
    enum cmn_status status; /* CMN_OK: the server confirmed; CMN_ERR_TIMEOUT: no answer by the
                               deadline (it may have landed; if not, the message is
                               delivered again); CMN_ERR_UNAVAILABLE: never sent (not
                               connected until the deadline), or void because the stream was
                               re-created since the fetch (its sequences start over: an ack
                               would hit another message) */
    int sends;
    const char *detail;
};
typedef void (*cmn_jscons_done_cb)(const struct cmn_jscons_result *result, void *closure);

/* Confirmed ack (done: the work queue deletes it) or term (never deliver
 * again) of `msg` (borrowed; may be freed right after the call), followed
 * until `deadline_ms` (monotonic ms). On CMN_OK exactly one completion
 * carries `token`. Errors: CMN_ERR_NOMEM, CMN_ERR_UNAVAILABLE (too many
 * awaiting confirmation), CMN_ERR_INVALID (no reply subject). */
enum cmn_status cmn_jscons_ack(struct cmn_jscons *cons, const struct cmn_js_msg *msg,
                               int64_t deadline_ms, void *token, struct cmn_err *err);
enum cmn_status cmn_jscons_term(struct cmn_jscons *cons, const struct cmn_js_msg *msg,
                                int64_t deadline_ms, void *token, struct cmn_err *err);

/* Unconfirmed ack, for owners whose own store is the commit point (the
 * worker with call records: the final record write, stored before this, is
 * what says the call is done). Published on the caller's thread at once, no
 * thread hop and no reply: a lost one costs one redelivery, which the record
 * settles without a run. Nothing is sent for a message of an earlier epoch.
 * Errors: CMN_ERR_INVALID (no reply subject), CMN_ERR_UNAVAILABLE (nats.c did
 * not take it: connection closed). Any thread; never blocks (buffered). */
enum cmn_status cmn_jscons_ack_nowait(struct cmn_jscons *cons, const struct cmn_js_msg *msg,
                                      struct cmn_err *err);

/* Fire-and-forget: +WPI, "in progress" (reset the ack timer), and NAK
 * (redeliver after `delay_ms`, 0 = now). Nothing is sent for a message of an
 * earlier epoch (stream re-created since). Errors: CMN_ERR_NOMEM,
 * CMN_ERR_INVALID. */
enum cmn_status cmn_jscons_in_progress(struct cmn_jscons *cons, const struct cmn_js_msg *msg,
                                       struct cmn_err *err);
enum cmn_status cmn_jscons_nak(struct cmn_jscons *cons, const struct cmn_js_msg *msg,
                               int64_t delay_ms, struct cmn_err *err);

/* Runs `cb` for every confirmation outcome waiting; returns how many. Owner's
 * thread. */
size_t cmn_jscons_complete(struct cmn_jscons *cons, cmn_jscons_done_cb cb, void *closure);

/* ---- fetched messages --------------------------------------------------- */

/* Decodes the wire-format metadata of `msg` into `call` (initialised, empty).
 * Errors as cmn_call_decode. */
enum cmn_status cmn_js_msg_decode(const struct cmn_js_msg *msg, struct cmn_call *call,
                                  struct cmn_err *err);

/* Body bytes (borrowed, valid while `msg` lives) and length. */
const void *cmn_js_msg_body(const struct cmn_js_msg *msg, size_t *len);

/* Delivery metadata of a fetched message, read with one parse. */
struct cmn_js_msg_info {
    uint64_t delivered; /* deliveries so far, 1 on the first (1 when unknown) */
    uint64_t seq;       /* stream sequence (0 when unknown) */
    int64_t stored_ns;  /* when the stream stored it, ns since the epoch (0 when
                           unknown); with seq it identifies one stored message
                           even across a stream re-created on a fresh server */
};

/* Fills `out` from `msg` (borrowed). */
void cmn_js_msg_info(const struct cmn_js_msg *msg, struct cmn_js_msg_info *out);

/* Stream sequence of `msg`, 0 when unknown. */
uint64_t cmn_js_msg_seq(const struct cmn_js_msg *msg);

/* Frees a fetched message handle (does not ack). NULL allowed. */
void cmn_js_msg_free(struct cmn_js_msg *msg);

#endif
