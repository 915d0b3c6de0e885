/* Unit tests for the pure parts of the NATS layer: the server list split,
 * event names, and the delivery facts read from a JetStream ack subject. */
#include "check.h"

#include <nats/nats.h>

#include <stdlib.h>
#include <string.h>

#include "cmn/callrec.h"
#include "cmn/jsconsumer.h"
#include "cmn/nats.h"
#include "nats_priv.h" /* struct cmn_js_msg */

static void info_of(const char *reply, struct cmn_js_msg_info *out)
{
    natsMsg *m = NULL;
    CHECK(natsMsg_Create(&m, "inbox.1", reply, "x", 1) == NATS_OK);
    struct cmn_js_msg msg = {.m = m, .epoch = 0};
    cmn_js_msg_info(&msg, out);
    natsMsg_Destroy(m);
}

static void test_ack_subject_info(void)
{
    struct cmn_js_msg_info i;
    info_of("$JS.ACK.faas-request.faas-workers.3.1042.977.1764641234000000000.12", &i);
    CHECK(i.delivered == 3);
    CHECK(i.seq == 1042);
    CHECK(i.stored_ns == 1764641234000000000LL);
    /* with a domain and an account hash (and a trailing random token) */
    info_of("$JS.ACK.hub.ACCHASH.faas-request.faas-workers.1.7.7.1764641234000000001.0.ab12", &i);
    CHECK(i.delivered == 1);
    CHECK(i.seq == 7);
    CHECK(i.stored_ns == 1764641234000000001LL);
    /* anything else: the documented defaults */
    info_of("_INBOX.abc", &i);
    CHECK(i.delivered == 1 && i.seq == 0 && i.stored_ns == 0);
    info_of("$JS.ACK.s.c.x.1.1.1.1", &i);
    CHECK(i.delivered == 1 && i.seq == 0);
    info_of("$JS.ACK.s.c.1.2", &i);
    CHECK(i.delivered == 1 && i.seq == 0);
}

static void test_split(void)
{
    char buf[256];
    const char *items[4];
    CHECK_INT(cmn_nats_split_servers("nats://a:4222", buf, sizeof(buf), items, 4), 1);
    CHECK_STR(items[0], "nats://a:4222");
    CHECK_INT(
        cmn_nats_split_servers("nats://a:1, nats://b:2 ,nats://c:3", buf, sizeof(buf), items, 4),
        3);
    CHECK_STR(items[0], "nats://a:1");
    CHECK_STR(items[1], "nats://b:2");
    CHECK_STR(items[2], "nats://c:3");
    /* empty entries are mistakes, not "nothing" */
    CHECK_INT(cmn_nats_split_servers("", buf, sizeof(buf), items, 4), -1);
    CHECK_INT(cmn_nats_split_servers("nats://a:1,", buf, sizeof(buf), items, 4), -1);
    CHECK_INT(cmn_nats_split_servers(",nats://a:1", buf, sizeof(buf), items, 4), -1);
    CHECK_INT(cmn_nats_split_servers("nats://a:1,,nats://b:2", buf, sizeof(buf), items, 4), -1);
    CHECK_INT(cmn_nats_split_servers(" , ", buf, sizeof(buf), items, 4), -1);
    /* too many, or too long for the buffer */
    CHECK_INT(cmn_nats_split_servers("a,b,c,d,e", buf, sizeof(buf), items, 4), -1);
    CHECK_INT(cmn_nats_split_servers("a,b,c,d", buf, sizeof(buf), items, 4), 4);
    CHECK_INT(cmn_nats_split_servers("nats://a:1", buf, 5, items, 4), -1);
}

static void test_event_names(void)
{
    CHECK_STR(cmn_nats_event_name(CMN_NATS_READY), "ready");
    CHECK_STR(cmn_nats_event_name(CMN_NATS_FATAL), "fatal");
    CHECK_STR(cmn_nats_event_name(CMN_NATS_CLOSED), "closed");
    CHECK_STR(cmn_nats_event_name((enum cmn_nats_event)99), "unknown");
}

/* The call record's JSON form: round trip, names, and what is refused. */
static void test_record_json(void)
{
    struct cmn_rec r, back;
    cmn_rec_init(&r);
    snprintf(r.call_id, sizeof r.call_id, "order-42.v1");
    snprintf(r.function, sizeof r.function, "figlet.openfaas-fn");
    r.state = CMN_CALL_RUNNING;
    r.attempt = 3;
    r.status = 503;
    r.redriven = 1;
    r.submitted_ms = 1796186638996;
    r.not_before_ms = 1796186648996;
    r.started_ms = 1796186649000;
    r.lease_until_ms = 1796186709000;
    r.duration_s = 0.25;
    r.callback = CMN_CB_PENDING;
    snprintf(r.worker, sizeof r.worker, "qw-1");
    snprintf(r.write_id, sizeof r.write_id, "qw-1#7");
    char *text = cmn_rec_to_json(&r, false);
    CHECK(text != NULL);
    CHECK(strstr(text, "\"state\":\"running\"") != NULL);
    CHECK(strstr(text, "\"submitted\":\"2026-12-02T04:43:58.996Z\"") != NULL);
    CHECK(strstr(text, "revision") == NULL);
    CHECK(cmn_rec_from_json(text, strlen(text), &back, NULL) == CMN_OK);
    CHECK_STR(back.call_id, r.call_id);
    CHECK_STR(back.function, r.function);
    CHECK_STR(back.worker, "qw-1");
    CHECK_STR(back.write_id, "qw-1#7");
    CHECK(back.state == CMN_CALL_RUNNING && back.attempt == 3 && back.status == 503);
    CHECK(back.redriven == 1 && back.callback == CMN_CB_PENDING);
    CHECK(back.submitted_ms == r.submitted_ms && back.not_before_ms == r.not_before_ms);
    CHECK(back.started_ms == r.started_ms && back.lease_until_ms == r.lease_until_ms);
    CHECK(back.finished_ms == 0 && back.duration_s == 0.25);
    free(text);
    /* API form: a revision, no write id; lease only while running */
    r.state = CMN_CALL_SUCCEEDED;
    r.revision = 19;
    text = cmn_rec_to_json(&r, true);
    CHECK(strstr(text, "\"revision\":19") != NULL && strstr(text, "write_id") == NULL);
    CHECK(strstr(text, "lease_until") == NULL);
    free(text);
    static const char *const bad[] = {"",
                                      "[]",
                                      "{\"call_id\":\"a\"}",
                                      "{\"call_id\":\"a\",\"state\":\"lost\"}",
                                      "{\"state\":\"queued\"}",
                                      "not json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(cmn_rec_from_json(bad[i], strlen(bad[i]), &back, NULL) == CMN_ERR_INVALID);
    enum cmn_call_state st;
    for (int i = 0; i < CMN_CALL_STATE_COUNT; i++) {
        CHECK(cmn_call_state_parse(cmn_call_state_name((enum cmn_call_state)i), &st));
        CHECK((int)st == i);
        CHECK(cmn_call_state_final(st) == (i >= CMN_CALL_SUCCEEDED));
    }
    CHECK_STR(cmn_call_state_name(CMN_CALL_DEAD_LETTERED), "dead-lettered");
    CHECK(!cmn_call_state_parse("Running", &st));
}

int main(void)
{
    test_record_json();
    test_split();
    test_event_names();
    CHECK(nats_Open(-1) == NATS_OK); /* natsMsg needs the library */
    test_ack_subject_info();
    nats_Close();
    return check_report("nats");
}
