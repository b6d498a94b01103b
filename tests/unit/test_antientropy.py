"""Property tests of the anti-entropy logic: the merge is a join (commutative, associative,
idempotent) and the hash-tree descent finds exactly the keys whose entries differ.

The descent tested is :func:`kvraft.core.antientropy.descend`, the one :mod:`kvraft.sync` runs
(there over the network, here over a :class:`~kvraft.core.antientropy.MemoryTree`). ``merge`` is
the model of a finished sync that the exchange plan is checked against."""

from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.core import antientropy as ae
from kvraft.core.antientropy import Entry
from kvraft.hlc import Version

keys = st.text(alphabet="abcdefgh/0123", min_size=1, max_size=6)
entries = st.tuples(
    st.builds(Version, st.integers(1, 50), st.sampled_from(["n1", "n2", "n3"])), st.booleans()
)
# a version names one write, so one version never carries two different tombstone flags
stores = st.dictionaries(keys, entries, max_size=30).map(
    lambda d: {k: (v, (v.ts + len(v.node)) % 3 == 0) for k, (v, _t) in d.items()}
)


def merge(a: dict[str, Entry], b: dict[str, Entry]) -> dict[str, Entry]:
    """The state both replicas reach after a sync: per key, the newer entry."""
    out = dict(a)
    for k, e in b.items():
        if k not in out or out[k][0] < e[0]:
            out[k] = e
    return out


def tree_diff(local: dict[str, Entry], remote: dict[str, Entry]) -> set[str]:
    """Keys the descent finds differing: the differing entries of the leaves it yields."""
    found: set[str] = set()
    for d in ae.descend(ae.MemoryTree({0: local}), ae.MemoryTree({0: remote}), [0]):
        assert d.part == 0
        found |= {k for k in (*d.ours, *d.theirs) if d.ours.get(k) != d.theirs.get(k)}
    return found


@given(stores, stores)
def test_merge_is_commutative(a, b):
    assert merge(a, b) == merge(b, a)


@given(stores, stores, stores)
def test_merge_is_associative(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(stores, stores)
def test_merge_is_idempotent_and_keeps_the_newest(a, b):
    m = merge(a, b)
    assert merge(m, m) == m and merge(m, a) == m
    for k in set(a) | set(b):
        assert m[k][0] == max(x[k][0] for x in (a, b) if k in x)


@given(stores, stores)
def test_exchange_plan_makes_both_sides_equal_to_the_merge(a, b):
    push, pull = ae.plan_exchange(a, b)
    after_a = dict(a, **{k: b[k] for k in pull})
    after_b = dict(b, **{k: a[k] for k in push})
    assert after_a == after_b == merge(a, b)


@settings(max_examples=200)
@given(stores, stores)
def test_tree_descent_finds_exactly_the_differing_keys(a, b):
    differing = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert tree_diff(a, b) == differing
    assert (ae.root_hash(ae.leaf_table(a)) == ae.root_hash(ae.leaf_table(b))) == (not differing)


@given(stores)
def test_leaf_hashes_are_order_independent_and_updatable(a):
    items = list(a.items())
    forward = ae.leaf_table(dict(items))
    backward = ae.leaf_table(dict(reversed(items)))
    assert forward == backward
    if items:  # removing a record = XOR-ing its hash out
        (k, (v, t)) = items[0]
        leaves = list(forward)
        leaves[ae.leaf_of(k)] ^= ae.record_hash(k, v, t)
        assert leaves == ae.leaf_table(dict(items[1:]))


@settings(max_examples=100)
@given(st.dictionaries(st.integers(0, 5), st.tuples(stores, stores), max_size=4))
def test_the_descent_over_several_partitions_yields_each_differing_one_with_its_leaves(pairs):
    local = ae.MemoryTree({p: a for p, (a, _b) in pairs.items()})
    remote = ae.MemoryTree({p: b for p, (_a, b) in pairs.items()})
    parts = sorted(pairs)
    diffs = list(ae.descend(local, remote, parts))
    differ = {p for p, (a, b) in pairs.items() if a != b}
    assert [d.part for d in diffs] == sorted(differ)
    for d in diffs:
        a, b = pairs[d.part]
        keys = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
        assert {ae.leaf_of(k) for k in keys} == set(d.leaves)
        assert dict(d.ours) == {k: e for k, e in a.items() if ae.leaf_of(k) in d.leaves}
        assert dict(d.theirs) == {k: e for k, e in b.items() if ae.leaf_of(k) in d.leaves}
    # round trips: roots once; groups and leaves once if anything differs; entries per partition
    expected = ["roots"] + (["groups", "leaves"] + ["entries"] * len(differ) if differ else [])
    assert remote.calls == expected
