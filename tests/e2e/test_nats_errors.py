"""JetStream refusals keep their meaning, queue depth is visible without workers, and the
NATS settings are checked at start (issue 8, points 3, 5 and 6).

Real nats-server -js, real gateway and queue-worker binaries.
"""

import time

import pytest

import harness
from delivery import STREAM, assert_202, stream_messages_count, wait_exit
from mininats import MiniNats


def js(nats, api, payload=None):
    with MiniNats(nats.port) as c:
        return c.js(api, payload)


@pytest.mark.timeout(90)
def test_stream_max_msg_size_lowered_by_an_operator_gives_413_not_503(stack):
    """An operator lowers the stream's max_msg_size under a running gateway: a call over it
    is refused by JetStream with err_code 10054, which the gateway answers 413 (not 503), and
    nothing is queued; a small call still gets 202."""
    stack.start(workers=0, fixtures=("echo",))
    assert_202(stack.async_call("echo", body=b"warm-up", callback=False))
    cfg = dict(stack.nats.stream_detail(STREAM)["config"])
    cfg["max_msg_size"] = 4096
    r = js(stack.nats, "STREAM.UPDATE." + STREAM, cfg)
    assert "error" not in r, r
    before = stream_messages_count(stack.nats, STREAM)
    big = stack.async_call("echo", body=b"x" * 20000, callback=False)
    assert big.status_code == 413, (big.status_code, big.text)
    assert "too large" in big.text
    assert stream_messages_count(stack.nats, STREAM) == before
    small = stack.async_call("echo", body=b"small", callback=False)
    assert_202(small)
    assert stream_messages_count(stack.nats, STREAM) == before + 1
    assert stack.gateway.alive()


@pytest.mark.timeout(90)
def test_queue_gauges_exported_by_the_gateway_without_any_worker(stack):
    """With no worker running, the gateway's /metrics shows the backlog: pending messages
    of the workers' consumer and the stream's message count (alerts and KEDA need it exactly
    then)."""
    stack.start(workers=1, fixtures=("echo",))
    w = stack.workers[0]
    w.terminate()  # the consumer exists (created by the worker); no worker runs now
    ids = [assert_202(stack.async_call("echo", body=b"q-%d" % i, callback=False))
           for i in range(7)]
    assert len(set(ids)) == 7

    def gauges():
        text = stack.gateway.metrics()
        return (harness.metric_sum(text, "gateway_queue_pending_messages", queue=STREAM),
                harness.metric_sum(text, "gateway_queue_stream_messages", queue=STREAM))
    pending, stored = harness.wait_until(lambda: gauges() if gauges() == (7, 7) else None, 10,
                                         desc="queue gauges at 7")
    assert (pending, stored) == (7, 7)
    text = stack.gateway.metrics()
    assert harness.metric_sum(text, "gateway_queue_ack_pending_messages", queue=STREAM) == 0
    assert harness.metric_sum(text, "gateway_dead_letter_messages",
                              queue=STREAM) is not None
    # a worker drains them and the gauge follows
    stack.add_worker()
    harness.wait_until(lambda: gauges()[0] == 0, 20, desc="pending back to 0")


@pytest.mark.timeout(60)
def test_bad_nats_settings_are_refused_at_start(stack):
    """A malformed server list, or a max_ack_pending below max_inflight, make the program exit
    2 naming the setting, before anything connects."""
    stack.start(workers=0, fixtures=("echo",))
    g = harness.Gateway(stack.log_dir, {"nats_url": stack.nats.url + ",,nats://x:1",
                                        "functions_file": stack.functions_file},
                        name="gateway-bad-url")
    stack.registry.add(g)
    g.start()
    rc, _ = wait_exit(g, 10)
    assert rc == 2, rc
    assert "nats_url" in g.log_text("stdout") + g.log_text("stderr")
    w = harness.Worker(stack.log_dir, {"nats_url": stack.nats.url, "max_inflight": "10",
                                       "max_ack_pending": "5",
                                       "functions_file": stack.functions_file},
                       name="worker-bad-pending")
    stack.registry.add(w)
    w.start()
    rc, _ = wait_exit(w, 10)
    assert rc == 2, rc
    assert "max_ack_pending" in w.log_text("stdout") + w.log_text("stderr")


