"""Chaos scenarios: start a cluster, run the workload while the nemesis breaks things, heal,
verify, judge, report.

    python -m chaos.run smoke       # ~90 s: 2 kills (one of the leader), a partition, a pause,
                                    # packet loss, 2 clock skews (seconds, ms), a delay
    python -m chaos.run full        # >= 10 minutes: 16 kills, 10 partitions, 5 pauses, loss,
                                    # 4 skews, 3 delays
(both with the set and the register workload)
    python -m chaos.run delay       # ~1.5 minutes: 4 delays (50, 100 or 200 ms), then a kill
    python -m chaos.run full --backend compose   # the same against containers of our own
    python -m chaos.run negative    # a node that acknowledges without writing: must be caught
    python -m chaos.run register-negative   # n1 150 ms ahead, last-writer-wins acks
                                    # (lww_ack): the register checker must catch lost overwrites
    python -m chaos.run check chaos/out/<run>/history.jsonl   # judge a saved history again
    python -m chaos.run cleanup [DIR]   # remove what a run killed with SIGKILL left behind

Output in ``chaos/out/<scenario>-<time>/``: ``history.jsonl``, ``results.json``, ``report.md``,
``plot.png`` and the nodes' data and logs. Exit status: 0 every target met (``negative``: the
loss was caught), 1 a safety target missed (lost, unverified, phantom, failed-visible, or a
register anomaly: overwrite lost, delete undone, stale read, wrong final state),
2 only a liveness target missed (convergence, leader, availability), 3 the run
itself failed. Every wait and loop here is bounded; the namespaces, iptables rules and node
processes a run creates are removed on exit, on error and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import glob
import json
import os
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace

from . import checker, history, netns, report
from . import compose as compose_project
from .nemesis import KINDS, ComposeBackend, LocalBackend, Nemesis, is_ready, plan
from .verify import Tracker, final_keys, final_reads, keys_to_poll, poll_convergence
from .workload import RegisterConfig, Workload, WorkloadConfig

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
# the compose back-end's defaults: the services of docker-compose.yml and their published ports
COMPOSE_SERVICES = ("n1", "n2", "n3")
COMPOSE_URLS = ("http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003")
EXIT_OK, EXIT_SAFETY, EXIT_LIVENESS, EXIT_ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class Scenario:
    name: str
    kinds: tuple[str, ...] = ()
    shuffle: bool = True
    nodes: int = 3
    hold: tuple[float, float] = (5.0, 8.0)
    gap: tuple[float, float] = (3.0, 6.0)
    warmup_s: float = 3.0
    tail_s: float = 3.0  # workload after the last fault, before the final heal is judged
    min_run_s: float = 0.0  # the workload runs at least this long
    max_run_s: float = 1500.0  # hard bound on the nemesis
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)
    negative: str = ""  # a negative control: "lost" (set workload) or "register" must be seen
    sample: int = 500  # settled keys and clean keys re-polled after the heal (each, at most)


def _counts(**counts: int) -> tuple[str, ...]:
    return tuple(k.replace("_", "-") for k, c in counts.items() for _ in range(c))


SCENARIOS = {
    "smoke": Scenario(
        "smoke",
        kinds=("kill", "partition-leader", "skew", "kill-leader", "pause", "loss", "skew", "delay"),
        shuffle=False,
        hold=(5.0, 6.0),
        gap=(3.0, 4.0),
        max_run_s=150,
    ),
    "full": Scenario(
        "full",
        kinds=_counts(
            kill=10,
            kill_leader=6,
            partition_one=3,
            partition_leader=4,
            partition_majority=3,
            pause=5,
            loss=2,
            skew=4,
            delay=3,
        ),
        hold=(6.0, 10.0),
        gap=(4.0, 8.0),
        min_run_s=600.0,
        max_run_s=1500.0,
    ),
    # for operators: what a slow node does to latency and to the other nodes; the kill at the
    # end checks that a node still comes back through its proxy
    "delay": Scenario(
        "delay",
        kinds=("delay", "delay", "delay", "delay", "kill"),
        shuffle=False,
        hold=(8.0, 10.0),
        gap=(3.0, 5.0),
        max_run_s=150,
    ),
    "negative": Scenario(
        "negative",
        kinds=(),
        min_run_s=15.0,
        max_run_s=60.0,
        tail_s=0.0,
        node_env={0: {"KVRAFT_TEST_FAULT": "ack_without_write"}},
        negative="lost",
    ),
    # n1's clock 150 ms ahead, every node acknowledging as before forward-only versions
    # (KVRAFT_TEST_FAULT=lww_ack: a replica that kept a newer version still counts as an ack):
    # the register checker must see overwrites lost
    "register-negative": Scenario(
        "register-negative",
        kinds=(),
        min_run_s=20.0,
        max_run_s=60.0,
        tail_s=0.0,
        workload=WorkloadConfig(
            clients=0,
            sticky=0,
            register=RegisterConfig(
                clients=2, keys=2, rate=25.0, read_share=0.4, delete_share=0.2, rotate_s=10.0
            ),
        ),
        node_env={
            i: {
                "KVRAFT_TEST_FAULT": "lww_ack",
                **({"KVRAFT_CLOCK_OFFSET_MS": "150"} if i == 0 else {}),
            }
            for i in range(3)
        },
        negative="register",
    ),
}


def _say(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _sleep(seconds: float) -> None:
    """Sleep in short slices: a signal handled by another thread still reaches the main
    thread's handler within half a second (a long blocking wait would hold it back)."""
    end = time.monotonic() + max(0.0, seconds)
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.5, left))


