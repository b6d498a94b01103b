"""Cluster metadata as a Raft-replicated state machine (pysyncobj), and its adapter.

This is the only module that touches pysyncobj. The replicated state is small: members (id to
HTTP and Raft addresses), the partition map with an epoch, and each node's stored-data figures.
Values never pass through here.

pysyncobj facts designed around (see NOTES.md): replicated methods run on its tick thread, so the
state is copy-on-write (each method builds new dicts/tuples and swaps the reference; readers on
other threads take one reference and never see a half-applied change); batching is off so a
blocking call does not wait for the 0.1 s append period; every blocking call has a timeout; the
cluster secret encrypts all Raft traffic (pysyncobj unpickles what arrives); the journal is an
mmap that pysyncobj never fsyncs, so metadata survives a process kill, not a power loss.
Compaction pickles the state: no locks or sockets in :class:`MetaState`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import SyncObjException

from .placement import PartitionMap

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    http: str
    raft: str


@dataclass(frozen=True, slots=True)
class NodeStats:
    keys: int
    bytes: int


class MetaState(SyncObjConsumer):
    """The replicated state machine. Mutated only by Raft-applied methods, on the tick thread."""

    def __init__(self) -> None:
        super().__init__()  # first: attributes set after this are the ones replicated
        self.members: dict[str, tuple[str, str]] = {}  # id -> (http, raft)
        self.partitions: PartitionMap = ()
        self.map_epoch = 0
        self.stats: dict[str, tuple[int, int]] = {}  # id -> (keys, bytes)

    @replicated
    def register(self, node_id: str, http: str, raft: str) -> bool:
        members = dict(self.members)
        members[node_id] = (http, raft)
        self.members = members
        return True

    @replicated
    def set_partitions(self, expected_epoch: int, partitions: PartitionMap) -> bool:
        """Compare-and-set: applied only if nobody changed the map since ``expected_epoch``."""
        if expected_epoch != self.map_epoch:
            return False
        self.partitions = tuple(tuple(r) for r in partitions)
        self.map_epoch = expected_epoch + 1
        return True

    @replicated
    def report_stats(self, node_id: str, keys: int, nbytes: int) -> bool:
        stats = dict(self.stats)
        stats[node_id] = (keys, nbytes)
        self.stats = stats
        return True


class MetaUnavailable(RuntimeError):
    """A metadata change could not be committed (no quorum or timed out)."""


class Meta:
    """Adapter over pysyncobj. Reads are lock-free snapshots; writes block with a timeout."""

    def __init__(
        self,
        self_raft: str,
        peers: tuple[str, ...],
        data_dir: str,
        secret: str,
        on_state_change: Callable[[int, int], None] | None = None,
    ) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.state = MetaState()
        self.self_raft = self_raft
        conf = SyncObjConf(
            password=secret,
            appendEntriesUseBatch=False,
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.dump"),
            dynamicMembershipChange=True,
            commandsWaitLeader=True,
            onStateChanged=on_state_change,
            raftMinTimeout=0.4,
            raftMaxTimeout=1.4,
            connectionRetryTime=1.0,
            logCompactionMinEntries=20000,
        )
        self._raft = SyncObj(self_raft, list(peers), conf, consumers=[self.state])

    # -- reads ---------------------------------------------------------------------------------

    def members(self) -> dict[str, Member]:
        return {i: Member(i, h, r) for i, (h, r) in self.state.members.items()}

    def partitions(self) -> tuple[int, PartitionMap]:
        state = self.state
        return state.map_epoch, state.partitions

    def stats(self) -> dict[str, NodeStats]:
        return {i: NodeStats(k, b) for i, (k, b) in self.state.stats.items()}

    def raft_members(self) -> tuple[str, ...]:
        """Raft addresses of every member of the Raft configuration, this node included."""
        others = [n.address for n in self._raft.otherNodes]
        return tuple(sorted([self.self_raft, *others]))

    def leader_raft(self) -> str | None:
        node = self._raft._getLeader()
        return node.address if node is not None else None

    def leader_id(self) -> str | None:
        addr = self.leader_raft()
        for node_id, (_http, raft) in self.state.members.items():
            if raft == addr:
                return node_id
        return None

    def is_leader(self) -> bool:
        return self._raft._isLeader()

    def status(self) -> dict:
        s = self._raft.getStatus()
        return {
            "state": ("follower", "candidate", "leader")[s["state"]],
            "term": s["raft_term"],
            "commit_index": s["commit_idx"],
            "last_applied": s["last_applied"],
            "has_quorum": bool(s["has_quorum"]),
            "log_len": s["log_len"],
        }

    # -- writes --------------------------------------------------------------------------------

    def _call(self, method, *args, timeout: float):
        try:
            return method(*args, sync=True, timeout=timeout)
        except SyncObjException as exc:
            raise MetaUnavailable(f"metadata change not committed: {exc.errorCode}") from exc

    def register(self, node_id: str, http: str, timeout: float = 3.0) -> None:
        self._call(self.state.register, node_id, http, self.self_raft, timeout=timeout)

    def set_partitions(self, expected_epoch: int, partitions: PartitionMap,
                       timeout: float = 3.0) -> bool:
        return bool(self._call(self.state.set_partitions, expected_epoch, partitions,
                               timeout=timeout))

    def report_stats(self, node_id: str, keys: int, nbytes: int) -> None:
        """Fire and forget: the next report corrects a lost one."""
        self.state.report_stats(node_id, keys, nbytes, callback=lambda _r, _e: None)

    def close(self) -> None:
        self._raft.destroy()
