"""The shipped Prometheus rules in a real Prometheus (Debian's package) scraping the local
stack (deploy/local/run.sh: the gateway's metrics on :8082, the two queue-workers' on :8184
and :8185): with calls waiting and every worker stopped (one delayed call still parked in the
consumer, which counts as held), CfaasNoWorkerConsuming fires; after
one worker is started again it resolves and the calls run. The rules file is loaded as
shipped except that this alert's `for:` is cut from 2m to 5s, and Prometheus scrapes and
evaluates every second, so the test takes seconds rather than minutes.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

import harness
from test_local_stack import GW, running_stack, skip_if_ports_busy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = os.path.join(ROOT, "deploy", "prometheus", "cfaas.rules.yml")


class Prometheus(harness.Proc):
    name = "prometheus"

    def __init__(self, log_dir, config, data_dir):
        self.port = harness.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        argv = [shutil.which("prometheus") or "/usr/bin/prometheus",
                "--config.file=" + config, "--storage.tsdb.path=" + data_dir,
                "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"]
        super().__init__(argv, os.environ.copy(), log_dir)

    def wait_ready(self, timeout=30):
        def ok():
            assert self.alive(), self.all_logs()[-2000:]
            try:
                return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        harness.wait_until(ok, timeout, desc="prometheus ready")
        return self

    def alerts(self, name):
        doc = requests.get(self.url + "/api/v1/alerts", timeout=5).json()
        return [a for a in doc["data"]["alerts"] if a["labels"]["alertname"] == name]

    def query(self, expr):
        doc = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5).json()
        assert doc["status"] == "success", doc
        return doc["data"]["result"]


def write_config(tmp_path):
    rules = open(RULES).read()
    # the one change: the alert under test waits 5 s instead of 2 min
    fast, n = re.subn(r"(alert: CfaasNoWorkerConsuming\n(?:.*\n)*?\s+for: )2m", r"\g<1>5s",
                      rules)
    assert n == 1, "CfaasNoWorkerConsuming with for: 2m not found in the rules file"
    (tmp_path / "rules.yml").write_text(fast)
    (tmp_path / "prometheus.yml").write_text("""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: gateway
    static_configs: [{targets: ["127.0.0.1:8082"]}]
  - job_name: queue-worker
    static_configs: [{targets: ["127.0.0.1:8184", "127.0.0.1:8185"]}]
""")
    return str(tmp_path / "prometheus.yml")


def worker_pids(stack_proc):
    out = subprocess.run(["pgrep", "-s", str(stack_proc.pid), "-f", "build/bin/queue-worker"],
                         capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.timeout(300)
def test_no_worker_consuming_fires_and_resolves_in_a_real_prometheus(tmp_path):
    skip_if_ports_busy()
    assert shutil.which("promtool"), "Debian's prometheus package is needed"
    assert subprocess.run(["promtool", "check", "rules", RULES],
                          capture_output=True).returncode == 0
    prom = Prometheus(str(tmp_path / "logs"), write_config(tmp_path), str(tmp_path / "tsdb"))
    extra = None
    with running_stack(tmp_path) as p:
        try:
            prom.start()
            prom.wait_ready()
            harness.wait_until(lambda: len([r for r in prom.query("up == 1")]) == 3, 30,
                               desc="prometheus scrapes the gateway and both workers")
            assert prom.query("gateway_queue_waiting_pulls") != []
            # healthy: idle workers wait on an empty queue
            time.sleep(3)
            assert prom.alerts("CfaasNoWorkerConsuming") == []

            # a delayed call stays parked in the consumer (ack pending) while the workers
            # are gone: the alert must not take it for a worker at work
            r = requests.post(GW + "/async-function/echo", data=b"later", timeout=10,
                              headers={"X-Delay-Seconds": "600"})
            assert r.status_code == 202
            harness.wait_until(lambda: prom.query(
                'gateway_queue_ack_pending_messages{queue="faas-request"} == 1'), 20,
                desc="the delayed call parked (ack pending 1)")
            # every worker stopped (SIGTERM: they drain and exit), then calls arrive
            pids = worker_pids(p)
            assert len(pids) == 2, pids
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            harness.wait_until(lambda: worker_pids(p) == [], 40, desc="workers exited")
            ids = []
            for i in range(3):
                r = requests.post(GW + "/async-function/echo", data=b"waiting %d" % i,
                                  timeout=10)
                assert r.status_code == 202, r.text
                ids.append(r.headers["X-Call-Id"])

            def firing():
                a = prom.alerts("CfaasNoWorkerConsuming")
                return a if a and a[0]["state"] == "firing" else None
            t0 = time.time()
            [alert] = harness.wait_until(firing, 90, interval=0.5,
                                         desc="CfaasNoWorkerConsuming firing")
            print("fired %.1f s after the calls were queued" % (time.time() - t0))
            assert alert["labels"]["queue"] == "faas-request"
            assert alert["labels"]["severity"] == "critical"
            assert "3 calls wait in faas-request" in alert["annotations"]["description"], alert
            for cid in ids:
                assert requests.get(GW + "/async-calls/" + cid, timeout=10).json()["state"] \
                    == "queued"

            # one worker back: the calls run and the alert resolves
            env = harness.base_env({"nats_url": "nats://127.0.0.1:4222",
                                    "faas_gateway_address": "127.0.0.1",
                                    "faas_gateway_port": "8080", "metrics_port": "8184"})
            extra = harness.Worker(str(tmp_path / "logs"), env, name="worker-again")
            extra.start().wait_ready()
            harness.wait_until(
                lambda: all(requests.get(GW + "/async-calls/" + c, timeout=10).json()["state"]
                            == "succeeded" for c in ids), 30, desc="the waiting calls ran")
            t1 = time.time()
            harness.wait_until(lambda: prom.alerts("CfaasNoWorkerConsuming") == [], 60,
                               interval=0.5, desc="CfaasNoWorkerConsuming resolved")
            print("resolved %.1f s after the worker started" % (time.time() - t1))
            # the other alerts stay quiet on this healthy stack
            for name in ("CfaasNatsDisconnected", "CfaasCallbackFailures",
                         "CfaasFunctionErrorRate", "CfaasQueueGrowing",
                         "CfaasGatewayMetricsAbsent"):
                assert prom.alerts(name) == [], name
        finally:
            if extra is not None:
                extra.terminate()
            prom.terminate()