def _join(thread: threading.Thread, seconds: float) -> None:
    end = time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < end:
        thread.join(0.5)


def _wait_all_ready(urls: list[str], timeout: float) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    with requests.Session() as s:
        while time.monotonic() < deadline:
            if all(is_ready(u, s) for u in urls):
                return True
            time.sleep(0.2)
    return False


def run(
    sc: Scenario, out_dir: str, seed: int, use_netns: bool = True, compose: dict | None = None
) -> tuple[dict, int]:
    """Run one scenario; returns (checker result, exit status)."""
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(seed)
    hist = history.History(os.path.join(out_dir, "history.jsonl"))
    lab = cluster = project = None
    try:
        if compose is not None and compose.get("attach"):
            backend = ComposeBackend(compose["services"], compose["urls"], compose["dir"])
            sync = float(compose.get("sync_interval", 5.0))
            notes = ["compose back-end: the cluster was started by `docker compose up`"]
        elif compose is not None:
            project = compose_project.start_project("chaos", say=_say)
            backend = ComposeBackend(
                list(project.nodes), project.urls, project=project, override_dir=out_dir
            )
            if not _wait_all_ready(backend.urls, 60):
                raise RuntimeError("compose nodes not ready within 60 s of being healthy")
            sync = 5.0
            notes = [
                f"compose back-end: project {project.name} ({backend.network} network "
                "faults), started and removed by this run"
            ]
        else:
            from .launcher import ChaosCluster

            notes = []
            why = netns.available() if use_netns else "disabled with --no-netns"
            if why is None:
                lab = netns.Lab(
                    sc.nodes,
                    state_path=os.path.join(out_dir, "lab.json"),
                    delay="delay" in sc.kinds,
                ).create()
                lab.join()
                _say(
                    f"network namespaces {lab.bridge_ns} and {sc.nodes} node namespaces, "
                    f"nodes on {lab.subnet}.1..{sc.nodes}"
                    + (f", a delay proxy in each (port {lab.delay_port})" if lab.delay else "")
                )
            else:
                notes.append(f"no network namespaces ({why}): partitions, loss and delay skipped")
                _say(notes[-1])
            cluster = ChaosCluster(
                os.path.join(out_dir, "nodes"), sc.nodes, lab=lab, node_env=sc.node_env
            )
            atexit.register(cluster.close)
            sync = float(os.environ.get("KVRAFT_SYNC_INTERVAL", 5.0))
            t0 = time.monotonic()
            cluster.start()
            cluster.wait_ready(60)
            _say(
                f"cluster of {sc.nodes} ready in {time.monotonic() - t0:.1f} s, "
                f"leader {cluster.leader()}"
            )
            backend = LocalBackend(cluster, lab)
        hist.write(
            {
                "type": "run",
                "scenario": sc.name,
                "nodes": backend.ids,
                "seed": seed,
                "sync_interval": sync,
                "wall_start": hist.wall_start,
                "notes": notes,
                "node_env": {backend.ids[i]: e for i, e in sc.node_env.items()},
            }
        )
        steps = plan(list(sc.kinds), rng, sc.hold, sc.gap, backend.supported, sc.shuffle)
        skipped = [k for k in sc.kinds if k not in backend.supported]
        if skipped:
            notes.append(f"faults the back-end cannot do, left out: {', '.join(skipped)}")
        bound = sc.max_run_s + sc.min_run_s + 120
        tracker = Tracker(backend.urls, hist, max_seconds=bound)
        wl = Workload(
            backend.urls,
            backend.ids,
            hist,
            sc.workload,
            seed,
            max_seconds=bound,
            on_write=tracker.on_write,
        )
        run_start = time.monotonic()
        end_by = run_start + sc.min_run_s - sc.tail_s if sc.min_run_s else None
        nem = Nemesis(backend, hist, steps, rng, end_by=end_by)
        tracker.start()
        wl.start()
        nem_thread = threading.Thread(target=nem.run, name="nemesis", daemon=True)
        try:
            _sleep(sc.warmup_s)
            _say(f"workload running; {len(steps)} faults planned")
            nem_thread.start()
            _join(nem_thread, sc.max_run_s)
            if nem_thread.is_alive():
                notes.append(f"nemesis stopped at its {sc.max_run_s:g} s bound")
            notes.extend(nem.skipped)
            _say(f"nemesis done: {nem.done} faults")
            _sleep(max(sc.tail_s, sc.min_run_s - (time.monotonic() - run_start)))
        finally:
            nem.stop()  # also on SIGTERM/SIGINT: the fault in progress heals itself
            if nem_thread.is_alive():
                _join(nem_thread, 60)
            restarted = nem.heal_all()
            heal_t = hist.now() if (restarted or nem.last_end is None) else nem.last_end
            wl.stop()
            tracker.stop()
        ready = _wait_all_ready(backend.urls, 60)
        hist.write({"type": "heal", "t": heal_t, "ready": hist.now() if ready else None})
        if not ready:
            notes.append("not every node was ready within 60 s of the final heal")
        hist.flush()
        records = history.read(hist.path)
        keys, counts = keys_to_poll(records, sc.sample, rng)
        written = final_keys(records)
        apart = counts["pending_at_poll"]
        _say(
            f"workload stopped ({tracker.polls} convergence polls during the run); polling "
            f"{apart} keys still apart and {len(keys) - apart} sampled keys"
        )
        deadline = 2 * sync + checker.Targets().convergence_extra_s
        pending = poll_convergence(backend.urls, keys, hist, heal_t, deadline, rng, counts)
        _say(
            f"convergence polling done ({len(pending)} keys not in agreement); final r=all "
            f"reads of {len(written)} keys"
        )
        final_reads(backend.urls, backend.ids, written, hist, rng)
        notes.extend(getattr(backend, "notes", []))
        hist.write({"type": "end", "t": hist.now(), "notes": notes})
        hist.close()
        records = history.read(hist.path)
        return _judge(records, out_dir, sc, notes)
    finally:
        hist.close()
        if cluster is not None:
            cluster.close()
        if lab is not None:
            lab.destroy()
        if project is not None:
            for problem in compose_project.stop_project(project, os.path.join(out_dir, "nodes")):
                _say(problem)


