/* Status codes and error detail shared by every module of libcommon.
 *
 * Library code never logs: it returns a status and, when the caller passes a
 * struct cmn_err, a one-line human-readable reason plus the original code of
 * the third-party library (natsStatus, CURLcode, errno) that caused it. */
#ifndef CMN_STATUS_H
#define CMN_STATUS_H

#include <stddef.h>

enum cmn_status {
    CMN_OK = 0,
    CMN_ERR_INVALID,     /* bad argument or malformed input */
    CMN_ERR_NOMEM,       /* allocation failed */
    CMN_ERR_NOT_FOUND,   /* unknown function, missing header, missing file */
    CMN_ERR_IO,          /* file or socket error (code = errno) */
    CMN_ERR_TIMEOUT,     /* a deadline passed */
    CMN_ERR_NATS,        /* NATS / JetStream error (code = natsStatus) */
    CMN_ERR_TOO_LARGE,   /* input over a configured limit */
    CMN_ERR_UNAVAILABLE, /* a dependency (NATS) is not connected */
    CMN_ERR_DUPLICATE,   /* JetStream reported a duplicate message id */
    CMN_ERR_CONFLICT,    /* compare-and-set lost: the record changed since it was read */
    CMN_STATUS_COUNT
};

/* Error detail written by a failing call. `code` is the foreign code, 0 if none. */
struct cmn_err {
    enum cmn_status status;
    int code;
    char msg[256];
};

/* Returns the constant name of `status` ("CMN_ERR_TIMEOUT"); never NULL.
 * Any thread, never blocks. */
const char *cmn_status_name(enum cmn_status status);

/* Fills `err` (NULL allowed: then nothing happens) and returns `status`, so a
 * failing path can write `return cmn_err_set(err, CMN_ERR_IO, errno, "open %s", p);`.
 * The message is truncated to fit. Any thread, never blocks. */
enum cmn_status cmn_err_set(struct cmn_err *err, enum cmn_status status, int code, const char *fmt,
                            ...) __attribute__((format(printf, 4, 5)));

/* Clears `err` to CMN_OK with an empty message. NULL allowed. */
void cmn_err_clear(struct cmn_err *err);

#endif
