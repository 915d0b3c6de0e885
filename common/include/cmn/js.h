/* NATS JetStream wrapper: the only module that includes <nats/nats.h>.
 * Owns the connection, the JetStream context, the work-queue stream, the
 * dead-letter stream, the shared durable pull consumer, asynchronous publishing
 * with per-call completion, and fetched-message operations (ack, +WIP, delayed
 * NAK, term). nats.c status codes are translated to enum cmn_status here, with
 * the natsStatus kept in err->code.
 *
 * Threads: every function may be called from any thread unless stated.
 * Callbacks (cmn_js_event_cb, cmn_js_publish_cb) run on nats.c's own threads:
 * never on the caller's thread, so a libevent or curl program must hand the
 * result over to its loop (the gateway uses a locked queue + event_active). */
#ifndef CMN_JS_H
#define CMN_JS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/codec.h"
#include "cmn/headers.h"
#include "cmn/status.h"

struct cmn_js;
struct cmn_js_msg;

enum cmn_js_event {
    CMN_JS_READY,        /* connected and streams (and consumer) ensured */
    CMN_JS_DISCONNECTED, /* connection lost; nats.c is reconnecting */
    CMN_JS_CLOSED,       /* reconnect budget exhausted or closed: the handle is dead */
};

/* Connection events. Runs on a nats.c or js-setup thread; must not block long. */
typedef void (*cmn_js_event_cb)(enum cmn_js_event event, const char *detail, void *closure);

/* Outcome of one asynchronous publish: runs exactly once per successful
 * cmn_js_publish_async call, on a nats.c thread or on the wrapper's own
 * deadline thread (timeouts), never on the caller's thread. `status`: CMN_OK
 * (stored; `duplicate` true when the stream already had this Nats-Msg-Id),
 * CMN_ERR_TIMEOUT (no ack within publish_timeout_ms, detected with ~50 ms
 * granularity: the message may or may not be stored; a late ack is dropped),
 * CMN_ERR_NATS (rejected, reason in `detail`). `token` is the caller's pointer
 * given to cmn_js_publish_async. */
typedef void (*cmn_js_publish_cb)(void *token, enum cmn_status status, bool duplicate,
                                  const char *detail, void *closure);

struct cmn_js_config {
    const char *url;                /* "nats://127.0.0.1:4222"; comma list allowed */
    const char *client_name;        /* shown in NATS monitoring */
    const char *stream;             /* stream name and subject, "faas-request" */
    int64_t max_msg_bytes;          /* stream MaxMsgSize when created; 0 = server limit */
    int64_t duplicate_window_ms;    /* stream Duplicates window (120000) */
    const char *dead_letter_stream; /* NULL = none; else created as a limits stream */
    const char *durable;            /* NULL = no consumer (gateway); else pull consumer name */
    int64_t ack_wait_ms;            /* consumer AckWait, when durable is set */
    int max_reconnect;              /* -1 = forever */
    int64_t reconnect_wait_ms;
    int64_t publish_timeout_ms;   /* ack deadline of async publishes */
    int max_pending_publishes;    /* async publishes awaiting acks before refusal */
    cmn_js_event_cb on_event;     /* may be NULL */
    cmn_js_publish_cb on_publish; /* required to use cmn_js_publish_async */
    void *closure;                /* passed to both callbacks */
};

/* Creates the handle and starts connecting. Does not wait for the server:
 * if it is not reachable, nats.c keeps retrying in the background and
 * CMN_JS_READY is reported once it is connected and the streams (and the
 * consumer) exist. Strings in `config` are copied. On success `*out` is a new
 * handle (cmn_js_free). Errors: CMN_ERR_INVALID (bad URL/config), CMN_ERR_NATS,
 * CMN_ERR_NOMEM. Blocks for at most a short connect attempt. */
enum cmn_status cmn_js_open(const struct cmn_js_config *config, struct cmn_js **out,
                            struct cmn_err *err);

/* Closes the connection, waits for the setup thread, frees everything. Pending
 * publish callbacks are not run after this returns. NULL allowed. Do not call
 * from a cmn_js callback. Blocks up to a few seconds (flush). */
void cmn_js_free(struct cmn_js *js);

/* True when connected and the stream is known to exist. Never blocks. */
bool cmn_js_ready(const struct cmn_js *js);

/* Largest message the server accepts (bytes), 0 when not connected yet. */
int64_t cmn_js_max_payload(const struct cmn_js *js);

