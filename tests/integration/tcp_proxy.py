#!/usr/bin/python3
"""A TCP forwarder for partition tests.

Usage: /usr/bin/python3 tcp_proxy.py PORTFILE TARGET

Listens on 127.0.0.1 port 0 (the kernel picks one), writes the port to
PORTFILE once it is listening (written to PORTFILE.tmp, then renamed, so a
reader never sees half a number), and forwards every connection to TARGET, a
unix socket path (starting with /) or HOST:PORT, byte for byte in both
directions, until it is killed. A connection's two halves are closed when
either side closes.

A test makes a silent partition of it with SIGSTOP: the connections stay
open and the kernel still accepts new ones into the listen backlog, but no
byte moves in either direction until SIGCONT.
"""

import os
import socket
import sys
import threading


def connect_target(target):
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target)
        return s
    host, port = target.rsplit(":", 1)
    return socket.create_connection((host, int(port)))


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(client, target):
    try:
        upstream = connect_target(target)
    except OSError:
        client.close()
        return
    a = threading.Thread(target=pump, args=(client, upstream), daemon=True)
    b = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    a.start()
    b.start()
    a.join()
    b.join()
    client.close()
    upstream.close()


def main():
    portfile, target = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    main()
