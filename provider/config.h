/* provider configuration: the effective settings of the process provider, read
 * once from the environment at start-up through the declarative table
 * pv_config_table (config.c). Main thread only; read-only after loading. */
#ifndef PV_CONFIG_H
#define PV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/config.h"
#include "cmn/status.h"

/* Effective configuration. Strings are owned by the struct (free with
 * pv_config_free); durations in ms. */
struct pv_config {
    char *bind_address;          /* listen address, default 0.0.0.0 */
    int64_t port;                /* listen port, default 8081 (faasd's) */
    bool basic_auth;             /* Basic auth on the management routes */
    char *secret_mount_path;     /* dir with basic-auth-user / basic-auth-password */
    char *provider_state_dir;    /* functions.json, secrets/, logs/ (made absolute at load) */
    char *watchdog_path;         /* watchdog binary; NULL/empty = next to /proc/self/exe */
    char *function_namespace;    /* the one namespace, default openfaas-fn */
    int64_t max_replicas;        /* scale ceiling per function */
    int64_t upstream_timeout_ms; /* proxy deadline for one function call */
    int64_t read_timeout_ms;     /* idle timeout of the provider's own HTTP connections */
    int64_t max_body_bytes;      /* request body limit (413 over it) */
    int64_t max_response_bytes;  /* function response limit (502 over it) */
    int64_t stop_timeout_ms;     /* SIGTERM grace for a replica, then 2nd SIGTERM, SIGKILL */
    char *log_level;             /* debug|info|warn|error */
    char *log_format;            /* text|json */
    /* Not in the table: copied from the provider's own environment for the
     * replicas (NULL when unset). */
    char *env_path;
    char *env_home;
};

/* The provider's config table (static storage, any thread may read it). */
extern const struct cmn_config_entry pv_config_table[];
/* Number of entries in pv_config_table. */
extern const size_t pv_config_count;

/* Loads the table into `cfg` (zeroed by the caller), resolves watchdog_path
 * (default: "watchdog" in the directory of /proc/self/exe), makes
 * provider_state_dir absolute, and copies PATH and HOME. Returns CMN_OK or
 * CMN_ERR_INVALID with err->msg naming the variable. Main thread, at start;
 * blocks only on getenv/readlink. On failure, free with pv_config_free. */
enum cmn_status pv_config_load(struct pv_config *cfg, struct cmn_err *err);

/* Frees every string of `cfg` (NULL fields allowed). */
void pv_config_free(struct pv_config *cfg);

#endif
