"""The local store seam: versioned records and the hints a node holds for others.

:mod:`kvraft.storage.sqlite` is the real store. The public names stay importable from here, at
the path they had when the store was one module (``from kvraft.storage import Storage, Record``).
"""

from .sqlite import ApplyResult, Hint, Record, Storage, StorageClosed

__all__ = ["ApplyResult", "Hint", "Record", "Storage", "StorageClosed"]
