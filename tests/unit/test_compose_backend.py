"""The compose back-end of the nemesis (chaos/nemesis.py): the exact commands it issues.

Against real containers it runs in tests/integration/test_chaos_compose.py; here a fake
``docker``, ``docker-compose`` and ``nsenter`` first on PATH append their argv (and working
directory, and the content of any override file) as JSON lines to a log and print what
``ps -q`` and ``inspect`` would, so every command, its order and the failure paths are checked
in milliseconds. A whole nemesis plan runs against it, with three tiny HTTP servers standing in
for the nodes' ``/ready`` and ``/cluster``. The back-end's defaults are checked against
docker-compose.yml.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from chaos import compose as compose_project
from chaos import run as chaos_run
from chaos.history import History
from chaos.history import read as read_history
from chaos.nemesis import KINDS, ComposeBackend, Nemesis, Unsupported, plan

ROOT = Path(__file__).resolve().parents[2]

FAKE = r"""#!{python}
import json, os, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
entry = {{"argv": [name, *args], "cwd": os.getcwd()}}
# the contents of override files passed with -f (they are removed right after the command)
entry["overrides"] = [open(a).read() for a in args if os.path.basename(a).startswith("compose-")]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as f:
    f.write(json.dumps(entry) + "\n")
line = " ".join([name, *args])
if os.environ.get("FAKE_DOCKER_FAIL") and os.environ["FAKE_DOCKER_FAIL"] in line:
    sys.stderr.write("Error response from daemon: simulated failure\n")
    sys.exit(1)
if name == "nsenter":
    rule = args[args.index("iptables") + 2:]
    if rule[:1] == ["-C"]:  # no jump to the chain yet
        sys.stderr.write("iptables: Bad rule (does a matching rule exist in that chain?).\n")
        sys.exit(1)
    sys.exit(0)
if name == "docker" and args[:2] == ["compose", "version"]:
    if os.environ.get("FAKE_DOCKER_NO_PLUGIN"):
        sys.stderr.write("docker: unknown command: docker compose\n")
        sys.exit(1)
    print("Docker Compose version v2.29.0")
    sys.exit(0)
if name == "docker" and args[:1] == ["compose"]:
    args = args[1:]
while args[:1] in (["-p"], ["-f"]):
    args = args[2:]
if args[:1] == ["ps"]:
    print("cid-" + args[-1])
elif args[:1] == ["inspect"]:
    service = args[-1][len("cid-"):]
    n = int(service[1:])
    nets = {{"kvraft_default": {{"Aliases": ["kvraft-" + service + "-1", service],
                                  "IPAddress": "172.18.0.%d" % (10 + n)}}}}
    fmt = args[args.index("-f") + 1] if "-f" in args else None
    if fmt == "{{{{.State.Pid}}}}":
        print(1000 + n)
    elif fmt and "IPAddress" in fmt:
        print("172.18.0.%d " % (10 + n))
    elif fmt:
        print(json.dumps(nets))
    else:
        print(json.dumps([{{"State": {{"Pid": 1000 + n, "Running": True}},
                            "NetworkSettings": {{"Networks": nets}}}}]))
"""


@pytest.fixture
def docker(tmp_path, monkeypatch):
    """A fake docker and docker-compose first on PATH; returns a function giving the log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "docker-compose", "nsenter"):
        exe = bin_dir / name
        exe.write_text(FAKE.format(python=sys.executable))
        exe.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.delenv("FAKE_DOCKER_FAIL", raising=False)
    monkeypatch.delenv("FAKE_DOCKER_NO_PLUGIN", raising=False)

    def calls(with_cwd: bool = False, overrides: bool = False, lookups: bool = False) -> list:
        if not log.exists():
            return []
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        if overrides:
            return [o for r in rows for o in r["overrides"]]
        if not lookups:  # the id and address lookups the back-end caches (see below)
            rows = [r for r in rows if not _lookup(r["argv"])]
        return [(r["argv"], r["cwd"]) if with_cwd else r["argv"] for r in rows]

    def clear() -> None:
        if log.exists():
            log.unlink()

    calls.clear = clear
    return calls


