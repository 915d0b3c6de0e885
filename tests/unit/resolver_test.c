/* Unit tests for cmn/resolver.h: static mode from tests/unit/data fixtures
 * (run with the repository root as working directory), reload, DNS mode and the
 * FunctionStatus JSON. */
#include "check.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include "cmn/resolver.h"

#define DATA "tests/unit/data/"

static struct cmn_fn_name fn_name(const char *name, const char *ns)
{
    struct cmn_fn_name fn;
    memset(&fn, 0, sizeof fn);
    snprintf(fn.name, sizeof fn.name, "%s", name);
    snprintf(fn.ns, sizeof fn.ns, "%s", ns);
    return fn;
}

static enum cmn_status open_static(const char *file, struct cmn_resolver **r, struct cmn_err *err)
{
    struct cmn_resolver_config cfg = {.functions_file = file};
    return cmn_resolver_new(&cfg, r, err);
}

static enum cmn_status lookup(struct cmn_resolver *r, const char *name, const char *ns, char *url,
                              size_t size)
{
    struct cmn_fn_name fn = fn_name(name, ns);
    return cmn_resolver_lookup(r, &fn, url, size, NULL);
}

static void test_static(void)
{
    struct cmn_resolver *r = NULL;
    struct cmn_err err = {0};
    char url[256];

    CHECK(open_static(DATA "functions.json", &r, &err) == CMN_OK);
    if (r == NULL) {
        fprintf(stderr, "resolver: %s\n", err.msg);
        return;
    }
    CHECK(cmn_resolver_mode(r) == CMN_RESOLVER_STATIC);

    CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_OK);
    CHECK_STR(url, "http://127.0.0.1:8081");                             /* trailing '/' stripped */
    CHECK(lookup(r, "sleep", "openfaas-fn", url, sizeof url) == CMN_OK); /* default namespace */
    CHECK_STR(url, "http://127.0.0.1:8082");
    CHECK(lookup(r, "echo", "dev", url, sizeof url) == CMN_OK);
    CHECK_STR(url, "https://echo.dev.example:9443/base");

    struct cmn_fn_name fn = fn_name("figlet", "dev");
    snprintf(url, sizeof url, "%s", "untouched");
    CHECK(cmn_resolver_lookup(r, &fn, url, sizeof url, &err) == CMN_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.msg, "figlet");
    CHECK(lookup(r, "nope", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);
    CHECK(lookup(r, "echo", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);

    /* a URL buffer that is too small */
    char tiny[8];
    CHECK(lookup(r, "figlet", "openfaas-fn", tiny, sizeof tiny) == CMN_ERR_TOO_LARGE);

    /* reload of an unchanged file is fine */
    CHECK(cmn_resolver_reload(r, &err) == CMN_OK);
    CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_OK);
    cmn_resolver_free(r);
    cmn_resolver_free(NULL);
}

static void expect_load_error(const char *file, enum cmn_status want, const char *in_msg, int line)
{
    struct cmn_resolver *r = NULL; /* written only on success */
    struct cmn_err err = {0};
    enum cmn_status st = open_static(file, &r, &err);
    check_total++;
    if (st != want || r != NULL || (in_msg != NULL && strstr(err.msg, in_msg) == NULL)) {
        check_failures++;
        fprintf(stderr, "%s:%d: %s: want %d with \"%s\", got %d \"%s\"\n", __FILE__, line, file,
                (int)want, in_msg ? in_msg : "", (int)st, err.msg);
    }
}

static void test_bad_files(void)
{
    expect_load_error(DATA "does-not-exist.json", CMN_ERR_IO, "does-not-exist.json", __LINE__);
    expect_load_error(DATA "functions-bad-json.json", CMN_ERR_INVALID, "line", __LINE__);
    expect_load_error(DATA "functions-dup.json", CMN_ERR_INVALID, "duplicate", __LINE__);
    expect_load_error(DATA "functions-bad-name.json", CMN_ERR_INVALID, "name", __LINE__);
    expect_load_error(DATA "functions-bad-url.json", CMN_ERR_INVALID, "url", __LINE__);
    expect_load_error(DATA "functions-no-list.json", CMN_ERR_INVALID, "functions", __LINE__);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    fputs(text, f);
    fclose(f);
}

