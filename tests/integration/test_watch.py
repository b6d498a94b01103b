"""WebSocket /watch on a real 3-node cluster (websocket-client), and the change-feed machinery
(PeerSubscriptions, ClusterFeed) in-process with a scripted peer transport."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator

import pytest
import websocket

from kvraft.hlc import Version
from kvraft.storage import Record
from kvraft.watch import ChangeHub, ClusterFeed, Event, PeerSubscriptions
from tests.harness.cluster import Cluster, wait_for

# -- on a real cluster --------------------------------------------------------------------


@contextlib.contextmanager
def _watch(c: Cluster, i: int, prefix: str = "", **kw) -> Iterator[websocket.WebSocket]:
    """A /watch socket on node ``i``, after its ``ready`` message (every peer subscribed)."""
    ws = websocket.create_connection(
        f"ws://{c.nodes[i].http}/watch?prefix={prefix}", timeout=10, **kw
    )
    try:
        ready = json.loads(ws.recv())
        assert ready == {
            "type": "ready",
            "prefix": prefix,
            "missing": [],
            "peers": sorted(n.id for n in c.nodes if n is not c.nodes[i]),
        }
        yield ws
    finally:
        ws.close()
        ws.shutdown()


def _events_until(ws: websocket.WebSocket, done, timeout: float = 10) -> list[dict]:
    """Events received until ``done(events)`` is true; TimeoutError after ``timeout`` s."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"watch events so far: {events}")
        ws.settimeout(left)
        events.append(json.loads(ws.recv()))
    return events


def test_watchers_on_every_node_see_changes_made_through_every_node(cluster):
    everyone = {n.id for n in cluster.nodes}
    with (
        _watch(cluster, 0, "w/") as w1,
        _watch(cluster, 1, "w/") as w2,
        _watch(cluster, 2, "w/k0") as w3,
    ):
        made, coordinators = [], set()
        # the leader balances writes over the nodes: write through every node until each one
        # has coordinated a write (X-Kvraft-Node says which did)
        for i in range(30):
            resp = cluster.put(i % 3, f"w/k{i}", f"value {i}".encode())
            made.append(("put", f"w/k{i}", resp.json()["version"], resp.headers["X-Kvraft-Node"]))
            coordinators.add(resp.headers["X-Kvraft-Node"])
            if coordinators == everyone and i >= 2:
                break
        assert coordinators == everyone
        assert cluster.put(2, "elsewhere/x", b"not watched").ok
        resp = cluster.delete(1, "w/k0")
        made.append(("delete", "w/k0", resp.json()["version"], resp.headers["X-Kvraft-Node"]))
        sentinel = cluster.put(2, "w/zz", b"last")
        made.append(("put", "w/zz", sentinel.json()["version"], sentinel.headers["X-Kvraft-Node"]))

        def seen_sentinel(events):
            return any(e.get("version") == sentinel.json()["version"] for e in events)

        for ws in (w1, w2):
            events = _events_until(ws, seen_sentinel)
            got = [(e["type"], e["key"], e["version"], e["node"]) for e in events]
            assert sorted(got) == sorted(made)  # each change once, nothing outside w/
        events = _events_until(w3, lambda ev: len(ev) == 2)
        assert [(e["type"], e["key"]) for e in events] == [("put", "w/k0"), ("delete", "w/k0")]


def test_events_for_a_key_come_in_version_order(cluster):
    with _watch(cluster, 1, "order/") as ws:
        versions = [
            cluster.put(i % 3, "order/k", str(i).encode()).json()["version"] for i in range(12)
        ]
        newest = max(versions, key=Version.decode)
        events = _events_until(ws, lambda ev: ev and ev[-1]["version"] == newest)
    # every write that made the key newer, in order (last writer wins: a write stamped older
    # than the one before it, by a coordinator whose clock is behind, changes nothing)
    expected, top = [], None
    for v in map(Version.decode, versions):
        if top is None or v > top:
            expected.append(v.encode())
            top = v
    assert [e["version"] for e in events] == expected


def test_watch_refuses_a_foreign_origin_and_a_long_prefix(cluster):
    url = f"ws://{cluster.nodes[0].http}/watch"
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, origin="https://evil.example", timeout=10)
    assert info.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url + "?prefix=" + "p" * 1025, timeout=10)
    assert info.value.status_code == 400


def test_messages_to_a_watch_get_an_error_and_the_stream_goes_on(cluster):
    with _watch(cluster, 2, "chat/", suppress_origin=True) as ws:
        ws.send('{"type": "report"}')
        error = json.loads(ws.recv())
        assert error["type"] == "error" and error["error"] == "bad_request"
        version = cluster.put(0, "chat/x", b"1").json()["version"]
        assert _events_until(ws, lambda ev: ev)[0]["version"] == version


