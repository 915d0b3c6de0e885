"""Per-function queues and retry policies (issue 12, points 3 to 5), in static mode.

A function annotated com.openfaas.queue has its async calls stored in that queue's own stream
and served by a worker started for it (faas_nats_channel), so a backlog elsewhere never delays
it. OpenFaaS Pro's com.openfaas.retry.* annotations override the worker's retry settings for
that function: the gateway stamps them into the queued message. invocationCount comes from the
gateway's own counters. Real nats-server, gateway and workers; fixture functions record every
execution in the ledger.
"""

import time

import requests

import harness
from delivery import assert_202, read_stream, start_worker
from mininats import MiniNats


def hdr(msg, name):
    """First value of a NATS message header (mininats gives lists), None when absent."""
    v = msg.headers.get(name)
    return v[0] if v else None


def record(stack, cid):
    r = requests.get(stack.gw + "/async-calls/" + cid, timeout=10)
    return r.json() if r.status_code == 200 else None


def wait_state(stack, cid, state, timeout=30.0):
    harness.wait_until(lambda: (record(stack, cid) or {}).get("state") == state, timeout,
                       desc="record %s %s (last %r)" % (cid, state, record(stack, cid)))
    return record(stack, cid)


def test_named_queue_is_not_held_back_by_another_queues_backlog(stack):
    """100 one-second calls wait in the default queue (one worker, one slot: a 100 s
    backlog). A function annotated com.openfaas.queue=fast-queue goes to its own stream; the
    worker of that queue posts its callback within 2 s. The same function without the
    annotation (a second name) waits behind the backlog."""
    stack.add_fixture_function("echo", name="fast")
    stack.add_fixture_function("echo", name="stuck")
    stack.annotations = {"fast": {"com.openfaas.queue": "fast-queue"}}
    stack.start(workers=1, fixtures=("sleep",))
    start_worker(stack, "worker-fast", faas_nats_channel="fast-queue",
                 dead_letter_stream="fast-queue-dlq")
    backlog = [assert_202(stack.async_call("sleep?s=1")) for _ in range(100)]
    harness.wait_until(lambda: len(stack.ledger.entries(function="sleep")) >= 1, 20,
                       desc="the backlog is being worked on")

    t0 = time.time()
    fast = assert_202(stack.async_call("fast", body=b"quick"))
    stuck = assert_202(stack.async_call("stuck", body=b"behind"))
    [cb] = stack.sink.wait_for(1, 2.0, call_id=fast)
    took = time.time() - t0
    assert took < 2.0, took
    assert cb["body"] == b"quick" and cb["headers"].get("X-Function-Status") == "200", cb
    # the fast call was stored in its queue's stream, not the default one
    subjects = [m.subject for m in read_stream(stack.nats, "faas-request")]
    assert not any(s.endswith("." + fast) for s in subjects), subjects
    assert stack.nats.stream_state("fast-queue") is not None
    assert stack.nats.stream_last_seq("fast-queue") == 1
    # the unannotated twin is still behind the backlog, its record says so
    assert stack.sink.all(call_id=stuck) == []
    assert record(stack, stuck)["state"] == "queued"
    assert len(stack.sink.all()) < 10  # the backlog is far from done
    assert backlog  # (it is torn down with the test)


