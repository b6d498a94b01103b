"""The coordinator's quorum tallies as data (riak_kv put_core/get_core style): answers in,
outcome and repairs out, no network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvraft.core import quorum, versionrule
from kvraft.model import ApplyResult, Record, Version

V = Version


def applied(prev: Version | None = None, live: bool = False) -> ApplyResult:
    return ApplyResult(True, prev, live)


def kept(prev: Version | None, live: bool = True) -> ApplyResult:
    return ApplyResult(False, prev, live)


def rec(key: str, ts: int, node: str = "n1", tomb: bool = False, part: int = 0) -> Record:
    return Record(key, part, V(ts, node), tomb, b"" if tomb else b"v")


# -- writes ----------------------------------------------------------------------------------------


def test_two_acks_of_two_meet_quorum_and_a_fresh_key_is_created():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    v = t.stamp(100, "n1")
    assert v == V(100, "n1")
    t.add("n1", applied())
    t.add("n2", applied())
    assert t.enough()
    assert t.response() == quorum.Ok(v, acks=2, effective=2, created=True)


def test_a_replaced_live_value_is_not_created():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    t.stamp(100, "n1")
    t.add("n1", applied(V(50, "n2"), live=True))
    t.add("n2", applied(V(50, "n2"), live=True))
    out = t.response()
    assert isinstance(out, quorum.Ok) and not out.created


def test_a_failed_replica_asks_for_hints_which_count_for_quorum():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    v = t.stamp(100, "n1")
    t.add("n1", applied())
    t.fail("n2")
    assert t.response() == quorum.PlaceHints(("n2",))
    assert t.hinted(["n3"], None) == quorum.Ok(v, 1, 2, True, ("n3",))


def test_hints_never_count_for_all():
    t = quorum.WriteTally("k", "all", 2, 2)
    t.stamp(100, "n1")
    t.add("n1", applied())
    t.fail("n2")
    assert t.response() == quorum.PlaceHints(("n2",))
    out = t.hinted(["n3"], None)
    assert isinstance(out, quorum.Unavailable)
    assert out.maybe_applied and out.acks == 1
    assert "w=all needs 2" in out.reason


def test_no_stand_in_and_too_few_acks_is_unavailable_maybe_applied():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    t.stamp(100, "n1")
    t.fail("n1")
    t.fail("n2")
    assert t.response() == quorum.PlaceHints(("n1", "n2"))
    out = t.hinted([], None)
    assert isinstance(out, quorum.Unavailable) and out.maybe_applied and out.acks == 0


def test_a_replica_holding_a_newer_version_makes_the_tally_restamp_above_it():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    t.stamp(100, "n1")
    t.add("n1", applied())
    t.add("n2", kept(V(200, "n3")))
    assert t.response() == quorum.Restamp(V(200, "n3"), "newer", observe=True)
    above = t.above(1 << 40)  # the clock is behind what the replica kept: a lead above it
    assert above == 200 + versionrule.lead(1)
    v2 = t.stamp(above + 1, "n1")  # what the HLC issues above it
    assert v2 == V(200 + versionrule.lead(1) + 1, "n1")
    t.add("n1", applied(V(100, "n1")))
    t.add("n2", applied(V(200, "n3"), live=True))
    out = t.response()
    assert out == quorum.Ok(v2, 2, 2, False)  # a live value other than our own was there
    assert t.restamps == 1


def test_our_own_earlier_stamping_does_not_hide_created():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    t.stamp(100, "n1")
    t.add("n1", applied())
    t.add("n2", kept(V(200, "n3"), live=False))  # a tombstone was newer
    assert isinstance(t.response(), quorum.Restamp)
    t.stamp(100, "n1")
    t.add("n1", applied(V(100, "n1"), live=True))  # our own first stamping
    t.add("n2", applied(V(200, "n3"), live=False))
    out = t.response()
    assert isinstance(out, quorum.Ok) and out.created


def test_a_watermark_refusal_asks_for_the_watermark_and_restamps_above_it():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    v = t.stamp(100, "n1")
    t.add("n1", applied())
    t.add("n2", kept(None))  # refused: older than the purge watermark
    assert t.response() == quorum.NeedWatermark()
    assert t.watermark(500) == quorum.Restamp(V(500, ""), "watermark", observe=False)
    assert t.stamp(120, "n1") == V(501, "n1")
    t2 = quorum.WriteTally("k", "quorum", 2, 2, floor=V(900, "n2"))
    t2.stamp(100, "n1")
    t2.add("n1", kept(None))
    assert t2.response() == quorum.NeedWatermark()
    assert t2.watermark(500).above == V(900, "n2")  # the floor is higher still
    assert v.ts == 100


def test_a_stand_in_holding_a_newer_version_makes_the_tally_restamp():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    t.stamp(100, "n1")
    t.add("n1", applied())
    t.fail("n2")
    assert isinstance(t.response(), quorum.PlaceHints)
    assert t.hinted(["n3"], V(300, "n2")) == quorum.Restamp(V(300, "n2"), "stand_in", True)


def test_the_negative_control_ignores_a_newer_stand_in_copy():
    t = quorum.WriteTally("k", "quorum", 2, 2, lww_ack=True)
    v = t.stamp(100, "n1")
    t.add("n1", applied())
    t.fail("n2")
    assert isinstance(t.response(), quorum.PlaceHints)
    assert t.hinted(["n3"], V(300, "n2")) == quorum.Ok(v, 1, 2, True, ("n3",))


def test_the_drop_replication_fault_counts_every_replica():
    t = quorum.WriteTally("k", "all", 2, 2, all_acked=True)
    v = t.stamp(100, "n1")
    t.add("n1", applied())
    assert t.response() == quorum.Ok(v, 2, 2, True)


def test_contended_writes_give_up_after_the_attempts_learning_the_last_version():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    outs = []
    for i in range(versionrule.ATTEMPTS):
        t.stamp(100, "n1")
        t.add("n1", kept(V(1000 + i, "n2")))
        t.add("n2", kept(V(1000 + i, "n2")))
        outs.append(t.response())
    assert all(isinstance(o, quorum.Restamp) for o in outs[:-1])
    last = outs[-1]
    assert isinstance(last, quorum.Unavailable)
    assert last.maybe_applied and last.acks is None
    assert last.learned == V(1000 + versionrule.ATTEMPTS - 1, "n2")
    assert "concurrent writers" in last.reason and "'k'" in last.reason
    assert t.restamps == versionrule.ATTEMPTS


def test_a_clock_stuck_below_the_watermark_gives_up_with_that_reason():
    t = quorum.WriteTally("k", "quorum", 2, 2)
    for _ in range(versionrule.ATTEMPTS - 1):
        t.stamp(100, "n1")
        t.add("n1", kept(None))
        assert t.response() == quorum.NeedWatermark()
        assert isinstance(t.watermark(50), quorum.Restamp)  # the replica still refuses
    t.stamp(100, "n1")
    t.add("n1", kept(None))
    last = t.response()
    assert isinstance(last, quorum.Unavailable) and "purge watermark" in last.reason
    assert last.learned is None and t.restamps == versionrule.ATTEMPTS


# -- reads -----------------------------------------------------------------------------------------


def test_a_quorum_read_returns_the_newest_and_repairs_the_stale_and_the_empty():
    t = quorum.ReadTally("k", "all", 3)
    t.add("n1", rec("k", 5))
    assert not t.enough()
    t.add("n2", rec("k", 9, "n2"))
    t.add("n3", None)
    assert t.enough()
    assert t.response() == quorum.ReadOk(rec("k", 9, "n2"))
    assert t.repairs() == [("n1", rec("k", 9, "n2")), ("n3", rec("k", 9, "n2"))]


def test_a_filling_replica_adds_its_newer_record_but_not_its_answer_to_the_count():
    t = quorum.ReadTally("k", "all", 2)
    t.add("n1", rec("k", 5))
    t.extra("n4", rec("k", 9, "n4"))  # a write only the filling replica acknowledged
    assert not t.enough()  # its answer does not stand in for a filled replica's
    t.add("n2", None)
    assert t.response() == quorum.ReadOk(rec("k", 9, "n4"))
    assert t.repairs() == [("n1", rec("k", 9, "n4")), ("n2", rec("k", 9, "n4"))]


def test_a_filling_replica_that_lacks_the_key_is_repaired_and_hides_nothing():
    t = quorum.ReadTally("k", "quorum", 1)
    t.extra("n4", None)
    t.add("n1", rec("k", 5))
    assert t.response() == quorum.ReadOk(rec("k", 5))
    assert t.repairs() == [("n4", rec("k", 5))]


def test_a_read_with_too_few_answers_is_unavailable_and_never_maybe_applied():
    t = quorum.ReadTally("k", "quorum", 2)
    t.add("n1", rec("k", 5))
    out = t.response()
    assert out == quorum.Unavailable("r=quorum needs 2 replicas of 'k', 1 answered", False)


def test_a_key_no_replica_holds_is_none_with_nothing_to_repair():
    t = quorum.ReadTally("k", "quorum", 2)
    t.add("n1", None)
    t.add("n2", None)
    assert t.response() == quorum.ReadOk(None) and t.repairs() == []


def test_a_newer_tombstone_wins_and_is_repaired_onto_the_live_copy():
    t = quorum.ReadTally("k", "quorum", 2)
    t.add("n1", rec("k", 5))
    t.add("n2", rec("k", 7, "n2", tomb=True))
    assert t.response() == quorum.ReadOk(rec("k", 7, "n2", tomb=True))
    assert t.repairs() == [("n1", rec("k", 7, "n2", tomb=True))]


def test_read_order_is_self_then_live_then_down():
    alive = {"n1": True, "n2": False, "n3": True}
    assert quorum.read_order(["n2", "n3", "n1"], "n1", alive) == ["n1", "n3", "n2"]
    assert quorum.read_order(["n2", "n3"], "n1", alive) == ["n3", "n2"]


@given(
    st.lists(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), unique=True, max_size=5),
    st.dictionaries(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), st.booleans()),
)
def test_read_order_is_the_stable_sort_by_self_then_alive(replicas, alive):
    want = sorted(replicas, key=lambda n: (n != "n1", not alive.get(n, True)))
    assert quorum.read_order(replicas, "n1", alive) == want
    assert quorum.read_order(tuple(replicas), "n1", alive) == want


# -- the read walk (which replicas to ask, round by round) -----------------------------------------


def test_r_one_a_record_from_the_first_replica_is_the_answer_and_nothing_else_is_asked():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2", "n3"], ["n4"])
    assert w.asks() == ("n1",) and not w.final and not w.done
    w.add("n1", rec("k", 5))
    assert w.done and w.asks() == ()
    assert w.response() == quorum.ReadOk(rec("k", 5)) and w.repairs() == ()


def test_r_one_a_failed_replica_passes_the_read_to_the_next_in_order():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2", "n3"])
    w.fail("n1", "n1: down")
    assert w.asks() == ("n2",) and not w.done
    w.add("n2", rec("k", 5, tomb=True))  # a tombstone is a record: the answer
    assert w.response() == quorum.ReadOk(rec("k", 5, tomb=True))


def test_r_one_a_miss_asks_the_rest_and_the_filling_replicas_at_once_and_the_newest_wins():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2", "n3"], ["n4"])
    w.fail("n1", "n1: down")
    w.add("n2", None)  # a miss: maybe its copy waits as a hint elsewhere
    assert w.final and not w.done
    assert w.asks() == ("n3", "n4")  # the rest of the order, then the filling replica
    w.add("n4", rec("k", 9, "n4"))
    assert not w.done and w.asks() == ("n3",)
    w.fail("n3", "n3: timeout")  # the miss answered already: a failure here does not matter
    assert w.response() == quorum.ReadOk(rec("k", 9, "n4"))
    assert w.repairs() == ()  # r=one repairs nothing


def test_r_one_a_miss_that_the_others_confirm_is_not_found():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2"], ["n3"])
    w.add("n1", None)
    assert w.asks() == ("n2", "n3")
    w.add("n2", None)
    w.fail("n3", "gone")
    assert w.response() == quorum.ReadOk(None)


def test_r_one_a_miss_of_the_last_replica_without_filling_ones_is_the_answer():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2"])
    w.fail("n1", "down")
    w.add("n2", None)
    assert w.done and w.response() == quorum.ReadOk(None) and w.repairs() == ()


def test_r_one_with_no_replica_answering_is_unavailable_with_every_reason():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2"], ["n3"])
    w.fail("n1", "n1: refused")
    w.fail("n2", "n2: timed out")
    assert w.done and w.asks() == ()  # the filling replica alone cannot answer r=one
    want = quorum.Unavailable("no replica of 'k' answered: n1: refused; n2: timed out", False)
    assert w.response() == want


def test_r_one_with_no_readable_replica_is_unavailable_before_asking():
    w = quorum.ReadWalk("k", "one", 1, [], ["n3"])
    assert w.done and w.asks() == ()
    assert w.response() == quorum.Unavailable("no replica of 'k' answered: ", False)


def test_r_quorum_asks_every_replica_and_filling_one_in_one_last_round():
    w = quorum.ReadWalk("k", "quorum", 2, ["n1", "n2", "n3"], ["n4"])
    assert w.final and w.asks() == ("n1", "n2", "n3", "n4")
    w.add("n3", rec("k", 5))
    w.add("n1", rec("k", 7))
    w.add("n4", None)
    assert not w.done and w.asks() == ("n2",)
    w.fail("n2", "down")
    assert w.response() == quorum.ReadOk(rec("k", 7))
    assert w.repairs() == [("n4", rec("k", 7)), ("n3", rec("k", 7))]  # the stale, the filling


def test_a_filling_replica_is_asked_but_its_answer_does_not_count():
    w = quorum.ReadWalk("k", "all", 2, ["n1", "n2"], ["n4"])
    w.add("n1", rec("k", 5))
    w.add("n4", rec("k", 9, "n4"))  # its record takes part...
    w.fail("n2", "n2: down")  # ...but does not stand in for n2's answer
    assert w.response() == quorum.Unavailable("r=all needs 2 replicas of 'k', 1 answered", False)


def test_a_filling_replicas_newer_record_wins_and_repairs_the_filled_ones():
    w = quorum.ReadWalk("k", "all", 2, ["n1", "n2"], ["n4"])
    w.add("n1", rec("k", 5))
    w.add("n2", None)
    w.add("n4", rec("k", 9, "n4"))
    assert w.response() == quorum.ReadOk(rec("k", 9, "n4"))
    assert w.repairs() == [("n1", rec("k", 9, "n4")), ("n2", rec("k", 9, "n4"))]


def test_a_tallied_read_with_no_replica_to_ask_is_decided_at_once():
    w = quorum.ReadWalk("k", "quorum", 1, [])
    assert w.done and w.asks() == ()
    assert w.response() == quorum.Unavailable("r=quorum needs 1 replicas of 'k', 0 answered", False)


def test_a_walk_refuses_answers_it_did_not_ask_for_and_answers_only_when_done():
    w = quorum.ReadWalk("k", "one", 1, ["n1", "n2"])
    with pytest.raises(RuntimeError, match="still asks"):
        w.response()
    with pytest.raises(RuntimeError, match="still asks"):
        w.repairs()
    with pytest.raises(ValueError, match="not asked"):
        w.add("n2", None)  # n1 is asked first
    w.add("n1", None)
    with pytest.raises(ValueError, match="not asked"):
        w.fail("n1", "again")
    w.add("n2", None)
    with pytest.raises(ValueError, match="not asked"):
        w.add("n2", None)  # done


versions = st.builds(V, st.integers(1, 30), st.sampled_from(["n1", "n2", "n3"]))
answers = st.dictionaries(
    st.sampled_from(["n1", "n2", "n3", "n4"]),
    st.none() | st.builds(lambda v, t: Record("k", 0, v, t, b""), versions, st.booleans()),
)


@given(answers)
def test_the_newest_is_the_max_version_and_the_repairs_are_exactly_the_older(ans):
    t = quorum.ReadTally("k", "quorum", 0)
    for n, a in ans.items():
        t.add(n, a)
    held = [a.version for a in ans.values() if a is not None]
    out = t.response()
    assert isinstance(out, quorum.ReadOk)
    assert (out.record.version if out.record else None) == (max(held) if held else None)
    want = {n for n, a in ans.items() if held and (a is None or a.version < max(held))}
    assert {n for n, _r in t.repairs()} == want
    assert all(r == out.record for _n, r in t.repairs())


# -- listings --------------------------------------------------------------------------------------

PMAP = (("n1", "n2"), ("n2", "n3"))


def test_the_listing_keeps_the_newest_hides_tombstones_and_skips_left_partitions():
    answers = [
        ("n1", [rec("a", 1), rec("b", 1), rec("d", 1, part=1)]),  # n1 left partition 1
        ("n2", [rec("a", 2, "n2", tomb=True), rec("b", 1), rec("c", 1, part=1)]),
    ]
    assert quorum.merge_listing(answers, PMAP, 10) == quorum.Listing(["b", "c"], None)


def test_a_truncated_answer_cuts_the_page_where_it_stopped():
    answers = [
        ("n1", [rec("a", 1), rec("b", 1)]),  # limit 2: there may be more after "b"
        ("n2", [rec("a", 1), rec("c", 1)]),
    ]
    assert quorum.merge_listing(answers, PMAP, 2) == quorum.Listing(["a", "b"], "b")
    only_tombs = [("n1", [rec("a", 1, tomb=True), rec("b", 1, tomb=True)])]
    assert quorum.merge_listing(only_tombs, PMAP, 2) == quorum.Listing([], "b")


keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
scans = st.lists(
    st.dictionaries(keys, st.tuples(versions, st.booleans()), max_size=12), min_size=1, max_size=4
)


@given(scans)
def test_the_untruncated_listing_is_the_sorted_set_of_live_newest_keys(node_scans):
    answers = [
        (f"n{i}", [Record(k, 0, v, t, b"") for k, (v, t) in sorted(s.items())])
        for i, s in enumerate(node_scans)
    ]
    best: dict[str, tuple[Version, bool]] = {}
    for s in node_scans:
        for k, (v, t) in s.items():
            if k not in best or best[k][0] < v:
                best[k] = (v, t)
    page = quorum.merge_listing(answers, (), 1000)
    assert page == quorum.Listing(sorted({k for k, (_v, t) in best.items() if not t}), None)


@given(answers, st.sampled_from(["quorum", "all"]), st.integers(0, 4))
def test_a_tallied_walk_decides_as_a_read_tally_over_the_same_answers(ans, level, need):
    """Above ``one`` the walk is one round over a ReadTally: its outcome and repairs are the
    tally's, whichever replicas answer (n4: filling) and whichever fail."""
    order = ["n1", "n2", "n3"]
    w = quorum.ReadWalk("k", level, need, order, ["n4"])
    t = quorum.ReadTally("k", level, need)
    for n in w.asks():
        if n not in ans:
            w.fail(n, "down")
            continue
        w.add(n, ans[n])
        if n == "n4":
            t.extra(n, ans[n])
        else:
            t.add(n, ans[n])
    assert w.response() == t.response()
    assert w.repairs() == t.repairs()


