#!/usr/bin/python3
"""An HTTP/1.1 server that records the raw bytes of every request.

Usage: /usr/bin/python3 raw_server.py PORTFILE LOGFILE

Listens on 127.0.0.1 port 0, writes the port to PORTFILE once it listens
(through PORTFILE.tmp and a rename), and serves until it is killed. Every
connection is kept alive. The server does its own parsing, on purpose as
plainly as a naive backend would: a request is a head up to the first empty
line, then as many body bytes as its Content-Length says. So whatever a
client sends is cut into requests the way a real server would cut it, and a
smuggled request shows up as a request of its own.

Each request is answered 200 with {"conn":C,"seq":S,"path":P} (C numbers
connections, S the requests on one connection) and appended to LOGFILE as one
JSON line: {"conn":C,"seq":S,"line":REQUEST_LINE,"head":RAW_HEAD,"body":RAW_BODY},
raw bytes decoded as latin-1 so every byte survives. A head that does not
parse (no request line of three parts) is logged with "bad": true and the
connection is closed. /hold?ms=N sleeps N ms before answering and is counted
in {"peak_in_flight"} of GET /stats (not logged).
"""

import json
import os
import socket
import sys
import threading
import time
import urllib.parse

lock = threading.Lock()
state = {"conns": 0, "in_flight": 0, "peak_in_flight": 0}
log_file = None


def log(entry):
    with lock:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()


def answer(conn, body, status="200 OK"):
    data = json.dumps(body).encode()
    conn.sendall(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % (status, len(data))).encode() + data)


def serve(conn):
    with lock:
        state["conns"] += 1
        cid = state["conns"]
    buf = b""
    seq = 0
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                if len(buf) > 1 << 20:
                    return
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            seq += 1
            entry = {"conn": cid, "seq": seq, "line": lines[0].decode("latin-1"),
                     "head": head.decode("latin-1")}
            if len(parts) != 3:
                entry["bad"] = True
                log(entry)
                return
            length = 0
            for h in lines[1:]:
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        length = 0
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            body, buf = buf[:length], buf[length:]
            entry["body"] = body.decode("latin-1")
            path = parts[1].decode("latin-1")
            url = urllib.parse.urlparse(path)
            if url.path == "/stats":
                with lock:
                    answer(conn, dict(state))
                continue
            if url.path == "/hold":
                ms = int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0])
                with lock:
                    state["in_flight"] += 1
                    state["peak_in_flight"] = max(state["peak_in_flight"], state["in_flight"])
                time.sleep(ms / 1000.0)
                with lock:
                    state["in_flight"] -= 1
                answer(conn, {"ok": True})
                continue
            log(entry)
            answer(conn, {"conn": cid, "seq": seq, "path": path})
    except OSError:
        pass
    finally:
        conn.close()


def main():
    global log_file
    portfile, logpath = sys.argv[1], sys.argv[2]
    log_file = open(logpath, "a")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
