/* One fprocess child per call: spawn `/bin/sh -c <command>` in its own process
 * group with non-blocking pipes, feed the request body to its stdin, capture
 * stdout/stderr, enforce the exec deadline and the output cap, and reap it on
 * SIGCHLD. Everything here runs on the single libevent thread of the watchdog;
 * nothing blocks that thread. */
#ifndef WD_PROC_H
#define WD_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include "cmn/status.h"

struct wd_proc; /* opaque: one running (or finished) child */

enum wd_proc_outcome {
    WD_PROC_EXITED,    /* exited by itself; see exit_code */
    WD_PROC_SIGNALED,  /* killed by a signal not sent by us; see signal */
    WD_PROC_TIMEOUT,   /* exec deadline passed, process group SIGKILLed */
    WD_PROC_TOO_LARGE, /* stdout passed max_stdout_bytes, process group SIGKILLed */
    WD_PROC_CANCELLED, /* wd_proc_cancel() was called (client gone, shutdown) */
};

/* What a finished child left behind; passed to wd_proc_done_cb. */
struct wd_proc_result {
    enum wd_proc_outcome outcome;
    int exit_code;        /* WD_PROC_EXITED: 0..255 */
    int signal;           /* WD_PROC_SIGNALED: the signal number */
    double duration_s;    /* seconds from spawn to reap (monotonic clock) */
    struct evbuffer *out; /* captured stdout; bound to the proc: the callback may
                             drain or move it, it is freed by wd_proc_free */
    struct evbuffer *err; /* captured stderr (first max_stderr_bytes); bound, as out */
};

/* Runs once per successfully started proc, on the event-loop thread, after the
 * child is reaped and both output pipes reached EOF (or were closed by us).
 * `proc` is no longer tracked; the callback (or later code) must call
 * wd_proc_free(proc) exactly once, and may do so inside the callback. */
typedef void (*wd_proc_done_cb)(struct wd_proc *proc, const struct wd_proc_result *result,
                                void *arg);

/* What to run. Every pointer is borrowed for the duration of wd_proc_start,
 * except stdin_body whose contents are moved (the evbuffer itself stays the
 * caller's and is left empty). */
struct wd_proc_spec {
    const char *command;         /* run as /bin/sh -c command */
    char *const *envp;           /* full environment of the child, NULL-terminated */
    struct evbuffer *stdin_body; /* request body; NULL = empty stdin */
    int64_t timeout_ms;          /* exec deadline; 0 = none */
    size_t max_stdout_bytes;     /* stdout cap → WD_PROC_TOO_LARGE */
    size_t max_stderr_bytes;     /* stderr kept; the rest is read and discarded */
    bool combine_output;         /* child's stderr is the stdout pipe too */
};

/* Installs the SIGCHLD event on `base` (borrowed, must outlive wd_proc_shutdown).
 * Call once at start-up before wd_proc_start. Returns CMN_OK or CMN_ERR_NOMEM. */
enum cmn_status wd_proc_init(struct event_base *base, struct cmn_err *err);

/* Removes the SIGCHLD event. Procs still running are not touched (free them first). */
void wd_proc_shutdown(void);

/* Starts one child. On CMN_OK `*out` is the new proc (freed by wd_proc_free) and
 * `cb(arg)` will run exactly once, later, from the event loop (never from inside
 * this call). On failure `*out` is untouched, the callback never runs, and the
 * status is CMN_ERR_IO (pipe/posix_spawn failed; err->code = errno) or
 * CMN_ERR_NOMEM. Event-loop thread; does not block (posix_spawn uses vfork). */
enum cmn_status wd_proc_start(const struct wd_proc_spec *spec, wd_proc_done_cb cb, void *arg,
                              struct wd_proc **out, struct cmn_err *err);

/* SIGKILLs the child's process group; the done callback still runs once, with
 * WD_PROC_CANCELLED. No-op if the child was already reaped. Event-loop thread. */
void wd_proc_cancel(struct wd_proc *proc);

/* Frees `proc` (NULL allowed). If the child is still running (only at exit),
 * kills its process group and reaps it, waiting for that SIGKILL to land; the
 * done callback then never runs. Event-loop thread. */
void wd_proc_free(struct wd_proc *proc);

/* Number of children started and not yet finished. Event-loop thread. */
size_t wd_proc_running_count(void);

#endif
