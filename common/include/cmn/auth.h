/* HTTP Basic credentials as OpenFaaS lays them out: a secrets directory
 * holding `basic-auth-user` and `basic-auth-password`, compared in constant
 * time against "Authorization: Basic <base64(user:password)>". Shared by the
 * gateway's /system routes and the process provider. Base64 is OpenSSL's
 * (EVP_EncodeBlock / EVP_DecodeBlock). Any thread; only cmn_auth_load
 * blocks (file reads, start-up). */
#ifndef CMN_AUTH_H
#define CMN_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "cmn/status.h"

/* Reads `dir`/basic-auth-user and `dir`/basic-auth-password into `user` and
 * `password` (`size` bytes each), surrounding whitespace trimmed. Errors:
 * CMN_ERR_IO (missing or unreadable, errno in err->code), CMN_ERR_INVALID
 * (empty, longer than size - 1 bytes, path too long). Blocks on file I/O. */
enum cmn_status cmn_auth_load(const char *dir, char *user, char *password, size_t size,
                              struct cmn_err *err);

/* The expected token, base64("user:password"), as a new string (free with
 * cmn_auth_token_free, which wipes it); NULL when out of memory. */
char *cmn_auth_token(const char *user, const char *password);

/* Wipes and frees a token of cmn_auth_token. NULL allowed. */
void cmn_auth_token_free(char *token);

/* True when the Authorization header value `header` (may be NULL) is
 * "Basic <token>" (scheme in any case, blanks around the token ignored) and
 * the token equals `token`; the time taken depends only on strlen(token). */
bool cmn_auth_matches(const char *header, const char *token);

/* Decodes standard base64 `in` (NUL-terminated, padded, no blanks) into a new
 * buffer of `*out_len` bytes (plus a NUL, not counted; caller frees). NULL
 * when it is not base64 or memory runs out. */
unsigned char *cmn_base64_decode(const char *in, size_t *out_len);

#endif
