/* Unit tests for cmn/auth.h: the credential files, the expected token, the
 * header check and base64 decoding. */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmn/auth.h"

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_load(void)
{
    char dir[] = "/tmp/cfaas-auth-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char user[64], password[64];
    struct cmn_err err;
    CHECK(cmn_auth_load(dir, user, password, sizeof(user), &err) == CMN_ERR_IO);
    write_file(dir, "basic-auth-user", "  admin\n");
    write_file(dir, "basic-auth-password", "s3cret\n\n");
    CHECK(cmn_auth_load(dir, user, password, sizeof(user), &err) == CMN_OK);
    CHECK_STR(user, "admin");
    CHECK_STR(password, "s3cret");
    write_file(dir, "basic-auth-password", " \n");
    CHECK(cmn_auth_load(dir, user, password, sizeof(user), &err) == CMN_ERR_INVALID);
    write_file(dir, "basic-auth-password", "0123456789");
    CHECK(cmn_auth_load(dir, user, password, 8, &err) == CMN_ERR_INVALID);
    char path[512];
    snprintf(path, sizeof(path), "%s/basic-auth-user", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/basic-auth-password", dir);
    unlink(path);
    rmdir(dir);
}

static void test_token(void)
{
    char *t = cmn_auth_token("admin", "s3cret");
    CHECK(t != NULL);
    if (t == NULL)
        return;
    CHECK_STR(t, "YWRtaW46czNjcmV0"); /* base64("admin:s3cret") */
    CHECK(cmn_auth_matches("Basic YWRtaW46czNjcmV0", t));
    CHECK(cmn_auth_matches("basic   YWRtaW46czNjcmV0  ", t));
    CHECK(!cmn_auth_matches("Basic YWRtaW46czNjcmV", t));
    CHECK(!cmn_auth_matches("Basic YWRtaW46czNjcmV0x", t));
    CHECK(!cmn_auth_matches("Bearer YWRtaW46czNjcmV0", t));
    CHECK(!cmn_auth_matches("Basic", t));
    CHECK(!cmn_auth_matches(NULL, t));
    cmn_auth_token_free(t);
    char *u = cmn_auth_token("a", "");
    CHECK_STR(u, "YTo=");
    cmn_auth_token_free(u);
    cmn_auth_token_free(NULL);
}

static void test_base64(void)
{
    size_t n = 0;
    unsigned char *b = cmn_base64_decode("YWRtaW46czNjcmV0", &n);
    CHECK(b != NULL && n == 12 && memcmp(b, "admin:s3cret", 12) == 0);
    free(b);
    b = cmn_base64_decode("YTo=", &n);
    CHECK(b != NULL && n == 2 && memcmp(b, "a:", 2) == 0);
    free(b);
    b = cmn_base64_decode("AA==", &n);
    CHECK(b != NULL && n == 1 && b[0] == 0);
    free(b);
    b = cmn_base64_decode("", &n);
    CHECK(b != NULL && n == 0);
    free(b);
    CHECK(cmn_base64_decode("abc", &n) == NULL);
    CHECK(cmn_base64_decode("ab!d", &n) == NULL);
}

int main(void)
{
    test_load();
    test_token();
    test_base64();
    return check_report("auth_test");
}
