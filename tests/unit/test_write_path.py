"""The coordinator's write path (Coordinator.write, send_write) with a real peer on 127.0.0.1 (an
HttpServer serving the replica-write stream into a real SQLite store) and a real local store
whose disk fills up once. Only the node's Raft metadata is a stand-in: one partition, held by n1
(this node) and n2 (the peer)."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from kvraft.coordinator import ClockStanding, Coordinator
from kvraft.core.clockguard import Verdict
from kvraft.hlc import HLC, Version, wall_clock_ms
from kvraft.peer import PeerClient, PeerError
from kvraft.storage import Record, Storage
from kvraft.watch import ChangeHub
from tests.unit.test_stream import SECRET, Peer


class DiskFullOnce(Storage):
    """A store whose first write fails as SQLite does when the disk is full."""

    full = True

    def apply_many(self, records):
        if self.full:
            self.full = False
            raise sqlite3.OperationalError("database or disk is full")
        return super().apply_many(records)


class OnePartition:
    """The placement view a write needs: partition 0 on n1 and n2, n2 at ``peer_addr``; the
    liveness marks the peer client tells (as the node keeps them)."""

    def __init__(self, peer_addr: str) -> None:
        self.peer_addr = peer_addr
        self.alive: dict[str, bool] = {}

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]:
        return 0, ("n1", "n2")

    def readable(self, part: int) -> tuple[str, ...]:
        return ("n1", "n2")

    def write_set(self, key: str) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
        return 0, ("n1", "n2"), ()

    def removing(self) -> tuple[str, ...]:
        return ()

    def partition_map(self):
        return [("n1", "n2")]

    def address_of(self, node_id: str) -> str:
        if node_id != "n2":
            raise PeerError(f"unknown node {node_id}")
        return self.peer_addr

    def watermarks(self) -> dict[int, int]:
        return {}

    def members(self) -> dict:
        return {"n1": "", "n2": self.peer_addr}

    def mark(self, node_id: str, ok: bool) -> None:
        self.alive[node_id] = ok

    def is_alive(self, node_id: str) -> bool:
        return self.alive.get(node_id, True)


def coordinator(tmp_path, peer_addr: str) -> Coordinator:
    """n1's coordinator built from its constructor: no Raft, no background duties."""
    config = SimpleNamespace(
        secret=SECRET,
        peer_timeout=5.0,
        test_fault=None,
        max_value_bytes=1 << 20,
        replication_factor=2,
        max_clock_offset=0.5,
        hot_key_ttl=1.0,
    )
    view = OnePartition(peer_addr)
    peers = PeerClient(SECRET, 5.0, view.address_of, view.mark, lambda: False, 1 << 20)
    counters: Counter[str] = Counter()

    def count(name: str, n: int = 1) -> None:
        counters[name] += n

    coord = Coordinator(
        "n1",
        config,  # type: ignore[arg-type]
        DiskFullOnce(tmp_path / "n1.db"),
        peers,
        view,
        HLC(),
        ThreadPoolExecutor(max_workers=4),
        count,
        ChangeHub().publish,
        lambda: ClockStanding(Verdict(True, {}, (), 500), True),
    )
    coord.counters = counters  # type: ignore[attr-defined]
    return coord


def test_a_write_that_fails_locally_still_reads_its_replica_answer(tmp_path):
    """The record goes to the peer before the local commit; if the local commit fails, the
    peer's answer must still be read, or the peer's one write lane stays taken and every later
    write to it waits its full limit and fails."""
    peer_store = Storage(tmp_path / "n2.db")
    peer = Peer(peer_store)
    node = coordinator(tmp_path, peer.addr)
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            node.put("first", b"1")
        outcome: list = []
        later = threading.Thread(
            target=lambda: outcome.append(node.put("second", b"2")), daemon=True
        )
        later.start()
        later.join(10)
        assert not later.is_alive(), "the next write waited for a lane nobody frees"
        assert outcome and outcome[0].acks == 2
        assert peer_store.get("second").value == b"2" and node.store.get("second") is not None
        assert peer_store.get("first").value == b"1"  # applied there: not acknowledged, synced
    finally:
        node.peers.close()
        node.pool.shutdown()
        peer.go.set()
        peer.stop()
        node.store.close()
        peer_store.close()


