"""A tiny synchronous NATS client (core protocol + headers) for test inspection only.

Enough to call the JetStream API ($JS.API.*), publish raw messages (e.g. undecodable ones) and
read messages back from a stream (dead-letter inspection). Not used by the product.
"""

import base64
import json
import socket
import time
import uuid


class NatsError(Exception):
    pass


def _parse_headers(raw):
    """b'NATS/1.0[ code desc]\\r\\nK: V\\r\\n...' -> (status, {K: [V...]})"""
    lines = raw.decode("utf-8", "replace").split("\r\n")
    status = None
    first = lines[0].split(" ", 2)
    if len(first) >= 2 and first[1].isdigit():
        status = int(first[1])
    hdrs = {}
    for ln in lines[1:]:
        if not ln or ":" not in ln:
            continue
        k, v = ln.split(":", 1)
        hdrs.setdefault(k.strip(), []).append(v.strip())
    return status, hdrs


def encode_headers(headers):
    out = "NATS/1.0\r\n"
    for k, v in (headers or {}).items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            out += "%s: %s\r\n" % (k, x)
    return (out + "\r\n").encode()


class Msg:
    def __init__(self, subject, reply, headers, data, status=None, sid=None):
        self.sid = sid
        self.subject = subject
        self.reply = reply
        self.headers = headers or {}
        self.data = data
        self.status = status

    def header(self, name):
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v[0]
        return None

    def json(self):
        return json.loads(self.data)


class MiniNats:
    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        info = self._readline()
        if not info.startswith(b"INFO"):
            raise NatsError("unexpected greeting %r" % info)
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                          b'"no_responders":true,"lang":"py-test","version":"0"}\r\nPING\r\n')
        self._expect_pong()
        self.sid = 0
        self.inbox_prefix = "_INBOX." + uuid.uuid4().hex
        self.sid += 1
        self.inbox_sid = self.sid
        self.sock.sendall(("SUB %s.* %d\r\n" % (self.inbox_prefix, self.inbox_sid)).encode())
        self.pending = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- protocol
    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise NatsError("connection closed")
        self.buf += chunk

    def _readline(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _readn(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _expect_pong(self):
        while True:
            line = self._readline()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise NatsError(line.decode())
            # +OK / INFO ignored

    def _next_msg(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message")
            self.sock.settimeout(left)
            try:
                line = self._readline()
            except socket.timeout:
                raise TimeoutError("no message")
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith(b"-ERR"):
                raise NatsError(line.decode())
            parts = line.split()
            if not parts:
                continue
            if parts[0] == b"MSG":
                subj = parts[1].decode()
                reply = parts[3].decode() if len(parts) == 5 else None
                n = int(parts[-1])
                return Msg(subj, reply, {}, self._readn(n), sid=int(parts[2]))
            if parts[0] == b"HMSG":
                subj = parts[1].decode()
                reply = parts[3].decode() if len(parts) == 6 else None
                hlen, tot = int(parts[-2]), int(parts[-1])
                raw = self._readn(tot)
                status, hdrs = _parse_headers(raw[:hlen])
                return Msg(subj, reply, hdrs, raw[hlen:], status, sid=int(parts[2]))
            # +OK, INFO, PONG: ignore

    def publish(self, subject, data=b"", headers=None, reply=None):
        if isinstance(data, str):
            data = data.encode()
        r = (" " + reply) if reply else ""
        if headers:
            h = encode_headers(headers)
            self.sock.sendall(("HPUB %s%s %d %d\r\n" % (subject, r, len(h), len(h) + len(data)))
                              .encode() + h + data + b"\r\n")
        else:
            self.sock.sendall(("PUB %s%s %d\r\n" % (subject, r, len(data))).encode() + data
                              + b"\r\n")

    def request(self, subject, data=b"", headers=None, timeout=5.0):
        inbox = "%s.%s" % (self.inbox_prefix, uuid.uuid4().hex)
        self.publish(subject, data, headers, reply=inbox)
        deadline = time.monotonic() + timeout
        while True:
            m = self._next_msg(deadline)
            if m.subject == inbox:
                if m.status == 503:
                    raise NatsError("no responders for %s" % subject)
                return m
            self.pending.append(m)

    def pull(self, stream, consumer, expires=1.0, timeout=None):
        """Fetch one message from a durable pull consumer: Msg (ack via publish(m.reply, b'+ACK'))
        or None when none arrived within `expires` seconds."""
        self.sid += 1
        sid = self.sid
        inbox = "%s.pull.%d" % (self.inbox_prefix, sid)
        self.sock.sendall(("SUB %s %d\r\n" % (inbox, sid)).encode())
        try:
            req = json.dumps({"batch": 1, "expires": int(expires * 1e9)}).encode()
            self.publish("$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (stream, consumer), req, reply=inbox)
            deadline = time.monotonic() + (timeout or expires + 2)
            while True:
                try:
                    m = self._next_msg(deadline)
                except TimeoutError:
                    return None
                if m.sid != sid:
                    self.pending.append(m)
                    continue
                if m.status is not None and not m.data:
                    return None  # 404 no messages / 408 request timeout
                return m
        finally:
            self.sock.sendall(("UNSUB %d\r\n" % sid).encode())

    def js(self, api, payload=None, timeout=5.0):
        data = b"" if payload is None else json.dumps(payload).encode()
        m = self.request("$JS.API." + api, data, timeout=timeout)
        return m.json()

    # -- JetStream helpers
    def stream_info(self, stream):
        r = self.js("STREAM.INFO." + stream)
        if "error" in r:
            return None
        return r

    def stream_names(self):
        return self.js("STREAM.NAMES", {}).get("streams") or []

    def consumer_info(self, stream, consumer):
        r = self.js("CONSUMER.INFO.%s.%s" % (stream, consumer))
        return None if "error" in r else r

    def get_msg(self, stream, seq):
        """-> Msg (headers + data) or None if deleted/absent."""
        r = self.js("STREAM.MSG.GET." + stream, {"seq": seq})
        if "error" in r:
            return None
        m = r["message"]
        hdrs = {}
        if m.get("hdrs"):
            _, hdrs = _parse_headers(base64.b64decode(m["hdrs"]))
        data = base64.b64decode(m.get("data") or "")
        return Msg(m.get("subject"), None, hdrs, data)

    def stream_messages(self, stream):
        """All messages currently stored in a stream, in order."""
        info = self.stream_info(stream)
        if not info:
            return []
        st = info["state"]
        out = []
        if not st.get("messages"):
            return out
        for seq in range(st["first_seq"], st["last_seq"] + 1):
            m = self.get_msg(stream, seq)
            if m is not None:
                out.append(m)
        return out

    def js_publish(self, subject, data=b"", headers=None, timeout=5.0):
        m = self.request(subject, data, headers, timeout=timeout)
        return m.json()
