"""Anti-entropy rounds: the IO side of :mod:`kvraft.antientropy`.

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
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import antientropy as ae
from . import peer as m
from .peer import PeerError, PeerServer
from .storage import Storage

if TYPE_CHECKING:
    from .node import Node

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


def answer_tree(storage: Storage, req: m.Tree) -> m.TreeHashes:
    """The hashes a :class:`~kvraft.peer.messages.Tree` request asks for."""
    leaves_of: dict[int, list[int]] = {}
    for p, groups in req.leaves.items():
        leaves = storage.leaf_hashes(int(p))
        leaves_of[p] = {g: [leaves[i] for i in ae.leaves_in_group(int(g))] for g in groups}
    return m.TreeHashes(
        {p: ae.root_hash(storage.leaf_hashes(int(p))) for p in req.roots},
        {p: ae.group_hashes(storage.leaf_hashes(int(p))) for p in req.groups},
        leaves_of,
    )


def answer_entries(storage: Storage, req: m.Entries) -> m.LeafEntries:
    """The (version, tombstone) of every key in those leaves."""
    return m.LeafEntries(dict(storage.leaf_entries(req.part, list(req.leaves))))


def answer_forget(storage: Storage, req: m.Forget) -> m.Forgotten:
    """Drop those keys if older than ``below`` (and this node's own watermark)."""
    below = min(req.below, storage.watermarks.get(req.part, 0))
    return m.Forgotten(storage.forget(req.part, list(req.keys), below))


def serve(server: PeerServer, storage: Storage) -> None:
    """Answer the sync messages from ``storage`` on ``server``."""
    server.register(m.Tree, lambda req: answer_tree(storage, req))
    server.register(m.Entries, lambda req: answer_entries(storage, req))
    server.register(m.Forget, lambda req: answer_forget(storage, req))


# -- primary side ----------------------------------------------------------------------------------


class Syncer:
    def __init__(self, node: Node) -> None:
        self.node = node
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

    def tick(self) -> RoundStats | None:
        """Run the current round if it is new to this node. Called periodically."""
        rnd = self.node.meta.sync_round()
        if rnd.id <= self.last_round:
            return None
        self.node.hlc.observe(rnd.started_ts)
        stats = self.run_round(rnd.id)
        self.last_round = rnd.id
        return stats

    def run_round(self, round_id: int) -> RoundStats:
        t0 = time.monotonic()
        node = self.node
        stats = RoundStats(round_id=round_id)
        _epoch, state = node.meta.map_state()
        mine: dict[str, list[int]] = {}  # other replica -> partitions I sync with it
        primary_of: list[int] = []
        for p, reps in enumerate(state.partitions):
            filled = [n for n in sorted(reps) if n not in state.filling.get(p, ())]
            live = [n for n in filled if node.is_alive(n)]
            if not live or live[0] != node.id:
                continue
            primary_of.append(p)
            for other in reps:
                if other != node.id:
                    mine.setdefault(other, []).append(p)
        stats.partitions = len(primary_of)
        ok_with: dict[int, set[str]] = {p: {node.id} for p in primary_of}
        for other, parts in sorted(mine.items()):
            if not node.is_alive(other):
                continue
            try:
                filling = {p for p in parts if other in state.filling.get(p, ())}
                self._sync_with(other, parts, stats, filling)
            except (PeerError, ValueError, KeyError) as exc:
                stats.errors.append(f"{other}: {exc}")
                continue
            for p in parts:
                ok_with[p].add(other)
        done = {p: tuple(sorted(n)) for p, n in ok_with.items() if set(state.partitions[p]) <= n}
        stats.synced = len(done)
        if done:
            try:
                node.meta.complete_sync(round_id, done)
            except Exception as exc:  # noqa: BLE001 - reported next round
                stats.errors.append(f"complete_sync: {exc}")
        self._collect(state, stats)
        stats.seconds = time.monotonic() - t0
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
        storage = self.node.storage
        local_leaves = {p: storage.leaf_hashes(p) for p in parts}
        peers = self.node.peers
        resp = peers.tree(other, m.Tree(roots=tuple(parts)))
        stats.bytes += resp.wire_bytes
        diff_parts = [p for p in parts if resp.roots[p] != ae.root_hash(local_leaves[p])]
        if not diff_parts:
            return
        resp = peers.tree(other, m.Tree(groups=tuple(diff_parts)))
        stats.bytes += resp.wire_bytes
        want: dict[int, list[int]] = {}
        for p in diff_parts:
            remote = resp.groups[p]
            groups = ae.differing(ae.group_hashes(local_leaves[p]), remote)
            if groups:
                want[p] = groups
        resp = peers.tree(other, m.Tree(leaves=want))
        stats.bytes += resp.wire_bytes
        push_keys: list[str] = []
        pull_keys: list[str] = []
        for p, groups in want.items():
            leaves = []
            for g in groups:
                remote = resp.leaves[p][g]
                for i, leaf in enumerate(ae.leaves_in_group(g)):
                    if int(remote[i]) != local_leaves[p][leaf]:
                        leaves.append(leaf)
            if not leaves:
                continue
            remote_entries = peers.entries(other, p, leaves)
            stats.bytes += remote_entries.wire_bytes
            theirs = remote_entries.entries
            ours = storage.leaf_entries(p, leaves)
            push, pull = ae.plan_exchange(ours, theirs)
            # a key one side lacks with a version below the watermark was deleted and its
            # tombstone purged: the side still holding it forgets it instead of spreading it
            mark = storage.watermarks.get(p, 0)
            doomed_there = [k for k in pull if k not in ours and theirs[k][0].ts < mark]
            doomed_here = (
                []
                if p in filling
                else [k for k in push if k not in theirs and ours[k][0].ts < mark]
            )
            if doomed_there:
                stats.bytes += peers.forget(other, p, doomed_there, mark).wire_bytes
                stats.purged += len(doomed_there)
            stats.purged += storage.forget(p, doomed_here, mark)
            push_keys += [k for k in push if k not in doomed_here]
            pull_keys += [k for k in pull if k not in doomed_there]
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
            stats.repaired += sum(r.applied for r in self.node.apply_local(records))

    def _collect(self, state, stats: RoundStats) -> None:
        """Purge tombstones below the watermarks; hand off partitions this node left."""
        node = self.node
        storage = node.storage
        marks = node.meta.watermarks()
        # the watermark rule (a record older than the watermark for a key this node lacks was
        # deleted) holds only where this node is a filled replica: one still being filled lacks
        # records because it never had them
        storage.watermarks = {
            p: mark
            for p, mark in marks.items()
            if p < len(state.partitions)
            and node.id in state.partitions[p]
            and node.id not in state.filling.get(p, ())
        }
        held = storage.partitions_held()
        for p in sorted(held):
            if p >= len(state.partitions):
                continue
            reps = state.partitions[p]
            if node.id in reps:
                if marks.get(p, 0) > self._purged.get(p, 0):  # only when the watermark moved
                    stats.purged += storage.purge_tombstones(p, marks[p])
                    self._purged[p] = marks[p]
                continue
            try:
                stats.handed_off += self._hand_off(p, reps)
            except (PeerError, ValueError) as exc:
                stats.errors.append(f"handoff of partition {p}: {exc}")

    def _hand_off(self, part: int, replicas: tuple[str, ...]) -> int:
        """Send every record of a partition this node no longer holds to its replicas, then
        drop it. Receivers keep what is newer (and drop what a purged tombstone deleted)."""
        node = self.node
        if not all(node.is_alive(r) for r in replicas):
            return 0
        after, sent = "", 0
        for _ in range(100000):
            batch = node.storage.scan_partition(part, after, HANDOFF_BATCH)
            if not batch:
                break
            for r in replicas:
                node.peers.apply(r, batch)
            sent += len(batch)
            after = batch[-1].key
        node.storage.drop_partition(part)
        return sent
