"""Anti-entropy and re-replication figures for issue 3's closing note.

Two measurements, each on its own 3-node cluster on 127.0.0.1 started with the test harness
(`tests/harness/cluster.py`), with `KVRAFT_SYNC_INTERVAL=1` and `KVRAFT_DEAD_AFTER=4`:

1. **Sync cost.** For stores of 10k and 100k keys (bulk-loaded into both replicas of each
   partition through `POST /peer/apply`, stamped fresh per batch and sent to both replicas back
   to back), the records and bytes exchanged (summed over all nodes, from `sync.totals` in
   `/cluster`) at 0 differences (per round, averaged over a few quiet rounds) and at 10 and 1000
   differences (a newer version of D existing keys written on one replica only), and the round
   time: the largest `sync.last_local_round.seconds` of any node among the rounds that carried
   the difference (polled from every node by a background thread while waiting).
2. **Re-replication.** A 10k-key store (normal PUTs, 8 threads, one requests.Session each);
   a non-leader node is killed with SIGKILL, then: (a) the time until the survivors' partition
   map no longer names it (this includes `dead_after`, 4 s), (b) the time until, in addition,
   no replica is `filling` and `under_replicated` is 0. Then every acknowledged key is read back
   with `r=all`, the keys are counted through the `GET /kv` listing, and the records the sync
   rounds copied are reported (sync_records delta of the survivors).

Prints markdown tables to stdout (progress to stderr) and writes bench/out/sync_figures.md.

    .venv/bin/python -m bench.sync_figures [--sizes 10000,100000] [--diffs 10,1000]
                                           [--rr-keys 10000] [--rr-load put|bulk]
                                           [--skip-sync] [--skip-rr]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import requests

from kvraft.core.placement import partition_of
from kvraft.hlc import Version
from kvraft.peer.wire import encode_records
from kvraft.storage import Record
from tests.harness.cluster import SECRET, Cluster, wait_for

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "bench" / "out"
ENV = {"KVRAFT_SYNC_INTERVAL": "1", "KVRAFT_DEAD_AFTER": "4"}
BATCH = 5000  # records per /peer/apply request (ts + index stays below 2**16 per ms)
QUIET_ROUNDS = 3  # 0-difference rounds measured per store size
SAMPLE = 50  # keys checked with explain=1 when there are more differences than this


def signed(body: bytes) -> dict:
    """The peer signature of ``POST /peer/apply`` with ``body`` (the secret never travels)."""
    from kvraft import peerauth

    key = peerauth.derive(SECRET, peerauth.PEER_HTTP)
    return {peerauth.HEADER: peerauth.sign(key, "POST", "/peer/apply", body)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fresh_ts(i: int = 0) -> int:
    return (int(time.time() * 1000) << 16) + i


# -- cluster helpers -------------------------------------------------------------------------------


def round_id(c: Cluster) -> int:
    return c.cluster_view(c.running()[0])["sync"]["round"]


def wait_rounds(c: Cluster, n: int, timeout: float = 60) -> None:
    start = round_id(c)
    wait_for(lambda: round_id(c) >= start + n, timeout, f"{n} sync rounds", interval=0.1)


def node_totals(c: Cluster, nodes: list[int] | None = None) -> dict[int, dict[str, int]]:
    return {
        i: dict(c.cluster_view(i)["sync"]["totals"])
        for i in (c.running() if nodes is None else nodes)
    }


def summed(per_node: dict[int, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for totals in per_node.values():
        for k, v in totals.items():
            out[k] = out.get(k, 0) + v
    return out


def delta(after: dict[int, dict[str, int]], before: dict[int, dict[str, int]]) -> dict[str, int]:
    """Summed growth of the totals over the nodes present in both snapshots."""
    out: dict[str, int] = {}
    for i in after.keys() & before.keys():
        for k, v in after[i].items():
            out[k] = out.get(k, 0) + v - before[i].get(k, 0)
    return out


def wait_quiet(c: Cluster, timeout: float = 120) -> None:
    """Until the summed sync_records stop changing across 2 rounds."""
    deadline = time.monotonic() + timeout
    prev = summed(node_totals(c))["sync_records"]
    while time.monotonic() < deadline:
        wait_rounds(c, 2)
        now = summed(node_totals(c))["sync_records"]
        if now == prev:
            return
        log(f"  not quiet yet ({now - prev} records in the last 2 rounds)")
        prev = now
    raise TimeoutError("sync rounds did not go quiet")


class RoundWatcher:
    """Polls every node's `sync.last_local_round` in the background (the view only shows the
    last one, so it is sampled several times per round) and keeps each (node, round) seen."""

    def __init__(self, c: Cluster, period: float = 0.25) -> None:
        self.c = c
        self.period = period
        self.seen: dict[tuple[str, int], dict] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RoundWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        s = requests.Session()
        try:
            while not self._stop.is_set():
                for i in self.c.running():
                    node = self.c.nodes[i]
                    try:
                        last = s.get(node.url + "/cluster", timeout=2).json()["sync"][
                            "last_local_round"
                        ]
                    except (requests.RequestException, ValueError, KeyError):
                        continue
                    if last.get("id"):
                        with self._lock:
                            self.seen[(node.id, int(last["id"]))] = last
                self._stop.wait(self.period)
        finally:
            s.close()

    def rounds(self, after_round: int, until_round: int | None = None) -> list[dict]:
        with self._lock:
            return [
                dict(v, node=n)
                for (n, r), v in self.seen.items()
                if r > after_round and (until_round is None or r <= until_round)
            ]


def agree(c: Cluster, keys: list[str]) -> bool:
    i = c.running()[0]
    return all(c.get(i, k, explain="1").json()["agree"] for k in keys)


# -- 1. sync cost ----------------------------------------------------------------------------------


def bulk_load(c: Cluster, keys: list[str], nparts: int, value: bytes = b"v") -> None:
    view = c.cluster_view()
    urls = {n.id: n.url for n in c.nodes}
    by_replicas: dict[tuple[str, ...], list[str]] = {}
    for k in keys:
        by_replicas.setdefault(tuple(view["partitions"][str(partition_of(k, nparts))]), []).append(
            k
        )
    s = requests.Session()
    try:
        for reps, ks in by_replicas.items():
            for j in range(0, len(ks), BATCH):
                ts = fresh_ts()
                body = encode_records(
                    [
                        Record(k, partition_of(k, nparts), Version(ts + n, "n1"), False, value)
                        for n, k in enumerate(ks[j : j + BATCH])
                    ]
                )
                for node_id in reps:
                    r = s.post(
                        urls[node_id] + "/peer/apply", data=body, headers=signed(body), timeout=120
                    )
                    r.raise_for_status()
    finally:
        s.close()


def make_differences(c: Cluster, keys: list[str], nparts: int) -> None:
    """A newer version of each key, written on the first replica of its partition only."""
    view = c.cluster_view()
    urls = {n.id: n.url for n in c.nodes}
    by_node: dict[str, list[str]] = {}
    for k in keys:
        by_node.setdefault(view["partitions"][str(partition_of(k, nparts))][0], []).append(k)
    s = requests.Session()
    try:
        for node_id, ks in by_node.items():
            for j in range(0, len(ks), BATCH):
                ts = fresh_ts()
                body = encode_records(
                    [
                        Record(k, partition_of(k, nparts), Version(ts + n, "n2"), False, b"changed")
                        for n, k in enumerate(ks[j : j + BATCH])
                    ]
                )
                s.post(
                    urls[node_id] + "/peer/apply", data=body, headers=signed(body), timeout=60
                ).raise_for_status()
    finally:
        s.close()


def round_seconds(rounds: list[dict]) -> tuple[float | None, float | None]:
    """(median, max) over cluster rounds of the slowest node's local round time."""
    per_round: dict[int, float] = {}
    for r in rounds:
        per_round[r["id"]] = max(per_round.get(r["id"], 0.0), r["seconds"])
    if not per_round:
        return None, None
    vals = list(per_round.values())
    return statistics.median(vals), max(vals)


