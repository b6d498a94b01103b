"""FastPath._to_owner (api/fastpath.py): a PUT of a hot key forwarded to its owner, with fakes
for the store and the peer calls. A forward that could not be sent is written here; one sent
and not answered is the honest 502 and is not written here; either way the owner is avoided
for a while. A client's mistake (a bad ``w``, a value too large) is answered before any
forward; a forwarded request is never forwarded again; the client's Authorization goes on."""

from __future__ import annotations

import io
import json
import types

import pytest

from api.fastpath import FastPath
from api.kv import KeyHandler
from kvraft.peer import PeerConnectError, PeerError


class KV:
    def __init__(self, owner: str | None = "n1") -> None:
        self.owner, self.puts, self.failed = owner, [], []

    def write_owner(self, key: str) -> str | None:
        return self.owner

    def owner_failed(self, node_id: str) -> None:
        self.failed.append(node_id)

    def put(self, key: str, value: bytes, w: str = "quorum"):
        self.puts.append((key, value, w))
        return types.SimpleNamespace(created=True, to_json=lambda: {"key": key})


class Cluster:
    id = "n3"
    config = types.SimpleNamespace(peer_timeout=2.0, token="")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


class Calls:
    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.sent = error, []

    def forward(self, target, method, path, body, headers, timeout=None, idempotent=True):
        self.sent.append((target, method, path, body, headers, idempotent))
        if self.error is not None:
            raise self.error
        return types.SimpleNamespace(
            status=200, body=b'{"key": "k"}', headers={"x-kvraft-node": "n1"}
        )


def serve(kv: KV, calls: Calls, body=b"v", query="", via=None, limit=10):
    fp = FastPath.__new__(FastPath)
    fp.cluster, fp.peer_calls, fp.keys = Cluster(), calls, KeyHandler(kv, limit)
    environ = {
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "PATH_INFO": "/kv/k",
        "QUERY_STRING": query,
        "HTTP_AUTHORIZATION": "Bearer t",
    }
    if via:
        environ["HTTP_X_KVRAFT_VIA"] = via
    params = dict(p.split("=") for p in query.split("&")) if query else {}
    status, answer, headers = fp._serve(environ, "/kv/k", "PUT", params)
    return status, answer, dict(headers), fp.cluster.counts


def test_a_hot_put_goes_to_the_owner_with_the_clients_authorization():
    kv, calls = KV(), Calls()
    status, _body, headers, counts = serve(kv, calls)
    assert status == 200 and headers["X-Kvraft-Via"] == "n3" and headers["X-Kvraft-Node"] == "n1"
    ((target, method, path, body, sent_headers, idempotent),) = calls.sent
    assert (target, method, path, body, idempotent) == ("n1", "PUT", "/kv/k", b"v", False)
    assert sent_headers["Authorization"] == "Bearer t" and sent_headers["X-Kvraft-Via"] == "n3"
    assert kv.puts == [] and counts["writes_to_owner"] == 1


def test_a_forward_that_could_not_be_sent_is_written_here_and_the_owner_avoided():
    kv, calls = KV(), Calls(PeerConnectError("refused"))
    status, _body, _headers, _counts = serve(kv, calls)
    assert status == 201 and kv.puts == [("k", b"v", "quorum")] and kv.failed == ["n1"]


def test_a_forward_sent_and_not_answered_is_a_502_and_not_written_here():
    kv, calls = KV(), Calls(PeerError("timed out"))
    status, body, _headers, counts = serve(kv, calls)
    assert status == 502 and json.loads(body)["error"] == "forward_failed"
    assert "may or may not have been applied" in json.loads(body)["message"]
    assert kv.puts == [] and kv.failed == ["n1"] and counts["forwards_failed"] == 1


@pytest.mark.parametrize(
    "body,query,status", [(b"v", "w=bogus", 400), (b"x" * 11, "", 413), (b"v", "w=all", 200)]
)
def test_a_clients_mistake_is_answered_before_any_forward(body, query, status):
    kv, calls = KV(), Calls(PeerError("would be a 502"))
    if status == 200:
        calls.error = None
    got, answer, _headers, _counts = serve(kv, calls, body=body, query=query)
    assert got == status, answer
    assert (len(calls.sent) == 1) == (status == 200) and kv.puts == []
    if status == 200:  # the level goes on with the request
        assert calls.sent[0][2] == "/kv/k?w=all"


def test_a_forwarded_request_and_a_cold_key_are_written_here():
    for kv, via in ((KV(), "n2"), (KV(owner=None), None)):
        calls = Calls()
        status, _body, _headers, _counts = serve(kv, calls, via=via)
        assert status == 201 and calls.sent == [] and len(kv.puts) == 1