def test_named_queue_record_cancel_and_redrive(stack):
    """A call waiting in a named queue has a record (derived from that stream), can be
    cancelled there, and a dead letter of that queue is re-driven back into it."""
    stack.add_fixture_function("status", name="flaky")
    stack.annotations = {"flaky": {"com.openfaas.queue": "side"}}
    stack.start(workers=0, fixtures=())
    waiting = assert_202(stack.async_call("flaky?code=200", callback=False))
    rec = record(stack, waiting)
    assert rec is not None and rec["state"] == "queued", rec
    r = requests.delete(stack.gw + "/async-calls/" + waiting, timeout=10)
    assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
    harness.wait_until(lambda: stack.nats.stream_state("side")["messages"] == 0, 10,
                       desc="the cancelled call removed from its queue's stream")

    cid = assert_202(stack.async_call("flaky?code=500&fail=1"))
    msgs = read_stream(stack.nats, "side")
    [m] = [m for m in msgs if m.subject == "side." + cid]
    assert hdr(m, "Faas-Queue") == "side", m.headers
    start_worker(stack, "worker-side", faas_nats_channel="side")
    stack.sink.wait_for(1, 20, call_id=cid)
    wait_state(stack, cid, "dead-lettered")
    dl = stack.gw + "/system/dead-letters"
    assert requests.post(dl + "/" + cid + "/redrive", timeout=10).status_code == 202
    cbs = stack.sink.wait_for(2, 20, call_id=cid)
    assert cbs[-1]["headers"].get("X-Function-Status") == "200", cbs[-1]["headers"]
    assert wait_state(stack, cid, "succeeded")["redriven"] == 1
    assert stack.nats.stream_last_seq("faas-request") in (0, None)


def test_function_queues_mapping_for_functions_without_annotations(stack):
    """function_queues (the DNS mode's way, a ConfigMap value) gives a queue to a function
    that has no annotation; an annotation wins over the mapping."""
    stack.add_fixture_function("echo", name="mapped")
    stack.add_fixture_function("echo", name="annotated")
    stack.annotations = {"annotated": {"com.openfaas.queue": "q-annotation"}}
    stack.start(workers=0, fixtures=(),
                gateway_env={"function_queues": "mapped=q-mapped, annotated=q-other"})
    a = assert_202(stack.async_call("mapped", callback=False))
    b = assert_202(stack.async_call("annotated", callback=False))
    assert [m.subject for m in read_stream(stack.nats, "q-mapped")] == ["q-mapped." + a]
    assert [m.subject for m in read_stream(stack.nats, "q-annotation")] == ["q-annotation." + b]
    # mapped queues get their streams up front (DNS mode knows no function list), but the
    # annotated function's call did not go there
    assert stack.nats.stream_state("q-other")["messages"] == 0


def test_bad_function_queues_setting_is_refused_at_start(stack, tmp_path):
    stack.start(workers=0, fixtures=("echo",), gateway=False)
    env = harness.base_env({"nats_url": stack.nats.url, "functions_file": stack.functions_file,
                            "function_queues": "echo=bad queue"})
    gw = harness.Gateway(stack.log_dir, env, name="gateway-bad")
    stack.registry.add(gw)
    gw.start()
    assert gw.wait_exit(10) == 2
    assert "function_queues" in gw.all_logs()


def test_reserved_queue_names_fall_back_to_the_default_queue(stack):
    """A queue annotation naming the dead-letter stream or a key-value / object store stream
    (the call records' KV_faas-calls among them) would turn that limits stream into a work
    queue: the annotation is ignored with a log line, the calls run from the default queue,
    and the dead-letter stream and the record bucket keep their settings."""
    names = {"to-dlq": "faas-request-dlq", "to-kv": "KV_faas-calls", "to-obj": "OBJ_files"}
    for fn in names:
        stack.add_fixture_function("echo", name=fn)
    stack.annotations = {fn: {"com.openfaas.queue": q} for fn, q in names.items()}
    stack.start(workers=1, fixtures=())
    ids = {fn: assert_202(stack.async_call(fn, body=fn.encode())) for fn in names}
    for fn, cid in ids.items():
        [cb] = stack.sink.wait_for(1, 20, call_id=cid)
        assert cb["body"] == fn.encode() and cb["headers"].get("X-Function-Status") == "200"
        assert wait_state(stack, cid, "succeeded")["function"].startswith(fn)
    logs = stack.gateway.all_logs()
    for fn, q in names.items():
        assert 'annotation com.openfaas.queue="%s" ignored' % q in logs, (fn, logs[-2000:])
    with MiniNats(stack.nats.port) as c:
        assert c.stream_info("faas-request-dlq")["config"]["retention"] == "limits"
        kv = c.stream_info("KV_faas-calls")["config"]
        assert kv["retention"] == "limits" and "$KV.faas-calls.>" in kv["subjects"], kv
        assert "OBJ_files" not in (c.stream_names() or [])
    assert stack.gateway.alive() and all(w.alive() for w in stack.workers)
    # a restart finds everything as it was (the old defect made this exit for good)
    stack.gateway.terminate()
    stack.gateway.start().wait_ready()
    assert_202(stack.async_call("to-dlq", body=b"again"))
    assert stack.gateway.alive()


