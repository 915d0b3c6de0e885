"""Provider mode (issue 12, points 1 and 5): the gateway resolves and invokes functions
through an OpenFaaS provider and relays /system/* to it, here the process provider
(build/bin/provider). Every request below is the one faas-cli 0.16.37 makes
(reference/openfaas-provider.md §4): same method, path, query, headers and JSON body.

Real nats-server, provider (running real watchdog processes), gateway and queue-worker.
"""

import base64
import json

import requests

import harness
from delivery import assert_202, read_stream, start_worker
from provider_harness import Provider, watchdog_pids

CLI_UA = "faas-cli/0.16.37"
NS = "openfaas-fn"


class ProviderStack:
    """nats + process provider + gateway in provider mode (+ workers), on random ports."""

    def __init__(self, stack, tmp_path, auth=None, gateway_env=None):
        self.stack = stack
        self.auth = auth
        stack.start(workers=0, fixtures=(), gateway=False)
        env = {}
        if auth is not None:
            secrets = tmp_path / "secrets"
            secrets.mkdir()
            (secrets / "basic-auth-user").write_text(auth[0] + "\n")
            (secrets / "basic-auth-password").write_text(auth[1] + "\n")
            env = {"basic_auth": "true", "secret_mount_path": str(secrets)}
        self.provider = Provider(stack.log_dir, str(tmp_path / "provider-state"), env=env)
        stack.registry.add(self.provider)
        self.provider.start()
        genv = {"nats_url": stack.nats.url, "functions_provider_url": self.provider.url,
                "functions_cache_ttl": "1s", "log_level": "debug",
                "nats_publish_timeout": "3s"}
        genv.update(env)
        genv.update(gateway_env or {})
        stack.gateway = harness.Gateway(stack.log_dir, genv)
        stack.registry.add(stack.gateway)
        stack.gateway.start().wait_ready()
        self.gw = stack.gateway.url

    def cli(self, method, path, body=None, **kw):
        """A request as faas-cli's proxy.Client sends it."""
        headers = {"User-Agent": CLI_UA}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.auth is not None:
            token = base64.b64encode(("%s:%s" % self.auth).encode()).decode()
            headers["Authorization"] = "Basic " + token
        else:
            headers["Authorization"] = "Bearer "  # faas-cli sends it even without a token
        data = json.dumps(body) if body is not None else None
        return requests.request(method, self.gw + path, data=data, headers=headers, timeout=60,
                                **kw)

    def deploy(self, body):
        """faas-cli deploy: PUT, and POST when the PUT says 404."""
        r = self.cli("PUT", "/system/functions", body)
        if r.status_code == 404:
            r = self.cli("POST", "/system/functions", body)
        return r

    def describe(self, name):
        return self.cli("GET", "/system/function/%s?usage=1" % name)

    def wait_available(self, name, n=1, timeout=20):
        def ok():
            r = self.describe(name)
            return r.status_code == 200 and r.json().get("availableReplicas", 0) >= n
        harness.wait_until(ok, timeout, desc="%s has %d available replica(s)" % (name, n))
        return self.describe(name).json()

    def invoke(self, name, body=b"", async_=False, headers=None, path="", query=None):
        """faas-cli invoke: always <name>.<namespace>, go-sdk client (no User-Agent of its own
        beyond faas-cli's, Content-Type text/plain)."""
        h = {"Content-Type": "text/plain",
             "User-Agent": "faas-cli/0.16.37 (openfaas; linux; amd64)"}
        h.update(headers or {})
        route = "async-function" if async_ else "function"
        return requests.post("%s/%s/%s.%s%s" % (self.gw, route, name, NS, path), data=body,
                             headers=h, params=query, timeout=60)


def stack_yaml_deploy(name, fprocess, annotations=None):
    """The body faas-cli sends for a stack.yml function with `environment: {fprocess: ...}`
    and no lang (so no template lookup): labels and annotations always sent."""
    return {"service": name, "image": "ghcr.io/acme/%s:latest" % name,
            "envVars": {"fprocess": fprocess, "write_debug": "false"},
            "labels": {}, "annotations": annotations or {}}


