#!/usr/bin/python3
"""A small HTTP/1.1 test server for the worker's `http` handler.

Usage: /usr/bin/python3 http_server.py PORTFILE

Listens on 127.0.0.1 port 0 (the kernel picks one), writes the port to
PORTFILE once it is listening (written to PORTFILE.tmp, then renamed, so a
reader never sees half a number), and serves until it is killed. Every
response but 204/304 has a Content-Length, so clients keep their connections open.
Paths (any method, query strings allowed):

  /ok             200 {"ok":true,"method":M,"path":P}
  /echo           200 {"method":M,"path":P,"headers":{lower-case: value},"body":TEXT}
  /status/NNN     NNN "status NNN: something went wrong on purpose" (200-599;
                  204 and 304 have no body and no Content-Length)
  /429            429, Retry-After: 1, "slow down"
  /429date?s=N    429, Retry-After: the HTTP date (IMF-fixdate) N s after this
                  second began, "retry at EPOCH" (that date, seconds since 1970)
  /redirect       302, Location: http://127.0.0.1:PORT/redirected, "moved"
  /redirected     200 {"ok":true} (a client that follows the redirect asks this)
  /flaky          503 "try again" the first time an Idempotency-Key is seen
  /usage-flaky    ?cost=C: 503 with {"usage":{"cost":C,...}} the first time an
                  Idempotency-Key is seen, then 200 with it
                  (per path), then 200 {"ok":true}
  /slow?ms=N      sleeps N ms, then 200 {"ok":true}
  /big            200, 10 MiB of 'x' (text/plain)
  /hold?ms=N      counted as in flight while it sleeps N ms, then 200 {"ok":true}
  /secret-check   200 {"authorized":true|false}: whether the Authorization
                  header is "Bearer " + $TEST_API_TOKEN of this process
                  (the token itself is never sent back)
  /hook?fail=N    a webhook receiver: 500 for the first N tries of each batch
                  (the "batch" of the JSON body), then 200 {"ok":true}
  /hooks          200 {"hooks":[every try to /hook, in arrival order: {"body":
                  TEXT,"body_b64":the raw body in base64,"headers":{lower-case:
                  value},"status":200|500,"attempt":N (the batch's Nth try)}],
                  "tries":{batch: N}}
  /stats          200 {"peak_in_flight":N,"in_flight":N,"requests":N,
                  "idempotency_keys":{path:[keys in order]},
                  "missing_idempotency_key":{path:count}}
  anything else   404 "no such path"

Requests to /stats are not counted and their keys are not recorded;
/stats?reset_peak=1 first sets peak_in_flight back to in_flight and forgets
the arrival times of /hold requests, which /stats lists as
"hold_arrivals_ms" (ms after the first one).
"""

import base64
import email.utils
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

BIG_SIZE = 10 * 1024 * 1024
BIG_CHUNK = b"x" * (256 * 1024)

lock = threading.Lock()
state = {
    "requests": 0,  # requests served, /stats excluded
    "in_flight": 0,  # /hold requests sleeping now
    "peak_in_flight": 0,  # the most /hold requests sleeping at once
    "hold_arrivals": [],  # monotonic arrival times of /hold requests since the last reset_peak
    "keys": {},  # path -> [Idempotency-Key values, in arrival order]
    "missing": {},  # path -> requests without an Idempotency-Key
    "flaky_seen": set(),  # Idempotency-Key values /flaky has answered 503 to
}


