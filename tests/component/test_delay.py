"""Slow links, scripted on the fake clock (``FakeNetwork.delay`` in an
:class:`~tests.harness.inproc.InProcCluster`): a delayed message steps the cluster's FakeClock by
its delay; past the peer timeout (``PEER_TIMEOUT``, 1 s) it steps it by the timeout and the
caller gets the error a real timeout gives (PeerError: maybe applied), the message having been
acted on with its reply lost (``delivered=True``) or never having arrived (``delivered=False``).
Nothing sleeps. Each test is named for the fault it covers and checks the answer and then the
stores: no acknowledged write is lost, and an in-doubt write is either visible on every replica
or on none after a heal and a round."""

from __future__ import annotations

import pytest

from kvraft.errors import NotFound, Unavailable
from kvraft.peer import PeerError
from kvraft.peer import messages as m
from kvraft.storage import Record
from tests.harness.inproc import PEER_TIMEOUT, InProcCluster

SLOW = 2.5 * PEER_TIMEOUT  # a replica slower than the timeout
LATE = 0.4 * PEER_TIMEOUT  # a replica slow, but inside it


@pytest.fixture
def cluster():
    c = InProcCluster()
    yield c
    c.close()


@pytest.fixture
def three():
    """Three replicas per partition (r=quorum can lose one)."""
    c = InProcCluster(n=3, rf=3)
    yield c
    c.close()


def held(cluster: InProcCluster, key: str) -> list[Record | None]:
    return [cluster.held(n, key) for n in cluster.replicas(key)]


def agreed(cluster: InProcCluster, key: str) -> Record | None:
    """The record every replica of ``key`` holds (they must agree)."""
    records = held(cluster, key)
    assert all(r == records[0] for r in records), records
    return records[0]


def test_the_fake_network_times_out_a_slow_message_on_the_clock_without_sleeping(cluster):
    """The fault itself: under the timeout a message arrives and the clock moves by the delay;
    over it, the caller's error is PeerError (not PeerConnectError: it may have been applied)
    after exactly the timeout, delivered or not as scripted; ``delay(0)`` removes the rule;
    a call's own timeout is the one it is judged against."""
    peers, clock = cluster.nodes["n1"].peers, cluster.clock
    t0 = clock.monotonic()
    cluster.network.delay(LATE, "n1", "n2")
    assert peers.ping("n2").id == "n2"
    assert clock.monotonic() - t0 == pytest.approx(LATE)
    with pytest.raises(PeerError) as lost:
        peers.ping("n2", timeout=LATE / 2)  # the caller's shorter timeout
    assert type(lost.value) is PeerError
    assert clock.monotonic() - t0 == pytest.approx(LATE + LATE / 2)
    cluster.network.delay(SLOW, "n1", "n2", delivered=False)
    before = len(cluster.network.delivered)
    with pytest.raises(PeerError):
        peers.ping("n2")
    assert len(cluster.network.delivered) == before  # never arrived
    assert clock.monotonic() - t0 == pytest.approx(LATE * 1.5 + PEER_TIMEOUT)
    cluster.network.delay(0, "n1", "n2")
    assert peers.ping("n2").id == "n2"
    assert clock.monotonic() - t0 == pytest.approx(LATE * 1.5 + PEER_TIMEOUT)  # no delay left
    assert peers.ping("n3").id == "n3"  # the rule was for n1 -> n2 only


