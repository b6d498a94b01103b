"""Nemeses: the faults of a chaos run, planned as data and carried out through a back-end.

* :func:`plan` turns counts of fault kinds into a shuffled schedule of :class:`Step` (pure: a
  seeded ``random.Random`` decides, nothing else).
* :class:`Nemesis` walks the schedule: before each step it waits (bounded) until every node is
  ready again, resolves the target (the leader is known only then), applies the fault, holds it,
  heals it and writes a ``fault`` record to the history.
* A back-end does the actual harm. :class:`LocalBackend` (default): processes on this machine,
  in network namespaces when a :class:`~chaos.netns.Lab` is given (partitions and loss need it;
  delay needs a lab made with ``delay=True``, which runs the proxies of :mod:`chaos.delay`).
  :class:`ComposeBackend`: ``docker compose kill/start/pause/unpause`` and ``docker network
  disconnect/connect`` for users with a Docker engine (none on our machines: its commands are
  tested against a fake ``docker`` only, ``tests/unit/test_compose_backend.py``).

Fault kinds: ``kill`` (kill -9 a follower, restart after the hold), ``kill-leader``, ``pause``
(SIGSTOP/SIGCONT a random node), ``partition-one`` (cut a random node off), ``partition-leader``
(cut the leader off), ``partition-majority`` (split into a majority and a minority of followers;
on 3 nodes the minority is one follower), ``loss`` (drop a share of the packets reaching a node),
``skew`` (restart a node with its clock moved by ``KVRAFT_CLOCK_OFFSET_MS``, ahead or behind by
a few ms to 5 s, see :data:`SKEW_BANDS_MS`; and back), ``delay``
(hold back everything a node sends by 50, 100 or 200 ms, plus up to 10% jitter).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import requests

from .history import History

KINDS = ("kill", "kill-leader", "pause", "partition-one", "partition-leader",
         "partition-majority", "loss", "skew", "delay")
NETWORK_KINDS = ("partition-one", "partition-leader", "partition-majority", "loss", "delay")
DELAYS_MS = (50, 100, 200)
# clock skews, ahead or behind: the n-th skew of a plan is drawn (log-uniform) from band n % 3,
# so even a short plan has one of seconds (past the default max_clock_offset of 500 ms), and a
# longer one a few ms and tens to hundreds of ms (within it: the versions must still only move
# forward)
SKEW_BANDS_MS = ((500, 5_000), (5, 50), (50, 500))


class Unsupported(RuntimeError):
    """The back-end cannot inject this fault."""


# -- the plan (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str
    gap_s: float  # quiet time before the fault
    hold_s: float  # how long the fault lasts
    params: dict = field(default_factory=dict)


def plan(kinds: list[str], rng: random.Random, hold=(5.0, 8.0), gap=(3.0, 6.0),
         supported: tuple[str, ...] = KINDS, shuffle: bool = True) -> list[Step]:
    """A schedule of the faults ``kinds`` (shuffled, or in the order given); kinds the back-end
    does not support are left out. Loss probability, clock offset and delay are drawn here."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    kinds = [k for k in kinds if k in supported]
    if shuffle:
        rng.shuffle(kinds)
    steps = []
    skews = 0
    for kind in kinds:
        params: dict = {}
        if kind == "loss":
            params["probability"] = rng.choice((0.1, 0.2, 0.3))
        elif kind == "skew":
            params["offset_ms"] = skew_ms(skews, rng)
            skews += 1
        elif kind == "delay":
            params["delay_ms"] = rng.choice(DELAYS_MS)
            params["jitter_ms"] = params["delay_ms"] // 10
        steps.append(Step(kind, round(rng.uniform(*gap), 2), round(rng.uniform(*hold), 2),
                          params))
    return steps


def skew_ms(n: int, rng: random.Random) -> int:
    """The clock offset of the ``n``-th skew of a plan: ahead or behind, from a few ms to 5 s."""
    low, high = SKEW_BANDS_MS[n % len(SKEW_BANDS_MS)]
    return rng.choice((-1, 1)) * round(low * (high / low) ** rng.random())


