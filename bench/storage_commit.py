"""The SQLite store's group commit alone, A/B: threads applying records to one ``Storage``.

    python -m bench.storage_commit --a /tmp/kvraft-before --b . [--threads 16] [--seconds 4]

Each run is its own process with the checkout's ``kvraft`` first on ``sys.path``: a store in a
fresh temporary directory (``fsync=True`` unless ``--no-fsync``) is loaded with ``--keys``
records of 100 bytes, then ``--threads`` threads each apply one record at a time, to keys drawn
at random, for ``--seconds``. A and B alternate, ``--rounds`` times. Prints per run the writes
per second, the commits per second (transactions: fewer for as many writes is bigger groups),
p50 and p99 of one ``apply``, the WAL file's size at the end and the process's CPU time per
write (user + system). No network, no cluster: what the store's commit path costs and how it
groups, without the noise of the HTTP and peer layers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUN = r"""
import json, os, random, resource, shutil, sys, tempfile, threading, time
sys.path.insert(0, sys.argv[1])
from kvraft.hlc import Version
from kvraft.storage import Record, Storage

threads, seconds, keys = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
fsync = sys.argv[5] == "1"
d = tempfile.mkdtemp(prefix="kvraft-bench-store-")
s = Storage(os.path.join(d, "s.db"), fsync=fsync)
for i in range(0, keys, 2000):
    s.apply_many([Record(f"k{k:06d}", k % 64, Version(1, "n0"), False, b"x" * 100)
                  for k in range(i, min(keys, i + 2000))])
commits = lambda: s.commits[0] if hasattr(s, "commits") else s._commits
lat, stop = [], time.monotonic() + seconds
def writer(t):
    rnd, n = random.Random(t), 0
    while time.monotonic() < stop:
        k, n = rnd.randrange(keys), n + 1
        t0 = time.perf_counter()
        s.apply(Record(f"k{k:06d}", k % 64, Version(2 + n * threads + t, "n1"), False, b"y" * 100))
        lat.append(time.perf_counter() - t0)
c0, r0 = commits(), resource.getrusage(resource.RUSAGE_SELF)
ts = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
c1, r1 = commits(), resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
wal = os.path.getsize(os.path.join(d, "s.db-wal"))
s.close()
shutil.rmtree(d, ignore_errors=True)
lat.sort()
n = len(lat)
print(json.dumps({"writes_s": n / seconds, "commits_s": (c1 - c0) / seconds,
                  "p50_ms": lat[n // 2] * 1e3, "p99_ms": lat[int(n * 0.99)] * 1e3,
                  "wal_mib": wal / 2**20, "cpu_us": cpu / n * 1e6}))
"""


def one(repo: Path, threads: int, seconds: float, keys: int, fsync: bool) -> dict:
    """One run of the store of ``repo``: its figures (see the module docstring)."""
    args = [str(repo), str(threads), str(seconds), str(keys), "1" if fsync else "0"]
    out = subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (before)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B (after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--no-fsync", action="store_true", help="synchronous=NORMAL instead of FULL")
    args = ap.parse_args(argv)
    for rnd in range(args.rounds):
        sides = (("A", args.a), ("B", args.b)) if rnd % 2 == 0 else (("B", args.b), ("A", args.a))
        for side, repo in sides:
            r = one(repo.resolve(), args.threads, args.seconds, args.keys, not args.no_fsync)
            print(
                f"round {rnd + 1} {side}: {r['writes_s']:,.0f} writes/s, "
                f"{r['commits_s']:,.0f} commits/s, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, WAL {r['wal_mib']:.0f} MiB, "
                f"CPU {r['cpu_us']:.0f} us/write",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
