"""Present a checker verdict: a markdown results table and a PNG of throughput and latency over
time with the fault windows shaded. Reads only what :func:`chaos.checker.check` returned and
the history's timeline; writes only into the run's output directory.
"""

from __future__ import annotations

import json
import os

COLORS = {
    "kill": "#d62728",
    "kill-leader": "#8c1c13",
    "pause": "#ff7f0e",
    "partition-one": "#1f77b4",
    "partition-leader": "#17becf",
    "partition-majority": "#9467bd",
    "loss": "#2ca02c",
    "skew": "#bcbd22",
    "delay": "#e377c2",
}


def fault_label(f: dict) -> str:
    """The fault's kind with its parameter: ``loss p=0.2``, ``skew +5000 ms``, ``delay 100 ms``."""
    p = f.get("params") or {}
    if p.get("probability"):
        return f"{f['kind']} p={p['probability']}"
    if p.get("offset_ms"):
        return f"{f['kind']} {p['offset_ms']:+d} ms"
    if p.get("delay_ms"):
        jitter = f"+{p['jitter_ms']}" if p.get("jitter_ms") else ""
        return f"{f['kind']} {p['delay_ms']}{jitter} ms"
    return f["kind"]


def _fmt_ms(p50, p99) -> str:
    return "-" if p50 is None else f"{p50:g} / {p99:g}"


