#!/usr/bin/python3
"""Runs the item conformance corpus (items.jsonl) through every way in.

Each case of items.jsonl is an item (`item`: a JSON value; `line`: the exact
text; `line_hex`: its bytes in hex, for text that is not UTF-8) and its
expected outcome: accepted (`stored`: fields the stored item must have,
`priority`, `delayed`, `dedupe`) or refused (`field`: the field the error
must name; "json" for invalid JSON, "object" when it is not an object).

An `item` case is also sent in adversarial forms: Python's default
formatting (spaces, \\u escapes for non-ASCII), its fields in reverse order,
every field name escaped, and its top-level numbers spelled 1e3 and 1000.0.

Every form goes through each path: `sluice submit` (the C client, which
checks the item and sends it in the canonical form), a raw
`FCALL sluice_v1_submit ... items ITEM` (what any other language sends), the
Python client (clients/python) and the Node client (clients/node), both
staged by the build in $SLUICE_CLIENTS. Each must give the same outcome: the
same stored item byte for byte, or the same error message word for word,
naming the expected field. An `item` case is also given to each client as an
object, which the client encodes itself (json.dumps, JSON.stringify).

The C client's own path (`normalized`: the item already in the canonical
form) must take exactly the canonical items: every stored item sent again
that way is stored byte for byte, every other form of an accepted item is
refused, and so is each of a set of near-canonical items sent in one call
after a canonical one with the same head (the function remembers checked
heads within a call). All against a real redis-server started here on a
unix socket.

usage: run.py   (SLUICE_BIN names the sluice binary, SLUICE_CLIENTS the staged
                 clients, NODE_PATH where ioredis is; exit 0 when all hold)
"""

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
SLUICE = os.environ.get("SLUICE_BIN", "sluice")
CLIENTS = os.environ.get("SLUICE_CLIENTS", "")
sys.path.insert(0, os.path.join(CLIENTS, "python"))
import sluice  # noqa: E402  (the staged Python client)


class Failure(Exception):
    pass


def start_redis(tmp):
    sock = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                             "--appendonly", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "redis.log")],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(unix_socket_path=sock).ping():
                return proc, sock
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.02)
    proc.kill()
    raise Failure("redis-server did not answer within 10 s")


def spell_int(v, how):
    """An integer in another JSON spelling: '1e3' or '1000.0'."""
    if how == "fraction":
        return "%d.0" % v
    digits = str(abs(v)).rstrip("0") or "0"
    exp = len(str(abs(v))) - len(digits)
    if len(digits) > 1:
        mant = digits[0] + "." + digits[1:]
        exp += len(digits) - 1
    else:
        mant = digits
    return ("-" if v < 0 else "") + mant + "e" + str(exp)


def forms(case):
    """(name, bytes) of every form of a case."""
    if "line_hex" in case:
        return [("as given", bytes.fromhex(case["line_hex"]))]
    if "line" in case:
        return [("as given", case["line"].encode())]
    item = case["item"]
    out = [("compact", json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()),
           ("python default", json.dumps(item).encode())]
    if isinstance(item, dict):
        rev = dict(reversed(list(item.items())))
        out.append(("reversed", json.dumps(rev, separators=(",", ":"), ensure_ascii=False).encode()))
        esc = "{" + ",".join('"\\u%04x%s":%s' % (ord(k[0]), json.dumps(k)[2:-1], json.dumps(v, ensure_ascii=False))
                             for k, v in item.items()) + "}"
        out.append(("escaped names", esc.encode()))
        for how in ("exponent", "fraction"):
            if any(type(v) is int for v in item.values()):
                parts = ['%s:%s' % (json.dumps(k), spell_int(v, how) if type(v) is int else
                                    json.dumps(v, ensure_ascii=False)) for k, v in item.items()]
                out.append(("numbers as " + how, ("{" + ",".join(parts) + "}").encode()))
    return out


