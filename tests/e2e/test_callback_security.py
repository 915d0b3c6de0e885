"""Callback security (issue 11): destination rules checked by the gateway and again by the
worker on the address it connects to, no redirects, Standard Webhooks signatures verified with
Python's own hmac, no secrets in logs, Retry-After honoured up to max_retry_after.

Real nats-server, gateway, queue-worker, fixture functions and the SINK; a second recorder
stands in for an internal service and must receive nothing in every refused case.
"""

import base64
import hashlib
import hmac
import os
import subprocess
import time
import urllib.parse

import pytest
import requests

import harness
from delivery import absence_window, assert_202, attempts_of


@pytest.fixture
def internal(registry):
    """A second recorder standing in for an internal service (127.0.0.1, another port)."""
    rec = harness.CallbackRecorder().start()
    registry.add_server(rec)
    return rec


def _worker_log(stack):
    return "".join(w.log_text() for w in stack.workers)


# ---------------------------------------------------------------------------------------------
# destination rules


@pytest.mark.timeout(90)
def test_allowlist_refuses_before_queueing_and_at_connect(stack, internal):
    """callback_allowlist = the SINK's address and port. The gateway answers 400 naming the
    rule for a literal outside it (other port, ::1, link-local metadata, a CIDR miss), queues
    nothing; names that only an address entry could allow (localhost) are checked by the worker on
    the resolved address and refused there; a bare-integer IPv4 spelling is refused at once. The
    internal recorder receives nothing; the allowed destination gets its callback."""
    rules = "127.0.0.1:%d,10.0.0.0/8" % stack.sink.port
    stack.start(workers=1, fixtures=("echo",),
                gateway_env={"callback_allowlist": rules},
                worker_env={"callback_allowlist": rules})
    seq = stack.stream_last_seq()
    for url in ("http://127.0.0.1:%d/x" % internal.port, "http://[::1]:%d/x" % internal.port,
                "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1/",
                "ftp://127.0.0.1:%d/" % stack.sink.port):
        r = stack.async_call("echo", body=b"x", callback=url)
        assert r.status_code == 400, (url, r.status_code, r.text)
        assert "callback" in r.text.lower(), r.text
    # a bare-integer IPv4 spelling is no host at all (issue 14)
    r = stack.async_call("echo", body=b"x", callback="http://2130706433:%d/x" % internal.port)
    assert r.status_code == 400 and "IPv4" in r.text, (r.status_code, r.text)
    assert stack.stream_last_seq() == seq, "a refused callback was queued"
    # resolved at connect time: localhost and localhost. are 127.0.0.1 on the wrong port
    sneaky = [assert_202(stack.async_call("echo", body=b"s", callback=u)) for u in (
        "http://localhost:%d/x" % internal.port, "http://localhost:%d/y" % internal.port)]
    ok = assert_202(stack.async_call("echo", body=b"fine"))
    stack.sink.wait_for(1, 20, call_id=ok)
    harness.wait_until(lambda: _worker_log(stack).count("callback refused") >= 2, 20)
    absence_window(1)
    assert internal.count() == 0, internal.all()
    for cid in sneaky:
        assert stack.ledger.count("echo", cid) == 1  # the function ran; only the callback is refused
    log = _worker_log(stack)
    assert "not in callback_allowlist" in log
    m = harness.metric_sum(stack.workers[0].metrics(), "queue_worker_callbacks_refused_total")
    assert m == 2, m


@pytest.mark.timeout(60)
def test_worker_checks_even_when_the_gateway_does_not(stack, internal):
    """A gateway without rules (or any publisher) cannot get a callback past a worker that has
    them: the worker refuses before connecting."""
    stack.start(workers=1, fixtures=("echo",),
                worker_env={"callback_allowlist": "127.0.0.1:%d" % stack.sink.port})
    cid = assert_202(stack.async_call("echo", body=b"x",
                                      callback="http://127.0.0.1:%d/x" % internal.port))
    harness.wait_until(lambda: "callback refused" in _worker_log(stack), 20)
    absence_window(1)
    assert internal.count() == 0 and stack.sink.count(cid) == 0


