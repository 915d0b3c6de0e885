"""The process provider (build/bin/provider) as a test process, plus small helpers.

Kept apart from harness.py: Provider(Proc) reuses Proc's lifecycle (own session, logs in the
test's log dir, killed at teardown) and adds the provider's API calls.
"""

import os
import time

import requests

import harness


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid):
    """Direct children of pid (from /proc/<pid>/task/*/children)."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def watchdog_pids(pid):
    """Children of the provider that are running the watchdog binary."""
    out = []
    for c in children(pid):
        try:
            exe = os.readlink("/proc/%d/exe" % c)
        except OSError:
            continue
        if os.path.basename(exe) == "watchdog" and pid_alive(c):
            out.append(c)
    return sorted(out)


class Provider(harness.Proc):
    name = "provider"

    def __init__(self, log_dir, state_dir, env=None, port=None, name=None):
        self.port = port or harness.free_port()
        self.state_dir = state_dir
        e = {"port": str(self.port), "bind_address": "127.0.0.1",
             "provider_state_dir": state_dir, "log_level": "debug",
             "watchdog_path": harness.bin_path("watchdog"), "stop_timeout": "3s"}
        e.update(env or {})
        super().__init__([harness.bin_path("provider")], harness.base_env(e), log_dir, name=name)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def wait_ready(self, timeout=15.0):
        def ok():
            self._check_alive("provider /healthz")
            return harness.http_status(self.url + "/healthz") == 200
        harness.wait_until(ok, timeout, desc="provider ready on %d" % self.port)
        return self

    def start(self):
        super().start()
        return self.wait_ready()

    # -- API helpers (auth passed through as requests' auth=)
    def req(self, method, path, timeout=15, **kw):
        return requests.request(method, self.url + path, timeout=timeout, **kw)

    def deploy(self, body, method="POST", **kw):
        return self.req(method, "/system/functions", json=body, **kw)

    def describe(self, name, **kw):
        return self.req("GET", "/system/function/" + name, **kw)

    def scale(self, name, replicas, **kw):
        return self.req("POST", "/system/scale-function/" + name,
                        json={"serviceName": name, "replicas": replicas,
                              "namespace": "openfaas-fn"}, **kw)

    def remove(self, name, **kw):
        return self.req("DELETE", "/system/functions",
                        json={"functionName": name, "namespace": "openfaas-fn"}, **kw)

    def invoke(self, path, method="POST", data=b"", **kw):
        return self.req(method, "/function/" + path, data=data, **kw)

    def wait_available(self, name, n, timeout=20.0, **kw):
        def ok():
            self._check_alive("availableReplicas of %s" % name)
            r = self.describe(name, **kw)
            return r.status_code == 200 and r.json().get("availableReplicas", 0) == n and r.json()
        return harness.wait_until(ok, timeout, interval=0.1,
                                  desc="%s availableReplicas == %d" % (name, n))

    def serving_pids(self, name, calls=30, **kw):
        """PIDs printed by an fprocess of 'echo $PPID' over many calls (the watchdog pids)."""
        seen = set()
        for _ in range(calls):
            r = self.invoke(name, **kw)
            if r.status_code == 200:
                seen.add(int(r.text.strip()))
        return seen


def wait_gone(pids, timeout=15.0):
    harness.wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, interval=0.1,
                       desc="pids %r gone" % (sorted(pids),))


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)
