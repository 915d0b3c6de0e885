"""Issue 4: horizontal scaling of queue-workers.

Real nats-server -js, real gateway/queue-worker binaries, the Python `sleep` fixture function
(100 ms per call, recorded on the ledger) and the SINK.
"""

import re
import signal
import time

import pytest

from delivery import (absence_window, assert_202, exactly_once_each, submit_many,
                      wait_callbacks_for, wait_exit, wait_queue_drained)

N_CALLS = 300
CALL_SECONDS = 0.1
MAX_INFLIGHT = 2          # per worker: 1 worker ~ 20 calls/s, 3 workers ~ 60 calls/s (ideal)
JOIN_AT = N_CALLS // 5    # executed calls when the 2 extra workers are started
TERM_AT = N_CALLS * 7 // 10  # executed calls when one of the extra workers gets SIGTERM
MIN_SPEEDUP = 1.5         # 3-worker vs 1-worker throughput (ideal 3.0); see the docstring
MIN_SHARE_STAYED = 0.15   # share of post-join calls each worker that stayed must take (~0.40)
MIN_SHARE_LEFT = 0.05     # ... and the worker that was SIGTERMed (~0.20)

# `<...> [<call id>] done status=200 acked` (text log format; the id is in brackets)
_DONE_RE = re.compile(r"\[([^\]\s]+)\]\s+done status=(\d+) acked")


