"""The store contract (:class:`kvraft.storage.protocol.Store`), run against the SQLite store and
the in-memory one (the ``store`` fixture, or ``KINDS`` where Hypothesis drives the test); the
tests of SQLite's own machinery (its file and schema, the migration, the checkpointer) are
SQLite-only."""

import sqlite3
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.core.antientropy import leaf_of
from kvraft.hlc import Version
from kvraft.storage import MemoryStore, Record, Storage, StorageClosed

KINDS = ["sqlite", "memory"]


def rec(key, ts, node="n1", value=b"v", tomb=False, part=0):
    return Record(key, part, Version(ts, node), tomb, b"" if tomb else value)


def open_store(kind, directory, name="s.db"):
    """A new store of this kind (SQLite: the file ``name`` in ``directory``)."""
    return Storage(directory / name) if kind == "sqlite" else MemoryStore()


def restart(kind, store, directory, name="s.db"):
    """The store as its node finds it after a restart: SQLite reopens its file, the memory
    store is rebuilt from the bytes of its snapshot."""
    if kind == "sqlite":
        store.close()
        return Storage(directory / name)
    saved = store.snapshot()
    store.close()
    return MemoryStore.restore(saved)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def store(kind, tmp_path):
    s = open_store(kind, tmp_path)
    yield s
    s.close()


def test_last_writer_wins_and_reports_the_previous_state(store):
    s = store
    first = s.apply(rec("a", 5, value=b"five"))
    assert first.applied and first.prev is None and not first.prev_live
    older = s.apply(rec("a", 4, value=b"four"))
    assert not older.applied and older.prev == Version(5, "n1") and older.prev_live
    tie = s.apply(rec("a", 5, node="n2", value=b"n2 wins the tie"))
    assert tie.applied
    assert s.get("a").value == b"n2 wins the tie"
    again = s.apply(rec("a", 5, node="n2", value=b"n2 wins the tie"))  # a retry: held already
    assert not again.applied and again.prev == Version(5, "n2")
    s.apply(rec("a", 6, tomb=True))
    assert s.get("a").tomb and s.live_keys == 0 and s.live_bytes == 0


def test_counters_survive_reopen_and_match_sql(tmp_path):
    s = Storage(tmp_path / "s.db")
    s.apply_many([rec(f"k{i}", i + 1, value=b"x" * i) for i in range(50)])
    s.apply(rec("k3", 100, tomb=True))
    keys, nbytes, ts = s.live_keys, s.live_bytes, s.max_ts
    s.close()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute(
        "SELECT COUNT(*), SUM(LENGTH(value)) FROM records WHERE tomb=0"
    ).fetchone() == (keys, nbytes)
    db.close()
    again = Storage(tmp_path / "s.db")
    figures = (again.live_keys, again.live_bytes, again.max_ts)
    assert figures == (keys, nbytes, ts) == (49, 1222, 100)
    again.close()


def test_figures_survive_a_restart(kind, tmp_path):
    s = open_store(kind, tmp_path)
    s.apply_many([rec(f"k{i}", i + 1, value=b"x" * i) for i in range(50)])
    s.apply(rec("k3", 100, tomb=True))
    s.add_hint("n2", rec("h", 300))  # hints do not count in max_ts
    s.purge_tombstones(0, 101)  # deleting the newest record does not lower max_ts...
    figures = (s.live_keys, s.live_bytes, s.max_ts, s.hints_pending)
    assert figures == (49, 1222, 100, 1)
    s = restart(kind, s, tmp_path)
    try:  # ...but a restart finds the largest timestamp still stored
        assert (s.live_keys, s.live_bytes, s.max_ts, s.hints_pending) == (49, 1222, 50, 1)
    finally:
        s.close()


