"""Redis Cluster: a connection that follows one queue's slot.

Every key of a sluice queue carries the hash tag ``{QUEUE}``, so the whole
queue lives in one slot, on one master, and a client of one queue needs one
connection: to that master. ``QueueRedis`` is a ``redis.Redis`` that finds
it from the seed nodes of a ``redis+cluster://host:port,host:port`` URL
(``CLUSTER SLOTS`` of the first seed that answers) and keeps following it:

- ``MOVED``: the slot has a new master (a failover, a finished migration):
  the connection goes there and the command is sent again;
- ``TRYAGAIN``, ``ASK`` and ``CLUSTERDOWN``: a migration or a failover is
  under way (the sluice functions refuse to run while the slot moves): wait
  a little and send it again, for up to 30 s;
- a lost connection is raised as it is (the command may have run), and the
  next command finds the slot's master again, waiting out a failover.

None of the redirects ran the command, so sending it again is safe. The
function library is checked (and loaded) on the queue's master, the only
node this client uses; ``sluice library load`` loads it on every master.
"""

import time
from urllib.parse import unquote, urlsplit

import redis

WAIT_S = 30.0        # how long a move or a failover is waited out
REDIRECTS = 16       # MOVED per command before giving up


def _crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def key_slot(key):
    """The cluster slot of a key (CRC16 of its hash tag, or of the key)."""
    if isinstance(key, str):
        key = key.encode()
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return _crc16(key) % 16384


def parse_url(url):
    """(seeds [(host, port)], username, password) of a redis+cluster:// URL."""
    if not url.startswith("redis+cluster://"):
        raise ValueError("a Redis Cluster URL starts with redis+cluster://")
    rest = url[len("redis+cluster://"):]
    username = password = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        if ":" in userinfo:
            username, password = userinfo.split(":", 1)
            username = unquote(username) or None
            password = unquote(password)
        else:
            password = unquote(userinfo)
    rest = rest.split("/", 1)[0]
    seeds = []
    for part in rest.split(","):
        u = urlsplit("//" + part)
        if not u.hostname:
            raise ValueError("a node of the Redis Cluster URL has no host: %r" % part)
        seeds.append((u.hostname, u.port or 6379))
    return seeds, username, password


class QueueRedis(redis.Redis):
    """A redis.Redis on the master of one queue's slot (see the module)."""

    def __init__(self, url, queue, **kwargs):
        self._seeds, username, password = parse_url(url)
        self._slot = key_slot("{%s}" % queue)
        self._conn_kw = dict(kwargs, username=username, password=password)
        self._conn_kw.setdefault("socket_connect_timeout", 5)
        self._stale = False
        host, port = self._find_master(deadline=time.monotonic() + 5)
        super().__init__(host=host, port=port, **self._conn_kw)
        self._node = (host, port)

    def _find_master(self, deadline):
        """The (host, port) of the slot's master, read from the first node
        that answers; waits out a failover until the deadline."""
        last = "no node answered"
        while True:
            nodes = [getattr(self, "_node", None)] + list(self._seeds)
            for node in nodes:
                if node is None:
                    continue
                r = redis.Redis(host=node[0], port=node[1], **self._conn_kw)
                try:
                    slots = r.execute_command("CLUSTER SLOTS")
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
                    last = "%s:%d: %s" % (node[0], node[1], e)
                    continue
                finally:
                    r.close()
                for lo, hi, master, *_ in slots:
                    if lo <= self._slot <= hi:
                        host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                        return (host or node[0]), int(master[1])
                last = "no master serves slot %d" % self._slot
            if time.monotonic() >= deadline:
                raise redis.ConnectionError("Redis Cluster: cannot find the master of slot %d: %s"
                                            % (self._slot, last))
            time.sleep(0.25)

    def _move_to(self, host, port):
        if (host, port) == self._node:
            return
        self.connection_pool.disconnect()
        self.connection_pool = redis.ConnectionPool(host=host, port=port, **self._conn_kw)
        self._node = (host, port)

    def execute_command(self, *args, **options):
        if self._stale:
            self._stale = False
            self._move_to(*self._find_master(deadline=time.monotonic() + WAIT_S))
        waited = 0.0
        redirects = 0
        while True:
            try:
                return super().execute_command(*args, **options)
            except (redis.ConnectionError, redis.TimeoutError):
                self._stale = True   # a failover, perhaps: the next command finds the master again
                raise
            except redis.ResponseError as e:
                msg = str(e)
                if msg.startswith("MOVED ") and redirects < REDIRECTS:
                    redirects += 1
                    host, _, port = msg.split(" ")[2].rpartition(":")
                    self._move_to(host, int(port))
                    continue
                if msg.startswith(("TRYAGAIN", "ASK ", "CLUSTERDOWN")) and waited < WAIT_S:
                    step = 0.01 if waited < 0.1 else 0.05 if waited < 1 else 0.25
                    time.sleep(step)
                    waited += step
                    if msg.startswith("CLUSTERDOWN"):
                        self._move_to(*self._find_master(deadline=time.monotonic() + WAIT_S - waited))
                    continue
                raise
