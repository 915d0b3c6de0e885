/*
 * bench_js_publish: raw nats.c JetStream publish benchmark and queue pre-filler.
 *
 * Publishes N messages of B bytes to a file-storage WorkQueue stream (created
 * when missing with the DESIGN section 2 config: dup window 2 min), every message
 * in the queued-call wire format of DESIGN section 3 (raw body; headers
 * Nats-Msg-Id unique per message, Faas-Version: 1, Faas-Function,
 * Faas-Method, Faas-Path, Faas-Query, Faas-Start-Time, Content-Type).
 *
 *   async (default): js_PublishMsgAsync with at most --max-pending messages
 *     in flight; per-message ack latency is measured from just before the
 *     publish call to the ack handler (correlated by Nats-Msg-Id), then
 *     js_PublishAsyncComplete waits for the tail.
 *   --sync: js_PublishMsg, one message at a time, latency = call duration.
 *
 * Prints a human line and a machine line:
 *   RESULT mode=async count=N ok=N errors=0 duplicates=0 size=B max_pending=P
 *          seconds=S msgs_per_s=R p50_ms=X p99_ms=Y max_ms=Z
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#define MSG_ID_MAX 96

struct config {
    const char *url;
    const char *stream;
    const char *subject;
    const char *function;
    const char *path;
    const char *query;
    const char *id_prefix;
    int64_t count;
    int64_t size;
    int64_t max_pending;
    int64_t max_msg_size;
    int64_t ack_timeout_ms;
    bool sync;
    bool purge;
    bool quiet;
};

struct pub_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t *send_ns; /* per message, monotonic */
    int64_t *lat_ns;  /* per message; -1 until acked */
    int64_t inflight;
    int64_t acked;
    int64_t errors;
    int64_t duplicates;
    int64_t last_ack_ns;
    int64_t count;
    char prefix[MSG_ID_MAX];
    size_t prefix_len;
};

static struct pub_state g_state = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(
        f,
        "usage: %s [options]\n"
        "  --url URL            NATS URL (default env nats_url or nats://127.0.0.1:4222)\n"
        "  --stream NAME        stream name (default faas-request)\n"
        "  --subject SUBJ       subject (default: the stream name)\n"
        "  --count N            messages to publish (default 10000; 0 = only ensure/purge)\n"
        "  --size B             payload bytes (default 1024)\n"
        "  --max-pending P      async publishes in flight (default 256)\n"
        "  --sync               publish one at a time, waiting for each ack\n"
        "  --function NAME      Faas-Function header (default echo)\n"
        "  --path P             Faas-Path header (default empty)\n"
        "  --query Q            Faas-Query header (default empty)\n"
        "  --max-msg-size B     MaxMsgSize when the stream is created (default -1 = unlimited)\n"
        "  --id-prefix S        Nats-Msg-Id prefix (default bench-<pid>-<ns>)\n"
        "  --ack-timeout-ms T   give up waiting for acks after T ms (default 60000)\n"
        "  --purge              purge the stream before publishing\n"
        "  --quiet              only print the RESULT line\n",
        prog);
}

