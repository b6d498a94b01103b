"""Prometheus metrics of one node (``GET /metrics``, text exposition format).

- HTTP: ``kvraft_http_requests_total{method,route,status}`` and the latency histogram
  ``kvraft_http_request_seconds{method,route,status}``, observed by the app for every public
  request (``route`` is the Flask rule, so keys never become label values).
- The node's own figures, read at scrape time from :meth:`api.ports.Cluster.metrics` and
  :meth:`~api.ports.Cluster.cluster`:
  counters (``*_total``: writes, reads, replication acks, hints stored and delivered, read
  repairs, the partition leader's forwards, sync rounds, records, bytes, repairs, purges,
  hand-offs), gauges (keys, bytes, hints pending here and in the cluster, partitions held per
  node, nodes up, under-replicated partitions, sync round and last round's figures) and Raft
  state (term, commit index, last applied, log length, quorum, leader known, role as
  ``kvraft_raft_state{state=...}``).

Reading figures must never change the node; a failing figure is skipped, not fatal to a scrape.
"""

from __future__ import annotations

import logging

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .ports import Cluster

log = logging.getLogger(__name__)

# Cluster.metrics() mixes the node's counters (Cluster.count, the syncer's totals) with these
# gauges; every other figure is a counter, so a counter added in the node shows up typed right.
GAUGES = frozenset(
    {
        "keys",
        "bytes",
        "hints_pending",
        "raft_term",
        "raft_commit_index",
        "raft_is_leader",
        "nodes_alive",
        "partitions_under_replicated",
        "rebalances",
        "sync_round",
        "sync_last_seconds",
        "sync_last_records",
        "sync_last_bytes",
        "gc_pause_longest_seconds",
        "gc_frozen_objects",
        "store_waiting",
    }
)
COUNTERS = (
    "writes",
    "reads",
    "replica_acks",
    "hints_stored",
    "hints_delivered",
    "read_repairs",
    "writes_unavailable",
    "sync_rounds",
    "sync_records",
    "sync_bytes",
    "sync_keys_repaired",
    "tombstones_purged",
    "records_handed_off",
    "forwards",
    "forwards_failed",
    "balanced_local",
    "replica_batches",
    "replica_batched_records",
    "read_batches",
    "read_batched_keys",
    "writes_restamped",
    "writes_grouped",
    "writes_to_owner",
    "writes_clock_refused",
    "clock_refused",
    "hints_superseded",
)  # present from the start, at 0
HELP = {
    "writes": "writes (PUT, POST, DELETE) this node coordinated",
    "reads": "reads this node coordinated",
    "replica_acks": "replica acknowledgements of writes this node coordinated",
    "hints_stored": "hints stored for a replica that was down",
    "hints_delivered": "hints delivered to their replica",
    "read_repairs": "stale replicas repaired by reads",
    "writes_unavailable": "writes refused for lack of acknowledgements",
    "writes_restamped": "write stampings redone above a newer version a replica kept",
    "writes_grouped": "PUTs of one key sent to its replicas in one round with others",
    "writes_to_owner": "PUTs of a hot key forwarded to its owner, its first replica serving",
    "writes_clock_refused": "writes refused because this node's clock is out of bounds",
    "hints_superseded": "hints their target refused: it held a newer version already",
    "store_commits": "transactions the store committed (a group of concurrent writes each)",
    "store_committed_writes": "writes those transactions carried (writes / commits: group size)",
    "store_waiting": "writes queued for the store's next commit",
    "gc_collections_gen0": "garbage collections of generation 0 in this node's process",
    "gc_collections_gen1": "garbage collections of generation 1 in this node's process",
    "gc_collections_gen2": "full garbage collections in this node's process",
    "gc_pause_seconds": "time the garbage collector held the process (the GIL), added up",
    "gc_pauses_long": "garbage collections that held the process 10 ms or longer",
    "gc_pause_longest_seconds": "the longest garbage collection since the node started",
    "gc_frozen_objects": "start-up objects frozen out of the collector's walks (gc.freeze)",
    "clock_refused": "versions not folded into the HLC: more than max_clock_offset ahead",
    "sync_rounds": "anti-entropy rounds this node ran",
    "sync_records": "records exchanged by anti-entropy",
    "sync_bytes": "bytes exchanged by anti-entropy",
    "sync_keys_repaired": "keys repaired by anti-entropy",
    "tombstones_purged": "tombstones purged after every replica synced past them",
    "records_handed_off": "records handed to a partition's new replicas",
    "forwards": "requests forwarded to another node (the leader's choice, or a hot key's owner)",
    "forwards_failed": "forwarded writes whose outcome is unknown (answered 502)",
    "balanced_local": "requests the partition leader chose to serve itself",
    "replica_batches": "replica-write requests sent to peers (each carries one or more records)",
    "replica_batched_records": "records sent in replica-write requests (/ batches = batch size)",
    "read_batches": "read requests sent to peers holding keys this node does not",
    "read_batched_keys": "keys asked for in read requests to peers (/ batches = batch size)",
    "keys": "live keys stored on this node",
    "bytes": "live value bytes stored on this node",
    "hints_pending": "hints this node holds, not yet delivered",
    "raft_term": "Raft term",
    "raft_commit_index": "Raft commit index",
    "raft_is_leader": "1 when this node is the Raft (partition) leader",
    "nodes_alive": "members this node sees alive (itself included)",
    "partitions_under_replicated": "partitions with fewer live filled replicas than the factor",
    "rebalances": "partition moves the leader has made",
    "sync_round": "current anti-entropy round",
    "sync_last_seconds": "duration of this node's last anti-entropy round",
    "sync_last_records": "records exchanged in this node's last round",
    "sync_last_bytes": "bytes exchanged in this node's last round",
}
RAFT_STATES = ("follower", "candidate", "leader")


