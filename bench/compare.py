"""kvraft side by side with etcd and the naive all-values-in-Raft design (`make bench`).

Two parts, both run by default: the "default vs default" matrix (cell name `matrix`, below) and
the fair cells of `bench/fair.py` (kvraft and etcd at equal guarantees, one key and YCSB-style
many keys, each driven by loadgen and by hey or wrk; `--cells` picks them by name or pattern).

The matrix: for each system (kvraft, etcd, naive) it starts a 3-node cluster on 127.0.0.1 and
runs, for each value size (100 B, 10 KiB) x concurrency (1, 16) x op (PUT, then GET), one
closed-loop loadgen cell (default 10 s, 1 s warm-up not measured). Writes are spread round-robin
over all nodes. It prints a markdown table (throughput, p50, p99 per system, and kvraft/etcd,
kvraft/naive throughput ratios), and writes it to bench/out/compare.md, the raw figures to
bench/out/compare.json and a chart to bench/out/compare.png. The fair cells write
bench/out/fair.md, fair.json, fair-<cell>.csv (per-second p50/p99), fair-timeline.png and the wrk
scripts they ran (bench/out/wrk/). Progress goes to stderr.

    python -m bench.compare [--systems kvraft,etcd,naive] [--seconds 10] [--quick]
        [--cells matrix,put-*,get-*,ycsb-*] [--tool loadgen|hey|wrk|both] [--keys 100000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench import fair
from bench.matrix import LAUNCHERS, WRITE_TARGETS, Cell, measure_system

OUT = Path(__file__).resolve().parent / "out"
SIZES = (100, 10 * 1024)
CONCURRENCIES = (1, 16)
OPS = ("put", "get")


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def ratio(a: Cell | None, b: Cell | None) -> str:
    if a is None or b is None or a.failed or b.failed or not b.throughput:
        return "-"
    return f"{a.throughput / b.throughput:.2f}x"


def throughput_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    if cell.failed:
        return "failed"
    text = fmt(cell.throughput)
    return text + (f" ({cell.errors} err)" if cell.errors else "")


def render_table(cells: list[Cell], systems: list[str]) -> str:
    """The side-by-side markdown table: one row per (op, C, size), one column group per system."""
    index = {(c.system, c.op, c.concurrency, c.value_size): c for c in cells}
    head = ["op", "C", "value"]
    for s in systems:
        head += [f"{s} req/s", f"{s} p50 ms", f"{s} p99 ms"]
    ratios = [o for o in ("etcd", "naive") if "kvraft" in systems and o in systems]
    head += [f"kvraft/{o}" for o in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op in OPS:
        for conc in CONCURRENCIES:
            for size in SIZES:
                row = [op.upper(), str(conc), size_label(size)]
                for s in systems:
                    c = index.get((s, op, conc, size))
                    ok = c is not None and not c.failed
                    row += [
                        throughput_text(c),
                        fmt(c.p50_ms, 2) if ok else "-",
                        fmt(c.p99_ms, 2) if ok else "-",
                    ]
                k = index.get(("kvraft", op, conc, size))
                row += [ratio(k, index.get((o, op, conc, size))) for o in ratios]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def etcd_version() -> str:
    try:
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def render_report(cells: list[Cell], systems: list[str], seconds: float, warmup: float) -> str:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    notes = [
        f"Run {when}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"etcd {etcd_version()}; 3 nodes per system on 127.0.0.1, loadgen in the same machine; "
        f"{seconds:g} s per cell after a {warmup:g} s warm-up; closed loop, C keep-alive "
        "connections spread round-robin over the nodes.",
        "",
        "Default vs default: every system with its own default guarantees (see the table "
        '"Not the same guarantees" in docs/BENCHMARKS.md); the fair cells follow.',
        "",
    ]
    notes += [f"- writes to {s}: {WRITE_TARGETS[s]}" for s in systems]
    for c in cells:
        if c.failed:
            notes.append(
                f"- {c.system} {c.op} C={c.concurrency} {size_label(c.value_size)} "
                f"not measured: {c.failed}"
            )
        elif c.errors:
            notes.append(
                f"- {c.system} {c.op} C={c.concurrency} {size_label(c.value_size)}: "
                f"{c.errors} errors of {c.requests} ({c.error_kinds})"
            )
    return "\n".join(notes) + "\n\n" + render_table(cells, systems) + "\n"


def write_chart(cells: list[Cell], systems: list[str], path: Path) -> None:
    """Grouped bars: throughput and p99 (rows) for PUT and GET (columns), one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {(c.system, c.op, c.concurrency, c.value_size): c for c in cells}
    groups = [(conc, size) for conc in CONCURRENCIES for size in SIZES]
    labels = [f"C={conc}\n{size_label(size)}" for conc, size in groups]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    width = 0.8 / max(1, len(systems))
    for col, op in enumerate(OPS):
        for row, (attr, title) in enumerate((("throughput", "req/s"), ("p99_ms", "p99 ms"))):
            ax = axes[row][col]
            for i, s in enumerate(systems):
                vals = []
                for conc, size in groups:
                    c = index.get((s, op, conc, size))
                    v = getattr(c, attr) if c is not None and not c.failed else 0.0
                    vals.append(0.0 if math.isnan(v) else v)
                xs = [g + (i - (len(systems) - 1) / 2) * width for g in range(len(groups))]
                ax.bar(xs, vals, width, label=s)
            ax.set_xticks(range(len(groups)), labels)
            ax.set_title(f"{op.upper()} {title} (higher is {'better' if row == 0 else 'worse'})")
            ax.grid(axis="y", alpha=0.3)
            if row == 0 and col == 0:
                ax.legend()
    fig.suptitle(" vs ".join(systems) + " (3 nodes each, 127.0.0.1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--systems",
        default="kvraft,etcd,naive",
        help="the matrix: comma-separated subset of kvraft,etcd,naive (fair cells: kvraft, etcd)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--quick", action="store_true", help="2 s cells")
    parser.add_argument(
        "--cells",
        default="matrix," + ",".join(fair.CELL_NAMES),
        help="comma-separated cell names or shell patterns: matrix (the default-vs-default "
        f"matrix) and the fair cells {', '.join(fair.CELL_NAMES)}; default: all",
    )
    parser.add_argument(
        "--tool",
        choices=fair.TOOLS,
        default="both",
        help="fair cells: loadgen, the independent tool (hey: hey for one key, wrk for many "
        "keys; wrk: wrk everywhere), or both (default)",
    )
    parser.add_argument(
        "--keys", type=int, default=100_000, help="fair cells: keys of the many-keys workloads"
    )
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in LAUNCHERS]
    if unknown or not systems:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(LAUNCHERS)}")
    seconds = 2.0 if args.quick else args.seconds
    patterns = [p.strip() for p in args.cells.split(",") if p.strip()]
    fair_cells = fair.select(patterns)
    run_matrix = "matrix" in patterns
    unmatched = [p for p in patterns if p != "matrix" and not fair.select([p])]
    if unmatched or not (run_matrix or fair_cells):
        parser.error(
            f"no cell matches {unmatched or patterns}; cells: matrix, " + ", ".join(fair.CELL_NAMES)
        )
    if args.keys < 1:
        parser.error("--keys must be positive")
    OUT.mkdir(parents=True, exist_ok=True)
    failed = False
    if run_matrix:
        failed |= run_the_matrix(systems, seconds, args.warmup)
    if fair_cells:
        failed |= run_fair(fair_cells, args.tool, seconds, args.warmup, args.keys)
    return 1 if failed else 0


