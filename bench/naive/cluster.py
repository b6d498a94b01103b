"""Launcher of a 3-node naive cluster (`server.py`) on 127.0.0.1.

Each node is `server.py`'s Flask app under kvraft's own HTTP server (`python -m api.httpd`, the
same web stack as kvraft) in its own session; HTTP ports from
`http_base` (18101..), Raft ports from `raft_base` (18201..), journals in a temporary directory.
Ready when a PUT succeeds on every node; stopped by pid (killpg) and cleaned up on exit.

    with NaiveCluster() as naive:
        print(naive.urls)
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from pathlib import Path

from bench import procs

HERE = Path(__file__).resolve().parent


class NaiveCluster(procs.LocalCluster):
    """`nodes` naive nodes; a context manager that starts them and waits until writes commit."""

    def __init__(
        self,
        nodes: int = 3,
        http_base: int = 18101,
        raft_base: int = 18201,
        start_timeout: float = 60.0,
    ) -> None:
        self.nodes, self.http_base, self.raft_base = nodes, http_base, raft_base
        self.start_timeout = start_timeout
        self.urls = [f"http://127.0.0.1:{http_base + i}" for i in range(nodes)]
        super().__init__()

    def _cmd(self, i: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "api.httpd",
            "--bind",
            f"127.0.0.1:{self.http_base + i}",
            "--path",
            str(HERE),
            "--path",
            str(HERE.parent.parent),
            "server:create_app()",
        ]

    def _env(self, i: int, password: str) -> dict:
        assert self.tmp is not None
        raft = [f"127.0.0.1:{self.raft_base + j}" for j in range(self.nodes)]
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NAIVE_SELF": raft[i],
            "NAIVE_PARTNERS": ",".join(r for j, r in enumerate(raft) if j != i),
            "NAIVE_PASSWORD": password,
            "NAIVE_DATA": str(self.tmp / f"n{i + 1}"),
            "NAIVE_TIMEOUT": "5",
        }

    def _writable(self) -> bool:
        return all(
            procs.http("PUT", f"{url}/kv/__probe", b"1", timeout=6)[0] in (200, 201)
            for url in self.urls
        )

    def start(self) -> NaiveCluster:
        self.tmp = Path(tempfile.mkdtemp(prefix="kvraft-bench-naive-"))
        password = secrets.token_hex(16)
        for i in range(self.nodes):
            log = self.tmp / f"n{i + 1}.log"
            self.procs.append(procs.spawn(self._cmd(i), log, self._env(i, password)))
        self._await(self._writable, "naive PUT", "n1.log")
        return self