class Paths:
    def __init__(self, sock):
        self.sock = sock
        self.url = "unix://" + sock
        self.r = redis.Redis(unix_socket_path=sock)
        self.n = 0
        self.node_proc = None

    def queue(self):
        self.n += 1
        return "conf%d" % self.n

    def stored(self, q, batch):
        """(priority name, d bytes, delayed?) of the one item of batch in q."""
        p = "sluice:{%s}:" % q
        for prio in ("high", "normal", "low"):
            for _, f in self.r.xrange(p + "s:" + prio):
                return prio, f[b"d"], False
        for _, v in self.r.hgetall(p + "b:" + batch + ":dl").items():
            s, _, rest = v.partition(b"\n")
            _, _, d = rest.partition(b"\n")
            return ("high", "normal", "low")[int(s) - 1], d, True
        return None, None, False

    def cli(self, text, tmp):
        """('accepted', (prio, d, delayed, dedupe keys)) or ('refused', message)."""
        q = self.queue()
        path = os.path.join(tmp, "item.jsonl")
        with open(path, "wb") as f:
            f.write(text + b"\n")
        out = subprocess.run([SLUICE, "submit", path, "--redis", self.url, "--queue", q],
                             capture_output=True, timeout=60)
        err = out.stderr.decode(errors="replace")
        if out.returncode == 2:
            first = err.splitlines()[0]
            prefix = "sluice: " + path + ":1: "
            if not first.startswith(prefix):
                raise Failure("sluice submit: unexpected error form: %r" % first)
            return "refused", first[len(prefix):]
        if out.returncode != 0:
            raise Failure("sluice submit exited %d: %s" % (out.returncode, err))
        batch = out.stdout.decode().strip()
        return "accepted", self.stored(q, batch) + (self.dedupe_keys(q),)

    def fcall(self, text):
        q = self.queue()
        p = "sluice:{%s}:" % q
        batch = secrets.token_hex(8)
        try:
            self.r.execute_command("FCALL", "sluice_v1_submit", 5, p + "b:" + batch, p + "s:high", p + "s:normal",
                                   p + "s:low", p + "batches", batch, q, p, 0, 1, "", "workers", "items", text)
        except redis.ResponseError as e:
            msg = str(e)
            head = "SLUICE_ITEM item index 0"
            if not msg.startswith(head):
                raise Failure("FCALL: unexpected error form: %r" % msg)
            return "refused", msg[msg.index(": ", len(head)) + 2:]
        return "accepted", self.stored(q, batch) + (self.dedupe_keys(q),)

    def normalized(self, ds):
        """FCALL ... normalized with the items ds (bytes) at indexes 0..: None
        when accepted (then the stored items must be ds, in order), else the
        error message."""
        q = self.queue()
        p = "sluice:{%s}:" % q
        batch = secrets.token_hex(8)
        args = []
        for i, d in enumerate(ds):
            args += ["2", str(i), d]
        try:
            self.r.execute_command("FCALL", "sluice_v1_submit", 5, p + "b:" + batch, p + "s:high", p + "s:normal",
                                   p + "s:low", p + "batches", batch, q, p, 0, 1, "", "workers", "normalized", *args)
        except redis.ResponseError as e:
            if self.r.exists(p + "s:normal", p + "b:" + batch):
                raise Failure("FCALL normalized: refused (%s) but wrote keys of the chunk" % e)
            return str(e)
        got = [f[b"d"] for _, f in self.r.xrange(p + "s:normal")]
        if got != list(ds):
            raise Failure("FCALL normalized: stored %r, sent %r" % (got, ds))
        return None

    def client_outcome(self, q, batch, err):
        if err is None:
            return "accepted", self.stored(q, batch) + (self.dedupe_keys(q),)
        head = "SLUICE_ITEM item index 0"
        if not err.startswith(head):
            raise Failure("client: unexpected error form: %r" % err)
        return "refused", err[err.index(": ", len(head)) + 2:]

    def python(self, item):
        """The Python client; item is bytes (sent as they are) or a dict."""
        q = self.queue()
        try:
            batch = sluice.Client(self.r, queue=q).submit([item])
        except sluice.ItemError as e:
            return self.client_outcome(q, None, e.message)
        return self.client_outcome(q, batch, None)

    def node(self, item):
        """The Node client, through node_path.js; item is bytes or a dict."""
        q = self.queue()
        req = {"queue": q}
        if isinstance(item, bytes):
            req["text"] = base64.b64encode(item).decode()
        else:
            req["object"] = item
        self.node_proc.stdin.write(json.dumps(req) + "\n")
        self.node_proc.stdin.flush()
        line = self.node_proc.stdout.readline()
        if not line:
            raise Failure("node_path.js stopped: %s" % self.node_proc.stderr.read())
        ans = json.loads(line)
        if "error" in ans and ans["class"] != "ItemError":
            raise Failure("Node client: %s: %s" % (ans["class"], ans["error"]))
        return self.client_outcome(q, ans.get("batch"), ans.get("error"))

    def dedupe_keys(self, q):
        p = ("sluice:{%s}:dd:" % q).encode()
        return sorted(k[len(p):] for k in self.r.scan_iter(match=p + b"*"))


