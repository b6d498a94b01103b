"""The anti-entropy round over the fake network: each node's real :class:`kvraft.sync.Syncer`
(the descent of :mod:`kvraft.core.antientropy` over the Tree and Entries messages, then the push
and the pull) in an :class:`~tests.harness.inproc.InProcCluster`, the round opened by the real
leader duty over FakeMeta. Hints are left undelivered in these scenarios, so what repairs a
replica is the round alone. Each test is named for the fault it covers."""

from __future__ import annotations

import threading

import pytest

from kvraft.errors import NotFound, Unavailable
from kvraft.hlc import Version
from kvraft.peer import messages as m
from tests.harness.inproc import InProcCluster


@pytest.fixture
def cluster():
    c = InProcCluster()
    yield c
    c.close()


def part_of(cluster: InProcCluster, key: str) -> int:
    return cluster.nodes["n1"].view.replicas_of(key)[0]


def agree(cluster: InProcCluster, key: str) -> bool:
    """Every replica of ``key`` holds the same record (version, tombstone and value)."""
    held = [cluster.held(n, key) for n in cluster.replicas(key)]
    return all(h == held[0] for h in held)


def value_at_all(cluster: InProcCluster, node: str, key: str) -> bytes | None:
    try:
        return cluster[node].get(key, "all").value
    except NotFound:
        return None


def test_a_replica_cut_off_for_new_writes_overwrites_and_deletes_converges_in_one_round(cluster):
    """n2 misses a new key, an overwrite and a delete that n1 coordinated with w=one (their
    hints wait on n3, undelivered). One round, with n1 as the partition's primary, pushes
    exactly those three records: n2 ends with n1's records, the tombstone included."""
    same = cluster.key_on(("n1", "n2"), "same")
    over = cluster.key_on(("n1", "n2"), "over")
    gone = cluster.key_on(("n1", "n2"), "gone")
    new = cluster.key_on(("n1", "n2"), "new")
    for k in (same, over, gone):
        cluster["n1"].put(k, b"v1", w="all")
    cluster.network.drop("n1", "n2")
    cluster["n1"].put(over, b"v2", w="one")
    cluster["n1"].delete(gone, w="one")
    cluster["n1"].put(new, b"fresh", w="one")
    cluster.heal()
    assert not any(agree(cluster, k) for k in (over, gone, new))
    hints = cluster.nodes["n3"].store.hints_pending
    assert hints == 3

    stats = cluster.sync_round()

    assert all(agree(cluster, k) for k in (same, over, gone, new))
    assert cluster.held("n2", over).value == b"v2" and cluster.held("n2", gone).tomb
    assert cluster.held("n2", new).value == b"fresh"
    assert stats["n1"].errors == [] and stats["n1"].repaired == 3 and stats["n1"].records == 3
    assert cluster.nodes["n3"].store.hints_pending == hints, "the round did it, not the hints"
    rnd = cluster.meta.sync_round().id
    assert cluster.meta.synced()[part_of(cluster, over)] == rnd
    assert value_at_all(cluster, "n3", gone) is None


def test_the_primary_pulls_what_the_other_replica_has_newer(cluster):
    """The writes n1 missed were coordinated by n2 (n2 -> n1 dropped): the primary n1 pulls
    them in the round, while pushing its own newer key the other way in the same round."""
    theirs = cluster.key_on(("n1", "n2"), "theirs")
    ours = cluster.key_on(("n1", "n2"), "ours")
    cluster["n1"].put(theirs, b"old", w="all")
    cluster.network.partition({"n1", "n3"}, {"n2"})
    cluster["n2"].put(theirs, b"newer on n2", w="one")
    cluster["n1"].put(ours, b"only on n1", w="one")
    cluster.heal()
    stats = cluster.sync_round()
    assert agree(cluster, theirs) and agree(cluster, ours)
    assert cluster.held("n1", theirs).value == b"newer on n2"
    assert cluster.held("n2", ours).value == b"only on n1"
    assert stats["n1"].repaired == 2 and stats["n2"].repaired == 0  # n2: primary of (n2, n3)


