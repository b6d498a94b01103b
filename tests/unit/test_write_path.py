"""The coordinator's write path (Node._write, _send_write) with a real peer on 127.0.0.1 (an
HttpServer serving the replica-write stream into a real SQLite store) and a real local store
whose disk fills up once. Only the node's Raft metadata is a stand-in: one partition, held by n1
(this node) and n2 (the peer)."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from types import SimpleNamespace

import pytest

from kvraft.duties import ClockWatch, Liveness, SystemClock
from kvraft.hlc import HLC, Version, wall_clock_ms
from kvraft.node import Node
from kvraft.peer import PeerClient
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
    """The metadata a write needs: partition 0 on n1 and n2, n2 at ``peer_addr``."""

    def __init__(self, peer_addr: str) -> None:
        self.peer_addr = peer_addr

    def partitions(self):
        return 1, [("n1", "n2")]

    def caught_up(self) -> bool:
        return True

    def http_of(self, node_id: str) -> str | None:
        return self.peer_addr if node_id == "n2" else None

    def watermarks(self) -> dict[int, int]:
        return {}

    def members(self) -> dict:
        return {}  # no peers to measure clocks against: the clock guard passes

    def raft_members(self) -> tuple:
        return ()


def coordinator(tmp_path, peer_addr: str) -> Node:
    node = object.__new__(Node)  # no Raft, no background duties: only the write path
    node.config = SimpleNamespace(
        secret=SECRET, peer_timeout=5.0, test_fault=None, max_value_bytes=1 << 20
    )
    node.id, node.rf = "n1", 2
    node.meta = OnePartition(peer_addr)
    node.hlc = HLC()
    node.storage = DiskFullOnce(tmp_path / "n1.db")
    node.changes = ChangeHub()
    node.counters, node._counter_lock = Counter(), threading.Lock()
    node.liveness = Liveness("n1", SystemClock())
    stop = threading.Event()
    node.peers = PeerClient(
        SECRET, 5.0, node.address_of, node.liveness.mark, stop.is_set, node.config.max_value_bytes
    )
    node.clock_watch = ClockWatch(500, SystemClock())
    node.clock_watch.checked = True
    return node


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
        assert peer_store.get("second").value == b"2" and node.storage.get("second") is not None
        assert peer_store.get("first").value == b"1"  # applied there: not acknowledged, synced
    finally:
        node.peers.close()
        peer.go.set()
        peer.stop()
        node.storage.close()
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
    node.storage.full = False
    yield node, peer_store
    node.peers.close()
    peer.stop()
    node.storage.close()
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
    assert node.storage.get("k").version == result.version
    assert not result.created  # the key held a live value
    assert node.counters["writes_restamped"] == 1


def test_a_newer_version_found_only_on_this_node_is_written_above_too(pair):
    """The local replica holds the newer copy (this node's store from a skewed past)."""
    node, peer_store = pair
    ahead = Version(HLC(wall_clock_ms(3000)).now(), "n1")
    node.storage.apply_many([Record("k", 0, ahead, False, b"old")])
    result = node.put("k", b"new")
    assert result.version > ahead and result.acks == 2 and not result.created
    assert node.storage.get("k").value == b"new" == peer_store.get("k").value


def test_a_newer_version_a_stand_in_holds_makes_the_write_go_above_it(tmp_path, monkeypatch):
    """The replica holding v1 is down and v1 waits as a hint on the stand-in; the live replica
    lacks it. The stand-in's answer to the new hint names v1, so the coordinator stamps again
    above it instead of acknowledging a write that v1 would beat at delivery. The IO seams
    (_send_write, _send_hint) are scripted: n2 is down, n3 is the stand-in."""
    node = coordinator(tmp_path, "127.0.0.1:9")
    node.storage.full = False
    v1 = Version(HLC(wall_clock_ms(300)).now(), "n3")  # stamped by a clock 300 ms ahead
    sent: list[Version] = []
    monkeypatch.setattr(node, "members", lambda: {"n1": "", "n2": "", "n3": ""})
    monkeypatch.setattr(node, "is_alive", lambda n: n != "n2")

    def send_write(record, replicas):
        sent.append(record.version)
        return node.storage.apply_many([record]), ["n2"]

    def send_hint(holder, target, record):
        assert (holder, target) == ("n3", "n2")
        return max(v1, record.version)

    monkeypatch.setattr(node, "_send_write", send_write)
    monkeypatch.setattr(node, "_send_hint", send_hint)
    try:
        result = node.put("k", b"v2", w="quorum")
        assert len(sent) == 2 and sent[0] < v1 < sent[1] == result.version
        assert result.hinted == ("n3",) and result.acks == 2
    finally:
        node.storage.close()
