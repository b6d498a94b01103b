"""The partition-aware client against a real 3-node cluster: every get/put/delete lands on a
replica of its key and nothing is forwarded (the nodes' own counters say so); ``smart=False``
sends everything to the listed node as before (which forwards, or reads through a peer); and a
dead replica, the re-replication that follows and a fourth node joining do not break the client:
it fetches the map again and still reads the last acknowledged overwrite and delete.
"""

from __future__ import annotations

import re

import pytest
import requests

from kvraft.client import Client, NotFound
from kvraft.core.placement import partition_of
from tests.harness.cluster import Cluster, wait_for

FAST = {"KVRAFT_SYNC_INTERVAL": "1", "KVRAFT_DEAD_AFTER": "4"}
COUNTERS = ("forwards", "balanced_local", "read_batches", "reads", "writes")
_SAMPLE = re.compile(r'^kvraft_(\w+?)(?:_total)?\{node="([^"]+)"\} ([0-9.e+-]+)$')


def counters(c: Cluster) -> dict[str, float]:
    """The cluster-wide sums of the node counters in COUNTERS (from each node's /metrics)."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for i in c.running():
        text = requests.get(c.url(i) + "/metrics", timeout=5).text
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m and m.group(1) in out:
                out[m.group(1)] += float(m.group(3))
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def wait_settled(c: Cluster, timeout: float = 30) -> None:
    """Until every running node sees every member alive and serving (past the first pings)."""

    def settled() -> bool:
        return all(
            all(n["alive"] and n["serving"] for n in c.cluster_view(i)["nodes"])
            for i in c.running()
        )

    wait_for(settled, timeout, "every node to see every member serving")


def replicas_of(view: dict, key: str) -> list[str]:
    parts = view["partitions"]
    return parts[str(partition_of(key, len(parts)))]


def test_requests_land_on_a_replica_of_their_key_and_nothing_is_forwarded(cluster):
    wait_settled(cluster)
    urls = [cluster.url(i) for i in range(cluster.n)]
    view = cluster.cluster_view(0)
    keys = [f"route/{i}" for i in range(60)]
    with Client(urls) as c:
        assert c.smart
        before = counters(cluster)
        for k in keys:
            res = c.put(k, k.encode())
            assert res.node in res.replicas and res.node != view["leader"], (k, res)
            assert sorted(res.replicas) == sorted(replicas_of(view, k))
        for k in keys:
            got = c.get(k)
            assert got.value == k.encode() and got.node in replicas_of(view, k), (k, got.node)
        for k in keys[:10]:
            assert c.delete(k).node in replicas_of(view, k)
            with pytest.raises(NotFound):
                c.get(k)
        moved = delta(before, counters(cluster))
        assert c.router is not None
        stats = c.router.stats()
    assert moved["forwards"] == 0 and moved["balanced_local"] == 0, moved
    # every read was answered from the replica's own store: no read went to a peer
    # (a delete reads the other replica for the version it deletes: one peer read each)
    assert moved["read_batches"] <= 10, moved
    # the counters saw this test's requests (a retried one would count twice)
    assert moved["reads"] >= len(keys) + 10 and moved["writes"] >= len(keys) + 10, moved
    assert stats["fetches"] == 1 and stats["misses"] == {}, stats


def test_without_smart_routing_requests_go_to_the_listed_node_as_before(cluster):
    leader = cluster.leader()
    assert leader is not None
    follower = next(i for i in range(cluster.n) if i != leader)
    view = cluster.cluster_view(0)
    fid = cluster.nodes[follower].id
    keys = [f"dumb/{i}" for i in range(30)]
    elsewhere = [k for k in keys if fid not in replicas_of(view, k)]
    assert elsewhere  # a third of the keys, with 3 nodes and 2 replicas
    with Client([cluster.url(follower)], smart=False) as c:
        for k in keys:
            assert c.put(k, b"x").node == fid  # the listed node coordinates every write
        before = counters(cluster)
        for k in keys:
            assert c.get(k).node == fid
        assert c.router is None and c.last_node == cluster.url(follower)
    moved = delta(before, counters(cluster))
    assert moved["read_batches"] >= len(elsewhere), moved  # keys it does not hold: via a peer
    with Client([cluster.url(leader)], smart=False) as c:
        before = counters(cluster)
        for k in keys:
            c.get(k)
    moved = delta(before, counters(cluster))
    # every request that reaches the leader is balanced: forwarded, or served by itself
    assert moved["forwards"] + moved["balanced_local"] == len(keys), moved


def test_a_dead_replica_and_a_new_node_do_not_break_the_client(tmp_path):
    with Cluster(str(tmp_path), env=FAST) as cluster:
        wait_settled(cluster)
        urls = [cluster.url(i) for i in range(cluster.n)]
        leader = cluster.leader()
        assert leader is not None
        victim = next(i for i in range(cluster.n) if i != leader)
        vid = cluster.nodes[victim].id
        keys = [f"heal/{i}" for i in range(40)]
        expect: dict[str, bytes | None] = {}
        with Client(urls, timeout=5) as c:
            for k in keys:
                c.put(k, b"v1")
            for k in keys:  # the last acknowledged overwrite and delete are what must stay
                c.put(k, b"v2:" + k.encode())
                expect[k] = b"v2:" + k.encode()
            for k in keys[::4]:
                c.delete(k)
                expect[k] = None
            epoch = c.router.map.epoch

            cluster.kill(victim)
            check(c, expect)  # at once: the dead replica is skipped, reads still answer
            assert c.router.stats()["misses"].get("unreachable", 0) >= 1
            for k in keys[1::4]:  # writes too, while the replica is down
                c.put(k, b"v3")
                expect[k] = b"v3"
            check(c, expect)

            def healed() -> bool:
                view = cluster.cluster_view(leader)
                return all(vid not in r for r in view["partitions"].values()) and not (
                    view["filling"] or view["under_replicated"]
                )

            wait_for(healed, 60, f"partitions re-replicated away from {vid}")
            view = cluster.cluster_view(leader)
            assert view["partition_epoch"] > epoch
            # the client learns the new map from the answers (a write's replicas differ from
            # its map, or a cooldown ends and the dead node is refused again)
            wait_for(
                lambda: touch(c, keys) and c.router.map.epoch == view["partition_epoch"],
                30,
                "the client to fetch the new map",
                interval=0.2,
            )
            check(c, expect)
            for k in keys[2::4]:
                res = c.put(k, b"v4")
                expect[k] = b"v4"
                assert vid not in res.replicas and res.node in res.replicas

            new = cluster.add_node(join_via=leader)
            cluster.wait_ready(nodes=[new], timeout=60)
            nid = cluster.nodes[new].id

            def holds_partitions() -> bool:
                view = cluster.cluster_view(leader)
                return (
                    not view["filling"]
                    and not view["leaving"]
                    and any(nid in r for r in view["partitions"].values())
                )

            wait_for(holds_partitions, 90, f"{nid} to hold partitions")
            view = cluster.cluster_view(leader)
            on_new = [k for k in keys if nid in replicas_of(view, k)]
            assert on_new, view["partitions"]

            def routed_to_new() -> bool:
                c.put(on_new[0], expect[on_new[0]] or b"v5")
                expect[on_new[0]] = expect[on_new[0]] or b"v5"
                return c.router.map.epoch == cluster.cluster_view(leader)["partition_epoch"]

            wait_for(routed_to_new, 30, "the client to fetch the map with the new node")
            hits = set()
            for k in on_new * 2:  # twice: round-robin between two replicas that are not leader
                expect[k] = expect[k] or b"v5"
                hits.add(c.put(k, expect[k]).node)
            assert nid in hits, hits  # the keys of the new node go to it
            check(c, expect)
            print("client routing:", c.router.stats(), "keys on", nid, len(on_new), hits)


def touch(c: Client, keys: list[str]) -> bool:
    """A few requests, so that the client sees the answers that reveal a changed map."""
    for k in keys[:8]:
        try:
            c.get(k)
        except NotFound:
            pass
    return True


def check(c: Client, expect: dict[str, bytes | None]) -> None:
    for k, v in expect.items():
        if v is None:
            with pytest.raises(NotFound):
                c.get(k)
        else:
            assert c.get(k).value == v, k


def test_kv_answers_carry_the_map_epoch_the_node_goes_by(cluster):
    """Every /kv/<key> answer says the partition map epoch of the node that served it (the fast
    path's GET and PUT, and Flask's DELETE, ?explain and 404), so a partition-aware client sees
    a move without waiting for its map's ttl; other answers do not carry it."""
    wait_settled(cluster)
    url = cluster.url(0)
    first = cluster.cluster_view(0)["partition_epoch"]
    answers = [
        requests.put(f"{url}/kv/epoch-1", data=b"v", timeout=10),
        requests.get(f"{url}/kv/epoch-1", timeout=10),
        requests.get(f"{url}/kv/epoch-1", params={"explain": "1"}, timeout=10),
        requests.delete(f"{url}/kv/epoch-1", timeout=10),
        requests.get(f"{url}/kv/epoch-1", timeout=10),
    ]
    last = cluster.cluster_view(0)["partition_epoch"]
    assert [r.status_code for r in answers] == [201, 200, 200, 200, 404]
    for r in answers:
        got = r.headers.get("X-Kvraft-Map-Epoch")
        assert got is not None and got.isdigit(), (r.request.method, r.url, r.headers)
        assert first <= int(got) <= last
    assert "X-Kvraft-Map-Epoch" not in requests.get(f"{url}/cluster", timeout=10).headers
