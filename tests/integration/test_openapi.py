"""The OpenAPI document at ``/openapi.json`` is true to the server.

- Every public route of the app, Flask's and the fast path's (method and path), is documented,
  and every documented operation is a route: the app's URL map is read from a real app built
  in a child process. A wrong method is a 405 whose Allow lists the route's methods, on both
  request paths (Flask, the fast path) and at the partition leader, which forwards.
- Live answers of a real 3-node cluster validate against the document (schemathesis' checks on
  hand-picked requests, including errors).
- The fuzz is ``schemathesis run --checks all`` (tests/integration/test_schemathesis.py); bugs
  it found once are pinned by regression tests here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import requests
import schemathesis
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import document, path_of
from tests.harness.cluster import ROOT

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MAX_EXAMPLES = 200
# Flask's built-in static route: the app is built with a static folder (kvraft/static) that does
# not exist, so it only ever answers 404. Not part of the API.
UNDOCUMENTED_RULES = {"/static/<path:filename>"}

_RULES_SCRIPT = """
import json, tempfile, warnings
warnings.simplefilter("ignore")
from tests.harness.cluster import free_ports
from kvraft.config import Config
from kvraft.node import Node
from kvraft_cmd.serve import build_app
http, raft = free_ports(2)
with tempfile.TemporaryDirectory() as tmp:
    node = Node(Config(id="n1", http=f"127.0.0.1:{http}", raft=f"127.0.0.1:{raft}",
                       secret="rules-secret", replication_factor=1, data_dir=tmp), start=False)
    try:
        app = build_app(node)
        print(json.dumps([[r.rule, sorted(r.methods - {"HEAD", "OPTIONS"})]
                          for r in app.url_map.iter_rules()]))
    finally:
        node.close()
