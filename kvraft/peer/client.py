"""PeerClient: one typed method per peer message (:mod:`kvraft.peer.messages`).

Below it: HTTP to the peers' addresses (:mod:`kvraft.peer.http`, pooled keep-alive connections)
and, for the two hottest messages, a persistent stream per peer and kind
(:mod:`kvraft.peer.stream`) with a batcher in front of it (:mod:`kvraft.peer.batch`), so
concurrent replica writes (and reads) to one peer share one frame.

What the client needs from its node is injected: ``address_of(node_id) -> "host:port"`` (raises
:class:`PeerError` for an unknown node) and ``mark(node_id, ok)``, told the outcome of every
exchange that is evidence of the peer's health (replica writes and reads, hints, sync, pings;
not long-polls, forwards, membership or stats). ``stopping()`` says the node is shutting down:
no stream is opened then.

Errors: :class:`PeerConnectError` when the request was certainly not delivered,
:class:`PeerError` when it may have been (records apply by last writer wins, so a retry is
safe), :class:`PeerStatus` (a PeerError) when the peer answered with an error status. All
methods block and are thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlencode

from ..errors import BadRequest, Conflict, KvError, NotFound, Unavailable
from ..hlc import Version
from ..storage import ApplyResult, Record
from . import messages as m
from .batch import PeerBatcher, Ticket
from .http import REFUSALS, HttpTransport, PeerConnectError, PeerError, PeerResponse
from .stream import PeerStream, StreamRefused

APPLY, READ = m.STREAM_APPLY, m.STREAM_GET
T = TypeVar("T")


class PeerStatus(PeerError):
    """The peer answered with an error status: it is up, and it did not do what was asked.
    ``code`` and ``message`` are those of its JSON error body (empty when it had none)."""

    def __init__(self, node: str, status: int, body: bytes) -> None:
        super().__init__(f"{node}: HTTP {status}: {body[:200]!r}")
        self.status = status
        try:
            err = m.json_object(body)
        except ValueError:
            err = {}
        self.code = str(err.get("error", ""))
        self.message = str(err.get("message", ""))

    def error(self) -> KvError:
        """The peer's own error, typed as it raised it (:data:`ERROR_CODES`), for a caller that
        acts for the peer (a forwarded membership change); Unavailable for any other code."""
        kind = ERROR_CODES.get(self.code, Unavailable)
        return kind(self.message or f"the peer answered {self.status}")


# the error codes of a handler's refusal (the peer's api/errors.py wrote them) that a forwarding
# node raises again as the same kind; tests/unit/test_api_errors.py holds them against that table
ERROR_CODES: dict[str, type[KvError]] = {
    "bad_request": BadRequest,
    "not_found": NotFound,
    "conflict": Conflict,
}


class Sent(Protocol):
    """A replica write on its way; ``result()`` waits for its answer (raises PeerError)."""

    def result(self) -> ApplyResult: ...


class Reading(Protocol):
    """A replica read on its way; ``result()`` waits for the record the replica stores for the
    key (a tombstone too), or None when it stores none (raises PeerError)."""

    def result(self) -> Record | None: ...


class Peers(Protocol):
    """What a node calls on its peers; :class:`PeerClient` over the network,
    :class:`kvraft.peer.fake.FakePeers` in process."""

    def send_apply(self, node_id: str, record: Record) -> Sent: ...
    def send_apply_many(self, node_id: str, records: Sequence[Record]) -> list[Sent]: ...
    def send_read(self, node_id: str, key: str) -> Reading: ...
    def apply(self, node_id: str, records: Sequence[Record]) -> m.Applied: ...
    def read(self, node_id: str, key: str) -> Record | None: ...
    def read_keys(
        self, node_id: str, keys: Sequence[str], max_bytes: int | None = None
    ) -> m.Records: ...
    def scan(self, node_id: str, prefix: str, after: str | None, limit: int) -> m.Records: ...
    def hint(self, node_id: str, target: str, record: Record) -> Version | None: ...
    def ping(self, node_id: str, timeout: float | None = None) -> m.Pong: ...
    def tree(self, node_id: str, request: m.Tree) -> m.TreeHashes: ...
    def entries(self, node_id: str, part: int, leaves: Sequence[int]) -> m.LeafEntries: ...
    def forget(self, node_id: str, part: int, keys: Sequence[str], below: int) -> m.Forgotten: ...
    def change_members(self, node_id: str, change: m.MemberChange) -> dict: ...
    def stats(self, node_id: str, timeout: float | None = None) -> dict: ...
    def watch_open(self, node_id: str, prefix: str, timeout: float | None = None) -> str: ...
    def watch_poll(
        self, node_id: str, sid: str, after: int, wait: float, timeout: float | None = None
    ) -> m.WatchBatch: ...
    def watch_close(self, node_id: str, sid: str, timeout: float | None = None) -> None: ...
    def forward(
        self,
        node_id: str,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> PeerResponse: ...
    def batch_stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class _Ticketed(Generic[T]):
    """A batched item's place (:class:`Sent` for a write, :class:`Reading` for a read)."""

    __slots__ = ("batcher", "ticket")

    def __init__(self, batcher: PeerBatcher, ticket: Ticket) -> None:
        self.batcher, self.ticket = batcher, ticket

    def result(self) -> T:
        return self.batcher.result(self.ticket)


