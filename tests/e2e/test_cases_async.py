"""Acceptance cases A1-A17 of /work/shared/cases/async-acceptance.md (issue 3).

Real nats-server -js, real gateway/queue-worker binaries, Python fixture functions (echo, env,
sleep, status, and delivery.GateFunction) and the SINK from harness.py. Timings are scaled down
while the ratio that makes each case bite is kept (run time >> ack_wait, burst >> slots).
"""

import email.utils
import hashlib
import os
import time
import urllib.parse

import pytest
import requests

import harness
from delivery import (DLQ, GateFunction, absence_window, add_function, assert_202,
                      assert_no_parallel_copies, exactly_once_each, attempts_of, is_float,
                      js_publish_raw, max_overlap, read_stream, start_gateway, start_worker,
                      stream_messages_count, submit_many, wait_callbacks_for, wait_queue_drained,
                      worker_metric)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


# --------------------------------------------------------------------------------------------
# A1-A4: leases, duplicates, concurrency


@pytest.mark.timeout(120)
def test_a01_long_call_runs_once_despite_short_ack_wait(stack):
    """A1: a call running 6x longer than ack_wait (1 s) executes once, calls back once; the
    worker keeps the lease with in-progress acks and acks after the callback."""
    run = 6
    stack.start(workers=1, fixtures=("sleep",), worker_env={"ack_wait": "1s"})
    t0 = time.monotonic()
    r = stack.async_call("sleep?s=%d" % run, body=b"{}",
                         headers={"Content-Type": "application/json"})
    cid = assert_202(r)
    [cb] = stack.sink.wait_for(1, run + 40, call_id=cid)
    assert cb["mono"] - t0 >= run - 0.1, "callback before the function could have finished"
    absence_window(4)  # 4 x ack_wait: a missed lease renewal would redeliver by now
    assert stack.ledger.count("sleep", cid) == 1, attempts_of(stack.ledger, cid)
    assert stack.sink.count(cid) == 1
    assert stack.fns["sleep"].max_inflight_seen == 1, "a second copy ran in parallel"
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    assert cb["body"] == b"slept %d" % run
    wait_queue_drained(stack.nats, 15)
    assert stack.sink.count() == 1


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a02_two_workers_no_duplicate_callbacks(stack):
    """A2: 2 workers x max_inflight 1, 8 jobs of 3 s (3x ack_wait) sent within 1 s: 8
    executions, 8 callbacks, each id once; makespan ~ 4 x 3 s."""
    run, n = 3, 8
    stack.start(workers=2, fixtures=("sleep",), worker_env={"ack_wait": "1s"})
    t0 = time.monotonic()
    rs = submit_many(stack, [("sleep?s=%d" % run, b"job-%d" % i, None) for i in range(1, n + 1)])
    submit_s = time.monotonic() - t0
    ids = [assert_202(r) for r in rs]
    assert submit_s < 3.0, "8 submissions took %.2fs" % submit_s
    wait_callbacks_for(stack, ids, 90)
    makespan = max(r["mono"] for r in stack.sink.all()) - t0
    absence_window(3)
    exactly_once_each(stack, ids, "sleep")
    assert stack.sink.count() == n
    assert sorted(e["body"] for e in stack.ledger.entries("sleep")) == \
        sorted(b"job-%d" % i for i in range(1, n + 1))
    assert max_overlap(stack.ledger.entries("sleep")) == 2
    assert 4 * run - 0.5 <= makespan <= 4 * run + 8, "makespan %.1fs, expected ~%ds" % (
        makespan, 4 * run)


