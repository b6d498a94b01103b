"""The garbage collector of a node process: the start-up objects frozen out of its reach, and
its pauses counted.

A collection holds the GIL, so every request in flight on the node waits for it. The objects a
node makes while it starts (modules, classes, functions, Flask's and pysyncobj's tables: about
55,000) live as long as the process, yet a full (generation 2) collection walks all of them:
35-55 ms under load on a busy 2-core machine, every ten seconds or so. :func:`settle` collects
once and then freezes what is left (``gc.freeze()``): a full collection then walks only what
came after (a few thousand objects). Cyclic garbage made later is collected as before.

:class:`Pauses` measures every collection with ``gc.callbacks`` (per process: one node per
``kvraft serve``), for ``/metrics``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

LONG_S = 0.010  # a pause at least this long is counted as long


def settle() -> int:
    """Collect, then freeze every object left (the start-up's): later collections skip them.
    Returns how many objects were frozen. Call once the node is built, before it serves."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Pauses:
    """Counts and times the collections of this process. No lock: the callback runs on
    whichever thread triggered the collection, and collections never overlap; a lock here
    would deadlock a thread that triggers a collection while it holds it (an allocation in
    :meth:`figures`). A reader may see one collection half counted."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        self.collections = [0, 0, 0]  # per generation
        self.seconds = 0.0  # all pauses added up
        self.long = 0  # pauses of at least LONG_S
        self.longest = 0.0

    def install(self) -> Pauses:
        gc.callbacks.append(self.on_collect)
        return self

    def uninstall(self) -> None:
        if self.on_collect in gc.callbacks:
            gc.callbacks.remove(self.on_collect)

    def on_collect(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        took = self._clock() - self._started
        self.collections[info.get("generation", 2)] += 1
        self.seconds += took
        if took >= LONG_S:
            self.long += 1
        if took > self.longest:
            self.longest = took

    def figures(self) -> dict[str, float]:
        """For ``/metrics``: collections per generation, pause seconds, long pauses, the
        longest pause and the objects frozen."""
        out = {f"gc_collections_gen{g}": float(n) for g, n in enumerate(self.collections)}
        out.update(
            gc_pause_seconds=self.seconds,
            gc_pauses_long=float(self.long),
            gc_pause_longest_seconds=self.longest,
            gc_frozen_objects=float(gc.get_freeze_count()),
        )
        return out
