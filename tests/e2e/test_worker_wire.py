"""The queue-worker alone, fed wire-format v1 messages published straight to JetStream
(DESIGN.md section 3). Runs without a gateway: gateway_invoke=false."""

import time

import pytest

import harness
from mininats import MiniNats


@pytest.fixture
def wstack(stack):
    stack.start(workers=1, gateway=False, worker_env={"gateway_invoke": "false"})
    c = MiniNats(stack.nats.port)
    harness.wait_until(lambda: "faas-request" in c.stream_names(), 10,
                       desc="worker created the stream")
    stack.nc = c
    yield stack
    c.close()


def v1_headers(call_id, function, path="", query="", callback=None, **extra):
    # empty values are left out, as the gateway does: nats.c 3.4 reads an empty header value
    # as the next line ("Faas-Path: " became "Faas-Query:"), which the worker now refuses
    h = {"Nats-Msg-Id": call_id, "Faas-Version": "1", "Faas-Function": function,
         "Faas-Method": "POST", "Faas-Start-Time": str(time.time_ns())}
    if path:
        h["Faas-Path"] = path
    if query:
        h["Faas-Query"] = query
    if callback:
        h["Faas-Callback-Url"] = callback
    h.update(extra)
    return h


def test_v1_message_is_invoked_and_called_back(wstack):
    st = wstack
    h = v1_headers("wire-1", "env", "/a/b", "x=1&y=2", st.sink.url,
                   **{"X-Custom": "v", "Content-Type": "text/plain"})
    ack = st.nc.js_publish("faas-request", b"wire-body", h)
    assert ack.get("stream") == "faas-request", ack
    [e] = st.ledger.wait_for(1, 20, function="env", call_id="wire-1")
    assert (e["method"], e["path"], e["query"], e["body"]) == ("POST", "/a/b", "x=1&y=2",
                                                              b"wire-body")
    assert e["headers"].get("X-Custom") == "v"
    assert not any(k.lower().startswith(("faas-", "nats-")) for k, _ in e["headers"].items), \
        e["headers"]
    [cb] = st.sink.wait_for(1, 20, call_id="wire-1")
    assert cb["headers"].get("X-Function-Status") == "200"
    assert cb["headers"].get("X-Function-Name") == "env"
    assert cb["headers"].get("X-Start-Time") == h["Faas-Start-Time"]


def test_undecodable_message_is_dead_lettered_and_worker_survives(wstack):
    st = wstack
    ack = st.nc.js_publish("faas-request", b"junk", {"Nats-Msg-Id": "bad-1"})
    assert ack.get("stream") == "faas-request", ack

    def dlq():
        return st.nc.stream_messages("faas-request-dlq")
    msgs = harness.wait_until(dlq, 15, interval=0.2, desc="message in faas-request-dlq")
    assert len(msgs) == 1 and msgs[0].data == b"junk", [(m.headers, m.data) for m in msgs]
    assert msgs[0].header("Faas-Dead-Reason"), msgs[0].headers
    harness.wait_until(lambda: st.nc.stream_info("faas-request")["state"]["messages"] == 0, 10,
                       desc="bad message removed from the work queue")
    assert st.workers[0].alive(), st.workers[0].tail()
    # the worker still works
    st.nc.js_publish("faas-request", b"ok",
                     v1_headers("good-1", "echo", callback=st.sink.url, **{"X-Call-Id": "good-1"}))
    [cb] = st.sink.wait_for(1, 20, call_id="good-1")
    assert cb["body"] == b"ok"
    time.sleep(1)
    assert len(dlq()) == 1
