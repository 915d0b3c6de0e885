/* Unit tests for cmn/metrics.h: exposition text, label merging, cumulative
 * histogram buckets, escaping and concurrent updates. */
#include "check.h"

#include <pthread.h>
#include <stdlib.h>
#include "cmn/metrics.h"

/* True when `text` holds `line` as a whole line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return false;
}

#define CHECK_LINE(text, line)                                                                     \
    do {                                                                                           \
        check_total++;                                                                             \
        if (!has_line((text), (line))) {                                                           \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: missing line: %s\n", __FILE__, __LINE__, (line));              \
        }                                                                                          \
    } while (0)

static void test_counter_gauge(void)
{
    struct cmn_metrics *m = cmn_metrics_new();
    size_t len = 0;
    CHECK(m != NULL);
    if (m == NULL)
        return;
    cmn_metrics_declare(m, "gateway_function_invocation_total", CMN_METRIC_COUNTER,
                        "Function metrics");
    cmn_metrics_declare(m, "gateway_function_invocation_total", CMN_METRIC_COUNTER,
                        "declared twice");
    cmn_metrics_declare(m, "queue_inflight", CMN_METRIC_GAUGE, "Calls in flight");
    cmn_metrics_declare(m, "plain_total", CMN_METRIC_COUNTER, "No labels");

    const char *l200 = "function_name=\"figlet.openfaas-fn\",code=\"200\"";
    cmn_metrics_add(m, "gateway_function_invocation_total", l200, 1);
    cmn_metrics_add(m, "gateway_function_invocation_total", l200, 1);
    cmn_metrics_add(m, "gateway_function_invocation_total",
                    "function_name=\"figlet.openfaas-fn\",code=\"500\"", 1);
    cmn_metrics_add(m, "gateway_function_invocation_total", l200, -5); /* counters never drop */
    cmn_metrics_set(m, "queue_inflight", NULL, 7);
    cmn_metrics_set(m, "queue_inflight", "", 3);
    cmn_metrics_add(m, "queue_inflight", NULL, -1);
    cmn_metrics_add(m, "plain_total", NULL, 0.5);
    cmn_metrics_add(m, "undeclared_total", NULL, 1); /* ignored */

    char *text = cmn_metrics_render(m, &len);
    CHECK(text != NULL);
    CHECK(text != NULL && len == strlen(text));
    CHECK_LINE(text, "# HELP gateway_function_invocation_total Function metrics");
    CHECK_LINE(text, "# TYPE gateway_function_invocation_total counter");
    CHECK_LINE(text, "gateway_function_invocation_total{function_name=\"figlet.openfaas-fn\","
                     "code=\"200\"} 2");
    CHECK_LINE(text, "gateway_function_invocation_total{function_name=\"figlet.openfaas-fn\","
                     "code=\"500\"} 1");
    CHECK_LINE(text, "# HELP queue_inflight Calls in flight");
    CHECK_LINE(text, "# TYPE queue_inflight gauge");
    CHECK_LINE(text, "queue_inflight 2");
    CHECK_LINE(text, "plain_total 0.5");
    CHECK(text != NULL && strstr(text, "undeclared") == NULL);
    CHECK(text != NULL && strstr(text, "declared twice") == NULL);
    CHECK(text != NULL && len > 0 && text[len - 1] == '\n');
    free(text);
    cmn_metrics_free(m);
    cmn_metrics_free(NULL);
}

