/* The gateway's own API: /healthz, /readyz, /system/functions,
 * /system/function/<name>, /system/info (Basic auth when enabled, OpenFaaS
 * layout of the credential files) and the metrics listener (/metrics, /healthz).
 * Thread: the event-loop thread; nothing here blocks except
 * gw_system_load_credentials, which runs once at start-up. */
#ifndef GW_SYSTEM_H
#define GW_SYSTEM_H

#include <stdbool.h>
#include <stddef.h>

#include "cmn/status.h"
#include "request.h"

struct evhttp_request;
struct cmn_resolver;
struct cmn_metrics;
struct cmn_nats;
struct cmn_jspub;
struct gw_system;
struct gw_proxy;
struct gw_catalog;

#define GW_SECRET_MAX 512

struct gw_system_config {
    struct cmn_resolver *resolver; /* bound */
    struct cmn_metrics *metrics;   /* bound; NULL = /metrics renders nothing */
    struct cmn_nats *nats;         /* bound; NULL = never ready */
    struct cmn_jspub *pub;         /* bound; NULL allowed (storage state unknown) */
    const char *queue_name;        /* borrowed: label of the queue gauges */
    const char *default_ns;        /* copied */
    bool basic_auth;               /* protect the /system/... routes */
    const char *auth_user;         /* copied; required when basic_auth */
    const char *auth_password;     /* copied; required when basic_auth */
    /* Provider mode (functions_provider_url): every /system/... route but
     * the call records is relayed to the provider through `proxy` with the
     * gateway's credentials; the function list and status get real
     * invocation counts, /system/info wraps the provider's. NULL = the
     * gateway answers from its resolver. */
    const char *provider_url;   /* copied */
    struct gw_proxy *proxy;     /* bound; required with provider_url */
    struct gw_catalog *catalog; /* bound; told about deploys, removes and scales */
};

/* Reads "<dir>/basic-auth-user" and "<dir>/basic-auth-password" (surrounding
 * whitespace trimmed) into `user` and `password` (GW_SECRET_MAX bytes each).
 * Errors: CMN_ERR_IO (missing/unreadable file, errno in err->code),
 * CMN_ERR_INVALID (empty or too long). Blocks on file I/O: start-up only. */
enum cmn_status gw_system_load_credentials(const char *dir, char *user, char *password,
                                           struct cmn_err *err);

/* Creates the module; `*out` is new (gw_system_free). Errors: CMN_ERR_NOMEM. */
enum cmn_status gw_system_new(const struct gw_system_config *config, struct gw_system **out,
                              struct cmn_err *err);

/* Handles GET /healthz (200 "OK") and GET /readyz (200 only when NATS is ready,
 * else 503) on the main port. Takes `r`: exactly one reply, now. */
void gw_system_health(struct gw_system *sys, struct gw_req *r, const struct gw_target *target);

/* Handles a request whose path starts with "/system/": 401 without valid
 * credentials (when enabled), 404 unknown route or function, 405 other
 * methods. Takes `r`: exactly one reply, now. */
void gw_system_handle(struct gw_system *sys, struct gw_req *r, const struct gw_target *target);

/* evhttp generic callback of the metrics listener (`arg` = the gw_system):
 * /metrics (any method) and GET /healthz; everything else 404. */
void gw_system_metrics_request(struct evhttp_request *req, void *arg);

/* Queue gauges exported on /metrics, copied from cmn_nats_stats_get at every
 * scrape (the keeper thread refreshes them every few seconds), whether or not
 * a worker runs. Label: queue="<stream>". */
#define GW_M_QUEUE_PENDING "gateway_queue_pending_messages"
#define GW_M_QUEUE_ACK_PENDING "gateway_queue_ack_pending_messages"
#define GW_M_QUEUE_REDELIVERED "gateway_queue_redelivered_messages"
#define GW_M_QUEUE_MESSAGES "gateway_queue_stream_messages"
#define GW_M_DEAD_LETTERS "gateway_dead_letter_messages"
#define GW_M_QUEUE_WAITING "gateway_queue_waiting_pulls"

/* Declares the queue gauges on `m`. Loop thread, at start-up. */
void gw_system_declare_queue_metrics(struct cmn_metrics *m);

struct gw_records;

/* Routes /system/async-calls and /system/dead-letters[...] (after the auth
 * check) to `records` (bound). Loop thread, before the first request. */
void gw_system_set_records(struct gw_system *sys, struct gw_records *records);

/* "Basic <base64(user:password)>" of the gateway's own credentials (borrowed,
 * lives as long as `sys`), NULL when basic_auth is off: what the gateway
 * presents to a provider. */
const char *gw_system_authorization(const struct gw_system *sys);

/* Invocations of `name`.`ns` counted by this gateway, each call once: sync
 * calls that got an answer plus async calls accepted (202), minus the
 * queue-worker's attempts through the sync route (X-Call-Attempt); from the
 * metrics registry (`arg` = the gw_system). A cmn_count_fn. Any thread. */
double gw_system_invocations(void *arg, const char *name, const char *ns);

/* Tells the provider-mode routes which catalogue learns of changes (bound).
 * Loop thread, before the first request. */
void gw_system_set_catalog(struct gw_system *sys, struct gw_catalog *catalog);

/* True when `r` carries the gateway's Basic credentials, or the auth is
 * off. Otherwise it answers `r` 401 (with WWW-Authenticate) and returns
 * false. Loop thread. */
bool gw_system_authorize(struct gw_system *sys, struct gw_req *r);

/* Frees the module (secrets are wiped). NULL allowed. */
void gw_system_free(struct gw_system *sys);

#endif