def _fmt_share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def markdown(result: dict, title: str = "") -> str:
    lines = []
    if title:
        lines += [f"### {title}", ""]
    ops = result["ops"]
    lines.append(
        f"{ops.get('writes', 0)} writes ({ops.get('writes_ok', 0)} ok, "
        f"{ops.get('writes_unknown', 0)} unknown, {ops.get('writes_fail', 0)} failed), "
        f"{ops.get('reads', 0)} reads ({ops.get('reads_ok', 0)} ok); ok latency p50 "
        f"{ops.get('ok_p50_ms', '-')} ms, p99 {ops.get('ok_p99_ms', '-')} ms; "
        f"{len(result['faults'])} faults on {len(result['nodes'])} nodes."
    )
    reg = result.get("register") or {}
    if reg.get("keys"):
        rops = reg["ops"]
        lines.append(
            f"Register workload: {reg['keys']} keys, {rops.get('writes', 0)} PUTs "
            f"({rops.get('writes_ok', 0)} ok, {rops.get('writes_unknown', 0)} unknown, "
            f"{rops.get('writes_fail', 0)} failed), {rops.get('deletes', 0)} DELETEs "
            f"({rops.get('deletes_ok', 0)} ok), {rops.get('reads', 0)} r=quorum reads "
            f"({reg['reads']} answered, {reg['determinate']} determinate: one allowed answer)."
        )
    lines += ["", "| check | result | target | |", "|---|---|---|---|"]
    for row in result["targets"]:
        if row["class"] == "info":
            mark = "-"
        elif row["class"] == "consistency":
            mark = "ok" if row["ok"] else "**seen** (reported, not a target)"
        else:
            mark = "PASS" if row["ok"] else "**FAIL**"
        lines.append(f"| {row['name']} | {row['value']} | {row['target']} | {mark} |")
    conv = result["convergence"]
    if conv.get("measured"):
        lines += [
            "",
            f"Convergence: {conv['dirty']} keys had hinted or unknown-outcome writes; "
            f"{conv['apart_at_heal']} were not yet seen in agreement at the final heal. "
            f"After it: nodes ready in {conv['ready_s']} s, first poll at "
            f"{conv['first_poll_s']} s, {conv['keys_polled_after_heal']} keys polled "
            f"({conv['settled_sampled']} of {conv['settled_total']} dirty keys seen agreeing"
            f" earlier and {conv['clean_sampled']} of {conv['clean_total']} clean keys "
            f"re-checked: {conv['regressed']} found apart again), {conv['sweeps']} "
            f"sweep(s).",
        ]
        if conv["pending"]:
            lines.append(
                f"Keys never in agreement: {', '.join(conv['pending_keys'])}"
                + (" ..." if conv["pending"] > len(conv["pending_keys"]) else "")
            )
        if conv["regressed"]:
            lines.append(f"Keys apart again: {', '.join(conv['regressed_keys'])}")
    if result["faults"]:
        lines += [
            "",
            "| # | fault | nodes | leader | at (s) | held (s) | ops ok | other side ok |"
            " new leader (s) | ok p50 / p99 ms | on the nodes hit |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in result["faults"]:
            who = (
                " / ".join(",".join(g) for g in f["groups"])
                if f["groups"]
                else ",".join(f["nodes"])
            )
            nl = (
                "-"
                if not f["lost_leader"]
                else ("none" if f["new_leader_s"] is None else f"{f['new_leader_s']:g}")
            )
            lines.append(
                f"| {f['id']} | {fault_label(f)} | {who} | {f['leader']} | {f['start']:.1f} | "
                f"{f['duration_s']:.1f} | {_fmt_share(f['share'])} ({f['ok']}/{f['ops']}) | "
                f"{_fmt_share(f['other_share'])} ({f['other_ok']}/{f['other_ops']}) | {nl} | "
                f"{_fmt_ms(f.get('p50_ms'), f.get('p99_ms'))} | "
                f"{_fmt_ms(f.get('hit_p50_ms'), f.get('hit_p99_ms'))} |"
            )
    for name, items in (
        ("Lost", result["lost"]),
        ("Phantoms", result["phantoms"]),
        ("Read-your-writes violations", result["ryw_violations"]),
        ("Failed writes visible", result["failed_visible"]),
        ("Unverified", result["unverified"]),
        ("Register: overwrites lost", reg.get("lost", [])),
        ("Register: deletes undone", reg.get("undone", [])),
        ("Register: stale reads", reg.get("stale", [])),
        ("Register: wrong final state", reg.get("final_wrong", [])),
        ("Register: keys unverified", reg.get("unverified", [])),
    ):
        if items:
            lines += ["", f"{name} (first 10 of {len(items)}):"]
            lines += [f"- `{json.dumps(x, sort_keys=True)}`" for x in items[:10]]
    return "\n".join(lines) + "\n"


def plot(result: dict, timeline: list[dict], path: str, title: str = "") -> str | None:
    """Write the PNG; returns its path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return None
    t = [r["t"] for r in timeline]
    span = (t[-1] - t[0]) if t else 0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(min(30, max(13, span / 30)), 7), sharex=True)
    ax1.plot(t, [r["ok"] for r in timeline], color="black", lw=1, label="ok ops/s")
    ax1.plot(t, [r["failed"] for r in timeline], color="red", lw=1, label="failed or unknown ops/s")
    ax1.set_ylabel("operations / s")
    ax2.plot(t, [r["p50_ms"] for r in timeline], color="black", lw=1, label="p50 (ok ops)")
    ax2.plot(t, [r["p99_ms"] for r in timeline], color="purple", lw=1, label="p99 (ok ops)")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency, ms")
    ax2.set_xlabel("seconds since start")
    kinds = []
    for n, f in enumerate(result["faults"]):
        for ax in (ax1, ax2):
            ax.axvspan(f["start"], f["end"], color=COLORS.get(f["kind"], "grey"), alpha=0.18, lw=0)
        ax1.annotate(
            f"{fault_label(f)}\n{','.join(f['nodes'])}",
            (f["start"], 1.0 - 0.08 * (n % 2)),
            xycoords=("data", "axes fraction"),
            fontsize=6,
            va="top",
        )
        if f["kind"] not in kinds:
            kinds.append(f["kind"])
    conv = result["convergence"]
    heal = None
    if conv.get("measured"):
        heal = conv.get("heal_t")
    if heal is not None:
        for ax in (ax1, ax2):
            ax.axvline(
                heal, color="green", ls="--", lw=1, label="final heal" if ax is ax1 else None
            )
    handles, labels = ax1.get_legend_handles_labels()
    handles += [Patch(color=COLORS.get(k, "grey"), alpha=0.3) for k in kinds]
    labels += kinds
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(
        handles + h2,
        labels + l2,
        fontsize=7,
        loc="lower center",
        ncol=min(8, len(labels) + len(l2)),
        frameon=False,
    )
    fig.suptitle(title or f"kvraft chaos: {result.get('scenario')}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
