"""Alternating A/B runs of two kvraft checkouts: what a change costs, measured in one run.

    git worktree add /tmp/kvraft-before <commit>     # the commit before the change
    python -m bench.ab --a /tmp/kvraft-before --b . [--rounds 3] [--seconds 8] [--ops put,get]
        [--r quorum] [--value-size 10240] [--keys 1]

Each round starts a 3-node cluster (`kvraft up`) from A, runs every op for ``--seconds`` with
``--concurrency`` connections spread over the nodes (bench/loadgen.py, 100-byte values unless
``--value-size``; GETs at ``?r=`` of ``--r``, the server's default ``one`` without it), stops
it, then does the same from B; A and B alternate so drift of the machine falls on both. Prints
per-op medians of throughput and p99 for A and B, their ratio B/A and the spread of the
per-round ratios, and the CPU time the nodes spent per request (user + system, from /proc: on a
machine shared with other work it moves less than throughput does). The clusters run with the
``python`` of this interpreter and the code of each checkout (``python -m kvraft`` from its
directory imports that checkout's packages first).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.kvraft_cluster import KvraftCluster
from bench.loadgen import run_sync

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _preload(urls: list[str], ops: list[str], concurrency: int, load: dict) -> None:
    """GET alone reads keys nothing wrote yet (every read a 404): write each key once first."""
    if "get" in ops and "put" not in ops:
        res = run_sync(
            urls,
            "kvraft",
            "put",
            concurrency,
            seconds=60.0,
            warmup=0.0,
            requests=load.get("keys", 1000),
            **load,
        )
        if res.errors:
            raise SystemExit(f"preloading the keys for GET failed: {res.errors} errors")


def _ratio(b: float, a: float) -> float:
    return b / a if a else float("nan")


def one(
    repo: Path,
    ops: list[str],
    seconds: float,
    concurrency: int,
    env: dict,
    base: int = 18301,
    load: dict | None = None,
) -> dict:
    """op -> (req/s, p99 ms, errors, node CPU us per request) for one cluster of ``repo``.
    ``load``: more arguments of every load run (``read_level``, ``value_size``, ``keys``)."""
    load = load or {}
    out = {}
    ports = {"http_base": base, "raft_base": base + 100, "ftp_port": base + 200}
    with KvraftCluster(repo=repo, env=dict(os.environ, **env), **ports) as kv:
        nodes = _children(kv.proc.pid) if kv.proc is not None else []
        _preload(kv.urls, ops, concurrency, load)
        for op in ops:  # put first: get reads the keys it wrote
            warm = run_sync(kv.urls, "kvraft", op, concurrency, seconds=1.0, warmup=0.0, **load)
            del warm  # (the same warm-up as before, outside the CPU count)
            cpu = _cpu(nodes)
            res = run_sync(kv.urls, "kvraft", op, concurrency, seconds=seconds, warmup=0.0, **load)
            used = _cpu(nodes) - cpu
            per = used / max(1, res.throughput * seconds) * 1e6
            out[op] = (res.throughput, res.p99_ms, res.errors, per)
    return out


def together(
    repos: dict[str, Path],
    ops: list[str],
    seconds: float,
    concurrency: int,
    env: dict,
    base: int,
    load: dict | None = None,
) -> dict[str, dict]:
    """Like :func:`one`, for A's and B's clusters up at the same time (B's ports 300 above A's)
    and loaded at the same time, each by its own load process: both runs of a round then share
    the machine's load of that moment, which on a shared machine moves CPU per request by more
    than the difference being measured."""
    load = load or {}
    out: dict[str, dict] = {side: {} for side in repos}
    with contextlib.ExitStack() as stack, ProcessPoolExecutor(len(repos)) as pool:
        clusters = {}
        for i, (side, repo) in enumerate(repos.items()):
            at = base + 300 * i
            ports = {"http_base": at, "raft_base": at + 100, "ftp_port": at + 200}
            kv = stack.enter_context(KvraftCluster(repo=repo, env=dict(os.environ, **env), **ports))
            clusters[side] = (kv, _children(kv.proc.pid) if kv.proc is not None else [])
            _preload(kv.urls, ops, concurrency, load)
        for op in ops:  # put first: get reads the keys it wrote
            for warm in [
                pool.submit(
                    run_sync, kv.urls, "kvraft", op, concurrency, seconds=1.0, warmup=0.0, **load
                )
                for kv, _ in clusters.values()
            ]:
                warm.result()
            cpu = {side: _cpu(nodes) for side, (_, nodes) in clusters.items()}
            runs = {
                side: pool.submit(
                    run_sync,
                    kv.urls,
                    "kvraft",
                    op,
                    concurrency,
                    seconds=seconds,
                    warmup=0.0,
                    **load,
                )
                for side, (kv, _) in clusters.items()
            }
            results = {side: f.result() for side, f in runs.items()}
            for side, res in results.items():
                used = _cpu(clusters[side][1]) - cpu[side]
                per = used / max(1, res.throughput * seconds) * 1e6
                out[side][op] = (res.throughput, res.p99_ms, res.errors, per)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (before)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B (after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--ops", default="put,get")
    ap.add_argument("--r", default=None, help="GET read level ?r= (one, quorum, all)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per value written")
    ap.add_argument("--keys", type=int, default=1000, help="keys written and read (1: one key)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for both clusters")
    ap.add_argument(
        "--port-base",
        type=int,
        default=18301,
        help="first HTTP port (Raft ports from +100, FTP at +200): another run can pick others",
    )
    ap.add_argument(
        "--together",
        action="store_true",
        help="run A's and B's clusters at the same time, loaded at once (B's ports 300 above)",
    )
    args = ap.parse_args(argv)
    ops = args.ops.split(",")
    env = dict(e.split("=", 1) for e in args.env)
    load = {"read_level": args.r, "value_size": args.value_size, "keys": args.keys}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for rnd in range(args.rounds):
        if args.together:
            pair = [("A", args.a.resolve()), ("B", args.b.resolve())]
            both = together(
                dict(pair if rnd % 2 == 0 else pair[::-1]),  # who gets the lower ports
                ops,
                args.seconds,
                args.concurrency,
                env,
                args.port_base,
                load,
            )
            for side, r in both.items():
                runs[side].append(r)
                print(
                    f"round {rnd + 1} {side} (together): "
                    + ", ".join(
                        f"{op} {t:,.0f} req/s p99 {p:.1f} ms errors {e} node CPU {c:.0f} us/req"
                        for op, (t, p, e, c) in r.items()
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            continue
        for side, repo in (
            (("A", args.a), ("B", args.b)) if rnd % 2 == 0 else (("B", args.b), ("A", args.a))
        ):
            r = one(repo.resolve(), ops, args.seconds, args.concurrency, env, args.port_base, load)
            runs[side].append(r)
            print(
                f"round {rnd + 1} {side}: "
                + ", ".join(
                    f"{op} {t:,.0f} req/s p99 {p:.1f} ms errors {e} node CPU {c:.0f} us/req"
                    for op, (t, p, e, c) in r.items()
                ),
                file=sys.stderr,
                flush=True,
            )
    print(
        f"| op (c={args.concurrency}, r={args.r or 'one'}, {args.value_size} B) "
        "| A req/s | B req/s | B/A | B/A per round, min-max "
        "| A p99 ms | B p99 ms | node CPU us/req A / B | A/B CPU "
        "| B-A CPU us/req per round: median (min..max), rounds B>A |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for op in ops:
        med = {
            (side, i): statistics.median(r[op][i] for r in runs[side])
            for side in "AB"
            for i in range(4)
        }
        ta, tb = med["A", 0], med["B", 0]
        # a round's ratio: B against the A run next to it (the same round)
        pairs = [_ratio(b[op][0], a[op][0]) for a, b in zip(runs["A"], runs["B"], strict=True)]
        # the same for CPU: what B costs more than A in each round, in us per request (the
        # machine's load moves both runs of a round together, so this spreads less than A / B)
        extra = [b[op][3] - a[op][3] for a, b in zip(runs["A"], runs["B"], strict=True)]
        print(
            f"| {op} | {ta:,.0f} | {tb:,.0f} | {_ratio(tb, ta):.3f} "
            f"| {min(pairs):.2f}-{max(pairs):.2f} "
            f"| {med['A', 1]:.1f} | {med['B', 1]:.1f} | {med['A', 3]:.0f} / {med['B', 3]:.0f} "
            f"| {_ratio(med['A', 3], med['B', 3]):.3f} | {statistics.median(extra):+.0f} "
            f"({min(extra):+.0f}..{max(extra):+.0f}), {sum(e > 0 for e in extra)} of "
            f"{len(extra)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
