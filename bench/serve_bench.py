#!/usr/bin/python3
"""sluice serve, measured: bench/serve.sh runs this.

Against a private redis-server (unix socket) and a `sluice serve` on a
loopback port, both started here with a fresh state, it measures:

  1. submit    one file of N noop items (default 100,000): `sluice submit`
               of the file, then POST /v1/batches of the same file as NDJSON
               (curl --data-binary), each timed from start to exit; items/s.
  2. get       GET /v1/batches/{id} from 50 concurrent keep-alive clients
               for a fixed number of requests; requests/s.
  3. fan-out   1,000 clients follow one busy batch through its event stream
               while a worker runs it: the server's RSS before and with the
               clients connected (per client), and the delivery latency of
               every event to every client, from the `ts` the function put
               in it when it PUBLISHed (the Redis server's clock, the same
               host) to its receipt: p50 and p99.

Nothing here asserts on a figure: it prints them, as lines and then as one
JSON line. The exit status says whether the runs worked.

usage: serve_bench.py SLUICE_BIN [N]
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SLUICE = sys.argv[1] if len(sys.argv) > 1 else "sluice"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
GET_CLIENTS = 50
GET_REQUESTS = 20000
SSE_CLIENTS = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


async def get_client(port, path, n, counts):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
    for _ in range(n):
        w.write(req)
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
        counts[0] += 1
    w.close()


async def run_get(port, batch):
    counts = [0]
    t0 = time.monotonic()
    await asyncio.gather(*(get_client(port, "/v1/batches/%s" % batch, GET_REQUESTS // GET_CLIENTS, counts)
                           for _ in range(GET_CLIENTS)))
    return counts[0] / (time.monotonic() - t0)


async def sse_client(port, batch, lat, ready, done_evt):
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    w.write(("GET /v1/batches/%s/events HTTP/1.1\r\nHost: x\r\n\r\n" % batch).encode())
    await w.drain()
    first = True
    while True:
        line = await r.readline()
        if not line:
            break
        if line.startswith(b"data: {"):
            now = time.time() * 1000
            ev = json.loads(line[6:])
            if first:
                first = False
                ready.append(1)
            elif "ts" in ev:
                lat.append(now - ev["ts"])
            if ev.get("status") == "completed":
                break
    w.close()
    done_evt.append(1)


def main():
    tmp = tempfile.mkdtemp(prefix="sluice-serve-bench-")
    sock = os.path.join(tmp, "redis.sock")
    url = "unix://" + sock
    port = free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                                       "--appendonly", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "r.log")]))
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-s", sock, "PING"], capture_output=True).stdout != b"PONG\n":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        subprocess.run([SLUICE, "library", "load", "--redis", url], check=True, capture_output=True)
        server = subprocess.Popen([SLUICE, "serve", "--redis", url, "--listen", "127.0.0.1:%d" % port, "--queue",
                                   "bench", "--quiet", "--max-body", str(1 << 30)])
        procs.append(server)
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d/healthz" % port]).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("sluice serve did not start")
            time.sleep(0.02)
        path = os.path.join(tmp, "items.ndjson")
        with open(path, "w") as f:
            for i in range(N):
                f.write('{"type":"noop","payload":{"n":%d}}\n' % i)

        t0 = time.monotonic()
        subprocess.run([SLUICE, "submit", "--redis", url, "--queue", "bench", path], check=True, capture_output=True)
        cli_s = time.monotonic() - t0
        t0 = time.monotonic()
        out = subprocess.run(["curl", "-s", "-X", "POST", "-H", "Content-Type: application/x-ndjson",
                              "--data-binary", "@" + path, "http://127.0.0.1:%d/v1/batches" % port],
                             check=True, capture_output=True)
        api_s = time.monotonic() - t0
        answer = json.loads(out.stdout)
        if answer.get("submitted") != N:
            raise RuntimeError("the API submit answered %r" % str(answer)[:300])
        batch = answer["batch"]
        print("submit    %d items: sluice submit %.3f s (%.0f items/s), POST /v1/batches %.3f s (%.0f items/s)"
              % (N, cli_s, N / cli_s, api_s, N / api_s))

        rps = asyncio.run(run_get(port, batch))
        print("get       GET /v1/batches/{id}, %d clients: %.0f requests/s" % (GET_CLIENTS, rps))

        busy = json.loads(subprocess.run(
            ["curl", "-s", "-X", "POST", "-H", "Content-Type: application/x-ndjson", "--data-binary", "@-",
             "http://127.0.0.1:%d/v1/batches" % port],
            input="".join('{"type":"sleep","payload":{"ms":50}}\n' for _ in range(4000)).encode(),
            check=True, capture_output=True).stdout)["batch"]
        rss0 = rss_kib(server.pid)

        async def fan_out():
            lat, ready, done = [], [], []
            tasks = [asyncio.create_task(sse_client(port, busy, lat, ready, done)) for _ in range(SSE_CLIENTS)]
            t = time.monotonic()
            while len(ready) < SSE_CLIENTS and time.monotonic() - t < 60:
                await asyncio.sleep(0.05)
            rss1 = rss_kib(server.pid)
            worker = subprocess.Popen([SLUICE, "worker", "--redis", url, "--queue", "bench", "--concurrency", "200",
                                       "--quiet"])
            await asyncio.wait_for(asyncio.gather(*tasks), 300)
            worker.send_signal(signal.SIGTERM)
            worker.wait()
            return lat, len(ready), rss1

        lat, connected, rss1 = asyncio.run(fan_out())
        per_client = (rss1 - rss0) / max(1, connected)
        print("fan-out   %d clients on one batch of 4,000 items: server RSS %.1f MiB before, %.1f MiB with them "
              "(%.1f KiB per client); %d deliveries, latency p50 %.1f ms, p99 %.1f ms"
              % (connected, rss0 / 1024, rss1 / 1024, per_client, len(lat), pct(lat, 0.5), pct(lat, 0.99)))
        print(json.dumps({"bench": "serve", "items": N, "cli_submit_items_per_s": round(N / cli_s),
                          "api_submit_items_per_s": round(N / api_s), "get_clients": GET_CLIENTS,
                          "get_requests_per_s": round(rps), "sse_clients": connected,
                          "server_rss_kib_before": rss0, "server_rss_kib_with_clients": rss1,
                          "rss_kib_per_client": round(per_client, 1), "deliveries": len(lat),
                          "latency_ms_p50": round(pct(lat, 0.5), 1), "latency_ms_p99": round(pct(lat, 0.99), 1)}))
        return 0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
