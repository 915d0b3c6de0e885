/* The replica supervisor: fork/execve of the watchdog per replica (own process
 * group, PR_SET_PDEATHSIG), output pipes read on the loop into the log file,
 * SIGCHLD reaping, restart back-off, the SIGTERM-then-SIGKILL stop, and the
 * /_/health probes that decide readiness. A replica being stopped leaves its
 * function for the `dying` list and is freed once reaped. */
/* Linux/glibc: pipe2, prctl, close_range (glibc 2.34). */
#define _GNU_SOURCE
#include "procs.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include "cmn/log.h"
#include "cmn/name.h"
#include "logs.h"

#define BACKOFF_START_MS 1000
#define BACKOFF_MAX_MS 30000
/* A replica that ran this long before exiting starts its back-off afresh. */
#define BACKOFF_RESET_MS 30000
#define PROBE_READY_MS 1000   /* probe interval of a ready replica */
#define PROBE_STARTING_MS 100 /* probe interval until the first success */
#define PROBE_TIMEOUT_S 1
/* Longest output line kept whole; longer ones are split. */
#define MAX_LINE_BYTES (64 * 1024)
#define FN_ID_MAX (2 * CMN_NAME_MAX)
/* After the second SIGTERM the watchdog kills its calls and exits; this long
 * before SIGKILL. */
#define KILL_MARGIN_MS 2000

struct group;

struct replica {
    TAILQ_ENTRY(replica) link;
    struct pv_procs *procs;
    struct group *g;    /* NULL once stopping (then on procs->dying) */
    char fn[FN_ID_MAX]; /* "name.ns" for log lines */
    unsigned index;     /* 1-based, stable across restarts */
    pid_t pid;          /* 0 when not running */
    int port;
    char instance[16]; /* pid as text, the logs' "instance" */
    bool ready;
    bool stopping;
    bool second_term_sent; /* the watchdog was told to kill its running calls */
    int64_t backoff_ms;
    struct timespec started;
    int out_fd, err_fd;
    struct event *out_ev, *err_ev;
    struct evbuffer *out_part, *err_part; /* bytes after the last newline */
    int log_fd;
    struct event *probe_ev, *restart_ev, *kill_ev;
    struct probe *probe; /* in flight, or NULL */
};
TAILQ_HEAD(replica_list, replica);

struct group {
    TAILQ_ENTRY(group) link;
    char name[CMN_NAME_MAX];
    char ns[CMN_NAME_MAX];
    char *fprocess;
    char **env; /* NULL-terminated, filtered */
    char *log_path;
    struct replica_list replicas;
    size_t count;
    unsigned next_index;
    size_t rr;
};
TAILQ_HEAD(group_list, group);

/* A health probe outlives its replica if need be: the replica detaches it
 * (r = NULL) and the callback, which libevent always runs, frees it. */
struct probe {
    struct replica *r;
    struct pv_procs *procs;
};

struct pv_procs {
    struct event_base *base;
    char *watchdog_path;
    int64_t stop_timeout_ms;
    struct group_list groups;
    struct replica_list dying;
    struct event *sigchld_ev;
    size_t probes_inflight;
    bool stopping_all;
    pv_procs_stopped_cb stopped_cb;
    void *stopped_arg;
};

static void probe_schedule(struct replica *r, int64_t ms);
static void replica_spawn(struct replica *r);

static int64_t elapsed_ms(const struct timespec *from)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - from->tv_sec) * 1000 + (now.tv_nsec - from->tv_nsec) / 1000000;
}

