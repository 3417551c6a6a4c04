"""The sluice client: submit a batch, follow it, control it.

One Client talks to one queue of one Redis, through redis-py. It writes
only through the sluice function library (docs/PROTOCOL.md, section 5),
which it loads when it is missing (library.py), and reads the batch hash,
the results hash and the event channels with plain commands (sections 1,
3, 8 and 10). Items are sent as they are given, as item objects in the
README's JSON Lines format; the function checks every field.
"""

import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping

import redis

from . import cluster, library
from .errors import (BatchCancelledError, BatchNotFoundError, BatchStateError, ItemError, ProtocolError,
                     RedisFullError, SluiceError, from_reply)
from .follow import follow

__all__ = ["Client", "new_batch_id"]

log = logging.getLogger("sluice")

GROUP = "workers"          # the consumer group of every queue
CHUNK_ITEMS = 250          # items per submit call: each call checks every item (~30 us each)
CHUNK_BYTES = 4 << 20      # item bytes per submit call
RESULTS_PAGE = 500         # HMGET fields per call
STEP = 1000                # entries one cancel, resume or retry call handles
LIVE_STATES = ("queued", "scheduled", "waiting", "running", "retrying", "paused")
SEND_TRIES = 5             # tries of one chunk when the connection breaks
BATCH_OPTIONS = ("name", "retention_ms", "dedupe_ttl_ms", "webhook")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_END = object()


def new_batch_id():
    """26 characters of Crockford base32: 48 bits of ms time, 80 random bits
    (ids sort by creation time; PROTOCOL.md, section 9)."""
    t = int(time.time() * 1000)
    r = secrets.randbits(80)
    return ("".join(CROCKFORD[(t >> (5 * (9 - i))) & 31] for i in range(10)) +
            "".join(CROCKFORD[(r >> (5 * (15 - i))) & 31] for i in range(16)))


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _item_bytes(item, defaults):
    """One item as the argument the submit function takes."""
    if isinstance(item, Mapping):
        merged = dict(defaults, **item) if defaults else item
        return json.dumps(merged, ensure_ascii=False, allow_nan=False).encode()
    if defaults:
        raise TypeError("defaults apply to items given as dicts, not as JSON text")
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    raise TypeError("an item is a dict, or its JSON text as str or bytes, not %s" % type(item).__name__)


