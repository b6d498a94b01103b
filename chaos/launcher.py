"""Start a kvraft cluster for a chaos run: in the namespaces of a :class:`~chaos.netns.Lab`
(each node on its own address, so the network between nodes can be cut) or, without a lab, on
loopback like ``tests/harness/cluster.py``.

:class:`ChaosCluster` is the test harness's :class:`Cluster` with two changes: each node's
command is prefixed with ``ip netns exec <its namespace>`` and binds ``<subnet>.<i>:8001`` (Raft
on ``:9001``), and each node can have environment of its own (a test fault on one node, a clock
offset given at a restart). Process handling (kill -9 of the node's process group, SIGSTOP and
SIGCONT, waiting with deadlines) is the harness's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tests.harness.cluster import Cluster, NodeProc, free_ports, wait_for

from .netns import Lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
            addrs = [
                (f"127.0.0.1:{ports[i]}", f"127.0.0.1:{ports[self.n + i]}") for i in range(self.n)
            ]
        else:
            addrs = [(f"{ip}:{HTTP_PORT}", f"{ip}:{RAFT_PORT}") for ip in self.lab.ips]
        for i, (http, raft) in enumerate(addrs):
            node_id = f"n{i + 1}"
            self.nodes.append(NodeProc(node_id, http, raft, os.path.join(self.root, node_id)))
        import requests

        self.http = requests.Session()

    def _prefix(self, idx: int) -> list[str]:
        # `ip netns exec` execs the command: the pid and process group are the node's
        return self.lab.exec_prefix(idx) if self.lab else []

    def _node_env(self, idx: int) -> dict[str, str]:
        return self.node_env.get(idx, {})

    def _started(self, idx: int) -> None:
        if self.lab:
            self.lab.record_pid(self.nodes[idx].proc.pid)

    def is_running(self, i: int) -> bool:
        proc = self.nodes[i].proc
        return proc is not None and proc.poll() is None