def test_faas_cli_lifecycle_through_the_gateway(stack, tmp_path):
    """deploy (PUT 404 → POST 202), list, describe, invoke, invoke --async, scale, remove:
    each as faas-cli sends it, each answered as faas-cli expects."""
    ps = ProviderStack(stack, tmp_path)
    start_worker(stack, "worker-1", gateway=stack.gateway)

    # deploy --name long-task --image any --fprocess "sleep 1" (flags: no labels/annotations
    # beyond the empty maps)
    body = {"service": "long-task", "image": "any", "envProcess": "sleep 1", "labels": {},
            "annotations": {}}
    put = ps.cli("PUT", "/system/functions", body)
    assert put.status_code == 404, (put.status_code, put.text)
    post = ps.cli("POST", "/system/functions", body)
    assert post.status_code in (200, 202), (post.status_code, post.text)
    # deploy -f stack.yml: fprocess from the function's environment
    r = ps.deploy(stack_yaml_deploy("echo", "cat"))
    assert r.status_code in (200, 202), (r.status_code, r.text)
    # a second deploy is a rolling update: PUT answers 200/202
    again = ps.cli("PUT", "/system/functions", stack_yaml_deploy("echo", "cat"))
    assert again.status_code in (200, 202), (again.status_code, again.text)

    # invoke right after the deploy: the gateway looks the new name up at once
    ps.wait_available("echo")
    r = ps.invoke("echo", b"hello provider")
    assert r.status_code == 200 and r.text == "hello provider", (r.status_code, r.text)
    assert r.headers.get("X-Call-Id")
    # path and query reach the function through the provider
    ps.deploy(stack_yaml_deploy("where", 'echo "$Http_Path?$Http_Query"'))
    ps.wait_available("where")
    r = ps.invoke("where", path="/a/b", query={"x": "1"})
    assert r.status_code == 200 and r.text.strip() == "/a/b?x=1", r.text

    # list: FunctionStatus array, replicas, and the gateway's own invocation counts
    r = ps.cli("GET", "/system/functions")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    fns = {f["name"]: f for f in r.json()}
    assert {"long-task", "echo", "where"} <= fns.keys(), fns
    assert fns["echo"]["invocationCount"] == 1 and fns["where"]["invocationCount"] == 1
    assert fns["long-task"]["invocationCount"] == 0
    assert fns["echo"]["replicas"] == 1 and fns["echo"]["image"] == "ghcr.io/acme/echo:latest"
    assert isinstance(fns["echo"]["invocationCount"], int)
    r = ps.cli("GET", "/system/functions?namespace=" + NS)
    assert r.status_code == 200 and {f["name"] for f in r.json()} >= {"echo", "where"}

    # describe
    d = ps.wait_available("long-task")
    assert d["name"] == "long-task" and d["envProcess"] == "sleep 1", d
    assert d["availableReplicas"] == 1 and d["invocationCount"] == 0
    assert ps.describe("nope").status_code == 404

    # invoke --async: 202, then the worker runs it through the gateway and posts the callback
    r = ps.invoke("echo", b"later", async_=True, headers={"X-Callback-Url": stack.sink.url})
    cid = assert_202(r)
    [cb] = stack.sink.wait_for(1, 20, call_id=cid)
    assert cb["body"] == b"later" and cb["headers"].get("X-Function-Status") == "200"
    fns = {f["name"]: f for f in ps.cli("GET", "/system/functions").json()}
    assert fns["echo"]["invocationCount"] == 2, fns["echo"]  # the async call counted once

    # scale (go-sdk ScaleFunction body): 3 processes behind the one address
    r = ps.cli("POST", "/system/scale-function/echo",
               {"serviceName": "echo", "replicas": 3, "namespace": NS})
    assert r.status_code in (200, 202), (r.status_code, r.text)
    d = ps.wait_available("echo", 3)
    assert d["replicas"] == 3
    ps.deploy(stack_yaml_deploy("pid", "echo $PPID"))
    ps.cli("POST", "/system/scale-function/pid",
           {"serviceName": "pid", "replicas": 3, "namespace": NS})
    ps.wait_available("pid", 3)
    pids = {ps.invoke("pid").text.strip() for _ in range(30)}
    assert len(pids) == 3, pids
    assert len(watchdog_pids(ps.provider.pid)) >= 3 + 3 + 1 + 1

    # remove: DELETE with a body; then the function is gone for every route
    r = ps.cli("DELETE", "/system/functions", {"functionName": "long-task", "namespace": NS})
    assert r.status_code in (200, 202), (r.status_code, r.text)
    assert ps.describe("long-task").status_code == 404
    r = ps.invoke("long-task")
    assert r.status_code == 404, (r.status_code, r.text)
    r = ps.invoke("long-task", async_=True)
    assert r.status_code == 404, (r.status_code, r.text)
    r = ps.cli("DELETE", "/system/functions", {"functionName": "long-task", "namespace": NS})
    assert r.status_code == 404  # faas-cli: "No existing function to remove"

    # version: GatewayInfo around the provider's ProviderInfo
    info = ps.cli("GET", "/system/info").json()
    assert info["provider"]["orchestration"] == "process", info
    assert info["provider"]["version"]["release"], info
    assert info["version"]["release"] and info["arch"], info
    # namespaces (faas-cli namespace list)
    r = ps.cli("GET", "/system/namespaces")
    assert r.status_code == 200 and NS in r.json()


