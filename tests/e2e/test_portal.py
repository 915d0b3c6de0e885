"""The portal at /ui/ (issue 13): its routes and rules over real HTTP against the real gateway,
and the whole page driven in Debian's Chromium (playwright-core, tests/browser/portal.mjs)
against the local stack (deploy/local/run.sh): the function list, a sync and an async invoke of
figlet with its output, a delayed call cancelled, a dead letter re-driven, a phone-sized
screen. Screenshots of each page go to $CFAAS_ARTIFACTS/portal (default build/artifacts/portal).
"""

import os
import re
import shutil
import subprocess

import pytest
import requests

import harness
from delivery import assert_202
from test_local_stack import running_stack, skip_if_ports_busy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")


def auth_stack(stack, tmp_path, **kw):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text("admin\n")
    (secrets / "basic-auth-password").write_text("s3cret\n")
    env = {"basic_auth": "true", "secret_mount_path": str(secrets)}
    env.update(kw)
    stack.start(workers=1, fixtures=("echo",), gateway_env=env)
    return ("admin", "s3cret")


def test_portal_files_session_and_receiver_behind_the_system_auth(stack, tmp_path):
    auth = auth_stack(stack, tmp_path)
    gw = stack.gw
    # the page and its API need the /system credentials
    for path in ("/ui/", "/ui/app.js", "/ui/api/session", "/ui/api/results/x"):
        r = requests.get(gw + path, timeout=10)
        assert r.status_code == 401 and "Basic" in r.headers.get("WWW-Authenticate", ""), path
    r = requests.get(gw + "/ui", auth=auth, allow_redirects=False, timeout=10)
    assert r.status_code == 301 and r.headers["Location"] == "/ui/"
    page = requests.get(gw + "/ui/", auth=auth, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    # everything the page loads is its own: no http(s) URL to another host in the files
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        f = requests.get(gw + "/ui/" + name, auth=auth, timeout=10)
        assert f.status_code == 200 and f.headers["Content-Type"].startswith(kind), name
        assert "http://" not in f.text and "https://" not in f.text, name
    assert 'src="app.js"' in page.text and "https://" not in page.text
    assert requests.get(gw + "/ui/nope.js", auth=auth, timeout=10).status_code == 404
    assert requests.get(gw + "/ui/a/b", auth=auth, timeout=10).status_code == 404
    r = requests.put(gw + "/ui/", auth=auth, timeout=10)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]

    assert requests.post(gw + "/ui/api/callback", timeout=10).status_code == 401
    grant = requests.post(gw + "/ui/api/callback", auth=auth, timeout=10).json()
    cid, cb = grant["call_id"], grant["callback_url"]
    assert re.fullmatch(r"http://127\.0\.0\.1:%d/ui/callbacks/%s/[0-9a-f]{32}"
                        % (stack.gateway.port, re.escape(cid)), cb), cb
    # a call made as the portal makes it: its result lands in the receiver, which the
    # worker reaches without credentials
    assert_202(requests.post(gw + "/async-function/echo", data=b"portal output",
                             headers={"X-Call-Id": cid, "X-Callback-Url": cb}, timeout=10))

    def result():
        doc = requests.get(gw + "/ui/api/results/" + cid, auth=auth, timeout=10).json()
        return doc if doc["received"] else None
    doc = harness.wait_until(result, 30, desc="the portal's receiver got the callback")
    assert doc["received"] is True and doc["received_at"].endswith("Z"), doc
    assert doc["function_status"] == 200 and doc["headers"]["X-Call-Id"] == cid, doc
    body = requests.get(gw + "/ui/api/results/%s/body" % cid, auth=auth, timeout=10)
    assert body.status_code == 200 and body.content == b"portal output"
    assert body.headers["Content-Disposition"] == "attachment"
    assert requests.get(gw + "/ui/api/results/%s/body" % cid, timeout=10).status_code == 401
    # the URL admits that one call's result: another X-Call-Id, another call's path with
    # this MAC, a wrong MAC, no MAC: refused, nothing kept
    other = requests.post(gw + "/ui/api/callback", auth=auth, timeout=10).json()["call_id"]
    r = requests.post(cb, data=b"forged", headers={"X-Call-Id": other}, timeout=10)
    assert r.status_code == 400
    base, mac = cb.rsplit("/", 1)
    forged = [base.rsplit("/", 1)[0] + "/" + other + "/" + mac, base + "/" + "0" * 32, base,
              base + "/" + mac + "/x"]
    for url in forged:
        r = requests.post(url, data=b"forged", headers={"X-Call-Id": other}, timeout=10)
        assert r.status_code == 404, (url, r.status_code)
    assert not requests.get(gw + "/ui/api/results/" + other, auth=auth,
                            timeout=10).json()["received"]
    assert requests.post(cb, data=b"x", timeout=10).status_code == 400  # no X-Call-Id
    assert requests.get(cb, timeout=10).status_code == 405
    # a large output is kept cut at 64 KiB, and says so; headers at 16 KiB
    g = requests.post(gw + "/ui/api/callback", auth=auth, timeout=10).json()
    big = b"y" * (200 * 1024)
    many = {"X-Pad-%03d" % i: "p" * 1000 for i in range(100)}
    many.update({"X-Call-Id": g["call_id"], "X-Function-Status": "200"})
    r = requests.post(g["callback_url"], data=big, headers=many, timeout=10)
    assert r.status_code == 200
    doc = requests.get(gw + "/ui/api/results/" + g["call_id"], auth=auth, timeout=10).json()
    assert doc["body_bytes"] == len(big) and doc["body_truncated"] is True
    assert sum(len(k) + len(v) for k, v in doc["headers"].items()) <= 16 * 1024
    kept = requests.get(gw + "/ui/api/results/%s/body" % g["call_id"], auth=auth,
                        timeout=10).content
    assert kept == big[:64 * 1024]




