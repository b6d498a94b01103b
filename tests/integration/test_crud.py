"""CRUD, listing, placement and bad input against a real 3-node cluster (shared, never killed)."""

from __future__ import annotations

import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests

from tests.harness.cluster import Cluster, quote_key

MiB = 1 << 20


def assert_served(cluster, asked: int, r) -> None:
    """The node asked served the request, or (the leader balancing) says who did."""
    asked_id = cluster.nodes[asked].id
    if "X-Kvraft-Via" in r.headers:
        assert r.headers["X-Kvraft-Via"] == asked_id
        assert r.headers["X-Kvraft-Node"] in {n.id for n in cluster.nodes}
    else:
        assert r.headers["X-Kvraft-Node"] == asked_id


def test_crud_through_every_node(cluster):
    for writer in range(3):
        key = f"crud/{writer}"
        r = cluster.put(writer, key, f"v{writer}".encode())
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["key"] == key and body["acks"] == 2 and len(body["replicas"]) == 2
        assert_served(cluster, writer, r)
        for reader in range(3):
            g = cluster.get(reader, key)
            assert g.status_code == 200 and g.content == f"v{writer}".encode()
            assert g.headers["X-Kvraft-Version"] == body["version"]
            assert g.headers["ETag"] == f'"{body["version"]}"'
        r2 = cluster.put((writer + 1) % 3, key, b"replaced")
        assert r2.status_code == 200 and r2.json()["version"] > body["version"]
        assert cluster.get(writer, key).content == b"replaced"
        d = cluster.delete((writer + 2) % 3, key)
        assert d.status_code == 200 and d.json()["key"] == key
        for reader in range(3):
            missing = cluster.get(reader, key, r="all")
            assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert cluster.delete(writer, key).status_code == 404


@pytest.mark.parametrize(
    "name,value",
    [
        ("binary", bytes(range(256)) * 4),
        ("empty", b""),
        ("one-mib", os.urandom(MiB)),
    ],
)
def test_values_are_kept_byte_for_byte(cluster, name, value):
    assert cluster.put(0, f"bytes/{name}", value).status_code == 201
    for i in range(3):
        got = cluster.get(i, f"bytes/{name}", r="all")
        assert got.status_code == 200 and got.content == value


def test_keys_with_slashes_spaces_and_unicode(cluster):
    # "." and ".." are dot-segments that HTTP clients remove from paths (RFC 3986 5.2.4)
    for key in ["a/b/c", "with space", "ünïcødé/✓", "a/../b", "?&=#%"]:
        assert cluster.put(1, key, key.encode()).status_code in (200, 201), key
        assert cluster.get(2, key).content == key.encode()


def test_listing_pages_through_sorted_keys(cluster):
    keys = [f"list/{i:03d}" for i in range(57)]
    for i, k in enumerate(keys):
        assert cluster.put(i % 3, k, b"x").status_code == 201
    cluster.delete(0, "list/010")
    expected = [k for k in keys if k != "list/010"]
    seen, after = [], None
    for _ in range(20):
        params = {"prefix": "list/", "limit": 10}
        if after:
            params["after"] = after
        page = cluster.http.get(cluster.url(len(seen) % 3) + "/kv", params=params).json()
        assert len(page["keys"]) <= 10
        seen += page["keys"]
        after = page["next"]
        if after is None:
            break
    assert seen == expected
    other = cluster.http.get(cluster.url(0) + "/kv", params={"prefix": "list/05"}).json()
    assert other == {"keys": [f"list/05{i}" for i in range(7)], "next": None}


def test_post_creates_a_new_key(cluster):
    r = cluster.http.post(cluster.url(2) + "/kv", json={"value": "hello ✓"})
    assert r.status_code == 201
    key = r.json()["key"]
    assert cluster.get(0, key).content == "hello ✓".encode()
    r2 = cluster.http.post(cluster.url(2) + "/kv", json={"value": "again"})
    assert r2.json()["key"] != key


def test_every_key_is_stored_on_exactly_replication_factor_nodes(cluster):
    keys = [f"placed/{i}" for i in range(40)]
    for i, k in enumerate(keys):
        assert cluster.put(i % 3, k, b"p").status_code == 201
    view = cluster.cluster_view()
    holders = {k: set() for k in keys}
    for node in cluster.nodes:  # read each node's real SQLite file
        db = sqlite3.connect(f"file:{node.data_dir}/store.db?mode=ro", uri=True)
        try:
            for (k,) in db.execute("SELECT key FROM records WHERE key LIKE 'placed/%'"):
                holders[k].add(node.id)
        finally:
            db.close()
    for k in keys:
        explain = cluster.get(0, k, explain="1").json()
        assert (
            holders[k]
            == set(explain["replicas"])
            == set(view["partitions"][str(explain["partition"])])
        ), k
        assert len(holders[k]) == 2 and explain["agree"]


def test_cluster_view_health_ready_metrics(cluster):
    view = cluster.cluster_view(1)
    assert view["replication_factor"] == 2 and len(view["partitions"]) == 64
    assert {n["id"] for n in view["nodes"]} == {"n1", "n2", "n3"}
    assert sum(n["is_leader"] for n in view["nodes"]) == 1
    assert view["leader"] in {"n1", "n2", "n3"} and view["raft"]["term"] >= 1
    assert all(n["alive"] for n in view["nodes"])
    assert cluster.http.get(cluster.url(0) + "/health").json()["status"] == "ok"
    assert cluster.http.get(cluster.url(0) + "/ready").status_code == 200
    metrics = cluster.http.get(cluster.url(0) + "/metrics")
    assert metrics.status_code == 200
    assert 'kvraft_http_requests_total{method="GET",route="/health",status="200"}' in metrics.text
    assert "kvraft_raft_term" in metrics.text


