"""A 3-node JetStream cluster (cluster.py) under broker faults, with steady async load.

Every scenario prints (run pytest with -s) and asserts its delivery report (loadgen.report):
accepted (202), lost, duplicate executions, duplicate callbacks, 5xx, 503'd-that-ran, slowest
answer. Wanted: every submission answered 202 or 5xx within 5 s (never a client timeout),
every 202 executed and called back exactly once, nothing else executed.

Workers use ack_wait 10 s here; after each scenario the test waits out ack_wait + margin so
late redeliveries (duplicates) would show.
"""

import os
import time
import uuid

import pytest
import requests

import harness
from cluster import CONSUMER, STREAM, NatsCluster, create_r3_stream, wait_healthy
from delivery import absence_window, assert_202
from loadgen import (AsyncLoad, assert_report, readyz_sampler, report, summarize_samples,
                     wait_all_called_back)
from mininats import MiniNats

pytestmark = pytest.mark.cluster

ACK_WAIT_S = 10
WORKER_ENV = {"ack_wait": "%ds" % ACK_WAIT_S, "max_inflight": "10", "log_level": "info"}
GATEWAY_ENV = {"log_level": "info"}
RATE = 20.0
ANSWER_LIMIT = 5.0


# ---------------------------------------------------------------------------------------------
# helpers


def start_cluster_stack(stack, workers=2, fixtures=("echo",), worker_env=None, gateway_env=None):
    wenv = dict(WORKER_ENV, **(worker_env or {}))
    genv = dict(GATEWAY_ENV, **(gateway_env or {}))
    stack.start(workers=workers, fixtures=fixtures, worker_env=wenv, gateway_env=genv)
    c = stack.nats_cluster
    assert "," in stack.gateway.env["nats_url"], stack.gateway.env["nats_url"]
    harness.wait_until(lambda: c.stream_detail(STREAM) is not None, 20, desc="stream created")
    assert_r3(c)
    c.wait_stream_current(STREAM, 30)
    return c


def assert_r3(c, name=STREAM):
    cfg_n, peers = c.stream_replicas(name)
    assert (cfg_n, peers) == (3, 3), (
        "stream %s: num_replicas=%r, raft peers=%r (want 3 and 3: stream_replicas=3 not "
        "applied?) %s" % (name, cfg_n, peers, c.describe(name)))


def timeline(load, c, events, duration):
    """Run events [(t, label, fn)] at load-relative times, then keep the load until
    `duration`; returns [(t, label, cluster description)]."""
    log = []
    for t, label, fn in sorted(events, key=lambda e: e[0]):
        delay = t - load.elapsed()
        if delay > 0:
            time.sleep(delay)
        t_start = load.elapsed()
        fn()
        log.append((round(t_start, 1), round(load.elapsed(), 1), label))
        print("  [t=%5.1fs..%5.1fs] %s -> %s" % (t_start, load.elapsed(), label, c.describe()))
    delay = duration - load.elapsed()
    if delay > 0:
        time.sleep(delay)
    load.stop()
    return log


def finish(stack, title, loads, function="echo", drain_timeout=90, extra=None,
           allow_dup_executions=False, allow_ran_non202=False):
    """Wait for every 202 to be called back, wait out ack_wait, report and assert."""
    records = []
    for ld in loads:
        records += ld.all()
    acc = [r["cid"] for r in records if r["status"] == 202]
    t = time.monotonic()
    missing = wait_all_called_back(stack.sink, acc, drain_timeout)
    waited = time.monotonic() - t
    absence_window(ACK_WAIT_S + 5)
    ex = dict(extra or {})
    ex["x_callbacks_wait"] = "%.1fs (%d still missing)" % (waited, len(missing))
    ex["x_processes"] = " ".join("%s:%s" % (p.name, "up" if p.alive() else "rc=%r" % p.returncode)
                                 for p in [stack.gateway] + stack.workers)
    bad_status = [r["call_id"] for r in stack.sink.all()
                  if r["headers"].get("X-Function-Status") != "200"]
    ex["x_callbacks_not_200"] = len(bad_status)
    rep = report(title, records, stack.ledger, stack.sink, function=function,
                 answer_limit=ANSWER_LIMIT, extra=ex)
    assert_report(rep, allow_dup_executions=allow_dup_executions,
                  allow_ran_non202=allow_ran_non202,
                  gateway_log=stack.gateway.log_text("stdout"))
    assert stack.gateway.alive() and all(w.alive() for w in stack.workers), ex["x_processes"]
    return rep


