/* Keeps an evhttp listener alive when the process runs out of file
 * descriptors: by default libevent retries accept() at once, logs a warning
 * per failure and spins (millions of lines a second). Guarded listeners pause
 * for 100 ms after EMFILE/ENFILE instead, with one log line per pause. */
#ifndef CMN_LISTENER_H
#define CMN_LISTENER_H

struct event_base;
struct evhttp_bound_socket;
struct evconnlistener;

/* Raises the soft RLIMIT_NOFILE to the hard limit, so a busy gateway is not
 * capped at the common default of 1024. Main thread, at start; never fails
 * (a refusal leaves the limit as it was). */
void cmn_listener_raise_fd_limit(void);

/* Installs the pause-on-EMFILE error handler on `bound` (borrowed; must
 * outlive nothing beyond the event base `base`). At most 8 listeners per
 * process; returns 0, or -1 when the table is full or allocation fails.
 * Loop thread of `base`. */
int cmn_listener_guard(struct event_base *base, struct evhttp_bound_socket *bound);

/* The same for a plain evconnlistener (borrowed until cmn_listener_unguard). */
int cmn_listener_guard_lev(struct event_base *base, struct evconnlistener *lev);

/* Forgets `lev` (call before freeing it): a pending pause ends unused. */
void cmn_listener_unguard(struct evconnlistener *lev);

#endif
