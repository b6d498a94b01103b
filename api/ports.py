"""What the HTTP layer needs from the store, declared here so that :mod:`api` calls methods on
these Protocols and never reaches into a node's parts (its storage, metadata or leader duties).

:class:`kvraft.node.Node` is the real implementation of both; a test may pass any object with
these methods. Nothing here does IO; the methods' own contracts are on Node.
"""

from __future__ import annotations

from typing import Protocol

from kvraft.config import Config
from kvraft.model import Record


class WriteAnswer(Protocol):
    """What a write returns (:class:`kvraft.node.WriteResult`)."""

    @property
    def created(self) -> bool: ...

    def to_json(self) -> dict: ...


class KeyValue(Protocol):
    """The key CRUD operations. They block on the replicas; they raise :mod:`kvraft.errors`
    (``BadRequest`` for a bad key or level, ``NotFound``, ``TooLarge``, ``Unavailable``: the
    write may or may not have been applied)."""

    def get(self, key: str, r: str = "one") -> Record: ...

    def put(self, key: str, value: bytes, w: str = "quorum") -> WriteAnswer: ...

    def create(self, value: bytes, w: str = "quorum") -> WriteAnswer: ...

    def delete(self, key: str, w: str = "quorum"): ...

    def list_keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]: ...

    def explain(self, key: str) -> dict: ...


class Activity(Protocol):
    """Counts the requests this node serves now (its load, told to the leader's balancer)."""

    @property
    def value(self) -> int: ...

    def enter(self) -> None: ...

    def leave(self) -> None: ...


class Cluster(Protocol):
    """This node's view of the cluster and the cluster operations."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> Config: ...

    @property
    def started_at(self) -> float: ...

    @property
    def activity(self) -> Activity: ...

    def cluster(self) -> dict: ...

    def ready(self) -> tuple[bool, str]: ...

    def leader_id(self) -> str | None: ...

    def is_leader(self) -> bool: ...

    def add_member(self, node_id: str, http: str, raft: str) -> dict: ...

    def remove_member(self, node_id: str) -> dict: ...

    def members(self) -> dict[str, str]: ...

    def is_alive(self, node_id: str) -> bool: ...

    def serving(self, node_id: str) -> bool: ...

    def peer_loads(self) -> dict[str, int]: ...

    def count(self, name: str, n: int = 1) -> None: ...

    def metrics(self) -> dict[str, float]: ...