def test_the_clock_mark_survives_a_restart_and_never_goes_down(kind, tmp_path):
    s = open_store(kind, tmp_path)
    assert s.clock_mark == 0
    s.reserve_clock(5_000)
    s.reserve_clock(4_000)  # an older bound (a slower caller) does not lower it
    assert s.clock_mark == 5_000
    s = restart(kind, s, tmp_path)
    try:
        assert s.clock_mark == 5_000 and s.max_ts == 0  # no record: the mark is what is left
        s.reserve_clock(7_000)
        s = restart(kind, s, tmp_path)
        assert s.clock_mark == 7_000
    finally:
        s.close()


def test_scan_prefix_after_limit_includes_tombstones(store):
    s = store
    s.apply_many([rec(k, 1) for k in ["a", "b/1", "b/2", "b/3", "c"]])
    s.apply(rec("b/2", 2, tomb=True))
    assert [r.key for r in s.scan("b/")] == ["b/1", "b/2", "b/3"]
    assert [r.key for r in s.scan("b/", after="b/1", limit=1)] == ["b/2"]
    assert s.scan("b/", after="b/1", limit=1)[0].tomb
    assert [r.key for r in s.scan("", after="b/3")] == ["c"]
    assert {r.value for r in s.scan("")} == {b""}  # values omitted
    assert [r.key for r in s.scan("b/", after="a")] == ["b/1", "b/2", "b/3"]


def test_scan_partition_is_in_key_order_with_values(store):
    s = store
    s.apply_many([rec(k, 1, value=k.encode(), part=p) for k, p in [("b", 1), ("a", 1), ("c", 2)]])
    s.apply(rec("d", 2, tomb=True, part=1))
    assert [(r.key, r.value, r.tomb) for r in s.scan_partition(1)] == [
        ("a", b"a", False),
        ("b", b"b", False),
        ("d", b"", True),
    ]
    assert [r.key for r in s.scan_partition(1, after="a", limit=1)] == ["b"]
    assert s.scan_partition(3) == []


def test_hints_are_kept_until_dropped(store):
    s = store
    s.add_hint("n2", rec("a", 1))
    s.add_hint("n2", rec("b", 2))
    s.add_hint("n3", rec("c", 3))
    assert s.hint_targets() == {"n2": 2, "n3": 1} and s.hints_pending == 3
    hints = s.hints_for("n2")
    assert [h.record.key for h in hints] == ["a", "b"]
    assert s.get("a") is None  # a hint is not the store's own record
    s.drop_hints(h.id for h in hints)
    assert s.hint_targets() == {"n3": 1} and s.hints_pending == 1


def test_hint_ids_grow_and_are_not_reused_after_a_restart(kind, tmp_path):
    s = open_store(kind, tmp_path)
    s.add_hint("n2", rec("a", 1))
    s.add_hint("n2", rec("b", 2))
    first = [h.id for h in s.hints_for("n2")]
    assert first == sorted(first) and len(set(first)) == 2
    s.drop_hints(first)
    s = restart(kind, s, tmp_path)
    try:
        s.add_hint("n2", rec("c", 3))
        (again,) = s.hints_for("n2")
        assert again.id > max(first) and again.record == rec("c", 3)
        assert s.hints_for("n2", limit=0) == []
    finally:
        s.close()


def test_concurrent_writers_group_commit_without_loss(store):
    s = store

    def writer(t):
        for i in range(100):
            s.apply(rec(f"t{t}-{i}", i + 1))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.live_keys == 800


def test_a_key_missing_below_the_watermark_is_refused_a_held_key_is_not(store):
    s = store
    s.apply(rec("held", 5, part=1))
    s.watermarks = {1: 10}
    refused = s.apply(rec("gone", 9, part=1))
    assert not refused.applied and refused.prev is None and not refused.prev_live
    assert s.get("gone") is None
    assert s.apply(rec("gone", 10, part=1)).applied  # at the watermark: kept
    assert s.apply(rec("held", 7, part=1)).applied  # a held key follows last writer wins
    assert s.apply(rec("other", 1, part=2)).applied  # another partition's watermark is 0


