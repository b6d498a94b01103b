"""FakeNetwork: an in-process network of :class:`~kvraft.peer.server.PeerServer` by node id, for
tests that script faults in milliseconds instead of cutting real sockets.

``network.client("n1")`` is a :class:`FakePeers`: the same typed methods as
:class:`~kvraft.peer.client.PeerClient` (the :class:`~kvraft.peer.client.Peers` protocol), each
message encoded and decoded by its real codec and answered by the handler the destination
registered on its server. Controls, all thread-safe:

- ``drop(src, dst, after=False)``: messages from ``src`` to ``dst`` are lost (``after``: lost
  on the way back, so the destination has acted on them: the sender gets a
  :class:`PeerError` (maybe applied) rather than a :class:`PeerConnectError` (not delivered));
- ``partition(*groups)``: sets of node ids that reach only their own set; ``heal()`` undoes
  every partition, drop, delay and reorder;
- ``delay(seconds, src=None, dst=None, delivered=True, kinds=None)``: a slow link. With a
  ``clock`` (the in-process cluster's FakeClock) nothing sleeps: a delayed message steps the
  clock by its delay, or by ``timeout`` (the caller's peer timeout) when the delay exceeds it;
  in that case the caller gets the error a real timeout gives, :class:`PeerError` (maybe
  applied), and the message was either acted on by the destination with its reply lost
  (``delivered=True``) or never reached it (``delivered=False``); the caller cannot tell
  which. Without a clock a delayed delivery waits through the injected ``sleep`` and is never
  judged against a timeout. ``kinds``: delay only these message classes; ``delay(0, ...)``
  removes the rule of the same ``src``, ``dst`` and ``kinds``. Delays of several matching
  rules add up. A message to an unreachable node fails at once, delayed or not. Inline, each
  delayed call steps the clock in turn, so calls a real node makes in parallel move the clock
  by the sum of their delays, not the longest;
- ``reorder(window)``: each delivery waits a random extra 0 to ``window`` seconds (the
  injected ``rng``, through the injected ``sleep``: real time by default, never the clock), so
  messages sent concurrently from threads arrive out of order;
- ``crash(node)`` / ``restart(node, server)``: a node that is gone refuses connections;
- ``on_send(hook)``: ``hook(src, dst, message)`` is called before each delivery (outside the
  lock), so a scenario can change the faults at a chosen message (cut a round half way).

Liveness marks are told like the real client tells them (``mark`` per client).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from ..errors import KvError
from ..hlc import Version
from ..storage import ApplyResult, Record
from . import messages as m
from .client import PeerStatus
from .http import PeerConnectError, PeerError, PeerResponse
from .server import PeerServer

T = TypeVar("T")


class SteppedClock(Protocol):
    """What the network needs of a fake clock: a thread-safe step forward."""

    def step(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class _Delay:
    src: str | None
    dst: str | None
    kinds: tuple[type, ...] | None
    seconds: float
    delivered: bool

    def matches(self, src: str, dst: str, message: Any) -> bool:
        return (
            self.src in (None, src)
            and self.dst in (None, dst)
            and (self.kinds is None or isinstance(message, self.kinds))
        )


class FakeNetwork:
    """The in-process network (see the module). Thread-safe; ``deliver`` blocks only in a
    handler or in the injected ``sleep`` (reorder, or a delay without a ``clock``)."""

    def __init__(
        self,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        describe: Callable[[BaseException], tuple[int, str, str]] | None = None,
        clock: SteppedClock | None = None,
        timeout: float | None = None,
    ) -> None:
        # a handler's error -> (status, code, message) as the HTTP layer would answer it
        # (api.errors.describe); kvraft itself knows no status
        self._describe = describe or (lambda exc: (500, "internal", str(exc)))
        self._sleep = sleep
        self._rng = rng or random.Random(0)
        self._lock = threading.Lock()
        self._servers: dict[str, PeerServer] = {}
        self._dropped: dict[tuple[str, str], bool] = {}  # (src, dst) -> lost after delivery
        self._groups: list[frozenset[str]] = []
        self._clock, self._timeout = clock, timeout
        self._delays: list[_Delay] = []
        self._window = 0.0
        self._hook: Callable[[str, str, Any], None] | None = None
        self.delivered: list[tuple[str, str, str]] = []  # (src, dst, message type) in order

    # -- membership of the network ---------------------------------------------------------------

    def add(self, node_id: str, server: PeerServer) -> None:
        with self._lock:
            self._servers[node_id] = server

    def crash(self, node_id: str) -> None:
        with self._lock:
            self._servers.pop(node_id, None)

    def restart(self, node_id: str, server: PeerServer) -> None:
        self.add(node_id, server)

    def client(
        self, node_id: str, mark: Callable[[str, bool], None] = lambda _n, _ok: None
    ) -> FakePeers:
        return FakePeers(self, node_id, mark)

    # -- faults ----------------------------------------------------------------------------------

    def drop(self, src: str, dst: str, after: bool = False) -> None:
        with self._lock:
            self._dropped[(src, dst)] = after

    def partition(self, *groups: set[str] | frozenset[str]) -> None:
        with self._lock:
            self._groups = [frozenset(g) for g in groups]

    def delay(
        self,
        seconds: float,
        src: str | None = None,
        dst: str | None = None,
        delivered: bool = True,
        kinds: Sequence[type] | None = None,
    ) -> None:
        """Messages from ``src`` to ``dst`` (None: any), of the classes ``kinds`` (None: all),
        take ``seconds`` more; past the timeout they are acted on with the reply lost
        (``delivered``) or lost on the way. ``seconds=0`` removes the rule."""
        if seconds < 0:
            raise ValueError("a delay is not negative")
        rule = _Delay(src, dst, tuple(kinds) if kinds is not None else None, seconds, delivered)
        with self._lock:
            self._delays = [
                d for d in self._delays if (d.src, d.dst, d.kinds) != (src, dst, rule.kinds)
            ]
            if seconds:
                self._delays.append(rule)

    def reorder(self, window: float) -> None:
        with self._lock:
            self._window = window

    def on_send(self, hook: Callable[[str, str, Any], None] | None) -> None:
        """Call ``hook(src, dst, message)`` before each delivery (None: no hook)."""
        with self._lock:
            self._hook = hook

    def heal(self) -> None:
        with self._lock:
            self._dropped.clear()
            self._groups = []
            self._delays.clear()
            self._window = 0.0

    # -- delivery --------------------------------------------------------------------------------

    def _cut(self, src: str, dst: str) -> bool:
        if not self._groups:
            return False
        return not any(src in g and dst in g for g in self._groups)

    def deliver(self, src: str, dst: str, message: Any, timeout: float | None = None) -> Any:
        """Carry ``message`` from ``src`` to ``dst`` through its codec; the decoded answer.
        ``timeout``: the caller's for this call (default: the network's). Raises
        PeerConnectError (not delivered), PeerError (maybe delivered: the answer was lost, or
        a delay passed the timeout) or PeerStatus (the handler refused it)."""
        hook = self._hook
        if hook is not None:
            hook(src, dst, message)
        with self._lock:
            server = self._servers.get(dst)
            lost_after = self._dropped.get((src, dst))
            cut = self._cut(src, dst)
            matching = [d for d in self._delays if d.matches(src, dst, message)]
            jitter = self._rng.uniform(0, self._window) if self._window else 0.0
        if server is None or cut or lost_after is False:
            if jitter:
                self._sleep(jitter)
            raise PeerConnectError(f"{dst}: unreachable from {src} (fake network)")
        delay = sum(d.seconds for d in matching)
        timed_out = False
        if delay and self._clock is not None:
            limit = self._timeout if timeout is None else timeout
            timed_out = limit is not None and delay > limit
            self._clock.step(limit if timed_out and limit is not None else delay)
        elif delay:
            jitter += delay
        if jitter:
            self._sleep(jitter)
        if timed_out:
            if all(d.delivered for d in matching):
                try:
                    self._dispatch(src, dst, server, message)
                except PeerStatus:
                    pass  # its answer, a refusal, is lost like any other
            raise PeerError(f"{dst}: timed out after {limit} s (fake network: delayed {delay} s)")
        answer = self._dispatch(src, dst, server, message)
        if lost_after:
            raise PeerError(f"{dst}: the answer was lost (fake network)")
        if isinstance(answer, m.WatchBatch) and answer.gone:
            return answer
        wire = answer.to_wire()
        headers = {k.lower(): v for k, v in wire.headers}
        return type(answer).from_wire(headers, wire.body)

    def _dispatch(self, src: str, dst: str, server: PeerServer, message: Any) -> Any:
        """Hand ``message`` (through its codec) to ``dst``'s handler; its answer object."""
        query, body = message.to_wire()
        decoded = type(message).from_wire(query, body)
        try:
            answer = server.dispatch(decoded)
        except KvError as exc:
            status, code, text = self._describe(exc)
            refusal = json.dumps({"error": code, "message": text}).encode()
            raise PeerStatus(dst, status, refusal) from exc
        with self._lock:
            self.delivered.append((src, dst, type(message).__name__))
        return answer


