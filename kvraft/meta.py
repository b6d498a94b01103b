"""Cluster metadata as a Raft-replicated state machine (pysyncobj), and its adapter.

This is the only module that touches pysyncobj. The replicated state is small: members (id to
HTTP and Raft addresses), the partition map with an epoch, and each node's stored-data figures.
Values never pass through here.

pysyncobj facts designed around (see NOTES.md): replicated methods run on its tick thread, so
the state is copy-on-write (each method builds new dicts/tuples and swaps the reference; readers
on other threads take one reference and never see a half-applied change); batching is off so a
blocking call does not wait for the 0.1 s append period; every blocking call has a timeout; a
key derived from the cluster secret (never the secret itself) encrypts all Raft traffic
(pysyncobj unpickles what arrives); the journal is an mmap that pysyncobj never fsyncs, so
metadata survives a process kill, not a power loss. Compaction pickles the state: no locks or
sockets in :class:`MetaState`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import SyncObjException

from .core.placement import MapState, PartitionMap
from .peerauth import raft_password

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
    hints: int = 0


@dataclass(frozen=True, slots=True)
class SyncRound:
    id: int
    started_ts: int  # HLC timestamp at the start
    started_at: float  # leader's wall clock at the start
    hints_clear: bool  # no node reported pending hints when it started


class MetaState(SyncObjConsumer):
    """The replicated state machine. Mutated only by Raft-applied methods, on the tick thread."""

    def __init__(self) -> None:
        super().__init__()  # first: attributes set after this are the ones replicated
        self.members: dict[str, tuple[str, str]] = {}  # id -> (http, raft)
        self.partitions: PartitionMap = ()  # replicas of each partition, filling ones included
        self.filling: dict[int, tuple[str, ...]] = {}  # partition -> replicas still being filled
        self.leaving: dict[int, tuple[str, ...]] = {}  # partition -> replicas to drop once filled
        self.map_epoch = 0
        self.stats: dict[str, tuple[int, int, int]] = {}  # id -> (keys, bytes, hints pending)
        self.round: tuple[int, int, float, bool] = (0, 0, 0.0, False)  # id, hlc ts, wall, clear
        self.synced: dict[int, int] = {}  # partition -> last round all its replicas synced in
        self.watermarks: dict[int, int] = {}  # partition -> tombstones below this ts purgeable
        self.removing: tuple[str, ...] = ()  # members being drained before leaving Raft
        self.rebalances = 0

    @replicated
    def register(self, node_id: str, http: str, raft: str) -> bool:
        members = dict(self.members)
        members[node_id] = (http, raft)
        self.members = members
        return True

    @replicated
    def forget(self, node_id: str) -> bool:
        self.members = {k: v for k, v in self.members.items() if k != node_id}
        self.stats = {k: v for k, v in self.stats.items() if k != node_id}
        self.removing = tuple(n for n in self.removing if n != node_id)
        return True

    @replicated
    def set_partitions(
        self,
        expected_epoch: int,
        partitions: PartitionMap,
        filling: dict[int, tuple[str, ...]],
        leaving: dict[int, tuple[str, ...]],
    ) -> bool:
        """Compare-and-set: applied only if nobody changed the map since ``expected_epoch``."""
        if expected_epoch != self.map_epoch:
            return False
        if self.partitions:
            self.rebalances += 1
        self.partitions = tuple(tuple(r) for r in partitions)
        self.filling = {int(p): tuple(f) for p, f in filling.items() if f}
        self.leaving = {int(p): tuple(f) for p, f in leaving.items() if f}
        self.map_epoch = expected_epoch + 1
        return True

    @replicated
    def report_stats(self, node_id: str, keys: int, nbytes: int, hints: int = 0) -> bool:
        stats = dict(self.stats)
        stats[node_id] = (keys, nbytes, hints)
        self.stats = stats
        return True

    @replicated
    def start_round(
        self, round_id: int, started_ts: int, started_at: float, hints_clear: bool
    ) -> bool:
        """Open sync round ``round_id``. Partitions fully synced in the previous round, which
        began with no hints pending anywhere, may purge tombstones older than its start."""
        if round_id != self.round[0] + 1:
            return False
        prev_id, prev_ts, _at, prev_clear = self.round
        if prev_clear:
            marks = dict(self.watermarks)
            for part, synced_in in self.synced.items():
                if synced_in == prev_id and prev_ts > marks.get(part, 0):
                    marks[part] = prev_ts
            self.watermarks = marks
        self.round = (round_id, started_ts, started_at, hints_clear)
        return True

    @replicated
    def complete_sync(self, round_id: int, done: dict[int, tuple[str, ...]]) -> bool:
        """A primary synced these partitions with these replicas during ``round_id``."""
        synced, filling = dict(self.synced), dict(self.filling)
        for part, nodes in done.items():
            if not 0 <= part < len(self.partitions):
                continue
            if set(self.partitions[part]) <= set(nodes):
                synced[part] = round_id
                filling.pop(part, None)
        self.synced, self.filling = synced, filling
        return True

    @replicated
    def set_removing(self, nodes: tuple[str, ...]) -> bool:
        self.removing = tuple(nodes)
        return True


class MetaUnavailable(RuntimeError):
    """A metadata change could not be committed (no quorum or timed out)."""


class ClusterMeta(Protocol):
    """The cluster metadata as its users (the leader and sync duties, the placement view,
    registration) depend on it: :class:`Meta` over pysyncobj and the in-memory
    :class:`kvraft.metafake.FakeMeta` both satisfy it. Reads are lock-free snapshots and never
    block; writes block up to ``timeout`` and raise :class:`MetaUnavailable` when not
    committed (the change may still be applied later)."""

    def raft_members(self) -> tuple[str, ...]: ...
    def leader_raft(self) -> str | None: ...
    def leader_id(self) -> str | None: ...
    def caught_up(self) -> bool: ...
    def is_leader(self) -> bool: ...
    def status(self) -> dict: ...
    def http_of(self, node_id: str) -> str | None: ...
    def members(self) -> dict[str, Member]: ...
    def partitions(self) -> tuple[int, PartitionMap]: ...
    def map_state(self) -> tuple[int, MapState]: ...
    def stats(self) -> dict[str, NodeStats]: ...
    def sync_round(self) -> SyncRound: ...
    def synced(self) -> dict[int, int]: ...
    def watermarks(self) -> dict[int, int]: ...
    def removing(self) -> tuple[str, ...]: ...
    def rebalances(self) -> int: ...
    def register(self, node_id: str, http: str, timeout: float = 3.0) -> None: ...
    def set_partitions(self, expected_epoch: int, new: MapState, timeout: float = 3.0) -> bool: ...
    def report_stats(self, node_id: str, keys: int, nbytes: int, hints: int) -> None: ...
    def start_round(
        self,
        round_id: int,
        started_ts: int,
        started_at: float,
        hints_clear: bool,
        timeout: float = 3.0,
    ) -> bool: ...
    def complete_sync(
        self, round_id: int, done: dict[int, tuple[str, ...]], timeout: float = 3.0
    ) -> None: ...
    def set_removing(self, nodes: tuple[str, ...], timeout: float = 3.0) -> None: ...
    def forget(self, node_id: str, timeout: float = 3.0) -> None: ...
    def add_raft_member(self, raft: str, timeout: float = 10.0) -> None: ...
    def remove_raft_member(self, raft: str, timeout: float = 10.0) -> None: ...
    def close(self) -> None: ...


class MetaReads:
    """The read methods over a :class:`MetaState` (``self.state``), shared by :class:`Meta`
    and the in-memory :class:`kvraft.metafake.FakeMeta`. Lock-free snapshots: the state is
    copy-on-write. Subclasses provide ``leader_raft``."""

    state: MetaState

    def leader_raft(self) -> str | None:
        raise NotImplementedError

    def http_of(self, node_id: str) -> str | None:
        """A member's HTTP address (on every peer call: no copies made)."""
        entry = self.state.members.get(node_id)
        return entry[0] if entry is not None else None

    def members(self) -> dict[str, Member]:
        return {i: Member(i, h, r) for i, (h, r) in self.state.members.items()}

    def partitions(self) -> tuple[int, PartitionMap]:
        state = self.state
        return state.map_epoch, state.partitions

    def map_state(self) -> tuple[int, MapState]:
        """The partition map with its moves in progress, and its epoch (for compare-and-set)."""
        state = self.state
        return state.map_epoch, MapState(state.partitions, state.filling, state.leaving)

    def stats(self) -> dict[str, NodeStats]:
        return {i: NodeStats(*v) for i, v in self.state.stats.items()}

    def sync_round(self) -> SyncRound:
        return SyncRound(*self.state.round)

    def synced(self) -> dict[int, int]:
        return self.state.synced

    def watermarks(self) -> dict[int, int]:
        return self.state.watermarks

    def removing(self) -> tuple[str, ...]:
        return self.state.removing

    def rebalances(self) -> int:
        return self.state.rebalances

    def leader_id(self) -> str | None:
        addr = self.leader_raft()
        for node_id, (_http, raft) in self.state.members.items():
            if raft == addr:
                return node_id
        return None


