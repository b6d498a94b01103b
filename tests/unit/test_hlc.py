from hypothesis import given
from hypothesis import strategies as st

from kvraft.hlc import HLC, LOGICAL_BITS, RESERVE_MS, Version


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_now_is_strictly_increasing_when_the_wall_clock_stalls_or_goes_back():
    clock = FakeClock(1000)
    hlc = HLC(clock)
    a = hlc.now()
    b = hlc.now()
    clock.ms = 500  # wall clock stepped back
    c = hlc.now()
    assert a < b < c
    assert a >> LOGICAL_BITS == 1000


def test_observe_orders_later_local_events_after_a_remote_one_from_a_fast_clock():
    hlc = HLC(FakeClock(1000))
    remote = (5000 << LOGICAL_BITS) + 7
    hlc.observe(remote)
    assert hlc.now() > remote


def test_restart_seeds_the_clock_past_stored_versions():
    stored = (9000 << LOGICAL_BITS) + 3
    assert HLC(FakeClock(1), last=stored).now() > stored


@given(st.integers(0, 2**63 - 1), st.text(alphabet="abcn0123456789_.", min_size=1, max_size=32))
def test_version_text_round_trips(ts, node):
    v = Version(ts, node)
    assert Version.decode(v.encode()) == v


def test_version_order_is_timestamp_then_node_id():
    assert Version(2, "a") > Version(1, "z")
    assert Version(1, "b") > Version(1, "a")


def test_the_hlc_takes_its_physical_time_from_an_injected_clock():
    from kvraft.clock import FakeClock

    clock = FakeClock(start=100.0)
    hlc = HLC(clock=clock)
    assert hlc.physical() == 100_000 and hlc.now() >> LOGICAL_BITS == 100_000
    clock.step(2.5)
    assert hlc.now() >> LOGICAL_BITS == 102_500
    ahead = clock.skewed(300)  # another node's view of the same time, 300 ms ahead
    assert HLC(clock=ahead).physical() == 102_800
    clock.set(50.0)  # the wall clock stepped back: the HLC still moves forward
    assert hlc.now() > (102_500 << LOGICAL_BITS)


def test_the_system_clock_keeps_the_configured_offset():
    from kvraft.clock import SystemClock
    from kvraft.hlc import wall_clock_ms

    plain, skewed = SystemClock(), SystemClock(offset_ms=60_000)
    assert 59_000 < (skewed.time() - plain.time()) * 1000 < 61_000
    assert 59_000 < wall_clock_ms(60_000)() - wall_clock_ms()() < 61_000
    assert 59_000 < HLC(clock=skewed).physical() - HLC().physical() < 61_000


def test_no_timestamp_is_issued_above_a_bound_not_reserved_first():
    clock = FakeClock(1000)
    reserved: list[int] = []
    hlc = HLC(clock, reserve=reserved.append)
    issued = [hlc.now() for _ in range(5)]
    clock.ms = 1050  # within the reserved 100 ms: no new reservation
    issued.append(hlc.now())
    assert len(reserved) == 1 and max(issued) <= reserved[0]
    assert reserved[0] == issued[0] + (RESERVE_MS << LOGICAL_BITS)
    clock.ms = 1000 + RESERVE_MS + 1  # past it: reserved again before the next one is issued
    issued.append(hlc.now())
    assert len(reserved) == 2 and issued[-1] <= reserved[1]


def test_a_restart_with_the_clock_stepped_back_does_not_issue_a_timestamp_again():
    clock = FakeClock(5000)
    marks: list[int] = []
    first = HLC(clock, reserve=marks.append)
    before = [first.now() for _ in range(3)]
    clock.ms = 4000  # down, and the wall clock stepped back a second meanwhile
    again = HLC(clock, last=0, mark=max(marks), reserve=marks.append)  # the store held none
    assert again.now() > max(before)
    assert HLC(clock).now() < max(before)  # what the clock alone would have done


def test_a_timestamp_issued_above_a_version_is_reserved_too():
    """A write stamped above a newer version (and a lead) goes through now(above): the bound is
    stored before that timestamp is handed out, and the clock moves up to it."""
    clock = FakeClock(1000)
    reserved: list[int] = []
    hlc = HLC(clock, reserve=reserved.append)
    hlc.now()
    far = (1000 + 3 * RESERVE_MS) << LOGICAL_BITS  # beyond the first reservation
    ts = hlc.now(far)
    assert ts == far + 1 and ts <= max(reserved)
    assert hlc.now() > ts  # later stamps go above it
