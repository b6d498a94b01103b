"""Run the services of docker-compose.yml as local processes, so the file is tested without Docker.

A service's command is the image's ``ENTRYPOINT`` plus the service's ``command`` (or the image's
``CMD``), read from the Dockerfile of its build context; ``kvraft`` runs as ``python -m kvraft``
and ``python`` as this interpreter. Its environment is the image's ``ENV`` under the service's
``environment``, on top of this process's environment minus every ``KVRAFT_*`` variable. Paths on
a volume (compose ``volumes`` or the image's ``VOLUME``) are mapped to directories under ``root``.

Each service gets an address of its own, so every service keeps the ports written in the file:

* ``netns`` (default as root): a network namespace per service, like a container: its own
  loopback, ``0.0.0.0`` binds only inside it. The namespaces share a bridge in a hub namespace,
  and one veth pair joins this process's namespace to that bridge, so tests reach every service
  at its address (``10.A.B.n``). Chaos tooling can cut links there.
* ``loopback`` (without root): ``127.A.B.n``, all on ``lo``. ``HOST:PORT`` values whose host is
  ``0.0.0.0``, ``localhost`` or ``127.0.0.1`` are rewritten to the service's own address. This
  only works for programs that bind the address they are given (pysyncobj binds ``0.0.0.0`` on
  its port unless ``bindAddress`` is set).

In both, ``HOST:PORT`` where HOST is a service name becomes that service's address (what the
compose network's DNS does), in environment values, arguments and health checks.

The compose file is read as ``docker-compose config`` normalizes it (interpolation, anchors, short
forms) when that command exists, else with PyYAML and a small interpolation of ``${VAR...}``.

Every process starts in a new session and is stopped by signalling its own process group; this
module never signals anything it did not start, writes nothing outside ``root`` and removes the
namespaces and links it created on ``close()``.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LOCAL_HOSTS = ("0.0.0.0", "localhost", "127.0.0.1", "[::]")
NETWORKS = ("auto", "netns", "loopback")
_HOSTPORT = re.compile(
    r"(?<![\w.\-])(?P<host>\[[0-9A-Fa-f:]*\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})"
    r"(?![\w.])"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")


class ComposeError(RuntimeError):
    """The compose file or Dockerfile cannot be read or run locally; the message says why."""


# -- durations and health checks --------------------------------------------------------------


def parse_duration(text: str | float | int | None, default: float) -> float:
    """Seconds in a compose/Docker duration such as ``10s``, ``1m30s`` or ``500ms``."""
    if text is None:
        return default
    if isinstance(text, int | float):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ComposeError(f"cannot read duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def check_argv(test: str | list[str] | None) -> list[str] | None:
    """The argv of a health check ``test`` in Docker's forms, or None when it is disabled.

    ``["CMD", args...]`` runs args; ``["CMD-SHELL", cmd]`` and a plain string run ``/bin/sh -c``.
    """
    if test is None:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    raise ComposeError(f"health check test must start with CMD, CMD-SHELL or NONE: {test!r}")


# -- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    test: list[str] | None  # Docker form: ["CMD", ...], ["CMD-SHELL", "..."] or None (NONE)
    options: dict[str, str]

    @property
    def timeout(self) -> float:
        return parse_duration(self.options.get("timeout"), 30.0)


@dataclass(frozen=True)
class Image:
    """What a Dockerfile says about running its image (the last stage; no ARG substitution)."""

    instructions: list[tuple[str, str]]
    base: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    healthcheck: HealthCheck | None = None

    def runs(self, name: str) -> list[str]:
        """The text of every instruction ``name`` (e.g. ``RUN``), in order."""
        return [text for instr, text in self.instructions if instr == name.upper()]


def read_dockerfile(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    if pending.strip():
        instr, _, rest = pending.strip().partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


def _exec_form(text: str) -> list[str]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ComposeError(f"bad exec form {text!r}: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ComposeError(f"exec form must be a list of strings: {text!r}")
        return value
    return ["/bin/sh", "-c", text]


def _env_pairs(text: str) -> dict[str, str]:
    words = shlex.split(text)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def parse_dockerfile(path: str | os.PathLike) -> Image:
    instructions = read_dockerfile(path)
    stage: list[tuple[str, str]] = []
    for instr, text in instructions:
        if instr == "FROM":
            stage = []
        stage.append((instr, text))
    values: dict = {"env": {}, "volumes": [], "exposed": [], "workdir": "/"}
    for instr, text in stage:
        if instr == "FROM":
            values["base"] = text.split()[0]
        elif instr == "ENTRYPOINT":
            values["entrypoint"] = _exec_form(text)
            values["cmd"] = []  # Docker resets CMD when ENTRYPOINT is set
        elif instr == "CMD":
            values["cmd"] = _exec_form(text)
        elif instr == "ENV":
            values["env"].update(_env_pairs(text))
        elif instr == "USER":
            values["user"] = text.split()[0]
        elif instr == "WORKDIR":
            values["workdir"] = os.path.join(values["workdir"], text)
        elif instr == "VOLUME":
            values["volumes"] += _exec_form(text) if text.startswith("[") else text.split()
        elif instr == "EXPOSE":
            values["exposed"] += text.split()
        elif instr == "HEALTHCHECK":
            values["healthcheck"] = _parse_healthcheck(text)
    return Image(instructions=instructions, **values)


def _parse_healthcheck(text: str) -> HealthCheck:
    options: dict[str, str] = {}
    rest = text
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        key, _, value = option[2:].partition("=")
        options[key] = value
        rest = rest.lstrip()
    if rest.upper() == "NONE":
        return HealthCheck(None, options)
    kind, _, command = rest.partition(" ")
    if kind.upper() != "CMD":
        raise ComposeError(f"HEALTHCHECK must be NONE or CMD ...: {text!r}")
    form = _exec_form(command.strip())
    test = ["CMD", *form] if command.strip().startswith("[") else ["CMD-SHELL", form[2]]
    return HealthCheck(test, options)


# -- compose file -----------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    """The argv prefix of a compose implementation that can run ``config``, or None."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def compose_config(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> dict:
    """The file as ``docker-compose config`` normalizes it; ComposeError if it is rejected."""
    cli = compose_command()
    if cli is None:
        raise ComposeError("docker-compose not found (scripts/install-test-deps.sh installs it)")
    path = Path(path).resolve()
    env = dict(os.environ if environ is None else environ)
    result = subprocess.run(
        [*cli, "-f", str(path), "config"],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise ComposeError(f"docker-compose config rejected {path}:\n{result.stderr.strip()}")
    return yaml.safe_load(result.stdout)


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``,
    ``${VAR?err}`` and ``$$``; ComposeError for a required variable that is missing."""

    def one(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            return environ.get(m.group("named"), "")
        body = m.group("braced")
        name_m = re.match(r"[A-Za-z_]\w*", body)
        if not name_m:
            raise ComposeError(f"bad interpolation ${{{body}}}")
        name, op = name_m.group(0), body[name_m.end() :]
        have = environ.get(name)
        if op == "":
            return have or ""
        for sep, empty_counts in ((":-", True), ("-", False), (":?", True), ("?", False)):
            if op.startswith(sep):
                arg = op[len(sep) :]
                missing = have is None or (empty_counts and have == "")
                if "?" in sep:
                    if missing:
                        raise ComposeError(f"required variable {name} is missing: {arg}")
                    return have
                return arg if missing else have
        raise ComposeError(f"unsupported interpolation ${{{body}}}")

    return _INTERPOLATION.sub(one, value)


def _interpolate_tree(node, environ: Mapping[str, str]):
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [_interpolate_tree(v, environ) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, environ) for k, v in node.items()}
    return node


def parse_compose_file(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> dict:
    """The compose file read with PyYAML and interpolated, without docker-compose.

    Only what :class:`LocalCompose` uses is normalized: ``environment`` lists become mappings
    and values strings, ``x-`` fields are dropped. ``extends`` and ``env_file`` are not supported.
    """
    path = Path(path).resolve()
    environ = os.environ if environ is None else environ
    raw = yaml.safe_load(path.read_text())
    config = _interpolate_tree({k: v for k, v in raw.items() if not k.startswith("x-")}, environ)
    for name, svc in (config.get("services") or {}).items():
        if "extends" in svc or "env_file" in svc:
            raise ComposeError(f"service {name}: extends/env_file need docker-compose config")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, environ.get(e, "")) for e in env)
        svc["environment"] = {k: "" if v is None else str(v) for k, v in env.items()}
        build = svc.get("build")
        if isinstance(build, str):
            svc["build"] = {"context": str((path.parent / build).resolve())}
        elif isinstance(build, dict):
            build["context"] = str((path.parent / build.get("context", ".")).resolve())
    return config


def load_compose(
    path: str | os.PathLike, environ: Mapping[str, str] | None = None, use_cli: bool | None = None
) -> dict:
    """The normalized compose file: through docker-compose when ``use_cli`` (default: when it
    is installed), else :func:`parse_compose_file`."""
    if use_cli is None:
        use_cli = compose_command() is not None
    return compose_config(path, environ) if use_cli else parse_compose_file(path, environ)


def target_ports(svc: Mapping) -> list[int]:
    """The container ports a service publishes (``ports``), ranges expanded, in file order."""
    out: list[int] = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            spec = str(entry["target"])
        else:
            spec = str(entry).split("/")[0].rsplit(":", 1)[-1]
        low, _, high = spec.partition("-")
        out += range(int(low), int(high or low) + 1)
    return list(dict.fromkeys(out))


def _volume_targets(svc: Mapping) -> list[str]:
    targets = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            targets.append(entry["target"])
        else:
            parts = str(entry).split(":")
            targets.append(parts[1] if len(parts) > 1 else parts[0])
    return targets


# -- networks ---------------------------------------------------------------------------------


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise ComposeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for cmd in (["ip", "-4", "-o", "addr"], ["ip", "-4", "route"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        for word in out.split():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return [n for n in nets if n.version == 4 and n.prefixlen > 0]


class NetnsNetwork:
    """A private layer-2 network: a namespace per service, all on a bridge in a hub namespace,
    and a veth pair from this process's namespace onto the bridge. Needs root and ``ip``.

    Names carry a per-run tag (``kcm`` + 6 hex digits) so runs never touch each other's (nor
    the chaos lab's ``kvc-`` namespaces).
    """

    def __init__(self, names: list[str], rng: random.Random) -> None:
        self.tag = f"kcm{rng.getrandbits(24):06x}"
        used = _used_networks()
        for _ in range(50):
            subnet = ipaddress.ip_network(f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}.0/24")
            if not any(subnet.overlaps(u) for u in used):
                break
        else:
            raise ComposeError("no free 10.200-254.x.0/24 subnet for the compose network")
        hosts = list(subnet.hosts())
        self.subnet = subnet
        self.gateway = str(hosts[-1])  # this process's end of the link
        self.addresses = {name: str(hosts[i]) for i, name in enumerate(names)}
        self.namespaces = {name: f"{self.tag}-{name}" for name in names}
        self.hub = f"{self.tag}-hub"
        self._created: list[str] = []

    def up(self) -> None:
        """Create the namespaces and links; on failure remove what was made and raise."""
        try:
            prefix = self.subnet.prefixlen
            _ip("netns", "add", self.hub)
            self._created.append(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            # this namespace's end; deleting the hub namespace deletes the pair
            _ip(
                "link",
                "add",
                self.tag + "r",
                "type",
                "veth",
                "peer",
                "name",
                "up0",
                "netns",
                self.hub,
            )
            _ip("-n", self.hub, "link", "set", "up0", "master", "br0", "up")
            _ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self.tag + "r")
            _ip("link", "set", self.tag + "r", "up")
            for i, (name, ns) in enumerate(self.namespaces.items()):
                _ip("netns", "add", ns)
                self._created.append(ns)
                port = f"s{i}"
                _ip(
                    "-n",
                    self.hub,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                )
                _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.addresses[name]}/{prefix}", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Delete every namespace this object created (their links go with them)."""
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._created.clear()

    def prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[name]]


