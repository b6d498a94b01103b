"""The coordinator's read path above ``r=one`` (Coordinator.read -> gather_all over
PeerClient.send_read) with a real peer on 127.0.0.1 (an HttpServer serving the read stream from
a real SQLite store) and a real local store. The placement view is tests/unit/test_write_path's
stand-in: one partition, held by n1 (this node) and n2 (the peer)."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from kvraft import peer as m
from kvraft.coordinator import ClockStanding, Coordinator
from kvraft.core.clockguard import Verdict
from kvraft.errors import NotFound
from kvraft.hlc import HLC, Version, wall_clock_ms
from kvraft.peer import PeerClient
from kvraft.storage import Record, Storage
from kvraft.watch import ChangeHub
from tests.unit.test_stream import SECRET, Peer
from tests.unit.test_write_path import OnePartition


class ReadFailsOnce(Storage):
    """A store whose next ``get`` fails as SQLite does on a damaged page, once armed."""

    armed = False

    def get(self, key):
        if self.armed:
            self.armed = False
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().get(key)


@pytest.fixture
def pair(tmp_path):
    """n1's coordinator (a real local store, a real peer client) and its peer n2's store."""
    peer_store = Storage(tmp_path / "n2.db")
    peer = Peer(peer_store)
    config = SimpleNamespace(
        secret=SECRET,
        peer_timeout=5.0,
        test_fault=None,
        max_value_bytes=1 << 20,
        replication_factor=2,
        max_clock_offset=0.5,
        hot_key_ttl=1.0,
    )
    view = OnePartition(peer.addr)
    counters: Counter[str] = Counter()

    def count(name: str, n: int = 1) -> None:
        counters[name] += n

    node = Coordinator(
        "n1",
        config,  # type: ignore[arg-type]
        ReadFailsOnce(tmp_path / "n1.db"),
        PeerClient(SECRET, 5.0, view.address_of, view.mark, lambda: False, 1 << 20),
        view,
        HLC(),
        ThreadPoolExecutor(max_workers=4),
        count,
        ChangeHub().publish,
        lambda: ClockStanding(Verdict(True, {}, (), 500), True),
    )
    node.counters = counters  # type: ignore[attr-defined]
    yield node, peer, peer_store
    node.pool.shutdown(wait=True)  # the repairs first: a late one would open a new connection
    node.peers.close()
    peer.stop()
    node.store.close()
    peer_store.close()


def _stored(store: Storage, key: str, value: bytes, ahead_ms: int = 0, tomb: bool = False):
    version = Version(HLC(wall_clock_ms(ahead_ms)).now(), "n3")
    store.apply_many([Record(key, 0, version, tomb, value)])
    return version


def test_a_local_read_that_fails_still_reads_the_peer_answer(pair):
    """The peer's read is on the wire before the local store is read; when the local read
    raises, the peer's answer must still be read, or the peer's one read lane stays taken and
    every later read to it waits its full limit and fails."""
    node, peer, peer_store = pair
    _stored(peer_store, "k", b"on the peer")
    node.store.armed = True
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        node.get("k", "quorum")
    outcome: list = []
    later = threading.Thread(target=lambda: outcome.append(node.get("k", "quorum")), daemon=True)
    later.start()
    later.join(10)
    assert not later.is_alive(), "the next read waited for a lane nobody frees"
    assert outcome and outcome[0].value == b"on the peer"
    assert peer.reads == 2


@pytest.mark.parametrize("r", ["quorum", "all"])
def test_the_newer_side_wins_both_ways_and_the_other_is_repaired(pair, r):
    """Keys newer on the peer, newer here, deleted on the peer after a value here, and held by
    one side only: the newest is the answer and the other replica gets it in the background."""
    node, _peer, peer_store = pair
    # repairs go to the peer as one HTTP Apply, a route the test's peer does not serve: this
    # stand-in applies them to its store
    node.peers.apply = lambda _n, recs: m.Applied(tuple(peer_store.apply_many(list(recs))))
    peer_newer = _stored(peer_store, "peer-newer", b"p", 2000)
    _stored(node.store, "peer-newer", b"old")
    local_newer = _stored(node.store, "local-newer", b"l", 2000)
    _stored(peer_store, "local-newer", b"old")
    _stored(node.store, "deleted", b"old")
    tomb = _stored(peer_store, "deleted", b"", 2000, tomb=True)
    only_peer = _stored(peer_store, "only-peer", b"op")
    assert node.get("peer-newer", r).version == peer_newer
    assert node.get("local-newer", r).version == local_newer
    with pytest.raises(NotFound):
        node.get("deleted", r)
    assert node.get("only-peer", r).version == only_peer
    node.pool.shutdown(wait=True)  # the repairs' tasks have run
    assert node.store.get("peer-newer").version == peer_newer
    assert peer_store.get("local-newer").version == local_newer
    assert node.store.get("deleted").tomb and node.store.get("deleted").version == tomb
    assert node.store.get("only-peer").version == only_peer
    assert node.counters["read_repairs"] == 4


def test_concurrent_quorum_reads_share_read_batches_and_each_gets_its_key(pair):
    """Reads from many threads at once: each gets its own key's newest record (the peer's
    newer versions for half the keys); every read asked the peer once, in the batches the
    peer served."""
    node, peer, peer_store = pair
    want = {}
    for i in range(40):
        key = f"k{i}"
        _stored(node.store, key, b"local " + key.encode())
        if i % 2:
            _stored(peer_store, key, b"peer " + key.encode(), 1000)
            want[key] = b"peer " + key.encode()
        else:  # the peer lacks it (until repaired): the local copy is the newest
            want[key] = b"local " + key.encode()
    got: dict[str, bytes] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def reader(keys: list[str]) -> None:
        try:
            for _ in range(5):
                for k in keys:
                    value = node.get(k, "quorum").value
                    with lock:
                        got[k] = value
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    keys = list(want)
    threads = [threading.Thread(target=reader, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert got == want
    stats = node.peers.batch_stats()
    assert stats["read_batched_keys"] == 200
    assert stats["read_batches"] == peer.reads
