"""A docker compose project of docker-compose.yml that we start, drive and remove ourselves.

Chaos runs against containers (``python -m chaos.run ... --backend compose``) and the container
tests (tests/integration/test_docker_*.py) use it. It owns one compose project name
(``kvraft-<purpose>-<random>``): every container, network and volume it creates carries the
label ``com.docker.compose.project=<name>``, and it only ever acts on that project, so it never
collides with a ``docker compose up`` of the user's (project ``kvraft``, ports 8001-8003) or with
another run. Published ports are free ports chosen at creation (the compose file reads them from
``KVRAFT_N1_PORT`` ... ``KVRAFT_FTP_PASSIVE``), on 127.0.0.1 only; the cluster secret and FTP
password are random per project.

:func:`build_image` runs ``scripts/build-image.sh`` (a base image from Debian packages when
none can be pulled; the wheels built on the host; a cached build takes about a second); our
projects run the tag :func:`source_tag` names after the sources, never the shared
``kvraft:dev``.
:func:`engine_problem` says why containers cannot run here, or None.

Every command has a timeout; nothing here sleeps without a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES = ("n1", "n2", "n3")
FTP = "ftp"
PORT_VARS = {
    "n1": "KVRAFT_N1_PORT",
    "n2": "KVRAFT_N2_PORT",
    "n3": "KVRAFT_N3_PORT",
    "ftp": "KVRAFT_FTP_PORT",
}
PASSIVE_PORTS = 10  # the compose file's passive range, published 1:1
LABEL = "com.docker.compose.project"


class ComposeError(RuntimeError):
    """A docker or compose command failed; the message has the command and its stderr."""


def compose_command(timeout: float = 10.0) -> list[str]:
    """``docker compose`` when the docker CLI has the compose plugin, else ``docker-compose``
    (v1, the Debian package). A docker CLI without the plugin is common (this machine has one):
    its ``docker compose ...`` fails with "unknown command", so the plugin is asked, not
    assumed."""
    if shutil.which("docker"):
        try:
            res = subprocess.run(
                ["docker", "compose", "version"], capture_output=True, text=True, timeout=timeout
            )
            if res.returncode == 0:
                return ["docker", "compose"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]  # neither works: the first command will say so


def engine_problem(timeout: float = 20.0) -> str | None:
    """Why containers cannot run here (no docker CLI, no engine, no compose), or None."""
    if not shutil.which("docker"):
        return "no docker command on PATH"
    try:
        res = subprocess.run(
            ["docker", "info", "-f", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer in {timeout:g} s"
    if res.returncode != 0 or not res.stdout.strip():
        return f"no Docker engine: `docker info` failed: {res.stderr.strip()[:300]}"
    cmd = compose_command()
    if not shutil.which(cmd[0]) or (
        cmd == ["docker", "compose"]
        and subprocess.run([*cmd, "version"], capture_output=True, timeout=timeout).returncode != 0
    ):
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


def skip_without_engine(skip) -> None:
    """For tests: call ``skip(reason)`` when containers cannot run here, after writing the
    reason to the terminal (pytest shows skip reasons only with -rs)."""
    problem = engine_problem()
    if problem:
        sys.__stderr__.write(f"\nskipping the container tests: {problem}\n")
        skip(f"no containers here: {problem}")


def exec_checked(
    args: list[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    stdin: str | None = None,
) -> str:
    """Run ``args``; its stdout, or :class:`ComposeError` with its stderr (also on timeout)."""
    try:
        res = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=None if env is None else dict(env),
            input=stdin,
        )
    except subprocess.TimeoutExpired as exc:
        raise ComposeError(f"{' '.join(args)}: timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise ComposeError(f"{' '.join(args)}: {exc}") from exc
    if res.returncode != 0:
        raise ComposeError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def source_tag() -> str:
    """``kvraft:src-<hash>``: a tag named after what goes into the image (the Dockerfile, the
    packaging files and the kvraft and api sources). Our projects run this tag, not the user's
    ``kvraft:dev``: every worktree and checkout on this engine builds and tags images, and a tag
    another one re-tags in the middle of a run would put other code into the next container
    recreated (a skew fault did exactly that). Same sources, same tag: the build is cached."""
    h = hashlib.sha256()
    paths = [ROOT / n for n in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")]
    for pkg in ("kvraft", "kvraft_cmd", "api"):
        paths += [
            p
            for p in (ROOT / pkg).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        ]
    for path in sorted(paths):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"kvraft:src-{h.hexdigest()[:12]}"


def build_image(tag: str = "kvraft:dev", timeout: float = 900.0) -> str:
    """Build (or confirm, when cached) the image with scripts/build-image.sh; returns its
    one-line summary (tag, base, seconds, size). Blocks; raises ComposeError on failure."""
    out = exec_checked(["sh", str(ROOT / "scripts" / "build-image.sh"), tag], timeout)
    return out.strip().splitlines()[-1] if out.strip() else tag


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(
    count: int, rng: random.Random, consecutive: int = PASSIVE_PORTS
) -> tuple[list[int], tuple[int, int]]:
    """``count`` free ports and a free range of ``consecutive`` ports on 127.0.0.1, picked at
    random in 20000-59999 (not the kernel's ephemeral range, which a connect may take)."""
    for _ in range(200):
        low = rng.randrange(20000, 60000 - consecutive - count)
        ports = list(range(low, low + count + consecutive))
        if all(_bindable(p) for p in ports):
            return ports[:count], (ports[count], ports[-1])
    raise ComposeError("no free range of ports found in 200 tries")


@dataclass
class ComposeProject:
    """One compose project of ``file``. ``name`` None means the directory's default project (a
    cluster the user started: attach only, never ``down``). ``env`` is added to this process's
    environment for every compose command (compose interpolates the file from it)."""

    file: Path = ROOT / "docker-compose.yml"
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    nodes: tuple[str, ...] = NODES
    host: str = "127.0.0.1"
    compose: list[str] = field(default_factory=compose_command)
    owned: bool = False  # created by create(): down() may remove it
    profiles: tuple[str, ...] = ()  # compose profiles to enable (services outside the default)
    extra: tuple[str, ...] = (FTP,)  # services besides the nodes (health, logs)

    @classmethod
    def create(
        cls,
        purpose: str = "test",
        file: Path | None = None,
        rng: random.Random | None = None,
        **env: str,
    ) -> ComposeProject:
        """A new project with its own name, free published ports, a random secret and FTP
        password, and ``env`` on top (e.g. KVRAFT_IMAGE). Starts nothing."""
        rng = rng or random.Random()
        ports, (low, high) = free_ports(len(PORT_VARS), rng)
        settings = {var: str(port) for var, port in zip(PORT_VARS.values(), ports, strict=True)}
        settings.update(
            KVRAFT_PUBLISH="127.0.0.1",
            KVRAFT_FTP_PASSIVE=f"{low}-{high}",
            KVRAFT_SECRET=secrets.token_hex(24),
            KVRAFT_FTP_PASSWORD=secrets.token_hex(16),
            **env,
        )
        name = f"kvraft-{purpose}-{os.getpid()}-{secrets.token_hex(3)}"
        return cls(file=file or ROOT / "docker-compose.yml", name=name, env=settings, owned=True)

    # -- commands --------------------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def args(self, files: Iterable[str | os.PathLike] = ()) -> list[str]:
        """The compose command with this project's name and files, before the subcommand."""
        extra = [str(f) for f in files]
        head = [*self.compose]
        if self.name:
            head += ["-p", self.name]
        if extra or self.name:  # an attached project keeps compose's own file lookup
            head += ["-f", str(self.file)]
            for f in extra:
                head += ["-f", f]
        for profile in self.profiles:
            head += ["--profile", profile]
        return head

    def run(
        self, *args: str, timeout: float = 120.0, files: Iterable[str | os.PathLike] = ()
    ) -> str:
        return exec_checked(
            [*self.args(files), *args], timeout, env=self.environ(), cwd=self.file.parent
        )

    def up(self, services: Iterable[str] = (), timeout: float = 180.0) -> None:
        self.run("up", "-d", "--no-build", *services, timeout=timeout)

    def down(self, volumes: bool = True, timeout: float = 120.0) -> None:
        """Stop and remove the project's containers and network (and volumes). Only for a
        project this object created."""
        if not self.owned:
            raise ComposeError("refusing to take down a compose project this run did not create")
        self.run(
            "down", "--remove-orphans", *(["-v"] if volumes else []), "-t", "10", timeout=timeout
        )

    # -- what is running -------------------------------------------------------------------

    def port(self, service: str) -> int:
        if PORT_VARS[service] in self.env:
            return int(self.env[PORT_VARS[service]])
        return {"n1": 8001, "n2": 8002, "n3": 8003, "ftp": 2121}[service]

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{self.port(n)}" for n in self.nodes]

    def container(self, service: str) -> str:
        """The id of the service's one container (running or not)."""
        cid = self.run("ps", "-a", "-q", service, timeout=30).strip()
        if not cid or len(cid.split()) != 1:
            raise ComposeError(f"service {service}: expected one container, `ps -q` gave {cid!r}")
        return cid

    def inspect(self, cid: str) -> dict:
        return json.loads(exec_checked(["docker", "inspect", cid], 30))[0]

    def pid(self, service: str) -> int:
        """The PID of the container's first process on this host (0 when it is not running)."""
        return int(self.inspect(self.container(service))["State"]["Pid"])

    def ips(self) -> dict[str, str]:
        """Each node's address on its networks (the first network's)."""
        out = {}
        for name in self.nodes:
            nets = self.inspect(self.container(name))["NetworkSettings"]["Networks"] or {}
            addrs = [n.get("IPAddress") for n in nets.values() if n.get("IPAddress")]
            if addrs:
                out[name] = addrs[0]
        return out

    def health(self) -> dict[str, str]:
        """service -> Docker health status ('healthy', 'starting', 'unhealthy', or the state
        when the container has no health check or is not running)."""
        out = {}
        for service in (*self.nodes, *self.extra):
            try:
                state = self.inspect(self.container(service))["State"]
            except ComposeError as exc:
                out[service] = f"missing ({exc})"
                continue
            out[service] = (
                (state.get("Health") or {}).get("Status")
                if state.get("Running")
                else state.get("Status", "?")
            )
        return out

    def wait_healthy(self, timeout: float = 90.0) -> float:
        """Block until every service's container is healthy; seconds taken. Raises with the
        states and the logs' tails when the deadline passes."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            states = self.health()
            if all(s == "healthy" for s in states.values()):
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise ComposeError(
                    f"not healthy after {timeout:g} s: {states}\n" + self.logs_tail()
                )
            time.sleep(0.5)

    def logs_tail(self, lines: int = 20) -> str:
        try:
            return self.run("logs", "--no-color", "--tail", str(lines), timeout=30)
        except ComposeError as exc:
            return str(exc)

    def save_logs(self, directory: str | os.PathLike) -> None:
        """Each service's whole log into ``directory/<service>.log`` (best effort)."""
        os.makedirs(directory, exist_ok=True)
        for service in (*self.nodes, *self.extra):
            try:
                text = self.run("logs", "--no-color", service, timeout=60)
            except ComposeError as exc:
                text = str(exc)
            Path(directory, f"{service}.log").write_text(text)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes that still carry this project's label."""
        if not self.name:
            return {}
        flt = f"label={LABEL}={self.name}"
        return {
            kind: exec_checked(["docker", *cmd, "--filter", flt, "-q"], 30).split()
            for kind, cmd in (
                ("containers", ["ps", "-a"]),
                ("networks", ["network", "ls"]),
                ("volumes", ["volume", "ls"]),
            )
        }


def start_project(purpose: str, say=print, timeout: float = 120.0, **env: str) -> ComposeProject:
    """Build the image (cached: a second), create a project of our own and ``up`` it; returns
    once every container is healthy. On any failure the project is taken down (volumes too)
    before the error propagates."""
    t0 = time.monotonic()
    env.setdefault("KVRAFT_IMAGE", source_tag())
    say(build_image(env["KVRAFT_IMAGE"]))
    project = ComposeProject.create(purpose, **env)
    try:
        project.up(timeout=timeout)
        took = project.wait_healthy(timeout)
        say(
            f"compose project {project.name} up, healthy in {took:.1f} s "
            f"({time.monotonic() - t0:.1f} s with the build); nodes {' '.join(project.urls)}"
        )
    except BaseException:
        stop_project(project)
        raise
    return project


def stop_project(project: ComposeProject, logs_dir: str | os.PathLike | None = None) -> list[str]:
    """Save the logs (when ``logs_dir``), ``down -v``, and return what is left with the
    project's label (nothing, normally)."""
    if logs_dir is not None:
        project.save_logs(logs_dir)
    problems = []
    try:
        project.down(volumes=True)
    except ComposeError as exc:
        problems.append(f"down failed: {exc}")
    left = project.leftovers()
    problems += [f"{kind} left behind: {' '.join(ids)}" for kind, ids in left.items() if ids]
    return problems
