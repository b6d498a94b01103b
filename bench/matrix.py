"""Runs the benchmark matrix (value size x concurrency x op) against one system's cluster.

Shared by `compare.py` (three systems) and `latency.py` (kvraft only). It starts the system's
cluster with its launcher, pre-populates the keys that the GET cells read, runs one loadgen cell
per combination, and returns one `Cell` per combination. A launcher or cell failure becomes a
`Cell` with `failed` set, so one broken system never hides the others' figures.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

from bench import loadgen
from bench.etcd import EtcdCluster
from bench.kvraft_cluster import KvraftCluster
from bench.naive.cluster import NaiveCluster

LAUNCHERS = {"kvraft": KvraftCluster, "etcd": EtcdCluster, "naive": NaiveCluster}

# Where each system's writes are sent. All three accept writes on any node: kvraft by design,
# etcd forwards proposals to its leader, pysyncobj forwards a follower's command to the leader.
WRITE_TARGETS = {
    "kvraft": "all nodes, round-robin (any node coordinates a write)",
    "etcd": "all members, round-robin (followers forward proposals to the leader)",
    "naive": "all nodes, round-robin (pysyncobj followers forward commands to the leader)",
}

READ_KEYS = 256  # keys pre-populated per value size for the GET cells
WRITE_KEYS = 1000  # PUT cells cycle over this many keys (bounds etcd's and the journals' growth)


@dataclass
class Cell:
    """One measured combination. Latencies in ms; `failed` holds the reason when not measured."""

    system: str
    op: str
    concurrency: int
    value_size: int
    throughput: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    error_kinds: dict | None = None
    failed: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def measure_urls(
    system: str, urls: list[str], sizes, concurrencies, ops, seconds: float, warmup: float
) -> list[Cell]:
    """Run every cell against an already running cluster at `urls` (GETs pre-populated here)."""
    cells = []
    for size in sizes:
        if "get" in ops:
            pre = loadgen.run_sync(
                urls,
                system,
                "put",
                16,
                size,
                requests=READ_KEYS,
                seconds=120,
                warmup=0,
                keys=READ_KEYS,
                key_prefix=f"read-{size}-",
            )
            if pre.errors:
                _log(
                    f"  {system}: pre-populating {size} B keys had {pre.errors} errors "
                    f"{dict(pre.error_kinds)}"
                )
        for conc in concurrencies:
            for op in ops:
                prefix = f"write-{size}-" if op == "put" else f"read-{size}-"
                keys = WRITE_KEYS if op == "put" else READ_KEYS
                cell = Cell(system, op, conc, size)
                try:
                    res = loadgen.run_sync(
                        urls,
                        system,
                        op,
                        conc,
                        size,
                        seconds=seconds,
                        warmup=warmup,
                        keys=keys,
                        key_prefix=prefix,
                    )
                except Exception as exc:  # a cell failure is reported, not fatal
                    cell.failed = _first_line(exc)
                else:
                    cell.throughput, cell.p50_ms, cell.p99_ms = (
                        res.throughput,
                        res.p50_ms,
                        res.p99_ms,
                    )
                    cell.requests, cell.errors = res.requests, res.errors
                    cell.error_kinds = dict(res.error_kinds.most_common(5))
                _log(
                    f"  {system:6} {op:3} C={conc:<2} {size:>5} B: {cell.throughput:8.1f} req/s "
                    f"p50 {cell.p50_ms:7.2f} ms p99 {cell.p99_ms:7.2f} ms errors {cell.errors}"
                    + (f" FAILED {cell.failed}" if cell.failed else "")
                )
                cells.append(cell)
    return cells


def measure_system(
    system: str, sizes, concurrencies, ops, seconds: float, warmup: float
) -> list[Cell]:
    """Start `system`'s 3-node cluster, run every cell, stop it. Never raises for a failure."""
    started = time.monotonic()
    _log(f"{system}: starting a 3-node cluster on 127.0.0.1")
    try:
        with LAUNCHERS[system]() as cluster:
            _log(f"{system}: up in {time.monotonic() - started:.1f} s at {', '.join(cluster.urls)}")
            return measure_urls(system, cluster.urls, sizes, concurrencies, ops, seconds, warmup)
    except Exception as exc:  # reported in the table instead
        reason = _first_line(exc)
        _log(f"{system}: FAILED: {exc}")
        return [
            Cell(system, op, c, s, failed=reason)
            for s in sizes
            for c in concurrencies
            for op in ops
        ]
