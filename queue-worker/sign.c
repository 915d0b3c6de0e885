/* Standard Webhooks signatures with OpenSSL (HMAC, EVP base64). */
#include "sign.h"

#include <dirent.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/params.h>

#define PREFIX "callback-signing-key"
#define MAX_KEYS 8
#define KEY_MAX 512
#define KEY_MIN 16

struct key {
    unsigned char bytes[KEY_MAX];
    size_t len;
};

struct qw_signer {
    struct key keys[MAX_KEYS];
    size_t count;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "whsec_<base64>" or "<base64>", surrounding whitespace trimmed. */
static bool decode_secret(char *text, struct key *k)
{
    char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        p[--n] = '\0';
    if (strncmp(p, "whsec_", 6) == 0) {
        p += 6;
        n -= 6;
    }
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > KEY_MAX)
        return false;
    int got = EVP_DecodeBlock(k->bytes, (const unsigned char *)p, (int)n);
    if (got < 0)
        return false;
    /* EVP_DecodeBlock counts the padding as data */
    size_t pad = (p[n - 1] == '=') + (p[n - 2] == '=');
    k->len = (size_t)got - pad;
    return k->len >= KEY_MIN; /* Standard Webhooks secrets are 24 to 64 bytes */
}

enum cmn_status qw_signer_load(const char *dir, struct qw_signer **out, struct cmn_err *err)
{
    struct qw_signer *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    DIR *d = dir != NULL ? opendir(dir) : NULL;
    if (d == NULL) {
        *out = s; /* no directory: no key */
        return CMN_OK;
    }
    char *names[64];
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && count < 64) {
        /* "callback-signing-key" or "callback-signing-key-<anything>" */
        size_t pl = strlen(PREFIX);
        if (strncmp(e->d_name, PREFIX, pl) == 0 && (e->d_name[pl] == '\0' || e->d_name[pl] == '-'))
            names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof(names[0]), by_name);
    enum cmn_status st = CMN_OK;
    for (size_t i = 0; i < count; i++) {
        char path[4096], text[2048];
        struct stat sb;
        if (names[i] == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (st != CMN_OK)
            continue;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            /* a broken secret mount must not mean unsigned callbacks */
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s is not a readable file", path);
            continue;
        }
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            st = cmn_err_set(err, CMN_ERR_IO, 0, "cannot read %s", path);
            continue;
        }
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        if (s->count == MAX_KEYS) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "more than %d callback signing keys",
                             MAX_KEYS);
        } else if (!decode_secret(text, &s->keys[s->count])) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0,
                             "%s: not a signing secret (whsec_<base64 of %d to %d bytes>)", path,
                             KEY_MIN, KEY_MAX);
        } else {
            s->count++;
        }
    }
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    if (st != CMN_OK) {
        qw_signer_free(s);
        return st;
    }
    *out = s;
    return CMN_OK;
}

void qw_signer_free(struct qw_signer *signer)
{
    if (signer == NULL)
        return;
    OPENSSL_cleanse(signer, sizeof(*signer));
    free(signer);
}

size_t qw_signer_keys(const struct qw_signer *signer)
{
    return signer != NULL ? signer->count : 0;
}

int qw_signer_sign(const struct qw_signer *signer, const char *id, int64_t timestamp,
                   const void *body, size_t len, char *out, size_t size)
{
    if (qw_signer_keys(signer) == 0 || size == 0)
        return 0;
    char head[256];
    int hl = snprintf(head, sizeof(head), "%s.%" PRId64 ".", id, timestamp);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return 0;
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < signer->count; i++) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *ctx = hmac != NULL ? EVP_MAC_CTX_new(hmac) : NULL;
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                               OSSL_PARAM_construct_end()};
        bool ok = ctx != NULL &&
                  EVP_MAC_init(ctx, signer->keys[i].bytes, signer->keys[i].len, params) == 1 &&
                  EVP_MAC_update(ctx, (const unsigned char *)head, (size_t)hl) == 1 &&
                  (len == 0 || EVP_MAC_update(ctx, body, len) == 1) &&
                  EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1;
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(hmac);
        if (!ok)
            return 0;
        unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
        int bl = EVP_EncodeBlock(b64, mac, (int)mac_len);
        int n = snprintf(out + used, size - used, "%sv1,%s", i ? " " : "", (const char *)b64);
        if (n < 0 || (size_t)n >= size - used)
            return 0;
        used += (size_t)n;
        (void)bl;
    }
    return 1;
}
