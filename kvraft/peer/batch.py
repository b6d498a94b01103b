"""Requests to one peer, coalesced: concurrent replica writes (or reads) share one request.

Under load many client writes at once are bound for the same peer; sending each as its own
request costs a request's framing and syscalls per record on both sides, and a commit each on
the replica. A :class:`PeerBatcher` (the node keeps one per peer for writes and one for reads,
each sending on its own :mod:`kvraft.peer.stream`) lets at most ``lanes`` requests be in flight to
its peer; a record submitted while all lanes are busy waits in a queue, and when a lane frees up
everything queued goes out together (up to ``max_records``/``max_bytes``), applied by the
replica in one transaction. Alone, a record is sent at once: no timer, no added wait.

No thread of its own: :meth:`submit` sends when a lane is free (so the request is on the wire
while the caller commits its local copy), and the caller that then waits for a batch's answer
reads it for the whole batch, hands every record its result, and sends what queued meanwhile.

Errors keep the transport's meaning for every record of a batch: a
:class:`~kvraft.peer.http.PeerConnectError` (nothing was sent) or any other
:class:`~kvraft.peer.http.PeerError` (it may have been applied).

A batch that failed because its peer did not answer (``unreachable(error)`` says so; the
node's streams count every error but a refusal) fails the records queued behind it at once
with a PeerConnectError, certainly not sent, instead of sending them into the same silence: a
blackholed peer then costs its callers one timeout, not one per batch in the queue. The next
record submitted tries the peer again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .http import PeerConnectError, PeerError

Start = Callable[[list], Any]  # records -> a sent request (or raises PeerError)
Finish = Callable[[Any], list]  # that request -> one result per record (or raises PeerError)


def _latch() -> threading.Lock:
    """A one-shot gate: closed when made, opened by ``release()``. Waiters ``acquire`` and
    ``release`` in turn (cheaper than an Event, and a condition's ``notify_all`` would wake
    every writer waiting on the peer at each answer)."""
    gate = threading.Lock()
    gate.acquire()
    return gate


def _pass(gate: threading.Lock, timeout: float | None = None) -> bool:
    """Wait until ``gate`` is open (at most ``timeout`` s; None: as long as it takes)."""
    if not gate.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
        return False
    gate.release()
    return True


class _Batch:
    __slots__ = ("tickets", "sent", "claimed", "on_wire", "finished")

    def __init__(self, tickets: list[Ticket]) -> None:
        self.tickets = tickets
        self.sent: Any = None  # what ``start`` returned
        self.claimed = False  # a waiter is reading the answer
        self.on_wire = _latch()  # opens once sent (or failed to send)
        self.finished = _latch()  # opens once every ticket has its outcome


class Ticket:
    """One record's place in a batch; :meth:`PeerBatcher.result` waits for its outcome."""

    __slots__ = ("record", "size", "batch", "assigned", "result", "error", "done")

    def __init__(self, record, size: int) -> None:
        self.record, self.size = record, size
        self.batch: _Batch | None = None
        self.assigned: threading.Lock | None = None  # a latch while the ticket is queued
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class PeerBatcher:
    def __init__(
        self,
        start: Start,
        finish: Finish,
        lanes: int = 2,
        max_records: int = 256,
        max_bytes: int = 4 << 20,
        wait_limit: float = 30.0,
        unreachable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._start, self._finish = start, finish
        self._unreachable = unreachable  # error -> the peer did not answer (fail the queue)
        self.lanes, self.max_records, self.max_bytes = lanes, max_records, max_bytes
        self.wait_limit = wait_limit  # bound on the wait in the queue (see result())
        self._lock = threading.Lock()
        self._queue: list[Ticket] = []
        self._inflight = 0
        self.requests = 0  # requests sent, for the figures (records / requests = batch size)
        self.records = 0

    def submit(self, record, size: int) -> Ticket:
        """Queue ``record`` (``size`` bytes encoded) and send now if a lane is free."""
        return self.submit_many((record,), (size,))[0]

    def submit_many(self, records: Sequence, sizes: Sequence[int]) -> list[Ticket]:
        """Queue ``records`` together and in order (one batch when they fit in one, so a peer
        applies them in that order) and send now if a lane is free."""
        tickets = [Ticket(r, n) for r, n in zip(records, sizes, strict=True)]
        with self._lock:
            self._queue.extend(tickets)
            batch = self._take_locked()
            for ticket in tickets:
                if ticket.batch is None:
                    ticket.assigned = _latch()
        if batch is not None:
            self._send(batch)
        return tickets

    def result(self, ticket: Ticket):
        """The record's result from the peer; raises the batch's PeerError.

        Only the wait in the queue is bounded here (``wait_limit``: the record is then taken
        back, certainly not sent). Once in a batch it must not be abandoned, or nobody might
        read the batch's answer and the lane would stay taken: the waits for the send and for
        the reader are bounded by the transport's own timeouts instead."""
        if ticket.assigned is not None and not _pass(ticket.assigned, self.wait_limit):
            with self._lock:
                if ticket.batch is None:  # never sent: take it back, it is certainly lost
                    self._queue.remove(ticket)
                    raise PeerConnectError(f"batched write not sent in {self.wait_limit:.0f}s")
        batch = ticket.batch
        assert batch is not None
        _pass(batch.on_wire)  # _send opens it once sent or failed
        with self._lock:
            reader = not batch.claimed and not ticket.done
            batch.claimed = True
        if reader:
            try:
                results = self._finish(batch.sent)
                if len(results) != len(batch.tickets):
                    raise PeerError(
                        f"peer answered {len(results)} results for {len(batch.tickets)} records"
                    )
                error = None
            except Exception as exc:  # noqa: BLE001 - every record of the batch gets it
                results, error = [None] * len(batch.tickets), exc
            self._complete(batch, results, error)
        else:
            _pass(batch.finished)  # the reader opens it once every record has its outcome
        return self._outcome(ticket)

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _outcome(ticket: Ticket):
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _take_locked(self) -> _Batch | None:
        """Queued tickets as a batch when a lane is free (the lane is taken), else None."""
        if not self._queue or self._inflight >= self.lanes:
            return None
        n, size = 0, 0
        for t in self._queue:
            if n and (n >= self.max_records or size + t.size > self.max_bytes):
                break
            n, size = n + 1, size + t.size
        tickets, self._queue = self._queue[:n], self._queue[n:]
        batch = _Batch(tickets)
        for t in tickets:
            t.batch = batch
            if t.assigned is not None:
                t.assigned.release()
        self._inflight += 1
        self.requests += 1
        self.records += n
        return batch

    def _send(self, batch: _Batch) -> None:
        try:
            batch.sent = self._start([t.record for t in batch.tickets])
        except Exception as exc:  # noqa: BLE001 - e.g. PeerConnectError: nothing was sent
            batch.claimed = True
            batch.on_wire.release()
            self._complete(batch, [None] * len(batch.tickets), exc)
            return
        batch.on_wire.release()

    def _complete(self, batch: _Batch, results: list, error: BaseException | None) -> None:
        with self._lock:
            for t, r in zip(batch.tickets, results, strict=True):
                t.result, t.error, t.done = r, error, True
            self._inflight -= 1
            failed = self._fail_queue_locked(error)
            nxt = self._take_locked()
        batch.finished.release()
        if failed is not None:
            failed.finished.release()
        if nxt is not None:
            self._send(nxt)

    def _fail_queue_locked(self, error: BaseException | None) -> _Batch | None:
        """After a batch the peer did not answer: every queued ticket gets a PeerConnectError
        (it was never sent), in a batch of its own that is already over."""
        if error is None or not self._queue or self._unreachable is None:
            return None
        if not self._unreachable(error):
            return None
        failed = _Batch(self._queue)
        self._queue = []
        failed.claimed = True
        failed.on_wire.release()
        cause = PeerConnectError(f"not sent: the batch before it failed ({error})")
        for t in failed.tickets:
            t.batch, t.error, t.done = failed, cause, True
            if t.assigned is not None:
                t.assigned.release()
        return failed