def _snapshot(cluster):
    keys = cluster.http.get(cluster.url(0) + "/kv", params={"limit": 1000}).json()["keys"]
    return {k: cluster.get(0, k).content for k in keys}


BAD = [
    ("PUT", "/kv/" + quote("a\x01b", safe=""), {}, b"x", 400, "bad_request"),
    ("PUT", "/kv/" + "k" * 1025, {}, b"x", 400, "bad_request"),
    ("PUT", "/kv/", {}, b"x", 400, "bad_request"),
    ("PUT", "/kv/big", {}, b"x" * (MiB + 1), 413, "too_large"),
    ("PUT", "/kv/lvl", {"w": "most"}, b"x", 400, "bad_request"),
    ("GET", "/kv/lvl", {"r": "some"}, None, 400, "bad_request"),
    ("GET", "/kv", {"limit": "lots"}, None, 400, "bad_request"),
    ("GET", "/kv", {"limit": "0"}, None, 400, "bad_request"),
    ("GET", "/nope", {}, None, 404, "not_found"),
    ("PATCH", "/kv/a", {}, b"x", 405, "method_not_allowed"),
    ("POST", "/cluster", {}, b"", 405, "method_not_allowed"),
    ("POST", "/kv", {}, b"{not json", 400, "bad_request"),
    ("POST", "/kv", {}, b'{"value": 5}', 400, "bad_request"),
    ("POST", "/kv", {}, b'["value"]', 400, "bad_request"),
    ("POST", "/kv", {}, json.dumps({"value": "x" * (MiB + 1)}).encode(), 413, "too_large"),
    ("POST", "/peer/apply", {}, b"", 403, "forbidden"),
]


@pytest.mark.parametrize("method,path,params,body,status,code", BAD)
def test_bad_input_is_rejected_with_json_and_changes_nothing(
    cluster, method, path, params, body, status, code
):
    before = _snapshot(cluster)
    headers = {"Content-Type": "application/json"} if method == "POST" else {}
    r = cluster.http.request(
        method, cluster.url(1) + path, params=params, data=body, headers=headers
    )
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]
    assert_served(cluster, 1, r)
    assert _snapshot(cluster) == before


def test_oversized_chunked_upload_is_refused(cluster):
    def chunks():
        for _ in range(17):
            yield b"z" * (64 * 1024)

    r = cluster.http.put(cluster.url(0) + "/kv/chunked", data=chunks())
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert cluster.get(0, "chunked").status_code == 404
    ok = cluster.http.put(cluster.url(0) + "/kv/chunked", data=iter([b"a", b"b"]))
    assert ok.status_code == 201 and cluster.get(1, "chunked").content == b"ab"


def test_write_levels(cluster):
    for w in ("one", "quorum", "all"):
        r = cluster.put(0, f"levels/{w}", w.encode(), w=w)
        assert r.status_code == 201 and r.json()["acks"] == 2
        for level in ("one", "quorum", "all"):
            assert cluster.get(2, f"levels/{w}", r=level).content == w.encode()


def test_read_repair_fixes_a_stale_replica(cluster):
    key = "repair/me"
    first = cluster.put(0, key, b"old").json()
    replicas = first["replicas"]
    # make one replica stale: write a newer version straight to the other replica's peer endpoint
    from kvraft.hlc import Version
    from kvraft.peer.wire import encode_records
    from kvraft.storage import Record

    newer = Version(Version.decode(first["version"]).ts + 1, "n9")
    target = next(n for n in cluster.nodes if n.id == replicas[0])
    from tests.harness.cluster import peer_headers

    body = encode_records([Record(key, 0, newer, False, b"new")])
    r = requests.post(
        target.url + "/peer/apply", headers=peer_headers("POST", "/peer/apply", body), data=body
    )
    assert r.ok
    explain = cluster.get(0, key, explain="1").json()
    assert not explain["agree"]
    assert cluster.get(1, key, r="all").content == b"new"
    from tests.harness.cluster import wait_for

    wait_for(lambda: cluster.get(0, key, explain="1").json()["agree"], 5, "read repair")


def test_concurrent_reads_of_large_values_from_a_node_without_them(tmp_path):
    """Reads of keys a node does not hold go to a replica in batches over one stream; with
    16 MiB values, the five reads that queue behind the first would be an 80 MiB answer:
    batches stay within their limit."""
    big = 16 << 20
    with Cluster(str(tmp_path), env={"KVRAFT_MAX_VALUE_BYTES": str(big)}) as c:
        reader = next(i for i in range(3) if i != c.leader())  # no balancing: it coordinates
        others = [n.id for j, n in enumerate(c.nodes) if j != reader]
        placed: dict[str, bytes] = {}
        i = 0
        while len(placed) < 6:  # keys the reader does not hold, all read first from one peer
            key = f"big/{i}"
            i += 1
            if c.get(reader, key, explain="1").json()["replicas"] == others:
                placed[key] = bytes([len(placed)]) * (big - len(placed))
        for key, value in placed.items():
            assert c.put(reader, key, value, w="all").status_code == 201
        with ThreadPoolExecutor(len(placed)) as pool:
            got = list(
                pool.map(
                    lambda k: requests.get(f"{c.url(reader)}/kv/{quote_key(k)}", timeout=60), placed
                )
            )
        for key, resp in zip(placed, got, strict=True):
            assert resp.status_code == 200, resp.text[:200]
            assert resp.headers["X-Kvraft-Node"] == c.nodes[reader].id, key
            assert resp.content == placed[key], key
