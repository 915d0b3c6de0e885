/* The process supervisor: every deployed function is a group of replicas, each
 * one `watchdog` process on its own loopback port, in its own process group,
 * with PR_SET_PDEATHSIG so it dies with the provider. The supervisor captures
 * each replica's stdout/stderr through pipes into the function's log file (one
 * timestamped JSON line per output line, see logs.h), reaps on SIGCHLD,
 * restarts a replica that exits unexpectedly (back-off 1 s doubling to 30 s),
 * and probes GET /_/health to decide which replicas are ready to serve.
 *
 * Thread: everything runs on the event-loop thread of the base given to
 * pv_procs_new; callbacks run there too. Nothing blocks: fork/execve, kill and
 * waitpid(WNOHANG) only, and appends to local log files. */
#ifndef PV_PROCS_H
#define PV_PROCS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/status.h"

struct event_base;
struct pv_procs; /* opaque */

struct pv_procs_config {
    struct event_base *base;   /* borrowed; outlives the supervisor */
    const char *watchdog_path; /* copied: the binary every replica runs */
    int64_t stop_timeout_ms;   /* grace after SIGTERM when a replica is stopped; then a
                                  second SIGTERM (the watchdog kills its calls) and
                                  SIGKILL 2 s later */
};

/* What one function runs. Every pointer is borrowed for the call and copied. */
struct pv_fn_spec {
    const char *name;       /* function name (DNS label) */
    const char *ns;         /* namespace */
    const char *fprocess;   /* the watchdog's fprocess */
    const char *const *env; /* "KEY=value" strings, NULL-terminated; entries for port,
                               bind_address and fprocess are dropped (the supervisor
                               sets those) */
    const char *log_path;   /* file the replicas' output is appended to (its directory
                               must exist) */
};

/* Creates the supervisor and installs its SIGCHLD event. On CMN_OK `*out` is
 * new (pv_procs_free). Errors: CMN_ERR_NOMEM, CMN_ERR_IO. */
enum cmn_status pv_procs_new(const struct pv_procs_config *cfg, struct pv_procs **out,
                             struct cmn_err *err);

/* Frees the supervisor. Replicas still running (only when pv_procs_stop_all did
 * not finish) are SIGKILLed with their process groups and reaped, which waits
 * for the kill to land. NULL allowed. */
void pv_procs_free(struct pv_procs *procs);

/* Runs the function described by `spec` with `replicas` replicas (0 allowed).
 * A function already running is replaced: its replicas are stopped and new ones
 * started with the new spec. Returns CMN_OK or CMN_ERR_NOMEM; a replica that
 * cannot be spawned is retried with back-off, not reported here. */
enum cmn_status pv_procs_deploy(struct pv_procs *procs, const struct pv_fn_spec *spec,
                                int64_t replicas, struct cmn_err *err);

/* Changes the replica count of `name`.`ns`: new replicas are started, the
 * newest ones stopped. CMN_ERR_NOT_FOUND if the function is not running here. */
enum cmn_status pv_procs_scale(struct pv_procs *procs, const char *name, const char *ns,
                               int64_t replicas, struct cmn_err *err);

/* Stops every replica of `name`.`ns` (SIGTERM to each watchdog's process group;
 * after stop_timeout a second SIGTERM, on which the watchdog kills the process
 * groups of its running calls; SIGKILL 2 s later) and forgets the function.
 * Unknown names are ignored. */
void pv_procs_remove(struct pv_procs *procs, const char *name, const char *ns);

/* Number of replicas of `name`.`ns` whose last health probe succeeded
 * (0 for an unknown function). */
size_t pv_procs_available(const struct pv_procs *procs, const char *name, const char *ns);

/* Picks a ready replica of `name`.`ns`, round-robin, and returns its loopback
 * port, or 0 when none is ready (or the function is unknown). */
int pv_procs_pick(struct pv_procs *procs, const char *name, const char *ns);

/* Called once when pv_procs_stop_all has finished: every replica is reaped. */
typedef void (*pv_procs_stopped_cb)(void *arg);

/* Shutdown: stops every replica of every function (as pv_procs_remove) and
 * runs `cb(arg)` once, from the event loop (never inside this call), when all
 * have been reaped. Later deploys are refused with CMN_ERR_UNAVAILABLE. */
void pv_procs_stop_all(struct pv_procs *procs, pv_procs_stopped_cb cb, void *arg);

#endif
