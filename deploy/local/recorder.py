#!/usr/bin/python3
"""Callback recorder for the local stack.

Stores every request it receives as one JSON file (method, path, query,
headers, body as text and base64, arrival time) under the folder given with
--dir, numbered in arrival order, and prints one line per request.
GET /requests returns all recorded requests as a JSON array. Any request with
?status=NNN is answered with that status (to try failing callbacks).
"""
import argparse
import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # one line per request is printed below
            pass

        def _record(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if parts.path == "/requests" and self.command == "GET":
                items = []
                for name in sorted(os.listdir(args.dir)):
                    with open(os.path.join(args.dir, name)) as f:
                        items.append(json.load(f))
                self._reply(200, json.dumps(items, indent=1).encode(), "application/json")
                return
            entry = {
                "time": time.time(),
                "method": self.command,
                "path": parts.path,
                "query": parts.query,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("utf-8", "replace"),
                "body_base64": base64.b64encode(body).decode(),
            }
            with LOCK:
                n = len(os.listdir(args.dir)) + 1
                path = os.path.join(args.dir, "%06d.json" % n)
                with open(path, "w") as f:
                    json.dump(entry, f, indent=1)
            print("recorder: %s %s call_id=%s status=%s -> %s" % (
                self.command, self.path, self.headers.get("X-Call-Id"),
                self.headers.get("X-Function-Status"), path), flush=True)
            status = int(parse_qs(parts.query).get("status", ["200"])[0])
            self._reply(status, b"recorded\n", "text/plain")

        def _reply(self, status, body, ctype):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _record

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("recorder: listening on http://127.0.0.1:%d, storing in %s" % (args.port, args.dir),
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
