"""Routing of the partition-aware client as data: the map parsed from /cluster, the candidate
replicas of a key, the answers that show a stale map, the router's refresh rules (fake clock,
fake fetch), and the client's choice of URL over a fake transport (no network)."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from kvraft.client import Client, NotFound, cli
from kvraft.client.http import routing_from_env
from kvraft.client.router import Router
from kvraft.client.routing import NodeInfo, RouteMap, candidates, miss, parse_cluster
from kvraft.core.placement import partition_of, place
from kvraft_cmd.main import build_parser

NODES = ("n1", "n2", "n3")


def view(partitions, leader="n1", epoch=7, **extra) -> dict:
    """A /cluster answer of the shape kvraft.views.cluster gives (the fields routing reads)."""
    nodes = extra.pop("nodes", None) or [
        {"id": n, "http": f"10.0.0.{i + 1}:800{i + 1}", "alive": True, "serving": True}
        for i, n in enumerate(NODES)
    ]
    return {
        "node": extra.pop("node", "n2"),
        "leader": leader,
        "nodes": nodes,
        "partitions": {str(i): list(r) for i, r in enumerate(partitions)},
        "partition_epoch": epoch,
        "filling": extra.pop("filling", {}),
        "clock": {"out_of_bounds": extra.pop("off", [])},
        **extra,
    }


PMAP = place(8, NODES, {}, 2)


def key_in(replicas: set[str], pmap=PMAP) -> str:
    """A key whose partition has exactly these replicas."""
    for i in range(10_000):
        key = f"k{i}"
        if set(pmap[partition_of(key, len(pmap))]) == replicas:
            return key
    raise AssertionError(f"no key on {replicas}")


# -- parse_cluster -------------------------------------------------------------------------------


def test_the_map_uses_the_answering_url_its_scheme_and_known_urls_over_advertised_ones():
    rmap = parse_cluster(view(PMAP), "https://front:443", {"n3": "https://n3.example:9"})
    assert rmap.epoch == 7 and rmap.leader == "n1" and len(rmap.partitions) == 8
    assert rmap.nodes["n1"].url == "https://10.0.0.1:8001"  # advertised, with our scheme
    assert rmap.nodes["n2"].url == "https://front:443"  # the node that answered
    assert rmap.nodes["n3"].url == "https://n3.example:9"  # where we reached it before
    assert rmap.replicas("user/1") == PMAP[partition_of("user/1", 8)]


def test_non_members_are_dropped_and_flags_are_read():
    nodes = [
        {"id": "n1", "http": "a:1", "alive": False},
        {"id": "n2", "http": "b:1", "serving": False},
        {"id": "n3", "http": "c:1", "member": False},
        {"id": "n4", "http": "d:1"},
    ]
    rmap = parse_cluster(view(PMAP, nodes=nodes, off=["n4"], node="x"), "http://e:1")
    assert set(rmap.nodes) == {"n1", "n2", "n4"}
    assert not rmap.nodes["n1"].alive and not rmap.nodes["n2"].serving
    assert not rmap.nodes["n4"].clock_ok and rmap.nodes["n2"].clock_ok


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"nodes": []},
        {"partitions": {"0": ["n1"]}, "nodes": {}},
        {"partitions": {"1": ["n1"]}, "nodes": []},  # not numbered from 0
        {"partitions": {"0": ["n1"]}, "nodes": [{"http": "a:1"}]},  # a node without an id
    ],
)
def test_what_is_not_a_cluster_view_is_a_value_error(bad):
    with pytest.raises(ValueError):
        parse_cluster(bad, "http://a:1")


# -- candidates ----------------------------------------------------------------------------------


def rmap_of(pmap=PMAP, leader="n1", **flags) -> RouteMap:
    nodes = {n: NodeInfo(n, f"http://{n}:1", **flags.get(n, {})) for n in NODES}
    return RouteMap(1, tuple(pmap), nodes, leader, flags.get("filling", {}))


def test_a_key_goes_to_its_replicas_with_the_leader_last():
    key = key_in({"n1", "n2"})
    assert candidates(rmap_of(), key, write=True) == ["n2", "n1"]
    assert candidates(rmap_of(), key, write=False) == ["n2", "n1"]
    key = key_in({"n2", "n3"})
    assert sorted(candidates(rmap_of(), key, write=False)) == ["n2", "n3"]


def test_round_robin_rotates_between_replicas_that_are_not_the_leader():
    key = key_in({"n2", "n3"})
    firsts = {candidates(rmap_of(), key, False, turn=t)[0] for t in range(4)}
    assert firsts == {"n2", "n3"}
    key = key_in({"n1", "n3"})
    assert {candidates(rmap_of(), key, False, turn=t)[0] for t in range(4)} == {"n3"}


def test_dead_and_recently_unreachable_replicas_are_skipped_and_not_serving_ones_come_last():
    key = key_in({"n2", "n3"})
    assert candidates(rmap_of(n2={"alive": False}), key, True) == ["n3"]
    assert candidates(rmap_of(), key, True, down={"n2", "n3"}) == []
    for turn in range(3):
        assert candidates(rmap_of(n3={"serving": False}), key, True, turn=turn) == ["n2", "n3"]
    key = key_in({"n1", "n2"})  # n1 leads
    assert candidates(rmap_of(n2={"serving": False}), key, False) == ["n1", "n2"]


def test_reads_skip_filling_replicas_and_writes_skip_clocks_out_of_bounds():
    key = key_in({"n2", "n3"})
    part = partition_of(key, len(PMAP))
    filling = rmap_of(filling={part: frozenset({"n3"})})
    assert candidates(filling, key, write=False) == ["n2"]
    assert sorted(candidates(filling, key, write=True)) == ["n2", "n3"]
    off = rmap_of(n2={"clock_ok": False})
    assert candidates(off, key, write=True) == ["n3"]
    assert sorted(candidates(off, key, write=False)) == ["n2", "n3"]


def test_an_empty_map_has_no_candidates():
    assert candidates(RouteMap(0, (), {}), "k", True) == []


@given(
    st.text(min_size=1, max_size=40),
    st.integers(1, 128),
    st.sampled_from([None, *NODES]),
    st.booleans(),
    st.integers(0, 10),
)
def test_candidates_are_the_replicas_of_the_partition_the_nodes_compute(
    key, partitions, leader, write, turn
):
    pmap = place(partitions, NODES, {}, 2)
    got = candidates(rmap_of(pmap, leader), key, write, turn=turn)
    assert sorted(got) == sorted(pmap[partition_of(key, partitions)])
    assert leader not in got[:-1]  # the leader, when a replica, is the last resort


# -- misses --------------------------------------------------------------------------------------


def test_answers_that_show_a_stale_map():
    rmap = rmap_of()
    key = key_in({"n2", "n3"})
    assert miss(rmap, key, "n2", {"X-Kvraft-Node": "n2"}) is None
    assert miss(rmap, key, "n2", {"X-Kvraft-Node": "n2"}, ["n3", "n2"]) is None
    # the leader forwards what it is sent: expected when we chose it as the last resort
    assert miss(rmap, key, "n1", {"X-Kvraft-Node": "n3", "X-Kvraft-Via": "n1"}) is None
    # a replica that sent a hot key's PUT on to the key's other replica, its owner: not stale
    assert miss(rmap, key, "n2", {"X-Kvraft-Node": "n3", "X-Kvraft-Via": "n2"}) is None
    why = miss(rmap, key, "n2", {"X-Kvraft-Node": "n1", "X-Kvraft-Via": "n2"})  # not a replica
    assert why is not None and why.startswith("forwarded:")
    why = miss(rmap, key, "n2", {"X-Kvraft-Node": "n3", "X-Kvraft-Via": "n3"})  # not the target
    assert why is not None and why.startswith("forwarded:")
    why = miss(rmap, key, "n2", {"X-Kvraft-Node": "n3"})
    assert why is not None and why.startswith("moved:")
    why = miss(rmap, key, "n2", {"X-Kvraft-Node": "n2"}, ["n1", "n2"])
    assert why is not None and why.startswith("replicas:")
    why = miss(rmap, key, "n2", {"X-Kvraft-Node": "n2", "X-Kvraft-Map-Epoch": "2"})
    assert why is not None and why.startswith("epoch:")
    assert miss(rmap, key, "n2", {"X-Kvraft-Node": "n2", "X-Kvraft-Map-Epoch": "1"}) is None


def test_routing_mode_from_the_environment():
    assert routing_from_env({}) == "replica"
    assert routing_from_env({"KVRAFT_CLIENT_ROUTING": " Any "}) == "any"
    assert routing_from_env({"KVRAFT_CLIENT_ROUTING": ""}, default="any") == "any"
    with pytest.raises(ValueError, match="replica, any"):
        routing_from_env({"KVRAFT_CLIENT_ROUTING": "smart"})


# -- the router ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Fetches:
    """A fetch that answers the views given, in turn; an exception is raised."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        what = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(what, Exception):
            raise what
        return what, "http://n2:1"


