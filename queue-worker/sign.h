/* Signed callbacks, Standard Webhooks scheme (standardwebhooks.com):
 *   webhook-id: <call id>   webhook-timestamp: <unix seconds>
 *   webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>
 * one "v1,..." per key, space separated, so keys can be rotated. Keys are
 * Standard Webhooks secrets ("whsec_" + base64 of the key bytes; the prefix
 * is optional; 16..512 key bytes), one per file named callback-signing-key
 * or callback-signing-key-<name> under
 * secret_mount_path. HMAC and base64 from OpenSSL's libcrypto.
 * Thread: load at start-up (blocks on file I/O); sign from any thread. */
#ifndef QW_SIGN_H
#define QW_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "cmn/status.h"

struct qw_signer;

/* Reads every "callback-signing-key[-<name>]" of `dir` (sorted by name;
 * symlinks followed). `*out` is new, possibly with no key (also when `dir`
 * does not exist). Errors: CMN_ERR_INVALID (not a regular file, or not a
 * base64 secret, naming it), CMN_ERR_IO, CMN_ERR_NOMEM. */
enum cmn_status qw_signer_load(const char *dir, struct qw_signer **out, struct cmn_err *err);

void qw_signer_free(struct qw_signer *signer);

/* Keys loaded (0 = callbacks go unsigned). */
size_t qw_signer_keys(const struct qw_signer *signer);

/* The webhook-signature value for message `id`, `timestamp` (seconds) and
 * `body` into `out` (`size` bytes; 48 per key is enough). False when it does
 * not fit or there is no key. */
int qw_signer_sign(const struct qw_signer *signer, const char *id, int64_t timestamp,
                   const void *body, size_t len, char *out, size_t size);

#endif
