"""HotKeys (kvraft/hotkeys.py): a mark lasts ttl seconds, is not refreshed by reads of it, and
at most ``capacity`` keys are remembered; the coordinator's owner of a hot key."""

from __future__ import annotations

import pytest

from kvraft.coordinator import Coordinator
from kvraft.hotkeys import HotKeys


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_mark_lasts_its_ttl_and_reading_it_does_not_extend_it():
    clock = Clock()
    hot = HotKeys(ttl=1.0, clock=clock)
    assert not hot.is_hot("k") and len(hot) == 0
    hot.mark("k")
    clock.t += 0.6
    assert hot.is_hot("k") and not hot.is_hot("other")
    clock.t += 0.5  # 1.1 s after the mark: lapsed, though it was read meanwhile
    assert not hot.is_hot("k") and len(hot) == 0
    hot.mark("k")  # marked again: a second from now
    clock.t += 0.9
    assert hot.is_hot("k")


def test_the_oldest_marks_go_first_past_capacity():
    clock = Clock()
    hot = HotKeys(ttl=10.0, capacity=3, clock=clock)
    for k in "abcd":
        hot.mark(k)
    assert [k for k in "abcd" if hot.is_hot(k)] == ["b", "c", "d"]
    hot.mark("b")  # marked again: now the newest
    hot.mark("e")
    assert [k for k in "abcde" if hot.is_hot(k)] == ["b", "d", "e"]


def test_ttl_zero_marks_nothing_and_bad_settings_are_refused():
    hot = HotKeys(ttl=0)
    hot.mark("k")
    assert not hot.is_hot("k")
    with pytest.raises(ValueError):
        HotKeys(ttl=-1)
    with pytest.raises(ValueError):
        HotKeys(capacity=0)


class View:
    def __init__(self, replicas: tuple[str, ...], serving: set[str]) -> None:
        self.replicas, self.up = replicas, serving

    def replicas_of(self, key: str):
        return 7, self.replicas

    def serving(self, node_id: str) -> bool:
        return node_id in self.up

    def members(self):
        return {"n1": "a1", "n2": "a2", "n3": "a3"}


def owner_at(
    node: str, replicas: tuple[str, ...], serving: set[str], hot: bool, avoid: str = ""
) -> str | None:
    """Coordinator.write_owner on a bare coordinator (only the view and the marks it reads)."""
    c = Coordinator.__new__(Coordinator)
    c.id, c.view, c.hot = node, View(replicas, serving), HotKeys(1.0)
    if hot:
        c.hot.mark("k")
    if avoid:
        c.hot.avoid(avoid)
    return c.write_owner("k")


def test_a_hot_key_goes_to_its_first_live_replica_and_a_cold_one_nowhere():
    everyone = {"n1", "n2", "n3"}
    assert owner_at("n3", ("n1", "n2"), everyone, hot=False) is None
    assert owner_at("n3", ("n1", "n2"), everyone, hot=True) == "n1"
    assert owner_at("n2", ("n1", "n2"), everyone, hot=True) == "n1"
    assert owner_at("n1", ("n1", "n2"), everyone, hot=True) is None  # the owner writes it
    assert owner_at("n3", ("n1", "n2"), {"n2", "n3"}, hot=True) == "n2"  # n1 is down
    assert owner_at("n2", ("n1", "n2"), {"n2", "n3"}, hot=True) is None  # n2 owns it now
    assert owner_at("n3", ("n1", "n2"), {"n3"}, hot=True) is None  # no replica serving
    assert owner_at("n3", ("n1", "n2"), everyone, hot=True, avoid="n1") == "n2"  # n1 failed
    assert owner_at("n3", ("n4", "n2"), everyone | {"n4"}, hot=True) == "n2"  # n4: no member


def test_an_avoided_owner_is_avoided_for_a_second_at_least():
    clock = Clock()
    hot = HotKeys(ttl=0.2, clock=clock)
    hot.avoid("n1")
    assert hot.avoided("n1") and not hot.avoided("n2")
    clock.t += 0.9
    assert hot.avoided("n1")
    clock.t += 0.2
    assert not hot.avoided("n1")


def test_lapsed_marks_are_dropped_so_the_lock_free_check_applies_again():
    clock = Clock()
    hot = HotKeys(ttl=1.0, clock=clock)
    hot.mark("a")
    clock.t += 0.5
    hot.mark("b")
    clock.t += 0.6  # a lapsed, b not
    assert not hot.is_hot("zzz") and list(hot._until) == ["b"]
    clock.t += 0.5
    assert not hot.is_hot("b") and not hot._until  # empty: is_hot takes no lock


def test_the_setting_is_checked():
    from kvraft.config import Config, ConfigError

    base = {"id": "n1", "secret": "a-secret-of-enough-length", "replication_factor": 1}
    assert Config(**base).hot_key_ttl == 1.0
    env = {"KVRAFT_ID": "n1", "KVRAFT_SECRET": "a-secret-of-enough-length"}
    env.update(KVRAFT_REPLICATION_FACTOR="1", KVRAFT_HOT_KEY_TTL="0.25")
    assert Config.load({}, env).hot_key_ttl == 0.25
    assert Config(**base, hot_key_ttl=0).hot_key_ttl == 0
    for bad in (-1, 61):
        with pytest.raises(ConfigError, match="hot_key_ttl"):
            Config(**base, hot_key_ttl=bad)
