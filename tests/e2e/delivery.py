"""Helpers for the delivery-guarantee tests (test_cases_*.py, test_faults*.py).

Built only on harness.py (real nats-server, real binaries, Python fixture functions, the SINK)
and mininats.py (test-side inspection of JetStream streams). No stand-ins of product programs.
"""

import concurrent.futures as cf
import threading
import time

import requests

import harness
from mininats import MiniNats

STREAM = "faas-request"
DLQ = "faas-request-dlq"
CONSUMER = "faas-workers"


def is_float(s):
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def assert_202(r):
    assert r.status_code == 202, (r.status_code, dict(r.headers), r.text)
    cid = r.headers.get("X-Call-Id")
    assert cid, "202 without X-Call-Id: %r" % (dict(r.headers),)
    return cid


def absence_window(seconds):
    """A deliberate wait in which something must NOT happen (a duplicate, a redelivery).
    Absence cannot be polled for, so this is the only fixed sleep the suite uses."""
    time.sleep(seconds)


def submit_many(stack, calls, threads=8, gw=None):
    """Concurrently POST async calls. calls: list of (fn_path, body, headers|None).
    Returns the responses in the order of `calls`."""
    base = gw or stack.gw

    def one(c):
        path, body, headers = c
        h = {"X-Callback-Url": stack.sink.url}
        h.update(headers or {})
        return requests.post(base + "/async-function/" + path, data=body, headers=h, timeout=30)

    with cf.ThreadPoolExecutor(max_workers=threads) as ex:
        return list(ex.map(one, calls))


def exactly_once_each(stack, ids, function=None):
    """Every id executed exactly once at the function and called back exactly once."""
    ids = list(ids)
    idset = set(ids)
    assert len(idset) == len(ids), "duplicate call ids handed out by the gateway"
    ex = {}
    for e in stack.ledger.entries(function=function):
        if e["call_id"] in idset:
            ex[e["call_id"]] = ex.get(e["call_id"], 0) + 1
    cb = {}
    for r in stack.sink.all():
        if r["call_id"] in idset:
            cb[r["call_id"]] = cb.get(r["call_id"], 0) + 1
    bad_ex = {i: ex.get(i, 0) for i in ids if ex.get(i, 0) != 1}
    bad_cb = {i: cb.get(i, 0) for i in ids if cb.get(i, 0) != 1}
    assert not bad_ex, "executions != 1 for %d ids: %r" % (
        len(bad_ex), dict(list(bad_ex.items())[:20]))
    assert not bad_cb, "callbacks != 1 for %d ids: %r" % (
        len(bad_cb), dict(list(bad_cb.items())[:20]))


def wait_callbacks_for(stack, ids, timeout):
    """Wait until every id has at least one callback."""
    ids = set(ids)

    def done():
        got = {r["call_id"] for r in stack.sink.all()}
        return ids <= got

    try:
        harness.wait_until(done, timeout, interval=0.1, desc="callbacks for %d ids" % len(ids))
    except harness.WaitTimeout:
        got = {r["call_id"] for r in stack.sink.all()}
        missing = sorted(ids - got)
        raise harness.WaitTimeout("no callback within %.0fs for %d of %d ids, e.g. %r" % (
            timeout, len(missing), len(ids), missing[:10]))


# ---------------------------------------------------------------------------------------------
# JetStream inspection


def consumer_detail(nats, stream=STREAM, consumer=CONSUMER):
    st = nats.stream_detail(stream)
    if not st:
        return None
    for c in st.get("consumer_detail") or []:
        if c.get("name") == consumer:
            return c
    return None


def stream_messages_count(nats, stream):
    st = nats.stream_state(stream)
    return 0 if st is None else int(st.get("messages", 0))


def wait_queue_drained(nats, timeout, stream=STREAM, consumer=CONSUMER):
    """The work queue holds no message and the consumer holds no lease."""
    def ok():
        if stream_messages_count(nats, stream) != 0:
            return False
        c = consumer_detail(nats, stream, consumer)
        return c is not None and c.get("num_ack_pending", 0) == 0 and c.get("num_pending", 0) == 0
    harness.wait_until(ok, timeout, interval=0.2, desc="stream %s drained and acked" % stream)


def stream_exists(nats, stream=STREAM):
    return nats.stream_state(stream) is not None


def read_stream(nats, stream):
    with MiniNats(nats.port) as c:
        return c.stream_messages(stream)


