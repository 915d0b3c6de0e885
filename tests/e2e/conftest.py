"""Fixtures for the e2e suite. See README.md in this folder."""

import os
import re
import shutil
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402

DEFAULT_TEST_TIMEOUT = float(os.environ.get("CFAAS_E2E_TIMEOUT", "180"))


class TestTimeout(Exception):
    pass


def _timeout_for(item):
    m = item.get_closest_marker("timeout")
    if m and m.args:
        return float(m.args[0])
    return DEFAULT_TEST_TIMEOUT


def _on_alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit (SIGALRM); see process logs below")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # Hard per-test deadline covering setup + call (teardown runs without it so that
    # processes are always cleaned up).
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, _timeout_for(item))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    signal.setitimer(signal.ITIMER_REAL, 0)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when in ("setup", "call") and rep.failed:
        item._cfaas_failed = True
        if getattr(item, "_cfaas_dir", None):
            rep.sections.append(("work dir (kept)", item._cfaas_dir))
        reg = getattr(item, "_cfaas_registry", None)
        if reg is not None:
            for name, tail in reg.tails(80):
                rep.sections.append(("process log: " + name, tail))
        sink = getattr(item, "_cfaas_sink", None)
        if sink is not None:
            lines = ["%s %s?%s call_id=%s status=%s body=%r" % (
                r["method"], r["path"], r["query"], r["call_id"],
                r["headers"].get("X-Function-Status"), r["body"][:200]) for r in sink.all()]
            rep.sections.append(("SINK requests", "\n".join(lines) or "(none)"))
        ledger = getattr(item, "_cfaas_ledger", None)
        if ledger is not None:
            lines = ["%s call_id=%s %s %s?%s start=%.3f end=%.3f status=%s" % (
                e["function"], e["call_id"], e["method"], e["path"], e["query"],
                e["start_ts"], e["end_ts"], e["status"]) for e in ledger.entries()]
            rep.sections.append(("function ledger", "\n".join(lines) or "(none)"))


_ROOT = []


def _root_dir():
    if not _ROOT:
        base = os.environ.get("CFAAS_E2E_TMP")
        if base:
            os.makedirs(base, exist_ok=True)
        _ROOT.append(tempfile.mkdtemp(prefix="cfaas-e2e-", dir=base))
    return _ROOT[0]


@pytest.fixture
def tmp_path(request):
    """Per-test work dir (logs, nats store, functions.json) under a private root, so other
    pytest runs on the machine cannot rotate it away. Kept when the test fails
    (or CFAAS_E2E_KEEP=1), removed when it passes."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    d = tempfile.mkdtemp(prefix=name + "-", dir=_root_dir())
    request.node._cfaas_dir = d
    import pathlib
    yield pathlib.Path(d)
    rep = getattr(request.node, "_cfaas_failed", False)
    if not rep and not os.environ.get("CFAAS_E2E_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    if _ROOT and os.path.isdir(_ROOT[0]) and not os.listdir(_ROOT[0]):
        shutil.rmtree(_ROOT[0], ignore_errors=True)


@pytest.fixture
def registry(request, tmp_path):
    reg = harness.Registry()
    request.node._cfaas_registry = reg
    yield reg
    reg.cleanup()


@pytest.fixture
def ledger(request, tmp_path):
    led = harness.Ledger(path=str(tmp_path / "ledger.csv"))
    request.node._cfaas_ledger = led
    return led


@pytest.fixture
def sink(request, registry):
    s = harness.CallbackRecorder().start()
    registry.add_server(s)
    request.node._cfaas_sink = s
    return s


@pytest.fixture
def log_dir(tmp_path):
    d = tmp_path / "logs"
    d.mkdir(exist_ok=True)
    return str(d)


@pytest.fixture
def stack(tmp_path, registry, ledger, sink):
    """An unstarted Stack; call stack.start(workers=..., worker_env=..., gateway_env=...,
    watchdogs={'name': 'fprocess'}) in the test."""
    return harness.Stack(tmp_path, registry, ledger, sink)


@pytest.fixture
def nats(registry, log_dir, tmp_path):
    """A bare running nats-server -js (random ports, temp store)."""
    n = harness.NatsServer(log_dir, store_dir=str(tmp_path / "nats-store"))
    registry.add(n)
    return n.start()


@pytest.fixture
def watchdog(registry, log_dir):
    """Factory: watchdog(fprocess, **env) -> started, healthy Watchdog."""
    count = [0]

    def make(fprocess, **env):
        count[0] += 1
        wd = harness.Watchdog(log_dir, fprocess, env={k: str(v) for k, v in env.items()},
                              name="watchdog-%d" % count[0])
        registry.add(wd)
        return wd.start().wait_ready()

    return make


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs a 3-node nats-server cluster "
                                       "(cluster.py; deselect with -m 'not cluster')")


@pytest.fixture
def cluster_stack(stack):
    """An unstarted Stack on a 3-node JetStream cluster (stack.nats_cluster, also stack.nats
    once started): gateway and workers get nats_url=<the 3 URLs, comma separated> and
    stream_replicas=3. Call stack.start(...) as with `stack`."""
    import cluster
    cluster.use_cluster(stack)
    return stack
