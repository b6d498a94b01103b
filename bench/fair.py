"""The fair cells of `make bench` (issue 16): kvraft and etcd at equal guarantees, one key and
many keys (YCSB-style zipfian workloads), each driven by loadgen and by an independent tool.

Every cell pairs one kvraft side with one etcd side, three nodes each on 127.0.0.1, 100-byte
values:

- default vs default: kvraft's defaults (`synchronous=NORMAL`, GET `r=one`) against etcd's
  (fsynced WAL, linearizable range);
- equal durability: PUT with `KVRAFT_FSYNC=true` (`synchronous=FULL`) against etcd's PUT;
- equal reads (on the fsync cluster): GET `r=quorum` against etcd's linearizable range, GET
  `r=one` against a `"serializable": true` range;
- YCSB: A (50/50 read/update), B (95/5), C (read only), kvraft with fsync and `r=quorum`
  against linearizable etcd, and (`-one` cells) `r=one` against serializable etcd.

"1key" cells hit one key; "many" and YCSB cells draw keys from a zipfian distribution (YCSB's
constant 0.99) over `keys` keys (100,000 by default) that are loaded first, with concurrent PUTs
(32 connections, round-robin over the nodes, the write path a client would use; kvraft's
`POST /import` only reloads an FTP export, so it is no bulk-load API).

Each side is measured twice in a row on the same cluster: by loadgen (16 connections,
round-robin over the nodes, after a warm-up) and by the independent tool: `hey` for the 1key
cells (three processes at once, one per node, 5 connections each: 15 connections; hey sends one
fixed request), `wrk` with a generated Lua script for the many-keys and YCSB cells (one thread per
node, 5 connections each). A side measured once serves every cell that needs it (kvraft's PUT on
the fsync cluster, etcd's PUT and ranges). Order: the kvraft default cluster, then the kvraft
fsync cluster, then etcd; each cluster is started, loaded, measured and stopped in turn.

Ports (127.0.0.1): kvraft HTTP 18601-18603, Raft 18701-18703, FTP 18801; etcd client
23891-23893, peer 23901-23903 (clear of the matrix's launchers).
"""

from __future__ import annotations

import fnmatch
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen, tools
from bench.etcd import EtcdCluster
from bench.kvraft_cluster import KvraftCluster

VALUE_SIZE = 100
CONNECTIONS = 16  # loadgen
TOOL_CONNS_PER_NODE = 5  # hey processes / wrk threads: one per node, 5 connections each
LOAD_CONNECTIONS = 32
ONE_KEY_PREFIX, MANY_PREFIX = "fair-one-", "fair-zipf-"
KVRAFT_PORTS = {"http_base": 18601, "raft_base": 18701, "ftp_port": 18801}
ETCD_PORTS = {"client_base": 23891, "peer_base": 23901}
TOOLS = ("loadgen", "hey", "wrk", "both")
OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Side:
    """One system's half of a cell; equal Sides are measured once."""

    system: str  # "kvraft" or "etcd"
    config: str  # kvraft: "default" or "fsync"; etcd: "default"
    op: str  # "put", "get" or "mix"
    keys: str  # "1key" or "many" (zipfian)
    read_level: str | None = None  # kvraft ?r=
    serializable: bool = False  # etcd
    read_fraction: float = 1.0  # op "mix"

    def slug(self) -> str:
        """A file-name form of the side: kvraft-fsync-get-quorum-many, etcd-default-mix50-..."""
        op = f"mix{round(self.read_fraction * 100)}" if self.op == "mix" else self.op
        parts = [self.system, self.config, op]
        if self.op != "put":
            if self.system == "kvraft":
                parts.append(self.read_level or "default")
            else:
                parts.append("serializable" if self.serializable else "linear")
        return "-".join([*parts, self.keys])

    def describe(self) -> str:
        what = {"put": "PUT", "get": "GET", "mix": f"{self.read_fraction:.0%} GET / PUT"}[self.op]
        if self.system == "kvraft":
            conf = "KVRAFT_FSYNC=true" if self.config == "fsync" else "defaults"
            read = f" r={self.read_level}" if self.read_level and self.op != "put" else ""
            return f"kvraft {conf}: {what}{read}"
        read = "" if self.op == "put" else (" serializable" if self.serializable else " linear.")
        return f"etcd: {what}{read}"