static struct timeval ms_tv(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* ---- output capture ----------------------------------------------------- */

static void write_line(struct replica *r, const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t out_len = 0;
    char *enc = pv_logs_encode(r->instance, &now, line, len, &out_len);
    if (enc == NULL)
        return;
    if (r->log_fd >= 0) {
        /* One write per line on an O_APPEND file: lines of replicas sharing
         * the file never interleave. */
        ssize_t n = write(r->log_fd, enc, out_len);
        (void)n;
    }
    if (CMN_LOG_DEBUG >= cmn_log_min_level)
        LOG_DEBUG(NULL, "%s[%s] %.*s", r->fn, r->instance, (int)(len > 2000 ? 2000 : len), line);
    free(enc);
}

static void flush_lines(struct replica *r, struct evbuffer *part, bool eof)
{
    for (;;) {
        struct evbuffer_ptr p = evbuffer_search(part, "\n", 1, NULL);
        size_t take;
        if (p.pos >= 0)
            take = (size_t)p.pos + 1;
        else if (evbuffer_get_length(part) >= MAX_LINE_BYTES || (eof && evbuffer_get_length(part)))
            take = evbuffer_get_length(part) < MAX_LINE_BYTES ? evbuffer_get_length(part)
                                                              : MAX_LINE_BYTES;
        else
            return;
        if (take > MAX_LINE_BYTES)
            take = MAX_LINE_BYTES;
        unsigned char *line = evbuffer_pullup(part, (ev_ssize_t)take);
        if (line == NULL)
            return;
        write_line(r, (const char *)line, take);
        evbuffer_drain(part, take);
    }
}

static void close_pipe(struct replica *r, int *fd, struct event **ev, struct evbuffer *part)
{
    if (*ev != NULL) {
        event_free(*ev);
        *ev = NULL;
    }
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    if (part != NULL)
        flush_lines(r, part, true);
}

/* Reads what is there; returns false at EOF or on an error. */
static bool read_pipe(struct replica *r, int fd, struct evbuffer *part)
{
    for (int rounds = 0; rounds < 16; rounds++) {
        int n = evbuffer_read(part, fd, 16384);
        if (n > 0) {
            flush_lines(r, part, false);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return true;
        return false;
    }
    return true;
}

static void on_out(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    (void)what;
    if (!read_pipe(r, fd, r->out_part))
        close_pipe(r, &r->out_fd, &r->out_ev, r->out_part);
}

static void on_err(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    (void)what;
    if (!read_pipe(r, fd, r->err_part))
        close_pipe(r, &r->err_fd, &r->err_ev, r->err_part);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void check_all_stopped(struct pv_procs *procs);

static void on_stopped_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct pv_procs *procs = arg;
    (void)fd;
    (void)what;
    if (procs->stopped_cb != NULL) {
        pv_procs_stopped_cb cb = procs->stopped_cb;
        procs->stopped_cb = NULL;
        cb(procs->stopped_arg);
    }
}

static void check_all_stopped(struct pv_procs *procs)
{
    if (!procs->stopping_all || procs->stopped_cb == NULL)
        return;
    if (!TAILQ_EMPTY(&procs->groups) || !TAILQ_EMPTY(&procs->dying) || procs->probes_inflight > 0)
        return;
    struct timeval now = {0, 0};
    if (event_base_once(procs->base, -1, EV_TIMEOUT, on_stopped_deferred, procs, &now) != 0)
        on_stopped_deferred(-1, 0, procs);
}

static void probe_detach(struct replica *r)
{
    if (r->probe != NULL) {
        r->probe->r = NULL;
        r->probe = NULL;
    }
    r->ready = false;
}

/* After the leader is reaped (or when it is about to be forgotten): the group
 * may still hold fprocess children; kill them, collect the last output. */
static void after_exit(struct replica *r)
{
    if (r->pid > 0)
        (void)kill(-r->pid, SIGKILL);
    if (r->out_fd >= 0)
        (void)read_pipe(r, r->out_fd, r->out_part);
    if (r->err_fd >= 0)
        (void)read_pipe(r, r->err_fd, r->err_part);
    close_pipe(r, &r->out_fd, &r->out_ev, r->out_part);
    close_pipe(r, &r->err_fd, &r->err_ev, r->err_part);
    r->pid = 0;
    probe_detach(r);
    if (r->probe_ev != NULL)
        event_del(r->probe_ev);
    if (r->kill_ev != NULL)
        event_del(r->kill_ev);
}

static void replica_free(struct replica *r)
{
    if (r == NULL)
        return;
    after_exit(r);
    if (r->probe_ev != NULL)
        event_free(r->probe_ev);
    if (r->restart_ev != NULL)
        event_free(r->restart_ev);
    if (r->kill_ev != NULL)
        event_free(r->kill_ev);
    if (r->out_part != NULL)
        evbuffer_free(r->out_part);
    if (r->err_part != NULL)
        evbuffer_free(r->err_part);
    if (r->log_fd >= 0)
        close(r->log_fd);
    free(r);
}

static void on_kill_timer(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    (void)fd;
    (void)what;
    if (r->pid <= 0)
        return;
    /* The watchdog runs each call in a process group of its own, which a
     * kill of the watchdog's group does not reach; a second SIGTERM makes the
     * watchdog kill those groups itself (docs/watchdog.md). */
    if (!r->second_term_sent) {
        r->second_term_sent = true;
        LOG_WARN(NULL,
                 "%s replica %u (pid %d) still running %lldms after SIGTERM, sending a second "
                 "SIGTERM (kills its running calls)",
                 r->fn, r->index, (int)r->pid, (long long)r->procs->stop_timeout_ms);
        (void)kill(r->pid, SIGTERM);
        struct timeval tv = ms_tv(KILL_MARGIN_MS);
        evtimer_add(r->kill_ev, &tv);
        return;
    }
    LOG_WARN(NULL, "%s replica %u (pid %d) still running, sending SIGKILL", r->fn, r->index,
             (int)r->pid);
    if (kill(-r->pid, SIGKILL) != 0)
        (void)kill(r->pid, SIGKILL);
}

/* Takes `r` out of its function and stops it; it is freed once reaped. */
static void replica_stop(struct replica *r, const char *why)
{
    struct pv_procs *procs = r->procs;
    struct group *g = r->g;
    if (g != NULL) {
        TAILQ_REMOVE(&g->replicas, r, link);
        g->count--;
        r->g = NULL;
    }
    r->stopping = true;
    probe_detach(r);
    if (r->probe_ev != NULL)
        event_del(r->probe_ev);
    if (r->restart_ev != NULL)
        event_del(r->restart_ev);
    if (r->pid <= 0) {
        replica_free(r);
        check_all_stopped(procs);
        return;
    }
    LOG_INFO(NULL, "%s replica %u (pid %d, port %d): stopping (%s)", r->fn, r->index, (int)r->pid,
             r->port, why);
    if (kill(-r->pid, SIGTERM) != 0)
        (void)kill(r->pid, SIGTERM);
    TAILQ_INSERT_TAIL(&procs->dying, r, link);
    struct timeval tv = ms_tv(procs->stop_timeout_ms);
    evtimer_add(r->kill_ev, &tv);
}

static void on_restart(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    (void)fd;
    (void)what;
    if (r->stopping || r->pid > 0)
        return;
    LOG_INFO(NULL, "%s replica %u: restarting", r->fn, r->index);
    replica_spawn(r);
}

static void schedule_restart(struct replica *r, const char *why)
{
    int64_t delay = r->backoff_ms;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    LOG_WARN(NULL, "%s replica %u: %s; restarting in %lldms", r->fn, r->index, why,
             (long long)delay);
    struct timeval tv = ms_tv(delay);
    evtimer_add(r->restart_ev, &tv);
}

/* ---- health probes ------------------------------------------------------ */

static void on_probe_done(struct evhttp_request *req, void *arg)
{
    struct probe *p = arg;
    struct replica *r = p->r;
    struct pv_procs *procs = p->procs;
    procs->probes_inflight--;
    if (r != NULL) {
        r->probe = NULL;
        bool ok = req != NULL && evhttp_request_get_response_code(req) == 200;
        if (ok && !r->ready)
            LOG_INFO(NULL, "%s replica %u (pid %d, port %d): ready", r->fn, r->index, (int)r->pid,
                     r->port);
        else if (!ok && r->ready)
            LOG_WARN(NULL, "%s replica %u (pid %d, port %d): health check failed, not ready", r->fn,
                     r->index, (int)r->pid, r->port);
        r->ready = ok;
        if (ok && r->backoff_ms > BACKOFF_START_MS && elapsed_ms(&r->started) >= BACKOFF_RESET_MS)
            r->backoff_ms = BACKOFF_START_MS;
        probe_schedule(r, ok ? PROBE_READY_MS : PROBE_STARTING_MS);
    }
    free(p);
    check_all_stopped(procs);
}

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    struct pv_procs *procs = r->procs;
    (void)fd;
    (void)what;
    if (r->pid <= 0 || r->stopping || r->probe != NULL)
        return;
    struct probe *p = calloc(1, sizeof *p);
    struct evhttp_connection *conn = NULL;
    struct evhttp_request *req = NULL;
    if (p == NULL)
        goto fail;
    p->r = r;
    p->procs = procs;
    conn = evhttp_connection_base_new(procs->base, NULL, "127.0.0.1", (ev_uint16_t)r->port);
    if (conn == NULL)
        goto fail;
    evhttp_connection_set_timeout(conn, PROBE_TIMEOUT_S);
    evhttp_connection_set_retries(conn, 0);
    req = evhttp_request_new(on_probe_done, p);
    if (req == NULL)
        goto fail;
    char host[32];
    snprintf(host, sizeof host, "127.0.0.1:%d", r->port);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, "/_/health") != 0) {
        req = NULL; /* freed by evhttp_make_request on failure */
        goto fail;
    }
    evhttp_connection_free_on_completion(conn);
    r->probe = p;
    procs->probes_inflight++;
    return;
