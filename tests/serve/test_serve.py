#!/usr/bin/python3
"""`sluice serve` against a real redis-server, real workers and real HTTP.

The server runs as its own process on a loopback port. Every request goes
through curl, one process per request as a user's script sends it, and
event streams through curl --no-buffer, read line by line as they come;
Python's http.client only holds a connection where a case needs one:
keep-alive, a stalled upload, SIGTERM with a stream open.

  probes      keep-alive connections; /healthz, /readyz; Redis killed: /readyz 503 and requests
              503 with Retry-After; Redis back on the same socket: ready
              again without a restart
  auth        no token and a bad token 401; a read token cannot submit
              (403); two tenants: neither reads, cancels nor follows the
              other's batch (404); SIGHUP reloads the tokens file
  submit      NDJSON and JSON bodies; the CLI's messages with line numbers;
              415, 413, malformed JSON, unknown member, unknown option, an
              empty body; Idempotency-Key gives the same batch
  events      25 event streams open at once: one subscriber in Redis; a
              batch followed to its end through its event stream (the
              first event is the state, the stream ends after the final
              event); a reconnect with Last-Event-ID midway still gets the
              end
  queue_events  GET /v1/events: a snapshot of the tenant's batches first, then
              the events of its batches only (another tenant's batch, run at
              the same time, never shows)
  quota       a tenant of 2 batches an hour gets 429 for its third (Retry-After
              about 30 min; a repeated Idempotency-Key still answers); a
              tenant of 100 items per 10 s gets 429 for 50 after 60, waits
              the Retry-After and gets 201; a batch over the quota is 413
  control     pause, resume, cancel, retry, and 409 where the state forbids
  list        GET /v1/batches: a tenant lists only its own batches; pages
              by cursor give each once; status and name filters; an admin
              lists one tenant's with ?tenant=
  queue       results as NDJSON pages (cursor, status=failed); queue stats
              equal to `sluice stats --json`; workers, dead letters and
              their requeue, limits set, read and removed (admin only)
  metrics     /metrics after known batches on a fresh queue: promtool check
              metrics passes; ended by outcome, retries, rate-limit waits,
              the duration histogram and the gauges are exact, and agree
              with sluice stats; parked items of a paused batch, items
              waiting for a concurrency lease, and takeovers after a worker
              is killed (-9) each show; only an admin token may read it
  same        one file through the CLI and through the API: the same
              counters and results lines (times and worker aside)
  cors        no CORS headers and OPTIONS 405 without --cors; with --cors
              ORIGIN the origin on answers and a preflight answered (204)
  timeouts    a paused batch's stream gets a keepalive comment (--keepalive
              1); an upload that stalls midway is closed (--idle-timeout 3)
  shutdown    SIGTERM with an event stream open: the stream ends, exit 0
  upload_memory  100,000 items (35 MB of NDJSON) in one POST: the server's
              peak RSS grows by less than half the body (not checked under
              ASan, whose allocator keeps freed memory)
  listen      a non-loopback --listen without --tokens is refused
  openapi     /v1/openapi.json is docs/openapi.json; every JSON answer the
              cases above got (path, method, status and body) is described
              by it, checked with a real validator (python3-jsonschema)

usage: test_serve.py [CASE...]   (SLUICE_BIN; exit 0 when all hold)
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SLUICE = os.environ.get("SLUICE_BIN", "sluice")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise Failure("waited %.0f s for %s, in vain" % (timeout, what))
        time.sleep(0.02)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-serve-")
        self.sock = os.path.join(self.tmp, "redis.sock")
        self.url = "unix://" + self.sock
        self.redis = None
        self.start_redis()
        out = subprocess.run([SLUICE, "library", "load", "--redis", self.url], capture_output=True, text=True)
        check(out.returncode == 0, "library load: %s" % out.stderr)
        self.tokens = os.path.join(self.tmp, "tokens")
        self.write_tokens({"tok-a": ("acme", "submit"), "tok-b": ("bravo", "submit"), "tok-r": ("acme", "read"),
                           "tok-admin": ("ops", "admin"), "tok-q": ("quota", "submit", "batches=2/h"),
                           "tok-qi": ("quotai", "submit", "items=100/10s")})
        self.port = free_port()
        self.server = None
        self.workers = []
        self.log = []   # (method, path, status, content type, body) of every answer
        self.every_case = False  # all cases run: openapi checks that every operation was called

    def start_redis(self):
        self.redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", self.sock, "--save", "",
                                       "--appendonly", "no", "--dir", self.tmp,
                                       "--logfile", os.path.join(self.tmp, "redis.log")])
        wait_for(lambda: subprocess.run(["redis-cli", "-s", self.sock, "PING"], capture_output=True).stdout
                 == b"PONG\n", 10, "redis-server")

    def write_tokens(self, tokens):
        with open(self.tokens, "w") as f:
            f.write("# tenant role sha256(token)\n")
            for tok, spec in tokens.items():
                tenant, role = spec[0], spec[1]
                f.write("%s %s %s %s\n" % (tenant, role, hashlib.sha256(tok.encode()).hexdigest(),
                                           spec[2] if len(spec) > 2 else ""))

    def serve(self, *extra, tokens=True):
        args = [SLUICE, "serve", "--redis", self.url, "--listen", "127.0.0.1:%d" % self.port, "--queue", "api",
                "--queue", "other"] + (["--tokens", self.tokens] if tokens else []) + list(extra)
        self.server = subprocess.Popen(args, stderr=open(os.path.join(self.tmp, "serve.log"), "ab"))

        def up():
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False
        wait_for(up, 10, "sluice serve to listen")

    def stop_server(self):
        if self.server is not None:
            self.server.send_signal(signal.SIGTERM)
            code = self.server.wait(timeout=30)
            self.server = None
            return code
        return None

    def worker(self, queue="api", *extra):
        self.workers.append(subprocess.Popen([SLUICE, "worker", "--redis", self.url, "--queue", queue,
                                              "--concurrency", "100", "--quiet"] + list(extra)))
        return self.workers[-1]

    def stop_workers(self):
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.wait(timeout=30)
        self.workers = []

    def curl(self, method, path, body=None, token="tok-a", headers=None):
        """One request through curl, as a user's script makes it: (status,
        body bytes, the answer's headers)."""
        hdr = os.path.join(self.tmp, "curl-headers")
        args = ["curl", "-sS", "-X", method, "-D", hdr, "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"]
        for k, v in dict(headers or {}).items():
            args += ["-H", "%s: %s" % (k, v)]
        if token is not None:
            args += ["-H", "Authorization: Bearer " + token]
        if body is not None:
            args += ["--data-binary", "@-"]
        out = subprocess.run(args + ["http://127.0.0.1:%d%s" % (self.port, path)], input=body,
                             capture_output=True, timeout=90)
        if out.returncode != 0:
            raise ConnectionError("curl %s %s: exit %d: %s" % (method, path, out.returncode, out.stderr.decode()))
        data, _, code = out.stdout.rpartition(b"\n")
        with open(hdr, "rb") as f:
            blocks = [b for b in f.read().decode("latin-1").split("\r\n\r\n") if b.strip()]
        return int(code), data, Answer(blocks[-1] if blocks else "")

    def request(self, method, path, body=None, token="tok-a", headers=None):
        status, data, r = self.curl(method, path, body, token, headers)
        ctype = r.getheader("Content-Type", "")
        self.log.append((method, path, status, ctype, data))
        check(ctype == "application/json", "%s %s answered Content-Type %r: %r" % (method, path, ctype, data[:200]))
        return status, json.loads(data), r

    def get(self, path, token="tok-a"):
        return self.request("GET", path, token=token)

    def submit(self, lines, token="tok-a", query="", headers=None):
        body = "".join(json.dumps(x) + "\n" for x in lines).encode()
        h = {"Content-Type": "application/x-ndjson"}
        h.update(headers or {})
        return self.request("POST", "/v1/batches?queue=api" + query, body, token, h)

    def stream(self, path, token="tok-a", last_id=None):
        """An event stream read through curl --no-buffer."""
        st = Stream(self.port, path, token, last_id)
        self.log.append(("GET", path, st.status, st.getheader("Content-Type", ""), b""))
        return st

    def events(self, batch, token="tok-a", last_id=None, stop_after=None, queue="api"):
        """Reads the batch's event stream; returns the events (id, event, data)
        and whether the server ended the stream."""
        st = self.stream("/v1/batches/%s/events?queue=%s" % (batch, queue), token, last_id)
        check(st.status == 200, "events: status %d" % st.status)
        check(st.getheader("Content-Type") == "text/event-stream", "events: %r" % st.getheader("Content-Type"))
        out = []
        while True:
            ev = st.next_event()
            if ev is None:
                st.close()
                return out, True
            out.append(ev)
            if stop_after is not None and len(out) >= stop_after:
                st.close()
                return out, False

    def close(self):
        for w in self.workers:
            w.kill()
        if self.server is not None:
            self.server.kill()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Answer:
    """The headers of an answer, looked up as http.client's are."""

    def __init__(self, block):
        lines = block.split("\r\n")
        self.status_line = lines[0]
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def getheader(self, name, default=None):
        return self.headers.get(name.lower(), default)


