"""The node's shared wiring (kvraft.wiring), the liveness rule it reads, and a Node built over
injected parts (MemoryStore + FakeMeta, no SQLite and no pysyncobj)."""

from __future__ import annotations

import pytest

from kvraft import peer as m
from kvraft.clock import FakeClock
from kvraft.config import Config
from kvraft.core.placement import MapState
from kvraft.duties import Liveness, Register
from kvraft.errors import Unavailable
from kvraft.metafake import FakeRaft
from kvraft.node import Node
from kvraft.peer import PeerError
from kvraft.storage import MemoryStore
from kvraft.wiring import MetaPlacement

SECRET = "wiring-test-secret"


def test_liveness_at_one_instant_follows_the_last_mark():
    """A fake clock that is not stepped marks twice at the same instant: the later mark rules,
    either way round (``alive >= down`` alone would keep the failed node alive)."""
    clock = FakeClock()
    live = Liveness("n1", clock)
    live.mark("n2", True)
    live.mark("n2", False)
    assert not live.is_alive("n2")
    live.mark("n2", True)
    assert live.is_alive("n2")
    live.mark("n3", False)  # only ever failed, at monotonic 0.0
    assert not live.is_alive("n3")
    clock.step(1)
    live.mark("n3", True)
    clock.step(1)
    live.mark("n3", False)
    assert not live.is_alive("n3")
    assert live.is_alive("n1"), "this node itself is always alive"


def test_forget_failures_makes_a_node_alive_again_and_keeps_its_silence():
    clock = FakeClock()
    live = Liveness("n1", clock)
    live.mark("n2", True)
    clock.step(5)
    live.mark("n2", False)
    live.mark("n3", False)
    live.forget_failures("n2")
    assert live.is_alive("n2") and not live.is_alive("n3")
    assert live.silent_for("n2") == 5.0
    assert live.last_mark("n2") is None and live.last_mark("n3") is False
    live.mark("n4", True)
    live.forget_failures()
    assert live.is_alive("n3")
    assert live.last_mark("n3") is None and live.last_mark("n4") is None


def _raft_with_map() -> FakeRaft:
    raft = FakeRaft(["r1", "r2"])
    raft.state.register("n1", "h1:1", "r1", _doApply=True)
    raft.state.register("n2", "h2:1", "r2", _doApply=True)
    raft.state.register("n9", "h9:1", "r9", _doApply=True)  # registered, not in Raft
    return raft


def test_meta_placement_reads_the_map_members_and_liveness():
    raft = _raft_with_map()
    meta = raft.meta("r1")
    live = Liveness("n1", FakeClock())
    view = MetaPlacement(meta, live)
    with pytest.raises(Unavailable):
        view.replicas_of("k")
    assert view.partition_map() == ()
    meta.set_partitions(0, MapState((("n1", "n2"), ("n2", "n1")), {1: ("n1",)}))
    part, replicas = view.replicas_of("k")
    assert replicas == (("n1", "n2"), ("n2", "n1"))[part]
    assert view.readable(0) == ("n1", "n2") and view.readable(1) == ("n2",)
    assert view.members() == {"n1": "h1:1", "n2": "h2:1"}, "n9 is not in the Raft configuration"
    assert view.address_of("n9") == "h9:1"
    with pytest.raises(PeerError):
        view.address_of("n7")
    live.mark("n2", False)
    assert not view.is_alive("n2") and view.is_alive("n1")


def test_register_needs_peers_only_with_join():
    raft = "127.0.0.1:9001"
    meta = FakeRaft([raft]).meta(raft)
    Register(Config(id="n1", raft=raft, secret=SECRET, replication_factor=1), meta).tick(0.0)
    assert meta.members()["n1"].raft == raft
    with pytest.raises(ValueError):
        Register(
            Config(id="n1", raft=raft, secret=SECRET, replication_factor=1, join="127.0.0.1:8002"),
            meta,
        )


def test_a_node_over_a_memory_store_and_fake_meta_serves_and_answers_peers(tmp_path):
    """Node wired over injected parts: its duties stepped by hand place the partitions, it
    writes and reads, and its peer server answers ReadKeys and Ping as a node does."""
    raft = FakeRaft()
    meta = raft.meta("127.0.0.1:9001")
    raft.set_leader("127.0.0.1:9001")
    clock = FakeClock()
    store = MemoryStore()
    config = Config(
        id="n1",
        raft="127.0.0.1:9001",
        data_dir=str(tmp_path / "never"),
        partitions=4,
        replication_factor=1,
        secret=SECRET,
    )
    node = Node(config, start=False, clock=clock, store=store, meta=meta)
    try:
        for _ in range(20):
            node.runner.run_due()
            if node.ready()[0]:
                break
            clock.step(1.0)
        assert node.ready() == (True, "ready")
        assert node.storage is store and node.meta is meta
        node.put("k", b"v", w="all")
        assert node.get("k").value == b"v"
        assert store.get("k").value == b"v"
        got = node.peer_server.dispatch(m.ReadKeys(("k", "absent")))
        assert [r.key for r in got.records] == ["k"] and got.done is None
        budget = node.peer_server.dispatch(m.ReadKeys(("k", "absent"), max_bytes=1))
        assert [r.key for r in budget.records] == ["k"] and budget.done == 1
        pong = node.peer_server.dispatch(m.Ping())
        assert pong.id == "n1" and pong.keys == 1 and pong.ready
        assert pong.raft_members == ("127.0.0.1:9001",)
        assert not (tmp_path / "never").exists(), "no SQLite opened"
    finally:
        node.close()
