"""Read-only views of a node for operators: ``/cluster``, ``?explain=1`` and metrics figures.

Functions of the parts a node shows (:class:`Node`, the protocol declared here, which
:class:`kvraft.node.Node` implements); they read its metadata, store and counters and change
nothing (``explain`` asks every member for its version of the key, and repairs nothing).
"""

from __future__ import annotations

from typing import Protocol

from .collector import Pauses
from .config import Config
from .core import placement
from .core.balance import Activity
from .core.clockguard import Verdict
from .keys import check_key
from .meta import ClusterMeta
from .storage import Record, Store
from .sync import Syncer


class Node(Protocol):
    """What the views read of a node."""

    @property
    def id(self) -> str: ...

    @property
    def rf(self) -> int: ...

    @property
    def config(self) -> Config: ...

    @property
    def meta(self) -> ClusterMeta: ...

    @property
    def storage(self) -> Store: ...

    @property
    def syncer(self) -> Syncer: ...

    @property
    def activity(self) -> Activity: ...

    @property
    def gc_pauses(self) -> Pauses | None: ...

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]: ...

    def members(self) -> dict[str, str]: ...

    def gather(self, nodes: list[str], key: str) -> dict[str, Record | None]: ...

    def is_alive(self, node_id: str) -> bool: ...

    def serving(self, node_id: str) -> bool: ...

    def peer_loads(self) -> dict[str, int]: ...

    def clock_verdict(self) -> Verdict: ...

    def counter_values(self) -> dict[str, int]: ...

    def batch_stats(self) -> dict[str, int]: ...


def explain(node: Node, key: str) -> dict:
    check_key(key)
    part, replicas = node.replicas_of(key)
    answers = node.gather(sorted(node.members()), key)
    versions: dict[str, str | None] = {}
    for n in sorted(node.members()):
        rec = answers.get(n)
        if n not in answers:
            versions[n] = "unreachable"
        elif rec is None:
            versions[n] = None
        else:
            versions[n] = ("tombstone:" if rec.tomb else "") + rec.version.encode()
    held = {versions.get(n) for n in replicas}
    stats = node.meta.stats()
    return {
        "key": key,
        "partition": part,
        "replicas": list(replicas),
        "versions": {n: versions[n] for n in replicas if n in versions},
        "holders": sorted(
            n
            for n, v in versions.items()
            if v not in (None, "unreachable") and not v.startswith("tombstone")
        ),
        "others": {n: v for n, v in versions.items() if n not in replicas},
        "agree": len(held) == 1 and "unreachable" not in held,
        "hints_pending": node.storage.hints_pending,
        "reason": (
            f"partition {part} of {len(node.meta.partitions()[1])} by blake2b(key); placed by "
            f"the leader on the {node.rf} nodes with the least stored data at placement "
            f"(now: " + ", ".join(f"{n}={s.bytes}B" for n, s in sorted(stats.items())) + ")"
        ),
    }


def cluster(node: Node) -> dict:
    members = node.meta.members()
    raft = set(node.meta.raft_members())
    stats = node.meta.stats()
    leader = node.meta.leader_id()
    epoch, state = node.meta.map_state()
    pmap = state.partitions
    nodes = []
    peer_loads = node.peer_loads()
    clock = node.clock_verdict()
    for node_id, m in sorted(members.items()):
        s = stats.get(node_id)
        if node_id == node.id:
            keys: int | None = node.storage.live_keys
            nbytes: int | None = node.storage.live_bytes
        else:
            keys, nbytes = (s.keys, s.bytes) if s else (None, None)
        nodes.append(
            {
                "id": node_id,
                "http": m.http,
                "raft": m.raft,
                "alive": node.is_alive(node_id),
                "is_leader": node_id == leader,
                "serving": node.serving(node_id),
                "load": node.activity.value if node_id == node.id else peer_loads.get(node_id),
                "keys": keys,
                "bytes": nbytes,
                "member": m.raft in raft,
                "clock_offset_ms": (
                    0.0 if node_id == node.id else _round(clock.offsets_ms.get(node_id))
                ),
            }
        )
    return {
        "node": node.id,
        "leader": leader,
        "nodes": nodes,
        "partitions": {str(i): list(r) for i, r in enumerate(pmap)},
        "partition_epoch": epoch,
        "replication_factor": node.rf,
        "raft": node.meta.status(),
        "hints_pending": node.storage.hints_pending,
        "hints_pending_cluster": sum(s.hints for s in stats.values()),
        "filling": {str(p): list(f) for p, f in state.filling.items()},
        "leaving": {str(p): list(f) for p, f in state.leaving.items()},
        "under_replicated": under_replicated(node, state),
        "removing": list(node.meta.removing()),
        "rebalances": node.meta.rebalances(),
        "sync": sync_view(node),
        "clock": {
            "ok": clock.ok,
            "max_offset_ms": clock.max_offset_ms,
            "offsets_ms": {p: _round(o) for p, o in clock.offsets_ms.items()},
            "out_of_bounds": list(clock.off),
            "message": clock.describe(),
        },
    }


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


def under_replicated(node: Node, state: placement.MapState | None = None) -> int:
    """Partitions with fewer than ``replication_factor`` filled, live replicas."""
    state = state or node.meta.map_state()[1]
    count = 0
    for p, reps in enumerate(state.partitions):
        filled = [n for n in reps if n not in state.filling.get(p, ()) and node.is_alive(n)]
        count += len(filled) < node.rf
    return count


def sync_view(node: Node) -> dict:
    rnd = node.meta.sync_round()
    last = node.syncer.last
    return {
        "round": rnd.id,
        "interval": node.config.sync_interval,
        "last_local_round": {
            "id": last.round_id,
            "seconds": round(last.seconds, 4),
            "partitions": last.partitions,
            "synced": last.synced,
            "records": last.records,
            "bytes": last.bytes,
            "repaired": last.repaired,
            "purged": last.purged,
            "handed_off": last.handed_off,
            "errors": last.errors[:5],
        },
        "totals": dict(node.syncer.totals),
        "partitions_synced_last_round": sum(
            1 for r in node.meta.synced().values() if r >= rnd.id - 1
        ),
    }


def metrics(node: Node) -> dict[str, float]:
    out = {k: float(v) for k, v in node.counter_values().items()}
    st = node.meta.status()
    out.update(
        {
            "keys": node.storage.live_keys,
            "bytes": node.storage.live_bytes,
            "hints_pending": node.storage.hints_pending,
            "raft_term": st["term"],
            "raft_commit_index": st["commit_index"],
            "raft_is_leader": float(node.meta.is_leader()),
            "nodes_alive": float(sum(node.is_alive(n) for n in node.members())),
            "partitions_under_replicated": float(under_replicated(node)),
            "rebalances": float(node.meta.rebalances()),
            "sync_round": float(node.meta.sync_round().id),
            "sync_last_seconds": node.syncer.last.seconds,
            "sync_last_records": float(node.syncer.last.records),
            "sync_last_bytes": float(node.syncer.last.bytes),
        }
    )
    out.update({k: float(v) for k, v in node.syncer.totals.items()})
    out.update({k: float(v) for k, v in node.batch_stats().items()})
    if node.gc_pauses is not None:
        out.update(node.gc_pauses.figures())
    commits = getattr(node.storage, "commits", None)  # the SQLite store's group commit
    if commits is not None:
        out["store_commits"], out["store_committed_writes"] = map(float, commits)
        out["store_waiting"] = float(node.storage.waiting)  # type: ignore[attr-defined]
    return out
