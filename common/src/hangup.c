/* The hang-up watch: a peek at an incoming connection's socket while evhttp
 * is not reading it. */
#include "cmn/hangup.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct cmn_hangup *h = arg;
    char byte;
    (void)what;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    struct evhttp_connection *conn = h->conn;
    cmn_hangup_stop(h);
    if (n > 0 || conn == NULL)
        return; /* a pipelined request: evhttp reads it after the reply */
    /* Runs the owner's close callback; `h` may be gone after this. */
    evhttp_connection_free(conn);
}

bool cmn_hangup_watch(struct cmn_hangup *h, struct event_base *base, struct evhttp_connection *conn)
{
    h->armed = false;
    h->conn = NULL;
    struct bufferevent *bev = conn != NULL ? evhttp_connection_get_bufferevent(conn) : NULL;
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return false;
    if (event_assign(&h->ev, base, fd, EV_READ | EV_PERSIST, on_readable, h) != 0 ||
        event_add(&h->ev, NULL) != 0)
        return false;
    h->conn = conn;
    h->armed = true;
    return true;
}

void cmn_hangup_stop(struct cmn_hangup *h)
{
    if (!h->armed)
        return;
    event_del(&h->ev);
    h->armed = false;
    h->conn = NULL;
}