@pytest.mark.timeout(120)
def test_a03_max_inflight_runs_calls_in_parallel_and_caps(stack):
    """A3: max_inflight=5: 3 calls start together (within 2 s) and all call back by ~t+run;
    7 calls -> never more than 5 at once, the 6th and 7th start only after a slot frees."""
    run = 3
    stack.start(workers=1, fixtures=("sleep",), worker_env={"max_inflight": "5"})

    t0 = time.monotonic()
    rs = submit_many(stack, [("sleep?s=%d&test=%d" % (run, i), b"", None) for i in (1, 2, 3)])
    ids1 = [assert_202(r) for r in rs]
    wait_callbacks_for(stack, ids1, 60)
    last_cb = max(r["mono"] for r in stack.sink.all() if r["call_id"] in ids1) - t0
    starts = [stack.ledger.entries("sleep", i)[0]["start_ts"] for i in ids1]
    assert max(starts) - min(starts) <= 2.0, "starts spread over %.2fs (serialised?)" % (
        max(starts) - min(starts))
    # serial processing would need >= 3 x run = 9 s
    assert last_cb <= run + 3.5, "3 parallel calls of %ds took %.1fs" % (run, last_cb)

    rs = submit_many(stack, [("sleep?s=%d&phase=2&n=%d" % (run, i), b"", None)
                             for i in range(7)])
    ids2 = [assert_202(r) for r in rs]
    wait_callbacks_for(stack, ids2, 60)
    es = sorted([stack.ledger.entries("sleep", i)[0] for i in ids2], key=lambda e: e["start_ts"])
    assert max_overlap(es) == 5, "max parallel executions %d, want exactly 5" % max_overlap(es)
    first_free = min(e["end_ts"] for e in es[:5])
    for e in es[5:]:
        assert e["start_ts"] >= first_free - 0.05, "6th/7th started before a slot freed"
    absence_window(1)
    exactly_once_each(stack, ids1 + ids2, "sleep")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a04_concurrency_is_workers_times_inflight_and_joining_worker_shares(stack):
    """A4: W=2 workers x max_inflight 1: 10 x 2 s calls take ~10 s. Then 12 more with a third
    worker started mid-run: it takes a share (its log names some of the ids), the makespan
    drops below the 2-worker value, no duplicates, no losses."""
    run = 2
    stack.start(workers=2, fixtures=("sleep",), worker_env={"ack_wait": "1s"})

    t0 = time.monotonic()
    rs = submit_many(stack, [("sleep?s=%d&p=1&n=%d" % (run, i), b"", None) for i in range(10)])
    ids1 = [assert_202(r) for r in rs]
    wait_callbacks_for(stack, ids1, 60)
    makespan1 = max(r["mono"] for r in stack.sink.all() if r["call_id"] in ids1) - t0
    assert 10 - 0.5 <= makespan1 <= 10 + 4, "W=2 makespan %.1fs, want ~10s" % makespan1
    assert max_overlap([e for e in stack.ledger.entries("sleep") if e["call_id"] in ids1]) == 2

    t0 = time.monotonic()
    rs = submit_many(stack, [("sleep?s=%d&p=2&n=%d" % (run, i), b"", None) for i in range(12)])
    ids2 = [assert_202(r) for r in rs]
    w3 = stack.add_worker()  # joins while the first calls of the batch run
    joined = time.monotonic() - t0
    wait_callbacks_for(stack, ids2, 60)
    makespan2 = max(r["mono"] for r in stack.sink.all() if r["call_id"] in ids2) - t0
    absence_window(2)
    exactly_once_each(stack, ids1 + ids2, "sleep")
    w3_log = w3.log_text("stdout")
    share = [i for i in ids2 if i in w3_log]
    assert len(share) >= 2, "the joining worker handled %d calls" % len(share)
    # two workers alone need 12 s; a third joining at t=%joined should bring it to ~9-10 s
    assert makespan2 <= 12 - 0.5, "makespan %.1fs with a 3rd worker (joined at %.1fs)" % (
        makespan2, joined)
    assert max_overlap([e for e in stack.ledger.entries("sleep") if e["call_id"] in ids2]) <= 3


# --------------------------------------------------------------------------------------------
# A5-A8: request and callback fidelity


def test_a05_headers_query_body_reach_function_like_sync(stack):
    """A5: async call carries method, query, custom headers, Content-Type, body and call id the
    same as the sync call (minus hop-by-hop). Host: not passed by design (docs/behaviour.md);
    the function sees X-Forwarded-Host = the host the client used, on both routes."""
    stack.start(workers=1, fixtures=("env",))
    hdrs = {"X-Forwarded-By": "test", "Content-Type": "text/plain"}
    host = "127.0.0.1:%d" % stack.gateway.port

    rs = stack.sync_call("env?id=user1&x=1", body=b"hello", headers=hdrs)
    assert rs.status_code == 200, rs.text
    sm, sp, sq, sh = harness.parse_env_output(rs.text)

    r = stack.async_call("env?id=user1&x=1", body=b"hello", headers=hdrs)
    cid = assert_202(r)
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    am, ap, aq, ah = harness.parse_env_output(cb["body"].decode())
    assert (am, aq) == ("POST", "id=user1&x=1"), cb["body"]
    assert (am, ap, aq) == (sm, sp, sq)
    assert ah.get("X-Forwarded-By") == "test"
    assert ah.get("Content-Type") == "text/plain"
    assert ah.get("X-Call-Id") == cid
    assert ah.get("X-Forwarded-Host") == sh.get("X-Forwarded-Host") == host, (ah, sh)
    [e] = stack.ledger.wait_for(1, 10, function="env", call_id=cid)
    assert e["body"] == b"hello"
    exempt = HOP_BY_HOP | {"x-call-id", "x-start-time", "x-forwarded-for", "accept-encoding"}
    sync_names = {k.lower() for k, _ in sh.items}
    async_names = {k.lower() for k, _ in ah.items}
    missing = sorted(sync_names - async_names - exempt)
    assert not missing, "headers the sync call delivered but the async call did not: %r" % missing
    for k, v in sh.items:
        if k.lower() not in exempt:
            assert ah.get(k) == v, (k, v, ah.get(k))


