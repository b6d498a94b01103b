"""Anti-entropy, tombstones, re-replication and membership on real clusters with fast rounds."""

from __future__ import annotations

import time

import pytest
import requests

from kvraft.core.antientropy import leaf_of  # noqa: F401 - documents what buckets keys
from kvraft.core.placement import partition_of
from kvraft.hlc import Version
from kvraft.peer.wire import encode_records
from kvraft.storage import Record
from tests.harness.cluster import ADMIN, Cluster, peer_headers, wait_for

FAST = {"KVRAFT_SYNC_INTERVAL": "1", "KVRAFT_DEAD_AFTER": "4"}


@pytest.fixture
def fast_cluster(tmp_path):
    with Cluster(str(tmp_path), env=dict(FAST)) as c:
        yield c


def _all_agree(c: Cluster, keys) -> bool:
    for k in keys:
        ex = c.get(c.running()[0], k, explain="1").json()
        if not ex["agree"]:
            return False
    return True


def _round(c: Cluster) -> int:
    return c.cluster_view(c.running()[0])["sync"]["round"]


def _wait_rounds(c: Cluster, n: int, timeout: float = 30) -> None:
    start = _round(c)
    wait_for(lambda: _round(c) >= start + n, timeout, f"{n} sync rounds")


def _totals(c: Cluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in c.running():
        for k, v in c.cluster_view(i)["sync"]["totals"].items():
            out[k] = out.get(k, 0) + v
    return out


def test_diverged_replicas_converge_within_two_sync_intervals(tmp_path):
    # n1 drops its replication: writes through it land only on n1 (the test-only fault switch)
    with Cluster(str(tmp_path), env=dict(FAST)) as c:
        c.stop(0)
        c.start(0, extra_env={"KVRAFT_TEST_FAULT": "drop_replication"})
        c.wait_ready(nodes=[0])

        def settled():  # (a slow restart can pass dead_after: wait until n1 holds data again)
            view = c.cluster_view()
            return (
                not view["filling"]
                and not view["leaving"]
                and any("n1" in reps for reps in view["partitions"].values())
                and view
            )

        view = wait_for(settled, 60, "n1 to hold filled partitions")
        on_n1 = [p for p, reps in view["partitions"].items() if "n1" in reps]
        keys = [k for k in (f"div/{i}" for i in range(400)) if str(partition_of(k, 64)) in on_n1][
            :60
        ]
        assert keys
        for k in keys:
            assert c.put(0, k, b"only on n1").status_code == 201
        assert not _all_agree(c, keys)
        c.stop(0)  # heal: restart n1 without the fault
        t0 = time.monotonic()
        c.start(0)
        c.wait_ready(nodes=[0])
        wait_for(lambda: _all_agree(c, keys), 2 * 1 + 10, "replicas to agree")
        elapsed = time.monotonic() - t0
        print(f"converged {elapsed:.2f}s after heal (restart included), sync interval 1s")
        for k in keys:
            for i in range(3):
                assert c.get(i, k, r="all").content == b"only on n1"


def test_deleted_keys_never_come_back(fast_cluster):
    c = fast_cluster
    keys = [f"del/{i}" for i in range(40)]
    for k in keys:
        assert c.put(0, k, b"alive").status_code == 201
    victim = next(i for i in range(3) if i != c.leader())
    c.kill(victim)
    others = [i for i in range(3) if i != victim]
    for k in keys:
        assert c.delete(others[0], k).status_code == 200
    # while the victim is away (beyond dead_after), its partitions are re-replicated and
    # the tombstones may be collected; then it comes back with its old live copies
    wait_for(
        lambda: (
            c.cluster_view(others[0])["under_replicated"] == 0
            and not c.cluster_view(others[0])["filling"]
        ),
        40,
        "re-replication",
    )
    wait_for(
        lambda: _totals(c)["tombstones_purged"] >= len(keys),
        30,
        "tombstones collected while the node is away",
    )
    print(f"tombstones purged while the node was away: {_totals(c)['tombstones_purged']}")
    c.start(victim)
    c.wait_ready(nodes=[victim])
    _wait_rounds(c, 3)
    for k in keys:
        for i in range(3):
            r = c.get(i, k, r="all")
            assert r.status_code == 404, (k, c.nodes[i].id, r.text, c.get(i, k, explain="1").json())
    listing = c.http.get(c.url(victim) + "/kv", params={"prefix": "del/"}).json()
    assert listing["keys"] == []


def test_one_round_exchanges_records_in_proportion_to_the_difference(fast_cluster):
    c = fast_cluster
    view = c.cluster_view()
    urls = {n.id: n.url for n in c.nodes}
    n_keys = 100_000
    by_replica: dict[tuple[str, ...], list[str]] = {}
    for i in range(n_keys):
        k = f"bulk/{i:06d}"
        by_replica.setdefault(tuple(view["partitions"][str(partition_of(k, 64))]), []).append(k)
    s = requests.Session()
    # bulk-load both replicas straight through the peer endpoint, stamped like fresh writes
    # (records older than the tombstone watermark that one replica lacks count as deleted)
    for reps, keys in by_replica.items():
        for j in range(0, len(keys), 5000):
            ts = int(time.time() * 1000) << 16
            body = encode_records(
                [
                    Record(k, partition_of(k, 64), Version(ts + n, "n1"), False, b"v")
                    for n, k in enumerate(keys[j : j + 5000])
                ]
            )
            for n in reps:
                assert s.post(
                    urls[n] + "/peer/apply",
                    data=body,
                    headers=peer_headers("POST", "/peer/apply", body),
                ).ok
    _wait_rounds(c, 3)
    before = _totals(c)
    _wait_rounds(c, 2)
    quiet = _totals(c)
    print(
        f"100k keys, 0 differences: {quiet['sync_records'] - before['sync_records']} records, "
        f"{quiet['sync_bytes'] - before['sync_bytes']} bytes per round (all nodes)"
    )
    assert quiet["sync_records"] == before["sync_records"]
    # 10 differences: a newer version on one replica only
    for i in range(10):
        k = f"bulk/{i * 9000:06d}"
        p = partition_of(k, 64)
        rep = view["partitions"][str(p)][0]
        rec = Record(k, p, Version((int(time.time() * 1000) << 16) + i, "n2"), False, b"changed")
        body = encode_records([rec])
        assert s.post(
            urls[rep] + "/peer/apply", data=body, headers=peer_headers("POST", "/peer/apply", body)
        ).ok
    changed = [f"bulk/{i * 9000:06d}" for i in range(10)]
    wait_for(lambda: _all_agree(c, changed), 15, "the 10 differences to be synced")
    _wait_rounds(c, 2)  # and a quiet round after, fully reported
    after = _totals(c)
    records = after["sync_records"] - quiet["sync_records"]
    nbytes = after["sync_bytes"] - quiet["sync_bytes"]
    print(f"100k keys, 10 differences: {records} records, {nbytes} bytes exchanged")
    assert records == 10
    assert nbytes < 200_000
    for i in range(10):
        assert c.get(1, f"bulk/{i * 9000:06d}", r="all").content == b"changed"


def test_dead_node_partitions_are_re_replicated(fast_cluster):
    c = fast_cluster
    data = {f"rr/{i}": b"r%d" % i for i in range(150)}
    for i, (k, v) in enumerate(data.items()):
        assert c.put(i % 3, k, v).status_code == 201
    # let the tombstone watermarks pass these writes (margin 4 s, then two rounds): the refill
    # must copy them all, not take the new replica's lack of them for deletions
    _wait_rounds(c, 8)
    victim = next(i for i in range(3) if i != c.leader())
    vid = c.nodes[victim].id
    c.kill(victim)
    t0 = time.monotonic()
    survivor = next(i for i in range(3) if i != victim)

    def healed():
        view = c.cluster_view(survivor)
        return (
            all(vid not in reps for reps in view["partitions"].values())
            and not view["filling"]
            and view["under_replicated"] == 0
        )

    wait_for(healed, 60, "partitions re-replicated away from the dead node")
    print(
        f"re-replicated {len(data)} keys in {time.monotonic() - t0:.1f}s "
        f"(dead_after {FAST['KVRAFT_DEAD_AFTER']}s)"
    )
    view = c.cluster_view(survivor)
    assert all(len(reps) == 2 for reps in view["partitions"].values())
    for k, v in data.items():
        r = c.get(survivor, k, r="all")
        assert r.status_code == 200 and r.content == v
        assert c.get(survivor, k, explain="1").json()["agree"]


def test_add_a_fourth_node_then_remove_an_original(fast_cluster):
    c = fast_cluster
    data = {f"mem/{i}": b"m%d" % i for i in range(120)}
    for i, (k, v) in enumerate(data.items()):
        assert c.put(i % 3, k, v).status_code == 201
    new = c.add_node(join_via=1)
    c.wait_ready(nodes=[new])

    def owns(view, node_id):
        return sum(node_id in reps for reps in view["partitions"].values())

    def balanced():
        view = c.cluster_view(0)
        counts = [owns(view, n.id) for n in c.nodes]
        return not view["filling"] and not view["leaving"] and max(counts) - min(counts) <= 1

    errors = []
    deadline = time.monotonic() + 60
    while not balanced() and time.monotonic() < deadline:
        for k, v in list(data.items())[:20]:  # reads keep working during the move
            r = c.get(new, k)
            if r.status_code != 200 or r.content != v:
                errors.append((k, r.status_code))
    assert balanced(), c.cluster_view(0)
    assert not errors
    print(
        "partitions per node after adding n4:",
        {n.id: owns(c.cluster_view(0), n.id) for n in c.nodes},
    )
    leader = c.leader()
    gone = next(i for i in range(3) if i != leader)
    r = c.http.delete(f"{c.url(new)}/cluster/members/{c.nodes[gone].id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    wait_for(
        lambda: c.nodes[gone].id not in {n["id"] for n in c.cluster_view(leader)["nodes"]},
        90,
        "the removed node to leave the cluster",
    )
    view = c.cluster_view(leader)
    assert owns(view, c.nodes[gone].id) == 0
    c.stop(gone)
    for k, v in data.items():
        r = c.get(new, k, r="all")
        assert r.status_code == 200 and r.content == v, k
