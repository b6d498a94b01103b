"""The clock seam: wall time and monotonic time behind one small protocol.

Every component that needs time takes a :class:`Clock` in its constructor instead of calling
:mod:`time` itself, so tests can set, step and skew it (:class:`FakeClock`). The real one is
:class:`SystemClock`, optionally skewed by ``offset_ms`` (``KVRAFT_CLOCK_OFFSET_MS``, the chaos
runs' clock-skew injection). This module holds no decisions and does no other IO.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "physical_ms"]


class Clock(Protocol):
    """Wall and monotonic time. Implementations are thread-safe; ``sleep`` blocks (a fake one
    advances its own time instead)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (skewed as configured)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and liveness)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock advances instead of blocking)."""
        ...


def physical_ms(clock: Clock) -> int:
    """``clock``'s wall time in whole milliseconds (what the HLC's physical part takes)."""
    return int(clock.time() * 1000)


class SystemClock:
    """The machine's clocks; wall time shifted by ``offset_ms`` (0 unless skew is injected)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def time(self) -> float:
        return _time.time() + self.offset_ms / 1000

    def monotonic(self) -> float:
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        _time.sleep(seconds)


class FakeClock:
    """A settable, steppable clock shared by an in-process cluster; ``skewed(ms)`` gives one
    node's view of it with its own wall-clock offset (monotonic time is never skewed).
    Thread-safe; ``sleep`` advances the shared time and returns at once."""

    def __init__(self, start: float = 1_700_000_000.0, offset_ms: int = 0) -> None:
        self._lock = threading.Lock()
        self._now = [start]  # shared by the skewed views
        self._mono = [0.0]
        self.offset_ms = offset_ms

    def time(self) -> float:
        with self._lock:
            return self._now[0] + self.offset_ms / 1000

    def monotonic(self) -> float:
        with self._lock:
            return self._mono[0]

    def sleep(self, seconds: float) -> None:
        self.step(seconds)

    def step(self, seconds: float) -> None:
        """Advance wall and monotonic time by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a fake clock steps forward; set() moves the wall clock back")
        with self._lock:
            self._now[0] += seconds
            self._mono[0] += seconds

    def set(self, wall: float) -> None:
        """Set the shared wall time (monotonic time is untouched)."""
        with self._lock:
            self._now[0] = wall

    def skew(self, offset_ms: int) -> None:
        """Set this view's wall-clock offset from the shared time."""
        with self._lock:
            self.offset_ms = offset_ms

    def skewed(self, offset_ms: int = 0) -> FakeClock:
        """Another view of the same shared time with its own offset."""
        view = FakeClock.__new__(FakeClock)
        view._lock, view._now, view._mono, view.offset_ms = (
            self._lock,
            self._now,
            self._mono,
            offset_ms,
        )
        return view
