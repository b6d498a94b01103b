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


def _at_once(c: Cluster, via: int, keys: list[str], method: str, **kw) -> list[tuple]:
    """One request per key, all at once (a thread each), through node ``via``: (status, body,
    seconds) each."""
    out: list[tuple] = [(0, b"", 0.0)] * len(keys)
    start = threading.Barrier(len(keys))

    def send(i: int) -> None:
        start.wait()
        t0 = time.monotonic()
        r = c.http.request(method, f"{c.url(via)}/kv/{keys[i]}", timeout=30, **kw)
        out[i] = (r.status_code, r.content, time.monotonic() - t0)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def _pair(c: Cluster) -> tuple[int, int, list[str]]:
    """A coordinator and a victim (neither the leader) and WRITERS keys placed on both."""
    leader = c.leader()
    via, victim = [i for i in range(3) if i != leader]
    view = c.cluster_view(via)
    pair = sorted([c.nodes[via].id, c.nodes[victim].id])
    keys = [k for k in (f"bh/{i}" for i in range(400)) if sorted(replicas_of(view, k)) == pair]
    assert len(keys) >= WRITERS, "keys placed on the coordinator and the victim"
    return via, victim, keys[:WRITERS]


def test_writes_to_a_blackholed_replica_wait_one_peer_timeout(tmp_path):
    with Cluster(str(tmp_path), env={"KVRAFT_PEER_TIMEOUT": str(PEER_TIMEOUT)}) as c:
        wait_settled(c)
        via, victim, keys = _pair(c)
        for k in keys:  # first versions, written while every node answers
            assert c.put(via, k, b"v1").status_code in (200, 201)

        c.pause(victim)
        try:
            results = _at_once(c, via, keys, "PUT", data=b"v2")
        finally:
            c.resume(victim)

        statuses = [s for s, _, _ in results]
        slowest = max(t for _, _, t in results)
        print("statuses", statuses, "seconds", sorted(round(t, 2) for _, _, t in results))
        assert statuses == [200] * WRITERS  # acknowledged: the local copy and a hint
        # one timeout (1 s) and the write's own time; a second timeout would put it past 2 s
        assert slowest < 2 * PEER_TIMEOUT - 0.25, results

        for k in keys:  # nothing acknowledged is lost: both replicas end with v2
            wait_for(
                lambda k=k: (r := c.get(via, k, r="all")).status_code == 200 and r.content == b"v2",
                30,
                f"{k} to read v2 from both replicas",
            )


def test_quorum_reads_of_a_blackholed_replica_wait_one_peer_timeout(tmp_path):
    with Cluster(str(tmp_path), env={"KVRAFT_PEER_TIMEOUT": str(PEER_TIMEOUT)}) as c:
        wait_settled(c)
        via, victim, keys = _pair(c)
        for k in keys:
            assert c.put(via, k, k.encode(), w="all").status_code in (200, 201)
        c.pause(victim)
        try:
            results = _at_once(c, via, keys, "GET", params={"r": "quorum"})
            local = _at_once(c, via, keys, "GET", params={"r": "one"})  # the coordinator's own copy
        finally:
            c.resume(victim)
        print([(s, round(t, 2)) for s, _, t in results], results[0][1][:200])
        # two replicas (the default), so a quorum is both: the read cannot be served, and says so
        assert [s for s, _, _ in results] == [503] * WRITERS
        assert max(t for _, _, t in results) < 2 * PEER_TIMEOUT - 0.25, results
        assert [(s, b) for s, b, _ in local] == [(200, k.encode()) for k in keys]
        assert max(t for _, _, t in local) < PEER_TIMEOUT / 2, local