static void test_reload(void)
{
    char path[] = "/tmp/cfaas-resolver-test-XXXXXX";
    int fd = mkstemp(path);
    struct cmn_resolver *r = NULL;
    struct cmn_err err = {0};
    char url[256];

    CHECK(fd >= 0);
    if (fd < 0)
        return;
    close(fd);
    write_file(path, "{\"functions\":[{\"name\":\"one\",\"url\":\"http://h:1\"}]}");
    CHECK(open_static(path, &r, &err) == CMN_OK);
    if (r == NULL)
        goto out;
    CHECK(lookup(r, "one", "openfaas-fn", url, sizeof url) == CMN_OK);
    CHECK(lookup(r, "two", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);

    write_file(path, "{\"functions\":[{\"name\":\"two\",\"url\":\"http://h:2\"}]}");
    CHECK(cmn_resolver_reload(r, &err) == CMN_OK);
    CHECK(lookup(r, "one", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);
    CHECK(lookup(r, "two", "openfaas-fn", url, sizeof url) == CMN_OK);
    CHECK_STR(url, "http://h:2");

    /* a broken file keeps the previous table */
    write_file(path, "{\"functions\":[{\"name\":\"three\",");
    CHECK(cmn_resolver_reload(r, &err) == CMN_ERR_INVALID);
    CHECK(lookup(r, "two", "openfaas-fn", url, sizeof url) == CMN_OK);

    /* so does a missing one */
    unlink(path);
    CHECK(cmn_resolver_reload(r, &err) == CMN_ERR_IO);
    CHECK(lookup(r, "two", "openfaas-fn", url, sizeof url) == CMN_OK);

    /* an empty list is valid */
    write_file(path, "{\"functions\":[]}");
    CHECK(cmn_resolver_reload(r, &err) == CMN_OK);
    CHECK(lookup(r, "two", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);
    char *list = cmn_resolver_list_json(r, NULL, NULL, NULL);
    CHECK_STR(list, "[]");
    free(list);
out:
    cmn_resolver_free(r);
    unlink(path);
}

static void test_modes(void)
{
    struct cmn_resolver *r = NULL;
    struct cmn_err err = {0};
    char url[256];

    struct cmn_resolver_config both = {.functions_file = DATA "functions.json",
                                       .direct_functions = true,
                                       .direct_suffix = "svc.cluster.local"};
    CHECK(cmn_resolver_new(&both, &r, &err) == CMN_ERR_INVALID);
    CHECK(r == NULL);
    struct cmn_resolver_config neither = {0};
    CHECK(cmn_resolver_new(&neither, &r, &err) == CMN_ERR_INVALID);
    CHECK(r == NULL);

    struct cmn_resolver_config dns = {.direct_functions = true,
                                      .direct_suffix = "svc.cluster.local"};
    CHECK(cmn_resolver_new(&dns, &r, &err) == CMN_OK);
    if (r != NULL) {
        CHECK(cmn_resolver_mode(r) == CMN_RESOLVER_DNS);
        CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_OK);
        CHECK_STR(url, "http://figlet.openfaas-fn.svc.cluster.local:8080");
        CHECK(lookup(r, "anything", "dev", url, sizeof url) == CMN_OK);
        CHECK_STR(url, "http://anything.dev.svc.cluster.local:8080");
        char tiny[16];
        CHECK(lookup(r, "figlet", "openfaas-fn", tiny, sizeof tiny) == CMN_ERR_TOO_LARGE);
        CHECK(lookup(r, "Bad", "openfaas-fn", url, sizeof url) == CMN_ERR_INVALID);
        CHECK(cmn_resolver_reload(r, &err) == CMN_OK); /* nothing to re-read */
        char *list = cmn_resolver_list_json(r, NULL, NULL, NULL);
        CHECK_STR(list, "[]");
        free(list);
        struct cmn_fn_name fn = fn_name("figlet", "openfaas-fn");
        CHECK(cmn_resolver_function_json(r, &fn, NULL, NULL) == NULL);
        cmn_resolver_free(r);
        r = NULL;
    }

    struct cmn_resolver_config dns_empty = {.direct_functions = true, .direct_suffix = ""};
    CHECK(cmn_resolver_new(&dns_empty, &r, &err) == CMN_OK);
    if (r != NULL) {
        CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_OK);
        CHECK_STR(url, "http://figlet.openfaas-fn:8080");
        cmn_resolver_free(r);
        r = NULL;
    }
    struct cmn_resolver_config dns_null = {.direct_functions = true};
    CHECK(cmn_resolver_new(&dns_null, &r, &err) == CMN_OK);
    if (r != NULL) {
        CHECK(lookup(r, "figlet", "dev", url, sizeof url) == CMN_OK);
        CHECK_STR(url, "http://figlet.dev:8080");
        cmn_resolver_free(r);
        r = NULL;
    }
    struct cmn_resolver_config dns_bad = {.direct_functions = true, .direct_suffix = "a/b"};
    CHECK(cmn_resolver_new(&dns_bad, &r, &err) == CMN_ERR_INVALID);
    CHECK(r == NULL);
}

static const char *obj_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void test_json(void)
{
    struct cmn_resolver *r = NULL;
    json_error_t jerr;

    CHECK(open_static(DATA "functions.json", &r, NULL) == CMN_OK);
    if (r == NULL)
        return;

    char *text = cmn_resolver_list_json(r, NULL, NULL, NULL);
    json_t *list = text ? json_loads(text, 0, &jerr) : NULL;
    CHECK(json_is_array(list));
    CHECK_INT(json_array_size(list), 3);
    int seen = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *f = json_array_get(list, i);
        const char *name = obj_str(f, "name");
        if (name != NULL && strcmp(name, "figlet") == 0) {
            seen |= 1;
            CHECK_STR(obj_str(f, "namespace"), "openfaas-fn");
            CHECK_STR(obj_str(f, "image"), "");
            CHECK_INT(json_integer_value(json_object_get(f, "replicas")), 1);
            CHECK_INT(json_integer_value(json_object_get(f, "availableReplicas")), 1);
            CHECK(json_is_integer(json_object_get(f, "invocationCount")));
            CHECK_STR(obj_str(json_object_get(f, "annotations"), "com.openfaas.queue"),
                      "faas-request");
            CHECK_STR(obj_str(json_object_get(f, "labels"), "team"), "demo");
        } else if (name != NULL && strcmp(name, "sleep") == 0) {
            seen |= 2;
            CHECK_STR(obj_str(f, "namespace"), "openfaas-fn");
            CHECK(json_is_object(json_object_get(f, "labels")));
        } else if (name != NULL && strcmp(name, "echo") == 0) {
            seen |= 4;
            CHECK_STR(obj_str(f, "namespace"), "dev");
            CHECK(json_is_object(json_object_get(f, "annotations")));
        }
        CHECK(json_object_get(f, "url") == NULL); /* upstream URLs are not leaked */
    }
    CHECK_INT(seen, 7);
    CHECK(text == NULL || strstr(text, "127.0.0.1") == NULL);
    json_decref(list);
    free(text);

    text = cmn_resolver_list_json(r, "dev", NULL, NULL);
    list = text ? json_loads(text, 0, &jerr) : NULL;
    CHECK_INT(json_array_size(list), 1);
    CHECK_STR(obj_str(json_array_get(list, 0), "name"), "echo");
    json_decref(list);
    free(text);

    text = cmn_resolver_list_json(r, "nobody", NULL, NULL);
    CHECK_STR(text, "[]");
    free(text);

    struct cmn_fn_name fn = fn_name("figlet", "openfaas-fn");
    text = cmn_resolver_function_json(r, &fn, NULL, NULL);
    json_t *one = text ? json_loads(text, 0, &jerr) : NULL;
    CHECK(json_is_object(one));
    CHECK_STR(obj_str(one, "name"), "figlet");
    CHECK_STR(obj_str(one, "namespace"), "openfaas-fn");
    CHECK(json_object_get(one, "url") == NULL);
    json_decref(one);
    free(text);

    fn = fn_name("figlet", "dev");
    CHECK(cmn_resolver_function_json(r, &fn, NULL, NULL) == NULL);
    cmn_resolver_free(r);
}

