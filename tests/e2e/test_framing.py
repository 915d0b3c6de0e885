"""Strict request framing on every route, validated queued messages, and callback chains
(issue 14). Raw sockets send the bytes a strict server must refuse (RFC 9112 §6.3, RFC 9110
§5.5); each must get 400 with Connection: close, queue nothing and reach no function, on the
sync and the async route alike, while what well-behaved clients send keeps working.
"""

import socket
import time

import pytest
import requests

import harness
from delivery import (DLQ, absence_window, add_function, assert_202, js_publish_raw,
                      read_stream)

H = b"Host: x\r\n"
BAD = {
    "length list": b"Content-Length: 5, 5\r\n\r\nhello",
    "two lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "same length twice": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "gzip, chunked": b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunked, gzip": b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "odd case": b"Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunked twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n",
    "chunked and length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                          b"5\r\nhello\r\n0\r\n\r\n",
    "NUL in callback": b"X-Callback-Url: http://a\x00b/\r\nContent-Length: 0\r\n\r\n",
    "bare CR": b"X-A: a\rb\r\nContent-Length: 0\r\n\r\n",
    "bare LF": b"X-A: a\nX-Call-Id: smuggled\r\nContent-Length: 0\r\n\r\n",
    "DEL in call id": b"X-Call-Id: a\x7fb\r\nContent-Length: 0\r\n\r\n",
    "obs-fold": b"X-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",
    "chunk size 0x5": b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk size space": b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    "chunk extension": b"Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
    "chunk ext with LF": b"Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
    "negative chunk": b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "huge chunk": b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "folded trailer": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
}