def test_portal_keeps_the_last_results_only(stack, tmp_path):
    """The receiver is a ring: after more callbacks than it keeps, the oldest is gone, and
    the gateway's memory stays bounded however large each callback's head and body are."""
    stack.start(workers=0, fixtures=("echo",))
    gw = stack.gw
    before = harness.vm_kib(stack.gateway.pid)
    ids = []
    pad = {"X-Pad-%03d" % i: "p" * 2000 for i in range(200)}  # 400 KB of headers
    for i in range(140):
        g = requests.post(gw + "/ui/api/callback", timeout=10).json()
        ids.append(g["call_id"])
        h = dict(pad, **{"X-Call-Id": g["call_id"]})
        r = requests.post(g["callback_url"], data=b"r%d" % i + b"z" * 200000, headers=h,
                          timeout=10)
        assert r.status_code == 200
    grown = harness.vm_kib(stack.gateway.pid) - before
    # 128 kept x (64 KiB body + 16 KiB headers) is 10 MiB at most
    assert grown < 16 * 1024, "gateway grew %d KiB" % grown
    res = gw + "/ui/api/results/"
    assert not requests.get(res + ids[0], timeout=10).json()["received"]
    assert requests.get(res + ids[139] + "/body", timeout=10).content.startswith(b"r139z")
    assert requests.get(res + ids[12] + "/body", timeout=10).content.startswith(b"r12z")
    assert requests.get(gw + "/ui/api/session", timeout=10).json()["callbacks_received"] == 140


def test_ui_callback_url_setting(stack):
    stack.start(workers=0, fixtures=("echo",),
                gateway_env={"ui_callback_url": "http://gateway.openfaas:8080/"})
    cb = requests.post(stack.gw + "/ui/api/callback", timeout=10).json()["callback_url"]
    assert cb.startswith("http://gateway.openfaas:8080/ui/callbacks/"), cb


@pytest.mark.timeout(300)
def test_portal_in_a_real_browser(tmp_path):
    skip_if_ports_busy()
    node = shutil.which("node")
    assert node, "node is required (scripts/setup.sh --test installs it)"
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "run: (cd tests/browser && npm ci)  (scripts/setup.sh --test does)"
    shots = os.path.join(os.environ.get("CFAAS_ARTIFACTS", os.path.join(ROOT, "build",
                                                                          "artifacts")), "portal")
    shutil.rmtree(shots, ignore_errors=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with running_stack(tmp_path):
        out = subprocess.run([node, os.path.join(BROWSER_DIR, "portal.mjs"),
                              "http://127.0.0.1:8080", shots, str(scratch)],
                             cwd=BROWSER_DIR, capture_output=True, text=True, timeout=240)
        print(out.stdout)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in ("functions", "invoke-async", "calls", "calls-cancelled", "dead-letters",
                 "calls-redriven", "phone-functions", "phone-invoke"):
        path = os.path.join(shots, name + ".png")
        assert os.path.getsize(path) > 5000, path