static int parse_i64(const char *name, const char *s, int64_t min, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (s == NULL || *s == '\0') {
        fprintf(stderr, "bench_js_publish: %s needs a value\n", name);
        return -1;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min) {
        fprintf(stderr, "bench_js_publish: invalid %s '%s'\n", name, s);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            exit(0);
        } else if (strcmp(a, "--sync") == 0) {
            cfg->sync = true;
        } else if (strcmp(a, "--purge") == 0) {
            cfg->purge = true;
        } else if (strcmp(a, "--quiet") == 0) {
            cfg->quiet = true;
        } else if (v == NULL) {
            fprintf(stderr, "bench_js_publish: unknown option or missing value: %s\n", a);
            return -1;
        } else {
            int rc = 0;
            if (strcmp(a, "--url") == 0)
                cfg->url = v;
            else if (strcmp(a, "--stream") == 0)
                cfg->stream = v;
            else if (strcmp(a, "--subject") == 0)
                cfg->subject = v;
            else if (strcmp(a, "--function") == 0)
                cfg->function = v;
            else if (strcmp(a, "--path") == 0)
                cfg->path = v;
            else if (strcmp(a, "--query") == 0)
                cfg->query = v;
            else if (strcmp(a, "--id-prefix") == 0)
                cfg->id_prefix = v;
            else if (strcmp(a, "--count") == 0)
                rc = parse_i64(a, v, 0, &cfg->count);
            else if (strcmp(a, "--size") == 0)
                rc = parse_i64(a, v, 0, &cfg->size);
            else if (strcmp(a, "--max-pending") == 0)
                rc = parse_i64(a, v, 1, &cfg->max_pending);
            else if (strcmp(a, "--max-msg-size") == 0)
                rc = parse_i64(a, v, -1, &cfg->max_msg_size);
            else if (strcmp(a, "--ack-timeout-ms") == 0)
                rc = parse_i64(a, v, 1, &cfg->ack_timeout_ms);
            else {
                fprintf(stderr, "bench_js_publish: unknown option: %s\n", a);
                return -1;
            }
            if (rc != 0)
                return -1;
            i++;
        }
    }
    if (cfg->subject == NULL)
        cfg->subject = cfg->stream;
    if (cfg->size > INT32_MAX || cfg->max_msg_size > INT32_MAX) {
        fprintf(stderr, "bench_js_publish: sizes must fit in 32 bits\n");
        return -1;
    }
    return 0;
}

static int nats_fail(const char *what, natsStatus s, jsErrCode jerr)
{
    fprintf(stderr, "bench_js_publish: %s failed: %s (jerr %d)\n", what, natsStatus_GetText(s),
            (int)jerr);
    nats_PrintLastErrorStack(stderr);
    return -1;
}

/* Create the stream when missing (idempotent); warn if an existing one differs. */
static int ensure_stream(jsCtx *js, const struct config *cfg)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;

    s = js_GetStreamInfo(&si, js, cfg->stream, NULL, &jerr);
    if (s == NATS_OK) {
        if (si->Config->Retention != js_WorkQueuePolicy || si->Config->Storage != js_FileStorage)
            fprintf(
                stderr,
                "bench_js_publish: warning: existing stream %s is not a file-storage work queue\n",
                cfg->stream);
        jsStreamInfo_Destroy(si);
        return 0;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return nats_fail("js_GetStreamInfo", s, jerr);

    {
        jsStreamConfig sc;
        const char *subjects[1];

        subjects[0] = cfg->subject;
        jsStreamConfig_Init(&sc);
        sc.Name = cfg->stream;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Retention = js_WorkQueuePolicy;
        sc.Storage = js_FileStorage;
        sc.Duplicates = 2LL * 60 * 1000000000LL;
        sc.MaxMsgSize = (int32_t)cfg->max_msg_size;
        jerr = 0;
        s = js_AddStream(&si, js, &sc, NULL, &jerr);
        if (s != NATS_OK && jerr != JSStreamNameExistErr)
            return nats_fail("js_AddStream", s, jerr);
        if (si != NULL)
            jsStreamInfo_Destroy(si);
    }
    return 0;
}

