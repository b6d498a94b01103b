"""Concurrent calls for one key, run as groups: one leader per key runs what queued together.

A coordinator writes the writes of one key one round at a time (concurrent rounds would only
find each other's newer versions on the replicas and stamp again). Without grouping, ``n``
writers of a hot key wait for ``n`` replica rounds in turn, each its own commit on every
replica. :class:`KeyGroups` lets the writers that queue behind a round go in the next round
together: the leader takes the queued calls of its key (the leader's own first, then those
that ``same`` says may share its round, in arrival order, at most ``limit``), runs them with
one ``run`` call, gives each its outcome and hands the lead to the first call still queued.
Alone, a call runs at once: no timer, no added wait. Etcd batches concurrent proposals into
one Raft append the same way.

No thread of its own, like :class:`kvraft.storage.sqlite.Storage`'s group commit: the caller
that finds nobody leading its key leads.

    groups = KeyGroups(run=lambda key, items: [work(key, i) for i in items])
    result = groups.submit("k", item)      # blocks until its group ran; raises its error
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["KeyGroups"]

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")

Run = Callable[[str, list[I]], Sequence["R | BaseException"]]


class _Waiter(Generic[I, R]):
    __slots__ = ("item", "gate", "lead", "done", "result", "error")

    def __init__(self, item: I) -> None:
        self.item = item
        self.gate = threading.Lock()  # closed; opened when done, or with lead set
        self.gate.acquire()
        self.lead = False
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class KeyGroups(Generic[I, R]):
    """``run(key, items)`` returns one outcome per item, in order: a result, or the exception
    that call raises. An exception of ``run`` itself goes to every item of the group."""

    def __init__(
        self,
        run: Run,
        same: Callable[[I, I], bool] = lambda _a, _b: True,
        limit: int = 64,
    ) -> None:
        self._run, self._same, self.limit = run, same, limit
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Waiter[I, R]]] = {}
        self.groups = 0  # runs, and the items they carried (items / groups = group size)
        self.items = 0

    def submit(self, key: str, item: I) -> R:
        """Run ``item`` for ``key`` in a group; return its result or raise its exception."""
        mine: _Waiter[I, R] = _Waiter(item)
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
                mine.lead = True
            queue.append(mine)
        if not mine.lead:
            mine.gate.acquire()  # opened once its group ran, or with the lead handed to it
        if not mine.done:
            self._lead(key, queue)
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]  # done without error: a result

    def _shares(self, head: I, item: I) -> bool:
        """``same``, with an error of its own meaning "not in this round" (the call then goes
        in a later one): a call taken off the queue must never be left without its outcome."""
        try:
            return self._same(head, item)
        except Exception:  # noqa: BLE001 - a bug in ``same`` must not strand a waiting call
            return False

    def _lead(self, key: str, queue: deque[_Waiter[I, R]]) -> None:
        """Run the group at the head of ``queue`` (the leader's own call first), then hand the
        lead on to the first call still queued, or drop the key's queue when none is."""
        try:
            with self._lock:
                group = [queue.popleft()]
                head = group[0].item
                while queue and len(group) < self.limit and self._shares(head, queue[0].item):
                    group.append(queue.popleft())
                self.groups += 1
                self.items += len(group)
            try:
                outcomes = list(self._run(key, [w.item for w in group]))
                if len(outcomes) != len(group):
                    raise RuntimeError(f"{len(outcomes)} outcomes for {len(group)} calls")
            except BaseException as exc:  # noqa: BLE001 - every call of the group gets it
                outcomes = [exc] * len(group)
            for w, out in zip(group, outcomes, strict=True):
                if isinstance(out, BaseException):
                    w.error = out
                else:
                    w.result = out
                w.done = True
            for w in group[1:]:  # group[0] is this thread's own call
                w.gate.release()
        finally:
            with self._lock:
                if queue:
                    nxt = queue[0]
                    nxt.lead = True
                    nxt.gate.release()
                else:
                    del self._queues[key]