@pytest.mark.parametrize("invoke", ["true", "false"], ids=["via-gateway", "direct"])
def test_a06_sub_path_kept_on_both_worker_routes(stack, invoke):
    """A6: the sub-path and query survive the async route, the bare forms give '/', and there
    is no doubled /function/<name> prefix whichever route the worker uses."""
    stack.start(workers=1, fixtures=("env",),
                worker_env={"gateway_invoke": invoke, "max_inflight": "3"})
    rs = stack.sync_call("env/some/path?q=1", body=b"x")
    _, sp, sq, _ = harness.parse_env_output(rs.text)
    assert (sp, sq) == ("/some/path", "q=1"), rs.text
    cases = [("env/some/path?q=1", "/some/path", "q=1"), ("env", "/", ""), ("env/", "/", "")]
    ids = [assert_202(stack.async_call(p, body=b"x")) for p, _, _ in cases]
    for cid, (p, want_path, want_query) in zip(ids, cases):
        [cb] = stack.sink.wait_for(1, 30, call_id=cid)
        m, path, query, _ = harness.parse_env_output(cb["body"].decode())
        assert (m, path, query) == ("POST", want_path, want_query), (p, cb["body"])
        [e] = stack.ledger.wait_for(1, 10, function="env", call_id=cid)
        assert "/function/" not in e["path"], e["path"]


def test_a07_async_non_post_is_405_and_post_replays_post(stack):
    """A7: GET and PUT on /async-function -> 405 with Allow: POST, DELETE (DELETE cancels a
    call by id, OpenFaaS Pro's route), nothing enqueued; POST -> the function sees
    method=POST."""
    stack.start(workers=1, fixtures=("env",))
    harness.wait_until(lambda: stack.nats.stream_state("faas-request") is not None, 15,
                       desc="stream created")
    seq = stack.stream_last_seq()
    for method in ("GET", "PUT"):
        r = requests.request(method, stack.gw + "/async-function/env", data=b"x", timeout=10,
                             headers={"X-Callback-Url": stack.sink.url})
        assert r.status_code == 405, (method, r.status_code, r.text)
        allow = [m.strip().upper() for m in r.headers.get("Allow", "").split(",")]
        assert allow == ["POST", "DELETE"], r.headers
    r = stack.async_call("env", body=b"x")
    cid = assert_202(r)
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert harness.parse_env_output(cb["body"].decode())[0] == "POST"
    assert stack.stream_last_seq() == seq + 1, "the 405s enqueued something"
    absence_window(1)
    assert stack.sink.count() == 1 and stack.ledger.count() == 1


def _assert_framing_sane(cb):
    h = cb["headers"]
    assert not ("Content-Length" in h and "Transfer-Encoding" in h), h
    if "Content-Length" in h:
        assert int(h["Content-Length"]) == len(cb["body"]), h
    assert len(h.get_all("Content-Length")) <= 1, h


