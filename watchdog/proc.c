/* Child processes of the watchdog: posix_spawn of /bin/sh -c <fprocess> in a new
 * process group, non-blocking stdin/stdout/stderr pipes driven by libevent
 * events, the exec deadline timer, the stdout cap, and reaping on SIGCHLD.
 * A proc is "done" once it is reaped and both output pipes are closed; then its
 * done callback runs exactly once. */
/* Linux/glibc: pipe2 and posix_spawn_file_actions_addclosefrom_np (glibc 2.34). */
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Bytes moved per read/write callback: large enough for throughput, small
 * enough that one busy child cannot starve the other connections. */
#define IO_CHUNK_BYTES (256 * 1024)

struct wd_proc {
    struct wd_proc *prev, *next; /* running list, while tracked */
    bool tracked;
    pid_t pid;
    bool reaped;
    int wait_status;
    bool timed_out, too_large, cancelled;
    int in_fd, out_fd, err_fd; /* parent ends; -1 once closed */
    struct event *in_ev, *out_ev, *err_ev, *timer_ev;
    struct evbuffer *in_buf; /* body still to be written to stdin */
    struct evbuffer *out_buf, *err_buf;
    size_t max_stdout_bytes, max_stderr_bytes;
    struct timespec started;
    double duration_s;
    wd_proc_done_cb cb;
    void *cb_arg;
};

static struct event_base *g_base;
static struct event *g_sigchld_ev;
static struct wd_proc *g_running; /* head of the running list */
static size_t g_running_count;

static double elapsed_s(const struct timespec *from)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - from->tv_sec) + (double)(now.tv_nsec - from->tv_nsec) / 1e9;
}

static void close_fd_event(int *fd, struct event **ev)
{
    if (*ev != NULL) {
        event_free(*ev);
        *ev = NULL;
    }
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void untrack(struct wd_proc *p)
{
    if (!p->tracked)
        return;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        g_running = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->tracked = false;
    g_running_count--;
}

/* Kills the whole group so `sh -c` grandchildren die too. Only called while
 * the leader is unreaped (a zombie still pins its pid and group id). */
static void kill_group(struct wd_proc *p)
{
    if (p->reaped)
        return;
    if (kill(-p->pid, SIGKILL) != 0)
        (void)kill(p->pid, SIGKILL);
}

/* Runs the done callback once the child is reaped and output pipes are closed.
 * After the callback `p` may be freed: callers return right after this. */
static void maybe_finish(struct wd_proc *p)
{
    if (!p->reaped || p->out_fd >= 0 || p->err_fd >= 0 || !p->tracked)
        return;
    untrack(p);
    if (p->timer_ev != NULL)
        event_del(p->timer_ev);

    struct wd_proc_result res = {0};
    if (p->cancelled)
        res.outcome = WD_PROC_CANCELLED;
    else if (p->timed_out)
        res.outcome = WD_PROC_TIMEOUT;
    else if (p->too_large)
        res.outcome = WD_PROC_TOO_LARGE;
    else if (WIFEXITED(p->wait_status)) {
        res.outcome = WD_PROC_EXITED;
        res.exit_code = WEXITSTATUS(p->wait_status);
    } else {
        res.outcome = WD_PROC_SIGNALED;
        res.signal = WIFSIGNALED(p->wait_status) ? WTERMSIG(p->wait_status) : 0;
    }
    res.duration_s = p->duration_s;
    res.out = p->out_buf;
    res.err = p->err_buf;
    p->cb(p, &res, p->cb_arg);
}

static void on_stdin_writable(evutil_socket_t fd, short what, void *arg)
{
    struct wd_proc *p = arg;
    (void)fd;
    (void)what;
    int n = evbuffer_write_atmost(p->in_buf, p->in_fd, IO_CHUNK_BYTES);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    /* n < 0 here is EPIPE: the child does not read stdin (env, sleep); that is
     * its right, so the rest of the body is dropped silently. */
    if (n < 0 || evbuffer_get_length(p->in_buf) == 0) {
        evbuffer_drain(p->in_buf, evbuffer_get_length(p->in_buf));
        close_fd_event(&p->in_fd, &p->in_ev);
    }
}

static void on_stdout_readable(evutil_socket_t fd, short what, void *arg)
{
    struct wd_proc *p = arg;
    (void)fd;
    (void)what;
    int n = evbuffer_read(p->out_buf, p->out_fd, IO_CHUNK_BYTES);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n > 0 && evbuffer_get_length(p->out_buf) <= p->max_stdout_bytes)
        return;
    if (n > 0) {
        p->too_large = true;
        kill_group(p);
    }
    close_fd_event(&p->out_fd, &p->out_ev);
    maybe_finish(p);
}