class Stream:
    """A server-sent event stream through curl --no-buffer: the status and
    headers first, then one event at a time."""

    def __init__(self, port, path, token, last_id=None):
        args = ["curl", "-sS", "--no-buffer", "-i", "-H", "Authorization: Bearer " + token]
        if last_id:
            args += ["-H", "Last-Event-ID: " + last_id]
        self.p = subprocess.Popen(args + ["http://127.0.0.1:%d%s" % (port, path)], stdout=subprocess.PIPE)
        block = []
        while True:
            line = self.p.stdout.readline()
            check(line != b"", "curl %s: the stream closed before its headers" % path)
            line = line.decode("latin-1").rstrip("\r\n")
            if line == "":
                break
            block.append(line)
        self.answer = Answer("\r\n".join(block))
        self.status = int(self.answer.status_line.split()[1])

    def getheader(self, name, default=None):
        return self.answer.getheader(name, default)

    def next_event(self):
        """The next event as {"id", "event", "data"}, skipping comments; None
        when the server ended the stream."""
        cur = {}
        while True:
            line = self.p.stdout.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line == "":
                if "data" in cur:
                    return cur
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(": ")
                cur[k] = v

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.p.stdout.close()


def noops(n, **kw):
    return [dict({"type": "noop", "payload": {}}, **kw) for _ in range(n)]


def test_probes(env):
    # Keep-alive: answers straight away and answers of Redis work alike keep the connection open.
    c = http.client.HTTPConnection("127.0.0.1", env.port, timeout=30)
    for path in ("/healthz", "/v1/batches/nosuch?queue=api", "/readyz", "/v1/batches/nosuch?queue=api"):
        c.request("GET", path, headers={"Authorization": "Bearer tok-a"})
        r = c.getresponse()
        r.read()
        check(r.getheader("Connection", "").lower() != "close", "GET %s closed the connection" % path)
    c.close()
    st, body, _ = env.get("/healthz", token=None)
    check(st == 200 and body == {"ok": True}, "healthz: %d %r" % (st, body))
    st, body, _ = env.get("/readyz", token=None)
    check(st == 200 and body["ready"] is True, "readyz: %d %r" % (st, body))
    env.redis.kill()
    env.redis.wait()
    st, body, _ = env.get("/readyz", token=None)
    check(st == 503 and body["error"]["code"] == "not_ready", "readyz with Redis gone: %d %r" % (st, body))
    st, body, r = env.submit(noops(3))
    check(st == 503 and r.getheader("Retry-After") == "5", "submit with Redis gone: %d %r" % (st, body))
    check(env.get("/healthz", token=None)[0] == 200, "healthz with Redis gone")
    env.start_redis()
    subprocess.run([SLUICE, "library", "load", "--redis", env.url], capture_output=True, check=True)
    wait_for(lambda: env.get("/readyz", token=None)[0] == 200, 20, "readyz after Redis came back")
    st, body, _ = env.submit(noops(3))
    check(st == 201, "submit after Redis came back: %d %r" % (st, body))
    print("  probes: healthz, readyz 503 while Redis is down (submit 503, Retry-After 5), ready again after")


def test_auth(env):
    st, body, r = env.get("/v1/batches/X", token=None)
    check(st == 401 and body["error"]["code"] == "unauthorized" and r.getheader("WWW-Authenticate"),
          "no token: %d %r" % (st, body))
    st, body, _ = env.get("/v1/batches/X", token="nope")
    check(st == 401, "bad token: %d" % st)
    st, body, _ = env.submit(noops(1), token="tok-r")
    check(st == 403 and body["error"]["code"] == "forbidden", "read token submits: %d %r" % (st, body))
    st, a, _ = env.submit(noops(2), token="tok-a")
    check(st == 201 and a["status"]["tenant"] == "acme", "tenant a: %d %r" % (st, a))
    ba = a["batch"]
    check(env.get("/v1/batches/%s?queue=api" % ba, token="tok-r")[0] == 200, "a read token of the tenant reads")
    for method, path in (("GET", "/v1/batches/%s?queue=api"), ("POST", "/v1/batches/%s/cancel?queue=api"),
                         ("POST", "/v1/batches/%s/pause?queue=api")):
        st, body, _ = env.request(method, path % ba, token="tok-b")
        check(st == 404 and body["error"]["code"] == "not_found", "tenant b on a's batch: %s %d %r"
              % (method, st, body))
    ev, ended = env.events(ba, token="tok-b")
    check(ended and ev and ev[0].get("event") == "error" and "not_found" in ev[0]["data"],
          "tenant b follows a's batch: %r" % ev)
    check(env.get("/v1/batches/%s?queue=api" % ba, token="tok-admin")[0] == 200, "admin reads every tenant")
    # SIGHUP reloads: tok-b removed.
    env.write_tokens({"tok-a": ("acme", "submit")})
    env.server.send_signal(signal.SIGHUP)
    wait_for(lambda: env.get("/healthz", token=None)[0] == 200 and
             env.get("/v1/batches/X", token="tok-b")[0] == 401, 10, "tok-b refused after SIGHUP")
    env.write_tokens({"tok-a": ("acme", "submit"), "tok-b": ("bravo", "submit"), "tok-r": ("acme", "read"),
                      "tok-admin": ("ops", "admin"), "tok-q": ("quota", "submit", "batches=2/h"),
                           "tok-qi": ("quotai", "submit", "items=100/10s")})
    env.server.send_signal(signal.SIGHUP)
    wait_for(lambda: env.get("/v1/batches/X", token="tok-b")[0] == 404, 10, "tok-b back after SIGHUP")
    print("  auth: 401 without or with a bad token, 403 for a read token, tenants see only their own, SIGHUP")