/* Publishes one call asynchronously to the stream: `headers` (borrowed, from
 * cmn_call_encode, must include Nats-Msg-Id) and `body` (borrowed, copied,
 * `body_len` bytes). On CMN_OK the library took a copy and on_publish will run
 * exactly once with `token`; on any error it never runs. Errors:
 * CMN_ERR_UNAVAILABLE (not connected / not ready: answer 503 at once),
 * CMN_ERR_TOO_LARGE (over the server's max payload), CMN_ERR_NATS, CMN_ERR_NOMEM.
 * Never waits for the server; may block briefly only when max_pending_publishes
 * is reached (then fails with CMN_ERR_UNAVAILABLE after ~0 ms). */
enum cmn_status cmn_js_publish_async(struct cmn_js *js, const struct cmn_headers *headers,
                                     const void *body, size_t body_len, void *token,
                                     struct cmn_err *err);

/* Same as cmn_js_publish_async, but encodes `call` (borrowed; wire format
 * of cmn/codec.h) straight into the NATS message, without an intermediate
 * header list. Additional error: CMN_ERR_INVALID when the call cannot be
 * encoded (see cmn_call_encode). Same threads, blocking and callback rule. */
enum cmn_status cmn_js_publish_call_async(struct cmn_js *js, const struct cmn_call *call,
                                          const void *body, size_t body_len, void *token,
                                          struct cmn_err *err);

/* Fetches up to `batch` messages from the durable consumer, waiting at most
 * `wait_ms` for the first one. Writes up to `batch` new handles to `msgs` and
 * their number to `*count` (0 on timeout, which returns CMN_OK). Each message
 * is leased from the moment the server sends it: start it at once. Errors:
 * CMN_ERR_UNAVAILABLE (not ready; the call slept up to `wait_ms`), CMN_ERR_NATS.
 * Blocks up to `wait_ms`: call from a dedicated thread, one caller at a time. */
enum cmn_status cmn_js_fetch(struct cmn_js *js, int batch, int64_t wait_ms,
                             struct cmn_js_msg **msgs, int *count, struct cmn_err *err);

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

/* Fills `out` from `msg` (borrowed). Any thread, never blocks. */
void cmn_js_msg_info(const struct cmn_js_msg *msg, struct cmn_js_msg_info *out);

/* Shorthands for one field of cmn_js_msg_info. */
uint64_t cmn_js_msg_delivered(const struct cmn_js_msg *msg);
uint64_t cmn_js_msg_seq(const struct cmn_js_msg *msg);

/* Lease operations, all asynchronous sends (buffered while reconnecting):
 * ack = done, delete from the work queue; in_progress = reset the ack timer
 * (+WIP); nak_delay = redeliver after `delay_ms`; term = never redeliver.
 * Return CMN_OK or CMN_ERR_NATS (e.g. connection closed). */
enum cmn_status cmn_js_msg_ack(struct cmn_js_msg *msg, struct cmn_err *err);
enum cmn_status cmn_js_msg_in_progress(struct cmn_js_msg *msg, struct cmn_err *err);
enum cmn_status cmn_js_msg_nak_delay(struct cmn_js_msg *msg, int64_t delay_ms, struct cmn_err *err);
enum cmn_status cmn_js_msg_term(struct cmn_js_msg *msg, struct cmn_err *err);

/* Copies `msg` (all headers and body) to the dead-letter stream with
 * Faas-Dead-Reason `reason`, Faas-Last-Status `last_status` (0 = none) and
 * Faas-Attempts `attempts`; Nats-Msg-Id is moved to Faas-Call-Id so that a
 * re-drive is not de-duplicated away. Synchronous: blocks until the stream
 * acknowledges (up to publish_timeout_ms). CMN_ERR_INVALID when no dead-letter
 * stream is configured. Then the caller terminates the original. */
enum cmn_status cmn_js_dead_letter(struct cmn_js *js, const struct cmn_js_msg *msg,
                                   const char *reason, int last_status, int attempts,
                                   struct cmn_err *err);

/* Frees a fetched message handle (does not ack). NULL allowed. */
void cmn_js_msg_free(struct cmn_js_msg *msg);

/* Number of messages waiting in the consumer (num_pending), -1 if unknown.
 * Blocking request to the server (up to publish_timeout_ms). */
int64_t cmn_js_consumer_pending(struct cmn_js *js);

#endif
