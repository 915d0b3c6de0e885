/* A small Prometheus registry: counters, gauges and histograms identified by
 * name + label text, rendered in the text exposition format (version 0.0.4).
 * Thread-safe (one mutex); meant for low-cardinality series (per function,
 * per status code). */
#ifndef CMN_METRICS_H
#define CMN_METRICS_H

#include <stddef.h>

struct cmn_metrics;

enum cmn_metric_type { CMN_METRIC_COUNTER, CMN_METRIC_GAUGE, CMN_METRIC_HISTOGRAM };

/* New empty registry (NULL on allocation failure). Free with cmn_metrics_free. */
struct cmn_metrics *cmn_metrics_new(void);
void cmn_metrics_free(struct cmn_metrics *m);

/* Declares metric `name` (borrowed static string) with its type and help line.
 * Histograms use the Prometheus default buckets .005 … 10 seconds. Must be
 * called before the metric is updated; declaring twice is harmless. */
void cmn_metrics_declare(struct cmn_metrics *m, const char *name, enum cmn_metric_type type,
                         const char *help);

/* Updates one series. `labels` is the text between braces, e.g.
 * `function_name="figlet.openfaas-fn",code="200"`, or NULL/"" for none; it is
 * copied the first time the series is seen. Unknown names are ignored. */
void cmn_metrics_add(struct cmn_metrics *m, const char *name, const char *labels, double value);
void cmn_metrics_set(struct cmn_metrics *m, const char *name, const char *labels, double value);
void cmn_metrics_observe(struct cmn_metrics *m, const char *name, const char *labels, double value);

/* Sum of the values of metric `name`'s counter or gauge series whose labels
 * start with `labels_prefix` (borrowed; "" = every series), optionally only
 * those whose labels also contain `labels_part` (NULL = no filter). 0 when
 * the metric is unknown. Any thread; takes the registry lock for one pass
 * over the metric's series. */
double cmn_metrics_sum(struct cmn_metrics *m, const char *name, const char *labels_prefix,
                       const char *labels_part);

/* Renders every series; returns a new NUL-terminated string (caller frees) and
 * its length in `*len` (NULL allowed), or NULL on allocation failure. */
char *cmn_metrics_render(struct cmn_metrics *m, size_t *len);

/* Escapes `value` for use inside a label value (backslash, quote, newline)
 * into `out` of `size` bytes; returns `out`. */
char *cmn_metrics_label_escape(const char *value, char *out, size_t size);

#endif
