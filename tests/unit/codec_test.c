/* Unit tests for cmn/codec.h: wire format v1 of a queued call (DESIGN.md §3). */
#include "check.h"

#include <stdlib.h>
#include <strings.h>
#include "cmn/codec.h"

static size_t count_named(const struct cmn_headers *h, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < h->count; i++)
        if (strcasecmp(h->items[i].name, name) == 0)
            n++;
    return n;
}

static char *dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* A fully populated call, including headers the encoder must drop. */
static void make_call(struct cmn_call *c)
{
    cmn_call_init(c);
    snprintf(c->call_id, sizeof c->call_id, "%s", "9f2b6d0e-0000-4000-8000-000000000001");
    c->function = dup("figlet.openfaas-fn");
    c->method = dup("POST");
    c->path = dup("/a/b");
    c->query = dup("x=1&y=2");
    c->callback_url = dup("http://receiver.example:8888/cb?x=1");
    c->start_ns = 1700000000123456789LL;
    cmn_headers_add(&c->headers, "Content-Type", "text/plain");
    cmn_headers_add(&c->headers, "X-Multi", "one");
    cmn_headers_add(&c->headers, "X-Multi", "two");
    cmn_headers_add(&c->headers, "Authorization", "Bearer t");
    cmn_headers_add(&c->headers, "X-Callback-Url", "http://receiver.example:8888/cb?x=1");
    /* dropped: reserved (a client must never spoof metadata) and hop-by-hop */
    cmn_headers_add(&c->headers, "Faas-Function", "evil");
    cmn_headers_add(&c->headers, "faas-path", "/evil");
    cmn_headers_add(&c->headers, "Nats-Msg-Id", "evil");
    cmn_headers_add(&c->headers, "Nats-Expected-Stream", "evil");
    cmn_headers_add(&c->headers, "Connection", "close");
    cmn_headers_add(&c->headers, "Transfer-Encoding", "chunked");
    cmn_headers_add(&c->headers, "Host", "gateway:8080");
    cmn_headers_add(&c->headers, "Content-Length", "3");
}

static void test_round_trip(void)
{
    struct cmn_call in, out;
    struct cmn_headers wire;
    struct cmn_err err = {0};

    make_call(&in);
    cmn_headers_init(&wire);
    CHECK(cmn_call_encode(&in, &wire, &err) == CMN_OK);

    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_MSG_ID), in.call_id);
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_VERSION), "1");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_FUNCTION), "figlet.openfaas-fn");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_METHOD), "POST");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_PATH), "/a/b");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_QUERY), "x=1&y=2");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_CALLBACK), "http://receiver.example:8888/cb?x=1");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_START), "1700000000123456789");
    CHECK_INT(count_named(&wire, CMN_HDR_MSG_ID), 1);
    CHECK_INT(count_named(&wire, CMN_HDR_FUNCTION), 1);
    CHECK_INT(count_named(&wire, CMN_HDR_PATH), 1);
    CHECK_INT(count_named(&wire, "Nats-Expected-Stream"), 0);
    CHECK_INT(count_named(&wire, "Connection"), 0);
    CHECK_INT(count_named(&wire, "Transfer-Encoding"), 0);
    CHECK_INT(count_named(&wire, "Host"), 0);
    CHECK_INT(count_named(&wire, "Content-Length"), 0);
    CHECK_INT(count_named(&wire, "X-Multi"), 2);
    CHECK_STR(cmn_headers_get(&wire, "Content-Type"), "text/plain");
    CHECK_STR(cmn_headers_get(&wire, "Authorization"), "Bearer t");
    /* metadata comes first */
    CHECK(wire.count > 0 && (strncasecmp(wire.items[0].name, "Nats-", 5) == 0 ||
                             strncasecmp(wire.items[0].name, "Faas-", 5) == 0));

    cmn_call_init(&out);
    CHECK(cmn_call_decode(&wire, &out, &err) == CMN_OK);
    CHECK_STR(out.call_id, in.call_id);
    CHECK_STR(out.function, in.function);
    CHECK_STR(out.method, in.method);
    CHECK_STR(out.path, in.path);
    CHECK_STR(out.query, in.query);
    CHECK_STR(out.callback_url, in.callback_url);
    CHECK_INT(out.start_ns, in.start_ns);
    CHECK_STR(cmn_headers_get(&out.headers, "Content-Type"), "text/plain");
    CHECK_STR(cmn_headers_get(&out.headers, "Authorization"), "Bearer t");
    CHECK_STR(cmn_headers_get(&out.headers, "X-Callback-Url"),
              "http://receiver.example:8888/cb?x=1");
    CHECK_INT(count_named(&out.headers, "X-Multi"), 2);
    /* the replayed request headers hold no metadata */
    for (size_t i = 0; i < out.headers.count; i++) {
        CHECK(strncasecmp(out.headers.items[i].name, "Faas-", 5) != 0);
        CHECK(strncasecmp(out.headers.items[i].name, "Nats-", 5) != 0);
        CHECK(!cmn_header_is_hop_by_hop(out.headers.items[i].name));
    }

    cmn_call_free(&out);
    cmn_call_free(&in);
    cmn_call_free(&in); /* twice is fine */
    cmn_call_free(NULL);
    cmn_headers_free(&wire);
}