@given(st.lists(st.sampled_from(["answer", "miss", "fail"]), min_size=1, max_size=3))
def test_r_one_asks_one_replica_at_a_time_until_one_answers(script):
    """The r=one walk over replicas that fail, miss or answer as scripted: the replicas asked
    one at a time are the order up to the first that answers (failures pass it on)."""
    order = ["n1", "n2", "n3"][: len(script)]
    w = quorum.ReadWalk("k", "one", 1, order)
    asked = []
    while not w.done and not w.final:
        (n,) = w.asks()
        asked.append(n)
        what = script[order.index(n)]
        if what == "fail":
            w.fail(n, f"{n} down")
        else:
            w.add(n, rec("k", 5) if what == "answer" else None)
    first = next((i for i, s in enumerate(script) if s != "fail"), None)
    assert asked == order[: len(order) if first is None else first + 1]
    if first is None:
        assert isinstance(w.response(), quorum.Unavailable)
    elif script[first] == "answer":
        assert w.response() == quorum.ReadOk(rec("k", 5))
    else:  # a miss: the rest are asked in the last round, unless it was the last replica
        assert w.asks() == tuple(order[first + 1 :])


def test_a_leaving_replica_gets_the_write_but_its_ack_does_not_count():
    # replicas n1, n2, n3 of a partition in a move; n2 leaves it once n3 is filled
    t = quorum.WriteTally("k", "one", 1, 3, leaving=("n2",))
    t.stamp(100, "n1")
    t.add("n2", applied())
    t.fail("n1")
    t.fail("n3")
    out = t.response()
    assert out == quorum.PlaceHints(("n1", "n3"))  # no hint for the leaving one
    out = t.hinted((), None)
    assert isinstance(out, quorum.Unavailable) and out.acks == 0 and out.maybe_applied


def test_a_newer_version_a_leaving_replica_kept_is_stamped_above_all_the_same():
    t = quorum.WriteTally("k", "quorum", 2, 3, leaving=("n2",))
    t.stamp(100, "n1")
    t.add("n1", applied())
    t.add("n2", kept(V(300, "n2")))
    t.add("n3", applied())
    assert t.response() == quorum.Restamp(V(300, "n2"), "newer", observe=True)
    v2 = t.stamp(101, "n1")
    for n in ("n1", "n2", "n3"):
        t.add(n, applied(V(300, "n2"), live=True))
    out = t.response()
    assert out == quorum.Ok(v2, 2, 2, False)  # n1 and n3 counted, n2 not


def test_a_leaving_replica_that_fails_is_not_hinted():
    t = quorum.WriteTally("k", "quorum", 2, 3, leaving=("n2",))
    t.stamp(100, "n1")
    t.add("n1", applied())
    t.add("n3", applied())
    t.fail("n2")
    assert isinstance(t.response(), quorum.Ok)
