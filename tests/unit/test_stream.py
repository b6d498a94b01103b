"""The replica-write stream (kvraft/peer/stream.py) between a real PeerStream and a real
HttpServer on 127.0.0.1, applying into a real SQLite store: lockstep batches on one
connection, a peer that restarts, refuses, fails, stalls or shuts down, and the binary result
encoding."""

from __future__ import annotations

import socket
import threading

import pytest

from api.httpd import HttpServer
from kvraft import peerauth
from kvraft.hlc import Version
from kvraft.peer import messages, stream
from kvraft.peer.http import PeerConnectError, PeerError
from kvraft.peer.wire import decode_records, encode_records
from kvraft.storage import ApplyResult, Record, Storage

SECRET = "s3cret"
LIMIT = 1 << 16
FAIL_KEY = "fail/me"  # the test peer raises while applying a batch with this key
STALL_KEY = "stall/me"  # ... and waits for the test's go before applying this one
CRASH_KEY = "crash/me"  # ... applies it, then drops the connection without answering (once)
KILL_KEY = "kill/me"  # ... applies it, drops the connection and stops listening


class Peer:
    """A peer's HTTP server whose only route is the stream upgrade, applying into ``store``."""

    def __init__(self, store: Storage, port: int = 0) -> None:
        self.store = store
        self.go = threading.Event()
        self.crashes = 0
        self.reads = 0
        self.local = threading.local()  # the connection the current batch came on
        self.verifier = peerauth.Verifier(peerauth.derive(SECRET, peerauth.PEER_HTTP))
        self.server = HttpServer(self.app, "127.0.0.1", port, read_timeout=5.0)
        self.addr = "{}:{}".format(*self.server.address)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def apply(self, payload: bytes) -> bytes:
        records = list(decode_records(payload))
        if any(r.key == FAIL_KEY for r in records):
            raise RuntimeError("disk on fire")
        if any(r.key == STALL_KEY for r in records):
            self.go.wait(10)
        results = self.store.apply_many(records)
        keys = {r.key for r in records}
        if CRASH_KEY in keys and not self.crashes or KILL_KEY in keys:
            self.crashes += 1
            if KILL_KEY in keys:
                self.server.listener.shutdown(socket.SHUT_RDWR)  # new connections: refused
            self.local.conn.sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("crashed after applying")
        return messages.encode_results(results)

    def get(self, payload: bytes) -> bytes:
        self.reads += 1
        return encode_records(self.store.get_many(messages.decode_keys(payload)))

    def app(self, environ, start_response):
        if self.verifier.check(
            environ.get(peerauth.ENVIRON), environ["REQUEST_METHOD"], environ["RAW_URI"]
        ):
            start_response("403 FORBIDDEN", [("Content-Length", "9")])
            return [b"forbidden"]
        self.local.conn = environ["kvraft.connection"]
        message = stream.upgrade(
            environ, {stream.APPLY: self.apply, stream.GET: self.get}, LIMIT
        ).encode()
        start_response("400 BAD REQUEST", [("Content-Length", str(len(message)))])
        return [message]

    def stop(self) -> bool:
        return self.server.shutdown(2.0)


@pytest.fixture
def store(tmp_path):
    s = Storage(tmp_path / "peer.db")
    yield s
    s.close()


@pytest.fixture
def peer(store):
    p = Peer(store)
    yield p
    p.go.set()
    p.stop()


def rec(key: str, ts: int, value: bytes = b"v", node: str = "n1") -> Record:
    return Record(key, 0, Version(ts, node), False, value)


def roundtrip(s: stream.PeerStream, records: list[Record]) -> list[ApplyResult]:
    s.send(encode_records(records))
    return messages.decode_results(s.receive())


