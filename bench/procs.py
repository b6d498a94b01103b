"""Process and readiness helpers shared by the cluster launchers (etcd, naive, kvraft).

Each launched server runs in its own session (its own process group), its output goes to a log
file, and it is stopped by pid: SIGTERM to its process group, then SIGKILL after a deadline.
Nothing here ever signals a process it did not start. Waits are bounded by a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


def ensure_debian_binary(binary: str, package: str) -> str:
    """Path of `binary`, installing Debian's `package` with apt-get first when it is not on PATH
    (needs root; `apt-get update` once if the first install fails). Blocks up to minutes;
    raises RuntimeError when it is still missing."""
    found = shutil.which(binary)
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", package]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        pass
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/bin/{binary}", f"/usr/sbin/{binary}") if Path(p).exists()), None
    )
    if not found:
        raise RuntimeError(f"{binary} is not installed and apt-get install {package} failed")
    return found


def spawn(
    cmd: list[str], log_path: Path, env: dict | None = None, cwd: str | Path | None = None
) -> subprocess.Popen:
    """Start `cmd` in a new session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of `proc` (started by `spawn`), SIGKILL it after `grace` s."""
    if proc.poll() is not None:
        return
    pgid = proc.pid  # start_new_session=True: the group id is the child's pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)  # also reaps children left behind by the leader
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 2.0,
    headers: dict | None = None,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body), or (0, b"") when the server is unreachable."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


def wait_until(
    check: Callable[[], bool],
    deadline_s: float,
    what: str,
    procs: list[subprocess.Popen] = (),
    interval: float = 0.2,
) -> None:
    """Poll `check` until it is true; raise RuntimeError after `deadline_s` or if a proc dies."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{what}: process(es) {dead} exited early")
        time.sleep(interval)
    raise RuntimeError(f"{what}: not reached within {deadline_s:.0f} s")


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalCluster:
    """Process handling shared by the local clusters the benchmarks start (etcd, naive):
    ``self.procs`` started by the subclass's ``start()``, ``self.tmp`` their scratch directory."""

    start_timeout: float

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp: Path | None = None

    def _await(self, ready: Callable[[], bool], what: str, first_log: str) -> None:
        """Wait for ``ready``; on timeout stop everything and raise with the first node's log."""
        try:
            wait_until(ready, self.start_timeout, what, self.procs)
        except RuntimeError as exc:
            assert self.tmp is not None
            logs = tail(self.tmp / first_log)
            self.stop()
            raise RuntimeError(f"{exc}\n--- {first_log} ---\n{logs}") from None

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, grace=10)
        self.procs = []
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
