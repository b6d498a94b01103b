"""What an acknowledged PUT costs a durable cluster, A/B: fsyncs, thread switches, CPU, WAL size.

    python -m bench.fsync_costs --a /tmp/kvraft-before --b . [--rounds 3] [--seconds 8]

Each round starts a 3-node cluster (`kvraft up`, as bench/ab.py does) from A with
``KVRAFT_FSYNC=true`` (``--env`` adds or overrides variables), writes for 2 s untimed, then
runs PUT for ``--seconds`` with 16 connections over ``--keys`` zipfian keys (100-byte values,
bench/loadgen.py), stops it, then does the same from B; A and B alternate. Printed per run: the
acknowledged PUT/s, p99, errors, and per acknowledged PUT the ``fdatasync`` and ``fsync`` calls
of the three nodes (``perf stat`` on the syscall tracepoints; "n/a" without perf), their thread
switches (voluntary and not, from ``/proc/<pid>/task/*/status``) and their CPU time (user +
system); last, the size of the nodes' ``store.db-wal`` files together.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bench.ab import _children, _cpu
from bench.kvraft_cluster import KvraftCluster

REPO = Path(__file__).resolve().parent.parent


def _switches(pids: list[int]) -> int:
    """Context switches of every thread of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def one(repo: Path, seconds: float, keys: int, env: dict, base: int) -> dict:
    """The figures of one cluster of ``repo`` (see the module docstring)."""
    ports = {"http_base": base, "raft_base": base + 100, "ftp_port": base + 200}
    with KvraftCluster(repo=repo, env=dict(os.environ, **env), **ports) as kv:
        nodes = _children(kv.proc.pid) if kv.proc is not None else []
        urls = [arg for u in kv.urls for arg in ("--url", u)]
        load = [sys.executable, "-m", "bench.loadgen", "--system", "kvraft", *urls, "-c", "16"]
        load += ["--op", "put", "--distribution", "zipfian", "--keys", str(keys), "--warmup", "0"]
        subprocess.run([*load, "--seconds", "2"], capture_output=True, cwd=REPO)  # 1: errors
        perf = None
        if shutil.which("perf"):
            events = "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync"
            pids = ",".join(map(str, nodes))
            perf = subprocess.Popen(
                ["perf", "stat", "-x,", "-e", events, "-p", pids],
                stderr=subprocess.PIPE,
                text=True,
            )
        switches, cpu = _switches(nodes), _cpu(nodes)
        done = subprocess.run(
            [*load, "--seconds", str(seconds)], capture_output=True, text=True, cwd=REPO
        )
        switches, cpu = _switches(nodes) - switches, _cpu(nodes) - cpu
        syncs = None
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            counts = [line.split(",")[0] for line in perf.communicate()[1].splitlines()]
            syncs = sum(int(c) for c in counts if c.isdigit())
        wal = sum(os.path.getsize(p) for p in glob.glob(f"{kv.tmp}/data/*/store.db-wal"))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    n = max(1, result["requests"] - result["errors"])
    return {
        "rps": result["throughput"],
        "p99": result["p99_ms"],
        "errors": result["errors"],
        "syncs": None if syncs is None else syncs / n,
        "switches": switches / n,
        "cpu_us": cpu / n * 1e6,
        "wal_mib": wal / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (before)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B (after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for both clusters")
    ap.add_argument("--port-base", type=int, default=18301, help="first HTTP port (as bench.ab)")
    args = ap.parse_args(argv)
    env = {"KVRAFT_FSYNC": "true", **dict(e.split("=", 1) for e in args.env)}
    for rnd in range(args.rounds):
        sides = (("A", args.a), ("B", args.b)) if rnd % 2 == 0 else (("B", args.b), ("A", args.a))
        for side, repo in sides:
            r = one(repo.resolve(), args.seconds, args.keys, env, args.port_base)
            syncs = "n/a" if r["syncs"] is None else f"{r['syncs']:.2f}"
            print(
                f"round {rnd + 1} {side}: {r['rps']:,.0f} PUT/s, p99 {r['p99']:.1f} ms, "
                f"errors {r['errors']}; per PUT: {syncs} fsyncs, {r['switches']:.1f} thread "
                f"switches, node CPU {r['cpu_us']:.0f} us; WAL files {r['wal_mib']:.0f} MiB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
