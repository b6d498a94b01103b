"""Membership changes in one process: :meth:`kvraft.leader.Leader.add_member` and
``remove_member`` against FakeMeta, the real leader duty moving the partition map
(:func:`kvraft.core.placement.plan` through :func:`kvraft.core.leaderplan.step`), and the real
sync rounds over the fake network moving the data (fill, then drop and hand off). The workload
has overwrites and deletes; every acknowledged key must read back with r=all from the new
replica set. Each test is named for the rule it covers."""

from __future__ import annotations

import pytest

from kvraft.errors import Conflict, NotFound, Unavailable
from tests.harness.inproc import InProcCluster, http_of, raft_of

ROUNDS = 12  # bound on the rounds a membership change may take to settle


def workload(cluster: InProcCluster, prefix: str, n: int = 40) -> dict[str, bytes | None]:
    """Puts, overwrites and deletes (w=quorum) through every node; the expected value of each
    key (None: deleted)."""
    expected: dict[str, bytes | None] = {}
    nodes = [i for i in cluster.ids if i not in cluster.crashed]
    for i in range(n):
        key = f"{prefix}{i}"
        cluster[nodes[i % len(nodes)]].put(key, b"first", w="quorum")
        expected[key] = b"first"
        if i % 3 == 1:
            cluster[nodes[(i + 1) % len(nodes)]].put(key, f"second {i}".encode(), w="quorum")
            expected[key] = f"second {i}".encode()
        elif i % 3 == 2:
            cluster[nodes[(i + 2) % len(nodes)]].delete(key, w="quorum")
            expected[key] = None
    return expected


def settled(cluster: InProcCluster) -> bool:
    state = cluster.meta.map_state()[1]
    return not state.filling and not state.leaving and not cluster.meta.removing()


def settle(cluster: InProcCluster) -> int:
    """Sync rounds (each with a leader tick) until the map has no move in progress and every
    node holds only its partitions; the rounds it took."""
    for rounds in range(1, ROUNDS + 1):
        cluster.sync_round()
        if settled(cluster) and all(held_ok(cluster, n) for n in cluster.live()):
            return rounds
    raise AssertionError(f"not settled after {ROUNDS} rounds: {cluster.meta.map_state()}")


def held_ok(cluster: InProcCluster, node_id: str) -> bool:
    mine = {p for p, reps in enumerate(cluster.pmap) if node_id in reps}
    return cluster.nodes[node_id].store.partitions_held() <= mine


def records_of(cluster: InProcCluster, node_id: str, part: int) -> dict[str, object]:
    store = cluster.nodes[node_id].store
    return {r.key: r for r in store.scan_partition(part, "", 100_000)}


def check_reads(cluster: InProcCluster, expected: dict[str, bytes | None]) -> None:
    """Every key, through every live node, at r=all; and each replica of each key holds it."""
    for i, (key, want) in enumerate(sorted(expected.items())):
        node = cluster.live()[i % len(cluster.live())]
        try:
            got = cluster[node].get(key, "all").value
        except NotFound:
            got = None
        assert got == want, (key, node, got, want)
        for r in cluster.replicas(key):
            held = cluster.held(r, key)
            if want is None:
                assert held is None or held.tomb, (key, r, held)
            else:
                assert held is not None and held.value == want, (key, r, held)


def test_an_added_node_gets_its_share_and_every_acked_key_reads_back_from_the_new_replicas():
    """n4 joins a three-node cluster through the leader: the leader moves partitions to it
    (filling), sync rounds fill it, the leaving replicas drop and hand off; writes keep coming
    during the move. At the end n4 holds a fair share and every acked key (overwrites, deletes)
    reads back with r=all from the new replica set."""
    cluster = InProcCluster(n=3, rf=2, partitions=8)
    try:
        expected = workload(cluster, "before")
        cluster.add_node("n4")
        assert cluster.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4")) == {
            "added": "n4",
            "raft": raft_of("n4"),
        }
        assert raft_of("n4") in cluster.meta.raft_members()
        cluster.register()  # n4's Register duty
        assert "n4" in cluster.nodes["n1"].view.members()
        cluster.sync_round()  # the leader moves partitions to n4, the round fills them
        state = cluster.meta.map_state()[1]
        filled = [p for p, reps in enumerate(state.partitions) if "n4" in reps]
        assert filled and not any("n4" in state.filling.get(p, ()) for p in filled)
        for p in filled:  # filled by the round, before any leaving replica handed off
            for other in state.partitions[p]:
                assert records_of(cluster, "n4", p) == records_of(cluster, other, p), (p, other)
        expected |= workload(cluster, "during", 20)
        rounds = settle(cluster)
        share = [p for p, reps in enumerate(cluster.pmap) if "n4" in reps]
        assert len(share) == 4, cluster.pmap  # 8 partitions x 2 replicas over 4 nodes
        assert cluster.nodes["n4"].store.partitions_held() == set(share)
        check_reads(cluster, expected)
        handed = sum(cluster.nodes[n].syncer.totals["records_handed_off"] for n in cluster.ids)
        assert handed > 0, "the leaving replicas handed their partitions off"
        assert rounds <= 4
    finally:
        cluster.close()


