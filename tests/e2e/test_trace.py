"""W3C Trace Context across the asynchronous hop (issue 13, point 4): a caller's traceparent
(and tracestate) reaches the function on both routes, is carried through the queue, comes
back on the callback, and its trace id stands next to the call id in the worker's log lines.
An invalid or repeated traceparent is dropped, with its tracestate, before anything else.
"""

import json
import socket


import harness
from delivery import assert_202

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = "00-%s-00f067aa0ba902b7-01" % TRACE
STATE = "vendor1=opaque,vendor2=x"


def test_sync_call_passes_the_trace_context_to_the_function(stack):
    stack.start(workers=0, fixtures=("echo",))
    r = stack.sync_call("echo", body=b"t", headers={"traceparent": TP, "tracestate": STATE})
    assert r.status_code == 200
    [e] = stack.ledger.entries(function="echo")
    assert e["headers"].get("traceparent") == TP
    assert e["headers"].get("tracestate") == STATE


def test_async_trace_continues_to_the_function_and_the_callback(stack):
    stack.start(workers=1, fixtures=("echo",))
    cid = assert_202(stack.async_call("echo", body=b"traced",
                                      headers={"traceparent": TP, "tracestate": STATE}))
    [cb] = stack.sink.wait_for(1, 20, call_id=cid)
    assert cb["headers"].get("traceparent") == TP, cb["headers"]
    assert cb["headers"].get("tracestate") == STATE
    [e] = stack.ledger.entries(function="echo")
    assert e["headers"].get("traceparent") == TP
    # the trace id next to the call id, on every line about the call
    lines = [ln for ln in stack.workers[0].log_text("stdout").splitlines() if cid in ln]
    assert any("received function=" in ln for ln in lines), lines
    assert lines and all("[%s trace=%s]" % (cid, TRACE) in ln for ln in lines), lines
    # a call without one logs as before
    plain = assert_202(stack.async_call("echo", body=b"plain"))
    stack.sink.wait_for(1, 20, call_id=plain)
    plain_lines = stack.workers[0].log_lines_with(plain)
    assert plain_lines and all("[%s]" % plain in ln for ln in plain_lines), plain_lines
    assert "traceparent" not in stack.sink.all(call_id=plain)[0]["headers"]


def test_trace_id_in_json_logs(stack):
    stack.start(workers=0, fixtures=("echo",))
    w = stack.add_worker(log_format="json")
    cid = assert_202(stack.async_call("echo", body=b"j", headers={"traceparent": TP}))
    stack.sink.wait_for(1, 20, call_id=cid)
    docs = [json.loads(ln) for ln in w.log_text("stdout").splitlines()
            if ln.startswith("{") and cid in ln]
    assert docs and all(d.get("call_id") == cid and d.get("trace_id") == TRACE for d in docs)


def test_invalid_traceparent_is_dropped_with_its_tracestate(stack):
    stack.start(workers=1, fixtures=("echo",))
    bad = ("00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
           "garbage")
    for value in bad:
        r = stack.sync_call("echo", body=b"s", headers={"traceparent": value,
                                                        "tracestate": STATE})
        assert r.status_code == 200
        cid = assert_202(stack.async_call("echo", body=b"a", headers={
            "traceparent": value, "tracestate": STATE}))
        [cb] = stack.sink.wait_for(1, 20, call_id=cid)
        assert "traceparent" not in cb["headers"] and "tracestate" not in cb["headers"]
    for e in stack.ledger.entries(function="echo"):
        assert "traceparent" not in e["headers"] and "tracestate" not in e["headers"], e
    # two traceparent fields are as bad as one broken one (raw socket: requests merges)
    s = socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=5)
    s.sendall(("POST /function/echo HTTP/1.1\r\nHost: x\r\ntraceparent: %s\r\n"
               "traceparent: %s\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz"
               % (TP, TP.replace("01", "00", 1))).encode())
    reply = harness.read_to_close(s)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    last = stack.ledger.entries(function="echo")[-1]
    assert last["body"] == b"z" and "traceparent" not in last["headers"]
    assert stack.gateway.alive()
