"""Duties of the Raft leader, and membership changes (which only the leader makes).

On every tick the leader places partitions the first time (on the nodes with the least stored
data), steps the partition map toward health and balance (:func:`kvraft.core.placement.plan`:
replace dead replicas, drain nodes being removed, balance), removes drained nodes from Raft, and
opens a sync round every ``sync_interval``: :func:`kvraft.core.leaderplan.step` decides, from a
:class:`~kvraft.core.leaderplan.LeaderView` read here, and this module performs the instructions.
Membership requests reaching another node are forwarded to the leader over the peer transport.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .config import MEMBER_ADDRESS, NODE_ID, Config
from .core import leaderplan
from .errors import BadRequest, Conflict, NotFound, Unavailable
from .hlc import HLC, LOGICAL_BITS
from .meta import ClusterMeta, MetaUnavailable
from .peer import MemberChange, PeerError, Peers, PeerStatus

log = logging.getLogger(__name__)


class Leader:
    """The leader duty (``tick(now)``, driven by :class:`kvraft.duties.Runner`) and the
    membership changes. Gets its parts, not the node: the metadata (any
    :class:`~kvraft.meta.ClusterMeta`), the peers (any :class:`~kvraft.peer.Peers`: to forward
    a change to the leader), the HLC (a round's purge-safe timestamp), the members of the Raft
    configuration (id -> HTTP address) and each node's silence (seconds since a good contact)."""

    def __init__(
        self,
        self_id: str,
        config: Config,
        meta: ClusterMeta,
        peers: Peers,
        hlc: HLC,
        members: Callable[[], Mapping[str, str]],
        silent_for: Callable[[str], float],
    ) -> None:
        self.self_id = self_id
        self.config = config
        self.rf = config.replication_factor
        self.meta = meta
        self.peers = peers
        self.hlc = hlc
        self.members = members
        self.silent_for = silent_for

    def tick(self, now: float) -> None:
        """Raft leader only: first placement, moves toward a healthy map, sync rounds (the
        decisions are :func:`kvraft.core.leaderplan.step`'s; this performs them). ``now``: the
        wall clock in seconds. Blocks on Raft (each change up to its timeout)."""
        if not self.meta.is_leader():
            return
        for instruction in leaderplan.step(self.view(), now):
            self._perform(instruction)

    def view(self) -> leaderplan.LeaderView:
        """What the plan needs, read from the metadata and the liveness figures."""
        meta, config = self.meta, self.config
        epoch, state = meta.map_state()
        members = self.members()
        stats = meta.stats()
        rnd = meta.sync_round()
        return leaderplan.LeaderView(
            self_id=self.self_id,
            epoch=epoch,
            state=state,
            members=tuple(members),
            raft_members=tuple(meta.raft_members()),
            registered={m.id: m.raft for m in meta.members().values()},
            stored={n: s.bytes for n, s in stats.items()},
            hints={n: s.hints for n, s in stats.items()},
            silent={n: self.silent_for(n) for n in members},
            removing=tuple(meta.removing()),
            round_id=rnd.id,
            round_started_at=rnd.started_at,
            partitions=config.partitions,
            replication_factor=self.rf,
            dead_after=config.dead_after,
            sync_interval=config.sync_interval,
            peer_timeout=config.peer_timeout,
        )

    def _perform(self, instruction: leaderplan.Instruction) -> None:
        meta = self.meta
        if isinstance(instruction, leaderplan.Propose):
            try:
                meta.set_partitions(instruction.epoch, instruction.state)
            except MetaUnavailable as exc:
                log.info("placement pending: %s", exc)
        elif isinstance(instruction, leaderplan.Remove):
            try:
                if instruction.raft is not None:
                    meta.remove_raft_member(instruction.raft)
                meta.forget(instruction.node_id)
            except MetaUnavailable as exc:
                log.info("removal of %s pending: %s", instruction.node_id, exc)
        elif isinstance(instruction, leaderplan.StartRound):
            safe_ts = max(0, self.hlc.now() - (instruction.margin_ms << LOGICAL_BITS))
            try:
                meta.start_round(
                    instruction.round_id, safe_ts, instruction.started_at, instruction.hints_clear
                )
            except MetaUnavailable as exc:
                log.info("sync round not started: %s", exc)

    # -- membership ------------------------------------------------------------------------------

    def add_member(self, node_id: str, http: str, raft: str) -> dict:
        """Add a node to the cluster (on the leader; forwarded there otherwise).

        BadRequest for a malformed id or address, Conflict for an id or Raft address that
        another member holds; adding a member already added is a no-op."""
        check_new_member(node_id, http, raft)
        if not self.meta.is_leader():
            return self._to_leader(MemberChange("add", node_id, http, raft))
        members = self.meta.members()
        known = members.get(node_id)
        if known is not None and known.raft != raft:
            raise Conflict(f"node id {node_id!r} is taken by another member")
        taken = [m.id for m in members.values() if m.raft == raft and m.id != node_id]
        if taken:
            raise Conflict(f"raft address {raft} is member {taken[0]}'s")
        if raft not in self.meta.raft_members():
            self.meta.add_raft_member(raft)
        return {"added": node_id, "raft": raft}

    def remove_member(self, node_id: str) -> dict:
        """Drain ``node_id`` (its partitions move to other nodes first), then remove it."""
        if not self.meta.is_leader():
            return self._to_leader(MemberChange("remove", node_id))
        members = self.members()
        if node_id not in members:
            raise NotFound(f"no member {node_id!r}")
        remaining = len(members) - len(set(self.meta.removing()) | {node_id})
        if remaining < self.rf:
            raise Conflict(
                f"removing {node_id} would leave {remaining} nodes for replication factor {self.rf}"
            )
        if node_id == self.self_id:
            raise Conflict(
                "the Raft leader cannot remove itself; ask it to another node "
                "after a leader change, or stop it and let re-replication act"
            )
        self.meta.set_removing(tuple(sorted(set(self.meta.removing()) | {node_id})))
        return {"removing": node_id}

    def _to_leader(self, change: MemberChange) -> dict:
        leader = self.meta.leader_id()
        if leader is None or leader == self.self_id:
            raise Unavailable("no Raft leader to make the membership change; retry")
        try:
            return self.peers.change_members(leader, change)
        except PeerStatus as exc:  # the leader refused it: its error, as it gave it
            raise exc.error() from None
        except PeerError as exc:  # maybe applied: the client retries (adding twice is a no-op)
            raise Unavailable(f"the Raft leader {leader} did not answer: {exc}; retry") from None


def check_new_member(node_id: str, http: str, raft: str) -> None:
    """BadRequest unless ``node_id`` is a valid node id and ``http``, ``raft`` are HOST:PORT.

    Only the new member's own fields: not a whole node :class:`~kvraft.config.Config`, whose
    other checks (replication_factor against its peers) say nothing about the member."""
    if not isinstance(node_id, str) or not NODE_ID.fullmatch(node_id):
        raise BadRequest(f"id: 1-32 letters, digits, '_' or '.', got {node_id!r}")
    for value, what in ((http, "http"), (raft, "raft")):
        if not isinstance(value, str) or not MEMBER_ADDRESS.fullmatch(value):
            raise BadRequest(f"{what}: expected HOST:PORT (a port of 1 to 65535), got {value!r}")
