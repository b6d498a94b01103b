"""The local store: versioned records in SQLite (WAL), plus the hints this node holds for others.

A record is ``(key, value bytes, version, tombstone)``. :meth:`Storage.apply` keeps a record only
if its version is newer than the stored one (last writer wins), so applying the same record twice,
or two records in either order, ends in the same state.

The store also keeps, in memory, the anti-entropy hash tree of every partition it holds (see
:mod:`kvraft.core.antientropy`), updated under the write lock as records change and rebuilt on
open, and a tombstone watermark per partition: below it, a record for a key this store does not
have is dropped (a tombstone that won over it was purged after every replica had synced past it).

Writes are group-committed: one caller at a time, the *leader*, commits everything queued in one
transaction, wakes the callers whose writes it committed and hands the lead to the first caller
still queued; callers block until their record is committed, so a returned ``apply`` is durable
against a crash of this process (``synchronous=NORMAL`` in WAL mode) or, with ``fsync=True``,
against power loss (``synchronous=FULL``: the commit fsyncs the WAL before any caller of the
group is woken). Reads use one connection per calling thread. A background thread copies the
WAL into the database file and lets the WAL start over once it is long (see
:meth:`Storage._checkpoint_loop`). This module knows nothing of the network, partitions' owners
or HTTP.
"""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.antientropy import leaf_of, record_hash
from ..model import ApplyResult, Record, Version
from .protocol import Hint, StorageClosed
from .rules import LeafTrees, keeps

__all__ = ["ApplyResult", "Hint", "Record", "Storage", "StorageClosed", "Version"]

RECORDS_TABLE = """
CREATE TABLE IF NOT EXISTS records (
    key   TEXT PRIMARY KEY,
    part  INTEGER NOT NULL,
    leaf  INTEGER NOT NULL,
    ts    INTEGER NOT NULL,
    node  TEXT NOT NULL,
    tomb  INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID"""
