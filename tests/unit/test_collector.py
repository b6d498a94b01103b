"""kvraft.collector: the start-up frozen out of the collector's walks, and its pauses counted."""

from __future__ import annotations

import gc

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
