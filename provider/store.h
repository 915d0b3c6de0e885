/* The provider's durable state under provider_state_dir:
 *   functions.json          deployed functions (FunctionDeployment + replicas + createdAt),
 *                           rewritten atomically (tmp file, fsync, rename) on every change;
 *   secrets/<ns>/<name>     one file per secret (mode 0600, directory 0700);
 *   logs/<ns>/<name>.log    replica output, one JSON object per line (procs.c writes it).
 * All calls run on the event-loop thread and block on local file I/O only
 * (small files; the state file is fsync'ed). */
#ifndef PV_STORE_H
#define PV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/name.h"
#include "cmn/status.h"

#define PV_SECRET_NAME_MAX 254 /* DNS-1123 subdomain: 253 characters + NUL */

struct pv_store; /* opaque */

/* One deployed function. Strings are owned by the store; a record pointer is
 * bound to the store and valid until the next call that changes the store. */
struct pv_fn_rec {
    char name[CMN_NAME_MAX];
    char ns[CMN_NAME_MAX];
    char *deployment;   /* the normalised FunctionDeployment as compact JSON text */
    int64_t replicas;   /* desired replica count */
    int64_t created_ms; /* wall clock, ms since the epoch */
};

/* Opens (creating directories as needed) the state in `dir` (borrowed) and
 * loads functions.json if present. On CMN_OK `*out` is new (pv_store_free).
 * Errors: CMN_ERR_IO (mkdir/read failed, err->code = errno), CMN_ERR_INVALID
 * (functions.json is not the expected JSON), CMN_ERR_NOMEM. */
enum cmn_status pv_store_open(const char *dir, struct pv_store **out, struct cmn_err *err);

/* Frees the in-memory state (files stay). NULL allowed. */
void pv_store_free(struct pv_store *store);

/* Number of functions, and the i-th one (0 <= i < count; bound, see above). */
size_t pv_store_count(const struct pv_store *store);
const struct pv_fn_rec *pv_store_at(const struct pv_store *store, size_t i);

/* The record of `name` in `ns` (both borrowed), or NULL. Bound. */
const struct pv_fn_rec *pv_store_find(const struct pv_store *store, const char *name,
                                      const char *ns);

/* Adds or replaces the function `name`.`ns` with `deployment` (JSON text,
 * copied), `replicas` and `created_ms`, then saves. Returns CMN_OK, CMN_ERR_NOMEM
 * or CMN_ERR_IO (the file could not be written; memory keeps the change). */
enum cmn_status pv_store_put(struct pv_store *store, const char *name, const char *ns,
                             const char *deployment, int64_t replicas, int64_t created_ms,
                             struct cmn_err *err);

/* Changes the replica count and saves. CMN_ERR_NOT_FOUND if unknown, CMN_ERR_IO. */
enum cmn_status pv_store_set_replicas(struct pv_store *store, const char *name, const char *ns,
                                      int64_t replicas, struct cmn_err *err);

/* Forgets the function and saves. CMN_ERR_NOT_FOUND if unknown, CMN_ERR_IO. */
enum cmn_status pv_store_remove(struct pv_store *store, const char *name, const char *ns,
                                struct cmn_err *err);

/* The state directory (bound). */
const char *pv_store_dir(const struct pv_store *store);

/* Writes "<dir>/logs/<ns>" into `buf` (`size` bytes) and creates it (0755).
 * Returns CMN_OK, CMN_ERR_INVALID (too long) or CMN_ERR_IO. */
enum cmn_status pv_store_log_dir(const struct pv_store *store, const char *ns, char *buf,
                                 size_t size, struct cmn_err *err);

/* Writes "<dir>/logs/<ns>/<name>.log" into `buf`. Returns CMN_OK or CMN_ERR_INVALID. */
enum cmn_status pv_store_log_path(const struct pv_store *store, const char *name, const char *ns,
                                  char *buf, size_t size, struct cmn_err *err);

/* Writes "<dir>/secrets/<ns>" into `buf` (what a function sees as its
 * secret_mount_path). Returns CMN_OK or CMN_ERR_INVALID. */
enum cmn_status pv_store_secret_dir(const struct pv_store *store, const char *ns, char *buf,
                                    size_t size, struct cmn_err *err);

/* True when `name` is a DNS-1123 subdomain (lower-case alphanumerics, '-' and
 * '.', alphanumeric at both ends, no "..", at most 253 characters). Pure. */
bool pv_store_secret_name_valid(const char *name);

/* True when secret `name` exists in `ns`. */
bool pv_store_secret_exists(const struct pv_store *store, const char *name, const char *ns);

/* How pv_store_secret_write treats an existing secret. */
enum pv_secret_mode { PV_SECRET_CREATE, PV_SECRET_UPDATE };

/* Writes `len` bytes of `value` (borrowed) as secret `name` in `ns` (mode
 * 0600, atomically). PV_SECRET_CREATE fails with CMN_ERR_CONFLICT if it exists,
 * PV_SECRET_UPDATE with CMN_ERR_NOT_FOUND if it does not. Also CMN_ERR_INVALID
 * (bad name), CMN_ERR_IO. */
enum cmn_status pv_store_secret_write(struct pv_store *store, const char *name, const char *ns,
                                      const void *value, size_t len, enum pv_secret_mode mode,
                                      struct cmn_err *err);

/* Deletes secret `name` in `ns`. CMN_ERR_NOT_FOUND, CMN_ERR_INVALID, CMN_ERR_IO. */
enum cmn_status pv_store_secret_delete(struct pv_store *store, const char *name, const char *ns,
                                       struct cmn_err *err);

/* Lists the secret names of `ns`, sorted, into `*names` (new array of new
 * strings; free each and the array) and `*count`. A missing directory is an
 * empty list. Returns CMN_OK, CMN_ERR_NOMEM or CMN_ERR_IO. */
enum cmn_status pv_store_secret_list(const struct pv_store *store, const char *ns, char ***names,
                                     size_t *count, struct cmn_err *err);

#endif