def query_ms(query, default=0):
    try:
        return max(0, int(urllib.parse.parse_qs(query).get("ms", [default])[0]))
    except ValueError:
        return default


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-test/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def log_error(self, fmt, *args):
        pass

    # Any method is dispatched to handle_any (BaseHTTPRequestHandler looks
    # up do_<METHOD> with hasattr/getattr).
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        t = self.rfile.readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, status, body, ctype="application/json", extra=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        if status == 204 or status == 304:  # no body, no Content-Length (RFC 9110)
            self.end_headers()
            return
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.read_body()
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        method = self.command
        key = self.headers.get("Idempotency-Key")
        if path != "/stats":
            with lock:
                state["requests"] += 1
                if key is None:
                    state["missing"][path] = state["missing"].get(path, 0) + 1
                else:
                    state["keys"].setdefault(path, []).append(key)

        if path == "/ok":
            self.reply(200, {"ok": True, "method": method, "path": self.path})
        elif path == "/usage":
            # an API's usage report: ?cost=C gives {"usage":{"cost":C,"tokens":[1,2,3]}}
            q = dict(kv.split("=", 1) for kv in self.path.partition("?")[2].split("&") if "=" in kv)
            self.reply(200, {"usage": {"cost": float(q.get("cost", "0")), "tokens": [1, 2, 3]}})
        elif path == "/echo":
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.reply(200, {"method": method, "path": self.path, "headers": headers,
                             "body": body.decode("utf-8", "replace")})
        elif path.startswith("/status/") and path[8:].isdigit() and 200 <= int(path[8:]) <= 599:
            n = int(path[8:])
            self.reply(n, "status %d: something went wrong on purpose" % n, "text/plain")
        elif path == "/429":
            self.reply(429, "slow down", "text/plain", {"Retry-After": "1"})
        elif path == "/429date":
            try:
                ahead = int(urllib.parse.parse_qs(parts.query).get("s", ["2"])[0])
            except ValueError:
                ahead = 2
            at = int(time.time()) + ahead
            self.reply(429, "retry at %d" % at, "text/plain",
                       {"Retry-After": email.utils.formatdate(at, usegmt=True)})
        elif path == "/redirect":
            self.reply(302, "moved", "text/plain",
                       {"Location": "http://127.0.0.1:%d/redirected" % self.server.server_address[1]})
        elif path == "/redirected":
            self.reply(200, {"ok": True})
        elif path == "/usage-flaky":
            # ?cost=C: 503 with the usage the first time an Idempotency-Key is seen (the failed
            # answer was paid for too), then 200 with it
            q = dict(kv.split("=", 1) for kv in self.path.partition("?")[2].split("&") if "=" in kv)
            with lock:
                first = ("usage", key) not in state["flaky_seen"]
                state["flaky_seen"].add(("usage", key))
            self.reply(503 if first else 200, {"usage": {"cost": float(q.get("cost", "0")), "tokens": [1, 2, 3]}})
        elif path == "/flaky":
            with lock:
                first = key not in state["flaky_seen"]
                state["flaky_seen"].add(key)
            if first:
                self.reply(503, "try again", "text/plain")
            else:
                self.reply(200, {"ok": True})
        elif path == "/slow":
            time.sleep(query_ms(parts.query) / 1000.0)
            self.reply(200, {"ok": True})
        elif path == "/hold":
            with lock:
                state["hold_arrivals"].append(time.monotonic())
                state["in_flight"] += 1
                if state["in_flight"] > state["peak_in_flight"]:
                    state["peak_in_flight"] = state["in_flight"]
            try:
                time.sleep(query_ms(parts.query) / 1000.0)
            finally:
                with lock:
                    state["in_flight"] -= 1
            self.reply(200, {"ok": True})
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(BIG_SIZE))
            self.end_headers()
            if self.command != "HEAD":
                left = BIG_SIZE
                while left > 0:
                    chunk = BIG_CHUNK[:left]
                    self.wfile.write(chunk)
                    left -= len(chunk)
        elif path == "/hook":
            # A webhook receiver: ?fail=N fails the first N tries of each
            # batch with a 500; /hooks lists every try, failed ones too.
            fail = int(urllib.parse.parse_qs(parts.query).get("fail", ["0"])[0])
            try:
                batch = json.loads(body.decode("utf-8")).get("batch", "?")
            except ValueError:
                batch = "?"
            with lock:
                n = state.setdefault("hook_tries", {}).get(batch, 0) + 1
                state["hook_tries"][batch] = n
                ok = n > fail
                state.setdefault("hooks", []).append({
                    "body": body.decode("utf-8", "replace"),
                    "body_b64": base64.b64encode(body).decode("ascii"),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "status": 200 if ok else 500,
                    "attempt": n})
            if ok:
                self.reply(200, {"ok": True})
            else:
                self.reply(500, "receiver down on purpose", "text/plain")
        elif path == "/hooks":
            with lock:
                self.reply(200, {"hooks": list(state.get("hooks", [])),
                                 "tries": dict(state.get("hook_tries", {}))})
        elif path == "/secret-check":
            token = os.environ.get("TEST_API_TOKEN", "")
            auth = self.headers.get("Authorization", "")
            self.reply(200, {"authorized": bool(token) and auth == "Bearer " + token})
        elif path == "/stats":
            with lock:
                if "reset_peak" in parts.query:
                    state["peak_in_flight"] = state["in_flight"]
                    state["hold_arrivals"] = []
                t0 = state["hold_arrivals"][0] if state["hold_arrivals"] else 0
                out = {
                    "hold_arrivals_ms": [round((t - t0) * 1000) for t in state["hold_arrivals"]],
                    "peak_in_flight": state["peak_in_flight"],
                    "in_flight": state["in_flight"],
                    "requests": state["requests"],
                    "idempotency_keys": {p: list(k) for p, k in state["keys"].items()},
                    "missing_idempotency_key": dict(state["missing"]),
                }
            self.reply(200, out)
        else:
            self.reply(404, "no such path", "text/plain")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hung up (a timed-out attempt, a worker stopping) is
        # expected; anything else is printed as usual.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: http_server.py PORTFILE\n")
        return 2
    srv = Server(("127.0.0.1", 0), Handler)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, sys.argv[1])
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
