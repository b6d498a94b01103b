"""An in-process cluster of nodes for the component tier (tests/component).

Each node is a :class:`kvraft.coordinator.Coordinator` over a :class:`~kvraft.storage.MemoryStore`,
a :class:`~kvraft.clock.FakeClock` view (skewable per node) and the fake network
(:class:`~kvraft.peer.fake.FakeNetwork`), with the node's real background duties over shared
metadata (:class:`~kvraft.metafake.FakeMeta` on one :class:`~kvraft.metafake.FakeRaft`): the leader
duty and membership changes (:class:`kvraft.leader.Leader`), the anti-entropy round
(:class:`kvraft.sync.Syncer`, the real descent of :mod:`kvraft.core.antientropy` over the Tree and
Entries messages), hint delivery (:class:`kvraft.duties.HintDelivery`), registration
(:class:`kvraft.duties.Register`), pings (:class:`kvraft.duties.Ping`) and the stored-data report
(:class:`kvraft.duties.StatsReport`). The node's wiring is the production one from
:mod:`kvraft.wiring`: the coordinator's placement view is a :class:`~kvraft.wiring.MetaPlacement`
over FakeMeta and the node's :class:`~kvraft.duties.Liveness`, and its
:class:`~kvraft.peer.server.PeerServer` answers what a node's does through
:func:`~kvraft.wiring.serve_node_messages` (Apply, Hint, Scan, ReadKeys, Ping, MemberChange and
the sync messages; a Ping answers ready, with no load). No pysyncobj and no duty
threads: the test calls ``sync_round``, ``leader_tick``, ``deliver_hints``, ``ping`` (each ticks
one duty of every live node once, in id order). Peer calls run inline by default
(:class:`InlineExecutor`), so a scenario is deterministic; ``threads=True`` gives each node a
thread pool for concurrent tests.

The initial partition map is fixed (``partitions`` partitions of ``rf`` replicas, placed round
robin, proposed through FakeMeta); the leader is ``n1`` (``set_leader`` moves it). Liveness is
each node's :class:`kvraft.duties.Liveness` on the cluster's clock, marked by its peer client
(a failed call marks the node down until a later call succeeds; ``view.alive[node_id]`` is the
last mark; ``heal`` forgets the failures, as ``view.alive.pop(node_id)`` does for one node);
the leader's silence figures come from the same Liveness, and ``dead_after`` is an hour by
default so that clock steps in a scenario declare nobody dead unless it asks to (then it pings,
so that the leader hears from the nodes that are up). The coordinators' clock verdict is fixed
(``InProcNode.verdict``), not the ping duty's.

Crash and restart go through the store's bytes: ``crash`` keeps ``MemoryStore.snapshot()``
and takes the node off the network; ``restart`` builds a new node from ``MemoryStore.restore``
(a new HLC, a new Syncer that has run no round yet, the same metadata).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from api.errors import describe
from kvraft.clock import FakeClock
from kvraft.config import Config
from kvraft.coordinator import ClockStanding, Coordinator
from kvraft.core import placement
from kvraft.core.clockguard import Verdict
from kvraft.duties import ClockWatch, HintDelivery, Liveness, Ping, Register, StatsReport
from kvraft.hlc import HLC
from kvraft.leader import Leader
from kvraft.metafake import FakeMeta, FakeRaft
from kvraft.peer import FakePeers, PeerServer
from kvraft.peer.fake import FakeNetwork
from kvraft.storage import MemoryStore, Record
from kvraft.sync import RoundStats, Syncer
from kvraft.wiring import MetaPlacement, serve_node_messages

SECRET = "component-tier-secret"
MAX_OFFSET_MS = 500
DEAD_AFTER = 3600.0
SYNC_INTERVAL = 5.0
PEER_TIMEOUT = 1.0  # seconds: a delay above it is a timeout (FakeNetwork on the fake clock)


def http_of(node_id: str) -> str:
    return f"127.0.0.1:{8000 + int(node_id[1:])}"


def raft_of(node_id: str) -> str:
    return f"127.0.0.1:{9000 + int(node_id[1:])}"


class InlineExecutor(Executor):
    """Runs each task at once in the caller's thread (a done future): deterministic scenarios."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the future's reader
            fut.set_exception(exc)
        return fut


