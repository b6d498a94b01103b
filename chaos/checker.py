"""Judge a chaos history: pure functions from the records (see :mod:`chaos.history`) to figures.

No IO, no clock, no randomness: a history is a list of dicts, and the same history always gives
the same verdict, so each rule is unit-tested with small hand-made histories
(``tests/unit/test_checker.py``).

What is checked:

* **lost**: an acknowledged write (outcome ok) whose key, read with ``r=all`` after the final
  heal, holds neither its value nor the value of a write of that key that was not over before it
  began. *unverified*: no final read of the key answered, so the write could not be checked.
* **phantoms**: a read (during the run or final) that returned a value no client ever tried to
  write to that key. **failed writes visible**: a read returned the value of a write that
  certainly failed (refused connection, 4xx).
* **read-your-writes**: a sticky client's read, through the node it wrote through, of a key it
  wrote and was acknowledged before the read began, did not return that value.
* **stale reads** (reported, not a target: ``r=one`` reads are eventually consistent): a read of
  a key acknowledged before the read began returned 404.
* **register workload** (keys written many times, :func:`register`): *acknowledged overwrites
  lost*, *deletes undone*, *stale reads* and the *final state* after the heal, by the rule of
  :func:`allowed` and :func:`judge_read`; writes with an unknown outcome are maybe applied.
* **convergence**: the time from the final heal until every polled key was identical on all of
  its replicas, against two sync intervals plus 5 s.
* **leader**: for each fault that took the leader away (kill, pause or partition of the leader),
  the time until every surviving node named the same new leader.
* **availability**: the share of operations invoked during each fault window that succeeded,
  overall and on the other side (nodes not hit by the fault: the majority during a partition;
  there without the operations that need every replica of their key, which no store can serve
  with a replica cut off: ``r=all``, ``w=all``, and ``r=quorum`` when a quorum of the
  replication factor is every replica, as with the default 2), and the latency (p50, p99) of
  the successful ones, overall and on the nodes hit (what a ``delay`` fault shows).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

PARTITIONS = ("partition-one", "partition-leader", "partition-majority")


@dataclass(frozen=True)
class Targets:
    leader_s: float = 5.0
    majority_share: float = 0.95
    convergence_extra_s: float = 5.0  # deadline = 2 * sync interval + this


def _ops(records: list[dict], phase: str | None = None) -> list[dict]:
    return [r for r in records if r.get("type") == "op" and (phase is None or r["phase"] == phase)]


def _set_ops(records: list[dict], phase: str | None = None) -> list[dict]:
    """The set workload's operations (the register workload's are judged by :func:`register`)."""
    return [r for r in _ops(records, phase) if r.get("workload") != "register"]


def _by_type(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get("type") == kind]


# -- safety ----------------------------------------------------------------------------------------


def attempted_values(records: list[dict]) -> dict[str, set[str]]:
    values: dict[str, set[str]] = defaultdict(set)
    for op in _ops(records):
        if op["op"] == "write":
            values[op["key"]].add(op["value"])
    return values


def lost_writes(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(lost, unverified) acknowledged writes, judged by the final reads."""
    writes: dict[str, list[dict]] = defaultdict(list)
    for op in _set_ops(records):
        if op["op"] == "write":
            writes[op["key"]].append(op)
    finals: dict[str, list[dict]] = defaultdict(list)
    for op in _ops(records, "final"):
        if op["op"] == "read" and op["outcome"] == "ok":
            finals[op["key"]].append(op)
    lost, unverified = [], []
    for key, ws in writes.items():
        for w in ws:
            if w["outcome"] != "ok" or w["phase"] != "run":
                continue
            reads = finals.get(key)
            if not reads:
                unverified.append({"key": key, "value": w["value"], "t1": w["t1"]})
                continue
            # values that may legitimately have replaced w: writes of the key not over before w
            allowed = {w["value"]} | {o["value"] for o in ws if o is not w and o["t1"] >= w["t0"]}
            seen = [r["value"] if r["found"] else None for r in reads]
            if not any(v in allowed for v in seen):
                lost.append(
                    {
                        "key": key,
                        "value": w["value"],
                        "node": w["node"],
                        "served": w.get("served"),
                        "t1": w["t1"],
                        "final": seen[-1],
                    }
                )
    return lost, unverified