SCHEMA = (
    RECORDS_TABLE
    + """;
CREATE INDEX IF NOT EXISTS records_leaf ON records(part, leaf);
CREATE INDEX IF NOT EXISTS records_tombs ON records(part, ts) WHERE tomb = 1;
CREATE TABLE IF NOT EXISTS hints (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    key    TEXT NOT NULL,
    part   INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    node   TEXT NOT NULL,
    tomb   INTEGER NOT NULL,
    value  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS hints_target ON hints(target, id);
CREATE INDEX IF NOT EXISTS hints_key ON hints(key, ts);
CREATE TABLE IF NOT EXISTS marks (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""
)


_REPLACE = (
    "INSERT OR REPLACE INTO records(key, part, leaf, ts, node, tomb, value) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT = (
    "INSERT INTO records(key, part, leaf, ts, node, tomb, value) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
    "ts = excluded.ts, node = excluded.node, tomb = excluded.tomb, value = excluded.value"
)

log = logging.getLogger(__name__)
CHECKPOINT_PERIOD = 0.25  # seconds between WAL checkpoints (only after commits)
WAL_RESTART_FRAMES = 1024  # a WAL longer than this is checkpointed whole, so it starts over
JOURNAL_SIZE_LIMIT = 64 << 20  # bytes a WAL file is cut back to when it starts over
GROUP_LIMIT = 512  # queued writes (calls) committed in one transaction at most


def _latch() -> threading.Lock:
    """A one-shot gate, closed when made: ``acquire`` waits until ``release`` opens it."""
    gate = threading.Lock()
    gate.acquire()
    return gate


class _Queued:
    """One caller's write on its way: ``op`` over ``items``; the leader that commits it fills
    ``results`` (or ``error``) and opens ``gate``, or opens it with ``lead`` set to hand over
    the lead."""

    __slots__ = ("op", "items", "results", "error", "gate", "lead")

    def __init__(self, op: str, items: list[Any]) -> None:
        self.op, self.items = op, items
        self.results: list[Any] | None = None  # set once committed (or failed: error)
        self.error: BaseException | None = None
        self.gate = _latch()  # opened once for a caller that waits (never for a leader)
        self.lead = False


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older kvraft to the current schema, in one transaction.

    A ``records`` table created as a rowid table (with a separate index on ``key``) is rebuilt
    as ``WITHOUT ROWID`` (clustered on the key), the rows copied as they are. Safe to call on
    every open: a current store is left untouched. Raises ``sqlite3.Error`` (nothing changed).
    """
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchone()
    if row is None or "WITHOUT ROWID" in row[0].upper():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DROP TABLE IF EXISTS records_v2")
        conn.execute(RECORDS_TABLE.replace("IF NOT EXISTS records", "records_v2"))
        conn.execute(
            "INSERT INTO records_v2(key, part, leaf, ts, node, tomb, value) "
            "SELECT key, part, leaf, ts, node, tomb, value FROM records"
        )
        conn.execute("DROP TABLE records")  # its indexes go with it; SCHEMA makes them again
        conn.execute("ALTER TABLE records_v2 RENAME TO records")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class Storage:
    """SQLite-backed record store (:class:`kvraft.storage.protocol.Store`). Thread-safe: any
    thread may call any method."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._local = threading.local()
        self._queue: collections.deque[_Queued] = collections.deque()  # under _qlock
        self._qlock = threading.Lock()  # guards _queue and _leading
        self._leading = False  # a caller is leading (committing groups)
        self._closed = False
        self._lock = threading.Lock()  # guards the counters below
        wconn = self._connect()
        _migrate(wconn)
        wconn.executescript(SCHEMA)
        row = wconn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM records WHERE tomb = 0"
        ).fetchone()
        self._keys, self._bytes = int(row[0]), int(row[1])
        self._max_ts = int(wconn.execute("SELECT COALESCE(MAX(ts), 0) FROM records").fetchone()[0])
        self._hints = int(wconn.execute("SELECT COUNT(*) FROM hints").fetchone()[0])
        row = wconn.execute("SELECT value FROM marks WHERE name = 'clock'").fetchone()
        self._clock_mark = int(row[0]) if row else 0
        self._trees = LeafTrees()  # partition -> leaf hashes, and rows held
        self._undo: list[tuple[int, int, int, int]] = []  # tree changes of the open transaction
        self.watermarks: dict[int, int] = {}  # partition -> purge watermark (HLC ts)
        for key, part, leaf, ts, node, tomb in wconn.execute(
            "SELECT key, part, leaf, ts, node, tomb FROM records"
        ):
            self._tree(part, leaf, record_hash(key, Version(ts, node), bool(tomb)), 1)
        self._wconn = wconn
        self._wlock = threading.Lock()  # held while a group commits (and by close, checkpoints)
        self._commits = 0  # transactions committed
        self._grouped = 0  # writes (calls) those transactions committed
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, daemon=True, name="sqlite-checkpoint"
        )
        self._checkpointer.start()

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=10000")
        # No checkpoint on commit: SQLite's automatic one runs in the committing thread, under
        # our write lock, and fsyncs the WAL and the database file there (a 10-20 ms stall of
        # every write of the group, about once per 1000 pages written). The checkpointer
        # thread does it instead (see _checkpoint_loop).
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        return conn

    def _checkpoint_loop(self) -> None:
        """Every :data:`CHECKPOINT_PERIOD` s, if anything was committed since the last time,
        copy the WAL into the database (``PASSIVE``: it never blocks writers or readers, and
        does what it can). The same work and the same fsyncs as SQLite's automatic checkpoint,
        off the write path.

        The WAL starts over from its beginning (its file overwritten in place, not grown) only
        at a write that finds every frame copied back, which a checkpoint running beside
        steady writes never achieves: the frames committed while it copies are always left.
        So when the WAL was longer than :data:`WAL_RESTART_FRAMES` frames, a second pass runs
        under the write lock, copying only what the first pass left (commits wait for that pass
        alone: its copy and its two fsyncs), and the next commit writes the WAL from its start.
        """
        conn = self._connect()
        seen = -1
        try:
            while not self._stop.wait(CHECKPOINT_PERIOD):
                if self._commits == seen:
                    continue
                seen = self._commits
                try:
                    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                    if frames > WAL_RESTART_FRAMES:  # commits went on meanwhile: the rest
                        with self._wlock:
                            if not self._closed:
                                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:  # e.g. busy: the next period tries again
                    log.debug("checkpoint failed", exc_info=True)
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    # -- figures -----------------------------------------------------------------------------

    @property
    def live_keys(self) -> int:
        return self._keys

    @property
    def live_bytes(self) -> int:
        return self._bytes

    @property
    def max_ts(self) -> int:
        """Largest version timestamp ever stored (seeds the HLC after a restart)."""
        return self._max_ts

    @property
    def hints_pending(self) -> int:
        return self._hints

    @property
    def clock_mark(self) -> int:
        return self._clock_mark

    def reserve_clock(self, ts: int) -> None:
        """Store ``ts`` as the clock mark (a write like any other: committed with the group
        it joins, fsynced as the store's writes are)."""
        self._submit("clock", [ts])
        with self._lock:
            self._clock_mark = max(self._clock_mark, ts)

    @property
    def commits(self) -> tuple[int, int]:
        """(transactions committed, writes they carried) since open: writes / transactions is
        the size of a commit group (a write is one call: ``apply_many`` of a whole batch is
        one)."""
        with self._lock:
            return self._commits, self._grouped

    @property
    def waiting(self) -> int:
        """Writes queued for the next commit group (not yet taken by a leader)."""
        return len(self._queue)

    # -- writes (group commit) -----------------------------------------------------------------

    def apply(self, record: Record) -> ApplyResult:
        """Store ``record`` if newer than what is stored. Blocks until durable."""
        result: ApplyResult = self._submit("apply", [record])[0]
        return result

    def apply_many(self, records: Sequence[Record]) -> list[ApplyResult]:
        return self._submit("apply", list(records)) if records else []

    def add_hint(self, target: str, record: Record) -> Version:
        """Keep ``record`` for ``target`` until :meth:`drop_hints` says it was delivered; return
        the newest version of its key this node now holds (as a hint or a record)."""
        newest: Version = self._submit("hint", [(target, record)])[0]
        return newest

    def drop_hints(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            self._submit("drop_hints", ids)

    def _submit(self, op: str, items: list[Any]) -> list[Any]:
        """Queue a write and return once it is committed (raise what its commit raised).

        Group commit without a writer thread: a caller that finds nobody leading leads. The
        leader commits everything queued (up to :data:`GROUP_LIMIT` writes) in one transaction,
        opens the gate of every caller it committed for, and, once its own write is done, hands
        the lead to the first caller still queued (or gives it up when none is). A caller whose
        write someone else committed returns as soon as its gate opens: it never waits for
        another group's commit. Alone, a caller commits its own write at once.
        """
        mine = _Queued(op, items)
        with self._qlock:
            if self._closed:
                raise StorageClosed("storage is closed")
            self._queue.append(mine)
            if not self._leading:
                self._leading = mine.lead = True
        if not mine.lead:
            mine.gate.acquire()  # opened when done, or with lead set
        if mine.lead:
            self._lead(mine)
        if mine.error is not None:
            raise mine.error
        assert mine.results is not None
        return mine.results

    def _lead(self, mine: _Queued) -> None:
        """Commit groups until ``mine`` is committed, then pass the lead on."""
        try:
            while mine.results is None and mine.error is None:
                with self._qlock:
                    n = min(GROUP_LIMIT, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(n)]
                try:
                    with self._wlock:
                        if self._closed:
                            raise StorageClosed("storage is closed")
                        self._commit(self._wconn, batch)
                except BaseException as exc:  # noqa: BLE001 - e.g. closed: every write gets it
                    for q in batch:
                        if q.results is None and q.error is None:
                            q.error = exc
                for q in batch:
                    if q is not mine:
                        q.gate.release()
        finally:
            with self._qlock:
                if self._queue:  # the next caller leads (its gate opens with lead set)
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.gate.release()
                else:
                    self._leading = False

    def _commit(self, conn: sqlite3.Connection, batch: list[_Queued]) -> None:
        """Commit ``batch`` in one transaction (under the write lock) and fill each write's
        results; when the transaction fails, every write of it gets the error and nothing of
        it is stored."""
        deltas = [0, 0, 0, self._max_ts]  # keys, bytes, hints, max ts
        outputs = []
        self._undo = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for q in batch:
                outputs.append([self._do(conn, q.op, item, deltas) for item in q.items])
            conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for part, leaf, h, rows in reversed(self._undo):  # the tree follows the rollback
                self._tree(part, leaf, h, -rows)
            for q in batch:
                q.error = exc
            return
        with self._lock:
            self._keys += deltas[0]
            self._bytes += deltas[1]
            self._hints += deltas[2]
            self._max_ts = deltas[3]
            self._commits += 1
            self._grouped += len(batch)
        for q, out in zip(batch, outputs, strict=True):
            q.results = out

    def _do(self, conn: sqlite3.Connection, op: str, item: Any, deltas: list[int]) -> Any:
        if op == "apply":
            rec: Record = item
            row = conn.execute(
                "SELECT ts, node, tomb, LENGTH(value), part FROM records WHERE key = ?", (rec.key,)
            ).fetchone()
            prev = Version(row[0], row[1]) if row else None
            prev_live = bool(row) and not row[2]
            if not keeps(prev, rec.version, self.watermarks.get(rec.part, 0)):
                return ApplyResult(False, prev, prev_live)
            leaf = leaf_of(rec.key)
            values = (
                rec.key,
                rec.part,
                leaf,
                rec.version.ts,
                rec.version.node,
                int(rec.tomb),
                rec.value,
            )
            # an upsert leaves (part, leaf) and so their index untouched: one page written
            # per record instead of two (a key's partition never changes; if it did, REPLACE)
            conn.execute(_UPSERT if row is None or row[4] == rec.part else _REPLACE, values)
            if prev is not None:
                self._change(row[4], leaf, record_hash(rec.key, prev, bool(row[2])), -1)
            self._change(rec.part, leaf, record_hash(rec.key, rec.version, rec.tomb), 1)
            deltas[0] += (0 if rec.tomb else 1) - (1 if prev_live else 0)
            deltas[1] += (0 if rec.tomb else len(rec.value)) - (row[3] if prev_live else 0)
            deltas[3] = max(deltas[3], rec.version.ts)
            return ApplyResult(True, prev, prev_live)
        if op == "clock":
            conn.execute(
                "INSERT INTO marks(name, value) VALUES ('clock', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (item,),
            )
            return None
        if op == "hint":
            target, rec = item
            conn.execute(
                "INSERT INTO hints(target, key, part, ts, node, tomb, value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    target,
                    rec.key,
                    rec.part,
                    rec.version.ts,
                    rec.version.node,
                    int(rec.tomb),
                    rec.value,
                ),
            )
            deltas[2] += 1
            # the newest version this node holds of the key, as a hint or a record: the
            # coordinator must not acknowledge a write below it (forward-only versions)
            row = conn.execute(
                "SELECT ts, node FROM hints WHERE key = ? ORDER BY ts DESC, node DESC LIMIT 1",
                (rec.key,),
            ).fetchone()
            own = conn.execute("SELECT ts, node FROM records WHERE key = ?", (rec.key,)).fetchone()
            return max(Version(*r) for r in (row, own) if r is not None)
        if op == "drop_hints":
            cur = conn.execute("DELETE FROM hints WHERE id = ?", (item,))
            deltas[2] -= cur.rowcount
            return None
        if op == "forget":  # (partition, key, below): drop the key's record if older than below
            part, key, below = item
            row = conn.execute(
                "SELECT ts, node, tomb, LENGTH(value), leaf FROM records "
                "WHERE key = ? AND part = ? AND ts < ?",
                (key, part, below),
            ).fetchone()
            if row is None:
                return 0
            conn.execute("DELETE FROM records WHERE key = ?", (key,))
            self._change(part, row[4], record_hash(key, Version(row[0], row[1]), bool(row[2])), -1)
            if not row[2]:
                deltas[0] -= 1
                deltas[1] -= row[3]
            return 1
        if op == "purge":  # (partition, only tombstones below this ts, or None for every row)
            part, below = item
            where = "part = ? AND tomb = 1 AND ts < ?" if below is not None else "part = ?"
            args = (part, below) if below is not None else (part,)
            rows = conn.execute(
                f"SELECT key, ts, node, tomb, LENGTH(value), leaf FROM records WHERE {where}", args
            ).fetchall()
            conn.execute(f"DELETE FROM records WHERE {where}", args)
            for key, ts, node, tomb, size, leaf in rows:
                self._change(part, leaf, record_hash(key, Version(ts, node), bool(tomb)), -1)
                if not tomb:
                    deltas[0] -= 1
                    deltas[1] -= size
            return len(rows)
        raise ValueError(op)

    def _change(self, part: int, leaf: int, h: int, rows: int) -> None:
        """:meth:`_tree`, inside a write transaction: undone if the transaction rolls back."""
        self._undo.append((part, leaf, h, rows))
        self._tree(part, leaf, h, rows)

    def _tree(self, part: int, leaf: int, h: int, rows: int) -> None:
        """XOR a record hash in or out of leaf ``leaf`` (the record key's ``leaf_of``) of a
        partition's tree (under the write lock, or at open)."""
        self._trees.change(part, leaf, h, rows)

    def purge_tombstones(self, part: int, below_ts: int) -> int:
        """Delete the partition's tombstones older than ``below_ts``; returns how many."""
        purged: int = self._submit("purge", [(part, below_ts)])[0]
        return purged

    def forget(self, part: int, keys: Sequence[str], below: int) -> int:
        """Delete these keys' records if older than ``below``: keys whose tombstone won and was
        purged on the other replicas (found by a sync). Returns how many were deleted."""
        return sum(self._submit("forget", [(part, k, below) for k in keys])) if keys else 0

    def drop_partition(self, part: int) -> int:
        """Delete every record of a partition this node no longer holds; returns how many."""
        dropped: int = self._submit("purge", [(part, None)])[0]
        return dropped

    # -- anti-entropy reads --------------------------------------------------------------------

    def partitions_held(self) -> set[int]:
        return self._trees.partitions_held()

    def leaf_hashes(self, part: int) -> list[int]:
        return self._trees.leaf_hashes(part)

    def leaf_entries(self, part: int, leaves: Sequence[int]) -> dict[str, tuple[Version, bool]]:
        out: dict[str, tuple[Version, bool]] = {}
        conn = self._reader()
        leaves = list(leaves)
        for i in range(0, len(leaves), 500):
            chunk = leaves[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, ts, node, tomb in conn.execute(
                f"SELECT key, ts, node, tomb FROM records WHERE part = ? AND leaf IN ({marks})",
                (part, *chunk),
            ):
                out[key] = (Version(ts, node), bool(tomb))
        return out

    def get_many(self, keys: Sequence[str]) -> list[Record]:
        conn = self._reader()
        out = []
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, part, ts, node, tomb, value FROM records WHERE key IN ({marks})",
                chunk,
            ).fetchall()
            out += [_record(r) for r in rows]
        return out

    def scan_partition(self, part: int, after: str = "", limit: int = 500) -> list[Record]:
        rows = (
            self._reader()
            .execute(
                "SELECT key, part, ts, node, tomb, value FROM records WHERE part = ? AND key > ? "
                "ORDER BY key LIMIT ?",
                (part, after, limit),
            )
            .fetchall()
        )
        return [_record(r) for r in rows]

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The stored record for ``key`` (a tombstone included), or None."""
        row = (
            self._reader()
            .execute("SELECT key, part, ts, node, tomb, value FROM records WHERE key = ?", (key,))
            .fetchone()
        )
        return _record(row) if row else None

    def scan(self, prefix: str = "", after: str | None = None, limit: int = 1000) -> list[Record]:
        """Records (tombstones included, values omitted) under ``prefix`` after ``after``."""
        low = max(prefix, after) if after is not None else prefix
        op = ">" if after is not None and after >= prefix else ">="
        rows = (
            self._reader()
            .execute(
                f"SELECT key, part, ts, node, tomb FROM records WHERE key {op} ? AND key < ? "
                "AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
                (low, prefix + "\U0010ffff", len(prefix), prefix, limit),
            )
            .fetchall()
        )
        return [Record(r[0], r[1], Version(r[2], r[3]), bool(r[4])) for r in rows]

    def hints_for(self, target: str, limit: int = 256) -> list[Hint]:
        rows = (
            self._reader()
            .execute(
                "SELECT id, target, key, part, ts, node, tomb, value FROM hints WHERE target = ? "
                "ORDER BY id LIMIT ?",
                (target, limit),
            )
            .fetchall()
        )
        return [Hint(r[0], r[1], _record(r[2:])) for r in rows]

    def hint_targets(self) -> dict[str, int]:
        rows = self._reader().execute("SELECT target, COUNT(*) FROM hints GROUP BY target")
        return {t: n for t, n in rows}

    def close(self) -> None:
        """Close the write connection once no write is in progress. Idempotent."""
        self._stop.set()
        if self._checkpointer is not threading.current_thread():
            self._checkpointer.join(timeout=10)
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            try:
                self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # leave a short WAL
            except sqlite3.Error:
                log.debug("final checkpoint failed", exc_info=True)
            self._wconn.close()


def _record(row: Sequence[Any]) -> Record:
    key, part, ts, node, tomb, value = row
    return Record(key, part, Version(ts, node), bool(tomb), bytes(value))
