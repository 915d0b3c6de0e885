/* Unit tests for cmn/config.h: one table with every type, defaults, environment
 * overrides and every kind of invalid value. */
#include "check.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "cmn/config.h"

struct test_config {
    char *str;
    char *secret;
    char *unset;
    int64_t num;
    bool flag;
    int64_t wait_ms;
    struct cmn_config_codes codes;
};

static const struct cmn_config_entry table[] = {
    {"cfaas_t_str", CMN_CFG_STRING, "hello", 0, -1, offsetof(struct test_config, str), false,
     "a string"},
    {"cfaas_t_secret", CMN_CFG_STRING, "s3cr3t-default", 0, -1,
     offsetof(struct test_config, secret), true, "a secret"},
    {"cfaas_t_unset", CMN_CFG_STRING, NULL, 0, -1, offsetof(struct test_config, unset), false,
     "no default"},
    {"cfaas_t_num", CMN_CFG_INT, "50", 1, 1000, offsetof(struct test_config, num), false,
     "an int in 1..1000"},
    {"cfaas_t_flag", CMN_CFG_BOOL, "false", 0, -1, offsetof(struct test_config, flag), false,
     "a bool"},
    {"cfaas_t_wait", CMN_CFG_DURATION, "1m05s", 0, 3600000, offsetof(struct test_config, wait_ms),
     false, "a duration up to 1h"},
    {"cfaas_t_codes", CMN_CFG_CODES, "408,429,500,502,503,504", 0, -1,
     offsetof(struct test_config, codes), false, "retry codes"},
};
#define TABLE_COUNT (sizeof table / sizeof table[0])

static void clear_env(void)
{
    for (size_t i = 0; i < TABLE_COUNT; i++)
        unsetenv(table[i].name);
}

static void test_defaults(void)
{
    struct test_config c;
    struct cmn_err err = {0};

    clear_env();
    memset(&c, 0, sizeof c);
    CHECK(cmn_config_load(table, TABLE_COUNT, &c, &err) == CMN_OK);
    CHECK_STR(c.str, "hello");
    CHECK_STR(c.secret, "s3cr3t-default");
    CHECK(c.unset == NULL);
    CHECK_INT(c.num, 50);
    CHECK(!c.flag);
    CHECK_INT(c.wait_ms, 65000);
    CHECK(c.codes.has[408] && c.codes.has[429] && c.codes.has[500] && c.codes.has[502] &&
          c.codes.has[503] && c.codes.has[504]);
    CHECK(!c.codes.has[200] && !c.codes.has[501] && !c.codes.has[404]);
    cmn_config_free(table, TABLE_COUNT, &c);
}

static void test_env_override(void)
{
    struct test_config c;
    struct cmn_err err = {0};

    clear_env();
    setenv("cfaas_t_str", "world", 1);
    setenv("cfaas_t_unset", "now-set", 1);
    setenv("cfaas_t_num", "1000", 1);
    setenv("cfaas_t_flag", "true", 1);
    setenv("cfaas_t_wait", "90", 1); /* plain seconds */
    setenv("cfaas_t_codes", "429,599,100", 1);
    memset(&c, 0, sizeof c);
    CHECK(cmn_config_load(table, TABLE_COUNT, &c, &err) == CMN_OK);
    CHECK_STR(c.str, "world");
    CHECK_STR(c.unset, "now-set");
    CHECK_INT(c.num, 1000);
    CHECK(c.flag);
    CHECK_INT(c.wait_ms, 90000);
    CHECK(c.codes.has[429] && c.codes.has[599] && c.codes.has[100]);
    CHECK(!c.codes.has[408] && !c.codes.has[500]);
    cmn_config_free(table, TABLE_COUNT, &c);

    /* every accepted bool spelling */
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        setenv("cfaas_t_flag", yes[i], 1);
        memset(&c, 0, sizeof c);
        CHECK(cmn_config_load(table, TABLE_COUNT, &c, &err) == CMN_OK);
        CHECK(c.flag);
        cmn_config_free(table, TABLE_COUNT, &c);
        setenv("cfaas_t_flag", no[i], 1);
        memset(&c, 0, sizeof c);
        c.flag = true;
        CHECK(cmn_config_load(table, TABLE_COUNT, &c, &err) == CMN_OK);
        CHECK(!c.flag);
        cmn_config_free(table, TABLE_COUNT, &c);
    }

    /* an empty value means "use the default" */
    clear_env();
    setenv("cfaas_t_num", "", 1);
    setenv("cfaas_t_str", "", 1);
    memset(&c, 0, sizeof c);
    CHECK(cmn_config_load(table, TABLE_COUNT, &c, &err) == CMN_OK);
    CHECK_INT(c.num, 50);
    CHECK_STR(c.str, "hello");
    cmn_config_free(table, TABLE_COUNT, &c);

    /* Go-style durations and range edges */
    clear_env();
    setenv("cfaas_t_wait", "1h", 1);
    setenv("cfaas_t_num", "1", 1);
    memset(&c, 0, sizeof c);
    CHECK(cmn_config_load(table, TABLE_COUNT, &c, &err) == CMN_OK);
    CHECK_INT(c.wait_ms, 3600000);
    CHECK_INT(c.num, 1);
    cmn_config_free(table, TABLE_COUNT, &c);
    clear_env();
}