static int64_t msg_index_from_id(const char *id)
{
    char *end = NULL;
    long long v;

    if (id == NULL || strncmp(id, g_state.prefix, g_state.prefix_len) != 0 ||
        id[g_state.prefix_len] != '-')
        return -1;
    errno = 0;
    v = strtoll(id + g_state.prefix_len + 1, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v >= g_state.count)
        return -1;
    return (int64_t)v;
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    int64_t now = mono_ns();
    const char *id = NULL;
    int64_t idx;
    static int err_prints;

    (void)js;
    (void)closure;
    if (msg != NULL)
        natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
    idx = msg_index_from_id(id);

    pthread_mutex_lock(&g_state.mu);
    g_state.inflight--;
    g_state.last_ack_ns = now;
    if (pa != NULL && pae == NULL) {
        g_state.acked++;
        if (pa->Duplicate)
            g_state.duplicates++;
        if (idx >= 0)
            g_state.lat_ns[idx] = now - g_state.send_ns[idx];
    } else {
        g_state.errors++;
        if (err_prints++ < 5 && pae != NULL)
            fprintf(stderr, "bench_js_publish: publish error for %s: %s (%s, jerr %d)\n",
                    id ? id : "?", natsStatus_GetText(pae->Err), pae->ErrText ? pae->ErrText : "",
                    (int)pae->ErrCode);
    }
    pthread_cond_broadcast(&g_state.cv);
    pthread_mutex_unlock(&g_state.mu);
    natsMsg_Destroy(msg);
}

static int set_headers(natsMsg *msg, const struct config *cfg, int64_t i)
{
    char id[MSG_ID_MAX + 32];
    char start[32];
    natsStatus s;

    snprintf(id, sizeof(id), "%s-%" PRId64, g_state.prefix, i);
    snprintf(start, sizeof(start), "%" PRId64, real_ns());
    s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Faas-Version", "1");
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Faas-Function", cfg->function);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Faas-Method", "POST");
    /* Empty path and query are absent headers, as the common codec sends them:
     * nats.c 3.4.1 mis-parses an empty header value on receipt (the next line
     * is taken as its value), which would hide e.g. Faas-Version. */
    if (s == NATS_OK && cfg->path[0] != '\0')
        s = natsMsgHeader_Set(msg, "Faas-Path", cfg->path);
    if (s == NATS_OK && cfg->query[0] != '\0')
        s = natsMsgHeader_Set(msg, "Faas-Query", cfg->query);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Faas-Start-Time", start);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Content-Type", "application/octet-stream");
    if (s != NATS_OK)
        return nats_fail("natsMsgHeader_Set", s, 0);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile over sorted values. */