def test_bad_allowlist_is_exit_2(stack, log_dir):
    stack.start(workers=0, fixtures=("echo",))
    env = {"nats_url": stack.nats.url, "functions_file": stack.functions_file,
           "callback_allowlist": "10.0.0.0/99"}
    g = harness.Gateway(log_dir, env, name="gateway-badrules")
    stack.registry.add(g)
    g.start()
    assert g.wait_exit(10) == 2
    assert "callback_allowlist" in g.all_logs()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(stack, internal, code):
    """A receiver answering 3xx with a Location to an internal service: the worker does not
    follow it (the attempt counts as failed, retried to the same receiver only)."""
    stack.start(workers=1, fixtures=("echo",), worker_env={"callback_max_attempts": "2"})
    target = stack.sink.url + "?" + urllib.parse.urlencode(
        {"status": str(code), "location": internal.url})
    cid = assert_202(stack.async_call("echo", body=b"x", callback=target))
    stack.sink.wait_for(2, 20, call_id=cid)
    harness.wait_until(lambda: "giving up" in _worker_log(stack), 20)
    absence_window(1)
    assert internal.count() == 0, internal.all()
    assert stack.sink.count(cid) == 2


@pytest.mark.timeout(60)
def test_callback_into_own_async_route_does_not_loop(stack):
    """A callback pointed at the gateway's own /async-function/echo is a chained call (issue
    14): it runs once more under its own call id naming the first as its parent; that call has
    no callback of its own, so nothing loops."""
    stack.start(workers=1, fixtures=("echo",))
    cid = assert_202(stack.async_call("echo", body=b"once",
                                      callback=stack.gw + "/async-function/echo"))
    harness.wait_until(lambda: stack.ledger.count("echo") >= 2, 20, desc="the chained call")
    absence_window(3)
    runs = stack.ledger.entries(function="echo")
    assert len(runs) == 2, runs
    assert runs[0]["call_id"] == cid and runs[1]["call_id"] != cid
    assert runs[1]["headers"].get("X-Parent-Call-Id") == cid
    assert runs[1]["body"] == b"once"


# ---------------------------------------------------------------------------------------------
# signatures


def _secret(raw):
    return "whsec_" + base64.b64encode(raw).decode()


def _verify(keys, headers, body):
    """Standard Webhooks verification written from the spec, with Python's hmac."""
    mid = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    assert mid and ts and sigs, headers
    signed = mid.encode() + b"." + ts.encode() + b"." + body
    want = {base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode() for k in keys}
    got = {s.split(",", 1)[1] for s in sigs.split(" ") if s.startswith("v1,")}
    return want == got and abs(int(ts) - time.time()) < 60