class _Marks:
    """``view.alive`` as tests/component use it: ``alive[node_id]`` and ``get`` are the last
    mark told to the node's Liveness (KeyError / the default if none); ``pop(node_id)`` and
    ``clear()`` forget the failed contacts and the marks (:meth:`Liveness.forget_failures`:
    alive again until a call fails)."""

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness

    def __getitem__(self, node_id: str) -> bool:
        mark = self.liveness.last_mark(node_id)
        if mark is None:
            raise KeyError(node_id)
        return mark

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and self.liveness.last_mark(node_id) is not None

    def get(self, node_id: str, default: bool | None = None) -> bool | None:
        mark = self.liveness.last_mark(node_id)
        return default if mark is None else mark

    def pop(self, node_id: str, default: bool | None = None) -> bool | None:
        mark = self.get(node_id, default)
        self.liveness.forget_failures(node_id)
        return mark

    def clear(self) -> None:
        self.liveness.forget_failures()


class InProcPlacement(MetaPlacement):
    """The node's :class:`~kvraft.wiring.MetaPlacement`, plus ``alive`` (see :class:`_Marks`)
    and ``mark`` (a contact told to the node's Liveness) for tests."""

    @property
    def alive(self) -> _Marks:
        return _Marks(self.liveness)

    def mark(self, node_id: str, ok: bool) -> None:
        self.liveness.mark(node_id, ok)


MetaView = InProcPlacement  # also importable under this name


@dataclass
class InProcNode:
    id: str
    config: Config
    store: MemoryStore
    clock: FakeClock
    meta: FakeMeta
    view: InProcPlacement
    server: PeerServer
    peers: FakePeers
    hlc: HLC
    coordinator: Coordinator
    leader: Leader
    syncer: Syncer
    hints: HintDelivery
    register: Register
    stats: StatsReport
    pinger: Ping
    counters: Counter[str] = field(default_factory=Counter)
    published: list[Record] = field(default_factory=list)
    verdict: ClockStanding = field(
        default_factory=lambda: ClockStanding(Verdict(True, {}, (), MAX_OFFSET_MS), True)
    )