def test_the_map_is_fetched_lazily_once_and_again_after_a_miss_not_more_often_than_allowed():
    clock = FakeClock()
    fetch = Fetches(view(PMAP, epoch=1), view(PMAP, epoch=2))
    router = Router(fetch, ttl=30, min_interval=0.5, clock=clock)
    assert fetch.calls == 0 and router.map is None
    assert router.current().epoch == 1 and router.current().epoch == 1 and fetch.calls == 1
    router.stale("forwarded: by n3")
    clock.t += 0.1
    assert router.current().epoch == 1 and fetch.calls == 1  # within min_interval
    clock.t += 0.5
    assert router.current().epoch == 2 and fetch.calls == 2
    assert router.stats()["misses"] == {"forwarded": 1}


def test_the_map_is_fetched_again_after_its_ttl():
    clock = FakeClock()
    fetch = Fetches(view(PMAP, epoch=1), view(PMAP, epoch=5))
    router = Router(fetch, ttl=30, clock=clock)
    router.current()
    clock.t += 29.9
    assert router.current().epoch == 1
    clock.t += 0.1
    assert router.current().epoch == 5 and fetch.calls == 2


def test_a_map_of_a_lower_epoch_is_ignored_until_ours_is_ttl_old():
    clock = FakeClock()
    fetch = Fetches(view(PMAP, epoch=5), view(PMAP, epoch=4), view(PMAP, epoch=4))
    router = Router(fetch, ttl=30, min_interval=0.5, clock=clock)
    ours = router.current()
    router.stale("moved: x")
    clock.t += 1
    assert router.current() is ours and fetch.calls == 2
    assert router.stats()["misses"] == {"moved": 1, "older": 1}
    clock.t += 30  # a cluster made anew (epochs start over): taken once ours is old
    assert router.current().epoch == 4


