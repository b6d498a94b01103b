"""How reports and exports read the cluster: through the node's public read API, nothing else.

:func:`live_entries` pages through :meth:`Node.list_keys` and reads each page of keys with
:meth:`Node.get_many` at ``r=one``, so the read rule (replica order, newest wins, asking the
other replicas on a miss) is the one copy of it, :class:`kvraft.core.quorum.ReadWalk`, which
``Coordinator.get_many`` drives for many keys as ``Coordinator.read`` drives it for one: this
module has no replica order, no version comparison and no peer calls of its own. ``get_many``
sends one bulk read per replica per page, not one read per key.

:func:`local_records` is the other side of a bulk read: the answer a node gives to a peer's
``ReadKeys`` with a byte budget.

This module must not import Flask, talk to FTP or keep more than one page of values in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ..model import Record
from .format import Entry

PAGE_KEYS = 1000  # keys per listing page (Node.list_keys allows up to 1000)
PAGE_BYTES = 8 << 20  # aim for about this many value bytes per page
FIRST_PAGE_KEYS = 100  # value sizes are unknown until the first page is read
FETCH_BYTES = 8 << 20  # default byte budget of one local_records answer


class Source(Protocol):
    """The part of the node's public API that reports read through (:class:`Node` has it)."""

    def list_keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]:
        """Sorted live keys under ``prefix`` after ``after``, and where the next page starts."""
        ...

    def get_many(self, keys: Iterable[str], r: str = "one") -> dict[str, Record | None]:
        """Each key's live record by the read rule (None: absent or deleted); Unavailable."""
        ...


def live_entries(source: Source, prefix: str = "") -> Iterator[Entry]:
    """Every live key under ``prefix`` cluster-wide, sorted, with its value and version.

    Blocks on the cluster while it runs; safe to run in several threads at once. One page is in
    memory at a time: :data:`FIRST_PAGE_KEYS` keys, then as many as fit :data:`PAGE_BYTES` at
    the previous page's largest value (at most :data:`PAGE_KEYS`). A key deleted while the
    listing runs is left out. Raises Unavailable (from :meth:`Node.get_many` or
    :meth:`Node.list_keys`) when a listed key or a page cannot be read.
    """
    after: str | None = None
    limit = FIRST_PAGE_KEYS
    while True:
        keys, nxt = source.list_keys(prefix, after, limit)
        largest = 1
        for e in fetch_entries(source, keys):
            largest = max(largest, len(e.value))
            yield e
        if nxt is None:
            return
        after = nxt
        limit = max(1, min(PAGE_KEYS, PAGE_BYTES // largest))


def fetch_entries(source: Source, keys: list[str]) -> list[Entry]:
    """The live entries of ``keys`` in the order given, read with one
    ``source.get_many(keys, "one")``; a key no replica holds a live value of is left out.
    Blocks until every read is done; raises its Unavailable."""
    if not keys:
        return []
    found = source.get_many(keys, "one")
    entries = []
    for key in keys:
        rec = found.get(key)
        if rec is not None and not rec.tomb:  # None: deleted since it was listed
            entries.append(Entry(rec.key, rec.value, rec.version))
    return entries


def local_records(
    get: Callable[[str], Record | None], keys: Iterable[str], max_bytes: int = FETCH_BYTES
) -> tuple[list[Record], int]:
    """Stored records (tombstones included) for ``keys`` in order, stopping once their values
    pass ``max_bytes``; returns ``(records, keys handled)``. Keys not stored are skipped.

    Pure apart from ``get`` (a store read); thread safe if ``get`` is."""
    records: list[Record] = []
    done = total = 0
    for key in keys:
        done += 1
        rec = get(key)
        if rec is not None:
            records.append(rec)
            total += len(rec.value)
            if total >= max_bytes:
                break
    return records, done