class InProcCluster:
    """``n`` nodes ``n1..nN``, ``partitions`` partitions of ``rf`` replicas each, placed round
    robin. ``fault`` is a config ``test_fault`` for every coordinator (negative controls)."""

    def __init__(
        self,
        n: int = 3,
        rf: int = 2,
        partitions: int = 8,
        threads: bool = False,
        fault: str = "",
        dead_after: float = DEAD_AFTER,
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.rf, self.partitions, self.fault = rf, partitions, fault
        self.dead_after, self.sync_interval = dead_after, sync_interval
        self.clock = FakeClock()
        # a delay steps the fake clock and times out past the peer timeout; reorder sleeps for
        # real (the threaded tests); a handler's refusal answers as over HTTP
        self.network = FakeNetwork(describe=describe, clock=self.clock, timeout=PEER_TIMEOUT)
        self.raft = FakeRaft(raft_of(i) for i in self.ids)
        self.raft.set_leader(raft_of(self.ids[0]))
        self.threads = threads
        self.nodes: dict[str, InProcNode] = {}
        self.crashed: dict[str, bytes] = {}  # node id -> its store's bytes at the crash
        for node_id in self.ids:
            self.nodes[node_id] = self._build(node_id, MemoryStore(), self.clock.skewed(0))
            self.nodes[node_id].register.tick(self.clock.time())
        first = [tuple(self.ids[(p + j) % n] for j in range(rf)) for p in range(partitions)]
        meta = self.nodes[self.ids[0]].meta
        assert meta.set_partitions(0, placement.MapState(tuple(first)))

    def _config(self, node_id: str) -> Config:
        return Config(
            id=node_id,
            http=http_of(node_id),
            raft=raft_of(node_id),
            peers=tuple(raft_of(i) for i in self.ids if i != node_id),
            secret=SECRET,
            partitions=self.partitions,
            replication_factor=self.rf,
            dead_after=self.dead_after,
            sync_interval=self.sync_interval,
            peer_timeout=PEER_TIMEOUT,
            test_fault=self.fault,
        )

    def _build(self, node_id: str, store: MemoryStore, clock: FakeClock) -> InProcNode:
        config = self._config(node_id)
        meta = FakeMeta(self.raft, config.raft)  # in the Raft configuration once added to it
        liveness = Liveness(node_id, self.clock)
        view = InProcPlacement(meta, liveness)
        server = PeerServer(SECRET)
        hlc = HLC(
            clock=clock,
            last=store.max_ts,
            max_ahead_ms=MAX_OFFSET_MS,
            mark=store.clock_mark,
            reserve=store.reserve_clock,
        )
        counters: Counter[str] = Counter()
        published: list[Record] = []

        def count(name: str, n: int = 1) -> None:
            counters[name] += n

        def publish(records: Iterable[Record]) -> None:
            published.extend(records)

        pool: Executor = ThreadPoolExecutor(8) if self.threads else InlineExecutor()
        holder: list[InProcNode] = []
        peers = self.network.client(node_id, liveness.mark)
        coordinator = Coordinator(
            node_id,
            config,
            store,
            peers,
            view,
            hlc,
            pool,
            count,
            publish,
            lambda: holder[0].verdict,
        )
        leader = Leader(
            node_id,
            config,
            meta,
            peers,
            hlc,
            members=view.members,
            silent_for=liveness.silent_for,
        )
        syncer = Syncer(
            node_id,
            meta,
            store,
            peers,
            hlc,
            view.is_alive,
            coordinator.apply_local,
            self.clock,
        )
        hints = HintDelivery(
            node_id,
            meta.partitions,
            store,
            coordinator.send_records,
            coordinator.apply_local,
            view.is_alive,
            count,
        )
        serve_node_messages(
            server,
            node_id=node_id,
            coordinator=coordinator,
            store=store,
            hlc=hlc,
            meta=meta,
            members=leader,
            ready=lambda: True,
            load=lambda: 0,
        )
        node = InProcNode(
            node_id,
            config,
            store,
            clock,
            meta,
            view,
            server,
            peers,
            hlc,
            coordinator,
            leader,
            syncer,
            hints,
            Register(config, meta),  # no --join: the peers are not needed
            StatsReport(node_id, store, meta),
            Ping(
                node_id,
                members=view.members,
                raft_size=lambda: len(meta.raft_members()),
                peers=peers,
                hlc=hlc,
                liveness=liveness,
                clock=ClockWatch(MAX_OFFSET_MS, self.clock),  # not what writes go by: verdict
                peer_timeout=config.peer_timeout,
                submit=lambda fn: fn(),
            ),
            counters,
            published,
        )
        holder.append(node)
        self.network.add(node_id, server)
        return node

    # -- access ------------------------------------------------------------------------------

    def __getitem__(self, node_id: str) -> Coordinator:
        return self.nodes[node_id].coordinator

    @property
    def meta(self) -> FakeMeta:
        """The metadata as the leader sees it (one state for all)."""
        return self.nodes[self.leader_id()].meta

    @property
    def pmap(self) -> tuple[tuple[str, ...], ...]:
        """The current partition map (replicas of each partition, filling ones included)."""
        return self.meta.partitions()[1]

    def leader_id(self) -> str:
        leader = next(iter(self.nodes.values())).meta.leader_id()
        assert leader is not None, "no leader"
        return leader

    def live(self) -> list[str]:
        """The nodes up (on the network), in id order."""
        return [n for n in sorted(self.nodes, key=_order) if n not in self.crashed]

    def key_on(self, replicas: tuple[str, ...], prefix: str = "k") -> str:
        """A key whose partition's replicas are exactly ``replicas`` (in that order)."""
        for i in range(10_000):
            key = f"{prefix}{i}"
            if self.replicas(key) == tuple(replicas):
                return key
        raise AssertionError(f"no key on {replicas}")

    def replicas(self, key: str) -> tuple[str, ...]:
        pmap = self.pmap
        return pmap[placement.partition_of(key, len(pmap))]

    def held(self, node_id: str, key: str) -> Record | None:
        """What ``node_id``'s store holds for ``key`` (a crashed node: its bytes at the crash)."""
        if node_id in self.crashed:
            return MemoryStore.restore(self.crashed[node_id]).get(key)
        return self.nodes[node_id].store.get(key)

    # -- faults ------------------------------------------------------------------------------

    def skew(self, node_id: str, offset_ms: int) -> None:
        self.nodes[node_id].clock.skew(offset_ms)

    def crash(self, node_id: str) -> None:
        """Take ``node_id`` off the network; keep its store's bytes."""
        if node_id in self.crashed:
            return
        self.network.crash(node_id)
        self.crashed[node_id] = self.nodes[node_id].store.snapshot()

    def restart(self, node_id: str) -> None:
        """Build ``node_id`` again from its store's bytes (a new HLC seeded from the store)."""
        data = self.crashed.pop(node_id, None)
        if data is None:
            return
        old = self.nodes[node_id]
        old.coordinator.pool.shutdown(wait=True)
        self.nodes[node_id] = self._build(node_id, MemoryStore.restore(data), old.clock)

    def heal(self) -> None:
        """Undo every network fault, restart crashed nodes, forget the liveness marks."""
        self.network.heal()
        for node_id in list(self.crashed):
            self.restart(node_id)
        for node in self.nodes.values():
            node.view.liveness.forget_failures()

    def set_leader(self, node_id: str) -> None:
        """Make ``node_id`` the Raft leader (an election, as FakeRaft has it)."""
        self.raft.set_leader(raft_of(node_id))

    # -- duties (each ticks the live nodes' duty once, in id order) --------------------------

    def deliver_hints(self) -> int:
        """Every live node's hint duty ticks once; returns how many hints were delivered."""
        delivered = 0
        for node_id in self.live():
            node = self.nodes[node_id]
            before = node.counters["hints_delivered"]
            node.hints.tick(self.clock.time())
            delivered += node.counters["hints_delivered"] - before
        return delivered

    def ping(self) -> None:
        """Every live node's ping duty ticks once (inline): the liveness marks and the leader's
        silence figures from each answer or failure."""
        for node_id in self.live():
            self.nodes[node_id].pinger.tick(self.clock.time())

    def report_stats(self) -> None:
        for node_id in self.live():
            self.nodes[node_id].stats.tick(self.clock.time())

    def leader_tick(self) -> None:
        """The leader's duty ticks once (on the leader, unless it crashed): map moves, removals
        and a sync round when ``sync_interval`` passed."""
        leader = self.leader_id()
        if leader not in self.crashed:
            self.nodes[leader].leader.tick(self.nodes[leader].clock.time())

    def run_syncers(self) -> dict[str, RoundStats]:
        """Every live node's sync duty ticks once: each runs the round the leader opened if it
        has not yet. Returns the stats of the rounds run, by node."""
        out: dict[str, RoundStats] = {}
        for node_id in self.live():
            stats = self.nodes[node_id].syncer.tick(self.clock.time())
            if stats is not None:
                out[node_id] = stats
        return out

    def sync_round(self) -> dict[str, RoundStats]:
        """One anti-entropy round as the duties run it: stats reported, the clock stepped by
        ``sync_interval``, the leader ticks (it opens the round, and may move partitions), then
        every live node's Syncer runs it. Returns the stats of each node's round."""
        self.report_stats()
        self.clock.step(self.sync_interval)
        self.leader_tick()
        return self.run_syncers()

    # -- membership --------------------------------------------------------------------------

    def add_node(self, node_id: str) -> InProcNode:
        """Start a new empty node ``node_id`` on the network (not in the Raft configuration:
        ``Leader.add_member`` puts it there; then its Register duty registers it)."""
        assert node_id not in self.nodes
        self.ids.append(node_id)
        node = self._build(node_id, MemoryStore(), self.clock.skewed(0))
        self.nodes[node_id] = node
        return node

    def register(self) -> None:
        """Every live node's Register duty ticks once."""
        for node_id in self.live():
            self.nodes[node_id].register.tick(self.clock.time())

    def stop_node(self, node_id: str) -> None:
        """Take a removed node off the network for good."""
        self.crash(node_id)
        self.crashed.pop(node_id, None)
        node = self.nodes.pop(node_id)
        node.coordinator.pool.shutdown(wait=True)
        self.ids.remove(node_id)

    def close(self) -> None:
        for node in self.nodes.values():
            node.coordinator.pool.shutdown(wait=True)


def _order(node_id: str) -> tuple[int, str]:
    return (len(node_id), node_id)
