/* The asynchronous route, POST /async-function/<name>[/<path>][?q]: validates
 * the request, publishes it through cmn_jspub without blocking, and answers
 * 202 only once the stream stored it. Also reports the NATS events (logged,
 * exported as gateway_nats_ready; a fatal one stops the loop).
 * Thread: the loop thread that owns `base`, except gw_async_wake and
 * gw_async_on_event, which run on nats.c or libcommon threads and only
 * activate events. Nothing here blocks the loop. */
#ifndef GW_ASYNC_H
#define GW_ASYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmn/jspub.h"
#include "cmn/nats.h"
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

/* Longest delay of a delayed call (X-Delay-Seconds / X-Not-Before): 30 days. */
#define GW_ASYNC_MAX_DELAY_S 2592000

struct gw_records;
struct cmn_cbrules;

struct gw_async_config {
    struct event_base *base;       /* bound: must outlive the module */
    struct cmn_resolver *resolver; /* bound */
    struct cmn_metrics *metrics;   /* bound; NULL = no metrics */
    const char *default_ns;        /* copied */
    int64_t max_body_bytes;        /* larger bodies get 413 */
    int64_t publish_timeout_ms;    /* the publisher's decision deadline (for logs) */
    int max_chain_depth;           /* calls queued from callbacks in a row before 508 */
    const char *default_queue;     /* borrowed (lives as long as the module): faas_nats_channel; a
                                      com.openfaas.queue naming it is the default queue */
    const struct cmn_cbrules *callback_rules; /* bound; NULL = any destination */
    struct gw_records *records;               /* bound; NULL = call records off (no DELETE route);
                                                 see gw_async_set_records */
};

/* Creates the module (no NATS yet: see gw_async_set_js). `*out` is new
 * (gw_async_free). Errors: CMN_ERR_NOMEM. */
enum cmn_status gw_async_new(const struct gw_async_config *config, struct gw_async **out,
                             struct cmn_err *err);

/* Gives the module the NATS handle and the publisher (both bound), created
 * with wake = gw_async_wake and on_event = gw_async_on_event, closure = this
 * module. Loop thread, before the first request. */
void gw_async_set_nats(struct gw_async *as, struct cmn_nats *nats, struct cmn_jspub *pub);

/* Gives the module the call-record routes (bound) for DELETE
 * /async-function/<call id>. Loop thread, before the first request. */
void gw_async_set_records(struct gw_async *as, struct gw_records *records);

/* The publisher's wake callback: any thread; activates the completion event
 * so that the loop collects the outcomes. Never blocks. */
void gw_async_wake(void *closure);

/* cmn_nats_event_cb: runs on a nats.c or the keeper thread. Logs the event,
 * updates gateway_nats_ready; CMN_NATS_FATAL makes the loop stop (see
 * gw_async_fatal). */
void gw_async_on_event(enum cmn_nats_event event, const char *detail, void *closure);

/* True once a fatal NATS event stopped the loop: the program exits 1. */
/* The largest body the async route takes now (max_body_bytes, lowered to
 * what the connected NATS server accepts with the call's headers), bytes:
 * the server refuses a longer Content-Length before reading it. Loop thread. */
int64_t gw_async_body_limit(const struct gw_async *as);

bool gw_async_fatal(const struct gw_async *as);

/* Handles one request whose path starts with "/async-function/"; takes `r`
 * (it gets exactly one reply; a published call holds it until the publish
 * outcome, whatever the client did meanwhile): 202 once stored (with
 * X-Not-Before for a delayed call); 400 bad name / X-Callback-Url /
 * X-Call-Id / X-Delay-Seconds / X-Not-Before; 404 unknown function; DELETE
 * <call id> cancels (gw_records_cancel); 405 other methods;
 * 413 body too large (ours or the stream's limit); 503 with Retry-After when
 * NATS is unavailable, full, refuses, or did not confirm in time. */
void gw_async_handle(struct gw_async *as, struct gw_req *r, const struct gw_target *target);

/* Publishes still waiting for their outcome (also counted by gw_req_live). */
size_t gw_async_inflight(const struct gw_async *as);

/* Frees the module. Call after cmn_jspub_free (so no completion can arrive
 * any more) and before event_base_free; calls still pending are freed with
 * their requests by gw_req_teardown. NULL allowed. */
void gw_async_free(struct gw_async *as);

#endif
