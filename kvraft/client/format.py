"""Pure formatting of the client commands' output: tables, columns, progress bars, the status
text, write results and ``get --json`` documents. No network, no globals, no printing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any


def human_bytes(n: int | float | None) -> str:
    """``1536`` -> ``1.5 KiB``; None -> ``-``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()
) -> str:
    """Columns padded to their widest cell, separated by two spaces; columns in ``right`` are
    right-aligned. No trailing spaces."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = set(right)
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_columns(items: Sequence[str], width: int = 80) -> str:
    """Items laid out in columns down then across, like ``ls``, within ``width`` characters."""
    if not items:
        return ""
    col = max(len(s) for s in items) + 2
    ncols = max(1, (width + 2) // col)
    nrows = -(-len(items) // ncols)
    lines = []
    for r in range(nrows):
        row = [items[c * nrows + r] for c in range(ncols) if c * nrows + r < len(items)]
        lines.append("".join(s.ljust(col) for s in row).rstrip())
    return "\n".join(lines)


def render_bar(
    label: str,
    done: int | None,
    total: int | None = None,
    width: int = 30,
    elapsed: float | None = None,
) -> str:
    """One line of progress: ``label [#####.....]  50%  5/10`` when the total is known, else a
    count (``label  5``), or just the label when ``done`` is None. ``elapsed`` seconds are
    appended when given. A count past an (estimated) total shows a full bar."""
    tail = f"  {elapsed:.1f}s" if elapsed is not None else ""
    if done is None:
        return f"{label}{tail}"
    if total:
        frac = min(1.0, max(0.0, done / total))
        fill = int(frac * width)
        bar = "#" * fill + "." * (width - fill)
        return f"{label} [{bar}] {frac * 100:3.0f}%  {done}/{total}{tail}"
    return f"{label}  {done}{tail}"


def partition_balance(cluster: dict) -> dict[str, int]:
    """Node id -> number of partitions it holds a replica of (every known node, zeros too)."""
    counts = {n["id"]: 0 for n in cluster.get("nodes", [])}
    for replicas in (cluster.get("partitions") or {}).values():
        for node_id in replicas:
            counts[node_id] = counts.get(node_id, 0) + 1
    return counts


def degraded_partitions(cluster: dict) -> int:
    """Partitions with fewer live replicas than the replication factor."""
    alive = {n["id"] for n in cluster.get("nodes", []) if n.get("alive")}
    rf = cluster.get("replication_factor") or 0
    return sum(
        1
        for reps in (cluster.get("partitions") or {}).values()
        if len([r for r in reps if r in alive]) < max(rf, len(reps))
    )


def format_status(cluster: dict, width: int = 20) -> str:
    """The ``kvraft status`` text: a node table, a summary line and the partition balance."""
    rows = []
    for n in cluster.get("nodes", []):
        rows.append(
            (
                n.get("id"),
                n.get("http"),
                "yes" if n.get("alive") else "DOWN",
                "*" if n.get("is_leader") else "",
                n.get("keys"),
                human_bytes(n.get("bytes")),
            )
        )
    out = [format_table(("NODE", "HTTP", "ALIVE", "LEADER", "KEYS", "BYTES"), rows, right=(4, 5))]
    raft = cluster.get("raft") or {}
    summary = [f"leader {cluster.get('leader') or 'none'}"]
    if "term" in raft:
        summary.append(f"raft term {raft['term']}, commit {raft.get('commit_index', '-')}")
    summary.append(f"replication factor {cluster.get('replication_factor', '-')}")
    summary.append(f"hints pending {cluster.get('hints_pending', 0)}")
    out.append("")
    out.append(", ".join(summary))
    parts = cluster.get("partitions") or {}
    balance = partition_balance(cluster)
    if not parts:
        out.append("partitions: no partition map yet")
        return "\n".join(out)
    held = sum(balance.values())
    ideal = held / len(balance) if balance else 0.0
    out.append(
        f"partitions: {len(parts)}, {held} replicas on {len(balance)} nodes "
        f"(ideal {ideal:.1f} per node)"
    )
    top = max(balance.values()) if balance else 0
    for node_id, count in balance.items():
        bar = "#" * (round(count / top * width) if top else 0)
        out.append(f"  {node_id:<{max(len(k) for k in balance)}}  {count:>4}  {bar}")
    spread = top - min(balance.values()) if balance else 0
    degraded = degraded_partitions(cluster)
    out.append(
        f"balance: spread {spread} (max {top}, min {top - spread})"
        + (f"; {degraded} partition(s) missing a live replica" if degraded else "")
    )
    return "\n".join(out)


def format_write(action: str, res: dict) -> str:
    """``created k  version v  replicas n1,n2  acks 2`` for put/delete results."""
    parts = [f"{action} {res['key']}", f"version {res.get('version', '-')}"]
    if res.get("replicas"):
        parts.append("replicas " + ",".join(res["replicas"]))
    parts.append(f"acks {res.get('acks', '-')}")
    if res.get("hinted"):
        parts.append("hinted on " + ",".join(res["hinted"]))
    return "  ".join(parts)


def value_json(key: str, value: bytes | None, version: str, node: str) -> dict:
    """The ``get --json`` document: text values as UTF-8, other bytes as base64."""
    doc: dict[str, Any] = {"key": key, "version": version, "node": node}
    if value is None:
        return doc
    doc["size"] = len(value)
    try:
        doc["value"], doc["encoding"] = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        doc["value"], doc["encoding"] = base64.b64encode(value).decode("ascii"), "base64"
    return doc