"""


def app_rules() -> dict[str, set[str]]:
    """Flask rule -> methods (without the automatic HEAD and OPTIONS) of a real app, built in
    a child process so its Raft member and threads end with it (run from the repository root,
    where ``python -c`` finds the ``tests`` package)."""
    out = subprocess.run(
        [sys.executable, "-c", _RULES_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rules: dict[str, set[str]] = {}
    for rule, methods in json.loads(out.strip().splitlines()[-1]):
        rules.setdefault(rule, set()).update(methods)
    return rules


def test_every_public_route_is_documented_and_every_documented_operation_exists():
    from api.fastpath import ROUTES

    rules = app_rules()
    for rule, methods in ROUTES.items():  # served by the fast path (which passes on the rest)
        rules.setdefault(rule, set()).update(methods)
    doc = document()
    routes = {
        (path_of(rule), m.lower())
        for rule, methods in rules.items()
        if not rule.startswith("/peer/") and rule not in UNDOCUMENTED_RULES
        for m in methods
    }
    documented = {
        (path, m) for path, item in doc["paths"].items() for m in item if m != "parameters"
    }
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations the app does not have"
    assert not any(p.startswith("/peer/") for p in doc["paths"]), "peer endpoints are internal"


def test_the_document_is_served_and_loads(cluster):
    resp = requests.get(cluster.url(1) + "/openapi.json", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    served = resp.json()
    assert served["openapi"].startswith("3.") and served == json.loads(json.dumps(document()))
    schema = schemathesis.openapi.from_dict(served)
    ops = [op.ok() for op in schema.get_all_operations()]
    assert len(ops) == sum(
        len([m for m in item if m != "parameters"]) for item in served["paths"].values()
    )


def _validate(schema, method: str, path: str, resp: requests.Response, **case_kw) -> None:
    case = schema[path][method].Case(**case_kw)
    case.validate_response(resp, checks=CHECKS)


def test_live_answers_validate_against_the_document(cluster):
    # a node that is not the partition leader, so the 413 below is its own (at the leader it
    # can be a 502: see test_access.py::test_an_oversized_write_at_the_leader_is_413_not_502)
    base = _flask_served(cluster)
    s = requests.Session()
    key = "openapi/doc key"
    put = s.put(f"{base}/kv/openapi%2Fdoc%20key", data=b"v1", timeout=10)
    assert put.status_code == 201
    answers = [
        ("PUT", "/kv/{key}", put, {"path_parameters": {"key": key}}),
        (
            "PUT",
            "/kv/{key}",
            s.put(f"{base}/kv/openapi%2Fdoc%20key?w=all", data=b"v2", timeout=10),
            {"path_parameters": {"key": key}},
        ),
        (
            "GET",
            "/kv/{key}",
            s.get(f"{base}/kv/openapi%2Fdoc%20key", timeout=10),
            {"path_parameters": {"key": key}},
        ),
        (
            "GET",
            "/kv/{key}",
            s.get(f"{base}/kv/openapi%2Fdoc%20key?explain=1", timeout=10),
            {"path_parameters": {"key": key}, "query": {"explain": "1"}},
        ),
        (
            "GET",
            "/kv/{key}",
            s.get(f"{base}/kv/nope?r=bogus", timeout=10),
            {"path_parameters": {"key": "nope"}},
        ),
        # not on the session: the server drops the connection after a 413 whose body it did
        # not read, without saying "Connection: close" (reported), which breaks the next request
        (
            "PUT",
            "/kv/{key}",
            requests.put(f"{base}/kv/big", data=b"x" * ((1 << 20) + 1), timeout=10),
            {"path_parameters": {"key": "big"}},
        ),
        ("GET", "/kv", s.get(f"{base}/kv?prefix=openapi/&limit=1", timeout=10), {}),
        ("GET", "/kv", s.get(f"{base}/kv?limit=0", timeout=10), {}),
        ("POST", "/kv", s.post(f"{base}/kv", json={"value": "text"}, timeout=10), {}),
        (
            "POST",
            "/kv",
            s.post(
                f"{base}/kv",
                data=b"not json",
                timeout=10,
                headers={"Content-Type": "application/json"},
            ),
            {},
        ),
        ("GET", "/kv/{key}", s.get(f"{base}/kv/", timeout=10), {"path_parameters": {"key": ""}}),
        ("GET", "/cluster", s.get(f"{base}/cluster", timeout=10), {}),
        ("GET", "/health", s.get(f"{base}/health", timeout=10), {}),
        ("GET", "/ready", s.get(f"{base}/ready", timeout=10), {}),
        ("GET", "/metrics", s.get(f"{base}/metrics", timeout=10), {}),
        ("GET", "/stats", s.get(f"{base}/stats", timeout=10), {}),
        ("GET", "/", s.get(f"{base}/", timeout=10), {}),
        (
            "DELETE",
            "/kv/{key}",
            s.delete(f"{base}/kv/openapi%2Fdoc%20key", timeout=10),
            {"path_parameters": {"key": key}},
        ),
        (
            "DELETE",
            "/kv/{key}",
            s.delete(f"{base}/kv/openapi%2Fdoc%20key", timeout=10),
            {"path_parameters": {"key": key}},
        ),
    ]
    statuses = [a[2].status_code for a in answers]
    assert statuses == [
        201,
        200,
        200,
        200,
        400,
        413,
        200,
        400,
        201,
        400,
        400,
        200,
        200,
        200,
        200,
        200,
        200,
        200,
        404,
    ]
    full = schemathesis.openapi.from_dict(document())
    for method, path, resp, kw in answers:
        _validate(full, method, path, resp, **kw)
    # an unknown route and a wrong method are JSON errors too
    for resp, status in (
        (s.get(f"{base}/nowhere", timeout=10), 404),
        (s.patch(f"{base}/kv/x", timeout=10), 405),
    ):
        assert resp.status_code == status
        assert set(resp.json()) == {"error", "message"}
        assert resp.headers["X-Kvraft-Node"] in {n.id for n in cluster.nodes}


def _allowed(resp: requests.Response) -> set[str]:
    return {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}


def test_every_405_lists_the_routes_methods_in_allow_on_every_node(cluster):
    """RFC 9110 15.5.6. At the partition leader too: it answers a wrong method itself rather
    than balance it, and an answer it forwards keeps its Allow."""
    doc = document()
    cases = [
        ("TRACE", "/kv/some-key", "/kv/{key}"),
        ("PATCH", "/kv/some-key?r=one", "/kv/{key}"),
        ("POST", "/kv/some-key", "/kv/{key}"),
        ("PUT", "/kv", "/kv"),
        ("DELETE", "/cluster", "/cluster"),
        ("PUT", "/watch", "/watch"),
        ("PATCH", "/", "/"),
    ]  # admin routes: the fuzz sends them wrong methods with the
    # admin credential (its unsupported_method check), which this cluster does not have
    for i in range(len(cluster.nodes)):
        for method, target, path in cases:
            resp = requests.request(
                method, cluster.url(i) + target, timeout=10, allow_redirects=False
            )
            assert resp.status_code == 405, (i, method, target, resp.status_code)
            assert resp.json()["error"] == "method_not_allowed"
            documented = {m.upper() for m in doc["paths"][path] if m != "parameters"}
            assert _allowed(resp) - {"HEAD", "OPTIONS"} == documented, (method, target)
    # the fast path's peer routes (their secret first: without it, 403 like every /peer/)
    from kvraft import peerauth
    from tests.harness.cluster import SECRET

    key = peerauth.derive(SECRET, peerauth.PEER_HTTP)
    for peer in ("/peer/apply", "/peer/stream"):
        resp = requests.get(
            cluster.url(0) + peer,
            timeout=10,
            headers={peerauth.HEADER: peerauth.sign(key, "GET", peer)},
        )
        assert resp.status_code == 405 and _allowed(resp) == {"POST"}, (peer, resp.text)
        assert requests.get(cluster.url(0) + peer, timeout=10).status_code == 403


# Bugs the fuzz found once, kept as regression tests.
def test_explain_refuses_an_unknown_read_level(cluster):
    resp = requests.get(cluster.url(1) + "/kv/some-key?explain=1&r=bogus", timeout=10)
    assert resp.status_code == 400


def _flask_served(cluster) -> str:
    """Base URL of a node that is not the partition leader (which balances /kv requests); with
    a query parameter besides r/w, /kv/<key> is served by Flask there, not api/fastpath.py."""
    leader = cluster.leader()
    return cluster.url(next(i for i in range(len(cluster.nodes)) if i != leader))


def test_a_key_with_a_line_feed_is_refused_as_a_bad_key(cluster):
    resp = requests.put(_flask_served(cluster) + "/kv/a%0Ab?redirect=0", data=b"x", timeout=10)
    assert resp.status_code == 400 and resp.json()["error"] == "bad_request"


def test_a_key_that_starts_with_a_slash_is_stored_under_that_key(cluster):
    resp = requests.put(
        _flask_served(cluster) + "/kv/%2Fslashed?redirect=0",
        data=b"x",
        timeout=10,
        allow_redirects=False,
    )
    assert resp.status_code == 201 and resp.json()["key"] == "/slashed"


def test_metrics_cover_requests_replication_hints_sync_and_raft(cluster):
    """``/metrics`` is documented only as text/plain; its content is checked here against the
    list of issue 7: requests and latency per route and status, replication acks, hints, sync
    figures, Raft state."""
    assert cluster.put(1, "metrics/k", b"v").status_code in (200, 201)
    assert cluster.get(1, "metrics/k").status_code == 200
    assert cluster.get(1, "metrics/absent").status_code == 404
    leaders, acks, routes, batches, batched = 0, 0.0, set(), 0.0, 0.0
    commits, committed = 0.0, 0.0
    for i in range(len(cluster.nodes)):
        resp = requests.get(cluster.url(i) + "/metrics", timeout=10)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(resp.text)}
        kinds = {name: f.type for name, f in fams.items()}
        assert kinds["kvraft_http_requests"] == "counter"
        assert kinds["kvraft_http_request_seconds"] == "histogram"
        for counter in (
            "writes",
            "reads",
            "replica_acks",
            "hints_stored",
            "hints_delivered",
            "read_repairs",
            "sync_rounds",
            "sync_records",
            "sync_bytes",
            "replica_batches",
            "replica_batched_records",
            "store_commits",
            "store_committed_writes",
        ):
            assert kinds[f"kvraft_{counter}"] == "counter", counter
        commits += fams["kvraft_store_commits"].samples[0].value
        committed += fams["kvraft_store_committed_writes"].samples[0].value
        for gauge in (
            "hints_pending",
            "hints_pending_cluster",
            "sync_round",
            "sync_last_seconds",
            "sync_partitions_synced_last_round",
            "raft_term",
            "raft_commit_index",
            "raft_is_leader",
            "raft_has_quorum",
            "keys",
            "bytes",
            "partitions_held",
            "member_up",
            "partitions_under_replicated",
            "store_waiting",
        ):
            assert kinds[f"kvraft_{gauge}"] == "gauge", gauge
        state = {s.labels["state"]: s.value for s in fams["kvraft_raft_state"].samples}
        assert sum(state.values()) == 1
        leaders += state["leader"]
        assert sum(s.value for s in fams["kvraft_partitions_held"].samples) == 64 * 2
        acks += sum(s.value for s in fams["kvraft_replica_acks"].samples)
        batches += sum(s.value for s in fams["kvraft_replica_batches"].samples)
        batched += sum(s.value for s in fams["kvraft_replica_batched_records"].samples)
        routes |= {
            (s.labels["method"], s.labels["route"], s.labels["status"])
            for s in fams["kvraft_http_request_seconds"].samples
            if s.name.endswith("_count")
        }
    assert leaders == 1
    assert acks >= 2
    assert 1 <= batches <= batched  # the write went to a remote replica in a batch
    assert 2 <= commits <= committed  # its two copies, each committed in a group
    assert {("PUT", "/kv/<key:key>", "201"), ("GET", "/kv/<key:key>", "404")} <= routes


def test_metrics_show_the_garbage_collector_with_the_start_up_frozen(cluster):
    """Each node froze its start-up objects out of the collector's walks (kvraft.collector) and
    counts the collections and their pauses."""
    for i in range(len(cluster.nodes)):
        text = requests.get(cluster.url(i) + "/metrics", timeout=10).text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        value = {name: f.samples[0].value for name, f in fams.items() if f.samples}
        assert fams["kvraft_gc_frozen_objects"].type == "gauge"
        assert value["kvraft_gc_frozen_objects"] > 10_000  # modules, classes, Flask, pysyncobj
        for counter in ("collections_gen0", "pause_seconds", "pauses_long"):
            assert fams[f"kvraft_gc_{counter}"].type == "counter", counter
        assert value["kvraft_gc_collections_gen0"] >= 1  # a node collects while it serves
        assert 0 < value["kvraft_gc_pause_longest_seconds"] <= value["kvraft_gc_pause_seconds"]


# The shared HTTP contract (front door, issue 13) that the document declares and that the front
# door's branch implements: on this branch alone these answers are not given yet, so they are
# strict xfails; once both branches are merged each must pass (an XPASS fails the run: then drop
# this marker).
def _raw(cluster, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as bytes on a fresh connection; the status code and the whole answer."""
    host, port = cluster.nodes[0].http.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_a_nul_byte_in_a_header_value_is_a_400(cluster):
    status, answer = _raw(
        cluster, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\nConnection: close\r\n\r\n"
    )
    assert status == 400, answer


def test_an_admin_operation_without_the_admin_credential_is_a_401(cluster):
    def members() -> list[tuple]:  # who is a member (not the figures that move: load, offset)
        nodes = requests.get(cluster.url(0) + "/cluster", timeout=10).json()["nodes"]
        return [(n["id"], n["http"], n["raft"], n["member"]) for n in nodes]

    before = members()
    resp = requests.delete(cluster.url(0) + "/cluster/members/n9", timeout=10)
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="kvraft"'
    assert members() == before


def test_a_json_endpoint_refuses_another_content_type_with_415(cluster):
    resp = requests.post(
        cluster.url(0) + "/kv",
        data=b'{"value": "v"}',
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert resp.status_code == 415 and resp.json()["error"] == "unsupported_media_type"


def test_a_websocket_from_a_foreign_origin_is_a_403_forbidden_origin(cluster):
    resp = requests.get(
        cluster.url(0) + "/watch",
        timeout=10,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Origin": "http://evil.example",
        },
    )
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden_origin"
