"""Time an export (``POST /export``) and a report (WebSocket ``/report``) of many keys on real
3-node clusters of one or more checkouts, alternating, and print the figures.

    python -m bench.reports_export                                  # this checkout only
    python -m bench.reports_export --repo before=/work/wt-pre --repo after=. --keys 20000

Each ``--repo LABEL=PATH`` gets its own cluster (`python -m kvraft up`, run from PATH with
PATH/.venv/bin/python when it has one, else this interpreter), all up at once on their own ports
(HTTP 19711.., Raft +100, FTP +200, the next checkout 300 above; checked free first), each
loaded with the same ``--keys`` keys of ``--value-size`` random bytes, then given ``--warmup``
untimed exports. Then ``--runs`` rounds: in each round every cluster runs one export and one
report through the first node, in turn (the order of the checkouts alternates from round to
round, so drift of a shared machine falls on all of them), while the other clusters stay idle.
``--kill-one`` then kills n3 of every cluster and times one more export and report each. The
time is the client's, request to the last byte (export: the node reads every key, writes the
file and stores it on the FTP server; report: it also reads the file back and sends it on the
socket). Every answer is checked to hold every key.

Prints per-run times, the median per checkout and op, and each checkout's median over the first
one's. The clusters' processes are stopped by pid (SIGTERM to their process group, then SIGKILL)
and their data directories deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import procs
from bench.kvraft_cluster import KvraftCluster
from kvraft.client import Client

REPO = Path(__file__).resolve().parent.parent


class Cluster:
    """One checkout's 3-node ``kvraft up`` cluster on ports from ``base``
    (:class:`bench.kvraft_cluster.KvraftCluster`, run with the checkout's own ``.venv``)."""

    def __init__(self, label: str, repo: Path, base: int, nodes: int = 3) -> None:
        self.label, self.repo, self.base, self.nodes = label, repo, base, nodes
        venv = repo / ".venv" / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVRAFT_")}
        self.kv = KvraftCluster(
            nodes,
            http_base=base,
            raft_base=base + 100,
            ftp_port=base + 200,
            start_timeout=120.0,
            repo=repo,
            env=env,
            python=str(venv) if venv.exists() else sys.executable,
        )
        self.urls = self.kv.urls
        self.admin = ""

    def ports(self) -> list[int]:
        return [p + off for off in (0, 100) for p in range(self.base, self.base + self.nodes)] + [
            self.base + 200
        ]

    def start(self) -> None:
        busy = [p for p in self.ports() if not _free(p)]
        if busy:
            raise RuntimeError(f"{self.label}: ports {busy} are in use; pick another --port-base")
        self.kv.start()
        self.urls = self.kv.urls
        assert self.kv.tmp is not None
        token = self.kv.tmp / "data" / "admin-token"
        procs.wait_until(token.exists, 10, "admin token")
        self.admin = token.read_text().strip()

    def client(self, timeout: float = 600.0) -> Client:
        """A client of the first node only (the node that runs the jobs)."""
        return Client(self.urls[:1], timeout=timeout, admin_token=self.admin, retries=0)

    def load(self, keys: int, size: int, threads: int = 16) -> None:
        """Write ``keys`` keys (``bench/k<i>``) of ``size`` bytes, spread over the nodes."""

        def write(lo: int) -> None:
            c = Client(
                self.urls[lo % self.nodes :] + self.urls[: lo % self.nodes],
                timeout=30,
                admin_token=self.admin,
            )
            try:
                for i in range(lo, keys, threads):
                    c.put(f"bench/k{i:07d}", os.urandom(size))
            finally:
                c.close()

        with ThreadPoolExecutor(threads) as pool:
            for fut in [pool.submit(write, t) for t in range(threads)]:
                fut.result()

    def kill_node(self, node_id: str) -> int:
        """SIGKILL the ``kvraft serve`` child of this cluster's ``kvraft up`` that runs
        ``node_id``; returns its pid."""
        proc = self.kv.proc
        assert proc is not None
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            children = []
        for pid in children:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if (
                b"serve" in argv
                and b"--id" in argv
                and argv[argv.index(b"--id") + 1] == (node_id.encode())
            ):
                os.kill(pid, signal.SIGKILL)
                return pid
        raise RuntimeError(f"{self.label}: no serve process for {node_id}")

    def stop(self) -> None:
        self.kv.stop()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def time_export(cluster: Cluster, keys: int) -> float:
    c = cluster.client()
    try:
        t0 = time.perf_counter()
        out = c.export()
        took = time.perf_counter() - t0
    finally:
        c.close()
    if out.get("keys") != keys:
        raise RuntimeError(f"{cluster.label}: export holds {out.get('keys')} keys, not {keys}")
    return took


def time_report(cluster: Cluster, keys: int) -> float:
    c = cluster.client()
    try:
        t0 = time.perf_counter()
        text = c.report_text()
        took = time.perf_counter() - t0
    finally:
        c.close()
    count = json.loads(text).get("count")
    if count != keys:
        raise RuntimeError(f"{cluster.label}: report holds {count} keys, not {keys}")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a checkout to measure (repeat; default: this one)",
    )
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port-base", type=int, default=19711)
    ap.add_argument("--warmup", type=int, default=1, help="untimed exports per cluster first")
    ap.add_argument(
        "--kill-one",
        action="store_true",
        help="after the rounds, kill n3 of every cluster and time one export and one report "
        "through n1 (every key has a live replica: replication factor 2)",
    )
    args = ap.parse_args(argv)
    repos = [r.split("=", 1) for r in args.repo] or [["this", str(REPO)]]
    clusters = [
        Cluster(label, Path(path).resolve(), args.port_base + 300 * i)
        for i, (label, path) in enumerate(repos)
    ]
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for c in clusters:
            t0 = time.perf_counter()
            c.start()
            c.load(args.keys, args.value_size)
            print(
                f"{c.label}: {c.repo} up and loaded with {args.keys} keys "
                f"in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        for c in clusters:  # untimed: caches, connections and the first page sizes warm up
            for _ in range(args.warmup):
                time_export(c, args.keys)
        for rnd in range(args.runs):
            order = clusters if rnd % 2 == 0 else clusters[::-1]
            for c in order:
                for op, fn in (("export", time_export), ("report", time_report)):
                    took = fn(c, args.keys)
                    times.setdefault((c.label, op), []).append(took)
                    print(f"round {rnd + 1} {c.label:>8} {op}: {took:.3f} s", flush=True)
        if args.kill_one:
            for c in clusters:
                c.kill_node("n3")
            for c in clusters:
                for op, fn in (("export", time_export), ("report", time_report)):
                    took = fn(c, args.keys)
                    times.setdefault((c.label, op + " n3 dead"), []).append(took)
                    print(f"n3 killed {c.label:>8} {op}: {took:.3f} s", flush=True)
    finally:
        for c in clusters:
            c.stop()
    print()
    print(
        f"{args.keys} keys of {args.value_size} B, 3 nodes, replication factor 2, {args.runs} runs"
    )
    print("| checkout | op | runs, s | median s | median / first checkout's |")
    print("|---|---|---|---|---|")
    first = clusters[0].label
    ops = ["export", "report"] + (["export n3 dead", "report n3 dead"] if args.kill_one else [])
    for op in ops:
        base = statistics.median(times[(first, op)])
        for c in clusters:
            runs = times[(c.label, op)]
            med = statistics.median(runs)
            shown = ", ".join(f"{t:.2f}" for t in runs)
            print(f"| {c.label} | {op} | {shown} | {med:.2f} | {med / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
