"""E2E harness: real nats-server, real binaries, Python fixture functions and a callback recorder.

Everything here is standard library + requests. No test may hang: every wait has a deadline,
every process is started in its own session and killed (whole process group) at teardown.
"""

import atexit
import contextlib
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import requests

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NATS_SERVER = (os.environ.get("CFAAS_NATS_SERVER")
               or shutil.which("nats-server", path=os.environ.get("PATH", "") +
                               ":/usr/sbin:/usr/bin:/sbin:/usr/local/bin")
               or "/usr/sbin/nats-server")


def bin_dir():
    return os.path.abspath(os.environ.get("CFAAS_BIN_DIR") or os.path.join(REPO_ROOT, "build", "bin"))


def bin_path(name):
    return os.path.join(bin_dir(), name)


# --------------------------------------------------------------------------------------------
# ports and waiting

_used_ports = set()
_port_lock = threading.Lock()


def free_port():
    """A currently free loopback TCP port, never handed out twice in this test session."""
    with _port_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _used_ports:
                _used_ports.add(port)
                return port
    raise RuntimeError("could not allocate a free port")


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class WaitTimeout(AssertionError):
    pass


class ProcessDied(AssertionError):
    """Raised while waiting on a process that has exited; never swallowed by wait_until."""


def wait_until(pred, timeout, interval=0.05, desc="condition"):
    """Poll pred() until it returns a truthy value; return that value. Raise WaitTimeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except ProcessDied:
            raise
        except Exception as e:  # noqa: BLE001 - polling helper
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, desc)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise WaitTimeout(msg)
        time.sleep(interval)


def http_status(url, timeout=1.0):
    try:
        return requests.get(url, timeout=timeout).status_code
    except requests.RequestException:
        return None


# --------------------------------------------------------------------------------------------
# processes


_ALL_PROCS = []


@atexit.register
def _kill_all_at_exit():
    for p in _ALL_PROCS:
        with contextlib.suppress(Exception):
            p.cleanup()


class Proc:
    """A child process in its own session, output captured to files in a log directory."""

    name = "proc"

    def __init__(self, argv, env, log_dir, name=None):
        self.argv = list(argv)
        self.env = dict(env)
        self.log_dir = log_dir
        if name:
            self.name = name
        os.makedirs(log_dir, exist_ok=True)
        self.stdout_path = os.path.join(log_dir, self.name + ".stdout.log")
        self.stderr_path = os.path.join(log_dir, self.name + ".stderr.log")
        self.p = None
        self.starts = 0

    # -- lifecycle
    def start(self):
        assert self.p is None or self.p.poll() is not None, "%s already running" % self.name
        if not os.path.exists(self.argv[0]):
            raise AssertionError("binary not found: %s (build with ./scripts/build.sh or set "
                                 "CFAAS_BIN_DIR)" % self.argv[0])
        self.starts += 1
        mode = "ab"
        out = open(self.stdout_path, mode)
        err = open(self.stderr_path, mode)
        banner = ("\n===== start #%d: %s =====\n" % (self.starts, " ".join(self.argv))).encode()
        if self.starts > 1:
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
        self.p = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        _ALL_PROCS.append(self)
        out.close()
        err.close()
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    @property
    def returncode(self):
        return None if self.p is None else self.p.poll()

    def _signal_group(self, sig):
        if self.p is None:
            return
        try:
            os.killpg(self.p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def terminate(self, timeout=15.0):
        """SIGTERM the process, wait; SIGKILL the whole group if it does not exit in time.
        Returns the exit code (negative = killed by signal)."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.p.wait(5)
        self._signal_group(signal.SIGKILL)  # stray children of the group
        return self.p.returncode

    def kill9(self):
        if self.p is None:
            return None
        self._signal_group(signal.SIGKILL)
        try:
            self.p.kill()
        except ProcessLookupError:
            pass
        self.p.wait(10)
        return self.p.returncode

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self):
        """Teardown: make sure nothing of ours survives."""
        if self.p is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            self.p.kill()
        except ProcessLookupError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass

    # -- logs
    def log_text(self, stream="stdout"):
        path = self.stdout_path if stream == "stdout" else self.stderr_path
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def all_logs(self):
        return self.log_text("stdout") + self.log_text("stderr")

    def tail(self, n=60):
        parts = []
        for stream in ("stdout", "stderr"):
            lines = self.log_text(stream).splitlines()
            if lines:
                parts.append("--- %s %s (last %d of %d lines) ---\n%s" % (
                    self.name, stream, min(n, len(lines)), len(lines), "\n".join(lines[-n:])))
        rc = self.returncode
        state = "running" if rc is None and self.p else "exited rc=%r" % (rc,)
        return "[%s pid=%s %s]\n%s" % (self.name, self.pid, state, "\n".join(parts))

    def wait_ready(self, timeout):
        raise NotImplementedError

    def _check_alive(self, what):
        if self.p is not None and self.p.poll() is not None:
            raise ProcessDied("%s exited (rc=%r) while waiting for %s\n%s" % (
                self.name, self.p.returncode, what, self.tail(40)))


