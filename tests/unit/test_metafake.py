"""FakeMeta against what Meta's users need: the same replicated rules, applied synchronously."""

from __future__ import annotations

import pytest

from kvraft.core.placement import MapState
from kvraft.meta import MetaUnavailable
from kvraft.metafake import FakeRaft

R1, R2, R3 = "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"


def cluster():
    raft = FakeRaft()
    metas = [raft.meta(r) for r in (R1, R2, R3)]
    raft.set_leader(R1)
    return raft, metas


def test_register_is_seen_by_every_member_at_once():
    _raft, (a, b, c) = cluster()
    a.register("n1", "127.0.0.1:8001")
    b.register("n2", "127.0.0.1:8002")
    assert c.members()["n1"].raft == R1 and c.members()["n2"].http == "127.0.0.1:8002"
    assert c.http_of("n1") == "127.0.0.1:8001" and c.http_of("n9") is None
    assert c.raft_members() == (R1, R2, R3)


def test_the_leader_is_settable_and_named_by_its_registered_id():
    raft, (a, b, _c) = cluster()
    a.register("n1", "h:1")
    b.register("n2", "h:2")
    assert a.is_leader() and not b.is_leader() and b.leader_id() == "n1"
    raft.set_leader(R2)
    assert b.is_leader() and a.leader_id() == "n2"
    raft.set_leader(None)
    assert a.leader_id() is None and a.leader_raft() is None


def test_set_partitions_applies_only_at_the_expected_epoch():
    _raft, (a, b, _c) = cluster()
    first = MapState((("n1", "n2"), ("n2", "n3")))
    assert a.set_partitions(0, first)
    assert b.map_state() == (1, first) and b.partitions() == (1, first.partitions)
    stale = MapState((("n3", "n1"), ("n1", "n2")))
    assert not b.set_partitions(0, stale), "a change from an old epoch must be refused"
    assert a.map_state() == (1, first) and a.rebalances() == 0
    moved = MapState((("n1", "n2", "n3"), ("n2", "n3")), filling={0: ("n3",)})
    assert b.set_partitions(1, moved)
    assert a.map_state() == (2, moved) and a.rebalances() == 1


def test_start_round_takes_only_the_next_id_and_advances_watermarks_of_synced_parts():
    _raft, (a, b, _c) = cluster()
    a.set_partitions(0, MapState((("n1", "n2"), ("n2", "n3"))))
    assert not a.start_round(2, 100, 1.0, True), "round ids go one at a time"
    assert a.start_round(1, 100, 1.0, True)
    assert b.sync_round().id == 1 and b.sync_round().started_ts == 100
    b.complete_sync(1, {0: ("n1", "n2"), 1: ("n2",)})  # partition 1 missed n3
    assert a.synced() == {0: 1}
    assert a.start_round(2, 200, 2.0, True)
    # round 1 began with no hints pending: partition 0, synced in it, may purge below its start
    assert b.watermarks() == {0: 100}


def test_complete_sync_clears_the_filling_replicas_it_covered():
    _raft, (a, b, _c) = cluster()
    a.set_partitions(0, MapState((("n1", "n2", "n3"),), filling={0: ("n3",)}))
    a.start_round(1, 10, 1.0, False)
    b.complete_sync(1, {0: ("n1", "n2")})
    assert a.map_state()[1].filling == {0: ("n3",)}, "n3 was not synced: still filling"
    b.complete_sync(1, {0: ("n1", "n2", "n3")})
    assert a.map_state()[1].filling == {}


def test_set_removing_and_forget_drop_a_member_everywhere():
    _raft, (a, b, c) = cluster()
    for m, node in ((a, "n1"), (b, "n2"), (c, "n3")):
        m.register(node, f"h:{node}")
        m.report_stats(node, 1, 10, 0)
    a.set_removing(("n3",))
    assert b.removing() == ("n3",)
    a.remove_raft_member(R3)
    a.forget("n3")
    assert "n3" not in b.members() and "n3" not in b.stats() and b.removing() == ()
    assert b.raft_members() == (R1, R2)


def test_without_quorum_changes_raise_meta_unavailable_and_stats_are_lost_quietly():
    raft, (a, _b, _c) = cluster()
    raft.quorum = False
    with pytest.raises(MetaUnavailable):
        a.register("n1", "h:1")
    with pytest.raises(MetaUnavailable):
        a.set_partitions(0, MapState((("n1",),)))
    with pytest.raises(MetaUnavailable):
        a.add_raft_member("127.0.0.1:9004")
    a.report_stats("n1", 1, 1, 0)  # fire and forget, like Meta's
    assert a.members() == {} and a.stats() == {} and a.map_state()[0] == 0
    raft.quorum = True
    a.register("n1", "h:1")
    assert "n1" in a.members()
