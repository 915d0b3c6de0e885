/* A function's asynchronous policy, read from its annotations (OpenFaaS's
 * names): the queue its calls go to (`com.openfaas.queue`) and OpenFaaS Pro's
 * retry overrides (`com.openfaas.retry.attempts`, `.codes`, `.min_wait`,
 * `.max_wait`). The gateway works it out when it learns the function
 * (functions.json, the provider, the function_queues mapping) and stamps it
 * into each queued call (cmn/codec.h), so the worker needs no lookup.
 * Pure functions, any thread. */
#ifndef CMN_FNPOLICY_H
#define CMN_FNPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMN_ANN_QUEUE "com.openfaas.queue"
#define CMN_ANN_RETRY_ATTEMPTS "com.openfaas.retry.attempts"
#define CMN_ANN_RETRY_CODES "com.openfaas.retry.codes"
#define CMN_ANN_RETRY_MIN_WAIT "com.openfaas.retry.min_wait"
#define CMN_ANN_RETRY_MAX_WAIT "com.openfaas.retry.max_wait"

/* Longest queue name + NUL: a JetStream stream name and subject token. */
#define CMN_QUEUE_MAX 64
/* Longest normalised status list + NUL ("408,429,500" ...). */
#define CMN_CODES_TEXT_MAX 256
/* Ranges accepted for the retry overrides (the worker's own settings use the
 * same bounds). */
#define CMN_RETRY_ATTEMPTS_MAX 1000
#define CMN_RETRY_WAIT_MAX_MS (24LL * 3600 * 1000)

struct cmn_fn_policy {
    char queue[CMN_QUEUE_MAX];            /* "" = the default queue (faas_nats_channel) */
    int retry_attempts;                   /* retries after the first attempt; -1 = default */
    int64_t retry_min_wait_ms;            /* first back-off; -1 = default */
    int64_t retry_max_wait_ms;            /* back-off cap; -1 = default */
    char retry_codes[CMN_CODES_TEXT_MAX]; /* statuses retried, "429,503"; "" = default */
};

/* Resets `p` to "all defaults". */
void cmn_fn_policy_init(struct cmn_fn_policy *p);

/* True when any field differs from the defaults. */
bool cmn_fn_policy_set(const struct cmn_fn_policy *p);

/* Returns the annotation `key`'s value (borrowed), or NULL when absent. */
typedef const char *(*cmn_annotation_get)(void *arg, const char *key);

/* Receives one line about an annotation that was ignored (borrowed). */
typedef void (*cmn_policy_warn)(void *arg, const char *line);

/* Fills `p` (initialised here) from the annotations `get` returns. Each
 * invalid value (a queue name that is not [A-Za-z0-9_-]{1,63}, attempts not
 * an integer 0..1000, a wait that is not a duration from 1 ms to 24 h, codes
 * that are not a list of statuses 100..599, min_wait above max_wait, a queue
 * that cmn_queue_name_reserved refuses with `reserved`) keeps
 * that field's default and is reported once through `warn` (may be NULL)
 * with `fn` (borrowed, "name.ns") in the text. */
void cmn_fn_policy_from_annotations(struct cmn_fn_policy *p, const char *fn, cmn_annotation_get get,
                                    void *get_arg, const char *const *reserved,
                                    cmn_policy_warn warn, void *warn_arg);

/* True when `name` (`len` bytes) can be a queue: 1..63 of [A-Za-z0-9_-]. */
bool cmn_queue_name_valid(const char *name, size_t len);

/* Why `name` (NUL-terminated) cannot be a queue's stream although it is
 * valid, or NULL when it can: a name beginning with "KV_" or "OBJ_" (the
 * streams behind JetStream key-value buckets and object stores, the call
 * records among them), or one of `reserved` (NULL-terminated list, may be
 * NULL; the dead-letter stream), which hold limits streams that a work queue
 * of the same name would take over. The text is static. */
const char *cmn_queue_name_reserved(const char *name, const char *const *reserved);

#endif