@pytest.mark.parametrize("delivered", [True, False], ids=["reply-lost", "not-delivered"])
def test_a_replica_slower_than_the_peer_timeout_makes_a_w_all_write_maybe_applied(
    cluster, delivered
):
    """n2 is slower than n1's peer timeout: a w=all write through n1 is refused as unavailable
    (maybe applied) after one timeout. Delivered then reply lost: n2 holds it already; not
    delivered: only n1 does. After the heal and one round, both replicas hold it: the in-doubt
    write is fully visible, and the acknowledged write before it is overwritten, not lost."""
    key = cluster.key_on(("n1", "n2"))
    acked = cluster["n1"].put(key, b"acked", w="all")
    cluster.network.delay(SLOW, "n1", "n2", delivered=delivered)
    t0 = cluster.clock.monotonic()
    with pytest.raises(Unavailable):
        cluster["n1"].put(key, b"maybe", w="all")
    assert cluster.clock.monotonic() - t0 == pytest.approx(PEER_TIMEOUT)
    here, there = cluster.held("n1", key), cluster.held("n2", key)
    assert here is not None and here.value == b"maybe" and here.version > acked.version
    assert there is not None
    if delivered:
        assert there == here
    else:
        assert there.value == b"acked" and there.version == acked.version
    assert cluster.nodes["n1"].view.alive["n2"] is False  # the timeout marked it down
    cluster.heal()
    cluster.sync_round()
    final = agreed(cluster, key)
    assert final == here
    assert cluster["n2"].get(key, "all").value == b"maybe"


def test_a_slow_replica_under_the_timeout_still_acks(cluster):
    """n2 answers each message 0.4 timeouts late: w=all writes and an r=all read through n1
    succeed, the clock moving by the delay once per message to n2; n2 stays marked up and holds
    each acknowledged write."""
    key = cluster.key_on(("n1", "n2"))
    cluster.network.delay(LATE, "n1", "n2")
    t0 = cluster.clock.monotonic()
    first = cluster["n1"].put(key, b"v1", w="all")
    second = cluster["n1"].put(key, b"v2", w="all")
    assert first.acks == second.acks == 2 and second.version > first.version
    assert cluster["n1"].get(key, "all").value == b"v2"
    sent = [d for d in cluster.network.delivered if d[:2] == ("n1", "n2")]
    assert len(sent) == 3  # two Apply, one ReadKeys
    assert cluster.clock.monotonic() - t0 == pytest.approx(3 * LATE)
    assert cluster.nodes["n1"].view.is_alive("n2")
    assert agreed(cluster, key).version == second.version


@pytest.mark.parametrize("delivered", [True, False], ids=["reply-lost", "not-delivered"])
def test_a_delayed_hint_delivery_past_the_timeout_keeps_the_hint_until_a_later_tick(
    cluster, delivered
):
    """A hint for n2 waits on n3; n3's delivery to n2 is slower than the timeout. The tick
    delivers nothing it can count (the hint stays, applied on n2 or not); after the heal the
    next tick delivers it (again, harmlessly, when it had arrived) and drops the hint. A
    delivery under the timeout succeeds on the first tick."""
    key = cluster.key_on(("n1", "n2"))
    cluster.network.drop("n1", "n2")
    result = cluster["n1"].put(key, b"v1", w="quorum")
    assert result.hinted == ("n3",)
    cluster.heal()
    cluster.network.delay(SLOW, "n3", "n2", delivered=delivered)
    assert cluster.deliver_hints() == 0
    assert cluster.nodes["n3"].store.hint_targets() == {"n2": 1}
    there = cluster.held("n2", key)
    if delivered:
        assert there is not None and there.version == result.version
    else:
        assert there is None
    cluster.deliver_hints()  # n3 marked n2 down: it does not try again before the heal
    assert cluster.nodes["n3"].store.hint_targets() == {"n2": 1}
    cluster.heal()
    cluster.network.delay(LATE, "n3", "n2")
    t0 = cluster.clock.monotonic()
    assert cluster.deliver_hints() == 1
    assert cluster.clock.monotonic() - t0 == pytest.approx(LATE)
    assert cluster.nodes["n3"].store.hint_targets() == {}
    assert agreed(cluster, key).version == result.version


