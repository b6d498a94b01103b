"""Hybrid logical clock (record versions themselves live in :mod:`kvraft.model`).

A version is ``(ts, node)``: ``ts`` is a 64-bit HLC timestamp (physical milliseconds in the high
48 bits, a logical counter in the low 16) and ``node`` the id of the node that stamped it. Versions
order by ``(ts, node)``; that order is the last-writer-wins rule, so every replica picks the same
winner. This module does no IO; the physical clock is injected so tests (and chaos runs) can
skew it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .clock import Clock, SystemClock, physical_ms
from .model import LOGICAL_BITS, LOGICAL_MASK, Version

__all__ = [
    "HLC",
    "LOGICAL_BITS",
    "LOGICAL_MASK",
    "RESERVE_MS",
    "Version",
    "clock_ms",
    "wall_clock_ms",
]


def wall_clock_ms(offset_ms: int = 0) -> Callable[[], int]:
    """A physical clock in ms, optionally skewed by ``offset_ms`` (chaos clock-skew injection):
    the system clock's milliseconds (:class:`kvraft.clock.SystemClock`)."""
    return clock_ms(SystemClock(offset_ms))


def clock_ms(clock: Clock) -> Callable[[], int]:
    """The physical part of an HLC read from ``clock`` (wall milliseconds)."""
    return lambda: physical_ms(clock)


RESERVE_MS = 100  # how far above what it issues the HLC reserves: a restart starts at most that
# much ahead (within any max_clock_offset), one reservation per 100 ms of issuing at most


class HLC:
    """Thread-safe hybrid logical clock.

    ``now()`` is strictly increasing; ``observe(ts)`` folds in a timestamp seen from elsewhere so
    that a later local ``now()`` orders after it even if this node's wall clock is behind. With
    ``max_ahead_ms``, a timestamp further than that ahead of this node's physical clock is not
    folded in (``observe`` returns False): one bad clock must not drag every node's versions into
    the future. The same bound applies to ``last`` (the newest timestamp in the local store).
    The physical part comes from ``physical_ms`` (a function) or from ``clock`` (a
    :class:`kvraft.clock.Clock`; the system clock when neither is given).

    Across a restart: ``last`` alone cannot stop the clock from issuing a timestamp again (a
    node's store does not hold the writes it coordinated for other replicas only, and a wall
    clock may be stepped back while the node is down), and a version issued twice would let a
    replica's copy of the first write pass as an acknowledgement of the second. With
    ``reserve``, no timestamp is issued above a bound that ``reserve(bound)`` has not stored
    durably first (a bound :data:`RESERVE_MS` ahead, so one call per that much time at most);
    the stored bound comes back as ``mark``, which the clock starts above.
    """

    def __init__(
        self,
        physical_ms: Callable[[], int] | None = None,
        last: int = 0,
        max_ahead_ms: int | None = None,
        *,
        clock: Clock | None = None,
        mark: int = 0,
        reserve: Callable[[int], None] | None = None,
    ) -> None:
        if physical_ms is not None and clock is not None:
            raise ValueError("give the HLC a physical_ms function or a clock, not both")
        self._physical = physical_ms or clock_ms(clock or SystemClock())
        self._max_ahead = max_ahead_ms
        self._lock = threading.Lock()
        self._last = max(last if self._within(last) else 0, mark)
        self._reserve = reserve
        self._reserved = mark  # nothing above it is issued before a reserve() stored more
        self._reserve_lock = threading.Lock()

    def _within(self, ts: int) -> bool:
        if self._max_ahead is None:
            return True
        return (ts >> LOGICAL_BITS) <= self._physical() + self._max_ahead

    def physical(self) -> int:
        """This node's physical clock in ms (skewed like the HLC's)."""
        return self._physical()

    def now(self, above: int = 0) -> int:
        """A new timestamp, greater than every one issued before and than ``above`` (a version
        a write must supersede: the clock moves up to it, even past ``max_ahead_ms``, since a
        timestamp issued twice would be worse than one far ahead)."""
        phys = self._physical() << LOGICAL_BITS
        with self._lock:
            self._last = ts = max(self._last + 1, phys, above + 1)
        if self._reserve is not None and ts > self._reserved:
            self._reserve_through(ts)
        return ts

    def _reserve_through(self, ts: int) -> None:
        """Store a bound above ``ts`` before ``ts`` is handed out (the callers in between
        wait for it, then find it covers them)."""
        assert self._reserve is not None
        with self._reserve_lock:
            if ts > self._reserved:
                bound = ts + (RESERVE_MS << LOGICAL_BITS)
                self._reserve(bound)
                self._reserved = bound

    def observe(self, ts: int) -> bool:
        """Fold ``ts`` in; False (and nothing changed) when it is too far ahead to trust."""
        if not self._within(ts):
            return False
        with self._lock:
            if ts > self._last:
                self._last = ts
        return True