def _done_ids(worker):
    """Call ids this worker completed (acked), from its log; a Counter-like dict id -> n."""
    out = {}
    for ln in worker.log_text("stdout").splitlines() + worker.log_text("stderr").splitlines():
        m = _DONE_RE.search(ln)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def _rate(entries, t_from, t_to):
    """Completions (ledger end_ts) per second in the wall-clock window [t_from, t_to]."""
    n = sum(1 for e in entries if t_from <= e["end_ts"] <= t_to)
    span = t_to - t_from
    return n / span if span > 0 else 0.0, n, span


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_adding_workers_raises_throughput_fair_share_exactly_once(stack):
    """300 async calls of a 100 ms function, 1 worker with max_inflight 2 (ack_wait 5 s).
    When a fifth of them have executed, 2 more workers join; when 70 % have executed one of
    the added workers gets SIGTERM and must exit 0 (draining its in-flight calls).

    Asserted:
    * every call id executes exactly once at the function and calls back exactly once
      (300 distinct ids, none lost, none duplicated), and the queue ends drained;
    * fair share: of the calls completed after the join, the original worker and the added
      worker that stayed each completed >= 15 % (a fair split is ~40 % each, ~20 % for the
      one stopped at 70 %; it must have taken >= 5 %), attributed by the workers' own
      `[<call id>] done status=200 acked` log lines, every call done by exactly one worker;
    * throughput: completions/s on the ledger between the join and the SIGTERM (3 workers) is
      >= 1.5x that before the join (1 worker). With max_inflight 2 the ideal is 20/s vs 60/s
      (3x): the function sleeps, so the concurrency bound, not the CPU, sets the rate, and the
      ratio stays near 3x even when both cores are busy. Measured on the 2-core box: ~14/s vs
      ~42/s, 2.9-3.1x, also with two CPU hogs running (each call costs ~145 ms, not 100 ms:
      ~40 ms of it is Nagle + delayed ACK on the Python fixture's reply, which writes headers
      and body separately; it slows both phases alike). 1.5x keeps a wide margin yet fails if
      the added workers take no work (~1.0x); one added worker idle (~2x) is caught by the
      share assertion.
    * makespan: first start to last end on the ledger is shorter than 300 calls at the
      1-worker rate would take (<= 80 % of it).
    """
    stack.start(workers=1, fixtures=("sleep",),
                worker_env={"max_inflight": str(MAX_INFLIGHT), "ack_wait": "5s",
                            "max_retry_attempts": "0", "drain_timeout": "10s",
                            "log_level": "info"},
                gateway_env={"log_level": "info"})
    w1 = stack.workers[0]
    fn = "sleep?s=%s" % CALL_SECONDS

    t_submit = time.time()
    rs = submit_many(stack, [(fn, b"s-%d" % i, None) for i in range(N_CALLS)], threads=16)
    ids = [assert_202(r) for r in rs]
    t_submitted = time.time()
    assert len(set(ids)) == N_CALLS

    # -- phase 1: one worker until a fifth have executed
    stack.ledger.wait_for(JOIN_AT, 60, function="sleep")
    t_add = time.time()
    w2 = stack.add_worker()
    w3 = stack.add_worker()
    t_join = time.time()
    n_at_join = stack.ledger.count("sleep")

    # -- phase 2: three workers until 70 % have executed; then SIGTERM one of the added ones
    stack.ledger.wait_for(TERM_AT, 90, function="sleep")
    t_term = time.time()
    n_at_term = stack.ledger.count("sleep")
    w3.signal(signal.SIGTERM)
    rc, waited = wait_exit(w3, 30)
    assert rc == 0, "added worker exit code %r after SIGTERM (waited %.1fs)" % (rc, waited)

    # -- the rest with two workers
    wait_callbacks_for(stack, ids, 120)
    t_done = time.time()
    absence_window(2)  # a late duplicate execution or callback would show up here
    exactly_once_each(stack, ids, "sleep")
    assert stack.sink.count() == N_CALLS
    assert stack.ledger.count("sleep") == N_CALLS
    for r in stack.sink.all():
        assert r["headers"].get("X-Function-Status") == "200", (r["call_id"], r["headers"])
    assert w1.alive() and w2.alive(), "a worker that should keep running exited"
    wait_queue_drained(stack.nats, 20)

    # -- measurements
    entries = stack.ledger.entries("sleep")
    first_start = min(e["start_ts"] for e in entries)
    first_end = min(e["end_ts"] for e in entries)
    last_end = max(e["end_ts"] for e in entries)
    tp1, n1, span1 = _rate(entries, first_end, t_add)
    tp3, n3, span3 = _rate(entries, t_join, t_term)
    tp2, n2, span2 = _rate(entries, t_term, last_end)
    makespan = last_end - first_start
    one_worker_makespan = N_CALLS / tp1 if tp1 else float("inf")

    after_join = {e["call_id"] for e in entries if e["start_ts"] >= t_join}
    done = {w.name: _done_ids(w) for w in (w1, w2, w3)}
    owners = {}
    for name, d in done.items():
        for cid, k in d.items():
            owners.setdefault(cid, []).extend([name] * k)
    multi = {cid: o for cid, o in owners.items() if len(o) != 1}
    unowned = [cid for cid in ids if cid not in owners]
    shares = {name: (len(after_join & set(d)) / len(after_join) if after_join else 0.0)
              for name, d in done.items()}
    totals = {name: len(d) for name, d in done.items()}

    report = ("scaling: calls=%d submit=%.2fs join@%d (added %.2fs after submit, join took "
              "%.2fs) term@%d; 1 worker %.1f/s (%d in %.2fs), 3 workers %.1f/s (%d in %.2fs), "
              "2 workers %.1f/s (%d in %.2fs); speedup %.2fx; makespan %.2fs vs %.2fs at the "
              "1-worker rate; wall %.2fs; post-join calls %d shares %s; totals %s; "
              "w3 exited rc=%r in %.2fs" % (
                  N_CALLS, t_submitted - t_submit, n_at_join, t_add - t_submit, t_join - t_add,
                  n_at_term, tp1, n1, span1, tp3, n3, span3, tp2, n2, span2,
                  tp3 / tp1 if tp1 else float("inf"), makespan, one_worker_makespan,
                  t_done - t_submit, len(after_join),
                  {k: round(v, 3) for k, v in shares.items()}, totals, rc, waited))
    print(report)

    assert not multi, "calls completed by more than one worker (or twice): %r" % (
        dict(list(multi.items())[:10]),)
    assert not unowned, "%d calls with no `done ... acked` line in any worker log, e.g. %r" % (
        len(unowned), unowned[:10])
    assert n1 >= 10 and n3 >= 30, "phases too short to measure: " + report
    for w in (w1, w2):
        assert shares[w.name] >= MIN_SHARE_STAYED, "%s took too little work: %s" % (
            w.name, report)
    assert shares[w3.name] >= MIN_SHARE_LEFT, "%s took too little work: %s" % (w3.name, report)
    assert tp3 >= MIN_SPEEDUP * tp1, "throughput did not scale: " + report
    assert makespan <= 0.8 * one_worker_makespan, "makespan did not shrink: " + report