def test_a_map_that_is_not_settled_is_fetched_again_sooner():
    clock = FakeClock()
    starting = view(PMAP, nodes=[dict(n, serving=n["id"] == "n2") for n in ADVERTISED])
    fetch = Fetches(starting, view(PMAP, nodes=ADVERTISED, epoch=8))
    router = Router(fetch, ttl=30, unsettled_ttl=2, clock=clock)
    assert not router.current().settled
    clock.t += 2
    fresh = router.current()
    assert fresh.settled and fresh.epoch == 8
    clock.t += 2
    assert router.current() is fresh and fetch.calls == 2
    filling = view(PMAP, nodes=ADVERTISED, filling={"3": ["n1"]})
    assert not parse_cluster(filling, "http://a:1").settled


def test_a_failed_fetch_keeps_the_old_map_and_without_one_routes_the_old_way():
    clock = FakeClock()
    down = requests.ConnectionError("refused")
    router = Router(Fetches(down, {"not": "a view"}, view(()), view(PMAP)), clock=clock)
    assert router.current() is None  # unreachable
    clock.t += 1
    assert router.current() is None  # not a cluster view
    clock.t += 1
    assert router.current() is None  # a cluster without a map yet
    clock.t += 1
    held = router.current()
    assert held is not None and router.stats()["fetch_errors"] == 3
    router.stale("moved: x")
    router._fetch = Fetches(down)
    clock.t += 1
    assert router.current() is held


def test_an_unreachable_node_is_skipped_for_a_cooldown_that_doubles():
    clock = FakeClock()
    router = Router(Fetches(view(PMAP)), cooldown=1.0, max_cooldown=3.0, clock=clock)
    rmap = router.current()
    key = key_in({"n2", "n3"})
    router.failed("n2", "connection refused")
    assert router.route(rmap, key, True) == ["n3"]
    clock.t += 1.0
    assert "n2" in router.route(rmap, key, True)
    router.failed("n2", "connection refused")  # second failure in a row: 2 s
    clock.t += 1.5
    assert "n2" not in router.route(rmap, key, True)
    router.failed("n2", "x")
    router.failed("n2", "x")  # capped at 3 s
    clock.t += 3.0
    assert "n2" in router.route(rmap, key, True)
    router.answered("n2", "http://n2:1")  # reachable again: the count starts over
    router.failed("n2", "x")
    clock.t += 1.0
    assert "n2" in router.route(rmap, key, True)


