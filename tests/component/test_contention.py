"""Writers contending for one key: through one coordinator they go one at a time, so they do
not push each other through the stampings of the forward-only version rule (before, 16
connections writing one key got 10-35 % of their PUTs refused as "concurrent writers")."""

from __future__ import annotations

import random
import threading
import time

from kvraft import peer as m
from kvraft.errors import Unavailable
from tests.harness.inproc import InProcCluster

WRITERS = 8
WRITES = 10


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

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a writer did not finish"
        assert most[0] == 1, f"{most[0]} writes of the key were on the network at once"
        assert refused == [] and len(acked) == WRITERS * WRITES
        cluster.network.on_send(None)
        held = [cluster.held(n, key) for n in ("n1", "n2")]
        assert held[0] == held[1] and held[0] is not None and held[0].value in acked
    finally:
        cluster.close()


COORDINATORS = ("n1", "n2", "n3")


def test_writers_of_one_key_through_every_coordinator_are_all_acknowledged():
    """Three coordinators write one key at once over a network that delivers each replica
    write after 0-2 ms, so their writes reach the two replicas in different orders and find
    each other's newer versions. Each such write waits a random backoff before it stamps
    again; every write is acknowledged, and the replicas end on one of the acknowledged
    values."""
    cluster = InProcCluster(threads=True)
    try:
        key = cluster.key_on(("n1", "n2"))
        lock = threading.Lock()
        rng = random.Random(7)

        def hook(src: str, dst: str, message: object) -> None:
            if isinstance(message, m.Apply) and any(r.key == key for r in message.records):
                with lock:
                    delay = rng.uniform(0, 0.002)
                cluster.clock.step(delay)  # the network's latency, different per message
                time.sleep(delay)

        cluster.network.on_send(hook)
        refused: list[str] = []
        acked: list[bytes] = []

        def writer(node: str, i: int) -> None:
            for j in range(WRITES):
                value = f"{node}-w{i}-{j}".encode()
                try:
                    cluster[node].put(key, value, w="quorum")
                except Unavailable as exc:
                    with lock:
                        refused.append(str(exc))
                    continue
                with lock:
                    acked.append(value)

        threads = [
            threading.Thread(target=writer, args=(node, i))
            for node in COORDINATORS
            for i in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a writer did not finish"
        restamped = sum(cluster.nodes[n].counters["writes_restamped"] for n in COORDINATORS)
        assert restamped > 0, "the writes never met each other: the test shows nothing"
        assert refused == [], f"{len(refused)} of {len(threads) * WRITES} refused: {refused[:2]}"
        cluster.network.on_send(None)
        held = [cluster.held(n, key) for n in ("n1", "n2")]
        assert held[0] == held[1] and held[0] is not None and held[0].value in acked
    finally:
        cluster.close()
