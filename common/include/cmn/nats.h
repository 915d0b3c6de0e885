/* NATS connection and JetStream set-up: the connection to a server list, the
 * keeper thread that creates and reconciles the work-queue stream, the
 * dead-letter stream, the call-record bucket and the shared durable consumer, and the queue-depth
 * figures it refreshes every few seconds.
 *
 * Threads: cmn_nats_open/free on the program's main thread; everything else
 * from any thread, never blocking. The event callback runs on a nats.c thread
 * or on the keeper thread (and once on the caller's thread inside
 * cmn_nats_open, for a first connect attempt that failed); it must only log,
 * count and set flags. Publishing lives in cmn/jspub.h, fetching and lease
 * operations in cmn/jsconsumer.h; both are built on a cmn_nats handle.
 *
 * Reconciliation runs at start, after every (re)connect and whenever a module
 * reports "stream not found", "consumer not found" or "no responders"
 * (cmn_nats_kick), and when the periodic refresh finds a stream or consumer
 * missing. Editable differences are updated (CMN_NATS_CHANGED, one event per
 * object listing field old -> new); a difference the server cannot edit
 * (retention, storage, ack or deliver policy, a push consumer) is reported as
 * CMN_NATS_FATAL naming the field and the remedy, and nothing is changed. A
 * stream is never deleted. */
#ifndef CMN_NATS_H
#define CMN_NATS_H

#include <stdbool.h>
#include <stdint.h>

#include "cmn/fnpolicy.h"
#include "cmn/status.h"

struct cmn_nats;

enum cmn_nats_event {
    CMN_NATS_READY,          /* connected; streams (and the consumer) exist as configured */
    CMN_NATS_NOT_READY,      /* connected, but set-up failed or an object is missing: retrying */
    CMN_NATS_DISCONNECTED,   /* connection lost; nats.c is reconnecting */
    CMN_NATS_CONNECT_FAILED, /* one pass over every server in the list failed */
    CMN_NATS_CHANGED,        /* reconciliation edited a stream or the consumer */
    CMN_NATS_FATAL,          /* a non-editable difference: the program must exit */
    CMN_NATS_CLOSED,         /* reconnect budget exhausted: the handle is dead */
};

/* Returns "ready", "not-ready", ... for logs. Never NULL. */
const char *cmn_nats_event_name(enum cmn_nats_event event);

/* Connection and set-up events. `detail` is a one-line text (borrowed, valid
 * during the call). Runs on a nats.c or the keeper thread. */
typedef void (*cmn_nats_event_cb)(enum cmn_nats_event event, const char *detail, void *closure);

struct cmn_nats_config {
    const char *url;                /* one URL or a comma-separated list of servers */
    const char *client_name;        /* shown in NATS monitoring */
    const char *stream;             /* work-queue stream name = its subject */
    int64_t max_msg_bytes;          /* stream max_msg_size; 0 = server limit */
    int64_t duplicate_window_ms;    /* stream duplicate window */
    int replicas;                   /* streams and consumer, 1..5 */
    const char *dead_letter_stream; /* NULL = none; a limits stream */
    const char *records_bucket;     /* call-record KV bucket; NULL = none */
    int64_t record_ttl_ms;          /* its records' lifetime (records_bucket) */
    const char *durable;            /* consumer name; NULL = none */
    bool manage_consumer;           /* true: create and reconcile it; false: only read its state */
    int64_t ack_wait_ms;            /* consumer ack wait (manage_consumer) */
    int64_t max_ack_pending;        /* consumer max ack pending, -1 = unlimited */
    int max_reconnect;              /* reconnect attempts, -1 = forever */
    int64_t reconnect_wait_ms;      /* pause between passes over the server list */
    int64_t ping_interval_ms;       /* a silent server is dropped after 2 missed pings */
    int64_t refresh_interval_ms;    /* stream/consumer state refresh; 0 = 2000 */
    int64_t request_timeout_ms;     /* JetStream API requests of the keeper; 0 = 2000 */
    bool send_asap;                 /* write every publish at once (latency) instead of letting
                                       nats.c's flusher batch them after 1 ms (throughput) */
    cmn_nats_event_cb on_event;     /* may be NULL */
    void *closure;
};

