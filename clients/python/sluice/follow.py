"""Following a batch to its end: subscribe first, read the hash second.

The batch's channel (sluice:{Q}:events:BATCH) is subscribed, and the
subscription confirmed, before the batch hash is read; so every change
after the read arrives as an event, and none falls between the two
(docs/PROTOCOL.md, section 10). Events published before the read can still
arrive after it: the read is atomic with the server's TIME, and events
with an earlier ``ts``, or of the same ms but not newer than what was
read, are skipped. After ``idle_s`` without events the hash is read again
(events lost with a connection are not replayed). A batch has ended when
its status is ``completed``, or ``cancelled`` with done = total.
"""

import json
import time

from .errors import SluiceError

_RANK = {"submitting": 0, "queued": 1, "running": 2, "paused": 2, "completed": 3, "cancelled": 3}
_KEYS = ("status", "total", "done", "succeeded", "failed", "cancelled")


def _ended(ev):
    return ev["status"] == "completed" or (ev["status"] == "cancelled" and ev["done"] >= ev["total"])


def _stale(ev, held, read_ts):
    """True for an event the read already covers."""
    if ev["ts"] < read_ts:
        return True
    if ev["ts"] > read_ts:
        return False
    if ev["done"] < held["done"] or ev["total"] < held["total"]:
        return True
    same = ev["done"] == held["done"] and ev["total"] == held["total"]
    return same and _RANK.get(ev["status"], 0) <= _RANK.get(held["status"], 0)


def _event_of(state):
    """The fields of a batch event, from a state read (PROTOCOL.md, section 8)."""
    ev = {k: state[k] for k in ("queue", "batch", "status", "total", "done", "succeeded", "failed",
                                "cancelled", "pct", "queued", "scheduled", "waiting", "running",
                                "retrying", "paused", "rate", "eta_ms", "ts")}
    for k in ("reran", "metrics"):
        if k in state:
            ev[k] = state[k]
    return ev


def follow(client, batch, timeout, progress, idle_s):
    deadline = None if timeout is None else time.monotonic() + timeout
    ps = client.r.pubsub()
    try:
        # Sharded pub/sub: the channel lives in the queue's cluster slot.
        ps.execute_command("SSUBSCRIBE", client.prefix + "events:" + batch)
        confirm_by = time.monotonic() + 10.0
        while True:   # the confirmation: from here on every event reaches us
            m = _next(ps, _left(deadline, 1.0, batch))
            if m is not None and m["type"] == "ssubscribe":
                break
            if time.monotonic() > confirm_by:
                raise SluiceError("Redis did not confirm SSUBSCRIBE within 10 s")
        state = client.status(batch)
        held, read_ts = _event_of(state), state["ts"]
        yield dict(held)
        if state["ended"]:
            return
        last_news = time.monotonic()
        while True:
            wait = max(0.0, idle_s - (time.monotonic() - last_news))
            m = _next(ps, _left(deadline, wait, batch))
            if m is None or m["type"] != "smessage":
                if time.monotonic() - last_news >= idle_s:
                    state = client.status(batch)
                    last_news = time.monotonic()
                    if any(state[k] != held[k] for k in _KEYS):
                        held, read_ts = _event_of(state), state["ts"]
                        yield dict(held)
                        if state["ended"]:
                            return
                continue
            last_news = time.monotonic()
            ev = json.loads(m["data"])
            if "type" in ev:
                if progress:
                    yield ev
                continue
            if read_ts is not None and _stale(ev, held, read_ts):
                continue
            read_ts = None   # a live event: all after it are newer
            held = ev
            yield dict(ev)
            if _ended(ev):
                return
    finally:
        ps.close()


def _next(ps, timeout):
    """The next reply on the subscription, {"type", "data"}, or None after
    timeout seconds. redis-py 4.3 (Debian bookworm's) has no API for sharded
    pub/sub, so SSUBSCRIBE goes out as a plain command on the pub/sub
    connection and its replies ([type, channel, data]) are read as they come."""
    r = ps.parse_response(block=False, timeout=timeout)
    if not r:
        return None
    kind = r[0].decode() if isinstance(r[0], bytes) else r[0]
    return {"type": kind, "data": r[2] if len(r) > 2 else None}


def _left(deadline, wait, batch):
    if deadline is None:
        return wait
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("batch %s did not end in time" % batch)
    return min(wait, left)
