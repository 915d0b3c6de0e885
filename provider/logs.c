/* Log file lines in, NDJSON out. A non-follow request reads the file once and
 * answers in one reply; a follow request sends the same first part, then a
 * 250 ms timer reads what was appended since (complete lines only) and sends
 * it as chunks. Each follow stream is owned here and freed once: when the client
 * leaves (close callback, noticed early by the shared hang-up watch) or at
 * pv_logs_free. */
#include "logs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include "cmn/duration.h"
#include "cmn/hangup.h"
#include "cmn/log.h"

#define FOLLOW_POLL_MS 250
#define READ_CHUNK_BYTES 65536
/* At most this much of the file is sent per poll, so one stream cannot hog the loop. */
#define FOLLOW_MAX_BYTES_PER_POLL (1024 * 1024)

struct filter {
    char name[128];
    char ns[128];
    char instance[32]; /* "" = all */
    bool has_since;
    int64_t since_ms;
    long long tail; /* <= 0: all */
    bool follow;
};

struct stream {
    TAILQ_ENTRY(stream) link;
    struct pv_logs *logs;
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct cmn_hangup hangup;
    struct event *timer;
    int fd;
    off_t offset; /* file offset after the last complete line sent */
    struct filter f;
};

struct pv_logs {
    struct event_base *base;
    TAILQ_HEAD(, stream) streams;
};

/* ---- encoding ----------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..len), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    size_t n;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

char *pv_logs_encode(const char *instance, const struct timespec *when, const char *text,
                     size_t len, size_t *out_len)
{
    char *clean = malloc(len * 3 + 1);
    char *line = NULL;
    json_t *o = NULL;
    if (clean == NULL)
        return NULL;
    size_t o_len = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(s + i, len - i);
        if (n == 0) {
            memcpy(clean + o_len, "\xef\xbf\xbd", 3);
            o_len += 3;
            i++;
            continue;
        }
        memcpy(clean + o_len, s + i, n);
        o_len += n;
        i += n;
    }
    struct tm tm;
    gmtime_r(&when->tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)when->tv_nsec);
    o = json_pack("{s:s,s:s,s:s%}", "instance", instance, "timestamp", ts, "text", clean, o_len);
    char *dumped = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (dumped != NULL) {
        size_t dl = strlen(dumped);
        line = malloc(dl + 2);
        if (line != NULL) {
            memcpy(line, dumped, dl);
            line[dl] = '\n';
            line[dl + 1] = '\0';
            *out_len = dl + 1;
        }
    }
    free(dumped);
    json_decref(o);
    free(clean);
    return line;
}

/* ---- decoding and filtering --------------------------------------------- */

/* Appends the NDJSON message for one file line (`len` bytes, no newline) to
 * `out` when it passes the filter. Returns true if something was appended. */
static bool emit_line(const struct filter *f, const char *line, size_t len, struct evbuffer *out)
{
    json_t *in = json_loadb(line, len, 0, NULL);
    bool added = false;
    if (in == NULL)
        return false;
    const char *inst = json_string_value(json_object_get(in, "instance"));
    const char *ts = json_string_value(json_object_get(in, "timestamp"));
    json_t *text = json_object_get(in, "text");
    if (inst == NULL || ts == NULL || !json_is_string(text))
        goto out;
    if (f->instance[0] != '\0' && strcmp(f->instance, inst) != 0)
        goto out;
    if (f->has_since) {
        int64_t ms;
        if (!cmn_time_parse(ts, &ms) || ms < f->since_ms)
            goto out;
    }
    json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:O}", "name", f->name, "namespace", f->ns,
                            "instance", inst, "timestamp", ts, "text", text);
    char *s = msg != NULL ? json_dumps(msg, JSON_COMPACT) : NULL;
    if (s != NULL) {
        evbuffer_add(out, s, strlen(s));
        evbuffer_add(out, "\n", 1);
        added = true;
    }
    free(s);
    json_decref(msg);
out:
    json_decref(in);
    return added;
}