def test_submit(env):
    st, body, _ = env.submit([{"type": "noop", "payload": {}}, {"type": "noop", "payload": {}, "priority": "urgent"},
                              {"type": "noop"}])
    e = body["error"]
    check(st == 400 and e["code"] == "invalid_items" and e["line"] == 2 and e["field"] == "priority" and
          len(e["errors"]) == 2 and e["errors"][1] == {"line": 3, "field": "payload",
                                                     "message": "field \"payload\": missing (use {} or null for none)"},
          "bad lines: %d %r" % (st, body))
    out = subprocess.run([SLUICE, "submit", "--check", "-"], input=b'{"type":"noop","payload":{},"priority":"urgent"}\n',
                         capture_output=True)
    check(e["errors"][0]["message"] in out.stderr.decode(), "not the CLI's words: %r vs %r" % (e, out.stderr))
    st, body, _ = env.request("POST", "/v1/batches?queue=api", b"x", headers={"Content-Type": "text/plain"})
    check(st == 415, "text/plain: %d %r" % (st, body))
    st, body, _ = env.request("POST", "/v1/batches?queue=api", b'{"items":[{"type":"noop","payload":{}}',
                              headers={"Content-Type": "application/json"})
    check(st == 400 and body["error"]["code"] == "invalid_json", "cut JSON: %d %r" % (st, body))
    st, body, _ = env.request("POST", "/v1/batches?queue=api", b'{"items":[],"colour":1}',
                              headers={"Content-Type": "application/json"})
    check(st == 400 and body["error"]["code"] == "unknown_field", "unknown member: %d %r" % (st, body))
    st, body, _ = env.submit(noops(1), query="&colour=red")
    check(st == 400 and body["error"]["field"] == "options.colour", "unknown option: %d %r" % (st, body))
    st, body, _ = env.request("POST", "/v1/batches?queue=api", b"", headers={"Content-Type": "application/x-ndjson"})
    check(st == 400 and body["error"]["code"] == "no_items", "empty body: %d %r" % (st, body))
    # Over --max-body: refused from its Content-Length, before the body is read.
    with open(os.path.join(env.tmp, "big.ndjson"), "wb") as f:
        f.write(b'{"type":"noop","payload":"' + b"a" * 3000000 + b'"}\n')
    st, body, _ = env.request("POST", "/v1/batches?queue=api", open(os.path.join(env.tmp, "big.ndjson"), "rb").read(),
                              headers={"Content-Type": "application/x-ndjson"})
    check(st == 413 and body["error"]["code"] == "body_too_large", "over --max-body: %d %r" % (st, body))
    # JSON form, options after items; the ids are the items' positions.
    items = [{"type": "noop", "payload": {"n": i}} for i in range(1000)]
    st, body, _ = env.request("POST", "/v1/batches?queue=api",
                              json.dumps({"items": items, "options": {"name": "json", "max_attempts": 2}}).encode(),
                              headers={"Content-Type": "application/json"})
    check(st == 201 and body["submitted"] == 1000 and body["status"]["name"] == "json", "JSON body: %d %r"
          % (st, str(body)[:300]))
    items[500] = {"type": "noop", "payload": {}, "timeout_ms": 0}
    st, body, _ = env.request("POST", "/v1/batches?queue=api", json.dumps({"options": {}, "items": items}).encode(),
                              headers={"Content-Type": "application/json"})
    check(st == 400 and body["error"]["line"] == 501 and body["error"]["field"] == "timeout_ms",
          "JSON body, bad item 501: %d %r" % (st, body))
    # Idempotency-Key
    st1, b1, _ = env.submit(noops(5), headers={"Idempotency-Key": "order-9"})
    st2, b2, _ = env.submit(noops(5), headers={"Idempotency-Key": "order-9"})
    check(st1 == 201 and st2 == 200 and b2["reused"] and b1["batch"] == b2["batch"], "Idempotency-Key: %r %r"
          % (b1, b2))
    st3, b3, _ = env.submit(noops(5), token="tok-b", headers={"Idempotency-Key": "order-9"})
    check(st3 == 201 and b3["batch"] != b1["batch"], "another tenant's key is its own: %r" % b3)
    print("  submit: CLI messages with lines, 415, 413, invalid JSON, unknown member and option, empty body, "
          "JSON form (item 501 named), Idempotency-Key per tenant")


