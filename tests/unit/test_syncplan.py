"""Sync planning as data: primaries, synced partitions, the watermark rule, the collect steps."""

from __future__ import annotations

from kvraft.core import syncplan
from kvraft.core.placement import MapState
from kvraft.model import Version

V = Version
STATE = MapState((("n1", "n2"), ("n2", "n3"), ("n1", "n3")))
ALL_UP = {"n1": True, "n2": True, "n3": True}


def test_the_first_live_filled_replica_by_id_is_primary():
    assert syncplan.primaries(STATE, "n1", ALL_UP) == syncplan.Primaries(
        [0, 2], {"n2": [0], "n3": [2]}
    )
    assert syncplan.primaries(STATE, "n2", ALL_UP) == syncplan.Primaries([1], {"n3": [1]})
    assert syncplan.primaries(STATE, "n3", ALL_UP) == syncplan.Primaries([], {})


def test_a_down_or_filling_first_replica_hands_the_partition_to_the_next():
    down = dict(ALL_UP, n1=False)
    assert syncplan.primaries(STATE, "n2", down).parts == [0, 1]
    assert syncplan.primaries(STATE, "n3", down) == syncplan.Primaries([2], {"n1": [2]})
    filling = MapState(STATE.partitions, filling={0: ("n1",)})
    assert syncplan.primaries(filling, "n2", ALL_UP) == syncplan.Primaries(
        [0, 1], {"n1": [0], "n3": [1]}
    )
    nobody = MapState(STATE.partitions, filling={0: ("n1", "n2")})
    assert 0 not in syncplan.primaries(nobody, "n1", ALL_UP).parts
    assert 0 not in syncplan.primaries(nobody, "n2", ALL_UP).parts


def test_only_partitions_synced_with_every_replica_are_reported():
    ok_with = {0: {"n1", "n2"}, 2: {"n1"}}
    assert syncplan.synced(STATE, ok_with) == {0: ("n1", "n2")}


def test_a_key_one_side_lacks_below_the_watermark_is_forgotten_not_spread():
    ours = {"a": (V(5, "n1"), False), "b": (V(50, "n1"), False), "c": (V(5, "n1"), False)}
    theirs = {"c": (V(3, "n2"), False), "d": (V(5, "n2"), False), "e": (V(50, "n2"), False)}
    push, pull = ["a", "b", "c"], ["d", "e"]
    got = syncplan.forget(push, pull, ours, theirs, mark=10, other_filling=False)
    # "c" is on both sides (a plain push); "b" and "e" are above the watermark
    assert got == syncplan.Forget(there=["d"], here=["a"])


def test_a_replica_being_filled_lacks_keys_without_them_being_deleted():
    ours = {"a": (V(5, "n1"), False)}
    theirs = {"d": (V(5, "n2"), False)}
    got = syncplan.forget(["a"], ["d"], ours, theirs, mark=10, other_filling=True)
    assert got == syncplan.Forget(there=["d"], here=[])


def test_watermarks_apply_only_where_this_node_is_a_filled_replica():
    state = MapState(STATE.partitions, filling={2: ("n1",)})
    marks = {0: 7, 1: 8, 2: 9, 5: 10}  # 5: beyond the map
    assert syncplan.held_watermarks(marks, state, "n1") == {0: 7}


def test_collect_purges_where_the_watermark_moved_and_hands_off_what_was_left():
    held = {0, 1, 2, 9}
    steps = syncplan.collect(held, STATE, "n1", marks={0: 7, 2: 4}, purged={2: 4})
    assert steps == [syncplan.Purge(0, 7), syncplan.HandOff(1, ("n2", "n3"))]


def test_a_hand_off_goes_to_the_filled_replicas_not_to_one_being_filled():
    # a filling replica applies no purge watermark: a value whose tombstone was purged would
    # come back there, so it gets the partition from its primary's fill instead
    state = MapState((("n2", "n3", "n4"),), filling={0: ("n4",)})
    steps = syncplan.collect({0}, state, "n1", marks={0: 9}, purged={})
    assert steps == [syncplan.HandOff(0, ("n2", "n3"))]


def test_a_hand_off_goes_to_every_replica_when_all_are_still_being_filled():
    state = MapState((("n2", "n3"),), filling={0: ("n2", "n3")})
    steps = syncplan.collect({0}, state, "n1", marks={}, purged={})
    assert steps == [syncplan.HandOff(0, ("n2", "n3"))]
