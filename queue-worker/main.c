/* queue-worker entry point: configuration, start-up, signals, the fetch thread
 * (the one caller of cmn_jscons_fetch, which fetches only for free slots) and the
 * main loop, which owns every call. The hand-off between the two threads is a
 * locked queue plus qw_http_wakeup; signals reach the loop through a self-pipe
 * that curl_multi_poll watches. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "call.h"
#include "cmn/cbrules.h"
#include "cmn/duration.h"
#include "cmn/jsconsumer.h"
#include "cmn/jspub.h"
#include "cmn/nats.h"
#include "cmn/log.h"
#include "cmn/metrics.h"
#include "cmn/resolver.h"
#include "config.h"
#include "health.h"
#include "http.h"

#define PROGRAM "queue-worker"
#define M_RECONNECTS "queue_worker_nats_reconnect_total"
#define M_NATS_READY "queue_worker_nats_ready"
#define IDLE_POLL_MS 10000
#define PUBLISH_TIMEOUT_MS 5000
#define BURST_WAIT_MS 50
/* In a burst, the fetch thread waits until this share of the slots is free
 * (one pull request per several calls, not one per call), but no longer than
 * BURST_GATHER_MS, so the slots never sit idle while the stream has calls. */
#define BURST_GATHER_DIVISOR 4
#define BURST_GATHER_MS 2
/* After the drain deadline, how long settled calls may wait for the server's
 * confirmation before the worker exits anyway (they are then redelivered). */
#define SETTLE_GRACE_MS 2000

/* Up to this max_inflight the worker's publishes are written at once. */
#define SEND_ASAP_MAX_INFLIGHT 8

struct worker {
    struct qw_config cfg;
    struct cmn_nats *nats;
    struct cmn_jscons *cons;
    struct cmn_jspub *pub;
    struct cmn_recs *recs;
    struct cmn_cbrules *callback_rules;
    struct qw_signer *signer;
    char worker_name[CMN_REC_WORKER_MAX];
    char queue_label[2 * CMN_QUEUE_MAX + 16]; /* queue="<faas_nats_channel>" */
    struct qw_http *http;
    struct cmn_resolver *resolver;
    struct cmn_metrics *metrics;
    struct qw_health *health;
    struct qw_calls *calls;
    atomic_int health_state; /* enum qw_health_state */
    atomic_bool closed;      /* NATS reconnect budget exhausted */
    atomic_bool fatal;       /* NATS set-up impossible (non-editable difference) */
    atomic_bool disconnected;

    /* fetch thread ↔ main thread hand-off, guarded by `lock` */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t free_slots; /* max_inflight minus messages fetched and not yet released */
    int64_t fetch_want; /* free slots at which the fetch thread wants to be woken */
    bool fetch_stop;
    bool fetch_done;
    struct cmn_js_msg **queue; /* fetched, not yet started; never more than max_inflight */
    int64_t queue_len;
    pthread_t fetch_thread;
    bool fetch_started;
};

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(signal_pipe[1], &b, 1); /* async-signal-safe; full pipe = already woken */
    (void)r;
    errno = saved;
}