fail:
    if (req != NULL)
        evhttp_request_free(req);
    if (conn != NULL)
        evhttp_connection_free(conn);
    free(p);
    probe_schedule(r, PROBE_READY_MS);
}

static void probe_schedule(struct replica *r, int64_t ms)
{
    struct timeval tv = ms_tv(ms);
    evtimer_add(r->probe_ev, &tv);
}

/* ---- spawning ----------------------------------------------------------- */

/* A free loopback port from the kernel. The watchdog binds it moments later;
 * if someone else took it meanwhile, the watchdog exits and the restart picks
 * another. */
static int pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static char *kv(const char *key, const char *value)
{
    size_t len = strlen(key) + strlen(value) + 2;
    char *s = malloc(len);
    if (s != NULL)
        snprintf(s, len, "%s=%s", key, value);
    return s;
}

static void free_strv(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p != NULL; p++)
        free(*p);
    free(v);
}

/* Child side of fork: only async-signal-safe calls until execve. */
static void exec_child(const char *path, char *const argv[], char *const envp[], int out_w,
                       int err_w, pid_t parent)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) /* the provider died before prctl: do not linger */
        _exit(1);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        _exit(126);
    close_range(3, ~0U, 0);
    execve(path, argv, envp);
    _exit(127);
}

static void replica_spawn(struct replica *r)
{
    struct pv_procs *procs = r->procs;
    struct group *g = r->g;
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    char **envp = NULL;
    const char *why = "cannot start";
    int e = 0;

    r->port = pick_port();
    if (r->port <= 0) {
        e = errno;
        why = "no free loopback port";
        goto fail;
    }
    size_t n = 0;
    while (g->env[n] != NULL)
        n++;
    envp = calloc(n + 4, sizeof *envp);
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", r->port);
    if (envp == NULL || (envp[0] = kv("port", port_s)) == NULL ||
        (envp[1] = kv("bind_address", "127.0.0.1")) == NULL ||
        (envp[2] = kv("fprocess", g->fprocess)) == NULL) {
        e = ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if ((envp[3 + i] = strdup(g->env[i])) == NULL) {
            e = ENOMEM;
            goto fail;
        }
    if (pipe2(out_p, O_CLOEXEC) != 0 || pipe2(err_p, O_CLOEXEC) != 0) {
        e = errno;
        goto fail;
    }
    char *argv[] = {procs->watchdog_path, NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        e = errno;
        goto fail;
    }
    if (pid == 0)
        exec_child(procs->watchdog_path, argv, envp, out_p[1], err_p[1], parent);
    /* Also here, so a kill(-pid) right after fork cannot miss the group. */
    (void)setpgid(pid, pid);
    close(out_p[1]);
    close(err_p[1]);
    r->out_fd = out_p[0];
    r->err_fd = err_p[0];
    out_p[0] = err_p[0] = -1;
    fcntl(r->out_fd, F_SETFL, fcntl(r->out_fd, F_GETFL) | O_NONBLOCK);
    fcntl(r->err_fd, F_SETFL, fcntl(r->err_fd, F_GETFL) | O_NONBLOCK);
    r->out_ev = event_new(procs->base, r->out_fd, EV_READ | EV_PERSIST, on_out, r);
    r->err_ev = event_new(procs->base, r->err_fd, EV_READ | EV_PERSIST, on_err, r);
    if (r->out_ev != NULL)
        event_add(r->out_ev, NULL);
    if (r->err_ev != NULL)
        event_add(r->err_ev, NULL);
    r->pid = pid;
    snprintf(r->instance, sizeof r->instance, "%d", (int)pid);
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    r->ready = false;
    LOG_INFO(NULL, "%s replica %u: started watchdog pid %d on 127.0.0.1:%d", r->fn, r->index,
             (int)pid, r->port);
    free_strv(envp);
    probe_schedule(r, PROBE_STARTING_MS);
    return;

fail:
    for (int i = 0; i < 2; i++) {
        if (out_p[i] >= 0)
            close(out_p[i]);
        if (err_p[i] >= 0)
            close(err_p[i]);
    }
    free_strv(envp);
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s", why, strerror(e));
    schedule_restart(r, msg);
}

static struct replica *replica_new(struct pv_procs *procs, struct group *g)
{
    struct replica *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->procs = procs;
    r->g = g;
    r->out_fd = r->err_fd = r->log_fd = -1;
    r->index = ++g->next_index;
    r->backoff_ms = BACKOFF_START_MS;
    snprintf(r->fn, sizeof r->fn, "%s.%s", g->name, g->ns);
    r->out_part = evbuffer_new();
    r->err_part = evbuffer_new();
    r->probe_ev = evtimer_new(procs->base, on_probe_timer, r);
    r->restart_ev = evtimer_new(procs->base, on_restart, r);
    r->kill_ev = evtimer_new(procs->base, on_kill_timer, r);
    if (r->out_part == NULL || r->err_part == NULL || r->probe_ev == NULL ||
        r->restart_ev == NULL || r->kill_ev == NULL) {
        replica_free(r);
        return NULL;
    }
    r->log_fd = open(g->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (r->log_fd < 0)
        LOG_WARN(NULL, "%s: cannot open log file %s: %s", r->fn, g->log_path, strerror(errno));
    TAILQ_INSERT_TAIL(&g->replicas, r, link);
    g->count++;
    return r;
}

/* ---- reaping ------------------------------------------------------------ */

static struct replica *find_pid(struct pv_procs *procs, pid_t pid, bool *dying)
{
    struct group *g;
    struct replica *r;
    TAILQ_FOREACH(g, &procs->groups, link)
    TAILQ_FOREACH(r, &g->replicas, link) if (r->pid == pid)
    {
        *dying = false;
        return r;
    }
    TAILQ_FOREACH(r, &procs->dying, link)
    if (r->pid == pid) {
        *dying = true;
        return r;
    }
    return NULL;
}

static void describe_status(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "status 0x%x", (unsigned)status);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    struct pv_procs *procs = arg;
    (void)sig;
    (void)what;
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        bool dying = false;
        struct replica *r = find_pid(procs, pid, &dying);
        if (r == NULL)
            continue;
        char how[96];
        describe_status(status, how, sizeof how);
        int64_t ran_ms = elapsed_ms(&r->started);
        if (dying) {
            LOG_INFO(NULL, "%s replica %u (pid %d): stopped, %s", r->fn, r->index, (int)pid, how);
            TAILQ_REMOVE(&procs->dying, r, link);
            replica_free(r);
            continue;
        }
        after_exit(r);
        if (ran_ms >= BACKOFF_RESET_MS)
            r->backoff_ms = BACKOFF_START_MS;
        char why[160];
        snprintf(why, sizeof why, "watchdog pid %d exited unexpectedly after %lldms, %s", (int)pid,
                 (long long)ran_ms, how);
        schedule_restart(r, why);
    }
    check_all_stopped(procs);
}