# ---------------------------------------------------------------------------------------------
# the fixture itself (nats-server only)


@pytest.mark.harness
@pytest.mark.timeout(150)
def test_cluster_fixture_kill_restart_stop_cont(registry, tmp_path, log_dir):
    """3 servers form cluster c1, an R3 stream created by hand survives kill -9 / restart /
    SIGSTOP / SIGCONT / SIGTERM of its leader, a new leader is found each time."""
    c = NatsCluster(str(tmp_path), log_dir, registry).start()
    assert c.urls.count("nats://127.0.0.1:") == 3 and c.urls.count(",") == 2
    assert c.meta_leader() in ("n1", "n2", "n3")
    r = create_r3_stream(c, "probe")
    assert r.get("config", {}).get("num_replicas") == 3, r
    with c.client() as m:
        for k in range(5):
            ack = m.js_publish("probe", b"m%d" % k, {"Nats-Msg-Id": "p%d" % k})
            assert ack.get("seq") == k + 1, ack
    li = c.wait_stream_leader("probe", 15)
    c.wait_stream_current("probe", 15)
    assert c.stream_replicas("probe") == (3, 3)
    assert c.stream_state("probe")["messages"] == 5

    c.kill9(li)
    l2 = c.wait_stream_leader("probe", 20, exclude=(li,))
    assert l2 != li
    with c.client() as m:
        assert m.js_publish("probe", b"m5", {"Nats-Msg-Id": "p5"}).get("seq") == 6
    c.restart(li)
    c.wait_stream_current("probe", 30)
    assert c.stream_state("probe")["messages"] == 6

    l3 = c.stream_leader("probe")
    c.sigstop(l3)
    try:
        l4 = c.wait_stream_leader("probe", 30, exclude=(l3,))
        assert l4 != l3
        with c.client() as m:
            assert m.js_publish("probe", b"m6", {"Nats-Msg-Id": "p6"}).get("seq") == 7
    finally:
        c.sigcont(l3)
    c.wait_stream_current("probe", 30)

    l5 = c.stream_leader("probe")
    rc = c.terminate(l5)
    assert rc in (0, 1), rc  # nats-server 2.9 exits 1 after a clean SIGTERM shutdown
    assert "Server Exiting" in c.nodes[l5].log_text("stderr")
    c.wait_stream_leader("probe", 20, exclude=(l5,))
    c.restart(l5)
    wait_healthy(c.nodes[l5], 30)
    c.wait_stream_current("probe", 30)
    with MiniNats(c.nodes[l5].port) as m:
        msgs = m.stream_messages("probe")
    assert [x.data for x in msgs] == [b"m%d" % k for k in range(7)]


# ---------------------------------------------------------------------------------------------
# smoke


