"""The in-memory store: the :class:`~kvraft.storage.protocol.Store` contract without a disk,
for in-process clusters and tests.

It answers as :class:`kvraft.storage.sqlite.Storage` does, call for call: the same
last-writer-wins rule and watermark (:func:`kvraft.storage.rules.keeps`), the same leaf hashes
(:class:`kvraft.storage.rules.LeafTrees`, so a memory node and a SQLite node agree on trees),
hint ids from 1 that are never reused, scans in key order, the same figures. The contract tests
run against both and a Hypothesis test compares their answers.

Crash and restart: :meth:`MemoryStore.snapshot` returns the store's durable state as bytes
(every write that returned before the call: records, hints and the next hint id), and
:meth:`MemoryStore.restore` builds a new store from them as reopening a SQLite file would: the
figures are counted again, ``max_ts`` is the largest stored timestamp, the purge watermarks are
empty (they are not durable). A harness "crashes" a node by dropping its store (or closing it)
and "restarts" it with ``MemoryStore.restore(saved)``. The bytes are JSON, never pickle.

Thread-safe: one lock guards all state; no call does IO or waits for anything but that lock.
It must not touch a file or a database.
"""

from __future__ import annotations

import base64
import bisect
import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.antientropy import leaf_of, record_hash
from ..model import ApplyResult, Record, Version
from .protocol import Hint, StorageClosed
from .rules import LeafTrees, keeps

__all__ = ["MemoryStore"]

SNAPSHOT_FORMAT = "kvraft-memory-store"
SNAPSHOT_VERSION = 1
_INT64 = range(-(1 << 63), 1 << 63)  # what SQLite's INTEGER holds; it refuses the rest
_CHUNK = 500  # get_many and leaf_entries answer per chunk of this many, as the SQLite store


def _checked(record: Record) -> Record:
    """``record`` as the store keeps it (its value as ``bytes``), or the error SQLite raises for
    a record it cannot store (checked before anything of a batch is stored)."""
    if not isinstance(record.key, str) or not isinstance(record.version.node, str):
        raise TypeError(f"key and node id must be str: {record!r}")
    record.key.encode("utf-8")  # UnicodeEncodeError for a lone surrogate, as sqlite3
    record.version.node.encode("utf-8")
    for n in (record.part, record.version.ts):
        if not isinstance(n, int):
            raise TypeError(f"partition and timestamp must be int: {record!r}")
        if n not in _INT64:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
    value: object = record.value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"value must be bytes: {record!r}")
    if isinstance(value, bytes) and isinstance(record.tomb, bool):
        return record
    return Record(record.key, record.part, record.version, bool(record.tomb), bytes(value))


