"""The README's local stack (deploy/local/run.sh), run as a newcomer runs it (setup and build
skipped: the test session built already): the gateway in provider mode against the process
provider, the demo functions deployed through the gateway with faas-cli's requests, the lab's
sync, async and callback steps, then Ctrl-C, and a second start that finds its functions
again. It uses the stack's fixed ports (8080, 8081, 8082, 8099, 4222, 8222, 8184, 8185), so
it is skipped when one of them is taken.
"""

import contextlib
import glob
import json
import os
import signal
import subprocess
import time

import pytest
import requests

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORTS = (8080, 8081, 8082, 8099, 4222, 8222, 8184, 8185)
GW = "http://127.0.0.1:8080"


def start_stack(run_dir, log):
    env = harness.base_env({"CFAAS_SKIP_SETUP": "1", "CFAAS_RUN_DIR": run_dir})
    return subprocess.Popen([os.path.join(ROOT, "deploy", "local", "run.sh")], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_up(p, log_path, timeout=60):
    def ok():
        assert p.poll() is None, open(log_path).read()[-3000:]
        return "The local stack is up" in open(log_path).read()
    harness.wait_until(ok, timeout, interval=0.2, desc="local stack up")


def stop_stack(p):
    if p.poll() is not None:
        return
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        raise


def skip_if_ports_busy():
    busy = [port for port in PORTS if harness.port_open(port)]
    if busy:
        pytest.skip("local stack ports in use: %s" % busy)


@contextlib.contextmanager
def running_stack(tmp_path, name="run"):
    """The local stack, up, for the body of a with-block (skipped when its ports are
    taken); Ctrl-C'd at the end. Yields the run.sh process."""
    skip_if_ports_busy()
    log_path = str(tmp_path / (name + ".log"))
    with open(log_path, "w") as log:
        p = start_stack(str(tmp_path / name), log)
        try:
            wait_up(p, log_path)
            yield p
        finally:
            stop_stack(p)


@pytest.mark.timeout(240)
def test_local_stack_lab_walkthrough(tmp_path):
    skip_if_ports_busy()
    run_dir = str(tmp_path / "run")
    log_path = str(tmp_path / "run.log")
    with open(log_path, "w") as log:
        p = start_stack(run_dir, log)
        try:
            wait_up(p, log_path)
            text = open(log_path).read()
            for fn in ("long-task", "figlet", "echo"):
                assert "Deployed %s (202)." % fn in text, text[-2000:]
            # faas-cli list
            fns = {f["name"]: f for f in requests.get(GW + "/system/functions",
                                                       timeout=10).json()}
            assert set(fns) == {"long-task", "figlet", "echo"}, fns
            # lab step 1 (one call) and 3: a callback to the recorder
            r = requests.post(GW + "/function/figlet", data=b"hi", timeout=20)
            assert r.status_code == 200 and "_" in r.text, r.text
            r = requests.post(GW + "/async-function/figlet", data=b"hello", timeout=10,
                              headers={"X-Callback-Url": "http://127.0.0.1:8099/cb"})
            assert r.status_code == 202
            cid = r.headers["X-Call-Id"]

            def recorded():
                for f in glob.glob(os.path.join(run_dir, "callbacks", "*.json")):
                    doc = json.load(open(f))
                    hdrs = {k.lower(): v for k, v in doc["headers"]}
                    if hdrs.get("x-call-id") == cid:
                        return doc
                return None
            harness.wait_until(lambda: recorded() is not None, 30, desc="callback recorded")
            assert requests.get(GW + "/async-calls/" + cid, timeout=10).json()["state"] \
                == "succeeded"
            # faas-cli deploy of one more function, then invoke it: the lab's new step
            body = {"service": "hello", "image": "any", "envProcess": "echo hello from $PPID",
                    "labels": {}, "annotations": {}}
            assert requests.put(GW + "/system/functions", json=body, timeout=10).status_code \
                == 404
            assert requests.post(GW + "/system/functions", json=body, timeout=10).status_code \
                == 202
            harness.wait_until(lambda: requests.post(GW + "/function/hello", timeout=10)
                               .status_code == 200, 20, desc="hello answers")
            fns = {f["name"]: f for f in requests.get(GW + "/system/functions",
                                                       timeout=10).json()}
            assert fns["figlet"]["invocationCount"] == 2, fns["figlet"]
        finally:
            stop_stack(p)
        assert p.returncode is not None
        for port in PORTS:
            harness.wait_until(lambda: not harness.port_open(port), 15,
                               desc="port %d free after Ctrl-C" % port)

    # a second start: the provider brings its functions back, the deploys are updates
    log_path = str(tmp_path / "run-2.log")
    with open(log_path, "w") as log:
        p = start_stack(run_dir, log)
        try:
            wait_up(p, log_path)
            text = open(log_path).read()
            assert "Deployed figlet (202)." in text, text[-2000:]
            fns = {f["name"] for f in requests.get(GW + "/system/functions", timeout=10).json()}
            assert fns == {"long-task", "figlet", "echo", "hello"}, fns
            r = requests.post(GW + "/function/echo", data=b"back", timeout=20)
            assert r.status_code == 200 and r.text == "back"
        finally:
            stop_stack(p)
