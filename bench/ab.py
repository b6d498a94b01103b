"""Alternating A/B runs of two kvraft checkouts: what a change costs, measured in one run.

    git worktree add /tmp/kvraft-before <commit>     # the commit before the change
    python -m bench.ab --a /tmp/kvraft-before --b . [--rounds 3] [--seconds 8] [--ops put,get]

Each round starts a 3-node cluster (`kvraft up`) from A, runs every op for ``--seconds`` with
``--concurrency`` connections spread over the nodes (bench/loadgen.py, 100-byte values), stops
it, then does the same from B; A and B alternate so drift of the machine falls on both. Prints
per-op medians of throughput and p99 for A and B and their ratio B/A. The clusters run with the
``python`` of this interpreter and the code of each checkout (``python -m kvraft`` from its
directory imports that checkout's packages first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from bench.kvraft_cluster import KvraftCluster
from bench.loadgen import run_sync


def one(repo: Path, ops: list[str], seconds: float, concurrency: int, env: dict) -> dict:
    out = {}
    with KvraftCluster(repo=repo, env=dict(os.environ, **env)) as kv:
        for op in ops:  # put first: get reads the keys it wrote
            res = run_sync(kv.urls, "kvraft", op, concurrency, seconds=seconds, warmup=1.0)
            out[op] = (res.throughput, res.p99_ms, res.errors)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (before)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B (after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--ops", default="put,get")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for both clusters")
    args = ap.parse_args(argv)
    ops = args.ops.split(",")
    env = dict(e.split("=", 1) for e in args.env)
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for rnd in range(args.rounds):
        for side, repo in (
            (("A", args.a), ("B", args.b)) if rnd % 2 == 0 else (("B", args.b), ("A", args.a))
        ):
            r = one(repo.resolve(), ops, args.seconds, args.concurrency, env)
            runs[side].append(r)
            print(
                f"round {rnd + 1} {side}: "
                + ", ".join(
                    f"{op} {t:,.0f} req/s p99 {p:.1f} ms errors {e}" for op, (t, p, e) in r.items()
                ),
                file=sys.stderr,
                flush=True,
            )
    print(f"| op (c={args.concurrency}) | A req/s | B req/s | B/A | A p99 ms | B p99 ms |")
    print("|---|---|---|---|---|---|")
    for op in ops:
        ta = statistics.median(r[op][0] for r in runs["A"])
        tb = statistics.median(r[op][0] for r in runs["B"])
        pa = statistics.median(r[op][1] for r in runs["A"])
        pb = statistics.median(r[op][1] for r in runs["B"])
        print(f"| {op} | {ta:,.0f} | {tb:,.0f} | {tb / ta:.3f} | {pa:.1f} | {pb:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