def test_a08_callback_carries_response_headers_and_ids(stack):
    """A8: one POST to the SINK: body byte-identical, the function's Content-Type and X-Echo,
    X-Call-Id (generated, and a client-chosen one kept end-to-end and echoed in the 202),
    X-Function-Status, X-Function-Name, X-Duration-Seconds, X-Start-Time; framing headers
    recomputed."""
    stack.start(workers=1, fixtures=("echo",))
    r = stack.async_call("echo", body=b"hi", headers={"Content-Type": "text/plain"})
    cid = assert_202(r)
    mine = "client-chosen-id-a08"
    r2 = stack.async_call("echo", body=b"hi-2", headers={"Content-Type": "text/plain",
                                                         "X-Call-Id": mine})
    assert assert_202(r2) == mine, "client X-Call-Id not echoed in the 202"
    for call_id, body, resp in ((cid, b"hi", r), (mine, b"hi-2", r2)):
        [cb] = stack.sink.wait_for(1, 30, call_id=call_id)
        h = cb["headers"]
        assert cb["method"] == "POST"
        assert cb["body"] == body
        assert h.get("Content-Type") == "application/octet-stream", h
        assert h.get("X-Echo") == "yes", h
        assert h.get("X-Call-Id") == call_id
        assert h.get("X-Function-Status") == "200", h
        assert h.get("X-Function-Name") == "echo", h
        assert is_float(h.get("X-Duration-Seconds")) and 0 <= float(h["X-Duration-Seconds"]) < 30
        assert h.get("X-Start-Time") == resp.headers.get("X-Start-Time"), h
        assert (h.get("User-Agent") or "").startswith("cfaas-queue-worker/"), h
        _assert_framing_sane(cb)
        [e] = stack.ledger.wait_for(1, 10, function="echo", call_id=call_id)
        assert e["headers"].get("X-Call-Id") == call_id
    absence_window(1.5)
    assert stack.sink.count(cid) == 1 and stack.sink.count(mine) == 1


# --------------------------------------------------------------------------------------------
# A9-A12: failures, unknown functions, body size


@pytest.mark.timeout(120)
def test_a09_timeout_and_error_status_reach_the_callback(stack):
    """A9: (a) function slower than upstream_timeout (2 s) -> one callback, X-Function-Status
    504 + X-Function-Error, sent at the deadline, not when the function ends; (b) a 500 ->
    X-Function-Status 500 with the function's error body."""
    stack.start(workers=1, fixtures=("sleep", "status"),
                worker_env={"upstream_timeout": "2s", "max_inflight": "2"},
                gateway_env={"upstream_timeout": "30s"})
    t0 = time.monotonic()
    ra = stack.async_call("sleep?s=8", body=b"a")
    rb = stack.async_call("status?code=500", body=b"b")
    ca, cb_id = assert_202(ra), assert_202(rb)
    [a] = stack.sink.wait_for(1, 30, call_id=ca)
    assert a["mono"] - t0 < 7, "timeout callback only after %.1fs" % (a["mono"] - t0)
    assert a["headers"].get("X-Function-Status") == "504", a["headers"]
    assert a["headers"].get("X-Function-Error"), a["headers"]
    [b] = stack.sink.wait_for(1, 30, call_id=cb_id)
    assert b["headers"].get("X-Function-Status") == "500", b["headers"]
    assert b["body"] == b"code 500"
    stack.ledger.wait_for(1, 30, function="sleep", call_id=ca)  # the orphaned run ends at t+8
    absence_window(2)
    assert stack.sink.count(ca) == 1 and stack.sink.count(cb_id) == 1
    assert stack.ledger.count("sleep", ca) == 1 and stack.ledger.count("status", cb_id) == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("invoke", ["true", "false"], ids=["via-gateway", "direct"])
def test_a10_unreachable_function_gives_diagnostic_callback_and_worker_survives(stack, invoke):
    """A10: the function is down: the worker stays up, one callback with 502 and a short
    diagnostic (X-Function-Error, or the gateway's error body when invoking through it), the
    message is not redelivered; the next call to another function calls back 200."""
    stack.start(workers=1, fixtures=("sleep", "echo"),
                worker_env={"gateway_invoke": invoke, "ack_wait": "1s"})
    stack.fns["sleep"].stop()
    assert not harness.port_open(stack.fns["sleep"].port)
    cid = assert_202(stack.async_call("sleep?s=60", body=b"x"))
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    h = cb["headers"]
    assert h.get("X-Function-Status") == "502", h
    if invoke == "false":
        assert h.get("X-Function-Error"), h
    else:
        assert h.get("X-Function-Error") or cb["body"].strip(), "no diagnostic: %r" % (cb,)
    eid = assert_202(stack.async_call("echo", body=b"ok"))
    [e] = stack.sink.wait_for(1, 30, call_id=eid)
    assert e["headers"].get("X-Function-Status") == "200" and e["body"] == b"ok"
    absence_window(3)  # 3 x ack_wait
    assert stack.sink.count(cid) == 1, "failed call redelivered"
    wait_queue_drained(stack.nats, 15)
    assert all(w.alive() for w in stack.workers)
    assert "panic" not in stack.workers[0].all_logs().lower()


