"""Pure load-balancing choice for the partition leader: which active node serves a request.

Policies: ``least-loaded`` (the fewest requests in progress, ties broken in turn), ``round-robin``
and ``random`` (a seeded ``random.Random`` is injected). No IO, no clock.

A node's load for ``least-loaded`` is what the leader has sent it and not had answered yet, plus
the data requests the node said it was serving at its last ping (its own clients' requests,
which the leader would otherwise not see: without them, a leader whose neighbours are as busy as
itself would still forward two requests in three, each costing a hop for nothing).
:class:`Activity` counts those requests on each node.
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

    def choose(
        self,
        active: Sequence[str],
        exclude: Sequence[str] = (),
        reported: Mapping[str, int] | None = None,
    ) -> str | None:
        """A node from ``active`` not in ``exclude``; None when there is none. Marks it busy:
        call :meth:`done` when its request finishes. ``reported``: the requests each other node
        said it was serving (``least-loaded`` adds them to the ones sent from here)."""
        options = sorted(n for n in set(active) if n not in exclude)
        if not options:
            return None
        with self._lock:
            self._turn += 1
            node = pick(self.policy, options, self._inflight, self._turn, self._rng, reported)
            self._inflight[node] = self._inflight.get(node, 0) + 1
            return node

    def done(self, node: str) -> None:
        with self._lock:
            self._inflight[node] = max(0, self._inflight.get(node, 0) - 1)

    def inflight(self) -> dict[str, int]:
        with self._lock:
            return dict(self._inflight)


def pick(
    policy: str,
    options: Sequence[str],
    inflight: Mapping[str, int],
    turn: int,
    rng: random.Random,
    reported: Mapping[str, int] | None = None,
) -> str:
    if policy == "random":
        return rng.choice(list(options))
    if policy == "round-robin":
        return options[turn % len(options)]
    reported = reported or {}
    load = {n: inflight.get(n, 0) + reported.get(n, 0) for n in options}
    low = min(load.values())
    idle = [n for n in options if load[n] == low]
    return idle[turn % len(idle)]


class Activity:
    """Requests a node is serving right now (what it reports for ``least-loaded``)."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self._n += 1

    def leave(self) -> None:
        with self._lock:
            self._n -= 1

    @property
    def value(self) -> int:
        return self._n
