#!/usr/bin/python3
"""A sluice producer in Python, written only from docs/PROTOCOL.md.

It proves that another language can submit to sluice and follow a batch
without the C library:

  1. starts a private redis-server on a unix socket in a temp dir (unless
     --socket names a running one);
  2. runs `$SLUICE_BIN library load` once, which loads the sluice function library
     (the way PROTOCOL.md tells a foreign producer to make sure of it), and
     checks it with FCALL sluice_v1_version;
  3. submits 1,000 noop item objects, written by Python's json.dumps, as one
     batch in 3 chunks, purely through FCALL sluice_v1_submit, re-sending one
     chunk to show that a re-sent chunk is not written twice;
  4. subscribes to the batch's event channel, then reads the batch hash
     (subscribe first, read second: no event can fall in between);
  5. runs `$SLUICE_BIN worker --quiet` as a subprocess and waits for the final
     event, done == total == 1000, with a timeout;
  6. checks the batch hash counters, the 1,000 entries of the results hash and
     the empty streams, stops the worker with SIGTERM and expects exit 0.

Exit status 0 when all of that holds; 1 with a message naming the failed check
otherwise. Needs Debian's python3-redis (`import redis`) and redis-server.

usage: producer.py [--socket PATH] [--queue NAME] [--timeout SECONDS]
"""

import argparse
import json
import re
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import redis

ITEMS = 1000
CHUNKS = 3
GROUP = "workers"  # the consumer group of every queue (PROTOCOL.md)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class Failure(Exception):
    """A check failed; the message says which and why."""


def log(msg):
    print("producer.py: " + msg, file=sys.stderr, flush=True)


# ---- Protocol helpers: what any foreign producer writes ----


def keys_of(queue):
    """The key names of a queue (PROTOCOL.md, Key layout)."""
    p = "sluice:{%s}:" % queue
    return {
        "prefix": p,
        "streams": [p + "s:high", p + "s:normal", p + "s:low"],
        "batches": p + "batches",
        "events": p + "events",
    }


def new_batch_id():
    """26 characters of Crockford base32: 48-bit ms time, 80 random bits."""
    t = int(time.time() * 1000)
    head = "".join(CROCKFORD[(t >> (5 * (9 - i))) & 31] for i in range(10))
    r = secrets.randbits(80)
    tail = "".join(CROCKFORD[(r >> (5 * (15 - i))) & 31] for i in range(16))
    return head + tail


def fcall_submit(r, k, queue, batch, seq, last, name, chunk):
    """One FCALL sluice_v1_submit; chunk is a list of item objects as JSON
    text, in any formatting (the function checks every field)."""
    args = ["FCALL", "sluice_v1_submit", 5,
            k["prefix"] + "b:" + batch, *k["streams"], k["batches"],
            batch, queue, k["prefix"], seq, 1 if last else 0, name if seq == 0 else "", GROUP,
            "items", *chunk]
    return r.execute_command(*args)


# ---- The test ----


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def start_redis(tmp):
    sock = os.path.join(tmp, "redis.sock")
    logf = os.path.join(tmp, "redis.log")
    try:
        proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", tmp, "--logfile", logf],
            stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise Failure("redis-server is not installed (apt-get install redis-server)")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure("redis-server exited at start with status %s; see %s" % (proc.returncode, logf))
        try:
            if redis.Redis(unix_socket_path=sock).ping():
                return proc, sock
        except (redis.ConnectionError, FileNotFoundError):
            pass
        time.sleep(0.02)
    proc.kill()
    raise Failure("redis-server did not answer on %s within 10 s" % sock)


