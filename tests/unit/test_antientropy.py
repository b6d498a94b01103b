"""Property tests of the anti-entropy logic: the merge is a join (commutative, associative,
idempotent) and the hash-tree descent finds exactly the keys whose entries differ."""

from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.core import antientropy as ae
from kvraft.hlc import Version

keys = st.text(alphabet="abcdefgh/0123", min_size=1, max_size=6)
entries = st.tuples(
    st.builds(Version, st.integers(1, 50), st.sampled_from(["n1", "n2", "n3"])), st.booleans()
)
# a version names one write, so one version never carries two different tombstone flags
stores = st.dictionaries(keys, entries, max_size=30).map(
    lambda d: {k: (v, (v.ts + len(v.node)) % 3 == 0) for k, (v, _t) in d.items()}
)


@given(stores, stores)
def test_merge_is_commutative(a, b):
    assert ae.merge(a, b) == ae.merge(b, a)


@given(stores, stores, stores)
def test_merge_is_associative(a, b, c):
    assert ae.merge(ae.merge(a, b), c) == ae.merge(a, ae.merge(b, c))


@given(stores, stores)
def test_merge_is_idempotent_and_keeps_the_newest(a, b):
    m = ae.merge(a, b)
    assert ae.merge(m, m) == m and ae.merge(m, a) == m
    for k in set(a) | set(b):
        assert m[k][0] == max(x[k][0] for x in (a, b) if k in x)


@given(stores, stores)
def test_exchange_plan_makes_both_sides_equal_to_the_merge(a, b):
    push, pull = ae.plan_exchange(a, b)
    after_a = dict(a, **{k: b[k] for k in pull})
    after_b = dict(b, **{k: a[k] for k in push})
    assert after_a == after_b == ae.merge(a, b)


@settings(max_examples=200)
@given(stores, stores)
def test_tree_descent_finds_exactly_the_differing_keys(a, b):
    differing = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert ae.tree_diff(a, b) == differing
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
