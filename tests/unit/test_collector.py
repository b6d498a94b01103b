"""kvraft.collector: the start-up frozen out of the collector's walks, and its pauses counted."""

from __future__ import annotations

import gc
import threading

from kvraft import collector


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pauses_are_counted_per_generation_with_the_long_ones_and_the_longest():
    clock = Ticks()
    p = collector.Pauses(clock)
    for gen, took in ((0, 0.001), (0, 0.002), (1, 0.004), (2, 0.040), (0, 0.012)):
        p.on_collect("start", {"generation": gen})
        clock.now += took
        p.on_collect("stop", {"generation": gen})
    f = p.figures()
    assert (f["gc_collections_gen0"], f["gc_collections_gen1"], f["gc_collections_gen2"]) == (
        3,
        1,
        1,
    )
    assert f["gc_pauses_long"] == 2  # 40 ms and 12 ms; 10 ms is LONG_S
    assert abs(f["gc_pause_seconds"] - 0.059) < 1e-9
    assert f["gc_pause_longest_seconds"] == 0.040


def test_installed_pauses_see_a_real_collection():
    p = collector.Pauses().install()
    try:
        gc.collect()
    finally:
        p.uninstall()
    assert p.figures()["gc_collections_gen2"] >= 1 and p.seconds > 0
    gc.collect()
    assert p.figures()["gc_collections_gen2"] == 1  # uninstalled: not counted any more


def test_settle_freezes_what_is_left_after_a_collection():
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    Cycle()  # garbage in a cycle: collected by settle, not frozen
    try:
        frozen = collector.settle()
        assert frozen == gc.get_freeze_count() > 1000
        assert not any(isinstance(o, Cycle) for o in gc.get_objects())
        tracked = len(gc.get_objects())
        assert tracked < frozen  # the collector's walks see only what came after
    finally:
        gc.unfreeze()


def test_figures_called_as_a_collection_is_due_does_not_hang():
    """An allocation in figures() may start a collection on the same thread: its callback must
    not wait for anything figures() holds. Each margin fills generation 0 to that many
    allocations short of its threshold, then asks for the figures."""
    p = collector.Pauses().install()
    threshold = gc.get_threshold()[0]

    def ask(margin: int, out: list) -> None:
        keep = []
        while gc.get_count()[0] < threshold - margin:
            keep.append([])
        out.append(p.figures())

    try:
        for margin in range(1, 8):
            out: list[dict] = []
            t = threading.Thread(target=ask, args=(margin, out), daemon=True)
            t.start()
            t.join(5)
            assert not t.is_alive(), f"figures() hung in its own collection (margin {margin})"
            assert out and out[0]["gc_collections_gen0"] >= 1
    finally:
        p.uninstall()
