"""The SQLite store's group commit under threads, with ``fsync=True``: what an acknowledged write
promises (it is there after the store is closed and opened again, also when other threads
overwrote the same keys), that overlapping writes share transactions, and that the WAL starts
over under steady writes instead of growing with every commit."""

import itertools
import os
import sqlite3
import sys
import threading
import time

from kvraft.hlc import Version
from kvraft.storage import Record, Storage
from kvraft.storage import sqlite as sqlite_store


def rec(key, ts, node="n1", value=b"v"):
    return Record(key, 0, Version(ts, node), False, value)


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def committing(thread):
    """Whether ``thread`` is inside the store's transaction (its commit waiting, here)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_commit":
            return True
        frame = frame.f_back
    return False


def test_every_acknowledged_overwrite_is_stored_after_a_reopen(tmp_path):
    """Eight threads overwrite twenty keys with versions in no order: after close and reopen,
    each key holds the newest version any acknowledged write gave it, with that write's value."""
    s = Storage(tmp_path / "s.db", fsync=True)
    stamps = itertools.count(1)  # unique timestamps, handed out in no order between threads
    acked: dict[str, list[int]] = {f"k{i}": [] for i in range(20)}
    lock = threading.Lock()

    def writer(t):
        for i in range(60):
            key = f"k{(i * 7 + t) % 20}"
            ts = next(stamps)
            if t % 2:
                s.apply_many([rec(key, ts, value=str(ts).encode())])
            else:
                s.apply(rec(key, ts, value=str(ts).encode()))
            with lock:
                acked[key].append(ts)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    commits, grouped = s.commits
    s.close()
    assert grouped == 8 * 60 and commits <= grouped
    s = Storage(tmp_path / "s.db", fsync=True)
    try:
        for key, stamps_acked in acked.items():
            got = s.get(key)
            assert got is not None and got.version == Version(max(stamps_acked), "n1"), key
            assert got.value == str(max(stamps_acked)).encode()
        assert s.live_keys == 20
    finally:
        s.close()


def test_overlapping_applies_share_a_commit(tmp_path):
    """While one commit waits for the disk (here: for another connection's write lock), every
    apply that arrives meanwhile goes into the one next transaction: 8 applies, 2 commits."""
    s = Storage(tmp_path / "s.db", fsync=True)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the first leader's BEGIN waits for this
        before = s.commits
        results = {}

        def writer(t):
            results[t] = s.apply(rec(f"k{t}", t + 1))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        threads[0].start()
        wait_until(lambda: committing(threads[0]))  # it leads: took its own write, waits
        for t in threads[1:]:
            t.start()
        wait_until(lambda: s.waiting == 7)
        other.execute("ROLLBACK")
        for t in threads:
            t.join()
        commits, grouped = s.commits
        assert (commits - before[0], grouped - before[1]) == (2, 8)
        assert all(results[t].applied for t in range(8))
        assert all(s.get(f"k{t}").version == Version(t + 1, "n1") for t in range(8))
    finally:
        other.close()
        s.close()


def test_the_wal_starts_over_under_steady_writes(tmp_path, monkeypatch):
    """A checkpoint beside steady writes never copies back every frame, so SQLite never starts
    the WAL over and its file grows by every commit; the store's locked second pass lets it
    start over: the file stays well below what the commits wrote through it."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_PERIOD", 0.05)
    s = Storage(tmp_path / "s.db")
    wal = tmp_path / "s.db-wal"
    written, largest, i = 0, 0, 0
    try:
        while written < 96 << 20:  # 8 KiB values: at least that much through the WAL
            i += 1
            s.apply(rec(f"k{i % 300}", i, value=bytes([i % 256]) * 8192))
            written += 8192
            if i % 50 == 0:
                largest = max(largest, os.path.getsize(wal))
        assert s.get(f"k{i % 300}").version == Version(i, "n1")
    finally:
        s.close()
    assert largest < written / 2, (largest, written)  # never started over: largest > written