static void test_encode_appends(void)
{
    struct cmn_call in;
    struct cmn_headers wire;

    make_call(&in);
    cmn_headers_init(&wire);
    cmn_headers_add(&wire, "X-Before", "kept");
    CHECK(cmn_call_encode(&in, &wire, NULL) == CMN_OK);
    CHECK_STR(wire.items[0].name, "X-Before");
    CHECK_STR(cmn_headers_get(&wire, CMN_HDR_VERSION), "1");
    cmn_headers_free(&wire);
    cmn_call_free(&in);
}

static void test_empty_path_query_no_callback(void)
{
    struct cmn_call in, out;
    struct cmn_headers wire;
    struct cmn_err err = {0};

    cmn_call_init(&in);
    snprintf(in.call_id, sizeof in.call_id, "%s", "id-1");
    in.function = dup("figlet");
    in.method = dup("POST");
    in.path = dup("");
    in.query = dup("");
    in.start_ns = 1;
    cmn_headers_init(&wire);
    CHECK(cmn_call_encode(&in, &wire, &err) == CMN_OK);
    CHECK(cmn_headers_get(&wire, CMN_HDR_CALLBACK) == NULL);

    cmn_call_init(&out);
    CHECK(cmn_call_decode(&wire, &out, &err) == CMN_OK);
    CHECK_STR(out.path, "");
    CHECK_STR(out.query, "");
    CHECK(out.callback_url == NULL);
    CHECK_INT(out.start_ns, 1);
    CHECK_INT(out.headers.count, 0);
    cmn_call_free(&out);
    cmn_headers_free(&wire);

    /* Faas-Path and Faas-Query absent altogether default to "". */
    cmn_headers_init(&wire);
    cmn_headers_add(&wire, CMN_HDR_MSG_ID, "id-2");
    cmn_headers_add(&wire, CMN_HDR_VERSION, "1");
    cmn_headers_add(&wire, CMN_HDR_FUNCTION, "figlet");
    cmn_headers_add(&wire, CMN_HDR_METHOD, "POST");
    cmn_headers_add(&wire, CMN_HDR_START, "1700000000000000000");
    cmn_call_init(&out);
    CHECK(cmn_call_decode(&wire, &out, &err) == CMN_OK);
    CHECK_STR(out.path, "");
    CHECK_STR(out.query, "");
    CHECK_STR(out.call_id, "id-2");
    cmn_call_free(&out);
    cmn_headers_free(&wire);

    cmn_call_free(&in);
}

static void expect_encode_invalid(struct cmn_call *c, int line)
{
    struct cmn_headers wire;
    struct cmn_err err = {0};
    cmn_headers_init(&wire);
    enum cmn_status st = cmn_call_encode(c, &wire, &err);
    check_total++;
    if (st != CMN_ERR_INVALID || err.msg[0] == '\0') {
        check_failures++;
        fprintf(stderr, "%s:%d: encode: want CMN_ERR_INVALID with reason, got %d \"%s\"\n",
                __FILE__, line, (int)st, err.msg);
    }
    cmn_headers_free(&wire);
}

