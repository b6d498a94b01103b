"""The Docker files must not rot, also where there is no Docker engine to run them.

docker-compose.yml is validated by docker-compose itself (Debian's package parses and normalizes a
file without an engine), then every compose service's own command, environment and health check
runs as a local process (tests/harness/compose_local.py): a write on n1 must be readable on n3.
(With an engine, tests/integration/test_docker_compose.py runs the same file in real containers.)
The Dockerfile is parsed for what a user relies on (non-root user, the README's install method, a
HEALTHCHECK that works against a running node) and its .dockerignore for what reaches the build.
"""

from __future__ import annotations

import ftplib
import io
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import requests

from kvraft.ftp import FtpClient
from tests.harness.cluster import wait_for
from tests.harness.compose_local import (
    LocalCompose,
    check_argv,
    compose_command,
    compose_config,
    parse_compose_file,
    parse_dockerfile,
    target_ports,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
INSTALL_DEPS = ROOT / "scripts" / "install-test-deps.sh"
NODES = ("n1", "n2", "n3")
SERVICES = {*NODES, "ftp"}


# what a user must set: compose has no default secret (the file refuses to run without them)
SECRETS = {"KVRAFT_SECRET": "compose-test-secret-0123", "KVRAFT_FTP_PASSWORD": "compose-test-ftp"}


def bare_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set nothing: no KVRAFT_* variable (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVRAFT_")}
    return {**env, **extra}


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set only the two required secrets (plus ``extra``)."""
    return bare_env(**{**SECRETS, **extra})


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = compose_command()
    assert cmd is not None
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=user_env() if env is None else env,
    )


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    """docker-compose, installed by scripts/install-test-deps.sh when missing; never a skip."""
    if compose_command() is None:
        result = subprocess.run(
            ["sh", str(INSTALL_DEPS), "docker-compose"], capture_output=True, text=True, timeout=900
        )
        if compose_command() is None:
            pytest.fail(
                "docker-compose is needed to validate docker-compose.yml and "
                f"{INSTALL_DEPS.relative_to(ROOT)} could not install it "
                f"(exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
    return compose_command()


@pytest.fixture(scope="module")
def config(compose_cli) -> dict:
    """docker-compose.yml as docker-compose normalizes it for a user who set nothing."""
    return compose_config(COMPOSE, user_env())


# -- (a) the real parser --------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose(compose_cli):
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    services = compose("config", "--services")
    assert services.returncode == 0, services.stderr
    assert sorted(services.stdout.split()) == sorted(SERVICES)
    volumes = compose("config", "--volumes")
    assert sorted(volumes.stdout.split()) == ["ftp-data", "n1-data", "n2-data", "n3-data"]


@pytest.mark.parametrize("missing", ["KVRAFT_SECRET", "KVRAFT_FTP_PASSWORD"])
def test_compose_refuses_to_run_without_a_secret(compose_cli, missing):
    """No public default: every compose command fails, naming the variable, until it is set."""
    env = {k: v for k, v in user_env().items() if k != missing}
    for args in (("config", "--quiet"), ("-p", "kvraft-refusal-test", "up", "--no-start")):
        result = compose(*args, env=env)
        assert result.returncode != 0
        assert f"{missing} is not set - compose has no default" in result.stderr, result.stderr
    empty = compose("config", "--quiet", env={**env, missing: ""})  # empty counts as unset
    assert empty.returncode != 0 and missing in empty.stderr


def test_compose_shape_nodes_volumes_health_ports(config):
    services = config["services"]
    raft = {n: services[n]["environment"]["KVRAFT_RAFT"] for n in NODES}
    secrets = {services[n]["environment"]["KVRAFT_SECRET"] for n in NODES}
    assert secrets == {SECRETS["KVRAFT_SECRET"]}, "one cluster secret, the user's"
    assert services["ftp"]["environment"]["KVRAFT_FTP_PASSWORD"] == SECRETS["KVRAFT_FTP_PASSWORD"]
    for i, name in enumerate(NODES):
        svc, env = services[name], services[name]["environment"]
        assert Path(svc["build"]["context"]) == ROOT
        assert svc.get("command") is None, "nodes run the image's CMD (serve)"
        assert env["KVRAFT_ID"] == name
        assert raft[name] == f"{name}:9001", "pysyncobj binds its own address: the service name"
        assert sorted(env["KVRAFT_PEERS"].split(",")) == sorted(raft[n] for n in NODES if n != name)
        assert env["KVRAFT_ADVERTISE"] == f"{name}:8001"
        assert env["KVRAFT_FTP"] == "ftp:2121"
        assert env["KVRAFT_FTP_PASSWORD"] == services["ftp"]["environment"]["KVRAFT_FTP_PASSWORD"]
        assert svc["volumes"] == [f"{name}-data:/data:rw"], "a named volume of its own on /data"
        assert check_argv(svc["healthcheck"]["test"]), "a health check"
        # published on the host's loopback only while the dev-only default secret is in use
        assert svc["ports"] == [f"127.0.0.1:{8001 + i}:8001/tcp"]
    ftp = services["ftp"]
    assert ftp["command"] == ["ftp"]
    assert ftp["volumes"] == ["ftp-data:/data:rw"]
    assert check_argv(ftp["healthcheck"]["test"])
    low, high = map(int, ftp["environment"]["KVRAFT_FTP_PASSIVE_PORTS"].split("-"))
    assert target_ports(ftp) == [2121, *range(low, high + 1)], "control and passive ports"
    assert f"{low}-{high}" in parse_dockerfile(DOCKERFILE).exposed


def test_compose_settings_come_from_the_environment(compose_cli):
    env = user_env(KVRAFT_SECRET="s3cret-from-the-shell", KVRAFT_PUBLISH="0.0.0.0")
    services = compose_config(COMPOSE, env)["services"]
    for name in NODES:
        assert services[name]["environment"]["KVRAFT_SECRET"] == "s3cret-from-the-shell"
    assert services["n2"]["ports"] == ["0.0.0.0:8002:8001/tcp"]
    # the published ports are settings too (tests and chaos runs pick free ones)
    moved = compose_config(
        COMPOSE,
        user_env(KVRAFT_N2_PORT="18002", KVRAFT_FTP_PORT="12121", KVRAFT_FTP_PASSIVE="31000-31009"),
    )["services"]
    assert moved["n2"]["ports"] == ["127.0.0.1:18002:8001/tcp"]
    assert moved["ftp"]["environment"]["KVRAFT_FTP_PASSIVE_PORTS"] == "31000-31009"
    assert target_ports(moved["ftp"]) == [2121, *range(31000, 31010)]
    assert moved["ftp"]["ports"][0] == "127.0.0.1:12121:2121/tcp"


def test_fallback_parser_reads_the_file_like_docker_compose(config):
    """compose_local's own reader (for machines without docker-compose) must not drift."""
    ours = parse_compose_file(COMPOSE, user_env())["services"]
    theirs = config["services"]
    assert sorted(ours) == sorted(theirs)
    for name, svc in theirs.items():
        mine = ours[name]
        assert {k: str(v) for k, v in svc["environment"].items()} == mine["environment"], name
        assert svc.get("command") == mine.get("command"), name
        assert check_argv(svc["healthcheck"]["test"]) == check_argv(mine["healthcheck"]["test"])
        assert target_ports(svc) == target_ports(mine), name
        assert svc["build"]["context"] == mine["build"]["context"], name


def test_install_script_is_quiet_and_idempotent(compose_cli):
    assert subprocess.run(["sh", "-n", str(INSTALL_DEPS)]).returncode == 0
    again = subprocess.run(
        ["sh", str(INSTALL_DEPS), "docker-compose"], capture_output=True, text=True, timeout=60
    )
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


# -- (b) the compose services as local processes ---------------------------------------------------


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def stack(compose_cli, tmp_path_factory, http):
    """Every compose service running locally, healthy, and every node ready."""
    with LocalCompose(COMPOSE, tmp_path_factory.mktemp("compose"), environ=user_env()) as lc:
        lc.start()
        lc.wait_healthy(timeout=30)
        for name in NODES:
            svc = lc.services[name]

            def ready(svc=svc) -> bool:
                lc.check_running([svc.name])
                return http.get(svc.url() + "/ready", timeout=1).ok

            hint = (
                ""
                if lc.network == "netns"
                else (
                    "; loopback mode needs every server to bind the address it is given, and "
                    "pysyncobj binds 0.0.0.0:<raft port> unless kvraft passes it bindAddress"
                )
            )
            wait_for(ready, 30, f"{name} ready ({lc.network} network{hint}; log {svc.log_path})")
        yield lc


@pytest.mark.parametrize("network", ["loopback", "netns"])
def test_local_plan_maps_names_addresses_and_volumes(compose_cli, tmp_path, network):
    """How compose names, bind-all addresses and volume paths become local ones (no process)."""
    lc = LocalCompose(COMPOSE, tmp_path, environ=user_env(), network=network)
    addr = lc.addresses
    assert len(set(addr.values())) == len(SERVICES) == len(lc.services)
    n1, ftp = lc.services["n1"], lc.services["ftp"]
    assert n1.argv[-3:] == ["-m", "kvraft", "serve"] and ftp.argv[-3:] == ["-m", "kvraft", "ftp"]
    assert n1.env["KVRAFT_RAFT"] == f"{addr['n1']}:9001"
    assert n1.env["KVRAFT_ADVERTISE"] == f"{addr['n1']}:8001"
    assert n1.env["KVRAFT_PEERS"] == f"{addr['n2']}:9001,{addr['n3']}:9001"
    assert n1.env["KVRAFT_FTP"] == f"{addr['ftp']}:2121"
    assert n1.env["KVRAFT_DATA_DIR"].startswith(str(tmp_path / "n1"))
    assert ftp.env["KVRAFT_FTP_ROOT"].startswith(str(tmp_path / "ftp"))
    assert n1.url() == f"http://{addr['n1']}:8001"
    if network == "loopback":  # 0.0.0.0 would clash between services: each binds its own
        assert all(a.startswith("127.") for a in addr.values())
        assert n1.env["KVRAFT_HTTP"] == f"{addr['n1']}:8001"
        assert ftp.env["KVRAFT_FTP_LISTEN"] == f"{addr['ftp']}:2121"
    else:  # a namespace per service, as in a container: bind-all stays bind-all
        assert n1.argv[:3] == ["ip", "netns", "exec"]
        assert n1.env["KVRAFT_HTTP"] == "0.0.0.0:8001"


def test_local_stack_put_on_n1_get_on_n3(stack, http):
    n1, n3 = stack.services["n1"], stack.services["n3"]
    put = http.put(n1.url() + "/kv/compose-key", data=b"written on n1", timeout=10)
    assert put.status_code in (200, 201), put.text
    got = http.get(n3.url() + "/kv/compose-key", timeout=10)
    assert got.status_code == 200, got.text
    assert got.content == b"written on n1"


def test_local_stack_cluster_view_uses_compose_names(stack, http):
    view = http.get(stack.services["n2"].url() + "/cluster", timeout=5).json()
    assert sorted(n["id"] for n in view["nodes"]) == sorted(NODES)
    assert view["leader"] in NODES
    assert view["replication_factor"] == 2


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_healthcheck_command_passes(stack, name):
    result = stack.run_check(name)
    assert result.returncode == 0, f"{name} health check failed:\n{result.stderr}"


def test_ftp_service_takes_the_nodes_credentials(stack):
    env = stack.config["services"]["n1"]["environment"]
    ftp = stack.services["ftp"]
    client = FtpClient(
        ftp.address, 2121, env["KVRAFT_FTP_USER"], env["KVRAFT_FTP_PASSWORD"], timeout=5
    )
    assert client.upload("compose-check.json", io.BytesIO(b'{"ok": true}')) == 12
    out = io.BytesIO()
    client.download("compose-check.json", out)
    assert out.getvalue() == b'{"ok": true}'
    assert "compose-check.json" in client.list()


def test_ftp_passive_ports_are_in_the_published_range(stack):
    ftp = stack.services["ftp"]
    low, high = map(int, ftp.env["KVRAFT_FTP_PASSIVE_PORTS"].split("-"))
    env = stack.config["services"]["ftp"]["environment"]
    with ftplib.FTP(timeout=5) as client:
        client.connect(ftp.address, 2121)
        client.login(env["KVRAFT_FTP_USER"], env["KVRAFT_FTP_PASSWORD"])
        ports = [client.makepasv()[1] for _ in range(3)]
    assert all(low <= p <= high for p in ports), ports


# -- (c) the Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_runs_kvraft_as_a_non_root_user():
    image = parse_dockerfile(DOCKERFILE)
    # the base is an argument: python:3.11-slim for users who can pull, a local Debian base
    # made by scripts/build-base-image.sh otherwise (scripts/build-image.sh chooses)
    assert image.base == "${BASE_IMAGE}"
    args = [text for instr, text in image.instructions if instr == "ARG"]
    assert "BASE_IMAGE=python:3.11-slim" in args
    assert image.user and image.user.split(":")[0] not in ("root", "0")
    assert image.entrypoint == ["kvraft"] and image.cmd == ["serve"]
    assert image.volumes == ["/data"]
    assert {"8001", "9001", "2121"} <= set(image.exposed)
    assert image.env["KVRAFT_DATA_DIR"] == "/data"


def test_dockerfile_installs_from_wheels_with_no_index():
    """The build needs no network: every pip install of wheels says --no-index; the fallback
    (no wheels: a user who can reach PyPI) installs the same source tree the README does."""
    commands = [
        part.strip()
        for run in parse_dockerfile(DOCKERFILE).runs("RUN")
        for part in re.split(r"&&|;", run)
        if "pip install" in part
    ]
    (fallback,) = [c for c in commands if c.endswith(" /src")]
    wheel_installs = [c for c in commands if c != fallback]
    assert len(wheel_installs) == 2 and all("--no-index" in c for c in wheel_installs)
    assert shlex.split(fallback)[-1] == "/src", "no extras, no -e, no dev tools"
    readme = (ROOT / "README.md").read_text()
    documented = _pip_install_targets(readme)
    if not documented and re.search(r"^make (run|test)\b", readme, re.M):
        documented = _pip_install_targets((ROOT / "Makefile").read_text())
    assert documented, "README.md shows no way to install: neither `pip install` nor `make`"
    assert set(documented) == {"."}, f"README installs from {documented}, the image from ."
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    assert "pip wheel" in script and '--build-arg "BASE_IMAGE=$BASE"' in script


def _pip_install_targets(text: str) -> list[str]:
    """What ``pip install`` lines in ``text`` install from a source path, with the extras,
    ``-e`` and other options dropped: ``pip install -q -e '.[test]'`` gives ``['.']``."""
    targets = []
    for m in re.finditer(r"pip install (.+)", text):
        for word in shlex.split(m.group(1).split("#")[0].split("&&")[0]):
            if not word.startswith("-") and word.startswith((".", "/")):
                targets.append(re.sub(r"\[.*\]$", "", word))
    return targets


def test_dockerfile_healthcheck_passes_on_a_node_and_fails_without_one(stack):
    check = parse_dockerfile(DOCKERFILE).healthcheck
    assert check is not None and check.test and check.test[0] == "CMD"
    assert check_argv(check.test)[0] == "python", "slim has no curl: the check uses python"
    ok = stack.run_check("n1", check.test)
    assert ok.returncode == 0, ok.stderr
    # negative control: the ftp service runs no HTTP server, so the same check must fail there
    assert stack.run_check("ftp", check.test, timeout=10).returncode != 0


def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as Docker reads it: later rules win, ``!`` re-includes, ``**`` spans dirs."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        for token in re.split(r"(\*\*/|/\*\*$|\*\*|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "/**": "(/.*)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((negate, re.compile(regex)))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):  # a match on a parent dir counts
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_pip_install_needs():
    rules = _dockerignore_rules()
    sources = ["pyproject.toml", "README.md"] + [
        str(p.relative_to(ROOT))
        for pkg in ("kvraft", "kvraft_cmd", "api")
        for p in (ROOT / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert not [s for s in sources if _ignored(s, rules)]
    sources += [
        "deploy/wheels/deps/cryptography-46.0.0-cp311-abi3-manylinux_2_34_x86_64.whl",
        "deploy/wheels/app/kvraft-0.1.0-py3-none-any.whl",
    ]
    assert not [s for s in sources if _ignored(s, rules)]
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/n1/store.db",
        ".env",
        "tests/conftest.py",
        "kvraft/__pycache__/cli.cpython-311.pyc",
        "bench/out/run.json",
        "deploy/k8s/statefulset.yaml",
        "chaos/out/x/history.jsonl",
    ):
        assert _ignored(path, rules), path