struct reader_arg {
    struct cmn_resolver *r;
    atomic_bool *stop;
    int errors;
};

/* Looks up and lists continuously while the main thread reloads. */
static void *reader(void *p)
{
    struct reader_arg *a = p;
    char url[256];
    while (!atomic_load(a->stop)) {
        enum cmn_status st = lookup(a->r, "figlet", "openfaas-fn", url, sizeof url);
        if (st != CMN_OK || strcmp(url, "http://127.0.0.1:8081") != 0)
            a->errors++;
        char *list = cmn_resolver_list_json(a->r, NULL, NULL, NULL);
        if (list == NULL || strstr(list, "\"figlet\"") == NULL)
            a->errors++;
        free(list);
    }
    return NULL;
}

static void test_concurrent_reload(void)
{
    struct cmn_resolver *r = NULL;
    pthread_t t[4];
    struct reader_arg args[4];
    atomic_bool stop = false;

    CHECK(open_static(DATA "functions.json", &r, NULL) == CMN_OK);
    if (r == NULL)
        return;
    for (int i = 0; i < 4; i++) {
        args[i] = (struct reader_arg){r, &stop, 0};
        CHECK(pthread_create(&t[i], NULL, reader, &args[i]) == 0);
    }
    for (int i = 0; i < 200; i++)
        CHECK(cmn_resolver_reload(r, NULL) == CMN_OK);
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(args[i].errors, 0);
    }
    cmn_resolver_free(r);
}