static void test_encode_rejects(void)
{
    struct cmn_call c;
    char *saved;

    make_call(&c);
    saved = c.function;
    c.function = NULL;
    expect_encode_invalid(&c, __LINE__);
    c.function = saved;

    saved = c.method;
    c.method = NULL;
    expect_encode_invalid(&c, __LINE__);
    c.method = saved;

    c.call_id[0] = '\0';
    expect_encode_invalid(&c, __LINE__);
    snprintf(c.call_id, sizeof c.call_id, "%s", "ok-id");

    cmn_headers_add(&c.headers, "X-Evil", "a\r\nFaas-Function: other");
    expect_encode_invalid(&c, __LINE__);
    cmn_headers_remove(&c.headers, "X-Evil");

    cmn_headers_add(&c.headers, "X-Evil", "a\nb");
    expect_encode_invalid(&c, __LINE__);
    cmn_headers_remove(&c.headers, "X-Evil");

    free(c.path);
    c.path = dup("/a\r\nb");
    expect_encode_invalid(&c, __LINE__);
    free(c.path);
    c.path = dup("/a");

    free(c.callback_url);
    c.callback_url = dup("http://x/\ny");
    expect_encode_invalid(&c, __LINE__);
    free(c.callback_url);
    c.callback_url = NULL;

    struct cmn_headers wire;
    cmn_headers_init(&wire);
    CHECK(cmn_call_encode(&c, &wire, NULL) == CMN_OK); /* fixed up: fine again */
    cmn_headers_free(&wire);
    cmn_call_free(&c);
}

/* Builds a valid wire header list, then drops `without` and/or overrides one header. */
static void wire_with(struct cmn_headers *w, const char *without, const char *name,
                      const char *value)
{
    static const char *const base[][2] = {
        {CMN_HDR_MSG_ID, "id-1"},
        {CMN_HDR_VERSION, "1"},
        {CMN_HDR_FUNCTION, "figlet"},
        {CMN_HDR_METHOD, "POST"},
        {CMN_HDR_PATH, "/p"},
        {CMN_HDR_QUERY, "q=1"},
        {CMN_HDR_START, "1700000000000000000"},
    };
    cmn_headers_init(w);
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        if (without != NULL && strcmp(base[i][0], without) == 0)
            continue;
        cmn_headers_add(w, base[i][0], base[i][1]);
    }
    if (name != NULL)
        cmn_headers_set(w, name, value);
}

static void expect_decode_invalid(const char *without, const char *name, const char *value,
                                  int line)
{
    struct cmn_headers w;
    struct cmn_call c;
    struct cmn_err err = {0};

    wire_with(&w, without, name, value);
    cmn_call_init(&c);
    enum cmn_status st = cmn_call_decode(&w, &c, &err);
    check_total++;
    if (st != CMN_ERR_INVALID || err.msg[0] == '\0' || c.function != NULL) {
        check_failures++;
        fprintf(stderr,
                "%s:%d: decode without=%s %s=%s: want CMN_ERR_INVALID with reason and an empty "
                "call, got %d \"%s\"\n",
                __FILE__, line, without ? without : "-", name ? name : "-", value ? value : "-",
                (int)st, err.msg);
    }
    cmn_call_free(&c);
    cmn_headers_free(&w);
}

static void test_decode_rejects(void)
{
    struct cmn_headers w;
    struct cmn_call c;
    struct cmn_err err = {0};

    wire_with(&w, NULL, NULL, NULL);
    cmn_call_init(&c);
    CHECK(cmn_call_decode(&w, &c, &err) == CMN_OK);
    CHECK_STR(c.path, "/p");
    CHECK_STR(c.query, "q=1");
    cmn_call_free(&c);
    cmn_headers_free(&w);

    expect_decode_invalid(CMN_HDR_MSG_ID, NULL, NULL, __LINE__);
    expect_decode_invalid(CMN_HDR_VERSION, NULL, NULL, __LINE__);
    expect_decode_invalid(CMN_HDR_FUNCTION, NULL, NULL, __LINE__);
    expect_decode_invalid(CMN_HDR_METHOD, NULL, NULL, __LINE__);
    expect_decode_invalid(CMN_HDR_START, NULL, NULL, __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_VERSION, "2", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_VERSION, "", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_VERSION, "1.0", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_START, "abc", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_START, "", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_START, "12x", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_START, "99999999999999999999999", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_FUNCTION, "", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_METHOD, "", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_MSG_ID, "", __LINE__);
}

