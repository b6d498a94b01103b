"""Pure placement decisions: which partition a key is in, and which nodes hold each partition.

No IO, no clock, no randomness: the same inputs give the same map on every node, which is what
lets the Raft leader compute a map and every node trust it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PartitionMap = tuple[tuple[str, ...], ...]


def partition_of(key: str, partitions: int) -> int:
    """Stable hash of the key (blake2b, not Python's salted hash) modulo the partition count."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def place(
    partitions: int,
    nodes: Sequence[str],
    stored_bytes: Mapping[str, int],
    replication_factor: int,
) -> PartitionMap:
    """Place every partition on ``replication_factor`` distinct nodes with the least stored data.

    Greedy: partitions are assigned one at a time to the nodes whose projected load (bytes already
    stored plus an even share of the cluster's data for each partition assigned so far) is lowest,
    ties broken by fewer partitions assigned, then node id. A node that already stores much more
    than the others therefore receives fewer (possibly no) partitions. Raises ValueError when
    there are fewer nodes than ``replication_factor``.
    """
    members = sorted(set(nodes))
    if replication_factor < 1 or len(members) < replication_factor:
        raise ValueError(
            f"need at least {replication_factor} nodes for replication factor "
            f"{replication_factor}, have {len(members)}"
        )
    total = sum(max(0, stored_bytes.get(n, 0)) for n in members)
    # Expected bytes a partition brings; at least 1 so partition counts balance on an empty cluster.
    share = max(1, total // (partitions * replication_factor))
    load = {n: max(0, stored_bytes.get(n, 0)) for n in members}
    count = dict.fromkeys(members, 0)
    result = []
    for _ in range(partitions):
        chosen = sorted(members, key=lambda n: (load[n], count[n], n))[:replication_factor]
        for n in chosen:
            load[n] += share
            count[n] += 1
        result.append(tuple(sorted(chosen)))
    return tuple(result)


def stand_ins(partition: int, replicas: Sequence[str], nodes: Sequence[str]) -> list[str]:
    """Nodes outside ``replicas`` in the order they stand in (hold hints) for this partition.

    The order rotates with the partition so that hints for different partitions spread over the
    cluster instead of all landing on one node.
    """
    others = sorted(n for n in set(nodes) if n not in replicas)
    if not others:
        return []
    k = partition % len(others)
    return others[k:] + others[:k]


def quorum(replication_factor: int) -> int:
    return replication_factor // 2 + 1


def required_acks(level: str, replication_factor: int) -> int:
    """Acks a consistency level needs: one=1, quorum=majority, all=every replica."""
    if level == "one":
        return 1
    if level == "quorum":
        return quorum(replication_factor)
    if level == "all":
        return replication_factor
    raise ValueError(f"unknown consistency level {level!r}: use one, quorum or all")


@dataclass(frozen=True)
class MapState:
    """A partition map in motion: replicas per partition (filling ones included), the replicas
    still being filled from a surviving copy, and the replicas leaving once the fill is done."""

    partitions: PartitionMap
    filling: dict[int, tuple[str, ...]] = field(default_factory=dict)
    leaving: dict[int, tuple[str, ...]] = field(default_factory=dict)


def plan(
    state: MapState,
    live: Sequence[str],
    dead: Sequence[str],
    removing: Sequence[str],
    stored_bytes: Mapping[str, int],
    replication_factor: int,
    max_moves: int = 16,
) -> MapState | None:
    """The next step toward a healthy, balanced map, or None when there is nothing to do.

    In order: finish moves whose fill completed (drop the leaving replica); replace dead
    replicas at once by the least-loaded live nodes (added as filling: they get writes, and serve
    reads only once a sync round filled them); start draining nodes being removed; then move at
    most ``max_moves`` partitions from the most to the least loaded node (partition count, then
    stored bytes) while counts differ by more than one. Pure and deterministic.
    """
    parts = [list(r) for r in state.partitions]
    filling = {p: list(f) for p, f in state.filling.items()}
    leaving = {p: list(f) for p, f in state.leaving.items()}
    dead_s, removing_s = set(dead), set(removing)
    eligible = sorted(n for n in set(live) if n not in dead_s and n not in removing_s)
    changed = False

    for p in list(leaving):
        if not filling.get(p):
            parts[p] = [n for n in parts[p] if n not in leaving[p]]
            del leaving[p]
            changed = True

    def counts() -> dict[str, int]:
        c = dict.fromkeys(eligible, 0)
        for p, reps in enumerate(parts):
            for n in reps:
                if n in c and n not in leaving.get(p, ()):
                    c[n] += 1
        return c

    def load(n: str, c: dict[str, int]) -> tuple[int, int, str]:
        return (c[n], stored_bytes.get(n, 0), n)

    def add_filling(p: int, c: dict[str, int]) -> str | None:
        options = [n for n in eligible if n not in parts[p]]
        if not options:
            return None
        best = min(options, key=lambda n: load(n, c))
        parts[p].append(best)
        filling.setdefault(p, []).append(best)
        c[best] += 1
        return best

    c = counts()
    for p in range(len(parts)):
        gone = [n for n in parts[p] if n in dead_s]
        if gone:
            parts[p] = [n for n in parts[p] if n not in dead_s]
            filling[p] = [n for n in filling.get(p, []) if n not in dead_s]
            leaving[p] = [n for n in leaving.get(p, []) if n not in dead_s]
            changed = True
        # (dropping a dead node may leave a move with nothing left to drop)
        if p in leaving and not leaving[p]:
            del leaving[p]
        keep = len([n for n in parts[p] if n not in leaving.get(p, ())])
        while keep < replication_factor and add_filling(p, c):
            keep += 1
            changed = True

    for p in range(len(parts)):
        if p in leaving:
            continue
        going = [n for n in parts[p] if n in removing_s]
        if going and add_filling(p, c):
            leaving[p] = going[:1]
            changed = True

    moves = 0
    while moves < max_moves and len(eligible) > 1:
        c = counts()
        src = max(eligible, key=lambda n: load(n, c))
        dst = min(eligible, key=lambda n: load(n, c))
        if c[src] - c[dst] <= 1:
            break
        candidates = [
            p
            for p in range(len(parts))
            if src in parts[p] and dst not in parts[p] and p not in leaving and not filling.get(p)
        ]
        if not candidates:
            break
        p = candidates[0]
        parts[p].append(dst)
        filling.setdefault(p, []).append(dst)
        leaving[p] = [src]
        moves += 1
        changed = True

    if not changed:
        return None
    return MapState(
        tuple(tuple(sorted(r)) for r in parts),
        {p: tuple(f) for p, f in filling.items() if f},
        {p: tuple(f) for p, f in leaving.items() if f},
    )