def vm_kib(pid, field="VmRSS"):
    """A /proc/<pid>/status figure in KiB (VmRSS, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("%s not in /proc/%d/status" % (field, pid))


def read_to_close(s):
    """Everything the peer sends on socket `s` until it closes; closes `s`."""
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def base_env(extra=None):
    """Clean environment for a child: nothing from the developer's shell leaks into config."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "HOME": os.environ.get("HOME", "/tmp")}
    for k, v in os.environ.items():  # sanitizer/debug knobs only
        if k.startswith(("ASAN_", "UBSAN_", "LSAN_", "TSAN_", "LD_LIBRARY_PATH", "MALLOC_")):
            env[k] = v
    if extra:
        env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


class NatsServer(Proc):
    name = "nats"

    def __init__(self, log_dir, store_dir=None, port=None, mon_port=None, extra_args=()):
        self.port = port or free_port()
        self.mon_port = mon_port or free_port()
        self.store_dir = store_dir or os.path.join(log_dir, "nats-store")
        os.makedirs(self.store_dir, exist_ok=True)
        argv = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.mon_port), "--store_dir", self.store_dir] + list(extra_args)
        super().__init__(argv, base_env(), log_dir)

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    @property
    def mon_url(self):
        return "http://127.0.0.1:%d" % self.mon_port

    def wait_ready(self, timeout=15.0):
        def ok():
            self._check_alive("nats readiness")
            if not port_open(self.port):
                return False
            r = requests.get(self.mon_url + "/healthz", timeout=1)
            return r.status_code == 200
        wait_until(ok, timeout, desc="nats-server ready on %d" % self.port)
        return self

    def start(self):
        super().start()
        return self.wait_ready()

    def restart(self, timeout=15.0):
        """Start again on the same client port, monitor port and store dir."""
        if self.alive():
            self.kill9()
        # the port may linger briefly; nats-server binds with SO_REUSEADDR, so retry a little
        deadline = time.monotonic() + timeout
        while True:
            Proc.start(self)
            try:
                return self.wait_ready(max(1.0, deadline - time.monotonic()))
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def stop(self, timeout=10.0):
        return self.terminate(timeout)

    # -- inspection via the monitoring port
    def jsz(self):
        r = requests.get(self.mon_url + "/jsz?streams=true&consumers=true&config=true", timeout=5)
        r.raise_for_status()
        return r.json()

    def stream_state(self, name):
        """State dict of a stream ({'messages','last_seq',...}) or None if it does not exist."""
        for acct in self.jsz().get("account_details") or []:
            for st in acct.get("stream_detail") or []:
                if st.get("name") == name:
                    return st.get("state") or {}
        return None

    def stream_last_seq(self, name):
        st = self.stream_state(name)
        return 0 if st is None else int(st.get("last_seq", 0))

    def stream_detail(self, name):
        for acct in self.jsz().get("account_details") or []:
            for st in acct.get("stream_detail") or []:
                if st.get("name") == name:
                    return st
        return None