@dataclass(frozen=True)
class FairCell:
    name: str
    group: str
    title: str
    kvraft: Side
    etcd: Side


def _cells() -> list[FairCell]:
    def kv(config, op, keys, r=None, frac=1.0):
        return Side("kvraft", config, op, keys, read_level=r, read_fraction=frac)

    def et(op, keys, ser=False, frac=1.0):
        return Side("etcd", "default", op, keys, serializable=ser, read_fraction=frac)

    cells = []
    for keys in ("1key", "many"):
        cells += [
            FairCell(
                f"put-default-{keys}",
                "default vs default",
                "PUT, kvraft defaults vs etcd",
                kv("default", "put", keys),
                et("put", keys),
            ),
            FairCell(
                f"get-default-{keys}",
                "default vs default",
                "GET r=one (kvraft defaults) vs etcd linearizable",
                kv("default", "get", keys, "one"),
                et("get", keys),
            ),
            FairCell(
                f"put-fsync-{keys}",
                "equal durability",
                "PUT, KVRAFT_FSYNC=true vs etcd",
                kv("fsync", "put", keys),
                et("put", keys),
            ),
            FairCell(
                f"get-quorum-{keys}",
                "equal reads",
                "GET r=quorum vs etcd linearizable",
                kv("fsync", "get", keys, "quorum"),
                et("get", keys),
            ),
            FairCell(
                f"get-one-{keys}",
                "equal reads",
                "GET r=one vs etcd serializable",
                kv("fsync", "get", keys, "one"),
                et("get", keys, ser=True),
            ),
        ]
    for letter, frac in (("a", 0.5), ("b", 0.95), ("c", 1.0)):
        op = "get" if frac == 1.0 else "mix"
        mix = f"{frac:.0%} read / {1 - frac:.0%} update" if frac < 1 else "read only"
        cells += [
            FairCell(
                f"ycsb-{letter}",
                "YCSB",
                f"YCSB {letter.upper()} ({mix}), fsync + r=quorum vs etcd linearizable",
                kv("fsync", op, "many", "quorum", frac),
                et(op, "many", frac=frac),
            ),
            FairCell(
                f"ycsb-{letter}-one",
                "YCSB",
                f"YCSB {letter.upper()} ({mix}), fsync + r=one vs etcd serializable",
                kv("fsync", op, "many", "one", frac),
                et(op, "many", ser=True, frac=frac),
            ),
        ]
    return sorted(cells, key=lambda c: GROUPS.index(c.group))  # stable: 1key before many


GROUPS = ["default vs default", "equal durability", "equal reads", "YCSB"]
CELLS = _cells()
CELL_NAMES = [c.name for c in CELLS]


