"""The storage seam: the :class:`Store` protocol every local store implements, and the values of
its own that it hands out (:class:`Hint`, :class:`StorageClosed`).

Two implementations: :class:`kvraft.storage.sqlite.Storage` (the real one, SQLite in WAL mode)
and :class:`kvraft.storage.memory.MemoryStore` (the in-memory fake for in-process tests). The
contract tests (``tests/unit/test_storage.py``, ``tests/unit/test_store_equivalence.py``) run
against both. This module holds declarations only: no IO, no state.

Terms used by the contracts below:

- A key has at most one stored record, whatever its partition: a record that arrives with
  another partition moves the key there.
- *Last writer wins*: versions order as ``(ts, node)`` (:class:`kvraft.model.Version`). A store
  keeps an offered record only if it holds no record of that key at least as new. An equal
  version is not applied again (applying is idempotent), and a retried write learns it from
  ``ApplyResult.prev``.
- A *tombstone* (``Record.tomb``) is a record like any other: it has a version, wins and loses
  by the same rule, is returned by reads and scans, and counts in the hash trees; it is not
  counted in ``live_keys`` / ``live_bytes``.
- The *purge watermark* of a partition (:attr:`Store.watermarks`): a record of a key the store
  does not hold, with a timestamp below it, is refused (a tombstone that beat it was purged).
- *Durable*: a write that returned is seen by every later read from any thread and survives a
  crash of the process (the SQLite store with ``fsync=True`` also survives a power loss).
- A write that raises stored nothing of its input. A write interrupted by the death of the
  process may or may not have been stored ("maybe applied").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..model import ApplyResult, Record, Version

__all__ = ["Hint", "Store", "StorageClosed"]


class StorageClosed(RuntimeError):
    """A write was asked of a store after :meth:`Store.close`; nothing was stored."""


@dataclass(frozen=True, slots=True)
class Hint:
    """A record kept for ``target``, a replica that was down, until it is delivered. ``id`` is
    unique within one store and never reused, also across a restart; ids grow in the order the
    hints were added."""

    id: int
    target: str
    record: Record


class Store(Protocol):
    """A node's local store of versioned records and of the hints it holds for other nodes.

    Every method may be called from any thread. Writes block until durable (the SQLite store
    may also wait for other callers' writes: it commits concurrent writes together). Reads never
    wait for a commit (the memory store takes its one lock for the length of the call) and see
    every write that returned before the read began. After :meth:`close`, writes with a
    non-empty input raise :class:`StorageClosed`; reads after close are not part of the
    contract.

    ``apply`` is here for tests and harnesses (the node itself writes with ``apply_many``).
    """

    watermarks: dict[int, int]
    """Partition -> purge watermark (an HLC timestamp); a partition not in it has 0. Set by the
    sync duty from the cluster metadata by assigning a new dict (never mutated in place). Not
    durable: empty after a restart until the next sync round sets it."""

    # -- figures (O(1), never block) ---------------------------------------------------------

    @property
    def live_keys(self) -> int:
        """How many keys have a live (non-tombstone) record."""
        ...

    @property
    def live_bytes(self) -> int:
        """The total length of the values of the live records."""
        ...

    @property
    def max_ts(self) -> int:
        """The largest record timestamp stored at open (0 when empty) or applied since; it
        seeds the HLC after a restart. Hints do not count; deletions do not lower it."""
        ...

    @property
    def hints_pending(self) -> int:
        """How many hints are held, for every target together."""
        ...

    @property
    def clock_mark(self) -> int:
        """The last bound the HLC reserved (:meth:`reserve_clock`; 0 before the first): no
        timestamp this node has issued is above it, even one of a write it coordinated for other
        replicas only. It seeds the HLC after a restart."""
        ...

    def reserve_clock(self, ts: int) -> None:
        """Make ``ts`` the clock mark; durable when this returns."""
        ...

    # -- writes (block until durable; raise StorageClosed after close) -----------------------

    def apply(self, record: Record) -> ApplyResult:
        """Store ``record`` if it wins (last writer wins, the purge watermark; see the module
        docstring). ``applied`` says whether it is now the stored record, ``prev`` and
        ``prev_live`` describe the record stored before the call (None and False when none)."""
        ...

    def apply_many(self, records: Sequence[Record]) -> list[ApplyResult]:
        """:meth:`apply` each record in order, atomically: one result per record (a later record
        of the same key is judged against an earlier one of the batch), or an exception and
        nothing stored. The SQLite store commits the batches of concurrent callers in one
        transaction, so a batch it cannot store (a value that is not bytes, a full disk) fails
        the others of its group too, with the same exception. An empty batch returns ``[]`` at
        once."""
        ...

    def add_hint(self, target: str, record: Record) -> Version:
        """Keep ``record`` for ``target`` until :meth:`drop_hints` drops it, with a new id; the
        store's own record of the key is left as it is. Returns the newest version of the key
        this store now holds, as a hint for any target or as its own record (at least
        ``record.version``): a coordinator must not acknowledge a write below it."""
        ...

    def drop_hints(self, ids: Iterable[int]) -> None:
        """Drop the hints with these ids (delivered); unknown ids are ignored. No ids: no-op."""
        ...

    def forget(self, part: int, keys: Sequence[str], below: int) -> int:
        """Delete the records of ``keys`` that are in partition ``part`` with a timestamp below
        ``below`` (keys whose tombstone won and was purged on the other replicas). Returns how
        many were deleted; no keys: 0 at once."""
        ...

    def purge_tombstones(self, part: int, below_ts: int) -> int:
        """Delete the partition's tombstones with a timestamp below ``below_ts``; returns how
        many."""
        ...

    def drop_partition(self, part: int) -> int:
        """Delete every record (tombstones included) of a partition this node no longer holds;
        hints are kept. Returns how many records were deleted."""
        ...

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The stored record of ``key`` (a tombstone included, with its value), or None."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[Record]:
        """The stored records of those ``keys`` the store holds (tombstones included), in no
        promised order; keys it does not hold are left out."""
        ...

    def scan(self, prefix: str = "", after: str | None = None, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` records whose key starts with ``prefix`` and, when ``after`` is given,
        sorts after it, in key order (code points); tombstones included, values omitted (b"")."""
        ...

    def scan_partition(self, part: int, after: str = "", limit: int = 500) -> list[Record]:
        """Up to ``limit`` records of partition ``part`` with a key after ``after``, in key
        order, tombstones and values included (a partition handed to another node)."""
        ...

    def hints_for(self, target: str, limit: int = 256) -> list[Hint]:
        """Up to ``limit`` hints held for ``target``, oldest (lowest id) first."""
        ...

    def hint_targets(self) -> dict[str, int]:
        """Target -> how many hints are held for it (targets with none are absent)."""
        ...

    # -- anti-entropy reads ------------------------------------------------------------------

    def partitions_held(self) -> set[int]:
        """The partitions with at least one record (tombstones count)."""
        ...

    def leaf_hashes(self, part: int) -> list[int]:
        """The partition's :data:`~kvraft.core.antientropy.LEAVES` leaf hashes (a copy): leaf ``i``
        is the XOR of :func:`~kvraft.core.antientropy.record_hash` over the partition's records
        whose key has ``leaf_of(key) == i``; all zero for a partition not held. Two stores that
        hold the same records of a partition return the same list, whichever the
        implementation. The SQLite store may briefly include a write still committing."""
        ...

    def leaf_entries(self, part: int, leaves: Sequence[int]) -> dict[str, tuple[Version, bool]]:
        """Key -> (version, tombstone) of the partition's records in these leaves (order not
        promised)."""
        ...

    def close(self) -> None:
        """Wait for a write in progress, then release the store. Idempotent; later writes raise
        :class:`StorageClosed`. What was durable stays durable."""
        ...
