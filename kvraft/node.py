"""A kvraft node: the wiring of its parts (the coordinator of reads and writes among them) and
its background duties.

The node ties the seams together: local :class:`~kvraft.storage.Storage`, the Raft metadata
(:class:`~kvraft.meta.Meta`), the peer transport and the HLC. Decisions (placement, acks needed,
stand-in order, newest version) come from pure modules; this one does the IO.

Reads and writes of user keys are the :class:`~kvraft.coordinator.Coordinator`'s: the node builds
it over its store, peers, metadata view and HLC, and its public put/get/delete/list_keys/create
delegate to it.

Background duties (registration, pings and the clock guard, hint delivery, stats reports, sync
rounds, the Raft leader's duties) are objects with ``tick(now)`` in :mod:`kvraft.duties`,
:mod:`kvraft.sync` and :mod:`kvraft.leader`; the node builds them with the parts they need and a
:class:`kvraft.duties.Runner` drives them on the injected clock. What the parts read of the
cluster (:class:`kvraft.wiring.MetaPlacement`) and the node's answers to its peers
(:func:`kvraft.wiring.serve_node_messages`) are built as the in-process cluster of the component
tier builds them. Store and metadata can be injected (:class:`~kvraft.storage.Store`,
:class:`~kvraft.meta.ClusterMeta`). Operator views are in :mod:`kvraft.views`. This module never
imports Flask and reads no clock itself.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from . import views
from .clock import SystemClock
from .collector import Pauses
from .config import Config
from .coordinator import ClockStanding, Coordinator, WriteResult
from .core.balance import Activity
from .core.clockguard import Verdict
from .duties import (
    HINT_INTERVAL,
    LEADER_INTERVAL,
    PING_INTERVAL,
    REGISTER_INTERVAL,
    STATS_INTERVAL,
    SYNC_TICK,
    Clock,
    ClockWatch,
    HintDelivery,
    Liveness,
    Ping,
    Register,
    Runner,
    StatsReport,
)
from .hlc import HLC
from .leader import Leader
from .meta import ClusterMeta, Meta
from .peer import PeerClient, PeerError, PeerServer
from .storage import Record, Storage, Store
from .sync import Syncer
from .watch import ChangeHub
from .wiring import MetaPlacement, serve_node_messages

log = logging.getLogger(__name__)

__all__ = [
    "HINT_INTERVAL",
    "LEADER_INTERVAL",
    "PING_INTERVAL",
    "STATS_INTERVAL",
    "SYNC_TICK",
    "Node",
    "WriteResult",
]


class Node:
    """One kvraft node. Create it in the serving process (pysyncobj's tick thread lives here)."""

    def __init__(
        self,
        config: Config,
        start: bool = True,
        clock: Clock | None = None,
        store: Store | None = None,
        meta: ClusterMeta | None = None,
        gc_pauses: Pauses | None = None,
    ) -> None:
        """Open the store and the metadata (pysyncobj starts here), wire the parts, and with
        ``start`` start the background duties. ``clock`` defaults to the system clocks.
        ``store`` and ``meta``, when given, are used as they are (e.g. a
        :class:`~kvraft.storage.MemoryStore` and a :class:`~kvraft.metafake.FakeMeta`) instead
        of opening SQLite in ``config.data_dir`` and starting pysyncobj; ``close`` closes them.
        ``gc_pauses``: the process's collector figures, for ``/metrics`` (``kvraft serve``)."""
        self.gc_pauses = gc_pauses
        self.config = config
        self.id = config.id
        self.rf = config.replication_factor
        self.clock: Clock = clock or SystemClock()  # duties, liveness: never skewed
        if store is None:
            os.makedirs(config.data_dir, exist_ok=True)
            store = Storage(os.path.join(config.data_dir, "store.db"), fsync=config.fsync)
        self.storage: Store = store
        max_offset_ms = int(config.max_clock_offset * 1000)
        # the HLC's physical clock: skewed as configured (KVRAFT_CLOCK_OFFSET_MS, chaos skew)
        hlc_clock = clock or SystemClock(config.clock_offset_ms)
        self.hlc = HLC(
            clock=hlc_clock,
            last=self.storage.max_ts,
            max_ahead_ms=max_offset_ms,
            mark=self.storage.clock_mark,
            reserve=self.storage.reserve_clock,
        )
        self.clock_watch = ClockWatch(max_offset_ms, self.clock)
        self.liveness = Liveness(self.id, self.clock)
        self.runner = Runner(self.clock)
        self.peers = PeerClient(
            config.secret,
            config.peer_timeout,
            address_of=self.address_of,
            mark=self.liveness.mark,
            stopping=self.runner.stopping,
            max_value_bytes=config.max_value_bytes,
        )
        self.peer_server = PeerServer(config.secret)  # api/ mounts it; handlers: serve_peers
        if meta is None:
            raft_peers = config.peers
            journal = os.path.join(config.data_dir, "raft.journal")
            if config.join and not os.path.exists(journal):
                raft_peers = self._peers_from(config.join)
            meta = Meta(config.raft, raft_peers, config.data_dir, config.secret)
        self.meta: ClusterMeta = meta
        self.placement = MetaPlacement(self.meta, self.liveness)  # what the parts read
        self.pool = ThreadPoolExecutor(max_workers=max(16, config.threads), thread_name_prefix="io")
        self.changes = ChangeHub()  # every record applied here, for /watch
        self.counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self.activity = Activity()  # data requests this node is serving now (told in pings)
        self.coordinator = Coordinator(
            self.id,
            config,
            self.storage,
            self.peers,
            self.placement,
            self.hlc,
            self.pool,
            self.count,
            self.changes.publish,
            lambda: ClockStanding(self.clock_watch.last, self.clock_watch.checked),
        )
        self._joined = False  # with --join: the cluster has added us to its Raft members
        self.liveness.started()  # liveness reference for nodes never heard from
        self.syncer = Syncer(
            self.id,
            self.meta,
            self.storage,
            self.peers,
            self.hlc,
            self.placement.is_alive,
            self.coordinator.apply_local,
            self.clock,
        )
        self.leader = Leader(
            self.id,
            config,
            self.meta,
            self.peers,
            self.hlc,
            members=self.placement.members,
            silent_for=self.liveness.silent_for,
        )
        self.pinger = Ping(
            self.id,
            members=self.placement.members,
            raft_size=lambda: len(self.meta.raft_members()),
            peers=self.peers,
            hlc=self.hlc,
            liveness=self.liveness,
            clock=self.clock_watch,
            peer_timeout=config.peer_timeout,
            submit=self.pool.submit,
        )
        self.hints = HintDelivery(
            self.id,
            self.meta.partitions,
            self.storage,
            self.coordinator.send_records,
            self.coordinator.apply_local,
            self.placement.is_alive,
            self.count,
        )
        for name, duty, period in (
            ("register", Register(config, self.meta, self.peers), REGISTER_INTERVAL),
            ("ping", self.pinger, PING_INTERVAL),
            ("hints", self.hints, HINT_INTERVAL),
            ("stats", StatsReport(self.id, self.storage, self.meta), STATS_INTERVAL),
            ("leader", self.leader, LEADER_INTERVAL),
            ("sync", self.syncer, SYNC_TICK),
        ):
            self.runner.add(name, duty, period)
        self.serve_peers(self.peer_server)
        self.started_at = self.clock.time()
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background duties (one thread each). Returns at once."""
        self.runner.start()

    def close(self) -> None:
        """Stop the duties (waits up to 5 s for each), then close the pool, metadata, peer
        connections and store."""
        self.runner.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.meta.close()
        self.peers.close()
        self.storage.close()

    def count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] += n

    def counter_values(self) -> dict[str, int]:
        """A consistent copy of this node's counters (thread-safe)."""
        with self._counter_lock:
            return dict(self.counters)

    def batch_stats(self) -> dict[str, int]:
        """Replica-write and read batches sent to peers, and the records they carried."""
        return self.peers.batch_stats()

    # -- cluster view --------------------------------------------------------------------------

    def members(self) -> dict[str, str]:
        """Node id -> HTTP address, for the members of the current Raft configuration."""
        return self.placement.members()

    def is_alive(self, node_id: str) -> bool:
        """Whether the last contact with ``node_id`` succeeded (optimistic before any contact)."""
        return self.placement.is_alive(node_id)

    def silent_for(self, node_id: str) -> float:
        """Seconds since the last good contact with ``node_id`` (or since this node started)."""
        return self.liveness.silent_for(node_id)

    def ready(self) -> tuple[bool, str]:
        if self.meta.leader_raft() is None:
            return False, "no Raft leader known"
        if not self.meta.caught_up():
            return False, "catching up with the Raft log"
        if self.id not in self.meta.members():
            return False, "this node is not registered in the cluster metadata yet"
        if not self.meta.partitions()[1]:
            return False, "no partition map yet"
        verdict = self.clock_verdict()
        if not verdict.ok:
            return False, verdict.describe()
        if not self.clock_checked():
            return False, "measuring the clock offset to the peers"
        return True, "ready"

    # -- clock offset guard ----------------------------------------------------------------------

    def clock_verdict(self) -> Verdict:
        """Whether this node's clock is within ``max_clock_offset`` of the majority of the peers
        it could measure (from its pings); logs when the verdict changes."""
        return self.pinger.verdict()

    def clock_checked(self) -> bool:
        """At least half of the Raft peers have answered a ping with their clock since this node
        started, so the verdict rests on evidence (once true it stays so: a member added later
        is judged as its samples come)."""
        return self.pinger.check_clock()

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]:
        """The key's partition and its replicas; Unavailable without a current map."""
        return self.placement.replicas_of(key)

    def watermarks(self) -> dict[int, int]:
        """Partition -> purge watermark, from the Raft metadata."""
        return self.placement.watermarks()

    def partition_map(self) -> tuple[tuple[str, ...], ...]:
        """Replicas of every partition (empty before the first map)."""
        return self.placement.partition_map()

    def readable(self, part: int) -> tuple[str, ...]:
        """Replicas of ``part`` that may serve reads: those not still being filled."""
        return self.placement.readable(part)

    def address_of(self, node_id: str) -> str:
        """The HTTP address (``host:port``) of member ``node_id``; PeerError if unknown."""
        return self.placement.address_of(node_id)

    # -- peer calls ------------------------------------------------------------------------------

    def serve_peers(self, server: PeerServer) -> None:
        """Register this node's answers to peer messages on ``server`` (the store's reads and
        writes, hints, pings, membership; the sync round's tree messages):
        :func:`kvraft.wiring.serve_node_messages`."""
        serve_node_messages(
            server,
            node_id=self.id,
            coordinator=self.coordinator,
            store=self.storage,
            hlc=self.hlc,
            meta=self.meta,
            members=self.leader,
            ready=lambda: self.ready()[0],
            load=lambda: self.activity.value,
        )

    # -- reads and writes: the coordinator's (kvraft.coordinator) --------------------------------

    def put(self, key: str, value: bytes, w: str = "quorum") -> WriteResult:
        return self.coordinator.put(key, value, w)

    def write_owner(self, key: str) -> str | None:
        return self.coordinator.write_owner(key)

    def owner_failed(self, node_id: str) -> None:
        self.coordinator.owner_failed(node_id)

    def create(self, value: bytes, w: str = "quorum") -> WriteResult:
        return self.coordinator.create(value, w)

    def delete(self, key: str, w: str = "quorum") -> WriteResult:
        return self.coordinator.delete(key, w)

    def get(self, key: str, r: str = "one") -> Record:
        return self.coordinator.get(key, r)

    def get_many(self, keys: Iterable[str], r: str = "one") -> dict[str, Record | None]:
        return self.coordinator.get_many(keys, r)

    def list_keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]:
        return self.coordinator.list_keys(prefix, after, limit)

    def explain(self, key: str) -> dict:
        return views.explain(self, key)

    def cluster(self) -> dict:
        return views.cluster(self)

    def metrics(self) -> dict[str, float]:
        return views.metrics(self)

    def _peers_from(self, http: str) -> tuple[str, ...]:
        """Raft addresses of a running cluster, asked from one of its members (``--join``).
        Blocks up to 60 s; RuntimeError if it never answers."""
        deadline = self.clock.monotonic() + 60
        while True:
            try:
                rafts = self.peers.ping_at(http).raft_members
                if rafts:
                    return tuple(r for r in rafts if r != self.config.raft)
            except (PeerError, ValueError):
                pass
            if self.clock.monotonic() > deadline:
                raise RuntimeError(f"cannot reach {http} to join its cluster")
            if self.runner.wait(0.5):
                raise RuntimeError("stopped while joining")

    def peer_loads(self) -> dict[str, int]:
        """The data requests each peer said it was serving at its last ping."""
        return self.liveness.peer_loads()

    def serving(self, node_id: str) -> bool:
        """Alive and ready to serve (last ping): what the leader balances requests over."""
        return self.liveness.serving(node_id)

    def gather(self, nodes: list[str], key: str) -> dict[str, Record | None]:
        """Each reachable node's version of ``key`` (asked in parallel); blocks until every
        node answered or failed (for :func:`kvraft.views.explain`)."""
        return self.coordinator.gather(nodes, key)

    # -- public surface for the HTTP layer (api/ports.py), so it never reaches into the parts --

    def leader_id(self) -> str | None:
        """The id of the partition (Raft) leader this node knows, or None. Does not block."""
        return self.meta.leader_id()

    def is_leader(self) -> bool:
        """Whether this node is the partition (Raft) leader now. Does not block."""
        return self.meta.is_leader()

    def map_epoch(self) -> int:
        """The partition map's epoch in this node's copy of the metadata. Does not block."""
        return self.meta.partitions()[0]

    def add_member(self, node_id: str, http: str, raft: str) -> dict:
        """Add a node to the cluster (done by the leader; forwarded to it from a follower).
        Blocks on Raft. BadRequest for a malformed field, Conflict for a taken id or address,
        Unavailable without a leader (then it may or may not have been applied)."""
        return self.leader.add_member(node_id, http, raft)

    def remove_member(self, node_id: str) -> dict:
        """Mark ``node_id`` for removal (its partitions move first, then the leader removes it
        from Raft); done by the leader, forwarded from a follower. Blocks on Raft; NotFound for
        an unknown id, Conflict when too few nodes would remain or it is the leader itself."""
        return self.leader.remove_member(node_id)
