/* The provider's one declarative config table: every environment variable the
 * process provider reads, with its default, range and help line. Names follow
 * faasd / faas-provider where one exists (port, basic_auth, secret_mount_path). */
#include "config.h"

#include "cmn/name.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024LL * 1024LL)
#define DAY_MS (24LL * 3600LL * 1000LL)
#define OFF(f) offsetof(struct pv_config, f)
#define NO_RANGE 0, -1

const struct cmn_config_entry pv_config_table[] = {
    {"bind_address", CMN_CFG_STRING, "0.0.0.0", NO_RANGE, OFF(bind_address), false,
     "address the provider API listens on"},
    {"port", CMN_CFG_INT, "8081", 1, 65535, OFF(port), false,
     "HTTP port of the provider API (faasd-provider uses 8081)"},
    {"basic_auth", CMN_CFG_BOOL, "false", NO_RANGE, OFF(basic_auth), false,
     "require HTTP Basic auth on the management routes (/system/* except namespaces)"},
    {"secret_mount_path", CMN_CFG_STRING, "/var/openfaas/secrets/", NO_RANGE,
     OFF(secret_mount_path), false,
     "directory holding basic-auth-user and basic-auth-password (read when basic_auth=true)"},
    {"provider_state_dir", CMN_CFG_STRING, "/var/lib/cfaas-provider", NO_RANGE,
     OFF(provider_state_dir), false,
     "state directory: functions.json, secrets/<namespace>/<name>, logs/<namespace>/<name>.log"},
    {"watchdog_path", CMN_CFG_STRING, NULL, NO_RANGE, OFF(watchdog_path), false,
     "watchdog binary run for each replica; unset = watchdog next to the provider binary"},
    {"function_namespace", CMN_CFG_STRING, "openfaas-fn", NO_RANGE, OFF(function_namespace), false,
     "the one namespace functions and secrets live in; others are refused with 400"},
    {"max_replicas", CMN_CFG_INT, "20", 1, 1000, OFF(max_replicas), false,
     "most replicas (watchdog processes) one function may be scaled to"},
    {"upstream_timeout", CMN_CFG_DURATION, "60s", 1, DAY_MS, OFF(upstream_timeout_ms), false,
     "deadline of one proxied /function/ call (504 after it)"},
    {"read_timeout", CMN_CFG_DURATION, "60s", 0, DAY_MS, OFF(read_timeout_ms), false,
     "idle timeout of client connections to the provider; 0 = none"},
    {"max_body_bytes", CMN_CFG_INT, "10485760", 1, 1024LL * MIB, OFF(max_body_bytes), false,
     "request body limit in bytes for every route (413 over it)"},
    {"max_response_bytes", CMN_CFG_INT, "67108864", 1, 4096LL * MIB, OFF(max_response_bytes), false,
     "function response body limit in bytes (502 over it)"},
    {"stop_timeout", CMN_CFG_DURATION, "5s", 0, 10LL * 60LL * 1000LL, OFF(stop_timeout_ms), false,
     "grace after SIGTERM when a replica is stopped; then a second SIGTERM (the watchdog "
     "kills its running calls) and SIGKILL 2s later"},
    {"log_level", CMN_CFG_STRING, "info", NO_RANGE, OFF(log_level), false,
     "debug, info, warn or error (debug also echoes replica output)"},
    {"log_format", CMN_CFG_STRING, "text", NO_RANGE, OFF(log_format), false, "text or json"},
};

const size_t pv_config_count = sizeof pv_config_table / sizeof pv_config_table[0];

static char *dup_env(const char *name)
{
    const char *v = getenv(name);
    return v != NULL ? strdup(v) : NULL;
}

/* Default watchdog: the sibling of our own executable, so an installed pair
 * (build/bin/provider + build/bin/watchdog) works without configuration. */
static enum cmn_status default_watchdog(struct pv_config *cfg, struct cmn_err *err)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return cmn_err_set(err, CMN_ERR_INVALID, errno,
                           "watchdog_path: cannot read /proc/self/exe (%s); set watchdog_path",
                           strerror(errno));
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    size_t len = strlen(self) + sizeof "/watchdog";
    char *path = malloc(len);
    if (path == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
    snprintf(path, len, "%s/watchdog", self);
    free(cfg->watchdog_path);
    cfg->watchdog_path = path;
    return CMN_OK;
}

enum cmn_status pv_config_load(struct pv_config *cfg, struct cmn_err *err)
{
    enum cmn_status st = cmn_config_load(pv_config_table, pv_config_count, cfg, err);
    if (st != CMN_OK)
        return st;
    if (cfg->watchdog_path == NULL || cfg->watchdog_path[0] == '\0') {
        st = default_watchdog(cfg, err);
        if (st != CMN_OK)
            return st;
    }
    if (access(cfg->watchdog_path, X_OK) != 0)
        return cmn_err_set(err, CMN_ERR_INVALID, errno, "watchdog_path: %s is not executable: %s",
                           cfg->watchdog_path, strerror(errno));
    if (cfg->provider_state_dir[0] != '/') {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd) == NULL)
            return cmn_err_set(err, CMN_ERR_INVALID, errno, "provider_state_dir: getcwd: %s",
                               strerror(errno));
        size_t len = strlen(cwd) + strlen(cfg->provider_state_dir) + 2;
        char *abs = malloc(len);
        if (abs == NULL)
            return cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        snprintf(abs, len, "%s/%s", cwd, cfg->provider_state_dir);
        free(cfg->provider_state_dir);
        cfg->provider_state_dir = abs;
    }
    if (!cmn_name_label_valid(cfg->function_namespace, strlen(cfg->function_namespace)))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "function_namespace: \"%s\" is not a DNS label",
                           cfg->function_namespace);
    cfg->env_path = dup_env("PATH");
    cfg->env_home = dup_env("HOME");
    return CMN_OK;
}

void pv_config_free(struct pv_config *cfg)
{
    cmn_config_free(pv_config_table, pv_config_count, cfg);
    free(cfg->env_path);
    free(cfg->env_home);
    cfg->env_path = cfg->env_home = NULL;
}