def test_watermarks_are_not_durable(kind, tmp_path):
    s = open_store(kind, tmp_path)
    s.watermarks = {0: 10}
    s = restart(kind, s, tmp_path)
    try:
        assert s.watermarks == {}
        assert s.apply(rec("a", 1)).applied
    finally:
        s.close()


def test_forget_purge_and_drop_partition_delete_only_what_they_name(store):
    s = store
    s.apply_many(
        [
            rec("a", 5, part=1),
            rec("b", 6, part=1, tomb=True),
            rec("c", 20, part=1, tomb=True),
            rec("d", 5, part=2, value=b"dd"),
            rec("e", 5, part=2, tomb=True),
        ]
    )
    assert s.partitions_held() == {1, 2}
    assert s.forget(1, ["a", "c", "d", "missing"], 10) == 1  # c is too new, d is in 2
    assert s.get("a") is None and s.get("c") is not None and s.get("d") is not None
    assert s.forget(1, [], 10) == 0
    assert s.purge_tombstones(1, 20) == 1  # b; c is not below 20
    assert [r.key for r in s.scan_partition(1)] == ["c"]
    assert (s.live_keys, s.live_bytes) == (1, 2)
    assert s.drop_partition(2) == 2
    assert s.partitions_held() == {1} and (s.live_keys, s.live_bytes) == (0, 0)
    assert s.leaf_hashes(2) == [0] * len(s.leaf_hashes(1))
    assert s.drop_partition(2) == 0


def test_a_record_in_another_partition_moves_its_key(store):
    s = store
    s.apply(rec("a", 1, part=1))
    s.apply(rec("a", 2, part=2, value=b"moved"))
    assert s.partitions_held() == {2} and s.get("a").part == 2
    assert s.leaf_entries(2, [leaf_of("a")]) == {"a": (Version(2, "n1"), False)}
    assert s.leaf_entries(1, [leaf_of("a")]) == {}
    assert s.scan_partition(1) == [] and s.live_keys == 1


def test_get_many_answers_the_keys_held(store):
    s = store
    s.apply_many([rec("a", 1), rec("b", 2, tomb=True)])
    got = s.get_many(["b", "missing", "a"])
    assert sorted(got, key=lambda r: r.key) == [rec("a", 1), rec("b", 2, tomb=True)]
    assert s.get_many([]) == []


def test_writes_after_close_raise_storage_closed(kind, tmp_path):
    s = open_store(kind, tmp_path)
    s.apply(rec("a", 1))
    s.close()
    s.close()  # idempotent
    for write in (
        lambda: s.apply(rec("a", 2)),
        lambda: s.apply_many([rec("b", 1)]),
        lambda: s.add_hint("n2", rec("c", 1)),
        lambda: s.drop_hints([1]),
        lambda: s.forget(0, ["a"], 10),
        lambda: s.purge_tombstones(0, 10),
        lambda: s.drop_partition(0),
    ):
        with pytest.raises(StorageClosed):
            write()
    assert s.apply_many([]) == [] and s.forget(0, [], 10) == 0  # nothing to write: no error
    s.drop_hints([])


ops = st.lists(
    st.tuples(
        st.sampled_from("abc"), st.integers(1, 20), st.sampled_from(["n1", "n2"]), st.booleans()
    ),
    max_size=12,
)


@settings(max_examples=50, deadline=None)
@given(ops)
@pytest.mark.parametrize("kind", KINDS)
def test_any_order_of_applies_converges_to_the_newest(kind, tmp_path_factory, items):
    # a version names exactly one write (the HLC never repeats on a node): keep the first of each
    items = list({(k, ts, node): (k, ts, node, t) for k, ts, node, t in reversed(items)}.values())
    records = [
        rec(k, ts, node, value=f"{k}{ts}{node}".encode(), tomb=t) for k, ts, node, t in items
    ]
    d = tmp_path_factory.mktemp("s")
    a, b = open_store(kind, d, "a.db"), open_store(kind, d, "b.db")
    try:
        a.apply_many(records)
        for r in reversed(records):
            b.apply(r)
        b.apply_many(records)  # idempotent
        for k in "abc":
            ra, rb = a.get(k), b.get(k)
            newest = max((r for r in records if r.key == k), key=lambda r: r.version, default=None)
            assert ra == rb == newest
    finally:
        a.close()
        b.close()


