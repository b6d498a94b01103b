"""Writers contending for one key: through one coordinator they go one at a time, so they do
not push each other through the stampings of the forward-only version rule (before, 16
connections writing one key got 10-35 % of their PUTs refused as "concurrent writers"); through
different coordinators, a write stamped again goes a lead above the version that beat it, past
what the others stamp meanwhile."""

from __future__ import annotations

import threading
import time

from kvraft import peer as m
from kvraft.coordinator import WriteResult
from kvraft.errors import Unavailable
from tests.harness.inproc import InProcCluster

WRITERS = 8
WRITES = 10


def _run_writers(writer) -> None:
    """``writer(i)`` on WRITERS threads at once, until every one is done (60 s each at most)."""
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer did not finish"


def test_writes_of_one_key_through_one_coordinator_reach_the_replicas_one_at_a_time():
    cluster = InProcCluster(threads=True)
    try:
        key = cluster.key_on(("n1", "n2"))
        lock = threading.Lock()
        sending = [0]
        most = [0]

        def hook(src: str, dst: str, message: object) -> None:
            if src != "n1" or not isinstance(message, m.Apply):
                return
            if not any(r.key == key for r in message.records):
                return
            with lock:
                sending[0] += 1
                most[0] = max(most[0], sending[0])
            time.sleep(0.002)  # the network's latency: the window in which writes would overlap
            with lock:
                sending[0] -= 1

        cluster.network.on_send(hook)
        refused: list[str] = []
        acked: list[bytes] = []

        def writer(i: int) -> None:
            for j in range(WRITES):
                value = f"w{i}-{j}".encode()
                try:
                    cluster["n1"].put(key, value, w="quorum")
                except Unavailable as exc:
                    with lock:
                        refused.append(str(exc))
                    continue
                with lock:
                    acked.append(value)

        _run_writers(writer)
        assert most[0] == 1, f"{most[0]} writes of the key were on the network at once"
        assert refused == [] and len(acked) == WRITERS * WRITES
        cluster.network.on_send(None)
        held = [cluster.held(n, key) for n in ("n1", "n2")]
        assert held[0] == held[1] and held[0] is not None and held[0].value in acked
    finally:
        cluster.close()


def test_a_write_stamped_again_goes_past_what_another_coordinator_stamps_meanwhile():
    """n3 (behind by 100 ms, not a replica) finds n1's newer version on both replicas and
    stamps again: a lead (versionrule.lead) above it. While that second stamping travels, n1
    writes the key again, a millisecond later by the clock. Stamped just above n1's first
    version, n3's write would be older than that one and have to stamp a third time; with the
    lead it is newer: both writes are acknowledged, n3's after one stamping again, and the
    replicas hold n3's value."""
    cluster = InProcCluster()
    try:
        key = cluster.key_on(("n1", "n2"))
        cluster.skew("n3", -100)
        cluster["n1"].put(key, b"first")
        applies = [0]
        concurrent: list[WriteResult] = []

        def hook(src: str, dst: str, message: object) -> None:
            if (src, dst) != ("n3", "n1") or not isinstance(message, m.Apply):
                return
            applies[0] += 1
            if applies[0] == 2:  # n3's second stamping, on its way to the first replica
                cluster.clock.step(0.001)
                concurrent.append(cluster["n1"].put(key, b"concurrent"))

        cluster.network.on_send(hook)
        mine = cluster["n3"].put(key, b"from-n3")
        assert applies[0] == 2 and len(concurrent) == 1
        assert cluster.nodes["n3"].counters["writes_restamped"] == 1
        assert mine.version > concurrent[0].version
        for n in ("n1", "n2"):
            held = cluster.held(n, key)
            assert held is not None and (held.value, held.version) == (b"from-n3", mine.version)
    finally:
        cluster.close()


def test_writes_that_queue_behind_a_round_go_in_the_next_one_together():
    """While one PUT of a key is on the network, the PUTs of that key that arrive at the same
    coordinator queue; the next round carries them together (one Apply, in order). Each is its
    own write: acknowledged with its own version, every writer's versions rise, and the replicas
    hold the value of the highest version acknowledged (no acknowledged overwrite is lost)."""
    cluster = InProcCluster(threads=True)
    try:
        key = cluster.key_on(("n1", "n2"))
        lock = threading.Lock()
        sizes: list[int] = []

        def hook(src: str, dst: str, message: object) -> None:
            if src == "n1" and isinstance(message, m.Apply):
                n = sum(1 for r in message.records if r.key == key)
                if n:
                    with lock:
                        sizes.append(n)
                    time.sleep(0.002)  # the window in which the other writers queue

        cluster.network.on_send(hook)
        acked: dict[int, list[WriteResult]] = {i: [] for i in range(WRITERS)}
        values: dict[object, bytes] = {}

        def writer(i: int) -> None:
            for j in range(WRITES):
                value = f"w{i}-{j}".encode()
                res = cluster["n1"].put(key, value, w="quorum")
                with lock:
                    acked[i].append(res)
                    values[res.version] = value

        _run_writers(writer)
        cluster.network.on_send(None)
        assert max(sizes) > 1, f"no round carried more than one PUT of the key: {sizes}"
        assert sum(sizes) == WRITERS * WRITES  # each write sent once to n2: none stamped again
        assert len(sizes) < WRITERS * WRITES  # in fewer rounds than writes
        assert cluster.nodes["n1"].counters["writes_grouped"] > 0
        for i, results in acked.items():
            assert len(results) == WRITES
            versions = [r.version for r in results]
            assert versions == sorted(versions) and len(set(versions)) == WRITES, i
        assert len(values) == WRITERS * WRITES  # every write its own version
        newest = max(values)
        held = [cluster.held(n, key) for n in ("n1", "n2")]
        assert held[0] == held[1] and held[0] is not None
        assert held[0].version == newest and held[0].value == values[newest]
    finally:
        cluster.close()