class PeerClient:
    def __init__(
        self,
        secret: str,
        timeout: float,
        address_of: Callable[[str], str],
        mark: Callable[[str, bool], None] = lambda _n, _ok: None,
        stopping: Callable[[], bool] = lambda: False,
        max_value_bytes: int = 1 << 20,
    ) -> None:
        self.timeout = timeout
        self.http = HttpTransport(secret, timeout=timeout)
        self._secret = secret
        self._address_of = address_of
        self._mark = mark
        self._stopping = stopping
        self._max_value_bytes = max_value_bytes
        self._lock = threading.Lock()
        # (node id, APPLY or READ) -> its batcher, and the stream its batches go on
        self._batchers: dict[tuple[str, int], PeerBatcher] = {}
        self._streams: dict[tuple[str, int], PeerStream] = {}

    # -- replica writes and reads (streams) ------------------------------------------------------

    def send_apply(self, node_id: str, record: Record) -> Sent:
        """Send ``record`` to ``node_id`` (batched with other writes to it) and return at once;
        the answer is ``result()``'s. Every sent write's result must be read (an unread batch
        holds its peer's lane)."""
        size = len(record.key) + len(record.value) + 64
        batcher = self._batcher(node_id, APPLY)
        return _Ticketed(batcher, batcher.submit(record, size))

    def send_apply_many(self, node_id: str, records: Sequence[Record]) -> list[Sent]:
        """:meth:`send_apply` for several records at once, queued together and in order (one
        batch when they fit: the replica applies them in one transaction, in that order)."""
        batcher = self._batcher(node_id, APPLY)
        sizes = [len(r.key) + len(r.value) + 64 for r in records]
        return [_Ticketed(batcher, t) for t in batcher.submit_many(records, sizes)]

    def send_read(self, node_id: str, key: str) -> Reading:
        """Ask ``node_id`` for ``key`` (batched with other reads to it) and return at once; the
        record it stores (a tombstone too) or None is ``result()``'s. Every sent read's result
        must be read (an unread batch holds its peer's lane)."""
        batcher = self._batcher(node_id, READ)
        return _Ticketed(batcher, batcher.submit(key, len(key) + 16))

    def read(self, node_id: str, key: str) -> Record | None:
        """The record ``node_id`` stores for ``key`` (a tombstone too), or None; batched with
        other reads to that peer."""
        return self.send_read(node_id, key).result()

    @property
    def read_batch_keys(self) -> int:
        """Keys per read batch: the answer (every value at its largest) stays near 16 MiB."""
        return max(1, min(256, (16 << 20) // self._max_value_bytes))

    def batch_stats(self) -> dict[str, int]:
        """Batches sent and records (keys) they carried, replica writes and reads."""
        with self._lock:
            batchers = list(self._batchers.items())
        out = {}
        for kind, batches, items in (
            (APPLY, "replica_batches", "replica_batched_records"),
            (READ, "read_batches", "read_batched_keys"),
        ):
            out[batches] = sum(b.requests for (_n, k), b in batchers if k == kind)
            out[items] = sum(b.records for (_n, k), b in batchers if k == kind)
        return out

    def _batcher(self, node_id: str, kind: int) -> PeerBatcher:
        b = self._batchers.get((node_id, kind))
        if b is None:
            with self._lock:
                b = self._batchers.get((node_id, kind))
                if b is None:  # one lane: the peer's stream carries one batch at a time
                    b = self._batchers[(node_id, kind)] = PeerBatcher(
                        lambda items: self._stream_send(node_id, kind, items),
                        lambda sent: self._stream_answer(node_id, kind, *sent),
                        lanes=1,
                        max_records=256 if kind == APPLY else self.read_batch_keys,
                        unreachable=lambda exc: not isinstance(exc, StreamRefused),
                    )
        return b

    def _stream_send(self, node_id: str, kind: int, items: list) -> tuple:
        """Send a batch (records to apply, or keys to read) on ``node_id``'s stream for
        ``kind`` (opened on first use)."""
        if self._stopping():  # close() has closed the streams: open no new ones
            raise PeerConnectError(f"{node_id}: this node is shutting down")
        try:
            addr = self._address_of(node_id)
            peer = self._streams.get((node_id, kind))
            if peer is None or peer.addr != addr:
                if peer is not None:
                    peer.close()
                answer_limit = (
                    64 << 20
                    if kind == APPLY  # results: 12 bytes and an id
                    else self.read_batch_keys * (self._max_value_bytes + (64 << 10))
                )
                peer = self._streams[(node_id, kind)] = PeerStream(
                    addr, self._secret, self.timeout, answer_limit
                )
            if kind == APPLY:
                payload = m.Apply(tuple(items)).to_wire()[1]
            else:
                payload = m.ReadKeys(tuple(items)).to_frame()
            peer.send(payload, kind)
        except PeerError:
            self._mark(node_id, False)
            raise
        return peer, items

    def _stream_answer(self, node_id: str, kind: int, peer: PeerStream, items: list) -> list:
        """One result per item: an ApplyResult per record, the stored Record (or None) per key."""
        try:
            payload = peer.receive()
        except StreamRefused:
            self._mark(node_id, True)  # it answered: up, but it did not serve the batch
            raise
        except PeerError:
            self._mark(node_id, False)
            raise
        self._mark(node_id, True)
        try:
            if kind == APPLY:
                return list(m.Applied.from_wire({}, payload).results)
            found = {r.key: r for r in m.Records.from_wire({}, payload).records}
            return [found.get(k) for k in items]
        except ValueError as exc:  # MessageError, WireError
            raise PeerError(f"{node_id}: bad stream answer: {exc}") from exc

    # -- messages over HTTP ----------------------------------------------------------------------

    def call(
        self,
        node_id: str,
        message: Any,
        timeout: float | None = None,
        liveness: bool = True,
        addr: str | None = None,
    ) -> Any:
        """Send one message over HTTP and decode its answer (``wire_bytes`` set). ``addr``
        reaches an address instead of a member (a node joining a cluster)."""
        query, body = message.to_wire()
        target = message.PATH + ("?" + urlencode(query) if query else "")
        try:
            resp = self.http.request(
                addr or self._address_of(node_id),
                message.METHOD,
                target,
                body,
                {m.VERSION_HEADER: str(m.VERSION)},
                timeout=timeout,
            )
        except PeerError:
            if liveness and addr is None:
                self._mark(node_id, False)
            raise
        if liveness and addr is None:
            self._mark(node_id, True)
        if resp.status >= 300:
            raise PeerStatus(node_id, resp.status, resp.body)
        try:
            answer = message.ANSWER.from_wire(resp.headers, resp.body)
        except ValueError as exc:
            raise PeerError(f"{node_id}: bad answer to {message.PATH}: {exc}") from exc
        return _with_size(answer, len(body) + len(resp.body))

    def apply(self, node_id: str, records: Sequence[Record]) -> m.Applied:
        """Apply ``records`` on ``node_id`` in one request (sync, repairs, hand-off, hints)."""
        return self.call(node_id, m.Apply(tuple(records)))

    def read_keys(
        self, node_id: str, keys: Sequence[str], max_bytes: int | None = None
    ) -> m.Records:
        """The stored records among ``keys`` in one request (see :class:`messages.ReadKeys`)."""
        return self.call(node_id, m.ReadKeys(tuple(keys), max_bytes))

    def scan(self, node_id: str, prefix: str, after: str | None, limit: int) -> m.Records:
        return self.call(node_id, m.Scan(prefix, after, limit))

    def hint(self, node_id: str, target: str, record: Record) -> Version | None:
        """Store ``record`` on ``node_id`` as a hint for ``target``; the newest version of the
        key the holder has (None from a holder that does not say)."""
        return self.call(node_id, m.Hint(target, (record,))).newest

    def ping(self, node_id: str, timeout: float | None = None) -> m.Pong:
        return self.call(node_id, m.Ping(), timeout=timeout)

    def ping_at(self, addr: str, timeout: float | None = None) -> m.Pong:
        """Ping an address that may not be a member yet (a node joining asks its cluster)."""
        return self.call(addr, m.Ping(), timeout=timeout, addr=addr)

    def tree(self, node_id: str, request: m.Tree) -> m.TreeHashes:
        return self.call(node_id, request)

    def entries(self, node_id: str, part: int, leaves: Sequence[int]) -> m.LeafEntries:
        return self.call(node_id, m.Entries(part, tuple(leaves)))

    def forget(self, node_id: str, part: int, keys: Sequence[str], below: int) -> m.Forgotten:
        return self.call(node_id, m.Forget(part, tuple(keys), below))

    def change_members(
        self,
        node_id: str,
        change: m.MemberChange,
        timeout: float | None = None,
        addr: str | None = None,
    ) -> dict:
        """Ask ``node_id`` (the Raft leader; or ``addr``) to make a membership change.
        :class:`PeerStatus` carries its refusal's code; any other PeerError: maybe applied."""
        return self.call(node_id, change, timeout=timeout, liveness=False, addr=addr).data

    def stats(self, node_id: str, timeout: float | None = None) -> dict:
        return self.call(node_id, m.Stats(), timeout=timeout, liveness=False).data

    def watch_open(self, node_id: str, prefix: str, timeout: float | None = None) -> str:
        return self.call(node_id, m.WatchOpen(prefix), timeout=timeout, liveness=False).sid

    def watch_poll(
        self, node_id: str, sid: str, after: int, wait: float, timeout: float | None = None
    ) -> m.WatchBatch:
        """The next batch of a subscription; ``gone`` when the peer no longer has it. Blocks up
        to ``wait`` (plus ``timeout`` for the answer)."""
        try:
            return self.call(
                node_id, m.WatchPoll(sid, after, wait), timeout=timeout, liveness=False
            )
        except PeerStatus as exc:
            if exc.status == REFUSALS[m.Refusal.GONE][0]:
                return m.WatchBatch(gone=True)
            raise

    def watch_close(self, node_id: str, sid: str, timeout: float | None = None) -> None:
        self.call(node_id, m.WatchClose(sid), timeout=timeout, liveness=False)

    def forward(
        self,
        node_id: str,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> PeerResponse:
        """Send a client's request on to ``node_id`` (the leader's balancing); any answer.
        A request that is not idempotent is never sent twice."""
        return self.http.request(
            self._address_of(node_id), method, target, body, headers, timeout, idempotent
        )

    def close(self) -> None:
        """Close the pooled connections and the streams (blocks briefly; idempotent)."""
        self.http.close()
        with self._lock:
            streams = list(self._streams.values())
        for s in streams:
            s.close()


def _with_size(answer: Any, size: int) -> Any:
    object.__setattr__(answer, "wire_bytes", size)  # frozen: set once, before anyone sees it
    return answer
