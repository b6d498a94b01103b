"""In-process change feed: the node publishes every record it applies; watchers subscribe.

``publish`` never blocks: a subscriber whose queue is full is dropped (it sees the end of its
stream and must resubscribe), so a slow watcher cannot slow down writes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

from .storage import Record

QUEUE_SIZE = 10000


class Subscription:
    def __init__(self, hub: ChangeHub, prefix: str) -> None:
        self.hub = hub
        self.prefix = prefix
        self.queue: queue.Queue[Record | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = False

    def get(self, timeout: float | None = None) -> Record | None:
        """Next record, or None on timeout or when the subscription was dropped."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.hub.unsubscribe(self)


class ChangeHub:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, prefix: str = "") -> Subscription:
        sub = Subscription(self, prefix)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    def publish(self, records: Iterable[Record]) -> None:
        subs = self._subs
        if not subs:
            return
        for rec in records:
            for sub in subs:
                if rec.key.startswith(sub.prefix):
                    try:
                        sub.queue.put_nowait(rec)
                    except queue.Full:
                        sub.dropped = True
                        self.unsubscribe(sub)
