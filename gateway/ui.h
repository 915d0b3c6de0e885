/* The portal at /ui/: the static page (gateway/ui/, built into the binary,
 * behind the /system Basic auth when it is on) and its small API:
 *   GET  /ui/api/session           {"results_kept", "callbacks_received"}
 *   POST /ui/api/callback          {"call_id", "callback_url"}: a fresh call id
 *                                  and the receiver URL for that call only
 *   GET  /ui/api/results/<call-id> a callback the portal received, as JSON
 *                                  ({"received": false} until then)
 *   GET  /ui/api/results/<call-id>/body  its body, as received (404 until then)
 *   POST /ui/callbacks/<call-id>/<mac>   the portal's own callback receiver
 * An async call invoked from the page carries that call id and names the
 * receiver as its X-Callback-Url, so the page can show the function's
 * output: the receiver keeps the last `keep` callbacks in memory (bodies cut
 * at `max_body_bytes`, at most 16 KiB of headers each). It is not behind the
 * Basic auth (a queue-worker posts to it without credentials): the URL's MAC
 * (HMAC-SHA256 of the call id under a key made at start) admits the result
 * of that one call, whose X-Call-Id must match, and nothing else; a function,
 * which sees its own X-Callback-Url, can post only its own result. One
 * gateway's memory: behind several gateway replicas a callback lands on one
 * of them (docs/portal.md). Thread: the event-loop thread; nothing here
 * blocks. */
#ifndef GW_UI_H
#define GW_UI_H

#include <stddef.h>

#include "cmn/status.h"
#include "request.h"

struct gw_system;
struct gw_ui;

struct gw_ui_config {
    struct gw_system *system;  /* bound: its Basic auth guards the page and its API */
    const char *callback_base; /* copied: "http://host:port" the queue-workers reach
                                  this gateway at; receivers are <base>/ui/callbacks/... */
    size_t keep;               /* callbacks kept, oldest dropped first; 0 = 128 */
    size_t max_body_bytes;     /* body bytes kept of each; 0 = 64 KiB */
};

/* Creates the module (a fresh MAC key from OpenSSL's RAND_bytes). `*out`
 * new (gw_ui_free). Errors: CMN_ERR_NOMEM (also: no randomness),
 * CMN_ERR_INVALID (callback_base not http://...). */
enum cmn_status gw_ui_new(const struct gw_ui_config *config, struct gw_ui **out,
                          struct cmn_err *err);

/* Handles a request whose path is "/ui" or starts with "/ui/": 301 to /ui/,
 * the files (GET/HEAD), the API above; 401 without valid credentials (when
 * the /system auth is on; not for the receiver), 404 unknown, 405 other
 * methods. Takes `r`: exactly one reply, now. */
void gw_ui_handle(struct gw_ui *ui, struct gw_req *r, const struct gw_target *target);

/* Frees the module and what it kept. NULL allowed. */
void gw_ui_free(struct gw_ui *ui);

#endif