def _lookup(argv: list[str]) -> bool:
    """A container id or address lookup (``ps -a -q``, ``inspect`` of the address): the
    back-end does these before a kill and caches them; the tests below compare the actions."""
    return ("ps" in argv and "-a" in argv) or (
        "inspect" in argv and any("IPAddress" in a for a in argv)
    )


def compose(*args: str) -> list[str]:
    return ["docker", "compose", *args]


def up_with(service: str, root) -> list[str]:
    """``up`` of one service with an override file (its name is random: matched by prefix)."""
    return compose(
        "-f",
        str(root / "docker-compose.yml"),
        "-f",
        f"<override {service}>",
        "up",
        "-d",
        "--no-deps",
        "--no-build",
        service,
    )


def normalized(calls: list[list[str]]) -> list[list[str]]:
    """Calls with override file names replaced by ``<override SERVICE>``."""
    out = []
    for argv in calls:
        out.append(
            [
                f"<override {os.path.basename(a).split('-')[1]}>"
                if os.path.basename(a).startswith("compose-")
                else a
                for a in argv
            ]
        )
    return out


def disconnect(service: str) -> list[list[str]]:
    return [
        compose("ps", "-q", service),
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", f"cid-{service}"],
        ["docker", "network", "disconnect", "kvraft_default", f"cid-{service}"],
    ]


def connect(service: str) -> list[str]:
    return [
        "docker",
        "network",
        "connect",
        "--alias",
        f"kvraft-{service}-1",
        "--alias",
        service,
        "kvraft_default",
        f"cid-{service}",
    ]


# -- single commands -----------------------------------------------------------------------------


def test_each_fault_issues_the_expected_commands(docker, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "docker-compose.yml").write_text("services: {}\n")
    b = ComposeBackend(["n1", "n2", "n3"], ["u1", "u2", "u3"], str(project), network="disconnect")
    assert b.compose == ["docker", "compose"]  # the fake docker has the compose plugin
    docker.clear()
    b.kill(1)
    assert not b.running(1)
    b.start(1)
    assert b.running(1)
    b.pause(0)
    b.resume(0)
    b.resume(2)  # never paused: nothing to undo (unpausing a running container is an error)
    b.partition([[0, 1], [2]])
    b.heal_network()
    b.heal_network()  # nothing left to reconnect
    assert docker() == [
        compose("kill", "-s", "SIGKILL", "n2"),
        compose("start", "n2"),
        compose("pause", "n1"),
        compose("unpause", "n1"),
        *disconnect("n3"),
        connect("n3"),
    ]
    # compose commands run in the project directory (where docker-compose.yml is)
    assert all(cwd == str(project) for argv, cwd in docker(with_cwd=True) if argv[1] == "compose")
    with pytest.raises(Unsupported):
        b.set_loss(0, 0.2)
    with pytest.raises(Unsupported):
        b.set_delay(0, 100)
    b.clear_loss(0)
    b.clear_delay(0)
    assert not {"loss", "delay"} & set(b.supported)
    # skew: the service is recreated with the setting in an override file of its own
    docker.clear()
    b.kill(0)
    b.start(0, {"KVRAFT_CLOCK_OFFSET_MS": "5000"})
    assert b.running(0)
    calls = [c for c in normalized(docker()) if c[:3] != compose("ps")[:3] and c[1] != "inspect"]
    assert calls == [compose("kill", "-s", "SIGKILL", "n1"), up_with("n1", project)]
    assert docker(overrides=True) == [
        'services:\n  n1:\n    environment:\n      KVRAFT_CLOCK_OFFSET_MS: "5000"\n'
    ]
    assert not list(project.glob("compose-*")) and "skew" in b.supported


