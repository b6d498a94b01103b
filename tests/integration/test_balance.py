"""Load balancing at the leader: forwarding by policy, redirects, and dead nodes avoided."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from tests.harness.cluster import Cluster, wait_for


def _wait_serving(c: Cluster, leader: int) -> None:
    """Until the leader sees every node it finds alive ready to serve (pinged since start)."""

    def settled():
        nodes = c.cluster_view(leader)["nodes"]
        return all(x["serving"] for x in nodes if x["alive"])

    wait_for(settled, 10, "the leader to see every live node ready")


def _served_by(c: Cluster, leader: int, n: int, **params) -> Counter:
    _wait_serving(c, leader)
    served = Counter()
    url = c.url(leader)
    for i in range(n):
        if i % 2:
            r = c.http.put(f"{url}/kv/lb-{i}", data=b"x", params=params, timeout=10)
            assert r.status_code in (200, 201), r.text
        else:
            r = c.http.get(f"{url}/kv", params={"prefix": "lb-", "limit": 5, **params}, timeout=10)
            assert r.status_code == 200, r.text
        node = r.headers["X-Kvraft-Node"]
        if node != c.nodes[leader].id:
            assert r.headers["X-Kvraft-Via"] == c.nodes[leader].id
        served[node] += 1
    return served


@pytest.mark.parametrize("policy", ["least-loaded", "round-robin"])  # random: unit-tested
def test_requests_to_the_leader_spread_over_every_node(tmp_path, policy):
    with Cluster(str(tmp_path), env={"KVRAFT_BALANCE": policy}) as c:
        leader = c.leader()
        served = _served_by(c, leader, 300)
        print(policy, dict(served))
        assert set(served) == {"n1", "n2", "n3"}
        if policy != "random":  # sequential requests: every node gets its turn
            assert max(served.values()) - min(served.values()) <= 3
        else:
            assert min(served.values()) >= 50


def test_dead_node_is_not_chosen_and_every_request_succeeds(fresh_cluster):
    c = fresh_cluster
    leader = c.leader()
    victim = next(i for i in range(3) if i != leader)
    c.kill(victim)
    served = _served_by(c, leader, 300)
    assert c.nodes[victim].id not in served
    assert sum(served.values()) == 300 and len(served) == 2


def test_paused_node_stops_being_chosen_within_seconds(fresh_cluster):
    c = fresh_cluster
    leader = c.leader()
    victim = next(i for i in range(3) if i != leader)
    c.pause(victim)
    try:
        vid = c.nodes[victim].id
        wait_for(
            lambda: not {n["id"]: n for n in c.cluster_view(leader)["nodes"]}[vid]["alive"],
            5,
            "the paused node marked down",
        )
        served = _served_by(c, leader, 60)
        assert vid not in served and sum(served.values()) == 60
    finally:
        c.resume(victim)


def test_redirect_answers_307_to_the_chosen_node(cluster):
    leader = cluster.leader()
    _wait_serving(cluster, leader)
    cluster.put(0, "redir", b"r")
    seen = set()
    for _ in range(9):
        r = cluster.http.get(
            cluster.url(leader) + "/kv/redir", params={"redirect": "1"}, allow_redirects=False
        )
        if r.status_code == 307:
            seen.add(r.headers["Location"].split("/kv/")[0])
            follow = cluster.http.get(r.headers["Location"])
            assert follow.content == b"r"
        else:
            assert r.status_code == 200 and r.headers["X-Kvraft-Node"] == cluster.nodes[leader].id
    assert len(seen) >= 1


def test_least_loaded_avoids_a_node_busy_with_its_own_clients(cluster):
    """The leader cannot see requests that reach other nodes directly; each node tells its load
    in its ping answers. Requests held open on one node keep the leader's choice off it."""
    leader = cluster.leader()
    busy = next(i for i in range(3) if i != leader)
    busy_id = cluster.nodes[busy].id
    host, port = cluster.nodes[busy].http.rsplit(":", 1)
    held = []
    try:
        for i in range(3):  # PUT heads whose bodies never come: in progress on that node
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(
                f"PUT /kv/held-{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n".encode()
            )
            held.append(s)

        def load_seen(value):
            def check():
                view = {n["id"]: n for n in cluster.cluster_view(leader)["nodes"]}
                return view[busy_id]["load"] == value

            return check

        wait_for(load_seen(3), 10, "the leader to see the held requests in the busy node's load")
        served = _served_by(cluster, leader, 60)
        assert busy_id not in served, served
        assert sum(served.values()) == 60 and len(served) == 2
    finally:
        for s in held:
            s.close()
    wait_for(load_seen(0), 10, "the busy node's load back to 0 once the requests are gone")
    served = _served_by(cluster, leader, 30)
    assert busy_id in served and len(served) == 3
