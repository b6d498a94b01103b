"""The rules every store follows, kept once so the SQLite store and the in-memory one cannot
drift apart: which offered record a store keeps, and the per-partition anti-entropy leaf hashes
kept up to date as records come and go.

Pure bookkeeping: no IO, no threads, no clock. Callers hold their own lock around
:class:`LeafTrees`.
"""

from __future__ import annotations

from ..core.antientropy import LEAVES
from ..model import Version


def keeps(prev: Version | None, offered: Version, watermark: int) -> bool:
    """Whether a store that holds ``prev`` of a key (None: no record) keeps a record of that key
    with version ``offered``: last writer wins on ``(ts, node)`` (an equal version is already
    held), and a key the store does not hold is refused below its partition's purge watermark
    (a tombstone that won over it was purged). A refused record gets the answer
    ``ApplyResult(False, prev, prev_live)``."""
    if prev is not None:
        return offered > prev
    return offered.ts >= watermark


class LeafTrees:
    """The leaf hashes of every partition a store holds, and how many records each holds.

    A leaf hash is the XOR of the record hashes (:func:`kvraft.core.antientropy.record_hash`) of
    the partition's records in that leaf, so a change is one XOR out and one XOR in. Not
    thread-safe: the owner serialises :meth:`change`; :meth:`leaf_hashes` returns a copy.
    """

    def __init__(self) -> None:
        self._leaves: dict[int, list[int]] = {}  # partition -> leaf hashes
        self._rows: dict[int, int] = {}  # partition -> records held (tombstones included)

    def change(self, part: int, leaf: int, h: int, rows: int) -> None:
        """XOR record hash ``h`` into leaf ``leaf`` of partition ``part`` and count ``rows``
        (+1: a record came, -1: it went; XOR is its own inverse). A partition left with no
        record is forgotten."""
        leaves = self._leaves.get(part)
        if leaves is None:
            leaves = self._leaves[part] = [0] * LEAVES
        leaves[leaf] ^= h
        n = self._rows.get(part, 0) + rows
        if n:
            self._rows[part] = n
        else:
            self._rows.pop(part, None)
            self._leaves.pop(part, None)

    def leaf_hashes(self, part: int) -> list[int]:
        """A copy of the partition's leaf hashes; all zero for a partition not held."""
        leaves = self._leaves.get(part)
        return list(leaves) if leaves is not None else [0] * LEAVES

    def partitions_held(self) -> set[int]:
        """The partitions with at least one record."""
        return set(self._rows)
