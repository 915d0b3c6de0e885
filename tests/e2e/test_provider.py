"""Process provider (build/bin/provider): the faas-provider API as faas-cli 0.16 and the
OpenFaaS gateway use it, with every replica a real watchdog process."""

import base64
import datetime
import json
import os
import re
import signal
import stat
import threading
import time

import pytest
import requests

import harness
from provider_harness import Provider, now_rfc3339, pid_alive, wait_gone, watchdog_pids

NS = "openfaas-fn"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


SANITIZER = re.compile(r"AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer")


@pytest.fixture
def provider(registry, log_dir, tmp_path):
    """Factory: provider(**env) -> started Provider on a fresh (or given) state dir.
    At teardown every provider still running is stopped with SIGTERM and must exit 0 with
    no sanitizer report (so an ASan build also checks leaks at exit)."""
    made = []

    def make(state_dir=None, port=None, **env):
        p = Provider(log_dir, state_dir or str(tmp_path / "state"), port=port,
                     env={k: str(v) for k, v in env.items()},
                     name="provider-%d" % (len(made) + 1))
        registry.add(p)
        made.append(p)
        return p.start()

    yield make
    for p in made:
        if p.alive():
            assert p.terminate(timeout=20) == 0, p.tail(40)
        m = SANITIZER.search(p.all_logs())
        assert m is None, p.tail(80)


def faas_cli_body(name, fprocess="cat", **extra):
    body = {"service": name, "image": "ghcr.io/acme/%s:latest" % name, "envProcess": fprocess,
            "labels": {}, "annotations": {}}
    body.update(extra)
    return body


def parse_time(s):
    assert RFC3339.match(s), s
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------
# deploy / list / describe