static void collect_warn(void *arg, const char *line)
{
    int *n = arg;
    (*n)++;
    (void)line;
}

/* Provider mode: the cache is filled from FunctionStatus answers, a list
 * replaces its namespace, an object adds one, a drop forgets one; without a
 * catalog (the worker) any name resolves to the provider's route. */
static void test_provider(void)
{
    struct cmn_resolver *r = NULL;
    struct cmn_err err = {0};
    char url[256];
    int warnings = 0;
    struct cmn_resolver_config cfg = {.provider_url = "http://127.0.0.1:8081/",
                                      .provider_catalog = true,
                                      .warn = collect_warn,
                                      .warn_arg = &warnings};
    CHECK(cmn_resolver_new(&cfg, &r, &err) == CMN_OK);
    if (r == NULL)
        return;
    CHECK(cmn_resolver_mode(r) == CMN_RESOLVER_PROVIDER);
    CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);
    const char *list = "[{\"name\":\"figlet\",\"namespace\":\"openfaas-fn\",\"replicas\":1,"
                       "\"annotations\":{\"com.openfaas.queue\":\"slow\","
                       "\"com.openfaas.retry.attempts\":\"x\"}},"
                       "{\"name\":\"env\"},{\"name\":\"Bad Name\"},{\"image\":\"x\"},"
                       "{\"name\":\"other\",\"namespace\":\"dev\"}]";
    CHECK(cmn_resolver_provider_put(r, list, strlen(list), "openfaas-fn", "openfaas-fn", &err) ==
          CMN_OK);
    CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_OK);
    CHECK_STR(url, "http://127.0.0.1:8081/function/figlet.openfaas-fn");
    CHECK(lookup(r, "env", "openfaas-fn", url, sizeof url) == CMN_OK); /* no namespace: default */
    CHECK(lookup(r, "other", "dev", url, sizeof url) == CMN_ERR_NOT_FOUND); /* not that list's */
    CHECK_INT(warnings, 1);                                                 /* attempts "x" */
    struct cmn_fn_name fn = fn_name("figlet", "openfaas-fn");
    struct cmn_fn_policy pol;
    CHECK(cmn_resolver_lookup_policy(r, &fn, url, sizeof url, &pol, &err) == CMN_OK);
    CHECK_STR(pol.queue, "slow");
    CHECK_INT(pol.retry_attempts, -1);
    char queues[4][CMN_QUEUE_MAX];
    CHECK_INT(cmn_resolver_queues(r, queues, 4), 1);
    CHECK_STR(queues[0], "slow");

    /* one object: added (other namespace) or replaced */
    const char *one = "{\"name\":\"other\",\"namespace\":\"dev\"}";
    CHECK(cmn_resolver_provider_put(r, one, strlen(one), NULL, "openfaas-fn", &err) == CMN_OK);
    CHECK(lookup(r, "other", "dev", url, sizeof url) == CMN_OK);
    CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_OK);
    /* a newer list of openfaas-fn without figlet removes it, keeps dev's */
    const char *list2 = "[{\"name\":\"env\"}]";
    CHECK(cmn_resolver_provider_put(r, list2, strlen(list2), "openfaas-fn", "openfaas-fn", &err) ==
          CMN_OK);
    CHECK(lookup(r, "figlet", "openfaas-fn", url, sizeof url) == CMN_ERR_NOT_FOUND);
    CHECK(lookup(r, "other", "dev", url, sizeof url) == CMN_OK);
    struct cmn_fn_name gone = fn_name("other", "dev");
    cmn_resolver_provider_drop(r, &gone);
    CHECK(lookup(r, "other", "dev", url, sizeof url) == CMN_ERR_NOT_FOUND);
    CHECK(lookup(r, "env", "openfaas-fn", url, sizeof url) == CMN_OK);
    /* not a FunctionStatus shape */
    CHECK(cmn_resolver_provider_put(r, "42", 2, "openfaas-fn", "openfaas-fn", &err) ==
          CMN_ERR_INVALID);
    CHECK(cmn_resolver_provider_put(r, "[", 1, "openfaas-fn", "openfaas-fn", &err) ==
          CMN_ERR_INVALID);
    CHECK(lookup(r, "env", "openfaas-fn", url, sizeof url) == CMN_OK); /* cache kept */
    cmn_resolver_free(r);

    /* the worker: no catalog, every valid name goes to the provider */
    struct cmn_resolver_config wcfg = {.provider_url = "http://provider:8081"};
    CHECK(cmn_resolver_new(&wcfg, &r, &err) == CMN_OK);
    if (r != NULL) {
        CHECK(lookup(r, "any", "ns1", url, sizeof url) == CMN_OK);
        CHECK_STR(url, "http://provider:8081/function/any.ns1");
        cmn_resolver_free(r);
    }
    r = NULL;
    struct cmn_resolver_config bad = {.provider_url = "https://x"};
    CHECK(cmn_resolver_new(&bad, &r, &err) == CMN_ERR_INVALID);
    struct cmn_resolver_config two = {.provider_url = "http://x", .direct_functions = true};
    CHECK(cmn_resolver_new(&two, &r, &err) == CMN_ERR_INVALID);
}