def choose_network(network: str) -> str:
    """``auto`` -> ``netns`` as root with ``ip`` installed, else ``loopback``."""
    if network not in NETWORKS:
        raise ComposeError(f"network must be one of {NETWORKS}, got {network!r}")
    if network == "auto":
        return "netns" if os.geteuid() == 0 and shutil.which("ip") else "loopback"
    return network


# -- running services -------------------------------------------------------------------------


@dataclass
class LocalService:
    """One compose service planned (and maybe running) as a local process."""

    name: str
    address: str
    argv: list[str]  # as run, with the network namespace prefix if any
    env: dict[str, str]
    cwd: str
    paths: dict[str, str]  # container path -> local directory
    target_ports: list[int]  # container ports the compose file publishes
    healthcheck: list[str] | str | None  # Docker form, from the compose file or the image
    healthcheck_timeout: float
    stop_grace: float
    log_path: str
    proc: subprocess.Popen | None = None

    def url(self, port: int | None = None) -> str:
        """``http://ADDRESS:PORT``, by default on the first published container port."""
        if port is None:
            if not self.target_ports:
                raise ComposeError(f"service {self.name} publishes no port")
            port = self.target_ports[0]
        return f"http://{self.address}:{port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class LocalCompose:
    """The services of a compose file run as local processes, each on an address of its own.

    ``start()`` sets up the network and launches the services (all, or the names given) without
    waiting; ``wait_healthy()`` polls their health checks. ``stop``/``kill``/``pause``/``resume``
    act on one service's process group and nothing else. ``close()`` (or leaving the ``with``
    block) stops everything and removes the network. Not thread safe.
    """

    def __init__(
        self,
        compose_file: str | os.PathLike,
        root: str | os.PathLike,
        *,
        environ: Mapping[str, str] | None = None,
        use_cli: bool | None = None,
        services: Iterable[str] | None = None,
        network: str = "auto",
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.compose_file = Path(compose_file).resolve()
        self.root = Path(root)
        self.config = load_compose(self.compose_file, environ, use_cli)
        all_services: dict = self.config.get("services") or {}
        names = list(all_services) if services is None else list(services)
        unknown = set(names) - set(all_services)
        if unknown:
            raise ComposeError(f"no such services in {self.compose_file}: {sorted(unknown)}")
        self.network = choose_network(network)
        self.netns: NetnsNetwork | None = None
        if self.network == "netns":
            self.netns = NetnsNetwork(list(all_services), rng)
            self.addresses = dict(self.netns.addresses)
        else:
            # A random 127.A.B.0/24: two runs at the same time almost never meet, and none of
            # it is 127.0.0.1, where developers run `kvraft up`.
            a, b = rng.randint(1, 254), rng.randint(0, 255)
            self.addresses = {n: f"127.{a}.{b}.{i + 1}" for i, n in enumerate(all_services)}
        self.images: dict[str, Image] = {}
        self._paths: dict[str, dict[str, str]] = {}
        self.services: dict[str, LocalService] = {
            name: self._plan(name, all_services[name]) for name in names
        }
        self._network_up = False

    # -- planning ---------------------------------------------------------------------------

    def _image(self, name: str, svc: Mapping) -> Image:
        build = svc.get("build")
        if not build:
            raise ComposeError(
                f"service {name} is not built from a Dockerfile here "
                f"(image {svc.get('image')!r}); it cannot run as a local process"
            )
        dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
        key = str(dockerfile)
        if key not in self.images:
            self.images[key] = parse_dockerfile(dockerfile)
        return self.images[key]

    def rewrite(self, name: str, value: str) -> str:
        """``value`` as service ``name`` must see it locally (hosts and volume paths mapped)."""
        own = self.addresses[name]

        def host(m: re.Match) -> str:
            h = m.group("host")
            if h in self.addresses:
                return f"{self.addresses[h]}:{m.group('port')}"
            if self.network == "loopback" and h in LOCAL_HOSTS:
                return f"{own}:{m.group('port')}"
            return m.group(0)

        value = _HOSTPORT.sub(host, value)
        paths = self._paths.get(name, {})
        for target in sorted(paths, key=len, reverse=True):
            stem = target.rstrip("/")
            if value == target or value.startswith(stem + "/"):
                return paths[target] + value[len(stem) :]
        return value

    def local_argv(self, name: str, argv: list[str]) -> list[str]:
        """A container argv as run here: hosts mapped, ``kvraft`` -> ``python -m kvraft``,
        ``python`` -> this interpreter, inside the service's namespace when there is one."""
        argv = [self.rewrite(name, a) for a in argv]
        head = os.path.basename(argv[0]) if argv else ""
        if head == "kvraft":
            argv = [sys.executable, "-m", "kvraft", *argv[1:]]
        elif head in ("python", "python3"):
            argv = [sys.executable, *argv[1:]]
        return [*(self.netns.prefix(name) if self.netns else []), *argv]

    def _plan(self, name: str, svc: Mapping) -> LocalService:
        image = self._image(name, svc)
        base = self.root / name
        targets = list(dict.fromkeys([*image.volumes, *_volume_targets(svc)]))
        self._paths[name] = {t: str(base / ("vol" + t.replace("/", "_"))) for t in targets}
        raw_env = {
            **image.env,
            **{k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()},
        }
        entrypoint = svc.get("entrypoint")
        if entrypoint is None:
            entrypoint = image.entrypoint
        elif isinstance(entrypoint, str):
            entrypoint = shlex.split(entrypoint)
        command = svc.get("command")
        if command is None:
            command = image.cmd if svc.get("entrypoint") is None else []
        elif isinstance(command, str):
            command = shlex.split(command)
        if not [*entrypoint, *command]:
            raise ComposeError(f"service {name}: no entrypoint or command")
        hc = svc.get("healthcheck") or {}
        if hc.get("disable"):
            test, timeout = None, 30.0
        elif "test" in hc:
            test, timeout = hc["test"], parse_duration(hc.get("timeout"), 30.0)
        elif image.healthcheck is not None:
            test, timeout = image.healthcheck.test, image.healthcheck.timeout
        else:
            test, timeout = None, 30.0
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVRAFT_")}
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update({k: self.rewrite(name, v) for k, v in raw_env.items()})
        workdir = self.rewrite(name, image.workdir)
        return LocalService(
            name=name,
            address=self.addresses[name],
            argv=self.local_argv(name, [*entrypoint, *command]),
            env=env,
            cwd=workdir if workdir.startswith(str(self.root)) else str(base),
            paths=self._paths[name],
            target_ports=target_ports(svc),
            healthcheck=test,
            healthcheck_timeout=timeout,
            stop_grace=parse_duration(svc.get("stop_grace_period"), 10.0),
            log_path=str(self.root / f"{name}.log"),
        )

    def _check_bindable(self) -> None:
        # loopback only: a port already bound on 0.0.0.0 by someone else clashes with ours
        for svc in self.services.values():
            ports = {
                int(m.group("port"))
                for v in [*svc.env.values(), *svc.argv]
                for m in _HOSTPORT.finditer(v)
                if m.group("host") == svc.address
            }
            for port in sorted(ports):
                with socket.socket() as s:
                    try:
                        s.bind((svc.address, port))
                    except OSError as exc:
                        raise ComposeError(
                            f"service {svc.name}: cannot bind {svc.address}:{port} ({exc}); is "
                            f"something listening on 0.0.0.0:{port}?"
                        ) from None

    # -- processes --------------------------------------------------------------------------

    def start(self, names: Iterable[str] | None = None) -> None:
        """Start the services (default all) that are not running; does not wait for them."""
        if not self._network_up:
            if self.netns is not None:
                self.netns.up()
            else:
                self._check_bindable()
            self._network_up = True
            atexit.register(self.close)  # a test run that ends early still stops everything
        for name in self.services if names is None else names:
            svc = self.services[name]
            if svc.running:
                continue
            for path in (*svc.paths.values(), svc.cwd):
                os.makedirs(path, exist_ok=True)
            with open(svc.log_path, "ab") as log:
                svc.proc = subprocess.Popen(
                    svc.argv,
                    env=svc.env,
                    cwd=svc.cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

    def _signal(self, name: str, sig: int) -> bool:
        svc = self.services[name]
        if svc.proc is None or _group_gone(svc.proc.pid):
            return False
        try:
            os.killpg(svc.proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, names: Iterable[str] | None = None, grace: float | None = None) -> None:
        """SIGTERM each service's process group, SIGKILL after its grace period (the compose
        ``stop_grace_period``, or ``grace``); returns when every process of them is gone."""
        chosen = list(self.services if names is None else names)
        for name in chosen:
            self._signal(name, signal.SIGTERM)
            self._signal(name, signal.SIGCONT)  # a paused process handles SIGTERM once resumed
        for name in chosen:
            svc = self.services[name]
            if svc.proc is None:
                continue
            deadline = time.monotonic() + (svc.stop_grace if grace is None else grace)
            while time.monotonic() < deadline:
                svc.proc.poll()  # reap the leader, or its zombie keeps the group alive
                if _group_gone(svc.proc.pid):
                    break
                time.sleep(0.05)
            self._finish(name)

    def kill(self, name: str) -> None:
        """``kill -9`` the service's whole process group and wait until it is gone."""
        self._signal(name, signal.SIGKILL)
        self._finish(name)

    def _finish(self, name: str) -> None:
        proc = self.services[name].proc
        if proc is None:
            return
        self._signal(name, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"{name} (pid {proc.pid}) did not exit after SIGKILL") from exc
        deadline = time.monotonic() + 10
        while not _group_gone(proc.pid):
            if time.monotonic() > deadline:
                raise ComposeError(f"processes of {name} (group {proc.pid}) outlived SIGKILL")
            time.sleep(0.05)

    def pause(self, name: str) -> None:
        self._signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)

    def close(self) -> None:
        """Stop everything this object started (SIGKILL after 10 s at most), remove the network."""
        try:
            self.stop(grace=min([10.0, *(s.stop_grace for s in self.services.values())]))
        finally:
            if self.netns is not None:
                self.netns.down()
            self._network_up = False
            atexit.unregister(self.close)

    def __enter__(self) -> LocalCompose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks -----------------------------------------------------------------------------

    def check_running(self, names: Iterable[str] | None = None) -> None:
        """ComposeError, with the log's end, if a started service has exited."""
        for name in self.services if names is None else names:
            svc = self.services[name]
            if svc.proc is not None and svc.proc.poll() is not None:
                raise ComposeError(
                    f"service {name} exited with code {svc.proc.returncode}; "
                    f"log {svc.log_path}:\n{svc.log_tail()}"
                )

    def run_check(
        self, name: str, test: str | list[str] | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """Run a health check ``test`` in Docker form (default: the service's own) the way
        Docker would: in the service's network and environment. Exit code 124 on timeout."""
        svc = self.services[name]
        argv = check_argv(svc.healthcheck if test is None else test)
        if argv is None:
            raise ComposeError(f"service {name} has no health check")
        try:
            return subprocess.run(
                self.local_argv(name, argv),
                env=svc.env,
                cwd=svc.cwd,
                capture_output=True,
                text=True,
                timeout=svc.healthcheck_timeout if timeout is None else timeout,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out: {exc}")

    def wait_healthy(self, names: Iterable[str] | None = None, timeout: float = 60) -> None:
        """Poll each service's health check until it passes; ComposeError at the deadline or
        when a service exits."""
        deadline = time.monotonic() + timeout
        for name in list(self.services if names is None else names):
            while True:
                self.check_running([name])
                result = self.run_check(name)
                if result.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    svc = self.services[name]
                    raise ComposeError(
                        f"service {name} not healthy after {timeout}s: "
                        f"{(result.stderr or result.stdout).strip()[-500:]}\n"
                        f"log {svc.log_path}:\n{svc.log_tail()}"
                    )
                time.sleep(0.2)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