@pytest.mark.timeout(60)
def test_every_failed_connect_pass_is_logged(stack):
    """No server of the list answers: the gateway says so, one line per pass over the list
    (not silence), and /readyz is 503; once a server is there it connects by itself."""
    stack.start(workers=0, fixtures=("echo",))
    dead = "nats://127.0.0.1:%d,nats://127.0.0.1:%d" % (harness.free_port(), harness.free_port())
    g = harness.Gateway(stack.log_dir, {"nats_url": dead + "," + stack.nats.url,
                                        "functions_file": stack.functions_file},
                        name="gateway-list")
    stack.registry.add(g)
    g.start().wait_ready(readyz=True)  # the third server of the list is up
    stack.nats.kill9()
    harness.wait_until(lambda: len([ln for ln in g.log_text("stdout").splitlines()
                                    if "connect failed" in ln]) >= 2, 15,
                       desc="two failed passes logged")
    lines = [ln for ln in g.log_text("stdout").splitlines() if "connect failed" in ln]
    assert all(dead.split(",")[0] in ln for ln in lines), lines
    assert harness.http_status(g.url + "/readyz") == 503
    t0 = time.monotonic()
    r = g_async(g)
    assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.headers)
    assert time.monotonic() - t0 < 8
    stack.nats.restart()
    harness.wait_until(lambda: harness.http_status(g.url + "/readyz") == 200, 20,
                       desc="readyz back after the server returned")


def g_async(g):
    import requests
    return requests.post(g.url + "/async-function/echo", data=b"x", timeout=15)


@pytest.mark.timeout(90)
def test_limits_that_drop_calls_and_headers_only_consumer_are_reconciled(stack):
    """A stream pre-created with limits that silently drop queued calls (max_age,
    max_msgs_per_subject) and a consumer pre-created as headers_only: the programs edit them
    (one log line each) and calls run with their bodies."""
    stack.start(workers=0, fixtures=("echo",), gateway=False)
    r = js(stack.nats, "STREAM.CREATE." + STREAM, {
        "name": STREAM, "subjects": [STREAM], "retention": "workqueue", "storage": "file",
        "max_age": 300 * 10**9, "max_msgs_per_subject": 1, "duplicate_window": 120 * 10**9,
        "num_replicas": 1})
    assert "error" not in r, r
    r = js(stack.nats, "CONSUMER.DURABLE.CREATE.%s.faas-workers" % STREAM, {
        "stream_name": STREAM, "config": {"durable_name": "faas-workers",
                                          "ack_policy": "explicit", "deliver_policy": "all",
                                          "headers_only": True, "ack_wait": 30 * 10**9}})
    assert "error" not in r, r
    stack.start_gateway()
    harness.wait_until(lambda: stack.nats.stream_detail(STREAM)["config"].get("max_age") == 0,
                       10, desc="max_age reconciled")
    cfg = stack.nats.stream_detail(STREAM)["config"]
    assert cfg.get("max_msgs_per_subject", -1) in (-1, 0), cfg
    log = stack.gateway.log_text("stdout")
    assert any("max_age" in ln and "->" in ln for ln in log.splitlines()), log[-2000:]
    assert any("max_msgs_per_subject 1 -> -1" in ln for ln in log.splitlines()), log[-2000:]
    w = stack.add_worker()
    wlog = w.log_text("stdout")
    assert any("headers_only true -> false" in ln for ln in wlog.splitlines()), wlog[-2000:]
    ids = [assert_202(stack.async_call("echo", body=b"body-%d" % i)) for i in range(3)]
    for i, cid in enumerate(ids):
        [cb] = stack.sink.wait_for(1, 20, call_id=cid)
        assert cb["body"] == b"body-%d" % i
