"""Regression: a write the leader could not forward, then served itself, keeps its body."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.harness.cluster import Cluster


def test_leader_serving_a_write_itself_after_a_failed_forward_keeps_the_value(tmp_path):
    # round-robin keeps choosing the killed node until pings mark it down: some forwards fail
    # before delivery and the leader then serves the write itself with the body it read
    with Cluster(str(tmp_path), env={"KVRAFT_BALANCE": "round-robin"}) as c:
        leader = c.leader()
        victim = next(i for i in range(3) if i != leader)
        c.kill(victim)

        def put(i: int):
            value = f"value-{i}".encode()
            return i, value, c.http.put(f"{c.url(leader)}/kv/fb-{i}", data=value, timeout=10)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(put, range(48)))
        for i, value, r in results:
            if r.status_code in (200, 201):
                got = c.get(leader, f"fb-{i}")
                assert got.content == value, (i, got.content)
            else:
                assert r.status_code in (502, 503), r.text
        assert sum(r.status_code in (200, 201) for _i, _v, r in results) >= 40
