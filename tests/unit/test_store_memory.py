"""The in-memory store's own machinery: the bytes it crashes and restarts from. (Its behaviour
is the store contract, tested against both stores in test_storage.py and
test_store_equivalence.py.)"""

import inspect
import json
import threading

import pytest

from kvraft.hlc import Version
from kvraft.storage import MemoryStore, Record, Storage, Store


def rec(key, ts, node="n1", value=b"v", tomb=False, part=0):
    return Record(key, part, Version(ts, node), tomb, b"" if tomb else value)


def test_a_restored_store_answers_as_the_saved_one_and_shares_nothing_with_it():
    s = MemoryStore()
    s.apply_many([rec("a", 1, value=b"\x00\xff"), rec("b/ü", 2, part=3), rec("c", 3, tomb=True)])
    s.add_hint("n2", rec("d", 4, value=b"hinted"))
    s.watermarks = {3: 1}
    saved = s.snapshot()
    again = MemoryStore.restore(saved)
    assert [again.get(k) for k in ("a", "b/ü", "c", "d")] == [
        s.get(k) for k in ("a", "b/ü", "c")
    ] + [None]
    assert again.hints_for("n2") == s.hints_for("n2")
    assert {p: again.leaf_hashes(p) for p in (0, 3)} == {p: s.leaf_hashes(p) for p in (0, 3)}
    assert again.watermarks == {}  # not durable, as in SQLite
    s.apply(rec("a", 9, value=b"later"))  # the saved bytes are a copy: later writes not in them
    assert again.get("a").value == b"\x00\xff" and MemoryStore.restore(saved).get("a") == again.get(
        "a"
    )
    assert again.snapshot() == saved  # deterministic


def test_a_snapshot_taken_while_writers_run_holds_whole_batches_only():
    s = MemoryStore()
    stop = threading.Event()

    def writer():
        ts = 0
        while not stop.is_set():
            ts += 1
            s.apply_many([rec("x", ts), rec("y", ts)])  # one batch: both or neither

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(200):
            restored = MemoryStore.restore(s.snapshot())
            x, y = restored.get("x"), restored.get("y")
            assert (x is None and y is None) or x.version == y.version
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        json.dumps({"format": "other", "version": 1}).encode(),
        json.dumps({"format": "kvraft-memory-store", "version": 2}).encode(),
        json.dumps(
            {
                "format": "kvraft-memory-store",
                "version": 1,
                "next_hint": 1,
                "records": [["a", 0, 1, "n1", False, "!!"]],
                "hints": [],
            }
        ).encode(),
        json.dumps(
            {
                "format": "kvraft-memory-store",
                "version": 1,
                "next_hint": 1,
                "records": [["a", 0, 1, "n1", False, ""], ["a", 0, 2, "n1", False, ""]],
                "hints": [],
            }
        ).encode(),
    ],
)
def test_restore_refuses_bytes_it_did_not_write(data):
    with pytest.raises(ValueError):
        MemoryStore.restore(data)


def _methods(cls):
    return {
        n
        for n, v in vars(cls).items()
        if not n.startswith("_") and (callable(v) or isinstance(v, property))
    }


def test_both_stores_have_every_member_of_the_protocol_with_its_signature(tmp_path):
    members = _methods(Store)
    assert {"apply_many", "leaf_hashes", "scan", "close", "live_keys"} <= members
    sql = Storage(tmp_path / "s.db")
    try:
        for impl, instance in ((Storage, sql), (MemoryStore, MemoryStore())):
            assert members <= _methods(impl), impl
            for name in members:
                declared, actual = vars(Store)[name], getattr(impl, name)
                if isinstance(declared, property):
                    assert isinstance(actual, property), (impl, name)
                else:
                    assert inspect.signature(actual) == inspect.signature(declared), (impl, name)
            assert instance.watermarks == {}
    finally:
        sql.close()