static int setup_signals(struct cmn_err *err)
{
    if (pipe(signal_pipe) != 0)
        return cmn_err_set(err, CMN_ERR_IO, errno, "pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(signal_pipe[i], F_GETFL);
        fcntl(signal_pipe[i], F_SETFL, fl | O_NONBLOCK);
        fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return CMN_OK;
}

/* --------------------------------------------------------- NATS events */

static void on_nats_event(enum cmn_nats_event event, const char *detail, void *closure)
{
    struct worker *w = closure;
    const char *d = detail ? detail : "";
    switch (event) {
    case CMN_NATS_READY:
        if (atomic_exchange(&w->disconnected, false)) {
            cmn_metrics_add(w->metrics, M_RECONNECTS, NULL, 1);
            LOG_INFO(NULL, "nats reconnected, consumer ready detail=\"%s\"", d);
        } else {
            LOG_INFO(NULL, "nats connected, consumer ready detail=\"%s\"", d);
        }
        atomic_store(&w->health_state, QW_HEALTH_READY);
        cmn_metrics_set(w->metrics, M_NATS_READY, w->queue_label, 1);
        break;
    case CMN_NATS_CHANGED:
        LOG_INFO(NULL, "nats reconciled detail=\"%s\"", d);
        break;
    case CMN_NATS_NOT_READY:
        atomic_store(&w->health_state, QW_HEALTH_RECONNECTING);
        cmn_metrics_set(w->metrics, M_NATS_READY, w->queue_label, 0);
        LOG_WARN(NULL, "nats not ready detail=\"%s\"", d);
        break;
    case CMN_NATS_CONNECT_FAILED:
        LOG_WARN(NULL, "nats connect failed detail=\"%s\"", d);
        break;
    case CMN_NATS_DISCONNECTED:
        atomic_store(&w->disconnected, true);
        cmn_metrics_set(w->metrics, M_NATS_READY, w->queue_label, 0);
        atomic_store(&w->health_state, QW_HEALTH_RECONNECTING);
        LOG_WARN(NULL,
                 "nats disconnected, reconnecting (budget %" PRId64 " x %" PRId64
                 "ms) detail=\"%s\"",
                 w->cfg.faas_max_reconnect, w->cfg.faas_reconnect_delay_ms, d);
        break;
    case CMN_NATS_FATAL:
        atomic_store(&w->health_state, QW_HEALTH_DEAD);
        cmn_metrics_set(w->metrics, M_NATS_READY, w->queue_label, 0);
        atomic_store(&w->fatal, true);
        LOG_ERROR(NULL, "nats set-up impossible, exiting detail=\"%s\"", d);
        qw_http_wakeup(w->http);
        break;
    case CMN_NATS_CLOSED:
        atomic_store(&w->health_state, QW_HEALTH_DEAD);
        cmn_metrics_set(w->metrics, M_NATS_READY, w->queue_label, 0);
        atomic_store(&w->closed, true);
        LOG_ERROR(NULL, "nats connection closed, reconnect budget exhausted detail=\"%s\"", d);
        qw_http_wakeup(w->http);
        break;
    }
}

static void wake_loop(void *closure)
{
    struct worker *w = closure;
    qw_http_wakeup(w->http);
}

/* ------------------------------------------------------ the fetch thread */

static void sleep_locked(struct worker *w, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&w->cond, &w->lock, &ts);
}

/* Fetches only for free slots, with a wait far below ack_wait, so that no
 * message ages in a local buffer: each one is started as soon as it lands.
 * A pull request returns when its batch is full or it expires, so an idle
 * worker asks for ONE message (returned the moment it arrives) and, once
 * something came, asks for the remaining free slots with a short wait
 * (burst) until a burst comes back empty. */
static void *fetch_main(void *arg)
{
    struct worker *w = arg;
    int64_t wait_ms = w->cfg.ack_wait_ms / 3;
    if (wait_ms > 2000)
        wait_ms = 2000;
    if (wait_ms < 10)
        wait_ms = 10;
    struct cmn_js_msg **msgs = calloc((size_t)w->cfg.max_inflight, sizeof(*msgs));
    bool failing = false, burst = false;
    int64_t gather = w->cfg.max_inflight / BURST_GATHER_DIVISOR;
    if (gather < 1)
        gather = 1;
    pthread_mutex_lock(&w->lock);
    while (msgs && !w->fetch_stop) {
        if (w->free_slots <= 0) {
            w->fetch_want = 1;
            pthread_cond_wait(&w->cond, &w->lock);
            continue;
        }
        if (burst && w->free_slots < gather) {
            /* gather free slots for one larger pull request */
            w->fetch_want = gather;
            sleep_locked(w, BURST_GATHER_MS);
            w->fetch_want = 1;
            if (w->fetch_stop)
                break;
        }
        int batch = burst ? (int)w->free_slots : 1;
        int64_t wait = burst ? BURST_WAIT_MS : wait_ms;
        pthread_mutex_unlock(&w->lock);

        struct cmn_err err;
        int count = 0;
        int64_t t0 = qw_now_ms();
        enum cmn_status st = cmn_jscons_fetch(w->cons, batch, wait, msgs, &count, &err);
        /* "not ready" and "not found" are already told by the NATS events */
        bool quiet = st == CMN_ERR_UNAVAILABLE || st == CMN_ERR_NOT_FOUND;
        if (st != CMN_OK && !quiet && !failing)
            LOG_WARN(NULL, "fetch failed error=\"%s\" (%s); retrying", err.msg,
                     cmn_status_name(st));
        else if (st == CMN_OK && failing)
            LOG_INFO(NULL, "fetch working again");
        failing = st != CMN_OK && (failing || !quiet);
        if (count < 0 || count > batch)
            count = 0;
        burst = st == CMN_OK && count > 0;

        pthread_mutex_lock(&w->lock);
        for (int i = 0; i < count; i++)
            w->queue[w->queue_len++] = msgs[i];
        w->free_slots -= count;
        if (count > 0) {
            pthread_mutex_unlock(&w->lock);
            qw_http_wakeup(w->http);
            pthread_mutex_lock(&w->lock);
        }
        /* never spin on a fetch that fails at once (e.g. connection closed) */
        int64_t left = wait - (qw_now_ms() - t0);
        if (st != CMN_OK && left > 0 && !w->fetch_stop)
            sleep_locked(w, left);
    }
    w->fetch_done = true;
    pthread_mutex_unlock(&w->lock);
    qw_http_wakeup(w->http);
    free(msgs);
    return NULL;
}

