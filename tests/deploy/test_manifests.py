"""Offline checks of deploy/kubernetes and deploy/docker (no cluster, no Docker engine).

Run:  /usr/bin/python3 -m pytest tests/deploy -q

Needs `kubectl` (for `kubectl kustomize`) and `node` + npm (the schema validator in
validate.js, installed from package-lock.json with `npm ci --prefix tests/deploy` when
node_modules is missing). Env names are checked against the programs' own `--help`
config tables when build/bin/ holds them; in CI (CI set) a missing binary is a failure.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
BIN_DIR = Path(os.environ.get("CFAAS_BIN_DIR", ROOT / "build" / "bin"))
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
TARGETS = [K8S] + OVERLAYS
TARGET_IDS = ["base"] + [p.name for p in OVERLAYS]

# What the issue and DESIGN §7 say each program reads. Compared with `--help` below, so a
# renamed variable shows up here before it silently stops working in a cluster.
EXPECTED_ENV = {
    "gateway": {
        "port", "metrics_port", "nats_url", "faas_nats_channel", "functions_file",
        "direct_functions", "direct_functions_suffix", "function_namespace", "max_body_bytes",
        "nats_publish_timeout", "upstream_timeout", "read_timeout", "write_timeout",
        "basic_auth", "secret_mount_path", "log_level", "log_format", "stream_replicas",
        "function_queues",
    },
    "queue-worker": {
        "nats_url", "faas_nats_channel", "faas_nats_queue_group", "faas_gateway_address",
        "faas_gateway_port", "gateway_invoke", "functions_file", "direct_functions",
        "direct_functions_suffix", "function_namespace", "max_inflight", "ack_wait",
        "upstream_timeout", "max_retry_attempts", "initial_retry_wait", "max_retry_wait",
        "retry_http_codes", "callback_timeout", "callback_max_attempts", "dead_letter_stream",
        "metrics_port", "drain_timeout", "faas_max_reconnect", "faas_reconnect_delay",
        "log_level", "log_format", "max_body_bytes", "stream_replicas",
    },
    "watchdog": {"fprocess", "port", "exec_timeout", "read_timeout", "write_timeout",
                 "max_body_bytes"},
}
DURATION_VARS = {
    "nats_publish_timeout", "upstream_timeout", "read_timeout", "write_timeout", "ack_wait",
    "initial_retry_wait", "max_retry_wait", "callback_timeout", "drain_timeout",
    "faas_reconnect_delay", "exec_timeout",
}
INT_VARS = {
    "port", "metrics_port", "max_body_bytes", "faas_gateway_port", "max_inflight", "stream_replicas",
    "max_retry_attempts", "callback_max_attempts", "faas_max_reconnect",
}
BOOL_VARS = {"direct_functions", "basic_auth", "gateway_invoke"}
RUNTIME_PACKAGES = {
    "libnats3.4", "libevent-2.1-7", "libevent-pthreads-2.1-7", "libcurl4", "libssl3", "libjansson4",
    "libuuid1",
}


# --------------------------------------------------------------------------- helpers

def require_tool(name, hint):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; these checks need it ({hint})", pytrace=False)
    return path


def duration_seconds(text):
    """Plain seconds ("60") or Go style ("1m05s", "500ms"), as the programs accept."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def program_for_image(image):
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    if repo in ("gateway", "queue-worker", "watchdog"):
        return repo
    if repo.startswith("function-"):
        return "watchdog"
    return None