def _judge(
    records: list[dict], out_dir: str, sc: Scenario | None, notes: list[str] | None = None
) -> tuple[dict, int]:
    result = checker.check(records)
    result["notes"] = notes or next((r.get("notes") for r in records if r.get("type") == "end"), [])
    name = result.get("scenario") or (sc.name if sc else "?")
    negative = sc.negative if sc else NEGATIVES.get(name, "")
    title = f"kvraft chaos: {name} ({os.path.basename(out_dir)})"
    text = report.markdown(result, title)
    if negative:
        caught, what = _caught(result, negative)
        result["negative_caught"] = caught
        text += (
            f"\nNegative control: the checker {'caught' if caught else 'DID NOT catch'} {what}.\n"
        )
    if result["notes"]:
        text += "\nNotes:\n" + "".join(f"- {n}\n" for n in result["notes"])
    png = report.plot(result, checker.timeline(records), os.path.join(out_dir, "plot.png"), title)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    print(text, flush=True)
    print(
        f"history {out_dir}/history.jsonl\nreport  {out_dir}/report.md\n"
        f"plot    {png or '(matplotlib not installed: no plot)'}",
        flush=True,
    )
    if negative:
        return result, EXIT_OK if result["negative_caught"] else EXIT_SAFETY
    if not result["safety_ok"]:
        return result, EXIT_SAFETY
    if not result["liveness_ok"]:
        return result, EXIT_LIVENESS
    return result, EXIT_OK


