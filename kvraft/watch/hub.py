"""The change hub: this node's applied records, fanned out to the subscribers of a key prefix.

The store's apply path publishes every record it applies (:meth:`ChangeHub.publish`); local
watchers (through :class:`~kvraft.watch.feed.ClusterFeed`) and other nodes' long-polls
(through :class:`~kvraft.watch.subscriptions.PeerSubscriptions`) subscribe.

``publish`` never blocks: a subscriber whose queue is full is dropped (it sees the end of its
stream and must resubscribe), so a slow watcher cannot slow down writes. This module must not
block a publisher, do IO or import Flask.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from dataclasses import replace

from ..model import Record

QUEUE_SIZE = 10000


class Subscription:
    """One subscriber's queue of records under ``prefix``. ``dropped`` is set when the queue
    overflowed and the hub let it go (the subscriber must subscribe again; changes were lost).

    One consumer thread reads it; the hub's publishers fill it from any thread."""

    def __init__(self, hub: ChangeHub, prefix: str, values: bool = True) -> None:
        self.hub = hub
        self.prefix = prefix
        self.values = values  # False: records arrive with an empty value (nothing big is held)
        self.queue: queue.Queue[Record | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = False

    def get(self, timeout: float | None = None) -> Record | None:
        """Next record, or None on timeout or when the subscription was dropped."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self, limit: int) -> list[Record]:
        """Up to ``limit`` records already queued, without waiting."""
        out: list[Record] = []
        while len(out) < limit:
            try:
                rec = self.queue.get_nowait()
            except queue.Empty:
                break
            if rec is not None:
                out.append(rec)
        return out

    def close(self) -> None:
        """Stop receiving records (idempotent)."""
        self.hub.unsubscribe(self)


class ChangeHub:
    """This node's applied records, fanned out to subscribers by key prefix. Thread safe.

    :meth:`publish` never blocks: a subscriber whose queue is full is dropped."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, prefix: str = "", values: bool = True) -> Subscription:
        """A new subscription to records under ``prefix`` (from now on); ``values=False``:
        records arrive with an empty value, so a queue of them holds nothing big."""
        sub = Subscription(self, prefix, values)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` (idempotent)."""
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    def publish(self, records: Iterable[Record]) -> None:
        """Queue each record for every subscriber whose prefix it has. Never blocks; called by
        the store's apply path from any thread (the subscriber list is copied on write)."""
        subs = self._subs
        if not subs:
            return
        for rec in records:
            bare = None
            for sub in subs:
                if rec.key.startswith(sub.prefix):
                    if not sub.values and bare is None:
                        bare = replace(rec, value=b"") if rec.value else rec
                    try:
                        sub.queue.put_nowait(rec if sub.values else bare)
                    except queue.Full:
                        sub.dropped = True
                        self.unsubscribe(sub)
