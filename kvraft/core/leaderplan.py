"""The Raft leader's duties as a plan: ``step(view, now) -> instructions`` (dask's
``worker_state_machine`` style). :mod:`kvraft.leader` builds the :class:`LeaderView` from the
metadata, calls :func:`step` and performs the instructions in order.

Duties: place partitions the first time (on the nodes with the least stored data), step the
partition map toward health and balance (:func:`kvraft.core.placement.plan`), remove drained
nodes from Raft, open a sync round every ``sync_interval``. Pure: no IO, no threads, no clock
(``now`` is the leader's wall clock, passed in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import placement


@dataclass(frozen=True, slots=True)
class LeaderView:
    """What the leader knows at one tick."""

    self_id: str
    epoch: int  # of the partition map
    state: placement.MapState
    members: tuple[str, ...]  # ids of the members of the current Raft configuration
    raft_members: tuple[str, ...]  # Raft addresses of the configuration
    registered: Mapping[str, str]  # every registered node id -> its Raft address
    stored: Mapping[str, int]  # node id -> bytes it reported storing (reported nodes only)
    hints: Mapping[str, int]  # node id -> hints it reported pending (reported nodes only)
    silent: Mapping[str, float]  # node id -> seconds since the last good contact
    removing: tuple[str, ...]  # nodes being drained
    round_id: int  # the last sync round
    round_started_at: float  # its start on the leader's wall clock
    partitions: int
    replication_factor: int
    dead_after: float
    sync_interval: float
    peer_timeout: float
    is_leader: bool = True


@dataclass(frozen=True, slots=True)
class Propose:
    """Propose ``state`` as the partition map following ``epoch`` (a Raft update)."""

    epoch: int
    state: placement.MapState


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove a drained node: its Raft address from the configuration (``raft``, None when it is
    not in it any more), then its registration; stop at the first failure."""

    node_id: str
    raft: str | None


@dataclass(frozen=True, slots=True)
class StartRound:
    """Open sync round ``round_id`` at ``now``. Its purge-safe timestamp is the HLC's now less
    ``margin_ms`` (writes stamped before the round but still in flight must land before a purge);
    ``hints_clear``: no live node reported pending hints."""

    round_id: int
    margin_ms: int
    started_at: float
    hints_clear: bool


Instruction = Propose | Remove | StartRound


def step(view: LeaderView, now: float) -> list[Instruction]:
    """The leader's instructions for this tick, in the order to perform them."""
    if not view.is_leader:
        return []
    state = view.state
    if not state.partitions:
        members = view.members
        if len(members) < len(view.raft_members) or any(n not in view.stored for n in members):
            return []  # wait until every member registered and reported what it stores
        first = placement.place(
            view.partitions, sorted(members), view.stored, view.replication_factor
        )
        return [Propose(view.epoch, placement.MapState(first))]
    out: list[Instruction] = []
    dead = [
        n for n in view.members if n != view.self_id and view.silent.get(n, 0.0) > view.dead_after
    ]
    live = [n for n in view.members if n not in dead]
    moved = placement.plan(state, live, dead, view.removing, view.stored, view.replication_factor)
    if moved is not None:
        out.append(Propose(view.epoch, moved))
    for node_id in view.removing:
        if any(node_id in reps for reps in state.partitions):
            continue  # still draining
        raft = view.registered.get(node_id)
        out.append(Remove(node_id, raft if raft in view.raft_members else None))
    if now - view.round_started_at >= view.sync_interval:
        # a dead node's hints are stale figures; whatever it holds is checked against the
        # watermarks when it comes back (absent keys older than a watermark are dropped)
        clear = all(h == 0 for n, h in view.hints.items() if n not in dead)
        margin_ms = int(1000 * max(2 * view.peer_timeout, view.sync_interval))
        out.append(StartRound(view.round_id + 1, margin_ms, now, clear))
    return out
