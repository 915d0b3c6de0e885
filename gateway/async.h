/* The asynchronous route, POST /async-function/<name>[/<path>][?q]: validates
 * the request, publishes it to JetStream without blocking, and answers 202 only
 * once the stream acknowledged it. Owns the hand-off from nats.c's threads to
 * the event loop (a locked completion queue + event_active) and the NATS
 * connection events (logged, exported as gateway_nats_ready).
 * Thread: the loop thread that owns `base`, except the two callbacks below,
 * which run on nats.c threads. Nothing here blocks the loop. */
#ifndef GW_ASYNC_H
#define GW_ASYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/js.h"
#include "cmn/status.h"
#include "request.h"

struct event_base;
struct evhttp_request;
struct cmn_resolver;
struct cmn_metrics;
struct gw_async;

/* Bytes reserved for the NATS headers of a queued call (the stream's
 * MaxMsgSize is max_body_bytes + this). */
#define GW_ASYNC_HEADER_ROOM 65536

struct gw_async_config {
    struct event_base *base;       /* bound: must outlive the module */
    struct cmn_resolver *resolver; /* bound */
    struct cmn_metrics *metrics;   /* bound; NULL = no metrics */
    const char *default_ns;        /* copied */
    int64_t max_body_bytes;        /* larger bodies get 413 */
    int64_t publish_timeout_ms;    /* the js publish timeout; the safety timer adds 1 s */
};

/* Creates the module (no NATS yet: see gw_async_set_js). `*out` is new
 * (gw_async_free). Errors: CMN_ERR_NOMEM. */
enum cmn_status gw_async_new(const struct gw_async_config *config, struct gw_async **out,
                             struct cmn_err *err);

/* Gives the module the JetStream handle (bound; opened with
 * on_publish = gw_async_on_publish, on_event = gw_async_on_event and
 * closure = this module). Loop thread, before the first request. */
void gw_async_set_js(struct gw_async *as, struct cmn_js *js);

/* cmn_js_publish_cb: runs on a nats.c thread (or cmn_js's deadline thread for
 * timeouts), never on the loop thread. Queues the outcome for `token`
 * (a pending call) and wakes the loop. Never blocks beyond a short mutex. */
void gw_async_on_publish(void *token, enum cmn_status status, bool duplicate, const char *detail,
                         void *closure);

/* cmn_js_event_cb: runs on a nats.c thread. Logs the event and updates
 * gateway_nats_ready. */
void gw_async_on_event(enum cmn_js_event event, const char *detail, void *closure);

/* Handles one request whose path starts with "/async-function/". `req`
 * (borrowed from evhttp) gets exactly one reply: 202 after the publish ack;
 * 400 bad name / X-Callback-Url / X-Call-Id; 404 unknown function; 405 other
 * methods; 413 body too large; 503 NATS unavailable or no ack in time. */
void gw_async_handle(struct gw_async *as, struct evhttp_request *req,
                     const struct gw_target *target);

/* Publishes still waiting for their outcome (for draining). */
size_t gw_async_inflight(const struct gw_async *as);

/* Drain deadline passed: replies 503 to every client still waiting. The calls
 * stay until their publish callback (or gw_async_free). */
void gw_async_abort_all(struct gw_async *as);

/* Frees the module and every remaining call. Call after cmn_js_free (so no
 * callback can arrive any more) and before event_base_free. NULL allowed. */
void gw_async_free(struct gw_async *as);

#endif