def test_put_unknown_is_404_then_post_202_list_and_describe(provider):
    p = provider()
    body = {"service": "long-task", "image": "any", "envProcess": "sleep 1", "labels": {},
            "annotations": {}}
    r = p.deploy(body, method="PUT")
    assert r.status_code == 404, r.text
    r = p.deploy(body)
    assert (r.status_code, r.text) == (202, "")

    r = p.req("GET", "/system/functions")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert '"replicas":1' in r.text  # integers, never 1.0
    fns = r.json()
    assert [f["name"] for f in fns] == ["long-task"]
    f = fns[0]
    assert f["image"] == "any" and f["namespace"] == NS and f["envProcess"] == "sleep 1"
    assert f["labels"] == {} and f["annotations"] == {}
    assert f["replicas"] == 1 and f["invocationCount"] == 0
    created = parse_time(f["createdAt"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 60

    d = p.wait_available("long-task", 1)
    assert d["name"] == "long-task" and d["replicas"] == 1 and d["createdAt"] == f["createdAt"]
    assert p.describe("long-task", params={"namespace": NS, "usage": "1"}).status_code == 200
    assert p.describe("long-task." + NS).status_code == 200
    assert p.req("GET", "/system/functions", params={"namespace": NS}).json()[0]["name"] == \
        "long-task"
    # A second PUT is an update: 202, still one function.
    assert p.deploy(body, method="PUT").status_code == 202
    assert len(p.req("GET", "/system/functions").json()) == 1


def test_empty_list_is_array_and_info_namespaces_healthz(provider):
    p = provider()
    r = p.req("GET", "/system/functions")
    assert (r.status_code, r.text) == (200, "[]")
    info = p.req("GET", "/system/info").json()
    assert info["provider"] == "cfaas-process-provider"
    assert info["orchestration"] == "process"
    assert set(info["version"]) >= {"sha", "release"} and info["version"]["release"]
    assert p.req("GET", "/system/namespaces").json() == [NS]
    r = p.req("GET", "/system/namespace/" + NS)
    assert r.status_code == 200 and r.json()["name"] == NS
    assert p.req("GET", "/system/namespace/other").status_code == 404
    r = p.req("POST", "/system/namespace/", json={"name": "x"})
    assert r.status_code == 501 and "cannot be created, changed or deleted" in r.text
    assert p.req("GET", "/healthz").status_code == 200


def test_stack_style_deploy_and_invoke_forwards_path_query_body_headers(provider):
    p = provider()
    stack = {"service": "envfn", "image": "ghcr.io/acme/envfn:latest",
             "envVars": {"fprocess": "env", "greeting": "hi there"},
             "labels": {"com.openfaas.scale.min": "1"}, "annotations": {"team": "a"},
             "limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"},
             "readOnlyRootFilesystem": True}
    assert p.deploy(stack, method="PUT").status_code == 404
    assert p.deploy(stack).status_code == 202
    assert p.deploy(faas_cli_body("echo", "cat")).status_code == 202
    p.wait_available("envfn", 1)
    p.wait_available("echo", 1)

    d = p.describe("envfn").json()
    assert d["envVars"] == stack["envVars"]
    assert d["limits"] == {"memory": "128Mi"} and d["requests"] == {"cpu": "100m"}
    assert d["annotations"] == {"team": "a"} and d["readOnlyRootFilesystem"] is True

    r = p.invoke("envfn." + NS + "/sub/dir?x=1&y=two", method="GET",
                 headers={"X-Custom": "abc", "Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    env = dict(line.split("=", 1) for line in r.text.splitlines() if "=" in line)
    assert env["Http_Path"] == "/sub/dir"
    assert env["Http_Query"] == "x=1&y=two"
    assert env["Http_Method"] == "GET"
    assert env["Http_X_Custom"] == "abc"
    assert env["greeting"] == "hi there"
    assert env["fprocess"] == "env"
    assert env["secret_mount_path"].endswith("/secrets/" + NS)

    r = p.invoke("envfn", method="GET")
    env = dict(line.split("=", 1) for line in r.text.splitlines() if "=" in line)
    assert env["Http_Path"] == "/"

    body = bytes(range(256)) * 64
    for path in ("echo", "echo." + NS, "echo/sub?x=1"):
        r = p.invoke(path, data=body, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200 and r.content == body, path
        assert r.headers["Content-Type"] == "application/octet-stream"
    for method in ("PUT", "PATCH", "DELETE"):
        r = p.invoke("echo", method=method, data=b"m-" + method.encode())
        assert (r.status_code, r.content) == (200, b"m-" + method.encode()), method
    # OPTIONS reaches the watchdog, which does not run fprocess for it: its own answer is
    # relayed, not a provider error.
    r = p.invoke("echo", method="OPTIONS")
    assert "X-OpenFaaS-Internal" not in r.headers and r.status_code != 502
    r = p.invoke("echo", method="HEAD")
    assert "X-OpenFaaS-Internal" not in r.headers and r.status_code != 502


def test_request_errors(provider):
    p = provider()
    r = p.req("POST", "/system/functions", data=b"{not json")
    assert r.status_code == 400
    assert p.req("POST", "/system/functions", json={"image": "x", "envProcess": "cat"}) \
        .status_code == 400
    r = p.deploy({"service": "nofp", "image": "ghcr.io/acme/x:latest", "labels": {}})
    assert r.status_code == 400 and "fprocess required" in r.text
    r = p.deploy(faas_cli_body("badns", namespace="other"))
    assert r.status_code == 400 and "namespace not valid" in r.text
    r = p.deploy(faas_cli_body("sec", secrets=["missing"]))
    assert r.status_code == 400 and "unable to find secret: missing" in r.text
    assert p.deploy(faas_cli_body("Bad_Name")).status_code == 400
    assert p.deploy(faas_cli_body("dup")).status_code == 202
    r = p.deploy(faas_cli_body("dup"))
    assert r.status_code == 400 and "exists" in r.text

    assert p.describe("nope").status_code == 404
    assert p.remove("nope").status_code == 404
    assert p.scale("nope", 1).status_code == 404
    r = p.invoke("nope")
    assert r.status_code == 404 and "function not found: nope." + NS in r.text
    assert p.req("GET", "/system/functions", params={"namespace": "other"}).status_code == 400

    assert p.req("PATCH", "/system/functions").status_code == 405
    assert p.req("DELETE", "/system/info").status_code == 405
    assert p.req("GET", "/system/scale-function/dup").status_code == 405
    assert p.req("POST", "/system/function/dup").status_code == 405
    assert p.req("GET", "/system/nothing").status_code == 404


# ---------------------------------------------------------------------------------------------
# scale / remove / update


def test_scale_to_three_distinct_pids_then_zero_then_one(provider):
    p = provider(max_replicas=5)
    assert p.deploy(faas_cli_body("who", "echo $PPID")).status_code == 202
    p.wait_available("who", 1)
    r = p.scale("who", 3)
    assert (r.status_code, r.text) == (202, "")
    d = p.wait_available("who", 3)
    assert d["replicas"] == 3
    pids = p.serving_pids("who", calls=30)
    assert len(pids) == 3, pids
    assert pids == set(watchdog_pids(p.pid))

    assert p.scale("who", 6).status_code == 400
    assert p.req("POST", "/system/scale-function/who", json={"replicas": -1}).status_code == 400

    # The gateway's scaler sends the namespace in the query only.
    r = p.req("POST", "/system/scale-function/who", params={"namespace": NS},
              json={"serviceName": "who", "replicas": 0})
    assert r.status_code == 202
    wait_gone(pids)
    r = p.invoke("who")
    assert r.status_code == 503 and "No endpoints available for: who." in r.text
    fns = p.req("GET", "/system/functions").json()
    assert [(f["name"], f.get("replicas", 0)) for f in fns] == [("who", 0)]

    assert p.scale("who", 1).status_code == 202
    p.wait_available("who", 1)
    r = p.invoke("who")
    assert r.status_code == 200 and int(r.text) not in pids


def test_scale_down_stops_newest(provider):
    p = provider()
    assert p.deploy(faas_cli_body("sd", "echo $PPID",
                                  labels={"com.openfaas.scale.min": "3"})).status_code == 202
    p.wait_available("sd", 3)
    before = watchdog_pids(p.pid)
    assert len(before) == 3
    assert p.scale("sd", 1).status_code == 202
    harness.wait_until(lambda: len(watchdog_pids(p.pid)) == 1, 15, desc="one replica left")
    assert watchdog_pids(p.pid) == [min(before)]  # the oldest one stays


def test_remove_stops_every_process(provider):
    p = provider()
    assert p.deploy(faas_cli_body("gone", "echo $PPID",
                                  labels={"com.openfaas.scale.min": "2"})).status_code == 202
    p.wait_available("gone", 2)
    pids = watchdog_pids(p.pid)
    assert len(pids) == 2
    r = p.remove("gone")
    assert (r.status_code, r.text) == (202, "")
    wait_gone(pids)
    assert watchdog_pids(p.pid) == []
    assert p.describe("gone").status_code == 404
    assert p.invoke("gone").status_code == 404
    assert p.remove("gone").status_code == 404
    assert p.req("GET", "/system/functions").json() == []


def test_remove_kills_running_fprocess_children(provider):
    p = provider()
    assert p.deploy(faas_cli_body("slow", "sleep 30", envVars={"exec_timeout": "60s"})) \
        .status_code == 202
    p.wait_available("slow", 1)
    t = threading.Thread(target=lambda: p.invoke("slow", timeout=40), daemon=True)
    t.start()
    wd = watchdog_pids(p.pid)[0]
    harness.wait_until(lambda: harness_children(wd), 10, desc="sleep child running")
    kids = harness_children(wd)
    assert p.remove("slow").status_code == 202
    wait_gone([wd] + kids, timeout=15)


def harness_children(pid):
    from provider_harness import children
    return [c for c in children(pid) if pid_alive(c)]


def test_put_replaces_processes_keeps_replicas_and_created_at(provider):
    p = provider()
    body = faas_cli_body("upd", "echo v1", labels={"com.openfaas.scale.min": "2"})
    assert p.deploy(body).status_code == 202
    d1 = p.wait_available("upd", 2)
    old = watchdog_pids(p.pid)
    assert p.invoke("upd").text.strip() == "v1"
    body["envProcess"] = "echo v2"
    body["labels"] = {}
    assert p.deploy(body, method="PUT").status_code == 202
    wait_gone(old)
    d2 = p.wait_available("upd", 2)
    assert d2["replicas"] == 2 and d2["createdAt"] == d1["createdAt"]
    assert d2["envProcess"] == "echo v2"
    assert {p.invoke("upd").text.strip() for _ in range(6)} == {"v2"}


# ---------------------------------------------------------------------------------------------
# supervision and restarts


def test_killed_replica_is_restarted(provider):
    p = provider()
    assert p.deploy(faas_cli_body("phoenix", "echo $PPID")).status_code == 202
    p.wait_available("phoenix", 1)
    [old] = watchdog_pids(p.pid)
    os.kill(old, signal.SIGKILL)
    harness.wait_until(lambda: [x for x in watchdog_pids(p.pid) if x != old], 15,
                       desc="a new replica")
    p.wait_available("phoenix", 1)
    r = p.invoke("phoenix")
    assert r.status_code == 200 and int(r.text) != old
    logs = p.all_logs()
    assert "exited unexpectedly" in logs and "restarting" in logs


def test_sigterm_then_restart_restores_functions(provider, tmp_path):
    state = str(tmp_path / "state")
    p = provider(state_dir=state)
    assert p.deploy(faas_cli_body("keep", "echo $PPID",
                                  labels={"com.openfaas.scale.min": "2"})).status_code == 202
    created = p.wait_available("keep", 2)["createdAt"]
    pids = watchdog_pids(p.pid)
    assert p.terminate(timeout=20) == 0
    wait_gone(pids)
    with open(os.path.join(state, "functions.json")) as f:
        saved = json.load(f)
    assert [fn["name"] for fn in saved["functions"]] == ["keep"]

    p2 = provider(state_dir=state, port=p.port)
    d = p2.wait_available("keep", 2)
    assert d["createdAt"] == created and d["replicas"] == 2
    assert p2.invoke("keep").status_code == 200
    assert "restored keep." + NS in p2.all_logs()


def test_provider_kill9_takes_replicas_along_and_restart_restores(provider, tmp_path):
    state = str(tmp_path / "state")
    p = provider(state_dir=state)
    assert p.deploy(faas_cli_body("orphan", "echo $PPID")).status_code == 202
    assert p.scale("orphan", 2).status_code == 202
    created = p.wait_available("orphan", 2)["createdAt"]
    pids = watchdog_pids(p.pid)
    assert len(pids) == 2
    os.kill(p.pid, signal.SIGKILL)  # only the provider, not its process group
    p.p.wait(10)
    wait_gone(pids)  # PR_SET_PDEATHSIG

    p2 = provider(state_dir=state, port=p.port)
    d = p2.wait_available("orphan", 2)
    assert d["createdAt"] == created
    assert len(p2.serving_pids("orphan", calls=20)) == 2


# ---------------------------------------------------------------------------------------------
# auth


def test_basic_auth_on_management_routes_only(provider, tmp_path):
    sec = tmp_path / "auth"
    sec.mkdir()
    (sec / "basic-auth-user").write_text("admin\n")
    (sec / "basic-auth-password").write_text("  s3cret \n")
    p = provider(basic_auth="true", secret_mount_path=str(sec))
    good = ("admin", "s3cret")
    r = p.req("GET", "/system/functions")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
    assert p.req("GET", "/system/functions", auth=("admin", "wrong")).status_code == 401
    assert p.req("GET", "/system/functions", auth=("admin", "s3cret2")).status_code == 401
    assert p.req("GET", "/system/functions", headers={"Authorization": "Bearer "}) \
        .status_code == 401
    assert p.deploy(faas_cli_body("authfn", "echo ok")).status_code == 401
    assert p.deploy(faas_cli_body("authfn", "echo ok"), auth=good).status_code == 202
    for path in ("/system/info", "/system/secrets", "/system/function/authfn",
                 "/system/logs?name=authfn"):
        assert p.req("GET", path).status_code == 401, path
    assert p.req("GET", "/system/functions", auth=good).status_code == 200
    p.wait_available("authfn", 1, auth=good)
    assert p.req("GET", "/healthz").status_code == 200
    assert p.req("GET", "/system/namespaces").status_code == 200
    r = p.invoke("authfn")
    assert (r.status_code, r.text.strip()) == (200, "ok")
    assert p.scale("authfn", 0).status_code == 401
    assert p.remove("authfn").status_code == 401
    assert p.remove("authfn", auth=good).status_code == 202


def test_basic_auth_without_credential_files_refuses_to_start(registry, log_dir, tmp_path):
    p = Provider(log_dir, str(tmp_path / "state"),
                 env={"basic_auth": "true", "secret_mount_path": str(tmp_path / "none")})
    registry.add(p)
    p.start_raw = harness.Proc.start(p)
    assert p.wait_exit(10) == 2
    assert "basic-auth-user" in p.all_logs()


# ---------------------------------------------------------------------------------------------
# secrets


def test_secrets_lifecycle_and_function_reads_its_secret(provider, tmp_path):
    p = provider()
    assert p.req("GET", "/system/secrets").json() == []
    r = p.req("POST", "/system/secrets", json={"name": "api-key", "value": "v1"})
    assert (r.status_code, r.text) == (202, "")
    assert p.req("POST", "/system/secrets", json={"name": "api-key", "value": "x"}) \
        .status_code == 409
    r = p.req("GET", "/system/secrets")
    assert r.json() == [{"name": "api-key", "namespace": NS}]
    assert "v1" not in r.text
    path = tmp_path / "state" / "secrets" / NS / "api-key"
    assert path.read_text() == "v1"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    assert p.req("PUT", "/system/secrets", json={"name": "api-key", "value": "v2"}) \
        .status_code == 202
    assert p.req("PUT", "/system/secrets", json={"name": "nope", "value": "v"}).status_code == 404
    raw = bytes([0, 1, 2, 255, 10, 13])
    r = p.req("POST", "/system/secrets", params={"namespace": NS},
              json={"name": "bin.key", "value": "ignored",
                    "rawValue": base64.b64encode(raw).decode()})
    assert r.status_code == 202
    assert (tmp_path / "state" / "secrets" / NS / "bin.key").read_bytes() == raw

    for bad in ("../evil", "a/b", "UPPER", "", "-x", "a..b"):
        assert p.req("POST", "/system/secrets", json={"name": bad, "value": "v"}) \
            .status_code == 400, bad
    assert p.req("POST", "/system/secrets", json={"name": "ok", "value": "v",
                                                  "namespace": "other"}).status_code == 400

    body = faas_cli_body("reader", 'cat "$secret_mount_path/api-key"', secrets=["api-key"])
    assert p.deploy(body).status_code == 202
    p.wait_available("reader", 1)
    r = p.invoke("reader")
    assert (r.status_code, r.text) == (200, "v2")
    assert p.describe("reader").json()["secrets"] == ["api-key"]

    r = p.req("DELETE", "/system/secrets", json={"name": "api-key", "namespace": NS})
    assert (r.status_code, r.text) == (202, "")
    assert p.req("DELETE", "/system/secrets", json={"name": "api-key"}).status_code == 404
    assert [s["name"] for s in p.req("GET", "/system/secrets").json()] == ["bin.key"]


# ---------------------------------------------------------------------------------------------
# logs


def log_lines(resp):
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def test_logs_tail_since_and_follow(provider):
    p = provider()
    body = faas_cli_body("talker", 'echo "said-$Http_Query" >&2; echo ok')
    assert p.deploy(body).status_code == 202
    p.wait_available("talker", 1)
    for i in range(1, 4):
        assert p.invoke("talker?n%d" % i).status_code == 200

    def said(lines):
        out = []
        for m in lines:
            g = re.search(r"fprocess stderr: said-(\S+)", m["text"])
            if g:
                out.append(g.group(1))
        return out

    harness.wait_until(lambda: said(log_lines(p.req("GET", "/system/logs",
                                                    params={"name": "talker"}))) ==
                       ["n1", "n2", "n3"], 10, desc="three lines logged")
    r = p.req("GET", "/system/logs", params={"name": "talker", "namespace": NS, "tail": "-1",
                                             "follow": "false"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
    lines = log_lines(r)
    [wd] = watchdog_pids(p.pid)
    for m in lines:
        assert set(m) == {"name", "namespace", "instance", "timestamp", "text"}
        assert m["name"] == "talker" and m["namespace"] == NS and m["instance"] == str(wd)
        parse_time(m["timestamp"])
    tail = log_lines(p.req("GET", "/system/logs", params={"name": "talker", "tail": "2"}))
    assert tail == lines[-2:] and said(tail) == ["n2", "n3"]

    cut = now_rfc3339()
    time.sleep(0.05)
    assert log_lines(p.req("GET", "/system/logs", params={"name": "talker", "since": cut})) == []
    assert p.req("GET", "/system/logs", params={"name": "talker", "tail": "x"}).status_code == 422
    assert p.req("GET", "/system/logs", params={"name": "talker", "since": "yesterday"}) \
        .status_code == 422
    assert p.req("GET", "/system/logs", params={"name": "nope"}).status_code == 404

    got = []
    with requests.get(p.url + "/system/logs", params={"name": "talker", "since": cut,
                                                      "follow": "true"},
                      stream=True, timeout=15) as r:
        assert r.status_code == 200
        it = r.iter_lines()
        assert p.invoke("talker?n4").status_code == 200
        for line in it:
            if line.strip():
                got.append(json.loads(line))
                if said(got):
                    break
    assert said(got) == ["n4"]
    # The follower left; the provider noticed and still serves.
    harness.wait_until(lambda: "follower left" in p.all_logs(), 10, desc="follow stream freed")
    assert p.req("GET", "/healthz").status_code == 200
