"""The routing state of a partition-aware client: the current partition map, when to fetch it
again, and the nodes the client failed to reach lately.

:class:`Router` holds one :class:`kvraft.client.routing.RouteMap` (immutable, replaced whole)
and asks ``fetch`` for a new one lazily: on first use, after a miss (:meth:`Router.stale`), and
when the map is older than ``ttl`` seconds. The decisions are kvraft.client.routing's; this
module does no HTTP itself (``fetch`` does) and never raises from a failed fetch: without a map
the client sends requests the old way (to any node).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .routing import RouteMap, candidates, parse_cluster

# fetch() -> (the GET /cluster answer, the URL of the node that gave it)
Fetch = Callable[[], tuple[Any, str]]


class Router:
    """The map a client routes by, and its refreshes. Thread-safe: any number of threads may
    call every method at once. The map is swapped atomically (one attribute holds it); one
    thread at a time fetches, and the others go on with the map they have (or the old way, when
    there is none yet) instead of waiting.

    ``ttl``: seconds after which the map is fetched again even without a miss (a change of
    the map that no answer revealed); ``unsettled_ttl`` instead while the map shows a member
    down, not serving or out of clock bounds, or a replica being filled. ``min_interval``: the
    least time between two fetches (a storm of misses costs one fetch). ``cooldown``: seconds a
    node that could not be reached is skipped, doubled at each failure in a row up to
    ``max_cooldown`` (``unknown_cooldown`` for a node never reached, see :meth:`failed`).
    ``clock`` is injectable.
    """

    def __init__(
        self,
        fetch: Fetch,
        ttl: float = 30.0,
        unsettled_ttl: float = 2.0,
        min_interval: float = 0.5,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        unknown_cooldown: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl, self.unsettled_ttl, self.min_interval = ttl, unsettled_ttl, min_interval
        self.cooldown, self.max_cooldown = cooldown, max_cooldown
        self.unknown_cooldown = unknown_cooldown
        self._clock = clock
        self._map: RouteMap | None = None
        self._fetched_at = float("-inf")  # last successful fetch
        self._tried_at = float("-inf")  # last attempt, successful or not
        self._stale = False
        self._fetching = threading.Lock()
        self._lock = threading.Lock()  # guards _down, _known, the counters
        self._down: dict[str, tuple[float, int]] = {}  # node id -> (skip until, failures)
        self._known: dict[str, str] = {}  # node id -> URL the client reached it at
        self._turn = itertools.count()
        self.fetches = 0  # successful fetches
        self.fetch_errors = 0
        self.misses: Counter[str] = Counter()  # reason kind -> count

    @property
    def map(self) -> RouteMap | None:
        """The map now held (None before the first successful fetch); never fetches."""
        return self._map

    def current(self) -> RouteMap | None:
        """The map to route by, fetched first when there is none, it is stale or older than
        its ttl (and the last attempt is ``min_interval`` old). A fetched map of a lower epoch
        than the one held (a node behind on Raft) is ignored until the held one is ``ttl``
        old. Blocks for the fetch only in the thread that does it; returns None when there is
        no map (route the old way)."""
        now = self._clock()
        held = self._map
        ttl = self.ttl if held is None or held.settled else min(self.ttl, self.unsettled_ttl)
        due = held is None or self._stale or now - self._fetched_at >= ttl
        if not due or now - self._tried_at < self.min_interval:
            return held
        if not self._fetching.acquire(blocking=False):
            return held  # another thread is fetching
        try:
            self._tried_at = now
            try:
                view, url = self._fetch()
                with self._lock:
                    known = dict(self._known)
                fresh = parse_cluster(view, url, known)
            except Exception:  # noqa: BLE001 - any failure: keep routing by what we have
                self.fetch_errors += 1
                return self._map
            if not fresh.partitions:
                self.fetch_errors += 1  # no map yet (a cluster starting): the old way
                return self._map
            if held is not None and fresh.epoch < held.epoch and now - self._fetched_at < self.ttl:
                self._stale = False  # a node that has not applied the newer map yet: keep ours
                with self._lock:
                    self.misses["older"] += 1
                return held
            self._map = fresh
            self._fetched_at = self._clock()
            self._stale = False
            self.fetches += 1
            return fresh
        finally:
            self._fetching.release()

    def route(self, rmap: RouteMap, key: str, write: bool) -> list[str]:
        """Node ids to try for ``key``, best first, skipping nodes in their cooldown
        (:func:`kvraft.client.routing.candidates`, round-robin between equals)."""
        now = self._clock()
        with self._lock:
            down = {n for n, (until, _) in self._down.items() if until > now}
        return candidates(rmap, key, write, down, next(self._turn))

    def failed(self, node_id: str, reason: str, connect: bool = False) -> None:
        """``node_id`` could not serve a request (unreachable, or answered 502/503/504): skip it
        for a cooldown, and fetch the map again at the next request. ``connect``: the
        connection could not be opened. A node the client never reached that fails so is
        skipped for ``unknown_cooldown`` (an address it advertises to its peers that this
        client cannot reach, as from outside a container network, costs one failed connect
        per that time, not one per request); one it reached before is forgotten at that URL
        (the next map gives its advertised address, in case it moved)."""
        now = self._clock()
        with self._lock:
            _, failures = self._down.get(node_id, (0.0, 0))
            if connect and self._known.pop(node_id, None) is None:
                wait = self.unknown_cooldown
            else:
                wait = min(self.max_cooldown, self.cooldown * 2**failures)
            self._down[node_id] = (now + wait, failures + 1)
            self.misses["unreachable"] += 1
        self._stale = True

    def answered(self, node_id: str, url: str) -> None:
        """``node_id`` served a request sent to ``url`` itself: it is reachable there."""
        with self._lock:
            self._down.pop(node_id, None)
            self._known[node_id] = url

    def stale(self, reason: str) -> None:
        """An answer showed the map is out of date (``reason``): fetch it at the next request."""
        with self._lock:
            self.misses[reason.split(":", 1)[0]] += 1
        self._stale = True

    def stats(self) -> Mapping[str, Any]:
        """Fetch and miss counters (for tests and the bench)."""
        with self._lock:
            return {
                "fetches": self.fetches,
                "fetch_errors": self.fetch_errors,
                "misses": dict(self.misses),
                "epoch": None if self._map is None else self._map.epoch,
            }
