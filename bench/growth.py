"""How kvraft's cost grows: with cluster size, store size and stored keys (`make bench-growth`).

One run measures, on 127.0.0.1, with real clusters started by `python -m kvraft up`:

1. throughput against cluster size: PUT and GET at 16 connections, 100 B values, on 3, 5 and 7
   nodes (replication factor 2), loadgen connections spread round-robin over all nodes;
2. one anti-entropy round's time, bytes and records against store size (10k, 100k, 1M keys;
   --quick: 10k, 100k), with 0 differences and with 10 differences (a newer version on one
   replica only), on a 3-node cluster with `KVRAFT_SYNC_INTERVAL=1`;
3. resident memory (VmRSS of each node's process) against
   stored keys (0, 10k, 100k, 1M), on that same cluster as it is filled;
4. start-up time to ready: from launching `kvraft up` until `GET /ready` answers 200 on every
   node, for 3, 5 and 7 nodes.

Keys for 2 and 3 are bulk-loaded straight into both replicas of their partition through the peer
endpoint `POST /peer/apply` (5,000 records per request, stamped fresh per batch and sent to both
replicas back to back), because a million PUTs would take about an hour. It prints markdown tables
to stdout and progress to stderr, and writes bench/out/growth.md, bench/out/growth.json and
bench/out/growth.png.

    python -m bench.growth [--quick] [--seconds 10] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from bench import loadgen, procs
from bench.kvraft_cluster import REPO, KvraftCluster, available
from bench.matrix import measure_urls
from kvraft import peerauth
from kvraft.core.placement import partition_of
from kvraft.hlc import Version
from kvraft.peer.messages import decode_results
from kvraft.peer.wire import encode_records
from kvraft.storage import Record

OUT = Path(__file__).resolve().parent / "out"
NODE_COUNTS = (3, 5, 7)
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
VALUE_SIZE = 100
CONCURRENCY = 16
DIFFERENCES = 10
QUIET_ROUNDS = 5  # 0-difference rounds measured per store size (median and max reported)
BATCH = 5000  # records per /peer/apply request (ts + index must stay below 2**16 per ms)
SYNC_INTERVAL = 1
KEY_PREFIX = "grow/"
# Ports clear of compare.py's (18101-18503) and etcd's (2379x, 2380x).
HTTP_BASE, RAFT_BASE, FTP_PORT = 18601, 18701, 18801


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def key_of(i: int) -> str:
    return f"{KEY_PREFIX}{i:07d}"


def fresh_ts(i: int = 0) -> int:
    """A hybrid-clock timestamp for now: wall milliseconds in the high bits, `i` below."""
    return (int(time.time() * 1000) << 16) + i


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- the cluster


class GrowthCluster(KvraftCluster):
    """A `kvraft up` cluster that also times its start-up, passes extra environment, knows its
    secret, and finds each node's processes (from the pids `kvraft up` prints)."""

    def __init__(self, nodes: int, env: dict | None = None, **kwargs) -> None:
        kwargs.setdefault("http_base", HTTP_BASE)
        kwargs.setdefault("raft_base", RAFT_BASE)
        kwargs.setdefault("ftp_port", FTP_PORT)
        super().__init__(nodes, **kwargs)
        self.env = dict(env or {})
        self.startup_s = float("nan")
        self.secret = ""
        self.t0 = 0.0
        self.ready_at: dict[str, float] = {}  # url -> seconds after launch of its first 200

    def _ready(self) -> bool:
        """Every node has answered /ready with 200 (each one's first 200 is timed)."""
        for url in self.urls:
            if url not in self.ready_at and procs.http("GET", url + "/ready")[0] == 200:
                self.ready_at[url] = time.monotonic() - self.t0
        return len(self.ready_at) == len(self.urls)

    def start(self) -> GrowthCluster:
        ports = [self.http_base + i for i in range(self.nodes)]
        ports += [self.raft_base + i for i in range(self.nodes)] + [self.ftp_port]
        busy = [p for p in ports if not port_free(p)]
        if busy:
            raise RuntimeError(f"ports in use on 127.0.0.1: {busy}")
        self.tmp = Path(tempfile.mkdtemp(prefix="kvraft-bench-growth-"))
        cmd = [
            sys.executable, "-m", "kvraft", "up",
            "--nodes", str(self.nodes),
            "--data-dir", str(self.tmp / "data"),
            "--http-base", str(self.http_base),
            "--raft-base", str(self.raft_base),
            "--ftp-port", str(self.ftp_port),
        ]  # fmt: skip
        log_path = self.tmp / "up.log"
        env = dict(os.environ, **self.env)
        self.t0 = time.monotonic()
        self.proc = procs.spawn(cmd, log_path, env=env, cwd=REPO)
        try:
            procs.wait_until(
                self._ready, self.start_timeout, "kvraft /ready", [self.proc], interval=0.05
            )
        except RuntimeError as exc:
            tail = procs.tail(log_path, 30)
            self.stop()
            raise RuntimeError(f"{exc}\n--- kvraft up log ---\n{tail}") from None
        self.startup_s = time.monotonic() - self.t0
        self.urls = self._urls_from_cluster()
        secret_file = self.tmp / "data" / "secret"
        self.secret = self.env.get("KVRAFT_SECRET") or secret_file.read_text().strip()
        return self

    # -- introspection

    def node_ids(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]

    def url_of(self, node_id: str) -> str:
        return self.urls[int(node_id[1:]) - 1]

    def view(self, node_id: str = "n1", timeout: float = 10.0) -> dict:
        status, body = procs.http("GET", self.url_of(node_id) + "/cluster", timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET /cluster on {node_id}: status {status}")
        return json.loads(body)

    def serve_pids(self) -> dict[str, int]:
        """node id -> pid of its `kvraft serve` process (the whole node), from up.log."""
        assert self.tmp is not None
        text = procs.tail(self.tmp / "up.log", 200)
        found = {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^(n\d+)\s+http://\S+.*\bpid (\d+)\s*$", text, re.M)
        }
        return found

    def data_bytes(self, node_id: str) -> int:
        assert self.tmp is not None
        total = 0
        for path in (self.tmp / "data" / node_id).rglob("*"):
            try:
                if path.is_file():
                    total += path.stat().st_size
            except OSError:
                pass
        return total


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# --------------------------------------------------------------------------- 1 and 4


def measure_sizes(node_counts, seconds: float, warmup: float, passes: int) -> tuple[list, list]:
    """Throughput rows and start-up rows, one per cluster size.

    Each pass starts every cluster size in turn (3, 5, 7, then again), so a slow spell of a
    shared machine spreads over all sizes instead of landing on one; each start is one start-up
    sample, and the throughput figures are the medians over the passes.
    """
    runs: dict[int, dict[str, list]] = {n: {"put": [], "get": []} for n in node_counts}
    samples: dict[int, list[float]] = {n: [] for n in node_counts}
    first: dict[int, list[float]] = {n: [] for n in node_counts}
    idle_rss: dict[int, list[int]] = {n: [] for n in node_counts}
    failed: dict[int, str] = {}
    for rep in range(passes):
        for n in node_counts:
            log(f"cluster size {n}: pass {rep + 1}/{passes}")
            try:
                with GrowthCluster(n) as c:
                    samples[n].append(c.startup_s)
                    first[n].append(min(c.ready_at.values()))
                    log(f"  ready in {c.startup_s:.2f} s (first node {first[n][-1]:.2f} s)")
                    time.sleep(1.0)
                    idle_rss[n] += [r for r in map(rss_kib, c.serve_pids().values()) if r]
                    cells = measure_urls(
                        "kvraft", c.urls, (VALUE_SIZE,), (CONCURRENCY,), ("put", "get"),
                        seconds, warmup,
                    )  # fmt: skip
                    for cell in cells:
                        runs[n][cell.op].append({
                            "throughput": cell.throughput, "p50_ms": cell.p50_ms,
                            "p99_ms": cell.p99_ms, "errors": cell.errors,
                            "requests": cell.requests, "failed": cell.failed,
                        })  # fmt: skip
            except Exception as exc:  # a failed size is reported, the others still run
                log(f"  FAILED: {exc}")
                failed.setdefault(n, str(exc).splitlines()[0][:200])
    tput_rows, start_rows = [], []
    for n in node_counts:
        row: dict = {"nodes": n}
        if n in failed:
            row["failed"] = failed[n]
        for op in ("put", "get"):
            good = [x for x in runs[n][op] if not x["failed"]]
            if not good:
                continue
            row[op] = {
                "throughput": statistics.median(x["throughput"] for x in good),
                "p50_ms": statistics.median(x["p50_ms"] for x in good),
                "p99_ms": statistics.median(x["p99_ms"] for x in good),
                "errors": sum(x["errors"] for x in good),
                "requests": sum(x["requests"] for x in good),
                "runs": [x["throughput"] for x in good],
                "failed": None,
            }
        tput_rows.append(row)
        rss = idle_rss[n]
        start_rows.append({
            "nodes": n, "samples": samples[n],
            "median_s": statistics.median(samples[n]) if samples[n] else float("nan"),
            "first_node_median_s": statistics.median(first[n]) if first[n] else float("nan"),
            "idle_rss_mib": (sum(rss) / len(rss) / 1024) if rss else float("nan"),
        })  # fmt: skip
    return tput_rows, start_rows


# --------------------------------------------------------------------------- 2 and 3


class RoundWatcher:
    """Polls every node's `/cluster` and keeps each node's `last_local_round` figures.

    A node runs the newest round the leader has opened and skips the ones opened while it was
    busy, so a round id may have figures from only some nodes. `sync_rounds` in each node's totals
    counts the rounds it ran: when it grew by more than one between two polls, a round's figures
    were missed (counted in `missed`).
    """

    def __init__(self, c: GrowthCluster) -> None:
        self.c = c
        self.rounds: dict[int, dict[str, dict]] = {}  # round id -> node -> its figures
        self.last_id: dict[str, int] = {}
        self.ran: dict[str, int] = {}  # node -> rounds run (totals.sync_rounds)
        self.missed: dict[str, int] = {n: 0 for n in c.node_ids()}
        self.totals: dict[str, dict] = {}
        self.views: dict[str, dict] = {}

    def poll(self) -> None:
        for node_id in self.c.node_ids():
            try:
                view = self.c.view(node_id)
            except (RuntimeError, ValueError):
                continue
            last, totals = view["sync"]["last_local_round"], view["sync"]["totals"]
            ran = int(totals.get("sync_rounds", 0))
            before = self.ran.get(node_id)
            if before is not None and ran > before:
                self.rounds.setdefault(int(last["id"]), {})[node_id] = last
                self.missed[node_id] += ran - before - 1
            self.ran[node_id] = ran
            self.last_id[node_id] = int(last["id"])
            self.totals[node_id] = totals
            self.views[node_id] = view

    def total(self, name: str) -> int:
        return sum(int(t.get(name, 0)) for t in self.totals.values())

    def mark(self) -> dict[str, int]:
        """Rounds run so far by each node (poll first)."""
        return dict(self.ran)

    def wait_rounds(self, since: dict[str, int], n: int, timeout: float) -> None:
        """Wait until every node has run `n` more rounds than at `since`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            if all(self.ran.get(k, 0) >= since.get(k, 0) + n for k in self.c.node_ids()):
                return
            time.sleep(0.15)
        raise RuntimeError(f"not every node ran {n} more sync rounds within {timeout:.0f} s")

    def node_rounds(self, after_id: int, through_id: int | None = None) -> list[tuple[str, dict]]:
        """(node, figures) of every captured local round with after_id < id <= through_id."""
        out = []
        for rid in sorted(self.rounds):
            if rid > after_id and (through_id is None or rid <= through_id):
                out += sorted(self.rounds[rid].items())
        return out

    def summary(self, round_id: int) -> dict | None:
        """One round over the nodes that ran it: max seconds, summed records and bytes."""
        per = self.rounds.get(round_id, {})
        if not per:
            return None
        return {
            "round": round_id,
            "nodes": len(per),
            "seconds": max(float(r["seconds"]) for r in per.values()),
            "records": sum(int(r["records"]) for r in per.values()),
            "bytes": sum(int(r["bytes"]) for r in per.values()),
            "errors": sum(len(r.get("errors") or []) for r in per.values()),
        }


def signed(secret: str, body: bytes, headers: dict) -> dict:
    """``headers`` plus the peer signature of ``POST /peer/apply`` with ``body``."""
    key = peerauth.derive(secret, peerauth.PEER_HTTP)
    return {**headers, peerauth.HEADER: peerauth.sign(key, "POST", "/peer/apply", body)}


def bulk_load(c: GrowthCluster, pmap: dict, start: int, stop: int, deadline_s: float) -> int:
    """Write keys start..stop-1 to both replicas of their partitions; returns records applied."""
    if stop <= start:
        return 0
    parts = len(pmap)
    buckets: dict[tuple[str, ...], list[int]] = {}
    for i in range(start, stop):
        buckets.setdefault(tuple(pmap[str(partition_of(key_of(i), parts))]), []).append(i)
    value = loadgen.make_value(VALUE_SIZE)
    headers = {"Content-Type": "application/octet-stream"}
    t0 = last_report = time.monotonic()
    end = t0 + deadline_s
    done = applied = 0
    for reps, ids in sorted(buckets.items()):
        for j in range(0, len(ids), BATCH):
            if time.monotonic() > end:
                raise RuntimeError(f"bulk load not done in {deadline_s:.0f} s ({done} keys)")
            batch = ids[j : j + BATCH]
            base = fresh_ts()  # fresh per batch: see the tombstone watermark note in the docs
            body = encode_records(
                Record(key_of(i), partition_of(key_of(i), parts), Version(base + n, "n1"),
                       False, value)
                for n, i in enumerate(batch)
            )  # fmt: skip
            for node_id in reps:  # both replicas, back to back
                status, resp = procs.http(
                    "POST",
                    c.url_of(node_id) + "/peer/apply",
                    body,
                    timeout=300,
                    headers=signed(c.secret, body, headers),
                )
                if status != 200:
                    raise RuntimeError(f"/peer/apply on {node_id}: status {status} {resp[:200]!r}")
                applied += sum(1 for r in decode_results(resp) if r.applied)
            done += len(batch)
            now = time.monotonic()
            if now - last_report >= 10:
                rate = done / (now - t0)
                log(
                    f"  loaded {start + done:,}/{stop:,} keys ({rate:,.0f} keys/s, "
                    f"about {(stop - start - done) / rate:.0f} s left)"
                )
                last_report = now
    log(f"  loaded {stop:,} keys ({done:,} new in {time.monotonic() - t0:.1f} s)")
    return applied


def wait_quiet(w: RoundWatcher, rounds: int, timeout: float) -> None:
    """Wait until every node ran `rounds` rounds in a row in which no records were exchanged."""
    end = time.monotonic() + timeout
    w.poll()
    since, records = w.mark(), w.total("sync_records")
    while time.monotonic() < end:
        time.sleep(0.2)
        w.poll()
        if w.total("sync_records") != records:
            since, records = w.mark(), w.total("sync_records")
        elif all(w.ran.get(k, 0) >= since.get(k, 0) + rounds for k in w.c.node_ids()):
            return
    raise RuntimeError(f"no {rounds} quiet sync rounds in a row within {timeout:.0f} s")


def memory_row(c: GrowthCluster, w: RoundWatcher, stored: int) -> dict:
    w.poll()
    workers = c.serve_pids()
    per = {}
    for node_id in c.node_ids():
        view = w.views.get(node_id, {})
        mine = next((n for n in view.get("nodes", []) if n.get("id") == node_id), {})
        rss = rss_kib(workers[node_id]) if node_id in workers else None
        per[node_id] = {
            "rss_mib": rss / 1024 if rss else float("nan"),
            "keys": mine.get("keys"),
            "data_mib": c.data_bytes(node_id) / 2**20,
        }
    return {"stored": stored, "nodes": per}


def measure_sync(c: GrowthCluster, w: RoundWatcher, pmap: dict, stored: int) -> dict:
    """0-difference rounds, then 10 differences: rounds' time, records and bytes."""
    row: dict = {"stored": stored}
    w.poll()
    start_id = max(w.last_id.values())
    since = w.mark()
    w.wait_rounds(since, QUIET_ROUNDS, 60 + 10 * QUIET_ROUNDS)
    through_id = max(w.last_id.values())
    row["quiet_ids_opened"] = through_id - start_id
    row["quiet_runs"] = {k: w.ran[k] - since.get(k, 0) for k in c.node_ids()}
    quiet = [(n, r) for n, r in w.node_rounds(start_id, through_id) if not int(r["records"])]
    row["quiet_node_rounds"] = [{"node": n, **r} for n, r in quiet]
    row["quiet_rounds"] = [
        x for rid in range(start_id + 1, through_id + 1) if (x := w.summary(rid)) is not None
    ]
    # 10 differences: a newer version on the first replica only, spread over the key space
    parts = len(pmap)
    step = max(1, stored // DIFFERENCES)
    keys = [key_of(min(stored - 1, i * step + step // 2)) for i in range(DIFFERENCES)]
    headers = {"Content-Type": "application/octet-stream"}
    w.poll()
    before_id = max(w.last_id.values())
    before_missed = sum(w.missed.values())
    before_records, before_bytes = w.total("sync_records"), w.total("sync_bytes")
    t_inject = time.monotonic()
    for n, k in enumerate(keys):
        p = partition_of(k, parts)
        rec = Record(k, p, Version(fresh_ts(n), "n2"), False, b"changed".ljust(VALUE_SIZE, b"."))
        body = encode_records([rec])
        status, resp = procs.http(
            "POST",
            c.url_of(pmap[str(p)][0]) + "/peer/apply",
            body,
            timeout=30,
            headers=signed(c.secret, body, headers),
        )
        if status != 200:
            raise RuntimeError(f"difference write: status {status} {resp[:200]!r}")
    end = time.monotonic() + 120
    while w.total("sync_records") - before_records < DIFFERENCES and time.monotonic() < end:
        time.sleep(0.15)
        w.poll()
    row["synced_after_s"] = time.monotonic() - t_inject
    w.wait_rounds(w.mark(), 1, 120)  # and one more round on every node, fully reported
    after_id = max(w.last_id.values())
    row["window_rounds"] = after_id - before_id
    row["window_records"] = w.total("sync_records") - before_records
    row["window_bytes"] = w.total("sync_bytes") - before_bytes
    row["missed_rounds"] = sum(w.missed.values()) - before_missed
    carrying = sorted(
        {
            rid
            for rid in range(before_id + 1, after_id + 1)
            if any(int(r["records"]) for r in w.rounds.get(rid, {}).values())
        }
    )
    row["diff_rounds"] = [x for rid in carrying if (x := w.summary(rid)) is not None]
    agree = 0
    for k in keys:
        status, body = procs.http(
            "GET", c.urls[0] + "/kv/" + quote(k, safe="") + "?explain=1", timeout=10
        )
        if status == 200 and json.loads(body).get("agree"):
            agree += 1
    row["agree"] = agree
    return row


def measure_store(sizes, load_deadline: float, res: dict) -> None:
    """Sync rows (one per size) and memory rows (0 and each size) on one 3-node cluster, appended
    to res["sync"] and res["memory"] as they are measured (a failure keeps the earlier rows)."""
    log(f"store size: starting 3 nodes with KVRAFT_SYNC_INTERVAL={SYNC_INTERVAL}")
    with GrowthCluster(3, env={"KVRAFT_SYNC_INTERVAL": str(SYNC_INTERVAL)}) as c:
        log(f"  ready in {c.startup_s:.2f} s")
        w = RoundWatcher(c)
        pmap = c.view()["partitions"]
        res["store"]["partitions"] = len(pmap)
        wait_quiet(w, 2, 60)
        res["memory"].append(memory_row(c, w, 0))
        log("  memory at 0 keys: " + mem_text(res["memory"][-1]))
        loaded = 0
        for size in sizes:
            log(f"store size {size:,}: bulk load")
            t0 = time.monotonic()
            applied = bulk_load(c, pmap, loaded, size, load_deadline)
            load_s = time.monotonic() - t0
            already = 2 * (size - loaded) - applied
            if already:  # a sync round ran between the two posts of a batch and copied them
                log(f"  note: {already:,} records were already on the second replica")
            loaded = size
            if c.view()["partitions"] != pmap:
                raise RuntimeError("the partition map changed during the load")
            t0 = time.monotonic()
            wait_quiet(w, 2, 600)
            log(f"  quiet after {time.monotonic() - t0:.1f} s")
            res["memory"].append(memory_row(c, w, size))
            log("  memory: " + mem_text(res["memory"][-1]))
            row = measure_sync(c, w, pmap, size)
            row["load_s"] = load_s
            res["sync"].append(row)
            brief = {k: v for k, v in row.items() if not k.startswith("quiet")}
            log("  sync: " + json.dumps(brief))


# --------------------------------------------------------------------------- report


def fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def mem_text(row: dict) -> str:
    return ", ".join(
        f"{n} {fmt(v['rss_mib'])} MiB ({v['keys']} keys)" for n, v in row["nodes"].items()
    )


def size_text(n: int) -> str:
    return (
        f"{n // 1_000_000}M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else (f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))
    )


def render_throughput(rows: list) -> str:
    if not rows:
        return "(not measured in this run)"
    lines = [
        "| nodes | PUT req/s | PUT req/s of each pass | PUT p50 ms | PUT p99 ms | GET req/s"
        " | GET req/s of each pass | GET p50 ms | GET p99 ms | PUT vs 3 nodes | GET vs 3 nodes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = rows[0] if rows else {}
    for r in rows:
        cols = [str(r["nodes"])]
        for op in ("put", "get"):
            cell = r.get(op)
            if not cell or cell.get("failed"):
                cols += ["failed", "-", "-", "-"]
                continue
            t = fmt(cell["throughput"]) + (f" ({cell['errors']} err)" if cell["errors"] else "")
            each = ", ".join(fmt(x, 0) for x in cell.get("runs", []))
            cols += [t, each, fmt(cell["p50_ms"], 2), fmt(cell["p99_ms"], 2)]
        for op in ("put", "get"):
            a, b = r.get(op) or {}, base.get(op) or {}
            ok = a.get("throughput") and b.get("throughput")
            cols.append(f"{a['throughput'] / b['throughput']:.2f}x" if ok else "-")
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def render_startup(rows: list) -> str:
    if not rows:
        return "(not measured in this run)"
    lines = [
        "| nodes | all nodes ready after s (median) | samples s | first node ready after s"
        " (median) | idle RSS per node MiB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        samples = ", ".join(f"{s:.2f}" for s in r["samples"]) or "failed"
        lines.append(
            f"| {r['nodes']} | {fmt(r['median_s'], 2)} | {samples} | "
            f"{fmt(r.get('first_node_median_s'), 2)} | {fmt(r['idle_rss_mib'])} |"
        )
    return "\n".join(lines)


def quiet_figures(row: dict) -> dict:
    """A quiet round for the cluster, from each node's median local round: the slowest node's
    median seconds, and bytes and records summed over the nodes' medians."""
    per: dict[str, list[dict]] = {}
    for r in row.get("quiet_node_rounds") or []:
        per.setdefault(r["node"], []).append(r)
    if not per:
        return {"seconds": float("nan"), "max_seconds": float("nan"), "bytes": float("nan"),
                "records": float("nan")}  # fmt: skip
    return {
        "seconds": max(statistics.median(float(x["seconds"]) for x in v) for v in per.values()),
        "max_seconds": max(float(x["seconds"]) for v in per.values() for x in v),
        "bytes": sum(statistics.median(int(x["bytes"]) for x in v) for v in per.values()),
        "records": sum(statistics.median(int(x["records"]) for x in v) for v in per.values()),
    }


def render_sync(rows: list) -> str:
    if not rows:
        return "(not measured in this run)"
    lines = [
        "| keys | quiet round s, median (max) | quiet round bytes | quiet round records"
        " | 10-diff round s | 10-diff round bytes | 10-diff records | rounds carrying it"
        " | synced after s | bytes per difference beyond quiet |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = quiet_figures(r)
        d = r.get("diff_rounds") or []
        if d:
            d_s = max(x["seconds"] for x in d)
            d_b = sum(x["bytes"] for x in d)
            d_r = sum(x["records"] for x in d)
            extra = (d_b - len(d) * q["bytes"]) / DIFFERENCES
        else:  # per-round figures missed: the totals over the window instead
            d_s = float("nan")
            d_b, d_r = r.get("window_bytes"), r.get("window_records")
            extra = float("nan")
        lines.append(
            f"| {size_text(r['stored'])} | {fmt(q['seconds'], 3)} ({fmt(q['max_seconds'], 3)}) | "
            f"{fmt(q['bytes'], 0)} | {fmt(q['records'], 0)} | "
            f"{fmt(d_s, 3)} | {fmt(d_b, 0)} | {fmt(d_r, 0)} | {len(d) or '-'} | "
            f"{fmt(r.get('synced_after_s'), 2)} | {fmt(extra, 0)} |"
        )
    return "\n".join(lines)


def render_memory(rows: list) -> str:
    if not rows:
        return "(not measured in this run)"
    ids = sorted({n for r in rows for n in r["nodes"]})
    head = ["stored keys"] + [f"{n} RSS MiB (keys)" for n in ids]
    head += ["mean RSS MiB", "RSS growth per 1k keys held, KiB", "data on disk per node MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[0] if rows else None

    def mean_rss(r):
        vals = [v["rss_mib"] for v in r["nodes"].values() if not math.isnan(v["rss_mib"])]
        return sum(vals) / len(vals) if vals else float("nan")

    def mean_keys(r):
        vals = [v["keys"] for v in r["nodes"].values() if isinstance(v["keys"], int)]
        return sum(vals) / len(vals) if vals else 0

    for r in rows:
        cols = [size_text(r["stored"])]
        cols += [f"{fmt(r['nodes'][n]['rss_mib'])} ({r['nodes'][n]['keys']})" for n in ids]
        cols.append(fmt(mean_rss(r)))
        dk = mean_keys(r) - mean_keys(base)
        per_k = (mean_rss(r) - mean_rss(base)) * 1024 / (dk / 1000) if dk > 0 else float("nan")
        cols.append(fmt(per_k, 1))
        disk = [v["data_mib"] for v in r["nodes"].values()]
        cols.append(fmt(sum(disk) / len(disk)))
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def render_report(res: dict) -> str:
    a = res["args"]
    parts = [
        f"Run {res['when']}: {os.cpu_count()} cores, Python {platform.python_version()}, load "
        f"average at start {res['loadavg']}; all nodes and the load generator on 127.0.0.1 on "
        f"the same machine. Command: `{res['command']}`.",
        "",
        f"### Throughput against cluster size ({CONCURRENCY} connections, {VALUE_SIZE} B values,"
        f" replication factor 2, {a['seconds']:g} s cells after {a['warmup']:g} s warm-up)",
        "",
        render_throughput(res["throughput"]),
        "",
        "### Start-up time to ready (launch of `kvraft up` until `/ready` is 200 on every node)",
        "",
        render_startup(res["startup"]),
        "",
        f"### One sync round against store size (3 nodes, {res['store'].get('partitions', '?')} "
        f"partitions, replication factor 2, sync interval {SYNC_INTERVAL} s, "
        f"{DIFFERENCES} differences)",
        "",
        render_sync(res["sync"]),
        "",
        "### Resident memory per node against stored keys (3 nodes, replication factor 2, "
        f"{VALUE_SIZE} B values; RSS of each node's process)",
        "",
        render_memory(res["memory"]),
        "",
    ]
    notes = []
    for r in res["throughput"]:
        if r.get("failed"):
            notes.append(f"- {r['nodes']} nodes: {r['failed']}")
    for r in res["sync"]:
        if r.get("missed_rounds"):
            notes.append(
                f"- {size_text(r['stored'])} keys: {r['missed_rounds']} local round(s) in the "
                "difference window ran between two polls and were not captured (window totals: "
                f"{r['window_records']} records, {r['window_bytes']} bytes over "
                f"{r['window_rounds']} rounds)"
            )
        if r.get("agree") != DIFFERENCES:
            notes.append(
                f"- {size_text(r['stored'])} keys: only {r.get('agree')} of the "
                f"{DIFFERENCES} changed keys agree on both replicas after the rounds"
            )
        runs = r.get("quiet_runs") or {}
        if runs and r.get("quiet_ids_opened", 0) > max(runs.values()):
            notes.append(
                f"- {size_text(r['stored'])} keys: the leader opened {r['quiet_ids_opened']} "
                f"rounds while the nodes ran {min(runs.values())} to {max(runs.values())}: a "
                f"node skips the rounds opened while it is still busy with one (the round takes "
                f"longer than the {SYNC_INTERVAL} s interval)"
            )
        quiet_rounds = r.get("quiet_node_rounds") or []
        errs = sum(len(x.get("errors") or []) for x in quiet_rounds)
        errs += sum(x.get("errors", 0) for x in r["diff_rounds"])
        if errs:
            notes.append(f"- {size_text(r['stored'])} keys: {errs} sync errors in the rounds")
    for r in res["sync"]:
        notes.append(f"- bulk load up to {size_text(r['stored'])} keys took {r['load_s']:.1f} s")
    if res.get("store_failed"):
        notes.append(f"- store-size part failed: {res['store_failed']}")
    if notes:
        parts += ["Notes:", ""] + notes + [""]
    return "\n".join(parts)


def write_chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    for op in ("put", "get"):
        pts = [
            (r["nodes"], r[op]["throughput"])
            for r in res["throughput"]
            if r.get(op) and not r[op].get("failed")
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=op.upper())
    ax.set_title(f"throughput, C={CONCURRENCY}, {VALUE_SIZE} B (req/s)")
    ax.set_xlabel("nodes")
    ax.set_xticks(NODE_COUNTS)
    ax.set_ylim(bottom=0)
    if ax.get_lines():
        ax.legend()
    ax.grid(alpha=0.3)

    ax = axes[0][1]
    pts = [(r["nodes"], r["median_s"]) for r in res["startup"] if not math.isnan(r["median_s"])]
    if pts:
        ax.plot(*zip(*pts, strict=True), marker="o")
    ax.set_title("start-up to ready (s, median)")
    ax.set_xlabel("nodes")
    ax.set_xticks(NODE_COUNTS)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)

    ax = axes[1][0]
    xs, q_s, d_s, q_b, d_b = [], [], [], [], []
    for r in res["sync"]:
        q, d = quiet_figures(r), r.get("diff_rounds") or []
        if math.isnan(q["seconds"]) or not d:
            continue
        xs.append(r["stored"])
        q_s.append(q["seconds"] * 1000)
        d_s.append(max(x["seconds"] for x in d) * 1000)
        q_b.append(q["bytes"] / 1024)
        d_b.append(sum(x["bytes"] for x in d) / 1024)
    if xs:
        ax.plot(xs, q_s, marker="o", label="round ms, 0 differences")
        ax.plot(xs, d_s, marker="o", label=f"round ms, {DIFFERENCES} differences")
        ax2 = ax.twinx()
        ax2.plot(xs, q_b, marker="s", linestyle="--", color="tab:green", label="KiB, 0 diff.")
        ax2.plot(
            xs, d_b, marker="s", linestyle="--", color="tab:red", label=f"KiB, {DIFFERENCES} diff."
        )
        ax2.set_ylabel("KiB per round (dashed)")
        ax2.set_ylim(bottom=0)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_title("one sync round against store size (3 nodes)")
    ax.set_xlabel("keys in the store")
    ax.set_ylabel("ms (solid)")
    ax.grid(alpha=0.3)

    ax = axes[1][1]
    ids = sorted({n for r in res["memory"] for n in r["nodes"]})
    for n in ids or []:
        pts = [
            (max(r["stored"], 1), r["nodes"][n]["rss_mib"])
            for r in res["memory"]
            if n in r["nodes"]
        ]
        ax.plot(*zip(*pts, strict=True), marker="o", label=n)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_title("worker RSS per node (MiB); 0 keys plotted at 1")
    ax.set_xlabel("keys in the store (each node holds about 2/3)")
    if ids:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle("kvraft: how cost grows (127.0.0.1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def clean(x):
    """NaN -> None, recursively, for JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s cells, store sizes 10k and 100k, one pass over the cluster sizes",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="measured seconds per throughput cell (default 10, --quick 3)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated store sizes (default 10000,100000,1000000)"
    )
    parser.add_argument("--nodes", default=None, help="comma-separated cluster sizes (3,5,7)")
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="passes over the cluster sizes (default 3, --quick 1): start-up samples and "
        "throughput runs per size; medians are reported",
    )
    parser.add_argument(
        "--load-deadline",
        type=float,
        default=1800.0,
        help="seconds allowed for each bulk-load step",
    )
    parser.add_argument(
        "--out", default=str(OUT), help="directory for growth.md/json/png (default bench/out)"
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: sizes,store")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else list(QUICK_SIZES if args.quick else FULL_SIZES)
    )
    node_counts = [int(s) for s in args.nodes.split(",")] if args.nodes else list(NODE_COUNTS)
    passes = args.passes if args.passes is not None else (1 if args.quick else 3)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    ok, why = available()
    if not ok:
        log(f"kvraft is not runnable: {why}")
        return 1
    res: dict = {
        "when": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join(["python -m bench.growth", *(argv if argv is not None
                                                          else sys.argv[1:])]),
        "args": {"seconds": seconds, "warmup": args.warmup, "sizes": sizes,
                 "nodes": node_counts, "passes": passes},
        "throughput": [], "startup": [], "sync": [], "memory": [], "store": {},
    }  # fmt: skip
    t0 = time.monotonic()
    if "sizes" not in skip:
        res["throughput"], res["startup"] = measure_sizes(node_counts, seconds, args.warmup, passes)
    if "store" not in skip:
        try:
            measure_store(sizes, args.load_deadline, res)
        except Exception as exc:  # reported; the other parts still are
            log(f"store-size part FAILED: {exc}")
            res["store_failed"] = str(exc).splitlines()[0][:300]
    log(f"done in {time.monotonic() - t0:.0f} s")

    report = render_report(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "growth.md").write_text(report)
    (out / "growth.json").write_text(json.dumps(clean(res), indent=1))
    written = [out / "growth.md", out / "growth.json"]
    try:
        write_chart(res, out / "growth.png")
        written.append(out / "growth.png")
    except ImportError:
        log("no chart: matplotlib is not installed (pip install matplotlib)")
    print(report)
    log("wrote " + ", ".join(map(str, written)))
    failed = res.get("store_failed") or any(r.get("failed") for r in res["throughput"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
