"""The background duties in one process: the leader's step performed against FakeMeta, the sync
round's schedule, and hint delivery over FakeNetwork, all on a fake clock that the test steps
(no sleeps, no sockets, no pysyncobj). Each test is named for the fault or the rule it covers."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from kvraft.clock import FakeClock
from kvraft.duties import ClockWatch, HintDelivery, Liveness, Ping, Runner, StatsReport
from kvraft.hlc import HLC, Version
from kvraft.leader import Leader
from kvraft.metafake import FakeMeta, FakeRaft
from kvraft.peer import FakeNetwork
from kvraft.peer import messages as m
from kvraft.peer.server import PeerServer
from kvraft.storage import MemoryStore, Record

NODES = ("n1", "n2", "n3", "n4")
RAFT = {n: f"127.0.0.1:{9000 + i}" for i, n in enumerate(NODES, 1)}


def fake_clock() -> FakeClock:
    """The shared fake clock at wall time 1,000,000 s and monotonic 500 s (a real monotonic clock
    is never 0)."""
    clock = FakeClock(start=1_000_000.0 - 500.0)
    clock.step(500.0)
    return clock


def members_of(meta: FakeMeta):
    """Node.members(): the registered nodes in the Raft configuration, id -> HTTP address."""
    raft = set(meta.raft_members())
    return lambda: {x.id: x.http for x in meta.members().values() if x.raft in raft}


def leader_cluster(dead_after: float = 4.0, sync_interval: float = 5.0):
    raft = FakeRaft()
    metas = {n: raft.meta(RAFT[n]) for n in NODES}
    for n, meta in metas.items():
        meta.register(n, f"127.0.0.1:{8000 + int(n[1:])}")
        meta.report_stats(n, 0, 0, 0)
    raft.set_leader(RAFT["n1"])
    clock = fake_clock()
    liveness = Liveness("n1", clock)
    config = SimpleNamespace(
        partitions=8,
        replication_factor=2,
        dead_after=dead_after,
        sync_interval=sync_interval,
        peer_timeout=1.0,
    )
    leader = Leader(
        "n1",
        config,
        metas["n1"],
        peers=None,
        hlc=HLC(lambda: int(clock.time() * 1000)),
        members=members_of(metas["n1"]),
        silent_for=liveness.silent_for,
    )
    return raft, metas, clock, liveness, leader


def holders(meta: FakeMeta) -> set[str]:
    return {n for reps in meta.map_state()[1].partitions for n in reps}


def test_the_leader_places_partitions_once_every_member_registered_and_reported():
    _raft, metas, clock, _liveness, leader = leader_cluster()
    leader.tick(clock.time())
    epoch, state = metas["n3"].map_state()
    assert epoch == 1 and len(state.partitions) == 8
    assert holders(metas["n3"]) == set(NODES)
    assert all(len(reps) == 2 for reps in state.partitions)


def test_a_node_silent_for_dead_after_is_replaced_in_the_map_and_not_before():
    _raft, metas, clock, liveness, leader = leader_cluster(dead_after=4.0)
    leader.tick(clock.time())
    assert "n4" in holders(metas["n1"])
    on_n4 = [p for p, reps in enumerate(metas["n1"].map_state()[1].partitions) if "n4" in reps]
    for _ in range(3):  # n2 and n3 answer every second; n4 has gone silent
        clock.step(1.0)
        for n in ("n2", "n3"):
            liveness.mark(n, True)
        leader.tick(clock.time())
    assert "n4" in holders(metas["n1"]), "3 s of silence is not dead_after (4 s)"
    for _ in range(2):
        clock.step(1.0)
        for n in ("n2", "n3"):
            liveness.mark(n, True)
        leader.tick(clock.time())
    assert "n4" not in holders(metas["n2"]), "silent for 5 s > dead_after: replaced"
    state = metas["n2"].map_state()[1]
    for p in on_n4:  # each of its partitions got a replacement, filled by a sync round first
        assert len(state.partitions[p]) >= 2 and state.filling.get(p), (p, state)


def test_a_sync_round_opens_every_sync_interval_of_the_leaders_clock_and_not_before():
    _raft, metas, clock, _liveness, leader = leader_cluster(sync_interval=5.0)
    leader.tick(clock.time())  # placement
    leader.tick(clock.time())  # no round yet: round 0 "started" at the epoch
    rnd = metas["n2"].sync_round()
    assert rnd.id == 1 and rnd.started_at == clock.time()
    clock.step(4.9)
    leader.tick(clock.time())
    assert metas["n2"].sync_round().id == 1, "4.9 s after the last round: too early"
    clock.step(0.1)
    leader.tick(clock.time())
    assert metas["n2"].sync_round().id == 2


def test_a_follower_after_a_leader_change_performs_no_leader_duty():
    raft, metas, clock, _liveness, leader = leader_cluster()
    leader.tick(clock.time())
    raft.set_leader(RAFT["n2"])
    before = raft.applied
    clock.step(60.0)  # n1 would open a round and declare everyone dead
    leader.tick(clock.time())
    assert raft.applied == before and metas["n1"].sync_round().id == 0


def test_without_metadata_quorum_the_leader_step_fails_quietly_and_retries_next_tick():
    raft, metas, clock, _liveness, leader = leader_cluster()
    raft.quorum = False
    leader.tick(clock.time())  # MetaUnavailable is logged, not raised
    assert metas["n1"].map_state()[0] == 0
    raft.quorum = True
    leader.tick(clock.time())
    assert metas["n1"].map_state()[0] == 1


# -- hints over the fake network --------------------------------------------------------------


class StoreNode:
    """A peer with a MemoryStore, answering Apply and Ping on a real PeerServer."""

    def __init__(self, node_id: str, clock: FakeClock) -> None:
        self.id = node_id
        self.store = MemoryStore()
        self.server = PeerServer("unused: the fake network carries no signatures")
        self.server.register(
            m.Apply, lambda msg: m.Applied(tuple(self.store.apply_many(list(msg.records))))
        )
        self.server.register(
            m.Ping, lambda _msg: m.Pong(self.id, clock_ms=int(clock.time() * 1000))
        )


def hint_setup():
    clock = fake_clock()
    net = FakeNetwork(sleep=lambda _s: None)
    n2 = StoreNode("n2", clock)
    net.add("n2", n2.server)
    store = MemoryStore()
    liveness = Liveness("n1", clock)
    peers = net.client("n1", liveness.mark)
    counts: Counter[str] = Counter()
    pmap = (("n2", "n3"),)  # one partition; its replicas n2 and n3 (n3 is not on the network)
    hints = HintDelivery(
        "n1",
        lambda: (1, pmap),
        store,
        lambda node, recs: list(peers.apply(node, recs).results),
        store.apply_many,
        liveness.is_alive,
        lambda name, n=1: counts.update({name: n}),
    )
    hlc = HLC(lambda: int(clock.time() * 1000))
    ping = Ping(
        "n1",
        members=lambda: ["n1", "n2"],
        raft_size=lambda: 2,
        peers=peers,
        hlc=hlc,
        liveness=liveness,
        clock=ClockWatch(500, clock),
        peer_timeout=1.0,
        submit=lambda fn: fn(),
    )
    record = Record("k", 0, Version(hlc.now(), "n1"), False, b"held for n2")
    store.add_hint("n2", record)
    return clock, net, n2, store, liveness, hints, ping, counts


def test_a_hint_waits_out_a_partition_and_is_delivered_after_heal_and_a_good_ping():
    clock, net, n2, store, liveness, hints, ping, counts = hint_setup()
    net.partition({"n1"}, {"n2"})
    hints.tick(clock.time())  # the attempt fails and marks n2 down
    assert not liveness.is_alive("n2")
    assert store.hints_pending == 1 and n2.store.get("k") is None
    clock.step(0.5)
    hints.tick(clock.time())  # n2 is down: not even tried
    assert store.hints_pending == 1
    net.heal()
    clock.step(0.5)
    hints.tick(clock.time())
    assert store.hints_pending == 1, "healed, but nothing told this node n2 is back yet"
    ping.tick(clock.time())
    assert liveness.is_alive("n2")
    hints.tick(clock.time())
    assert store.hints_pending == 0 and n2.store.get("k").value == b"held for n2"
    assert counts["hints_delivered"] == 1


def test_a_ping_answered_after_heal_gives_the_clock_guard_its_sample():
    clock, net, _n2, _store, liveness, _hints, ping, _counts = hint_setup()
    net.partition({"n1"}, {"n2"})
    ping.tick(clock.time())
    assert not ping.check_clock(), "no peer measured: the verdict has no evidence yet"
    assert not liveness.serving("n2")
    net.heal()
    ping.tick(clock.time())
    assert ping.check_clock() and ping.verdict().ok and liveness.serving("n2")


def test_the_runner_ticks_each_duty_on_its_own_period_of_the_injected_clock():
    clock = fake_clock()
    ticks: list[tuple[str, float]] = []

    class Probe:
        def __init__(self, name: str) -> None:
            self.name = name

        def tick(self, now: float) -> None:
            ticks.append((self.name, now))

    class Broken:
        def tick(self, now: float) -> None:
            raise RuntimeError("a failing duty must not stop the others")

    runner = Runner(clock)
    runner.add("fast", Probe("fast"), 0.5)
    runner.add("broken", Broken(), 0.5)
    runner.add("slow", Probe("slow"), 2.0)
    for _ in range(9):  # 0.0, 0.25, ... 2.0
        runner.run_due()
        clock.step(0.25)
    assert [t for t in ticks if t[0] == "slow"] == [("slow", 1_000_000.0), ("slow", 1_000_002.0)]
    assert len([t for t in ticks if t[0] == "fast"]) == 5


def test_stats_are_reported_only_when_they_changed():
    raft = FakeRaft()
    meta = raft.meta(RAFT["n1"])
    raft.set_leader(RAFT["n1"])
    store = MemoryStore()
    duty = StatsReport("n1", store, meta)
    duty.tick(0.0)
    applied = raft.applied
    duty.tick(1.0)
    assert raft.applied == applied, "nothing changed: nothing proposed"
    store.apply(Record("k", 0, Version(1 << 16, "n1"), False, b"v"))
    duty.tick(2.0)
    assert meta.stats()["n1"].keys == 1
