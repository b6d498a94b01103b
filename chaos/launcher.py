"""Start a kvraft cluster for a chaos run: in the namespaces of a :class:`~chaos.netns.Lab`
(each node on its own address, so the network between nodes can be cut) or, without a lab, on
loopback like ``tests/cluster.py``.

:class:`ChaosCluster` is the test harness's :class:`Cluster` with two changes: each node's
command is prefixed with ``ip netns exec <its namespace>`` and binds ``<subnet>.<i>:8001`` (Raft
on ``:9001``), and each node can have environment of its own (a test fault on one node, a clock
offset given at a restart). Process handling (kill -9 of the node's process group, SIGSTOP and
SIGCONT, waiting with deadlines) is the harness's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from cluster import SECRET, Cluster, NodeProc, free_ports, wait_for  # noqa: E402

from .netns import Lab  # noqa: E402

__all__ = ["ChaosCluster", "wait_for"]

HTTP_PORT = 8001
RAFT_PORT = 9001


@dataclass
class ChaosCluster(Cluster):
    lab: Lab | None = None
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.initial = self.n  # every node starts with --peers (no node joins later)
        if self.lab is None:
            ports = free_ports(2 * self.n)
            addrs = [(f"127.0.0.1:{ports[i]}", f"127.0.0.1:{ports[self.n + i]}")
                     for i in range(self.n)]
        else:
            addrs = [(f"{ip}:{HTTP_PORT}", f"{ip}:{RAFT_PORT}") for ip in self.lab.ips]
        for i, (http, raft) in enumerate(addrs):
            node_id = f"n{i + 1}"
            self.nodes.append(NodeProc(node_id, http, raft, os.path.join(self.root, node_id)))
        import requests

        self.http = requests.Session()

    def start(self, i: int | None = None, extra_env: dict[str, str] | None = None) -> None:
        """Start node ``i`` (default: every node not running); returns at once."""
        for idx in [i] if i is not None else range(self.n):
            node = self.nodes[idx]
            if node.proc is not None and node.proc.poll() is None:
                continue
            os.makedirs(node.data_dir, exist_ok=True)
            env = dict(os.environ, KVRAFT_SECRET=SECRET, **self.env,
                       **self.node_env.get(idx, {}), **(extra_env or {}))
            peers = ",".join(n.raft for n in self.nodes if n is not node)
            prefix = self.lab.exec_prefix(idx) if self.lab else []
            cmd = [*prefix, sys.executable, "-m", "kvraft", "serve", "--id", node.id,
                   "--http", node.http, "--raft", node.raft, "--peers", peers,
                   "--data-dir", node.data_dir,
                   "--replication-factor", str(self.replication_factor)]
            node.log_path = os.path.join(self.root, f"{node.id}.log")
            with open(node.log_path, "ab") as log:
                # `ip netns exec` execs the command: the pid and process group are the node's
                node.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             cwd=ROOT)
            if self.lab:
                self.lab.record_pid(node.proc.pid)

    def is_running(self, i: int) -> bool:
        proc = self.nodes[i].proc
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        for i in range(self.n):
            try:
                self.resume(i)
            except (ProcessLookupError, AttributeError):
                pass
            try:
                self.kill(i)
            except TimeoutError:
                pass
        self.http.close()
