"""Hostile input found by review: each case gets a clear error and loses nothing.

- header names that are not HTTP tokens (request smuggling toward a pooled upstream);
- dot segments in the sub-path of an async call must not reach another function;
- a 1xx status as a function's final answer is a 502, not a hung client or a 60 s timeout;
- HEAD replies from the gateway itself carry no body;
- running out of file descriptors pauses accepting instead of spinning and flooding the log.
"""

import os
import resource
import socket
import subprocess
import threading
import time

import pytest
import requests

import delivery
import harness


def raw_http(port, data, timeout=5.0):
    """Send raw bytes, return everything the server answers until it closes or times out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def gw_port(stack):
    return int(stack.gw.rsplit(":", 1)[1])


def test_invalid_header_name_is_400_and_nothing_is_smuggled(stack):
    stack.start(workers=1)
    port = gw_port(stack)
    before = stack.ledger.count()
    seq0 = stack.stream_last_seq()
    smuggled = (b"GET /smuggled?by=attacker HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    for route in (b"/function/env/a", b"/async-function/env/a"):
        req = (b"POST " + route + b" HTTP/1.1\r\nHost: x\r\nFoo Bar: baz\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(smuggled)) + smuggled
        reply = raw_http(port, req)
        assert reply.startswith(b"HTTP/1.1 400"), (route, reply[:200])
    # a normal call on the same gateway still works, and the function saw no smuggled request
    r = stack.sync_call("env/ok", body=b"x")
    assert r.status_code == 200, r.text
    time.sleep(0.5)
    paths = [e.get("path") for e in stack.ledger.entries()]
    assert not any("smuggled" in (p or "") for p in paths), paths
    assert stack.ledger.count() == before + 1
    assert stack.stream_last_seq() == seq0, "a rejected async call was queued"


def test_dot_segments_stay_inside_the_submitted_function(stack):
    stack.start(workers=1)
    port = gw_port(stack)
    req = (b"POST /async-function/echo/../status HTTP/1.1\r\nHost: x\r\n"
           b"X-Callback-Url: " + stack.sink.url.encode() + b"\r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
    reply = raw_http(port, req)
    assert reply.startswith(b"HTTP/1.1 202"), reply[:300]
    cb = stack.sink.wait_for(1, timeout=20)[0]
    assert cb["headers"].get("X-Function-Name") == "echo"
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    assert cb["body"] == b"hi"
    time.sleep(0.5)
    assert stack.ledger.count(function="status") == 0, "the call ran another function"
    assert stack.ledger.count(function="echo") == 1


class FinalStatus101:
    """A function that answers every request with '101 Switching Protocols' and then idles."""

    def __init__(self, name="switcher"):
        self.name = name
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False

    def start(self):
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            try:
                c.recv(65536)
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                          b"Connection: Upgrade\r\n\r\n")
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        for c in self.conns:
            c.close()
        self.sock.close()


def test_final_1xx_from_a_function_is_502_on_both_routes(stack):
    delivery.add_function(stack, FinalStatus101())
    stack.start(workers=1, worker_env={"max_retry_attempts": "0"},
                gateway_env={"upstream_timeout": "20s"})
    t0 = time.monotonic()
    r = stack.sync_call("switcher", body=b"x", timeout=15)
    assert r.status_code == 502, (r.status_code, r.headers)
    assert time.monotonic() - t0 < 5
    r = stack.async_call("switcher", body=b"x")
    cid = delivery.assert_202(r)
    cb = stack.sink.wait_for(1, timeout=15, call_id=cid)[0]
    assert cb["headers"].get("X-Function-Status") == "502", cb["headers"]


def test_head_replies_carry_no_body(stack):
    stack.start(workers=0)
    port = gw_port(stack)
    for path in (b"/healthz", b"/function/nope"):
        reply = raw_http(port, b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), reply[:200]
        assert rest == b"", (path, reply)


def test_descriptor_exhaustion_pauses_accepting_without_log_flood(tmp_path):
    port = harness.free_port()
    ffile = tmp_path / "functions.json"
    ffile.write_text('{"functions": []}')
    log = tmp_path / "gateway.log"

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    env = harness.base_env({"port": str(port), "metrics_port": "0",
                            "nats_url": "nats://127.0.0.1:1", "functions_file": str(ffile)})
    with open(log, "wb") as out:
        p = subprocess.Popen([harness.bin_path("gateway")], env=env, stdout=out,
                             stderr=subprocess.STDOUT, preexec_fn=limit)
    socks = []
    try:
        harness.wait_until(lambda: harness.port_open(port), 10, desc="gateway port")
        for _ in range(80):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:
                pass
        time.sleep(2.0)
        assert p.poll() is None, "gateway died"
        size = os.path.getsize(log)
        assert size < 200_000, "log grew to %d bytes in 2 s" % size
    finally:
        for s in socks:
            s.close()
    try:
        r = harness.wait_until(
            lambda: requests.get("http://127.0.0.1:%d/healthz" % port, timeout=1), 10,
            desc="healthz after the descriptors came back")
        assert r.status_code == 200
    finally:
        p.terminate()
        p.wait(timeout=15)


def test_too_many_request_headers_is_a_client_error_not_503(stack):
    stack.start(workers=0)
    seq0 = stack.stream_last_seq()
    headers = {"X-Pad-%04d" % i: "v" * 20 for i in range(3000)}  # ~90 KB of headers
    r = stack.async_call("echo", body=b"x", headers=headers)
    # 431 from the server's header-count cap (512), before any route
    assert r.status_code == 431, (r.status_code, r.text)
    assert "header" in r.text
    assert stack.stream_last_seq() == seq0
    # under the count cap but over what a queued call can carry (64 KiB): 400 naming it
    headers = {"X-Pad-%03d" % i: "v" * 200 for i in range(400)}
    r = stack.async_call("echo", body=b"x", headers=headers)
    assert r.status_code == 400, (r.status_code, r.text)
    assert "headers" in r.text
    assert stack.stream_last_seq() == seq0