def test_events(env):
    st, b, _ = env.submit([{"type": "sleep", "payload": {"ms": 100}} for _ in range(2000)])
    batch = b["batch"]
    first, ended = env.events(batch, stop_after=1)
    check(json.loads(first[0]["data"])["status"] == "queued", "first event: %r" % first)
    # 20 followers of the batch and 5 of the queue: still one subscriber to the queue's channel in Redis.
    streams = [env.stream("/v1/batches/%s/events?queue=api" % batch) for _ in range(20)]
    streams += [env.stream("/v1/events?queue=api") for _ in range(5)]
    for st in streams:
        check(st.status == 200 and st.next_event() is not None, "a follower got no first event")
    subs = subprocess.run(["redis-cli", "-s", env.sock, "PUBSUB", "SHARDNUMSUB", "sluice:{api}:events"],
                          capture_output=True, text=True).stdout.split()
    for st in streams:
        st.close()
    check(subs[-1] == "1", "25 streams open: %s subscribers to sluice:{api}:events, expected 1" % subs[-1])
    env.worker()
    ev, ended = env.events(batch)
    check(ended, "the stream did not end after the batch did")
    last = json.loads(ev[-1]["data"])
    check(last["status"] == "completed" and last["done"] == 2000 and last["succeeded"] == 2000,
          "last event: %r" % last)
    check(len(ev) >= 5, "only %d events while 2,000 items of 100 ms ran" % len(ev))
    dones = [json.loads(e["data"])["done"] for e in ev if e.get("event") == "batch"]
    check(dones == sorted(dones), "done went down: %r" % dones)
    # A reconnect with Last-Event-ID (here after the end): the end comes again, from the hash.
    again, ended = env.events(batch, last_id=ev[len(ev) // 2].get("id"))
    check(ended and json.loads(again[0]["data"])["status"] == "completed", "reconnect: %r" % again[:2])
    # Midway: a slow batch, read 2 events, drop, reconnect with the last id, read to the end.
    st, b, _ = env.submit([{"type": "sleep", "payload": {"ms": 100}} for _ in range(1000)])
    part, part_ended = env.events(b["batch"], stop_after=2)
    rest, ended = env.events(b["batch"], last_id=part[-1].get("id"))
    check(not part_ended and json.loads(part[-1]["data"])["done"] < 1000, "the first reading was not midway: %r" % part)
    check(ended and json.loads(rest[-1]["data"])["done"] == 1000, "reconnect midway: %r" % rest[-1:])
    env.stop_workers()
    print("  events: 25 streams, 1 Redis subscriber; %d events to the end of 2,000 items, monotonic; Last-Event-ID reconnects (after the end, and "
          "midway at done=%s) get the end" % (len(ev), json.loads(part[-1]["data"])["done"]))


def test_queue_events(env):
    st = env.stream("/v1/events?queue=api")
    check(st.status == 200 and st.getheader("Content-Type") == "text/event-stream", "queue events: %d" % st.status)

    def next_event():
        ev = st.next_event()
        check(ev is not None, "the queue stream ended")
        return ev
    first = next_event()
    check(first.get("event") == "snapshot" and all(b.get("tenant") == "acme"
                                                  for b in json.loads(first["data"])["batches"]),
          "snapshot: %r" % first)
    theirs = env.submit(noops(50), token="tok-b")[1]["batch"]
    mine = env.submit(noops(50), token="tok-a")[1]["batch"]
    env.worker()
    seen = set()
    while True:
        ev = json.loads(next_event()["data"])
        seen.add(ev["batch"])
        check(ev.get("tenant") == "acme", "another tenant's event on a's queue stream: %r" % ev)
        if ev["batch"] == mine and ev["status"] == "completed":
            break
    st.close()
    env.events(theirs, token="tok-b")
    env.stop_workers()
    check(theirs not in seen, "b's batch was seen")
    print("  queue_events: a snapshot, then only the tenant's own batches' events, to the end of its batch")


def test_quota(env):
    first = env.submit(noops(3), token="tok-q", headers={"Idempotency-Key": "q-1"})
    second = env.submit(noops(3), token="tok-q")
    check(first[0] == 201 and second[0] == 201, "the first two batches: %r %r" % (first[1], second[1]))
    st, body, r = env.submit(noops(3), token="tok-q")
    hour_wait = int(r.getheader("Retry-After") or 0)
    check(st == 429 and body["error"]["code"] == "quota_exceeded" and 1700 <= hour_wait <= 1800,
          "the third batch: %d %r Retry-After %r" % (st, body, hour_wait))
    st, body, _ = env.submit(noops(3), token="tok-q", headers={"Idempotency-Key": "q-1"})
    check(st == 200 and body["reused"] and body["batch"] == first[1]["batch"], "a repeated key: %d %r" % (st, body))
    check(env.submit(noops(60), token="tok-qi")[0] == 201, "60 items")
    st, body, r = env.submit(noops(50), token="tok-qi")
    wait = int(r.getheader("Retry-After") or 0)
    check(st == 429 and 1 <= wait <= 2, "50 more items: %d %r Retry-After %r" % (st, body, wait))
    time.sleep(wait)  # honouring the server's Retry-After is the point here
    st, body, _ = env.submit(noops(50), token="tok-qi")
    check(st == 201, "after Retry-After: %d %r" % (st, body))
    st, body, _ = env.submit(noops(150), token="tok-qi")
    check(st == 413 and body["error"]["code"] == "over_quota", "150 items: %d %r" % (st, body))
    print("  quota: 429 with Retry-After %d s for a third batch in the hour; items quota honoured after Retry-After; "
          "413 for a batch that can never fit" % hour_wait)


def test_control(env):
    st, b, _ = env.submit(noops(50))
    batch = b["batch"]
    p = "/v1/batches/%s/%%s?queue=api" % batch
    st, body, _ = env.request("POST", p % "resume")
    check(st == 409 and body["error"]["code"] == "conflict", "resume of a queued batch: %d %r" % (st, body))
    st, body, _ = env.request("POST", p % "pause")
    check(st == 200 and body["status"] == "paused", "pause: %d %r" % (st, body))
    out = subprocess.run([SLUICE, "log", "--redis", env.url, "--queue", "api", batch, "--json"], capture_output=True,
                         text=True).stdout
    by = [json.loads(x).get("by", "") for x in out.splitlines() if json.loads(x)["event"] in ("submitted", "paused")]
    check(len(by) == 2 and all("(sluice serve) tenant acme, role submit" in x for x in by), "the log's actors: %r" % by)
    st, body, _ = env.request("POST", p % "resume")
    check(st == 200 and body["status"] == "queued", "resume: %d %r" % (st, body))
    st, body, _ = env.request("POST", p % "cancel")
    check(st == 200 and body["status"] == "cancelled", "cancel: %d %r" % (st, body))
    st, body, _ = env.request("POST", p % "cancel")
    check(st == 409, "cancel twice: %d %r" % (st, body))
    st, body, _ = env.request("POST", p % "retry")
    check(st == 409, "retry of a cancelled batch: %d %r" % (st, body))
    st, b, _ = env.submit([{"type": "sleep", "payload": {"ms": 0, "fail_rate": 1}} for _ in range(20)])
    env.worker()
    ev, _ = env.events(b["batch"])
    check(json.loads(ev[-1]["data"])["failed"] == 20, "failing batch: %r" % ev[-1])
    st, body, _ = env.request("POST", "/v1/batches/%s/retry?queue=api" % b["batch"])
    check(st == 200 and body["requeued"] == 20, "retry: %d %r" % (st, body))
    env.stop_workers()
    # Cancel with abort: the running items of a batch stop now; /items lists them first
    st, b, _ = env.submit([{"id": "long-%d" % i, "type": "sleep", "payload": {"ms": 60000}} for i in range(30)])
    env.worker("api", "--concurrency", "4")
    deadline = time.time() + 20
    while True:
        st, data, r = raw(env, "GET", "/v1/batches/%s/items?queue=api&state=running" % b["batch"], token="tok-a")
        running = [json.loads(x) for x in data.splitlines()]
        if len(running) == 4 or time.time() > deadline:
            break
        time.sleep(0.1)
    check(st == 200 and r.getheader("Content-Type") == "application/x-ndjson" and len(running) == 4 and
          all(x["state"] == "running" and x["worker"] and x["since"] > 0 for x in running), "items: %r" % running)
    st, data, _ = raw(env, "GET", "/v1/batches/%s/items?queue=api&limit=10" % b["batch"], token="tok-a")
    rows = [json.loads(x) for x in data.splitlines()]
    check(len(rows) == 10 and [x["state"] for x in rows[:4]] == ["running"] * 4 and rows[4]["state"] == "queued",
          "items, all states: %r" % rows)
    check(raw(env, "GET", "/v1/batches/%s/items?queue=api&state=done" % b["batch"], token="tok-a")[0] == 400,
          "items with an unknown state")
    check(raw(env, "GET", "/v1/batches/%s/items?queue=api" % b["batch"], token="tok-b")[0] == 404,
          "another tenant's items")
    st, body, _ = env.request("POST", "/v1/batches/%s/cancel?queue=api&abort=1" % b["batch"])
    check(st == 200 and body["status"] == "cancelled", "cancel with abort: %d %r" % (st, body))
    deadline = time.time() + 20
    while env.get("/v1/batches/%s?queue=api" % b["batch"])[1]["done"] < 30 and time.time() < deadline:
        time.sleep(0.1)
    st, body, _ = env.get("/v1/batches/%s?queue=api" % b["batch"])
    check(body["cancelled"] == 30 and body["running"] == 0, "after abort: %r" % body)
    env.stop_workers()
    print("  control: pause, resume, cancel, retry; 409 for resume of a queued, a second cancel, retry of cancelled; "
          "items by state (4 running, then queued); cancel with abort stops the running 4")


def test_dashboard(env):
    """The dashboard's files: no token needed (they hold no data), a CSP that
    allows this origin's scripts only, and no inline script or style in the
    page, so that CSP can forbid them."""
    import re
    st, html, r = env.curl("GET", "/", token=None)
    csp = r.getheader("Content-Security-Policy", "")
    check(st == 200 and r.getheader("Content-Type") == "text/html; charset=utf-8", "GET /: %d" % st)
    check("script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp, "CSP: %r" % csp)
    check(r.getheader("X-Content-Type-Options") == "nosniff", "nosniff")
    page = html.decode()
    check(not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script in the page")
    check(not re.search(r"\son[a-z]+=", page) and "style=" not in page, "inline handlers or styles in the page")
    names = re.findall(r'(?:src|href)="(/ui/[^"]+)"', page)
    check(len(names) >= 3, "the page's files: %r" % names)
    for name in names + ["/ui/api.js", "/ui/batches.js", "/ui/queue.js", "/ui/dom.js"]:
        st, data, r = env.curl("GET", name, token=None)
        check(st == 200 and r.getheader("Content-Security-Policy") == csp and len(data) > 100, "%s: %d" % (name, st))
        if name.endswith(".js"):
            check(r.getheader("Content-Type") == "text/javascript; charset=utf-8", "%s: %r" % (name, r.getheader("Content-Type")))
            check("eval(" not in data.decode() and "innerHTML" not in data.decode(), "%s uses eval or innerHTML" % name)
    st, data, _ = env.curl("GET", "/ui/nope.js", token=None)
    check(st == 404 and json.loads(data)["error"]["code"] == "not_found", "an unknown file: %d" % st)
    st, data, _ = env.curl("POST", "/", b"x", token=None)
    check(st == 405, "POST /: %d" % st)
    print("  dashboard: / and %d files without a token, CSP %r, no inline script or style" % (len(names) + 4, csp[:40]))


def raw(env, method, path, body=None, token="tok-admin"):
    status, data, r = env.curl(method, path, body, token)
    env.log.append((method, path, status, r.getheader("Content-Type", ""), data))
    return status, data, r


def test_openapi(env):
    import re
    import jsonschema
    doc = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                                      "openapi.json")))
    st, served, _ = env.get("/v1/openapi.json", token=None)
    check(st == 200 and served == doc, "/v1/openapi.json is not docs/openapi.json")
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["Error"])
    resolver = jsonschema.RefResolver.from_schema(doc)
    routes = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in doc["paths"]]
    checked, ops, called = 0, set(), set()
    for method, path, status, ctype, body in env.log:
        bare = path.split("?")[0]
        tmpl = [p for rx, p in routes if rx.match(bare)]
        check(tmpl, "%s %s: the path is not in docs/openapi.json" % (method, bare))
        op = doc["paths"][tmpl[-1]].get(method.lower())
        if method == "OPTIONS":
            continue
        check(op is not None, "%s %s: the method is not in docs/openapi.json" % (method, tmpl[-1]))
        called.add(op["operationId"])
        if not ctype.startswith("application/json"):
            continue
        resp = op["responses"].get(str(status))
        check(resp is not None, "%s %s answered %d, which docs/openapi.json does not list" % (method, tmpl[-1], status))
        schema = resp["content"]["application/json"]["schema"]
        try:
            jsonschema.Draft202012Validator(schema, resolver=resolver).validate(json.loads(body))
        except jsonschema.ValidationError as e:
            raise Failure("%s %s %d: the body does not match docs/openapi.json: %s (%r)"
                          % (method, bare, status, e.message, body[:200]))
        checked += 1
        ops.add(op["operationId"])
    every = {o["operationId"] for v in doc["paths"].values() for o in v.values() if isinstance(o, dict)}
    check(not env.every_case or called == every, "operations no case called: %s" % sorted(every - called))
    print("  openapi: %d JSON answers of %d operations match docs/openapi.json; %d of %d operations called"
          % (checked, len(ops), len(called), len(every)))


