"""Issue 2: sync vs async basics, callbacks, request parity, routing errors, NATS down."""

import subprocess
import time

import pytest
import requests

import harness

S = 1.0  # seconds one "slow" execution takes


def _is_float(s):
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def _read_lines(path):
    try:
        with open(path) as f:
            return [ln.split() for ln in f.read().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def _assert_202(r):
    assert r.status_code == 202, (r.status_code, r.headers, r.text)
    cid = r.headers.get("X-Call-Id")
    assert cid, "202 without X-Call-Id: %r" % (dict(r.headers),)
    assert _is_float(r.headers.get("X-Start-Time")), dict(r.headers)
    return cid


# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_sync_waits_async_returns_immediately(stack, tmp_path):
    ledger_file = str(tmp_path / "slow-ledger.txt")
    fprocess = 'sleep %s; echo "${Http_X_Call_Id:-none} $(date +%%s.%%N)" >> %s; echo ok' % (
        S, ledger_file)
    stack.start(workers=1, worker_env={"max_inflight": "5"}, fixtures=(),
                watchdogs={"slow": {"fprocess": fprocess, "env": {"exec_timeout": "30s"}}})

    # ten sequential sync calls: each waits for the function
    t0 = time.monotonic()
    for i in range(10):
        r = stack.sync_call("slow", body=b"sync-%d" % i)
        assert r.status_code == 200, (i, r.status_code, r.text)
        assert r.text.strip() == "ok"
    sync_elapsed = time.monotonic() - t0
    assert sync_elapsed >= 10 * S, sync_elapsed
    assert len(_read_lines(ledger_file)) == 10

    # ten async submissions: each 202 well before one execution could finish
    ids, latencies = [], []
    t0 = time.monotonic()
    for i in range(10):
        t = time.monotonic()
        r = stack.async_call("slow", body=b"async-%d" % i, callback=False)
        latencies.append(time.monotonic() - t)
        ids.append(_assert_202(r))
    submit_elapsed = time.monotonic() - t0
    assert max(latencies) < 0.25 * S, "202 latencies %r" % latencies
    assert submit_elapsed < S, submit_elapsed
    assert len(set(ids)) == 10, ids

    # ...and all ten then run, each exactly once, with the call id reaching the function
    def async_lines():
        ls = _read_lines(ledger_file)[10:]
        return ls if len(ls) >= 10 else None
    harness.wait_until(async_lines, 60, interval=0.2, desc="10 async executions")
    time.sleep(1.5)  # would catch duplicates
    got = [ln[0] for ln in _read_lines(ledger_file)[10:]]
    assert sorted(got) == sorted(ids), got


def test_figlet_async_with_callback(stack):
    stack.start(workers=1, fixtures=(), watchdogs={"figlet": "figlet"})
    text = b"Hello cfaas"
    expected = subprocess.run(["/usr/bin/figlet"], input=text, stdout=subprocess.PIPE,
                              check=True, timeout=10).stdout
    assert expected.strip()

    r = stack.sync_call("figlet", body=text)
    assert (r.status_code, r.content) == (200, expected)

    r = stack.async_call("figlet", body=text, headers={"Content-Type": "text/plain"})
    cid = _assert_202(r)
    cbs = stack.sink.wait_for(1, 30, call_id=cid)
    time.sleep(1.0)  # a duplicate would show up here
    assert stack.sink.count() == 1, [c["call_id"] for c in stack.sink.all()]
    cb = cbs[0]
    assert cb["method"] == "POST"
    assert cb["body"] == expected, cb["body"]
    h = cb["headers"]
    assert h.get("X-Call-Id") == cid
    assert h.get("X-Function-Status") == "200", h
    assert h.get("X-Function-Name") == "figlet", h
    assert _is_float(h.get("X-Duration-Seconds")), h
    assert 0 <= float(h.get("X-Duration-Seconds")) < 30
    assert h.get("X-Start-Time") == r.headers.get("X-Start-Time"), h


def test_callback_to_another_function_through_gateway(stack):
    stack.start(workers=1)
    cb_url = stack.gw + "/function/env"
    r = stack.async_call("echo", body=b"payload-3", callback=cb_url,
                         headers={"Content-Type": "text/plain"})
    cid = _assert_202(r)
    stack.ledger.wait_for(1, 30, function="echo", call_id=cid)
    got = stack.ledger.wait_for(1, 30, function="env", call_id=cid)
    assert len(got) == 1
    e = got[0]
    assert e["method"] == "POST"
    assert e["body"] == b"payload-3"
    h = e["headers"]
    assert h.get("X-Call-Id") == cid
    assert h.get("X-Function-Status") == "200", h
    assert h.get("X-Function-Name") == "echo", h
    assert _is_float(h.get("X-Duration-Seconds")), h
    assert h.get("X-Echo") == "yes", h  # function response header copied to the callback
    assert stack.sink.count() == 0


PARITY_CASES = [
    # (function path as called, function name as submitted, expected path, expected query)
    ("env/some/path?q=1", "env", "/some/path", "q=1"),
    ("env", "env", "/", ""),
    ("env/", "env", "/", ""),
    ("env/a/b/?x=1&y=%20z&x=2", "env", "/a/b/", "x=1&y=%20z&x=2"),
    ("env.openfaas-fn/some/path?q=1", "env.openfaas-fn", "/some/path", "q=1"),
    ("env.openfaas-fn", "env.openfaas-fn", "/", ""),
]


@pytest.fixture
def env_stack(stack):
    return stack.start(workers=1, fixtures=("env", "echo"))


@pytest.fixture(params=["true", "false"], ids=["worker-via-gateway", "worker-direct"])
def parity_stack(stack, request):
    return stack.start(workers=1, fixtures=("env", "echo"),
                       worker_env={"gateway_invoke": request.param})


@pytest.mark.parametrize("fn_path,fn_name,exp_path,exp_query", PARITY_CASES,
                         ids=[c[0] for c in PARITY_CASES])
def test_request_parity_sync_and_async(parity_stack, fn_path, fn_name, exp_path, exp_query):
    stack = parity_stack
    hdrs = {"X-Custom": "custom-value", "Content-Type": "text/plain", "X-Forwarded-By": "test"}
    body = b"hello-parity"

    # sync
    r = stack.sync_call(fn_path, body=body, headers=hdrs)
    assert r.status_code == 200, (r.status_code, r.text)
    sm, sp, sq, sh = harness.parse_env_output(r.text)
    assert (sm, sp, sq) == ("POST", exp_path, exp_query), r.text
    for k, v in hdrs.items():
        assert sh.get(k) == v, (k, r.text)
    sync_cid = sh.get("X-Call-Id")
    assert sync_cid, "sync call without X-Call-Id at the function: %s" % r.text
    [se] = stack.ledger.entries("env", sync_cid)
    assert se["body"] == body

    # async
    r = stack.async_call(fn_path, body=body, headers=hdrs)
    cid = _assert_202(r)
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    assert cb["headers"].get("X-Function-Name") == fn_name, cb["headers"]
    am, ap, aq, ah = harness.parse_env_output(cb["body"].decode())
    assert (am, ap, aq) == (sm, sp, sq), cb["body"]
    for k, v in hdrs.items():
        assert ah.get(k) == v, (k, cb["body"])
    assert ah.get("X-Call-Id") == cid, cb["body"]
    [ae] = stack.ledger.wait_for(1, 10, function="env", call_id=cid)
    assert ae["body"] == body
    assert ae["method"] == "POST"


def test_client_call_id_is_kept_and_echoed(env_stack):
    stack = env_stack
    my_id = "my-own-call-id-0001"
    r = stack.async_call("env", body=b"x", headers={"X-Call-Id": my_id})
    assert r.status_code == 202
    assert r.headers.get("X-Call-Id") == my_id
    [cb] = stack.sink.wait_for(1, 30, call_id=my_id)
    _, _, _, ah = harness.parse_env_output(cb["body"].decode())
    assert ah.get("X-Call-Id") == my_id


def _assert_nothing_enqueued(stack, seq_before, settle=2.0):
    time.sleep(settle)
    assert stack.stream_last_seq() == seq_before, "a message was enqueued"
    assert stack.sink.count() == 0, [c["call_id"] for c in stack.sink.all()]


def _positive_control(stack, seq_before):
    """Proves the 'nothing enqueued' observation would have seen a message."""
    r = stack.async_call("echo", body=b"control")
    cid = _assert_202(r)
    stack.sink.wait_for(1, 30, call_id=cid)
    assert stack.stream_last_seq() == seq_before + 1


@pytest.mark.parametrize("name", ["does-not-exist", "does-not-exist.openfaas-fn",
                                  "env.other-namespace"])
def test_unknown_function_404_both_routes(env_stack, name):
    stack = env_stack
    seq = stack.stream_last_seq()
    r = stack.async_call(name, body=b"x")
    assert r.status_code == 404, (r.status_code, r.text)
    r = stack.async_call(name + "/sub/path?q=1", body=b"x")
    assert r.status_code == 404, (r.status_code, r.text)
    for method in ("GET", "POST"):
        r = stack.sync_call(name, method=method, body=b"x")
        assert r.status_code == 404, (method, r.status_code, r.text)
    _assert_nothing_enqueued(stack, seq)
    assert stack.ledger.count() == 0
    _positive_control(stack, seq)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_async_non_post_is_405(env_stack, method):
    """Only POST submits; DELETE is OpenFaaS Pro's cancel (DELETE /async-function/<call id>):
    for a path that is no call id it answers 404 and queues nothing."""
    stack = env_stack
    seq = stack.stream_last_seq()
    r = requests.request(method, stack.gw + "/async-function/env", data=b"x", timeout=10,
                         headers={"X-Callback-Url": stack.sink.url})
    if method == "DELETE":
        assert r.status_code == 404, (r.status_code, r.text)
        assert "call not found" in r.text
    else:
        assert r.status_code == 405, (r.status_code, r.text)
        allow = [m.strip().upper() for m in r.headers.get("Allow", "").split(",")]
        assert allow == ["POST", "DELETE"], r.headers
    _assert_nothing_enqueued(stack, seq)
    assert stack.ledger.count() == 0
    _positive_control(stack, seq)


@pytest.mark.timeout(120)
def test_gateway_503_when_nats_down(stack):
    stack.start(workers=1, fixtures=("echo",), gateway_env={"nats_publish_timeout": "2s"})
    r = stack.async_call("echo", body=b"before")
    cid = _assert_202(r)
    stack.sink.wait_for(1, 30, call_id=cid)

    stack.nats.kill9()
    for i in range(3):
        t0 = time.monotonic()
        r = stack.async_call("echo", body=b"while-down-%d" % i, timeout=30)
        elapsed = time.monotonic() - t0
        assert r.status_code == 503, (i, r.status_code, r.headers, r.text)
        assert elapsed <= 5.0, "503 after %.2fs (nats_publish_timeout=2s)" % elapsed
    harness.wait_until(lambda: harness.http_status(stack.gw + "/readyz") not in (200, None),
                       10, desc="/readyz not 200 while NATS is down")
    assert harness.http_status(stack.gw + "/healthz") == 200
    # the sync route does not depend on NATS
    r = stack.sync_call("echo", body=b"sync-while-down")
    assert (r.status_code, r.content) == (200, b"sync-while-down")
    assert stack.gateway.alive()
