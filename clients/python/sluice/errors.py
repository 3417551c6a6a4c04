"""The errors the sluice client raises.

Every error is a SluiceError. Those that come from the server keep its
message word for word in ``message`` and its code (``SLUICE_ITEM``,
``NOPERM``, ...) in ``code``, so nothing of the real cause is lost.
"""

import re

__all__ = ["SluiceError", "ItemError", "LibraryError", "LibraryMissingError", "LibraryVersionError",
           "LibraryPermissionError", "BatchNotFoundError", "BatchStateError", "BatchCancelledError",
           "RedisFullError", "ProtocolError", "from_reply"]


class SluiceError(Exception):
    """Base class. ``code`` is the server's error code when there is one."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        self.code = code


class ItemError(SluiceError, ValueError):
    """An item was refused; nothing of its chunk was written.

    ``index`` is the item's index in the batch (from 0), ``id`` its id when
    it has one, ``field`` the field at fault (None when the item is not
    valid JSON or not an object), ``reason`` what is wrong with it.
    """

    def __init__(self, message, index=None, id=None, field=None, reason=None):
        super().__init__(message, "SLUICE_ITEM")
        self.index = index
        self.id = id
        self.field = field
        self.reason = reason


class LibraryError(SluiceError):
    """The sluice function library cannot be used as it is."""


class LibraryMissingError(LibraryError):
    """The library is not loaded and this client was told not to load it."""

    def __init__(self, needed):
        super().__init__("the sluice function library is not loaded in this Redis (this client needs v%s): "
                         "run `sluice library load`, or let the client load it" % needed)
        self.needed = needed


class LibraryVersionError(LibraryError):
    """Another version of the library is loaded. Neither is replaced: the
    fleet's operator decides which one runs (``sluice library load``)."""

    def __init__(self, loaded, needed):
        super().__init__("library v%s is loaded, this client needs v%s: use the client of the fleet's sluice "
                         "version, or have an operator run `sluice library load` of this one" % (loaded, needed))
        self.loaded = loaded
        self.needed = needed


class LibraryPermissionError(LibraryError):
    """The library is missing and this Redis user may not load it."""

    def __init__(self, needed, server_message):
        super().__init__("the sluice function library is not loaded in this Redis, and this Redis user may not "
                         "load it (%s): ask the operator to run `sluice library load` (v%s)"
                         % (server_message, needed), "NOPERM")
        self.needed = needed


class BatchNotFoundError(SluiceError, LookupError):
    """No such batch in the queue (a wrong queue, or its retention ran out)."""

    def __init__(self, batch, queue):
        super().__init__("no batch %s in queue %s (wrong queue, or it expired)" % (batch, queue), "SLUICE_NOTFOUND")
        self.batch = batch
        self.queue = queue


class BatchStateError(SluiceError):
    """The batch is in a state that does not allow the call (pausing an
    ended batch); ``status`` is that state."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class BatchCancelledError(SluiceError):
    """The batch was cancelled while it was being submitted or retried."""


class RedisFullError(SluiceError):
    """Redis has no room for the batch (maxmemory), or refused a write with OOM."""


class ProtocolError(SluiceError):
    """The server answered something this client does not understand, or
    refused a call as malformed (a bug on one side)."""


_ITEM = re.compile(r'^SLUICE_ITEM item index (\d+)(?: \(id ("(?:[^"\\]|\\.)*")\))?: (.*)$', re.S)
_FIELD = re.compile(r'^field "([^"]+)": (.*)$', re.S)


def from_reply(msg, batch=None, queue=None):
    """The SluiceError for an error reply of a sluice function."""
    import json
    m = _ITEM.match(msg)
    if m:
        rest = m.group(3)
        f = _FIELD.match(rest)
        ident = json.loads(m.group(2)) if m.group(2) else None
        return ItemError(msg, int(m.group(1)), ident, f.group(1) if f else None, f.group(2) if f else rest)
    code = msg.split(" ", 1)[0]
    if code == "SLUICE_NOTFOUND":
        return BatchNotFoundError(batch, queue)
    if code == "SLUICE_CANCELLED":
        return BatchCancelledError(msg, code)
    if code == "OOM":
        return RedisFullError(msg, code)
    if code in ("SLUICE_ARGS", "SLUICE_ORDER", "SLUICE_WHOLE"):
        return ProtocolError(msg, code)
    return SluiceError(msg, code if code.isupper() else None)
