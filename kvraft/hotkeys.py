"""Keys that several coordinators write at once, remembered for a moment.

A key written through several nodes at once has several coordinators, each stamping its own
versions: their rounds meet each other's newer versions on the replicas and stamp again (about
a third of the PUTs of one key under 16 connections spread over three nodes). One coordinator
per key would stamp them all in order, in groups (:mod:`kvraft.keygroups`), and never meet a
newer version of its own. So a coordinator that had to stamp a PUT again marks its key hot for
``ttl`` seconds, and the HTTP layer sends that key's PUTs to its *owner* (the first replica of
its partition that is serving, the same node on every node that sees the same members up) while
the mark lasts. The owner coordinates as any node would; a forwarded request is never
forwarded again, so nodes that disagree on the owner cost one hop, never a loop.

A mark is not refreshed by the forwards it causes: once it lapses, the node writes the key
itself again, and marks it again if that still meets other coordinators. A key that cooled
down thus stops costing a hop within ``ttl``. At most ``capacity`` keys are remembered (the
oldest marks go first). An owner a forward could not reach, or that did not answer, is
avoided (:meth:`HotKeys.avoid`) for ``ttl`` seconds, at least one: the node writes its hot
keys itself meanwhile, as before. No IO; the clock is injected.

    hot = HotKeys(ttl=1.0)
    hot.mark("k")
    hot.is_hot("k")      # True for a second
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["HotKeys"]


class HotKeys:
    def __init__(
        self,
        ttl: float = 1.0,
        capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or capacity < 1:
            raise ValueError("ttl must be >= 0 and capacity >= 1")
        self.ttl, self.capacity, self._clock = ttl, capacity, clock
        # key -> end of its mark; in the order of their ends (one ttl for all, a mark again
        # moves its key to the end), so lapsed marks are at the front
        self._until: OrderedDict[str, float] = OrderedDict()
        self._avoid: dict[str, float] = {}  # owner -> end of its avoidance
        self._lock = threading.Lock()

    def mark(self, key: str) -> None:
        """``key`` met another coordinator's write: hot for ``ttl`` seconds from now."""
        if self.ttl == 0:
            return
        now = self._clock()
        with self._lock:
            self._until[key] = now + self.ttl
            self._until.move_to_end(key)
            self._drop_lapsed_locked(now)
            while len(self._until) > self.capacity:
                self._until.popitem(last=False)

    def is_hot(self, key: str) -> bool:
        if not self._until:  # the common case: nothing marked, no lock
            return False
        with self._lock:
            now = self._clock()
            self._drop_lapsed_locked(now)
            return key in self._until

    def avoid(self, owner: str) -> None:
        """A forward to ``owner`` could not be sent or was not answered: write its keys here
        (:meth:`avoided` says so) for ``ttl`` seconds, at least one, while pings find out
        whether it is up."""
        with self._lock:
            self._avoid[owner] = self._clock() + max(self.ttl, 1.0)

    def avoided(self, owner: str) -> bool:
        if not self._avoid:
            return False
        with self._lock:
            until = self._avoid.get(owner)
            if until is not None and until <= self._clock():
                del self._avoid[owner]
                return False
            return until is not None

    def _drop_lapsed_locked(self, now: float) -> None:
        while self._until:
            key, until = next(iter(self._until.items()))
            if until > now:
                return
            del self._until[key]

    def __len__(self) -> int:
        with self._lock:
            self._drop_lapsed_locked(self._clock())
            return len(self._until)
