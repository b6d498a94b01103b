"""Pure anti-entropy logic: record hashes, the per-partition hash tree, and diff planning.

Each partition's keys fall into ``LEAVES`` leaves by a hash of the key. A leaf's hash is the XOR of
its records' hashes (a record hash covers key, version and tombstone flag), so it is independent
of order and is updated in O(1) when a record changes (XOR the old hash out, the new one in).
Leaves group into ``GROUPS`` groups of ``FANOUT`` leaves; a group hash is the XOR of its leaves, and
the partition's root the XOR of all. Two replicas compare roots, then the group hashes of the
partitions that differ, then the leaf hashes of the groups that differ, then the (key, version)
entries of the leaves that differ, and exchange only the records whose versions differ: the cost
grows with the difference, not with the data.

No IO here; everything is a function of its inputs (tested with Hypothesis).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from ..model import Version

FANOUT = 32
GROUPS = 32
LEAVES = FANOUT * GROUPS

Entry = tuple[Version, bool]  # (version, tombstone)


def leaf_of(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"kvleaf").digest()
    return int.from_bytes(digest, "big") % LEAVES


def record_hash(key: str, version: Version, tomb: bool) -> int:
    data = f"{key}\x00{version.ts}\x00{version.node}\x00{int(tomb)}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def xor_all(values: Iterable[int]) -> int:
    out = 0
    for v in values:
        out ^= v
    return out


def group_hashes(leaves: Sequence[int]) -> list[int]:
    return [xor_all(leaves[g * FANOUT : (g + 1) * FANOUT]) for g in range(GROUPS)]


def root_hash(leaves: Sequence[int]) -> int:
    return xor_all(leaves)


def differing(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Indices where two equally long hash lists differ."""
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def leaves_in_group(group: int) -> range:
    return range(group * FANOUT, (group + 1) * FANOUT)


def plan_exchange(
    local: Mapping[str, Entry], remote: Mapping[str, Entry]
) -> tuple[list[str], list[str]]:
    """Keys to push (this side is newer or the other lacks it) and to pull (the other is newer).

    Last writer wins on (HLC timestamp, node id); tombstones are versions like any other.
    Keys with equal versions are in neither list. Both lists are sorted.
    """
    push = sorted(k for k, (v, _t) in local.items() if k not in remote or remote[k][0] < v)
    pull = sorted(k for k, (v, _t) in remote.items() if k not in local or local[k][0] < v)
    return push, pull


def merge(a: Mapping[str, Entry], b: Mapping[str, Entry]) -> dict[str, Entry]:
    """The state both replicas reach after a sync: per key, the newer entry."""
    out = dict(a)
    for k, e in b.items():
        if k not in out or out[k][0] < e[0]:
            out[k] = e
    return out


def tree_diff(local: Mapping[str, Entry], remote: Mapping[str, Entry]) -> set[str]:
    """Keys the tree descent finds differing (used by tests to check the descent is exact)."""
    lh, rh = leaf_table(local), leaf_table(remote)
    if root_hash(lh) == root_hash(rh):
        return set()
    found: set[str] = set()
    for g in differing(group_hashes(lh), group_hashes(rh)):
        for leaf in leaves_in_group(g):
            if lh[leaf] != rh[leaf]:
                found |= {
                    k
                    for k in (*local, *remote)
                    if leaf_of(k) == leaf and local.get(k) != remote.get(k)
                }
    return found


def leaf_table(entries: Mapping[str, Entry]) -> list[int]:
    leaves = [0] * LEAVES
    for k, (v, t) in entries.items():
        leaves[leaf_of(k)] ^= record_hash(k, v, t)
    return leaves
