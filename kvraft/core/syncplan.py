"""Sync planning: who is primary of which partitions in a round, which partitions a round synced
with every replica, and the watermark rule (what a purged tombstone deleted).

:mod:`kvraft.sync` does the IO of a round and asks these functions what to do. Pure: no IO, no
threads, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from .antientropy import Entry
from .placement import MapState


@dataclass(frozen=True, slots=True)
class Primaries:
    """The partitions this node is primary of, and per other replica the partitions it syncs
    with that replica (each list in partition order)."""

    parts: list[int]
    peers: dict[str, list[int]]


def primaries(state: MapState, self_id: str, alive: Mapping[str, bool]) -> Primaries:
    """A node is primary of the partitions whose first (by id) live, filled replica it is."""
    parts: list[int] = []
    peers: dict[str, list[int]] = {}
    for p, reps in enumerate(state.partitions):
        filled = [n for n in sorted(reps) if n not in state.filling.get(p, ())]
        live = [n for n in filled if alive.get(n, True)]
        if not live or live[0] != self_id:
            continue
        parts.append(p)
        for other in reps:
            if other != self_id:
                peers.setdefault(other, []).append(p)
    return Primaries(parts, peers)


def synced(state: MapState, ok_with: Mapping[int, Set[str]]) -> dict[int, tuple[str, ...]]:
    """The partitions synced with all their replicas (``ok_with``: partition -> the nodes it was
    synced with, the primary included), each with those nodes sorted: what goes to Raft."""
    return {p: tuple(sorted(n)) for p, n in ok_with.items() if set(state.partitions[p]) <= n}


@dataclass(frozen=True, slots=True)
class Forget:
    """Keys a purged tombstone deleted: ``there`` for the other replica to forget (instead of
    pulling them here), ``here`` for this node to forget (instead of pushing them)."""

    there: list[str]
    here: list[str]


def forget(
    push: Sequence[str],
    pull: Sequence[str],
    ours: Mapping[str, Entry],
    theirs: Mapping[str, Entry],
    mark: int,
    other_filling: bool,
) -> Forget:
    """The watermark rule: a key one side lacks with a version below the partition's watermark
    ``mark`` was deleted and its tombstone purged, so the side still holding it forgets it
    instead of spreading it. A replica still being filled (``other_filling``) lacks records
    because it never had them: nothing it lacks is taken for a purged key."""
    there = [k for k in pull if k not in ours and theirs[k][0].ts < mark]
    here = [] if other_filling else [k for k in push if k not in theirs and ours[k][0].ts < mark]
    return Forget(there, here)


def held_watermarks(marks: Mapping[int, int], state: MapState, self_id: str) -> dict[int, int]:
    """The watermarks this node's store applies: only where it is a filled replica (one still
    being filled lacks records because it never had them, not because they were deleted)."""
    return {
        p: mark
        for p, mark in marks.items()
        if p < len(state.partitions)
        and self_id in state.partitions[p]
        and self_id not in state.filling.get(p, ())
    }


@dataclass(frozen=True, slots=True)
class Purge:
    """Purge the tombstones of ``part`` below ``below`` (its watermark moved)."""

    part: int
    below: int


@dataclass(frozen=True, slots=True)
class HandOff:
    """Send every record of ``part`` (a partition this node left) to ``replicas``, then drop it."""

    part: int
    replicas: tuple[str, ...]


def collect(
    held: Set[int],
    state: MapState,
    self_id: str,
    marks: Mapping[int, int],
    purged: Mapping[int, int],
) -> list[Purge | HandOff]:
    """After a round, for each partition the store holds (in order): purge tombstones where this
    node is a replica and the watermark moved past the last purge (``purged``), hand off the
    partitions it no longer holds.

    A hand-off goes to the partition's filled replicas only: they apply the purge watermark, so
    a value whose tombstone was purged while this node was away is refused there. A replica
    still being filled applies none (it lacks what it never had) and would keep such a value:
    it gets the partition from its primary's fill instead, which already went through the
    watermark rule. Only when every replica is still being filled does the hand-off go to them
    all (no filled replica could take it)."""
    out: list[Purge | HandOff] = []
    for p in sorted(held):
        if p >= len(state.partitions):
            continue
        reps = state.partitions[p]
        if self_id in reps:
            if marks.get(p, 0) > purged.get(p, 0):  # only when the watermark moved
                out.append(Purge(p, marks[p]))
            continue
        filling = state.filling.get(p, ())
        filled = tuple(r for r in reps if r not in filling)
        out.append(HandOff(p, filled or reps))
    return out