def test_a_node_never_reached_that_refuses_connections_is_skipped_for_long():
    clock = FakeClock()
    fetch = Fetches(view(PMAP, nodes=ADVERTISED, node="elsewhere"))
    router = Router(fetch, cooldown=1.0, unknown_cooldown=600.0, clock=clock)
    rmap = router.current()
    key = key_in({"n2", "n3"})
    router.failed("n3", "cannot connect", connect=True)  # e.g. an address inside a container
    clock.t += 599
    assert router.route(rmap, key, True) == ["n2"]
    clock.t += 1
    assert "n3" in router.route(rmap, key, True)
    router.answered("n2", "http://front:1")  # reached: a refused connection is a short cooldown
    router._tried_at = float("-inf")
    router.stale("moved: x")
    assert router.current().nodes["n2"].url == "http://front:1"  # where it answered
    router.failed("n2", "connection refused", connect=True)
    clock.t += 1
    assert "n2" in router.route(rmap, key, True)
    router._tried_at = float("-inf")
    assert router.current().nodes["n2"].url == "http://b:1"  # forgotten at front: advertised


def test_threads_share_one_fetch_and_always_see_a_whole_map():
    gate = threading.Event()
    calls = []

    def slow_fetch():
        calls.append(1)
        gate.wait(5)
        return view(PMAP, epoch=len(calls)), "http://n2:1"

    router = Router(slow_fetch, min_interval=0)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(router.current())) for _ in range(8)]
    for t in threads:
        t.start()
    while not calls:  # the first thread is inside the fetch
        threading.Event().wait(0.001)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1  # the others did not wait and did not fetch
    maps = [m for m in seen if m is not None]
    assert maps and all(m is router.map for m in maps)
    assert all(isinstance(m, RouteMap) and len(m.partitions) == 8 for m in maps)


# -- the client over a fake transport -----------------------------------------------------------


class Transport(requests.adapters.BaseAdapter):
    """Answers by host and path: /cluster gives ``cluster``; /kv/<key> is served by the host's
    node id (``a`` -> n1, ``b`` -> n2, ``c`` -> n3), or raises what ``broken`` says."""

    IDS = {"a": "n1", "b": "n2", "c": "n3"}

    def __init__(self, cluster: dict, broken: dict | None = None) -> None:
        super().__init__()
        self.cluster, self.broken = cluster, broken or {}
        self.calls: list[tuple[str, str, str]] = []

    def send(self, request, **kwargs):
        host = request.url.split("/")[2].split(":")[0]
        path = "/" + request.url.split("/", 3)[3].split("?")[0]
        self.calls.append((request.method, host, path))
        if host in self.broken:
            raise self.broken[host]
        resp = requests.Response()
        resp.url, resp.request = request.url, request
        resp.headers["X-Kvraft-Node"] = self.IDS[host]
        if path == "/cluster":
            resp.status_code, body = 200, dict(self.cluster, node=self.IDS[host])
        elif request.method == "GET":
            resp.status_code, body = 200, b"value"
        else:
            key = path.split("/")[-1]
            replicas = list(PMAP[partition_of(key, len(PMAP))])
            resp.status_code, body = 200, {"key": key, "version": "v", "replicas": replicas}
        resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return resp

    def close(self):
        pass


ADVERTISED = [
    {"id": n, "http": f"{h}:1", "alive": True, "serving": True}
    for n, h in (("n1", "a"), ("n2", "b"), ("n3", "c"))
]


def client_over(transport: Transport, **kw) -> Client:
    c = Client(["http://a:1"], retries=0, sleep=lambda s: None, **kw)
    c.session.mount("http://", transport)
    return c


def test_the_client_learns_the_map_once_and_sends_each_key_to_a_non_leader_replica():
    t = Transport(view(PMAP, leader="n1", nodes=ADVERTISED))
    c = client_over(t)
    keys = [key_in({"n1", "n2"}), key_in({"n1", "n3"}), key_in({"n2", "n3"})]
    for key in keys:
        c.put(key, b"v")
        assert c.get(key).value == b"value"
    assert t.calls[0] == ("GET", "a", "/cluster")
    assert [c for c in t.calls if c[2] == "/cluster"] == [t.calls[0]]
    served = [(m, h) for m, h, p in t.calls[1:]]
    assert served[:4] == [("PUT", "b"), ("GET", "b"), ("PUT", "c"), ("GET", "c")]
    assert {h for _, h in served[4:]} <= {"b", "c"}  # n2/n3: either, by round-robin
    assert c.router.stats()["misses"] == {} and c.last_node in ("http://b:1", "http://c:1")


