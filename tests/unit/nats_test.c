/* Unit tests for the pure parts of cmn/nats.h: the server list split. */
#include "check.h"

#include "cmn/nats.h"

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
    return check_report("nats");
}
