#!/usr/bin/python3
"""Runs the code examples of docs/clients.md as they stand.

Every fenced block whose language is `python`, `js` or `sh` is written to a
file and run (/usr/bin/python3 with the staged Python client on its path,
node with the staged Node client reachable as `sluice-client`, bash) with
REDIS_URL pointing at a real redis-server started here on a loopback port,
while a real `sluice worker --queue docs --load-library` runs. Each must exit 0 and print
"completed". A block in another language (`text`) is not run.

usage: run_examples.py   (SLUICE_BIN, SLUICE_CLIENTS, NODE_PATH with ioredis)
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "..", "docs", "clients.md")
SLUICE = os.environ.get("SLUICE_BIN", "sluice")
CLIENTS = os.path.abspath(os.environ.get("SLUICE_CLIENTS", "."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    blocks = re.findall(r"^```(python|js|sh)\n(.*?)^```", open(DOC).read(), re.S | re.M)
    if len(blocks) < 3:
        print("docs: expected a python, a js and a sh example in docs/clients.md, found %d" % len(blocks),
              file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="sluice-docs-")
    port = free_port()
    url = "redis://127.0.0.1:%d" % port
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "redis.log")])
    worker = None
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-u", url, "PING"], capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 10 s")
            time.sleep(0.05)
        os.makedirs(os.path.join(tmp, "node_modules"))
        os.symlink(os.path.join(CLIENTS, "node"), os.path.join(tmp, "node_modules", "sluice-client"))
        env = dict(os.environ, REDIS_URL=url, PYTHONPATH=os.path.join(CLIENTS, "python"),
                   NODE_PATH=os.pathsep.join([os.path.join(tmp, "node_modules"), os.environ.get("NODE_PATH", "")]))
        worker = subprocess.Popen([SLUICE, "worker", "--redis", url, "--queue", "docs", "--load-library", "--quiet"])
        run = {"python": ["/usr/bin/python3"], "js": ["node"], "sh": ["bash", "-euo", "pipefail"]}
        ext = {"python": "py", "js": "js", "sh": "sh"}
        for n, (lang, code) in enumerate(blocks):
            path = os.path.join(tmp, "example%d.%s" % (n, ext[lang]))
            with open(path, "w") as f:
                f.write(code)
            out = subprocess.run(run[lang] + [path], cwd=tmp, env=env, capture_output=True, text=True, timeout=180)
            if out.returncode != 0 or "completed" not in out.stdout:
                print("docs: the %s example of docs/clients.md (block %d) failed with exit %d:\n%s\n%s"
                      % (lang, n + 1, out.returncode, out.stdout[-2000:], out.stderr[-2000:]), file=sys.stderr)
                return 1
            print("  %s example: exit 0, %s" % (lang, out.stdout.strip().splitlines()[-1][:100]))
        print("docs: %d examples of docs/clients.md ran and completed" % len(blocks))
        return 0
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        redis.kill()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
