"""The leader's duties as data: a view and a time in, the instructions out."""

from __future__ import annotations

import dataclasses

from kvraft.core import leaderplan as lp
from kvraft.core.placement import MapState, place, plan

NODES = ("n1", "n2", "n3")
RAFT = {"n1": "127.0.0.1:9001", "n2": "127.0.0.1:9002", "n3": "127.0.0.1:9003"}
MAP = place(4, NODES, {}, 2)


def view(**changes) -> lp.LeaderView:
    base = lp.LeaderView(
        self_id="n1",
        epoch=3,
        state=MapState(MAP),
        members=NODES,
        raft_members=tuple(RAFT.values()),
        registered=RAFT,
        stored=dict.fromkeys(NODES, 0),
        hints=dict.fromkeys(NODES, 0),
        silent=dict.fromkeys(NODES, 0.1),
        removing=(),
        round_id=7,
        round_started_at=1000.0,
        partitions=4,
        replication_factor=2,
        dead_after=30.0,
        sync_interval=5.0,
        peer_timeout=2.0,
    )
    return dataclasses.replace(base, **changes)


def test_a_follower_does_nothing():
    assert lp.step(view(is_leader=False), 2000.0) == []


def test_a_healthy_map_between_rounds_needs_nothing():
    assert lp.step(view(), 1004.9) == []


def test_a_round_opens_every_sync_interval_with_a_margin_for_writes_in_flight():
    assert lp.step(view(), 1005.0) == [lp.StartRound(8, 5000, 1005.0, True)]
    slow_peers = view(peer_timeout=4.0)
    assert lp.step(slow_peers, 1005.0) == [lp.StartRound(8, 8000, 1005.0, True)]


def test_pending_hints_of_a_live_node_keep_the_round_from_being_clear():
    assert lp.step(view(hints={"n1": 0, "n2": 3, "n3": 0}), 1006.0) == [
        lp.StartRound(8, 5000, 1006.0, False)
    ]


def test_a_dead_nodes_hints_do_not_count():
    silent = {"n1": 0.0, "n2": 0.1, "n3": 31.0}
    v = view(hints={"n1": 0, "n2": 0, "n3": 5}, silent=silent)
    out = lp.step(v, 1006.0)
    assert out[-1] == lp.StartRound(8, 5000, 1006.0, True)
    # and the dead node's partitions are replaced (the placement plan, proposed)
    want = plan(MapState(MAP), ["n1", "n2"], ["n3"], (), v.stored, 2)
    assert want is not None and out[0] == lp.Propose(3, want)


def test_the_leader_itself_is_never_dead():
    assert lp.step(view(silent={"n1": 99.0, "n2": 0.0, "n3": 0.0}), 1001.0) == []


def test_first_placement_waits_for_every_member_to_register_and_report():
    empty = MapState(())
    assert lp.step(view(state=empty, members=("n1", "n2")), 2000.0) == []
    assert lp.step(view(state=empty, stored={"n1": 0, "n2": 0}), 2000.0) == []
    stored = {"n1": 500, "n2": 0, "n3": 0}
    out = lp.step(view(state=empty, stored=stored), 2000.0)
    assert out == [lp.Propose(3, MapState(place(4, sorted(NODES), stored, 2)))]


def test_a_drained_node_is_removed_from_raft_then_forgotten():
    drained = tuple(tuple(n for n in reps if n != "n3") or ("n1",) for reps in MAP)
    state = MapState(tuple(r if len(r) == 2 else ("n1", "n2") for r in drained))
    out = lp.step(view(state=state, removing=("n3",)), 1001.0)
    assert lp.Remove("n3", RAFT["n3"]) in out
    gone = lp.step(
        view(state=state, removing=("n3",), raft_members=(RAFT["n1"], RAFT["n2"])), 1001.0
    )
    assert lp.Remove("n3", None) in gone


def test_a_node_still_draining_is_not_removed():
    out = lp.step(view(removing=("n3",)), 1001.0)
    assert not any(isinstance(i, lp.Remove) for i in out)
    assert any(isinstance(i, lp.Propose) for i in out)  # the drain itself moves partitions
