"""Pure load-balancing choice for the partition leader: which active node serves a request.

Policies: ``least-loaded`` (fewest requests in flight from this leader, ties broken in turn),
``round-robin`` and ``random`` (a seeded ``random.Random`` is injected). No IO, no clock.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence


class Balancer:
    """Thread-safe chooser; tracks requests in flight per node for ``least-loaded``."""

    def __init__(self, policy: str, rng: random.Random | None = None) -> None:
        if policy not in ("least-loaded", "round-robin", "random"):
            raise ValueError(f"unknown balance policy {policy!r}")
        self.policy = policy
        self._rng = rng or random.Random()
        self._turn = 0
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def choose(self, active: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
        """A node from ``active`` not in ``exclude``; None when there is none. Marks it busy:
        call :meth:`done` when its request finishes."""
        options = sorted(n for n in set(active) if n not in exclude)
        if not options:
            return None
        with self._lock:
            self._turn += 1
            node = pick(self.policy, options, self._inflight, self._turn, self._rng)
            self._inflight[node] = self._inflight.get(node, 0) + 1
            return node

    def done(self, node: str) -> None:
        with self._lock:
            self._inflight[node] = max(0, self._inflight.get(node, 0) - 1)

    def inflight(self) -> dict[str, int]:
        with self._lock:
            return dict(self._inflight)


def pick(policy: str, options: Sequence[str], inflight: Mapping[str, int], turn: int,
         rng: random.Random) -> str:
    if policy == "random":
        return rng.choice(list(options))
    if policy == "round-robin":
        return options[turn % len(options)]
    low = min(inflight.get(n, 0) for n in options)
    idle = [n for n in options if inflight.get(n, 0) == low]
    return idle[turn % len(idle)]