def test_a_tombstone_and_a_live_value_meet_and_the_later_version_wins_either_way(cluster):
    """Both sides of a partition write the same keys (w=one): on ``a`` n1 deletes and n2
    overwrites one second later; on ``b`` n2 overwrites and n1 deletes one second later. The
    round keeps the later version on each: a live value on ``a``, the tombstone on ``b``."""
    a = cluster.key_on(("n1", "n2"), "a")
    b = cluster.key_on(("n1", "n2"), "b")
    for k in (a, b):
        cluster["n1"].put(k, b"v1", w="all")
    cluster.network.partition({"n1", "n3"}, {"n2"})
    cluster["n1"].delete(a, w="one")
    cluster["n2"].put(b, b"n2 early", w="one")
    cluster.clock.step(1.0)
    cluster["n2"].put(a, b"n2 late", w="one")
    cluster["n1"].delete(b, w="one")
    cluster.heal()
    cluster.sync_round()
    assert agree(cluster, a) and agree(cluster, b)
    assert cluster.held("n1", a).value == b"n2 late" and not cluster.held("n1", a).tomb
    assert cluster.held("n2", b).tomb
    assert value_at_all(cluster, "n3", a) == b"n2 late"
    assert value_at_all(cluster, "n3", b) is None


@pytest.mark.parametrize(
    "skewed, offset_ms", [("n2", +400), ("n1", -400)], ids=["older-ahead", "newer-behind"]
)
def test_a_skewed_clock_does_not_let_the_older_write_win_the_round(skewed, offset_ms):
    """n2 writes first and n1 one second later, on opposite sides of a partition; one of them
    has its clock 400 ms off (inside the offset guard's bound): the older writer's ahead, or
    the newer writer's behind. The round keeps n1's later write on both replicas."""
    cluster = InProcCluster()
    try:
        key = cluster.key_on(("n1", "n2"))
        cluster.skew(skewed, offset_ms)
        cluster.network.partition({"n1", "n3"}, {"n2"})
        older = cluster["n2"].put(key, b"older", w="one")
        cluster.clock.step(1.0)
        newer = cluster["n1"].put(key, b"newer", w="one")
        assert newer.version > older.version
        cluster.heal()
        cluster.sync_round()
        assert agree(cluster, key) and cluster.held("n2", key).value == b"newer"
    finally:
        cluster.close()


def test_a_round_cut_after_its_push_leaves_no_wrong_value_and_the_next_round_finishes(cluster):
    """Both replicas missed a write of the other's. The answer to the primary's push is lost
    (n1 -> n2 dropped after delivery, at the Apply): the push landed, the pull never ran and
    the partition is not reported synced. No replica holds a value nobody wrote. After the
    heal the next round pulls the rest and reports the partition synced."""
    pushed = cluster.key_on(("n1", "n2"), "push")
    pulled = cluster.key_on(("n1", "n2"), "pull")
    part = part_of(cluster, pushed)
    for k in (pushed, pulled):
        cluster["n1"].put(k, b"v1", w="all")
    cluster.network.partition({"n1", "n3"}, {"n2"})
    cluster["n1"].put(pushed, b"n1 v2", w="one")
    cluster["n2"].put(pulled, b"n2 v2", w="one")
    cluster.heal()

    def cut_at_the_push(src: str, dst: str, message: object) -> None:
        if (src, dst) == ("n1", "n2") and isinstance(message, m.Apply):
            cluster.network.drop("n1", "n2", after=True)

    cluster.network.on_send(cut_at_the_push)
    first = cluster.sync_round()
    cluster.network.on_send(None)
    assert first["n1"].errors and first["n1"].synced < first["n1"].partitions
    assert cluster.meta.synced().get(part, 0) < cluster.meta.sync_round().id
    assert cluster.held("n2", pushed).value == b"n1 v2", "the push was applied"
    assert cluster.held("n1", pulled).value == b"v1", "the pull never ran"
    for k, written in ((pushed, {b"v1", b"n1 v2"}), (pulled, {b"v1", b"n2 v2"})):
        assert {cluster.held(n, k).value for n in ("n1", "n2")} <= written

    cluster.heal()
    second = cluster.sync_round()
    assert second["n1"].errors == []
    assert agree(cluster, pushed) and agree(cluster, pulled)
    assert cluster.held("n1", pulled).value == b"n2 v2"
    assert cluster.meta.synced()[part] == cluster.meta.sync_round().id