class _Done(Generic[T]):
    """An exchange already made (the fake network delivers inline): what ``call`` returned,
    or the PeerError it raised, given back by ``result()`` (a :class:`~kvraft.peer.client.Sent` or
    a :class:`~kvraft.peer.client.Reading`)."""

    __slots__ = ("_result", "_error")

    def __init__(self, call: Callable[[], T]) -> None:
        self._error: PeerError | None = None
        self._result: T | None = None
        try:
            self._result = call()
        except PeerError as exc:
            self._error = exc

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


class FakePeers:
    """The peers of node ``me`` over a :class:`FakeNetwork` (no batching: one message each)."""

    def __init__(self, network: FakeNetwork, me: str, mark: Callable[[str, bool], None]) -> None:
        self.network, self.me, self._mark = network, me, mark

    def _call(
        self, node_id: str, message: Any, liveness: bool = True, timeout: float | None = None
    ) -> Any:
        try:
            answer = self.network.deliver(self.me, node_id, message, timeout)
        except PeerStatus:
            if liveness:
                self._mark(node_id, True)
            raise
        except PeerError:
            if liveness:
                self._mark(node_id, False)
            raise
        if liveness:
            self._mark(node_id, True)
        return answer

    def send_apply(self, node_id: str, record: Record) -> _Done[ApplyResult]:
        return _Done(lambda: self.apply(node_id, [record]).results[0])

    def send_apply_many(self, node_id: str, records: Sequence[Record]) -> list[_Done[ApplyResult]]:
        """One Apply of every record, made at once: each record's answer or the failure."""
        applied: _Done[tuple[ApplyResult, ...]] = _Done(
            lambda: tuple(self.apply(node_id, records).results)
        )

        def nth(i: int) -> Callable[[], ApplyResult]:
            return lambda: applied.result()[i]

        return [_Done(nth(i)) for i in range(len(records))]

    def send_read(self, node_id: str, key: str) -> _Done[Record | None]:
        """:meth:`read`, made at once (no batching): its answer or failure is ``result()``'s."""
        return _Done(lambda: self.read(node_id, key))

    def apply(self, node_id: str, records: Sequence[Record]) -> m.Applied:
        return self._call(node_id, m.Apply(tuple(records)))

    def read(self, node_id: str, key: str) -> Record | None:
        found = self._call(node_id, m.ReadKeys((key,))).records
        return found[0] if found else None

    def read_keys(
        self, node_id: str, keys: Sequence[str], max_bytes: int | None = None
    ) -> m.Records:
        return self._call(node_id, m.ReadKeys(tuple(keys), max_bytes))

    def scan(self, node_id: str, prefix: str, after: str | None, limit: int) -> m.Records:
        return self._call(node_id, m.Scan(prefix, after, limit))

    def hint(self, node_id: str, target: str, record: Record) -> Version | None:
        return self._call(node_id, m.Hint(target, (record,))).newest

    def ping(self, node_id: str, timeout: float | None = None) -> m.Pong:
        return self._call(node_id, m.Ping(), timeout=timeout)

    def tree(self, node_id: str, request: m.Tree) -> m.TreeHashes:
        return self._call(node_id, request)

    def entries(self, node_id: str, part: int, leaves: Sequence[int]) -> m.LeafEntries:
        return self._call(node_id, m.Entries(part, tuple(leaves)))

    def forget(self, node_id: str, part: int, keys: Sequence[str], below: int) -> m.Forgotten:
        return self._call(node_id, m.Forget(part, tuple(keys), below))

    def change_members(self, node_id: str, change: m.MemberChange, **_kw: Any) -> dict:
        return self._call(node_id, change, liveness=False).data

    def stats(self, node_id: str, timeout: float | None = None) -> dict:
        return self._call(node_id, m.Stats(), liveness=False, timeout=timeout).data

    def watch_open(self, node_id: str, prefix: str, timeout: float | None = None) -> str:
        return self._call(node_id, m.WatchOpen(prefix), liveness=False).sid

    def watch_poll(
        self, node_id: str, sid: str, after: int, wait: float, timeout: float | None = None
    ) -> m.WatchBatch:
        return self._call(node_id, m.WatchPoll(sid, after, wait), liveness=False)

    def watch_close(self, node_id: str, sid: str, timeout: float | None = None) -> None:
        self._call(node_id, m.WatchClose(sid), liveness=False)

    def forward(self, node_id: str, method: str, target: str, *_a: Any, **_kw: Any) -> PeerResponse:
        raise PeerConnectError(f"{node_id}: client requests are not carried by the fake network")

    def batch_stats(self) -> dict[str, int]:
        return {
            "replica_batches": 0,
            "replica_batched_records": 0,
            "read_batches": 0,
            "read_batched_keys": 0,
        }

    def close(self) -> None:
        pass