def test_basic_auth_and_the_gateways_own_credentials(stack, tmp_path):
    """With basic_auth on both, a client needs the credentials for /system/*, the gateway
    presents its own to the provider (also for its cache), and invocations need none."""
    ps = ProviderStack(stack, tmp_path, auth=("admin", "pw-123"))
    r = requests.get(ps.gw + "/system/functions", timeout=10)
    assert r.status_code == 401 and "Basic" in r.headers.get("WWW-Authenticate", "")
    r = requests.get(ps.gw + "/system/functions", auth=("admin", "wrong"), timeout=10)
    assert r.status_code == 401
    r = ps.deploy(stack_yaml_deploy("echo", "cat"))
    assert r.status_code in (200, 202), (r.status_code, r.text)
    ps.wait_available("echo")
    r = ps.invoke("echo", b"no auth needed")
    assert r.status_code == 200 and r.text == "no auth needed"
    # the provider itself refuses the same request without credentials
    assert requests.get(ps.provider.url + "/system/functions", timeout=10).status_code == 401
    # a client's own Authorization on /system is replaced by the gateway's (the provider
    # would refuse a Bearer token)
    r = ps.cli("GET", "/system/function/echo")
    assert r.status_code == 200 and r.json()["name"] == "echo"


def test_annotations_from_the_provider_choose_queue_and_retries(stack, tmp_path):
    """A function deployed with com.openfaas.queue and com.openfaas.retry.* annotations gets
    its queue and retry policy from the provider's FunctionStatus."""
    ps = ProviderStack(stack, tmp_path)
    ann = {"com.openfaas.queue": "provider-q", "com.openfaas.retry.attempts": "2",
           "com.openfaas.retry.codes": "500", "com.openfaas.retry.min_wait": "100ms",
           "com.openfaas.retry.max_wait": "200ms"}
    assert ps.deploy(stack_yaml_deploy("flaky", "exit 3", ann)).status_code in (200, 202)
    ps.wait_available("flaky")
    cid = assert_202(ps.invoke("flaky", b"x", async_=True,
                               headers={"X-Callback-Url": stack.sink.url}))
    msgs = [m for m in read_stream(stack.nats, "provider-q") if m.subject == "provider-q." + cid]
    assert len(msgs) == 1
    start_worker(stack, "worker-q", gateway=stack.gateway, faas_nats_channel="provider-q")
    [cb] = stack.sink.wait_for(1, 30, call_id=cid)
    assert cb["headers"].get("X-Function-Status") == "500"
    assert cb["headers"].get("X-Retry") == "2" and cb["headers"].get("X-Retry-Max") == "2"


def test_unknown_names_and_a_provider_that_is_down(stack, tmp_path):
    """An unknown function is 404 on both routes (nothing queued); a burst of unknown names
    costs the provider one lookup each per second at most; with the provider down the
    gateway answers 502 for /system and keeps invoking nothing it cannot reach."""
    ps = ProviderStack(stack, tmp_path)
    r = ps.invoke("ghost")
    assert r.status_code == 404 and "ghost" in r.text, (r.status_code, r.text)
    r = ps.invoke("ghost", async_=True)
    assert r.status_code == 404
    assert stack.nats.stream_last_seq("faas-request") in (0, None)
    lookups = "provider lookup of ghost." + NS
    before = stack.gateway.all_logs().count(lookups)
    assert before >= 1
    for _ in range(20):
        assert ps.invoke("ghost").status_code == 404
    after = stack.gateway.all_logs().count(lookups)
    assert after - before <= 2, (before, after)

    ps.deploy(stack_yaml_deploy("echo", "cat"))
    ps.wait_available("echo")
    assert ps.invoke("echo", b"up").status_code == 200
    ps.provider.kill9()
    r = ps.cli("GET", "/system/functions")
    assert r.status_code == 502, (r.status_code, r.text)
    r = ps.invoke("echo", b"down")
    assert r.status_code == 502, (r.status_code, r.text)
    # the gateway itself stays healthy
    assert requests.get(ps.gw + "/healthz", timeout=5).status_code == 200