def objects_of(objs, kind, namespace=None):
    return [o for o in objs if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def find(objs, kind, name, namespace="openfaas"):
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name \
                and o["metadata"].get("namespace") == namespace:
            return o
    return None


def workloads(objs):
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def containers(workload):
    return workload["spec"]["template"]["spec"]["containers"]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def our_containers(objs):
    """(workload, container, program) for every container running a cfaas image."""
    out = []
    for w in workloads(objs):
        for c in containers(w):
            prog = program_for_image(c["image"])
            if prog:
                out.append((w, c, prog))
    return out


def the_container(objs, name):
    w = find(objs, "Deployment", name)
    assert w is not None, f"Deployment openfaas/{name} missing"
    return w, containers(w)[0]


def parse_help(program):
    """Variable names (and type words) from `<program> --help`: one line per variable
    starting with its name."""
    binary = BIN_DIR / program
    if not os.access(binary, os.X_OK):
        msg = f"{binary} is not built (run scripts/build.sh first)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; in CI the binaries must exist before tests/deploy runs",
                        pytrace=False)
        pytest.skip(msg)
    run = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=20)
    assert run.returncode == 0, f"{binary} --help exited {run.returncode}: {run.stderr}"
    names = {}
    for line in (run.stdout + run.stderr).splitlines():
        tokens = line.replace("|", " ").split()
        if tokens and re.fullmatch(r"[a-z][a-z0-9_]*", tokens[0]):
            names[tokens[0]] = tokens[1].lower() if len(tokens) > 1 else ""
    assert names, f"{binary} --help printed no variable lines:\n{run.stdout}"
    return names


# --------------------------------------------------------------------------- rendering

