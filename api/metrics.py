"""Prometheus metrics of one node: request counts and latency per route and status, plus the
node's own figures (replication acks, hints, Raft state) read at scrape time."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily

from kvraft.node import Node

COUNTERS = ("writes", "reads", "replica_acks", "hints_stored", "hints_delivered", "read_repairs",
            "writes_unavailable", "sync_rounds", "sync_records", "sync_bytes",
            "sync_keys_repaired", "tombstones_purged", "records_handed_off")


class _NodeCollector:
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self):
        for name, value in sorted(self.node.metrics().items()):
            kind = "total" if name in COUNTERS else ""
            fam = GaugeMetricFamily(f"kvraft_{name}{'_' + kind if kind else ''}",
                                    f"kvraft node figure {name}", labels=["node"])
            fam.add_metric([self.node.id], value)
            yield fam


class Metrics:
    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("kvraft_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("kvraft_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1,
                                          2.5, 5))
        self.registry.register(_NodeCollector(node))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