@pytest.mark.timeout(90)
def test_cluster_comma_urls_and_replicas(cluster_stack):
    """Gateway and worker connect through the comma-separated list; faas-request and the
    consumer faas-workers have 3 replicas (so does every stream they created); one async call
    completes."""
    stack = cluster_stack
    stack.start(workers=1, fixtures=("echo",), worker_env=WORKER_ENV, gateway_env=GATEWAY_ENV)
    c = stack.nats_cluster
    assert stack.gateway.env["nats_url"] == c.urls and stack.workers[0].env["nats_url"] == c.urls
    harness.wait_until(lambda: c.consumer_detail(STREAM, CONSUMER) is not None, 20,
                       desc="consumer %s created" % CONSUMER)
    st = c.stream_detail(STREAM)
    print("\nstream %s config num_replicas=%r cluster=%r" % (
        STREAM, st["config"].get("num_replicas"), st.get("cluster")))
    assert_r3(c)
    cons = c.consumer_detail(STREAM, CONSUMER)
    cl = cons.get("cluster") or {}
    cpeers = len(cl.get("replicas") or []) + (1 if cl.get("leader") else 0)
    print("consumer %s config num_replicas=%r (0 = the stream's) raft peers=%d" % (
        CONSUMER, cons["config"].get("num_replicas"), cpeers))
    assert cons["config"].get("num_replicas") in (0, 3, None), cons["config"]
    assert cpeers == 3, "consumer %s has %d raft peers: %r" % (CONSUMER, cpeers, cl)
    for acct in c.jsz().get("account_details") or []:
        for s in acct.get("stream_detail") or []:
            print("stream %s num_replicas=%r" % (s["name"], s["config"].get("num_replicas")))
            assert s["config"].get("num_replicas") == 3, (s["name"], s["config"])
    cid = assert_202(stack.async_call("echo", body=b"hello cluster"))
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["body"] == b"hello cluster"
    assert cb["headers"].get("X-Function-Status") == "200"
    assert stack.ledger.count("echo", cid) == 1


