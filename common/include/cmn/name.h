/* Function names and invocation routes.
 * Names: DNS labels [a-z0-9]([-a-z0-9]*[a-z0-9])? up to 63 chars, optional
 * ".namespace" split at the LAST dot (DESIGN.md §4; OpenFaaS service_name.go). */
#ifndef CMN_NAME_H
#define CMN_NAME_H

#include <stdbool.h>
#include <stddef.h>
#include "cmn/status.h"

#define CMN_NAME_MAX 64 /* 63 characters + NUL */

struct cmn_fn_name {
    char name[CMN_NAME_MAX];
    char ns[CMN_NAME_MAX];
};

/* True when `label` (length `len`) is a valid DNS label (see above). */
bool cmn_name_label_valid(const char *label, size_t len);

/* Parses `full` ("figlet" or "figlet.openfaas-fn", borrowed, length `len`)
 * into `out` (written only on success); no dot → namespace `default_ns`.
 * Returns CMN_OK or CMN_ERR_INVALID. Pure, any thread. */
enum cmn_status cmn_name_parse(const char *full, size_t len, const char *default_ns,
                               struct cmn_fn_name *out, struct cmn_err *err);

/* Splits the part of a URL path that follows "/function/" or "/async-function/"
 * (e.g. "figlet.ns/a/b", no query) into the function segment [*name, *name+*name_len)
 * and the sub-path, which starts at the first '/' after the name and is "" when
 * there is none. Pointers point into `rest` (borrowed). Returns CMN_ERR_INVALID
 * when the name segment is empty. */
enum cmn_status cmn_route_split(const char *rest, const char **name, size_t *name_len,
                                const char **sub_path);

#endif
