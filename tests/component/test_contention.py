"""Writers contending for one key: through one coordinator they go one at a time, so they do
not push each other through the stampings of the forward-only version rule (before, 16
connections writing one key got 10-35 % of their PUTs refused as "concurrent writers")."""

from __future__ import annotations

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
