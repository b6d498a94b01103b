"""The forward-only version rule (kvraft.core.versionrule), the clock offset guard
(kvraft.core.clockguard) and the HLC's bound on timestamps from the future, as pure logic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvraft.core import versionrule
from kvraft.core.clockguard import FRESH_S, KEEP_S, ClockGuard, sample
from kvraft.core.quorum import Restamp, WriteTally
from kvraft.hlc import HLC, LOGICAL_BITS, LOGICAL_MASK, Version
from kvraft.storage import ApplyResult

V = Version(100, "n1")


def test_an_applied_answer_is_an_ack():
    j = versionrule.judge(
        V, [ApplyResult(True, None, False), ApplyResult(True, Version(5, "n2"), True)]
    )
    assert (j.acks, j.newer, j.retry) == (2, None, False)


def test_holding_this_very_version_is_an_ack():
    """A retried request finds its own version already stored."""
    j = versionrule.judge(V, [ApplyResult(False, V, True)])
    assert (j.acks, j.retry) == (1, False)


def test_a_replica_that_kept_a_newer_version_is_not_an_ack_and_teaches_it():
    newer = Version(200, "n3")
    j = versionrule.judge(
        V,
        [
            ApplyResult(True, None, False),
            ApplyResult(False, newer, True),
            ApplyResult(False, Version(150, "n2"), True),
        ],
    )
    assert (j.acks, j.newer, j.retry) == (1, newer, True)


def test_a_watermark_refusal_asks_for_a_retry_without_a_version():
    j = versionrule.judge(V, [ApplyResult(False, None, False)])
    assert (j.acks, j.newer, j.below_watermark, j.retry) == (0, None, True, True)


def test_the_negative_control_counts_every_answer():
    j = versionrule.judge(V, [ApplyResult(False, Version(200, "n3"), True)], lww_ack=True)
    assert (j.acks, j.retry) == (1, False)


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.text(min_size=1, max_size=3))
def test_a_stamp_is_never_below_the_clock_and_always_above_the_floor(now, floor_ts, node):
    floor = Version(floor_ts, node)
    ts = versionrule.stamp_above(now, floor)
    assert ts >= now
    assert Version(ts, "") > floor  # above the floor whatever the node ids
    assert versionrule.stamp_above(now, None) == now


def test_created_ignores_this_writes_own_earlier_stampings():
    first, second = Version(100, "n1"), Version(201, "n1")
    seen = [
        ApplyResult(True, None, False),
        ApplyResult(False, Version(200, "n2"), False),
        ApplyResult(True, first, True),
        ApplyResult(True, Version(200, "n2"), False),
    ]
    assert versionrule.created(seen, [first, second])
    assert not versionrule.created([ApplyResult(True, Version(5, "n2"), True)], [first])


# -- the clock offset guard --------------------------------------------------------------------


def test_an_ntp_sample_corrects_for_the_round_trip():
    s = sample(1000, 1010, 1305, at=0.0)  # the peer answered at the midpoint, 300 ms ahead
    assert (s.offset_ms, s.rtt_ms) == (300, 10)


def guard_with(offsets: dict[str, float], rtt: float = 2.0, max_ms: float = 500) -> ClockGuard:
    g = ClockGuard(max_ms)
    for peer, off in offsets.items():
        g.add(peer, sample(0, int(rtt), int(off + rtt / 2), at=0.0))
    return g


def test_a_node_far_from_both_peers_is_out_of_bounds():
    v = guard_with({"n2": -2000, "n3": -2010}).verdict(["n2", "n3"], now=1.0)
    assert not v.ok and v.off == ("n2", "n3")
    assert "max_clock_offset is 500 ms" in v.describe() and "-2000 ms" in v.describe()


def test_a_node_far_from_one_peer_of_two_is_within_bounds():
    """The good nodes of a cluster with one bad clock stay in service."""
    v = guard_with({"n2": 2000, "n3": 3}).verdict(["n2", "n3"], now=1.0)
    assert v.ok and v.off == ("n2",)


def test_against_a_single_measured_peer_both_sides_refuse():
    assert not guard_with({"n2": 900}).verdict(["n2", "n3"], now=1.0).ok


def test_the_round_trip_error_is_granted_before_judging():
    assert guard_with({"n2": 600, "n3": 600}, rtt=300).verdict(["n2", "n3"], now=1.0).ok
    assert not guard_with({"n2": 700, "n3": 700}, rtt=300).verdict(["n2", "n3"], now=1.0).ok


def test_the_fastest_fresh_sample_wins_and_stale_ones_expire():
    g = ClockGuard(500)
    g.add("n2", sample(0, 400, 1200, at=0.0))  # slow: 1000 +- 200
    g.add("n2", sample(0, 2, 11, at=0.0))  # fast: 10 +- 1
    g.add("n2", sample(0, 50, 625, at=0.5))  # the last one: 600 +- 25
    assert g.best("n2", now=1.0).offset_ms == 10
    # a peer gone silent keeps its last sample as evidence, then nothing is known of it
    assert g.best("n2", now=FRESH_S + 1).offset_ms == 600
    assert g.best("n2", now=KEEP_S + 1) is None
    assert g.verdict(["n2"], now=KEEP_S + 1).ok  # nothing known: no verdict against it


def test_one_peer_down_and_one_skewed_leaves_the_healthy_node_in_service():
    """n3 stopped answering a minute ago; its last sample still counts, so the healthy node is
    off from one of two peers (in bounds) and the skewed one from two of two (out)."""
    healthy = guard_with({"n1": 3000, "n3": 2})
    assert healthy.verdict(["n1", "n3"], now=60.0).ok
    skewed = guard_with({"n2": -3000, "n3": -2998})
    assert not skewed.verdict(["n2", "n3"], now=60.0).ok
    assert "out of bounds from here: n1" in healthy.verdict(["n1", "n3"], now=60.0).describe()


# -- the HLC's bound ---------------------------------------------------------------------------


def test_the_hlc_refuses_a_timestamp_too_far_ahead():
    clock = HLC(lambda: 10_000, max_ahead_ms=500)
    assert clock.observe(10_400 << LOGICAL_BITS)
    assert clock.now() > 10_400 << LOGICAL_BITS
    assert not clock.observe(10_600 << LOGICAL_BITS)
    assert clock.now() < 10_600 << LOGICAL_BITS


def test_the_hlc_starts_below_a_stored_timestamp_from_the_future():
    assert (
        HLC(lambda: 10_000, last=99_999 << LOGICAL_BITS, max_ahead_ms=500).now()
        < 99_999 << LOGICAL_BITS
    )
    assert (
        HLC(lambda: 10_000, last=10_100 << LOGICAL_BITS, max_ahead_ms=500).now()
        > 10_100 << LOGICAL_BITS
    )


def test_the_lead_above_a_concurrent_writer_doubles_per_stamping_up_to_the_cap():
    ms = [versionrule.lead(n) >> LOGICAL_BITS for n in range(1, 9)]
    assert ms == [1, 2, 4, 8, 16, 16, 16, 16]
    assert versionrule.lead(0) == 0  # the first stamping is the HLC's own
    assert versionrule.lead(10_000) == versionrule.LEAD_CAP_MS << LOGICAL_BITS
    assert versionrule.lead(1) & LOGICAL_MASK == 0  # whole milliseconds


def test_a_write_stamped_again_goes_a_lead_above_the_newer_version_a_replica_kept():
    t = WriteTally("k", "quorum", 2, 2)
    t.stamp(1000 << LOGICAL_BITS, "n1")
    newer = Version(5000 << LOGICAL_BITS, "n2")
    t.add(None, ApplyResult(True, None, False))
    t.add(None, ApplyResult(False, newer, True))
    out = t.response()
    assert isinstance(out, Restamp) and out.above == newer and out.observe
    room = 6000 << LOGICAL_BITS  # the coordinator's wall clock and its room for a lead
    assert t.above(room) == newer.ts + versionrule.lead(1)
    again = t.stamp(HLC(lambda: 1001).now(t.above(room)), "n1")  # the HLC issues above it
    assert again.ts == newer.ts + versionrule.lead(1) + 1 and again > newer


def test_a_lead_stops_at_the_room_the_coordinator_gives_it():
    """Leads on a hot key must not carry the versions ever further ahead of the clocks: above
    the coordinator's wall clock plus its room, the write goes just above the newer version."""
    t = WriteTally("k", "quorum", 2, 2)
    t.stamp(1000 << LOGICAL_BITS, "n1")
    newer = Version(5000 << LOGICAL_BITS, "n2")
    t.add(None, ApplyResult(True, None, False))
    t.add(None, ApplyResult(False, newer, True))
    assert isinstance(t.response(), Restamp)
    assert t.above(newer.ts + 100) == newer.ts + 100  # part of the lead fits
    assert t.above(4000 << LOGICAL_BITS) == newer.ts  # none fits: just above the newer one
    assert t.above(newer.ts + versionrule.lead(1) + 7) == newer.ts + versionrule.lead(1)