class MemoryStore:
    """An in-memory :class:`~kvraft.storage.protocol.Store` (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._records: dict[str, Record] = {}
        self._keys: list[str] = []  # every key held, sorted
        self._part_keys: dict[int, list[str]] = {}  # partition -> its keys, sorted
        self._trees = LeafTrees()
        self._hints: dict[int, Hint] = {}  # id -> hint, in id order
        self._next_hint = 1
        self._live_keys = 0
        self._live_bytes = 0
        self._max_ts = 0
        self._clock_mark = 0
        self.watermarks: dict[int, int] = {}

    # -- crash and restart -------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The durable state: every write that returned before this call, none half done."""
        with self._lock:
            state = {
                "format": SNAPSHOT_FORMAT,
                "version": SNAPSHOT_VERSION,
                "next_hint": self._next_hint,
                "clock_mark": self._clock_mark,
                "records": [_encode(self._records[k]) for k in self._keys],
                "hints": [[h.id, h.target, *_encode(h.record)] for h in self._hints.values()],
            }
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def restore(cls, data: bytes) -> MemoryStore:
        """A new store holding what :meth:`snapshot` saved, as a reopened SQLite store would
        (figures counted again, no watermarks). Raises ValueError on bytes it did not write."""
        try:
            state = json.loads(data)
            if state["format"] != SNAPSHOT_FORMAT or state["version"] != SNAPSHOT_VERSION:
                raise ValueError("not a kvraft memory store snapshot")
            records = [_decode(r) for r in state["records"]]
            hints = [(int(h[0]), str(h[1]), _decode(h[2:])) for h in state["hints"]]
            next_hint = int(state["next_hint"])
            clock_mark = int(state.get("clock_mark", 0))
            if len({r.key for r in records}) != len(records):
                raise ValueError("a key is stored twice")
        except (KeyError, IndexError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"bad memory store snapshot: {e}") from e
        store = cls()
        with store._lock:
            for rec in records:
                store._put(_checked(rec))
            store._max_ts = max((r.version.ts for r in records), default=0)
            for hint_id, target, rec in hints:
                store._hints[hint_id] = Hint(hint_id, target, _checked(rec))
            store._next_hint = max([next_hint, *(i + 1 for i in store._hints)])
            store._clock_mark = clock_mark
        return store

    # -- figures -----------------------------------------------------------------------------

    @property
    def live_keys(self) -> int:
        return self._live_keys

    @property
    def live_bytes(self) -> int:
        return self._live_bytes

    @property
    def max_ts(self) -> int:
        return self._max_ts

    @property
    def hints_pending(self) -> int:
        return len(self._hints)

    @property
    def clock_mark(self) -> int:
        return self._clock_mark

    def reserve_clock(self, ts: int) -> None:
        with self._lock:
            self._writable()
            self._clock_mark = max(self._clock_mark, ts)

    # -- writes ------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._closed:
            raise StorageClosed("storage is closed")

    def apply(self, record: Record) -> ApplyResult:
        return self.apply_many([record])[0]

    def apply_many(self, records: Sequence[Record]) -> list[ApplyResult]:
        if not records:
            return []
        with self._lock:
            self._writable()
            checked = [_checked(r) for r in records]  # before anything is stored
            out = []
            for rec in checked:
                old = self._records.get(rec.key)
                prev = old.version if old is not None else None
                prev_live = old is not None and not old.tomb
                if not keeps(prev, rec.version, self.watermarks.get(rec.part, 0)):
                    out.append(ApplyResult(False, prev, prev_live))
                    continue
                if old is not None:
                    self._remove(old)
                self._put(rec)
                self._max_ts = max(self._max_ts, rec.version.ts)
                out.append(ApplyResult(True, prev, prev_live))
            return out

    def add_hint(self, target: str, record: Record) -> Version:
        with self._lock:
            self._writable()
            rec = _checked(record)
            self._hints[self._next_hint] = Hint(self._next_hint, str(target), rec)
            self._next_hint += 1
            held = [h.record.version for h in self._hints.values() if h.record.key == rec.key]
            own = self._records.get(rec.key)
            if own is not None:
                held.append(own.version)
            return max(held)

    def drop_hints(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._writable()
            for i in ids:
                self._hints.pop(i, None)

    def forget(self, part: int, keys: Sequence[str], below: int) -> int:
        if not keys:
            return 0
        with self._lock:
            self._writable()
            doomed = [self._records.get(k) for k in dict.fromkeys(keys)]
            return self._delete(
                [r for r in doomed if r and r.part == part and r.version.ts < below]
            )

    def purge_tombstones(self, part: int, below_ts: int) -> int:
        with self._lock:
            self._writable()
            recs = [self._records[k] for k in self._part_keys.get(part, ())]
            return self._delete([r for r in recs if r.tomb and r.version.ts < below_ts])

    def drop_partition(self, part: int) -> int:
        with self._lock:
            self._writable()
            return self._delete([self._records[k] for k in self._part_keys.get(part, ())])

    def _put(self, rec: Record) -> None:
        """Hold ``rec`` (its key holds nothing now); under the lock."""
        self._records[rec.key] = rec
        bisect.insort(self._keys, rec.key)
        bisect.insort(self._part_keys.setdefault(rec.part, []), rec.key)
        self._trees.change(rec.part, leaf_of(rec.key), _hash(rec), 1)
        if not rec.tomb:
            self._live_keys += 1
            self._live_bytes += len(rec.value)

    def _remove(self, rec: Record) -> None:
        """Stop holding ``rec`` (the stored record of its key); under the lock."""
        del self._records[rec.key]
        del self._keys[bisect.bisect_left(self._keys, rec.key)]
        keys = self._part_keys[rec.part]
        del keys[bisect.bisect_left(keys, rec.key)]
        if not keys:
            del self._part_keys[rec.part]
        self._trees.change(rec.part, leaf_of(rec.key), _hash(rec), -1)
        if not rec.tomb:
            self._live_keys -= 1
            self._live_bytes -= len(rec.value)

    def _delete(self, recs: list[Record]) -> int:
        for rec in recs:
            self._remove(rec)
        return len(recs)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def get_many(self, keys: Sequence[str]) -> list[Record]:
        out: list[Record] = []
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = sorted(set(keys[i : i + _CHUNK]))
                out += [self._records[k] for k in chunk if k in self._records]
        return out

    def scan(self, prefix: str = "", after: str | None = None, limit: int = 1000) -> list[Record]:
        # the bounds of the SQLite store's query: key >= prefix (or > after), key < prefix +
        # U+10FFFF, and the key starts with prefix
        end = prefix + "\U0010ffff"
        out: list[Record] = []
        with self._lock:
            if after is not None and after >= prefix:
                i = bisect.bisect_right(self._keys, after)
            else:
                i = bisect.bisect_left(self._keys, prefix)
            for key in self._keys[i:]:
                if len(out) == limit or key >= end or not key.startswith(prefix):
                    break
                r = self._records[key]
                out.append(Record(r.key, r.part, r.version, r.tomb))
        return out

    def scan_partition(self, part: int, after: str = "", limit: int = 500) -> list[Record]:
        with self._lock:
            keys = self._part_keys.get(part, [])
            i = bisect.bisect_right(keys, after)
            chosen = keys[i:] if limit < 0 else keys[i : i + limit]
            return [self._records[k] for k in chosen]

    def hints_for(self, target: str, limit: int = 256) -> list[Hint]:
        with self._lock:
            hints = [h for h in self._hints.values() if h.target == target]
        return hints if limit < 0 else hints[:limit]

    def hint_targets(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for h in self._hints.values():
                counts[h.target] = counts.get(h.target, 0) + 1
        return dict(sorted(counts.items()))

    # -- anti-entropy reads ------------------------------------------------------------------

    def partitions_held(self) -> set[int]:
        with self._lock:
            return self._trees.partitions_held()

    def leaf_hashes(self, part: int) -> list[int]:
        with self._lock:
            return self._trees.leaf_hashes(part)

    def leaf_entries(self, part: int, leaves: Sequence[int]) -> dict[str, tuple[Version, bool]]:
        out: dict[str, tuple[Version, bool]] = {}
        leaves = list(leaves)
        with self._lock:
            keys = self._part_keys.get(part, [])
            for i in range(0, len(leaves), _CHUNK):
                wanted = set(leaves[i : i + _CHUNK])
                for key in keys:
                    if leaf_of(key) in wanted:
                        r = self._records[key]
                        out[key] = (r.version, r.tomb)
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _hash(rec: Record) -> int:
    return record_hash(rec.key, rec.version, rec.tomb)


def _encode(rec: Record) -> list[Any]:
    value = base64.b64encode(rec.value).decode("ascii")
    return [rec.key, rec.part, rec.version.ts, rec.version.node, rec.tomb, value]


def _decode(row: Sequence[Any]) -> Record:
    key, part, ts, node, tomb, value = row
    version = Version(int(ts), str(node))
    return Record(str(key), int(part), version, bool(tomb), base64.b64decode(value, validate=True))