def test_function_deployed_behind_the_gateways_back_is_found_at_once(stack, tmp_path):
    """With a list refresh only every hour, a function deployed straight at the provider
    (not through the gateway) is still found on its first call: the unknown name is looked
    up once (GET /system/function/<name>) while the request waits, then cached. A function
    removed behind the gateway's back answers the provider's 404 and leaves the cache."""
    ps = ProviderStack(stack, tmp_path, gateway_env={"functions_cache_ttl": "1h"})
    r = ps.provider.req("POST", "/system/functions", json=stack_yaml_deploy("late", "cat"))
    assert r.status_code in (200, 202), (r.status_code, r.text)
    harness.wait_until(lambda: ps.provider.req("GET", "/system/function/late").json()
                       .get("availableReplicas", 0) >= 1, 20, desc="late available")
    r = ps.invoke("late", b"found")
    assert r.status_code == 200 and r.text == "found", (r.status_code, r.text)
    logs = stack.gateway.all_logs()
    assert logs.count("provider lookup of late." + NS) == 1, logs[-2000:]
    for _ in range(5):
        assert ps.invoke("late", b"again").status_code == 200
    assert stack.gateway.all_logs().count("provider lookup of late." + NS) == 1
    r = ps.provider.req("DELETE", "/system/functions", json={"functionName": "late"})
    assert r.status_code in (200, 202)
    r = ps.invoke("late", b"gone")
    assert r.status_code in (404, 503), (r.status_code, r.text)
    # describe through the gateway drops it from the cache: now the gateway's own 404
    assert ps.describe("late").status_code == 404
    r = ps.invoke("late", b"gone", async_=True)
    assert r.status_code == 404, (r.status_code, r.text)


def test_secrets_logs_and_namespaces_are_relayed(stack, tmp_path):
    """faas-cli secret create/list/update/remove, logs (its default follow=true) and namespace
    list go through the gateway to the provider; a function reads its secret."""
    ps = ProviderStack(stack, tmp_path)
    r = ps.cli("POST", "/system/secrets", {"name": "api-key", "value": "s3cr3t"})
    assert r.status_code in (200, 201, 202), (r.status_code, r.text)
    r = ps.cli("POST", "/system/secrets", {"name": "api-key", "value": "again"})
    assert r.status_code == 409
    listed = ps.cli("GET", "/system/secrets").json()
    assert [s["name"] for s in listed] == ["api-key"] and "value" not in listed[0], listed
    body = {"service": "reader", "image": "any", "secrets": ["api-key"],
            "envProcess": 'cat "$secret_mount_path/api-key"; echo " logged" >&2',
            "labels": {}, "annotations": {}}
    assert ps.deploy(body).status_code in (200, 202)
    ps.wait_available("reader")
    r = ps.invoke("reader")
    assert r.status_code == 200 and r.text == "s3cr3t", (r.status_code, r.text)
    r = ps.cli("PUT", "/system/secrets", {"name": "api-key", "value": "rotated"})
    assert r.status_code in (200, 202)
    assert ps.invoke("reader").text == "rotated"
    # faas-cli logs reader: follow=true&name=reader&tail=-1; it ends with the lines so far
    def logged():
        r = ps.cli("GET", "/system/logs?follow=true&name=reader&tail=-1")
        lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
        return r.status_code == 200 and any("logged" in x["text"] for x in lines)
    harness.wait_until(logged, 15, desc="function logs through the gateway")
    assert ps.cli("GET", "/system/logs?name=nope").status_code == 404
    r = ps.cli("DELETE", "/system/secrets", {"name": "api-key"})
    assert r.status_code in (200, 202), (r.status_code, r.text)
    assert ps.cli("DELETE", "/system/secrets", {"name": "api-key"}).status_code == 404
    assert ps.cli("GET", "/system/namespaces").json() == [NS]
