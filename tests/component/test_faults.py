"""Scripted faults against an in-process cluster of coordinators (tests/harness/inproc.py):
three nodes, two replicas per partition, the fake network, memory stores, fake clocks. Each test
is named for the fault it covers; each runs in milliseconds."""

from __future__ import annotations

import threading

import pytest

from kvraft.errors import NotFound, Unavailable
from kvraft.hlc import Version
from kvraft.storage import Record
from tests.harness.inproc import InProcCluster


@pytest.fixture
def cluster():
    c = InProcCluster()
    yield c
    c.close()


def test_write_acked_with_one_replica_dropped_leaves_a_hint(cluster):
    """n1 cannot reach its fellow replica n2: the write is acked by n1 and a hint on the
    stand-in n3, which delivers it once the network heals."""
    key = cluster.key_on(("n1", "n2"))
    cluster.network.drop("n1", "n2")
    result = cluster["n1"].put(key, b"v1", w="quorum")
    assert result.acks == 2 and result.hinted == ("n3",)
    assert cluster.held("n2", key) is None
    assert cluster.nodes["n3"].store.hint_targets() == {"n2": 1}
    cluster.heal()
    assert cluster.deliver_hints() == 1
    held = cluster.held("n2", key)
    assert held is not None and held.value == b"v1" and held.version == result.version
    assert cluster.nodes["n3"].store.hint_targets() == {}


@pytest.mark.parametrize("fault", ["", "lww_ack"])
def test_overwrite_through_a_skewed_node_is_not_lost(fault):
    """n1's clock runs 300 ms ahead (inside the offset guard's bound). Its write v1 carries a
    future timestamp; an overwrite through n3 right after stamps below it unless the coordinator
    learns v1 from the replicas and stamps again above it. ``lww_ack`` is the negative control:
    the plain last-writer-wins ack, which loses the overwrite."""
    cluster = InProcCluster(fault=fault)
    key = cluster.key_on(("n1", "n2"))
    cluster.skew("n1", 300)
    first = cluster["n1"].put(key, b"v1")
    second = cluster["n3"].put(key, b"v2")
    read = cluster["n2"].get(key, "all").value
    if fault == "lww_ack":
        assert second.version < first.version and read == b"v1"  # the acknowledged loss
        return
    assert second.version > first.version and read == b"v2"
    assert cluster.nodes["n3"].counters["writes_restamped"] == 1
    for n in ("n1", "n2"):
        assert cluster.held(n, key).version == second.version


def test_delete_through_a_node_whose_clock_is_behind_is_not_lost(cluster):
    """A delete through n3 (clock 400 ms behind) is stamped above the version it deletes."""
    key = cluster.key_on(("n1", "n2"))
    first = cluster["n1"].put(key, b"v1")
    cluster.skew("n3", -400)
    deleted = cluster["n3"].delete(key)
    assert deleted.version > first.version
    assert all(cluster.held(n, key).tomb for n in ("n1", "n2"))
    with pytest.raises(NotFound):
        cluster["n2"].get(key, "all")


def test_partitioned_coordinator_refuses_quorum_write(cluster):
    """n1 alone on its side of a partition: a quorum write of a key held by n2 and n3 gets no
    replica ack (a hint on n1 itself is not enough for quorum); w=all of a key n1 holds gets one
    of two. Both are refused, and the other side holds nothing of them."""
    cluster.network.partition({"n1"}, {"n2", "n3"})
    far = cluster.key_on(("n2", "n3"))
    with pytest.raises(Unavailable):
        cluster["n1"].put(far, b"lost", w="quorum")
    near = cluster.key_on(("n1", "n2"))
    with pytest.raises(Unavailable):
        cluster["n1"].put(near, b"lost", w="all")
    assert cluster.held("n2", far) is None and cluster.held("n3", far) is None
    assert cluster.held("n2", near) is None
    assert cluster.nodes["n1"].counters["writes_unavailable"] == 2
    # the majority side still takes writes
    assert cluster["n2"].put(far, b"kept", w="all").acks == 2


def test_reply_lost_after_apply_is_maybe_applied(cluster):
    """Both replicas apply n1's write but their answers are lost: n1 must refuse w=all
    (it cannot know), and the write it called unavailable is visible after the heal."""
    key = cluster.key_on(("n2", "n3"))
    cluster.network.drop("n1", "n2", after=True)
    cluster.network.drop("n1", "n3", after=True)
    with pytest.raises(Unavailable):
        cluster["n1"].put(key, b"maybe", w="all")
    assert cluster.held("n2", key).value == b"maybe" == cluster.held("n3", key).value
    cluster.heal()
    assert cluster["n1"].get(key, "all").value == b"maybe"