static void on_stderr_readable(evutil_socket_t fd, short what, void *arg)
{
    struct wd_proc *p = arg;
    char chunk[16384];
    (void)fd;
    (void)what;
    ssize_t n = read(p->err_fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n > 0) {
        size_t have = evbuffer_get_length(p->err_buf);
        size_t room = have < p->max_stderr_bytes ? p->max_stderr_bytes - have : 0;
        size_t keep = (size_t)n < room ? (size_t)n : room;
        if (keep > 0)
            evbuffer_add(p->err_buf, chunk, keep);
        return;
    }
    close_fd_event(&p->err_fd, &p->err_ev);
    maybe_finish(p);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct wd_proc *p = arg;
    (void)fd;
    (void)what;
    if (p->reaped)
        return;
    p->timed_out = true;
    kill_group(p);
}

static struct wd_proc *find_running(pid_t pid)
{
    for (struct wd_proc *p = g_running; p != NULL; p = p->next)
        if (p->pid == pid && !p->reaped)
            return p;
    return NULL;
}

/* Reaps one child we know about: kills what is left of its group first (a
 * background grandchild holding stdout open would otherwise keep the call
 * open until the deadline), then collects the status. */
static void reap(struct wd_proc *p)
{
    p->duration_s = elapsed_s(&p->started);
    (void)kill(-p->pid, SIGKILL);
    while (waitpid(p->pid, &p->wait_status, 0) < 0 && errno == EINTR) {
    }
    p->reaped = true;
    /* Nobody will read the rest of the body now. */
    if (p->in_buf != NULL)
        evbuffer_drain(p->in_buf, evbuffer_get_length(p->in_buf));
    close_fd_event(&p->in_fd, &p->in_ev);
    maybe_finish(p);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        /* WNOWAIT: look before reaping, so the group can still be killed
         * by pid without any risk of pid reuse. */
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0)
            return;
        struct wd_proc *p = find_running(si.si_pid);
        if (p != NULL) {
            reap(p);
        } else {
            int status;
            (void)waitpid(si.si_pid, &status, 0);
        }
    }
}

enum cmn_status wd_proc_init(struct event_base *base, struct cmn_err *err)
{
    g_base = base;
    g_sigchld_ev = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
    if (g_sigchld_ev == NULL || evsignal_add(g_sigchld_ev, NULL) != 0) {
        if (g_sigchld_ev != NULL)
            event_free(g_sigchld_ev);
        g_sigchld_ev = NULL;
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "cannot install the SIGCHLD event");
    }
    return CMN_OK;
}

void wd_proc_shutdown(void)
{
    if (g_sigchld_ev != NULL)
        event_free(g_sigchld_ev);
    g_sigchld_ev = NULL;
    g_base = NULL;
}

size_t wd_proc_running_count(void)
{
    return g_running_count;
}

static int set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