def test_feed_stops_polling_peers_when_the_last_watcher_leaves(cluster):
    with _watch(cluster, 0, "idle/"):
        pass
    with _watch(cluster, 0, "idle/") as ws:  # and starts again for the next one
        version = cluster.put(2, "idle/k", b"v").json()["version"]
        assert _events_until(ws, lambda ev: ev)[0]["version"] == version


def test_watch_survives_a_peer_restart_and_says_changes_may_be_missed(fresh_cluster):
    c = fresh_cluster
    with _watch(c, 0, "r/") as ws:
        c.kill(2)
        before = c.put(1, "r/while-down", b"1").json()["version"]
        _events_until(ws, lambda ev: any(e.get("version") == before for e in ev))
        c.start(2)
        c.wait_ready(nodes=[2])
        events = _events_until(ws, lambda ev: any(e["type"] == "gap" for e in ev), timeout=20)
        assert [e for e in events if e["type"] == "gap"][0]["node"] == "n3"
        c.wait_alive(2)
        after = c.put(2, "r/after", b"2").json()["version"]
        _events_until(ws, lambda ev: any(e.get("version") == after for e in ev))


# -- the machinery, in-process ------------------------------------------------------------


def _rec(key: str, ts: int, node: str = "n1", tomb: bool = False) -> Record:
    return Record(key, 0, Version(ts, node), tomb, b"value")


def test_peer_subscription_long_polls_strips_values_and_expires():
    now = [100.0]
    hub = ChangeHub()
    subs = PeerSubscriptions(hub, ttl=10, clock=lambda: now[0])
    sid = subs.open("a/")
    full = hub.subscribe("a/")  # the hub's default: records as applied, values included
    hub.publish([_rec("a/1", 1), _rec("b/1", 2), _rec("a/2", 3)])
    seq, records = subs.poll(sid, after=0, wait=0)
    assert seq == 1 and [(r.key, r.value) for r in records] == [("a/1", b""), ("a/2", b"")]
    assert [(r.key, r.value) for r in full.drain(10)] == [("a/1", b"value"), ("a/2", b"value")]
    full.close()
    started = time.monotonic()
    assert subs.poll(sid, after=1, wait=0.2) == (1, [])
    assert time.monotonic() - started >= 0.2
    assert subs.poll("unknown", after=0, wait=0) is None
    now[0] += 11
    subs.reap()
    assert len(subs) == 0 and subs.poll(sid, after=1, wait=0) is None
    assert hub._subs == []  # the hub subscription went with it


def test_peer_subscription_that_overflowed_is_gone(monkeypatch):
    monkeypatch.setattr("kvraft.watch.QUEUE_SIZE", 3)
    hub = ChangeHub()
    subs = PeerSubscriptions(hub)
    sid = subs.open()
    hub.publish([_rec(f"k{i}", i) for i in range(5)])
    assert subs.poll(sid, after=0, wait=0) is None


def test_a_lost_poll_answer_is_sent_again_not_lost():
    hub = ChangeHub()
    subs = PeerSubscriptions(hub)
    sid = subs.open()
    hub.publish([_rec("a", 1)])
    first = subs.poll(sid, after=0, wait=0)  # suppose this answer never arrives
    hub.publish([_rec("b", 2)])
    assert subs.poll(sid, after=0, wait=0) == first  # the retry gets it again
    seq, records = subs.poll(sid, after=1, wait=0)
    assert (seq, [r.key for r in records]) == (2, ["b"])
    assert subs.poll(sid, after=7, wait=0) is None  # not a batch it sent: start over


class ScriptedPeers:
    """PeerFeed whose peers' change streams are queues a test fills; ``down`` peers raise."""

    def __init__(self, peers: list[str]) -> None:
        self.streams = {p: ChangeHub() for p in peers}
        self.subs = {p: PeerSubscriptions(h) for p, h in self.streams.items()}
        self.down: set[str] = set()
        self.opened: list[str] = []
        self.closed: list[str] = []

    def open(self, node_id: str, prefix: str) -> str:
        if node_id in self.down:
            raise ConnectionError(f"{node_id} down")
        self.opened.append(node_id)
        return self.subs[node_id].open(prefix)

    def poll(self, node_id: str, sid: str, after: int, wait: float):
        if node_id in self.down:
            raise ConnectionError(f"{node_id} down")
        return self.subs[node_id].poll(sid, after, wait)

    def close(self, node_id: str, sid: str) -> None:
        self.closed.append(node_id)
        self.subs[node_id].close(sid)

    def forget(self, node_id: str) -> None:
        """The peer restarts: every subscription it held is gone."""
        self.subs[node_id] = PeerSubscriptions(self.streams[node_id])
        self.streams[node_id]._subs = []