class Gateway(Proc):
    name = "gateway"

    def __init__(self, log_dir, env, name=None):
        self.port = int(env.get("port") or free_port())
        env = dict(env)
        env["port"] = str(self.port)
        if "metrics_port" not in env:
            env["metrics_port"] = str(free_port())
        self.metrics_port = int(env["metrics_port"])
        super().__init__([bin_path("gateway")], base_env(env), log_dir, name=name)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def wait_ready(self, timeout=20.0, readyz=True):
        def ok():
            self._check_alive("gateway /healthz")
            return http_status(self.url + "/healthz") == 200
        wait_until(ok, timeout, desc="gateway /healthz on %d" % self.port)
        if readyz:
            def rdy():
                self._check_alive("gateway /readyz")
                return http_status(self.url + "/readyz") == 200
            wait_until(rdy, timeout, desc="gateway /readyz on %d" % self.port)
        return self

    def metrics(self):
        return requests.get("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5).text


class Worker(Proc):
    name = "worker"

    def __init__(self, log_dir, env, name=None):
        env = dict(env)
        if not env.get("metrics_port") or str(env.get("metrics_port")) == "0":
            env["metrics_port"] = str(free_port())
        self.metrics_port = int(env["metrics_port"])
        super().__init__([bin_path("queue-worker")], base_env(env), log_dir, name=name)

    def wait_ready(self, timeout=20.0):
        def ok():
            self._check_alive("worker /healthz")
            return http_status("http://127.0.0.1:%d/healthz" % self.metrics_port) == 200
        wait_until(ok, timeout, desc="%s /healthz on %d" % (self.name, self.metrics_port))
        return self

    def metrics(self):
        return requests.get("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5).text

    def log_lines_with(self, needle):
        return [ln for ln in self.log_text("stdout").splitlines() if needle in ln]


class Watchdog(Proc):
    name = "watchdog"

    def __init__(self, log_dir, fprocess, env=None, name=None):
        env = dict(env or {})
        env["fprocess"] = fprocess
        self.port = int(env.get("port") or free_port())
        env["port"] = str(self.port)
        super().__init__([bin_path("watchdog")], base_env(env), log_dir, name=name)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def wait_ready(self, timeout=15.0):
        def ok():
            self._check_alive("watchdog /_/health")
            return http_status(self.url + "/_/health") == 200
        wait_until(ok, timeout, desc="%s /_/health on %d" % (self.name, self.port))
        return self


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            head, value = line.rsplit(" ", 1)
            if "{" in head:
                name, rest = head.split("{", 1)
                labels = {}
                for part in _split_labels(rest.rstrip("}")):
                    k, v = part.split("=", 1)
                    labels[k.strip()] = v.strip().strip('"')
            else:
                name, labels = head, {}
            out[(name.strip(), frozenset(labels.items()))] = float(value)
        except ValueError:
            continue
    return out


def _split_labels(s):
    parts, cur, inq = [], "", False
    for ch in s:
        if ch == '"':
            inq = not inq
        if ch == "," and not inq:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def metric_sum(text, name, **labels):
    total = 0.0
    for (n, ls), v in parse_metrics(text).items():
        if n != name:
            continue
        d = dict(ls)
        if all(d.get(k) == str(v2) for k, v2 in labels.items()):
            total += v
    return total


# --------------------------------------------------------------------------------------------
# HTTP servers in this process (fixture functions, callback recorder)


class Headers:
    """Ordered, case-insensitive multi-map of received headers."""

    def __init__(self, items):
        self.items = list(items)

    def get(self, name, default=None):
        n = name.lower()
        for k, v in self.items:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def __contains__(self, name):
        return self.get(name) is not None

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def as_dict(self):
        return {k: v for k, v in self.items}

    def __repr__(self):
        return "Headers(%r)" % (self.items,)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _BaseHandler(http.server.BaseHTTPRequestHandler):
    # Headers and body go out in separate writes: without TCP_NODELAY each reply
    # waits ~40 ms for the peer's delayed ACK, which skews timing-based tests.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"  # keep-alive, so upstream connection reuse is exercised

    def log_message(self, fmt, *args):  # quiet
        pass

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def split_target(self):
        target = self.path
        if "?" in target:
            path, query = target.split("?", 1)
        else:
            path, query = target, ""
        return path, query

    def send(self, code, body=b"", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def handle_any(self):
        raise NotImplementedError

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = \
        lambda self: self.handle_any()


class Ledger:
    """Executions of the fixture functions: function, X-Call-Id, start_ts, end_ts (+ request)."""

    def __init__(self, path=None):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._entries = []
        self.path = path

    def add(self, entry):
        with self._cond:
            self._entries.append(entry)
            self._cond.notify_all()
        if self.path:
            with self._lock, open(self.path, "a") as f:
                f.write("%s,%s,%.6f,%.6f\n" % (entry["function"], entry["call_id"],
                                               entry["start_ts"], entry["end_ts"]))

    def entries(self, function=None, call_id=None):
        with self._lock:
            es = list(self._entries)
        return [e for e in es if (function is None or e["function"] == function)
                and (call_id is None or e["call_id"] == call_id)]

    def count(self, function=None, call_id=None):
        return len(self.entries(function, call_id))

    def wait_for(self, n, timeout, function=None, call_id=None):
        """Wait until at least n matching entries exist; return them (fails on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                es = [e for e in self._entries
                      if (function is None or e["function"] == function)
                      and (call_id is None or e["call_id"] == call_id)]
                if len(es) >= n:
                    return es
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout("ledger: wanted %d executions (function=%r call_id=%r) "
                                      "within %.1fs, got %d: %r" % (
                                          n, function, call_id, timeout, len(es),
                                          [(e["function"], e["call_id"]) for e in es]))
                self._cond.wait(min(left, 0.2))


class FunctionServer:
    """One fixture function (echo, env, sleep, status) served on its own loopback port."""

    KINDS = ("echo", "env", "sleep", "status")

    def __init__(self, kind, ledger, name=None):
        assert kind in self.KINDS, kind
        self.kind = kind
        self.name = name or kind
        self.ledger = ledger
        self.port = free_port()
        self._fail_counts = {}
        self._lock = threading.Lock()
        self.inflight = 0
        self.max_inflight_seen = 0
        fs = self

        class H(_BaseHandler):
            def handle_any(self):
                fs._handle(self)

        self.httpd = _Server(("127.0.0.1", self.port), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fn-" + self.name,
                                       daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h):
        start = time.time()
        body = h.read_body()
        path, query = h.split_target()
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        call_id = h.headers.get("X-Call-Id") or ""
        hdrs = Headers(h.headers.items())
        with self._lock:
            self.inflight += 1
            self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        try:
            code, rbody, rheaders = self._respond(h, path, query, q, call_id, body)
        finally:
            with self._lock:
                self.inflight -= 1
        end = time.time()
        self.ledger.add({"function": self.name, "call_id": call_id, "start_ts": start,
                         "end_ts": end, "method": h.command, "path": path, "query": query,
                         "headers": hdrs, "body": body, "status": code})
        h.send(code, rbody, rheaders)

    def _respond(self, h, path, query, q, call_id, body):
        if self.kind == "echo":
            return 200, body, [("Content-Type", "application/octet-stream"), ("X-Echo", "yes")]
        if self.kind == "env":
            lines = ["method=%s" % h.command, "path=%s" % path, "query=%s" % query]
            lines += ["%s: %s" % (k, v) for k, v in h.headers.items()]
            return 200, "\n".join(lines) + "\n", [("Content-Type", "text/plain")]
        if self.kind == "sleep":
            s = q.get("s", ["1"])[0]
            time.sleep(float(s))
            return 200, "slept %s" % s, [("Content-Type", "text/plain")]
        if self.kind == "status":
            code = int(q.get("code", ["500"])[0])
            fail = q.get("fail", [None])[0]
            if fail is not None:
                with self._lock:
                    n = self._fail_counts.get(call_id, 0) + 1
                    self._fail_counts[call_id] = n
                if n > int(fail):
                    code = 200
            headers = [("Content-Type", "text/plain")]
            ra = q.get("retry_after", [None])[0]
            if ra is not None and code != 200:
                headers.append(("Retry-After", ra))
            return code, "code %d" % code, headers
        raise AssertionError(self.kind)


def parse_env_output(text):
    """Parse the env fixture's reply -> (method, path, query, Headers)."""
    method = path = query = None
    items = []
    for line in text.splitlines():
        if method is None and line.startswith("method="):
            method = line[len("method="):]
        elif path is None and line.startswith("path="):
            path = line[len("path="):]
        elif query is None and line.startswith("query="):
            query = line[len("query="):]
        elif ": " in line:
            k, v = line.split(": ", 1)
            items.append((k, v))
    return method, path, query, Headers(items)


class CallbackRecorder:
    """The SINK: records every request; replies 200 or ?status=NNN (with ?location=URL as a
    Location header)."""

    def __init__(self):
        self.port = free_port()
        self._cond = threading.Condition()
        self.requests = []
        rec = self

        class H(_BaseHandler):
            def handle_any(self):
                body = self.read_body()
                path, query = self.split_target()
                q = urllib.parse.parse_qs(query)
                status = int(q.get("status", ["200"])[0])
                entry = {"method": self.command, "path": path, "query": query,
                         "headers": Headers(self.headers.items()), "body": body,
                         "sha256": hashlib.sha256(body).hexdigest(), "time": time.time(),
                         "mono": time.monotonic()}
                entry["call_id"] = entry["headers"].get("X-Call-Id")
                with rec._cond:
                    rec.requests.append(entry)
                    rec._cond.notify_all()
                headers = [("Content-Type", "text/plain")]
                if "location" in q:  # ?status=302&location=<url>: a redirecting receiver
                    headers.append(("Location", q["location"][0]))
                self.send(status, b"", headers)

        self.httpd = _Server(("127.0.0.1", self.port), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="sink", daemon=True)

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def url(self):
        return self.base + "/cb"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def all(self, call_id=None):
        with self._cond:
            rs = list(self.requests)
        return [r for r in rs if call_id is None or r["call_id"] == call_id]

    def count(self, call_id=None):
        return len(self.all(call_id))

    def wait_for(self, n, timeout, call_id=None):
        """Wait until at least n callbacks (for call_id, if given) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                rs = [r for r in self.requests if call_id is None or r["call_id"] == call_id]
                if len(rs) >= n:
                    return rs
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout("SINK: wanted %d callbacks (call_id=%r) within %.1fs, got "
                                      "%d: %r" % (n, call_id, timeout, len(rs),
                                                  [(r["call_id"], r["path"]) for r in rs]))
                self._cond.wait(min(left, 0.2))


# --------------------------------------------------------------------------------------------
# the stack


def write_functions_file(path, functions, namespace="openfaas-fn", annotations=None):
    """`annotations`: {function name: {annotation: value}} (com.openfaas.queue, ...)."""
    annotations = annotations or {}
    doc = {"functions": [{"name": name, "namespace": namespace, "url": url,
                          "annotations": dict(annotations.get(name, {})), "labels": {}}
                         for name, url in functions.items()]}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return path


class Stack:
    """nats-server + gateway + N workers + fixture functions + SINK, all on random ports."""

    DEFAULT_WORKER_ENV = {
        "ack_wait": "30s",
        "max_inflight": "1",
        "max_retry_attempts": "0",
        "initial_retry_wait": "1s",
        "max_retry_wait": "4s",
        "faas_reconnect_delay": "1s",
        "drain_timeout": "10s",
        "log_level": "debug",
    }
    DEFAULT_GATEWAY_ENV = {
        "nats_publish_timeout": "3s",
        "log_level": "debug",
    }

    def __init__(self, tmpdir, registry, ledger, sink):
        self.dir = str(tmpdir)
        self.log_dir = os.path.join(self.dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.registry = registry
        self.ledger = ledger
        self.sink = sink
        self.fns = {}
        self.watchdogs = {}
        self.nats = None
        self.gateway = None
        self.workers = []
        self.functions_file = os.path.join(self.dir, "functions.json")
        self.worker_env = {}
        self.gateway_env = {}
        # {function name: {annotation: value}} written into functions.json by start()
        self.annotations = {}
        # A cluster.NatsCluster to use instead of one nats-server (see cluster.use_cluster).
        self.nats_cluster = None

    # -- building
    def add_fixture_function(self, kind, name=None):
        fs = FunctionServer(kind, self.ledger, name=name).start()
        self.registry.add_server(fs)
        self.fns[fs.name] = fs
        return fs

    def add_watchdog(self, name, fprocess, env=None):
        wd = Watchdog(self.log_dir, fprocess, env=env, name="watchdog-" + name)
        self.registry.add(wd)
        wd.start().wait_ready()
        self.watchdogs[name] = wd
        return wd

    def function_urls(self):
        urls = {n: fs.url for n, fs in self.fns.items()}
        urls.update({n: wd.url for n, wd in self.watchdogs.items()})
        return urls

    def start(self, workers=1, worker_env=None, gateway_env=None, fixtures=FunctionServer.KINDS,
              watchdogs=None, nats_args=(), gateway=True):
        """gateway=False: no gateway process (workers need gateway_invoke=false)."""
        for kind in fixtures:
            if kind not in self.fns:
                self.add_fixture_function(kind)
        for name, spec in (watchdogs or {}).items():
            if isinstance(spec, str):
                self.add_watchdog(name, spec)
            else:
                self.add_watchdog(name, spec["fprocess"], spec.get("env"))
        write_functions_file(self.functions_file, self.function_urls(),
                             annotations=self.annotations)
        if self.nats_cluster is not None:
            self.nats = self.nats_cluster  # url = comma-separated list of its servers
            if not self.nats.started:
                self.nats.start()
        else:
            self.nats = NatsServer(self.log_dir, store_dir=os.path.join(self.dir, "nats-store"),
                                   extra_args=nats_args)
            self.registry.add(self.nats)
            self.nats.start()
        self.gateway_env = dict(self.DEFAULT_GATEWAY_ENV)
        self.gateway_env.update(gateway_env or {})
        if gateway:
            self.start_gateway()
        self.worker_env = dict(self.DEFAULT_WORKER_ENV)
        self.worker_env.update(worker_env or {})
        for _ in range(workers):
            self.add_worker()
        return self

    def start_gateway(self):
        env = {"nats_url": self.nats.url, "functions_file": self.functions_file}
        env.update(self.gateway_env)
        self.gateway = Gateway(self.log_dir, env)
        self.registry.add(self.gateway)
        self.gateway.start().wait_ready()
        return self.gateway

    def add_worker(self, **overrides):
        env = {"nats_url": self.nats.url, "faas_gateway_address": "127.0.0.1",
               "faas_gateway_port": str(self.gateway.port if self.gateway else 1),
               "functions_file": self.functions_file}
        env.update(self.worker_env)
        env.update({k: str(v) for k, v in overrides.items()})
        w = Worker(self.log_dir, env, name="worker-%d" % (len(self.workers) + 1))
        self.registry.add(w)
        w.start().wait_ready()
        self.workers.append(w)
        return w

    # -- using
    @property
    def gw(self):
        return self.gateway.url

    def async_call(self, fn_path, body=b"", headers=None, callback=True, timeout=10, **kw):
        """POST /async-function/<fn_path>; callback=True uses the SINK, a str uses that URL."""
        h = dict(headers or {})
        if callback is True:
            h["X-Callback-Url"] = self.sink.url
        elif callback:
            h["X-Callback-Url"] = callback
        return requests.post(self.gw + "/async-function/" + fn_path, data=body, headers=h,
                             timeout=timeout, **kw)

    def sync_call(self, fn_path, method="POST", body=b"", headers=None, timeout=30, **kw):
        return requests.request(method, self.gw + "/function/" + fn_path, data=body,
                                headers=headers or {}, timeout=timeout, **kw)

    def stream_last_seq(self, name="faas-request"):
        return self.nats.stream_last_seq(name)


class Registry:
    """Everything a test started; torn down (killed) at the end no matter what."""

    def __init__(self):
        self.procs = []
        self.servers = []

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def add_server(self, srv):
        self.servers.append(srv)
        return srv

    def tails(self, n=60):
        return [(p.name, p.tail(n)) for p in self.procs]

    def cleanup(self):
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.cleanup()
        for s in self.servers:
            with contextlib.suppress(Exception):
                s.stop()
