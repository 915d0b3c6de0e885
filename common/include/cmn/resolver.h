/* Function resolver shared by gateway and worker (DESIGN.md §5): maps a
 * function name + namespace to the upstream base URL and its policy
 * (cmn/fnpolicy.h: queue, retry overrides).
 *  - static mode (functions_file): the listed functions only; reload on demand;
 *  - DNS mode (direct_functions=true): http://<name>.<ns>.<suffix>:8080 for any
 *    valid name; existence is decided by the caller (DNS lookup / connect);
 *    policies come from the function_queues mapping only;
 *  - provider mode (functions_provider_url): <provider>/function/<name>.<ns>,
 *    the route of the faas-provider API; the table is a cache of the
 *    provider's FunctionStatus answers, filled by the caller
 *    (cmn_resolver_provider_put: the gateway fetches them without blocking).
 *    With `provider_catalog` a function must be in that cache to resolve (the
 *    gateway); without, any valid name resolves (the worker: the provider
 *    answers for existence).
 * Thread-safe: lookups take a read lock, updates a write lock. Never blocks
 * on the network. */
#ifndef CMN_RESOLVER_H
#define CMN_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include "cmn/fnpolicy.h"
#include "cmn/name.h"
#include "cmn/status.h"

struct cmn_resolver;

enum cmn_resolver_mode { CMN_RESOLVER_STATIC, CMN_RESOLVER_DNS, CMN_RESOLVER_PROVIDER };

struct cmn_resolver_config {
    const char *functions_file; /* path to functions.json (static mode) */
    bool direct_functions;      /* DNS mode */
    const char *direct_suffix;  /* "svc.cluster.local" */
    const char *provider_url;   /* provider mode: "http://host:port[/prefix]" */
    bool provider_catalog;      /* provider mode: only cached functions resolve */
    bool http_only; /* refuse https:// URLs at load (the gateway's proxy is HTTP only) */
    /* "name[.ns]=queue,..." (function_queues): the queue of functions that
     * carry no com.openfaas.queue annotation, in any mode; NULL/"" = none */
    const char *function_queues;
    /* The dead-letter stream's name, which no queue may take
     * (cmn_queue_name_reserved); NULL = none. */
    const char *dead_letter_stream;
    /* Receives one line per ignored annotation (at load, reload and provider
     * updates; on the updating thread); NULL = silent. */
    cmn_policy_warn warn;
    void *warn_arg;
};

/* Loads the resolver. Exactly one mode must be set (CMN_ERR_INVALID if none
 * or several); the file must parse (CMN_ERR_INVALID with the JSON error
 * position, CMN_ERR_IO); provider_url must be an http:// URL; function_queues
 * must be "name[.ns]=queue" pairs whose queues are not reserved. `*out` new, free with
 * cmn_resolver_free. */
enum cmn_status cmn_resolver_new(const struct cmn_resolver_config *config,
                                 struct cmn_resolver **out, struct cmn_err *err);
void cmn_resolver_free(struct cmn_resolver *r);

enum cmn_resolver_mode cmn_resolver_mode(const struct cmn_resolver *r);

/* Static mode: re-reads the file; on error the previous table stays. */
enum cmn_status cmn_resolver_reload(struct cmn_resolver *r, struct cmn_err *err);

/* Writes the base URL of `fn` (no trailing '/') into `url` (`size` bytes),
 * and its policy into `policy` when not NULL (all defaults when it has none).
 * CMN_ERR_NOT_FOUND when static mode (or provider mode with a catalog) does
 * not list it; CMN_ERR_TOO_LARGE when `url` is too small. */
enum cmn_status cmn_resolver_lookup(struct cmn_resolver *r, const struct cmn_fn_name *fn, char *url,
                                    size_t size, struct cmn_err *err);
enum cmn_status cmn_resolver_lookup_policy(struct cmn_resolver *r, const struct cmn_fn_name *fn,
                                           char *url, size_t size, struct cmn_fn_policy *policy,
                                           struct cmn_err *err);

/* Invocation count of one function (the gateway's counters), for the
 * invocationCount field. */
typedef double (*cmn_count_fn)(void *arg, const char *name, const char *ns);

/* OpenFaaS FunctionStatus JSON (faas-provider types/function_status.go):
 * list = array of functions in namespace `ns` (NULL = all); one = object or
 * NULL when unknown. invocationCount comes from `count` (NULL = 0). New
 * strings, caller frees. DNS and provider modes list nothing here (the
 * provider's own answer is enriched instead: cmn_status_json_enrich). */
char *cmn_resolver_list_json(struct cmn_resolver *r, const char *ns, cmn_count_fn count,
                             void *count_arg);
char *cmn_resolver_function_json(struct cmn_resolver *r, const struct cmn_fn_name *fn,
                                 cmn_count_fn count, void *count_arg);

/* Provider mode: takes a provider's answer (`json`, `len` bytes, borrowed)
 * into the cache: a FunctionStatus array (the functions of namespace
 * `list_ns`, which replace that namespace's entries) or one FunctionStatus
 * object (`list_ns` NULL; added or replaced). Entries without a valid name are
 * skipped; a missing namespace is `default_ns`. Errors: CMN_ERR_INVALID (not
 * JSON of that shape, or not provider mode), CMN_ERR_NOMEM. Any thread. */
enum cmn_status cmn_resolver_provider_put(struct cmn_resolver *r, const char *json, size_t len,
                                          const char *list_ns, const char *default_ns,
                                          struct cmn_err *err);

/* Provider mode: forgets `fn` (the provider answered 404 for it). */
void cmn_resolver_provider_drop(struct cmn_resolver *r, const struct cmn_fn_name *fn);

/* Rewrites a provider's FunctionStatus array or object (`json`, `len` bytes)
 * with invocationCount from `count` (matching on name and namespace, missing
 * namespace = `default_ns`). `*out` new text (caller frees). Errors:
 * CMN_ERR_INVALID (not such JSON), CMN_ERR_NOMEM. Pure, any thread. */
enum cmn_status cmn_status_json_enrich(const char *json, size_t len, const char *default_ns,
                                       cmn_count_fn count, void *count_arg, char **out);

/* Writes up to `max` distinct queue names that some known function uses
 * (annotations and function_queues) into `out`; returns how many. The
 * default queue appears only when a function names it. Any thread. */
size_t cmn_resolver_queues(struct cmn_resolver *r, char (*out)[CMN_QUEUE_MAX], size_t max);

#endif
