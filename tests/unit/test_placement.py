from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvraft.core.placement import partition_of, place, required_acks, stand_ins


def test_partition_of_is_stable_and_in_range():
    assert partition_of("user/1", 64) == partition_of("user/1", 64)
    parts = Counter(partition_of(f"k{i}", 64) for i in range(6400))
    assert set(parts) == set(range(64))
    assert max(parts.values()) < 2 * min(parts.values())


def test_empty_cluster_spreads_partitions_evenly_on_distinct_nodes():
    pmap = place(64, ["n1", "n2", "n3"], {}, 2)
    assert len(pmap) == 64
    assert all(len(set(r)) == 2 for r in pmap)
    per_node = Counter(n for r in pmap for n in r)
    assert max(per_node.values()) - min(per_node.values()) <= 1


def test_node_with_most_stored_data_receives_fewest_partitions():
    stored = {"n1": 50_000_000, "n2": 0, "n3": 1_000}
    per_node = Counter(n for r in place(64, ["n1", "n2", "n3"], stored, 2) for n in r)
    assert per_node["n1"] < per_node["n3"] <= per_node["n2"]


@given(
    st.dictionaries(
        st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), st.integers(0, 10**9), min_size=3
    ),
    st.integers(1, 3),
    st.integers(1, 128),
)
def test_every_partition_gets_rf_distinct_nodes_deterministically(stored, rf, partitions):
    nodes = sorted(stored)
    a = place(partitions, nodes, stored, rf)
    assert a == place(partitions, list(reversed(nodes)), dict(stored), rf)
    assert all(len(set(r)) == rf and set(r) <= set(nodes) for r in a)


def test_too_few_nodes_is_an_error():
    with pytest.raises(ValueError, match="need at least 3 nodes"):
        place(8, ["n1", "n2"], {}, 3)


def test_stand_ins_exclude_replicas_and_rotate_with_the_partition():
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    assert stand_ins(0, ("n1", "n2"), nodes) == ["n3", "n4", "n5"]
    assert stand_ins(1, ("n1", "n2"), nodes) == ["n4", "n5", "n3"]
    assert stand_ins(0, ("n1", "n2", "n3"), ["n1", "n2", "n3"]) == []


def test_required_acks():
    assert [required_acks(w, 2) for w in ("one", "quorum", "all")] == [1, 2, 2]
    assert [required_acks(w, 3) for w in ("one", "quorum", "all")] == [1, 2, 3]
    with pytest.raises(ValueError):
        required_acks("most", 3)