def test_list(env):
    mine = []
    for i in range(5):
        mine.append(env.submit(noops(1), query="&name=list-a%d" % i, token="tok-a")[1]["batch"])
    theirs = [env.submit(noops(1), query="&name=list-b", token="tok-b")[1]["batch"] for _ in range(3)]
    seen, cursor = [], None
    while True:
        st, page, r = env.get("/v1/batches?queue=api&limit=2" + ("&cursor=" + cursor if cursor else ""))
        check(st == 200, "list: %d %r" % (st, page))
        seen += [b["batch"] for b in page["batches"]]
        check(all(b["tenant"] == "acme" for b in page["batches"]), "another tenant's batch listed: %r" % page)
        cursor = page["next"]
        check(cursor == r.getheader("X-Next-Cursor"), "next and X-Next-Cursor differ")
        if cursor is None:
            break
    check(len(seen) == len(set(seen)) and set(mine) <= set(seen) and not set(theirs) & set(seen),
          "tenant a's pages: %r" % seen)
    check(seen.index(mine[4]) < seen.index(mine[0]), "not newest first")
    st, page, _ = env.get("/v1/batches?queue=api&name=list-a3")
    check([b["batch"] for b in page["batches"]] == [mine[3]], "name filter: %r" % page)
    st, page, _ = env.get("/v1/batches?queue=api&status=queued&limit=1000")
    check(set(mine) <= {b["batch"] for b in page["batches"]} and all(b["status"] == "queued" for b in page["batches"]),
          "status filter: %r" % page)
    st, page, _ = env.get("/v1/batches?queue=api&tenant=bravo&limit=1000", token="tok-admin")
    check({b["batch"] for b in page["batches"]} >= set(theirs) and all(b["tenant"] == "bravo" for b in page["batches"]),
          "admin lists bravo's: %r" % page)
    check(env.get("/v1/batches?queue=api&tenant=bravo")[0] == 403, "a tenant lists another's")
    # Labels: given as a JSON object or a query argument, listed by key or key=value (all parts must hold).
    st, ml, _ = env.request("POST", "/v1/batches?queue=api", json.dumps(
        {"items": noops(1), "options": {"labels": {"team": "ml", "env": "prod"}}}).encode(),
        headers={"Content-Type": "application/json"})
    check(st == 201 and ml["status"]["labels"] == {"env": "prod", "team": "ml"}, "labels: %d %r" % (st, ml))
    web = env.submit(noops(1), query="&labels=team=web,env=prod")[1]
    env.submit(noops(1), query="&labels=team=ml", token="tok-b")
    for flt, want in (("team=ml", [ml]), ("team", [web, ml]), ("env=prod,team=web", [web]), ("env=dev", []),
                      ("owner", [])):
        st, page, _ = env.get("/v1/batches?queue=api&label=" + flt)
        check(st == 200 and [b["batch"] for b in page["batches"]] == [b["batch"] for b in want],
              "label=%s: %r" % (flt, page))
    st, body, _ = env.get("/v1/batches?queue=api&label=a,,b")
    check(st == 400 and body["error"]["field"] == "label", "label=a,,b: %d %r" % (st, body))
    for bad in ({"bad key": "x"}, {"k": "a,b"}, {"k": 1}, "k", {"k%d" % i: "v" for i in range(17)}, {"k": "v" * 9999}):
        st, body, _ = env.request("POST", "/v1/batches?queue=api", json.dumps(
            {"items": noops(1), "options": {"labels": bad}}).encode(), headers={"Content-Type": "application/json"})
        check(st == 400 and body["error"]["field"] == "options.labels", "labels %.200r: %d %r" % (bad, st, body))
    print("  list: a tenant lists its own only, paged by cursor, newest first; name, status, label and admin filters; "
          "bad labels named")


