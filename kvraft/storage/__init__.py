"""The local store seam: versioned records and the hints a node holds for others.

:mod:`~kvraft.storage.protocol` declares the :class:`Store` contract; :mod:`~kvraft.storage.sqlite`
is the real store (:class:`Storage`), :mod:`~kvraft.storage.memory` the in-memory fake
(:class:`MemoryStore`); :mod:`~kvraft.storage.rules` holds the rules both follow. The public
names stay importable from here, at the path they had when the store was one module
(``from kvraft.storage import Storage, Record``).
"""

from typing import TYPE_CHECKING

from .memory import MemoryStore
from .protocol import Hint, StorageClosed, Store
from .sqlite import ApplyResult, Record, Storage

__all__ = ["ApplyResult", "Hint", "MemoryStore", "Record", "Storage", "StorageClosed", "Store"]

if TYPE_CHECKING:  # the type checker proves that both stores implement the protocol
    _STORES: tuple[type[Store], ...] = (Storage, MemoryStore)