class Client:
    """A client of one sluice queue.

    ``redis_client`` is a redis.Redis (or ``url`` a Redis URL; default
    redis://localhost:6379; a ``redis+cluster://host:port,...`` URL names
    nodes of a Redis Cluster, and the client then follows the master of
    the queue's slot, see cluster.py). With ``load_library`` False a missing
    function library raises LibraryMissingError instead of being loaded.
    """

    def __init__(self, redis_client=None, *, url=None, queue="default", load_library=True, actor=None):
        # Who acts, as the batch log records submit, cancel, pause, resume and
        # retry: "HOST pid N (PROGRAM)" unless given (200 printable ASCII bytes).
        self.actor = actor or "%s pid %d (%s)" % (socket.gethostname(), os.getpid(),
                                                   os.path.basename(sys.argv[0] or "python") or "python")
        self.actor = "".join(ch if " " <= ch <= "~" else "?" for ch in self.actor)[:200]
        if redis_client is None and url is not None and url.startswith("redis+cluster://"):
            redis_client = cluster.QueueRedis(url, queue)
        elif redis_client is None:
            redis_client = redis.Redis.from_url(url or "redis://localhost:6379")
        self.r = redis_client
        self.queue = queue
        self.prefix = "sluice:{%s}:" % queue
        self.load_library = load_library
        self._library = None

    # ---- keys ----

    def _bkey(self, batch):
        return self.prefix + "b:" + batch

    def _streams(self):
        return [self.prefix + "s:high", self.prefix + "s:normal", self.prefix + "s:low"]

    # ---- the function library ----

    def library_version(self):
        """Makes sure the library this client needs is loaded (loading it
        when missing, unless told not to) and returns its version."""
        if self._library is None:
            self._library = library.ensure(self.r, self.load_library)
        return self._library

    def _fcall(self, name, keys, args, batch=None):
        self.library_version()
        try:
            return self.r.execute_command("FCALL", "sluice_v1_" + name, len(keys), *keys, *args)
        except redis.exceptions.NoPermissionError as e:
            raise SluiceError("NOPERM " + str(e), "NOPERM") from None
        except redis.ResponseError as e:
            if "Function not found" in str(e):   # flushed, or Redis restarted without it
                self._library = None
                self.library_version()
                return self._fcall(name, keys, args, batch)
            raise from_reply(str(e), batch, self.queue) from None

    # ---- submit ----

    def submit(self, items, *, name="", defaults=None, retention_ms=None, dedupe_ttl_ms=None, webhook=None,
               idempotency_key=None, idempotency_ttl_ms=None, labels=None, batch_id=None, report=False):
        """Submits items as one batch and returns its id.

        ``items``: an iterable of item objects (dicts, or their JSON text),
        as in the README's JSON Lines format. ``defaults``: fields every
        dict item gets unless it has them (priority, max_attempts,
        timeout_ms, backoff_ms, backoff_max_ms, rate_key, run_at or
        delay_ms, type). ``name``, ``retention_ms``, ``dedupe_ttl_ms`` and
        ``webhook`` are the batch options (PROTOCOL.md, section 5).
        ``labels``: a dict of up to 16 labels to find the batch by, such as
        ``{"team": "ml"}`` (keys of [A-Za-z0-9_./-], values of
        [A-Za-z0-9_./:@+-], 63 characters at most).

        ``idempotency_key`` (1-256 bytes) names this submit: another submit
        with the same key within ``idempotency_ttl_ms`` (default 24 h)
        writes nothing and returns the first batch's id, whatever state that
        batch is in (still submitting, or left so by a producer that died).

        With ``report`` it returns a dict instead: ``batch``, ``reused``
        (the key had been used), ``submitted``, and ``skipped``: the items
        skipped because their ``dedupe`` key was taken, each as ``{"index",
        "held_by": {"batch", "index"}}``.

        A refused item raises ItemError (its index, id and field) before
        anything of its chunk is written; if earlier chunks were written,
        the batch is cancelled first (so it ends, with the items written so
        far) and ``error.batch`` names it.
        """
        batch = batch_id or new_batch_id()
        opts = {k: v for k, v in (("by", self.actor), ("name", name), ("retention_ms", retention_ms),
                                  ("dedupe_ttl_ms", dedupe_ttl_ms), ("webhook", webhook),
                                  ("idempotency_key", idempotency_key),
                                  ("idempotency_ttl_ms", idempotency_ttl_ms), ("labels", labels)) if v}
        first = json.dumps(opts) if set(opts) - {"name"} or name.startswith("{") else name
        keys = [self._bkey(batch)] + self._streams() + [self.prefix + "batches"]
        self._check_room(items)
        seq, chunk, size, sent = 0, [], 0, 0
        it = iter(items)
        nxt = next(it, _END)
        while True:
            if nxt is not _END:
                b = _item_bytes(nxt, defaults)
                chunk.append(b)
                size += len(b)
                nxt = next(it, _END)
            last = nxt is _END
            if not last and len(chunk) < CHUNK_ITEMS and size < CHUNK_BYTES:
                continue
            args = [batch, self.queue, self.prefix, seq, 1 if last else 0, first if seq == 0 else "", GROUP,
                    "items"] + chunk
            sent += len(chunk)
            try:
                written = self._send(keys, args, batch, seq)
            except SluiceError as e:
                if e.code != "SLUICE_IDEMPOTENT" or seq != 0:
                    raise
                first_batch = e.message.split(" ", 1)[1]
                log.info("idempotency key %r was used by batch %s: nothing was submitted", idempotency_key,
                         first_batch)
                return {"batch": first_batch, "reused": True, "submitted": 0, "skipped": []} if report \
                    else first_batch
            if last:
                if not report:
                    return batch
                return {"batch": batch, "reused": False, "submitted": int(written),
                        "skipped": self._skipped(batch) if int(written) < sent else []}
            seq, chunk, size = seq + 1, [], 0

    def _send(self, keys, args, batch, seq):
        """One chunk; sent again after a broken connection (the function
        recognizes a chunk it already wrote by its number)."""
        delay = 0.1
        for attempt in range(SEND_TRIES):
            try:
                return self._fcall("submit", keys, args, batch)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                if attempt == SEND_TRIES - 1:
                    err = SluiceError("chunk %d of batch %s: the connection broke %d times (%s); the batch stays "
                                      "submitting: cancel it, or submit again" % (seq, batch, SEND_TRIES, e))
                    err.batch = batch
                    raise err from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except ItemError as e:
                e.batch = batch if seq > 0 else None
                if seq > 0:
                    self.cancel(batch)
                    e.message += " (batch %s was cancelled: it ends with the items of its first %d chunks)" % (
                        batch, seq)
                    e.args = (e.message,)
                raise
            except BatchCancelledError as e:
                e.batch = batch
                raise
            except SluiceError as e:
                if e.code != "SLUICE_IDEMPOTENT":
                    e.batch = batch
                raise

    def _skipped(self, batch):
        """The items of a batch skipped as duplicates, in item order, with
        the item that holds each one's dedupe key."""
        out = []
        for idx, holder in self.r.hscan_iter(self._bkey(batch) + ":skip", count=1000):
            b, _, i = _s(holder).rpartition(":")
            out.append({"index": int(idx), "held_by": {"batch": b, "index": int(i)}})
        return sorted(out, key=lambda x: x["index"])

    def _check_room(self, items):
        """Refuses a batch that would take Redis past 95% of maxmemory
        (PROTOCOL.md, section 9, step 5). Only a list's size is known
        beforehand; other iterables are estimated at one item."""
        info = self.r.info("memory")
        limit = int(info.get("maxmemory", 0))
        if limit <= 0:
            return
        n = len(items) if hasattr(items, "__len__") else 1
        need = int(info.get("used_memory", 0)) + n * 640
        if need > limit * 0.95:
            raise RedisFullError("Redis has no room for %d items: used_memory %s of maxmemory %d"
                                 % (n, info.get("used_memory"), limit))

    # ---- reading ----

    def _snapshot(self, batch):
        """(server time ms, batch hash as a dict of str, with its live state
        as live:* fields) read in one atomic call, sluice_v1_state."""
        r = self.r.fcall_ro("sluice_v1_state", 1, self._bkey(batch))
        flat = r[0] if r else []
        if not flat:
            raise BatchNotFoundError(batch, self.queue)
        h = {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        return int(h["live:now"]), h

    def _state(self, batch, h, ts):
        def n(f):
            return int(h.get(f) or 0)

        def num(f):
            v = h.get(f)
            return float(v) if v else None
        whole = h.get("whole") == "1"
        total, done = n("total"), n("done")
        st = {"queue": self.queue, "batch": batch, "name": h.get("name", ""), "status": h.get("status"),
              "total": total, "done": done, "succeeded": n("succeeded"), "failed": n("failed"),
              "cancelled": n("cancelled"), "pct": float(h["live:pct"]), "ts": ts, "whole": whole,
              "submitted": n("submitted"), "skipped": n("skipped"), "refused": n("refused"),
              "created_at": n("created_at"), "queued_at": n("queued_at"), "started_at": n("started_at"),
              "finished_at": n("finished_at"),
              "ended": whole and done >= total and h.get("status") in ("completed", "cancelled"),
              "labels": dict(l.split("=", 1) for l in h.get("labels", "").split(",") if l)}
        # where the unfinished items are (PROTOCOL.md, "The live state of a batch")
        for k in LIVE_STATES:
            st[k] = n("live:" + k)
        st["rate"] = num("live:rate")
        st["eta_ms"] = int(num("live:eta_ms")) if h.get("live:eta_ms") else None
        metrics = {f[7:]: {"all": float(v), "final": float(h.get("final:" + f[7:]) or 0)}
                   for f, v in h.items() if f.startswith("metric:")}
        if metrics:
            st["metrics"] = metrics
        if n("reran"):
            st["reran"] = n("reran")
        return st

    def status(self, batch):
        """The batch's state now: status, counters (total, done, succeeded,
        failed, cancelled, skipped), pct, where the unfinished items are
        (queued, scheduled, waiting, running, retrying, paused: with done
        they add up to total), rate and eta_ms (None while unknown), times,
        ``labels``, ``metrics``, ``reran`` and ``ended``."""
        ts, h = self._snapshot(batch)
        return self._state(batch, h, ts)

    def results(self, batch):
        """The results lines of the batch's finished items, in item order, as
        dicts with the item's ``index`` added (PROTOCOL.md, section 3).
        Items not finished yet are not yielded; read again later, or follow
        events() to the end first."""
        h = self.r.hmget(self._bkey(batch), "indexed", "submitted", "status")
        if h[2] is None:
            raise BatchNotFoundError(batch, self.queue)
        n = int(h[0] or h[1] or 0)
        key = self._bkey(batch) + ":r"
        for lo in range(0, n, RESULTS_PAGE):
            idx = list(range(lo, min(n, lo + RESULTS_PAGE)))
            for i, line in zip(idx, self.r.hmget(key, idx)):
                if line is not None:
                    d = json.loads(line)
                    d["index"] = i
                    yield d

    def events(self, batch, *, timeout=None, progress=False, idle_s=5.0):
        """The batch's state now, then each change, until the batch ends.

        Subscribes to the batch's channel first and reads the hash second, so
        nothing falls between the two; skips events older than that read;
        reads the hash again after ``idle_s`` without events. With
        ``progress`` it also yields progress events (they have ``type``
        ``progress``). ``timeout`` (s) raises TimeoutError when the batch
        has not ended by then."""
        return follow(self, batch, timeout, progress, idle_s)

    # ---- control ----

    def _steps(self, name, keys, args, batch):
        while True:
            r = self._fcall(name, keys, args, batch)
            if not isinstance(r, list) or len(r) != 2:
                raise ProtocolError("sluice_v1_%s answered %r" % (name, r))
            yield r
            if int(r[1]) == 0:
                return

    def cancel(self, batch, *, abort=False):
        """Cancels the batch: no item of it starts any more; with ``abort``
        its running items are stopped too. Returns the batch's status
        (``cancelled``, or ``completed`` when it had ended already)."""
        keys = [self._bkey(batch), self.prefix + "delayed"]
        args = [self.prefix, self.queue, batch, 1 if abort else 0, STEP, self.actor]
        status = None
        for r in self._steps("cancel", keys, args, batch):
            status = _s(r[0])
        return status

    def pause(self, batch):
        """Pauses the batch: its items are parked instead of run. Returns
        ``paused``; an ended or cancelled batch raises BatchStateError."""
        st = _s(self._fcall("pause", [self._bkey(batch)], [self.prefix, self.queue, batch, self.actor], batch))
        if st != "paused":
            raise BatchStateError("batch %s is %s: only a queued, submitting or running batch can be paused"
                                  % (batch, st), st)
        return st

    def resume(self, batch):
        """Resumes a paused batch and puts its parked items back. Returns the
        status it runs with again."""
        keys = [self._bkey(batch)] + self._streams()
        status = None
        for r in self._steps("resume", keys, [self.prefix, self.queue, batch, STEP, self.actor], batch):
            status = _s(r[0])
        return status

    def retry(self, batch):
        """Runs the failed items of the batch again; returns how many. Items
        that fail again while this runs stay failed (each moves once)."""
        b = self._bkey(batch)
        keys = [b, b + ":r", b + ":f"] + self._streams() + [self.prefix + "dead"]
        sec, usec = self.r.time()
        since = int(sec) * 1000 + int(usec) // 1000
        cursor, moved = "0", 0
        while True:
            r = self._fcall("retry", keys, [self.prefix, self.queue, batch, STEP, GROUP, cursor, since, self.actor],
                            batch)
            if not isinstance(r, list) or len(r) != 3:
                raise ProtocolError("sluice_v1_retry answered %r" % (r,))
            moved += int(r[0])
            if int(r[1]) == 0:
                return moved
            cursor = _s(r[2])