def test_a11_unknown_function_is_404_nothing_enqueued(stack):
    """A11: async call to a function that does not exist -> 404 at once, nothing queued, no
    callback; a known function right after is queued (positive control)."""
    stack.start(workers=1, fixtures=("echo",))
    harness.wait_until(lambda: stack.nats.stream_state("faas-request") is not None, 15,
                       desc="stream created")
    seq = stack.stream_last_seq()
    r = stack.async_call("does-not-exist", body=b"x")
    assert r.status_code == 404, (r.status_code, r.text)
    absence_window(1.5)
    assert stack.stream_last_seq() == seq and stack.sink.count() == 0
    cid = assert_202(stack.async_call("echo", body=b"x"))
    stack.sink.wait_for(1, 30, call_id=cid)
    assert stack.stream_last_seq() == seq + 1


@pytest.mark.timeout(120)
def test_a12_oversized_body_413_and_body_at_limit_byte_identical(stack):
    """A12: max_body_bytes=200000: a 1.5 MB body -> 413 naming the limit, nothing queued; a
    body of exactly the limit reaches the function and the callback byte-identical."""
    limit = 200000
    stack.start(workers=1, fixtures=("echo",), gateway_env={"max_body_bytes": limit},
                worker_env={"max_body_bytes": limit})
    harness.wait_until(lambda: stack.nats.stream_state("faas-request") is not None, 15,
                       desc="stream created")
    seq = stack.stream_last_seq()
    big = os.urandom(1500 * 1000)
    r = stack.async_call("echo", body=big, timeout=30)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert str(limit) in r.text, "413 does not name the limit: %r" % r.text[:300]
    assert stack.stream_last_seq() == seq
    body = os.urandom(limit)
    sha = hashlib.sha256(body).hexdigest()
    cid = assert_202(stack.async_call("echo", body=body, timeout=30))
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    assert cb["sha256"] == sha and len(cb["body"]) == limit
    [e] = stack.ledger.wait_for(1, 10, function="echo", call_id=cid)
    assert hashlib.sha256(e["body"]).hexdigest() == sha
    assert stack.stream_last_seq() == seq + 1


# --------------------------------------------------------------------------------------------
# A13: NATS restart


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a13_nats_restart_gateway_and_worker_reconnect(stack):
    """A13: NATS killed (-9) and restarted on the same port/store: while down the gateway says
    503 within 5 s (never 202) and /readyz is not 200; calls stored before the crash are
    processed after it; gateway and worker reconnect by themselves; every 202 afterwards gets
    exactly one callback."""
    gate = add_function(stack, GateFunction(stack.ledger))
    stack.start(workers=1, fixtures=("echo",), gateway_env={"nats_publish_timeout": "2s"})
    gw_pid, w_pid = stack.gateway.pid, stack.workers[0].pid

    ok_id = assert_202(stack.async_call("echo", body=b"before"))
    stack.sink.wait_for(1, 30, call_id=ok_id)
    # stored but not yet delivered when NATS dies: the only slot is held by the gate call
    gate_id = assert_202(stack.async_call("gate", body=b"held"))
    harness.wait_until(lambda: gate.started >= 1, 20, desc="gate call running")
    # nats-server 2.9 persists a consumer's delivery state asynchronously: a kill -9 within
    # ~0.1 s of a delivery makes it redeliver as delivery 1. Let the running call age first.
    time.sleep(2)
    queued = [assert_202(stack.async_call("echo", body=b"queued-%d" % i)) for i in range(3)]
    stack.nats.kill9()

    t = time.monotonic()
    r = stack.async_call("echo", body=b"while-down", timeout=30)
    assert r.status_code == 503, (r.status_code, r.text)
    assert time.monotonic() - t <= 5.0
    harness.wait_until(lambda: harness.http_status(stack.gw + "/readyz") == 503, 10,
                       desc="/readyz 503 while NATS is down")
    assert harness.http_status(stack.gw + "/healthz") == 200
    stack.nats.restart()
    t_restart = time.monotonic()

    accepted = []
    for i in range(5):
        r = stack.async_call("echo", body=b"right-after-%d" % i, timeout=30)
        assert r.status_code in (202, 503), (r.status_code, r.text)
        if r.status_code == 202:
            accepted.append(assert_202(r))
    harness.wait_until(lambda: harness.http_status(stack.gw + "/readyz") == 200, 30,
                       desc="gateway /readyz back to 200 by itself")
    gate.gate.set()
    left = 5 - (time.monotonic() - t_restart)
    if left > 0:
        time.sleep(left)  # the case's "5 more at t+N" schedule
    later = [assert_202(stack.async_call("echo", body=b"later-%d" % i)) for i in range(5)]
    all_ids = [gate_id] + queued + accepted + later
    wait_callbacks_for(stack, all_ids, 60)
    absence_window(2)
    exactly_once_each(stack, queued + accepted + later, "echo")
    assert stack.sink.count(gate_id) == 1
    assert stack.gateway.pid == gw_pid and stack.gateway.alive()
    assert stack.workers[0].pid == w_pid and stack.workers[0].alive()


