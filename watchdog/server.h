/* The watchdog's HTTP side: an evhttp server that answers GET /_/health and runs
 * fprocess once per other request (see proc.h), mapping the child's outcome to
 * the classic OpenFaaS watchdog responses. Owns every in-flight call from
 * request to fully-sent reply. Event-loop thread only. */
#ifndef WD_SERVER_H
#define WD_SERVER_H

#include <stddef.h>
#include <event2/event.h>
#include "cmn/status.h"
#include "config.h"

struct wd_server; /* opaque */

/* Runs once, from the event loop, when a drain has finished (no call left). */
typedef void (*wd_server_drained_cb)(void *arg);

/* Creates the HTTP server on `base` (borrowed) with `cfg` (borrowed; both must
 * outlive the server) and binds cfg->bind_address:cfg->port. wd_proc_init must
 * have been called. On CMN_OK `*out` is new (free with wd_server_free). Returns
 * CMN_ERR_IO when the port cannot be bound (err->code = errno), CMN_ERR_NOMEM. */
enum cmn_status wd_server_new(struct event_base *base, const struct wd_config *cfg,
                              struct wd_server **out, struct cmn_err *err);

/* Starts draining: closes the listening socket, answers new requests on open
 * keep-alive connections with 503, and lets running calls finish. `cb(arg)`
 * runs once, from the event loop (never inside this call), when the last call's
 * reply has been written or its client has gone. Calling it twice is a no-op. */
void wd_server_drain(struct wd_server *srv, wd_server_drained_cb cb, void *arg);

/* Kills every running child (grace period over); their calls answer 503. */
void wd_server_kill_all(struct wd_server *srv);

/* Calls in flight: from accepted request to reply written (or client gone). */
size_t wd_server_inflight(const struct wd_server *srv);

/* Frees the server (NULL allowed): closes connections, kills and reaps any child
 * still running, frees every call. */
void wd_server_free(struct wd_server *srv);

#endif