/* function_queues: name or name.ns pairs, in DNS mode; annotations win
 * elsewhere (tests/e2e/test_queues_policy.py). */
static void test_queue_map(void)
{
    struct cmn_resolver *r = NULL;
    struct cmn_err err = {0};
    char url[256];
    struct cmn_fn_policy pol;
    struct cmn_resolver_config cfg = {.direct_functions = true,
                                      .direct_suffix = "svc",
                                      .function_queues = " slow=q-slow, batch.dev=q_batch ,"};
    CHECK(cmn_resolver_new(&cfg, &r, &err) == CMN_OK);
    if (r == NULL)
        return;
    struct cmn_fn_name a = fn_name("slow", "any-ns"), b = fn_name("batch", "dev"),
                       c = fn_name("batch", "prod");
    CHECK(cmn_resolver_lookup_policy(r, &a, url, sizeof url, &pol, &err) == CMN_OK);
    CHECK_STR(pol.queue, "q-slow");
    CHECK(cmn_resolver_lookup_policy(r, &b, url, sizeof url, &pol, &err) == CMN_OK);
    CHECK_STR(pol.queue, "q_batch");
    CHECK(cmn_resolver_lookup_policy(r, &c, url, sizeof url, &pol, &err) == CMN_OK);
    CHECK_STR(pol.queue, "");
    char queues[4][CMN_QUEUE_MAX];
    CHECK_INT(cmn_resolver_queues(r, queues, 4), 2);
    cmn_resolver_free(r);
    const char *bad[] = {"slow",
                         "slow=",
                         "=q",
                         "slow=q.x",
                         "Bad Name=q",
                         "slow=q w",
                         "slow=KV_faas-calls",
                         "slow=OBJ_files",
                         "slow=faas-request-dlq"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cmn_resolver_config b2 = {.direct_functions = true,
                                         .function_queues = bad[i],
                                         .dead_letter_stream = "faas-request-dlq"};
        r = NULL;
        CHECK(cmn_resolver_new(&b2, &r, &err) == CMN_ERR_INVALID);
        CHECK_CONTAINS(err.msg, "function_queues");
    }
}

/* Counts in the FunctionStatus JSON and the enrichment of a provider's. */
static double count3(void *arg, const char *name, const char *ns)
{
    (void)arg;
    return strcmp(name, "figlet") == 0 && strcmp(ns, "openfaas-fn") == 0 ? 3 : 0;
}

static void test_enrich(void)
{
    char *out = NULL;
    const char *in = "[{\"name\":\"figlet\",\"invocationCount\":99,\"replicas\":2},"
                     "{\"name\":\"figlet\",\"namespace\":\"dev\"}]";
    CHECK(cmn_status_json_enrich(in, strlen(in), "openfaas-fn", count3, NULL, &out) == CMN_OK);
    if (out != NULL) {
        json_t *v = json_loads(out, 0, NULL);
        CHECK_INT(json_integer_value(json_object_get(json_array_get(v, 0), "invocationCount")), 3);
        CHECK_INT(json_integer_value(json_object_get(json_array_get(v, 0), "replicas")), 2);
        CHECK_INT(json_integer_value(json_object_get(json_array_get(v, 1), "invocationCount")), 0);
        json_decref(v);
        free(out);
    }
    CHECK(cmn_status_json_enrich("nope", 4, "x", count3, NULL, &out) == CMN_ERR_INVALID);
}

int main(void)
{
    test_provider();
    test_queue_map();
    test_enrich();
    test_static();
    test_bad_files();
    test_reload();
    test_modes();
    test_json();
    test_concurrent_reload();
    return check_report("resolver_test");
}
