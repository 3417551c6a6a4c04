"""The sluice function library: check its version, load it when missing.

The library text ships inside this package (library.lua and
library.version, put there when the package is staged from a sluice build:
cmake/stage_clients.cmake). The call sequence is the one of
docs/PROTOCOL.md, section 4, which every client follows:

1. ``FCALL_RO sluice_v1_version 0``. The needed version: done. Another
   version: LibraryVersionError naming both; it is never replaced, so two
   builds in one fleet do not replace each other's library back and forth.
2. ``Function not found``: ``FUNCTION LOAD <text>``, without REPLACE.
   ``already exists`` means another client loaded it meanwhile: back to 1.
   ``NOPERM``: LibraryPermissionError (the user may not load code; an
   operator runs ``sluice library load``).
"""

import os

import redis

from .errors import LibraryMissingError, LibraryPermissionError, LibraryVersionError, SluiceError

_HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name):
    path = os.path.join(_HERE, name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise SluiceError("%s is missing: this is the client's source tree, not a staged package. Build sluice "
                          "(cmake --build BUILD) and use BUILD/clients/python" % path) from None


def text():
    """The library text, as FUNCTION LOAD takes it (bytes)."""
    return _read("library.lua")


def version():
    """The library version this client needs, e.g. '0.1.0+48abff88465a'."""
    return _read("library.version").decode().strip()


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def loaded_version(r):
    """The version of the library loaded in Redis r, or None when none is."""
    try:
        return _s(r.execute_command("FCALL_RO", "sluice_v1_version", 0))
    except redis.ResponseError as e:
        if "Function not found" in str(e):
            return None
        raise


def ensure(r, load=True):
    """Makes sure Redis r has the library this client needs; returns its
    version. With load=False a missing library raises LibraryMissingError
    instead of being loaded."""
    needed = version()
    for _ in range(2):
        have = loaded_version(r)
        if have == needed:
            return have
        if have is not None:
            raise LibraryVersionError(have, needed)
        if not load:
            raise LibraryMissingError(needed)
        try:
            r.execute_command("FUNCTION", "LOAD", text())
            return needed
        except redis.exceptions.NoPermissionError as e:
            raise LibraryPermissionError(needed, "NOPERM " + str(e)) from None
        except redis.ResponseError as e:
            msg = str(e)
            if "already exists" not in msg:
                raise SluiceError("Redis refused FUNCTION LOAD of the sluice library: %s" % msg) from None
    return ensure(r, load=False)
