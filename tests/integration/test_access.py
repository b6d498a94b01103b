"""Access control on a real 3-node cluster running with ``KVRAFT_TOKEN``, and each refusal proven
to change nothing.

- Every documented public operation but ``/health`` (and the data-free dashboard page) answers
  401 JSON without the bearer token or with a wrong one; the requests are the most harmful ones
  (overwrite and delete a stored key, add and drain members, import), and every node's stored
  records, the members and the partition map are the same afterwards.
- Peer endpoints (every ``/peer/`` route of the app and the WSGI fast path) answer 403 without
  a request signed with the key derived from the cluster secret: with the secret itself in a
  header (the old way), a signature by a wrong secret, one for another request, a replayed one,
  and with only the bearer token; forged records and membership changes sent there change
  nothing.
- Raft's port ignores bytes that are not encrypted with the cluster secret.
- Request bodies are capped even when chunked (no Content-Length): 413, nothing stored.
"""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import quote

import pytest
import requests

from api.openapi import document
from api.ui import PUBLIC_PATHS
from kvraft.core.placement import partition_of
from kvraft.hlc import Version
from kvraft.peer import stream
from kvraft.peer.wire import decode_records, encode_records
from kvraft.storage import Record
from tests.harness.cluster import SECRET, Cluster, peer_headers, wait_for
from tests.integration.test_openapi import app_rules

SECRET_HEADER = "X-Kvraft-Secret"  # how peers authenticated before: the secret in clear text
TOKEN = "access-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_VALUE = 1 << 20
SEED = {f"seed/{i}": f"value {i}".encode() for i in range(12)}
VICTIM = "seed/1"  # the key refused requests try to overwrite or delete
WRONG_AUTH = [
    None,
    "Bearer wrong-token",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}",
    TOKEN,
    f"Bearer  {TOKEN}",
    "Bearer ",
    f"Token {TOKEN}",
]
# peer requests with a real effect if they were accepted: a newer version of VICTIM, a purge of
# it, a membership change
_FORGED = encode_records(
    [Record(VICTIM, partition_of(VICTIM, 64), Version(1 << 62, "n1"), False, b"forged")]
)
PEER_BODIES = {
    "/peer/apply": _FORGED,
    "/peer/stream": stream.frame(stream.APPLY, _FORGED),
    "/peer/hint": _FORGED,
    "/peer/forget": json.dumps(
        {"part": partition_of(VICTIM, 64), "keys": [VICTIM], "below": 1 << 62}
    ).encode(),
    "/peer/members": json.dumps({"op": "remove", "id": "n2"}).encode(),
    "/peer/records": json.dumps({"keys": [VICTIM]}).encode(),
    "/peer/fetch": json.dumps({"keys": [VICTIM]}).encode(),
    "/peer/tree": json.dumps({"roots": [0]}).encode(),
    "/peer/entries": json.dumps({"part": 0, "leaves": [0]}).encode(),
}
PEER_QUERY = {
    "/peer/hint": "?target=n2",
    "/peer/changes/poll": "?sid=x&wait=0",
    "/peer/changes/close": "?sid=x",
}
PEER_HEADERS = {"/peer/stream": {"Connection": "Upgrade", "Upgrade": stream.PROTOCOL}}
FAST_PATH = {"/peer/apply": {"POST"}, "/peer/stream": {"POST"}}  # answered before Flask


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("access")), env={"KVRAFT_TOKEN": TOKEN})
    c.http.headers.update(AUTH)  # the harness's own requests
    with c:
        for i, (key, value) in enumerate(SEED.items()):
            assert c.put(i % 3, key, value, w="all").status_code == 201
        yield c


def _records(c: Cluster, i: int) -> dict[str, tuple]:
    """Every live record node ``i`` stores (key, version, value), read through /peer/scan.

    Tombstones are left out: background sync may purge them at any time. A refused delete
    would still show, as a live seed record gone."""
    out: dict[str, tuple] = {}
    after = None
    while True:
        target = "/peer/scan?limit=1000" + ("" if after is None else "&after=" + quote(after))
        resp = requests.get(c.url(i) + target, headers=peer_headers("GET", target), timeout=10)
        assert resp.status_code == 200, resp.text
        recs = list(decode_records(resp.content))
        out.update({r.key: (r.version.encode(), r.value) for r in recs if not r.tomb})
        if len(recs) < 1000:
            return out
        after = recs[-1].key


def snapshot(c: Cluster) -> dict:
    view = c.cluster_view(0)
    return {
        "records": {c.nodes[i].id: _records(c, i) for i in c.running()},
        "members": sorted((n["id"], n["http"], n["raft"], n["member"]) for n in view["nodes"]),
        "partitions": view["partitions"],
        "epoch": view["partition_epoch"],
        "removing": view["removing"],
        "filling": view["filling"],
        "leaving": view["leaving"],
    }


