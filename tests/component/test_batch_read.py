"""``Coordinator.get_many`` (the batched read of reports and exports) against per-key ``get``, on
the in-process cluster (tests/harness/inproc.py): three nodes, two replicas per partition (and a
fourth node joining, for the filling-replica case).

Each comparison builds the same scripted cluster twice (the fake clock makes the versions equal)
and reads one with ``get`` key by key, the other with one ``get_many``: the answers must be equal,
and so must every store afterwards (the read repairs of ``quorum``/``all`` included)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kvraft import coordinator as coordinator_module
from kvraft import peer as m
from kvraft.errors import BadRequest, NotFound, Unavailable
from kvraft.reports import local_records
from tests.harness.inproc import InProcCluster, http_of, raft_of

LEVELS = ("one", "quorum", "all")
UNAVAILABLE = "unavailable"


def scripted(fault: Callable[[InProcCluster], None] | None = None) -> tuple[InProcCluster, list]:
    """A cluster holding, on every replica set: present keys, deleted keys, keys never written,
    keys one replica holds an older version of (its overwrite was dropped and left as a hint),
    and keys one replica lacks (it was unreachable for the only write). Returns it and the keys
    in a shuffled-looking order. ``fault`` runs after the writes."""
    c = InProcCluster()
    keys: list[str] = []
    for pair in (("n1", "n2"), ("n2", "n3"), ("n3", "n1")):
        a, b = pair
        present = [c.key_on(pair, f"present-{a}{b}-{i}-") for i in range(3)]
        for k in present:
            c[a].put(k, b"v:" + k.encode(), w="all")
        deleted = c.key_on(pair, f"deleted-{a}{b}-")
        c[b].put(deleted, b"gone", w="all")
        c[a].delete(deleted, w="all")
        missing = c.key_on(pair, f"missing-{a}{b}-")
        stale = c.key_on(pair, f"stale-{a}{b}-")
        c[a].put(stale, b"old", w="all")
        c.network.drop(a, b)
        c[a].put(stale, b"new", w="one")  # b keeps "old"; the hint waits on the stand-in
        lacking = c.key_on(pair, f"lacking-{a}{b}-")
        c[a].put(lacking, b"only-on-" + a.encode(), w="one")  # b holds nothing of it
        c.heal()  # network healed, hints NOT delivered: b stays stale
        assert c.held(b, stale).value == b"old" and c.held(b, lacking) is None
        keys += [stale, *present, missing, lacking, deleted]
    if fault is not None:
        fault(c)
    return c, keys[::-1]


def per_key(c: InProcCluster, node: str, keys: list[str], r: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for k in keys:
        try:
            out[k] = c[node].get(k, r)
        except NotFound:
            out[k] = None
        except Unavailable:
            out[k] = UNAVAILABLE
    return out


def snapshot(c: InProcCluster) -> dict[str, bytes]:
    return {n: c.nodes[n].store.snapshot() for n in c.ids}


@pytest.mark.parametrize("r", LEVELS)
@pytest.mark.parametrize("node", ["n1", "n2", "n3"])
def test_get_many_answers_as_get_does_for_present_deleted_missing_and_stale_keys(node, r):
    """Healthy network, one replica stale or lacking for some keys: equal answers at every level
    through every node, and equal stores after (the same read repairs above ``one``)."""
    a, keys = scripted()
    b, _ = scripted()
    assert snapshot(a) == snapshot(b)  # the twins start equal
    want = per_key(a, node, keys, r)
    got = b[node].get_many(keys, r)
    assert got == want
    assert UNAVAILABLE not in want.values()
    assert snapshot(a) == snapshot(b)
    present = [k for k in keys if k.startswith("present")]
    assert all(got[k] is not None and got[k].value == b"v:" + k.encode() for k in present)
    assert all(got[k] is None for k in keys if k.startswith(("deleted", "missing")))
    # a replica that lacks a key (the write went only to its partner) is not "not found"
    assert all(got[k] is not None for k in keys if k.startswith("lacking"))
    if r != "one":  # newest wins, and the stale replica was repaired
        assert all(got[k].value == b"new" for k in keys if k.startswith("stale"))
        assert b.nodes[node].counters["read_repairs"] == a.nodes[node].counters["read_repairs"] > 0


def test_get_many_sends_one_read_per_replica_not_one_per_key():
    """All the keys of every replica set through n1: one ReadKeys to each of the other two
    nodes (n1's own copies come from its store), where per-key reads send one per key."""
    c, keys = scripted()
    before = len(c.network.delivered)
    c["n1"].get_many(keys, "quorum")
    sent = [(s, d) for s, d, kind in c.network.delivered[before:] if kind == "ReadKeys"]
    assert sorted(sent) == [("n1", "n2"), ("n1", "n3")]


def partition_n3(c: InProcCluster) -> None:
    c.network.partition({"n1", "n2"}, {"n3"})


@pytest.mark.parametrize("r", LEVELS)
@pytest.mark.parametrize("node", ["n1", "n2"])
def test_with_one_replica_partitioned_get_many_answers_or_fails_as_get_does(node, r):
    """n3 cut off from n1 and n2. At ``r=one`` every key has a reachable replica, so every key
    answers, as with ``get``; at ``quorum``/``all`` (two of two replicas) the keys n3 holds are
    Unavailable for ``get`` and make ``get_many`` of them raise Unavailable naming the first one,
    while ``get_many`` of the others answers as ``get`` does."""
    a, keys = scripted(partition_n3)
    b, _ = scripted(partition_n3)
    per_key(a, node, keys, r)  # the liveness marks of the first failures, on both twins
    per_key(b, node, keys, r)
    want = per_key(a, node, keys, r)
    if r == "one":
        assert UNAVAILABLE not in want.values()
        assert b[node].get_many(keys, r) == want
        assert snapshot(a) == snapshot(b)
        return
    down = [k for k in keys if want[k] == UNAVAILABLE]
    assert down == [k for k in keys if "n3" in a.replicas(k)] and down
    with pytest.raises(Unavailable, match=f"r={r} needs 2 replicas of {down[0]!r}, 1 answered"):
        b[node].get_many(keys, r)
    up = [k for k in keys if k not in down]
    assert b[node].get_many(up, r) == {k: want[k] for k in up}


def test_r_one_when_every_replica_of_a_key_is_unreachable_raises_like_get():
    """n1 alone: the keys of (n2, n3) have no replica it can reach."""
    c, keys = scripted()
    c.network.partition({"n1"}, {"n2", "n3"})
    far = next(k for k in keys if c.replicas(k) == ("n2", "n3"))
    with pytest.raises(Unavailable, match=f"no replica of {far!r} answered") as one:
        c["n1"].get(far, "one")
    with pytest.raises(Unavailable, match=f"no replica of {far!r} answered") as many:
        c["n1"].get_many([far], "one")
    assert str(many.value) == str(one.value)
    near = [k for k in keys if c.replicas(k) != ("n2", "n3")]
    assert c["n1"].get_many(near, "one") == {k: per_key(c, "n1", [k], "one")[k] for k in near}


def test_a_replica_that_stops_at_its_byte_budget_is_asked_for_the_rest(monkeypatch):
    """A peer answers ReadKeys with a byte budget (``local_records``: it stops past the budget
    and says how many keys it handled); get_many asks again for the rest, and splits big key
    lists into requests of READ_MANY_KEYS."""
    c = InProcCluster()
    keys = [c.key_on(("n2", "n3"), f"big-{i}-") for i in range(12)]
    for k in keys:
        c["n2"].put(k, b"x" * 100, w="all")
    calls: list[tuple[int, int | None]] = []
    inner = c["n1"].peers

    class Budgeted:
        def __getattr__(self, name: str):
            return getattr(inner, name)

        def read_keys(self, node_id, wanted, max_bytes=None):
            calls.append((len(wanted), max_bytes))
            store = c.nodes[node_id].store
            recs, done = local_records(store.get, wanted, max_bytes or 1 << 30)
            return m.Records(tuple(recs), done)

    c["n1"].peers = Budgeted()  # type: ignore[assignment]
    monkeypatch.setattr(coordinator_module, "READ_MANY_KEYS", 5)
    monkeypatch.setattr(coordinator_module, "READ_MANY_BYTES", 250)  # three values a request
    got = c["n1"].get_many(keys, "one")
    assert {k: r.value for k, r in got.items()} == dict.fromkeys(keys, b"x" * 100)
    assert calls[:3] == [(5, 250), (5, 250), (5, 250)]  # 3 of 5 handled each time
    assert sum(n for n, _ in calls) > len(keys) and all(n <= 5 for n, _ in calls)


def test_bad_keys_or_level_are_refused_before_anything_is_sent():
    c, keys = scripted()
    before = len(c.network.delivered)
    with pytest.raises(ValueError, match="unknown consistency level 'most'"):  # as get's
        c["n1"].get_many(keys, "most")
    with pytest.raises(BadRequest, match="key must be 1 to"):
        c["n1"].get_many([*keys, ""], "one")
    assert len(c.network.delivered) == before


def filling_scenario() -> tuple[InProcCluster, list[str]]:
    """n4 joins and is filling a partition (no sync round yet); cut off from the others, it
    coordinates a w=one write of a key of that partition, held by n4 alone. Other keys of the
    partition were written before, to the filled replicas only. Returns the cluster (healed, no
    hint delivered) and the keys."""
    c = InProcCluster(n=3, rf=2, partitions=8)
    c.add_node("n4")
    c.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
    c.register()
    c.clock.step(c.sync_interval)
    c.leader_tick()  # moves toward n4 (filling); the round is not run yet
    filling = c.meta.map_state()[1].filling
    part = next(p for p, f in sorted(filling.items()) if "n4" in f)
    ours = [k for k in (f"f{i}" for i in range(10_000)) if c["n1"].view.replicas_of(k)[0] == part]
    only_n4, before, absent = ours[0], ours[1:4], ours[4]
    for k in before:
        c["n1"].put(k, b"before " + k.encode(), w="quorum")
    c.network.partition({"n4"}, {"n1", "n2", "n3"})
    assert c["n4"].put(only_n4, b"only on n4", w="one").acks == 1
    c.heal()
    return c, [only_n4, *before, absent]


@pytest.mark.parametrize("r", LEVELS)
def test_a_key_only_a_filling_replica_holds_is_read_by_get_many_as_by_get(r):
    """A filling replica's copy takes part in the read (newest wins, repairs) without counting
    toward ``r``: get_many finds the key that only n4 holds, as get does, through every node,
    and repairs the filled replicas as get does (twin clusters)."""
    for node in ("n1", "n2", "n3"):
        a, keys = filling_scenario()
        b, _ = filling_scenario()
        try:
            assert snapshot(a) == snapshot(b)
            want = per_key(a, node, keys, r)
            got = b[node].get_many(keys, r)
            assert got == want, node
            assert got[keys[0]] is not None and got[keys[0]].value == b"only on n4"
            assert got[keys[-1]] is None
            assert snapshot(a) == snapshot(b), node
        finally:
            a.close()
            b.close()
