/* Prometheus registry. Owns the declared metrics (in declaration order), their
 * series (in first-seen order per metric, plus a hash on name + labels for
 * updates) and the text rendering. One mutex guards everything: updates are a
 * hash lookup and an addition, so contention stays negligible. */
#include "cmn/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prometheus client default buckets (seconds), the ones OpenFaaS uses for
 * gateway_functions_seconds. +Inf is implicit: it equals the count. */
static const double bucket_bounds[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
#define BUCKET_COUNT (sizeof bucket_bounds / sizeof bucket_bounds[0])
#define HASH_SIZE 256u

struct series {
    struct metric *metric;
    char *labels;                   /* "" when none */
    double value;                   /* counter, gauge */
    double sum;                     /* histogram */
    uint64_t count;                 /* histogram */
    uint64_t buckets[BUCKET_COUNT]; /* histogram, per bucket (not cumulative) */
    struct series *next;            /* in metric order */
    struct series *hash_next;
};

struct metric {
    char *name;
    char *help;
    enum cmn_metric_type type;
    struct series *first, *last;
    struct metric *next;
};

struct cmn_metrics {
    pthread_mutex_t mu;
    struct metric *first, *last;
    struct series *hash[HASH_SIZE];
};

static uint32_t hash_key(const char *name, const char *labels)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = name; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u; /* separator: "ab"+"c" differs from "a"+"bc" */
    for (const char *p = labels; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

struct cmn_metrics *cmn_metrics_new(void)
{
    struct cmn_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void cmn_metrics_free(struct cmn_metrics *m)
{
    if (m == NULL)
        return;
    struct metric *mt = m->first;
    while (mt != NULL) {
        struct metric *next_mt = mt->next;
        struct series *s = mt->first;
        while (s != NULL) {
            struct series *next_s = s->next;
            free(s->labels);
            free(s);
            s = next_s;
        }
        free(mt->name);
        free(mt->help);
        free(mt);
        mt = next_mt;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static struct metric *find_metric(struct cmn_metrics *m, const char *name)
{
    for (struct metric *mt = m->first; mt != NULL; mt = mt->next)
        if (strcmp(mt->name, name) == 0)
            return mt;
    return NULL;
}

void cmn_metrics_declare(struct cmn_metrics *m, const char *name, enum cmn_metric_type type,
                         const char *help)
{
    struct metric *mt = NULL;

    if (m == NULL || name == NULL || name[0] == '\0')
        return;
    pthread_mutex_lock(&m->mu);
    if (find_metric(m, name) != NULL)
        goto out;
    mt = calloc(1, sizeof *mt);
    if (mt == NULL)
        goto out;
    mt->name = strdup(name);
    mt->help = strdup(help != NULL ? help : "");
    if (mt->name == NULL || mt->help == NULL) {
        free(mt->name);
        free(mt->help);
        free(mt);
        goto out;
    }
    mt->type = type;
    if (m->last != NULL)
        m->last->next = mt;
    else
        m->first = mt;
    m->last = mt;
out:
    pthread_mutex_unlock(&m->mu);
}

/* Finds or creates the series; NULL for an undeclared name or out of memory.
 * Caller holds the mutex. */
static struct series *get_series(struct cmn_metrics *m, const char *name, const char *labels)
{
    uint32_t slot;
    struct series *s;
    struct metric *mt;

    if (labels == NULL)
        labels = "";
    slot = hash_key(name, labels) % HASH_SIZE;
    for (s = m->hash[slot]; s != NULL; s = s->hash_next)
        if (strcmp(s->metric->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
    mt = find_metric(m, name);
    if (mt == NULL)
        return NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->labels = strdup(labels);
    if (s->labels == NULL) {
        free(s);
        return NULL;
    }
    s->metric = mt;
    s->hash_next = m->hash[slot];
    m->hash[slot] = s;
    if (mt->last != NULL)
        mt->last->next = s;
    else
        mt->first = s;
    mt->last = s;
    return s;
}

void cmn_metrics_add(struct cmn_metrics *m, const char *name, const char *labels, double value)
{
    if (m == NULL || name == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    struct series *s = get_series(m, name, labels);
    /* A counter only goes up; a negative add is a caller bug, dropped. */
    if (s != NULL && s->metric->type != CMN_METRIC_HISTOGRAM &&
        !(s->metric->type == CMN_METRIC_COUNTER && value < 0))
        s->value += value;
    pthread_mutex_unlock(&m->mu);
}

void cmn_metrics_set(struct cmn_metrics *m, const char *name, const char *labels, double value)
{
    if (m == NULL || name == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    struct series *s = get_series(m, name, labels);
    if (s != NULL && s->metric->type != CMN_METRIC_HISTOGRAM)
        s->value = value;
    pthread_mutex_unlock(&m->mu);
}

void cmn_metrics_observe(struct cmn_metrics *m, const char *name, const char *labels, double value)
{
    if (m == NULL || name == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    struct series *s = get_series(m, name, labels);
    if (s != NULL && s->metric->type == CMN_METRIC_HISTOGRAM) {
        for (size_t i = 0; i < BUCKET_COUNT; i++) {
            if (value <= bucket_bounds[i]) {
                s->buckets[i]++;
                break;
            }
        }
        s->sum += value;
        s->count++;
    }
    pthread_mutex_unlock(&m->mu);
}

/* Growing output buffer; `failed` latches the first allocation failure. */
struct buf {
    char *data;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        size_t avail = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, avail, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < avail) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2;
        while (ncap - b->len <= (size_t)n)
            ncap *= 2;
        char *nd = realloc(b->data, ncap);
        if (nd == NULL) {
            b->failed = true;
            return;
        }
        b->data = nd;
        b->cap = ncap;
    }
}

/* Shortest of %.15g / %.17g that reads back exactly; Prometheus spellings for
 * infinities and NaN. */
static const char *fmt_value(double v, char *out, size_t size)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    snprintf(out, size, "%.15g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, size, "%.17g", v);
    return out;
}

/* HELP text escapes backslash and newline (exposition format 0.0.4). */
static void put_help(struct buf *b, const char *help)
{
    for (const char *p = help; *p != '\0'; p++) {
        if (*p == '\\')
            buf_printf(b, "\\\\");
        else if (*p == '\n')
            buf_printf(b, "\\n");
        else
            buf_printf(b, "%c", *p);
    }
}

static const char *type_name(enum cmn_metric_type t)
{
    switch (t) {
    case CMN_METRIC_COUNTER:
        return "counter";
    case CMN_METRIC_GAUGE:
        return "gauge";
    case CMN_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static void render_histogram(struct buf *b, const struct metric *mt, const struct series *s)
{
    char num[40], le[40];
    const char *sep = s->labels[0] != '\0' ? "," : "";
    uint64_t cumulative = 0;

    for (size_t i = 0; i < BUCKET_COUNT; i++) {
        cumulative += s->buckets[i];
        buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", mt->name, s->labels, sep,
                   fmt_value(bucket_bounds[i], le, sizeof le), (unsigned long long)cumulative);
    }
    buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", mt->name, s->labels, sep,
               (unsigned long long)s->count);
    if (s->labels[0] != '\0') {
        buf_printf(b, "%s_sum{%s} %s\n", mt->name, s->labels, fmt_value(s->sum, num, sizeof num));
        buf_printf(b, "%s_count{%s} %llu\n", mt->name, s->labels, (unsigned long long)s->count);
    } else {
        buf_printf(b, "%s_sum %s\n", mt->name, fmt_value(s->sum, num, sizeof num));
        buf_printf(b, "%s_count %llu\n", mt->name, (unsigned long long)s->count);
    }
}

char *cmn_metrics_render(struct cmn_metrics *m, size_t *len)
{
    struct buf b = {0};
    char num[40];

    if (m == NULL)
        return NULL;
    b.cap = 4096;
    b.data = malloc(b.cap);
    if (b.data == NULL)
        return NULL;
    b.data[0] = '\0';

    pthread_mutex_lock(&m->mu);
    for (const struct metric *mt = m->first; mt != NULL; mt = mt->next) {
        buf_printf(&b, "# HELP %s ", mt->name);
        put_help(&b, mt->help);
        buf_printf(&b, "\n# TYPE %s %s\n", mt->name, type_name(mt->type));
        for (const struct series *s = mt->first; s != NULL; s = s->next) {
            if (mt->type == CMN_METRIC_HISTOGRAM)
                render_histogram(&b, mt, s);
            else if (s->labels[0] != '\0')
                buf_printf(&b, "%s{%s} %s\n", mt->name, s->labels,
                           fmt_value(s->value, num, sizeof num));
            else
                buf_printf(&b, "%s %s\n", mt->name, fmt_value(s->value, num, sizeof num));
        }
    }
    pthread_mutex_unlock(&m->mu);

    if (b.failed) {
        free(b.data);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.data;
}

char *cmn_metrics_label_escape(const char *value, char *out, size_t size)
{
    size_t o = 0;

    if (out == NULL || size == 0)
        return out;
    for (const char *p = value != NULL ? value : ""; *p != '\0'; p++) {
        const char *rep = NULL;
        char one[2] = {*p, '\0'};
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = strlen(rep);
        /* Never cut an escape sequence in half: stop before it instead. */
        if (o + n >= size)
            break;
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

double cmn_metrics_sum(struct cmn_metrics *m, const char *name, const char *labels_prefix,
                       const char *labels_part)
{
    double sum = 0;
    if (m == NULL)
        return 0;
    size_t plen = strlen(labels_prefix);
    pthread_mutex_lock(&m->mu);
    for (struct metric *mt = m->first; mt != NULL; mt = mt->next) {
        if (strcmp(mt->name, name) != 0)
            continue;
        for (struct series *s = mt->first; s != NULL; s = s->next) {
            if (strncmp(s->labels, labels_prefix, plen) == 0 &&
                (labels_part == NULL || strstr(s->labels, labels_part) != NULL))
                sum += mt->type == CMN_METRIC_HISTOGRAM ? (double)s->count : s->value;
        }
        break;
    }
    pthread_mutex_unlock(&m->mu);
    return sum;
}
