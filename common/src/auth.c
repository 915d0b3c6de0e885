/* Basic credentials: loading, the expected token, the constant-time check. */
#include "cmn/auth.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static enum cmn_status read_secret(const char *dir, const char *file, char *out, size_t size,
                                   struct cmn_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "secret path too long: %s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return cmn_err_set(err, CMN_ERR_IO, errno, "unable to load %s: %s", path, strerror(errno));
    size_t n = fread(out, 1, size - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: longer than %zu bytes", path, size - 1);
    out[n] = '\0';
    size_t start = 0;
    while (start < n && isspace((unsigned char)out[start]))
        start++;
    while (n > start && isspace((unsigned char)out[n - 1]))
        n--;
    memmove(out, out + start, n - start);
    out[n - start] = '\0';
    if (out[0] == '\0')
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s is empty", path);
    return CMN_OK;
}

enum cmn_status cmn_auth_load(const char *dir, char *user, char *password, size_t size,
                              struct cmn_err *err)
{
    enum cmn_status st = read_secret(dir, "basic-auth-user", user, size, err);
    if (st == CMN_OK)
        st = read_secret(dir, "basic-auth-password", password, size, err);
    return st;
}

char *cmn_auth_token(const char *user, const char *password)
{
    size_t plain_len = strlen(user) + 1 + strlen(password);
    if (plain_len > (size_t)(INT32_MAX / 2))
        return NULL;
    unsigned char *plain = malloc(plain_len + 1);
    char *token = malloc(4 * ((plain_len + 2) / 3) + 1);
    if (plain == NULL || token == NULL) {
        free(plain);
        free(token);
        return NULL;
    }
    size_t ul = strlen(user);
    memcpy(plain, user, ul);
    plain[ul] = ':';
    memcpy(plain + ul + 1, password, plain_len - ul - 1);
    plain[plain_len] = '\0';
    EVP_EncodeBlock((unsigned char *)token, plain, (int)plain_len);
    OPENSSL_cleanse(plain, plain_len);
    free(plain);
    return token;
}

void cmn_auth_token_free(char *token)
{
    if (token == NULL)
        return;
    OPENSSL_cleanse(token, strlen(token));
    free(token);
}

bool cmn_auth_matches(const char *h, const char *token)
{
    if (h == NULL || token == NULL || strncasecmp(h, "Basic ", 6) != 0)
        return false;
    h += 6;
    while (*h == ' ')
        h++;
    size_t len = strlen(h);
    while (len > 0 && h[len - 1] == ' ')
        len--;
    size_t want = strlen(token);
    /* compare `want` bytes whatever was given, so the time tells nothing */
    unsigned char diff = len != want;
    for (size_t i = 0; i < want; i++) {
        unsigned char g = i < len ? (unsigned char)h[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)token[i]);
    }
    return diff == 0;
}

unsigned char *cmn_base64_decode(const char *in, size_t *out_len)
{
    size_t len = strlen(in);
    if (len % 4 != 0 || len > (size_t)INT32_MAX)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (out == NULL)
        return NULL;
    int n = len > 0 ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)len) : 0;
    if (n < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the bytes the '=' padding stands for */
    size_t pad = 0;
    while (pad < 2 && len > pad && in[len - 1 - pad] == '=')
        pad++;
    *out_len = (size_t)n - pad;
    out[*out_len] = '\0';
    return out;
}
