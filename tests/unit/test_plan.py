"""The pure map planner: dead replicas replaced, removals drained, moves balanced, fills first."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from kvraft.core.placement import MapState, place, plan

NODES = ["n1", "n2", "n3"]


def counts(state: MapState) -> Counter:
    return Counter(n for reps in state.partitions for n in reps)


def test_a_healthy_balanced_map_needs_no_step():
    assert plan(MapState(place(16, NODES, {}, 2)), NODES, [], [], {}, 2) is None


def test_dead_replicas_are_replaced_at_once_by_filling_live_nodes():
    start = MapState(place(16, ["n1", "n2", "n3", "n4"], {}, 2))
    step = plan(start, ["n1", "n2", "n3"], ["n4"], [], {}, 2)
    assert all("n4" not in reps for reps in step.partitions)
    assert all(
        len([n for n in reps if n not in step.leaving.get(p, ())]) == 2
        for p, reps in enumerate(step.partitions)
    )
    lost = {p for p, reps in enumerate(start.partitions) if "n4" in reps}
    assert lost <= set(step.filling)  # (the same step may also start balancing moves)


def test_a_new_node_gets_partitions_through_fill_then_leave():
    start = MapState(place(12, NODES, {}, 2))
    step = plan(start, [*NODES, "n4"], [], [], {}, 2)
    assert step.filling and set(step.filling) == set(step.leaving)
    assert all(f == ("n4",) for f in step.filling.values())
    assert all(len(step.partitions[p]) == 3 for p in step.filling)  # old copy kept while filling
    done = plan(MapState(step.partitions, {}, step.leaving), [*NODES, "n4"], [], [], {}, 2)
    assert all(len(reps) == 2 for reps in done.partitions) and not done.leaving
    c = counts(done)
    assert max(c.values()) - min(c.values()) <= 1


def test_a_node_being_removed_is_drained_before_it_holds_nothing():
    start = MapState(place(8, NODES, {}, 2))
    step = plan(start, NODES, [], ["n3"], {}, 2)
    assert all(step.leaving[p] == ("n3",) for p in step.leaving)
    assert all("n3" in start.partitions[p] for p in step.leaving)
    done = plan(MapState(step.partitions, {}, step.leaving), NODES, [], ["n3"], {}, 2)
    assert counts(done)["n3"] == 0 and all(len(r) == 2 for r in done.partitions)


def test_balance_moves_toward_the_node_with_least_stored_data():
    start = MapState(place(12, NODES, {}, 2))
    step = plan(start, [*NODES, "n4", "n5"], [], [], {"n4": 10**9, "n5": 0}, 2, max_moves=1)
    assert list(step.filling.values()) == [("n5",)]


@given(st.integers(4, 40), st.sampled_from(["n1", "n2", "n3", "n4"]))
def test_steps_converge_to_rf_live_replicas(partitions, dead):
    live = [n for n in ["n1", "n2", "n3", "n4"] if n != dead]
    state = MapState(place(partitions, ["n1", "n2", "n3", "n4"], {}, 2))
    for _ in range(50):  # each step, then the fills complete
        step = plan(state, live, [dead], [], {}, 2)
        if step is None:
            break
        state = MapState(step.partitions, {}, step.leaving)
    assert all(len(reps) == 2 and dead not in reps for reps in state.partitions)
    c = counts(state)
    assert max(c.values()) - min(c.values()) <= 1
