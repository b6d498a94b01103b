"""A replica that stops answering (SIGSTOP: its sockets stay open, nothing comes back) costs the
requests bound for it one peer timeout, not one per batch queued behind the first.

The peer stream to each replica carries one batch at a time; the writes that arrive while a
batch is on the wire queue behind it. When that batch times out, the queue fails at once as
"not sent" (and the coordinator hints those writes) instead of going out into the same silence
and waiting a second timeout.
"""

from __future__ import annotations

import threading
import time

from tests.harness.cluster import Cluster, wait_for
from tests.integration.test_client_routing import replicas_of, wait_settled

PEER_TIMEOUT = 1.0
WRITERS = 12


def _timed_puts(c: Cluster, via: int, keys: list[str], value: bytes) -> list[tuple[int, float]]:
    """PUT every key at once (one thread each) through node ``via``: (status, seconds) each."""
    out: list[tuple[int, float]] = [(0, 0.0)] * len(keys)
    start = threading.Barrier(len(keys))

    def put(i: int) -> None:
        start.wait()
        t0 = time.monotonic()
        r = c.http.put(f"{c.url(via)}/kv/{keys[i]}", data=value, timeout=30)
        out[i] = (r.status_code, time.monotonic() - t0)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def test_writes_to_a_blackholed_replica_wait_one_peer_timeout(tmp_path):
    with Cluster(str(tmp_path), env={"KVRAFT_PEER_TIMEOUT": str(PEER_TIMEOUT)}) as c:
        wait_settled(c)
        leader = c.leader()
        via, victim = [i for i in range(3) if i != leader]
        view = c.cluster_view(via)
        pair = sorted([c.nodes[via].id, c.nodes[victim].id])
        keys = [k for k in (f"bh/{i}" for i in range(400)) if sorted(replicas_of(view, k)) == pair]
        keys = keys[:WRITERS]
        assert len(keys) == WRITERS, "keys placed on the coordinator and the victim"
        for k in keys:  # first versions, written while every node answers
            assert c.put(via, k, b"v1").status_code in (200, 201)

        c.pause(victim)
        try:
            results = _timed_puts(c, via, keys, b"v2")
        finally:
            c.resume(victim)

        statuses = [s for s, _ in results]
        slowest = max(t for _, t in results)
        print("statuses", statuses, "seconds", sorted(round(t, 2) for _, t in results))
        assert statuses == [200] * WRITERS  # acknowledged: the local copy and a hint
        # one timeout (1 s) and the write's own time; a second timeout would put it past 2 s
        assert slowest < 2 * PEER_TIMEOUT - 0.25, results

        for k in keys:  # nothing acknowledged is lost: both replicas end with v2
            wait_for(
                lambda k=k: (r := c.get(via, k, r="all")).status_code == 200 and r.content == b"v2",
                30,
                f"{k} to read v2 from both replicas",
            )


def _timed_gets(c: Cluster, via: int, keys: list[str], **params) -> list[tuple[int, bytes, float]]:
    out: list[tuple[int, bytes, float]] = [(0, b"", 0.0)] * len(keys)
    start = threading.Barrier(len(keys))

    def get(i: int) -> None:
        start.wait()
        t0 = time.monotonic()
        r = c.http.get(f"{c.url(via)}/kv/{keys[i]}", params=params, timeout=30)
        out[i] = (r.status_code, r.content, time.monotonic() - t0)

    threads = [threading.Thread(target=get, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def test_quorum_reads_of_a_blackholed_replica_wait_one_peer_timeout(tmp_path):
    with Cluster(str(tmp_path), env={"KVRAFT_PEER_TIMEOUT": str(PEER_TIMEOUT)}) as c:
        wait_settled(c)
        leader = c.leader()
        via, victim = [i for i in range(3) if i != leader]
        view = c.cluster_view(via)
        pair = sorted([c.nodes[via].id, c.nodes[victim].id])
        keys = [k for k in (f"bh/{i}" for i in range(400)) if sorted(replicas_of(view, k)) == pair]
        keys = keys[:WRITERS]
        assert len(keys) == WRITERS, "keys placed on the coordinator and the victim"
        for k in keys:
            assert c.put(via, k, k.encode(), w="all").status_code in (200, 201)
        c.pause(victim)
        try:
            results = _timed_gets(c, via, keys, r="quorum")
            local = _timed_gets(c, via, keys, r="one")  # the coordinator's own copy
        finally:
            c.resume(victim)
        print([(s, round(t, 2)) for s, _, t in results], results[0][1][:200])
        # two replicas (the default), so a quorum is both: the read cannot be served, and says so
        assert [s for s, _, _ in results] == [503] * WRITERS
        assert max(t for _, _, t in results) < 2 * PEER_TIMEOUT - 0.25, results
        assert [(s, b) for s, b, _ in local] == [(200, k.encode()) for k in keys]
        assert max(t for _, _, t in local) < PEER_TIMEOUT / 2, local
