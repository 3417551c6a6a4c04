"""The Python and Node clients on a real Redis Cluster.

Starts 3 masters (redis-server in cluster mode on loopback ports), loads the
library with `sluice library load` on every master, and for each client:

- a queue whose slot lives on a master that is not the URL's first node:
  submit 300 items, a real `sluice worker` on the cluster URL runs them, the
  client's events() follows the batch to its end (sharded pub/sub on the
  queue's master), status() and results() read it back;
- the queue's slot is then migrated to another master (SETSLOT
  IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), and the same client object
  reads the batch again: it follows MOVED to the new master.

Run by CTest with SLUICE_BIN, SLUICE_CLIENTS and NODE_PATH (the Node part is
skipped, and said so, when node is not installed).
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.join(os.environ.get("SLUICE_CLIENTS", ""), "python"))
import sluice  # noqa: E402
from sluice.cluster import key_slot  # noqa: E402

SLUICE = os.environ.get("SLUICE_BIN", "sluice")
HERE = os.path.dirname(os.path.abspath(__file__))


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Cluster:
    def __init__(self, masters=3):
        self.tmp = tempfile.mkdtemp(prefix="sluice-cluster-")
        for _ in range(200):
            base = random.randrange(22000, 30000, 10)
            if all(free(base + i) and free(base + i + 10000) for i in range(masters)):
                break
        self.ports = [base + i for i in range(masters)]
        self.procs = []
        for p in self.ports:
            d = os.path.join(self.tmp, str(p))
            os.mkdir(d)
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--dir", d, "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000", "--save", "",
                 "--appendonly", "no", "--logfile", os.path.join(d, "redis.log")], stdin=subprocess.DEVNULL))
        self.r = [redis.Redis(port=p, decode_responses=True) for p in self.ports]
        deadline = time.monotonic() + 10
        for r in self.r:
            while True:
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    check(time.monotonic() < deadline, "a cluster node did not start")
                    time.sleep(0.05)
        for i, r in enumerate(self.r):
            r.execute_command("CLUSTER", "ADDSLOTSRANGE", i * 16384 // masters, (i + 1) * 16384 // masters - 1)
            if i:
                self.r[0].execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[i])
        self.ids = [r.execute_command("CLUSTER", "MYID") for r in self.r]
        self.wait_ok()
        self.url = "redis+cluster://" + ",".join("127.0.0.1:%d" % p for p in self.ports)

    def wait_ok(self):
        deadline = time.monotonic() + 30
        while True:
            ok = all("cluster_state:ok" in r.execute_command("CLUSTER", "INFO") for r in self.r)
            ok = ok and all(len({self.owner_from(r, s) for r in self.r}) == 1 for s in (0, 8000, 16383))
            if ok:
                return
            check(time.monotonic() < deadline, "the cluster did not settle")
            time.sleep(0.05)

    def owner_from(self, r, slot):
        for lo, hi, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return self.ports.index(int(master[1]))
        return -1

    def owner(self, slot):
        return self.owner_from(self.r[0], slot)

    def queue_on(self, name, m):
        for i in range(100000):
            q = "%s-%d-%d" % (name, os.getpid(), i)
            if self.owner(key_slot("{%s}" % q)) == m:
                return q
        raise Failure("no queue name on master %d" % m)

    def move(self, slot, to):
        frm = self.owner(slot)
        self.r[to].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[frm])
        self.r[frm].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[to])
        while True:
            keys = self.r[frm].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            self.r[frm].execute_command("MIGRATE", "127.0.0.1", self.ports[to], "", 0, 10000, "KEYS", *keys)
        for r in self.r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.ids[to])
        self.wait_ok()
        check(self.owner(slot) == to, "slot %d did not move" % slot)

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def worker(url, queue):
    return subprocess.Popen([SLUICE, "worker", "--redis", url, "--queue", queue, "--concurrency", "20", "--block-ms",
                             "200", "--quiet"], stdin=subprocess.DEVNULL)


def stop(p):
    p.terminate()
    check(p.wait(timeout=60) == 0, "the worker exited %r" % p.returncode)


def test_python(k):
    q = k.queue_on("py", 2)    # not the URL's first node
    c = sluice.Client(url=k.url, queue=q)
    batch = c.submit([{"type": "noop", "payload": {"i": i}} for i in range(300)], name="cluster")
    w = worker(k.url, q)
    try:
        last = None
        for ev in c.events(batch, timeout=60):
            last = ev
        check(last is not None and last["status"] == "completed" and last["done"] == 300,
              "the last event: %r" % last)
        st = c.status(batch)
        check(st["succeeded"] == 300, "status: %r" % st)
        check(sum(1 for _ in c.results(batch)) == 300, "300 results lines")
    finally:
        stop(w)
    slot = key_slot("{%s}" % q)
    k.move(slot, 0)
    st = c.status(batch)   # the same client object: MOVED to master 0
    check(st["succeeded"] == 300 and st["status"] == "completed", "status after the move: %r" % st)
    check(c.r._node == ("127.0.0.1", k.ports[0]), "the client is on %r, not on master 0" % (c.r._node,))
    print("  python: a queue on master 2 via a URL starting at master 0: 300 items, events to the end, "
          "results; after its slot moved to master 0, status followed MOVED")


NODE_SCRIPT = r"""
const path = require('path');
const {spawn} = require('child_process');
const sluice = require(path.resolve(process.env.SLUICE_CLIENTS, 'node'));
const [url, queue, port0] = process.argv.slice(1);
(async () => {
  const c = new sluice.Client(url, {queue});
  const batch = await c.submit(Array.from({length: 300}, (_, i) => ({type: 'noop', payload: {i}})));
  const w = spawn(process.env.SLUICE_BIN, ['worker', '--redis', url, '--queue', queue, '--concurrency', '20',
    '--block-ms', '200', '--quiet'], {stdio: 'inherit'});
  let last = null;
  for await (const ev of c.events(batch, {timeoutMs: 60000})) last = ev;
  w.kill('SIGTERM');
  await new Promise((r) => w.on('exit', r));
  const st = await c.status(batch);
  let lines = 0;
  for await (const _ of c.results(batch)) lines++;
  console.log(JSON.stringify({last, succeeded: st.succeeded, lines, batch}));
  // wait for the move (the parent moves the slot, then writes a line on stdin)
  await new Promise((r) => process.stdin.once('data', r));
  process.stdin.destroy();
  const after = await c.status(batch);
  console.log(JSON.stringify({after: after.succeeded, node: c.redis.node}));
  await c.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_node(k):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        print("  node: SKIPPED (node is not installed)")
        return
    q = k.queue_on("js", 1)
    p = subprocess.Popen([node, "-e", NODE_SCRIPT, k.url, q], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=dict(os.environ, SLUICE_BIN=SLUICE))
    first = json.loads(p.stdout.readline() or "null")
    check(first is not None, "the node script failed before its first line")
    check(first["last"]["status"] == "completed" and first["last"]["done"] == 300, "node events: %r" % first)
    check(first["succeeded"] == 300 and first["lines"] == 300, "node status/results: %r" % first)
    k.move(key_slot("{%s}" % q), 0)
    p.stdin.write("moved\n")
    p.stdin.close()
    second = json.loads(p.stdout.readline() or "null")
    check(p.wait(timeout=60) == 0, "the node script exited %r" % p.returncode)
    check(second["after"] == 300 and second["node"]["port"] == k.ports[0], "node after the move: %r" % second)
    print("  node: a queue on master 1: 300 items, events to the end, results; after its slot moved to "
          "master 0, status followed MOVED")


def main():
    k = Cluster()
    try:
        out = subprocess.run([SLUICE, "library", "load", "--redis", k.url], capture_output=True, text=True)
        check(out.returncode == 0, "library load: %s" % out.stderr)
        test_python(k)
        test_node(k)
    except Failure as e:
        print("clients on a cluster: FAILED: %s" % e)
        sys.exit(1)
    finally:
        k.stop()
    print("clients on a cluster: ok")


if __name__ == "__main__":
    main()