def test_a_minority_of_two_is_cut_and_healed_node_by_node(docker):
    b = ComposeBackend(["n1", "n2", "n3", "n4", "n5"], ["u"] * 5, network="disconnect")
    docker.clear()
    b.partition([[0, 1, 2], [3, 4]])
    b.heal_network()
    assert docker() == [*disconnect("n4"), *disconnect("n5"), connect("n4"), connect("n5")]


def test_a_failed_reconnect_is_reported_and_retried(docker, monkeypatch):
    b = ComposeBackend(["n1", "n2", "n3"], ["u"] * 3, network="disconnect")
    b.partition([[0, 1], [2]])
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "network connect")
    with pytest.raises(RuntimeError, match="simulated failure"):
        b.heal_network()
    monkeypatch.delenv("FAKE_DOCKER_FAIL")
    docker.clear()
    b.heal_network()  # still recorded: tried again
    assert docker() == [connect("n3")]


def test_a_failed_disconnect_half_way_is_still_healed(docker, monkeypatch):
    b = ComposeBackend(["n1", "n2", "n3", "n4", "n5"], ["u"] * 5, network="disconnect")
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "disconnect kvraft_default cid-n5")
    with pytest.raises(RuntimeError, match="simulated failure"):
        b.partition([[0, 1, 2], [3, 4]])
    monkeypatch.delenv("FAKE_DOCKER_FAIL")
    docker.clear()
    b.heal_network()
    assert docker() == [connect("n4")]  # n4 was cut before the failure; n5 never was


def test_docker_compose_v1_when_the_docker_cli_has_no_compose_plugin(docker, monkeypatch):
    # like this machine: a docker CLI whose `docker compose` is an unknown command
    monkeypatch.setenv("FAKE_DOCKER_NO_PLUGIN", "1")
    b = ComposeBackend(["n1", "n2", "n3"], ["u"] * 3, network="disconnect")
    assert b.compose == ["docker-compose"]
    docker.clear()
    b.kill(2)
    b.start(2)
    assert docker() == [
        ["docker-compose", "kill", "-s", "SIGKILL", "n3"],
        ["docker-compose", "start", "n3"],
    ]


def test_a_failing_command_raises_with_its_error(docker, monkeypatch):
    b = ComposeBackend(["n1", "n2", "n3"], ["u"] * 3, network="disconnect")
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "pause")
    with pytest.raises(RuntimeError, match="compose pause n1: exit 1: Error response"):
        b.pause(0)
    b.resume(0)  # the pause failed: nothing to unpause


# -- a nemesis plan against it -------------------------------------------------------------------


