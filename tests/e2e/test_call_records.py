"""Call records (issue 10): status by id, cancel, exactly one callback across replicas, delayed
calls, maximum age, dead-letter re-drive.

Real nats-server -js, the real gateway and queue-worker binaries, Python fixture functions and
the SINK (harness.py). Each test asserts on what a user sees: HTTP answers of the gateway, the
callbacks the SINK received, the executions the functions recorded (the ledger), and the
records as GET /async-calls/<id> returns them.
"""

import datetime
import signal
import time

import pytest
import requests

import harness
from delivery import (DLQ, STREAM, GateFunction, absence_window, add_function, assert_202,
                      js_publish_raw, read_stream, start_worker, wait_queue_drained)


def record(stack, cid, gw=None):
    return requests.get((gw or stack.gw) + "/async-calls/" + cid, timeout=10)


def wait_state(stack, cid, states, timeout=20.0):
    """Polls the record until its state is one of `states`; returns it."""
    states = (states,) if isinstance(states, str) else tuple(states)
    seen = {}

    def ok():
        r = record(stack, cid)
        if r.status_code == 200:
            seen["rec"] = r.json()
            return r.json()["state"] in states
        seen["rec"] = (r.status_code, r.text)
        return False

    harness.wait_until(ok, timeout, desc="record %s in %s (last: %r)" % (cid, states, seen))
    return seen["rec"]


def wait_cancelled_and_posted(stack, cid, timeout=20.0):
    """A cancelled record is final at once; the callback's outcome is written after the
    receiver answered: wait for both."""
    box = {}

    def ok():
        box["rec"] = record(stack, cid).json()
        return box["rec"]["state"] == "cancelled" and box["rec"]["callback"] == "posted"

    harness.wait_until(ok, timeout, desc="record %s cancelled, callback posted (%r)" % (cid, box))
    return box["rec"]


def cancel(stack, cid, route="async-function"):
    return requests.delete(stack.gw + "/%s/%s" % (route, cid), timeout=10)


# ---------------------------------------------------------------------------------------------
# status by id