/* Reads complete lines of `fd` from `*offset` (advanced past them), at most
 * `max_bytes` (0 = no limit), appending the matching messages to `out`. With
 * tail > 0 only the last `tail` matches are kept. Returns false on a read error. */
static bool read_lines(int fd, off_t *offset, const struct filter *f, size_t max_bytes,
                       struct evbuffer *out)
{
    struct evbuffer *pending = evbuffer_new(); /* bytes of an unfinished line */
    struct evbuffer **ring = NULL;             /* tail: one evbuffer per kept message */
    size_t ring_n = 0, ring_head = 0;
    bool ok = true;
    char buf[READ_CHUNK_BYTES];
    size_t total = 0;
    if (pending == NULL)
        return false;
    if (f->tail > 0) {
        ring_n = (size_t)f->tail;
        ring = calloc(ring_n, sizeof *ring);
        if (ring == NULL) {
            evbuffer_free(pending);
            return false;
        }
    }
    off_t pos = *offset;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ok = false;
            break;
        }
        if (n == 0)
            break;
        pos += n;
        total += (size_t)n;
        evbuffer_add(pending, buf, (size_t)n);
        for (;;) {
            size_t ll;
            char *line = evbuffer_readln(pending, &ll, EVBUFFER_EOL_LF);
            if (line == NULL)
                break;
            *offset += (off_t)ll + 1;
            if (ring == NULL) {
                emit_line(f, line, ll, out);
            } else {
                struct evbuffer *one = evbuffer_new();
                if (one != NULL && emit_line(f, line, ll, one)) {
                    if (ring[ring_head] != NULL)
                        evbuffer_free(ring[ring_head]);
                    ring[ring_head] = one;
                    ring_head = (ring_head + 1) % ring_n;
                } else if (one != NULL) {
                    evbuffer_free(one);
                }
            }
            free(line);
        }
        if (max_bytes > 0 && total >= max_bytes)
            break;
    }
    for (size_t i = 0; ring != NULL && i < ring_n; i++) {
        struct evbuffer *one = ring[(ring_head + i) % ring_n];
        if (one != NULL) {
            evbuffer_add_buffer(out, one);
            evbuffer_free(one);
        }
    }
    free(ring);
    evbuffer_free(pending);
    return ok;
}

/* ---- replies ------------------------------------------------------------ */

static void reply_text(struct evhttp_request *req, int code, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    if (b != NULL) {
        evbuffer_add(b, text, strlen(text));
        evbuffer_add(b, "\n", 1);
    }
    evhttp_send_reply(req, code, NULL, b);
    if (b != NULL)
        evbuffer_free(b);
}

static bool parse_filter(const char *query, struct filter *f)
{
    struct evkeyvalq params;
    memset(&params, 0, sizeof params);
    bool ok = true;
    if (query == NULL || evhttp_parse_query_str(query, &params) != 0) {
        evhttp_clear_headers(&params);
        return query == NULL;
    }
    const char *tail = evhttp_find_header(&params, "tail");
    const char *since = evhttp_find_header(&params, "since");
    const char *follow = evhttp_find_header(&params, "follow");
    const char *inst = evhttp_find_header(&params, "instance");
    if (tail != NULL && tail[0] != '\0') {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(tail, &end, 10);
        if (errno != 0 || end == tail || *end != '\0')
            ok = false;
        else
            f->tail = v;
    }
    if (since != NULL && since[0] != '\0') {
        if (!cmn_time_parse(since, &f->since_ms))
            ok = false;
        else
            f->has_since = true;
    }
    if (follow != NULL)
        f->follow = strcasecmp(follow, "true") == 0 || strcmp(follow, "1") == 0;
    if (inst != NULL && strlen(inst) < sizeof f->instance)
        snprintf(f->instance, sizeof f->instance, "%s", inst);
    evhttp_clear_headers(&params);
    return ok;
}