def exchange(port, data, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    s.settimeout(timeout)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


@pytest.mark.parametrize("route", ["/function/echo", "/async-function/echo"])
def test_ambiguous_framing_is_400_and_reaches_nothing(stack, route):
    stack.start(workers=0, fixtures=("echo",))
    port = stack.gateway.port
    for name, rest in BAD.items():
        reply = exchange(port, b"POST " + route.encode() + b" HTTP/1.1\r\n" + H + rest)
        assert reply.startswith(b"HTTP/1.1 400 "), (name, reply[:200])
        head = reply.split(b"\r\n\r\n", 1)[0]
        assert b"Connection: close" in head, (name, head)
    assert stack.ledger.entries() == []
    assert stack.nats.stream_last_seq("faas-request") in (0, None)
    assert stack.gateway.alive()


@pytest.mark.parametrize("route", ["/function/echo", "/async-function/echo"])
def test_well_behaved_framing_still_works(stack, route):
    """One Content-Length, a lone chunked, Expect: 100-continue and pipelined requests."""
    stack.start(workers=0, fixtures=("echo",))
    port = stack.gateway.port
    ok = b"200" if route.startswith("/function") else b"202"
    r = exchange(port, b"POST " + route.encode() + b" HTTP/1.1\r\n" + H +
                 b"Content-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert r.startswith(b"HTTP/1.1 " + ok), r[:200]
    r = exchange(port, b"POST " + route.encode() + b" HTTP/1.1\r\n" + H +
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                 b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 " + ok), r[:200]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST " + route.encode() + b" HTTP/1.1\r\n" + H +
              b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(100)
    assert first.startswith(b"HTTP/1.1 100 Continue"), first
    s.sendall(b"hello")
    data = b""
    while ok not in data:
        data += s.recv(65536)
    s.close()
    pipelined = b"".join(b"POST " + route.encode() + b" HTTP/1.1\r\n" + H +
                         b"Content-Length: 1\r\n\r\n" + bytes([c]) for c in b"abc")
    r = exchange(port, pipelined + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    replies = r.count(b"HTTP/1.1 ")
    assert replies == 4 and r.count(b"HTTP/1.1 " + ok) >= 3 and r.rstrip().endswith(b"OK"), r
    if route.startswith("/function"):
        assert [e["body"] for e in stack.ledger.entries()][-3:] == [b"a", b"b", b"c"]


BAD_TARGETS = {
    "TAB in the path": b"/function/echo\tx",
    "TAB in the query": b"/function/echo?a=1\tb=2",
    "form feed": b"/function/echo\x0c",
    "NUL in the path": b"/function/ec\x00ho",
    "DEL in the query": b"/function/echo?a=\x7f",
    "fragment": b"/function/echo#frag",
    "fragment after a query": b"/function/echo?x=1#frag",
    "UTF-8 in the path": b"/function/echo/caf\xc3\xa9",
    "high byte in the query": b"/function/echo?a=\xff",
}


@pytest.mark.parametrize("route", ["/function/", "/async-function/"])
def test_control_bytes_and_fragments_in_the_target_are_400(stack, route):
    """A request line holds SP as its only separator and an origin-form target has no
    fragment: a TAB, form feed, NUL or DEL, or a '#', is refused before routing."""
    stack.start(workers=0, fixtures=("echo",))
    port = stack.gateway.port
    for name, target in BAD_TARGETS.items():
        target = target.replace(b"/function/", route.encode(), 1)
        reply = exchange(port, b"POST " + target + b" HTTP/1.1\r\n" + H +
                         b"Content-Length: 2\r\n\r\nhi")
        assert reply.startswith(b"HTTP/1.1 400 "), (name, reply[:200])
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"Connection: close" in head, (name, head)
        # (a NUL never gets past the HTTP parser itself: "malformed request")
        assert any(w in body for w in (b"request line", b"request target", b"malformed")), \
            (name, body)
    assert stack.ledger.entries() == []
    assert stack.nats.stream_last_seq("faas-request") in (0, None)
    # the same target, clean, still works
    ok = exchange(port, b"POST " + route.encode() + b"echo?a=1 HTTP/1.1\r\n" + H +
                  b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
    assert ok.startswith(b"HTTP/1.1 20"), ok[:200]


def test_watchdog_refuses_ambiguous_framing_too(stack):
    stack.start(workers=0, fixtures=(), watchdogs={"cat": "cat"}, gateway=False)
    port = stack.watchdogs["cat"].port
    for name in ("two lengths", "gzip, chunked", "odd case", "chunked and length",
                 "DEL in call id"):
        reply = exchange(port, b"POST / HTTP/1.1\r\n" + H + BAD[name])
        assert reply.startswith(b"HTTP/1.1 400"), (name, reply[:200])
    ok = exchange(port, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nConnection: close"
                  b"\r\n\r\nhi")
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"hi"), ok


def test_callback_urls_with_ambiguous_hosts_are_400(stack):
    stack.start(workers=0, fixtures=("echo",))
    for url in ("http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/",
                "http://127.1/", "http://127.0.0.01/", "http://%31%32%37.0.0.1/",
                "http://host:0/", "http://[::1/", "http://-bad-.example/",
                "http://a..b/"):
        r = stack.async_call("echo", callback=url)
        assert r.status_code == 400, (url, r.status_code, r.text)
        assert "X-Callback-Url" in r.text, r.text
    for url in ("http://127.0.0.1:9/", "http://[::1]:9/x", "http://sink.example:8080/cb",
                "http://my_service/"):
        assert_202(stack.async_call("echo", callback=url))


class HeaderFunction(harness.FunctionServer):
    """Like `echo`, answering with extra response headers (the next hop of a chain)."""

    def __init__(self, ledger, name, headers):
        super().__init__("echo", ledger, name=name)
        self.extra = headers

    def _respond(self, h, path, query, q, call_id, body):
        return 200, body, [("Content-Type", "text/plain")] + list(self.extra)


def test_two_step_chain_runs_each_step_once_under_its_own_id(stack):
    """a's callback points at /async-function/b; b runs once, under its own call id that
    names a as its parent; b's callback (to the SINK, named by a's response) says so."""
    stack.start(workers=0, fixtures=())
    add_function(stack, HeaderFunction(stack.ledger, "b", []))
    add_function(stack, HeaderFunction(stack.ledger, "a", [("X-Callback-Url", stack.sink.url)]))
    harness.write_functions_file(stack.functions_file, stack.function_urls())
    stack.gateway.signal(__import__("signal").SIGHUP)
    time.sleep(0.3)
    stack.add_worker()
    a = assert_202(stack.async_call("a", body=b"step", callback=stack.gw + "/async-function/b"))
    [cb] = stack.sink.wait_for(1, 20)
    b = cb["headers"].get("X-Call-Id")
    assert b and b != a, cb["headers"]
    assert cb["headers"].get("X-Parent-Call-Id") == a
    assert cb["headers"].get("X-Call-Depth") == "1"
    assert cb["body"] == b"step"
    absence_window(1.5)
    runs_a = stack.ledger.entries(function="a")
    runs_b = stack.ledger.entries(function="b")
    assert [e["call_id"] for e in runs_a] == [a] and [e["call_id"] for e in runs_b] == [b]
    assert runs_b[0]["headers"].get("X-Parent-Call-Id") == a
    assert len(stack.sink.all()) == 1
    rec = requests.get(stack.gw + "/async-calls/" + b, timeout=10).json()
    assert rec["state"] == "succeeded", rec


def test_a_chain_that_loops_on_itself_stops_at_max_chain_depth(stack):
    """A function whose response names itself as the next callback: the chain runs
    max_chain_depth + 1 times (the call and 3 chained ones), then the gateway answers 508
    and nothing more runs."""
    stack.start(workers=0, fixtures=(), gateway_env={"max_chain_depth": "3"},
                worker_env={"callback_max_attempts": "1"})
    loop_url = stack.gw + "/async-function/loop"
    add_function(stack, HeaderFunction(stack.ledger, "loop", [("X-Callback-Url", loop_url)]))
    harness.write_functions_file(stack.functions_file, stack.function_urls())
    stack.gateway.signal(__import__("signal").SIGHUP)
    time.sleep(0.3)
    stack.add_worker()
    assert_202(stack.async_call("loop", body=b"x", callback=loop_url))
    harness.wait_until(lambda: len(stack.ledger.entries(function="loop")) >= 4, 30,
                       desc="4 runs of the loop")
    absence_window(3)
    runs = stack.ledger.entries(function="loop")
    assert len(runs) == 4, len(runs)
    assert len({e["call_id"] for e in runs}) == 4
    assert "508" in stack.workers[0].all_logs()


@pytest.mark.parametrize("field,value", [
    ("Faas-Method", "POST /function/other?"),
    ("Faas-Method", "GET\tX"),
    ("Faas-Function", "echo/../other"),
    ("Faas-Function", "Echo Space"),
    ("Faas-Path", "/a b"),
    ("Faas-Path", "x/no-slash"),
    ("Faas-Query", "a=1 HTTP/1.1"),
    ("Faas-Callback-Url", "http://2130706433/"),
    ("Faas-Chain-Depth", "-1"),
])
def test_hand_published_malformed_message_is_dead_lettered(stack, field, value):
    """A message published straight to the work subject with a field that could change the
    request the worker sends is dead-lettered with the reason; no function is reached."""
    stack.start(workers=1, fixtures=("echo", "env"))
    cid = "raw-" + str(abs(hash((field, value))))
    headers = {"Nats-Msg-Id": cid, "Faas-Version": "1", "Faas-Function": "echo",
               "Faas-Method": "POST", "Faas-Start-Time": str(time.time_ns())}
    headers[field] = value
    ack = js_publish_raw(stack.nats, "faas-request." + cid, b"body", headers)
    assert "error" not in ack, ack
    harness.wait_until(lambda: any(m.headers.get("Faas-Call-Id", [None])[0] == cid
                                   for m in read_stream(stack.nats, DLQ)), 20,
                       desc="dead letter of %s" % cid)
    [m] = [m for m in read_stream(stack.nats, DLQ) if m.headers["Faas-Call-Id"][0] == cid]
    reason = m.headers["Faas-Dead-Reason"][0]
    assert field in reason or "callback" in reason.lower() or "depth" in reason.lower(), reason
    assert stack.ledger.entries() == []
