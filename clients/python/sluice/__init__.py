"""sluice: submit batches of jobs to a sluice queue and follow them.

    import sluice
    c = sluice.Client(url="redis://localhost:6379", queue="default")
    batch = c.submit([{"type": "noop", "payload": {}}] * 3, name="demo")
    for event in c.events(batch):
        print(event["status"], event["done"], "/", event["total"])
    for line in c.results(batch):
        print(line["index"], line["status"])

See README.md beside this package and docs/clients.md of sluice.
"""

from .client import Client, new_batch_id
from .errors import (BatchCancelledError, BatchNotFoundError, BatchStateError, ItemError, LibraryError,
                     LibraryMissingError, LibraryPermissionError, LibraryVersionError, ProtocolError,
                     RedisFullError, SluiceError)
from .library import version as library_version

__all__ = ["Client", "new_batch_id", "library_version", "SluiceError", "ItemError", "LibraryError",
           "LibraryMissingError", "LibraryVersionError", "LibraryPermissionError", "BatchNotFoundError",
           "BatchStateError", "BatchCancelledError", "RedisFullError", "ProtocolError"]