@pytest.fixture(scope="session")
def validator():
    require_tool("node", "node >= 18 runs tests/deploy/validate.js")
    if not (HERE / "node_modules" / "kubernetes-models").is_dir():
        npm = require_tool("npm", "installs the schema packages from tests/deploy/package-lock.json")
        run = subprocess.run([npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"npm ci --prefix tests/deploy failed:\n{run.stderr}"
    return HERE / "validate.js"


RENDERED = {}


def render(target, validator):
    """`kubectl kustomize <target>` piped through validate.js; returns (objects, problems)."""
    if target in RENDERED:
        return RENDERED[target]
    kubectl = require_tool("kubectl", "`kubectl kustomize` renders the manifests")
    kz = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True,
                        timeout=120)
    assert kz.returncode == 0, f"kubectl kustomize {target} failed:\n{kz.stderr}"
    name = str(target.relative_to(ROOT))
    val = subprocess.run(["node", str(validator), "--json", "--name", name], input=kz.stdout,
                         capture_output=True, text=True, timeout=120)
    result = (json.loads(val.stdout) if val.returncode == 0 else None,
              val.stderr if val.returncode != 0 else "")
    RENDERED[target] = result
    return result


@pytest.fixture(params=TARGETS, ids=TARGET_IDS)
def objs(request, validator):
    objects, problems = render(request.param, validator)
    if objects is None:
        pytest.fail(f"{request.param.relative_to(ROOT)} does not validate:\n{problems}",
                    pytrace=False)
    return objects


@pytest.fixture
def base(validator):
    objects, problems = render(K8S, validator)
    assert objects is not None, problems
    return objects


def overlay(name, validator):
    objects, problems = render(K8S / "overlays" / name, validator)
    assert objects is not None, problems
    return objects


# --------------------------------------------------------------------------- tests

def test_tools_present():
    require_tool("kubectl", "`kubectl kustomize` renders the manifests")
    require_tool("node", "node >= 18 runs tests/deploy/validate.js")


def test_expected_overlays_exist():
    assert {p.name for p in OVERLAYS} >= {"static-functions", "keda", "hpa", "named-queue"}


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_renders_and_matches_kubernetes_schemas(target, validator):
    objects, problems = render(target, validator)
    assert objects is not None, f"schema validation failed:\n{problems}"
    assert objects


def test_validator_rejects_bad_objects(validator):
    """The validator must fail on a wrong type, an unknown field and an unknown kind."""
    bad = [
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec: {replicas: '2', selector: {}, template: {}}\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec: {replica: 2, selector: {}, template: {}}\n",
        "apiVersion: apps/v1\nkind: Deploymnt\nmetadata: {name: x}\n",
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\n"
        "spec: {triggers: []}\n",
    ]
    for doc in bad:
        run = subprocess.run(["node", str(validator)], input=doc, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 1, f"validator accepted:\n{doc}"


def test_base_has_the_openfaas_shape(base):
    have = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in base}
    want = {
        ("Namespace", None, "openfaas"), ("Namespace", None, "openfaas-fn"),
        ("StatefulSet", "openfaas", "nats"), ("Service", "openfaas", "nats"),
        ("Service", "openfaas", "nats-headless"), ("ConfigMap", "openfaas", "nats-config"),
        ("Deployment", "openfaas", "gateway"), ("Service", "openfaas", "gateway"),
        ("Service", "openfaas", "gateway-external"), ("Deployment", "openfaas", "queue-worker"),
    }
    for fn in ("figlet", "long-task", "echo"):
        want |= {("Deployment", "openfaas-fn", fn), ("Service", "openfaas-fn", fn)}
    assert want <= have, f"missing: {sorted(want - have, key=str)}"

    qw, _ = the_container(base, "queue-worker")
    assert qw["spec"]["replicas"] == 2
    assert qw["spec"]["template"]["metadata"]["labels"]["app"] == "queue-worker"
    ext = find(base, "Service", "gateway-external")
    assert ext["spec"]["type"] == "NodePort"
    assert ext["spec"]["ports"][0]["nodePort"] == 31112
    gw_ports = {p["port"] for p in find(base, "Service", "gateway")["spec"]["ports"]}
    assert gw_ports == {8080, 8082}
    assert find(base, "Service", "nats-headless")["spec"]["clusterIP"] == "None"


def test_env_names_are_ones_the_programs_read(objs):
    problems = []
    for w, c, prog in our_containers(objs):
        for name in env_of(c):
            if name not in EXPECTED_ENV[prog]:
                problems.append(f"{w['metadata']['name']}/{c['name']} ({prog}): {name}")
    assert not problems, "env vars the program does not read:\n" + "\n".join(problems)


@pytest.mark.parametrize("program", sorted(EXPECTED_ENV))
def test_help_config_table_lists_every_manifest_variable(program, validator):
    help_vars = parse_help(program)
    missing = sorted(EXPECTED_ENV[program] - set(help_vars))
    assert not missing, f"{program} --help does not list: {missing}"
    used = set()
    for target in TARGETS:
        objects, problems = render(target, validator)
        assert objects is not None, problems
        for _, c, prog in our_containers(objects):
            if prog == program:
                used |= set(env_of(c))
    assert used <= set(help_vars), f"manifests set unknown vars: {sorted(used - set(help_vars))}"


def test_env_values_parse(objs):
    problems = []
    for w, c, _ in our_containers(objs):
        for name, value in env_of(c).items():
            where = f"{w['metadata']['name']}: {name}={value!r}"
            if value is None:
                problems.append(where + " has no literal value")
            elif name in DURATION_VARS:
                try:
                    duration_seconds(value)
                except ValueError:
                    problems.append(where + " is not a duration")
            elif name in INT_VARS and not re.fullmatch(r"\d+", value):
                problems.append(where + " is not an integer")
            elif name in BOOL_VARS and value not in ("true", "false"):
                problems.append(where + " is not true/false")
            elif name == "retry_http_codes" and not re.fullmatch(r"[1-5]\d\d(,[1-5]\d\d)*", value):
                problems.append(where + " is not a list of statuses")
            elif name == "log_format" and value not in ("text", "json"):
                problems.append(where + " is not text|json")
    assert not problems, "\n".join(problems)


def container_port_numbers(c):
    return {p["containerPort"] for p in c.get("ports", [])}


def resolve_port(c, port):
    """A probe/targetPort (name or number) -> number, or None if the container lacks it."""
    for p in c.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def test_ports_and_probes_line_up(objs):
    problems = []
    for w in workloads(objs):
        for c in containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            env = env_of(c)
            prog = program_for_image(c["image"])
            for var in ("port", "metrics_port"):
                if prog and var in env and int(env[var]) not in container_port_numbers(c):
                    problems.append(f"{where}: {var}={env[var]} is not a containerPort")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                spec = c.get(probe)
                if spec is None:
                    if probe != "startupProbe":
                        problems.append(f"{where}: no {probe}")
                    continue
                action = spec.get("httpGet") or spec.get("tcpSocket")
                if resolve_port(c, action["port"]) is None:
                    problems.append(f"{where}: {probe} port {action['port']} not exposed")
    # Every Service selects a pod template in its namespace and every targetPort exists there.
    for svc in objects_of(objs, "Service"):
        ns, sel = svc["metadata"].get("namespace"), svc["spec"].get("selector", {})
        pods = [w for w in workloads(objs) if w["metadata"].get("namespace") == ns and
                sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        if not pods:
            problems.append(f"Service {ns}/{svc['metadata']['name']} selects no workload")
        for w in pods:
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if not any(resolve_port(c, target) for c in containers(w)):
                    problems.append(f"Service {svc['metadata']['name']}: targetPort {target} "
                                    f"not in {w['metadata']['name']}")
    assert not problems, "\n".join(problems)


def test_gateway_probes_and_metrics(objs):
    _, gw = the_container(objs, "gateway")
    assert gw["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gw["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert resolve_port(gw, gw["readinessProbe"]["httpGet"]["port"]) == int(env_of(gw)["port"])
    w, qw = the_container(objs, "queue-worker")
    metrics = int(env_of(qw)["metrics_port"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert qw[probe]["httpGet"]["path"] == "/healthz"
        assert resolve_port(qw, qw[probe]["httpGet"]["port"]) == metrics
    assert w["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)


def test_worker_grace_period_covers_drain(objs):
    w, qw = the_container(objs, "queue-worker")
    drain = duration_seconds(env_of(qw)["drain_timeout"])
    grace = w["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    assert grace >= drain + 5, (
        f"terminationGracePeriodSeconds={grace} must be at least drain_timeout ({drain:g}s) "
        "+ 5s, or Kubernetes SIGKILLs the worker while it still drains")
    assert duration_seconds(env_of(qw)["ack_wait"]) > 0

    gw_w, gw = the_container(objs, "gateway")
    pre_stop = gw.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    need = pause + duration_seconds(env_of(gw)["upstream_timeout"])
    grace = gw_w["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    assert grace >= need, f"gateway grace {grace}s < preStop {pause:g}s + upstream_timeout"


def service_port(objs, host, port):
    """http(s)/nats host name inside the cluster -> the Service it names, checked for port."""
    m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)(\.svc(\.cluster\.local)?)?", host)
    assert m, f"{host} is not a <service>.<namespace>[.svc.cluster.local] name"
    svc = find(objs, "Service", m.group(1), m.group(2))
    assert svc is not None, f"no Service for {host}"
    assert port in {p["port"] for p in svc["spec"]["ports"]}, f"{host} has no port {port}"
    return svc


def test_addresses_point_at_services(objs):
    for name in ("gateway", "queue-worker"):
        _, c = the_container(objs, name)
        env = env_of(c)
        for server in env["nats_url"].split(","):
            m = re.fullmatch(r"nats://([^:/]+):(\d+)", server)
            assert m, env["nats_url"]
            host, port = m.group(1), int(m.group(2))
            pod = re.fullmatch(r"([a-z0-9-]+)-(\d+)\.([a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local)",
                               host)
            if pod:
                # a StatefulSet pod's own name through its headless Service
                sts = find(objs, "StatefulSet", pod.group(1))
                assert sts is not None, f"no StatefulSet for {host}"
                assert int(pod.group(2)) < sts["spec"]["replicas"], host
                svc = service_port(objs, pod.group(3), port)
                assert svc["spec"].get("clusterIP") == "None", f"{pod.group(3)} is not headless"
                assert sts["spec"]["serviceName"] == svc["metadata"]["name"], host
            else:
                service_port(objs, host, port)
        if env.get("direct_functions") == "true":
            assert env["direct_functions_suffix"] == "svc.cluster.local"
            assert env["function_namespace"] == "openfaas-fn"
    _, qw = the_container(objs, "queue-worker")
    env = env_of(qw)
    service_port(objs, env["faas_gateway_address"], int(env["faas_gateway_port"]))
    # DNS mode: any Service in openfaas-fn is a function on port 8080.
    for d in objects_of(objs, "Deployment", "openfaas-fn"):
        svc = find(objs, "Service", d["metadata"]["name"], "openfaas-fn")
        assert svc is not None, f"function {d['metadata']['name']} has no Service"
        assert 8080 in {p["port"] for p in svc["spec"]["ports"]}
    _, gw = the_container(objs, "gateway")
    for var in ("faas_nats_channel", "function_namespace", "max_body_bytes"):
        assert env_of(gw)[var] == env[var], f"gateway and worker disagree on {var}"


def nats_conf(objs):
    cm = find(objs, "ConfigMap", "nats-config")
    assert cm is not None
    return cm["data"]["nats.conf"]


def conf_value(conf, key):
    m = re.search(rf"^\s*{key}\s*[:=]\s*(\S+)", conf, re.M)
    return m.group(1) if m else None


def test_nats_jetstream_is_durable(objs):
    conf = nats_conf(objs)
    js = re.search(r"jetstream\s*\{(.*?)\}", conf, re.S)
    assert js, "nats.conf has no jetstream block"
    assert conf_value(js.group(1), "store_dir") == "/data"
    assert conf_value(js.group(1), "sync_interval") == "always", "DESIGN §9: fsync every write"
    assert conf_value(conf, "http_port") == "8222"

    sts = find(objs, "StatefulSet", "nats")
    c = containers(sts)[0]
    m = re.fullmatch(r"nats:(\d+)\.(\d+)(\.\d+)?(-alpine)?", c["image"])
    assert m and (int(m.group(1)), int(m.group(2))) >= (2, 10), \
        f"{c['image']}: sync_interval needs nats-server >= 2.10"
    data = [v for v in c["volumeMounts"] if v["mountPath"] == "/data"]
    assert data, "/data is not mounted"
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    assert data[0]["name"] in claims, "/data must come from a PersistentVolumeClaim"

    # max_payload must hold the largest accepted body plus the 64 KiB of header room the
    # programs add to the stream's MaxMsgSize.
    max_payload = int(conf_value(conf, "max_payload") or 1048576)
    for name in ("gateway", "queue-worker"):
        _, c = the_container(objs, name)
        assert max_payload >= int(env_of(c)["max_body_bytes"]) + 64 * 1024, name


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_nats_conf_parses(target, validator, tmp_path):
    """Debian's nats-server 2.9 checks the syntax (-t). It predates sync_interval, so that
    one line is left out of its copy; the key itself is checked above."""
    server = shutil.which("nats-server")
    if server is None:
        pytest.skip("nats-server not installed (scripts/setup.sh installs it)")
    objects, problems = render(target, validator)
    assert objects is not None, problems
    conf = "\n".join(l for l in nats_conf(objects).splitlines() if "sync_interval" not in l)
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    run = subprocess.run([server, "-c", str(path), "-t"], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "POD_NAME": "nats-0"})
    assert run.returncode == 0, run.stdout + run.stderr


def test_nats_cluster_overlay(validator):
    objs = overlay("nats-cluster", validator)
    sts = find(objs, "StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    conf = nats_conf(objs)
    routes = re.findall(r"nats://(nats-\d)\.nats-headless\.openfaas\.svc\.cluster\.local:6222", conf)
    assert sorted(routes) == ["nats-0", "nats-1", "nats-2"]
    assert find(objs, "PodDisruptionBudget", "nats") is not None
    # the programs run with 3 replicas and every server, with no manual stream edit
    for name in ("gateway", "queue-worker"):
        _, c = the_container(objs, name)
        env = env_of(c)
        assert env["stream_replicas"] == "3", name
        servers = env["nats_url"].split(",")
        assert sorted(s.split("//")[1].split(".")[0] for s in servers) == \
            ["nats-0", "nats-1", "nats-2"], env["nats_url"]


def test_keda_overlay_watches_the_worker_consumer(validator):
    objs = overlay("keda", validator)
    so = find(objs, "ScaledObject", "queue-worker")
    assert so is not None
    assert so["spec"]["scaleTargetRef"]["name"] == "queue-worker"
    assert find(objs, "Deployment", so["spec"]["scaleTargetRef"]["name"]) is not None
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    md = trigger["metadata"]
    _, qw = the_container(objs, "queue-worker")
    env = env_of(qw)
    assert md["stream"] == env["faas_nats_channel"]
    assert md["consumer"] == env["faas_nats_queue_group"]
    assert md["account"] == "$G"
    assert int(md["lagThreshold"]) > 0
    host, port = md["natsServerMonitoringEndpoint"].rsplit(":", 1)
    service_port(objs, host, int(port))
    assert conf_value(nats_conf(objs), "http_port") == port
    assert so["spec"]["minReplicaCount"] >= 1 and so["spec"]["maxReplicaCount"] >= 2
    assert not objects_of(objs, "HorizontalPodAutoscaler"), "KEDA owns the HPA itself"


def test_hpa_overlay_scales_the_worker_on_cpu(validator):
    objs = overlay("hpa", validator)
    (hpa,) = objects_of(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "queue-worker"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    _, qw = the_container(objs, "queue-worker")
    assert qw["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"


def test_named_queue_overlay(validator):
    """A second worker Deployment serves the named queue; the gateway maps the function to
    it; both workers share the dead-letter stream (one place to list and re-drive)."""
    objs = overlay("named-queue", validator)
    deps = {o["metadata"]["name"]: o for o in objects_of(objs, "Deployment", "openfaas")}
    assert {"gateway", "queue-worker", "queue-worker-slow-queue"} <= deps.keys()
    _, gw = the_container(objs, "gateway")
    queues = dict(pair.split("=") for pair in env_of(gw)["function_queues"].split(","))
    assert queues == {"long-task": "slow-queue"}
    w = deps["queue-worker-slow-queue"]
    assert w["spec"]["selector"]["matchLabels"] == {"app": "queue-worker-slow-queue"}
    assert w["spec"]["template"]["metadata"]["labels"]["app"] == "queue-worker-slow-queue"
    slow = env_of(w["spec"]["template"]["spec"]["containers"][0])
    default = env_of(deps["queue-worker"]["spec"]["template"]["spec"]["containers"][0])
    assert slow["faas_nats_channel"] == "slow-queue" != default["faas_nats_channel"]
    assert slow["dead_letter_stream"] == default["dead_letter_stream"]
    assert slow["max_body_bytes"] == default["max_body_bytes"]
    # long-task exists in the base, so the mapping names a real function
    assert any(o["metadata"]["name"] == "long-task" for o in objects_of(objs, "Deployment"))


def rules_file_as_json():
    """deploy/prometheus/cfaas.rules.yml parsed by the validator's own YAML package."""
    script = ("const Y=require('yaml');const fs=require('fs');"
              "process.stdout.write(JSON.stringify(Y.parse(fs.readFileSync(process.argv[1],'utf8'))))")
    run = subprocess.run(["node", "-e", script, str(ROOT / "deploy" / "prometheus" /
                                                   "cfaas.rules.yml")],
                         cwd=HERE, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_prometheus_operator_overlay(validator):
    """PodMonitors scrape the ports the pods name; the PrometheusRule carries exactly the
    rules of deploy/prometheus/cfaas.rules.yml (regenerate: scripts/gen-prometheusrule.sh)."""
    objs = overlay("prometheus-operator", validator)
    for name in ("gateway", "queue-worker"):
        pm = find(objs, "PodMonitor", name)
        assert pm is not None, name
        dep = find(objs, "Deployment", name)
        assert pm["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        _, c = the_container(objs, name)
        (ep,) = pm["spec"]["podMetricsEndpoints"]
        named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        assert ep["port"] in named, (name, ep, named)
        assert str(named[ep["port"]]) == env_of(c)["metrics_port"], (name, named)
        # the plain-Prometheus route: the pod annotations name the same port
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(named[ep["port"]])
    rule = find(objs, "PrometheusRule", "cfaas")
    assert rule is not None
    assert rule["spec"]["groups"] == rules_file_as_json()["groups"], \
        "prometheusrule.yaml is stale: run scripts/gen-prometheusrule.sh"


def test_static_functions_overlay(validator):
    objs = overlay("static-functions", validator)
    cms = [o for o in objects_of(objs, "ConfigMap", "openfaas")
           if "functions.json" in o.get("data", {})]
    assert len(cms) == 1
    doc = json.loads(cms[0]["data"]["functions.json"])
    names = set()
    for fn in doc["functions"]:
        assert {"name", "namespace", "url"} <= fn.keys()
        names.add(fn["name"])
        m = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", fn["url"])
        assert m, fn["url"]
        service_port(objs, m.group(1), int(m.group(2)))
    assert {"figlet", "long-task", "echo"} <= names
    for name in ("gateway", "queue-worker"):
        w, c = the_container(objs, name)
        env = env_of(c)
        assert env["direct_functions"] == "false"
        path = Path(env["functions_file"])
        mount = [m for m in c["volumeMounts"] if m["mountPath"] == str(path.parent)]
        assert mount, f"{name}: {path.parent} not mounted"
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        assert vols[mount[0]["name"]]["configMap"]["name"] == cms[0]["metadata"]["name"]


def test_containers_run_unprivileged(objs):
    problems = []
    for w in workloads(objs):
        pod = w["spec"]["template"]["spec"]
        for c in containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation not false")
            if not c.get("resources", {}).get("requests"):
                problems.append(f"{where}: no resource requests")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- images

def dockerfile_stages():
    text = DOCKERFILE.read_text()
    stages, current = {}, None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        m = re.match(r"\s*FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or f"#{len(stages)}"
            stages[current] = {"from": m.group(1), "lines": []}
        elif current and line.strip() and not line.lstrip().startswith("#"):
            stages[current]["lines"].append(line.strip())
    return text, stages


def test_dockerfile_targets_and_build_commands():
    text, stages = dockerfile_stages()
    assert {"gateway", "queue-worker", "watchdog"} <= stages.keys()
    assert re.search(r"ARG DEBIAN_IMAGE=debian:bookworm\b", text)
    build = " ".join(stages["build"]["lines"])
    assert stages["build"]["from"] in ("${DEBIAN_IMAGE}", "debian:bookworm")
    # Same commands as the README: the setup script, then the CMake build script.
    assert re.search(r"\./scripts/setup\.sh.*\./scripts/build\.sh", build), build
    for script in ("scripts/setup.sh", "scripts/build.sh"):
        assert os.access(ROOT / script, os.X_OK), f"{script} missing or not executable"
    runtime = " ".join(stages["runtime"]["lines"])
    installed = set(re.findall(r"\b(lib[a-z0-9.+-]+)", runtime.split("install", 1)[1]))
    assert RUNTIME_PACKAGES <= installed, f"runtime lacks {RUNTIME_PACKAGES - installed}"
    assert not [p for p in installed if p.endswith("-dev")], "runtime stage installs -dev packages"
    assert re.search(r"^USER 10001", text, re.M), "runtime must switch to a numeric non-root user"
    for target in ("gateway", "queue-worker", "watchdog"):
        entry = [l for l in stages[target]["lines"] if l.startswith("ENTRYPOINT")]
        assert entry, f"{target}: no ENTRYPOINT"
        argv = json.loads(entry[0][len("ENTRYPOINT"):])
        assert argv[-1].endswith("/" + target), argv
        assert argv[0].endswith("tini"), "PID 1 must forward SIGTERM (tini)"


def test_manifest_images_are_dockerfile_targets(base):
    _, stages = dockerfile_stages()
    for w, c, _ in our_containers(base):
        repo = c["image"].rsplit("/", 1)[-1].split(":", 1)[0]
        assert repo in stages, f"{w['metadata']['name']}: no Dockerfile target for {c['image']}"


def test_readme_uses_the_same_scripts():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not written yet")
    seen, todo = set(), [readme]
    while todo:
        f = todo.pop()
        for ref in re.findall(r"scripts/[\w.-]+\.sh", f.read_text(errors="replace")):
            if ref not in seen and (ROOT / ref).exists():
                seen.add(ref)
                todo.append(ROOT / ref)
    assert {"scripts/setup.sh", "scripts/build.sh"} <= seen, \
        f"README (directly or through its scripts) uses {sorted(seen)}"


def test_runtime_packages_cover_the_binaries():
    """Each shared library a built binary needs comes from a package the runtime stage
    installs (or from libc6, which debian:bookworm has)."""
    readelf = shutil.which("readelf")
    if readelf is None or shutil.which("dpkg") is None:
        pytest.skip("readelf/dpkg not available")
    _, stages = dockerfile_stages()
    runtime = " ".join(stages["runtime"]["lines"])
    allowed = set(re.findall(r"\b(lib[a-z0-9.+-]+)", runtime)) | {"libc6", "libgcc-s1"}
    ldconfig = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    problems, missing = [], []
    for program in ("gateway", "queue-worker", "watchdog"):
        binary = BIN_DIR / program
        if not binary.exists():
            missing.append(str(binary))
            continue
        dyn = subprocess.run([readelf, "-d", str(binary)], capture_output=True, text=True).stdout
        for soname in re.findall(r"\(NEEDED\).*\[(.+?)\]", dyn):
            if re.match(r"lib(asan|ubsan|tsan|lsan)", soname):
                continue  # sanitizer builds are not what the image ships
            m = re.search(rf"^\s*{re.escape(soname)} \(.*x86-64.*\) => (\S+)", ldconfig, re.M) \
                or re.search(rf"^\s*{re.escape(soname)} .*=> (\S+)", ldconfig, re.M)
            if not m:
                problems.append(f"{program}: {soname} not found by ldconfig")
                continue
            owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))],
                                   capture_output=True, text=True)
            if owner.returncode != 0:
                owner = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True)
            pkg = owner.stdout.split(":", 1)[0].strip()
            if pkg not in allowed:
                problems.append(f"{program}: {soname} comes from {pkg or '?'}, "
                                "which the runtime stage does not install")
    assert not problems, "\n".join(problems)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"not built: {missing}", pytrace=False)
        pytest.skip(f"not built: {missing}")


# --------------------------------------------------------------------------- docs

def test_docs_show_the_commands_users_need():
    k8s = (ROOT / "docs" / "kubernetes.md").read_text()
    for cmd in ("kubectl apply -k deploy/kubernetes",
                "kubectl port-forward -n openfaas svc/gateway 8080:8080",
                "kubectl logs -n openfaas deploy/queue-worker -f",
                "-l app=queue-worker",
                "kubectl scale -n openfaas deploy/queue-worker --replicas=5",
                "X-Callback-Url", "--target gateway"):
        assert cmd in k8s, f"docs/kubernetes.md lacks `{cmd}`"
    ops = (ROOT / "docs" / "operations.md").read_text()
    for word in ("sync_interval", "max_payload", "max_body_bytes", "drain_timeout",
                 "terminationGracePeriodSeconds", "WorkQueue"):
        assert word in ops, f"docs/operations.md lacks {word}"
