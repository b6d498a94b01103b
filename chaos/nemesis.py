"""Nemeses: the faults of a chaos run, planned as data and carried out through a back-end.

* :func:`plan` turns counts of fault kinds into a shuffled schedule of :class:`Step` (pure: a
  seeded ``random.Random`` decides, nothing else).
* :class:`Nemesis` walks the schedule: before each step it waits (bounded) until every node is
  ready again, resolves the target (the leader is known only then), applies the fault, holds it,
  heals it and writes a ``fault`` record to the history.
* A back-end does the actual harm. :class:`LocalBackend` (default): processes on this machine,
  in network namespaces when a :class:`~chaos.netns.Lab` is given (partitions and loss need it;
  delay needs a lab made with ``delay=True``, which runs the proxies of :mod:`chaos.delay`).
  :class:`ComposeBackend`: the containers of a docker compose project (``compose kill/start/
  pause/unpause``, ``up`` with an override for skew, iptables in the containers' network
  namespaces or ``docker network disconnect`` for partitions); run for real by
  tests/integration/test_chaos_compose.py, its commands checked by
  tests/unit/test_compose_backend.py.

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
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

from .compose import ComposeProject, compose_command, exec_checked  # noqa: F401 (re-exported)
from .history import History

KINDS = (
    "kill",
    "kill-leader",
    "pause",
    "partition-one",
    "partition-leader",
    "partition-majority",
    "loss",
    "skew",
    "delay",
)
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


def plan(
    kinds: list[str],
    rng: random.Random,
    hold=(5.0, 8.0),
    gap=(3.0, 6.0),
    supported: tuple[str, ...] = KINDS,
    shuffle: bool = True,
) -> list[Step]:
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
        steps.append(Step(kind, round(rng.uniform(*gap), 2), round(rng.uniform(*hold), 2), params))
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


class ComposeBackend:
    """The node services of a docker compose project (:class:`chaos.compose.ComposeProject`).

    ``kill`` is ``compose kill -s SIGKILL``, ``start`` is ``compose start``; ``pause`` and
    ``resume`` are ``compose pause``/``unpause`` (the cgroup freezer: the process is stopped,
    its sockets stay open). A restart with other settings (``skew``: ``KVRAFT_CLOCK_OFFSET_MS``)
    writes an override file for that one service and runs ``compose up -d --no-deps`` with it:
    the container is recreated with its named volume, so its data stays.

    Network faults, ``network="iptables"`` (the default when ``nsenter`` and ``iptables`` are
    here and we are root): rules in each container's own network namespace, entered with
    ``nsenter -t <pid> -n``: a partition drops, on every node, what comes from the nodes of the
    other groups (clients on the host still reach every node, as with the local back-end);
    ``loss`` drops a share of everything reaching a node. The rules live in chains of their
    own (KVRAFT_PART, KVRAFT_LOSS), flushed on heal; a container restarted meanwhile has a new
    namespace without them. ``network="disconnect"``: ``docker network disconnect`` the
    minority from its networks and ``connect`` it back with its aliases (this also cuts the
    clients off from it; no loss). No delay either way (the kernel here has no netem).
    """

    PART, LOSS = "KVRAFT_PART", "KVRAFT_LOSS"

    def __init__(
        self,
        services: list[str],
        urls: list[str],
        project_dir: str = ".",
        compose: list[str] | None = None,
        project=None,
        network: str = "auto",
        override_dir: str | None = None,
    ) -> None:
        if project is None:  # attach to the user's project in project_dir (its default name)
            project = ComposeProject(file=_compose_file(project_dir), nodes=tuple(services))
        if compose is not None:
            project.compose = compose
        self.project = project
        self.ids, self.urls, self.project_dir = services, urls, project_dir
        self.compose = project.compose
        if network == "auto":
            network = "iptables" if iptables_in_namespaces() is None else "disconnect"
        if network not in ("iptables", "disconnect"):
            raise ValueError(f"network: iptables or disconnect, not {network!r}")
        self.network = network
        self.override_dir = override_dir
        self.supported = (
            "kill",
            "kill-leader",
            "pause",
            "partition-one",
            "partition-leader",
            "partition-majority",
            "skew",
        )
        if network == "iptables":
            self.supported += ("loss",)
        # disconnect: node -> (container id, [(network, aliases)]) still to reconnect
        self._cut: dict[int, tuple[str, list[tuple[str, list[str]]]]] = {}
        self._chains: dict[int, set[str]] = {}  # iptables: node -> chains holding rules
        self._cids: dict[int, str] = {}  # node -> container id (until it is recreated)
        self._known_ip: dict[int, str] = {}  # node -> its last address seen
        self._stopped: set[int] = set()
        self._paused: set[int] = set()
        self.notes: list[str] = []  # what the run report should know (e.g. an address moved)

    def _run(self, *args: str, timeout: float = 60, files=()) -> str:
        try:
            return self.project.run(*args, timeout=timeout, files=files)
        except Exception as exc:
            raise RuntimeError(str(exc)) from exc

    def _docker(self, *args: str, timeout: float = 30) -> str:
        try:
            return exec_checked(["docker", *args], timeout)
        except Exception as exc:
            raise RuntimeError(str(exc)) from exc

    def _container(self, i: int) -> str:
        cid = self._run("ps", "-q", self.ids[i]).strip()
        if not cid or len(cid.split()) != 1:
            raise RuntimeError(
                f"service {self.ids[i]}: expected one running container, `ps -q` gave {cid!r}"
            )
        return cid

    def running(self, i: int) -> bool:
        return i not in self._stopped

    def kill(self, i: int) -> None:
        self._address(i)  # known before it goes: a recreate compares with it
        self._run("kill", "-s", "SIGKILL", self.ids[i])
        self._stopped.add(i)
        self._paused.discard(i)
        self._chains.pop(i, None)  # its namespace goes with it

    def start(self, i: int, env: dict[str, str] | None = None) -> None:
        if env:
            self._recreate(i, env)
        else:
            self._run("start", self.ids[i])
        self._stopped.discard(i)

    def _recreate(self, i: int, env: dict[str, str]) -> None:
        """``up -d --no-deps`` the service with ``env`` added to its environment."""
        service = self.ids[i]
        before = self._address(i) or self._known_ip.get(i)
        self._cids.pop(i, None)  # a new container
        lines = [f"services:\n  {service}:\n    environment:\n"]
        lines += [f"      {k}: {json.dumps(str(v))}\n" for k, v in sorted(env.items())]
        fd, path = tempfile.mkstemp(
            prefix=f"compose-{service}-", suffix=".yml", dir=self.override_dir
        )
        with os.fdopen(fd, "w") as f:
            f.write("".join(lines))
        try:
            self._run("up", "-d", "--no-deps", "--no-build", service, files=[path], timeout=120)
        finally:
            os.unlink(path)
        after = self._address(i)
        if before and after and before != after:
            self.notes.append(
                f"{service} was recreated with another address ({before} to "
                f"{after}); pysyncobj caches peer addresses for 600 s"
            )

    def _address(self, i: int) -> str | None:
        try:
            return self._ip(i)
        except Exception:
            return None

    # container ids, PIDs and addresses by `docker inspect` of a cached id: a compose command
    # costs about a second (docker-compose v1 starts Python and asks the engine for the whole
    # project), and a partition needs a few per node
    def _cid(self, i: int) -> str:
        if i not in self._cids:
            self._cids[i] = self.project.container(self.ids[i])
        return self._cids[i]

    def _pid(self, i: int) -> int:
        return int(self._docker("inspect", "-f", "{{.State.Pid}}", self._cid(i)).strip() or 0)

    def _ip(self, i: int) -> str:
        out = self._docker(
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            self._cid(i),
        ).split()
        if not out:
            raise RuntimeError(f"{self.ids[i]} has no address")
        self._known_ip[i] = out[0]
        return out[0]

    def pause(self, i: int) -> None:
        self._run("pause", self.ids[i])
        self._paused.add(i)

    def resume(self, i: int) -> None:
        """Unpause ``i`` if this back-end paused it (unpausing a running container is an
        error, and ``heal_all`` resumes every node)."""
        if i in self._paused:
            self._run("unpause", self.ids[i])
            self._paused.discard(i)

    # -- iptables in the containers' namespaces ------------------------------------------

    def _iptables(self, i: int, *rules: list[str]) -> None:
        """Run iptables ``rules`` (argument lists) in node ``i``'s network namespace."""
        pid = self._pid(i)
        if not pid:
            raise RuntimeError(f"{self.ids[i]} is not running: no network namespace")
        for rule in rules:
            self._exec_ns(pid, rule)

    def _exec_ns(self, pid: int, rule: list[str]) -> str:
        try:
            return exec_checked(["nsenter", "-t", str(pid), "-n", "iptables", "-w", *rule], 15)
        except Exception as exc:
            raise RuntimeError(str(exc)) from exc

    def _chain(self, i: int, chain: str) -> None:
        """Create ``chain`` in node ``i``'s namespace, jumped to first from INPUT."""
        pid = self._pid(i)
        if not pid:
            raise RuntimeError(f"{self.ids[i]} is not running: no network namespace")
        try:
            self._exec_ns(pid, ["-N", chain])
        except RuntimeError as exc:
            if "exists" not in str(exc):
                raise
        try:
            self._exec_ns(pid, ["-C", "INPUT", "-j", chain])
        except RuntimeError:
            self._exec_ns(pid, ["-I", "INPUT", "-j", chain])
        self._chains.setdefault(i, set()).add(chain)

    def _flush(self, chain: str, nodes) -> list[str]:
        errors = []
        for i in list(nodes):
            if chain not in self._chains.get(i, ()):
                continue
            try:
                pid = self._pid(i)
                if pid:  # not running: its namespace, rules and all, is gone
                    self._exec_ns(pid, ["-F", chain])
                self._chains[i].discard(chain)
            except RuntimeError as exc:
                if "No chain" in str(exc) or "does not exist" in str(exc):
                    self._chains[i].discard(chain)  # restarted: a new namespace
                else:
                    errors.append(str(exc))
        return errors

    # -- partitions ----------------------------------------------------------------------

    def partition(self, groups: list[list[int]]) -> None:
        """Cut the groups off from each other; replaces any partition."""
        self.heal_network()
        if self.network == "disconnect":
            self._disconnect(groups)
            return
        group_of = {i: g for g in groups for i in g}
        ips = {i: self._ip(i) for i in group_of}
        for i in group_of:
            others = [ips[j] for g in groups if g is not group_of[i] for j in g]
            self._chain(i, self.PART)
            self._iptables(i, *[["-A", self.PART, "-s", ip, "-j", "DROP"] for ip in others])

    def _disconnect(self, groups: list[list[int]]) -> None:
        majority = max(groups, key=len)
        for i in (i for g in groups if g is not majority for i in g):
            cid = self._container(i)
            nets = json.loads(
                self._docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", cid) or "{}"
            )
            for net, conf in nets.items():
                aliases = list(dict.fromkeys([*((conf or {}).get("Aliases") or []), self.ids[i]]))
                self._docker("network", "disconnect", net, cid)
                # recorded as soon as it is cut, so a failure half-way is still healed
                self._cut.setdefault(i, (cid, []))[1].append((net, aliases))

    def heal_network(self) -> None:
        """Undo ``partition``. Tries every node; raises at the end if one failed (it stays
        recorded: the next heal tries it again)."""
        errors = self._flush(self.PART, range(len(self.ids)))
        for i, (cid, nets) in list(self._cut.items()):
            for net, aliases in list(nets):
                try:
                    self._docker(
                        "network",
                        "connect",
                        *[a for alias in aliases for a in ("--alias", alias)],
                        net,
                        cid,
                    )
                    nets.remove((net, aliases))
                except RuntimeError as exc:
                    errors.append(str(exc))
            if not nets:
                del self._cut[i]
        if errors:
            raise RuntimeError("; ".join(errors))

    def set_loss(self, i: int, probability: float) -> None:
        if self.network != "iptables":
            raise Unsupported("packet loss needs iptables in the containers' namespaces")
        self._chain(i, self.LOSS)
        self._iptables(
            i,
            [
                "-A",
                self.LOSS,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                f"{probability:g}",
                "-j",
                "DROP",
            ],
        )

    def clear_loss(self, i: int) -> None:
        errors = self._flush(self.LOSS, [i])
        if errors:
            raise RuntimeError("; ".join(errors))

    def set_delay(self, i: int, delay_ms: int, jitter_ms: int = 0) -> None:
        raise Unsupported("delay needs the local back-end (this kernel has no netem)")

    def clear_delay(self, i: int) -> None:
        return None


