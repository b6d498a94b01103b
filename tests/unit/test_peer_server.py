"""PeerServer (kvraft/peer/server.py), the one dispatcher of /peer/*: the signature is checked
once and before anything else, then the path and method, then the message is decoded and the
registered handler's answer encoded; handler errors are the HTTP layer's to map."""

from __future__ import annotations

import json

import pytest

from kvraft import peerauth
from kvraft.errors import Conflict
from kvraft.hlc import Version
from kvraft.peer import messages as m
from kvraft.peer.http import REFUSALS
from kvraft.peer.server import PeerServer, Refused
from kvraft.storage import ApplyResult, Record

SECRET = "server-secret"
KEY = peerauth.derive(SECRET, peerauth.PEER_HTTP)
REC = Record("k", 0, Version(10, "n1"), False, b"v")


def signed(server: PeerServer, method: str, target: str, body: bytes = b"", **kw):
    auth = peerauth.sign(KEY, method, target, body)
    return server.handle(method, target, auth, body, **kw)


@pytest.fixture
def server():
    s = PeerServer(SECRET)
    applied: list[Record] = []
    s.register(
        m.Apply,
        lambda msg: (
            applied.extend(msg.records),
            m.Applied(tuple(ApplyResult(True, None, False) for _ in msg.records)),
        )[1],
    )
    s.register(m.Ping, lambda _msg: m.Pong("n1", clock_ms=5))

    def refuse(msg: m.MemberChange):
        raise Conflict(f"{msg.id} is taken")

    s.register(m.MemberChange, refuse)
    s.applied = applied
    return s


def test_a_signed_apply_reaches_its_handler_and_gets_binary_results(server):
    body = m.Apply((REC,)).to_wire()[1]
    reply = signed(server, "POST", "/peer/apply", body)
    assert reply.status == 200 and reply.content_type == m.OCTETS
    assert m.decode_results(reply.body) == [ApplyResult(True, None, False)]
    assert server.applied == [REC]


def test_unsigned_wrongly_signed_and_replayed_requests_are_403_and_change_nothing(server):
    body = m.Apply((REC,)).to_wire()[1]
    assert server.handle("POST", "/peer/apply", None, body).status == 403
    other = peerauth.sign(peerauth.derive("other", peerauth.PEER_HTTP), "POST", "/peer/apply", body)
    assert server.handle("POST", "/peer/apply", other, body).status == 403
    for_another_body = peerauth.sign(KEY, "POST", "/peer/apply", b"")
    assert server.handle("POST", "/peer/apply", for_another_body, body).status == 403
    auth = peerauth.sign(KEY, "POST", "/peer/apply", body)
    assert server.handle("POST", "/peer/apply", auth, body).status == 200
    replay = server.handle("POST", "/peer/apply", auth, body)
    assert replay.status == 403 and "replayed" in json.loads(replay.body)["message"]
    assert server.applied == [REC]  # once
    # an unknown path is refused the same way before anything else
    assert server.handle("GET", "/peer/nothing-here", None, b"").status == 403


def test_signed_but_unknown_path_wrong_method_or_bad_body(server):
    assert signed(server, "GET", "/peer/nothing-here").status == 404
    assert signed(server, "GET", "/peer/scan").status == 404  # no handler registered here
    wrong = signed(server, "GET", "/peer/apply")
    assert wrong.status == 405 and ("Allow", "POST") in wrong.headers
    bad = signed(server, "POST", "/peer/apply", b"\x02junk")
    assert bad.status == 400 and json.loads(bad.body)["error"] == "bad_request"
    assert server.applied == []


def test_truncated_and_other_version_requests_are_400_after_the_signature(server):
    assert server.handle("POST", "/peer/apply", None, b"", truncated=True).status == 403
    assert signed(server, "POST", "/peer/apply", b"", truncated=True).status == 400
    assert signed(server, "GET", "/peer/ping", version=str(m.VERSION)).status == 200
    other = signed(server, "GET", "/peer/ping", version=str(m.VERSION + 1))
    assert other.status == 400 and "version" in json.loads(other.body)["message"]


def test_a_handler_error_is_raised_for_the_http_layer_to_map(server):
    body = m.MemberChange("add", "n2", "h:1", "h:2").to_wire()[1]
    with pytest.raises(Conflict, match="n2 is taken"):
        signed(server, "POST", "/peer/members", body)


def test_the_answer_is_the_handlers_encoded(server):
    reply = signed(server, "GET", "/peer/ping")
    assert reply.status == 200 and m.Pong.from_wire({}, reply.body) == m.Pong("n1", clock_ms=5)
    assert server.dispatch(m.Ping()) == m.Pong("n1", clock_ms=5)  # no HTTP: the fake's way


def test_routes_list_every_registered_message_and_the_stream(server):
    assert server.routes() == {
        "/peer/apply": ("POST",),
        "/peer/ping": ("GET",),
        "/peer/members": ("POST",),
        "/peer/stream": ("POST",),
    }
    with pytest.raises(ValueError):
        server.register(m.Ping, lambda _msg: m.Pong("again"))


def test_the_stream_needs_post_and_a_connection(server):
    assert signed(server, "GET", "/peer/stream").status == 405
    assert signed(server, "POST", "/peer/stream").status == 400  # no environ to take over


def test_receive_refuses_for_a_protocol_reason_with_no_http_status(server):
    def refusal(method, target, body=b"", sign=True, **kw):
        auth = peerauth.sign(KEY, method, target, body) if sign else None
        with pytest.raises(Refused) as caught:
            server.receive(method, target, auth, body, **kw)
        return caught.value.refusal, caught.value.allow

    assert refusal("POST", "/peer/apply", sign=False) == (m.Refusal.BAD_SIGNATURE, None)
    assert refusal("POST", "/peer/apply", truncated=True) == (m.Refusal.MALFORMED, None)
    assert refusal("GET", "/peer/ping", version="0") == (m.Refusal.MALFORMED, None)
    assert refusal("POST", "/peer/apply", b"\x02junk") == (m.Refusal.MALFORMED, None)
    assert refusal("GET", "/peer/scan") == (m.Refusal.NO_SUCH_MESSAGE, None)
    assert refusal("GET", "/peer/apply") == (m.Refusal.WRONG_METHOD, "POST")
    assert refusal("GET", "/peer/stream") == (m.Refusal.WRONG_METHOD, "POST")
    assert server.applied == []
    pong = server.receive("GET", "/peer/ping", peerauth.sign(KEY, "GET", "/peer/ping", b""), b"")
    assert pong == m.Pong("n1", clock_ms=5)  # the answer as a message, not encoded


def test_a_gone_subscription_is_refused_gone_and_answered_410_by_the_one_table():
    s = PeerServer(SECRET)
    s.register(m.WatchPoll, lambda msg: m.WatchBatch(gone=msg.sid == "old"))
    gone = signed(s, "GET", "/peer/changes/poll?sid=old&after=0&wait=0")
    assert gone.status == 410 and json.loads(gone.body)["error"] == "gone"
    assert signed(s, "GET", "/peer/changes/poll?sid=new&after=0&wait=0").status == 200
    # every refusal has its own status and code, and 200 is none of them
    assert set(REFUSALS) == set(m.Refusal)
    assert len({status for status, _code in REFUSALS.values()}) == len(REFUSALS)
    assert all(400 <= status < 500 for status, _code in REFUSALS.values())