def test_reserved_names_in_function_queues_are_refused_at_start(stack):
    stack.start(workers=0, fixtures=("echo",), gateway=False)
    for mapping in ("echo=faas-request-dlq", "echo=KV_faas-calls"):
        env = harness.base_env({"nats_url": stack.nats.url,
                                "functions_file": stack.functions_file,
                                "function_queues": mapping})
        gw = harness.Gateway(stack.log_dir, env, name="gateway-reserved")
        stack.registry.add(gw)
        gw.start()
        assert gw.wait_exit(10) == 2
        assert "is reserved" in gw.all_logs(), gw.all_logs()[-1000:]


def test_a_queue_the_server_cannot_give_is_refused_alone(stack):
    """A stream named like the queue already exists with other settings (someone's limits
    stream): that function's async calls get 503 with the reason, and only they do; the
    gateway stays ready and every other function's calls are stored and run."""
    stack.add_fixture_function("echo", name="clash")
    stack.add_fixture_function("echo", name="fine")
    stack.annotations = {"clash": {"com.openfaas.queue": "orders"},
                         "fine": {"com.openfaas.queue": "fine-queue"}}
    stack.start(workers=0, fixtures=("echo",), gateway=False)
    with MiniNats(stack.nats.port) as c:
        c.js("STREAM.CREATE.orders", {"name": "orders", "subjects": ["orders", "orders.>"],
                                      "retention": "limits", "storage": "file"})
    stack.start_gateway()
    stack.add_worker()
    start_worker(stack, "worker-fine", faas_nats_channel="fine-queue",
                 dead_letter_stream="faas-request-dlq")
    deadline = time.time() + 15
    while True:
        r = stack.async_call("clash", body=b"x")
        # never accepted: a 202 here would be a call stored where no worker looks
        assert r.status_code == 503, (r.status_code, r.text)
        if "retention" in r.text or time.time() > deadline:
            break
        time.sleep(0.3)
    assert "orders" in r.text and "retention" in r.text, r.text
    with MiniNats(stack.nats.port) as c:
        assert c.stream_info("orders")["state"]["messages"] == 0
    for fn in ("echo", "fine"):
        cid = assert_202(stack.async_call(fn, body=fn.encode()))
        [cb] = stack.sink.wait_for(1, 20, call_id=cid)
        assert cb["body"] == fn.encode()
    assert requests.get(stack.gw + "/healthz", timeout=5).status_code == 200
    assert "queue orders refused" in stack.gateway.all_logs()
    with MiniNats(stack.nats.port) as c:
        assert c.stream_info("orders")["config"]["retention"] == "limits"
    assert stack.gateway.alive()


