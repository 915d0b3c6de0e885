/* The call-record routes of the gateway: status by id and cancel
 * (GET/DELETE /async-calls/<id>, DELETE /async-function/<id>), the operators'
 * listing (GET /system/async-calls) and the dead letters (GET
 * /system/dead-letters, POST /system/dead-letters/<id>/redrive, DELETE
 * /system/dead-letters/<id>).
 *
 * Every route needs one or more NATS round trips, so it is a job for the
 * records thread (blocking cmn_recq queries); the request is held meanwhile
 * and answered on the loop when the job is done. The event loop never waits.
 * Thread: everything here on the loop thread, except the records thread's
 * own work. */
#ifndef GW_RECORDS_H
#define GW_RECORDS_H

#include <stdint.h>

#include "cmn/callrec.h"
#include "cmn/status.h"
#include "request.h"

struct event_base;
struct cmn_nats;
struct gw_records;

struct gw_records_config {
    struct event_base *base;        /* bound */
    struct cmn_nats *nats;          /* bound; NULL = records off (every route 404s... see below) */
    const char *bucket;             /* copied */
    const char *stream;             /* work-queue stream; copied */
    const char *dead_letter_stream; /* copied; NULL = none */
    int max_jobs;                   /* queued jobs before new ones get 503 */
    cmn_recq_queues_fn queues;      /* per-function queues to look in too; NULL = none */
    void *queues_arg;
};

/* Creates the module and starts its thread. With `nats` NULL (call records
 * off) the routes answer 404 with a reason. Errors: CMN_ERR_NOMEM,
 * CMN_ERR_INVALID, CMN_ERR_IO (thread). */
enum cmn_status gw_records_new(const struct gw_records_config *config, struct gw_records **out,
                               struct cmn_err *err);

/* Stops the thread (the job running finishes: at most a few NATS request
 * timeouts) and frees. Jobs not run are dropped: their requests are freed by
 * gw_req_teardown. NULL allowed. */
void gw_records_free(struct gw_records *rec);

/* GET /async-calls/<id> → 200 record JSON, 404 unknown or expired;
 * DELETE → 202 cancelled, 409 finished already, 404 unknown. Takes `r`. */
void gw_records_handle(struct gw_records *rec, struct gw_req *r, const struct gw_target *target);

/* Cancels `call_id` (DELETE /async-function/<id>): answers as the DELETE of
 * gw_records_handle. Takes `r`. */
void gw_records_cancel(struct gw_records *rec, struct gw_req *r, const char *call_id);

/* /system/async-calls and /system/dead-letters[...] (the caller checked
 * the /system auth). Takes `r`. */
void gw_records_system(struct gw_records *rec, struct gw_req *r, const struct gw_target *target);

#endif
