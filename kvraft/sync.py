"""Anti-entropy rounds: the IO side of :mod:`kvraft.core.antientropy`.

When the Raft leader opens a sync round (recorded in the metadata), each node acts as the
*primary* of the partitions whose first live, filled replica it is. For each such partition and
each other replica it descends the hash tree over the network (roots of all its partitions in one
request, then group hashes, then leaf hashes, then the (key, version) entries of differing leaves)
and then pushes the records it has newer and pulls those the other has newer: bytes and records
exchanged grow with the difference. It then reports the partitions synced with all their replicas
in Raft (which clears filling replicas and lets the next round advance tombstone watermarks),
purges tombstones below the watermarks, and hands off (then drops) partitions it no longer holds.

Peer side: :func:`serve` registers the answers to the tree, entries and forget messages
(:mod:`kvraft.peer.messages`), reads of the local store, on the node's peer server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import peer as m
from .core import antientropy as ae
from .core import syncplan
from .core.placement import MapState
from .hlc import HLC
from .meta import ClusterMeta
from .peer import PeerError, Peers, PeerServer
from .storage import ApplyResult, Record, Store


class Monotonic(Protocol):
    def monotonic(self) -> float: ...


log = logging.getLogger(__name__)

HANDOFF_BATCH = 500


@dataclass
class RoundStats:
    round_id: int = 0
    partitions: int = 0
    synced: int = 0
    records: int = 0  # records exchanged (pushed + pulled)
    bytes: int = 0  # peer message bytes sent and received
    repaired: int = 0  # records that changed a replica
    purged: int = 0
    handed_off: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


# -- peer side (reads of the local store) --------------------------------------------------------


def answer_tree(storage: Store, req: m.Tree) -> m.TreeHashes:
    """The hashes a :class:`~kvraft.peer.messages.Tree` request asks for."""
    leaves_of: dict[int, dict[int, list[int]]] = {}
    for p, groups in req.leaves.items():
        leaves = storage.leaf_hashes(p)
        leaves_of[p] = {g: [leaves[i] for i in ae.leaves_in_group(g)] for g in groups}
    return m.TreeHashes(
        {p: ae.root_hash(storage.leaf_hashes(p)) for p in req.roots},
        {p: ae.group_hashes(storage.leaf_hashes(p)) for p in req.groups},
        leaves_of,
    )


def answer_entries(storage: Store, req: m.Entries) -> m.LeafEntries:
    """The (version, tombstone) of every key in those leaves."""
    return m.LeafEntries(dict(storage.leaf_entries(req.part, list(req.leaves))))


def answer_forget(storage: Store, req: m.Forget) -> m.Forgotten:
    """Drop those keys if older than ``below`` (and this node's own watermark)."""
    below = min(req.below, storage.watermarks.get(req.part, 0))
    return m.Forgotten(storage.forget(req.part, list(req.keys), below))


def serve(server: PeerServer, storage: Store) -> None:
    """Answer the sync messages from ``storage`` on ``server``."""
    server.register(m.Tree, lambda req: answer_tree(storage, req))
    server.register(m.Entries, lambda req: answer_entries(storage, req))
    server.register(m.Forget, lambda req: answer_forget(storage, req))


# -- primary side ----------------------------------------------------------------------------------


class Syncer:
    """The sync duty (``tick(now)``, driven by :class:`kvraft.duties.Runner`): runs each round
    the leader opens, as the primary of this node's partitions. Gets its parts, not the node:
    the metadata, the local store, the peers, the HLC, the liveness test, the local apply (which
    publishes to watchers) and a clock for the round's duration."""

    def __init__(
        self,
        self_id: str,
        meta: ClusterMeta,
        storage: Store,
        peers: Peers,
        hlc: HLC,
        is_alive: Callable[[str], bool],
        apply_local: Callable[[list[Record]], list[ApplyResult]],
        clock: Monotonic,
    ) -> None:
        self.self_id = self_id
        self.meta = meta
        self.storage = storage
        self.peers = peers
        self.hlc = hlc
        self.is_alive = is_alive
        self.apply_local = apply_local
        self.clock = clock
        self.last_round = 0
        self.last = RoundStats()
        self._purged: dict[int, int] = {}  # partition -> watermark it was last purged below
        self.totals = {
            "sync_rounds": 0,
            "sync_records": 0,
            "sync_bytes": 0,
            "sync_keys_repaired": 0,
            "tombstones_purged": 0,
            "records_handed_off": 0,
        }

    def tick(self, now: float = 0.0) -> RoundStats | None:
        """Run the current round if it is new to this node (blocks for the round's peer calls).
        ``now`` is unused: rounds are opened by the leader, and timed by the clock."""
        rnd = self.meta.sync_round()
        if rnd.id <= self.last_round:
            return None
        self.hlc.observe(rnd.started_ts)
        stats = self.run_round(rnd.id)
        self.last_round = rnd.id
        return stats

    def run_round(self, round_id: int) -> RoundStats:
        t0 = self.clock.monotonic()
        stats = RoundStats(round_id=round_id)
        _epoch, state = self.meta.map_state()
        alive = {n: self.is_alive(n) for reps in state.partitions for n in reps}
        plan = syncplan.primaries(state, self.self_id, alive)
        stats.partitions = len(plan.parts)
        ok_with: dict[int, set[str]] = {p: {self.self_id} for p in plan.parts}
        for other, parts in sorted(plan.peers.items()):
            if not self.is_alive(other):
                continue
            try:
                filling = {p for p in parts if other in state.filling.get(p, ())}
                self._sync_with(other, parts, stats, filling)
            except (PeerError, ValueError, KeyError) as exc:
                stats.errors.append(f"{other}: {exc}")
                continue
            for p in parts:
                ok_with[p].add(other)
        done = syncplan.synced(state, ok_with)
        stats.synced = len(done)
        if done:
            try:
                self.meta.complete_sync(round_id, done)
            except Exception as exc:  # noqa: BLE001 - reported next round
                stats.errors.append(f"complete_sync: {exc}")
        self._collect(state, stats)
        stats.seconds = self.clock.monotonic() - t0
        self.last = stats
        for name, value in (
            ("sync_rounds", 1),
            ("sync_records", stats.records),
            ("sync_bytes", stats.bytes),
            ("sync_keys_repaired", stats.repaired),
            ("tombstones_purged", stats.purged),
            ("records_handed_off", stats.handed_off),
        ):
            self.totals[name] += value
        return stats

    def _sync_with(
        self, other: str, parts: list[int], stats: RoundStats, filling: set[int]
    ) -> None:
        """Sync ``parts`` with replica ``other``; ``filling``: the parts ``other`` is still
        being filled for (it lacks records because it never had them, not because they were
        deleted, so nothing it lacks is taken for a purged key)."""
        storage = self.storage
        peers = self.peers
        push_keys: list[str] = []
        pull_keys: list[str] = []
        for diff in ae.descend(storage, _PeerTree(peers, other, stats), parts):
            p, ours, theirs = diff.part, diff.ours, diff.theirs
            push, pull = ae.plan_exchange(ours, theirs)
            mark = storage.watermarks.get(p, 0)
            doomed = syncplan.forget(push, pull, ours, theirs, mark, p in filling)
            if doomed.there:
                stats.bytes += peers.forget(other, p, doomed.there, mark).wire_bytes
                stats.purged += len(doomed.there)
            stats.purged += storage.forget(p, doomed.here, mark)
            push_keys += [k for k in push if k not in doomed.here]
            pull_keys += [k for k in pull if k not in doomed.there]
        if push_keys:
            records = storage.get_many(push_keys)
            applied = peers.apply(other, records)
            stats.bytes += applied.wire_bytes
            stats.records += len(records)
            stats.repaired += sum(1 for r in applied.results if r.applied)
        if pull_keys:
            fetched = peers.read_keys(other, pull_keys)
            stats.bytes += fetched.wire_bytes
            records = list(fetched.records)
            stats.records += len(records)
            stats.repaired += sum(r.applied for r in self.apply_local(records))

    def _collect(self, state: MapState, stats: RoundStats) -> None:
        """Purge tombstones below the watermarks; hand off partitions this node left."""
        storage = self.storage
        marks = self.meta.watermarks()
        storage.watermarks = syncplan.held_watermarks(marks, state, self.self_id)
        held = storage.partitions_held()
        for step in syncplan.collect(held, state, self.self_id, marks, self._purged):
            if isinstance(step, syncplan.Purge):
                stats.purged += storage.purge_tombstones(step.part, step.below)
                self._purged[step.part] = step.below
                continue
            try:
                stats.handed_off += self._hand_off(step.part, step.replicas)
            except (PeerError, ValueError) as exc:
                stats.errors.append(f"handoff of partition {step.part}: {exc}")

    def _hand_off(self, part: int, replicas: tuple[str, ...]) -> int:
        """Send every record of a partition this node no longer holds to its replicas, then
        drop it. Receivers keep what is newer (and drop what a purged tombstone deleted)."""
        if not all(self.is_alive(r) for r in replicas):
            return 0
        after, sent = "", 0
        for _ in range(100000):
            batch = self.storage.scan_partition(part, after, HANDOFF_BATCH)
            if not batch:
                break
            for r in replicas:
                self.peers.apply(r, batch)
            sent += len(batch)
            after = batch[-1].key
        self.storage.drop_partition(part)
        return sent


class _PeerTree:
    """The other replica's hash tree over the Tree and Entries peer messages (the network side
    of :func:`kvraft.core.antientropy.descend`); counts the bytes in ``stats``. Raises
    PeerError (a malformed answer too)."""

    def __init__(self, peers: Peers, other: str, stats: RoundStats) -> None:
        self.peers = peers
        self.other = other
        self.stats = stats

    def roots(self, parts: Sequence[int]) -> dict[int, int]:
        resp = self.peers.tree(self.other, m.Tree(roots=tuple(parts)))
        self.stats.bytes += resp.wire_bytes
        return {p: resp.roots[p] for p in parts}

    def groups(self, parts: Sequence[int]) -> dict[int, list[int]]:
        resp = self.peers.tree(self.other, m.Tree(groups=tuple(parts)))
        self.stats.bytes += resp.wire_bytes
        return {p: resp.groups[p] for p in parts}

    def leaves(self, want: Mapping[int, Sequence[int]]) -> dict[int, dict[int, list[int]]]:
        resp = self.peers.tree(self.other, m.Tree(leaves=want))
        self.stats.bytes += resp.wire_bytes
        return {p: {g: resp.leaves[p][g] for g in groups} for p, groups in want.items()}

    def entries(self, part: int, leaves: Sequence[int]) -> dict[str, ae.Entry]:
        resp = self.peers.entries(self.other, part, leaves)
        self.stats.bytes += resp.wire_bytes
        return dict(resp.entries)
