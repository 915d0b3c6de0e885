/* Notices a client that hangs up while its request is being answered.
 *
 * libevent 2.1's evhttp stops reading an incoming connection once it has read
 * a request and until the reply is written, so a client that closes the
 * connection during a long call goes unnoticed until the reply is sent. This
 * watches the socket meanwhile with a second read event: EOF or an error means
 * the client is gone, and the connection is freed, which runs the close
 * callback the owner set with evhttp_connection_set_closecb (the owner learns
 * of the hang-up there, exactly once). Bytes instead (a pipelined request) end
 * the watch and are left for evhttp, unread.
 *
 * Shared by the gateway's request owner and the watchdog.
 * Thread: the event-loop thread that owns the connection; never blocks. */
#ifndef CMN_HANGUP_H
#define CMN_HANGUP_H

#include <stdbool.h>

#include <event2/event_struct.h>

struct event_base;
struct evhttp_connection;

struct cmn_hangup {
    struct event ev;                /* private */
    struct evhttp_connection *conn; /* borrowed while armed */
    bool armed;
};

/* Starts watching `conn` (borrowed; an incoming evhttp connection of `base`).
 * `h` must stay at a fixed address until cmn_hangup_stop or the hang-up.
 * Returns false (nothing armed) when the socket is unknown or the event
 * cannot be added. */
bool cmn_hangup_watch(struct cmn_hangup *h, struct event_base *base,
                      struct evhttp_connection *conn);

/* Stops the watch; harmless when not armed. Call before replying and before
 * `h` goes away. */
void cmn_hangup_stop(struct cmn_hangup *h);

#endif
