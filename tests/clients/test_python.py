#!/usr/bin/python3
"""The Python client (clients/python, as staged by the build) against a real
redis-server and real `sluice worker` processes.

  library     a missing library is loaded (or, told not to, refused); another
              version is refused naming both and left loaded; a Redis user
              that may not load code gets LibraryPermissionError (NOPERM)
  follow      10,000 items (9,000 succeed, 1,000 fail) followed to the end
              through events(): the first event is the state read, done
              never goes down, the last has the exact counters; results()
              gives every line; a late follower ends from the hash at once
  bad_item    an item refused in chunk 3: ItemError with index, id and
              field; the batch is cancelled with the chunks written before
  control     pause, resume, cancel (the workers finish it cancelled),
              retry of failed items, and an events() timeout on a paused batch
  readme_acl  with the README's producer ACL user (its lines run as they
              are): submit, status, events, results, pause, resume, cancel,
              retry all work
  idempotency the same key twice gives one batch; a second submit while the
              first is still sending gets the first batch (submitting); a
              producer killed (SIGKILL) midway, then a resubmit: the batch it
              left, nothing written; items skipped by dedupe name their holder

usage: test_python.py [CASE...]   (SLUICE_BIN, SLUICE_CLIENTS; exit 0 when all hold)
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import redis

sys.path.insert(0, os.path.join(os.environ.get("SLUICE_CLIENTS", ""), "python"))
import sluice  # noqa: E402

SLUICE = os.environ.get("SLUICE_BIN", "sluice")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Env:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-pyclient-")
        self.sock = os.path.join(self.tmp, "redis.sock")
        self.url = "unix://" + self.sock
        self.redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", self.sock, "--save", "",
                                       "--appendonly", "no", "--dir", self.tmp,
                                       "--logfile", os.path.join(self.tmp, "redis.log")])
        self.workers = []
        deadline = time.monotonic() + 10
        while True:
            try:
                self.r = redis.Redis(unix_socket_path=self.sock)
                self.r.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                check(time.monotonic() < deadline, "redis-server did not answer within 10 s")
                time.sleep(0.02)

    def worker(self, queue, n=1):
        for _ in range(n):
            self.workers.append(subprocess.Popen([SLUICE, "worker", "--redis", self.url, "--queue", queue,
                                                  "--concurrency", "200", "--quiet"]))

    def stop_workers(self):
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            check(w.wait(timeout=30) == 0, "a worker exited with %s" % w.returncode)
        self.workers = []

    def close(self):
        for w in self.workers:
            w.kill()
            w.wait()
        self.redis.kill()
        self.redis.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def expect(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise Failure("%s(...) did not raise %s" % (getattr(fn, "__name__", fn), exc.__name__))


def test_library(env):
    r = env.r
    r.execute_command("FUNCTION", "FLUSH")
    needed = sluice.library_version()
    e = expect(sluice.LibraryMissingError, sluice.Client(r, queue="lib", load_library=False).library_version)
    check(needed in str(e), "the missing-library error does not name v%s: %s" % (needed, e))
    check(sluice.Client(r, queue="lib").library_version() == needed, "the client did not load its library")
    check(r.execute_command("FCALL_RO", "sluice_v1_version", 0).decode() == needed, "another version is loaded")
    out = subprocess.run([SLUICE, "library", "check", "--redis", env.url], capture_output=True, text=True)
    check(out.returncode == 0, "the build does not accept the library the client loaded: %s" % out.stderr)

    # Another version loaded: refused, naming both, and left as it is.
    r.execute_command("FUNCTION", "LOAD", "REPLACE", "#!lua name=sluice\nredis.register_function{function_name="
                      "'sluice_v1_version', callback=function() return '0.0.1+000000000000' end, "
                      "flags={'no-writes'}}\n")
    e = expect(sluice.LibraryVersionError, sluice.Client(r, queue="lib").submit, [{"type": "noop", "payload": {}}])
    check(e.loaded == "0.0.1+000000000000" and e.needed == needed, "version error: %r %r" % (e.loaded, e.needed))
    check("library v0.0.1+000000000000 is loaded, this client needs v" + needed in str(e), "message: %s" % e)
    check(r.execute_command("FCALL_RO", "sluice_v1_version", 0) == b"0.0.1+000000000000", "the client replaced it")

    # A user that may not load code.
    r.execute_command("FUNCTION", "FLUSH")
    r.execute_command("ACL", "SETUSER", "producer", "on", ">pw", "~*", "&*", "+@all", "-function")
    pr = redis.Redis(unix_socket_path=env.sock, username="producer", password="pw")
    e = expect(sluice.LibraryPermissionError, sluice.Client(pr, queue="lib").submit, [{"type": "noop", "payload": {}}])
    check("NOPERM" in str(e) and "ask the operator to run `sluice library load`" in str(e), "message: %s" % e)
    check(sluice.Client(r, queue="lib").library_version() == needed, "reloading failed")
    print("  library: loads when missing, refuses v0.0.1 naming both, NOPERM named")


def test_follow(env):
    c = sluice.Client(env.r, queue="follow")
    items = []
    for i in range(10000):
        if i % 10 == 3:
            items.append({"id": "f%d" % i, "type": "sleep", "payload": {"ms": 0, "fail_rate": 1}})
        else:
            items.append({"id": "ok%d" % i, "type": "noop", "payload": {"n": i},
                          "priority": ("high", "normal", "low")[i % 3]})
    batch = c.submit(items, name="ten thousand", defaults={"max_attempts": 1})
    first = c.status(batch)
    check(first["total"] == 10000 and first["status"] == "queued", "after submit: %r" % first)
    env.worker("follow", 2)
    events = list(c.events(batch, timeout=120))
    check(events[0]["status"] in ("queued", "running"), "first event: %r" % events[0])
    check(first["queued"] == 10000 and first["eta_ms"] is None, "live state after submit: %r" % first)
    for a, b in zip(events, events[1:]):
        check(b["done"] >= a["done"], "done went down: %r then %r" % (a, b))
    for e in events:  # the live state adds up in the state read and in every event
        check(sum(e[k] for k in ("queued", "scheduled", "waiting", "running", "retrying", "paused"))
              + e["done"] == e["total"], "counts do not add up: %r" % e)
    last = events[-1]
    want = {"status": "completed", "total": 10000, "done": 10000, "succeeded": 9000, "failed": 1000,
            "cancelled": 0, "pct": 100.0}
    check({k: last[k] for k in want} == want, "last event %r, expected %r" % (last, want))
    lines = list(c.results(batch))
    check(len(lines) == 10000, "%d results lines" % len(lines))
    for line in lines:
        i = line["index"]
        check(line["id"] == ("f%d" % i if i % 10 == 3 else "ok%d" % i), "line %d: id %r" % (i, line["id"]))
        check(line["status"] == ("failed" if i % 10 == 3 else "succeeded"), "line %d: %r" % (i, line))
    late = list(sluice.Client(env.r, queue="follow").events(batch, timeout=10))
    check(len(late) == 1 and late[0]["status"] == "completed" and late[0]["done"] == 10000,
          "a late follower got %r" % late)
    env.stop_workers()
    print("  follow: 10,000 items, %d events, exact counters, 10,000 results lines; late follower ends at once"
          % len(events))


def test_bad_item(env):
    c = sluice.Client(env.r, queue="bad")
    items = [{"type": "noop", "payload": {}} for _ in range(1000)]
    items[800] = {"id": "x800", "type": "noop", "payload": {}, "timeout_ms": "soon"}
    e = expect(sluice.ItemError, c.submit, items)
    check((e.index, e.id, e.field) == (800, "x800", "timeout_ms"), "ItemError %r %r %r" % (e.index, e.id, e.field))
    check(e.batch is not None and "was cancelled" in e.message, "no cancelled batch named: %s" % e.message)
    st = c.status(e.batch)
    check(st["status"] == "cancelled" and st["total"] == 750, "the batch after a refused item: %r" % st)
    e = expect(sluice.ItemError, c.submit, [{"type": "noop"}])
    check(e.field == "payload" and e.index == 0 and e.batch is None, "missing payload: %r" % e.message)
    check(env.r.exists("sluice:{bad}:b:" + str(e.batch)) == 0, "a refused first chunk left a batch")
    # Labels: kept sorted, shown by status; a bad one refused by the function, naming it, nothing written.
    b = c.submit([{"type": "noop", "payload": {}}], labels={"team": "ml", "env": "prod"})
    check(c.status(b)["labels"] == {"env": "prod", "team": "ml"}, "labels: %r" % c.status(b))
    check(env.r.hget("sluice:{bad}:b:" + b, "labels") == b"env=prod,team=ml", "stored labels")
    before = env.r.zcard("sluice:{bad}:batches")
    e = expect(sluice.ProtocolError, c.submit, [{"type": "noop", "payload": {}}], labels={"team": "a b"})
    check('label "team": the value must be' in str(e), "bad label: %s" % e)
    check(env.r.zcard("sluice:{bad}:batches") == before, "a refused label wrote a batch")
    print("  bad_item: index 800 field timeout_ms named, batch cancelled at 750 items; labels kept, a bad one named")


def test_control(env):
    c = sluice.Client(env.r, queue="ctl")
    b = c.submit([{"type": "noop", "payload": {}} for _ in range(500)])
    check(c.pause(b) == "paused" and c.status(b)["status"] == "paused", "pause")
    e = expect(TimeoutError, lambda: list(c.events(b, timeout=1, idle_s=0.2)))
    check("did not end" in str(e), "timeout message: %s" % e)
    check(c.resume(b) == "queued", "resume")
    check(c.cancel(b) == "cancelled", "cancel")
    env.worker("ctl")
    last = list(c.events(b, timeout=60))[-1]
    check((last["status"], last["done"], last["cancelled"]) == ("cancelled", 500, 500), "cancelled end: %r" % last)
    ids = [(line["index"], line["id"], line["status"]) for line in c.results(b)]
    check(ids == [(i, str(i + 1), "cancelled") for i in range(500)],
          "cancelled lines carry the items' own ids: %r" % ids[:3])
    e = expect(sluice.BatchStateError, c.pause, b)
    check(e.status == "cancelled", "pause of a cancelled batch: %r" % e.status)
    # The batch log names this process for each of its acts.
    acts = {f[b"e"].decode(): f.get(b"by", b"").decode() for _, f in env.r.xrange("sluice:{ctl}:b:%s:log" % b)}
    me = " pid %d (" % os.getpid()
    check(all(me in acts.get(ev, "") for ev in ("submitted", "paused", "resumed", "cancelled")),
          "the log's actors: %r" % acts)

    f = c.submit([{"type": "sleep", "payload": {"ms": 0, "fail_rate": 1}} for _ in range(100)])
    last = list(c.events(f, timeout=60))[-1]
    check((last["status"], last["failed"]) == ("completed", 100), "failing batch: %r" % last)
    check(c.retry(f) == 100, "retry did not put back 100 items")
    last = list(c.events(f, timeout=60))[-1]
    check((last["status"], last["failed"], last["done"]) == ("completed", 100, 100), "after retry: %r" % last)
    check(all(line["attempts"] == 1 for line in c.results(f)), "retried items do not start again at attempt 1")
    expect(sluice.BatchNotFoundError, c.status, "nosuchbatch")
    expect(sluice.BatchNotFoundError, c.cancel, "nosuchbatch")
    env.stop_workers()
    print("  control: pause, resume, cancel, retry, timeout, not found")


def readme_acl(r):
    """Runs the README's `redis-cli ACL SETUSER ...` lines (between its acl markers) on r."""
    text = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")).read()
    block = text[text.index("<!-- acl:begin"):text.index("<!-- acl:end")].replace("\\\n", " ")
    users = 0
    for line in block.splitlines():
        if line.startswith("redis-cli ACL SETUSER "):
            r.execute_command(*shlex.split(line)[1:])
            users += 1
    check(users == 3, "the README has %d ACL users, not 3" % users)


