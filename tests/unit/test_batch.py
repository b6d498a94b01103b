"""PeerBatcher (kvraft/peer/batch.py): concurrent writes to one peer share requests, results go back
to the right callers, errors reach every record of a batch, and nothing waits forever."""

from __future__ import annotations

import threading
import time

import pytest

from kvraft.peer.batch import PeerBatcher
from kvraft.peer.http import PeerConnectError, PeerError


class FakePeer:
    """A peer that answers each request after ``delay`` s: result = record * 10."""

    def __init__(self, delay: float = 0.02, fail_connect: bool = False, fail_answer: bool = False):
        self.delay, self.fail_connect, self.fail_answer = delay, fail_connect, fail_answer
        self.requests: list[list[int]] = []
        self.lock = threading.Lock()

    def start(self, records):
        if self.fail_connect:
            raise PeerConnectError("refused")
        with self.lock:
            self.requests.append(list(records))
        return (time.monotonic() + self.delay, list(records))

    def finish(self, sent):
        due, records = sent
        time.sleep(max(0.0, due - time.monotonic()))
        if self.fail_answer:
            raise PeerError("timed out")
        return [r * 10 for r in records]


def _run_writers(batcher: PeerBatcher, n: int) -> dict[int, object]:
    out: dict[int, object] = {}
    barrier = threading.Barrier(n)

    def writer(i: int) -> None:
        barrier.wait()
        t = batcher.submit(i, 100)
        try:
            out[i] = batcher.result(t)
        except PeerError as exc:
            out[i] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return out


def test_alone_a_record_is_sent_at_once_in_its_own_request():
    peer = FakePeer(delay=0)
    b = PeerBatcher(peer.start, peer.finish, lanes=1)
    t = b.submit(7, 10)
    assert peer.requests == [[7]]  # on the wire before result() is called
    assert b.result(t) == 70


def test_concurrent_writers_share_requests_and_get_their_own_results():
    peer = FakePeer(delay=0.05)
    b = PeerBatcher(peer.start, peer.finish, lanes=1)
    out = _run_writers(b, 32)
    assert out == {i: i * 10 for i in range(32)}
    assert sorted(r for req in peer.requests for r in req) == list(range(32))
    assert len(peer.requests) < 32 and max(map(len, peer.requests)) > 1
    assert (b.requests, b.records) == (len(peer.requests), 32)


def test_lanes_bound_the_requests_in_flight():
    peer = FakePeer(delay=0.05)
    in_flight = []
    active = [0]
    lock = threading.Lock()

    def start(records):
        with lock:
            active[0] += 1
            in_flight.append(active[0])
        return peer.start(records)

    def finish(sent):
        try:
            return peer.finish(sent)
        finally:
            with lock:
                active[0] -= 1

    b = PeerBatcher(start, finish, lanes=2)
    out = _run_writers(b, 24)
    assert out == {i: i * 10 for i in range(24)}
    assert max(in_flight) <= 2


def test_size_limits_split_batches():
    peer = FakePeer(delay=0.05)
    b = PeerBatcher(peer.start, peer.finish, lanes=1, max_records=3, max_bytes=250)
    out = _run_writers(b, 20)
    assert out == {i: i * 10 for i in range(20)}
    assert max(map(len, peer.requests)) <= 2  # 100-byte records, 250 bytes a batch


@pytest.mark.parametrize(
    "kind,error", [("fail_connect", PeerConnectError), ("fail_answer", PeerError)]
)
def test_an_error_reaches_every_record_and_the_lane_is_freed(kind, error):
    peer = FakePeer(delay=0.02, **{kind: True})
    b = PeerBatcher(peer.start, peer.finish, lanes=1)
    out = _run_writers(b, 10)
    assert all(isinstance(v, error) for v in out.values()), out
    setattr(peer, kind, False)  # the peer is back: the batcher still works
    assert b.result(b.submit(5, 1)) == 50


def test_a_record_never_sent_gives_up_as_not_delivered():
    gate = threading.Event()
    peer = FakePeer(delay=0)

    def finish(sent):
        gate.wait(5)
        return peer.finish(sent)

    b = PeerBatcher(peer.start, finish, lanes=1, wait_limit=0.2)
    first = b.submit(1, 1)  # holds the only lane until the gate opens
    reader = threading.Thread(target=lambda: b.result(first))
    reader.start()
    second = b.submit(2, 1)  # queued behind it
    with pytest.raises(PeerConnectError):
        b.result(second)
    gate.set()
    reader.join(5)
    assert [2] not in peer.requests  # taken back: never sent
    assert b.result(b.submit(3, 1)) == 30


