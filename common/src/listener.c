/* Accept-error handling for evhttp listeners: pause on descriptor exhaustion
 * rather than spin, and raise the descriptor limit at start-up. */
#include "cmn/listener.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "cmn/log.h"

#define MAX_GUARDS 8
#define PAUSE_MS 100

struct guard {
    struct evconnlistener *lev;
    struct event *timer;
};

static struct guard guards[MAX_GUARDS];

void cmn_listener_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guard *g = arg;
    evconnlistener_enable(g->lev);
}

static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    struct guard *g = NULL;
    for (size_t i = 0; i < MAX_GUARDS; i++)
        if (guards[i].lev == lev)
            g = &guards[i];
    if (g == NULL)
        return;
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        LOG_WARN(NULL, "accept failed: %s; not accepting for %d ms", strerror(e), PAUSE_MS);
        evconnlistener_disable(lev);
        struct timeval tv = {0, PAUSE_MS * 1000};
        evtimer_add(g->timer, &tv);
    }
    /* Other errors (ECONNABORTED, EINTR) are transient: the next accept works. */
}

int cmn_listener_guard(struct event_base *base, struct evhttp_bound_socket *bound)
{
    struct evconnlistener *lev = evhttp_bound_socket_get_listener(bound);
    return cmn_listener_guard_lev(base, lev);
}

int cmn_listener_guard_lev(struct event_base *base, struct evconnlistener *lev)
{
    if (lev == NULL)
        return -1;
    for (size_t i = 0; i < MAX_GUARDS; i++) {
        if (guards[i].lev != NULL)
            continue;
        guards[i].timer = evtimer_new(base, resume_cb, &guards[i]);
        if (guards[i].timer == NULL)
            return -1;
        guards[i].lev = lev;
        evconnlistener_set_error_cb(lev, accept_error_cb);
        return 0;
    }
    return -1;
}

void cmn_listener_unguard(struct evconnlistener *lev)
{
    for (size_t i = 0; i < MAX_GUARDS; i++) {
        if (guards[i].lev != lev || lev == NULL)
            continue;
        if (guards[i].timer != NULL)
            event_free(guards[i].timer);
        guards[i].timer = NULL;
        guards[i].lev = NULL;
    }
}