enum cmn_status wd_proc_start(const struct wd_proc_spec *spec, wd_proc_done_cb cb, void *arg,
                              struct wd_proc **out, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    bool fa_ok = false, attr_ok = false;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    struct wd_proc *p = calloc(1, sizeof *p);

    if (p == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    p->pid = -1;
    p->in_fd = p->out_fd = p->err_fd = -1;
    p->max_stdout_bytes = spec->max_stdout_bytes;
    p->max_stderr_bytes = spec->max_stderr_bytes;
    p->cb = cb;
    p->cb_arg = arg;
    p->in_buf = evbuffer_new();
    p->out_buf = evbuffer_new();
    p->err_buf = evbuffer_new();
    if (p->in_buf == NULL || p->out_buf == NULL || p->err_buf == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    if (spec->stdin_body != NULL && evbuffer_add_buffer(p->in_buf, spec->stdin_body) != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }

    /* O_CLOEXEC: a child must never inherit another call's pipe ends, or that
     * call would never see EOF. */
    if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
        (!spec->combine_output && pipe2(err_pipe, O_CLOEXEC) != 0)) {
        st = cmn_err_set(err, CMN_ERR_IO, errno, "pipe: %s", strerror(errno));
        goto out;
    }
    if (set_nonblock(in_pipe[1]) != 0 || set_nonblock(out_pipe[0]) != 0 ||
        (err_pipe[0] >= 0 && set_nonblock(err_pipe[0]) != 0)) {
        st = cmn_err_set(err, CMN_ERR_IO, errno, "fcntl: %s", strerror(errno));
        goto out;
    }

    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, rc, "posix_spawn_file_actions_init: %s", strerror(rc));
        goto out;
    }
    fa_ok = true;
    int err_target = spec->combine_output ? out_pipe[1] : err_pipe[1];
    if ((rc = posix_spawn_file_actions_adddup2(&fa, in_pipe[0], STDIN_FILENO)) != 0 ||
        (rc = posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO)) != 0 ||
        (rc = posix_spawn_file_actions_adddup2(&fa, err_target, STDERR_FILENO)) != 0 ||
        (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, rc, "posix_spawn_file_actions: %s", strerror(rc));
        goto out;
    }
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, rc, "posix_spawnattr_init: %s", strerror(rc));
        goto out;
    }
    attr_ok = true;
    /* Own process group (so the deadline kills grandchildren), default
     * dispositions for what the watchdog ignores (SIGPIPE would otherwise stay
     * ignored across exec and break `yes | head`), empty signal mask. */
    sigset_t defaults, empty;
    sigemptyset(&empty);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGCHLD);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGHUP);
    sigaddset(&defaults, SIGQUIT);
    sigaddset(&defaults, SIGUSR1);
    sigaddset(&defaults, SIGUSR2);
    sigaddset(&defaults, SIGALRM);
    if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                                  POSIX_SPAWN_SETSIGMASK)) != 0 ||
        (rc = posix_spawnattr_setpgroup(&attr, 0)) != 0 ||
        (rc = posix_spawnattr_setsigdefault(&attr, &defaults)) != 0 ||
        (rc = posix_spawnattr_setsigmask(&attr, &empty)) != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, rc, "posix_spawnattr: %s", strerror(rc));
        goto out;
    }

    char *argv[] = {"/bin/sh", "-c", (char *)spec->command, NULL};
    clock_gettime(CLOCK_MONOTONIC, &p->started);
    rc = posix_spawn(&p->pid, "/bin/sh", &fa, &attr, argv, spec->envp);
    if (rc != 0) {
        p->pid = -1;
        st = cmn_err_set(err, CMN_ERR_IO, rc, "posix_spawn /bin/sh: %s", strerror(rc));
        goto out;
    }
    /* From here the child exists: every failure below must still reap it, so
     * the proc is tracked first and failures turn into a cancel. */
    p->next = g_running;
    if (g_running != NULL)
        g_running->prev = p;
    g_running = p;
    p->tracked = true;
    g_running_count++;

    p->in_fd = in_pipe[1];
    in_pipe[1] = -1;
    p->out_fd = out_pipe[0];
    out_pipe[0] = -1;
    p->err_fd = err_pipe[0];
    err_pipe[0] = -1;

    bool events_ok = true;
    if (evbuffer_get_length(p->in_buf) == 0) {
        close(p->in_fd); /* empty body: EOF right away */
        p->in_fd = -1;
    } else {
        p->in_ev = event_new(g_base, p->in_fd, EV_WRITE | EV_PERSIST, on_stdin_writable, p);
        events_ok = events_ok && p->in_ev != NULL && event_add(p->in_ev, NULL) == 0;
    }
    p->out_ev = event_new(g_base, p->out_fd, EV_READ | EV_PERSIST, on_stdout_readable, p);
    events_ok = events_ok && p->out_ev != NULL && event_add(p->out_ev, NULL) == 0;
    if (p->err_fd >= 0) {
        p->err_ev = event_new(g_base, p->err_fd, EV_READ | EV_PERSIST, on_stderr_readable, p);
        events_ok = events_ok && p->err_ev != NULL && event_add(p->err_ev, NULL) == 0;
    }
    if (spec->timeout_ms > 0) {
        struct timeval tv = {(time_t)(spec->timeout_ms / 1000),
                             (suseconds_t)((spec->timeout_ms % 1000) * 1000)};
        p->timer_ev = evtimer_new(g_base, on_timeout, p);
        events_ok = events_ok && p->timer_ev != NULL && evtimer_add(p->timer_ev, &tv) == 0;
    }
    if (!events_ok) {
        /* The callback contract says failure means "never called": undo fully. */
        untrack(p);
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "cannot register child events");
        goto out;
    }
    *out = p;
    p = NULL;

out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (out_pipe[i] >= 0)
            close(out_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    wd_proc_free(p);
    return st;
}

void wd_proc_cancel(struct wd_proc *proc)
{
    if (proc == NULL || proc->reaped)
        return;
    proc->cancelled = true;
    kill_group(proc);
}

void wd_proc_free(struct wd_proc *proc)
{
    if (proc == NULL)
        return;
    untrack(proc);
    if (proc->pid > 0 && !proc->reaped) {
        kill_group(proc);
        while (waitpid(proc->pid, &proc->wait_status, 0) < 0 && errno == EINTR) {
        }
        proc->reaped = true;
    }
    close_fd_event(&proc->in_fd, &proc->in_ev);
    close_fd_event(&proc->out_fd, &proc->out_ev);
    close_fd_event(&proc->err_fd, &proc->err_ev);
    if (proc->timer_ev != NULL)
        event_free(proc->timer_ev);
    if (proc->in_buf != NULL)
        evbuffer_free(proc->in_buf);
    if (proc->out_buf != NULL)
        evbuffer_free(proc->out_buf);
    if (proc->err_buf != NULL)
        evbuffer_free(proc->err_buf);
    free(proc);
}