/* Faas-Not-Before (delayed calls) and Faas-Call-Id (re-driven dead letters). */
static void test_not_before_and_call_id(void)
{
    struct cmn_call in, out;
    struct cmn_headers w;
    struct cmn_err err = {0};
    cmn_call_init(&in);
    snprintf(in.call_id, sizeof in.call_id, "id-9");
    in.function = strdup("figlet");
    in.method = strdup("POST");
    in.start_ns = 1700000000000000000LL;
    in.not_before_ns = 1700000060000000000LL;
    cmn_headers_init(&w);
    CHECK(cmn_call_encode(&in, &w, &err) == CMN_OK);
    CHECK_STR(cmn_headers_get(&w, CMN_HDR_NOT_BEFORE), "1700000060000000000");
    cmn_call_init(&out);
    CHECK(cmn_call_decode(&w, &out, &err) == CMN_OK);
    CHECK(out.not_before_ns == 1700000060000000000LL);
    cmn_call_free(&out);
    /* a re-drive: Nats-Msg-Id is not the call id, Faas-Call-Id is */
    cmn_headers_set(&w, CMN_HDR_MSG_ID, "id-9.r12");
    cmn_headers_set(&w, CMN_HDR_CALL_ID, "id-9");
    cmn_call_init(&out);
    CHECK(cmn_call_decode(&w, &out, &err) == CMN_OK);
    CHECK_STR(out.call_id, "id-9");
    cmn_call_free(&out);
    cmn_call_free(&in);
    cmn_headers_free(&w);
    /* no not-before header: 0 */
    wire_with(&w, NULL, NULL, NULL);
    cmn_call_init(&out);
    CHECK(cmn_call_decode(&w, &out, &err) == CMN_OK);
    CHECK(out.not_before_ns == 0);
    cmn_call_free(&out);
    cmn_headers_free(&w);
    expect_decode_invalid(NULL, CMN_HDR_NOT_BEFORE, "soon", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_NOT_BEFORE, "-5", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_CALL_ID, "a..b", __LINE__);
}

/* The function's policy (queue, retry overrides) round-trips and is
 * validated on decode; absent headers mean defaults. */
static void test_policy(void)
{
    struct cmn_call in, out;
    struct cmn_headers w;
    struct cmn_err err = {0};
    cmn_call_init(&in);
    snprintf(in.call_id, sizeof in.call_id, "id-p");
    in.function = strdup("figlet");
    in.method = strdup("POST");
    in.start_ns = 1;
    snprintf(in.policy.queue, sizeof in.policy.queue, "slow-jobs");
    in.policy.retry_attempts = 0;
    snprintf(in.policy.retry_codes, sizeof in.policy.retry_codes, "429,503");
    in.policy.retry_min_wait_ms = 250;
    in.policy.retry_max_wait_ms = 60000;
    cmn_headers_init(&w);
    CHECK(cmn_call_encode(&in, &w, &err) == CMN_OK);
    CHECK_STR(cmn_headers_get(&w, CMN_HDR_QUEUE), "slow-jobs");
    CHECK_STR(cmn_headers_get(&w, CMN_HDR_RETRY_ATTEMPTS), "0");
    CHECK_STR(cmn_headers_get(&w, CMN_HDR_RETRY_CODES), "429,503");
    CHECK_STR(cmn_headers_get(&w, CMN_HDR_RETRY_MIN_WAIT), "250");
    CHECK_STR(cmn_headers_get(&w, CMN_HDR_RETRY_MAX_WAIT), "60000");
    cmn_call_init(&out);
    CHECK(cmn_call_decode(&w, &out, &err) == CMN_OK);
    CHECK_STR(out.policy.queue, "slow-jobs");
    CHECK_INT(out.policy.retry_attempts, 0);
    CHECK_STR(out.policy.retry_codes, "429,503");
    CHECK_INT(out.policy.retry_min_wait_ms, 250);
    CHECK_INT(out.policy.retry_max_wait_ms, 60000);
    cmn_call_free(&out);
    cmn_call_free(&in);
    cmn_headers_free(&w);
    /* defaults: nothing written, nothing read */
    wire_with(&w, NULL, NULL, NULL);
    cmn_call_init(&out);
    CHECK(cmn_call_decode(&w, &out, &err) == CMN_OK);
    CHECK(!cmn_fn_policy_set(&out.policy));
    CHECK_INT(out.policy.retry_attempts, -1);
    cmn_call_free(&out);
    cmn_headers_free(&w);
    expect_decode_invalid(NULL, CMN_HDR_QUEUE, "a.b", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_QUEUE, "", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_ATTEMPTS, "-1", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_ATTEMPTS, "1001", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_ATTEMPTS, "2x", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_CODES, "600", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_CODES, "abc", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_MIN_WAIT, "0", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_MAX_WAIT, "1s", __LINE__);
    expect_decode_invalid(NULL, CMN_HDR_RETRY_MAX_WAIT, "86400001", __LINE__);
}