@settings(max_examples=60, deadline=None)
@given(ops, st.lists(st.sampled_from([0, 1]), min_size=12, max_size=12))
def test_one_transaction_of_many_records_of_a_key_answers_as_one_commit_each(
    tmp_path_factory, items, parts
):
    """A group of one key's writes arrives at a replica in one batch, applied in one
    transaction: the answers, the figures, the hash tree and the rows must be those of
    committing each record on its own, in order, also across a partition change."""
    items = list({(k, ts, node): (k, ts, node, t) for k, ts, node, t in reversed(items)}.values())
    records = [
        rec(k, ts, node, value=f"{k}{ts}{node}".encode() * ts, tomb=t, part=parts[i])
        for i, (k, ts, node, t) in enumerate(items)
    ]
    d = tmp_path_factory.mktemp("s")
    a, b = Storage(d / "a.db"), Storage(d / "b.db")
    try:
        for s in (a, b):  # something stored before, so that the first records may lose
            s.apply_many([rec("a", 10, "n1", value=b"old"), rec("b", 5, "n2", tomb=True)])
        together = a.apply_many(records)
        alone = [b.apply(r) for r in records]
        assert together == alone
        for p in (0, 1):
            assert a.leaf_hashes(p) == b.leaf_hashes(p)
        assert (a.live_keys, a.live_bytes, a.max_ts) == (b.live_keys, b.live_bytes, b.max_ts)
        for s in (a, b):
            s.close()
        a, b = Storage(d / "a.db"), Storage(d / "b.db")  # what the files hold, trees rebuilt
        for p in (0, 1):
            assert a.leaf_hashes(p) == b.leaf_hashes(p)
            assert a.scan_partition(p) == b.scan_partition(p)
        assert (a.live_keys, a.live_bytes, a.max_ts) == (b.live_keys, b.live_bytes, b.max_ts)
    finally:
        a.close()
        b.close()


def test_rewrites_keep_the_rows_and_the_hash_tree_as_a_rebuild_would(tmp_path):
    """Writes update a key's row in place (its partition and leaf stay); a record that comes
    with another partition replaces the row. The tree kept in memory must equal the one
    rebuilt from the table on open."""
    s = Storage(tmp_path / "t.db")
    ts = 0
    for round_ in range(3):
        for k in ("a", "b", "c/ü"):
            ts += 1
            s.apply(rec(k, ts, "n1", value=f"{k}{round_}".encode(), tomb=round_ == 1, part=2))
    ts += 1
    s.apply(rec("a", ts, "n2", value=b"moved", part=5))  # the same key under another partition
    trees = {p: s.leaf_hashes(p) for p in (2, 5)}
    held = s.partitions_held()
    s.close()
    rows = (
        sqlite3.connect(tmp_path / "t.db")
        .execute("SELECT key, part, leaf, ts FROM records ORDER BY key")
        .fetchall()
    )
    assert rows == [
        ("a", 5, leaf_of("a"), ts),
        ("b", 2, leaf_of("b"), ts - 2),
        ("c/ü", 2, leaf_of("c/ü"), ts - 1),
    ]
    s = Storage(tmp_path / "t.db")
    try:
        assert {p: s.leaf_hashes(p) for p in (2, 5)} == trees
        assert s.partitions_held() == held == {2, 5}
        assert s.get("a").value == b"moved" and s.get("b").value == b"b2"
    finally:
        s.close()