def phantoms(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(phantom reads, reads of certainly-failed writes' values)."""
    values = attempted_values(records)
    failed: dict[str, set[str]] = defaultdict(set)
    other: dict[str, set[str]] = defaultdict(set)
    for op in _ops(records):
        if op["op"] == "write":
            (failed if op["outcome"] == "fail" else other)[op["key"]].add(op["value"])
    bad, resurrected = [], []
    for op in _ops(records):
        if op["op"] != "read" or op["outcome"] != "ok" or not op.get("found"):
            continue
        v, key = op["value"], op["key"]
        brief = {"key": key, "value": v, "node": op["node"], "t1": op["t1"], "phase": op["phase"]}
        if v not in values.get(key, ()):
            bad.append(brief)
        elif v in failed[key] and v not in other[key]:
            resurrected.append(brief)
    return bad, resurrected


def read_your_writes(records: list[dict]) -> tuple[int, list[dict]]:
    """(reads checked, violations) for sticky clients reading back through the same node."""
    acked: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for op in _set_ops(records, "run"):
        if op["sticky"] and op["op"] == "write" and op["outcome"] == "ok":
            acked[(op["client"], op["key"])].append(op)
    checked, violations = 0, []
    for op in _set_ops(records, "run"):
        if not (op["sticky"] and op["op"] == "read" and op["outcome"] == "ok"):
            continue
        prior = [
            w
            for w in acked.get((op["client"], op["key"]), ())
            if w["t1"] <= op["t0"] and w["node"] == op["node"]
        ]
        if not prior:
            continue
        checked += 1
        latest = max(prior, key=lambda w: w["t1"])
        if not op.get("found") or op["value"] != latest["value"]:
            violations.append(
                {
                    "client": op["client"],
                    "key": op["key"],
                    "node": op["node"],
                    "wrote": latest["value"],
                    "read": op["value"] if op.get("found") else None,
                    "t0": op["t0"],
                    "write_t1": latest["t1"],
                }
            )
    return checked, violations


def stale_reads(records: list[dict]) -> tuple[int, int]:
    """(reads of already-acknowledged keys by non-sticky clients, how many returned 404)."""
    first_ack: dict[str, float] = {}
    for op in _set_ops(records, "run"):
        if op["op"] == "write" and op["outcome"] == "ok":
            first_ack[op["key"]] = min(op["t1"], first_ack.get(op["key"], op["t1"]))
    checked = stale = 0
    for op in _set_ops(records, "run"):
        if op["op"] != "read" or op["sticky"] or op["outcome"] != "ok":
            continue
        if op["key"] in first_ack and first_ack[op["key"]] <= op["t0"]:
            checked += 1
            stale += not op.get("found")
    return checked, stale


def unknown_writes(records: list[dict]) -> dict:
    """How many writes had an unknown outcome, and how many of those the final reads saw."""
    seen = {
        (op["key"], op["value"])
        for op in _set_ops(records, "final")
        if op["outcome"] == "ok" and op.get("found")
    }
    unknown = [
        op for op in _set_ops(records, "run") if op["op"] == "write" and op["outcome"] == "unknown"
    ]
    return {
        "count": len(unknown),
        "visible": sum((op["key"], op["value"]) in seen for op in unknown),
    }


# -- the register workload -------------------------------------------------------------------------

INF = float("inf")
_INITIAL = {"op": "initial", "value": None, "t0": -INF, "t1": -INF, "acked": True}


def _mutations(records: list[dict]) -> dict[str, list[dict]]:
    """Per register key, the mutations that may have taken effect: acknowledged PUTs and DELETEs
    (a DELETE answered 404 wrote nothing and is left out), and the maybe-applied ones (outcome
    unknown: their end is infinity, so they overlap every later operation). Certainly failed
    ones are left out."""
    out: dict[str, list[dict]] = defaultdict(list)
    for op in _ops(records, "run"):
        if op.get("workload") != "register" or op["op"] not in ("write", "delete"):
            continue
        if op["outcome"] == "fail" or (op["op"] == "delete" and op.get("found") is False):
            continue
        acked = op["outcome"] == "ok"
        out[op["key"]].append(
            {
                "op": op["op"],
                "value": op["value"] if op["op"] == "write" else None,
                "t0": op["t0"],
                "t1": op["t1"] if acked else INF,
                "acked": acked,
                "node": op["node"],
                "served": op.get("served"),
            }
        )
    return out


def allowed(mutations: list[dict], t0: float, t1: float) -> list[dict]:
    """The mutations whose value a read of [t0, t1] may return (``_INITIAL``: the key's absence
    before its first write).

    A mutation W is *superseded* for the read when an acknowledged mutation X began after W
    completed and completed before the read began (``W.t1 < X.t0`` and ``X.t1 < t0``): then X
    and everything after it stand between W and the read. Allowed: every mutation invoked before
    the read completed (``W.t0 <= t1``) and not superseded, and the initial absence when no
    acknowledged mutation completed before the read began. With ``L`` the latest start of an
    acknowledged mutation completed before ``t0``, W is superseded exactly when ``W.t1 < L``
    (W cannot supersede itself: ``W.t0 <= W.t1``). A maybe-applied mutation (``t1`` infinite)
    is never superseded: it may take effect at any later time, as in Knossos.
    """
    done = [m["t0"] for m in mutations if m["acked"] and m["t1"] < t0]
    if not done:
        return [_INITIAL, *(m for m in mutations if m["t0"] <= t1)]
    latest = max(done)
    return [m for m in mutations if m["t0"] <= t1 and m["t1"] >= latest]


def judge_read(mutations: list[dict], op: dict) -> tuple[str | None, list[dict]]:
    """(verdict, allowed mutations) for one register read ``op`` (or a final read).

    Verdicts: None (the answer is allowed); ``lost`` (*acknowledged overwrite lost*: the read is
    determinate, i.e. exactly one mutation B is allowed, an acknowledged PUT completed before the
    read began, with no other mutation overlapping B or the read and none between them, and the
    read did not return B's value); ``undone`` (*delete undone*: the same with B an acknowledged
    DELETE, and the read returned a value); ``stale`` (any other answer that is not allowed: the
    value, or the 404, of a mutation superseded before the read began, or a value whose write
    began only after the read completed).
    """
    ok = allowed(mutations, op["t0"], op["t1"])
    got = op["value"] if op.get("found") else None
    if any(m["value"] == got for m in ok):
        return None, ok
    if len(ok) == 1 and ok[0]["acked"] and ok[0]["t1"] < op["t0"] and ok[0]["op"] != "initial":
        return ("lost" if ok[0]["op"] == "write" else "undone"), ok
    return "stale", ok


def _brief(op: dict, ok: list[dict], mutations: list[dict]) -> dict:
    got = op["value"] if op.get("found") else None
    src = next((m for m in mutations if got is not None and m["value"] == got), None)
    return {
        "key": op["key"],
        "read": got,
        "node": op["node"],
        "served": op.get("served"),
        "t0": op["t0"],
        "t1": op["t1"],
        "phase": op["phase"],
        "expected": [m["value"] for m in ok[:5]],
        "expected_via": [m.get("served") or m.get("node") for m in ok[:5]],
        "read_write_t": None if src is None else [src["t0"], src["t1"]],
        "read_write_via": None if src is None else src.get("served") or src.get("node"),
    }


def register(records: list[dict]) -> dict:
    """The register workload's figures: reads checked, how many were determinate (one allowed
    answer), the anomalies by kind (``lost``, ``undone``, ``stale``, see :func:`judge_read`),
    and the final state: each key's first answered ``r=all`` read after the heal must be
    allowed by the same rule (the last acknowledged mutation or one that overlapped it, or a
    maybe-applied one); keys with no answered final read are *unverified*."""
    muts = _mutations(records)
    out: dict = {
        "reads": 0,
        "determinate": 0,
        "determinate_put": 0,
        "determinate_delete": 0,
        "lost": [],
        "undone": [],
        "stale": [],
        "final_wrong": [],
        "unverified": [],
        "keys": 0,
        "ops": {},
    }
    ops = [op for op in _ops(records, "run") if op.get("workload") == "register"]
    counts: dict[str, int] = defaultdict(int)
    keys = set()
    for op in ops:
        keys.add(op["key"])
        counts[f"{op['op']}s"] += 1
        counts[f"{op['op']}s_{op['outcome']}"] += 1
        if op["op"] != "read" or op["outcome"] != "ok":
            continue
        out["reads"] += 1
        verdict, ok = judge_read(muts[op["key"]], op)
        if len(ok) == 1 and ok[0]["op"] != "initial":
            out["determinate"] += 1
            out["determinate_put" if ok[0]["op"] == "write" else "determinate_delete"] += 1
        if verdict:
            out[verdict].append(_brief(op, ok, muts[op["key"]]))
    out["ops"] = dict(sorted(counts.items()))
    out["keys"] = len(keys)
    finals: dict[str, dict] = {}
    for op in sorted(_ops(records, "final"), key=lambda o: o["t0"]):
        if op["key"] in keys and op["op"] == "read" and op["outcome"] == "ok":
            finals.setdefault(op["key"], op)
    for key in sorted(keys):
        if key not in finals:
            out["unverified"].append({"key": key})
            continue
        verdict, ok = judge_read(muts[key], finals[key])
        if verdict:
            out["final_wrong"].append(_brief(finals[key], ok, muts[key]))
    return out


# -- liveness --------------------------------------------------------------------------------------


def dirty_write(op: dict) -> bool:
    """Whether a write may have left its key's replicas apart (hinted, or outcome unknown).

    A write acknowledged without hints reached every replica; a failed one never left the
    client (refused connection): neither leaves anything to converge."""
    return op["outcome"] == "unknown" or bool(op.get("hinted"))


def convergence(records: list[dict], sync_interval: float, extra_s: float = 5.0) -> dict:
    """Time from the final heal until every key that was apart then agreed on all replicas.

    Keys apart at the heal: dirty keys (:func:`dirty_write`) not seen in agreement before it,
    and keys sampled after it that had agreed (or were clean) but were found apart again
    (``regressed``). A key's time is its first ``agree`` after the heal; the figure is an upper
    bound (a key is polled every few seconds). 0 when nothing was apart at the heal.
    """
    deadline = 2 * sync_interval + extra_s
    heals = _by_type(records, "heal")
    ends = _by_type(records, "converge")
    if not heals or not ends:
        return {"measured": False, "deadline_s": deadline}
    heal_t, end = heals[-1]["t"], ends[-1]
    dirty = {
        op["key"]
        for op in _ops(records, "run")
        if op["op"] in ("write", "delete") and dirty_write(op)
    }
    agreed_before = {a["key"] for a in _by_type(records, "agree") if a["t"] <= heal_t}
    regressed = set(end.get("regressed", []))
    apart = (dirty - agreed_before) | regressed
    first_after: dict[str, float] = {}
    for a in _by_type(records, "agree"):
        if (
            a["key"] in apart
            and a["t"] > heal_t
            and (a["key"] not in regressed or a.get("phase") == "final")
        ):
            first_after[a["key"]] = min(a["t"], first_after.get(a["key"], a["t"]))
    converged = end["pending_count"] == 0
    time_s = None
    if converged:
        time_s = round(max(first_after.values(), default=heal_t) - heal_t, 2)
    return {
        "measured": True,
        "deadline_s": deadline,
        "heal_t": heal_t,
        "converged": converged,
        "time_s": time_s,
        "within": converged and time_s is not None and time_s <= deadline,
        "apart_at_heal": len(apart),
        "dirty": len(dirty),
        "regressed": end.get("regressed_count", len(regressed)),
        "regressed_keys": sorted(regressed)[:20],
        "keys_polled_after_heal": end["checked"],
        "settled_sampled": end.get("settled_sampled"),
        "settled_total": end.get("settled_total"),
        "clean_sampled": end.get("clean_sampled"),
        "clean_total": end.get("clean_total"),
        "pending": end["pending_count"],
        "pending_keys": end["pending"][:20],
        "first_poll_s": round(end["start"] - heal_t, 2),
        "sweeps": end.get("sweeps"),
        "ready_s": round(heals[-1]["ready"] - heal_t, 2) if heals[-1].get("ready") else None,
    }


def _lost_leader(fault: dict) -> bool:
    """Whether the fault took the leader away (packet loss and delay do not: the leader keeps
    going, only slower)."""
    return (
        fault["kind"] not in ("loss", "delay")
        and bool(fault.get("leader"))
        and fault["leader"] in fault["nodes"]
    )


def new_leader_time(
    fault: dict, views: list[dict], all_nodes: list[str], horizon_s: float = 60.0
) -> float | None:
    """Seconds from the fault's start until every surviving node named one new leader."""
    survivors = [n for n in all_nodes if n not in fault["nodes"]]
    if not survivors:
        return None
    latest: dict[str, str | None] = {}
    for v in sorted(views, key=lambda v: v["t"]):
        if v["t"] < fault["start"] or v["node"] not in survivors:
            continue
        if v["t"] > fault["start"] + horizon_s:
            break
        latest[v["node"]] = v.get("leader") if v.get("ok") else None
        leaders = {latest.get(n) for n in survivors}
        if len(leaders) == 1 and len(latest) == len(survivors):
            (leader,) = leaders
            if leader is not None and leader != fault["leader"]:
                return round(v["t"] - fault["start"], 2)
    return None


def needs_every_replica(op: dict, rf: int) -> bool:
    """Whether ``op``'s level needs an answer from every replica of its key (see the module)."""
    level = op.get("level")
    return level == "all" or (level == "quorum" and op["op"] == "read" and rf // 2 + 1 >= rf)


def fault_windows(records: list[dict], all_nodes: list[str]) -> list[dict]:
    """Per fault: what it was, operations during it and their success, time to a new leader."""
    ops = _ops(records, "run")
    views = _by_type(records, "view")
    runs = _by_type(records, "run")
    rf = int(runs[0].get("replication_factor", 2)) if runs else 2
    out = []
    for f in sorted(_by_type(records, "fault"), key=lambda f: f["start"]):
        during = [op for op in ops if f["start"] <= op["t0"] <= f["end"]]
        other = [
            op for op in during if op["node"] not in f["nodes"] and not needs_every_replica(op, rf)
        ]
        row = {
            "id": f["id"],
            "kind": f["kind"],
            "nodes": f["nodes"],
            "groups": f.get("groups"),
            "leader": f.get("leader"),
            "start": f["start"],
            "end": f["end"],
            "duration_s": round(f["end"] - f["start"], 2),
            "params": f.get("params", {}),
            "ops": len(during),
            "ok": sum(op["outcome"] == "ok" for op in during),
            "other_ops": len(other),
            "other_ok": sum(op["outcome"] == "ok" for op in other),
            "lost_leader": _lost_leader(f),
            "new_leader_s": None,
        }
        row["share"] = _share(row["ok"], row["ops"])
        row["other_share"] = _share(row["other_ok"], row["other_ops"])
        hit = [op for op in during if op["node"] in f["nodes"]]
        row.update(_latency(during, ""), **_latency(hit, "hit_"))
        if row["lost_leader"]:
            row["new_leader_s"] = new_leader_time(f, views, all_nodes)
        out.append(row)
    return out


def _latency(ops: list[dict], prefix: str) -> dict:
    """p50 and p99 (ms) of the successful ones among ``ops``; None when there are none."""
    lat = sorted(op["t1"] - op["t0"] for op in ops if op["outcome"] == "ok")
    return {
        f"{prefix}p50_ms": round(1000 * _pct(lat, 0.5), 1) if lat else None,
        f"{prefix}p99_ms": round(1000 * _pct(lat, 0.99), 1) if lat else None,
    }


def _share(ok: int, total: int) -> float | None:
    return round(ok / total, 4) if total else None


def timeline(records: list[dict], bucket_s: float = 1.0) -> list[dict]:
    """Per bucket of completion time: ok and not-ok operations a second, ok latency p50/p99."""
    buckets: dict[int, list[dict]] = defaultdict(list)
    for op in _ops(records, "run"):
        buckets[int(op["t1"] // bucket_s)].append(op)
    rows = []
    for b in range(min(buckets, default=0), max(buckets, default=-1) + 1):
        ops = buckets.get(b, [])
        lat = sorted(op["t1"] - op["t0"] for op in ops if op["outcome"] == "ok")
        rows.append(
            {
                "t": b * bucket_s,
                "ok": sum(op["outcome"] == "ok" for op in ops) / bucket_s,
                "failed": sum(op["outcome"] != "ok" for op in ops) / bucket_s,
                "p50_ms": round(1000 * _pct(lat, 0.5), 1) if lat else None,
                "p99_ms": round(1000 * _pct(lat, 0.99), 1) if lat else None,
            }
        )
    return rows


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def op_counts(records: list[dict]) -> dict:
    c: dict[str, int] = defaultdict(int)
    for op in _set_ops(records, "run"):
        c[f"{op['op']}s"] += 1
        c[f"{op['op']}s_{op['outcome']}"] += 1
    lat = sorted(op["t1"] - op["t0"] for op in _set_ops(records, "run") if op["outcome"] == "ok")
    c_out = dict(sorted(c.items()))
    if lat:
        c_out["ok_p50_ms"] = round(1000 * _pct(lat, 0.5), 1)
        c_out["ok_p99_ms"] = round(1000 * _pct(lat, 0.99), 1)
    return c_out


# -- the verdict -----------------------------------------------------------------------------------


def check(records: list[dict], targets: Targets | None = None) -> dict:
    """Every figure of the run and each target met or not. ``safety_ok``: nothing acknowledged
    lost or unverified, nothing invented, no register anomaly; ``liveness_ok``: convergence,
    leader and availability targets met; ``consistency_ok``: no read-your-writes violation.
    Read-your-writes is reported
    but is not a target of the issue: with hints counting towards ``w=quorum`` (a sloppy
    quorum), an ``r=one`` read may reach the replica whose copy still waits in a hint."""
    targets = targets or Targets()
    run = next(iter(_by_type(records, "run")), {})
    nodes = run.get("nodes") or sorted({op["node"] for op in _ops(records)})
    sync = float(run.get("sync_interval", 5.0))
    lost, unverified = lost_writes(records)
    phantom, resurrected = phantoms(records)
    ryw_checked, ryw = read_your_writes(records)
    stale_checked, stale = stale_reads(records)
    conv = convergence(records, sync, targets.convergence_extra_s)
    faults = fault_windows(records, nodes)
    leader_kills = [f for f in faults if f["kind"].startswith("kill") and f["lost_leader"]]
    parts = [f for f in faults if f["kind"] in PARTITIONS]
    maj_ops = sum(f["other_ops"] for f in parts)
    maj_ok = sum(f["other_ok"] for f in parts)
    majority_share = _share(maj_ok, maj_ops)
    slowest = [f["new_leader_s"] for f in leader_kills]

    rows = [
        _row("acknowledged writes lost", len(lost), "0", not lost, "safety"),
        _row("acknowledged writes unverified", len(unverified), "0", not unverified, "safety"),
        _row("phantom reads", len(phantom), "0", not phantom, "safety"),
        _row("failed writes visible", len(resurrected), "0", not resurrected, "safety"),
        _row(
            "read-your-writes violations (sticky, r=one)",
            f"{len(ryw)} of {ryw_checked}",
            "0",
            not ryw,
            "consistency",
        ),
        _row(
            "convergence after final heal",
            _conv_text(conv),
            f"<= {conv['deadline_s']:g} s",
            bool(conv.get("within")),
            "liveness",
        ),
        _row(
            "new leader after leader kills",
            ", ".join("none" if s is None else f"{s:g} s" for s in slowest) or "no leader kill",
            f"<= {targets.leader_s:g} s each",
            all(s is not None and s <= targets.leader_s for s in slowest),
            "liveness",
        ),
        _row(
            "majority-side success during partitions",
            "no partition"
            if majority_share is None
            else f"{100 * majority_share:.1f}% ({maj_ok}/{maj_ops})",
            f">= {100 * targets.majority_share:g}%",
            majority_share is None or majority_share >= targets.majority_share,
            "liveness",
        ),
        _row("stale r=one reads (informational)", f"{stale} of {stale_checked}", "-", True, "info"),
    ]
    uw = unknown_writes(records)
    rows.append(
        _row(
            "unknown-outcome writes visible after heal (informational)",
            f"{uw['visible']} of {uw['count']}",
            "-",
            True,
            "info",
        )
    )
    reg = register(records)
    if reg["keys"]:
        rows += _register_rows(reg)
    return {
        "scenario": run.get("scenario"),
        "nodes": nodes,
        "sync_interval": sync,
        "ops": op_counts(records),
        "lost": lost,
        "unverified": unverified,
        "phantoms": phantom,
        "failed_visible": resurrected,
        "ryw_checked": ryw_checked,
        "ryw_violations": ryw,
        "stale_checked": stale_checked,
        "stale": stale,
        "unknown_writes": uw,
        "register": reg,
        "convergence": conv,
        "faults": faults,
        "majority_share": majority_share,
        "targets": rows,
        "safety_ok": all(r["ok"] for r in rows if r["class"] == "safety"),
        "liveness_ok": all(r["ok"] for r in rows if r["class"] == "liveness"),
        "consistency_ok": all(r["ok"] for r in rows if r["class"] == "consistency"),
    }


def _register_rows(reg: dict) -> list[dict]:
    lost, undone, stale = len(reg["lost"]), len(reg["undone"]), len(reg["stale"])
    wrong, unver = len(reg["final_wrong"]), len(reg["unverified"])
    return [
        _row(
            "register: acknowledged overwrites lost",
            f"{lost} of {reg['determinate_put']} determinate reads",
            "0",
            not lost,
            "safety",
        ),
        _row(
            "register: deletes undone",
            f"{undone} of {reg['determinate_delete']} determinate reads",
            "0",
            not undone,
            "safety",
        ),
        _row(
            "register: stale reads (r=quorum)",
            f"{stale} of {reg['reads']} reads",
            "0",
            not stale,
            "safety",
        ),
        _row(
            "register: final state after heal (r=all)",
            f"{wrong} wrong of {reg['keys']} keys" + (f", {unver} unverified" if unver else ""),
            "0",
            not wrong and not unver,
            "safety",
        ),
    ]


def _conv_text(conv: dict) -> str:
    if not conv["measured"]:
        return "not measured"
    text = (
        f"{conv['time_s']:g} s ({conv['apart_at_heal']} keys apart at the heal)"
        if conv["converged"]
        else f"not converged ({conv['pending']} keys apart)"
    )
    if conv["regressed"]:
        text += f"; {conv['regressed']} keys fell apart again after agreeing"
    return text


def _row(name: str, value, target: str, ok: bool, klass: str) -> dict:
    return {"name": name, "value": value, "target": target, "ok": bool(ok), "class": klass}