static double pct_ms(const int64_t *sorted, int64_t n, double p)
{
    int64_t rank;

    if (n <= 0)
        return 0.0;
    rank = (int64_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1e6;
}

static int run_async(jsCtx *js, const struct config *cfg, const char *payload, int64_t *t_start,
                     int64_t *t_end)
{
    int64_t i;
    int64_t deadline;
    jsPubOptions po;
    natsStatus s;
    struct timespec abs;

    *t_start = mono_ns();
    for (i = 0; i < cfg->count; i++) {
        natsMsg *msg = NULL;

        s = natsMsg_Create(&msg, cfg->subject, NULL, payload, (int)cfg->size);
        if (s != NATS_OK)
            return nats_fail("natsMsg_Create", s, 0);
        if (set_headers(msg, cfg, i) != 0) {
            natsMsg_Destroy(msg);
            return -1;
        }
        pthread_mutex_lock(&g_state.mu);
        while (g_state.inflight >= cfg->max_pending)
            pthread_cond_wait(&g_state.cv, &g_state.mu);
        g_state.inflight++;
        g_state.send_ns[i] = mono_ns();
        pthread_mutex_unlock(&g_state.mu);

        for (;;) {
            s = js_PublishMsgAsync(js, &msg, NULL);
            if (s != NATS_TIMEOUT) /* NATS_TIMEOUT = library stall (MaxPending); retry */
                break;
        }
        natsMsg_Destroy(msg); /* no-op when the library took ownership */
        if (s != NATS_OK) {
            pthread_mutex_lock(&g_state.mu);
            g_state.inflight--;
            g_state.errors++;
            pthread_mutex_unlock(&g_state.mu);
            return nats_fail("js_PublishMsgAsync", s, 0);
        }
    }

    jsPubOptions_Init(&po);
    po.MaxWait = cfg->ack_timeout_ms;
    s = js_PublishAsyncComplete(js, &po);
    if (s != NATS_OK)
        fprintf(stderr, "bench_js_publish: js_PublishAsyncComplete: %s\n", natsStatus_GetText(s));

    /* The library may signal completion just before our handler's bookkeeping ends. */
    deadline = real_ns() + cfg->ack_timeout_ms * 1000000LL;
    abs.tv_sec = (time_t)(deadline / 1000000000LL);
    abs.tv_nsec = (long)(deadline % 1000000000LL);
    pthread_mutex_lock(&g_state.mu);
    while (g_state.inflight > 0) {
        if (pthread_cond_timedwait(&g_state.cv, &g_state.mu, &abs) != 0)
            break;
    }
    *t_end = g_state.last_ack_ns > 0 ? g_state.last_ack_ns : mono_ns();
    if (g_state.inflight > 0) {
        fprintf(stderr, "bench_js_publish: %" PRId64 " publishes never acknowledged\n",
                g_state.inflight);
        g_state.errors += g_state.inflight;
    }
    pthread_mutex_unlock(&g_state.mu);
    return 0;
}

static int run_sync(jsCtx *js, const struct config *cfg, const char *payload, int64_t *t_start,
                    int64_t *t_end)
{
    int64_t i;
    natsStatus s;

    *t_start = mono_ns();
    for (i = 0; i < cfg->count; i++) {
        natsMsg *msg = NULL;
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        int64_t t0;

        s = natsMsg_Create(&msg, cfg->subject, NULL, payload, (int)cfg->size);
        if (s != NATS_OK)
            return nats_fail("natsMsg_Create", s, 0);
        if (set_headers(msg, cfg, i) != 0) {
            natsMsg_Destroy(msg);
            return -1;
        }
        t0 = mono_ns();
        s = js_PublishMsg(&pa, js, msg, NULL, &jerr);
        g_state.lat_ns[i] = mono_ns() - t0;
        if (s == NATS_OK) {
            g_state.acked++;
            if (pa != NULL && pa->Duplicate)
                g_state.duplicates++;
        } else {
            g_state.lat_ns[i] = -1;
            if (g_state.errors++ < 5)
                fprintf(stderr, "bench_js_publish: js_PublishMsg: %s (jerr %d)\n",
                        natsStatus_GetText(s), (int)jerr);
        }
        jsPubAck_Destroy(pa);
        natsMsg_Destroy(msg);
    }
    *t_end = mono_ns();
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg = {
        .url = NULL,
        .stream = "faas-request",
        .function = "echo",
        .path = "",
        .query = "",
        .count = 10000,
        .size = 1024,
        .max_pending = 256,
        .max_msg_size = -1,
        .ack_timeout_ms = 60000,
    };
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions jo;
    natsStatus s;
    char *payload = NULL;
    int64_t t_start = 0, t_end = 0, i, n_ok = 0;
    double secs, rate;
    int rc = 1;

    if (parse_args(argc, argv, &cfg) != 0) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (cfg.url == NULL)
        cfg.url = getenv("nats_url") != NULL ? getenv("nats_url") : "nats://127.0.0.1:4222";
    if (cfg.id_prefix != NULL)
        snprintf(g_state.prefix, sizeof(g_state.prefix), "%s", cfg.id_prefix);
    else
        snprintf(g_state.prefix, sizeof(g_state.prefix), "bench-%ld-%" PRId64, (long)getpid(),
                 real_ns());
    g_state.prefix_len = strlen(g_state.prefix);
    g_state.count = cfg.count;

    g_state.send_ns = calloc((size_t)(cfg.count > 0 ? cfg.count : 1), sizeof(int64_t));
    g_state.lat_ns = calloc((size_t)(cfg.count > 0 ? cfg.count : 1), sizeof(int64_t));
    payload = malloc((size_t)(cfg.size > 0 ? cfg.size : 1));
    if (g_state.send_ns == NULL || g_state.lat_ns == NULL || payload == NULL) {
        fprintf(stderr, "bench_js_publish: out of memory\n");
        return 1;
    }
    for (i = 0; i < cfg.count; i++)
        g_state.lat_ns[i] = -1;
    memset(payload, 'x', (size_t)(cfg.size > 0 ? cfg.size : 1));

    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, cfg.url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, "bench_js_publish");
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    if (s != NATS_OK) {
        nats_fail("connect", s, 0);
        goto out;
    }
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = cfg.max_pending + 16; /* our own window is the real bound */
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.StallWait = 1000;
    s = natsConnection_JetStream(&js, nc, &jo);
    if (s != NATS_OK) {
        nats_fail("natsConnection_JetStream", s, 0);
        goto out;
    }
    if (ensure_stream(js, &cfg) != 0)
        goto out;
    if (cfg.purge) {
        jsErrCode jerr = 0;
        s = js_PurgeStream(js, cfg.stream, NULL, &jerr);
        if (s != NATS_OK) {
            nats_fail("js_PurgeStream", s, jerr);
            goto out;
        }
    }
    if (cfg.count == 0) {
        if (!cfg.quiet)
            printf("stream %s ready%s\n", cfg.stream, cfg.purge ? " (purged)" : "");
        rc = 0;
        goto out;
    }

    if ((cfg.sync ? run_sync(js, &cfg, payload, &t_start, &t_end)
                  : run_async(js, &cfg, payload, &t_start, &t_end)) != 0)
        goto out;

    /* Compact the acknowledged latencies in place and sort them. */
    pthread_mutex_lock(&g_state.mu);
    for (i = 0; i < cfg.count; i++) {
        if (g_state.lat_ns[i] >= 0)
            g_state.lat_ns[n_ok++] = g_state.lat_ns[i];
    }
    pthread_mutex_unlock(&g_state.mu);
    qsort(g_state.lat_ns, (size_t)n_ok, sizeof(int64_t), cmp_i64);

    secs = (double)(t_end - t_start) / 1e9;
    rate = secs > 0 ? (double)g_state.acked / secs : 0.0;
    if (!cfg.quiet)
        printf("%s publish to %s: %" PRId64 " msgs of %" PRId64 " B in %.3f s = %.0f msgs/s, "
               "ack latency p50 %.3f ms p99 %.3f ms (errors %" PRId64 ", duplicates %" PRId64 ")\n",
               cfg.sync ? "sync" : "async", cfg.stream, g_state.acked, cfg.size, secs, rate,
               pct_ms(g_state.lat_ns, n_ok, 50), pct_ms(g_state.lat_ns, n_ok, 99), g_state.errors,
               g_state.duplicates);
    printf("RESULT mode=%s count=%" PRId64 " ok=%" PRId64 " errors=%" PRId64 " duplicates=%" PRId64
           " size=%" PRId64 " max_pending=%" PRId64
           " seconds=%.6f msgs_per_s=%.1f p50_ms=%.3f p99_ms=%.3f"
           " max_ms=%.3f\n",
           cfg.sync ? "sync" : "async", cfg.count, g_state.acked, g_state.errors,
           g_state.duplicates, cfg.size, cfg.sync ? (int64_t)1 : cfg.max_pending, secs, rate,
           pct_ms(g_state.lat_ns, n_ok, 50), pct_ms(g_state.lat_ns, n_ok, 99),
           n_ok > 0 ? (double)g_state.lat_ns[n_ok - 1] / 1e6 : 0.0);
    fflush(stdout);
    rc = (g_state.errors == 0 && g_state.acked == cfg.count) ? 0 : 1;

out:
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_Close();
    free(g_state.send_ns);
    free(g_state.lat_ns);
    free(payload);
    return rc;
}