/* Queue state read by the keeper thread (refresh_interval_ms). A field is -1
 * until it was read once, or when its object does not exist; while NATS is
 * unreachable the last values read are kept. */
struct cmn_nats_stats {
    int64_t stream_messages;      /* messages stored in the work-queue stream */
    int64_t stream_bytes;         /* bytes stored in the work-queue stream */
    int64_t pending;              /* consumer: messages not yet delivered */
    int64_t ack_pending;          /* consumer: delivered, not yet acknowledged */
    int64_t redelivered;          /* consumer: delivered more than once, unacknowledged */
    int64_t waiting;              /* consumer: pull requests waiting */
    int64_t dead_letter_messages; /* messages in the dead-letter stream */
};

/* Creates the handle and starts connecting in the background (nats.c keeps
 * trying every server of the list; each failed pass is reported as
 * CMN_NATS_CONNECT_FAILED). Strings in `config` are copied. `*out` is new
 * (cmn_nats_free). Errors: CMN_ERR_INVALID (empty or malformed server list,
 * replicas out of range), CMN_ERR_NATS, CMN_ERR_NOMEM. Blocks for at most one
 * connect attempt per listed server (2 s each). */
enum cmn_status cmn_nats_open(const struct cmn_nats_config *config, struct cmn_nats **out,
                              struct cmn_err *err);

/* Closes the connection, stops the keeper thread, frees the handle. Free the
 * publishers and consumers built on it first. NULL allowed. Blocks up to a
 * few seconds while nats.c closes. */
void cmn_nats_free(struct cmn_nats *nats);

/* True while connected and the streams (and consumer) are known to exist. */
bool cmn_nats_ready(const struct cmn_nats *nats);

/* True while the TCP connection to some server is up. */
bool cmn_nats_connected(const struct cmn_nats *nats);

/* Milliseconds since the connection was lost (or since cmn_nats_open when it
 * never connected); 0 while connected. */
int64_t cmn_nats_down_ms(const struct cmn_nats *nats);

/* Largest message the connected server accepts (bytes), 0 when unknown. */
int64_t cmn_nats_max_payload(const struct cmn_nats *nats);

/* Asks the keeper thread to reconcile now, because `why` (copied into the
 * NOT_READY event) showed something missing. Readiness is false until the
 * reconciliation succeeds. Any thread, never blocks. */
void cmn_nats_kick(struct cmn_nats *nats, const char *why);

/* Most further work-queue streams one handle keeps (cmn_nats_add_stream). */
#define CMN_NATS_MAX_EXTRA_STREAMS 32

/* Adds work-queue stream `name` (a per-function queue, cmn/fnpolicy.h; same
 * settings as the configured stream, calls on "<name>.<call id>") to what the
 * keeper creates and reconciles; a new name kicks a reconciliation. A queue's
 * stream never makes the handle not ready: one that fails for a passing
 * reason is tried again every second, one the server cannot give (a stream
 * of that name with other settings, subjects another stream holds) is
 * refused for the handle's life and reported as CMN_NATS_CHANGED. Returns
 * true when `name` is kept (or known); false, with the reason in `why`
 * (`why_size` bytes, may be NULL), when it is not a valid queue name, is
 * reserved (cmn_queue_name_reserved with the dead-letter stream), was
 * refused, or CMN_NATS_MAX_EXTRA_STREAMS are taken. Any thread, never blocks
 * (a mutex and a scan of at most 64 names). */
bool cmn_nats_add_stream(struct cmn_nats *nats, const char *name, char *why, size_t why_size);

/* Copies the latest queue state into `out`. Any thread, never blocks. */
void cmn_nats_stats_get(const struct cmn_nats *nats, struct cmn_nats_stats *out);

/* Splits a comma-separated server list into at most `max` trimmed entries
 * written into `buf` (size `size`, NUL-separated) with pointers in `items`.
 * Returns the number of servers, or -1 when an entry is empty or the list is
 * too long. Pure function, exposed for tests. */
int cmn_nats_split_servers(const char *list, char *buf, size_t size, const char **items, int max);

#endif