@pytest.fixture
def feed_parts():
    hub = ChangeHub()
    peers = ScriptedPeers(["n2", "n3"])
    feed = ClusterFeed(
        "n1",
        hub,
        peers,
        lambda: ["n1", "n2", "n3"],
        alive=lambda n: n not in peers.down,
        poll_wait=0.05,
        retry=0.05,
    )
    yield feed, hub, peers
    for w in list(feed._watchers):
        w.close()


def _drain(w, until, timeout: float = 5.0) -> list[Event]:
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while not until(out):
        if time.monotonic() > deadline:
            raise TimeoutError(f"events so far: {out}")
        e = w.get(timeout=0.05)
        if e is not None:
            out.append(e)
    return out


def test_feed_merges_sources_once_per_version_in_order(feed_parts):
    feed, hub, peers = feed_parts
    w = feed.subscribe("k")
    other = feed.subscribe("z")
    assert feed.wait_connected(5) == []
    # one write reaches two replicas (this node and n2): one event
    hub.publish([_rec("k1", 5, "n2")])
    peers.streams["n2"].publish([_rec("k1", 5, "n2")])
    assert _drain(w, lambda ev: ev) == [Event("put", "k1", Version(5, "n2").encode(), "n2")]
    peers.streams["n2"].publish([_rec("k1", 7, "n3", tomb=True)])
    assert _drain(w, lambda ev: ev) == [Event("delete", "k1", Version(7, "n3").encode(), "n3")]
    # n3 is late: an older version, a copy, a key outside the prefix, then something new
    peers.streams["n3"].publish(
        [_rec("k1", 6, "n3"), _rec("k1", 7, "n3", tomb=True), _rec("x9", 8), _rec("k2", 9, "n3")]
    )
    assert _drain(w, lambda ev: ev) == [Event("put", "k2", Version(9, "n3").encode(), "n3")]
    assert w.get(timeout=0.1) is None and other.get(timeout=0) is None


def test_feed_reports_a_gap_when_a_peer_forgets_the_subscription(feed_parts):
    feed, _hub, peers = feed_parts
    w = feed.subscribe("")
    assert feed.wait_connected(5) == []
    peers.forget("n3")
    gap = _drain(w, lambda ev: ev)[0]
    assert gap.type == "gap" and gap.node == "n3" and "may have been missed" in gap.message
    wait_for(lambda: feed.wait_connected(0) == [], 5, "n3 subscribed again")
    peers.streams["n3"].publish([_rec("after", 1)])
    assert _drain(w, lambda ev: ev)[0].key == "after"
    w.close()


def test_a_dead_peer_is_reported_missing_and_joined_when_back(feed_parts):
    feed, _hub, peers = feed_parts
    peers.down.add("n2")
    w = feed.subscribe("")
    assert feed.wait_connected(0.3) == ["n2"]
    peers.down.clear()
    wait_for(lambda: feed.wait_connected(0) == [], 5, "n2 subscribed")
    peers.streams["n2"].publish([_rec("k", 1)])
    assert _drain(w, lambda ev: ev)[0].key == "k"
    w.close()


def test_a_watcher_that_falls_behind_is_cut_off_not_the_others():
    hub = ChangeHub()
    feed = ClusterFeed("n1", hub, ScriptedPeers([]), lambda: ["n1"], queue_size=5)
    slow, fast = feed.subscribe(""), feed.subscribe("")
    for i in range(6):
        hub.publish([_rec(f"k{i}", i + 1)])
        fast.get(timeout=5)
    wait_for(lambda: slow.lagged, 5, "slow watcher cut off")
    assert not fast.lagged
    slow.close()
    fast.close()
    assert not feed.running


def test_feed_threads_stop_and_peer_subscriptions_close_when_nobody_watches(feed_parts):
    feed, hub, peers = feed_parts
    before = threading.active_count()
    w = feed.subscribe("")
    assert feed.wait_connected(5) == []
    w.close()
    assert not feed.running
    wait_for(lambda: sorted(peers.closed) == ["n2", "n3"], 5, "peer subscriptions closed")
    wait_for(lambda: threading.active_count() <= before, 5, "feed threads to end")
    wait_for(lambda: hub._subs == [], 5, "local subscription closed")
