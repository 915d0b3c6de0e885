/* Function resolver shared by gateway and worker (DESIGN.md §5): maps a
 * function name + namespace to the upstream base URL.
 *  - static mode (functions_file): the listed functions only; reload on demand;
 *  - DNS mode (direct_functions=true): http://<name>.<ns>.<suffix>:8080 for any
 *    valid name; existence is decided by the caller (DNS lookup / connect).
 * Thread-safe: lookups take a read lock, reload a write lock. Never blocks on
 * the network. */
#ifndef CMN_RESOLVER_H
#define CMN_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include "cmn/name.h"
#include "cmn/status.h"

struct cmn_resolver;

enum cmn_resolver_mode { CMN_RESOLVER_STATIC, CMN_RESOLVER_DNS };

struct cmn_resolver_config {
    const char *functions_file; /* path to functions.json (static mode) */
    bool direct_functions;      /* DNS mode */
    const char *direct_suffix;  /* "svc.cluster.local" */
    bool http_only; /* refuse https:// URLs at load (the gateway's proxy is HTTP only) */
};

/* Loads the resolver. Static mode requires functions_file (CMN_ERR_INVALID if
 * both or neither mode is set); the file must parse (CMN_ERR_INVALID with the
 * JSON error position, CMN_ERR_IO). `*out` new, free with cmn_resolver_free. */
enum cmn_status cmn_resolver_new(const struct cmn_resolver_config *config,
                                 struct cmn_resolver **out, struct cmn_err *err);
void cmn_resolver_free(struct cmn_resolver *r);

enum cmn_resolver_mode cmn_resolver_mode(const struct cmn_resolver *r);

/* Static mode: re-reads the file; on error the previous table stays. */
enum cmn_status cmn_resolver_reload(struct cmn_resolver *r, struct cmn_err *err);

/* Writes the base URL of `fn` (no trailing '/') into `url` (`size` bytes).
 * CMN_ERR_NOT_FOUND when static mode does not list it; CMN_ERR_TOO_LARGE when
 * `url` is too small. */
enum cmn_status cmn_resolver_lookup(struct cmn_resolver *r, const struct cmn_fn_name *fn, char *url,
                                    size_t size, struct cmn_err *err);

/* OpenFaaS FunctionStatus JSON (faas-provider types/function_status.go):
 * list = array of functions in namespace `ns` (NULL = all); one = object or
 * NULL when unknown. New strings, caller frees. DNS mode lists nothing. */
char *cmn_resolver_list_json(struct cmn_resolver *r, const char *ns);
char *cmn_resolver_function_json(struct cmn_resolver *r, const struct cmn_fn_name *fn);

#endif