class _Node(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        body = json.dumps({"leader": "n1"}).encode() if self.path == "/cluster" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_nodes():
    """Three HTTP servers answering /ready and /cluster (leader n1), for the nemesis' checks."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Node) for _ in range(3)]
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in servers
    ]
    for t in threads:
        t.start()
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for s, t in zip(servers, threads, strict=True):
        s.shutdown()
        t.join(5)
        s.server_close()


@pytest.mark.timeout(60)
def test_a_nemesis_plan_runs_against_compose_with_exact_commands(docker, fake_nodes, tmp_path):
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    b = ComposeBackend(["n1", "n2", "n3"], fake_nodes, str(tmp_path), network="disconnect")
    steps = plan(
        [k for k in KINDS if k != "skew"],
        random.Random(4),
        hold=(0.05, 0.1),
        gap=(0.0, 0.01),
        supported=b.supported,
        shuffle=False,
    )
    assert [s.kind for s in steps] == [
        "kill",
        "kill-leader",
        "pause",
        "partition-one",
        "partition-leader",
        "partition-majority",
    ]
    hist = History(str(tmp_path / "history.jsonl"))
    docker.clear()
    nem = Nemesis(b, hist, steps, random.Random(5), ready_timeout=5)
    try:
        nem.run()
    finally:
        nem.session.close()
        hist.close()
    assert nem.done == 6 and nem.skipped == []
    faults = [r for r in read_history(hist.path) if r["type"] == "fault"]
    assert [f["kind"] for f in faults] == [s.kind for s in steps]
    assert all(f["leader"] == "n1" for f in faults)
    expected = []
    for f in faults:
        (node,) = f["nodes"]  # the one node hit (on 3 nodes a minority is one follower)
        if f["kind"] in ("kill", "kill-leader"):
            expected += [compose("kill", "-s", "SIGKILL", node), compose("start", node)]
        elif f["kind"] == "pause":
            expected += [compose("pause", node), compose("unpause", node)]
        else:
            expected += [*disconnect(node), connect(node)]
    assert docker() == expected
    kinds = {f["kind"]: f for f in faults}
    assert kinds["kill-leader"]["nodes"] == ["n1"] and kinds["kill"]["nodes"] != ["n1"]
    assert kinds["partition-leader"]["groups"] == [["n2", "n3"], ["n1"]]
    assert "n1" not in kinds["partition-majority"]["groups"][1]


# -- the defaults match docker-compose.yml -------------------------------------------------------


def test_compose_defaults_match_docker_compose_yml():
    with open(ROOT / "docker-compose.yml") as f:
        spec = yaml.safe_load(f)
    nodes = {
        name: s
        for name, s in spec["services"].items()
        if "KVRAFT_ID" in (s.get("environment") or {})
    }
    assert sorted(nodes) == sorted(chaos_run.COMPOSE_SERVICES)
    for service, url in zip(chaos_run.COMPOSE_SERVICES, chaos_run.COMPOSE_URLS, strict=True):
        env = nodes[service]["environment"]
        # the leader a node names is its KVRAFT_ID: the back-end maps it to a service by name
        assert env["KVRAFT_ID"] == service
        http_port = env["KVRAFT_HTTP"].rpartition(":")[2]
        published = {}
        for entry in nodes[service]["ports"]:
            m = re.fullmatch(r"(\$\{[^}]+\}):\$\{(\w+):-(\d+)\}:(\d+)", entry)
            assert m, entry
            published[m[4]] = (m[1], m[2], m[3])
        publish, var, host_port = published[http_port]
        assert publish == "${KVRAFT_PUBLISH:-127.0.0.1}"  # published on loopback by default
        assert var == compose_project.PORT_VARS[service]  # a test project moves it with this
        assert url == f"http://127.0.0.1:{host_port}"


def test_run_builds_the_compose_back_end_from_its_options(monkeypatch, tmp_path):
    seen = {}

    def fake_run(sc, out, seed, use_netns=True, compose=None):
        seen.update(compose=compose, scenario=sc.name)
        return {}, 0

    monkeypatch.setattr(chaos_run, "run", fake_run)
    monkeypatch.setattr(chaos_run.signal, "signal", lambda *a: None)
    monkeypatch.setattr(chaos_run.faulthandler, "register", lambda *a, **k: None)
    code = chaos_run.main(
        [
            "smoke",
            "--backend",
            "compose",
            "--compose-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--seed",
            "1",
        ]
    )
    assert code == 0 and seen["scenario"] == "smoke"
    assert seen["compose"] == {
        "attach": False,
        "dir": str(tmp_path),
        "services": list(chaos_run.COMPOSE_SERVICES),
        "urls": list(chaos_run.COMPOSE_URLS),
    }
    chaos_run.main(
        [
            "smoke",
            "--backend",
            "compose",
            "--compose-attach",
            "--out",
            str(tmp_path / "out"),
            "--seed",
            "1",
        ]
    )
    assert seen["compose"]["attach"] is True and seen["compose"]["dir"] == "."


# -- iptables in the containers' network namespaces ------------------------------------------------


def nsenter(service: str, *rule: str) -> list[str]:
    return ["nsenter", "-t", str(1000 + int(service[1:])), "-n", "iptables", "-w", *rule]


def chain(service: str, name: str) -> list[list[str]]:
    """Creating ``name`` and its jump from INPUT (the fake has no jump yet: -C fails)."""
    return [
        nsenter(service, "-N", name),
        nsenter(service, "-C", "INPUT", "-j", name),
        nsenter(service, "-I", "INPUT", "-j", name),
    ]


def test_iptables_partition_drops_the_other_sides_addresses_on_every_node(docker):
    b = ComposeBackend(["n1", "n2", "n3"], ["u"] * 3, network="iptables")
    assert {"loss", "skew"} <= set(b.supported) and "delay" not in b.supported
    docker.clear()  # the `compose version` probe
    b.partition([[0, 1], [2]])
    rules = [c for c in docker() if c[0] == "nsenter"]
    drop = ("-j", "DROP")
    assert rules == [
        *chain("n1", "KVRAFT_PART"),
        nsenter("n1", "-A", "KVRAFT_PART", "-s", "172.18.0.13", *drop),
        *chain("n2", "KVRAFT_PART"),
        nsenter("n2", "-A", "KVRAFT_PART", "-s", "172.18.0.13", *drop),
        *chain("n3", "KVRAFT_PART"),
        nsenter("n3", "-A", "KVRAFT_PART", "-s", "172.18.0.11", *drop),
        nsenter("n3", "-A", "KVRAFT_PART", "-s", "172.18.0.12", *drop),
    ]
    # the container ids are asked of compose once (a compose command costs about a second),
    # PIDs and addresses of docker inspect
    assert [c for c in docker(lookups=True) if c[:2] == ["docker", "compose"]] == [
        compose("ps", "-a", "-q", n) for n in ("n1", "n2", "n3")
    ]
    docker.clear()
    b.heal_network()
    assert [c for c in docker() if c[0] == "nsenter"] == [
        nsenter(n, "-F", "KVRAFT_PART") for n in ("n1", "n2", "n3")
    ]
    assert not [c for c in docker(lookups=True) if c[:2] == ["docker", "compose"]]
    docker.clear()
    b.heal_network()  # nothing left to flush
    assert [c for c in docker() if c[0] == "nsenter"] == []


def test_iptables_loss_and_a_restarted_node_needs_no_flush(docker):
    b = ComposeBackend(["n1", "n2", "n3"], ["u"] * 3, network="iptables")
    b.set_loss(1, 0.2)
    assert [c for c in docker() if c[0] == "nsenter"][-1] == nsenter(
        "n2",
        "-A",
        "KVRAFT_LOSS",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.2",
        "-j",
        "DROP",
    )
    docker.clear()
    b.clear_loss(1)
    assert [c for c in docker() if c[0] == "nsenter"] == [nsenter("n2", "-F", "KVRAFT_LOSS")]
    b.partition([[0, 1], [2]])
    b.kill(2)  # its namespace and rules go with it
    b.start(2)
    docker.clear()
    b.heal_network()
    assert [c for c in docker() if c[0] == "nsenter"] == [
        nsenter(n, "-F", "KVRAFT_PART") for n in ("n1", "n2")
    ]


def test_iptables_failure_is_reported_and_retried_on_the_next_heal(docker, monkeypatch):
    b = ComposeBackend(["n1", "n2", "n3"], ["u"] * 3, network="iptables")
    b.partition([[0, 1], [2]])
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "-t 1002 -n iptables -w -F")
    with pytest.raises(RuntimeError, match="simulated failure"):
        b.heal_network()
    monkeypatch.delenv("FAKE_DOCKER_FAIL")
    docker.clear()
    b.heal_network()
    assert [c for c in docker() if c[0] == "nsenter"] == [nsenter("n2", "-F", "KVRAFT_PART")]