static void on_slot_free(void *closure)
{
    struct worker *w = closure;
    pthread_mutex_lock(&w->lock);
    w->free_slots++;
    if (w->free_slots >= w->fetch_want)
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void stop_fetching(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->fetch_stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Moves the fetched messages out of the hand-off queue into `out` (capacity
 * max_inflight); returns how many, and whether the fetch thread has ended. */
static int64_t take_fetched(struct worker *w, struct cmn_js_msg **out, bool *fetch_done)
{
    pthread_mutex_lock(&w->lock);
    int64_t n = w->queue_len;
    memcpy(out, w->queue, (size_t)n * sizeof(*out));
    w->queue_len = 0;
    *fetch_done = w->fetch_done;
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* ------------------------------------------------------------ main loop */

static void drain_signal_pipe(bool *stop, bool *reload)
{
    unsigned char buf[64];
    ssize_t n;
    while ((n = read(signal_pipe[0], buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == SIGHUP)
                *reload = true;
            else
                *stop = true;
        }
    }
}

/* Returns the process exit code. */
static int run(struct worker *w)
{
    struct cmn_js_msg **batch = calloc((size_t)w->cfg.max_inflight, sizeof(*batch));
    if (!batch) {
        LOG_ERROR(NULL, "out of memory");
        return 1;
    }
    bool draining = false, aborted = false;
    int64_t deadline = 0;
    int code = 0;
    for (;;) {
        if (atomic_load(&w->closed)) {
            LOG_ERROR(NULL,
                      "exiting: NATS unavailable beyond the reconnect budget; "
                      "%zu calls in flight will be redelivered after ack_wait",
                      qw_calls_count(w->calls));
            code = 1;
            break;
        }
        if (atomic_load(&w->fatal)) {
            LOG_ERROR(NULL,
                      "exiting: the NATS stream or consumer cannot be used as configured; "
                      "%zu calls in flight will be redelivered after ack_wait",
                      qw_calls_count(w->calls));
            code = 1;
            break;
        }
        qw_calls_collect(w->calls);
        bool fetch_done = false;
        int64_t n = take_fetched(w, batch, &fetch_done);
        for (int64_t i = 0; i < n; i++) {
            if (draining)
                qw_calls_hand_back(w->calls, &batch[i]);
            else
                qw_calls_start(w->calls, &batch[i]);
        }
        int64_t now = qw_now_ms();
        int64_t next = qw_calls_run_timers(w->calls, now);
        if (draining) {
            if (now >= deadline && !aborted && qw_calls_count(w->calls) > 0) {
                LOG_WARN(NULL, "shutdown: drain_timeout reached with %zu calls in flight",
                         qw_calls_count(w->calls));
                qw_calls_abort_all(w->calls);
                aborted = true;
            }
            if (qw_calls_count(w->calls) == 0 && fetch_done && n == 0)
                break;
            if (now >= deadline + SETTLE_GRACE_MS && fetch_done) {
                LOG_WARN(NULL,
                         "shutdown: %zu calls still await NATS's confirmation of their ack; "
                         "they will be redelivered after ack_wait",
                         qw_calls_count(w->calls));
                break;
            }
            if (now >= deadline && deadline + SETTLE_GRACE_MS < next)
                next = deadline + SETTLE_GRACE_MS;
            if (deadline < next)
                next = deadline;
        }
        int64_t timeout = next == INT64_MAX ? IDLE_POLL_MS : next - now;
        if (timeout > IDLE_POLL_MS)
            timeout = IDLE_POLL_MS;
        if (timeout < 0)
            timeout = 0;
        bool sig = false;
        struct cmn_err err;
        if (qw_http_run(w->http, (int)timeout, signal_pipe[0], &sig, &err) != CMN_OK) {
            LOG_ERROR(NULL, "http loop error=\"%s\"", err.msg);
            usleep(100000);
        }
        if (sig) {
            bool stop = false, reload = false;
            drain_signal_pipe(&stop, &reload);
            if (reload && w->resolver) {
                if (cmn_resolver_reload(w->resolver, &err) == CMN_OK)
                    LOG_INFO(NULL, "SIGHUP: functions reloaded");
                else
                    LOG_ERROR(NULL, "SIGHUP: reload failed error=\"%s\"", err.msg);
            }
            if (stop && !draining) {
                draining = true;
                deadline = qw_now_ms() + w->cfg.drain_timeout_ms;
                stop_fetching(w);
                LOG_INFO(NULL,
                         "shutdown: stopped fetching, draining %zu calls in flight "
                         "(drain_timeout %" PRId64 "ms)",
                         qw_calls_count(w->calls), w->cfg.drain_timeout_ms);
            } else if (stop) {
                LOG_WARN(NULL, "shutdown: second signal, handing back calls in flight now");
                deadline = qw_now_ms();
                aborted = false;
            }
        }
    }
    free(batch);
    return code;
}

/* ------------------------------------------------------------- start-up */

static void declare_metrics(struct cmn_metrics *m, const char *queue_label)
{
    cmn_metrics_declare(m, M_RECONNECTS, CMN_METRIC_COUNTER, "NATS reconnections");
    cmn_metrics_add(m, M_RECONNECTS, NULL, 0);
    cmn_metrics_declare(m, M_NATS_READY, CMN_METRIC_GAUGE,
                        "1 while connected to NATS with the stream and the consumer in place "
                        "(label queue: the faas_nats_channel it serves)");
    cmn_metrics_set(m, M_NATS_READY, queue_label, 0);
}

static void shutdown_worker(struct worker *w)
{
    if (w->fetch_started) {
        stop_fetching(w);
        pthread_join(w->fetch_thread, NULL);
    }
    /* fatal path only: fetched, unstarted messages are left to ack_wait */
    for (int64_t i = 0; w->queue && i < w->queue_len; i++)
        cmn_js_msg_free(w->queue[i]);
    qw_calls_free(w->calls);
    cmn_recs_free(w->recs);
    cmn_cbrules_free(w->callback_rules);
    qw_signer_free(w->signer);
    cmn_jscons_free(w->cons);
    cmn_jspub_free(w->pub);
    cmn_nats_free(w->nats);
    qw_health_free(w->health);
    qw_http_free(w->http);
    cmn_resolver_free(w->resolver);
    cmn_metrics_free(w->metrics);
    free(w->queue);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    qw_config_free(&w->cfg);
}

static int start(struct worker *w)
{
    const struct qw_config *cfg = &w->cfg;
    struct cmn_err err;
    char url[512], ack[32], up[32];
    qw_config_nats_url(cfg, url, sizeof(url));

    w->metrics = cmn_metrics_new();
    w->queue = calloc((size_t)cfg->max_inflight, sizeof(*w->queue));
    if (!w->metrics || !w->queue) {
        LOG_ERROR(NULL, "out of memory");
        return 1;
    }
    char esc[2 * CMN_QUEUE_MAX];
    snprintf(w->queue_label, sizeof(w->queue_label), "queue=\"%s\"",
             cmn_metrics_label_escape(cfg->faas_nats_channel, esc, sizeof(esc)));
    declare_metrics(w->metrics, w->queue_label);
    w->free_slots = cfg->max_inflight;
    w->fetch_want = 1;
    if (cmn_cbrules_parse(cfg->callback_allowlist, &w->callback_rules, &err) != CMN_OK) {
        LOG_ERROR(NULL, "%s", err.msg);
        return 2;
    }
    if (qw_signer_load(cfg->secret_mount_path, &w->signer, &err) != CMN_OK) {
        LOG_ERROR(NULL, "callback signing keys: %s", err.msg);
        return 2;
    }
    if (qw_signer_keys(w->signer) == 0)
        LOG_WARN(NULL,
                 "no callback signing key (%s/callback-signing-key*): callbacks are sent "
                 "unsigned",
                 cfg->secret_mount_path);
    else
        LOG_INFO(NULL, "callbacks signed with %zu key(s) (Standard Webhooks, v1)",
                 qw_signer_keys(w->signer));
    if (cmn_cbrules_open(w->callback_rules))
        LOG_WARN(NULL, "callback_allowlist is empty: callbacks may go to any destination, "
                       "including internal services");
    if (!cfg->gateway_invoke) {
        struct cmn_resolver_config rc = {
            .functions_file = cfg->direct_functions || (cfg->functions_provider_url &&
                                                        cfg->functions_provider_url[0])
                                  ? NULL
                                  : cfg->functions_file,
            .direct_functions = cfg->direct_functions,
            .provider_url = cfg->direct_functions ? NULL : cfg->functions_provider_url,
            .direct_suffix = cfg->direct_functions_suffix,
        };
        if (cmn_resolver_new(&rc, &w->resolver, &err) != CMN_OK) {
            LOG_ERROR(NULL, "resolver: %s", err.msg);
            return 2;
        }
    }
    if (qw_http_new((int)(cfg->max_inflight * 2 + 8), &w->http, &err) != CMN_OK) {
        LOG_ERROR(NULL, "http client: %s", err.msg);
        return 1;
    }
    struct qw_call_env env = {
        .cfg = cfg,
        .http = w->http,
        .resolver = w->resolver,
        .metrics = w->metrics,
        .on_slot_free = on_slot_free,
        .closure = w,
    };
    if (cfg->metrics_port > 0 && qw_health_start((int)cfg->metrics_port, w->metrics,
                                                 &w->health_state, &w->health, &err) != CMN_OK) {
        LOG_ERROR(NULL, "health/metrics server: %s", err.msg);
        return 1;
    }
    if (setup_signals(&err) != CMN_OK) {
        LOG_ERROR(NULL, "signals: %s", err.msg);
        return 1;
    }
    char client[300], host[256];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    snprintf(client, sizeof(client), "queue-worker@%s", host);
    struct cmn_nats_config nc = {
        .url = url,
        .client_name = client,
        .stream = cfg->faas_nats_channel,
        .max_msg_bytes = cfg->max_body_bytes + 65536,
        .duplicate_window_ms = 120000,
        .replicas = (int)cfg->stream_replicas,
        .dead_letter_stream =
            cfg->dead_letter_stream && cfg->dead_letter_stream[0] ? cfg->dead_letter_stream : NULL,
        .records_bucket = cfg->call_records ? cfg->call_records_bucket : NULL,
        .record_ttl_ms = cfg->call_record_ttl_ms,
        .durable = cfg->faas_nats_queue_group,
        .manage_consumer = true,
        .ack_wait_ms = cfg->ack_wait_ms,
        .max_ack_pending = cfg->max_ack_pending,
        .max_reconnect = (int)cfg->faas_max_reconnect,
        .reconnect_wait_ms = cfg->faas_reconnect_delay_ms,
        .ping_interval_ms = cfg->nats_ping_interval_ms,
        .refresh_interval_ms = 1000,
        /* With few calls in flight each step of a call (fetch, claim,
         * outcome) is a round trip the worker waits for: write publishes at
         * once. With many, nats.c's batching (its flusher writes after 1 ms)
         * costs less CPU than a write per publish (measured: docs/benchmarks.md). */
        .send_asap = cfg->max_inflight <= SEND_ASAP_MAX_INFLIGHT,
        .on_event = on_nats_event,
        .closure = w,
    };
    LOG_INFO(NULL,
             "starting queue-worker version=%s channel=%s consumer=%s max_inflight=%" PRId64
             " ack_wait=%s upstream_timeout=%s nats=%s replicas=%" PRId64 " invoke=%s",
             CFAAS_VERSION, cfg->faas_nats_channel, cfg->faas_nats_queue_group, cfg->max_inflight,
             cmn_duration_format(cfg->ack_wait_ms, ack, sizeof(ack)),
             cmn_duration_format(cfg->upstream_timeout_ms, up, sizeof(up)), url,
             cfg->stream_replicas, cfg->gateway_invoke ? "gateway" : "direct");
    if (cmn_nats_open(&nc, &w->nats, &err) != CMN_OK) {
        LOG_ERROR(NULL, "nats: %s", err.msg);
        return err.status == CMN_ERR_INVALID ? 2 : 1;
    }
    /* An unconfirmed ack is sent again every ack_wait/6 (at most 1 s). */
    int64_t resend = cfg->ack_wait_ms / 6 > 1000 ? 1000 : cfg->ack_wait_ms / 6;
    struct cmn_jscons_config cc = {
        .stream = cfg->faas_nats_channel,
        .durable = cfg->faas_nats_queue_group,
        .resend_ms = resend < 100 ? 100 : resend,
        .wake = wake_loop,
        .closure = w,
    };
    struct cmn_jspub_config pc = {
        .subject = cfg->dead_letter_stream ? cfg->dead_letter_stream : "",
        .timeout_ms = PUBLISH_TIMEOUT_MS,
        .max_pending = (int)cfg->max_inflight + 16,
        .send_on_caller = false,
        .single_send = true, /* dead letters carry no Nats-Msg-Id (see wire-format.md) */
        .wake = wake_loop,
        .closure = w,
    };
    if (cmn_jscons_new(w->nats, &cc, &w->cons, &err) != CMN_OK ||
        cmn_jspub_new(w->nats, &pc, &w->pub, &err) != CMN_OK) {
        LOG_ERROR(NULL, "nats: %s", err.msg);
        return 1;
    }
    if (cfg->call_records) {
        struct cmn_recs_config rc = {
            .bucket = cfg->call_records_bucket,
            .timeout_ms = 5000,
            .watch_cancels = true,
            .wake = wake_loop,
            .closure = w,
        };
        if (cmn_recs_new(w->nats, &rc, &w->recs, &err) != CMN_OK) {
            LOG_ERROR(NULL, "call records: %s", err.msg);
            return 1;
        }
    }
    snprintf(w->worker_name, sizeof(w->worker_name), "%.80s-%d", host, (int)getpid());
    env.cons = w->cons;
    env.pub = w->pub;
    env.recs = w->recs;
    env.callback_rules = w->callback_rules;
    env.signer = w->signer;
    env.worker = w->worker_name;
    w->calls = qw_calls_new(&env);
    if (!w->calls) {
        LOG_ERROR(NULL, "out of memory");
        return 1;
    }
    int rc = pthread_create(&w->fetch_thread, NULL, fetch_main, w);
    if (rc != 0) {
        LOG_ERROR(NULL, "pthread_create: %s", strerror(rc));
        return 1;
    }
    w->fetch_started = true;
    return -1;
}

int main(int argc, char **argv)
{
    static struct worker w; /* zeroed; its address is handed to other threads */
    int code = qw_config_init(&w.cfg, argc, argv);
    if (code >= 0) {
        qw_config_free(&w.cfg);
        return code;
    }
    if (!qw_http_global_init()) {
        LOG_ERROR(NULL, "libcurl initialisation failed");
        qw_config_free(&w.cfg);
        return 1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w.lock, NULL);
    atomic_init(&w.health_state, QW_HEALTH_STARTING);
    atomic_init(&w.closed, false);
    atomic_init(&w.fatal, false);
    atomic_init(&w.disconnected, false);

    code = start(&w);
    if (code < 0)
        code = run(&w);
    if (code == 0)
        LOG_INFO(NULL, "shutdown complete");
    shutdown_worker(&w);
    qw_http_global_cleanup();
    return code;
}