# --------------------------------------------------------------------------------------------
# A14-A16: retries, dead letters, callback failures


RETRY_ENV = {"max_retry_attempts": "5", "initial_retry_wait": "1s", "max_retry_wait": "8s",
             "retry_http_codes": "429,502,503,504", "ack_wait": "1s", "max_inflight": "6"}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a14_retries_back_off_and_honour_retry_after(stack):
    """A14 (run concurrently, max_inflight 6, ack_wait 1 s so every back-off outlives the
    lease): (a) 429 x3 then 200 -> 4 attempts with gaps 1 s, 1-2 s, 2-4 s (documented
    exponential back-off with equal jitter, never below initial_retry_wait), one callback 200,
    X-Retry 3, X-Retry-Max 5; (b) 400 -> 1 attempt, 1 callback 400; (c) 503 + Retry-After: 5
    -> second attempt >= 5 s later; (d) Retry-After as an HTTP date ~6 s ahead -> honoured;
    (e) Retry-After: 0 -> floored at initial_retry_wait. Attempts never overlap."""
    stack.start(workers=1, fixtures=("status",), worker_env=RETRY_ENV)
    date = email.utils.formatdate(time.time() + 7, usegmt=True)
    calls = {
        "a": "status?fail=3&code=429",
        "b": "status?code=400",
        "c": "status?fail=1&code=503&retry_after=5",
        "d": "status?fail=1&code=503&retry_after=" + urllib.parse.quote(date),
        "e": "status?fail=1&code=503&retry_after=0",
    }
    keys = sorted(calls)
    rs = submit_many(stack, [(calls[k], b"body-" + k.encode(), None) for k in keys])
    ids = dict(zip(keys, (assert_202(r) for r in rs)))
    wait_callbacks_for(stack, ids.values(), 60)
    absence_window(3)
    att = {k: attempts_of(stack.ledger, ids[k], "status") for k in keys}
    cbs = {k: stack.sink.all(ids[k]) for k in keys}
    for k in keys:
        assert len(cbs[k]) == 1, (k, len(cbs[k]))
        assert_no_parallel_copies(att[k])
        assert all(e["body"] == b"body-" + k.encode() for e in att[k]), k

    def gaps(k):
        es = att[k]
        return [b["start_ts"] - a["end_ts"] for a, b in zip(es, es[1:])]

    # (a)
    assert len(att["a"]) == 4, [e["status"] for e in att["a"]]
    assert [e["status"] for e in att["a"]] == [429, 429, 429, 200]
    g = gaps("a")
    for n, (lo, hi) in enumerate([(1, 1), (1, 2), (2, 4)]):
        assert lo - 0.15 <= g[n] <= hi + 2.0, "gap %d = %.2fs, want %s..%ss (+latency): %r" % (
            n + 1, g[n], lo, hi, g)
    h = cbs["a"][0]["headers"]
    assert h.get("X-Function-Status") == "200", h
    assert (h.get("X-Retry"), h.get("X-Retry-Max")) == ("3", "5"), h
    # (b)
    assert len(att["b"]) == 1
    h = cbs["b"][0]["headers"]
    assert h.get("X-Function-Status") == "400" and cbs["b"][0]["body"] == b"code 400", h
    assert (h.get("X-Retry"), h.get("X-Retry-Max")) == ("0", "5"), h
    # (c)
    assert len(att["c"]) == 2 and att["c"][1]["status"] == 200
    assert 5 - 0.1 <= gaps("c")[0] <= 5 + 2.5, gaps("c")
    assert cbs["c"][0]["headers"].get("X-Retry") == "1"
    # (d) HTTP date: whole-second resolution, so at least ~4 s (vs. 1 s without it)
    assert len(att["d"]) == 2 and att["d"][1]["status"] == 200
    assert 4.0 <= gaps("d")[0] <= 8 + 2.5, gaps("d")
    # (e)
    assert len(att["e"]) == 2 and att["e"][1]["status"] == 200
    assert 1 - 0.15 <= gaps("e")[0] <= 1 + 2.0, gaps("e")
    for k in "cde":
        assert cbs[k][0]["headers"].get("X-Function-Status") == "200", k
    wait_queue_drained(stack.nats, 15)


