"""KeyGroups: calls of one key queued behind a running group run together, in order."""

from __future__ import annotations

import threading

import pytest

from kvraft.keygroups import KeyGroups


def _blocked_first_group():
    """KeyGroups whose first run blocks until released; records every group it ran."""
    ran: list[tuple[str, list]] = []
    entered, release = threading.Event(), threading.Event()

    def run(key, items):
        ran.append((key, list(items)))
        if len(ran) == 1:
            entered.set()
            assert release.wait(10)
        return [ValueError(i) if i == "bad" else f"{key}:{i}" for i in items]

    return KeyGroups(run, same=lambda a, b: (a == "other") == (b == "other")), ran, entered, release


def test_alone_a_call_runs_at_once():
    groups = KeyGroups(lambda key, items: [(key, i) for i in items])
    assert groups.submit("k", 1) == ("k", 1)
    assert groups.submit("k", 2) == ("k", 2)
    assert (groups.groups, groups.items) == (2, 2)


def test_calls_queued_behind_a_group_run_together_in_order_and_get_their_own_outcomes():
    groups, ran, entered, release = _blocked_first_group()
    out: dict[str, object] = {}

    def call(item):
        try:
            out[item] = groups.submit("k", item)
        except ValueError as exc:
            out[item] = exc

    first = threading.Thread(target=call, args=("a",))
    first.start()
    assert entered.wait(10)
    queued = [threading.Thread(target=call, args=(i,)) for i in ("b", "bad", "c")]
    for t in queued:
        t.start()
        while True:  # wait until it is queued (in order)
            with groups._lock:
                if len(groups._queues["k"]) == queued.index(t) + 1:  # the leader's own is out
                    break
    release.set()
    for t in [first, *queued]:
        t.join(10)
    assert [items for _k, items in ran] == [["a"], ["b", "bad", "c"]]
    assert out["a"] == "k:a" and out["b"] == "k:b" and out["c"] == "k:c"
    assert isinstance(out["bad"], ValueError)
    assert groups._queues == {}  # the key's queue is dropped once nobody waits


def test_calls_that_may_not_share_a_round_go_in_the_next_one():
    groups, ran, entered, release = _blocked_first_group()
    threads = [threading.Thread(target=groups.submit, args=("k", "a"))]
    threads[0].start()
    assert entered.wait(10)
    for n, item in enumerate(("b", "other", "c"), start=2):
        threads.append(threading.Thread(target=groups.submit, args=("k", item)))
        threads[-1].start()
        while True:
            with groups._lock:
                if len(groups._queues["k"]) == n - 1:
                    break
    release.set()
    for t in threads:
        t.join(10)
    assert [items for _k, items in ran] == [["a"], ["b"], ["other"], ["c"]]


def test_an_error_of_the_run_itself_reaches_every_call_and_the_lead_moves_on():
    def run(key, items):
        raise RuntimeError("store closed")

    groups = KeyGroups(run)
    with pytest.raises(RuntimeError, match="store closed"):
        groups.submit("k", 1)
    assert groups._queues == {}
    ok = KeyGroups(lambda key, items: items[:1])  # one outcome for many: a bug, said as one
    assert ok.submit("k", 7) == 7


def test_a_same_rule_that_raises_keeps_every_call_waiting_for_its_own_round():
    """A bug in ``same`` must not strand a call taken off the queue: the call goes alone."""
    ran: list[list] = []
    entered, release = threading.Event(), threading.Event()

    def run(key, items):
        ran.append(list(items))
        if len(ran) == 1:
            entered.set()
            assert release.wait(10)
        return [f"{key}:{i}" for i in items]

    def same(a, b):
        if b == "boom":
            raise TypeError("a bug")
        return True

    groups = KeyGroups(run, same=same)
    out: dict[str, object] = {}
    threads = [threading.Thread(target=lambda: out.update(a=groups.submit("k", "a")))]
    threads[0].start()
    assert entered.wait(10)
    for n, item in enumerate(("boom", "c"), start=1):
        threads.append(
            threading.Thread(target=lambda item=item: out.update({item: groups.submit("k", item)}))
        )
        threads[-1].start()
        while True:
            with groups._lock:
                if len(groups._queues["k"]) == n:
                    break
    release.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert out == {"a": "k:a", "boom": "k:boom", "c": "k:c"}
    assert ran[0] == ["a"] and ran[1][0] == "boom"