def run(sock, queue, sluice_bin, timeout):
    url = "unix://" + sock
    r = redis.Redis(unix_socket_path=sock, decode_responses=True)
    k = keys_of(queue)

    # The library: an operator loads it (`sluice library load`).
    out = subprocess.run([sluice_bin, "library", "load", "--redis", url],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=30)
    check(out.returncode == 0, "`sluice library load` failed with exit %d: %s"
          % (out.returncode, out.stderr.strip()))
    version = r.execute_command("FCALL_RO", "sluice_v1_version", 0)
    check(isinstance(version, str) and re.fullmatch(r"[0-9.]+\+[0-9a-f]{12}", version) is not None,
          "FCALL_RO sluice_v1_version 0 returned %r, expected VERSION+SHA12" % (version,))

    # Items as Python writes them by default (", " and ": "): the function
    # reads them exactly, whatever the formatting.
    items = [json.dumps({"payload": {"n": i}, "type": "noop", "id": "py-%d" % i}) for i in range(ITEMS)]

    batch = new_batch_id()
    bkey = k["prefix"] + "b:" + batch
    per = (ITEMS + CHUNKS - 1) // CHUNKS
    chunks = [items[s:s + per] for s in range(0, ITEMS, per)]
    check(len(chunks) == CHUNKS, "expected %d chunks, made %d" % (CHUNKS, len(chunks)))
    written = 0
    for seq, chunk in enumerate(chunks):
        last = seq == len(chunks) - 1
        n = fcall_submit(r, k, queue, batch, seq, last, "python-producer", chunk)
        written += len(chunk)
        check(n == written, "chunk %d: sluice_v1_submit returned %r, expected %d" % (seq, n, written))
        if seq == 1:
            # A re-sent chunk (as after a lost reply) is recognized, not written twice.
            again = fcall_submit(r, k, queue, batch, seq, last, "python-producer", chunk)
            check(again == written, "re-sent chunk 1 returned %r, expected %d" % (again, written))
    h = r.hgetall(bkey)
    check(h.get("status") == "queued" and h.get("whole") == "1" and h.get("total") == str(ITEMS),
          "after submit the batch hash is %r, expected status queued, whole 1, total %d" % (h, ITEMS))
    depth = sum(r.xlen(s) for s in k["streams"])
    check(depth == ITEMS, "the streams hold %d entries after submit, expected %d" % (depth, ITEMS))
    log("submitted batch %s: %d items in %d chunks" % (batch, ITEMS, len(chunks)))

    # Subscribe first, then read the hash, then apply events.
    # Sharded pub/sub (the channel is in the queue's slot); redis-py 4.3 has
    # no API for it, so SSUBSCRIBE goes out as a plain command on the
    # pub/sub connection and its replies are read as they come.
    ps = r.pubsub()
    ps.execute_command("SSUBSCRIBE", k["events"] + ":" + batch)

    def next_message(timeout):
        m = ps.parse_response(block=False, timeout=timeout)
        return {"type": m[0], "data": m[2]} if m else None

    deadline = time.monotonic() + 10
    confirmed = False
    while not confirmed and time.monotonic() < deadline:
        m = next_message(0.1)
        confirmed = m is not None and m["type"] == "ssubscribe"
    check(confirmed, "SSUBSCRIBE to the batch channel was not confirmed")
    state = {f: int(r.hget(bkey, f) or 0) for f in ("total", "done", "succeeded", "failed", "cancelled")}
    state["status"] = r.hget(bkey, "status")

    worker = subprocess.Popen([sluice_bin, "worker", "--redis", url, "--queue", queue, "--quiet"],
                              stdin=subprocess.DEVNULL)
    try:
        events = 0
        deadline = time.monotonic() + timeout
        while not (state["status"] == "completed" and state["done"] == state["total"] == ITEMS):
            if time.monotonic() > deadline:
                raise Failure("no final event within %d s; last state %r after %d events"
                              % (timeout, state, events))
            if worker.poll() is not None:
                raise Failure("the worker exited early with status %d" % worker.returncode)
            m = next_message(0.5)
            if m is None or m["type"] != "smessage":
                continue
            ev = json.loads(m["data"])
            events += 1
            for f in ("queue", "batch", "status", "total", "done", "succeeded", "failed",
                      "cancelled", "pct", "ts"):
                check(f in ev, "event without field %r: %s" % (f, m["data"]))
            check(ev["batch"] == batch and ev["queue"] == queue, "event of another batch: %s" % m["data"])
            # Counters only grow: an event older than the state we hold is skipped.
            if ev["done"] >= state["done"]:
                state = ev
        check(state["pct"] == 100, "final event has pct %r, expected 100" % (state["pct"],))
        log("final event after %d events: %s" % (events, json.dumps(state)))
    finally:
        ps.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            wrc = worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise Failure("the worker did not stop within 15 s of SIGTERM")
    check(wrc == 0, "the worker exited with status %d after SIGTERM, expected 0" % wrc)

    # The hash is the truth.
    h = r.hgetall(bkey)
    want = {"status": "completed", "whole": "1", "total": str(ITEMS), "submitted": str(ITEMS),
            "chunks": str(CHUNKS), "done": str(ITEMS), "succeeded": str(ITEMS), "failed": "0",
            "cancelled": "0"}
    for f, v in want.items():
        check(h.get(f) == v, "batch hash field %s is %r, expected %r" % (f, h.get(f), v))
    for f in ("created_at", "queued_at", "started_at", "finished_at"):
        check(int(h.get(f, 0)) > 0, "batch hash field %s is missing" % f)
    check(r.zscore(k["batches"], batch) == float(h["created_at"]),
          "the batch is not in %s with score created_at" % k["batches"])
    results = r.hgetall(bkey + ":r")
    check(len(results) == ITEMS, "the results hash has %d entries, expected %d" % (len(results), ITEMS))
    for i in range(ITEMS):
        line = results.get(str(i))
        check(line is not None, "no results line for item index %d" % i)
        res = json.loads(line)
        check(res.get("id") == "py-%d" % i and res.get("status") == "succeeded" and res.get("attempts") == 1,
              "results line of item %d is %s" % (i, line))
    depth = sum(r.xlen(s) for s in k["streams"])
    check(depth == 0, "the streams still hold %d entries; finished items should leave them" % depth)
    log("ok: %d succeeded, results hash has %d lines, streams empty, worker stopped cleanly"
        % (ITEMS, len(results)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", help="a running redis-server's unix socket (default: start a private one)")
    ap.add_argument("--queue", default="polyglot", help="queue name (default: polyglot)")
    ap.add_argument("--timeout", type=int, default=60, help="seconds to wait for the final event")
    a = ap.parse_args()

    sluice_bin = os.environ.get("SLUICE_BIN")
    if not sluice_bin:
        here = os.path.dirname(os.path.abspath(__file__))
        sluice_bin = os.path.join(here, "..", "..", "build", "sluice")
    if not os.access(sluice_bin, os.X_OK):
        log("FAIL: no sluice binary at %s (set SLUICE_BIN)" % sluice_bin)
        return 1

    tmp = None
    server = None
    try:
        sock = a.socket
        if sock is None:
            # A short base keeps the socket path under the 107-byte limit.
            base = os.environ.get("TMPDIR") or "/tmp"
            tmp = tempfile.mkdtemp(prefix="sluice-py-", dir=base if len(base) < 80 else "/tmp")
            server, sock = start_redis(tmp)
        run(sock, a.queue, sluice_bin, a.timeout)
        return 0
    except Failure as e:
        log("FAIL: %s" % e)
        return 1
    except (redis.RedisError, OSError, subprocess.SubprocessError, ValueError) as e:
        log("FAIL: %s: %s" % (type(e).__name__, e))
        return 1
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