def test_once_sent_a_record_waits_for_the_transport_not_the_queue_limit():
    """A batch on the wire is never abandoned (its answer must be read for the lane to free):
    every record of it gets the answer, even one slower than ``wait_limit``."""
    peer = FakePeer()
    delays = iter([0.05] + [0.6] * 10)  # the first request is quick, the next ones slow

    def start(records):
        peer.delay = next(delays)
        return peer.start(records)

    b = PeerBatcher(start, peer.finish, lanes=1, wait_limit=0.3)
    first = b.submit(0, 1)  # on the wire at once
    queued = [b.submit(i, 1) for i in (1, 2, 3)]  # go together when the first answer is in
    results: dict[int, object] = {}

    def wait(i, t):
        try:
            results[i] = b.result(t)
        except PeerError as exc:
            results[i] = exc

    threads = [threading.Thread(target=wait, args=(i + 1, t)) for i, t in enumerate(queued)]
    for t in threads:
        t.start()
    assert b.result(first) == 0
    for t in threads:
        t.join(5)
    assert peer.requests == [[0], [1, 2, 3]]
    assert results == {1: 10, 2: 20, 3: 30}  # 0.6 s after sending, past the 0.3 s limit


def _not_refused(exc: BaseException) -> bool:
    return not isinstance(exc, PeerRefused)


class PeerRefused(PeerError):
    """Stands for StreamRefused: the peer answered, it is up."""


def _queue_behind_a_failing_batch(error: BaseException, unreachable):
    """One batch on the wire fails with ``error`` while three records wait behind it; what
    each queued record gets, and the requests the peer saw."""
    gate = threading.Event()
    peer = FakePeer(delay=0)

    def finish(sent):
        gate.wait(5)
        if sent[1] == [0]:
            raise error
        return peer.finish(sent)

    b = PeerBatcher(peer.start, finish, lanes=1, unreachable=unreachable)
    first = b.submit(0, 1)
    queued = [b.submit(i, 1) for i in (1, 2, 3)]
    out: dict[int, object] = {}

    def wait(i, t):
        try:
            out[i] = b.result(t)
        except PeerError as exc:
            out[i] = exc

    threads = [threading.Thread(target=wait, args=(i + 1, t)) for i, t in enumerate(queued)]
    for t in threads:
        t.start()
    gate.set()
    with pytest.raises(type(error)):
        b.result(first)
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    return b, peer, out


def test_records_queued_behind_a_peer_that_did_not_answer_fail_at_once_unsent():
    """A blackholed peer costs one timeout: the queue behind it is not sent into the silence."""
    b, peer, out = _queue_behind_a_failing_batch(PeerError("timed out"), _not_refused)
    assert peer.requests == [[0]]  # the queued records were never sent
    assert all(isinstance(v, PeerConnectError) for v in out.values()), out
    assert "not sent" in str(out[1]) and "timed out" in str(out[1])
    assert b.result(b.submit(9, 1)) == 90  # the next record tries the peer again


def test_a_refusal_does_not_fail_the_queue():
    """The peer answered (up, it did not serve that batch): the records behind it go."""
    b, peer, out = _queue_behind_a_failing_batch(PeerRefused("full"), _not_refused)
    assert peer.requests == [[0], [1, 2, 3]]
    assert out == {1: 10, 2: 20, 3: 30}


def test_without_the_rule_the_queue_is_sent_after_a_failure():
    b, peer, out = _queue_behind_a_failing_batch(PeerError("timed out"), None)
    assert peer.requests == [[0], [1, 2, 3]]
    assert out == {1: 10, 2: 20, 3: 30}


def test_a_failed_send_fails_the_queue_too():
    """A connect that fails (nothing sent) fails what queued while it was being tried."""
    peer = FakePeer(delay=0)
    answer, connecting, calls = threading.Event(), threading.Event(), []

    def start(records):
        calls.append(list(records))
        if records == [0]:
            return peer.start(records)
        connecting.set()
        time.sleep(0.2)  # the connect attempt, while the third record queues
        raise PeerConnectError("refused")

    def finish(sent):
        answer.wait(5)
        return peer.finish(sent)

    b = PeerBatcher(start, finish, lanes=2, unreachable=_not_refused)
    first = b.submit(0, 1)  # lane 1, answered once ``answer`` is set
    second: list = []
    sender = threading.Thread(target=lambda: second.append(b.submit(1, 1)))
    sender.start()  # lane 2: its connect fails after 0.2 s
    assert connecting.wait(5)
    third = b.submit(2, 1)  # both lanes busy: queued
    sender.join(5)
    with pytest.raises(PeerConnectError, match="refused"):
        b.result(second[0])
    with pytest.raises(PeerConnectError, match="not sent"):
        b.result(third)
    answer.set()
    assert b.result(first) == 0
    assert calls == [[0], [1]]  # the third record was never tried