class Meta(MetaReads):
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
            password=raft_password(secret),  # a derived key, not the secret itself
            bindAddress=self_raft,  # not 0.0.0.0: Raft listens only where it was told to
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

    # -- reads (the rest are :class:`MetaReads`') ----------------------------------------------

    def raft_members(self) -> tuple[str, ...]:
        """Raft addresses of every member of the Raft configuration, this node included."""
        others = [n.address for n in self._raft.otherNodes]
        return tuple(sorted([self.self_raft, *others]))

    def leader_raft(self) -> str | None:
        node = self._raft._getLeader()
        return node.address if node is not None else None

    def caught_up(self) -> bool:
        """Whether this member has applied the log up to the leader's commit index once since
        it started (pysyncobj's ``isReady``): before that its partition map may be old."""
        return self._raft.isReady()

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

    def set_partitions(self, expected_epoch: int, new: MapState, timeout: float = 3.0) -> bool:
        return bool(
            self._call(
                self.state.set_partitions,
                expected_epoch,
                new.partitions,
                new.filling,
                new.leaving,
                timeout=timeout,
            )
        )

    def report_stats(self, node_id: str, keys: int, nbytes: int, hints: int) -> None:
        """Fire and forget: the next report corrects a lost one."""
        self.state.report_stats(node_id, keys, nbytes, hints, callback=lambda _r, _e: None)

    def start_round(
        self,
        round_id: int,
        started_ts: int,
        started_at: float,
        hints_clear: bool,
        timeout: float = 3.0,
    ) -> bool:
        return bool(
            self._call(
                self.state.start_round,
                round_id,
                started_ts,
                started_at,
                hints_clear,
                timeout=timeout,
            )
        )

    def complete_sync(
        self, round_id: int, done: dict[int, tuple[str, ...]], timeout: float = 3.0
    ) -> None:
        self._call(self.state.complete_sync, round_id, done, timeout=timeout)

    def set_removing(self, nodes: tuple[str, ...], timeout: float = 3.0) -> None:
        self._call(self.state.set_removing, tuple(nodes), timeout=timeout)

    def forget(self, node_id: str, timeout: float = 3.0) -> None:
        self._call(self.state.forget, node_id, timeout=timeout)

    def add_raft_member(self, raft: str, timeout: float = 10.0) -> None:
        """Add a Raft member (pysyncobj changes membership one node at a time)."""
        self._membership(self._raft.addNodeToCluster, raft, timeout)

    def remove_raft_member(self, raft: str, timeout: float = 10.0) -> None:
        self._membership(self._raft.removeNodeFromCluster, raft, timeout)

    def _membership(self, change, raft: str, timeout: float) -> None:
        done = threading.Event()
        outcome: list = []

        def callback(result, error) -> None:
            outcome.append(error)  # pysyncobj calls back (result, FAIL_REASON)
            done.set()

        change(raft, callback)
        if not done.wait(timeout):
            raise MetaUnavailable(f"membership change for {raft} not committed in {timeout}s")
        if outcome[0] != FAIL_REASON.SUCCESS:
            raise MetaUnavailable(f"membership change for {raft} failed: {outcome[0]}")

    def close(self) -> None:
        self._raft.destroy()