/* ---- groups ------------------------------------------------------------- */

static struct group *find_group(const struct pv_procs *procs, const char *name, const char *ns)
{
    struct group *g;
    TAILQ_FOREACH(g, &procs->groups, link)
    if (strcmp(g->name, name) == 0 && strcmp(g->ns, ns) == 0)
        return g;
    return NULL;
}

static void group_set_count(struct pv_procs *procs, struct group *g, size_t n, const char *why)
{
    while (g->count > n)
        replica_stop(TAILQ_LAST(&g->replicas, replica_list), why);
    while (g->count < n) {
        struct replica *r = replica_new(procs, g);
        if (r == NULL) {
            LOG_ERROR(NULL, "%s.%s: out of memory starting a replica", g->name, g->ns);
            return;
        }
        replica_spawn(r);
    }
}

static void group_free(struct group *g)
{
    if (g == NULL)
        return;
    free(g->fprocess);
    free_strv(g->env);
    free(g->log_path);
    free(g);
}

static bool reserved_key(const char *entry)
{
    static const char *const keys[] = {"port=", "bind_address=", "fprocess="};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strncmp(entry, keys[i], strlen(keys[i])) == 0)
            return true;
    return strchr(entry, '=') == NULL || entry[0] == '=';
}

/* Puts the new spec into `g` (old strings freed only on success). */
static enum cmn_status group_set_spec(struct group *g, const struct pv_fn_spec *spec,
                                      struct cmn_err *err)
{
    size_t n = 0;
    while (spec->env != NULL && spec->env[n] != NULL)
        n++;
    char **env = calloc(n + 1, sizeof *env);
    char *fprocess = strdup(spec->fprocess);
    char *log_path = strdup(spec->log_path);
    if (env == NULL || fprocess == NULL || log_path == NULL)
        goto nomem;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (reserved_key(spec->env[i]))
            continue;
        if ((env[k++] = strdup(spec->env[i])) == NULL)
            goto nomem;
    }
    free(g->fprocess);
    free_strv(g->env);
    free(g->log_path);
    g->fprocess = fprocess;
    g->env = env;
    g->log_path = log_path;
    return CMN_OK;