@pytest.mark.timeout(120)
def test_a15_exhausted_call_is_dead_lettered_with_everything(stack):
    """A15: max_retry_attempts=2 and a function that always answers 503: 3 attempts, one final
    callback 503 with X-Retry == X-Retry-Max == 2, a copy in stream faas-request-dlq with the
    original function, path, query, headers, body, call id, last status and attempt count,
    queue_worker_dead_letters_total = 1, nothing left in the work queue. The copy can be
    re-driven by publishing it back (with a fresh Nats-Msg-Id)."""
    env = dict(RETRY_ENV, max_retry_attempts="2", max_inflight="1")
    stack.start(workers=1, fixtures=("status",), worker_env=env)
    before = worker_metric(stack.workers[0], "queue_worker_dead_letters_total")
    r = stack.async_call("status/sub/path?code=503&k=v", body=b"payload-1",
                         headers={"X-Custom": "dlq-check", "Content-Type": "text/plain"})
    cid = assert_202(r)
    [cb] = stack.sink.wait_for(1, 60, call_id=cid)
    h = cb["headers"]
    assert h.get("X-Function-Status") == "503" and cb["body"] == b"code 503", h
    assert h.get("X-Retry") == h.get("X-Retry-Max") == "2", h
    harness.wait_until(lambda: stream_messages_count(stack.nats, DLQ) >= 1, 15,
                       desc="a message in %s" % DLQ)
    absence_window(2)
    assert len(attempts_of(stack.ledger, cid, "status")) == 3
    assert stack.sink.count(cid) == 1
    msgs = read_stream(stack.nats, DLQ)
    assert len(msgs) == 1, [m.headers for m in msgs]
    m = msgs[0]
    assert m.data == b"payload-1"
    assert m.header("Faas-Dead-Reason"), m.headers
    assert m.header("Faas-Last-Status") == "503", m.headers
    assert m.header("Faas-Attempts") == "3", m.headers
    assert m.header("Faas-Call-Id") == cid, m.headers
    assert m.header("Nats-Msg-Id") is None, m.headers
    assert m.header("Faas-Function") == "status"
    assert m.header("Faas-Path") == "/sub/path"
    assert m.header("Faas-Query") == "code=503&k=v"
    assert m.header("X-Custom") == "dlq-check"
    assert m.header("Content-Type") == "text/plain"
    assert m.header("Faas-Callback-Url") == stack.sink.url
    after = worker_metric(stack.workers[0], "queue_worker_dead_letters_total")
    assert after - before == 1, (before, after)
    wait_queue_drained(stack.nats, 15)

    # re-drive: same message, function fixed (query), new de-duplication id
    hdrs = {k: v for k, v in m.headers.items()
            if k not in ("Faas-Dead-Reason", "Faas-Last-Status", "Faas-Attempts", "Faas-Call-Id")}
    hdrs["Faas-Query"] = "code=200"
    hdrs["Nats-Msg-Id"] = cid + "-redrive"
    ack = js_publish_raw(stack.nats, "faas-request", m.data, hdrs)
    assert "seq" in ack, ack
    [cb2] = stack.sink.wait_for(1, 30, call_id=cid + "-redrive")
    assert cb2["headers"].get("X-Function-Status") == "200", cb2["headers"]
    [e] = stack.ledger.wait_for(1, 10, function="status", call_id=cid + "-redrive")
    assert e["body"] == b"payload-1" and e["headers"].get("X-Custom") == "dlq-check"
    assert e["path"] == "/sub/path"