def split_majority(n: int, leader: int | None, rng: random.Random) -> tuple[list[int], list[int]]:
    """(majority, minority): the minority is (n-1)//2 nodes chosen among the followers."""
    followers = [i for i in range(n) if i != leader]
    minority = sorted(rng.sample(followers, max(1, (n - 1) // 2)))
    return [i for i in range(n) if i not in minority], minority


# -- back-ends -----------------------------------------------------------------------------------


class Backend(Protocol):
    ids: list[str]
    urls: list[str]
    supported: tuple[str, ...]

    def running(self, i: int) -> bool: ...
    def kill(self, i: int) -> None: ...
    def start(self, i: int, env: dict[str, str] | None = None) -> None: ...
    def pause(self, i: int) -> None: ...
    def resume(self, i: int) -> None: ...
    def partition(self, groups: list[list[int]]) -> None: ...
    def heal_network(self) -> None: ...
    def set_loss(self, i: int, probability: float) -> None: ...
    def clear_loss(self, i: int) -> None: ...
    def set_delay(self, i: int, delay_ms: int, jitter_ms: int = 0) -> None: ...
    def clear_delay(self, i: int) -> None: ...


class LocalBackend:
    """Nodes of a :class:`~chaos.launcher.ChaosCluster`; network faults through its lab."""

    def __init__(self, cluster, lab=None) -> None:
        self.cluster, self.lab = cluster, lab
        self.ids = [n.id for n in cluster.nodes]
        self.urls = [n.url for n in cluster.nodes]
        if lab is None:
            self.supported = tuple(k for k in KINDS if k not in NETWORK_KINDS)
        else:
            self.supported = tuple(k for k in KINDS if k != "delay" or lab.delay)
        self._paused: set[int] = set()
        self._lossy: set[int] = set()

    def running(self, i: int) -> bool:
        return self.cluster.is_running(i)

    def kill(self, i: int) -> None:
        self.cluster.kill(i)

    def start(self, i: int, env: dict[str, str] | None = None) -> None:
        self.cluster.start(i, extra_env=env)

    def pause(self, i: int) -> None:
        self.cluster.pause(i)
        self._paused.add(i)

    def resume(self, i: int) -> None:
        if self.running(i):
            self.cluster.resume(i)
        self._paused.discard(i)

    def partition(self, groups: list[list[int]]) -> None:
        self._need_lab().partition(groups)

    def heal_network(self) -> None:
        if self.lab:
            self.lab.heal()

    def set_loss(self, i: int, probability: float) -> None:
        self._need_lab().set_loss(i, probability)
        self._lossy.add(i)

    def clear_loss(self, i: int) -> None:
        if self.lab:
            self.lab.clear_loss(i)
        self._lossy.discard(i)

    def set_delay(self, i: int, delay_ms: int, jitter_ms: int = 0) -> None:
        lab = self._need_lab()
        if not lab.delay:
            raise Unsupported("delay needs the lab's delay proxies (Lab(..., delay=True))")
        lab.set_delay(i, delay_ms, jitter_ms)

    def clear_delay(self, i: int) -> None:
        if self.lab and self.lab.delay:
            self.lab.clear_delay(i)

    def _need_lab(self):
        if self.lab is None:
            raise Unsupported("network faults need network namespaces (run as root)")
        return self.lab


def compose_command(timeout: float = 10.0) -> list[str]:
    """``docker compose`` when the docker CLI has the compose plugin, else ``docker-compose``
    (v1). A docker CLI without the plugin is common (this machine has one): its ``docker
    compose ...`` fails with "unknown command", so the plugin is asked, not assumed."""
    if shutil.which("docker"):
        try:
            res = subprocess.run(["docker", "compose", "version"], capture_output=True,
                                 text=True, timeout=timeout)
            if res.returncode == 0:
                return ["docker", "compose"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]  # neither works: the first command will say so


class ComposeBackend:
    """Services of a docker compose project, by ``docker compose`` commands.

    Never run against a Docker engine here (our machines have none); the commands it issues are
    tested against a fake ``docker`` (``tests/unit/test_compose_backend.py``). Partitions
    disconnect the minority's containers from every network they are on, which also cuts them
    off from the clients (unlike the local back-end, where clients still reach both sides); the
    heal reconnects them with their network aliases (the service name the peers use). No packet
    loss, clock skew or delay.
    """

    def __init__(self, services: list[str], urls: list[str], project_dir: str = ".",
                 compose: list[str] | None = None) -> None:
        self.ids, self.urls, self.project_dir = services, urls, project_dir
        self.compose = compose or compose_command()
        self.supported = ("kill", "kill-leader", "pause", "partition-one", "partition-leader",
                          "partition-majority")
        # node -> (container id, [(network, aliases)]) still to reconnect
        self._cut: dict[int, tuple[str, list[tuple[str, list[str]]]]] = {}
        self._stopped: set[int] = set()
        self._paused: set[int] = set()

    def _exec(self, args: list[str], cwd: str | None = None, timeout: float = 60) -> str:
        try:
            res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(args)}: timed out after {timeout}s") from exc
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
        return res.stdout

    def _run(self, *args: str, timeout: float = 60) -> str:
        return self._exec([*self.compose, *args], cwd=self.project_dir, timeout=timeout)

    def _docker(self, *args: str, timeout: float = 30) -> str:
        return self._exec(["docker", *args], timeout=timeout)

    def _container(self, i: int) -> str:
        cid = self._run("ps", "-q", self.ids[i]).strip()
        if not cid or len(cid.split()) != 1:
            raise RuntimeError(f"service {self.ids[i]}: expected one running container, "
                               f"`ps -q` gave {cid!r}")
        return cid

    def running(self, i: int) -> bool:
        return i not in self._stopped

    def kill(self, i: int) -> None:
        self._run("kill", "-s", "SIGKILL", self.ids[i])
        self._stopped.add(i)
        self._paused.discard(i)

    def start(self, i: int, env: dict[str, str] | None = None) -> None:
        if env:
            raise Unsupported("the compose back-end cannot restart a service with other settings")
        self._run("start", self.ids[i])
        self._stopped.discard(i)

    def pause(self, i: int) -> None:
        self._run("pause", self.ids[i])
        self._paused.add(i)

    def resume(self, i: int) -> None:
        """Unpause ``i`` if this back-end paused it (unpausing a running container is an
        error, and ``heal_all`` resumes every node)."""
        if i in self._paused:
            self._run("unpause", self.ids[i])
            self._paused.discard(i)

    def partition(self, groups: list[list[int]]) -> None:
        """Disconnect every node outside the largest group from its networks; replaces any
        partition."""
        self.heal_network()
        majority = max(groups, key=len)
        for i in (i for g in groups if g is not majority for i in g):
            cid = self._container(i)
            nets = json.loads(self._docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                           cid) or "{}")
            for net, conf in nets.items():
                aliases = list(dict.fromkeys([*((conf or {}).get("Aliases") or []),
                                              self.ids[i]]))
                self._docker("network", "disconnect", net, cid)
                # recorded as soon as it is cut, so a failure half-way is still healed
                self._cut.setdefault(i, (cid, []))[1].append((net, aliases))

    def heal_network(self) -> None:
        """Reconnect what ``partition`` cut, with the aliases it had. Tries every network; raises
        at the end if one failed (it stays recorded: the next heal tries it again)."""
        errors = []
        for i, (cid, nets) in list(self._cut.items()):
            for net, aliases in list(nets):
                try:
                    self._docker("network", "connect",
                                 *[a for alias in aliases for a in ("--alias", alias)], net, cid)
                    nets.remove((net, aliases))
                except RuntimeError as exc:
                    errors.append(str(exc))
            if not nets:
                del self._cut[i]
        if errors:
            raise RuntimeError("; ".join(errors))

    def set_loss(self, i: int, probability: float) -> None:
        raise Unsupported("packet loss needs the local back-end")

    def clear_loss(self, i: int) -> None:
        return None

    def set_delay(self, i: int, delay_ms: int, jitter_ms: int = 0) -> None:
        raise Unsupported("delay needs the local back-end (its proxies in network namespaces)")

    def clear_delay(self, i: int) -> None:
        return None


# -- running the plan ----------------------------------------------------------------------------


def is_ready(url: str, session: requests.Session) -> bool:
    try:
        return session.get(url + "/ready", timeout=1).ok
    except requests.RequestException:
        return False


def leader_of(backend: Backend, session: requests.Session) -> int | None:
    """The leader most running nodes name (None when they do not name one)."""
    votes: dict[str, int] = {}
    for i, url in enumerate(backend.urls):
        if not backend.running(i):
            continue
        try:
            leader = session.get(url + "/cluster", timeout=1).json().get("leader")
        except (requests.RequestException, ValueError):
            continue
        if leader:
            votes[leader] = votes.get(leader, 0) + 1
    if not votes:
        return None
    best = max(votes, key=votes.get)
    return backend.ids.index(best) if best in backend.ids else None


class Nemesis:
    """Carries out a plan against a back-end, recording each fault window in the history.

    ``run()`` blocks until the plan is done or ``stop()`` is called; a fault in progress is
    always healed (``heal_all`` in ``finally``). Every wait is bounded.
    """

    def __init__(self, backend: Backend, history: History, steps: list[Step],
                 rng: random.Random, ready_timeout: float = 30.0, end_by: float | None = None,
                 overhead_s: float = 2.0) -> None:
        self.backend, self.history, self.steps, self.rng = backend, history, steps, rng
        self.ready_timeout = ready_timeout
        self.end_by = end_by  # time.monotonic() by which the last fault should be over
        self.overhead_s = overhead_s  # per step: waiting for readiness, killing, restarting
        self.stopping = threading.Event()
        self.session = requests.Session()
        self.skipped: list[str] = []
        self.done = 0
        self.last_end: float | None = None  # when the last fault was healed
        self._skewed: set[int] = set()

    def stop(self) -> None:
        self.stopping.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while time.monotonic() < deadline and not self.stopping.is_set():
            if all(self.backend.running(i) and is_ready(u, self.session)
                   for i, u in enumerate(self.backend.urls)):
                return True
            self.stopping.wait(0.2)
        return False

    def run(self) -> None:
        try:
            for n, step in enumerate(self.steps):
                if self.stopping.wait(self.gap(n)):
                    break
                if not self.wait_ready():
                    self.skipped.append(f"step {n} {step.kind}: cluster not ready in time")
                    continue
                try:
                    self.apply(n, step)
                    self.done += 1
                except Unsupported as exc:
                    self.skipped.append(f"step {n} {step.kind}: {exc}")
                except Exception as exc:  # a failed injection is reported, the plan goes on
                    self.skipped.append(f"step {n} {step.kind} failed: "
                                        f"{type(exc).__name__}: {exc}")
        finally:
            self.heal_all()

    def gap(self, n: int) -> float:
        """The quiet time before step ``n``: the planned gap, stretched when ``end_by`` leaves
        more time than the remaining steps need, so the faults spread over the whole run."""
        gap = self.steps[n].gap_s
        if self.end_by is None:
            return gap
        left = self.steps[n:]
        need = sum(s.gap_s + s.hold_s + self.overhead_s for s in left)
        slack = self.end_by - time.monotonic() - need
        return gap + max(0.0, slack / len(left))

    def apply(self, n: int, step: Step) -> None:
        b, rng = self.backend, self.rng
        count = len(b.ids)
        leader = leader_of(b, self.session)
        if step.kind not in b.supported:
            raise Unsupported(f"back-end does not support {step.kind}")
        followers = [i for i in range(count) if i != leader]
        groups: list[list[int]] | None = None
        if step.kind == "kill-leader" or step.kind == "partition-leader":
            if leader is None:
                raise Unsupported("no leader to target")
            targets = [leader]
        elif step.kind == "kill":
            targets = [rng.choice(followers)]
        elif step.kind == "partition-majority":
            majority, targets = split_majority(count, leader, rng)
        else:
            targets = [rng.randrange(count)]
        if step.kind.startswith("partition"):
            groups = [[i for i in range(count) if i not in targets], targets]
        start = self.history.now()
        params = dict(step.params)
        try:
            self._inject(step, targets, groups)
            self.stopping.wait(step.hold_s)
        finally:
            self._heal(step, targets)
            end = self.last_end = self.history.now()
            self.history.write({
                "type": "fault", "id": n, "kind": step.kind, "nodes": [b.ids[i] for i in targets],
                "groups": [[b.ids[i] for i in g] for g in groups] if groups else None,
                "leader": b.ids[leader] if leader is not None else None, "start": start,
                "end": end, "params": params})
            self.history.flush()

    def _inject(self, step: Step, targets: list[int], groups) -> None:
        b = self.backend
        if step.kind in ("kill", "kill-leader"):
            b.kill(targets[0])
        elif step.kind == "pause":
            b.pause(targets[0])
        elif step.kind.startswith("partition"):
            b.partition(groups)
        elif step.kind == "loss":
            b.set_loss(targets[0], step.params["probability"])
        elif step.kind == "delay":
            b.set_delay(targets[0], step.params["delay_ms"], step.params.get("jitter_ms", 0))
        elif step.kind == "skew":
            b.kill(targets[0])
            b.start(targets[0], {"KVRAFT_CLOCK_OFFSET_MS": str(step.params["offset_ms"])})
            self._skewed.add(targets[0])

    def _heal(self, step: Step, targets: list[int]) -> None:
        b = self.backend
        if step.kind in ("kill", "kill-leader"):
            b.start(targets[0])
        elif step.kind == "pause":
            b.resume(targets[0])
        elif step.kind.startswith("partition"):
            b.heal_network()
        elif step.kind == "loss":
            b.clear_loss(targets[0])
        elif step.kind == "delay":
            b.clear_delay(targets[0])
        elif step.kind == "skew":
            b.kill(targets[0])
            b.start(targets[0], {"KVRAFT_CLOCK_OFFSET_MS": "0"})
            self._skewed.discard(targets[0])

    def heal_all(self) -> bool:
        """Undo every fault: network, loss, delays, pauses, stopped nodes. Idempotent; every
        fault heals itself when its hold ends, so this only acts after an error or a stop
        mid-fault.
        Returns whether a node had to be started."""
        b = self.backend
        for action in (b.heal_network,
                       *[(lambda i=i: b.clear_loss(i)) for i in range(len(b.ids))],
                       *[(lambda i=i: b.clear_delay(i)) for i in range(len(b.ids))],
                       *[(lambda i=i: b.resume(i)) for i in range(len(b.ids))]):
            try:
                action()
            except Exception as exc:  # keep healing the rest; report what failed
                self.skipped.append(f"heal: {type(exc).__name__}: {exc}")
        started = False
        for i in range(len(b.ids)):
            if not b.running(i):
                b.start(i, {"KVRAFT_CLOCK_OFFSET_MS": "0"} if i in self._skewed else None)
                started = True
        return started
