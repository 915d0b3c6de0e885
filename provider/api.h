/* The provider's HTTP API: the faas-provider routes (/system/functions,
 * /system/function/<name>, /system/scale-function/<name>, /system/info,
 * /system/namespaces, /system/namespace/<ns>, /system/secrets, /system/logs,
 * /healthz) and the hand-off of /function/... to fnproxy.c. Owns the evhttp
 * server, Basic auth on the management routes, FunctionDeployment validation
 * and the FunctionStatus documents; keeps store.c (what is deployed) and
 * procs.c (what runs) in step.
 * Thread: the event-loop thread; every request gets exactly one reply. */
#ifndef PV_API_H
#define PV_API_H

#include "cmn/status.h"

struct event_base;
struct pv_config;
struct pv_store;
struct pv_procs;
struct pv_fnproxy;
struct pv_logs;
struct pv_api; /* opaque */

struct pv_api_config {
    struct event_base *base;     /* borrowed */
    const struct pv_config *cfg; /* borrowed, outlives the API */
    struct pv_store *store;      /* borrowed */
    struct pv_procs *procs;      /* borrowed */
    struct pv_fnproxy *proxy;    /* borrowed */
    struct pv_logs *logs;        /* borrowed */
    const char *auth_user;       /* copied; NULL = no auth */
    const char *auth_password;   /* copied; NULL = no auth */
};

/* Creates the API and listens on cfg->bind_address:cfg->port. On CMN_OK `*out`
 * is new (pv_api_free). Errors: CMN_ERR_NOMEM, CMN_ERR_IO (cannot listen;
 * err->code = errno). Main thread, before the loop runs. */
enum cmn_status pv_api_new(const struct pv_api_config *cfg, struct pv_api **out,
                           struct cmn_err *err);

/* Starts the replicas of every function in the store (provider start-up:
 * state survives restarts). Returns CMN_OK; functions whose stored deployment
 * cannot be started are logged and skipped. */
enum cmn_status pv_api_restore(struct pv_api *api, struct cmn_err *err);

/* Stops accepting connections (shutdown); open connections stay. */
void pv_api_stop_listening(struct pv_api *api);

/* Frees the API and its HTTP server (open connections are closed). NULL allowed. */
void pv_api_free(struct pv_api *api);

/* Loads the Basic-auth pair from `dir`/basic-auth-user and
 * `dir`/basic-auth-password (whitespace trimmed, as the gateway does) into
 * `user` and `password` (`size` bytes each). Returns CMN_OK, CMN_ERR_IO
 * (unreadable) or CMN_ERR_INVALID (empty or too long). Blocks on file reads. */
enum cmn_status pv_api_load_credentials(const char *dir, char *user, char *password, size_t size,
                                        struct cmn_err *err);

#endif
