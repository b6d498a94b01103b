"""Reads above ``r=one`` (``Coordinator.read`` -> ``gather_all``: every peer's read sent, this
node's store read on the calling thread, every ticket read) on the in-process cluster
(tests/harness/inproc.py): three nodes, two replicas per partition, and a fourth node joining
for the filling-replica case.

Each scenario leaves the replicas of a key disagreeing (a write or delete that reached one
replica only, its hint not delivered) or one of them unreachable, then reads the key through
every node, the replicas themselves and the node that holds no copy: the newest record must be
the answer, the stale replica repaired, and too few answers Unavailable, by the rule of
``quorum.ReadWalk``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import pytest

from kvraft.errors import NotFound, Unavailable
from tests.harness.inproc import InlineExecutor, InProcCluster, http_of, raft_of

NODES = ("n1", "n2", "n3")
PAIRS = (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))  # the replica sets of InProcCluster()
ABOVE_ONE = ("quorum", "all")


class CountingExecutor(InlineExecutor):
    """The inline pool, counting the tasks it is given."""

    def __init__(self) -> None:
        self.tasks: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.tasks.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


def counting(c: InProcCluster, node: str) -> CountingExecutor:
    pool = CountingExecutor()
    c[node].pool = pool  # type: ignore[misc]
    return pool


def split(c: InProcCluster, pair: tuple[str, str], key: str, newer: Callable[[], object]) -> None:
    """``key`` at "old" on both replicas of ``pair``; then ``newer()`` runs through ``pair[0]``
    while ``pair[1]`` misses it (its copy waits as an undelivered hint). Network healed."""
    a, b = pair
    c[a].put(key, b"old", w="all")
    c.network.drop(a, b)
    newer()
    c.heal()  # hints NOT delivered: b stays stale
    assert c.held(b, key) is not None and c.held(b, key).value == b"old"


@pytest.mark.parametrize("r", ABOVE_ONE)
@pytest.mark.parametrize("node", NODES)
def test_a_stale_replica_is_repaired_and_the_newest_version_returned(node, r):
    c = InProcCluster()
    pair = ("n1", "n2")
    key = c.key_on(pair, "stale-")
    split(c, pair, key, lambda: c["n1"].put(key, b"new", w="one"))
    newest = c.held("n1", key)
    pool = counting(c, node)
    got = c[node].get(key, r)
    assert got.value == b"new" and got.version == newest.version
    assert c.held("n2", key).version == newest.version  # repaired (the inline pool: at once)
    assert pool.tasks == ["repair_many"]  # the read itself used no pool task
    assert c.nodes[node].counters["read_repairs"] == 1
    pool.tasks.clear()
    assert c[node].get(key, r).value == b"new"
    assert pool.tasks == []  # the replicas agree now: nothing to repair, no task at all


@pytest.mark.parametrize("r", ABOVE_ONE)
@pytest.mark.parametrize("node", NODES)
def test_a_tombstone_newer_than_a_value_wins_and_is_repaired(node, r):
    c = InProcCluster()
    pair = ("n2", "n3")
    key = c.key_on(pair, "deleted-")
    split(c, pair, key, lambda: c["n2"].delete(key, w="one"))
    tomb = c.held("n2", key)
    assert tomb.tomb
    with pytest.raises(NotFound):
        c[node].get(key, r)
    held = c.held("n3", key)
    assert held.tomb and held.version == tomb.version  # the value was overwritten by the repair


@pytest.mark.parametrize("node", NODES)
def test_a_replica_that_fails_makes_quorum_unavailable_and_names_the_count(node):
    """RF=2: ``quorum`` and ``all`` need both replicas. For every replica set, a replica other
    than ``node`` cut off, or its answer lost after it acted: Unavailable, with ReadTally's
    message; reachable again, the read answers."""
    c = InProcCluster()
    for pair in PAIRS:
        key = c.key_on(pair, f"failing-{pair[0]}{pair[1]}-")
        c[pair[0]].put(key, b"v", w="all")
        for far in (n for n in pair if n != node):
            for lost_after in (False, True):
                c.network.drop(node, far, after=lost_after)
                for r in ABOVE_ONE:
                    with pytest.raises(
                        Unavailable, match=f"r={r} needs 2 replicas of {key!r}, 1 answered"
                    ):
                        c[node].get(key, r)
                c.heal()
        assert c[node].get(key, "quorum").value == b"v"


def test_r_one_missing_locally_asks_the_others_and_one_that_fails_does_not_matter():
    """``r=one`` on a replica that lacks the key (it was cut off for the only write): its last
    round asks the other replica (through gather_all), which has it; when that one fails
    instead, the local miss is the answer (not found), not Unavailable."""
    c = InProcCluster()
    pair = ("n1", "n2")
    key = c.key_on(pair, "lacking-")
    c.network.drop("n2", "n1")
    c["n2"].put(key, b"only on n2", w="one")
    c.heal()
    assert c.held("n1", key) is None
    assert c["n1"].get(key, "one").value == b"only on n2"
    assert c.held("n1", key) is None  # no read repair at r=one
    c.network.drop("n1", "n2")
    with pytest.raises(NotFound):
        c["n1"].get(key, "one")


def filling_cluster() -> tuple[InProcCluster, int]:
    """Three nodes, then n4 joins and is filling a partition (no sync round yet): the cluster and
    that partition."""
    c = InProcCluster(n=3, rf=2, partitions=8)
    c.add_node("n4")
    c.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
    c.register()
    c.clock.step(c.sync_interval)
    c.leader_tick()  # moves toward n4 (filling); the round is not run yet
    filling = c.meta.map_state()[1].filling
    return c, next(p for p, f in sorted(filling.items()) if "n4" in f)


@pytest.mark.parametrize("r", ABOVE_ONE)
def test_a_filling_replicas_newer_record_wins_and_its_failure_does_not_count(r):
    """A key of the partition at "before" on its filled replicas; n4 (filling), cut off from
    them, overwrites it at w=one. Every node's read finds n4's newer record and repairs the
    filled replicas; with n4 cut off, the filled replicas alone still make the quorum (the
    filling one is extra: asked, not counted)."""
    c, part = filling_cluster()
    try:
        key = next(
            k for k in (f"f{i}" for i in range(10_000)) if c["n1"].view.replicas_of(k)[0] == part
        )
        filled = c["n1"].view.readable(part)
        assert "n4" not in filled
        c[filled[0]].put(key, b"before", w="all")
        c.network.partition({"n4"}, {"n1", "n2", "n3"})
        assert c["n4"].put(key, b"newer on n4", w="one").acks == 1
        c.heal()
        newest = c.held("n4", key)
        assert all(c.held(n, key).value == b"before" for n in filled)
        for node in ("n1", "n2", "n3"):
            assert c[node].get(key, r).value == b"newer on n4", node
        assert all(c.held(n, key).version == newest.version for n in filled)  # repaired
        c[filled[0]].put(key, b"after", w="all")
        c.network.partition({"n4"}, {"n1", "n2", "n3"})
        for node in ("n1", "n2", "n3"):
            assert c[node].get(key, r).value == b"after", node
    finally:
        c.close()


class Refusing(Executor):
    """A pool that takes no task: a read that needs one fails the test."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise AssertionError(f"a pool task during the read: {fn!r}")


@pytest.mark.parametrize("node", NODES)
def test_reads_above_one_whose_replicas_agree_take_no_pool_task(node):
    c = InProcCluster()
    keys = [c.key_on(pair, f"agree-{i}-") for i, pair in enumerate(PAIRS)]
    for k in keys:
        c["n1"].put(k, k.encode(), w="all")
    c[node].pool = Refusing()  # type: ignore[misc]
    for k in keys:
        for r in ABOVE_ONE:
            assert c[node].get(k, r).value == k.encode()
