"""Steady async load against the gateway and the delivery report of a fault scenario.

AsyncLoad submits `POST /async-function/<fn>` at a fixed rate from a thread pool, each with
its own X-Call-Id (uuid4, so the id is known even for a 503 or a client timeout) and
X-Callback-Url = the SINK, and records per submission: when it was sent, the answer (status
or exception), how long the answer took, the X-Call-Id / Retry-After it came back with.

report() then joins those records with the function ledger and the SINK:
accepted (202), lost (202 never executed or never called back), duplicate executions,
duplicate callbacks, 5xx, 503'd-that-ran (non-202 ids found in the ledger), slowest answer.
"""

import concurrent.futures as cf
import threading
import time
import uuid

import requests

import harness


class AsyncLoad:
    def __init__(self, gw_url, sink_url, fn="echo", rate=20.0, timeout=10.0, body=None,
                 threads=96, name="load"):
        self.gw_url = gw_url
        self.sink_url = sink_url
        self.fn = fn
        self.rate = float(rate)
        self.timeout = timeout
        self.body = body  # None: b"<name>-<k>"; bytes; or callable(k) -> bytes
        self.name = name
        self.records = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._thread = None
        self._futures = []
        self.t0 = None
        self._local = threading.local()

    # -- running
    def start(self):
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._schedule, name=self.name + "-sched",
                                        daemon=True)
        self._thread.start()
        return self

    def elapsed(self):
        return time.monotonic() - self.t0

    def _schedule(self):
        k = 0
        while not self._stop.is_set():
            target = self.t0 + k / self.rate
            delay = target - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self._futures.append(self._pool.submit(self._one, k))
            k += 1

    def _session(self):
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s

    def _one(self, k):
        cid = "load-%s" % uuid.uuid4()
        if callable(self.body):
            body = self.body(k)
        elif self.body is not None:
            body = self.body
        else:
            body = ("%s-%d" % (self.name, k)).encode()
        rec = {"k": k, "cid": cid, "sent": time.monotonic(), "wall": time.time(),
               "status": None, "exc": None, "elapsed": None, "resp_cid": None,
               "retry_after": None, "text": None}
        try:
            r = self._session().post(
                self.gw_url + "/async-function/" + self.fn, data=body, timeout=self.timeout,
                headers={"X-Call-Id": cid, "X-Callback-Url": self.sink_url})
            rec["status"] = r.status_code
            rec["resp_cid"] = r.headers.get("X-Call-Id")
            rec["retry_after"] = r.headers.get("Retry-After")
            if r.status_code != 202:
                rec["text"] = r.text[:200]
        except requests.RequestException as e:
            rec["exc"] = "%s: %s" % (type(e).__name__, str(e)[:200])
            self._local.s = None  # a broken keep-alive connection is not reused
        rec["elapsed"] = time.monotonic() - rec["sent"]
        with self._lock:
            self.records.append(rec)
        return rec

    def stop(self, wait=True):
        """Stop submitting; with wait, also wait for every submission's answer."""
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if wait:
            cf.wait(list(self._futures), timeout=self.timeout + 5)
        self._pool.shutdown(wait=wait)
        return self

    def run_for(self, seconds):
        """Blocking helper: start, run `seconds`, stop."""
        self.start()
        time.sleep(seconds)
        return self.stop()

    # -- results
    def all(self):
        with self._lock:
            return sorted(self.records, key=lambda r: r["k"])

    def accepted_ids(self):
        return [r["cid"] for r in self.all() if r["status"] == 202]


def wait_all_called_back(sink, ids, timeout, interval=0.2):
    """Wait until every id has at least one callback; return the ids still missing (no raise)."""
    ids = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        missing = ids - {r["call_id"] for r in sink.all()}
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(interval)