def _public_requests(c: Cluster) -> list[tuple[str, str, bytes | None]]:
    """(method, url, body) for every documented operation but the token-free ones, with the
    most harmful arguments."""
    bodies = {
        ("PUT", "/kv/{key}"): b"overwritten",
        ("POST", "/kv"): json.dumps({"value": "new"}).encode(),
        ("POST", "/cluster/members"): json.dumps(
            {"id": "n9", "http": "127.0.0.1:1", "raft": "127.0.0.1:2"}
        ).encode(),
        ("POST", "/import"): json.dumps(
            {"name": "export-n1-20260101T000000Z-0123abcd.json"}
        ).encode(),
    }
    out = []
    for path, item in document()["paths"].items():
        for method in (m.upper() for m in item if m != "parameters"):
            if path == "/health" or (path in PUBLIC_PATHS and method == "GET"):
                continue
            concrete = path.replace("{key}", quote(VICTIM, safe="")).replace("{node_id}", "n2")
            body = bodies.get((method, path))
            for i in range(len(c.nodes)):
                out.append((method, f"{c.url(i)}{concrete}", body))
                if path.startswith("/kv"):
                    out.append((method, f"{c.url(i)}{concrete}?redirect=1&w=one", body))
    return out


def test_every_public_endpoint_but_health_refuses_without_the_token_and_changes_nothing(secured):
    c = secured
    before = snapshot(c)
    assert before["records"]["n1"] or before["records"]["n2"]
    requests_ = _public_requests(c)
    assert len(requests_) > 40
    session = requests.Session()
    for method, url, body in requests_:
        for auth in WRONG_AUTH:
            headers = {} if auth is None else {"Authorization": auth}
            resp = session.request(
                method, url, data=body, headers=headers, timeout=10, allow_redirects=False
            )
            assert resp.status_code == 401, (method, url, auth, resp.status_code, resp.text)
            assert resp.json()["error"] == "unauthorized", (method, url)
        # the token in the query string or a cookie is not a token
        resp = session.request(
            method,
            url + ("&" if "?" in url else "?") + f"token={TOKEN}",
            data=body,
            cookies={"token": TOKEN},
            timeout=10,
        )
        assert resp.status_code == 401, (method, url)
    assert snapshot(c) == before
    for i in range(len(c.nodes)):
        assert c.get(i, VICTIM, r="all").content == SEED[VICTIM]


def test_health_needs_no_token_and_the_right_token_works(secured):
    c = secured
    for i in range(len(c.nodes)):
        bare = requests.get(c.url(i) + "/health", timeout=5)
        assert bare.status_code == 200 and bare.json()["status"] == "ok"
    for path in ("/ready", "/cluster", "/metrics", "/stats", "/openapi.json", "/kv"):
        assert requests.get(c.url(1) + path, headers=AUTH, timeout=10).status_code == 200, path
    put = requests.put(c.url(2) + "/kv/access%2Fok", data=b"fine", headers=AUTH, timeout=10)
    assert put.status_code == 201
    assert requests.get(c.url(0) + "/kv/access%2Fok", headers=AUTH, timeout=10).content == b"fine"
    assert (
        requests.delete(c.url(1) + "/kv/access%2Fok", headers=AUTH, timeout=10).status_code == 200
    )


def test_the_dashboard_page_served_without_the_token_holds_no_data(secured):
    c = secured
    resp = requests.get(c.url(0) + "/", timeout=5)
    if resp.status_code == 401:  # the guard does not exempt ui.PUBLIC_PATHS (yet): also fine
        return
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    view = c.cluster_view(0)
    for text in (
        [n["http"] for n in view["nodes"]]
        + [n["raft"] for n in view["nodes"]]
        + list(SEED)
        + [v.decode() for v in SEED.values()]
    ):
        assert text not in resp.text
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def _peer_routes() -> dict[str, set[str]]:
    routes = {rule: methods for rule, methods in app_rules().items() if rule.startswith("/peer/")}
    for path, methods in FAST_PATH.items():
        routes.setdefault(path, set()).update(methods)
    return routes