# ---------------------------------------------------------------------------------------------
# scenarios under load


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_leader_kill9_under_load(cluster_stack):
    """20 calls/s for 50 s; kill -9 the leader of faas-request at 10 s, restart it at 25 s."""
    stack = cluster_stack
    c = start_cluster_stack(stack)
    leader = c.stream_leader(STREAM)
    print("\nstream leader before: %s; %s" % (c.nodes[leader].server_name, c.describe()))
    load = AsyncLoad(stack.gw, stack.sink.url, rate=RATE, timeout=10, name="kill9").start()
    rstop, samples, _ = readyz_sampler(stack.gw, 0.1)
    log = timeline(load, c, [
        (10, "kill -9 %s (stream leader)" % c.nodes[leader].server_name,
         lambda: c.kill9(leader)),
        (25, "restart %s" % c.nodes[leader].server_name, lambda: c.restart(leader)),
    ], duration=50)
    rstop.set()
    c.wait_stream_current(STREAM, 30)
    finish(stack, "a. leader kill -9 under load", [load],
           extra={"x_events": log, "x_readyz": summarize_samples(samples, load.t0),
                  "x_leader_after": c.describe()})


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_rolling_restart_while_draining(cluster_stack):
    """300 calls of sleep?s=0.2 queued with no worker running, then 2 workers (max_inflight 1:
    ~30 s of draining) start and the three servers are restarted one by one (SIGTERM, start,
    wait /healthz + stream current) while they drain; 5 calls/s of echo keep arriving."""
    stack = cluster_stack
    c = start_cluster_stack(stack, workers=0, fixtures=("sleep", "echo"),
                            worker_env={"max_inflight": "1"})
    queued = AsyncLoad(stack.gw, stack.sink.url, fn="sleep?s=0.2", rate=100, timeout=10,
                       name="queue").run_for(3.0)
    n_acc = len(queued.accepted_ids())
    assert n_acc == len(queued.all()) >= 290, "queueing: %d of %d accepted" % (
        n_acc, len(queued.all()))
    harness.wait_until(lambda: c.stream_state(STREAM)["messages"] == n_acc, 20,
                       desc="%d messages stored" % n_acc)
    c.wait_stream_current(STREAM, 30)
    print("\nqueued %d; %s" % (n_acc, c.describe()))
    for _ in range(2):
        stack.add_worker(max_inflight=1)
    trickle = AsyncLoad(stack.gw, stack.sink.url, fn="echo", rate=5, timeout=10,
                        name="trickle").start()
    steps = []
    order = [i for i in range(3) if i != c.stream_leader(STREAM)] + [c.stream_leader(STREAM)]
    t_workers = time.monotonic()
    for k, i in enumerate(order):  # at ~3 s, 11 s, 19 s of the ~30 s drain; the leader last
        delay = t_workers + 3 + 8 * k - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = c.nodes[i].server_name
        t0 = time.monotonic()
        left_before = c.stream_state(STREAM)["messages"]
        rc = c.terminate(i)
        t_down = time.monotonic() - t0
        c.restart(i)
        wait_healthy(c.nodes[i], 45)
        c.wait_stream_current(STREAM, 45)
        steps.append("t=%.1fs %s: SIGTERM rc=%r in %.1fs, healthy+current after %.1fs, "
                     "queue %d -> %d" % (t0 - t_workers, name, rc, t_down,
                                         time.monotonic() - t0, left_before,
                                         c.stream_state(STREAM)["messages"]))
        print("  " + steps[-1] + "; " + c.describe())
        # nats-server 2.9 exits 1 after a clean SIGTERM shutdown ("Server Exiting..")
        assert rc in (0, 1), "nats-server %s exit code %r after SIGTERM" % (name, rc)
    trickle.stop()
    finish(stack, "b. rolling restart while draining (300 x sleep 0.2s)", [queued],
           function="sleep", drain_timeout=120, extra={"x_steps": steps})
    finish_trickle = report("b'. 5/s echo submitted during the rolling restart", trickle.all(),
                            stack.ledger, stack.sink, function="echo",
                            answer_limit=ANSWER_LIMIT)
    assert_report(finish_trickle)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_leader_sigstop_15s_under_load(cluster_stack):
    """20 calls/s for 45 s; SIGSTOP the leader of faas-request at 10 s for 15 s, then SIGCONT."""
    stack = cluster_stack
    c = start_cluster_stack(stack)
    leader = c.stream_leader(STREAM)
    print("\nstream leader before: %s; %s" % (c.nodes[leader].server_name, c.describe()))
    load = AsyncLoad(stack.gw, stack.sink.url, rate=RATE, timeout=10, name="sigstop").start()
    rstop, samples, _ = readyz_sampler(stack.gw, 0.1)
    try:
        log = timeline(load, c, [
            (10, "SIGSTOP %s (stream leader)" % c.nodes[leader].server_name,
             lambda: c.sigstop(leader)),
            (25, "SIGCONT %s" % c.nodes[leader].server_name, lambda: c.sigcont(leader)),
        ], duration=45)
    finally:
        if c.nodes[leader].stopped:
            c.sigcont(leader)
    rstop.set()
    c.wait_stream_current(STREAM, 30)
    finish(stack, "c. leader SIGSTOP 15 s under load", [load],
           extra={"x_events": log, "x_readyz": summarize_samples(samples, load.t0),
                  "x_leader_after": c.describe()})


# ---------------------------------------------------------------------------------------------
# full store


def _store_limited_nats_args(tmp_path, max_file_store):
    conf = os.path.join(str(tmp_path), "nats-limited.conf")
    with open(conf, "w") as f:
        f.write("jetstream {\n  max_file_store: %d\n  max_memory_store: %d\n}\n" % (
            max_file_store, 64 << 20))
    return ("-c", conf)