def test_readme_acl(env):
    readme_acl(env.r)
    sluice.Client(env.r, queue="acl").library_version()   # an operator loads it
    pr = redis.Redis(unix_socket_path=env.sock, username="sluice-producer", password="producer-password")
    c = sluice.Client(pr, queue="acl")
    b = c.submit([{"type": "sleep", "payload": {"ms": 0, "fail_rate": 1}} for _ in range(50)], report=True)["batch"]
    check(c.pause(b) == "paused" and c.resume(b) == "queued", "pause and resume as the producer")
    env.worker("acl")
    last = list(c.events(b, timeout=60))[-1]
    check((last["status"], last["failed"]) == ("completed", 50), "events as the producer: %r" % last)
    check(len(list(c.results(b))) == 50, "results as the producer")
    check(c.retry(b) == 50, "retry as the producer")
    check(list(c.events(b, timeout=60))[-1]["failed"] == 50, "events after retry")
    b2 = c.submit([{"type": "noop", "payload": {}}], idempotency_key="acl-1")
    check(c.submit([{"type": "noop", "payload": {}}], idempotency_key="acl-1") == b2, "idempotency as the producer")
    check(c.cancel(b2) in ("cancelled", "completed"), "cancel as the producer")
    env.stop_workers()
    print("  readme_acl: the README's producer user submits, follows and controls a batch")