static void expect_invalid(const char *var, const char *value, int line)
{
    struct test_config c;
    struct cmn_err err = {0};

    clear_env();
    setenv(var, value, 1);
    memset(&c, 0, sizeof c);
    enum cmn_status st = cmn_config_load(table, TABLE_COUNT, &c, &err);
    check_total++;
    if (st != CMN_ERR_INVALID || strstr(err.msg, var) == NULL) {
        check_failures++;
        fprintf(stderr, "%s:%d: %s=\"%s\": want CMN_ERR_INVALID naming it, got %d \"%s\"\n",
                __FILE__, line, var, value, (int)st, err.msg);
    }
    cmn_config_free(table, TABLE_COUNT, &c);
    clear_env();
}

static void test_invalid(void)
{
    expect_invalid("cfaas_t_num", "12x", __LINE__);
    expect_invalid("cfaas_t_num", "abc", __LINE__);
    expect_invalid("cfaas_t_num", "0", __LINE__);    /* below min */
    expect_invalid("cfaas_t_num", "1001", __LINE__); /* above max */
    expect_invalid("cfaas_t_num", "-5", __LINE__);
    expect_invalid("cfaas_t_num", "99999999999999999999999", __LINE__);
    expect_invalid("cfaas_t_num", "1.5", __LINE__);
    expect_invalid("cfaas_t_flag", "maybe", __LINE__);
    expect_invalid("cfaas_t_flag", "2", __LINE__);
    expect_invalid("cfaas_t_wait", "5x", __LINE__);
    expect_invalid("cfaas_t_wait", "-1", __LINE__);
    expect_invalid("cfaas_t_wait", "2h", __LINE__); /* above max (1h) */
    expect_invalid("cfaas_t_codes", "500,abc", __LINE__);
    expect_invalid("cfaas_t_codes", "99", __LINE__);
    expect_invalid("cfaas_t_codes", "600", __LINE__);
    expect_invalid("cfaas_t_codes", "5000", __LINE__);
}

/* Runs cmn_config_log with stdout redirected to a temp file; returns its text. */
static char *capture_config_log(const struct test_config *c)
{
    char path[] = "/tmp/cfaas-config-test-XXXXXX";
    static char text[8192];
    int fd = mkstemp(path);
    int saved = dup(STDOUT_FILENO);
    ssize_t n;

    if (fd < 0 || saved < 0)
        return NULL;
    fflush(stdout);
    dup2(fd, STDOUT_FILENO);
    cmn_config_log("config_test", table, TABLE_COUNT, c);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    n = read(fd, text, sizeof text - 1);
    close(fd);
    unlink(path);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

static void test_log_and_help(void)
{
    struct test_config c;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    clear_env();
    memset(&c, 0, sizeof c);
    CHECK(cmn_config_load(table, TABLE_COUNT, &c, NULL) == CMN_OK);

    const char *log = capture_config_log(&c);
    CHECK_CONTAINS(log, "cfaas_t_str=hello");
    CHECK_CONTAINS(log, "cfaas_t_num=50");
    CHECK_CONTAINS(log, "cfaas_t_secret=");
    CHECK(log != NULL && strstr(log, "s3cr3t-default") == NULL);   /* redacted */
    CHECK(log != NULL && strchr(log, '\n') == strrchr(log, '\n')); /* one line */

    f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    if (f != NULL) {
        cmn_config_print_help(f, "config_test", table, TABLE_COUNT, false);
        fclose(f);
        for (size_t i = 0; i < TABLE_COUNT; i++)
            CHECK_CONTAINS(buf, table[i].name);
        CHECK_CONTAINS(buf, "an int in 1..1000");
        free(buf);
        buf = NULL;
    }
    f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    if (f != NULL) {
        cmn_config_print_help(f, "config_test", table, TABLE_COUNT, true);
        fclose(f);
        CHECK_CONTAINS(buf, "|");
        CHECK_CONTAINS(buf, "cfaas_t_wait");
        free(buf);
    }
    cmn_config_free(table, TABLE_COUNT, &c);

    char arg0[] = "prog", bogus[] = "--bogus";
    char *argv1[] = {arg0, NULL};
    char *argv2[] = {arg0, bogus, NULL};
    CHECK_INT(cmn_config_handle_args(1, argv1, "config_test", table, TABLE_COUNT), -1);
    CHECK_INT(cmn_config_handle_args(2, argv2, "config_test", table, TABLE_COUNT), 2);
}

int main(void)
{
    test_defaults();
    test_env_override();
    test_invalid();
    test_log_and_help();
    return check_report("config_test");
}