def test_a_removed_node_is_drained_then_forgotten_and_every_key_is_kept():
    """The leader drains n3 out of a four-node cluster: its partitions move to the others
    first, then it leaves Raft and the member list. Every acked key reads back with r=all, also
    once n3 is gone from the network."""
    cluster = InProcCluster(n=4, rf=2, partitions=8)
    try:
        expected = workload(cluster, "k")
        assert cluster.nodes["n1"].leader.remove_member("n3") == {"removing": "n3"}
        assert cluster.meta.removing() == ("n3",)
        settle(cluster)
        cluster.leader_tick()  # the drained node's removal (once it holds no partition)
        assert "n3" not in cluster.meta.members()
        assert raft_of("n3") not in cluster.meta.raft_members()
        assert not any("n3" in reps for reps in cluster.pmap)
        assert cluster.nodes["n3"].store.partitions_held() == set()
        check_reads(cluster, expected)
        cluster.stop_node("n3")
        check_reads(cluster, expected)
    finally:
        cluster.close()


def test_a_membership_change_asked_of_a_follower_is_forwarded_to_the_leader():
    """n2 is a follower: its add_member goes to the leader n1 over the peer transport (the
    MemberChange message), and the change is the leader's."""
    cluster = InProcCluster(n=3, rf=2)
    try:
        cluster.add_node("n4")
        answer = cluster.nodes["n2"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        assert answer == {"added": "n4", "raft": raft_of("n4")}
        assert raft_of("n4") in cluster.meta.raft_members()
        assert ("n2", "n1", "MemberChange") in cluster.network.delivered
        again = cluster.nodes["n2"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        assert again == answer, "adding a member already added is a no-op"
    finally:
        cluster.close()


def test_a_removal_that_would_leave_fewer_nodes_than_replicas_is_refused_by_the_leader():
    """Three nodes, two replicas: removing one is allowed, a second is a Conflict (one node
    left for replication factor 2), as is the leader removing itself; asked of a follower, the
    leader's refusal comes back as the same error."""
    cluster = InProcCluster(n=3, rf=2)
    try:
        leader = cluster.nodes["n1"].leader
        with pytest.raises(Conflict):
            leader.remove_member("n1")
        leader.remove_member("n3")
        with pytest.raises(Conflict):
            leader.remove_member("n2")
        with pytest.raises(Conflict):
            cluster.nodes["n2"].leader.remove_member("n2")
        with pytest.raises(NotFound):
            cluster.nodes["n3"].leader.remove_member("n9")
        assert cluster.meta.removing() == ("n3",)
    finally:
        cluster.close()


def test_adding_a_node_while_a_replica_is_down_loses_no_acked_key():
    """n2 is crashed while n4 joins and partitions move (its own included): rounds skip it.
    After its restart from its store's bytes the rounds settle the map, and every acked key
    (some written while n2 was down) reads back with r=all."""
    cluster = InProcCluster(n=3, rf=2, partitions=8)
    try:
        expected = workload(cluster, "a")
        cluster.crash("n2")
        expected |= workload(cluster, "b", 20)
        cluster.add_node("n4")
        cluster.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        cluster.register()
        for _ in range(3):
            cluster.sync_round()
        cluster.heal()
        settle(cluster)
        check_reads(cluster, expected)
    finally:
        cluster.close()


def test_a_dead_node_is_replaced_and_the_replacement_is_filled_by_the_round_not_a_hand_off():
    """n4 crashes for good. Once it has been silent for ``dead_after`` (the others answer the
    leader's pings) the leader replaces it in each of its partitions by a filling replica, and
    the next round fills that replica from the surviving one: there is no leaving replica to
    hand off, so the round's push is all there is. Every acked key reads back with r=all."""
    cluster = InProcCluster(n=4, rf=2, partitions=8, dead_after=8.0)
    try:
        expected = workload(cluster, "d")
        on_n4 = [p for p, reps in enumerate(cluster.pmap) if "n4" in reps]
        cluster.crash("n4")
        for _ in range(4):  # 5 s per round: dead by the second round
            cluster.ping()
            cluster.sync_round()
            if not any("n4" in reps for reps in cluster.pmap) and settled(cluster):
                break
        assert not any("n4" in reps for reps in cluster.pmap), cluster.pmap
        assert settled(cluster), cluster.meta.map_state()
        for p in on_n4:
            a, b = cluster.pmap[p]
            assert records_of(cluster, a, p) == records_of(cluster, b, p), p
        cluster.stop_node("n4")
        check_reads(cluster, expected)
        assert sum(cluster.nodes[n].syncer.totals["records_handed_off"] for n in cluster.ids) == 0
    finally:
        cluster.close()


def test_a_leader_change_in_the_middle_of_a_rebalance_lets_the_new_leader_finish_it():
    """n1 proposes the moves toward the new n4 and is then no longer the leader: n2 (whose
    leader duty had done nothing so far) finishes the moves from the map in the metadata."""
    cluster = InProcCluster(n=3, rf=2, partitions=8)
    try:
        expected = workload(cluster, "l")
        cluster.add_node("n4")
        cluster.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        cluster.register()
        cluster.clock.step(cluster.sync_interval)
        cluster.leader_tick()  # n1 proposes the moves and opens a round
        assert cluster.meta.map_state()[1].filling
        cluster.set_leader("n2")
        cluster.run_syncers()
        expected |= workload(cluster, "m", 12)
        settle(cluster)
        assert sum("n4" in reps for reps in cluster.pmap) == 4
        check_reads(cluster, expected)
    finally:
        cluster.close()


def test_the_joining_node_crashing_mid_fill_restarts_from_its_bytes_and_the_fill_completes():
    """n4 crashes after the first fill round (some partitions filled, writes since on it) and
    restarts from its store's bytes while more writes arrive; the next rounds complete the
    moves and every acked key reads back with r=all."""
    cluster = InProcCluster(n=3, rf=2, partitions=8)
    try:
        expected = workload(cluster, "j")
        cluster.add_node("n4")
        cluster.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        cluster.register()
        cluster.sync_round()
        expected |= workload(cluster, "k", 12)
        cluster.crash("n4")
        expected |= workload(cluster, "l", 12)
        cluster.sync_round()  # n4 is down: its partitions cannot be reported synced
        cluster.heal()  # n4 restarts from the bytes of the crash
        settle(cluster)
        assert sum("n4" in reps for reps in cluster.pmap) == 4
        check_reads(cluster, expected)
    finally:
        cluster.close()


def test_a_dead_node_handing_off_to_a_filling_replica_after_the_purge_does_not_resurrect():
    """n2 dies holding ``key``; the delete is acked by n1 and a hint; n2 is replaced, the
    tombstone purged everywhere. Then n3 (the replacement) is drained, so the partition gets a
    filling replica n4; n2 restarts from its old bytes and hands off its old partition to the
    replicas, n4 included, before the round fills n4. ``key`` must stay deleted."""
    cluster = InProcCluster(n=4, rf=2, partitions=4, dead_after=8.0)
    try:
        key = cluster.key_on(("n1", "n2"), "gone")
        part = cluster.nodes["n1"].view.replicas_of(key)[0]
        cluster["n1"].put(key, b"old", w="all")
        cluster.crash("n2")
        cluster["n1"].delete(key, w="quorum")
        for _ in range(ROUNDS):
            cluster.ping()
            cluster.deliver_hints()
            cluster.sync_round()
            reps = cluster.pmap[part]
            if "n2" not in reps and settled(cluster):
                if all(cluster.held(r, key) is None for r in reps):
                    break
        else:
            raise AssertionError("the tombstone was not purged")
        reps = cluster.pmap[part]
        assert reps == ("n1", "n3") and cluster.meta.watermarks()[part] > 0, reps
        cluster.nodes["n1"].leader.remove_member("n3")
        cluster.clock.step(cluster.sync_interval)
        cluster.leader_tick()  # drains n3: n4 fills the partition, a round is opened
        assert cluster.meta.map_state()[1].filling[part] == ("n4",)
        cluster.heal()  # n2 restarts from its bytes, still holding the old value
        assert cluster.held("n2", key).value == b"old"
        cluster.ping()
        assert cluster.nodes["n2"].syncer.tick(0.0).handed_off == 1  # to n1, n3 and n4
        cluster.run_syncers()  # n1 fills n4 and reports the partition synced
        assert part not in cluster.meta.map_state()[1].filling
        for n in cluster.live():
            with pytest.raises(NotFound):
                cluster[n].get(key, "all")
    finally:
        cluster.close()


def test_a_write_acked_by_a_filling_replica_alone_is_visible_at_r_all_after_the_heal():
    """n4 has just joined and is filling a partition; cut off from everyone, it coordinates a
    w=one write of a key of that partition, acknowledged by its own copy. After the heal and
    hint delivery, an r=all read must return it (the same as for any other replica's copy)."""
    cluster = InProcCluster(n=3, rf=2, partitions=8)
    try:
        cluster.add_node("n4")
        cluster.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        cluster.register()
        cluster.clock.step(cluster.sync_interval)
        cluster.leader_tick()  # moves toward n4 (filling); the round is not run yet
        filling = cluster.meta.map_state()[1].filling
        part = next(p for p, f in sorted(filling.items()) if "n4" in f)
        key = next(
            k
            for k in (f"f{i}" for i in range(10_000))
            if cluster.nodes["n1"].view.replicas_of(k)[0] == part
        )
        cluster.network.partition({"n4"}, {"n1", "n2", "n3"})
        acked = cluster["n4"].put(key, b"only on n4", w="one")
        assert acked.acks == 1
        cluster.heal()
        cluster.deliver_hints()
        for n in cluster.live():
            assert cluster[n].get(key, "all").value == b"only on n4", n
    finally:
        cluster.close()


def test_a_leaving_replica_cut_off_does_not_acknowledge_a_write_by_its_own_copy():
    """n2 is being drained out; cut off from everyone, it coordinates a w=one write of a key of
    a partition it is leaving. Its own copy is not an acknowledgement (nor would a hint for it
    be): the move completes without it while it is cut off, and what only it held would be
    gone. The write is refused as maybe applied; a write through a replica that stays is
    acknowledged and reads back after the move."""
    cluster = InProcCluster(n=3, rf=2, partitions=4)
    try:
        cluster.add_node("n4")
        cluster.nodes["n1"].leader.add_member("n4", http_of("n4"), raft_of("n4"))
        cluster.register()
        assert cluster.nodes["n1"].leader.remove_member("n2") == {"removing": "n2"}
        cluster.sync_round()  # n2's partitions start to move away
        leaving = cluster.meta.map_state()[1].leaving
        part = next(p for p, nodes in sorted(leaving.items()) if "n2" in nodes)
        key = next(
            k
            for k in (f"l{i}" for i in range(10_000))
            if cluster.nodes["n1"].view.replicas_of(k)[0] == part
        )
        cluster.network.partition({"n2"}, {"n1", "n3", "n4"})
        with pytest.raises(Unavailable, match="may or may not be visible later"):
            cluster["n2"].put(key, b"only on n2", w="one")
        cluster.clock.step(2.0)  # a later write (above any two clocks' gap)
        stays = next(n for n in cluster.replicas(key) if n not in ("n2", "n4"))
        acked = cluster[stays].put(key, b"kept", w="one")
        assert acked.acks >= 1
        cluster.heal()
        settle(cluster)
        cluster.deliver_hints()
        for n in cluster.live():
            assert cluster[n].get(key, "all").value == b"kept", n
    finally:
        cluster.close()


def test_a_node_being_drained_out_holds_no_hint_for_a_replica_that_is_down():
    """n3 is being drained; n2 is cut off from n1. A w=quorum write through n1 of a key on n1
    and n2 would have counted a hint on n3, which may be gone before n2 is back: the hint goes
    to a stand-in that stays (n4), or the write is refused."""
    cluster = InProcCluster(n=4, rf=2, partitions=8)
    try:
        assert cluster.nodes["n1"].leader.remove_member("n3") == {"removing": "n3"}
        key = cluster.key_on(("n1", "n2"))
        cluster.network.drop("n1", "n2")
        result = cluster["n1"].put(key, b"v", w="quorum")
        assert result.hinted == ("n4",), result
        assert cluster.nodes["n3"].store.hints_pending == 0
        cluster.crash("n4")
        with pytest.raises(Unavailable):  # no stand-in left but the one being drained
            cluster["n1"].put(key, b"v2", w="quorum")
        assert cluster.nodes["n3"].store.hints_pending == 0
    finally:
        cluster.close()