def test_a_round_with_a_replica_partitioned_away_fails_for_it_only_and_is_retried(cluster):
    """n2 is cut off while a round runs: the primary's descent with n2 fails, its other
    partitions (with n3) sync, nothing is reported synced for n2's partitions; the round after
    the heal repairs n2."""
    key = cluster.key_on(("n1", "n2"))
    other = cluster.key_on(("n3", "n1"))
    cluster.network.drop("n1", "n2")
    cluster["n1"].put(key, b"v", w="one")
    cluster.network.drop("n1", "n3")
    cluster["n1"].put(other, b"w", w="one")
    cluster.heal()  # n1 forgets that n2 failed: it tries n2 in the round
    cluster.network.partition({"n1", "n3"}, {"n2"})
    stats = cluster.sync_round()
    assert any(e.startswith("n2:") for e in stats["n1"].errors)
    assert agree(cluster, other) and not agree(cluster, key)
    synced = cluster.meta.synced()
    assert synced.get(part_of(cluster, other)) == cluster.meta.sync_round().id
    assert synced.get(part_of(cluster, key), 0) < cluster.meta.sync_round().id
    cluster.heal()
    cluster.sync_round()
    assert agree(cluster, key) and cluster.held("n2", key).value == b"v"


def test_a_replica_crashed_and_restarted_from_its_bytes_is_repaired_by_the_round(cluster):
    """n2 crashes; writes it misses (new, overwritten, deleted keys) are acked by n1 and a hint
    on n3. n2 restarts from its store's bytes with the old records; the round repairs it."""
    keys = {p: cluster.key_on(("n1", "n2"), p) for p in ("keep", "over", "gone", "new")}
    for p in ("keep", "over", "gone"):
        cluster["n1"].put(keys[p], b"v1", w="all")
    cluster.crash("n2")
    cluster["n1"].put(keys["over"], b"v2", w="quorum")
    cluster["n1"].delete(keys["gone"], w="quorum")
    cluster["n1"].put(keys["new"], b"fresh", w="quorum")
    cluster.heal()  # restarts n2 from the bytes it had at the crash
    assert cluster.held("n2", keys["over"]).value == b"v1"
    assert cluster.held("n2", keys["new"]) is None
    stats = cluster.sync_round()
    assert all(agree(cluster, k) for k in keys.values()), stats
    assert cluster.held("n2", keys["gone"]).tomb
    assert value_at_all(cluster, "n2", keys["over"]) == b"v2"
    assert cluster.nodes["n3"].store.hints_pending == 3, "the round did it, not the hints"


def test_a_round_exchanges_only_the_difference(cluster):
    """200 keys agree and one differs: the round moves one record, and the bytes it sends are
    far below what the 200 keys' records would take."""
    keys = [cluster.key_on(("n1", "n2"), f"bulk{i}-") for i in range(200)]
    for k in keys:
        cluster["n1"].put(k, b"x" * 100, w="all")
    cluster.network.drop("n1", "n2")
    cluster["n1"].put(keys[7], b"y" * 100, w="one")
    cluster.heal()
    stats = cluster.sync_round()["n1"]
    assert stats.records == 1 and stats.repaired == 1
    assert stats.bytes < 200 * 100 // 2, stats.bytes
    assert all(agree(cluster, k) for k in keys)


def rounds_until(cluster: InProcCluster, done, limit: int = 12, ping: bool = False) -> int:
    """Sync rounds (with hint delivery, and pings if asked) until ``done()``; how many."""
    for n in range(1, limit + 1):
        if ping:
            cluster.ping()
        cluster.deliver_hints()
        cluster.sync_round()
        if done():
            return n
    raise AssertionError(f"not done after {limit} rounds")


