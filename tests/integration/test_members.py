"""Membership changes through the public API, on a real cluster: ``POST /cluster/members`` adds a
fourth node that then really joins (it registers, is seen alive, gets partitions and serves
data), bad requests are refused and change nothing, ``DELETE /cluster/members/<id>`` drains and
removes it, and refusals of the cluster's state are 409s. Every answer is checked against the
OpenAPI document with schemathesis' checks (the fuzz only sends these operations invalid input,
see tests/harness/apifuzz.py).
"""

from __future__ import annotations

import json
import os

import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import document
from tests.harness.cluster import Cluster, NodeProc, free_ports, wait_for

TOKEN = "members-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCHEMA = schemathesis.openapi.from_dict(json.loads(json.dumps(document())))
FAST = {"KVRAFT_SYNC_INTERVAL": "1", "KVRAFT_TOKEN": TOKEN, "KVRAFT_ADMIN_TOKEN": TOKEN}


def _checked(resp: requests.Response, method: str, path: str, **case_kw) -> requests.Response:
    SCHEMA[path][method].Case(**case_kw).validate_response(resp, checks=CHECKS)
    return resp


def _add(c: Cluster, via: int, body: dict) -> requests.Response:
    resp = requests.post(f"{c.url(via)}/cluster/members", json=body, headers=AUTH, timeout=30)
    return _checked(
        resp, "POST", "/cluster/members", body=body, headers={"Content-Type": "application/json"}
    )


def _remove(c: Cluster, via: int, node_id: str) -> requests.Response:
    resp = requests.delete(f"{c.url(via)}/cluster/members/{node_id}", headers=AUTH, timeout=30)
    return _checked(
        resp, "DELETE", "/cluster/members/{node_id}", path_parameters={"node_id": node_id}
    )


def _raft_members(c: Cluster, i: int) -> list[str]:
    return sorted(n["raft"] for n in c.cluster_view(i)["nodes"] if n["member"])


def test_a_fourth_node_joins_through_post_cluster_members_and_leaves_through_delete(tmp_path):
    c = Cluster(str(tmp_path), env=FAST)
    c.http.headers.update(AUTH)
    with c:
        leader = c.leader()
        follower = next(i for i in range(3) if i != leader)
        data = {f"members/{i}": b"v%d" % i for i in range(60)}
        for i, (k, v) in enumerate(data.items()):
            assert c.put(i % 3, k, v).status_code == 201
        before = _raft_members(c, leader)

        http, raft = free_ports(2)
        new = {"id": "n4", "http": f"127.0.0.1:{http}", "raft": f"127.0.0.1:{raft}"}
        # refused, and nothing changes: a bad id, a bad port, a missing field, a taken id or
        # Raft address
        bad = [
            ({**new, "id": "n 4"}, 400),
            ({**new, "raft": "127.0.0.1:0"}, 400),
            ({**new, "http": "127.0.0.1:65536"}, 400),
            ({"id": "n4", "http": new["http"]}, 400),
            ({**new, "id": "n1"}, 409),
            ({**new, "raft": c.nodes[1].raft}, 409),
        ]
        for body, status in bad:
            resp = _add(c, follower, body)
            assert resp.status_code == status, (body, resp.text)
            assert resp.json()["error"] == ("bad_request" if status == 400 else "conflict")
        assert _raft_members(c, leader) == before

        # through a follower, which forwards it to the Raft leader; adding twice is a no-op
        for _ in range(2):
            resp = _add(c, follower, new)
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"added": "n4", "raft": new["raft"]}
        c.nodes.append(NodeProc("n4", new["http"], new["raft"], os.path.join(c.root, "n4")))
        c.n += 1
        c.start(3)  # with --peers: the three members' Raft addresses
        c.wait_ready(nodes=[3], timeout=60)
        c.wait_alive(3, timeout=30)

        def owns_partitions() -> bool:
            view = c.cluster_view(leader)
            nodes = {n["id"]: n for n in view["nodes"]}
            return (
                nodes.get("n4", {}).get("member")
                and not view["filling"]
                and sum("n4" in reps for reps in view["partitions"].values()) > 0
            )

        wait_for(owns_partitions, 90, "n4 to hold partitions")
        for k, v in data.items():  # served through the new node, every value
            r = c.get(3, k, r="all")
            assert r.status_code == 200 and r.content == v, k
        assert c.put(3, "members/through-n4", b"x").status_code == 201

        # removals the cluster's state refuses: the leader itself; an unknown id is 404
        assert _remove(c, follower, c.nodes[leader].id).status_code == 409
        resp = _remove(c, follower, "nope")
        assert resp.status_code == 404 and resp.json()["error"] == "not_found"
        assert not c.cluster_view(leader)["removing"]

        resp = _remove(c, follower, "n4")
        assert resp.status_code == 200 and resp.json() == {"removing": "n4"}
        wait_for(
            lambda: "n4" not in {n["id"] for n in c.cluster_view(leader)["nodes"]},
            90,
            "n4 to be drained and removed",
        )
        assert _raft_members(c, leader) == before
        for k, v in data.items():
            r = c.get(leader, k, r="all")
            assert r.status_code == 200 and r.content == v, k

        # removing one of three leaves two for replication factor 2; a second would leave one
        others = [i for i in range(3) if i != leader]
        assert _remove(c, leader, c.nodes[others[0]].id).status_code == 200
        resp = _remove(c, leader, c.nodes[others[1]].id)
        assert resp.status_code == 409 and "would leave 1" in resp.json()["message"]