def test_batches_go_in_lockstep_over_one_connection_and_answer_per_record(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    first = roundtrip(s, [rec("a", 10), rec("b", 10)])
    assert first == [ApplyResult(True, None, False)] * 2
    again = roundtrip(s, [rec("a", 10)])  # the same version again: not applied, seen as stored
    assert again == [ApplyResult(False, Version(10, "n1"), True)]
    newer = roundtrip(s, [rec("a", 11, b"new")])
    assert newer == [ApplyResult(True, Version(10, "n1"), True)]
    assert store.get("a").value == b"new" and store.get("b").version == Version(10, "n1")
    assert peer.server.connections == 1  # every batch on the one upgraded connection
    s.close()


def test_reads_answer_the_stored_records_among_the_keys_asked(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    tomb = Record("gone", 0, Version(5, "n2"), True)
    assert roundtrip(s, [rec("clé/é", 3, b"\x00\xff"), tomb])[0].applied
    s.send(messages.encode_keys(["clé/é", "missing", "gone", "clé/é"]), stream.GET)
    found = {r.key: r for r in decode_records(s.receive())}
    assert found == {"clé/é": rec("clé/é", 3, b"\x00\xff"), "gone": tomb}
    # reads and writes share the stream's lockstep: a write right after still works
    assert roundtrip(s, [rec("after", 1)])[0].applied
    s.send(b"", kind=9)  # a kind the peer does not serve: refused, the stream ends
    with pytest.raises(stream.StreamRefused, match="unexpected frame kind 9"):
        s.receive()
    s.close()


def test_an_answer_over_the_limit_is_an_error_and_is_not_asked_twice(peer):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    assert roundtrip(s, [rec("big", 1, b"x" * 4096)])[0].applied  # the stream is now reused
    small = stream.PeerStream(peer.addr, SECRET, timeout=5.0, limit=1024)
    small.send(messages.encode_keys(["warm"]), stream.GET)
    small.receive()
    small.send(messages.encode_keys(["big"]), stream.GET)
    with pytest.raises(PeerError, match="over the limit of 1024"):
        small.receive()
    assert peer.reads == 2  # the oversized answer was not fetched once more
    s.close()


def test_a_stream_closed_while_waiting_for_its_answer_is_a_peer_error(peer):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    s.send(encode_records([rec("k", 1)]))
    s.close()  # e.g. the node shutting down between the send and the read
    with pytest.raises(PeerError, match="stream closed before an answer"):
        s.receive()


def test_keys_encode_and_decode():
    keys = ["a", "", "clé", "x" * 1000, "\udcff-raw"]  # surrogate-escaped bytes survive
    data = messages.encode_keys(keys)
    assert messages.decode_keys(data) == keys
    with pytest.raises(messages.MessageError):
        messages.decode_keys(data[:-1])


def test_results_encode_and_decode_every_shape():
    results = [
        ApplyResult(True, None, False),
        ApplyResult(False, Version(2**63 - 1, "nœud-7"), True),
        ApplyResult(True, Version(0, "n"), False),
    ]
    data = messages.encode_results(results)
    assert messages.decode_results(data) == results
    assert messages.decode_results(b"") == []
    for cut in (1, len(data) - 1):
        with pytest.raises(messages.MessageError):
            messages.decode_results(data[:cut])


def test_a_peer_restarted_between_batches_gets_the_next_one_on_a_fresh_stream(store, tmp_path):
    first = Peer(store)
    s = stream.PeerStream(first.addr, SECRET, timeout=5.0)
    assert roundtrip(s, [rec("k", 1)])[0].applied
    assert first.stop()  # closes the idle stream: the sender's connection is now dead
    store2 = Storage(tmp_path / "restarted.db")
    second = Peer(store2, port=int(first.addr.rsplit(":", 1)[1]))
    try:
        assert roundtrip(s, [rec("k", 2)]) == [ApplyResult(True, None, False)]
        assert store2.get("k").version == Version(2, "n1")
    finally:
        second.stop()
        store2.close()
        s.close()


def test_an_answer_lost_on_a_reused_stream_is_sent_once_more_on_a_new_one(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    assert roundtrip(s, [rec("warm", 1)])[0].applied
    # applied, then the peer hangs up without answering: applying again is harmless (LWW)
    assert roundtrip(s, [rec(CRASH_KEY, 1)]) == [ApplyResult(False, Version(1, "n1"), True)]
    assert peer.crashes == 1 and store.get(CRASH_KEY).version == Version(1, "n1")
    s.close()


def test_a_lost_answer_is_never_reported_as_not_delivered(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    with pytest.raises(PeerError) as fresh:  # on a new stream: no second try
        roundtrip(s, [rec(CRASH_KEY, 1)])
    assert not isinstance(fresh.value, PeerConnectError)
    assert roundtrip(s, [rec("warm", 1)])[0].applied
    with pytest.raises(PeerError) as retried:  # the second try finds the peer gone
        roundtrip(s, [rec(KILL_KEY, 1)])
    assert not isinstance(retried.value, PeerConnectError)  # it was applied: outcome unknown
    assert store.get(KILL_KEY) is not None
    with pytest.raises(PeerConnectError):  # the next batch: certainly not delivered
        s.send(encode_records([rec("after", 1)]))


def test_nothing_listening_is_a_connect_error():
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = stream.PeerStream(f"127.0.0.1:{port}", SECRET, timeout=2.0)
    with pytest.raises(PeerConnectError):
        s.send(encode_records([rec("k", 1)]))


def test_a_wrong_secret_is_refused_before_any_record_is_sent(peer, store):
    s = stream.PeerStream(peer.addr, "not-the-secret", timeout=5.0)
    with pytest.raises(PeerConnectError, match="upgrade refused: HTTP 403"):
        s.send(encode_records([rec("k", 1)]))
    assert store.get("k") is None


def test_a_plain_post_without_the_upgrade_is_a_400(peer):
    with socket.create_connection(peer.server.address, timeout=5) as c:
        auth = peerauth.sign(peerauth.derive(SECRET, peerauth.PEER_HTTP), "POST", stream.PATH)
        c.sendall(
            b"POST /peer/stream HTTP/1.1\r\nHost: x\r\nX-Kvraft-Auth: %s\r\n"
            b"Content-Length: 0\r\n\r\n" % auth.encode()
        )
        answer = c.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400") and b"needs Upgrade: kvraft-peer/1" in answer


def test_a_failed_apply_is_answered_and_the_next_batch_uses_a_new_stream(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    s.send(encode_records([rec(FAIL_KEY, 1)]))
    with pytest.raises(stream.StreamRefused, match="RuntimeError: disk on fire"):
        s.receive()
    assert roundtrip(s, [rec("after", 1)])[0].applied
    assert store.get(FAIL_KEY) is None and store.get("after") is not None
    s.close()


def test_a_frame_over_the_limit_is_refused_and_nothing_is_applied(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    s.send(encode_records([rec("big", 1, b"x" * (LIMIT + 1))]))
    with pytest.raises(stream.StreamRefused, match="over the limit"):
        s.receive()
    assert store.get("big") is None
    s.close()


def test_a_stalled_peer_is_an_unknown_outcome_not_a_connect_error(peer, store):
    s = stream.PeerStream(peer.addr, SECRET, timeout=0.3)
    s.send(encode_records([rec(STALL_KEY, 1)]))
    with pytest.raises(PeerError) as err:
        s.receive()
    assert not isinstance(err.value, (PeerConnectError, stream.StreamRefused))
    peer.go.set()  # the peer applies it after all: the outcome really was unknown
    s.timeout = 5.0
    assert roundtrip(s, [rec("next", 1)])[0].applied  # a new stream; the stalled one is gone
    assert store.get(STALL_KEY) is not None
    s.close()


def test_shutdown_closes_an_idle_stream_at_once(peer):
    s = stream.PeerStream(peer.addr, SECRET, timeout=5.0)
    assert roundtrip(s, [rec("k", 1)])[0].applied
    assert peer.server.shutdown(1.0)  # the stream waits for a frame: idle, closed, not awaited
    s.close()