def js_publish_raw(nats, subject, data=b"", headers=None):
    """Publish straight to JetStream (bypassing the gateway) -> the pub ack dict."""
    with MiniNats(nats.port) as c:
        if headers:
            return c.js_publish(subject, data, headers)
        return c.js_publish(subject, data)


# ---------------------------------------------------------------------------------------------
# processes


def holder_of(workers, needle, timeout=20.0):
    """The one worker whose stdout mentions `needle` (a call id): the one that received it."""
    def find():
        hits = [w for w in workers if needle in w.log_text("stdout")]
        return hits if len(hits) == 1 else None
    try:
        return harness.wait_until(find, timeout, interval=0.05,
                                  desc="exactly one worker log naming %s" % needle)[0]
    except harness.WaitTimeout:
        hits = [w.name for w in workers if needle in w.all_logs()]
        raise harness.WaitTimeout(
            "could not tell which worker holds %s from the worker logs (workers mentioning it on "
            "stdout/stderr: %r); the design requires one log line per event with the call id"
            % (needle, hits))


def wait_exit(proc, timeout):
    """Wait for a process to exit; return (rc, seconds waited). rc None = still running."""
    t0 = time.monotonic()
    rc = proc.wait_exit(timeout)
    return rc, time.monotonic() - t0


def worker_metric(worker, name, **labels):
    return harness.metric_sum(worker.metrics(), name, **labels)


def start_gateway(stack, name, **env):
    """An extra gateway against the stack's nats-server and functions file."""
    e = {"nats_url": stack.nats.url, "functions_file": stack.functions_file}
    e.update(stack.DEFAULT_GATEWAY_ENV)
    e.update({k: str(v) for k, v in env.items()})
    g = harness.Gateway(stack.log_dir, e, name=name)
    stack.registry.add(g)
    return g.start().wait_ready()


def start_worker(stack, name, gateway=None, **env):
    """An extra worker (not in stack.workers) invoking through `gateway` (default: the stack's)."""
    gw = gateway or stack.gateway
    e = {"nats_url": stack.nats.url, "faas_gateway_address": "127.0.0.1",
         "faas_gateway_port": str(gw.port), "functions_file": stack.functions_file}
    e.update(stack.DEFAULT_WORKER_ENV)
    e.update({k: str(v) for k, v in env.items()})
    w = harness.Worker(stack.log_dir, e, name=name)
    stack.registry.add(w)
    return w.start().wait_ready()


# ---------------------------------------------------------------------------------------------
# fixture functions beyond harness.FunctionServer's kinds


class GateFunction(harness.FunctionServer):
    """Like `echo`, but every request blocks until the gate is opened. Records the ledger at
    the end like every fixture function; `started` counts requests that arrived."""

    def __init__(self, ledger, name="gate"):
        super().__init__("echo", ledger, name=name)
        self.gate = threading.Event()
        self.started = 0

    def _respond(self, h, path, query, q, call_id, body):
        with self._lock:
            self.started += 1
        if not self.gate.wait(300):
            return 503, b"gate never opened", []
        return 200, body, [("Content-Type", "application/octet-stream"), ("X-Echo", "yes")]

    def stop(self):
        self.gate.set()
        super().stop()


def add_function(stack, fs):
    """Register an extra fixture function object before stack.start()."""
    fs.start()
    stack.registry.add_server(fs)
    stack.fns[fs.name] = fs
    return fs


# ---------------------------------------------------------------------------------------------
# ledger arithmetic


def max_overlap(entries):
    """Largest number of executions running at the same moment (intervals [start, end))."""
    ev = []
    for e in entries:
        ev.append((e["start_ts"], 1))
        ev.append((e["end_ts"], -1))
    ev.sort(key=lambda x: (x[0], x[1]))  # an end before a start at the same instant
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def attempts_of(ledger, call_id, function=None):
    """Executions of one call id, ordered by start time."""
    return sorted(ledger.entries(function=function, call_id=call_id), key=lambda e: e["start_ts"])


def assert_no_parallel_copies(entries):
    """Attempts of one call never overlap in time (no second copy while one runs)."""
    es = sorted(entries, key=lambda e: e["start_ts"])
    for a, b in zip(es, es[1:]):
        assert b["start_ts"] >= a["end_ts"] - 0.01, (
            "attempt started at %.3f while the previous one ran until %.3f" % (
                b["start_ts"], a["end_ts"]))
