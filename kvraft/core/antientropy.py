"""Pure anti-entropy logic: record hashes, the per-partition hash tree, and diff planning.

Each partition's keys fall into ``LEAVES`` leaves by a hash of the key. A leaf's hash is the XOR of
its records' hashes (a record hash covers key, version and tombstone flag), so it is independent
of order and is updated in O(1) when a record changes (XOR the old hash out, the new one in).
Leaves group into ``GROUPS`` groups of ``FANOUT`` leaves; a group hash is the XOR of its leaves, and
the partition's root the XOR of all. Two replicas compare roots, then the group hashes of the
partitions that differ, then the leaf hashes of the groups that differ, then the (key, version)
entries of the leaves that differ, and exchange only the records whose versions differ: the cost
grows with the difference, not with the data.

:func:`descend` is that descent, the one copy of it: the remote side is passed in as a
:class:`RemoteTree` (riak_kv's ``hashtree:compare`` takes it as a function). :mod:`kvraft.sync`
runs it with a network-backed one; tests run it with a :class:`MemoryTree`. No IO here; everything
is a function of its inputs and of the trees passed in (tested with Hypothesis).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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


def leaf_table(entries: Mapping[str, Entry]) -> list[int]:
    leaves = [0] * LEAVES
    for k, (v, t) in entries.items():
        leaves[leaf_of(k)] ^= record_hash(k, v, t)
    return leaves


# -- the descent -----------------------------------------------------------------------------------


class LocalTree(Protocol):
    """This side's tree: what :class:`kvraft.storage.Storage` offers."""

    def leaf_hashes(self, part: int) -> Sequence[int]: ...

    def leaf_entries(self, part: int, leaves: Sequence[int]) -> Mapping[str, Entry]: ...


class RemoteTree(Protocol):
    """The other replica's tree, one call per round trip of the descent. A network-backed one
    may raise whatever its transport raises; the descent lets it through."""

    def roots(self, parts: Sequence[int]) -> Mapping[int, int]:
        """The root hash of each partition in ``parts``."""
        ...

    def groups(self, parts: Sequence[int]) -> Mapping[int, Sequence[int]]:
        """The ``GROUPS`` group hashes of each partition in ``parts``."""
        ...

    def leaves(
        self, want: Mapping[int, Sequence[int]]
    ) -> Mapping[int, Mapping[int, Sequence[int]]]:
        """For each partition, for each group asked, the ``FANOUT`` leaf hashes of the group."""
        ...

    def entries(self, part: int, leaves: Sequence[int]) -> Mapping[str, Entry]:
        """``{key: (version, tomb)}`` of the records in those leaves of ``part``."""
        ...


@dataclass(frozen=True, slots=True)
class LeafDiff:
    """The entries of the leaves of ``part`` whose hashes differ, on both sides."""

    part: int
    leaves: tuple[int, ...]
    ours: Mapping[str, Entry]
    theirs: Mapping[str, Entry]


def descend(local: LocalTree, remote: RemoteTree, parts: Sequence[int]) -> Iterator[LeafDiff]:
    """Compare ``parts`` of two trees: roots of all in one call, then the group hashes of the
    partitions that differ, then the leaf hashes of the groups that differ, then (one call per
    partition, as the caller asks for the next) the entries of the differing leaves.

    Yields one :class:`LeafDiff` per partition with differing leaves, in ``parts`` order; the
    caller may act on it (exchange, forget) before the next partition's entries are asked for.
    """
    local_leaves = {p: local.leaf_hashes(p) for p in parts}
    roots = remote.roots(parts)
    diff_parts = [p for p in parts if roots[p] != root_hash(local_leaves[p])]
    if not diff_parts:
        return
    remote_groups = remote.groups(diff_parts)
    want: dict[int, list[int]] = {}
    for p in diff_parts:
        groups = differing(group_hashes(local_leaves[p]), remote_groups[p])
        if groups:
            want[p] = groups
    remote_leaves = remote.leaves(want)
    for p, groups in want.items():
        leaves = []
        for g in groups:
            theirs = remote_leaves[p][g]
            for i, leaf in enumerate(leaves_in_group(g)):
                if theirs[i] != local_leaves[p][leaf]:
                    leaves.append(leaf)
        if not leaves:
            continue
        remote_entries = remote.entries(p, leaves)
        yield LeafDiff(p, tuple(leaves), local.leaf_entries(p, leaves), remote_entries)


class MemoryTree:
    """Both tree protocols over in-memory entries ``{part: {key: (version, tomb)}}``: the local
    stand-in for a replica (tests, in-process clusters). ``calls`` records each remote call."""

    def __init__(self, parts: Mapping[int, Mapping[str, Entry]]) -> None:
        self.parts = {p: dict(e) for p, e in parts.items()}
        self.calls: list[str] = []

    def leaf_hashes(self, part: int) -> list[int]:
        return leaf_table(self.parts.get(part, {}))

    def leaf_entries(self, part: int, leaves: Sequence[int]) -> dict[str, Entry]:
        wanted = set(leaves)
        return {k: e for k, e in self.parts.get(part, {}).items() if leaf_of(k) in wanted}

    def roots(self, parts: Sequence[int]) -> dict[int, int]:
        self.calls.append("roots")
        return {p: root_hash(self.leaf_hashes(p)) for p in parts}

    def groups(self, parts: Sequence[int]) -> dict[int, list[int]]:
        self.calls.append("groups")
        return {p: group_hashes(self.leaf_hashes(p)) for p in parts}

    def leaves(self, want: Mapping[int, Sequence[int]]) -> dict[int, dict[int, list[int]]]:
        self.calls.append("leaves")
        out: dict[int, dict[int, list[int]]] = {}
        for p, groups in want.items():
            table = self.leaf_hashes(p)
            out[p] = {g: [table[i] for i in leaves_in_group(g)] for g in groups}
        return out

    def entries(self, part: int, leaves: Sequence[int]) -> dict[str, Entry]:
        self.calls.append("entries")
        return self.leaf_entries(part, leaves)