static void stream_free(struct stream *s)
{
    cmn_hangup_stop(&s->hangup);
    TAILQ_REMOVE(&s->logs->streams, s, link);
    if (s->timer != NULL)
        event_free(s->timer);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static void on_stream_close(struct evhttp_connection *conn, void *arg)
{
    struct stream *s = arg;
    (void)conn;
    LOG_DEBUG(NULL, "logs of %s.%s: follower left", s->f.name, s->f.ns);
    /* A request still on the connection is freed by evhttp after this; one
     * that evhttp detached (write error) is ours to free. */
    if (s->req != NULL && evhttp_request_get_connection(s->req) == NULL)
        evhttp_request_free(s->req);
    s->req = NULL;
    s->conn = NULL;
    stream_free(s);
}

static void on_follow_timer(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;
    (void)fd;
    (void)what;
    struct evbuffer *out = evbuffer_new();
    if (out != NULL) {
        struct filter f = s->f;
        f.tail = 0;
        (void)read_lines(s->fd, &s->offset, &f, FOLLOW_MAX_BYTES_PER_POLL, out);
        if (evbuffer_get_length(out) > 0)
            evhttp_send_reply_chunk(s->req, out);
        evbuffer_free(out);
    }
    struct timeval tv = {0, FOLLOW_POLL_MS * 1000};
    evtimer_add(s->timer, &tv);
}

struct pv_logs *pv_logs_new(struct event_base *base)
{
    struct pv_logs *logs = calloc(1, sizeof *logs);
    if (logs == NULL)
        return NULL;
    logs->base = base;
    TAILQ_INIT(&logs->streams);
    return logs;
}

void pv_logs_free(struct pv_logs *logs)
{
    if (logs == NULL)
        return;
    struct stream *s;
    while ((s = TAILQ_FIRST(&logs->streams)) != NULL) {
        if (s->conn != NULL)
            evhttp_connection_set_closecb(s->conn, NULL, NULL);
        if (s->req != NULL)
            evhttp_send_reply_end(s->req);
        stream_free(s);
    }
    free(logs);
}

void pv_logs_handle(struct pv_logs *logs, struct evhttp_request *req, const char *name,
                    const char *ns, const char *path, const char *query)
{
    struct filter f;
    memset(&f, 0, sizeof f);
    if (!parse_filter(query, &f)) {
        reply_text(req, 422, "could not parse the log request");
        return;
    }
    snprintf(f.name, sizeof f.name, "%s", name);
    snprintf(f.ns, sizeof f.ns, "%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        LOG_WARN(NULL, "logs of %s.%s: open %s: %s", name, ns, path, strerror(errno));
        reply_text(req, 500, "function log request failed");
        return;
    }
    if (fd < 0) /* nothing logged yet: create it, so follow has a file to watch */
        fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    struct evbuffer *out = evbuffer_new();
    off_t offset = 0;
    if (out == NULL || fd < 0 || !read_lines(fd, &offset, &f, 0, out)) {
        reply_text(req, 500, "function log request failed");
        goto out;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/x-ndjson");
    if (!f.follow) {
        evhttp_send_reply(req, 200, "OK", out);
        goto out;
    }
    struct stream *s = calloc(1, sizeof *s);
    if (s == NULL || (s->timer = evtimer_new(logs->base, on_follow_timer, s)) == NULL) {
        free(s);
        evhttp_send_reply(req, 200, "OK", out);
        goto out;
    }
    s->logs = logs;
    s->req = req;
    s->conn = evhttp_request_get_connection(req);
    s->fd = fd;
    fd = -1;
    s->offset = offset;
    s->f = f;
    TAILQ_INSERT_TAIL(&logs->streams, s, link);
    evhttp_add_header(h, "Connection", "keep-alive");
    evhttp_send_reply_start(req, 200, "OK");
    if (evbuffer_get_length(out) > 0)
        evhttp_send_reply_chunk(req, out);
    evhttp_connection_set_closecb(s->conn, on_stream_close, s);
    (void)cmn_hangup_watch(&s->hangup, logs->base, s->conn);
    struct timeval tv = {0, FOLLOW_POLL_MS * 1000};
    evtimer_add(s->timer, &tv);
out:
    if (out != NULL)
        evbuffer_free(out);
    if (fd >= 0)
        close(fd);
}