def select(patterns: list[str]) -> list[FairCell]:
    """The cells whose names match any of the shell patterns (`put-*`, `ycsb-?`), in order."""
    return [c for c in CELLS if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


@dataclass
class Measured:
    """One side measured by one tool."""

    side: Side
    tool: str  # "loadgen", "hey" or "wrk"
    throughput: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    error_kinds: dict = field(default_factory=dict)
    error_examples: dict = field(default_factory=dict)  # kind: the first such answer (loadgen)
    series: list = field(default_factory=list)  # (second, requests, p50 ms, p99 ms)
    command: str = ""
    failed: str | None = None

    def as_dict(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "side": self.side.__dict__,
            "tool": self.tool,
            "throughput": round(self.throughput, 1),
            "p50_ms": clean(self.p50_ms),
            "p99_ms": clean(self.p99_ms),
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "error_examples": self.error_examples,
            "series": [[s, n, clean(p50), clean(p99)] for s, n, p50, p99 in self.series],
            "command": self.command,
            "failed": self.failed,
        }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def independent_tool(side: Side, tool: str) -> str:
    """The independent tool that drives `side`: hey for 1key cells unless `tool` is "wrk"."""
    return "hey" if side.keys == "1key" and tool != "wrk" else "wrk"


def _node_envs(cluster: KvraftCluster) -> list[dict[str, str]]:
    """The environments of the `kvraft serve` children of the cluster's launcher (Linux /proc)."""
    assert cluster.proc is not None
    envs = []
    try:
        kids = Path(f"/proc/{cluster.proc.pid}/task/{cluster.proc.pid}/children").read_text()
        for pid in kids.split():
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            envs.append(dict(x.split("=", 1) for x in raw.decode().split("\0") if "=" in x))
    except OSError:
        pass
    return envs


class Runner:
    """Measures Sides on running clusters; `results` collects every measurement."""

    def __init__(
        self, tool: str, seconds: float, warmup: float, keys: int, out: Path = OUT
    ) -> None:
        self.tool, self.seconds, self.warmup, self.keys = tool, seconds, warmup, keys
        self.out = out  # hey's request bodies and wrk's scripts are kept under it
        self.value = loadgen.make_value(VALUE_SIZE)
        self.results: list[Measured] = []
        self.notes: list[str] = []

    def load(self, system: str, urls: list[str], sides: list[Side]) -> None:
        """Write the one key and/or the `keys` many keys the sides read, with concurrent PUTs."""
        batches = []
        if any(s.keys == "1key" for s in sides):
            batches.append((ONE_KEY_PREFIX, 1))
        if any(s.keys == "many" for s in sides):
            batches.append((MANY_PREFIX, self.keys))
        for prefix, count in batches:
            started = time.monotonic()
            res = loadgen.run_sync(
                urls,
                system,
                "put",
                min(LOAD_CONNECTIONS, count),
                VALUE_SIZE,
                requests=count,
                seconds=1200,
                warmup=0,
                keys=count,
                key_prefix=prefix,
            )
            took = time.monotonic() - started
            note = (
                f"{system} load of {count:,} keys `{prefix}*`: {took:.1f} s "
                f"({count / took:,.0f} PUT/s, {min(LOAD_CONNECTIONS, count)} connections)"
            )
            if res.errors:
                note += f", {res.errors} errors {dict(res.error_kinds.most_common(3))}"
            _log("  " + note)
            self.notes.append(note)

    def measure(self, urls: list[str], side: Side) -> None:
        prefix, count = (ONE_KEY_PREFIX, 1) if side.keys == "1key" else (MANY_PREFIX, self.keys)
        runs = []
        if self.tool in ("loadgen", "both"):
            runs.append("loadgen")
        if self.tool != "loadgen":
            runs.append(independent_tool(side, self.tool))
        for tool in runs:
            m = Measured(side, tool)
            try:
                if tool == "loadgen":
                    res = loadgen.run_sync(
                        urls,
                        side.system,
                        side.op,
                        CONNECTIONS,
                        VALUE_SIZE,
                        side.read_level,
                        side.serializable,
                        seconds=self.seconds,
                        warmup=self.warmup,
                        keys=count,
                        key_prefix=prefix,
                        distribution="sequential" if side.keys == "1key" else "zipfian",
                        read_fraction=side.read_fraction,
                    )
                    m.throughput, m.p50_ms, m.p99_ms = res.throughput, res.p50_ms, res.p99_ms
                    m.requests, m.errors = res.requests, res.errors
                    m.error_kinds = dict(res.error_kinds.most_common(5))
                    m.error_examples = dict(res.error_examples)
                    m.series = res.per_second()
                    m.command = (
                        f"loadgen -c {CONNECTIONS} round-robin, {self.warmup:g} s warm-up, "
                        f"{self.seconds:g} s"
                    )
                else:
                    req = tools.Request(
                        side.system,
                        side.op,
                        side.read_level,
                        side.serializable,
                        side.read_fraction,
                    )
                    if tool == "hey":
                        key = f"{ONE_KEY_PREFIX}{0:06d}"
                        r = tools.run_hey(
                            urls,
                            req,
                            key,
                            self.value,
                            TOOL_CONNS_PER_NODE,
                            self.seconds,
                            body_dir=self.out / "hey",
                            warmup=self.warmup,
                        )
                    else:
                        r = tools.run_wrk(
                            urls,
                            req,
                            count,
                            prefix,
                            self.value,
                            TOOL_CONNS_PER_NODE,
                            self.seconds,
                            script=self.out / "wrk" / f"{side.slug()}.lua",
                        )
                    m.throughput, m.p50_ms, m.p99_ms = r.throughput, r.p50_ms, r.p99_ms
                    m.requests, m.errors, m.error_kinds = r.requests, r.errors, r.error_kinds
                    m.series, m.command, m.failed = r.series, r.command, r.failed
            except Exception as exc:  # one broken measurement never hides the others
                m.failed = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
            _log(
                f"  {side.describe():45} {side.keys:4} {tool:7}: {m.throughput:8.1f} req/s "
                f"p50 {m.p50_ms:7.2f} ms p99 {m.p99_ms:7.2f} ms errors {m.errors}"
                + (f" FAILED {m.failed}" if m.failed else "")
            )
            self.results.append(m)

    def run(self, cells: list[FairCell]) -> list[Measured]:
        """Measure every side of `cells`, one cluster at a time. Never raises for a failure."""
        plan = [("kvraft", "default"), ("kvraft", "fsync"), ("etcd", "default")]
        for system, config in plan:
            sides: list[Side] = []
            for c in cells:
                side = c.kvraft if system == "kvraft" else c.etcd
                if side.config == config and side not in sides:
                    sides.append(side)
            if not sides:
                continue
            _log(f"fair cells: {system} ({config}): starting a 3-node cluster")
            try:
                if system == "kvraft":
                    env = dict(os.environ, KVRAFT_FSYNC="true" if config == "fsync" else "false")
                    cluster: KvraftCluster | EtcdCluster = KvraftCluster(env=env, **KVRAFT_PORTS)
                else:
                    cluster = EtcdCluster(**ETCD_PORTS)
                with cluster:
                    if isinstance(cluster, KvraftCluster):
                        seen = [e.get("KVRAFT_FSYNC") for e in _node_envs(cluster)]
                        self.notes.append(f"kvraft {config} cluster: nodes' KVRAFT_FSYNC={seen}")
                    self.load(system, cluster.urls, sides)
                    for side in sides:
                        self.measure(cluster.urls, side)
            except Exception as exc:  # reported in the table instead
                reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
                _log(f"{system} ({config}): FAILED: {exc}")
                measured = {m.side for m in self.results}
                for side in sides:
                    if side not in measured:
                        self.results.append(Measured(side, "-", failed=reason))
        return self.results


# --------------------------------------------------------------------------- output


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _find(results: list[Measured], side: Side, tool: str) -> Measured | None:
    for m in results:
        if m.side == side and (m.tool == tool or m.tool == "-"):
            return m
    return None


def _cell_text(m: Measured | None) -> list[str]:
    if m is None:
        return ["-", "-", "-"]
    if m.failed:
        return ["failed", "-", "-"]
    err = f" ({m.errors} err)" if m.errors else ""
    return [_fmt(m.throughput) + err, _fmt(m.p50_ms, 2), _fmt(m.p99_ms, 2)]


def _ratio(a: float, b: float) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def tools_of(cell: FairCell, tool: str) -> list[str]:
    out = ["loadgen"] if tool in ("loadgen", "both") else []
    return out + ([independent_tool(cell.kvraft, tool)] if tool != "loadgen" else [])


def render_table(cells: list[FairCell], results: list[Measured], tool: str) -> str:
    head = [
        "cell",
        "what",
        "tool",
        "kvraft req/s",
        "p50 ms",
        "p99 ms",
        "etcd req/s",
        "p50 ms",
        "p99 ms",
        "kvraft/etcd req/s",
        "kvraft/etcd p99 (<1: kvraft's is lower)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    group = None
    shown: dict[tuple[Side, Side], str] = {}
    for cell in cells:
        if cell.group != group:
            group = cell.group
            lines.append(f"| **{group}** |" + " |" * (len(head) - 1))
        same = shown.setdefault((cell.kvraft, cell.etcd), cell.name)
        title = cell.title + (f" (the same measurement as {same})" if same != cell.name else "")
        for t in tools_of(cell, tool):
            k, e = _find(results, cell.kvraft, t), _find(results, cell.etcd, t)
            ok = k is not None and e is not None and not k.failed and not e.failed
            row = [cell.name, title, t, *_cell_text(k), *_cell_text(e)]
            row += [
                _ratio(k.throughput, e.throughput) if ok and k and e else "-",
                _ratio(k.p99_ms, e.p99_ms) if ok and k and e else "-",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


SPARKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """One character per value, scaled from 0 to the largest (NaN: a space)."""
    finite = [v for v in values if not math.isnan(v)]
    top = max(finite, default=0.0) or 1.0
    return "".join(
        " " if math.isnan(v) else SPARKS[1 + min(7, int(v / top * 7.999))] for v in values
    )


def render_series(cells: list[FairCell], results: list[Measured]) -> str:
    """Per cell and measurement with a series: the p99 per second as a sparkline, and its max."""
    lines = []
    for cell in cells:
        for m in results:
            if m.side not in (cell.kvraft, cell.etcd) or not m.series or m.failed:
                continue
            p99 = [row[3] for row in m.series]
            top = max((v for v in p99 if not math.isnan(v)), default=float("nan"))
            lines.append(
                f"{cell.name:18} {m.side.system:6} {m.tool:7} p99/s `{sparkline(p99)}` "
                f"max {_fmt(top, 1)} ms"
            )
    return "\n".join(lines)


def write_series_csv(cells: list[FairCell], results: list[Measured], out: Path) -> list[Path]:
    """bench/out/fair-<cell>.csv: system, config, tool, second, requests, p50_ms, p99_ms."""
    written = []
    for cell in cells:
        rows = ["system,config,tool,second,requests,p50_ms,p99_ms"]
        for m in results:
            if m.side not in (cell.kvraft, cell.etcd):
                continue
            for second, n, p50, p99 in m.series:
                rows.append(
                    f"{m.side.system},{m.side.config},{m.tool},{second},{n},"
                    f"{'' if math.isnan(p50) else f'{p50:.3f}'},"
                    f"{'' if math.isnan(p99) else f'{p99:.3f}'}"
                )
        path = out / f"fair-{cell.name}.csv"
        path.write_text("\n".join(rows) + "\n")
        written.append(path)
    return written


def write_plot(cells: list[FairCell], results: list[Measured], path: Path) -> None:
    """p50 (dashed) and p99 (solid) per second, one panel per cell. Raises ImportError without
    matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = max(1, math.ceil(len(cells) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.2 * rows), squeeze=False)
    colors = {("kvraft", "loadgen"): "C0", ("kvraft", "hey"): "C9", ("kvraft", "wrk"): "C9"}
    colors |= {("etcd", "loadgen"): "C3", ("etcd", "hey"): "C1", ("etcd", "wrk"): "C1"}
    for ax, cell in zip(axes.flat, cells, strict=False):
        for m in results:
            if m.side not in (cell.kvraft, cell.etcd) or not m.series or m.failed:
                continue
            xs = [r[0] + 1 for r in m.series]
            color = colors.get((m.side.system, m.tool), "k")
            label = f"{m.side.system} {m.tool}"
            ax.plot(xs, [r[3] for r in m.series], color=color, marker=".", label=label)
            ax.plot(xs, [r[2] for r in m.series], color=color, linestyle="--", linewidth=0.8)
        ax.set_title(cell.name, fontsize=9)
        ax.set_xlabel("second", fontsize=8)
        ax.set_ylabel("ms (p99 solid, p50 dashed)", fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    fig.suptitle("fair cells: latency per second (wrk has no per-request output: not shown)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_report(
    cells: list[FairCell], results: list[Measured], notes: list[str], args: dict
) -> str:
    lines = [
        "## Fair cells (issue 16)",
        "",
        f"3 nodes per system on 127.0.0.1, {VALUE_SIZE} B values; {args['seconds']:g} s per "
        f"measurement (loadgen after a {args['warmup']:g} s warm-up); many-keys cells: "
        f"{args['keys']:,} keys, zipfian 0.99. loadgen: {CONNECTIONS} connections round-robin "
        f"over the nodes. hey: one process per node at once, {TOOL_CONNS_PER_NODE} connections "
        f"each. wrk: one thread per node, {TOOL_CONNS_PER_NODE} connections each.",
        "",
    ]
    lines += [f"- {n}" for n in notes]
    for m in results:
        if m.failed:
            lines.append(f"- {m.side.describe()} {m.side.keys} {m.tool}: not measured: {m.failed}")
        elif m.errors:
            lines.append(
                f"- {m.side.describe()} {m.side.keys} {m.tool}: {m.errors} errors of "
                f"{m.requests} ({m.error_kinds})"
            )
            for kind, example in m.error_examples.items():
                lines.append(f"  - first `{kind}` answer: `{example}`")
    lines += ["", render_table(cells, results, args["tool"]), ""]
    series = render_series(cells, results)
    if series:
        lines += ["p99 per second (loadgen, hey):", "", "```", series, "```", ""]
    commands = []
    for m in results:
        if m.tool in ("hey", "wrk") and m.command:
            commands.append(f"- {m.side.describe()} {m.side.keys}: `{m.command}`")
    if commands:
        lines += ["Independent tool commands run:", "", *commands, ""]
    return "\n".join(lines)