def test_a_delayed_read_at_r_quorum_times_out_on_one_replica_and_succeeds_on_the_others(three):
    """Three replicas; n2 missed the newest write (its hint undelivered) and is now slower than
    the timeout to n1. An r=quorum read through n1 answers the newest value from n1 and n3
    after one timeout; r=all with the same slow replica is unavailable. After the heal and a
    round every replica holds the newest write, and the one before it is not lost."""
    c = three
    key = c.key_on(("n1", "n2", "n3"))
    old = c["n1"].put(key, b"old", w="all")
    c.network.drop("n3", "n2")
    new = c["n3"].put(key, b"new", w="quorum")
    assert new.acks == 2 and new.version > old.version
    assert c.held("n2", key).value == b"old"
    c.heal()
    c.network.delay(SLOW, "n1", "n2", kinds=(m.ReadKeys,))
    t0 = c.clock.monotonic()
    assert c["n1"].get(key, "quorum").value == b"new"
    assert c.clock.monotonic() - t0 == pytest.approx(PEER_TIMEOUT)
    c.heal()  # forget n1's mark of n2, keep it slow
    c.network.delay(SLOW, "n1", "n2", kinds=(m.ReadKeys,))
    with pytest.raises(Unavailable):
        c["n1"].get(key, "all")
    assert c.held("n2", key).value == b"old"  # the timed-out reads repaired nothing there
    c.heal()
    c.sync_round()
    assert agreed(c, key).version == new.version
    assert c["n2"].get(key, "all").value == b"new"


@pytest.mark.parametrize(
    ("kind", "delivered"),
    [(m.Tree, True), (m.Apply, True), (m.Apply, False)],
    ids=["descent", "push-reply-lost", "push-not-delivered"],
)
def test_a_delayed_sync_round_message_fails_the_round_for_that_replica_and_the_next_repairs(
    cluster, kind, delivered
):
    """n2 missed an overwrite and a delete (their hints undelivered). During the round n1's
    descent (Tree) or push (Apply) to n2 is slower than the timeout: the round reports n2
    failed; a push that arrived has repaired n2 all the same, one that did not has changed
    nothing, and no replica lost a record. The next round, with those messages slowed under
    the timeout, repairs n2, the clock moving by that delay once per slowed message."""
    over = cluster.key_on(("n1", "n2"), "over")
    gone = cluster.key_on(("n1", "n2"), "gone")
    for k in (over, gone):
        cluster["n1"].put(k, b"v1", w="all")
    cluster.network.drop("n1", "n2")
    newer = cluster["n1"].put(over, b"v2", w="one")
    deleted = cluster["n1"].delete(gone, w="one")
    cluster.heal()
    cluster.network.delay(SLOW, "n1", "n2", kinds=(kind,), delivered=delivered)
    stats = cluster.sync_round()
    assert any(e.startswith("n2:") for e in stats["n1"].errors), stats["n1"].errors
    if kind is m.Apply and delivered:
        assert cluster.held("n2", over) == cluster.held("n1", over)
        assert cluster.held("n2", gone) == cluster.held("n1", gone)
    else:
        assert cluster.held("n2", over).value == b"v1" and not cluster.held("n2", gone).tomb
    assert cluster.held("n1", over).version == newer.version
    assert cluster.held("n1", gone).version == deleted.version
    cluster.heal()
    cluster.network.delay(LATE, "n1", "n2", kinds=(kind,))
    before = len(cluster.network.delivered)
    t0 = cluster.clock.monotonic()
    stats = cluster.sync_round()
    assert not stats["n1"].errors
    slowed = [d for d in cluster.network.delivered[before:] if d == ("n1", "n2", kind.__name__)]
    assert slowed or (kind is m.Apply and delivered)  # nothing left to push
    took = cluster.clock.monotonic() - t0 - cluster.sync_interval
    assert took == pytest.approx(LATE * len(slowed))
    assert agreed(cluster, over).version == newer.version
    assert agreed(cluster, gone).version == deleted.version
    with pytest.raises(NotFound):
        cluster["n2"].get(gone, "all")
    assert cluster["n2"].get(over, "all").value == b"v2"