def same_but_payload(outcome):
    """An outcome with the stored payload decoded (its text depends on the encoder)."""
    kind, v = outcome
    if kind != "accepted":
        return outcome
    prio, d, delayed, dedupe = v
    item = json.loads(d)
    return kind, (prio, json.dumps(item, sort_keys=True), delayed, dedupe)


def check_outcome(case, name, path, outcome):
    kind, v = outcome
    where = "%s, %s, %s" % (case["case"], name, path)
    if "field" in case:
        if kind != "refused":
            raise Failure("%s: accepted, expected a refusal naming %s" % (where, case["field"]))
        f = case["field"]
        ok = (v.startswith("invalid JSON at column") if f == "json" else
              "must be a JSON object" in v if f == "object" else v.startswith('field "%s": ' % f))
        if not ok:
            raise Failure("%s: the error does not name %s: %s" % (where, f, v))
        return
    if kind != "accepted":
        raise Failure("%s: refused (%s), expected accepted" % (where, v))
    prio, d, delayed, dedupe = v
    if d is None:
        raise Failure("%s: accepted but no item is stored" % where)
    stored = json.loads(d)
    for k, want in case.get("stored", {}).items():
        if stored.get(k, "<missing>") != want:
            raise Failure("%s: stored %s is %r, expected %r (stored item %s)" % (where, k, stored.get(k), want, d))
    if prio != case.get("priority", "normal"):
        raise Failure("%s: stored at priority %s, expected %s" % (where, prio, case.get("priority", "normal")))
    if delayed != case.get("delayed", False):
        raise Failure("%s: delayed is %s, expected %s" % (where, delayed, case.get("delayed", False)))
    want_dd = [case["dedupe"].encode()] if "dedupe" in case else []
    if dedupe != want_dd:
        raise Failure("%s: dedupe keys %r, expected %r" % (where, dedupe, want_dd))