NEGATIVES = {name: sc.negative for name, sc in SCENARIOS.items() if sc.negative}


def _caught(result: dict, negative: str) -> tuple[bool, str]:
    """Whether a negative control's fault was seen, and a sentence saying what was looked for."""
    if negative == "register":
        reg = result["register"]
        n = len(reg["lost"]) + len(reg["undone"])
        return n > 0, (
            f"the acknowledgements of writes a replica did not keep "
            f"({len(reg['lost'])} overwrites lost, {len(reg['undone'])} deletes "
            f"undone)"
        )
    return bool(result["lost"]), (
        f"the node that acknowledges without writing ({len(result['lost'])} lost)"
    )


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=[*SCENARIOS, "check", "cleanup"])
    p.add_argument(
        "path",
        nargs="?",
        help="check: a history.jsonl; cleanup: a run's output directory "
        "(default: every run under chaos/out)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="output directory (default chaos/out/<run>)")
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument(
        "--no-netns",
        action="store_true",
        help="run on loopback without namespaces (no partitions or loss)",
    )
    p.add_argument("--min-run", type=float, default=None, help="workload seconds at least")
    p.add_argument("--backend", choices=("local", "compose"), default="local")
    p.add_argument(
        "--compose-attach",
        action="store_true",
        help="compose back-end: use the running project in --compose-dir (default: "
        "build the image, start a project of this run's own, remove it after)",
    )
    p.add_argument("--compose-dir", default=".", help="compose back-end: project directory")
    p.add_argument("--compose-services", default=",".join(COMPOSE_SERVICES))
    p.add_argument("--compose-urls", default=",".join(COMPOSE_URLS))
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks of a run that seems stuck
    if args.scenario == "cleanup":
        states = (
            [os.path.join(args.path, "lab.json")]
            if args.path
            else glob.glob(os.path.join(OUT, "*", "lab.json"))
        )
        for line in netns.cleanup_stale(states) or ["nothing to clean"]:
            print(line)
        return EXIT_OK
    if args.scenario == "check":
        if not args.path:
            p.error("check needs the path of a history.jsonl")
        _, code = _judge(history.read(args.path), os.path.dirname(args.path), None)
        return code
    sc = SCENARIOS[args.scenario]
    if args.nodes:
        sc = replace(sc, nodes=args.nodes)
    if args.min_run is not None:
        sc = replace(sc, min_run_s=args.min_run)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    out = args.out or os.path.join(OUT, f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    compose = None
    if args.backend == "compose":
        compose = {
            "attach": args.compose_attach,
            "dir": args.compose_dir,
            "services": args.compose_services.split(","),
            "urls": args.compose_urls.split(","),
        }
    _say(
        f"scenario {sc.name}, seed {seed}, output {out}; fault kinds: "
        f"{', '.join(k for k in KINDS if k in sc.kinds) or 'none'}"
    )
    try:
        _, code = run(sc, out, seed, use_netns=not args.no_netns, compose=compose)
    except Exception:
        traceback.print_exc()
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
