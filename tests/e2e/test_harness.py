"""Self-checks of the e2e harness (no product binaries needed)."""

import concurrent.futures as cf
import hashlib
import time

import pytest
import requests

import harness
from mininats import MiniNats

pytestmark = pytest.mark.harness


def test_nats_kill9_restart_same_port_and_store(nats):
    port, mon, store = nats.port, nats.mon_port, nats.store_dir
    with MiniNats(port) as c:
        r = c.js("STREAM.CREATE.t1", {"name": "t1", "subjects": ["t1"], "retention": "workqueue",
                                      "storage": "file"})
        assert r.get("config", {}).get("name") == "t1", r
        ack = c.js_publish("t1", b"persist-me", headers={"Nats-Msg-Id": "id-1"})
        assert ack == {"stream": "t1", "seq": 1}, ack
        dup = c.js_publish("t1", b"persist-me", headers={"Nats-Msg-Id": "id-1"})
        assert dup.get("duplicate") is True, dup
    assert nats.stream_last_seq("t1") == 1
    nats.kill9()
    assert not nats.alive()
    assert not harness.port_open(port)
    nats.restart()
    assert (nats.port, nats.mon_port, nats.store_dir) == (port, mon, store)
    with MiniNats(port) as c:
        msgs = c.stream_messages("t1")
        assert [m.data for m in msgs] == [b"persist-me"]
        assert msgs[0].header("Nats-Msg-Id") == "id-1"
    nats.stop()
    assert not nats.alive()


def test_fixture_functions_and_ledger(stack):
    for kind in harness.FunctionServer.KINDS:
        stack.add_fixture_function(kind)
    fns, led = stack.fns, stack.ledger
    r = requests.post(fns["echo"].url + "/x", data=b"\x00hi\xff", headers={"X-Call-Id": "c1"})
    assert r.status_code == 200 and r.content == b"\x00hi\xff"
    assert r.headers["Content-Type"] == "application/octet-stream" and r.headers["X-Echo"] == "yes"
    r = requests.put(fns["env"].url + "/some/path?q=1&x=%20", data="b",
                     headers={"X-Custom": "v", "X-Call-Id": "c2"})
    m, p, q, h = harness.parse_env_output(r.text)
    assert (m, p, q, h.get("x-custom")) == ("PUT", "/some/path", "q=1&x=%20", "v")
    t = time.monotonic()
    r = requests.get(fns["sleep"].url + "/?s=0.3")
    assert r.text == "slept 0.3" and time.monotonic() - t >= 0.3
    r = requests.post(fns["status"].url + "/?code=503&fail=2&retry_after=4",
                      headers={"X-Call-Id": "f"})
    assert (r.status_code, r.text, r.headers.get("Retry-After")) == (503, "code 503", "4")
    r = requests.post(fns["status"].url + "/?code=503&fail=2", headers={"X-Call-Id": "f"})
    assert r.status_code == 503
    r = requests.post(fns["status"].url + "/?code=503&fail=2", headers={"X-Call-Id": "f"})
    assert (r.status_code, r.text) == (200, "code 200")
    r = requests.post(fns["status"].url + "/?code=503&fail=2", headers={"X-Call-Id": "g"})
    assert r.status_code == 503  # per call id
    r = requests.post(fns["status"].url)
    assert (r.status_code, r.text) == (500, "code 500")
    assert led.count("status", "f") == 3 and led.count("echo", "c1") == 1
    assert led.entries("env")[0]["body"] == b"b"
    # chunked request bodies are read correctly
    r = requests.post(fns["echo"].url, data=iter([b"ab", b"cd"]))
    assert r.content == b"abcd"


def test_sink_records_and_forces_status(sink):
    with cf.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(requests.post, sink.url, data=b"body-%d" % i,
                          headers={"X-Call-Id": "id-%d" % i}) for i in range(4)]
        assert all(f.result().status_code == 200 for f in futs)
    r = requests.post(sink.url + "?status=503", data=b"z", headers={"X-Call-Id": "id-x"})
    assert r.status_code == 503
    got = sink.wait_for(5, timeout=5)
    assert len(got) == 5
    x = sink.all("id-x")[0]
    assert x["query"] == "status=503" and x["path"] == "/cb"
    assert x["sha256"] == hashlib.sha256(b"z").hexdigest()
    with pytest.raises(harness.WaitTimeout):
        sink.wait_for(6, timeout=0.3)


def test_wait_until_times_out():
    t = time.monotonic()
    with pytest.raises(harness.WaitTimeout):
        harness.wait_until(lambda: False, 0.3)
    assert time.monotonic() - t < 2


def test_cleanup_kills_whole_process_group(tmp_path):
    pidfile = tmp_path / "bg.pid"
    p = harness.Proc(["/bin/sh", "-c", "sleep 100 & echo $! > %s; sleep 100" % pidfile],
                     harness.base_env(), str(tmp_path), name="sh")
    reg = harness.Registry()
    reg.add(p.start())
    bg = int(harness.wait_until(lambda: pidfile.read_text().strip(), 5, desc="pid file"))
    assert p.alive()
    reg.cleanup()
    assert not p.alive()

    def gone():
        try:
            with open("/proc/%d/stat" % bg) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    harness.wait_until(gone, 5, desc="background child %d killed" % bg)


def test_mininats_pull_and_ack(nats):
    with MiniNats(nats.port) as c:
        c.js("STREAM.CREATE.t2", {"name": "t2", "subjects": ["t2"], "retention": "workqueue",
                                  "storage": "file"})
        c.js("CONSUMER.DURABLE.CREATE.t2.d", {"stream_name": "t2", "config": {
            "durable_name": "d", "ack_policy": "explicit", "deliver_policy": "all"}})
        assert c.pull("t2", "d", expires=0.3) is None
        c.js_publish("t2", b"m1", headers={"K": "v"})
        m = c.pull("t2", "d", expires=2)
        assert m is not None and m.data == b"m1" and m.header("K") == "v"
        c.publish(m.reply, b"+ACK")
        harness.wait_until(lambda: c.stream_info("t2")["state"]["messages"] == 0, 5,
                           desc="acked message removed")