@pytest.mark.timeout(120)
def test_a16_callback_failures_logged_counted_bounded_and_bad_url_400(stack):
    """A16: (a) callback to a closed port and (b) to a receiver answering 500: bounded attempts
    (callback_max_attempts=2, back-off >= 1 s), one log line per failure naming call id and
    URL, queue_worker_callback_failures_total grows, the function is not re-run, the message
    is acked. (c) an unparsable X-Callback-Url -> 400 at submit, nothing enqueued."""
    stack.start(workers=1, fixtures=("echo",),
                worker_env={"callback_max_attempts": "2", "max_inflight": "2"})
    w = stack.workers[0]
    harness.wait_until(lambda: stack.nats.stream_state("faas-request") is not None, 15,
                       desc="stream created")
    before = worker_metric(w, "queue_worker_callback_failures_total")
    closed = "http://127.0.0.1:1/cb"
    ida = assert_202(stack.async_call("echo", body=b"x", callback=closed))
    idb = assert_202(stack.async_call("echo", body=b"y", callback=stack.sink.url + "?status=500"))

    seq = stack.stream_last_seq()
    r = stack.async_call("echo", body=b"z", callback="::not a url")
    assert r.status_code == 400, (r.status_code, r.text)

    got = stack.sink.wait_for(2, 30, call_id=idb)
    assert got[1]["mono"] - got[0]["mono"] >= 0.9, "callback retried without back-off"
    harness.wait_until(lambda: [ln for ln in w.log_lines_with(ida) if closed in ln], 30,
                       desc="a log line with the call id and the closed callback URL")
    harness.wait_until(
        lambda: worker_metric(w, "queue_worker_callback_failures_total") - before >= 2, 30,
        desc="callback failure counter +2")
    absence_window(4)  # beyond the 2nd back-off: a 3rd attempt would show here
    assert stack.sink.count(idb) == 2, "callback attempts not bounded by callback_max_attempts"
    for cid, url in ((ida, closed), (idb, stack.sink.url)):
        lines = [ln for ln in w.log_lines_with(cid) if url in ln]
        assert 1 <= len(lines) <= 3, (cid, lines)
        assert stack.ledger.count("echo", cid) == 1, "function re-run after a callback failure"
    assert stack.stream_last_seq() == seq, "the 400 enqueued something"
    wait_queue_drained(stack.nats, 15)
    assert w.alive()


# --------------------------------------------------------------------------------------------
# A17: head-of-line blocking


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a17_shared_queue_is_fifo_separate_queue_is_not_blocked(stack):
    """A17: with one shared queue (1 worker, max_inflight 1) a fast call waits behind 5 slow
    ones (documented FIFO). A separate queue is a second gateway + worker pair configured with
    faas_nats_channel=fast and its own consumer (faas_nats_queue_group) on the same
    nats-server: echo through it calls back in < 2 s while the slow queue is still busy.

    Per-function queue routing by annotation (com.openfaas.queue) is NOT implemented: the
    gateway publishes every call to the one stream named by faas_nats_channel (it is an
    OpenFaaS Pro feature; see docs/behaviour.md)."""
    slow = 2
    stack.start(workers=1, fixtures=("sleep", "echo"))

    # shared queue: FIFO
    t0 = time.monotonic()
    sids = [assert_202(stack.async_call("sleep?s=%d&n=%d" % (slow, i))) for i in range(5)]
    harness.wait_until(lambda: time.monotonic() - t0 >= 1.0, 5)
    fid = assert_202(stack.async_call("echo", body=b"fast"))
    wait_callbacks_for(stack, sids + [fid], 60)
    fast_cb = stack.sink.all(fid)[0]["mono"]
    assert fast_cb - t0 >= 5 * slow - 1, "echo overtook the FIFO backlog (%.1fs)" % (
        fast_cb - t0)
    assert all(stack.sink.all(s)[0]["mono"] <= fast_cb for s in sids)

    # separate queue
    gw_fast = start_gateway(stack, "gateway-fast", faas_nats_channel="fast")
    start_worker(stack, "worker-fast", gateway=gw_fast, faas_nats_channel="fast",
                 faas_nats_queue_group="fast-workers")
    # warm-up: a running pair, not its start-up, is what the case measures
    r = requests.post(gw_fast.url + "/async-function/echo", data=b"warm-up", timeout=10,
                      headers={"X-Callback-Url": stack.sink.url})
    stack.sink.wait_for(1, 20, call_id=assert_202(r))
    t0 = time.monotonic()
    sids2 = [assert_202(stack.async_call("sleep?s=%d&m=%d" % (slow, i))) for i in range(5)]
    harness.wait_until(lambda: time.monotonic() - t0 >= 1.0, 5)
    t_fast = time.monotonic()
    r = requests.post(gw_fast.url + "/async-function/echo", data=b"fast-2", timeout=10,
                      headers={"X-Callback-Url": stack.sink.url})
    fid2 = assert_202(r)
    [cb] = stack.sink.wait_for(1, 10, call_id=fid2)
    assert cb["mono"] - t_fast < 2.0, "separate queue echo took %.2fs" % (cb["mono"] - t_fast)
    assert cb["body"] == b"fast-2"
    done_slow = sum(1 for s in sids2 if stack.sink.count(s))
    assert done_slow < 5, "slow queue was already drained; the case did not bite"
    assert stack.nats.stream_state("fast") is not None, "no separate stream 'fast'"
    assert stack.nats.stream_last_seq("fast") == 2
    assert stack.stream_last_seq() == 11  # the slow calls never went through "fast"