def noops(n, start=0):
    return ({"type": "noop", "payload": {"n": i}} for i in range(start, start + n))


KILLED_PRODUCER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import redis, sluice
def items():
    for i in range(600):
        yield {"type": "noop", "payload": {}}
    print("sent", flush=True)
    time.sleep(600)
    yield {"type": "noop", "payload": {}}
sluice.Client(redis.Redis(unix_socket_path=sys.argv[2]), queue="idem").submit(items(), idempotency_key="k3")
"""


def test_idempotency(env):
    c = sluice.Client(env.r, queue="idem")
    a = c.submit(noops(300), idempotency_key="k1")
    b = c.submit(noops(300), idempotency_key="k1", report=True)
    check(b == {"batch": a, "reused": True, "submitted": 0, "skipped": []}, "the same key twice: %r" % b)
    check(env.r.xlen("sluice:{idem}:s:normal") == 300, "the second submit wrote items")

    # During: the first submit is held after two chunks (500 items) until the second one is answered.
    gate, held, res = threading.Event(), threading.Event(), []

    def gated():
        for i, item in enumerate(noops(1000)):
            if i == 600:
                held.set()
                gate.wait(60)
            yield item

    t = threading.Thread(target=lambda: res.append(sluice.Client(env.r, queue="idem").submit(gated(),
                                                                                          idempotency_key="k2")))
    t.start()
    check(held.wait(30), "the first submit did not get going")
    second = c.submit(noops(1000), idempotency_key="k2", report=True)
    st = c.status(second["batch"])
    gate.set()
    t.join(60)
    check(second["reused"] and res == [second["batch"]], "during: %r, first %r" % (second, res))
    check(st["status"] == "submitting" and st["submitted"] == 500, "during, the first batch: %r" % st)
    check(c.status(res[0])["total"] == 1000, "the first batch did not get all its items")

    # Killed midway.
    prod = subprocess.Popen([sys.executable, "-c", KILLED_PRODUCER, os.path.join(os.environ["SLUICE_CLIENTS"],
                                                                                    "python"), env.sock],
                            stdout=subprocess.PIPE, text=True)
    check(prod.stdout.readline().strip() == "sent", "the producer did not send its chunks")
    prod.kill()
    prod.wait()
    again = c.submit(noops(600), idempotency_key="k3", report=True)
    st = c.status(again["batch"])
    check(again["reused"] and st["status"] == "submitting" and st["submitted"] == 500,
          "after a killed producer: %r %r" % (again, st))
    check(c.cancel(again["batch"]) == "cancelled", "cancel of the left batch")

    # Dedupe: the holder of each skipped item.
    d1 = c.submit([{"type": "noop", "payload": {}, "dedupe": "img-%d" % i} for i in range(3)])
    d2 = c.submit([{"type": "noop", "payload": {}, "dedupe": "img-%d" % i} for i in (2, 3, 0)], report=True)
    check(d2["submitted"] == 1 and d2["skipped"] == [{"index": 0, "held_by": {"batch": d1, "index": 2}},
                                                     {"index": 2, "held_by": {"batch": d1, "index": 0}}],
          "dedupe report: %r" % d2)
    print("  idempotency: twice, during (first batch submitting, 500 items), killed producer, dedupe holders")


CASES = {"library": test_library, "follow": test_follow, "bad_item": test_bad_item, "control": test_control,
         "idempotency": test_idempotency, "readme_acl": test_readme_acl}


def main():
    names = sys.argv[1:] or list(CASES)
    env = Env()
    try:
        for name in names:
            CASES[name](env)
        print("python client: %d cases passed" % len(names))
        return 0
    except (Failure, sluice.SluiceError, TimeoutError) as e:
        print("python client: FAILED: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