def run_fair(
    cells: list[fair.FairCell], tool: str, seconds: float, warmup: float, keys: int
) -> bool:
    """Run the fair cells, print their report and write their files; True if any failed."""
    runner = fair.Runner(tool, seconds, warmup, keys, OUT)
    results = runner.run(cells)
    opts = {"seconds": seconds, "warmup": warmup, "keys": keys, "tool": tool}
    report = fair.render_report(cells, results, runner.notes, opts)
    (OUT / "fair.md").write_text(report)
    raw = {"options": opts, "notes": runner.notes, "results": [m.as_dict() for m in results]}
    (OUT / "fair.json").write_text(json.dumps(raw, indent=1))
    written = [OUT / "fair.md", OUT / "fair.json"]
    written += fair.write_series_csv(cells, results, OUT)
    try:
        fair.write_plot(cells, results, OUT / "fair-timeline.png")
        written.append(OUT / "fair-timeline.png")
    except ImportError:
        print(
            "no plot: matplotlib is not installed (the p99 sparklines are in fair.md)",
            file=sys.stderr,
        )
    print(report)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return any(m.failed for m in results)


def run_the_matrix(systems: list[str], seconds: float, warmup: float) -> bool:
    """The default-vs-default matrix: print its report and write its files; True if any failed."""
    cells: list[Cell] = []
    for system in systems:
        cells += measure_system(system, SIZES, CONCURRENCIES, OPS, seconds, warmup)

    report = render_report(cells, systems, seconds, warmup)
    (OUT / "compare.md").write_text(report)
    raw = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.as_dict().items()}
        for c in cells
    ]
    (OUT / "compare.json").write_text(json.dumps(raw, indent=1))
    written = [OUT / "compare.md", OUT / "compare.json"]
    try:
        write_chart(cells, systems, OUT / "compare.png")
        written.append(OUT / "compare.png")
    except ImportError:
        print("no chart: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    print(report)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return any(c.failed for c in cells) is True


if __name__ == "__main__":
    raise SystemExit(main())