/* Collects the values of every `<name>_bucket{...}` line with `labels_prefix`. */
static size_t bucket_values(const char *text, const char *prefix, double *out, size_t max)
{
    size_t n = 0, plen = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0' && n < max;) {
        if (strncmp(p, prefix, plen) == 0) {
            const char *sp = strchr(p, ' ');
            if (sp != NULL)
                out[n++] = strtod(sp + 1, NULL);
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return n;
}

static void test_histogram(void)
{
    struct cmn_metrics *m = cmn_metrics_new();
    if (m == NULL) {
        CHECK(m != NULL);
        return;
    }
    cmn_metrics_declare(m, "gateway_functions_seconds", CMN_METRIC_HISTOGRAM,
                        "Function time taken");
    cmn_metrics_declare(m, "plain_seconds", CMN_METRIC_HISTOGRAM, "No labels");
    const char *labels = "function_name=\"figlet.openfaas-fn\",code=\"200\"";
    cmn_metrics_observe(m, "gateway_functions_seconds", labels, 0.003);
    cmn_metrics_observe(m, "gateway_functions_seconds", labels, 0.005); /* le is inclusive */
    cmn_metrics_observe(m, "gateway_functions_seconds", labels, 0.3);
    cmn_metrics_observe(m, "gateway_functions_seconds", labels, 20);
    cmn_metrics_add(m, "gateway_functions_seconds", labels, 100); /* wrong op: ignored */
    cmn_metrics_observe(m, "plain_seconds", NULL, 1);

    char *text = cmn_metrics_render(m, NULL);
    CHECK(text != NULL);
    CHECK_LINE(text, "# HELP gateway_functions_seconds Function time taken");
    CHECK_LINE(text, "# TYPE gateway_functions_seconds histogram");
#define B(le, v)                                                                                   \
    "gateway_functions_seconds_bucket{function_name=\"figlet.openfaas-fn\",code=\"200\",le=\"" le  \
    "\"} " v
    CHECK_LINE(text, B("0.005", "2"));
    CHECK_LINE(text, B("0.01", "2"));
    CHECK_LINE(text, B("0.025", "2"));
    CHECK_LINE(text, B("0.05", "2"));
    CHECK_LINE(text, B("0.1", "2"));
    CHECK_LINE(text, B("0.25", "2"));
    CHECK_LINE(text, B("0.5", "3"));
    CHECK_LINE(text, B("1", "3"));
    CHECK_LINE(text, B("2.5", "3"));
    CHECK_LINE(text, B("5", "3"));
    CHECK_LINE(text, B("10", "3"));
    CHECK_LINE(text, B("+Inf", "4"));
#undef B
    CHECK_LINE(text, "gateway_functions_seconds_sum{function_name=\"figlet.openfaas-fn\","
                     "code=\"200\"} 20.308");
    CHECK_LINE(text, "gateway_functions_seconds_count{function_name=\"figlet.openfaas-fn\","
                     "code=\"200\"} 4");
    CHECK_LINE(text, "plain_seconds_bucket{le=\"0.5\"} 0");
    CHECK_LINE(text, "plain_seconds_bucket{le=\"1\"} 1");
    CHECK_LINE(text, "plain_seconds_bucket{le=\"+Inf\"} 1");
    CHECK_LINE(text, "plain_seconds_sum 1");
    CHECK_LINE(text, "plain_seconds_count 1");

    /* buckets are cumulative: 12 of them (11 bounds + +Inf), never decreasing */
    double v[32];
    size_t n = bucket_values(text, "gateway_functions_seconds_bucket{", v, 32);
    CHECK_INT(n, 12);
    for (size_t i = 1; i < n; i++)
        CHECK(v[i] >= v[i - 1]);
    free(text);
    cmn_metrics_free(m);
}

static void test_escape(void)
{
    char out[64];
    CHECK_STR(cmn_metrics_label_escape("plain", out, sizeof out), "plain");
    CHECK_STR(cmn_metrics_label_escape("a\"b\\c\nd", out, sizeof out), "a\\\"b\\\\c\\nd");
    CHECK_STR(cmn_metrics_label_escape("", out, sizeof out), "");
    /* truncation keeps a NUL and never splits an escape */
    char small[4];
    cmn_metrics_label_escape("ab\"c", small, sizeof small);
    CHECK_STR(small, "ab");
    cmn_metrics_label_escape("abcdef", small, sizeof small);
    CHECK_STR(small, "abc");
}

struct worker_arg {
    struct cmn_metrics *m;
    int id;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    char labels[64];
    snprintf(labels, sizeof labels, "w=\"%d\"", a->id % 2);
    for (int i = 0; i < 10000; i++) {
        cmn_metrics_add(a->m, "hits_total", NULL, 1);
        cmn_metrics_add(a->m, "hits_total", labels, 1);
        cmn_metrics_observe(a->m, "lat_seconds", NULL, 0.001);
    }
    return NULL;
}

static void test_threads(void)
{
    struct cmn_metrics *m = cmn_metrics_new();
    pthread_t t[4];
    struct worker_arg args[4];
    if (m == NULL) {
        CHECK(m != NULL);
        return;
    }
    cmn_metrics_declare(m, "hits_total", CMN_METRIC_COUNTER, "hits");
    cmn_metrics_declare(m, "lat_seconds", CMN_METRIC_HISTOGRAM, "latency");
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){m, i};
        CHECK(pthread_create(&t[i], NULL, worker, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = cmn_metrics_render(m, NULL);
    CHECK_LINE(text, "hits_total 40000");
    CHECK_LINE(text, "hits_total{w=\"0\"} 20000");
    CHECK_LINE(text, "hits_total{w=\"1\"} 20000");
    CHECK_LINE(text, "lat_seconds_count 40000");
    CHECK_LINE(text, "lat_seconds_bucket{le=\"0.005\"} 40000");
    free(text);
    cmn_metrics_free(m);
}

int main(void)
{
    test_counter_gauge();
    test_histogram();
    test_escape();
    test_threads();
    return check_report("metrics_test");
}