def test_queue(env):
    items = [{"id": "q%d" % i, "type": "sleep", "payload": {"ms": 0, "fail_rate": 1 if i % 10 == 0 else 0}}
             for i in range(250)]
    st, b, _ = env.submit(items)
    batch = b["batch"]
    env.worker()
    env.events(batch)
    # Results, paged: 100 per page, the cursor in X-Next-Cursor, in item order.
    lines, cursor = [], 0
    while True:
        st, data, r = raw(env, "GET", "/v1/batches/%s/results?queue=api&limit=100&cursor=%d" % (batch, cursor),
                          token="tok-a")
        check(st == 200 and r.getheader("Content-Type") == "application/x-ndjson", "results: %d %r" % (st, data[:100]))
        lines += [json.loads(x) for x in data.splitlines()]
        nxt = r.getheader("X-Next-Cursor")
        if nxt is None:
            break
        cursor = int(nxt)
    check([x["id"] for x in lines] == ["q%d" % i for i in range(250)], "results pages: %d lines" % len(lines))
    st, data, _ = raw(env, "GET", "/v1/batches/%s/results?queue=api&status=failed" % batch, token="tok-a")
    check(len(data.splitlines()) == 25, "failed results: %d" % len(data.splitlines()))
    check(raw(env, "GET", "/v1/batches/%s/results?queue=api" % batch, token="tok-b")[0] == 404,
          "another tenant's results")
    # Stats: equal to sluice stats --json (but the moving minute figures).
    st, stats, _ = env.get("/v1/queues/api/stats", token="tok-a")
    cli = json.loads(subprocess.run([SLUICE, "stats", "--json", "--redis", env.url, "--queue", "api"],
                                    capture_output=True, text=True).stdout)
    for k in ("ended_last_minute", "per_s"):
        stats.pop(k, None)
        cli.pop(k, None)
    check(stats == cli, "stats differ: API %r, CLI %r" % (stats, cli))
    check(stats["dead"] >= 25, "dead letters in stats: %r" % stats)
    st, workers, _ = env.get("/v1/workers?queue=api", token="tok-admin")
    check(st == 200 and len(workers) == 1 and workers[0]["queue"] == "api", "workers: %r" % workers)
    check(env.get("/v1/workers?queue=api", token="tok-a")[0] == 403, "workers for a submit token")
    st, dead, _ = env.get("/v1/dead?queue=api&limit=5", token="tok-admin")
    check(st == 200 and len(dead) == 5 and dead[0]["batch"], "dead: %r" % dead[:1])
    st, body, _ = env.request("POST", "/v1/dead/requeue?queue=api", json.dumps({"ids": [dead[0]["id"]]}).encode(),
                              token="tok-admin")
    check(st == 200 and body == {"requeued": 1, "skipped": 0}, "requeue: %d %r" % (st, body))
    st, body, _ = env.request("PUT", "/v1/limits/openai?queue=api", b'{"rate":"50/s","burst":5}', token="tok-admin")
    check(st == 200 and body["name"] == "openai" and body["burst"] == 5, "limit put: %d %r" % (st, body))
    st, body, _ = env.get("/v1/limits/openai?queue=api", token="tok-admin")
    check(st == 200 and body["rate"] == "50/s", "limit get: %d %r" % (st, body))
    st, body, _ = env.get("/v1/limits?queue=api", token="tok-admin")
    check(st == 200 and [x["name"] for x in body] == ["openai"], "limits: %d %r" % (st, body))
    st, body, _ = env.request("PUT", "/v1/limits/openai?queue=api", b'{"rate":"fast"}', token="tok-admin")
    check(st == 400, "a bad rate: %d %r" % (st, body))
    st, body, _ = env.request("DELETE", "/v1/limits/openai?queue=api", token="tok-admin")
    check(st == 200, "limit delete: %d %r" % (st, body))
    check(env.get("/v1/limits/openai?queue=api", token="tok-admin")[0] == 404, "the limit is gone")
    check(len(stats["throughput"]) == 30 and stats["throughput"][-1] + stats["throughput"][-2] >= 250,
          "throughput: %r" % stats["throughput"])
    st, body, _ = env.request("POST", "/v1/dead/purge?queue=api", token="tok-a")
    check(st == 403, "purge for a submit token: %d %r" % (st, body))
    st, body, _ = env.request("POST", "/v1/dead/purge?queue=api", token="tok-admin")
    check(st == 200 and body["purged"] >= 24, "purge: %d %r" % (st, body))
    check(env.get("/v1/queues/api/stats", token="tok-a")[1]["dead"] == 0, "dead letters after purge")
    # Who am I: without a token, and with one.
    check(env.get("/v1/me", token=None)[1] == {"auth": True, "tenant": None, "role": "none", "queues": ["api", "other"]},
          "me without a token: %r" % (env.get("/v1/me", token=None),))
    check(env.get("/v1/me", token="tok-r")[1] == {"auth": True, "tenant": "acme", "role": "read",
                                                   "queues": ["api", "other"]}, "me with a read token")
    check(env.get("/v1/me", token="nope")[0] == 401, "me with a bad token")
    env.stop_workers()
    print("  queue: 250 results in pages of 100, 25 failed; stats equal to sluice stats (30 minutes of throughput); "
          "workers, dead letters, requeue, purge, limits; /v1/me")


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics(env):
    check(raw(env, "GET", "/metrics", token="tok-a")[0] == 403, "/metrics for a submit token")
    env.request("PUT", "/v1/limits/slow?queue=other", b'{"rate":"5/s","burst":1}', token="tok-admin")
    items = ([{"type": "sleep", "payload": {"ms": 30}} for _ in range(10)] +
             [{"type": "sleep", "payload": {"ms": 0, "fail_rate": 1}, "max_attempts": 2, "backoff_ms": 0,
               "backoff_max_ms": 0} for _ in range(5)] +
             [{"type": "noop", "payload": {}, "rate_key": "slow"} for _ in range(3)])
    st, b, _ = env.request("POST", "/v1/batches?queue=other", "".join(json.dumps(x) + "\n" for x in items).encode(),
                           token="tok-admin", headers={"Content-Type": "application/x-ndjson"})
    c = env.request("POST", "/v1/batches?queue=other", b'{"type":"noop","payload":{}}\n' * 4, token="tok-admin",
                    headers={"Content-Type": "application/x-ndjson"})[1]["batch"]
    env.request("POST", "/v1/batches/%s/cancel?queue=other" % c, token="tok-admin")
    check(st == 201, "the metrics batch: %d %r" % (st, b))
    env.worker("other")
    ev, _ = env.events(b["batch"], token="tok-admin", queue="other")
    last = json.loads(ev[-1]["data"])
    check((last.get("succeeded"), last.get("failed")) == (13, 5), "the batch: %r" % last)
    wait_for(lambda: env.get("/v1/batches/%s?queue=other" % c, token="tok-admin")[1]["done"] == 4, 30,
             "the cancelled batch to end")
    st, data, r = raw(env, "GET", "/metrics")
    check(st == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4"), "/metrics: %d" % st)
    out = subprocess.run(["promtool", "check", "metrics"], input=data, capture_output=True)
    check(out.returncode == 0, "promtool check metrics: %s %s" % (out.stdout.decode(), out.stderr.decode()))
    m = parse_metrics(data.decode())
    q = 'queue="other"'
    want = {'sluice_items_ended_total{%s,outcome="succeeded"}' % q: 13,
            'sluice_items_ended_total{%s,outcome="failed"}' % q: 5,
            'sluice_items_ended_total{%s,outcome="cancelled"}' % q: 4,
            'sluice_item_retries_total{%s}' % q: 5,
            'sluice_item_duration_seconds_count{%s}' % q: 18,
            'sluice_item_duration_seconds_bucket{%s,le="0.025"}' % q: 8,
            'sluice_dead_letters{%s}' % q: 5,
            'sluice_workers{%s}' % q: 1,
            'sluice_queue_items{%s,priority="normal",state="queued"}' % q: 0}
    got = {k: m.get(k) for k in want}
    check(got == want, "metrics: %r, expected %r" % (got, want))
    check(m['sluice_rate_limit_waits_total{%s}' % q] >= 2, "rate-limit waits: %r" % m)
    check(m['sluice_item_duration_seconds_sum{%s}' % q] >= 0.25, "duration sum (10 items of 30 ms): %r" % m['sluice_item_duration_seconds_sum{%s}' % q])
    check(0 < m["sluice_redis_roundtrip_seconds"] < 1, "round trip: %r" % m)
    stats = env.get("/v1/queues/other/stats", token="tok-admin")[1]
    ended = sum(v for k, v in m.items() if k.startswith("sluice_items_ended_total{%s" % q))
    check(stats["dead"] == 5 and stats["workers"] == 1 and stats["ended_last_minute"] == ended - 4,
          "sluice stats %r against %d ended" % (stats, ended))
    env.stop_workers()
    parked, waiting, took = metrics_gauges(env)
    print("  metrics: promtool passes; 13/5/4 ended, 5 retries, %d rate-limit waits, 18 durations; agrees with "
          "sluice stats; %d parked, %d waiting for a lease, %d taken over" % (m['sluice_rate_limit_waits_total{%s}' % q],
                                                                          parked, waiting, took))


def metric(env, name):
    st, data, _ = raw(env, "GET", "/metrics")
    check(st == 200, "/metrics: %d" % st)
    return parse_metrics(data.decode()).get(name)


def metrics_gauges(env):
    """Parked items, items waiting for a lease, and takeovers, each seen in
    /metrics while it holds (the other queue has no worker at first)."""
    q = 'queue="other"'
    admin = {"token": "tok-admin", "headers": {"Content-Type": "application/x-ndjson"}}
    # Parked: a paused batch's items, parked as a worker reads them.
    b = env.request("POST", "/v1/batches?queue=other", b'{"type":"noop","payload":{}}\n' * 30, **admin)[1]["batch"]
    env.request("POST", "/v1/batches/%s/pause?queue=other" % b, token="tok-admin")
    env.worker("other")
    wait_for(lambda: metric(env, "sluice_items_parked{%s}" % q) == 30, 30, "30 parked items in /metrics")
    stats = env.get("/v1/queues/other/stats", token="tok-admin")[1]
    check(stats["parked"] == 30, "stats parked: %r" % stats)
    env.request("POST", "/v1/batches/%s/resume?queue=other" % b, token="tok-admin")
    env.events(b, token="tok-admin", queue="other")
    check(metric(env, "sluice_items_parked{%s}" % q) == 0, "parked items after the resume")
    # Waiting for a lease: 5 items of 3 s under a concurrency of 1.
    env.request("PUT", "/v1/limits/one?queue=other", b'{"concurrency":1}', token="tok-admin")
    b = env.request("POST", "/v1/batches?queue=other", b'{"type":"sleep","payload":{"ms":3000},"rate_key":"one"}\n' * 5,
                    **admin)[1]["batch"]
    wait_for(lambda: metric(env, "sluice_items_waiting_lease{%s}" % q) == 4, 20, "4 items waiting for the lease")
    lim = env.get("/v1/limits/one?queue=other", token="tok-admin")[1]
    check(lim["waiting"] + lim["running"] >= 4, "limit one: %r" % lim)
    env.request("POST", "/v1/batches/%s/cancel?queue=other" % b, token="tok-admin")
    env.stop_workers()
    # Takeovers: a worker killed with 3 items running; another takes them over after the visibility timeout.
    before = metric(env, "sluice_item_takeovers_total{%s}" % q)
    b = env.request("POST", "/v1/batches?queue=other", b'{"type":"sleep","payload":{"ms":1500}}\n' * 3,
                    **admin)[1]["batch"]
    doomed = env.worker("other", "--visibility", "1000")
    wait_for(lambda: env.get("/v1/queues/other/stats", token="tok-admin")[1]["running"] == 3, 20,
             "the 3 items to run")
    doomed.kill()
    doomed.wait()
    env.workers.remove(doomed)
    env.worker("other", "--visibility", "1000")
    ev, _ = env.events(b, token="tok-admin", queue="other")
    check(json.loads(ev[-1]["data"])["succeeded"] == 3, "the batch after the takeover: %r" % ev[-1])
    took = metric(env, "sluice_item_takeovers_total{%s}" % q) - before
    check(took == 3, "takeovers: %r more, expected 3" % took)
    env.stop_workers()
    return 30, 4, took


def strip_times(line):
    d = json.loads(line)
    for k in ("started_at", "finished_at", "duration_ms", "worker"):
        d.pop(k, None)
    return d


def test_same(env):
    items = [{"id": "i%d" % i, "type": "sleep", "payload": {"ms": 0, "fail_rate": 1 if i % 7 == 0 else 0}}
             for i in range(300)]
    path = os.path.join(env.tmp, "same.jsonl")
    with open(path, "w") as f:
        f.write("".join(json.dumps(x) + "\n" for x in items))
    cli = subprocess.run([SLUICE, "submit", "--redis", env.url, "--queue", "api", path], capture_output=True,
                         text=True).stdout.strip()
    st, b, _ = env.submit(items)
    env.worker()
    for batch in (cli, b["batch"]):
        env.events(batch, token="tok-admin")
    env.stop_workers()
    counters = []
    results = []
    for batch in (cli, b["batch"]):
        st, s, _ = env.get("/v1/batches/%s?queue=api" % batch, token="tok-admin")
        counters.append({k: s[k] for k in ("status", "total", "done", "succeeded", "failed", "cancelled")})
        out = subprocess.run([SLUICE, "results", "--redis", env.url, "--queue", "api", batch], capture_output=True,
                             text=True).stdout
        results.append([strip_times(x) for x in out.splitlines()])
    check(counters[0] == counters[1], "counters differ: CLI %r, API %r" % tuple(counters))
    check(results[0] == results[1], "results lines differ")
    print("  same: the CLI and the API give the same counters (%r) and 300 results lines" % counters[0])


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure("no %s in /proc/%d/status" % (field, pid))


def sanitized():
    """True when the binary runs under ASan, whose allocator keeps freed memory (RSS says nothing then)."""
    out = subprocess.run(["ldd", shutil.which(SLUICE) or SLUICE], capture_output=True, text=True).stdout
    return "libasan" in out


def test_upload_memory(env):
    env.stop_server()
    env.serve("--max-body", "100000000")
    path = os.path.join(env.tmp, "upload.ndjson")
    with open(path, "w") as f:
        for i in range(100000):
            f.write(json.dumps({"id": "u%d" % i, "type": "noop", "payload": {"text": "x" * 300, "n": i}}) + "\n")
    size = os.path.getsize(path)
    before = vm_kib(env.server.pid, "VmHWM")
    out = subprocess.run(["curl", "-sS", "-H", "Authorization: Bearer tok-a", "-H", "Content-Type: application/x-ndjson",
                          "--data-binary", "@" + path, "http://127.0.0.1:%d/v1/batches?queue=api" % env.port],
                         capture_output=True, timeout=120)
    body = json.loads(out.stdout)
    check(body.get("submitted") == 100000, "100,000 items: %r" % body)
    grew = vm_kib(env.server.pid, "VmHWM") - before
    env.stop_server()  # the next case gets the usual flags back
    if not sanitized():
        check(grew * 1024 < size / 2, "the server's peak RSS grew %d KiB for a %d KiB upload" % (grew, size // 1024))
    print("  upload_memory: 100,000 items (%.1f MiB) parsed as they came: the server's peak RSS grew %.1f MiB%s"
          % (size / 1048576, grew / 1024, " (not checked under ASan)" if sanitized() else ""))


def test_listen(env):
    out = subprocess.run([SLUICE, "serve", "--redis", env.url, "--listen", "0.0.0.0:%d" % free_port(), "--queue",
                          "api"], capture_output=True, text=True, timeout=30)
    check(out.returncode == 2 and "is not a loopback address: give --tokens FILE" in out.stderr,
          "a non-loopback --listen without tokens: exit %d %r" % (out.returncode, out.stderr))
    print("  listen: a non-loopback address without --tokens is refused (exit 2)")


def test_cors(env):
    st, data, r = raw(env, "OPTIONS", "/v1/batches")
    check(st == 405 and r.getheader("Access-Control-Allow-Origin") is None, "OPTIONS without --cors: %d" % st)
    st, data, r = raw(env, "GET", "/healthz")
    check(r.getheader("Access-Control-Allow-Origin") is None, "a CORS header without --cors")
    env.stop_server()
    env.serve("--cors", "https://dash.example.com")
    st, data, r = raw(env, "OPTIONS", "/v1/batches")
    check(st == 204 and r.getheader("Access-Control-Allow-Origin") == "https://dash.example.com" and
          "Authorization" in r.getheader("Access-Control-Allow-Headers", ""), "preflight with --cors: %d" % st)
    st, data, r = raw(env, "GET", "/healthz")
    check(r.getheader("Access-Control-Allow-Origin") == "https://dash.example.com", "GET with --cors")
    env.stop_server()
    print("  cors: no CORS header and OPTIONS 405 without --cors; with it the origin, and a preflight answered")


def test_timeouts(env):
    st, b, _ = env.submit(noops(3))
    env.request("POST", "/v1/batches/%s/pause?queue=api" % b["batch"])
    c = http.client.HTTPConnection("127.0.0.1", env.port, timeout=30)
    c.request("GET", "/v1/batches/%s/events?queue=api" % b["batch"], headers={"Authorization": "Bearer tok-a"})
    r = c.getresponse()
    t0 = time.monotonic()
    while True:
        line = r.readline()
        check(line != b"" and time.monotonic() - t0 < 10, "no keepalive comment within 10 s")
        if line == b": keepalive\n":
            break
    c.close()
    waited = time.monotonic() - t0
    s = socket.create_connection(("127.0.0.1", env.port), timeout=30)
    s.sendall(b"POST /v1/batches?queue=api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-a\r\n"
              b"Content-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{\"type\":")
    t0 = time.monotonic()
    got = s.recv(65536)
    while got:
        got = s.recv(65536)
    closed = time.monotonic() - t0
    s.close()
    check(2 <= closed < 10, "a stalled upload was closed after %.1f s (--idle-timeout 3)" % closed)
    print("  timeouts: keepalive comment after %.1f s, a stalled upload closed after %.1f s" % (waited, closed))


def test_shutdown(env):
    st, b, _ = env.submit(noops(5))
    c = http.client.HTTPConnection("127.0.0.1", env.port, timeout=30)
    c.request("GET", "/v1/batches/%s/events?queue=api" % b["batch"], headers={"Authorization": "Bearer tok-a"})
    r = c.getresponse()
    check(r.readline().startswith(b"retry:"), "the stream did not start")
    t0 = time.monotonic()
    code = env.stop_server()
    rest = r.read()
    check(code == 0, "sluice serve exited %r after SIGTERM" % code)
    check(b"event: batch" in rest, "the open stream did not get its state before closing: %r" % rest[:200])
    print("  shutdown: SIGTERM with an open stream: it ended, exit 0 in %.2f s" % (time.monotonic() - t0))


CASES = {"probes": test_probes, "auth": test_auth, "submit": test_submit, "events": test_events, "queue_events": test_queue_events, "quota": test_quota,
         "control": test_control, "list": test_list, "queue": test_queue, "metrics": test_metrics, "same": test_same, "cors": test_cors, "timeouts": test_timeouts, "shutdown": test_shutdown,
         "upload_memory": test_upload_memory, "listen": test_listen, "dashboard": test_dashboard, "openapi": test_openapi}


def main():
    names = sys.argv[1:] or list(CASES)
    env = Env()
    env.every_case = names == list(CASES)
    try:
        flags = ("--max-body", "2000000", "--keepalive", "1", "--idle-timeout", "3")
        env.serve(*flags)
        for name in names:
            if env.server is None:
                env.serve(*flags)
            CASES[name](env)
        print("sluice serve: %d cases passed" % len(names))
        return 0
    except (Failure, OSError, KeyError, ValueError) as e:
        print("sluice serve: FAILED: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        try:
            print(open(os.path.join(env.tmp, "serve.log")).read()[-3000:], file=sys.stderr)
        except OSError:
            pass
        return 1
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
