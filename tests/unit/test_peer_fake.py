"""FakeNetwork (kvraft/peer/fake.py): an in-process network of PeerServers that carries every
message through its real codec and scripts the faults the component tier needs: a drop before
delivery (not applied) and after it (applied, answer lost), partitions and heal, delay,
reordering, crash and restart, and the liveness marks a real client would give."""

from __future__ import annotations

import random
import threading

import pytest

from api.errors import describe
from kvraft.errors import NotFound
from kvraft.hlc import Version
from kvraft.peer import FakeNetwork, PeerConnectError, PeerError, PeerStatus
from kvraft.peer import messages as m
from kvraft.peer.server import PeerServer
from kvraft.storage import ApplyResult, Record


class DictNode:
    """A peer with a dict store, served by a real PeerServer."""

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.store: dict[str, Record] = {}
        self.arrivals: list[int] = []
        self.lock = threading.Lock()
        self.server = PeerServer("unused: the fake network carries no signatures")
        self.server.register(m.Apply, self.apply)
        self.server.register(m.ReadKeys, self.read)
        self.server.register(m.Ping, lambda _msg: m.Pong(self.id, len(self.store)))
        self.server.register(m.Stats, self.stats)

    def apply(self, msg: m.Apply) -> m.Applied:
        out = []
        with self.lock:  # handlers run on the senders' threads
            for r in msg.records:
                self.arrivals.append(r.version.ts)
                old = self.store.get(r.key)
                newer = old is None or r.version > old.version
                if newer:
                    self.store[r.key] = r
                out.append(
                    ApplyResult(newer, None if old is None else old.version, old is not None)
                )
        return m.Applied(tuple(out))

    def read(self, msg: m.ReadKeys) -> m.Records:
        return m.Records(tuple(self.store[k] for k in msg.keys if k in self.store))

    def stats(self, _msg: m.Stats) -> m.JsonAnswer:
        raise NotFound("no stats here")


def rec(key: str, ts: int) -> Record:
    return Record(key, 0, Version(ts, "n1"), False, f"v{ts}".encode())


@pytest.fixture
def net():
    sleeps: list[float] = []
    network = FakeNetwork(sleep=sleeps.append, rng=random.Random(7), describe=describe)
    network.sleeps = sleeps
    nodes = {n: DictNode(n) for n in ("n1", "n2", "n3")}
    for n, node in nodes.items():
        network.add(n, node.server)
    network.nodes = nodes
    return network


def test_messages_are_delivered_through_their_codecs_and_marks_are_given(net):
    marks: list[tuple[str, bool]] = []
    peers = net.client("n1", mark=lambda n, ok: marks.append((n, ok)))
    assert peers.apply("n2", [rec("a", 1)]).results == (ApplyResult(True, None, False),)
    assert peers.read("n2", "a") == rec("a", 1)
    assert peers.read("n2", "missing") is None
    assert peers.send_apply("n3", rec("a", 2)).result().applied
    assert peers.ping("n3") == m.Pong("n3", 1)
    assert marks == [("n2", True)] * 3 + [("n3", True)] * 2
    assert net.delivered[0] == ("n1", "n2", "Apply")


def test_a_drop_before_delivery_is_a_connect_error_and_changes_nothing(net):
    marks: list[tuple[str, bool]] = []
    peers = net.client("n1", mark=lambda n, ok: marks.append((n, ok)))
    net.drop("n1", "n2")
    with pytest.raises(PeerConnectError):
        peers.apply("n2", [rec("a", 1)])
    assert net.nodes["n2"].store == {} and marks == [("n2", False)]
    assert net.client("n3").apply("n2", [rec("b", 1)]).results[0].applied  # only that link


def test_a_drop_after_delivery_is_a_maybe_applied_error_and_was_applied(net):
    peers = net.client("n1")
    net.drop("n1", "n2", after=True)
    with pytest.raises(PeerError) as err:
        peers.apply("n2", [rec("a", 1)])
    assert not isinstance(err.value, PeerConnectError)
    assert net.nodes["n2"].store == {"a": rec("a", 1)}
    sent = peers.send_apply("n2", rec("a", 2))  # the batched form reports it from result()
    with pytest.raises(PeerError):
        sent.result()


def test_a_partition_cuts_between_groups_until_healed(net):
    net.partition({"n1"}, {"n2", "n3"})
    with pytest.raises(PeerConnectError):
        net.client("n1").ping("n2")
    with pytest.raises(PeerConnectError):
        net.client("n3").ping("n1")
    assert net.client("n2").ping("n3").id == "n3"  # inside a group: fine
    net.heal()
    assert net.client("n1").ping("n2").id == "n2"


def test_delay_and_reorder_wait_through_the_injected_sleep(net):
    net.delay(0.25, dst="n2")
    net.client("n1").ping("n2")
    net.client("n1").ping("n3")
    assert net.sleeps == [0.25]
    net.heal()
    net.reorder(0.1)
    for _ in range(5):
        net.client("n1").ping("n2")
    assert len(net.sleeps) == 6 and all(0 <= s <= 0.1 for s in net.sleeps[1:])
    assert len(set(net.sleeps[1:])) > 1  # random extra waits: concurrent sends can overtake


def test_reordered_concurrent_messages_arrive_out_of_order_and_newest_still_wins(net):
    import time

    network = FakeNetwork(sleep=time.sleep, rng=random.Random(3))
    node = DictNode("n2")
    network.add("n2", node.server)
    network.reorder(0.02)
    peers = network.client("n1")
    threads = [
        threading.Thread(target=peers.apply, args=("n2", [rec(f"k{i % 2}", i)]))
        for i in range(1, 13)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert [kind for _s, _d, kind in network.delivered] == ["Apply"] * 12
    assert node.arrivals != sorted(node.arrivals)  # 12 random waits: some overtook others
    assert node.store["k0"].version.ts == 12 and node.store["k1"].version.ts == 11


def test_a_crashed_node_refuses_until_it_restarts_with_its_state(net):
    peers = net.client("n1")
    peers.apply("n2", [rec("a", 1)])
    net.crash("n2")
    with pytest.raises(PeerConnectError):
        peers.read("n2", "a")
    net.restart("n2", net.nodes["n2"].server)
    assert peers.read("n2", "a") == rec("a", 1)


def test_a_handler_refusal_is_a_peer_status_with_its_code(net):
    with pytest.raises(PeerStatus) as err:
        net.client("n1").stats("n2")
    assert (err.value.status, err.value.code, err.value.message) == (
        404,
        "not_found",
        "no stats here",
    )