@pytest.mark.timeout(90)
def test_signed_callbacks_verify_independently(stack, tmp_path):
    """Two keys (rotation): every callback carries webhook-id (the call id), webhook-timestamp
    and one v1 signature per key, which Python's hmac verifies for an empty body, a small one
    and 1 MB; a changed byte fails; every retry of a callback has a fresh timestamp."""
    k1, k2 = os.urandom(32), os.urandom(24)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "callback-signing-key").write_text(_secret(k1) + "\n")
    (secrets / "callback-signing-key-2").write_text(_secret(k2))
    stack.start(workers=1, fixtures=("echo",),
                watchdogs={"big": "head -c 1048576 /dev/urandom"},
                worker_env={"secret_mount_path": str(secrets), "callback_max_attempts": "2"})
    ids = {"empty": assert_202(stack.async_call("echo", body=b"")),
           "small": assert_202(stack.async_call("echo", body=b"hello")),
           "big": assert_202(stack.async_call("big", body=b""))}
    for name, cid in ids.items():
        [cb] = stack.sink.wait_for(1, 30, call_id=cid)
        assert cb["headers"].get("webhook-id") == cid
        assert _verify([k1, k2], cb["headers"], cb["body"]), (name, cb["headers"])
        if name == "big":
            assert len(cb["body"]) == 1048576
        tampered = bytearray(cb["body"] or b"\0")
        tampered[len(tampered) // 2] ^= 1
        assert not _verify([k1, k2], cb["headers"], bytes(tampered)), name
        assert not _verify([k1], cb["headers"], cb["body"]), "one key must not verify both"
        if name == "small":
            # the docs' openssl recipe gives the same signature
            hs = cb["headers"]
            signed = ("%s.%s." % (hs["webhook-id"], hs["webhook-timestamp"])).encode() + cb["body"]
            out = subprocess.run(["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt",
                                  "hexkey:" + k1.hex(), "-binary"], input=signed,
                                 capture_output=True, check=True).stdout
            assert "v1," + base64.b64encode(out).decode() in hs["webhook-signature"].split(" ")
    retry = assert_202(stack.async_call("echo", body=b"r", callback=stack.sink.url + "?status=503"))
    cbs = stack.sink.wait_for(2, 20, call_id=retry)
    assert cbs[0]["headers"]["webhook-id"] == cbs[1]["headers"]["webhook-id"] == retry
    assert cbs[0]["headers"]["webhook-timestamp"] != cbs[1]["headers"]["webhook-timestamp"]
    assert all(_verify([k1, k2], c["headers"], c["body"]) for c in cbs)
    w = stack.workers[0].log_text()
    assert "signed with 2 key(s)" in w
    assert base64.b64encode(k1).decode() not in w


def test_unsigned_without_key_warns(stack, tmp_path):
    stack.start(workers=1, fixtures=("echo",), worker_env={"secret_mount_path": str(tmp_path)})
    cid = assert_202(stack.async_call("echo", body=b"x"))
    [cb] = stack.sink.wait_for(1, 20, call_id=cid)
    assert "webhook-signature" not in cb["headers"]
    assert "callbacks are sent unsigned" in stack.workers[0].log_text()


@pytest.mark.parametrize("kind", ["not-base64", "too-short", "dangling-symlink", "directory"])
def test_bad_signing_key_is_exit_2(stack, tmp_path, log_dir, kind):
    """A key file that is no usable secret, a broken secret mount (dangling symlink) or a
    directory in its place stops the worker (exit 2) rather than sending unsigned callbacks."""
    secrets = tmp_path / "bad"
    secrets.mkdir()
    key = secrets / "callback-signing-key"
    if kind == "not-base64":
        key.write_text("whsec_not*base64")
    elif kind == "too-short":
        key.write_text(_secret(b"abc"))
    elif kind == "dangling-symlink":
        os.symlink(str(secrets / "..data" / "callback-signing-key"), str(key))
    else:
        key.mkdir()
    (secrets / "callback-signing-key.bak").write_text("ignored: not a key file name")
    stack.start(workers=0, fixtures=("echo",))
    env = {"nats_url": stack.nats.url, "secret_mount_path": str(secrets)}
    w = harness.Worker(log_dir, env, name="worker-badkey")
    stack.registry.add(w)
    w.start()
    assert w.wait_exit(10) == 2
    assert "callback-signing-key" in w.all_logs()


# ---------------------------------------------------------------------------------------------
# secrets in logs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("level", ["info", "debug"])
def test_no_secrets_in_logs(stack, level):
    """Planted credentials in the caller's headers and in the callback URL's query never reach
    a log line of gateway or worker (at info, and at debug with write_debug); the callback does
    not carry the caller's credentials."""
    planted = {"Authorization": "Bearer s3cr3t-auth", "Proxy-Authorization": "Basic s3cr3t-proxy",
               "Cookie": "session=s3cr3t-cookie", "X-Api-Key": "s3cr3t-apikey"}
    env = {"log_level": level, "write_debug": "true" if level == "debug" else "false"}
    stack.start(workers=1, fixtures=("echo",), worker_env=env, gateway_env=env)
    cid = assert_202(stack.async_call("echo?token=s3cr3t-fnquery", body=b"x", headers=planted,
                                      callback=stack.sink.url + "?token=s3cr3t-cbquery"))
    [cb] = stack.sink.wait_for(1, 20, call_id=cid)
    for name in planted:
        assert name not in cb["headers"], (name, cb["headers"])
    time.sleep(0.5)
    logs = stack.gateway.all_logs() + "".join(w.all_logs() for w in stack.workers)
    assert cid in logs, "the logs say nothing about the call: the check would prove nothing"
    for secret in ("s3cr3t-auth", "s3cr3t-proxy", "s3cr3t-cookie", "s3cr3t-apikey",
                   "s3cr3t-cbquery", "s3cr3t-fnquery"):
        assert secret not in logs, secret


# ---------------------------------------------------------------------------------------------
# Retry-After


@pytest.mark.timeout(90)
def test_retry_after_beyond_max_retry_wait_is_honoured(stack):
    """max_retry_wait 1 s, a 503 with Retry-After: 4: the second attempt comes >= 4 s later
    (capped by max_retry_after, not cut to max_retry_wait), no copy in parallel meanwhile."""
    stack.start(workers=1, fixtures=("status",),
                worker_env={"max_retry_attempts": "2", "initial_retry_wait": "1s",
                            "max_retry_wait": "1s", "max_retry_after": "10s", "ack_wait": "1s"})
    cid = assert_202(stack.async_call("status?fail=1&code=503&retry_after=4"))
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "200"
    att = attempts_of(stack.ledger, cid, "status")
    assert len(att) == 2, att
    gap = att[1]["start_ts"] - att[0]["end_ts"]
    assert gap >= 4 - 0.15, "Retry-After 4 s honoured only %.2f s" % gap
    assert gap < 8, gap