def test_tombstones_are_purged_only_after_rounds_that_synced_every_replica(cluster):
    """A delete while n2 is cut off (its hint undelivered): rounds go by, but the partition is
    not synced with n2 and a hint is pending, so its watermark stays below the tombstone and n1
    keeps it (either rule alone holds the watermark here). After the heal the tombstone reaches
    n2, the rounds that then sync every replica with no hints pending move the watermark past
    it, and both replicas purge it; the key stays deleted."""
    key = cluster.key_on(("n1", "n2"), "gone")
    kept = cluster.key_on(("n1", "n2"), "kept")
    part = part_of(cluster, key)
    cluster["n1"].put(key, b"v1", w="all")
    cluster["n1"].put(kept, b"v1", w="all")
    cluster.sync_round()  # synced once with every replica, before the cut
    assert cluster.meta.synced()[part] == 1
    cluster.network.partition({"n1", "n3"}, {"n2"})
    cluster["n1"].delete(key, w="quorum")  # n1 and a hint on n3
    tomb_ts = cluster.held("n1", key).version.ts
    for _ in range(4):
        cluster.sync_round()
    assert cluster.meta.watermarks().get(part, 0) < tomb_ts, "the watermark stays below it"
    assert cluster.held("n1", key).tomb and cluster.held("n2", key).value == b"v1"
    cluster.heal()
    rounds_until(cluster, lambda: all(cluster.held(n, key) is None for n in ("n1", "n2")))
    assert cluster.meta.watermarks()[part] > cluster.held("n1", kept).version.ts
    assert value_at_all(cluster, "n3", key) is None
    assert value_at_all(cluster, "n3", kept) == b"v1"
    assert sum(cluster.nodes[n].syncer.totals["tombstones_purged"] for n in cluster.ids) >= 2


def test_a_node_declared_dead_that_comes_back_after_the_purge_does_not_resurrect_a_delete():
    """n2 crashes holding ``key``; the delete goes to n1 and a hint. n2 stays silent past
    ``dead_after``: the leader replaces it by n3, the hint goes to the new replicas, rounds
    fill n3, advance the watermark and purge the tombstone. Then n2 restarts from its old
    bytes: it hands off the partition it no longer holds, with its old value of ``key``, and
    the receivers refuse it below the watermark. ``key`` stays deleted; ``kept`` is kept."""
    cluster = InProcCluster(n=3, rf=2, partitions=4, dead_after=8.0)
    try:
        key = cluster.key_on(("n1", "n2"), "gone")
        kept = cluster.key_on(("n1", "n2"), "kept")
        part = part_of(cluster, key)
        cluster["n1"].put(key, b"old", w="all")
        cluster["n1"].put(kept, b"v1", w="all")
        cluster.crash("n2")
        cluster["n1"].delete(key, w="quorum")
        assert cluster.nodes["n3"].store.hint_targets() == {"n2": 1}

        def purged() -> bool:
            reps = cluster.pmap[part]
            return "n2" not in reps and all(cluster.held(r, key) is None for r in reps)

        rounds_until(cluster, purged, ping=True)
        assert cluster.nodes["n3"].store.hints_pending == 0, "delivered to the new replicas"
        assert cluster.meta.watermarks()[part] > cluster.held("n1", kept).version.ts
        cluster.heal()  # n2 restarts from its bytes: it still holds the old value
        assert cluster.held("n2", key).value == b"old"
        cluster.ping()
        cluster.run_syncers()  # n2 runs the current round: it hands its old partitions off
        assert cluster.nodes["n2"].syncer.totals["records_handed_off"] >= 2
        assert cluster.held("n2", key) is None
        for n in cluster.pmap[part]:
            assert cluster.held(n, key) is None, n
        for n in cluster.ids:
            assert value_at_all(cluster, n, key) is None
            assert value_at_all(cluster, n, kept) == b"v1"
    finally:
        cluster.close()


