"""Pure placement decisions: which partition a key is in, and which nodes hold each partition.

No IO, no clock, no randomness: the same inputs give the same map on every node, which is what
lets the Raft leader compute a map and every node trust it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

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