def report(title, records, ledger, sink, function="echo", answer_limit=5.0, extra=None):
    """Join submissions with the ledger and the SINK; print and return the numbers."""
    ex, cb = {}, {}
    for e in ledger.entries(function=function):
        ex[e["call_id"]] = ex.get(e["call_id"], 0) + 1
    for r in sink.all():
        cb[r["call_id"]] = cb.get(r["call_id"], 0) + 1
    acc = [r for r in records if r["status"] == 202]
    non = [r for r in records if r["status"] != 202]
    acc_ids = [r["cid"] for r in acc]
    statuses = {}
    for r in records:
        key = r["status"] if r["status"] is not None else "exception"
        statuses[key] = statuses.get(key, 0) + 1
    answered = [r for r in records if r["elapsed"] is not None]
    rep = {
        "title": title,
        "submitted": len(records),
        "accepted": len(acc),
        "statuses": statuses,
        "lost": sorted(i for i in acc_ids if ex.get(i, 0) == 0 or cb.get(i, 0) == 0),
        "not_executed": sorted(i for i in acc_ids if ex.get(i, 0) == 0),
        "not_called_back": sorted(i for i in acc_ids if cb.get(i, 0) == 0),
        "dup_executions": {i: ex[i] for i in acc_ids if ex.get(i, 0) > 1},
        "dup_callbacks": {i: cb[i] for i in acc_ids if cb.get(i, 0) > 1},
        "n5xx": sum(1 for r in records if r["status"] is not None and r["status"] >= 500),
        "n4xx": sum(1 for r in records if r["status"] is not None and 400 <= r["status"] < 500),
        "ran_non202": sorted(r["cid"] for r in non if ex.get(r["cid"], 0) > 0),
        "called_back_non202": sorted(r["cid"] for r in non if cb.get(r["cid"], 0) > 0),
        "client_errors": [(r["cid"], r["exc"], round(r["elapsed"], 2))
                          for r in records if r["exc"]],
        "slow": [(r["cid"], r["status"], round(r["elapsed"], 2))
                 for r in answered if r["elapsed"] > answer_limit],
        "slowest": max((r["elapsed"] for r in answered), default=0.0),
        "wrong_id": [(r["cid"], r["resp_cid"]) for r in acc if r["resp_cid"] != r["cid"]],
        "503_without_retry_after": sum(1 for r in records
                                       if r["status"] == 503 and not r["retry_after"]),
    }
    if extra:
        rep.update(extra)
    # when did the non-202 answers happen (relative to the first submission)
    t0 = min((r["sent"] for r in records), default=0.0)
    wall0 = min((r["wall"] for r in records if r.get("wall")), default=None)
    ran = set(rep["ran_non202"])
    details = []
    for r in non:
        if r["cid"] not in ran:
            continue
        runs = sorted(e["start_ts"] for e in ledger.entries(function=function, call_id=r["cid"]))
        details.append({"cid": r["cid"], "sent_at": round(r["sent"] - t0, 2),
                        "status": r["status"], "exc": r["exc"],
                        "answer_s": round(r["elapsed"], 2), "body": r.get("text"),
                        "executed_at": [round(x - wall0, 2) for x in runs] if wall0 else runs})
    rep["ran_non202_details"] = details
    bad = sorted(r["sent"] - t0 for r in records if r["status"] != 202)
    rep["non202_window"] = (round(bad[0], 1), round(bad[-1], 1)) if bad else None
    print_report(rep)
    return rep


def print_report(rep):
    print("\n==== %s ====" % rep["title"])
    print("  submitted=%d accepted(202)=%d statuses=%s" % (rep["submitted"], rep["accepted"],
                                                           rep["statuses"]))
    print("  lost=%d (not executed %d, not called back %d)" % (
        len(rep["lost"]), len(rep["not_executed"]), len(rep["not_called_back"])))
    print("  duplicate executions=%d duplicate callbacks=%d" % (
        len(rep["dup_executions"]), len(rep["dup_callbacks"])))
    print("  5xx=%d 4xx=%d 503'd-that-ran=%d non-202-called-back=%d 503-without-Retry-After=%d"
          % (rep["n5xx"], rep["n4xx"], len(rep["ran_non202"]), len(rep["called_back_non202"]),
             rep["503_without_retry_after"]))
    print("  client timeouts/errors=%d answers>limit=%d slowest answer=%.2fs non-202 window=%s"
          % (len(rep["client_errors"]), len(rep["slow"]), rep["slowest"], rep["non202_window"]))
    for k in ("lost", "dup_executions", "dup_callbacks", "ran_non202", "client_errors", "slow",
              "wrong_id"):
        v = rep[k]
        if v:
            items = list(v.items())[:10] if isinstance(v, dict) else list(v)[:10]
            print("    %s (first 10): %r" % (k, items))
    for d in rep.get("ran_non202_details") or []:
        print("    non-202 that ran: %r" % (d,))
    for k, v in rep.items():
        if k.startswith("x_"):
            print("  %s: %s" % (k[2:], v))