def test_a_write_landing_between_the_descent_and_the_push_is_not_overwritten_by_the_push(cluster):
    """The primary n1 found ``key`` newer on its side and pushes it; just before the push
    arrives, a newer write of ``key`` lands on n2 (through n2, which cannot reach n1). The push
    is refused by last writer wins, n2 keeps the newest write, and the next round brings it to
    n1."""
    key = cluster.key_on(("n1", "n2"))
    cluster["n1"].put(key, b"v1", w="all")
    cluster.network.drop("n1", "n2")
    cluster["n1"].put(key, b"v2 on n1", w="one")
    cluster.heal()
    cluster.network.drop("n2", "n1")  # n2's calls to n1 fail; the round's calls to n2 work
    landed: list[bytes] = []

    def write_before_the_push(src: str, dst: str, message: object) -> None:
        if (src, dst) == ("n1", "n2") and isinstance(message, m.Apply) and not landed:
            landed.append(b"v3 on n2")
            cluster.clock.step(0.01)
            cluster["n2"].put(key, b"v3 on n2", w="one")

    cluster.network.on_send(write_before_the_push)
    stats = cluster.sync_round()["n1"]
    cluster.network.on_send(None)
    assert landed and stats.repaired == 0, "the push was refused"
    assert cluster.held("n2", key).value == b"v3 on n2"
    assert cluster.held("n1", key).value == b"v2 on n1"
    cluster.heal()
    cluster.sync_round()
    assert agree(cluster, key) and cluster.held("n1", key).value == b"v3 on n2"


def test_a_crashed_primarys_partitions_are_synced_by_the_next_replica_once_it_saw_it_fail():
    """Three replicas per partition; n1, the primary of all of them, crashes, and n3 misses
    writes coordinated by n2. Once n2's pings have seen n1 fail, n2 is the primary: the round
    (opened by the new leader n2) repairs n3, and nothing is reported synced while n1 is
    down."""
    cluster = InProcCluster(n=3, rf=3, partitions=4)
    try:
        key = cluster.key_on(("n1", "n2", "n3"))
        cluster.crash("n1")
        cluster.set_leader("n2")
        cluster.network.drop("n2", "n3")
        cluster["n2"].put(key, b"v", w="one")
        cluster.network.heal()
        for node in cluster.nodes.values():
            node.view.alive.pop("n3", None)
        cluster.ping()
        assert not cluster.nodes["n2"].view.is_alive("n1")
        stats = cluster.sync_round()
        assert stats["n2"].partitions == 4 and stats["n2"].repaired == 1
        assert cluster.held("n3", key).value == b"v"
        assert stats["n2"].synced == 0, "n1 is a replica of every partition: not synced"
    finally:
        cluster.close()


def test_rounds_running_concurrently_with_writes_over_a_reordering_network_keep_the_last_writer():
    """Three writers overwrite and delete keys through every node while each node runs its
    round in its own thread, over a network that delays every message by a random 0-5 ms
    (reordering them). Whatever the interleaving, after a heal, hint delivery and one more
    round every replica holds the same record of each key, at or above its newest
    acknowledged version."""
    cluster = InProcCluster(threads=True)
    try:
        keys = [cluster.key_on(reps, "c") for reps in (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))]
        for k in keys:
            cluster["n1"].put(k, b"v0", w="all")
        cluster.network.reorder(0.005)
        acked: dict[str, list[Version]] = {k: [] for k in keys}
        lock = threading.Lock()

        def writer(node_id: str) -> None:
            for i in range(6):
                k = keys[i % len(keys)]
                try:
                    if i % 4 == 3:
                        res = cluster[node_id].delete(k, w="quorum")
                    else:
                        res = cluster[node_id].put(k, f"{node_id}-{i}".encode(), w="quorum")
                except (Unavailable, NotFound):
                    continue
                with lock:
                    acked[k].append(res.version)

        cluster.report_stats()
        cluster.clock.step(cluster.sync_interval)
        cluster.leader_tick()  # opens the round the syncer threads run
        threads = [threading.Thread(target=writer, args=(n,)) for n in cluster.ids]
        threads += [
            threading.Thread(target=cluster.nodes[n].syncer.tick, args=(0.0,)) for n in cluster.ids
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        cluster.heal()
        cluster.deliver_hints()
        cluster.sync_round()
        for k in keys:
            held = [cluster.held(n, k) for n in cluster.replicas(k)]
            assert held[0] is not None and all(h == held[0] for h in held), (k, held)
            if acked[k]:
                assert held[0].version >= max(acked[k]), k
    finally:
        cluster.close()