def test_status_from_202_to_succeeded(stack):
    """A record exists from the moment of the 202 (derived from the queued message while no
    worker runs), then follows the call: running, succeeded, with attempt, status, times and
    the callback's outcome. Unknown ids are 404."""
    stack.start(workers=0, fixtures=("echo",))
    r = stack.async_call("echo", body=b"hello")
    cid = assert_202(r)
    rec = record(stack, cid)
    assert rec.status_code == 200, (rec.status_code, rec.text)
    body = rec.json()
    assert rec.headers["Content-Type"] == "application/json"
    assert body["call_id"] == cid and body["state"] == "queued", body
    assert body["function"] == "echo" and body["attempt"] == 0
    assert body["callback"] == "pending"
    submitted = datetime.datetime.fromisoformat(body["submitted"].replace("Z", "+00:00"))
    assert abs(submitted.timestamp() - int(r.headers["X-Start-Time"]) / 1e9) < 0.01, body
    # a client-chosen id is a record key like any other
    r2 = stack.async_call("echo", body=b"x", headers={"X-Call-Id": "order-42.v1"})
    assert assert_202(r2) == "order-42.v1"
    assert record(stack, "order-42.v1").json()["state"] == "queued"

    stack.add_worker()
    stack.sink.wait_for(1, 20, call_id=cid)
    done = wait_state(stack, cid, "succeeded")
    assert done["attempt"] == 1 and done["status"] == 200, done
    assert done["callback"] == "posted" and done["callback_status"] == 200, done
    for k in ("started", "finished", "worker", "duration_seconds", "revision"):
        assert k in done, (k, done)
    assert done["finished"] >= done["started"] >= done["submitted"]
    assert "write_id" not in done and "lease_until" not in done, done
    [cb] = stack.sink.all(call_id=cid)
    assert cb["headers"].get("X-Call-State") == "succeeded", cb["headers"]

    for bad in ("no-such-call", "a..b", "x" * 200):
        r = record(stack, bad)
        assert r.status_code == 404, (bad, r.status_code, r.text)
    r = requests.post(stack.gw + "/async-calls/" + cid, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, DELETE"


def test_operator_listing_behind_system_auth(stack, tmp_path):
    """GET /system/async-calls lists records newest first, filtered by function and state,
    behind the /system Basic auth; bad filters are 400."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text("admin\n")
    (secrets / "basic-auth-password").write_text("s3cret\n")
    stack.start(workers=1, fixtures=("echo", "status"),
                gateway_env={"basic_auth": "true", "secret_mount_path": str(secrets)})
    ok = [assert_202(stack.async_call("echo", body=b"%d" % i)) for i in range(3)]
    bad = assert_202(stack.async_call("status?code=400"))
    stack.sink.wait_for(4, 30)
    wait_state(stack, bad, "failed")
    url = stack.gw + "/system/async-calls"
    assert requests.get(url, timeout=10).status_code == 401
    auth = ("admin", "s3cret")
    everything = requests.get(url, auth=auth, timeout=10)
    assert everything.status_code == 200, everything.text
    ids = [x["call_id"] for x in everything.json()]
    assert set(ids) == set(ok) | {bad}, ids
    assert ids[0] == bad, "newest first: %r" % ids
    failed = requests.get(url, params={"state": "failed"}, auth=auth, timeout=10).json()
    assert [x["call_id"] for x in failed] == [bad]
    echo = requests.get(url, params={"function": "echo", "limit": "2"}, auth=auth,
                        timeout=10).json()
    assert len(echo) == 2 and all(x["function"] == "echo" for x in echo), echo
    for q in ({"state": "lost"}, {"limit": "0"}, {"limit": "x"}, {"function": "\x00"},
              {"function": "echo\x00zzz"}, {"state": "queued\x00x"}, {"limit": "1\x00x"},
              {"function": "a b"}):
        r = requests.get(url, params=q, auth=auth, timeout=10)
        assert r.status_code == 400, (q, r.status_code, r.text)


# ---------------------------------------------------------------------------------------------
# cancel


def test_cancel_queued_call_never_runs(stack):
    """A queued call cancelled before any worker runs never runs; the record says cancelled;
    its callback says so (X-Call-State: cancelled, X-Function-Status: 499) once; a second
    cancel is 409; an unknown id is 404."""
    stack.start(workers=0, fixtures=("echo",))
    with_cb = assert_202(stack.async_call("echo", body=b"a"))
    without_cb = assert_202(stack.async_call("echo", body=b"b", callback=False))
    keep = assert_202(stack.async_call("echo", body=b"c"))
    r = cancel(stack, with_cb)
    assert r.status_code == 202, (r.status_code, r.text)
    assert r.json()["state"] == "cancelled"
    r = cancel(stack, without_cb, route="async-calls")
    assert r.status_code == 202, (r.status_code, r.text)
    assert cancel(stack, "no-such-call").status_code == 404
    stack.add_worker()
    [cb] = stack.sink.wait_for(1, 20, call_id=with_cb)
    assert cb["headers"].get("X-Call-State") == "cancelled", cb["headers"]
    assert cb["headers"].get("X-Function-Status") == "499", cb["headers"]
    stack.sink.wait_for(1, 20, call_id=keep)
    wait_queue_drained(stack.nats, 15)
    absence_window(1)
    assert stack.ledger.count("echo", with_cb) == 0
    assert stack.ledger.count("echo", without_cb) == 0
    assert stack.ledger.count("echo", keep) == 1
    assert stack.sink.count(with_cb) == 1 and stack.sink.count(without_cb) == 0
    wait_cancelled_and_posted(stack, with_cb)
    assert record(stack, without_cb).json()["state"] == "cancelled"
    again = cancel(stack, with_cb)
    assert again.status_code == 409, (again.status_code, again.text)
    assert again.json()["state"] == "cancelled"
    assert cancel(stack, keep).status_code == 409


@pytest.mark.timeout(90)
def test_cancel_running_call_aborts_within_a_second(stack):
    """A running call (a 30 s function) is aborted within a second of DELETE: the worker stops
    the invocation, the callback says cancelled, the record says cancelled, nothing runs it
    again."""
    stack.start(workers=1, fixtures=("sleep",))
    cid = assert_202(stack.async_call("sleep?s=30"))
    wait_state(stack, cid, "running")
    harness.wait_until(lambda: stack.workers[0].log_lines_with("invoking") != [], 10)
    t0 = time.monotonic()
    r = cancel(stack, cid, route="async-calls")
    assert r.status_code == 202, (r.status_code, r.text)
    [cb] = stack.sink.wait_for(1, 10, call_id=cid)
    took = cb["mono"] - t0
    assert took < 1.0, "cancel took %.3f s to reach the worker" % took
    assert cb["headers"].get("X-Call-State") == "cancelled"
    assert stack.workers[0].log_lines_with("invocation aborted"), stack.workers[0].tail()
    wait_cancelled_and_posted(stack, cid)
    wait_queue_drained(stack.nats, 15)
    assert stack.sink.count(cid) == 1


# ---------------------------------------------------------------------------------------------
# exactly one callback across replicas


def _holder(workers, cid, timeout=20):
    """The worker whose log shows it invoking `cid`."""
    box = []

    def find():
        for w in workers:
            if any("invoking" in ln for ln in w.log_lines_with(cid)):
                box.append(w)
                return True
        return False

    harness.wait_until(find, timeout, desc="a worker invoking %s" % cid)
    return box[0]


@pytest.mark.timeout(120)
def test_stalled_worker_loses_its_claim(stack):
    """A worker SIGSTOPped mid-call past ack_wait is replaced by another replica, which runs
    the call and posts the callback; when the first one resumes, its compare-and-set fails:
    it drops its result (no second callback, no ack)."""
    gate = add_function(stack, GateFunction(stack.ledger))
    stack.start(workers=2, fixtures=(), worker_env={"ack_wait": "2s"})
    cid = assert_202(stack.async_call("gate", body=b"once"))
    harness.wait_until(lambda: gate.started >= 1, 15)
    a = _holder(stack.workers, cid)
    b = [w for w in stack.workers if w is not a][0]
    a.signal(signal.SIGSTOP)
    try:
        # the lease (2 s) runs out; the other replica takes the call over
        harness.wait_until(lambda: gate.started >= 2, 20, desc="second replica started it")
        gate.gate.set()
        [cb] = stack.sink.wait_for(1, 20, call_id=cid)
    finally:
        a.signal(signal.SIGCONT)
    rec = wait_state(stack, cid, "succeeded")
    assert rec["attempt"] == 2, rec
    harness.wait_until(lambda: a.log_lines_with("lost the call") != [], 15,
                       desc="the resumed worker notices it lost the call")
    absence_window(3)
    assert stack.sink.count(cid) == 1, stack.sink.all(call_id=cid)
    assert b.log_lines_with("callback posted") and not a.log_lines_with("callback posted")
    wait_queue_drained(stack.nats, 15)
    assert record(stack, cid).json()["state"] == "succeeded"


@pytest.mark.timeout(120)
def test_worker_killed_between_answer_and_callback(stack):
    """The function answers while its worker is frozen; the worker is then killed before it
    could post the callback. Another replica runs the call again (the result was never
    delivered) and the receiver gets exactly one callback."""
    gate = add_function(stack, GateFunction(stack.ledger))
    stack.start(workers=2, fixtures=(), worker_env={"ack_wait": "2s"})
    cid = assert_202(stack.async_call("gate", body=b"once"))
    harness.wait_until(lambda: gate.started >= 1, 15)
    a = _holder(stack.workers, cid)
    a.signal(signal.SIGSTOP)
    gate.gate.set()  # the function answers into the frozen worker's socket
    harness.wait_until(lambda: stack.ledger.count("gate", cid) >= 1, 10)
    a.kill9()
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Call-State") == "succeeded"
    absence_window(3)
    assert stack.sink.count(cid) == 1
    rec = wait_state(stack, cid, "succeeded")
    assert rec["attempt"] == 2, rec


def test_copy_of_a_finished_call_is_acked_without_running(stack):
    """With records on the worker does not wait for the ack that follows the final record.
    If that ack is lost, the message comes back: the copy finds the final record and is
    acknowledged without a second invocation or callback. Emulated by storing the call's
    message again (without its Nats-Msg-Id, which the duplicate window would drop) after the
    call succeeded."""
    stack.start(workers=0, fixtures=("echo",))
    cid = assert_202(stack.async_call("echo", body=b"again"))
    [stored] = read_stream(stack.nats, STREAM)
    assert stored.subject.endswith("." + cid), (stored.subject, stored.headers)
    stack.add_worker()
    stack.sink.wait_for(1, 20, call_id=cid)
    done = wait_state(stack, cid, "succeeded")
    assert done["callback"] == "posted", done
    wait_queue_drained(stack.nats, 10)
    headers = {k: v for k, v in stored.headers.items() if k.lower() != "nats-msg-id"}
    ack = js_publish_raw(stack.nats, stored.subject, stored.data, headers)
    assert "seq" in ack and not ack.get("duplicate"), ack
    wait_queue_drained(stack.nats, 20)  # the copy was fetched and acknowledged
    absence_window(2)
    assert stack.ledger.count("echo", cid) == 1
    assert stack.sink.count(cid) == 1
    after = record(stack, cid).json()
    assert after["state"] == "succeeded" and after["revision"] == done["revision"], (done, after)


@pytest.mark.timeout(180)
def test_broker_killed_right_after_handing_out_calls(stack):
    """nats-server is killed (-9) within moments of handing calls to two workers and restarted:
    every call is called back exactly once and ends succeeded."""
    stack.start(workers=2, fixtures=("sleep",), worker_env={"ack_wait": "3s", "max_inflight": "4"})
    ids = [assert_202(stack.async_call("sleep?s=1", body=b"%d" % i)) for i in range(8)]
    harness.wait_until(lambda: sum(len(w.log_lines_with("invoking")) for w in stack.workers) >= 4,
                       15)
    stack.nats.kill9()
    time.sleep(0.5)
    stack.nats.restart()
    for cid in ids:
        stack.sink.wait_for(1, 90, call_id=cid)
    absence_window(5)  # past ack_wait: a second copy would have called back by now
    counts = {cid: stack.sink.count(cid) for cid in ids}
    assert all(n == 1 for n in counts.values()), counts
    for cid in ids:
        assert wait_state(stack, cid, "succeeded", 30)["callback"] == "posted"


# ---------------------------------------------------------------------------------------------
# delayed calls


@pytest.mark.timeout(90)
def test_delayed_calls(stack):
    """X-Delay-Seconds and X-Not-Before: the call is `scheduled` and runs no earlier than asked;
    delayed calls hold no worker slot (a ready call behind them runs at once with
    max_inflight=1) and are parked once, not polled; a delayed call can be cancelled."""
    stack.start(workers=1, fixtures=("echo",))
    t0 = time.time()
    d1 = stack.async_call("echo", body=b"later", headers={"X-Delay-Seconds": "3"})
    d1_id = assert_202(d1)
    assert "X-Not-Before" in d1.headers, d1.headers
    at = datetime.datetime.fromtimestamp(t0 + 4, tz=datetime.timezone.utc)
    d2_id = assert_202(stack.async_call(
        "echo", body=b"at", headers={"X-Not-Before": at.isoformat(timespec="milliseconds")}))
    d3_id = assert_202(stack.async_call("echo", body=b"never", headers={"X-Delay-Seconds": "3"}))
    assert record(stack, d1_id).json()["state"] == "scheduled"
    assert "not_before" in record(stack, d2_id).json()
    ready = assert_202(stack.async_call("echo", body=b"now"))
    [cb] = stack.sink.wait_for(1, 5, call_id=ready)
    assert cb["mono"] < time.monotonic() and time.time() - t0 < 2.5, "the ready call waited"
    assert cancel(stack, d3_id).status_code == 202
    [c3] = stack.sink.wait_for(1, 2.5, call_id=d3_id)  # at once, not when it would have run
    assert c3["headers"].get("X-Call-State") == "cancelled"
    [c1] = stack.sink.wait_for(1, 15, call_id=d1_id)
    [c2] = stack.sink.wait_for(1, 15, call_id=d2_id)
    e1 = stack.ledger.entries("echo", d1_id)[0]
    e2 = stack.ledger.entries("echo", d2_id)[0]
    assert e1["start_ts"] >= t0 + 3 - 0.05, (e1["start_ts"] - t0)
    assert e2["start_ts"] >= t0 + 4 - 0.05, (e2["start_ts"] - t0)
    assert stack.ledger.count("echo", d3_id) == 0 and stack.sink.count(d3_id) == 1
    w = stack.workers[0]
    assert len([ln for ln in w.log_lines_with(d1_id) if "scheduled" in ln]) == 1, \
        w.log_lines_with(d1_id)
    assert wait_state(stack, d1_id, "succeeded")["not_before"]


@pytest.mark.parametrize("headers", [
    {"X-Delay-Seconds": "-1"}, {"X-Delay-Seconds": "abc"}, {"X-Delay-Seconds": "2592001"},
    {"X-Not-Before": "tomorrow"}, {"X-Not-Before": "2026-13-01T00:00:00Z"},
    {"X-Not-Before": "2999-01-01T00:00:00Z"},
    {"X-Delay-Seconds": "1", "X-Not-Before": "2026-01-01T00:00:00Z"},
])
def test_bad_delay_is_400(stack, headers):
    stack.start(workers=0, fixtures=("echo",))
    seq = stack.stream_last_seq()
    r = stack.async_call("echo", body=b"x", headers=headers)
    assert r.status_code == 400, (headers, r.status_code, r.text)
    assert stack.stream_last_seq() == seq


# ---------------------------------------------------------------------------------------------
# maximum age


@pytest.mark.timeout(60)
def test_max_call_age_expires_old_calls(stack):
    """Calls older than max_call_age when a worker gets them are not run: dead-lettered with
    reason expired, the callback says so (X-Call-State: expired, status 410), the record says
    expired."""
    stack.start(workers=0, fixtures=("echo",))
    ids = [assert_202(stack.async_call("echo", body=b"%d" % i)) for i in range(3)]
    time.sleep(2.5)
    stack.add_worker(max_call_age="2s")
    fresh = assert_202(stack.async_call("echo", body=b"fresh"))
    for cid in ids:
        [cb] = stack.sink.wait_for(1, 20, call_id=cid)
        assert cb["headers"].get("X-Call-State") == "expired", cb["headers"]
        assert cb["headers"].get("X-Function-Status") == "410"
        assert wait_state(stack, cid, "expired")["reason"] == "expired"
    stack.sink.wait_for(1, 20, call_id=fresh)
    assert all(stack.ledger.count("echo", cid) == 0 for cid in ids)
    assert stack.ledger.count("echo", fresh) == 1
    dl = read_stream(stack.nats, DLQ)
    reasons = {m.header("Faas-Call-Id"): m.header("Faas-Dead-Reason") for m in dl}
    assert all(reasons.get(cid) == "expired" for cid in ids), reasons


# ---------------------------------------------------------------------------------------------
# dead letters


@pytest.mark.timeout(90)
def test_dead_letters_list_redrive_drop(stack):
    """GET /system/dead-letters lists reason, last status, attempts and age; a re-drive puts the
    call back under the same call id (it runs once more, the dead letter is gone, a second
    re-drive is 404); DELETE drops one."""
    stack.start(workers=1, fixtures=("status",))
    # fails once (500, no retries configured) then would succeed
    flaky = assert_202(stack.async_call("status?code=500&fail=1"))
    other = assert_202(stack.async_call("status?code=500"))
    for cid in (flaky, other):
        stack.sink.wait_for(1, 20, call_id=cid)
        wait_state(stack, cid, "dead-lettered")
    dl_url = stack.gw + "/system/dead-letters"
    listing = requests.get(dl_url, timeout=10)
    assert listing.status_code == 200, listing.text
    by_id = {x["call_id"]: x for x in listing.json()}
    assert set(by_id) == {flaky, other}, by_id
    entry = by_id[flaky]
    assert entry["reason"] == "retries exhausted" and entry["last_status"] == 500, entry
    assert entry["attempts"] == 1 and entry["age_seconds"] >= 0 and entry["function"] == "status"

    r = requests.post(dl_url + "/" + flaky + "/redrive", timeout=10)
    assert r.status_code == 202, (r.status_code, r.text)
    cbs = stack.sink.wait_for(2, 20, call_id=flaky)
    assert cbs[-1]["headers"].get("X-Function-Status") == "200", cbs[-1]["headers"]
    assert cbs[-1]["headers"].get("X-Call-Id") == flaky
    rec = wait_state(stack, flaky, "succeeded")
    assert rec["redriven"] == 1 and rec["attempt"] == 1, rec
    assert stack.ledger.count("status", flaky) == 2
    assert requests.post(dl_url + "/" + flaky + "/redrive", timeout=10).status_code == 404

    r = requests.delete(dl_url + "/" + other, timeout=10)
    assert r.status_code == 204, (r.status_code, r.text)
    assert requests.get(dl_url, timeout=10).json() == []
    assert requests.delete(dl_url + "/" + other, timeout=10).status_code == 404
    assert requests.get(dl_url + "/" + other + "/redrive", timeout=10).status_code == 405
    absence_window(1)
    assert stack.sink.count(other) == 1 and stack.ledger.count("status", other) == 1


# ---------------------------------------------------------------------------------------------
# records off


def test_records_off(stack):
    """call_records=false on both programs: calls run as before, the record routes say they
    are off."""
    stack.start(workers=1, fixtures=("echo",), worker_env={"call_records": "false"},
                gateway_env={"call_records": "false"})
    cid = assert_202(stack.async_call("echo", body=b"x"))
    stack.sink.wait_for(1, 20, call_id=cid)
    r = record(stack, cid)
    assert r.status_code == 404 and "call records are off" in r.text, r.text
    r = cancel(stack, cid)
    assert r.status_code == 405, (r.status_code, r.text)
    js = stack.nats.jsz()
    names = [s["name"] for a in js.get("account_details", []) for s in a.get("stream_detail", [])]
    assert "KV_faas-calls" not in names, names


@pytest.mark.timeout(60)
def test_client_ids_cannot_collide_with_internal_copies(stack):
    """The cancellation copy of a delayed call and a re-drive are published under message ids
    no client id can take: a client call "X.c" neither swallows X's cancellation nor is
    swallowed by it."""
    stack.start(workers=1, fixtures=("echo",))
    first = assert_202(stack.async_call("echo", body=b"a", headers={"X-Call-Id": "coll.c"}))
    stack.sink.wait_for(1, 20, call_id=first)
    cid = assert_202(stack.async_call("echo", body=b"b", headers={
        "X-Call-Id": "coll", "X-Delay-Seconds": "40"}))
    assert cancel(stack, cid).status_code == 202
    [cb] = stack.sink.wait_for(1, 5, call_id="coll")
    assert cb["headers"].get("X-Call-State") == "cancelled"
    other = assert_202(stack.async_call("echo", body=b"c", headers={"X-Call-Id": "coll2"}))
    stack.sink.wait_for(1, 20, call_id=other)
    d = assert_202(stack.async_call("echo", body=b"d", headers={
        "X-Call-Id": "late", "X-Delay-Seconds": "40"}))
    assert cancel(stack, d).status_code == 202
    stack.sink.wait_for(1, 5, call_id="late")
    after = assert_202(stack.async_call("echo", body=b"e", headers={"X-Call-Id": "late.c"}))
    [cb2] = stack.sink.wait_for(1, 20, call_id=after)
    assert cb2["headers"].get("X-Function-Status") == "200"
    assert stack.ledger.count("echo", "late.c") == 1


@pytest.mark.timeout(90)
def test_redriven_call_failing_again_keeps_its_call_id(stack):
    """A re-driven call that fails again is dead-lettered under its own call id: it can be
    re-driven again by that id, its callbacks keep the id, and no second record appears."""
    stack.start(workers=1, fixtures=("status",))
    cid = assert_202(stack.async_call("status?code=500&fail=2"))
    stack.sink.wait_for(1, 20, call_id=cid)
    wait_state(stack, cid, "dead-lettered")
    dl_url = stack.gw + "/system/dead-letters"
    assert requests.post(dl_url + "/" + cid + "/redrive", timeout=10).status_code == 202
    stack.sink.wait_for(2, 20, call_id=cid)
    harness.wait_until(lambda: [x["call_id"] for x in requests.get(dl_url, timeout=10).json()]
                       == [cid], 20, desc="dead-lettered again under its call id")
    rec = wait_state(stack, cid, "dead-lettered")
    assert rec["redriven"] == 1 and rec["status"] == 500, rec
    assert requests.post(dl_url + "/" + cid + "/redrive", timeout=10).status_code == 202
    cbs = stack.sink.wait_for(3, 20, call_id=cid)
    assert cbs[-1]["headers"].get("X-Function-Status") == "200"
    assert wait_state(stack, cid, "succeeded")["redriven"] == 2
    listing = requests.get(stack.gw + "/system/async-calls", timeout=10).json()
    assert [x["call_id"] for x in listing] == [cid], listing