def measure_size(tmp: str, n_keys: int, diffs: list[int]) -> list[dict]:
    rows: list[dict] = []
    with Cluster(os.path.join(tmp, f"sync{n_keys}"), env=dict(ENV)) as c:
        nparts = len(c.cluster_view()["partitions"])
        keys = [f"bulk/{i:07d}" for i in range(n_keys)]
        t0 = time.monotonic()
        bulk_load(c, keys, nparts)
        log(f"{n_keys} keys bulk-loaded into both replicas in {time.monotonic() - t0:.1f}s")
        with RoundWatcher(c) as watch:
            wait_rounds(c, 2)
            wait_quiet(c)
            # 0 differences: a few quiet rounds, per round
            r0 = round_id(c)
            before = node_totals(c)
            wait_rounds(c, QUIET_ROUNDS)
            after = node_totals(c)
            r1 = round_id(c)
            d = delta(after, before)
            node_rounds = d["sync_rounds"]
            per_cluster_round = node_rounds / len(after) if node_rounds else 0
            med, mx = round_seconds(watch.rounds(r0, r1))
            rows.append(
                {
                    "keys": n_keys,
                    "diffs": 0,
                    "records": d["sync_records"],
                    "bytes": d["sync_bytes"],
                    "rounds": per_cluster_round,
                    "bytes_per_round": d["sync_bytes"] / per_cluster_round
                    if per_cluster_round
                    else None,
                    "records_per_round": d["sync_records"] / per_cluster_round
                    if per_cluster_round
                    else None,
                    "round_s_median": med,
                    "round_s_max": mx,
                    "carrying_rounds": None,
                    "converge_s": None,
                    "repaired": d["sync_keys_repaired"],
                }
            )
            log(
                f"  0 diffs: {d['sync_records']} records, {d['sync_bytes']} bytes over "
                f"{per_cluster_round:g} rounds; round time median {med}, max {mx}"
            )
            for n_diff in diffs:
                step = max(1, n_keys // n_diff)
                changed = [keys[i * step] for i in range(n_diff)]
                check = changed if n_diff <= SAMPLE else changed[:: n_diff // SAMPLE][:SAMPLE]
                r0 = round_id(c)
                before = node_totals(c)
                t0 = time.monotonic()
                make_differences(c, changed, nparts)
                wait_for(
                    lambda check=check: agree(c, check),
                    60,
                    f"the {n_diff} differences to be synced",
                    interval=0.2,
                )
                if n_diff > SAMPLE:
                    base = summed(before)["sync_records"]
                    wait_for(
                        lambda base=base, n=n_diff: (
                            summed(node_totals(c))["sync_records"] >= base + n
                        ),
                        60,
                        f"sync totals to reach {n_diff} more records",
                        interval=0.2,
                    )
                converge = time.monotonic() - t0
                wait_rounds(c, 2)
                after = node_totals(c)
                d = delta(after, before)
                # round r0 may run on a node after the write (it read r0 before its tick)
                carrying = [r for r in watch.rounds(r0 - 1) if r["records"] > 0]
                _, mx = round_seconds(carrying)
                rows.append(
                    {
                        "keys": n_keys,
                        "diffs": n_diff,
                        "records": d["sync_records"],
                        "bytes": d["sync_bytes"],
                        "rounds": None,
                        "bytes_per_round": None,
                        "records_per_round": None,
                        "round_s_median": None,
                        "round_s_max": mx,
                        "carrying_rounds": len({r["id"] for r in carrying}),
                        "converge_s": converge,
                        "repaired": d["sync_keys_repaired"],
                    }
                )
                log(
                    f"  {n_diff} diffs: {d['sync_records']} records, {d['sync_bytes']} bytes, "
                    f"{d['sync_keys_repaired']} repaired, round time max {mx}, "
                    f"{len({r['id'] for r in carrying})} carrying round(s), "
                    f"agreed after {converge:.2f}s"
                )
                # every changed key now reads back the new value from all replicas
                sample = changed[:: max(1, n_diff // SAMPLE)][:SAMPLE]
                bad = [k for k in sample if c.get(1, k, r="all").content != b"changed"]
                if bad:
                    log(f"  WARNING: {len(bad)} sampled changed keys do not read back: {bad[:5]}")
                    rows[-1]["note"] = f"{len(bad)} of {len(sample)} sampled keys stale"
    return rows


# -- 2. re-replication ----------------------------------------------------------------------------


def _session(local: threading.local) -> requests.Session:
    """This thread's keep-alive session (one per worker thread of a pool)."""
    s = getattr(local, "s", None)
    if s is None:
        s = local.s = requests.Session()
    return s


def put_all(c: Cluster, data: dict[str, bytes]) -> tuple[set[str], list]:
    local = threading.local()

    def put(arg):
        n, (k, v) = arg
        s = _session(local)
        try:
            r = s.put(f"{c.url(n % 3)}/kv/{quote(k, safe='')}", data=v, timeout=30)
            return k, r.status_code
        except requests.RequestException as exc:
            return k, type(exc).__name__

    acked, errors = set(), []
    with ThreadPoolExecutor(8) as pool:
        for k, status in pool.map(put, enumerate(data.items())):
            if status in (200, 201):
                acked.add(k)
            else:
                errors.append((k, status))
    return acked, errors


def count_listing(c: Cluster, i: int, prefix: str) -> int:
    n, after = 0, None
    for _ in range(10_000):
        params = {"prefix": prefix, "limit": 1000}
        if after:
            params["after"] = after
        page = c.http.get(c.url(i) + "/kv", params=params, timeout=30).json()
        n += len(page["keys"])
        if not page["next"]:
            break
        after = page["next"]
    return n


def read_back(c: Cluster, nodes: list[int], data: dict[str, bytes]) -> tuple[int, list]:
    local = threading.local()

    def get(arg):
        n, (k, v) = arg
        s = _session(local)
        try:
            r = s.get(
                f"{c.url(nodes[n % len(nodes)])}/kv/{quote(k, safe='')}",
                params={"r": "all"},
                timeout=30,
            )
            return k, r.status_code == 200 and r.content == v, r.status_code
        except requests.RequestException as exc:
            return k, False, type(exc).__name__

    ok, bad = 0, []
    with ThreadPoolExecutor(8) as pool:
        for k, good, status in pool.map(get, enumerate(data.items())):
            if good:
                ok += 1
            else:
                bad.append((k, status))
    return ok, bad


def measure_rereplication(tmp: str, n_keys: int, load: str) -> dict:
    with Cluster(os.path.join(tmp, "rr"), env=dict(ENV)) as c:
        nparts = len(c.cluster_view()["partitions"])
        data = {f"rr/{i:06d}": b"r%d" % i for i in range(n_keys)}
        t0 = time.monotonic()
        if load == "put":
            acked, errors = put_all(c, data)
            if errors:
                log(f"  {len(errors)} PUTs failed, e.g. {errors[:3]}")
        else:
            bulk_load(c, list(data), nparts)
            # bulk_load writes one value for all keys: rewrite the expectation
            data = {k: b"v" for k in data}
            acked, errors = set(data), []
        load_s = time.monotonic() - t0
        log(f"{len(acked)} of {n_keys} keys loaded ({load}) in {load_s:.1f}s")
        wait_rounds(c, 2)
        wait_quiet(c)
        leader = c.leader()
        victim = next(i for i in range(3) if i != leader)
        vid = c.nodes[victim].id
        survivors = [i for i in range(3) if i != victim]
        survivor = survivors[0] if survivors[0] != leader else survivors[1]
        view = c.cluster_view(survivor)
        victim_parts = sum(vid in reps for reps in view["partitions"].values())
        victim_keys = next(n["keys"] for n in view["nodes"] if n["id"] == vid)
        before = node_totals(c, survivors)
        log(
            f"killing {vid} (leader is {c.nodes[leader].id}); it holds {victim_parts} "
            f"partitions, {victim_keys} keys"
        )
        c.kill(victim)
        t0 = time.monotonic()
        t_dead = t_unmapped = t_healed = None
        deadline = t0 + 180
        while time.monotonic() < deadline:
            try:
                view = c.cluster_view(survivor)
            except (requests.RequestException, ValueError):
                time.sleep(0.1)
                continue
            now = time.monotonic() - t0
            if t_dead is None and not next(n["alive"] for n in view["nodes"] if n["id"] == vid):
                t_dead = now
            unmapped = all(vid not in reps for reps in view["partitions"].values())
            if unmapped and t_unmapped is None:
                t_unmapped = now
                log(
                    f"  map no longer names {vid} after {now:.2f}s; filling "
                    f"{len(view['filling'])} partitions"
                )
            if unmapped and not view["filling"] and view["under_replicated"] == 0:
                t_healed = now
                break
            time.sleep(0.1)
        if t_healed is None:
            raise TimeoutError(f"re-replication not done after 180s: {view}")
        log(f"  healed after {t_healed:.2f}s")
        wait_rounds(c, 2)
        d = delta(node_totals(c, survivors), before)
        view = c.cluster_view(survivor)
        sizes = sorted({len(reps) for reps in view["partitions"].values()})
        t1 = time.monotonic()
        ok, bad = read_back(c, survivors, {k: data[k] for k in sorted(acked)})
        listed = count_listing(c, survivor, "rr/")
        log(
            f"  read back {ok}/{len(acked)} with r=all in {time.monotonic() - t1:.1f}s; "
            f"listing counts {listed}; bad {bad[:5]}"
        )
        return {
            "keys": n_keys,
            "acked": len(acked),
            "put_errors": len(errors),
            "load": load,
            "load_s": load_s,
            "victim": vid,
            "victim_parts": victim_parts,
            "victim_keys": victim_keys,
            "t_dead": t_dead,
            "t_unmapped": t_unmapped,
            "t_healed": t_healed,
            "copied": d["sync_records"],
            "sync_bytes": d["sync_bytes"],
            "repaired": d["sync_keys_repaired"],
            "handed_off": d["records_handed_off"],
            "forgotten": d["tombstones_purged"],
            "replica_counts": sizes,
            "read_ok": ok,
            "read_bad": bad,
            "listed": listed,
        }


# -- output ----------------------------------------------------------------------------------------


def fmt(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def sync_table(rows: list[dict]) -> str:
    lines = [
        "| keys | differences | records exchanged | bytes exchanged | records per difference "
        "| round time (s) | rounds carrying it | all replicas agree after (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["diffs"] == 0:
            lines.append(
                f"| {r['keys']:,} | 0 | {fmt(r['records_per_round'], 1)} per round "
                f"| {fmt(r['bytes_per_round'])} per round | - "
                f"| {fmt(r['round_s_median'], 3)} median, {fmt(r['round_s_max'], 3)} max "
                f"| - ({fmt(r['rounds'], 0)} rounds measured) | - |"
            )
        else:
            per = r["records"] / r["diffs"]
            lines.append(
                f"| {r['keys']:,} | {r['diffs']:,} | {r['records']:,} | {r['bytes']:,} "
                f"| {per:.2f} | {fmt(r['round_s_max'], 3)} max | {r['carrying_rounds']} "
                f"| {fmt(r['converge_s'], 2)} |"
            )
    return "\n".join(lines)


def rr_table(r: dict) -> str:
    bad = len(r["read_bad"])
    return "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            f"| keys written ({r['load']}) / acknowledged | {r['keys']:,} / {r['acked']:,} "
            f"(load took {r['load_s']:.1f} s) |",
            f"| killed node (not the leader) | {r['victim']}: {r['victim_parts']} partitions, "
            f"{fmt(r['victim_keys'])} keys |",
            f"| survivors see it dead after | {fmt(r['t_dead'], 2)} s |",
            f"| (a) partition map no longer names it after (includes dead_after = 4 s) "
            f"| {fmt(r['t_unmapped'], 2)} s |",
            "| (b) no replica filling and under_replicated = 0 after "
            f"| {fmt(r['t_healed'], 2)} s |",
            f"| (b) - (a): filling the new replicas | {r['t_healed'] - r['t_unmapped']:.2f} s |",
            f"| records copied by sync rounds (survivors' sync_records delta) | {r['copied']:,} "
            f"({r['sync_bytes']:,} bytes, {r['repaired']:,} repaired) |",
            f"| records the survivors' sync rounds dropped as deleted (tombstones_purged delta) "
            f"| {r['forgotten']:,} |",
            f"| replicas per partition afterwards | {r['replica_counts']} |",
            f"| acknowledged keys read back with r=all | {r['read_ok']:,} of {r['acked']:,}"
            f"{f' ({bad} failed)' if bad else ''} |",
            f"| keys counted through the GET /kv listing | {r['listed']:,} |",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--diffs", default="10,1000")
    ap.add_argument("--rr-keys", type=int, default=10_000)
    ap.add_argument("--rr-load", choices=("put", "bulk"), default="put")
    ap.add_argument("--skip-sync", action="store_true")
    ap.add_argument("--skip-rr", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    diffs = [int(x) for x in args.diffs.split(",") if x]
    started = time.monotonic()
    failed = False
    parts = [
        "# Sync and re-replication figures (`bench/sync_figures.py`)",
        "",
        f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {platform.node()}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load average before "
        f"{os.getloadavg()[0]:.1f}. 3 nodes on 127.0.0.1, replication factor 2, "
        f"KVRAFT_SYNC_INTERVAL=1, KVRAFT_DEAD_AFTER=4.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="kvraft-syncfig-") as tmp:
        if not args.skip_sync:
            rows = []
            for n in sizes:
                log(f"== sync cost, {n} keys")
                rows += measure_size(tmp, n, diffs)
            parts += [
                "## Records and bytes per sync round",
                "",
                "Summed over all nodes (from `sync.totals` in `/cluster`). 0 differences: the "
                f"average of {QUIET_ROUNDS} quiet rounds. D differences: a newer version of D "
                "existing keys written on one replica only, counted from before the write until "
                "2 rounds after all replicas agree. Round time: the slowest node's "
                "`last_local_round.seconds` (0 differences: median and max over the measured "
                "rounds; D differences: max over the rounds that carried records).",
                "",
                sync_table(rows),
                "",
            ]
            notes = [
                f"- {r['keys']:,} keys, {r['diffs']} differences: {r['note']}"
                for r in rows
                if r.get("note")
            ]
            parts += notes + ([""] if notes else [])
            failed = failed or bool(notes)
        if not args.skip_rr:
            log(f"== re-replication, {args.rr_keys} keys")
            rr = measure_rereplication(tmp, args.rr_keys, args.rr_load)
            parts += ["## Re-replicating a dead node's data", "", rr_table(rr), ""]
            if rr["read_bad"]:
                failed = True
                parts += [
                    f"**{len(rr['read_bad']):,} acknowledged keys did not read back** "
                    f"(e.g. {', '.join(f'{k} ({s})' for k, s in rr['read_bad'][:3])}); the "
                    f"survivors' sync rounds dropped {rr['forgotten']:,} records as deleted "
                    "and purged, and copied "
                    f"{rr['copied']:,} of the {fmt(rr['victim_keys'])} keys the dead node held.",
                    "",
                ]
    parts.append(f"Total run time {time.monotonic() - started:.0f} s.")
    text = "\n".join(parts) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sync_figures.md").write_text(text)
    log(f"wrote {OUT / 'sync_figures.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