def _compose_file(project_dir: str) -> Path:
    for name in ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml"):
        if (Path(project_dir) / name).exists():
            return Path(project_dir) / name
    return Path(project_dir) / "docker-compose.yml"


def iptables_in_namespaces() -> str | None:
    """Why iptables cannot be run in a container's network namespace here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("nsenter", "iptables"):
        if not shutil.which(tool):
            return f"no {tool} command"
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

    def __init__(
        self,
        backend: Backend,
        history: History,
        steps: list[Step],
        rng: random.Random,
        ready_timeout: float = 30.0,
        end_by: float | None = None,
        overhead_s: float = 2.0,
    ) -> None:
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
            if all(
                self.backend.running(i) and is_ready(u, self.session)
                for i, u in enumerate(self.backend.urls)
            ):
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
                    self.skipped.append(f"step {n} {step.kind} failed: {type(exc).__name__}: {exc}")
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
            self.history.write(
                {
                    "type": "fault",
                    "id": n,
                    "kind": step.kind,
                    "nodes": [b.ids[i] for i in targets],
                    "groups": [[b.ids[i] for i in g] for g in groups] if groups else None,
                    "leader": b.ids[leader] if leader is not None else None,
                    "start": start,
                    "end": end,
                    "params": params,
                }
            )
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
        for action in (
            b.heal_network,
            *[(lambda i=i: b.clear_loss(i)) for i in range(len(b.ids))],
            *[(lambda i=i: b.clear_delay(i)) for i in range(len(b.ids))],
            *[(lambda i=i: b.resume(i)) for i in range(len(b.ids))],
        ):
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
