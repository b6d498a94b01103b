"""The node's wiring that the in-process cluster shares: its placement view over the metadata and
its answers to peer messages.

:class:`kvraft.node.Node` (over :class:`~kvraft.meta.Meta` and SQLite) and
``tests/harness/inproc.py`` (over :class:`~kvraft.metafake.FakeMeta` and
:class:`~kvraft.storage.MemoryStore`) build the same two things from here, so the component tier
tests the production glue:

- :class:`MetaPlacement`: the coordinator's :class:`~kvraft.coordinator.PlacementView` (and the
  members, liveness and address book the duties and the peer client read), over any
  :class:`~kvraft.meta.ClusterMeta` and a :class:`~kvraft.duties.Liveness`;
- :func:`serve_node_messages`: registers every answer a node gives its peers (the coordinator's
  Apply, Scan and Hint; ReadKeys, Ping and MemberChange; the sync round's messages).

Nothing here starts threads, reads a clock or does IO of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from . import peer as m
from . import sync
from .coordinator import Coordinator
from .core import placement
from .duties import Liveness
from .errors import Unavailable
from .hlc import HLC
from .meta import ClusterMeta
from .peer import PeerError, PeerServer
from .reports.read import local_records
from .storage import Store

__all__ = ["MemberChanges", "MetaPlacement", "serve_node_messages"]


class MetaPlacement:
    """What a node reads of the cluster: the partition map, the members and their addresses
    (from ``meta``) and whether each peer is alive (from ``liveness``, the marks its peer client
    tells). Implements :class:`~kvraft.coordinator.PlacementView`. Never blocks; thread-safe
    (the metadata reads are snapshots, :class:`~kvraft.duties.Liveness` is thread-safe)."""

    def __init__(self, meta: ClusterMeta, liveness: Liveness) -> None:
        self.meta = meta
        self.liveness = liveness

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]:
        """The key's partition and its replicas; Unavailable before this node has a current
        partition map (none yet, or its metadata has not caught up with the Raft log)."""
        _epoch, pmap = self.meta.partitions()
        if not pmap or not self.meta.caught_up():
            raise Unavailable("this node has no current partition map yet; retry shortly")
        part = placement.partition_of(key, len(pmap))
        return part, pmap[part]

    def readable(self, part: int) -> tuple[str, ...]:
        """Replicas of ``part`` that may serve reads: those not still being filled."""
        _epoch, state = self.meta.map_state()
        filling = state.filling.get(part, ())
        return tuple(n for n in state.partitions[part] if n not in filling)

    def write_set(self, key: str) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
        """The key's partition, its replicas and those leaving it, from one map snapshot;
        Unavailable as :meth:`replicas_of`."""
        _epoch, state = self.meta.map_state()
        if not state.partitions or not self.meta.caught_up():
            raise Unavailable("this node has no current partition map yet; retry shortly")
        part = placement.partition_of(key, len(state.partitions))
        return part, tuple(state.partitions[part]), tuple(state.leaving.get(part, ()))

    def watermarks(self) -> dict[int, int]:
        """Partition -> purge watermark, from the metadata."""
        return self.meta.watermarks()

    def partition_map(self) -> tuple[tuple[str, ...], ...]:
        """Replicas of every partition (empty before the first map)."""
        return self.meta.partitions()[1]

    def members(self) -> dict[str, str]:
        """Node id -> HTTP address, for the registered members of the current Raft
        configuration."""
        raft = set(self.meta.raft_members())
        return {x.id: x.http for x in self.meta.members().values() if x.raft in raft}

    def removing(self) -> tuple[str, ...]:
        """The members being drained out (the metadata's removal list)."""
        return tuple(self.meta.removing())

    def is_alive(self, node_id: str) -> bool:
        """Whether the last contact with ``node_id`` succeeded (:meth:`Liveness.is_alive`)."""
        return self.liveness.is_alive(node_id)

    def serving(self, node_id: str) -> bool:
        """Alive and ready at its last ping (:meth:`Liveness.serving`)."""
        return self.liveness.serving(node_id)

    def address_of(self, node_id: str) -> str:
        """The HTTP address (``host:port``) of member ``node_id``; PeerError if unknown."""
        http = self.meta.http_of(node_id)
        if http is None:
            raise PeerError(f"unknown node {node_id}")
        return http


class MemberChanges(Protocol):
    """The membership changes a node answers MemberChange with (:class:`kvraft.leader.Leader`)."""

    def add_member(self, node_id: str, http: str, raft: str) -> dict: ...

    def remove_member(self, node_id: str) -> dict: ...


def serve_node_messages(
    server: PeerServer,
    *,
    node_id: str,
    coordinator: Coordinator,
    store: Store,
    hlc: HLC,
    meta: ClusterMeta,
    members: MemberChanges,
    ready: Callable[[], bool],
    load: Callable[[], int],
) -> None:
    """Register on ``server`` every answer a node gives its peers: Apply, Scan and Hint
    (``coordinator.serve``); ReadKeys from ``store`` (within the request's byte budget, if it
    has one); Ping (this node's id, live keys, ``ready()``, ``load()``, HLC clock and Raft
    members); MemberChange (``members``, which forwards to the leader when not it); and the sync
    round's Tree, Entries and Forget (:func:`kvraft.sync.serve`)."""

    def answer_read(msg: m.ReadKeys) -> m.Records:
        if msg.max_bytes is None:
            return m.Records(tuple(store.get_many(list(msg.keys))))
        records, done = local_records(store.get, msg.keys, msg.max_bytes)
        return m.Records(tuple(records), done)

    def answer_ping(_msg: m.Ping) -> m.Pong:
        return m.Pong(
            node_id,
            store.live_keys,
            ready(),
            load(),
            hlc.physical(),
            tuple(meta.raft_members()),
        )

    def answer_members(msg: m.MemberChange) -> m.JsonAnswer:
        if msg.op == "add":
            return m.JsonAnswer(members.add_member(msg.id, msg.http, msg.raft))
        return m.JsonAnswer(members.remove_member(msg.id))

    coordinator.serve(server)  # Apply, Scan, Hint
    server.register(m.ReadKeys, answer_read)
    server.register(m.Ping, answer_ping)
    server.register(m.MemberChange, answer_members)
    sync.serve(server, store)
