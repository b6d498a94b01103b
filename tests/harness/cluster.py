"""A real kvraft cluster on loopback for tests, benchmarks and chaos runs.

Each node is started as its own ``python -m kvraft serve`` process in a new session, so
``kill(i)`` is a ``kill -9`` of that node's whole process group and nothing else. Ports are
picked free at start. Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

SECRET = "test-cluster-secret"
ADMIN_TOKEN = "test-admin-token"  # every harness node has it (KVRAFT_ADMIN_TOKEN)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``cond`` until it returns a truthy value; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (requests.RequestException, OSError, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


@dataclass
class NodeProc:
    id: str
    http: str
    raft: str
    data_dir: str
    proc: subprocess.Popen | None = None
    log_path: str = ""
    join: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.http}"


@dataclass
class Cluster:
    root: str
    n: int = 3
    replication_factor: int = 2
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.initial = self.n  # nodes started with --peers; later ones join
        ports = free_ports(2 * self.n)
        for i in range(self.n):
            node_id = f"n{i + 1}"
            self.nodes.append(
                NodeProc(
                    node_id,
                    f"127.0.0.1:{ports[i]}",
                    f"127.0.0.1:{ports[self.n + i]}",
                    os.path.join(self.root, node_id),
                )
            )
        self.http = requests.Session()

    # -- processes -----------------------------------------------------------------------------

    def add_node(self, join_via: int = 0) -> int:
        """Start one more node that joins the running cluster through node ``join_via``."""
        http, raft = free_ports(2)
        node_id = f"n{len(self.nodes) + 1}"
        self.nodes.append(
            NodeProc(
                node_id,
                f"127.0.0.1:{http}",
                f"127.0.0.1:{raft}",
                os.path.join(self.root, node_id),
                join=self.nodes[join_via].http,
            )
        )
        self.n += 1
        self.start(self.n - 1)
        return self.n - 1

    def start(self, i: int | None = None, extra_env: dict[str, str] | None = None) -> None:
        """Start node ``i`` (default: every node not running); returns at once."""
        for idx in [i] if i is not None else range(len(self.nodes)):
            node = self.nodes[idx]
            if node.proc is not None and node.proc.poll() is None:
                continue
            os.makedirs(node.data_dir, exist_ok=True)
            env = {
                **os.environ,
                "KVRAFT_SECRET": SECRET,
                "KVRAFT_ADMIN_TOKEN": ADMIN_TOKEN,
                **self.env,
                **self._node_env(idx),
                **(extra_env or {}),
            }
            cmd = [
                *self._prefix(idx),
                sys.executable,
                "-m",
                "kvraft",
                "serve",
                "--id",
                node.id,
                "--http",
                node.http,
                "--raft",
                node.raft,
                "--data-dir",
                node.data_dir,
                "--replication-factor",
                str(self.replication_factor),
            ]
            if node.join:
                cmd += ["--join", node.join]
            else:
                cmd += [
                    "--peers",
                    ",".join(n.raft for n in self.nodes[: self.initial] if n is not node),
                ]
            node.log_path = os.path.join(self.root, f"{node.id}.log")
            with open(node.log_path, "ab") as log:
                node.proc = subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=ROOT,
                )
            self._started(idx)

    # hooks for launchers that place nodes elsewhere (chaos/launcher.py: network namespaces)
    def _prefix(self, idx: int) -> list[str]:
        return []

    def _node_env(self, idx: int) -> dict[str, str]:
        return {}

    def _started(self, idx: int) -> None:
        pass

    def kill(self, i: int) -> None:
        """``kill -9`` node ``i`` (one process: the whole node) and wait until it is gone."""
        self._signal(i, signal.SIGKILL)

    def stop(self, i: int) -> None:
        """Graceful stop (SIGTERM), SIGKILL after 15 s."""
        self._signal(i, signal.SIGTERM, grace=15)

    def _signal(self, i: int, sig: int, grace: float = 5) -> None:
        proc = self.nodes[i].proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        # the worker is in the same group: make sure it is gone before a restart reuses ports
        wait_for(lambda: _group_gone(proc.pid), 10, f"{self.nodes[i].id} processes to exit")

    def pause(self, i: int) -> None:
        os.killpg(self.nodes[i].proc.pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        os.killpg(self.nodes[i].proc.pid, signal.SIGCONT)

    def close(self) -> None:
        for i in range(self.n):
            try:
                self.resume(i)
            except (ProcessLookupError, AttributeError):
                pass
            try:
                self.kill(i)
            except TimeoutError:
                pass  # a process that will not exit: keep closing the others
        self.http.close()

    # -- waiting and asking ----------------------------------------------------------------------

    def url(self, i: int) -> str:
        return self.nodes[i].url

    def running(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.proc and n.proc.poll() is None]

    def wait_ready(self, timeout: float = 30, nodes: list[int] | None = None) -> None:
        for i in self.running() if nodes is None else nodes:
            wait_for(
                lambda i=i: self.http.get(self.url(i) + "/ready", timeout=1).ok,
                timeout,
                f"{self.nodes[i].id} ready (log: {self.nodes[i].log_path})",
            )

    def cluster_view(self, i: int = 0) -> dict:
        return self.http.get(self.url(i) + "/cluster", timeout=5).json()

    def leader(self, via: int | None = None) -> int | None:
        """Index of the node that ``via`` (default: any running node) sees as leader."""
        for i in [via] if via is not None else self.running():
            try:
                leader = self.cluster_view(i)["leader"]
            except (requests.RequestException, ValueError):
                continue
            if leader is not None:
                return next(j for j, n in enumerate(self.nodes) if n.id == leader)
        return None

    def wait_alive(self, i: int, timeout: float = 15) -> None:
        """Wait until every running node sees node ``i`` alive."""
        node_id = self.nodes[i].id

        def seen() -> bool:
            for j in self.running():
                nodes = {n["id"]: n for n in self.cluster_view(j)["nodes"]}
                if not nodes.get(node_id, {}).get("alive"):
                    return False
            return True

        wait_for(seen, timeout, f"{node_id} seen alive by every node")

    def hints_pending(self) -> int:
        return sum(self.cluster_view(i)["hints_pending"] for i in self.running())

    def put(self, i: int, key: str, value: bytes, **params) -> requests.Response:
        return self.http.put(
            f"{self.url(i)}/kv/{quote_key(key)}", data=value, params=params, timeout=10
        )

    def get(self, i: int, key: str, **params) -> requests.Response:
        return self.http.get(f"{self.url(i)}/kv/{quote_key(key)}", params=params, timeout=10)

    def delete(self, i: int, key: str, **params) -> requests.Response:
        return self.http.delete(f"{self.url(i)}/kv/{quote_key(key)}", params=params, timeout=10)

    def __enter__(self) -> Cluster:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def peer_headers(method: str, target: str, body: bytes = b"", secret: str = SECRET) -> dict:
    """Headers that make a request a signed peer request (what nodes send each other)."""
    from kvraft import peerauth

    key = peerauth.derive(secret, peerauth.PEER_HTTP)
    return {peerauth.HEADER: peerauth.sign(key, method, target, body)}


def quote_key(key: str) -> str:
    """Percent-encode a key as one path segment ("." and ".." too, or clients drop them)."""
    from urllib.parse import quote

    if key in (".", ".."):
        return key.replace(".", "%2E")
    return quote(key, safe="")


def _group_gone(pgid: int) -> bool:
    """No process of the group is left but zombies (whoever reaps orphans may take a while)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True
