"""Issue 3 fault tests: crashes, broker restarts, load, idempotency, limits, shutdown, poison.

Real nats-server -js, real gateway/queue-worker binaries, Python fixture functions and SINK.
"""

import hashlib
import os
import signal
import time
import uuid

import pytest

import harness
from delivery import (DLQ, STREAM, GateFunction, absence_window, add_function, assert_202,
                      exactly_once_each, attempts_of, holder_of, js_publish_raw, read_stream,
                      stream_messages_count, submit_many, wait_callbacks_for, wait_exit,
                      wait_queue_drained, worker_metric)


@pytest.mark.timeout(120)
def test_worker_kill9_mid_call_runs_again_elsewhere_one_callback(stack):
    """kill -9 of the worker running a call (ack_wait 1 s, 2 workers): the lease expires, the
    other worker runs it again and completes it; exactly one callback; other queued calls are
    not lost. (The killed run may still finish at the function: at-least-once.)"""
    stack.start(workers=2, fixtures=("sleep", "echo"),
                worker_env={"ack_wait": "1s", "max_retry_attempts": "2"})
    cid = assert_202(stack.async_call("sleep?s=4", body=b"long"))
    victim = holder_of(stack.workers, cid)
    harness.wait_until(lambda: stack.fns["sleep"].inflight >= 1, 20, desc="sleep running")
    others = [assert_202(stack.async_call("echo", body=b"e-%d" % i)) for i in range(4)]
    t_kill = time.monotonic()
    t_kill_wall = time.time()
    victim.kill9()
    survivor = [w for w in stack.workers if w is not victim][0]

    [cb] = stack.sink.wait_for(1, 40, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    assert cb["body"] == b"slept 4"
    wait_callbacks_for(stack, others, 30)
    stack.ledger.wait_for(2, 20, function="sleep", call_id=cid)
    absence_window(3)
    runs = attempts_of(stack.ledger, cid, "sleep")
    assert len(runs) == 2, [(e["start_ts"], e["end_ts"]) for e in runs]
    rerun_delay = runs[1]["start_ts"] - t_kill_wall
    assert 0 <= rerun_delay <= 10, "re-run %.1fs after the kill (ack_wait 1 s)" % rerun_delay
    assert stack.sink.count(cid) == 1, "more than one callback"
    exactly_once_each(stack, others, "echo")
    assert cid in survivor.log_text("stdout")
    assert survivor.alive()
    assert cb["mono"] > t_kill


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_nats_kill9_restart_with_200_queued_all_complete_once(stack):
    """200 calls queued behind a blocked function (2 workers x max_inflight 2, so 4 in
    flight), then nats-server is killed -9 and restarted on the same port and store. The
    stream still holds them; after the gate opens every one of the 200 accepted calls runs
    and calls back exactly once, with gateway and workers reconnecting by themselves."""
    gate = add_function(stack, GateFunction(stack.ledger))
    stack.start(workers=2, fixtures=("echo",),
                worker_env={"max_inflight": "2", "ack_wait": "30s", "max_retry_attempts": "2"},
                gateway_env={"nats_publish_timeout": "3s"})
    pids = [stack.gateway.pid] + [w.pid for w in stack.workers]
    n = 200
    rs = submit_many(stack, [("gate", b"n-%d" % i, None) for i in range(n)], threads=8)
    ids = [assert_202(r) for r in rs]
    harness.wait_until(lambda: gate.started >= 4, 30, desc="4 calls in flight")
    stored = stream_messages_count(stack.nats, STREAM)
    assert stored == n, "stream holds %d of %d" % (stored, n)
    # Let the in-flight calls run a while before the crash: nats-server 2.9 writes a file
    # consumer's delivery state asynchronously, so a kill -9 within ~0.1 s of a delivery
    # forgets it and the broker redelivers the message as delivery 1 (see the report).
    absence_window(2)

    stack.nats.kill9()
    stack.nats.restart()
    assert stream_messages_count(stack.nats, STREAM) == n, "queued calls lost in the crash"
    harness.wait_until(lambda: harness.http_status(stack.gw + "/readyz") == 200, 30,
                       desc="gateway reconnected")
    gate.gate.set()
    wait_callbacks_for(stack, ids, 120)
    post = assert_202(stack.async_call("echo", body=b"after"))
    stack.sink.wait_for(1, 30, call_id=post)
    absence_window(3)
    exactly_once_each(stack, ids, "gate")
    got = sorted(e["body"] for e in stack.ledger.entries("gate"))
    assert got == sorted(b"n-%d" % i for i in range(n))
    assert [stack.gateway.pid] + [w.pid for w in stack.workers] == pids
    assert stack.gateway.alive() and all(w.alive() for w in stack.workers)
    wait_queue_drained(stack.nats, 20)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_1000_calls_3_workers_each_exactly_once(stack):
    """1,000 calls, 3 workers x max_inflight 20, fast function, ack_wait 3 s (so buffering
    fetched work past its lease would show as duplicates): every id executes exactly once and
    calls back exactly once."""
    stack.start(workers=3, fixtures=("echo",),
                worker_env={"max_inflight": "20", "ack_wait": "3s", "log_level": "info"},
                gateway_env={"log_level": "info"})
    n = 1000
    rs = submit_many(stack, [("echo", b"c-%d" % i, None) for i in range(n)], threads=16)
    ids = [assert_202(r) for r in rs]
    wait_callbacks_for(stack, ids, 180)
    absence_window(5)
    exactly_once_each(stack, ids, "echo")
    assert stack.sink.count() == n
    by_id = {r["call_id"]: r for r in stack.sink.all()}
    for i, cid in enumerate(ids):
        assert by_id[cid]["body"] == b"c-%d" % i
        assert by_id[cid]["headers"].get("X-Function-Status") == "200"
    assert all(w.alive() for w in stack.workers)
    wait_queue_drained(stack.nats, 30)


@pytest.mark.timeout(90)
def test_idempotent_submission_same_call_id(stack):
    """The same client X-Call-Id submitted twice within the de-duplication window (and again
    after the first run finished): every submission 202 with that id, one stored message, one
    execution, one callback."""
    stack.start(workers=1, fixtures=("echo",))
    harness.wait_until(lambda: stack.nats.stream_state(STREAM) is not None, 15,
                       desc="stream created")
    seq = stack.stream_last_seq()
    cid = "idem-" + uuid.uuid4().hex
    for _ in range(2):
        r = stack.async_call("echo", body=b"once", headers={"X-Call-Id": cid})
        assert assert_202(r) == cid
    stack.sink.wait_for(1, 30, call_id=cid)
    r = stack.async_call("echo", body=b"once", headers={"X-Call-Id": cid})
    assert assert_202(r) == cid
    absence_window(2.5)
    assert stack.stream_last_seq() == seq + 1, "duplicate stored"
    assert stack.ledger.count("echo", cid) == 1
    assert stack.sink.count(cid) == 1
    other = assert_202(stack.async_call("echo", body=b"control"))  # positive control
    stack.sink.wait_for(1, 30, call_id=other)
    assert stack.stream_last_seq() == seq + 2


@pytest.mark.timeout(90)
def test_body_limit_boundary(stack):
    """max_body_bytes=200000: limit+1 -> 413 naming the limit, nothing queued; exactly the
    limit -> 202, byte-identical (sha256) at the function and in the callback."""
    limit = 200000
    stack.start(workers=1, fixtures=("echo",), gateway_env={"max_body_bytes": limit},
                worker_env={"max_body_bytes": limit})
    harness.wait_until(lambda: stack.nats.stream_state(STREAM) is not None, 15,
                       desc="stream created")
    seq = stack.stream_last_seq()
    r = stack.async_call("echo", body=os.urandom(limit + 1), timeout=30)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert str(limit) in r.text, r.text[:300]
    assert stack.stream_last_seq() == seq
    body = os.urandom(limit)
    sha = hashlib.sha256(body).hexdigest()
    cid = assert_202(stack.async_call("echo", body=body, timeout=30))
    [e] = stack.ledger.wait_for(1, 30, function="echo", call_id=cid)
    assert hashlib.sha256(e["body"]).hexdigest() == sha
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["sha256"] == sha
    assert stack.stream_last_seq() == seq + 1


@pytest.mark.timeout(90)
def test_sigterm_worker_finishes_inflight_call_and_exits_0(stack):
    """SIGTERM while a 3 s call runs (drain_timeout 10 s): the call finishes, its callback is
    posted before the worker exits, exit code 0, one execution."""
    stack.start(workers=1, fixtures=("sleep", "echo"), worker_env={"drain_timeout": "10s"})
    w = stack.workers[0]
    cid = assert_202(stack.async_call("sleep?s=3", body=b"x"))
    harness.wait_until(lambda: stack.fns["sleep"].inflight >= 1, 20, desc="call running")
    t = time.monotonic()
    w.signal(signal.SIGTERM)
    late = assert_202(stack.async_call("echo", body=b"after-sigterm"))
    rc, waited = wait_exit(w, 25)
    assert rc == 0, "worker exit code %r after SIGTERM" % (rc,)
    exited = t + waited
    cbs = stack.sink.all(cid)
    assert len(cbs) == 1, "callback not posted before exit"
    assert cbs[0]["mono"] <= exited
    assert cbs[0]["headers"].get("X-Function-Status") == "200"
    assert stack.ledger.count("sleep", cid) == 1
    # a draining worker fetches nothing new: the late call is still queued, not run
    assert stack.ledger.count("echo", late) == 0 and stack.sink.count(late) == 0
    assert stream_messages_count(stack.nats, STREAM) == 1
    stack.add_worker()  # ...and a new replica runs it
    stack.sink.wait_for(1, 30, call_id=late)
    absence_window(1)
    assert stack.ledger.count("echo", late) == 1 and stack.sink.count(late) == 1


@pytest.mark.timeout(90)
def test_sigterm_worker_short_drain_hands_call_back_at_once(stack):
    """SIGTERM with drain_timeout 1 s while a 5 s call runs (2 workers, ack_wait 30 s): the
    worker exits 0 within ~2 s, the call is NAK'd and re-run by the other worker at once
    (not after ack_wait), exactly one callback."""
    stack.start(workers=2, fixtures=("sleep",),
                worker_env={"drain_timeout": "1s", "ack_wait": "30s",
                            "max_retry_attempts": "2"})
    cid = assert_202(stack.async_call("sleep?s=5", body=b"x"))
    victim = holder_of(stack.workers, cid)
    harness.wait_until(lambda: stack.fns["sleep"].inflight >= 1, 20, desc="call running")
    t_wall = time.time()
    victim.signal(signal.SIGTERM)
    rc, waited = wait_exit(victim, 15)
    assert rc == 0, "exit code %r" % (rc,)
    assert waited <= 3.5, "worker took %.1fs to exit with drain_timeout 1s" % waited
    [cb] = stack.sink.wait_for(1, 20, call_id=cid)  # << ack_wait 30 s
    assert cb["headers"].get("X-Function-Status") == "200", cb["headers"]
    runs = stack.ledger.wait_for(2, 15, function="sleep", call_id=cid)
    runs = sorted(runs, key=lambda e: e["start_ts"])
    assert runs[1]["start_ts"] - t_wall <= 6, "re-run %.1fs after SIGTERM" % (
        runs[1]["start_ts"] - t_wall)
    absence_window(2)
    assert stack.sink.count(cid) == 1


@pytest.mark.timeout(60)
def test_sigterm_gateway_exits_0(stack):
    stack.start(workers=0, fixtures=("echo",))
    assert_202(stack.async_call("echo", body=b"x"))
    stack.gateway.signal(signal.SIGTERM)
    rc, _ = wait_exit(stack.gateway, 15)
    assert rc == 0, "gateway exit code %r after SIGTERM" % (rc,)


@pytest.mark.timeout(90)
def test_worker_exits_nonzero_when_nats_stays_down(stack):
    """faas_max_reconnect=3, faas_reconnect_delay=200ms: NATS killed and not restarted -> the
    worker exits with a non-zero code (so Kubernetes restarts it) instead of idling."""
    stack.start(workers=1, fixtures=("echo",),
                worker_env={"faas_max_reconnect": "3", "faas_reconnect_delay": "200ms"})
    w = stack.workers[0]
    stack.nats.kill9()
    rc, waited = wait_exit(w, 45)
    assert rc is not None, "worker still running 45 s after NATS went away"
    assert rc > 0, "worker exit code %r (want a non-zero exit, not a signal)" % (rc,)


@pytest.mark.timeout(90)
def test_poison_messages_are_dead_lettered_and_worker_carries_on(stack):
    """Undecodable messages published straight to faas-request (no Faas-Version, an unknown
    version, no headers at all): the worker stays up, each lands in faas-request-dlq with a
    reason and its body, the work queue empties, the dead-letter counter grows and the next
    normal call completes."""
    stack.start(workers=1, fixtures=("echo",))
    w = stack.workers[0]
    harness.wait_until(lambda: stack.nats.stream_state(STREAM) is not None, 15,
                       desc="stream created")
    before = worker_metric(w, "queue_worker_dead_letters_total")
    now_ns = str(time.time_ns())
    base = {"Faas-Function": "echo", "Faas-Method": "POST", "Faas-Path": "",
            "Faas-Start-Time": now_ns, "Faas-Callback-Url": stack.sink.url}
    p1 = dict(base, **{"Nats-Msg-Id": "poison-1"})
    p2 = dict(base, **{"Nats-Msg-Id": "poison-2", "Faas-Version": "99"})
    for hdrs, body in ((p1, b"poison-body-1"), (p2, b"poison-body-2"), (None, b"garbage-3")):
        ack = js_publish_raw(stack.nats, STREAM, body, hdrs)
        assert ack.get("stream") == STREAM and "seq" in ack, ack
    harness.wait_until(lambda: stream_messages_count(stack.nats, DLQ) >= 3, 30,
                       desc="3 messages in %s" % DLQ)
    wait_queue_drained(stack.nats, 20)
    assert w.alive()
    msgs = read_stream(stack.nats, DLQ)
    assert sorted(m.data for m in msgs) == [b"garbage-3", b"poison-body-1", b"poison-body-2"]
    for m in msgs:
        assert m.header("Faas-Dead-Reason"), m.headers
        assert m.header("Nats-Msg-Id") is None, m.headers
    by_body = {m.data: m for m in msgs}
    assert by_body[b"poison-body-1"].header("Faas-Call-Id") == "poison-1"
    assert by_body[b"poison-body-2"].header("Faas-Call-Id") == "poison-2"
    harness.wait_until(
        lambda: worker_metric(w, "queue_worker_dead_letters_total") - before >= 3, 15,
        desc="dead-letter counter +3")
    assert stack.ledger.count() == 0, "an undecodable message reached the function"
    cid = assert_202(stack.async_call("echo", body=b"normal"))
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "200" and cb["body"] == b"normal"
    assert w.alive()
