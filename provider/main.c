/* provider entry point: configuration, the libevent loop, and the process
 * lifecycle. Start-up restores every function in the state directory;
 * SIGTERM/SIGINT stop all replicas (SIGTERM, stop_timeout, SIGKILL), keep the
 * state for the next start, and exit 0. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>
#include "cmn/config.h"
#include "cmn/listener.h"
#include "cmn/log.h"
#include "api.h"
#include "config.h"
#include "fnproxy.h"
#include "logs.h"
#include "procs.h"
#include "store.h"

#ifndef CFAAS_VERSION
#define CFAAS_VERSION "dev"
#endif

#define PROGRAM "provider"
#define CREDENTIAL_MAX 512
/* After stop_timeout every replica has been SIGKILLed; this much longer for
 * the kills to be reaped before exiting anyway. */
#define STOP_MARGIN_MS 3000

struct app {
    struct event_base *base;
    struct pv_api *api;
    struct pv_procs *procs;
    struct event *hard_stop_ev;
    bool stopping;
    int64_t stop_timeout_ms;
};

/* A closed fd 0/1/2 would be reused by a pipe and then clobbered by the dup2s
 * that set up a replica's stdio. */
static void ensure_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int null_fd = open("/dev/null", O_RDWR);
            if (null_fd >= 0 && null_fd != fd)
                close(null_fd);
        }
    }
}

static void on_all_stopped(void *arg)
{
    struct app *app = arg;
    LOG_INFO(NULL, "all replicas stopped, exiting");
    event_base_loopexit(app->base, NULL);
}

static void on_hard_stop(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    (void)fd;
    (void)what;
    LOG_WARN(NULL, "replicas still not reaped after the stop timeout, exiting anyway");
    event_base_loopexit(app->base, NULL);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct app *app = arg;
    (void)what;
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (app->stopping) {
        LOG_INFO(NULL, "second %s: exiting now", name);
        event_base_loopexit(app->base, NULL);
        return;
    }
    app->stopping = true;
    LOG_INFO(NULL, "%s: stopping all replicas (state kept for the next start)", name);
    pv_api_stop_listening(app->api);
    int64_t ms = app->stop_timeout_ms + STOP_MARGIN_MS;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(app->hard_stop_ev, &tv);
    pv_procs_stop_all(app->procs, on_all_stopped, app);
}

int main(int argc, char **argv)
{
    struct pv_config cfg;
    struct app app = {0};
    struct cmn_err err = {0};
    struct pv_store *store = NULL;
    struct pv_fnproxy *proxy = NULL;
    struct pv_logs *logs = NULL;
    struct event *term_ev = NULL, *int_ev = NULL;
    char user[CREDENTIAL_MAX] = "", password[CREDENTIAL_MAX] = "";
    int rc = 1;

    memset(&cfg, 0, sizeof cfg);
    ensure_std_fds();
    int code = cmn_config_handle_args(argc, argv, PROGRAM, pv_config_table, pv_config_count);
    if (code >= 0)
        return code;
    cmn_listener_raise_fd_limit();
    if (pv_config_load(&cfg, &err) != CMN_OK) {
        fprintf(stderr, "config: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    if (!cmn_log_setup(cfg.log_level, cfg.log_format)) {
        fprintf(stderr,
                "config: log_level must be debug|info|warn|error and log_format "
                "text|json (got log_level=%s, log_format=%s)\n",
                cfg.log_level, cfg.log_format);
        rc = 2;
        goto out;
    }
    cmn_config_log(PROGRAM, pv_config_table, pv_config_count, &cfg);
    if (cfg.basic_auth && pv_api_load_credentials(cfg.secret_mount_path, user, password,
                                                  sizeof user, &err) != CMN_OK) {
        fprintf(stderr, "config: basic_auth: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    /* A write to a connection the client closed must give EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);

    if (pv_store_open(cfg.provider_state_dir, &store, &err) != CMN_OK) {
        LOG_ERROR(NULL, "provider_state_dir %s: %s", cfg.provider_state_dir, err.msg);
        rc = 2;
        goto out;
    }
    app.base = event_base_new();
    if (app.base == NULL) {
        LOG_ERROR(NULL, "event_base_new failed");
        goto out;
    }
    app.stop_timeout_ms = cfg.stop_timeout_ms;
    struct pv_procs_config pcfg = {.base = app.base,
                                   .watchdog_path = cfg.watchdog_path,
                                   .stop_timeout_ms = cfg.stop_timeout_ms};
    if (pv_procs_new(&pcfg, &app.procs, &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s", err.msg);
        goto out;
    }
    struct pv_fnproxy_config fcfg = {.base = app.base,
                                     .procs = app.procs,
                                     .store = store,
                                     .default_ns = cfg.function_namespace,
                                     .upstream_timeout_ms = cfg.upstream_timeout_ms,
                                     .max_response_bytes = cfg.max_response_bytes};
    proxy = pv_fnproxy_new(&fcfg);
    logs = pv_logs_new(app.base);
    if (proxy == NULL || logs == NULL) {
        LOG_ERROR(NULL, "out of memory");
        goto out;
    }
    struct pv_api_config acfg = {.base = app.base,
                                 .cfg = &cfg,
                                 .store = store,
                                 .procs = app.procs,
                                 .proxy = proxy,
                                 .logs = logs,
                                 .auth_user = cfg.basic_auth ? user : NULL,
                                 .auth_password = cfg.basic_auth ? password : NULL};
    if (pv_api_new(&acfg, &app.api, &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s", err.msg);
        goto out;
    }
    memset(password, 0, sizeof password);
    app.hard_stop_ev = evtimer_new(app.base, on_hard_stop, &app);
    term_ev = evsignal_new(app.base, SIGTERM, on_stop_signal, &app);
    int_ev = evsignal_new(app.base, SIGINT, on_stop_signal, &app);
    if (app.hard_stop_ev == NULL || term_ev == NULL || int_ev == NULL ||
        evsignal_add(term_ev, NULL) != 0 || evsignal_add(int_ev, NULL) != 0) {
        LOG_ERROR(NULL, "cannot install signal events");
        goto out;
    }
    LOG_INFO(NULL,
             "provider %s listening on %s:%" PRId64 ", namespace %s, state %s, watchdog %s, "
             "basic_auth %s, %zu function(s) to restore",
             CFAAS_VERSION, cfg.bind_address, cfg.port, cfg.function_namespace,
             cfg.provider_state_dir, cfg.watchdog_path, cfg.basic_auth ? "on" : "off",
             pv_store_count(store));
    (void)pv_api_restore(app.api, &err);
    if (event_base_dispatch(app.base) < 0) {
        LOG_ERROR(NULL, "event loop failed");
        goto out;
    }
    rc = 0;

out:
    /* The HTTP server first: closing its connections ends follow streams and
     * proxied calls through their close callbacks. */
    pv_api_free(app.api);
    pv_logs_free(logs);
    pv_fnproxy_free(proxy);
    pv_procs_free(app.procs);
    if (term_ev != NULL)
        event_free(term_ev);
    if (int_ev != NULL)
        event_free(int_ev);
    if (app.hard_stop_ev != NULL)
        event_free(app.hard_stop_ev);
    if (app.base != NULL)
        event_base_free(app.base);
    libevent_global_shutdown();
    pv_store_free(store);
    pv_config_free(&cfg);
    return rc;
}
