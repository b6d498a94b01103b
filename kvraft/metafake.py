"""An in-memory stand-in for :class:`kvraft.meta.Meta`, so in-process nodes share cluster metadata.

:class:`FakeRaft` is the "cluster": one :class:`~kvraft.meta.MetaState` that every change is
applied to synchronously (the same replicated methods Meta commits through pysyncobj, called
directly), the Raft configuration (a set of addresses), a settable leader and a switch that takes
the quorum away. :class:`FakeMeta` is one node's handle on it, with Meta's methods: the reads are
:class:`~kvraft.meta.MetaReads`' (one copy), the writes raise
:class:`~kvraft.meta.MetaUnavailable` while the quorum is gone, as Meta's do after their timeout.
No threads, no network, no disk; thread-safe (one lock around every change).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .core.placement import MapState
from .meta import ClusterMeta, MetaReads, MetaState, MetaUnavailable


class FakeRaft:
    """The shared metadata of an in-process cluster."""

    def __init__(self, rafts: Iterable[str] = ()) -> None:
        self.state = MetaState()
        self.rafts: set[str] = set(rafts)  # the Raft configuration
        self.leader: str | None = None  # the leader's Raft address
        self.quorum = True  # False: every change raises MetaUnavailable
        self.lock = threading.Lock()
        self.applied = 0  # changes applied (the commit index)

    def set_leader(self, raft: str | None) -> None:
        self.leader = raft

    def apply(self, method: Callable[..., Any], *args: Any) -> Any:
        """Apply one replicated method of the state, as Raft would on every member."""
        with self.lock:
            if not self.quorum:
                raise MetaUnavailable("metadata change not committed: no quorum (fake)")
            result = method(*args, _doApply=True)
            self.applied += 1
            return result

    def meta(self, self_raft: str) -> FakeMeta:
        """The handle of the member at ``self_raft`` (added to the configuration)."""
        with self.lock:
            self.rafts.add(self_raft)
        return FakeMeta(self, self_raft)


class FakeMeta(MetaReads):
    """One member's view of a :class:`FakeRaft`: Meta's methods, applied synchronously."""

    def __init__(self, raft: FakeRaft, self_raft: str) -> None:
        self.raft = raft
        self.state: MetaState = raft.state  # one object for all: its methods swap its fields
        self.self_raft = self_raft

    # -- reads -----------------------------------------------------------------------------------

    def raft_members(self) -> tuple[str, ...]:
        return tuple(sorted(self.raft.rafts))

    def leader_raft(self) -> str | None:
        return self.raft.leader

    def caught_up(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return self.raft.leader == self.self_raft

    def status(self) -> dict:
        return {
            "state": "leader" if self.is_leader() else "follower",
            "term": 1,
            "commit_index": self.raft.applied,
            "last_applied": self.raft.applied,
            "has_quorum": self.raft.quorum,
            "log_len": self.raft.applied,
        }

    # -- writes (the timeouts are accepted for Meta's signatures; nothing waits) ----------------

    def register(self, node_id: str, http: str, timeout: float = 3.0) -> None:
        self.raft.apply(self.state.register, node_id, http, self.self_raft)

    def set_partitions(self, expected_epoch: int, new: MapState, timeout: float = 3.0) -> bool:
        return bool(
            self.raft.apply(
                self.state.set_partitions, expected_epoch, new.partitions, new.filling, new.leaving
            )
        )

    def report_stats(self, node_id: str, keys: int, nbytes: int, hints: int) -> None:
        """Fire and forget, like Meta's: a change lost without quorum raises nothing."""
        try:
            self.raft.apply(self.state.report_stats, node_id, keys, nbytes, hints)
        except MetaUnavailable:
            pass

    def start_round(
        self,
        round_id: int,
        started_ts: int,
        started_at: float,
        hints_clear: bool,
        timeout: float = 3.0,
    ) -> bool:
        return bool(
            self.raft.apply(self.state.start_round, round_id, started_ts, started_at, hints_clear)
        )

    def complete_sync(
        self, round_id: int, done: dict[int, tuple[str, ...]], timeout: float = 3.0
    ) -> None:
        self.raft.apply(self.state.complete_sync, round_id, done)

    def set_removing(self, nodes: tuple[str, ...], timeout: float = 3.0) -> None:
        self.raft.apply(self.state.set_removing, tuple(nodes))

    def forget(self, node_id: str, timeout: float = 3.0) -> None:
        self.raft.apply(self.state.forget, node_id)

    def add_raft_member(self, raft: str, timeout: float = 10.0) -> None:
        self._membership(lambda: self.raft.rafts.add(raft))

    def remove_raft_member(self, raft: str, timeout: float = 10.0) -> None:
        self._membership(lambda: self.raft.rafts.discard(raft))

    def _membership(self, change: Callable[[], None]) -> None:
        with self.raft.lock:
            if not self.raft.quorum:
                raise MetaUnavailable("membership change not committed: no quorum (fake)")
            change()

    def close(self) -> None:
        pass


if TYPE_CHECKING:  # mypy checks that FakeMeta has every method of the ClusterMeta protocol

    def _is_cluster_meta(meta: FakeMeta) -> ClusterMeta:
        return meta