def test_a_rolled_back_commit_leaves_the_hash_tree_as_it_was(store, kind):
    """A batch with a record the store cannot keep raises and stores nothing of the batch."""
    s = store
    s.apply(rec("a", 1, part=3))
    before = (s.leaf_hashes(3), s.partitions_held())
    unbindable = Record("b", 3, Version(2, "n1"), False, {"not": "bytes"})  # type: ignore
    error = sqlite3.Error if kind == "sqlite" else TypeError
    with pytest.raises(error):  # "a" is rewritten, then "b" fails: all rolled back
        s.apply_many([rec("a", 5, value=b"new", part=3), unbindable])
    assert (s.leaf_hashes(3), s.partitions_held()) == before
    assert s.get("a").version == Version(1, "n1") and s.get("b") is None
    assert (s.live_keys, s.live_bytes, s.max_ts) == (1, 1, 1)


OLD_RECORDS = """CREATE TABLE records (key TEXT PRIMARY KEY, part INTEGER NOT NULL,
    leaf INTEGER NOT NULL, ts INTEGER NOT NULL, node TEXT NOT NULL, tomb INTEGER NOT NULL,
    value BLOB NOT NULL)"""


def test_a_store_with_the_old_rowid_table_is_migrated_with_every_record(tmp_path):
    new = Storage(tmp_path / "new.db")  # the same records written by the current code
    records = [rec(f"k{i}", i + 1, value=bytes([i]) * i) for i in range(40)]
    records.append(rec("k7", 99, tomb=True))
    new.apply_many(records)
    expected = [new.get(f"k{i}") for i in range(40)]
    leaves, figures = new.leaf_hashes(0), (new.live_keys, new.live_bytes, new.max_ts)
    new.close()
    old = sqlite3.connect(tmp_path / "old.db")
    old.execute(OLD_RECORDS)
    src = sqlite3.connect(tmp_path / "new.db")
    old.executemany(
        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
        src.execute("SELECT key, part, leaf, ts, node, tomb, value FROM records"),
    )
    src.close()
    old.commit()
    old.close()
    s = Storage(tmp_path / "old.db")
    try:
        assert [s.get(f"k{i}") for i in range(40)] == expected
        assert s.leaf_hashes(0) == leaves
        assert (s.live_keys, s.live_bytes, s.max_ts) == figures == (39, 773, 99)
        s.apply(rec("k1", 200, value=b"after"))  # and it takes writes
        assert s.get("k1").value == b"after"
    finally:
        s.close()
    db = sqlite3.connect(tmp_path / "old.db")
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'records'").fetchone()[0]
    indexes = {
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'records' AND sql IS NOT NULL"
        )
    }
    db.close()
    assert "WITHOUT ROWID" in sql and indexes == {"records_leaf", "records_tombs"}


def test_commits_do_not_checkpoint_the_background_thread_does(tmp_path):
    """SQLite's automatic checkpoint (and its fsyncs) would run inside a commit, stalling every
    write of the group: it is off, and the store's own thread copies the WAL back instead."""
    import os
    import time

    s = Storage(tmp_path / "s.db")
    try:
        assert s._wconn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for i in range(300):  # 300 commits of 8 KiB: about 700 pages through the WAL
            s.apply(rec(f"k{i}", i + 1, value=bytes([i % 256]) * 8192))
        deadline = time.monotonic() + 10
        while os.path.getsize(tmp_path / "s.db") < 300 * 8192 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.getsize(tmp_path / "s.db") >= 300 * 8192  # the pages reached the file
        assert s.get("k299").value == bytes([299 % 256]) * 8192
    finally:
        s.close()
    assert not s._checkpointer.is_alive()


def test_storing_a_hint_tells_the_newest_version_held_of_its_key(store):
    """The stand-in's answer lets a coordinator stamp above a newer copy it keeps for a replica
    that is down (forward-only versions through hints)."""
    s = store
    assert s.add_hint("n2", rec("a", 5)) == Version(5, "n1")
    assert s.add_hint("n3", rec("a", 3)) == Version(5, "n1")  # an older one: 5 still newest
    s.apply(rec("a", 9))
    assert s.add_hint("n2", rec("a", 7)) == Version(9, "n1")  # its own record counts too
    assert s.add_hint("n2", rec("b", 1)) == Version(1, "n1")
