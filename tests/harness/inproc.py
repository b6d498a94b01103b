"""An in-process cluster of coordinators for the component tier (tests/component).

Each node is a :class:`kvraft.coordinator.Coordinator` over a :class:`~kvraft.storage.MemoryStore`,
a :class:`~kvraft.clock.FakeClock` view (skewable per node) and the fake network
(:class:`~kvraft.peer.fake.FakeNetwork`); its :class:`~kvraft.peer.server.PeerServer` answers the
messages the coordinator sends (Apply, Hint, Scan through ``Coordinator.serve``; ReadKeys as the
node answers it without a byte budget). There is no Raft: placement is a fixed partition map
(:class:`StaticView`). Peer calls run inline by default (:class:`InlineExecutor`), so a
scenario is deterministic; ``threads=True`` gives each node a thread pool for concurrent tests.

Crash and restart go through the store's bytes: ``crash`` keeps ``MemoryStore.snapshot()``
and takes the node off the network; ``restart`` builds a new node from ``MemoryStore.restore``.
``deliver_hints`` does what the node's hint duty does, in the simplest form: each held hint goes
to its target when reachable and is dropped once applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kvraft import peer as m
from kvraft.clock import FakeClock
from kvraft.config import Config
from kvraft.coordinator import ClockStanding, Coordinator
from kvraft.core import placement
from kvraft.core.clockguard import Verdict
from kvraft.errors import Unavailable
from kvraft.hlc import HLC
from kvraft.peer import PeerError, PeerServer
from kvraft.peer.fake import FakeNetwork
from kvraft.storage import MemoryStore, Record

SECRET = "component-tier-secret"
MAX_OFFSET_MS = 500


class InlineExecutor(Executor):
    """Runs each task at once in the caller's thread (a done future): deterministic scenarios."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the future's reader
            fut.set_exception(exc)
        return fut


class StaticView:
    """A fixed partition map and the liveness marks the node's peer client tells."""

    def __init__(self, me: str, pmap: list[tuple[str, ...]], members: dict[str, str]) -> None:
        self.me, self.pmap, self._members = me, pmap, members
        self.alive: dict[str, bool] = {}

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]:
        if not self.pmap:
            raise Unavailable("no partition map")
        part = placement.partition_of(key, len(self.pmap))
        return part, self.pmap[part]

    def readable(self, part: int) -> tuple[str, ...]:
        return self.pmap[part]

    def watermarks(self) -> dict[int, int]:
        return {}

    def partition_map(self) -> list[tuple[str, ...]]:
        return self.pmap

    def members(self) -> dict[str, str]:
        return dict(self._members)

    def mark(self, node_id: str, ok: bool) -> None:
        self.alive[node_id] = ok

    def is_alive(self, node_id: str) -> bool:
        return node_id == self.me or self.alive.get(node_id, True)


@dataclass
class InProcNode:
    id: str
    store: MemoryStore
    clock: FakeClock
    view: StaticView
    server: PeerServer
    coordinator: Coordinator
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
    ) -> None:
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.pmap = [tuple(self.ids[(p + j) % n] for j in range(rf)) for p in range(partitions)]
        self.members = {i: f"{i}.inproc" for i in self.ids}
        self.config = Config(
            id="n1",
            replication_factor=rf,
            peers=tuple(f"127.0.0.1:{9100 + i}" for i in range(1, n)),
            secret=SECRET,
            test_fault=fault,
        )
        self.clock = FakeClock()
        self.network = FakeNetwork()  # delays sleep for real (the reorder test)
        self.threads = threads
        self.nodes: dict[str, InProcNode] = {}
        self.crashed: dict[str, bytes] = {}  # node id -> its store's bytes at the crash
        for node_id in self.ids:
            self.nodes[node_id] = self._build(node_id, MemoryStore(), self.clock.skewed(0))

    def _build(self, node_id: str, store: MemoryStore, clock: FakeClock) -> InProcNode:
        view = StaticView(node_id, self.pmap, self.members)
        server = PeerServer(SECRET)
        hlc = HLC(clock=clock, last=store.max_ts, max_ahead_ms=MAX_OFFSET_MS)
        counters: Counter[str] = Counter()
        published: list[Record] = []

        def count(name: str, n: int = 1) -> None:
            counters[name] += n

        def publish(records: Iterable[Record]) -> None:
            published.extend(records)

        pool: Executor = ThreadPoolExecutor(8) if self.threads else InlineExecutor()
        holder: list[InProcNode] = []
        coordinator = Coordinator(
            node_id,
            self.config,
            store,
            self.network.client(node_id, view.mark),
            view,
            hlc,
            pool,
            count,
            publish,
            lambda: holder[0].verdict,
        )
        coordinator.serve(server)
        server.register(m.ReadKeys, lambda msg: m.Records(tuple(store.get_many(list(msg.keys)))))
        node = InProcNode(node_id, store, clock, view, server, coordinator, counters, published)
        holder.append(node)
        self.network.add(node_id, server)
        return node

    # -- access ------------------------------------------------------------------------------

    def __getitem__(self, node_id: str) -> Coordinator:
        return self.nodes[node_id].coordinator

    def key_on(self, replicas: tuple[str, ...], prefix: str = "k") -> str:
        """A key whose partition's replicas are exactly ``replicas`` (in that order)."""
        for i in range(10_000):
            key = f"{prefix}{i}"
            if self.replicas(key) == tuple(replicas):
                return key
        raise AssertionError(f"no key on {replicas}")

    def replicas(self, key: str) -> tuple[str, ...]:
        return self.pmap[placement.partition_of(key, len(self.pmap))]

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
        self.nodes[node_id] = self._build(node_id, MemoryStore.restore(data), old.clock)

    def heal(self) -> None:
        """Undo every network fault, restart crashed nodes, forget the liveness marks."""
        self.network.heal()
        for node_id in list(self.crashed):
            self.restart(node_id)
        for node in self.nodes.values():
            node.view.alive.clear()

    def deliver_hints(self) -> int:
        """Every node sends the hints it holds to their targets (reachable ones); returns how
        many were delivered."""
        delivered = 0
        for node in self.nodes.values():
            if node.id in self.crashed:
                continue
            for target in list(node.store.hint_targets()):
                hints = node.store.hints_for(target)
                try:
                    node.coordinator.send_records(target, [h.record for h in hints])
                except PeerError:
                    continue
                node.store.drop_hints(h.id for h in hints)
                delivered += len(hints)
        return delivered

    def close(self) -> None:
        for node in self.nodes.values():
            node.coordinator.pool.shutdown(wait=True)
