"""``kvraft up``: a local cluster on one host plus an embedded FTP server, in the foreground.

Starts one ``python -m kvraft serve`` child process per node and the FTP server in this process,
prints one line per node and a ready line, and stops everything on SIGINT or SIGTERM. Secrets
not given in the environment (:class:`kvraft.config.UpDefaults`) are generated once and kept
under the data directory. Blocks until stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from kvraft.client.cli import EXIT_UNAVAILABLE, EXIT_USAGE
from kvraft.config import UpDefaults


def add_up_command(sub: argparse._SubParsersAction) -> None:
    """Add ``up`` and its flags (defaults from :class:`kvraft.config.UpDefaults`)."""
    defaults = UpDefaults.from_env()
    up = sub.add_parser("up", help="run a local cluster and an FTP server in the foreground")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--host", default=defaults.host)
    up.add_argument("--http-base", type=int, default=defaults.http_base)
    up.add_argument("--raft-base", type=int, default=defaults.raft_base)
    up.add_argument("--ftp-port", type=int, default=defaults.ftp_port)
    up.add_argument("--data-dir", default=defaults.data_dir)
    up.add_argument("--replication-factor", type=int, default=defaults.replication_factor)
    up.add_argument("--ready-timeout", type=float, default=30.0)
    up.set_defaults(func=cmd_up)


def _secret_file(path: str, given: str) -> str:
    """``given`` (a secret from the environment) when set, else one generated once and kept in
    ``path``."""
    if given:
        return given
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _wait_ready(urls: list[str], deadline: float) -> str | None:
    """Wait until every node answers /ready; return the leader's id, or None on timeout."""
    leader = None
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        url = pending[0]
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as resp:
                leader = json.load(resp).get("leader")
                pending.pop(0)
                continue
        except OSError:
            time.sleep(0.2)
    return None if pending else leader


def cmd_up(args: argparse.Namespace) -> int:
    n, host = args.nodes, args.host
    if not 1 <= n <= 9:
        print("kvraft up: --nodes must be 1 to 9", file=sys.stderr)
        return EXIT_USAGE
    os.makedirs(args.data_dir, exist_ok=True)
    given = UpDefaults.from_env()
    secret = _secret_file(os.path.join(args.data_dir, "secret"), given.secret)
    admin_token = _secret_file(os.path.join(args.data_dir, "admin-token"), given.admin_token)
    ftp_password = _secret_file(os.path.join(args.data_dir, "ftp-password"), given.ftp_password)
    ftp_addr = f"{host}:{args.ftp_port}"
    ftp_server = None
    try:
        from kvraft.ftp import FtpServer

        ftp_server = FtpServer(
            host, args.ftp_port, "kvraft", ftp_password, os.path.join(args.data_dir, "ftp")
        )
        ftp_server.start()
    except ImportError:
        print("kvraft up: FTP server module missing; reports and exports are off", file=sys.stderr)
    except OSError as exc:
        print(f"kvraft up: cannot start the FTP server on {ftp_addr}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    raft = [f"{host}:{args.raft_base + i}" for i in range(n)]
    procs: list[subprocess.Popen] = []
    urls = []
    for i in range(n):
        node_id, http = f"n{i + 1}", f"{host}:{args.http_base + i}"
        env = dict(
            os.environ,
            KVRAFT_SECRET=secret,
            KVRAFT_ADMIN_TOKEN=admin_token,
            KVRAFT_FTP=ftp_addr,
            KVRAFT_FTP_PASSWORD=ftp_password,
            KVRAFT_FTP_USER="kvraft",
        )
        cmd = [
            sys.executable,
            "-m",
            "kvraft",
            "serve",
            "--id",
            node_id,
            "--http",
            http,
            "--raft",
            raft[i],
            "--peers",
            ",".join(r for r in raft if r != raft[i]),
            "--data-dir",
            os.path.join(args.data_dir, node_id),
            "--replication-factor",
            str(min(args.replication_factor, n)),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
        urls.append(f"http://{http}")
        print(
            f"{node_id}  http://{http}  raft {raft[i]}  data {args.data_dir}/{node_id}  "
            f"pid {procs[-1].pid}",
            flush=True,
        )
    print(
        f"ftp  ftp://{ftp_addr}  user kvraft  password in {args.data_dir}/ftp-password", flush=True
    )
    print(f"admin token (export, import, membership) in {args.data_dir}/admin-token", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    leader = _wait_ready(urls, time.monotonic() + args.ready_timeout)
    if leader is None and not stop.is_set():
        print("kvraft up: cluster not ready in time; still trying (Ctrl-C stops)", flush=True)
    elif not stop.is_set():
        print(
            f"ready: {n} nodes, leader {leader}, try: curl -X PUT --data-binary hello "
            f"{urls[0]}/kv/a",
            flush=True,
        )
    while not stop.wait(0.5):
        for i, p in enumerate(procs):
            if p.returncode is None and p.poll() is not None:
                print(f"n{i + 1} exited with code {p.returncode}", flush=True)
    print("stopping", flush=True)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if ftp_server is not None:
        ftp_server.stop()
    print("stopped", flush=True)
    return 0