def assert_report(rep, allow_dup_executions=False, allow_ran_non202=False, gateway_log=None):
    """Every submission answered (202 or 5xx) within the limit; every 202 executed and
    called back exactly once. Duplicate executions and 503'd-that-ran are asserted == 0
    unless explicitly allowed (then they are still printed)."""
    problems = []
    if rep["client_errors"]:
        problems.append("%d submissions not answered (client timeout / connection error), "
                        "e.g. %r" % (len(rep["client_errors"]), rep["client_errors"][:5]))
    if rep["slow"]:
        problems.append("%d answers slower than the limit, slowest %.2fs, e.g. %r" % (
            len(rep["slow"]), rep["slowest"], rep["slow"][:5]))
    if rep["n4xx"]:
        problems.append("%d 4xx answers (want 202 or 5xx): %r" % (rep["n4xx"], rep["statuses"]))
    if rep["wrong_id"]:
        problems.append("202 with another X-Call-Id than sent: %r" % (rep["wrong_id"][:5],))
    if rep["lost"]:
        problems.append("lost %d accepted calls (not executed %d, not called back %d), e.g. %r"
                        % (len(rep["lost"]), len(rep["not_executed"]),
                           len(rep["not_called_back"]), rep["lost"][:5]))
    if rep["dup_callbacks"]:
        problems.append("duplicate callbacks for %d ids: %r" % (
            len(rep["dup_callbacks"]), list(rep["dup_callbacks"].items())[:5]))
    if rep["dup_executions"] and not allow_dup_executions:
        problems.append("duplicate executions for %d ids: %r" % (
            len(rep["dup_executions"]), list(rep["dup_executions"].items())[:5]))
    if rep["ran_non202"] and not allow_ran_non202:
        # The one case the broker cannot tell us in time: copies were sent to a server that
        # froze before answering, and it stored one when it woke up, after the 503. The
        # gateway must have said "may or may not be queued" and then reported the late
        # store ("stored after all"); anything else is a 503 that lied.
        log = gateway_log or ""
        unexplained = [d["cid"] for d in rep["ran_non202_details"]
                       if "may or may not" not in (d.get("body") or "")
                       or ("[%s] stored after all" % d["cid"]) not in log]
        if unexplained:
            problems.append("%d calls answered non-202 were executed anyway without the "
                            "gateway having said it could not tell: %r" % (
                                len(unexplained), unexplained[:5]))
        else:
            print("  %d call(s) answered 503 'may or may not be queued' were stored later by "
                  "a server that had been frozen; the gateway logged each one" %
                  len(rep["ran_non202"]))
    assert not problems, "%s:\n  - %s" % (rep["title"], "\n  - ".join(problems))


def sample_until(stop, fn, interval=0.05):
    """Thread helper: call fn() every interval until the stop Event is set; [(t, value)]."""
    out = []

    def run():
        while not stop.is_set():
            t = time.monotonic()
            try:
                out.append((t, fn()))
            except Exception as e:  # noqa: BLE001 - sampling
                out.append((t, repr(e)))
            stop.wait(interval)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return out, th


def readyz_sampler(gw_url, interval=0.05):
    """Start sampling GET <gw>/readyz; returns (stop Event, samples list, thread)."""
    stop = threading.Event()
    samples, th = sample_until(stop, lambda: harness.http_status(gw_url + "/readyz",
                                                                 timeout=1.0), interval)
    return stop, samples, th


def summarize_samples(samples, t0=None):
    """[(t, v)] -> list of (start offset, end offset, value) runs."""
    if not samples:
        return []
    t0 = samples[0][0] if t0 is None else t0
    runs = []
    for t, v in samples:
        if runs and runs[-1][2] == v:
            runs[-1][1] = t - t0
        else:
            runs.append([t - t0, t - t0, v])
    return [(round(a, 2), round(b, 2), v) for a, b, v in runs]
