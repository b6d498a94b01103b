"""kvraft alone: PUT and GET p50/p99 and throughput at 1 and 16 clients (`make bench-latency`).

Starts an idle 3-node kvraft cluster on 127.0.0.1 (or, with --url, measures a cluster that is
already running), runs one closed-loop loadgen cell per client count and op, prints a markdown
table and writes it to bench/out/latency.md. Progress goes to stderr.

    python -m bench.latency [--seconds 10] [--quick] [--value-size 100] [--url http://127.0.0.1:8001]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench.matrix import Cell, measure_system, measure_urls

OUT = Path(__file__).resolve().parent / "out"
CONCURRENCIES = (1, 16)
OPS = ("put", "get")


def render(cells: list[Cell], value_size: int, seconds: float) -> str:
    def num(x: float, digits: int) -> str:
        return "-" if math.isnan(x) else f"{x:,.{digits}f}"

    lines = [
        f"kvraft, 3 nodes on 127.0.0.1, value {value_size} B, {seconds:g} s per cell, "
        "requests spread round-robin over the nodes.",
        "",
        "| op | clients | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        if c.failed:
            lines.append(f"| {c.op.upper()} | {c.concurrency} | failed: {c.failed} | - | - | - |")
        else:
            lines.append(
                f"| {c.op.upper()} | {c.concurrency} | {num(c.throughput, 1)} | "
                f"{num(c.p50_ms, 2)} | {num(c.p99_ms, 2)} | {c.errors} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--quick", action="store_true", help="2 s cells")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value")
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        help="measure this running node instead of starting a cluster; repeatable",
    )
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else args.seconds
    sizes = (args.value_size,)
    if args.url:
        cells = measure_urls("kvraft", args.url, sizes, CONCURRENCIES, OPS, seconds, args.warmup)
    else:
        cells = measure_system("kvraft", sizes, CONCURRENCIES, OPS, seconds, args.warmup)
    cells.sort(key=lambda c: (OPS.index(c.op), c.concurrency))
    report = render(cells, args.value_size, seconds)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latency.md").write_text(report)
    print(report)
    return 1 if any(c.failed for c in cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
