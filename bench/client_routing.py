"""What partition-aware routing saves: ``kvraft.client.Client`` with ``smart=True`` (each key
straight to a replica) against ``smart=False`` (any node: the node coordinates or reads through
a peer, and the partition leader forwards), on one 3-node cluster, in alternating rounds.

    python -m bench.client_routing [--rounds 3] [--seconds 5] [--procs 2] [--threads 4]

Starts a 3-node cluster on free loopback ports (tests/harness/cluster.py), writes ``--keys`` keys of
100-byte values, then for every round and op (put, get at the defaults w=quorum, r=one) runs
``--procs`` load processes of ``--threads`` threads, one ``Client`` per thread, for
``--seconds``, once with smart routing and once without; the order of the two alternates by
round so that drift of the machine falls on both. The node CPU and counters are read at the
start and the end of the load window, after the clients are made and warmed up (a smart one
fetched its map): the one-time cost of a map fetch is measured apart and printed. Thread i of
process p lists the nodes
starting at node (p * threads + i) mod 3, so the clients without routing spread over the nodes
as independent clients would (not all on node 1). Prints, per op and mode, the medians over the
rounds of req/s, p50 and p99, the CPU the nodes spent per request (user + system, /proc) and
the client processes' CPU per request, then the smart/any ratios.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import requests

from bench.ab import _children, _cpu
from kvraft.client import Client, KvClientError
from tests.harness.cluster import Cluster

MODES = ("smart", "any")
FETCHES = 200  # GET /cluster requests whose node CPU is measured


def load(
    urls: list[str],
    smart: bool,
    op: str,
    threads: int,
    seconds: float,
    keys: int,
    first: int,
    seed: int,
    start_at: float,
) -> tuple[int, int, list[float], float, Counter[str], Counter[str], float]:
    """One load process: ``threads`` clients doing ``op`` on random keys for ``seconds`` from
    ``start_at`` (``time.time()``; the clients are made and warmed up before). Returns
    (requests, errors, latencies in ms, this process's CPU seconds during the run, requests per
    serving node id, the routers' miss and fetch counts, seconds it started late)."""
    value = b"v" * 100
    clients = []
    for i in range(threads):
        k = (first + i) % len(urls)
        c = Client(urls[k:] + urls[:k], smart=smart, timeout=10, retries=1)
        c.get("bench/0")  # learns the map (smart) and opens a connection, outside the timing
        clients.append(c)
    lat: list[list[float]] = [[] for _ in range(threads)]
    served: list[Counter[str]] = [Counter() for _ in range(threads)]
    errors = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        c, rnd, out, by = clients[i], random.Random(seed * 1000 + i), lat[i], served[i]
        start.wait()
        while True:
            key = f"bench/{rnd.randrange(keys)}"
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                return
            try:
                node = c.put(key, value).node if op == "put" else c.get(key).node
            except KvClientError:
                errors[i] += 1
                continue
            out.append((time.perf_counter() - t0) * 1000)
            by[node] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    late = time.time() - start_at
    if late < 0:
        time.sleep(-late)
    cpu0 = time.process_time()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    for w in workers:
        w.join()
    cpu = time.process_time() - cpu0
    routed: Counter[str] = Counter()
    for c in clients:
        if c.router is not None:
            st = c.router.stats()
            routed.update(st["misses"])
            routed["fetches"] += st["fetches"]
        c.close()
    flat = [x for per in lat for x in per]
    return len(flat), sum(errors), flat, cpu, sum(served, Counter()), routed, max(0.0, late)


def pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def cell(
    pool: ProcessPoolExecutor, urls: list[str], nodes: list[int], smart: bool, op: str, a, seed
) -> dict[str, Any]:
    """One measured cell: the node CPU and counters are read at the start and the end of the
    load window only, so the clients' start (and the smart ones' first map fetch) is outside."""
    start_at = time.time() + a.setup
    futures = [
        pool.submit(
            load, urls, smart, op, a.threads, a.seconds, a.keys, p * a.threads, seed + p, start_at
        )
        for p in range(a.procs)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, hops0 = _cpu(nodes), hops(urls)
    time.sleep(max(0.0, start_at + a.seconds - time.time()))
    node_cpu = _cpu(nodes) - cpu0
    moved = hops(urls) - hops0
    results = [f.result() for f in futures]
    n = sum(r[0] for r in results)
    ms = sorted(x for r in results for x in r[2])
    return {
        "rps": n / a.seconds,
        "p50": pct(ms, 0.50),
        "p99": pct(ms, 0.99),
        "errors": sum(r[1] for r in results),
        "node_us": node_cpu / max(1, n) * 1e6,
        "client_us": sum(r[3] for r in results) / max(1, n) * 1e6,
        "late": max(r[6] for r in results),  # a load process that started after the window
        # per request: leader forwards, and reads a node sent to a peer (it held no copy)
        "forwards": moved["forwards"] / max(1, n),
        "peer_reads": moved["read_batched_keys"] / max(1, n),
        "served": sum((r[4] for r in results), Counter()),
        "routing": sum((r[5] for r in results), Counter()),
    }


_SAMPLE = re.compile(r'^kvraft_(forwards|read_batched_keys)_total\{node="[^"]+"\} ([0-9.e+-]+)$')


def hops(urls: list[str]) -> Counter[str]:
    """The cluster-wide counts of leader forwards and keys read from a peer (/metrics)."""
    out: Counter[str] = Counter()
    for url in urls:
        try:
            text = requests.get(url + "/metrics", timeout=10).text
        except requests.RequestException:
            continue
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m:
                out[m.group(1)] += int(float(m.group(2)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=2, help="load processes")
    ap.add_argument("--threads", type=int, default=4, help="threads (clients) per process")
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--ops", default="put,get")
    ap.add_argument(
        "--setup", type=float, default=3.0, help="seconds the load processes get to start"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="where requests landed")
    a = ap.parse_args(argv)
    ops = [o for o in a.ops.split(",") if o]
    figures: dict[tuple[str, str], list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="kvraft-bench-routing-") as root,
        Cluster(root) as kv,
        ProcessPoolExecutor(a.procs) as pool,
    ):
        urls = [kv.url(i) for i in range(kv.n)]
        pids = [n.proc.pid for n in kv.nodes if n.proc is not None]
        nodes = pids + [c for p in pids for c in _children(p)]
        with Client(urls, smart=False) as c:
            for i in range(a.keys):
                c.put(f"bench/{i}", b"v" * 100)
        cpu0 = _cpu(nodes)
        with Client(urls, smart=False) as c:
            for _ in range(FETCHES):
                c.cluster()
        fetch_us = (_cpu(nodes) - cpu0) / FETCHES * 1e6
        # one warm-up cell of each, not counted
        for smart in (True, False):
            cell(
                pool,
                urls,
                nodes,
                smart,
                "get",
                argparse.Namespace(**{**vars(a), "seconds": 1}),
                0,
            )
        for rnd in range(a.rounds):
            order = MODES if rnd % 2 == 0 else MODES[::-1]
            for op in ops:
                for mode in order:
                    got = cell(pool, urls, nodes, mode == "smart", op, a, rnd * 10)
                    figures.setdefault((op, mode), []).append(got)
                    print(
                        f"round {rnd + 1} {op:3} {mode:5} {got['rps']:8.0f} req/s  "
                        f"p50 {got['p50']:6.2f} ms  p99 {got['p99']:6.2f} ms  "
                        f"node {got['node_us']:5.0f} us/req  client {got['client_us']:5.0f} us/req"
                        f"  errors {got['errors']:.0f}  forwards/req {got['forwards']:.2f}"
                        f"  peer reads/req {got['peer_reads']:.2f}",
                        flush=True,
                    )
                    if got["late"] > 0.05 * a.seconds:
                        print(f"    (a load process started {got['late']:.2f} s late: --setup)")
                    if a.verbose:
                        print(f"    served by {dict(got['served'])}; client {dict(got['routing'])}")
    print(
        f"\n{a.procs} processes x {a.threads} clients, {a.seconds:g} s cells, {a.rounds} rounds, "
        f"{a.keys} keys, 100-byte values; medians over the rounds; a smart client's map "
        f"fetch (GET /cluster) costs the nodes {fetch_us:.0f} us of CPU, once per client and "
        "map change"
    )
    print(
        f"{'op':4}{'mode':6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'node us':>9}{'client us':>11}"
    )
    med: dict[tuple[str, str], dict[str, float]] = {}
    for (op, mode), runs in figures.items():
        med[op, mode] = {
            k: statistics.median(r[k] for r in runs)
            for k in runs[0]
            if isinstance(runs[0][k], float)
        }
        m = med[op, mode]
        print(
            f"{op:4}{mode:6}{m['rps']:9.0f}{m['p50']:9.2f}{m['p99']:9.2f}"
            f"{m['node_us']:9.0f}{m['client_us']:11.0f}"
        )
    for op in ops:
        s, n = med[op, "smart"], med[op, "any"]
        print(
            f"{op}: smart/any req/s {s['rps'] / n['rps']:.2f}x, p50 {s['p50'] / n['p50']:.2f}x, "
            f"p99 {s['p99'] / n['p99']:.2f}x, "
            f"node CPU per request {s['node_us'] / n['node_us']:.2f}x (ratios of the medians)"
        )
        for what in ("rps", "node_us"):
            pairs = zip(figures[op, "smart"], figures[op, "any"], strict=True)
            per = sorted(a[what] / b[what] for a, b in pairs)
            print(
                f"    {what} smart/any per round: median {statistics.median(per):.2f}x, "
                f"range {per[0]:.2f}x-{per[-1]:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
