/* watchdog entry point: configuration, the libevent loop, and the process
 * lifecycle (SIGTERM/SIGINT drain: stop accepting, let running calls finish
 * within the grace period, then exit 0). HTTP and children live in server.c
 * and proc.c. */
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
#include "cmn/duration.h"
#include "cmn/listener.h"
#include "cmn/log.h"
#include "config.h"
#include "proc.h"
#include "server.h"

#ifndef CFAAS_VERSION
#define CFAAS_VERSION "dev"
#endif

#define PROGRAM "watchdog"
/* Grace period when exec_timeout is 0 (no per-call limit). */
#define DEFAULT_GRACE_MS 10000
/* Extra time after the grace period for killed children to be reaped and
 * their replies written. */
#define KILL_MARGIN_MS 2000

struct app {
    struct event_base *base;
    struct wd_server *srv;
    struct event *grace_ev;
    struct event *hard_stop_ev;
    bool grace_over;
    int64_t grace_ms;
};

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* A closed fd 0/1/2 would be reused by a pipe and clobbered by the dup2s that
 * set up a child's stdio. */
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

static void on_drained(void *arg)
{
    struct app *app = arg;
    LOG_INFO(NULL, "drained, exiting");
    event_base_loopexit(app->base, NULL);
}

static void on_hard_stop(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    (void)fd;
    (void)what;
    LOG_WARN(NULL, "%zu call(s) still open after the kill margin, exiting anyway",
             wd_server_inflight(app->srv));
    event_base_loopexit(app->base, NULL);
}

static void kill_remaining(struct app *app)
{
    if (app->grace_over)
        return;
    app->grace_over = true;
    size_t n = wd_server_inflight(app->srv);
    if (n > 0)
        LOG_WARN(NULL, "grace period over, killing %zu running call(s)", n);
    wd_server_kill_all(app->srv);
    struct timeval tv = ms_to_tv(KILL_MARGIN_MS);
    evtimer_add(app->hard_stop_ev, &tv);
}

static void on_grace_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kill_remaining(arg);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct app *app = arg;
    (void)what;
    if (evtimer_pending(app->grace_ev, NULL) || app->grace_over) {
        LOG_INFO(NULL, "second %s: killing running calls now",
                 sig == SIGINT ? "SIGINT" : "SIGTERM");
        kill_remaining(app);
        return;
    }
    char grace[32];
    cmn_duration_format(app->grace_ms, grace, sizeof grace);
    LOG_INFO(NULL, "%s: no longer accepting connections, draining %zu call(s) (grace %s)",
             sig == SIGINT ? "SIGINT" : "SIGTERM", wd_server_inflight(app->srv), grace);
    struct timeval tv = ms_to_tv(app->grace_ms);
    evtimer_add(app->grace_ev, &tv);
    wd_server_drain(app->srv, on_drained, app);
}

int main(int argc, char **argv)
{
    struct wd_config cfg;
    struct app app = {0};
    struct cmn_err err = {0};
    struct event *term_ev = NULL, *int_ev = NULL;
    int rc = 1;

    memset(&cfg, 0, sizeof cfg);
    ensure_std_fds();
    int code = cmn_config_handle_args(argc, argv, PROGRAM, wd_config_table, wd_config_count);
    if (code >= 0)
        return code;
    /* Load, then set up the logger, then log the effective config, so that the
     * config line already honours log_format. */
    cmn_listener_raise_fd_limit();
    if (cmn_config_load(wd_config_table, wd_config_count, &cfg, &err) != CMN_OK) {
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
    if (cfg.fprocess == NULL) {
        fprintf(stderr, "config: fprocess is required: the command to run for each request, "
                        "e.g. fprocess=cat or fprocess=\"figlet -f small\"\n");
        rc = 2;
        goto out;
    }
    cmn_config_log(PROGRAM, wd_config_table, wd_config_count, &cfg);

    /* Writing to the stdin of a child that exited must give EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);

    app.base = event_base_new();
    if (app.base == NULL) {
        LOG_ERROR(NULL, "event_base_new failed");
        goto out;
    }
    if (wd_proc_init(app.base, &err) != CMN_OK ||
        wd_server_new(app.base, &cfg, &app.srv, &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s", err.msg);
        goto out;
    }
    app.grace_ms = cfg.exec_timeout_ms > 0 ? cfg.exec_timeout_ms : DEFAULT_GRACE_MS;
    app.grace_ev = evtimer_new(app.base, on_grace_over, &app);
    app.hard_stop_ev = evtimer_new(app.base, on_hard_stop, &app);
    term_ev = evsignal_new(app.base, SIGTERM, on_stop_signal, &app);
    int_ev = evsignal_new(app.base, SIGINT, on_stop_signal, &app);
    if (app.grace_ev == NULL || app.hard_stop_ev == NULL || term_ev == NULL || int_ev == NULL ||
        evsignal_add(term_ev, NULL) != 0 || evsignal_add(int_ev, NULL) != 0) {
        LOG_ERROR(NULL, "cannot install signal events");
        goto out;
    }

    char exec_timeout[32];
    cmn_duration_format(cfg.exec_timeout_ms, exec_timeout, sizeof exec_timeout);
    LOG_INFO(NULL, "watchdog %s listening on %s:%" PRId64 ", fprocess=\"%s\", exec_timeout=%s",
             CFAAS_VERSION, cfg.bind_address, cfg.port, cfg.fprocess, exec_timeout);
    if (event_base_dispatch(app.base) < 0) {
        LOG_ERROR(NULL, "event loop failed");
        goto out;
    }
    rc = 0;

out:
    wd_server_free(app.srv);
    if (term_ev != NULL)
        event_free(term_ev);
    if (int_ev != NULL)
        event_free(int_ev);
    if (app.grace_ev != NULL)
        event_free(app.grace_ev);
    if (app.hard_stop_ev != NULL)
        event_free(app.hard_stop_ev);
    wd_proc_shutdown();
    if (app.base != NULL)
        event_base_free(app.base);
    libevent_global_shutdown();
    cmn_config_free(wd_config_table, wd_config_count, &cfg);
    return rc;
}