def test_peer_endpoints_refuse_without_the_secret_and_change_nothing(secured):
    c = secured
    routes = _peer_routes()
    assert {"/peer/apply", "/peer/hint", "/peer/members", "/peer/forget"} <= set(routes)
    before = snapshot(c)
    bad_headers = [
        {},
        {SECRET_HEADER: SECRET},
        {SECRET_HEADER: "wrong-secret"},
        {SECRET_HEADER: ""},
        AUTH,
        {"Authorization": f"Bearer {SECRET}"},
        {**AUTH, SECRET_HEADER: TOKEN},
        {"X-Kvraft-Auth": "v1 1 2 3"},
    ]
    session = requests.Session()
    for path, methods in sorted(routes.items()):
        for method in sorted(methods):
            target = path + PEER_QUERY.get(path, "")
            url = c.url(0) + target
            body = PEER_BODIES.get(path, b"{}")
            signed = [
                peer_headers(method, target, body, secret=SECRET + "x"),  # wrong secret
                peer_headers(method, target, body + b" "),  # another body
                peer_headers("PUT" if method == "POST" else "POST", target, body),
                peer_headers(method, "/peer/elsewhere", body),
            ]  # another request
            for headers in bad_headers + signed:
                resp = session.request(
                    method,
                    url,
                    data=body,
                    headers={**PEER_HEADERS.get(path, {}), **headers},
                    timeout=10,
                )
                assert resp.status_code == 403, (method, path, headers, resp.text)
                assert resp.json()["error"] == "forbidden"
    # an unknown peer path is refused the same way, before routing
    assert session.get(c.url(1) + "/peer/nothing-here", timeout=10).status_code == 403
    assert snapshot(c) == before
    # a signed request does open them (the refusals above are not a broken route), once
    signed = peer_headers("GET", "/peer/ping")
    ok = session.get(c.url(0) + "/peer/ping", headers=signed, timeout=10)
    assert ok.status_code == 200 and ok.json()["id"] == "n1"
    replay = session.get(c.url(0) + "/peer/ping", headers=signed, timeout=10)
    assert replay.status_code == 403 and "replayed" in replay.json()["message"]


def test_raft_port_ignores_traffic_without_the_cluster_secret(secured):
    c = secured
    before = snapshot(c)
    junk = [
        os.urandom(4096),
        b"\x80\x04\x95" + os.urandom(200) + b".",  # pickle-like
        (1 << 20).to_bytes(4, "big") + os.urandom(64),
    ]
    for node in c.nodes:
        host, port = node.raft.rsplit(":", 1)
        for payload in junk:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                try:
                    s.sendall(payload)
                except OSError:
                    pass  # the node may hang up at once: refused either way
    c.wait_ready(timeout=15)
    assert c.put(1, "after/raft-junk", b"ok").status_code == 201
    c.delete(1, "after/raft-junk")
    after = snapshot(c)
    for node_id, records in before["records"].items():  # only our own write came and went
        assert {
            k: v for k, v in after["records"][node_id].items() if not k.startswith("after/")
        } == records
    assert {k: after[k] for k in after if k != "records"} == {
        k: before[k] for k in before if k != "records"
    }


def _chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


def test_chunked_bodies_are_capped_and_nothing_is_stored(secured):
    c = secured
    before = snapshot(c)
    session = requests.Session()
    session.headers.update(AUTH)
    leader = c.leader()
    for i in range(len(c.nodes)):
        url = f"{c.url(i)}/kv/chunked%2Fbig{i}"
        resp = session.put(url, data=_chunks(MAX_VALUE + 1), timeout=30)  # no Content-Length
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"] == "too_large"
        if i != leader:  # the leader: test_an_oversized_write_at_the_leader_is_413_not_502
            resp = session.put(url, data=_chunks(4 * MAX_VALUE), timeout=30)
            assert resp.status_code == 413
        # POST /kv: a JSON value over the limit, chunked
        body = json.dumps({"value": "y" * (MAX_VALUE + 1)}).encode()
        resp = session.post(
            f"{c.url(i)}/kv",
            data=iter([body[:1000], body[1000:]]),
            timeout=30,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 413, resp.text
        # and without the token the upload is refused before it is read
        resp = requests.put(url, data=_chunks(MAX_VALUE + 1), timeout=30)
        assert resp.status_code == 401
    for i in range(len(c.nodes)):
        for j in range(len(c.nodes)):
            assert c.get(j, f"chunked/big{i}", r="all").status_code == 404
    assert snapshot(c) == before
    # the cap is the limit, not a refusal of chunked uploads: exactly max_value_bytes is stored
    resp = session.put(f"{c.url(1)}/kv/chunked%2Fexact", data=_chunks(MAX_VALUE), timeout=30)
    assert resp.status_code == 201
    assert len(c.get(2, "chunked/exact", r="all").content) == MAX_VALUE
    wait_for(lambda: c.delete(0, "chunked/exact").status_code == 200, 10, "cleanup")


def test_an_oversized_write_at_the_leader_is_413_not_502(secured):
    c = secured
    url = f"{c.url(c.leader())}/kv/chunked%2Fleader"
    for _ in range(3):  # the balancer may pick the leader itself, which answers 413 correctly
        for data in (_chunks(4 * MAX_VALUE), b"x" * (4 * MAX_VALUE)):
            resp = requests.put(url, data=data, headers=AUTH, timeout=30)
            assert resp.status_code == 413, resp.text
    assert c.get(0, "chunked/leader", r="all").status_code == 404