/* Annotations to policy: each field on its own. */
static const char *ann_get(void *arg, const char *key)
{
    const char *const(*kv)[2] = arg;
    for (size_t i = 0; kv[i][0] != NULL; i++)
        if (strcmp(kv[i][0], key) == 0)
            return kv[i][1];
    return NULL;
}

static void count_warn(void *arg, const char *line)
{
    (*(int *)arg)++;
    CHECK(strstr(line, "fn.ns") != NULL);
}

static void test_annotations(void)
{
    struct cmn_fn_policy p;
    int warns = 0;
    const char *const good[][2] = {{CMN_ANN_QUEUE, "q_1"},
                                   {CMN_ANN_RETRY_ATTEMPTS, "7"},
                                   {CMN_ANN_RETRY_CODES, "503, 429,503"},
                                   {CMN_ANN_RETRY_MIN_WAIT, "1.5s"},
                                   {CMN_ANN_RETRY_MAX_WAIT, "2m"},
                                   {NULL, NULL}};
    cmn_fn_policy_from_annotations(&p, "fn.ns", ann_get, (void *)good, NULL, count_warn, &warns);
    CHECK_INT(warns, 0);
    CHECK_STR(p.queue, "q_1");
    CHECK_INT(p.retry_attempts, 7);
    CHECK_STR(p.retry_codes, "429,503");
    CHECK_INT(p.retry_min_wait_ms, 1500);
    CHECK_INT(p.retry_max_wait_ms, 120000);
    const char *const bad[][2] = {{CMN_ANN_QUEUE, "a b"},          {CMN_ANN_RETRY_ATTEMPTS, "1001"},
                                  {CMN_ANN_RETRY_CODES, "99"},     {CMN_ANN_RETRY_MIN_WAIT, "0s"},
                                  {CMN_ANN_RETRY_MAX_WAIT, "25h"}, {NULL, NULL}};
    cmn_fn_policy_from_annotations(&p, "fn.ns", ann_get, (void *)bad, NULL, count_warn, &warns);
    CHECK_INT(warns, 5);
    CHECK(!cmn_fn_policy_set(&p));
    warns = 0;
    const char *const crossed[][2] = {
        {CMN_ANN_RETRY_MIN_WAIT, "10s"}, {CMN_ANN_RETRY_MAX_WAIT, "1s"}, {NULL, NULL}};
    cmn_fn_policy_from_annotations(&p, "fn.ns", ann_get, (void *)crossed, NULL, count_warn, &warns);
    CHECK_INT(warns, 1);
    CHECK_INT(p.retry_min_wait_ms, -1);
    CHECK_INT(p.retry_max_wait_ms, -1);

    /* names that would turn a limits stream into a work queue */
    const char *const dlq[] = {"faas-request-dlq", NULL};
    const char *const taken[] = {"KV_faas-calls", "OBJ_x", "faas-request-dlq"};
    for (size_t i = 0; i < 3; i++) {
        const char *const ann[][2] = {{CMN_ANN_QUEUE, taken[i]}, {NULL, NULL}};
        warns = 0;
        cmn_fn_policy_from_annotations(&p, "fn.ns", ann_get, (void *)ann, dlq, count_warn, &warns);
        CHECK_INT(warns, 1);
        CHECK_STR(p.queue, "");
        CHECK(cmn_queue_name_reserved(taken[i], dlq) != NULL);
    }
    CHECK(cmn_queue_name_reserved("faas-request-dlq", NULL) == NULL);
    CHECK(cmn_queue_name_reserved("kv_lower", dlq) == NULL);
    CHECK(cmn_queue_name_reserved("slow", dlq) == NULL);
}

int main(void)
{
    test_policy();
    test_annotations();
    test_not_before_and_call_id();
    test_round_trip();
    test_encode_appends();
    test_empty_path_query_no_callback();
    test_encode_rejects();
    test_decode_rejects();
    return check_report("codec_test");
}