@pytest.mark.timeout(240)
def test_full_store_then_freed(stack, tmp_path):
    """Single nats-server with max_file_store 8 MB (not the cluster: on nats-server 2.9.10 an
    R3 stream whose servers run out of store loses its leader for good - "JetStream resource
    limits exceeded", then "consumer has NO quorum, stalled" - so it cannot be drained; see
    the report). No worker: 100 KB bodies until the gateway answers 503, which must carry
    Retry-After, and /readyz turns 503. Then 2 workers drain (freeing the store): /readyz
    returns to 200 and new submissions get 202. Every 202 runs and calls back exactly once;
    no 503'd call runs; the stream held exactly the 202'd calls (no silent reset)."""
    stack.start(workers=0, fixtures=("echo",), nats_args=_store_limited_nats_args(
        tmp_path, 8 << 20), gateway_env={"max_body_bytes": "983040", "log_level": "info"},
        worker_env={"max_inflight": "5", "ack_wait": "10s", "log_level": "info"})
    cfg = stack.nats.jsz().get("config") or {}
    assert cfg.get("max_storage") == 8 << 20, cfg
    harness.wait_until(lambda: stack.nats.stream_state(STREAM) is not None, 15,
                       desc="stream created")
    records = []
    body = os.urandom(100 * 1000)

    def submit(tag):
        cid = "full-%s-%s" % (tag, uuid.uuid4())
        rec = {"k": len(records), "cid": cid, "sent": time.monotonic(), "wall": time.time(),
               "status": None, "exc": None, "elapsed": None, "resp_cid": None,
               "retry_after": None}
        try:
            r = stack.async_call("echo", body=body, headers={"X-Call-Id": cid}, timeout=10)
            rec.update(status=r.status_code, resp_cid=r.headers.get("X-Call-Id"),
                       retry_after=r.headers.get("Retry-After"), text=r.text[:200])
        except requests.RequestException as e:
            rec["exc"] = repr(e)
        rec["elapsed"] = time.monotonic() - rec["sent"]
        records.append(rec)
        return rec

    first_503 = None
    for k in range(200):  # 20 MB at most: more than twice the store
        rec = submit("fill")
        if rec["status"] != 202:
            first_503 = rec
            break
    assert first_503 is not None, "200 x 100 KB accepted by an 8 MB store"
    n_stored_202 = sum(1 for r in records if r["status"] == 202)
    print("\nfirst non-202 after %d accepted: status=%r Retry-After=%r in %.2fs body=%r" % (
        n_stored_202, first_503["status"], first_503["retry_after"], first_503["elapsed"],
        first_503.get("text") or first_503["exc"]))
    assert first_503["status"] in (503, 507), first_503
    assert first_503["retry_after"], "503 without Retry-After: %r" % (first_503,)
    assert first_503["elapsed"] <= ANSWER_LIMIT, first_503

    t = time.monotonic()
    harness.wait_until(lambda: harness.http_status(stack.gw + "/readyz") == 503, 10,
                       interval=0.1, desc="gateway /readyz 503 while the store is full")
    print("readyz 503 %.2fs after the first refusal" % (time.monotonic() - t))
    for _ in range(3):  # still full: refused, with Retry-After
        rec = submit("full")
        assert rec["status"] in (503, 507) and rec["retry_after"], rec
    stored = stack.nats.stream_state(STREAM)["messages"]
    assert stored == n_stored_202, "stream holds %d, %d were accepted" % (stored, n_stored_202)

    for _ in range(2):
        stack.add_worker()
    t = time.monotonic()
    harness.wait_until(lambda: harness.http_status(stack.gw + "/readyz") == 200, 60,
                       interval=0.2, desc="gateway /readyz 200 after the store was freed")
    print("readyz 200 again %.1fs after the workers started (queue left %d)" % (
        time.monotonic() - t, stack.nats.stream_state(STREAM)["messages"]))
    for _ in range(10):
        rec = submit("after")
        assert rec["status"] == 202, rec
    acc = [r["cid"] for r in records if r["status"] == 202]
    missing = wait_all_called_back(stack.sink, acc, 90)
    absence_window(ACK_WAIT_S + 5)
    rep = report("d. full store (single server, max_file_store 8 MB, 100 KB bodies)", records,
                 stack.ledger, stack.sink, answer_limit=ANSWER_LIMIT,
                 extra={"x_accepted_before_full": n_stored_202,
                        "x_missing_callbacks": len(missing)})
    assert_report(rep)
    assert all(e["body"] == body for e in stack.ledger.entries("echo"))
