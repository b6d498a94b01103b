"""Launcher of a real kvraft cluster for the benchmarks, as a context manager.

Runs `python -m kvraft up --nodes N --data-dir DIR --http-base P --raft-base P --ftp-port P` in
its own session (the launcher starts every node and the embedded FTP server), with its output in
DIR/up.log, waits until `GET /ready` answers 200 on every node, and reads the nodes' HTTP addresses
from `GET /cluster`. On exit: SIGTERM to the process group, SIGKILL after a deadline, and the data
directory is removed. Ports default to 18301.. (HTTP), 18401.. (Raft) and 18501 (FTP), clear of the
etcd and naive launchers, so all three can be started in one run.

    with KvraftCluster() as kv:
        print(kv.urls)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import procs

REPO = Path(__file__).resolve().parent.parent


def available() -> tuple[bool, str]:
    """Whether `python -m kvraft up` exists yet; (False, reason) when it does not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kvraft", "up", "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False, "`python -m kvraft up --help` did not answer in 30 s"
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"`python -m kvraft up --help` failed: {last[0]}"
    return True, ""


class KvraftCluster:
    """A local kvraft cluster of `nodes` nodes started by `kvraft up`."""

    def __init__(
        self,
        nodes: int = 3,
        http_base: int = 18301,
        raft_base: int = 18401,
        ftp_port: int = 18501,
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        repo: Path = REPO,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.repo, self.env = Path(repo), env  # the checkout to run (bench/ab.py: another commit)
        self.python = python  # the interpreter that runs it (bench/reports_export.py: its .venv)
        self.nodes, self.http_base, self.raft_base, self.ftp_port = (
            nodes,
            http_base,
            raft_base,
            ftp_port,
        )
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.urls = [f"http://127.0.0.1:{http_base + i}" for i in range(nodes)]
        self.proc: subprocess.Popen | None = None
        self.tmp: Path | None = None

    def _ready(self) -> bool:
        return all(procs.http("GET", url + "/ready")[0] == 200 for url in self.urls)

    def _urls_from_cluster(self) -> list[str]:
        """HTTP base URLs listed by GET /cluster, or the launch-time ones when it has none."""
        status, body = procs.http("GET", self.urls[0] + "/cluster")
        if status != 200:
            return self.urls
        try:
            nodes = json.loads(body).get("nodes", [])
        except ValueError:
            return self.urls
        found = []
        for node in nodes:
            addr = str(node.get("http", "")) if isinstance(node, dict) else ""
            addr = addr if addr.startswith("http://") else f"http://{addr}"
            if addr.startswith("http://127.0.0.1:"):  # only loopback targets, ever
                found.append(addr.rstrip("/"))
        return found if len(found) == self.nodes else self.urls

    def start(self) -> KvraftCluster:
        ok, why = available()
        if not ok:
            raise RuntimeError(f"kvraft is not runnable yet: {why}")
        self.tmp = Path(tempfile.mkdtemp(prefix="kvraft-bench-kvraft-"))
        cmd = [
            self.python,
            "-m",
            "kvraft",
            "up",
            "--nodes",
            str(self.nodes),
            "--data-dir",
            str(self.tmp / "data"),
            "--http-base",
            str(self.http_base),
            "--raft-base",
            str(self.raft_base),
            "--ftp-port",
            str(self.ftp_port),
        ]
        log = self.tmp / "up.log"
        self.proc = procs.spawn(cmd, log, cwd=self.repo, env=self.env)
        try:
            procs.wait_until(self._ready, self.start_timeout, "kvraft /ready", [self.proc])
        except RuntimeError as exc:
            logs = procs.tail(log, 30)
            self.stop()
            raise RuntimeError(f"{exc}\n--- kvraft up log ---\n{logs}") from None
        self.urls = self._urls_from_cluster()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, grace=self.stop_timeout)
            self.proc = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> KvraftCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