def test_an_unreachable_replica_sends_the_request_the_old_way_and_refreshes_the_map():
    refused = requests.exceptions.ConnectionError("NewConnectionError: Connection refused")
    t = Transport(view(PMAP, leader="n1", nodes=ADVERTISED), broken={"c": refused})
    c = client_over(t)
    key = key_in({"n1", "n3"})
    assert c.put(key, b"v").node == "n1"  # n3 refused; the leader is the next replica
    assert [(m, h) for m, h, _ in t.calls] == [("GET", "a"), ("PUT", "c"), ("PUT", "a")]
    assert c.router.stats()["misses"] == {"unreachable": 1}
    t.calls.clear()
    c.router._tried_at = float("-inf")  # past min_interval
    c.get(key)
    assert [(m, h) for m, h, _ in t.calls] == [("GET", "a"), ("GET", "a")]  # refetch, n3 cooling


def test_every_replica_down_goes_to_the_listed_nodes():
    refused = requests.exceptions.ConnectionError("NewConnectionError: Connection refused")
    t = Transport(view(PMAP, nodes=ADVERTISED), broken={"b": refused, "c": refused})
    c = client_over(t)
    assert c.put(key_in({"n2", "n3"}), b"v").node == "n1"
    hosts = [h for _, h, _ in t.calls]
    assert hosts[0] == "a" and sorted(hosts[1:3]) == ["b", "c"] and hosts[3:] == ["a"]


def test_the_old_way_tries_a_listed_node_that_just_failed_as_a_replica_last():
    timeout = requests.exceptions.ReadTimeout("read timed out")
    t = Transport(view(PMAP, leader="n1", nodes=ADVERTISED))
    c = Client(["http://b:1", "http://c:1"], retries=0)
    c.session.mount("http://", t)
    c.router.current()  # the map, from b: the listed node tried first
    t.calls.clear()
    key = key_in({"n1", "n2"})  # n2 (b) first, then the leader n1 (a)
    t.broken.update(a=timeout, b=timeout)
    assert c.put(key, b"v").node == "n3"
    assert [h for _, h, _ in t.calls] == ["b", "a", "c"]  # not b again before c


def test_a_definite_answer_of_the_replica_is_the_answer():
    class Gone(Transport):
        def send(self, request, **kwargs):
            resp = super().send(request, **kwargs)
            if "/kv/" in request.url:
                resp.status_code = 404
                resp._content = b'{"error": "not_found", "message": "gone"}'
            return resp

    t = Gone(view(PMAP, nodes=ADVERTISED))
    c = client_over(t)
    with pytest.raises(NotFound):
        c.get(key_in({"n2", "n3"}))
    assert len(t.calls) == 2  # /cluster, then one replica: not retried elsewhere


def test_without_smart_routing_the_map_is_never_fetched(monkeypatch):
    t = Transport(view(PMAP, nodes=ADVERTISED))
    c = client_over(t, smart=False)
    c.put("k", b"v")
    c.get("k")
    assert [h for _, h, _ in t.calls] == ["a", "a"] and c.router is None
    monkeypatch.setenv("KVRAFT_CLIENT_ROUTING", "any")
    assert not client_over(t).smart
    monkeypatch.setenv("KVRAFT_CLIENT_ROUTING", "replica")
    assert client_over(t).smart


def test_a_write_whose_replicas_differ_from_the_map_marks_it_stale():
    moved = [("n3", "n1")] + list(PMAP[1:])  # the map the client holds is not the servers'
    t = Transport(view(moved, nodes=ADVERTISED))
    c = client_over(t)
    key = next(k for k in (f"k{i}" for i in range(10_000)) if partition_of(k, 8) == 0)
    c.put(key, b"v")
    assert c.router.stats()["misses"] == {"replicas": 1}


def test_the_cli_routes_to_replicas_only_when_asked(monkeypatch):
    monkeypatch.delenv("KVRAFT_CLIENT_ROUTING", raising=False)
    parser = build_parser()
    assert not cli._client(parser.parse_args(["get", "k"])).smart
    assert cli._client(parser.parse_args(["get", "k", "--routing", "replica"])).smart
    monkeypatch.setenv("KVRAFT_CLIENT_ROUTING", "replica")
    assert cli._client(parser.parse_args(["put", "k", "v"])).smart
    assert not cli._client(parser.parse_args(["delete", "k", "--routing", "any"])).smart
    with pytest.raises(SystemExit):
        parser.parse_args(["get", "k", "--routing", "nearest"])
