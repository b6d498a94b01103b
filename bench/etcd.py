"""A throwaway 3-node etcd cluster on 127.0.0.1, as a context manager.

Installs Debian's `etcd-server` with apt-get when `etcd` is not on PATH (needs root), starts the
members in their own sessions with data directories in a temporary directory, waits until every
member reports healthy and accepts a put, and on exit stops them by pid and removes the data.

etcd fsyncs its write-ahead log before acknowledging every commit; it is left that way (default
flags) so the comparison is against etcd as people run it. Old revisions are auto-compacted so
long runs with 10 KiB values stay under the backend quota.

    with EtcdCluster() as etcd:
        print(etcd.urls)   # ['http://127.0.0.1:23791', ...]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import procs


def ensure_etcd() -> str:
    """Path of the etcd binary, installing Debian's etcd-server first if needed."""
    return procs.ensure_debian_binary("etcd", "etcd-server")


class EtcdCluster(procs.LocalCluster):
    """`nodes` etcd members on 127.0.0.1; client ports from `client_base`, peer from `peer_base`."""

    def __init__(
        self,
        nodes: int = 3,
        client_base: int = 23791,
        peer_base: int = 23801,
        start_timeout: float = 60.0,
    ) -> None:
        self.nodes, self.client_base, self.peer_base = nodes, client_base, peer_base
        self.start_timeout = start_timeout
        self.urls = [f"http://127.0.0.1:{client_base + i}" for i in range(nodes)]
        super().__init__()

    def _cmd(self, binary: str, i: int) -> list[str]:
        names = [f"e{j + 1}" for j in range(self.nodes)]
        peers = [f"http://127.0.0.1:{self.peer_base + j}" for j in range(self.nodes)]
        assert self.tmp is not None
        return [
            binary,
            "--name",
            names[i],
            "--data-dir",
            str(self.tmp / names[i]),
            "--listen-client-urls",
            self.urls[i],
            "--advertise-client-urls",
            self.urls[i],
            "--listen-peer-urls",
            peers[i],
            "--initial-advertise-peer-urls",
            peers[i],
            "--initial-cluster",
            ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True)),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "kvraft-bench",
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1000",
            "--quota-backend-bytes",
            str(4 * 1024**3),
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]

    def _healthy(self) -> bool:
        for url in self.urls:
            status, body = procs.http("GET", url + "/health")
            if status != 200 or json.loads(body or b"{}").get("health") != "true":
                return False
        probe = json.dumps({"key": "cHJvYmU=", "value": "MQ=="}).encode()  # probe=1
        return procs.http("POST", self.urls[0] + "/v3/kv/put", probe)[0] == 200

    def start(self) -> EtcdCluster:
        binary = ensure_etcd()
        self.tmp = Path(tempfile.mkdtemp(prefix="kvraft-bench-etcd-"))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.tmp)}
        for i in range(self.nodes):
            self.procs.append(procs.spawn(self._cmd(binary, i), self.tmp / f"e{i + 1}.log", env))
        self._await(self._healthy, "etcd health", "e1.log")
        return self
