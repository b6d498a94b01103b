"""What the HTTP layer needs from the rest of the system, declared here so that :mod:`api` calls
methods on these Protocols and never reaches into a node's parts.

:func:`api.app.create_app` takes one object per port; the composition root
(:mod:`kvraft_cmd.serve`) hands it the real ones:

- :class:`KeyValue` and :class:`Cluster`: a :class:`kvraft.node.Node`;
- :class:`PeerDispatcher`: the node's :class:`kvraft.peer.PeerServer`;
- :class:`PeerCalls`: the node's :class:`kvraft.peer.PeerClient`;
- :class:`ReportJobs`: a :class:`kvraft.reports.Reports` over the node;
- :class:`ChangeFeed`: a :class:`kvraft.watch.ClusterFeed` over the node's change hub.

A test may pass any object with these members (``tests/unit/test_api_ports.py`` checks that
the real ones have them, ``tests/unit/test_layers.py`` that ``api/`` uses nothing else).
Nothing here does IO; where a method blocks or raises, its docstring says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TextIO

from kvraft.config import Config
from kvraft.model import Record, Version

Progress = Callable[[dict], None]  # called with a progress figure now and then (same thread)


class WriteAnswer(Protocol):
    """What a write or a delete returns (:class:`kvraft.coordinator.WriteResult`)."""

    @property
    def key(self) -> str: ...

    @property
    def version(self) -> Version: ...

    @property
    def acks(self) -> int: ...

    @property
    def created(self) -> bool: ...

    def to_json(self) -> dict: ...


class KeyValue(Protocol):
    """The key CRUD operations. They block on the replicas; they raise :mod:`kvraft.errors`
    (``BadRequest`` for a bad key or level, ``NotFound``, ``TooLarge``, ``Unavailable``: the
    write may or may not have been applied). Thread safe."""

    def get(self, key: str, r: str = "one") -> Record: ...

    def put(self, key: str, value: bytes, w: str = "quorum") -> WriteAnswer: ...

    def write_owner(self, key: str) -> str | None:
        """The node a PUT of ``key`` is better sent to (the owner of a hot key), or None to
        write it here. Never blocks; raises Unavailable without a partition map."""
        ...

    def owner_failed(self, node_id: str) -> None:
        """A PUT forwarded to ``node_id`` as an owner was not answered: write around it for a
        while."""
        ...

    def create(self, value: bytes, w: str = "quorum") -> WriteAnswer: ...

    def delete(self, key: str, w: str = "quorum") -> WriteAnswer: ...

    def list_keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]: ...

    def explain(self, key: str) -> dict: ...


class Activity(Protocol):
    """Counts the requests this node serves now (its load, told to the leader's balancer).
    Thread safe; never blocks."""

    @property
    def value(self) -> int: ...

    def enter(self) -> None: ...

    def leave(self) -> None: ...


class Cluster(Protocol):
    """This node's view of the cluster and the cluster operations. Thread safe. The views do
    not block on the network; ``add_member``/``remove_member`` block on Raft."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> Config: ...

    @property
    def started_at(self) -> float:
        """When the node started (epoch seconds)."""
        ...

    @property
    def activity(self) -> Activity: ...

    def cluster(self) -> dict: ...

    def ready(self) -> tuple[bool, str]: ...

    def leader_id(self) -> str | None: ...

    def is_leader(self) -> bool: ...

    def map_epoch(self) -> int:
        """The epoch of the partition map this node reads and writes by (it changes on every
        move of a replica); /kv answers carry it for partition-aware clients."""
        ...

    def add_member(self, node_id: str, http: str, raft: str) -> dict: ...

    def remove_member(self, node_id: str) -> dict: ...

    def members(self) -> dict[str, str]:
        """Node id -> HTTP address of every member."""
        ...

    def address_of(self, node_id: str) -> str:
        """The HTTP address (``host:port``) of member ``node_id``; ``kvraft.peer.PeerError``
        if it is unknown."""
        ...

    def is_alive(self, node_id: str) -> bool: ...

    def serving(self, node_id: str) -> bool: ...

    def peer_loads(self) -> dict[str, int]: ...

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to this node's counter ``name`` (shown by ``metrics``)."""
        ...

    def metrics(self) -> dict[str, float]:
        """This node's figures by name (counters and gauges); reading them changes nothing."""
        ...


class PeerReply(Protocol):
    """The HTTP answer to a peer request (:class:`kvraft.peer.Reply`)."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...

    @property
    def headers(self) -> Iterable[tuple[str, str]]: ...


class PeerDispatcher(Protocol):
    """The node's one dispatcher of ``/peer/*`` requests (:class:`kvraft.peer.PeerServer`):
    it checks the signature, decodes the message, calls its handler and encodes the answer.
    Thread safe once its handlers are registered."""

    def routes(self) -> dict[str, tuple[str, ...]]:
        """Path -> methods of every peer message it serves (for the routing tables)."""
        ...

    def verify(self, auth: str | None, method: str, target: str, body: bytes = b"") -> str:
        """Why a signature is refused ("" when valid). Each signature is accepted once: call
        it once per request."""
        ...

    def handle(
        self,
        method: str,
        target: str,
        auth: str | None,
        body: bytes,
        version: str | None = None,
        environ: dict | None = None,
        truncated: bool = False,
    ) -> PeerReply:
        """Answer one ``/peer/*`` request (``target`` as sent: what the peer signed). The
        stream upgrade needs ``environ``, serves the stream on the calling thread and then
        raises ``StopIteration``. A handler's ``KvError`` is raised for the caller to map."""
        ...

    def register(self, message_type: type[Any], handler: Callable[[Any], Any]) -> None:
        """Serve ``message_type`` with ``handler(message) -> answer``; before serving, once
        per type (``ValueError`` for a second handler)."""
        ...


class Forwarded(Protocol):
    """A peer's answer to a forwarded client request (:class:`kvraft.peer.PeerResponse`);
    ``headers`` has lower-case names."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


class PeerCalls(Protocol):
    """The calls the HTTP layer makes to other members (:class:`kvraft.peer.PeerClient`).
    Thread safe; they block up to ``timeout``; they raise ``kvraft.peer.PeerError``
    (``PeerConnectError``: the request never left, ``PeerStatus``: it answered an error)."""

    def forward(
        self,
        node_id: str,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> Forwarded:
        """Send a client's request on to ``node_id`` (the leader's balancing); any answer. A
        request that is not ``idempotent`` is never sent twice: a ``PeerError`` other than
        ``PeerConnectError`` then means it may have been applied."""
        ...

    def stats(self, node_id: str, timeout: float | None = None) -> dict:
        """``node_id``'s counters for the dashboard (the peer's answer to ``Stats``)."""
        ...


class ReportJobs(Protocol):
    """Reports, exports and imports through FTP (:class:`kvraft.reports.Reports`). Thread
    safe; each call blocks on the cluster and the FTP server and raises :mod:`kvraft.errors`
    (an import that fails part way may have written some keys)."""

    def report(self, prefix: str = "") -> TextIO:
        """The report of the live keys under ``prefix``, as stored on the FTP server and read
        back: a file open for reading, the caller's to close."""
        ...

    def export(self, progress: Progress | None = None) -> dict:
        """Export every live key to the FTP server; what was exported (name, keys, bytes)."""
        ...

    def import_(self, name: str, w: str = "quorum", progress: Progress | None = None) -> dict:
        """Validate export ``name`` whole, then write every key at level ``w``."""
        ...


class WatchEvent(Protocol):
    """One change of a key (:class:`kvraft.watch.Event`)."""

    def to_json(self) -> dict: ...


class WatchStream(Protocol):
    """One watcher's events (:class:`kvraft.watch.Watcher`). Used from one thread."""

    @property
    def lagged(self) -> bool:
        """It fell too far behind and was cut off: no more events will come."""
        ...

    def get(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, blocking up to ``timeout`` seconds; None if none came."""
        ...

    def close(self) -> None: ...


class ChangeFeed(Protocol):
    """The cluster-wide change feed of this node (:class:`kvraft.watch.ClusterFeed`). Thread
    safe."""

    def subscribe(self, prefix: str = "") -> WatchStream:
        """A new watcher of the changes under ``prefix`` from now on; close it when done."""
        ...

    def peers(self) -> list[str]:
        """The peers the feed polls now."""
        ...

    def wait_connected(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` until subscribed on every live peer; those it is not."""
        ...
