/* Unit tests for the pure parts of the NATS layer: the server list split,
 * event names, and the delivery facts read from a JetStream ack subject. */
#include "check.h"

#include <nats/nats.h>

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

int main(void)
{
    test_split();
    test_event_names();
    CHECK(nats_Open(-1) == NATS_OK); /* natsMsg needs the library */
    test_ack_subject_info();
    nats_Close();
    return check_report("nats");
}
