/* The queue-worker's small HTTP server for probes and scraping, on
 * metrics_port: GET /healthz and GET /metrics. It runs a libevent evhttp on its
 * own thread and event base, so a busy main loop never delays a probe. */
#ifndef QW_HEALTH_H
#define QW_HEALTH_H

#include <stdatomic.h>
#include "cmn/metrics.h"
#include "cmn/status.h"

/* What /healthz reports; main.c stores it, the server thread reads it. */
enum qw_health_state {
    QW_HEALTH_STARTING = 0, /* connecting for the first time (within the budget): 200 */
    QW_HEALTH_READY,        /* connected, stream and consumer ensured: 200 */
    QW_HEALTH_RECONNECTING, /* connection lost, reconnecting within the budget: 200 */
    QW_HEALTH_DEAD,         /* reconnect budget exhausted: 503, the process exits */
};

struct qw_health;

/* Binds 0.0.0.0:`port` and starts the server thread. `metrics` (rendered on
 * GET /metrics) and `state` are borrowed and must outlive the server. On
 * success `*out` is new (qw_health_free). Errors: CMN_ERR_IO (bind failed,
 * errno in err->code), CMN_ERR_NOMEM. Main thread. */
enum cmn_status qw_health_start(int port, struct cmn_metrics *metrics, const atomic_int *state,
                                struct qw_health **out, struct cmn_err *err);

/* Stops the server thread, waits for it and frees everything. NULL allowed.
 * Main thread; blocks until the thread has finished its current request. */
void qw_health_free(struct qw_health *health);

#endif