def test_read_repair_after_heal(cluster):
    """n2 missed a write while cut off (its hint is not delivered yet); after the heal an
    r=all read answers the newest value and repairs n2's copy."""
    key = cluster.key_on(("n1", "n2"))
    cluster["n1"].put(key, b"old", w="all")
    cluster.network.drop("n1", "n2")
    new = cluster["n1"].put(key, b"new", w="one")
    assert cluster.held("n2", key).value == b"old"
    cluster.heal()
    assert cluster["n3"].get(key, "all").value == b"new"
    assert cluster.nodes["n3"].counters["read_repairs"] == 1
    assert cluster.held("n2", key).version == new.version


def test_read_one_of_a_replica_that_missed_the_write_asks_the_others(cluster):
    """n2 was cut off for a write of a new key: an r=one read through n2 finds nothing locally
    and must ask n1 before answering "not found"."""
    key = cluster.key_on(("n1", "n2"))
    cluster.network.drop("n1", "n2")
    cluster["n1"].put(key, b"v", w="one")
    cluster.heal()
    assert cluster.held("n2", key) is None
    assert cluster["n2"].get(key, "one").value == b"v"


def test_crash_and_restart_from_the_store_bytes_keeps_acked_writes(cluster):
    """n2 crashes after acknowledged writes and restarts from its store's bytes with its clock
    stepped 400 ms back: the writes are still there, and its next overwrite is stamped above
    them from the stored versions (no restamp needed)."""
    keys = [cluster.key_on(("n2", "n3"), p) for p in ("a", "b", "c")]
    acked = {k: cluster["n2"].put(k, k.encode(), w="all").version for k in keys}
    cluster.crash("n2")
    with pytest.raises(Unavailable):
        cluster["n3"].put(keys[0], b"x", w="all")  # n2 is gone: w=all cannot be met
    cluster.skew("n2", -400)
    cluster.restart("n2")
    cluster.heal()
    for k, v in acked.items():
        assert cluster.held("n2", k).version >= v
    again = cluster["n2"].put(keys[1], b"again", w="all")
    assert again.version > acked[keys[1]]
    assert cluster.nodes["n2"].counters["writes_restamped"] == 0
    assert cluster["n1"].get(keys[1], "all").value == b"again"


def test_a_coordinator_restarted_with_its_clock_stepped_back_does_not_stamp_a_version_again(
    cluster,
):
    """n3 holds no copy of the key (its replicas are n1 and n2), so its store does not know the
    version it stamped. Restarted with its wall clock at the instant of the first write again
    (stepped back: the fake clock has not moved), it must still stamp its next write above the
    first (its clock mark): the same version would pass on the replicas as an acknowledgement
    of the second write while they keep the first."""
    key = cluster.key_on(("n1", "n2"))
    first = cluster["n3"].put(key, b"first", w="one")
    cluster.crash("n3")
    cluster.restart("n3")
    second = cluster["n3"].put(key, b"second", w="one")
    assert second.version > first.version
    for n in ("n1", "n2", "n3"):
        assert cluster[n].get(key, "all").value == b"second", n


def test_listing_with_a_crashed_replica_lists_every_key(cluster):
    """n1 crashed: every key written with w=all still lists through n2 (each partition has a
    live replica)."""
    keys = sorted(f"list{i}" for i in range(12))
    for k in keys:
        cluster["n3"].put(k, b"v", w="all")
    cluster.crash("n1")
    assert cluster["n2"].list_keys("list", None, 100) == (keys, None)


def test_reordered_replica_writes_keep_last_writer():
    """Three coordinators overwrite one key at once while the network delivers each message
    after a random delay (reordering them): whatever order the replicas saw, they end on the
    same record, at or above the acknowledged write with the highest version (a write refused
    after racing through every stamping is in doubt: it may be the one that wins)."""
    cluster = InProcCluster(threads=True)
    try:
        key = cluster.key_on(("n1", "n2"))
        cluster.network.reorder(0.01)
        acked: dict[bytes, Version] = {}  # value -> its acknowledged version
        doubt: set[bytes] = set()
        lock = threading.Lock()

        def writer(node_id: str) -> None:
            for i in range(5):
                value = f"{node_id}-{i}".encode()
                try:
                    res = cluster[node_id].put(key, value, w="quorum")
                except Unavailable:
                    with lock:
                        doubt.add(value)
                    continue
                with lock:
                    acked[value] = res.version

        threads = [threading.Thread(target=writer, args=(n,)) for n in cluster.ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a writer did not finish in 30 s"
        assert acked, "no write was acknowledged"
        cluster.heal()
        cluster.deliver_hints()
        held = [cluster.held(n, key) for n in ("n1", "n2")]
        assert all(isinstance(h, Record) for h in held)
        assert held[0] == held[1], held
        final = held[0]
        assert final.version >= max(acked.values())
        assert final.value in doubt or acked[final.value] == final.version
        assert cluster["n3"].get(key, "all").value == final.value
    finally:
        cluster.close()