def check_normalized(paths, canonical, others):
    """The normalized path takes the canonical items and nothing else."""
    for d in canonical:
        err = paths.normalized([d])
        if err is not None:
            raise Failure("normalized: the canonical item %r is refused: %s" % (d, err))
    refused = 0
    for text in others:
        if text in canonical:
            continue
        err = paths.normalized([text])
        if err is None or not err.startswith("SLUICE_ITEM item index 0: not a canonical item"):
            raise Failure("normalized: the non-canonical form %r is not refused (%r)" % (text, err))
        refused += 1
    # Near-canonical items after a canonical one of the same head, in one call.
    c = b'{"type":"noop","rate_key":"k","timeout_ms":30000,"max_attempts":3,"backoff_ms":1000,' \
        b'"backoff_max_ms":60000,"id":"a","payload":{}}'
    head = c[:c.index(b',"id":"') + 7]
    good = [head + b'a\\"b","payload":1}', head + b'\\u00e9t\xc3\xa9","payload":"x"}',
            head + b'x' * 128 + b'","payload":[]}', head + b'","payload":0}']
    bad = [c[:-2], head + b'a","payload":}', head + b'a","payload":', head + b'a\x01b","payload":1}',
           head + b'a"b","payload":1}', head + b'a","payload" :1}', head + b'a\\q","payload":1}',
           head + b'x' * 129 + b'","payload":1}', head + b'\xc3(","payload":1}', head + b'a","Payload":1}',
           head.replace(b'30000', b'030000') + b'a","payload":1}',
           head.replace(b'"max_attempts":3', b'"max_attempts":1001') + b'a","payload":1}',
           head.replace(b'"noop"', b'"no op"') + b'a","payload":1}']
    for d in good:
        err = paths.normalized([c, d])
        if err is not None:
            raise Failure("normalized: the canonical item %r after %r is refused: %s" % (d, c, err))
    for d in bad:
        err = paths.normalized([c, d])
        if err is None or not err.startswith("SLUICE_ITEM item index 1: not a canonical item"):
            raise Failure("normalized: %r after %r is not refused (%r)" % (d, c, err))
        refused += 1
    return refused


def main():
    tmp = tempfile.mkdtemp(prefix="sluice-conformance-")
    proc = paths = None
    try:
        proc, sock = start_redis(tmp)
        out = subprocess.run([SLUICE, "library", "load", "--redis", "unix://" + sock], capture_output=True, timeout=30)
        if out.returncode != 0:
            raise Failure("sluice library load: %s" % out.stderr.decode())
        paths = Paths(sock)
        paths.node_proc = subprocess.Popen(["node", os.path.join(HERE, "node_path.js"), sock], text=True,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        cases = [json.loads(line) for line in open(os.path.join(HERE, "items.jsonl"), encoding="utf-8")]
        nforms = 0
        canonical, others = [], []
        for case in cases:
            reference = None
            for name, text in forms(case):
                nforms += 1
                got = {"sluice submit": paths.cli(text, tmp), "FCALL items": paths.fcall(text),
                       "Python client": paths.python(text), "Node client": paths.node(text)}
                a = got["sluice submit"]
                for path, outcome in got.items():
                    check_outcome(case, name, path, outcome)
                    if outcome != a:
                        raise Failure("%s, %s: the paths differ:\n  sluice submit: %r\n  %s: %r"
                                      % (case["case"], name, a, path, outcome))
                if name == "compact" and isinstance(case["item"], dict):
                    # Encoded by the client: the same outcome, the payload as that encoder wrote it.
                    for path, outcome in (("Python client, object", paths.python(case["item"])),
                                          ("Node client, object", paths.node(case["item"]))):
                        check_outcome(case, name, path, outcome)
                        if same_but_payload(outcome) != same_but_payload(a):
                            raise Failure("%s: the paths differ:\n  sluice submit: %r\n  %s: %r"
                                          % (case["case"], a, path, outcome))
                # Every form of an item is stored alike (its payload as written).
                if a[0] == "accepted":
                    if a[1][1] not in canonical:
                        canonical.append(a[1][1])
                    if text != a[1][1]:
                        others.append(text)
                    mine = dict(json.loads(a[1][1]), payload=None)
                    if reference is None:
                        reference = mine
                    elif mine != reference:
                        raise Failure("%s: form %s is stored as %r, the first form as %r"
                                      % (case["case"], name, mine, reference))
        nnorm = check_normalized(paths, canonical, others)
        print("conformance: %d cases, %d forms, 4 paths each (and each item case as an object through both "
              "clients): all agree; normalized path: %d canonical items "
              "stored as sent, %d other forms refused" % (len(cases), nforms, len(canonical), nnorm))
        return 0
    except Failure as e:
        print("conformance: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        if paths is not None and paths.node_proc is not None:
            paths.node_proc.stdin.close()
            paths.node_proc.wait(timeout=30)
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