def _newer_on_peer(peer_store: Storage, key: str, ahead_ms: int) -> Version:
    """Store ``key`` on the peer under a version stamped by a clock ``ahead_ms`` ahead."""
    ahead = Version(HLC(wall_clock_ms(ahead_ms)).now(), "n3")
    peer_store.apply_many([Record(key, 0, ahead, False, b"old")])
    return ahead


@pytest.fixture
def pair(tmp_path):
    """A coordinator n1 with a healthy disk and its real peer n2: (node, the peer's store)."""
    peer_store = Storage(tmp_path / "n2.db")
    peer = Peer(peer_store)
    node = coordinator(tmp_path, peer.addr)
    node.store.full = False
    yield node, peer_store
    node.peers.close()
    node.pool.shutdown()
    peer.stop()
    node.store.close()
    peer_store.close()


@pytest.mark.parametrize("fault", ["", "lww_ack"])
def test_a_replica_holding_a_newer_version_makes_the_write_go_above_it(pair, fault):
    """A replica whose copy was stamped by a clock 5 s ahead keeps it under last-writer-wins.
    The coordinator must learn that version and stamp again above it, so the acknowledged
    overwrite is what both replicas serve; the negative control (today's plain rule) loses it."""
    node, peer_store = pair
    node.config.test_fault = fault
    ahead = _newer_on_peer(peer_store, "k", 5000)
    result = node.put("k", b"new")
    on_peer = peer_store.get("k")
    if fault == "lww_ack":
        assert result.version < ahead and on_peer.value == b"old"  # the loss, acknowledged
        return
    assert result.version > ahead and result.acks == 2
    assert on_peer.value == b"new" and on_peer.version == result.version
    assert node.store.get("k").version == result.version
    assert not result.created  # the key held a live value
    assert node.counters["writes_restamped"] == 1


def test_a_newer_version_found_only_on_this_node_is_written_above_too(pair):
    """The local replica holds the newer copy (this node's store from a skewed past)."""
    node, peer_store = pair
    ahead = Version(HLC(wall_clock_ms(3000)).now(), "n1")
    node.store.apply_many([Record("k", 0, ahead, False, b"old")])
    result = node.put("k", b"new")
    assert result.version > ahead and result.acks == 2 and not result.created
    assert node.store.get("k").value == b"new" == peer_store.get("k").value


def test_a_newer_version_a_stand_in_holds_makes_the_write_go_above_it(tmp_path, monkeypatch):
    """The replica holding v1 is down and v1 waits as a hint on the stand-in; the live replica
    lacks it. The stand-in's answer to the new hint names v1, so the coordinator stamps again
    above it instead of acknowledging a write that v1 would beat at delivery. The IO seams
    (send_write, send_hint) are scripted: n2 is down, n3 is the stand-in."""
    node = coordinator(tmp_path, "127.0.0.1:9")
    node.store.full = False
    v1 = Version(HLC(wall_clock_ms(300)).now(), "n3")  # stamped by a clock 300 ms ahead
    sent: list[Version] = []
    monkeypatch.setattr(node.view, "members", lambda: {"n1": "", "n2": "", "n3": ""})
    monkeypatch.setattr(node.view, "is_alive", lambda n: n != "n2")

    def send_write(record, replicas):
        sent.append(record.version)
        return [("n1", res) for res in node.store.apply_many([record])], ["n2"]

    def send_hint(holder, target, record):
        assert (holder, target) == ("n3", "n2")
        return max(v1, record.version)

    monkeypatch.setattr(node, "send_write", send_write)
    monkeypatch.setattr(node, "send_hint", send_hint)
    try:
        result = node.put("k", b"v2", w="quorum")
        assert len(sent) == 2 and sent[0] < v1 < sent[1] == result.version
        assert result.hinted == ("n3",) and result.acks == 2
    finally:
        node.pool.shutdown()
        node.store.close()
