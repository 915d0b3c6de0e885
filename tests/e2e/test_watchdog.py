"""Watchdog contract: fprocess per request, body on stdin, stdout is the response."""

import concurrent.futures as cf
import time

import pytest
import requests

import harness


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def read_pid(path, timeout=5):
    def get():
        with open(path) as f:
            s = f.read().strip()
        return int(s) if s else None
    return harness.wait_until(get, timeout, desc="pid file %s" % path)


def env_lines(text):
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, v)
    return out


def test_health(watchdog):
    wd = watchdog("cat")
    r = requests.get(wd.url + "/_/health", timeout=5)
    assert r.status_code == 200


def test_body_on_stdin_response_from_stdout(watchdog):
    wd = watchdog("cat")
    body = bytes(range(256)) * 400 + b"end-of-body"  # ~100 KB, all byte values
    r = requests.post(wd.url + "/", data=body, timeout=10)
    assert r.status_code == 200
    assert r.content == body


def test_stdout_of_transforming_process(watchdog):
    wd = watchdog("tr a-z A-Z")
    r = requests.post(wd.url, data=b"hello watchdog", timeout=10)
    assert (r.status_code, r.content) == (200, b"HELLO WATCHDOG")


def test_request_metadata_in_child_env(watchdog):
    wd = watchdog("env")
    r = requests.post(wd.url + "/some/path?a=1&b=two", data=b"x", timeout=10,
                      headers={"Content-Type": "text/plain", "X-Custom": "hello-env"})
    assert r.status_code == 200, r.text
    env = env_lines(r.text)
    assert env.get("Http_Method") == "POST", r.text
    assert env.get("Http_Path") == "/some/path", r.text
    assert env.get("Http_Query") == "a=1&b=two", r.text
    assert env.get("Http_ContentType") == "text/plain", r.text
    assert env.get("Http_X_Custom") == "hello-env", r.text

    r = requests.get(wd.url + "/", timeout=10)
    env = env_lines(r.text)
    assert r.status_code == 200 and env.get("Http_Method") == "GET", r.text
    assert env.get("Http_Path") == "/", r.text
    assert env.get("Http_Query", "") == "", r.text


def test_exec_timeout_kills_child_and_returns_504(watchdog, tmp_path):
    pidfile = tmp_path / "child.pid"
    wd = watchdog("echo $$ > %s; exec sleep 30" % pidfile, exec_timeout="1s")
    t0 = time.monotonic()
    r = requests.post(wd.url, data=b"", timeout=20)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, (r.status_code, r.text)
    assert 0.8 <= elapsed < 6, "504 after %.2fs with exec_timeout=1s" % elapsed
    pid = read_pid(str(pidfile))
    harness.wait_until(lambda: not pid_alive(pid), 5, desc="child %d killed" % pid)
    # still serving afterwards
    assert requests.get(wd.url + "/_/health", timeout=5).status_code == 200


def test_exec_timeout_also_kills_grandchildren(watchdog, tmp_path):
    """A shell that backgrounds work must not keep the request (or the sleep) alive."""
    pidfile = tmp_path / "grandchild.pid"
    wd = watchdog("sleep 30 & echo $! > %s; wait" % pidfile, exec_timeout="1s")
    t0 = time.monotonic()
    r = requests.post(wd.url, data=b"", timeout=40)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, (r.status_code, r.text)
    assert elapsed < 6, "504 only after %.2fs with exec_timeout=1s" % elapsed
    pid = read_pid(str(pidfile))
    harness.wait_until(lambda: not pid_alive(pid), 5, desc="grandchild %d killed" % pid)


def test_nonzero_exit_is_500_with_stderr(watchdog):
    wd = watchdog("echo some-stdout; echo err-text-42 >&2; exit 3")
    r = requests.post(wd.url, data=b"x", timeout=10)
    assert r.status_code == 500, (r.status_code, r.text)
    assert "err-text-42" in r.text


def test_parallel_requests_run_concurrently(watchdog):
    wd = watchdog("sleep 1; echo done")
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(5) as ex:
        futs = [ex.submit(requests.post, wd.url, data=b"", timeout=20) for _ in range(5)]
        rs = [f.result() for f in futs]
    elapsed = time.monotonic() - t0
    assert [r.status_code for r in rs] == [200] * 5
    assert all(r.text.strip() == "done" for r in rs)
    assert elapsed < 3.0, "5 parallel 'sleep 1' took %.2fs (serial would be 5s)" % elapsed


@pytest.mark.parametrize("fprocess", ["true", "cat"])
def test_empty_body_and_empty_output(watchdog, fprocess):
    wd = watchdog(fprocess)
    r = requests.post(wd.url, data=b"", timeout=10)
    assert (r.status_code, r.content) == (200, b"")


def test_child_exiting_before_reading_whole_body(watchdog):
    """The child stops reading stdin early (EPIPE/SIGPIPE for the watchdog): the watchdog must
    survive and answer with the child's output."""
    wd = watchdog("head -c 3")
    r = requests.post(wd.url, data=b"abcdef" * 100000, timeout=15)
    assert (r.status_code, r.content) == (200, b"abc")
    assert wd.alive(), wd.tail()
    assert requests.get(wd.url + "/_/health", timeout=5).status_code == 200