class _NodeCollector:
    def __init__(self, node: Cluster) -> None:
        self.node = node

    def describe(self):
        return []  # names vary with the node's figures; do not collect at registration

    def collect(self):
        node_id = self.node.id
        figures = self.node.metrics()
        for name in COUNTERS:
            figures.setdefault(name, 0.0)  # every counter exists from the start
        for name, value in sorted(figures.items()):
            help_text = HELP.get(name, f"kvraft node figure {name}")
            fam: CounterMetricFamily | GaugeMetricFamily
            if name not in GAUGES:
                fam = CounterMetricFamily(f"kvraft_{name}", help_text, labels=["node"])
            else:
                fam = GaugeMetricFamily(f"kvraft_{name}", help_text, labels=["node"])
            fam.add_metric([node_id], value)
            yield fam
        try:
            view = self.node.cluster()
        except Exception:  # noqa: BLE001 - a scrape shows what it can
            log.exception("cluster view for metrics failed")
            return
        yield from _cluster_families(node_id, view)


def _gauge(name: str, help_text: str, value: float, node_id: str) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, help_text, labels=["node"])
    fam.add_metric([node_id], float(value))
    return fam


def _cluster_families(node_id: str, view: dict):
    """Figures of :meth:`Cluster.cluster` that :meth:`Cluster.metrics` does not carry."""
    raft = view.get("raft", {})
    state = GaugeMetricFamily(
        "kvraft_raft_state", "1 for this node's Raft role", labels=["node", "state"]
    )
    for s in RAFT_STATES:
        state.add_metric([node_id, s], float(raft.get("state") == s))
    yield state
    for key, help_text in (
        ("last_applied", "Raft index applied to the metadata"),
        ("log_len", "Raft log entries kept"),
        ("has_quorum", "1 when this node's Raft sees a quorum"),
    ):
        if key in raft:
            yield _gauge(f"kvraft_raft_{key}", help_text, float(raft[key]), node_id)
    yield _gauge(
        "kvraft_raft_leader_known",
        "1 when this node knows a Raft leader",
        float(view.get("leader") is not None),
        node_id,
    )
    yield _gauge(
        "kvraft_hints_pending_cluster",
        "hints pending on all nodes (as reported)",
        view.get("hints_pending_cluster", 0),
        node_id,
    )
    partitions = view.get("partitions", {})
    yield _gauge("kvraft_partitions", "partitions in the map", len(partitions), node_id)
    yield _gauge(
        "kvraft_partition_epoch",
        "partition map epoch (changes on every move)",
        view.get("partition_epoch", 0),
        node_id,
    )
    for key, help_text in (
        ("filling", "replicas being filled"),
        ("leaving", "replicas being drained"),
    ):
        yield _gauge(
            f"kvraft_replicas_{key}",
            help_text,
            sum(len(v) for v in view.get(key, {}).values()),
            node_id,
        )
    held: dict[str, int] = {n["id"]: 0 for n in view.get("nodes", [])}
    for replicas in partitions.values():
        for r in replicas:
            held[r] = held.get(r, 0) + 1
    placed = GaugeMetricFamily(
        "kvraft_partitions_held",
        "partitions each member holds (placement balance)",
        labels=["node", "member"],
    )
    up = GaugeMetricFamily(
        "kvraft_member_up", "1 when this node sees the member alive", labels=["node", "member"]
    )
    stored = GaugeMetricFamily(
        "kvraft_member_bytes", "live value bytes each member reports", labels=["node", "member"]
    )
    for n in view.get("nodes", []):
        up.add_metric([node_id, n["id"]], float(bool(n.get("alive"))))
        if n.get("bytes") is not None:
            stored.add_metric([node_id, n["id"]], float(n["bytes"]))
    for member, count in sorted(held.items()):
        placed.add_metric([node_id, member], float(count))
    yield from (placed, up, stored)
    clock = view.get("clock", {})
    offsets = GaugeMetricFamily(
        "kvraft_clock_offset_seconds",
        "each peer's clock minus this node's (from pings, NTP-style)",
        labels=["node", "peer"],
    )
    for peer, ms in sorted(clock.get("offsets_ms", {}).items()):
        if ms is not None:
            offsets.add_metric([node_id, peer], ms / 1000.0)
    yield offsets
    yield _gauge(
        "kvraft_clock_ok",
        "1 when this node's clock is within max_clock_offset of the majority of its peers",
        float(bool(clock.get("ok", True))),
        node_id,
    )
    sync = view.get("sync", {})
    yield _gauge(
        "kvraft_sync_interval_seconds",
        "seconds between anti-entropy rounds",
        sync.get("interval", 0),
        node_id,
    )
    yield _gauge(
        "kvraft_sync_partitions_synced_last_round",
        "partitions whose replicas all synced in the last or current round",
        sync.get("partitions_synced_last_round", 0),
        node_id,
    )
    last = sync.get("last_local_round", {})
    for key in ("partitions", "synced", "repaired", "purged", "handed_off"):
        if key in last:
            yield _gauge(
                f"kvraft_sync_last_{key}",
                f"{key} in this node's last sync round",
                last[key],
                node_id,
            )
    yield _gauge(
        "kvraft_sync_last_errors",
        "errors in this node's last sync round",
        len(last.get("errors", [])),
        node_id,
    )


class Metrics:
    def __init__(self, node: Cluster) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kvraft_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kvraft_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.registry.register(_NodeCollector(node))
        self._series: dict[tuple, tuple] = {}  # labels -> (counter, histogram) children

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:  # labels() looks the child up under a lock: once per label set
            labels = (method, route, str(status))
            series = self._series[(method, route, status)] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