def test_retry_annotations_override_the_worker_defaults(stack):
    """The worker retries nothing (max_retry_attempts=0, 418 not a retry code); a function
    annotated com.openfaas.retry.attempts=2, codes=418, min_wait=200ms, max_wait=400ms is
    tried 3 times with waits of 200-400 ms, and its callback says X-Retry-Max: 2. The same
    fixture under a name without annotations is tried once."""
    stack.add_fixture_function("status", name="picky")
    stack.add_fixture_function("status", name="plain")
    stack.annotations = {"picky": {"com.openfaas.retry.attempts": "2",
                                   "com.openfaas.retry.codes": "418, 429",
                                   "com.openfaas.retry.min_wait": "200ms",
                                   "com.openfaas.retry.max_wait": "400ms"}}
    stack.start(workers=0, fixtures=())
    picky = assert_202(stack.async_call("picky?code=418"))
    plain = assert_202(stack.async_call("plain?code=418"))
    # the policy travels in the message: the worker needs no lookup
    [m] = [m for m in read_stream(stack.nats, "faas-request") if m.subject.endswith(picky)]
    assert hdr(m, "Faas-Retry-Attempts") == "2", m.headers
    assert hdr(m, "Faas-Retry-Codes") == "418,429", m.headers
    assert hdr(m, "Faas-Retry-Min-Wait") == "200", m.headers
    assert hdr(m, "Faas-Retry-Max-Wait") == "400", m.headers
    [p] = [m for m in read_stream(stack.nats, "faas-request") if m.subject.endswith(plain)]
    assert not any(k.startswith("Faas-Retry") for k in p.headers), p.headers

    stack.add_worker()
    [cb] = stack.sink.wait_for(1, 20, call_id=picky)
    runs = stack.ledger.entries(function="picky", call_id=picky)
    assert len(runs) == 3, runs
    gaps = [runs[i + 1]["start_ts"] - runs[i]["end_ts"] for i in range(2)]
    assert all(0.15 < g < 1.5 for g in gaps), gaps
    assert cb["headers"].get("X-Retry-Max") == "2" and cb["headers"].get("X-Retry") == "2"
    assert cb["headers"].get("X-Function-Status") == "418"
    [cb2] = stack.sink.wait_for(1, 20, call_id=plain)
    assert len(stack.ledger.entries(function="plain", call_id=plain)) == 1
    assert cb2["headers"].get("X-Retry-Max") == "0"
    assert wait_state(stack, picky, "dead-lettered")["attempt"] == 3
    # the worker's attempts carry their number
    assert [r["headers"].get("X-Call-Attempt") for r in runs] == ["1", "2", "3"]


def test_invalid_retry_annotation_falls_back_with_a_log_line(stack):
    """An annotation that cannot be used is ignored (that field only) with a log line naming
    the function; the call still runs with the worker's defaults."""
    stack.add_fixture_function("status", name="odd")
    stack.annotations = {"odd": {"com.openfaas.retry.attempts": "many",
                                 "com.openfaas.retry.codes": "418",
                                 "com.openfaas.retry.min_wait": "soon",
                                 "com.openfaas.queue": "no/slashes"}}
    stack.start(workers=1, fixtures=())
    logs = stack.gateway.all_logs()
    for key in ("com.openfaas.retry.attempts", "com.openfaas.retry.min_wait",
                "com.openfaas.queue"):
        assert "annotation %s=" % key in logs and "odd.openfaas-fn" in logs, key
    cid = assert_202(stack.async_call("odd?code=418&fail=1"))
    # codes=418 was valid and kept; attempts fell back to the worker's 0 retries
    [cb] = stack.sink.wait_for(1, 20, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "418"
    assert len(stack.ledger.entries(function="odd", call_id=cid)) == 1
    [m] = [m for m in read_stream(stack.nats, "faas-request-dlq") if True]
    assert hdr(m, "Faas-Retry-Codes") == "418" and "Faas-Retry-Attempts" not in m.headers


def test_invocation_count_counts_each_call_once(stack):
    """/system/functions shows the gateway's own counts: 2 sync calls and 3 async calls are 5
    invocations (the worker's attempts through the gateway are not counted again), a retried
    async call counts once; describe shows the same number."""
    stack.worker_env = {}
    stack.start(workers=1, fixtures=("echo", "status"),
                worker_env={"max_retry_attempts": "1", "initial_retry_wait": "100ms"})
    for _ in range(2):
        assert stack.sync_call("echo", body=b"x").status_code == 200
    ids = [assert_202(stack.async_call("echo", body=b"y")) for _ in range(3)]
    retried = assert_202(stack.async_call("status?code=500"))
    for cid in ids + [retried]:
        stack.sink.wait_for(1, 20, call_id=cid)
    assert len(stack.ledger.entries(function="status", call_id=retried)) == 2
    listing = {f["name"]: f for f in requests.get(stack.gw + "/system/functions",
                                                  timeout=10).json()}
    assert listing["echo"]["invocationCount"] == 5, listing["echo"]
    assert listing["status"]["invocationCount"] == 1, listing["status"]
    one = requests.get(stack.gw + "/system/function/echo", timeout=10).json()
    assert one["invocationCount"] == 5, one