nomem:
    free_strv(env);
    free(fprocess);
    free(log_path);
    return cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
}

/* ---- public API --------------------------------------------------------- */

enum cmn_status pv_procs_new(const struct pv_procs_config *cfg, struct pv_procs **out,
                             struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    struct pv_procs *procs = calloc(1, sizeof *procs);
    if (procs == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    TAILQ_INIT(&procs->groups);
    TAILQ_INIT(&procs->dying);
    procs->base = cfg->base;
    procs->stop_timeout_ms = cfg->stop_timeout_ms;
    procs->watchdog_path = strdup(cfg->watchdog_path);
    procs->sigchld_ev = evsignal_new(cfg->base, SIGCHLD, on_sigchld, procs);
    if (procs->watchdog_path == NULL || procs->sigchld_ev == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    if (evsignal_add(procs->sigchld_ev, NULL) != 0) {
        st = cmn_err_set(err, CMN_ERR_IO, errno, "cannot watch SIGCHLD");
        goto out;
    }
    *out = procs;
    procs = NULL;
out:
    pv_procs_free(procs);
    return st;
}

static void kill_and_reap(struct replica *r)
{
    if (r->pid <= 0)
        return;
    (void)kill(-r->pid, SIGKILL);
    (void)kill(r->pid, SIGKILL);
    while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

void pv_procs_free(struct pv_procs *procs)
{
    if (procs == NULL)
        return;
    struct group *g;
    struct replica *r;
    while ((g = TAILQ_FIRST(&procs->groups)) != NULL) {
        while ((r = TAILQ_FIRST(&g->replicas)) != NULL) {
            TAILQ_REMOVE(&g->replicas, r, link);
            kill_and_reap(r);
            replica_free(r);
        }
        TAILQ_REMOVE(&procs->groups, g, link);
        group_free(g);
    }
    while ((r = TAILQ_FIRST(&procs->dying)) != NULL) {
        TAILQ_REMOVE(&procs->dying, r, link);
        kill_and_reap(r);
        replica_free(r);
    }
    if (procs->sigchld_ev != NULL)
        event_free(procs->sigchld_ev);
    free(procs->watchdog_path);
    free(procs);
}

enum cmn_status pv_procs_deploy(struct pv_procs *procs, const struct pv_fn_spec *spec,
                                int64_t replicas, struct cmn_err *err)
{
    if (procs->stopping_all)
        return cmn_err_set(err, CMN_ERR_UNAVAILABLE, 0, "shutting down");
    struct group *g = find_group(procs, spec->name, spec->ns);
    bool created = false;
    if (g == NULL) {
        g = calloc(1, sizeof *g);
        if (g == NULL)
            return cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        snprintf(g->name, sizeof g->name, "%s", spec->name);
        snprintf(g->ns, sizeof g->ns, "%s", spec->ns);
        TAILQ_INIT(&g->replicas);
        created = true;
    }
    enum cmn_status st = group_set_spec(g, spec, err);
    if (st != CMN_OK) {
        if (created)
            group_free(g);
        return st;
    }
    if (created)
        TAILQ_INSERT_TAIL(&procs->groups, g, link);
    else
        group_set_count(procs, g, 0, "replaced by a new deployment");
    group_set_count(procs, g, replicas > 0 ? (size_t)replicas : 0, "scaled down");
    return CMN_OK;
}

enum cmn_status pv_procs_scale(struct pv_procs *procs, const char *name, const char *ns,
                               int64_t replicas, struct cmn_err *err)
{
    struct group *g = find_group(procs, name, ns);
    if (g == NULL)
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "function %s.%s not found", name, ns);
    group_set_count(procs, g, replicas > 0 ? (size_t)replicas : 0, "scaled down");
    return CMN_OK;
}

void pv_procs_remove(struct pv_procs *procs, const char *name, const char *ns)
{
    struct group *g = find_group(procs, name, ns);
    if (g == NULL)
        return;
    group_set_count(procs, g, 0, "function removed");
    TAILQ_REMOVE(&procs->groups, g, link);
    group_free(g);
    check_all_stopped(procs);
}

size_t pv_procs_available(const struct pv_procs *procs, const char *name, const char *ns)
{
    const struct group *g = find_group(procs, name, ns);
    size_t n = 0;
    const struct replica *r;
    if (g != NULL)
        TAILQ_FOREACH(r, &g->replicas, link)
    if (r->ready && r->pid > 0)
        n++;
    return n;
}

int pv_procs_pick(struct pv_procs *procs, const char *name, const char *ns)
{
    struct group *g = find_group(procs, name, ns);
    if (g == NULL || g->count == 0)
        return 0;
    size_t start = g->rr++ % g->count, i = 0;
    struct replica *r;
    /* Two passes over the list: from `start` to the end, then from the head. */
    for (int pass = 0; pass < 2; pass++) {
        i = 0;
        TAILQ_FOREACH(r, &g->replicas, link)
        {
            bool in_range = pass == 0 ? i >= start : i < start;
            i++;
            if (in_range && r->ready && r->pid > 0)
                return r->port;
        }
    }
    return 0;
}

void pv_procs_stop_all(struct pv_procs *procs, pv_procs_stopped_cb cb, void *arg)
{
    procs->stopping_all = true;
    procs->stopped_cb = cb;
    procs->stopped_arg = arg;
    struct group *g;
    while ((g = TAILQ_FIRST(&procs->groups)) != NULL) {
        group_set_count(procs, g, 0, "provider shutting down");
        TAILQ_REMOVE(&procs->groups, g, link);
        group_free(g);
    }
    check_all_stopped(procs);
}
