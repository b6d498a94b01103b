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

__all__ = ["HLC", "LOGICAL_BITS", "LOGICAL_MASK", "Version", "clock_ms", "wall_clock_ms"]


def wall_clock_ms(offset_ms: int = 0) -> Callable[[], int]:
    """A physical clock in ms, optionally skewed by ``offset_ms`` (chaos clock-skew injection):
    the system clock's milliseconds (:class:`kvraft.clock.SystemClock`)."""
    return clock_ms(SystemClock(offset_ms))


def clock_ms(clock: Clock) -> Callable[[], int]:
    """The physical part of an HLC read from ``clock`` (wall milliseconds)."""
    return lambda: physical_ms(clock)


class HLC:
    """Thread-safe hybrid logical clock.

    ``now()`` is strictly increasing; ``observe(ts)`` folds in a timestamp seen from elsewhere so
    that a later local ``now()`` orders after it even if this node's wall clock is behind. With
    ``max_ahead_ms``, a timestamp further than that ahead of this node's physical clock is not
    folded in (``observe`` returns False): one bad clock must not drag every node's versions into
    the future. The same bound applies to ``last`` (the newest timestamp in the local store).
    The physical part comes from ``physical_ms`` (a function) or from ``clock`` (a
    :class:`kvraft.clock.Clock`; the system clock when neither is given).
    """

    def __init__(
        self,
        physical_ms: Callable[[], int] | None = None,
        last: int = 0,
        max_ahead_ms: int | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if physical_ms is not None and clock is not None:
            raise ValueError("give the HLC a physical_ms function or a clock, not both")
        self._physical = physical_ms or clock_ms(clock or SystemClock())
        self._max_ahead = max_ahead_ms
        self._lock = threading.Lock()
        self._last = last if self._within(last) else 0

    def _within(self, ts: int) -> bool:
        if self._max_ahead is None:
            return True
        return (ts >> LOGICAL_BITS) <= self._physical() + self._max_ahead

    def physical(self) -> int:
        """This node's physical clock in ms (skewed like the HLC's)."""
        return self._physical()

    def now(self) -> int:
        phys = self._physical() << LOGICAL_BITS
        with self._lock:
            self._last = max(self._last + 1, phys)
            return self._last

    def observe(self, ts: int) -> bool:
        """Fold ``ts`` in; False (and nothing changed) when it is too far ahead to trust."""
        if not self._within(ts):
            return False
        with self._lock:
            if ts > self._last:
                self._last = ts
        return True
