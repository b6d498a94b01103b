"""The ``kvraft`` command: ``serve`` (one node), ``up`` (a local cluster plus FTP), ``ftp``.

Client subcommands (put, get, ...) are added by :mod:`kvraft.clientcli` when it is present.
Exit codes: 0 ok, 1 not found, 2 usage or configuration error, 3 unavailable.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from .config import Config, ConfigError, fields_help

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run one node (every flag also reads KVRAFT_<FLAG>)")
    for name, kind, default in fields_help():
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            p.add_argument(flag, default=None, metavar="BOOL", help=f"default {default}")
        else:
            p.add_argument(flag, default=None, help=f"default {default!r}")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    try:
        config = Config.load(flags)
    except ConfigError as exc:
        print(f"kvraft serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from api.server import serve  # the web layer lives outside the store package

    serve(config)
    return 0


def _secret_file(path: str, env: str) -> str:
    """A secret from the environment, else one generated once and kept in ``path``."""
    if os.environ.get(env):
        return os.environ[env]
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
                import json

                leader = json.load(resp).get("leader")
                pending.pop(0)
                continue
        except OSError:
            time.sleep(0.2)
    return None if pending else leader


def cmd_up(args) -> int:
    n, host = args.nodes, args.host
    if not 1 <= n <= 9:
        print("kvraft up: --nodes must be 1 to 9", file=sys.stderr)
        return EXIT_USAGE
    os.makedirs(args.data_dir, exist_ok=True)
    secret = _secret_file(os.path.join(args.data_dir, "secret"), "KVRAFT_SECRET")
    admin_token = _secret_file(os.path.join(args.data_dir, "admin-token"), "KVRAFT_ADMIN_TOKEN")
    ftp_password = _secret_file(os.path.join(args.data_dir, "ftp-password"), "KVRAFT_FTP_PASSWORD")
    ftp_addr = f"{host}:{args.ftp_port}"
    ftp_server = None
    try:
        from .ftp import FtpServer

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


def cmd_ftp(args) -> int:
    from .ftp import parse_port_range, run_ftp_server

    password = os.environ.get("KVRAFT_FTP_PASSWORD", "")
    if len(password) < 8:
        print("kvraft ftp: set KVRAFT_FTP_PASSWORD (8+ characters)", file=sys.stderr)
        return EXIT_USAGE
    host, _, port = (args.listen or os.environ.get("KVRAFT_FTP_LISTEN", "0.0.0.0:2121")).rpartition(
        ":"
    )
    passive_text = args.passive_ports or os.environ.get("KVRAFT_FTP_PASSIVE_PORTS", "")
    try:
        passive = parse_port_range(passive_text) if passive_text else None
    except ValueError as exc:
        print(f"kvraft ftp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_ftp_server(
        host,
        int(port),
        os.environ.get("KVRAFT_FTP_USER", "kvraft"),
        password,
        args.root or os.environ.get("KVRAFT_FTP_ROOT", "data/ftp"),
        os.environ.get("KVRAFT_FTP_TLS_CERT"),
        os.environ.get("KVRAFT_FTP_TLS_KEY"),
        passive,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvraft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    up = sub.add_parser("up", help="run a local cluster and an FTP server in the foreground")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--host", default=os.environ.get("KVRAFT_HOST", "127.0.0.1"))
    up.add_argument("--http-base", type=int, default=int(os.environ.get("KVRAFT_HTTP_BASE", 8001)))
    up.add_argument("--raft-base", type=int, default=int(os.environ.get("KVRAFT_RAFT_BASE", 9001)))
    up.add_argument("--ftp-port", type=int, default=int(os.environ.get("KVRAFT_FTP_PORT", 2121)))
    up.add_argument("--data-dir", default=os.environ.get("KVRAFT_DATA_DIR", "data"))
    up.add_argument(
        "--replication-factor",
        type=int,
        default=int(os.environ.get("KVRAFT_REPLICATION_FACTOR", 2)),
    )
    up.add_argument("--ready-timeout", type=float, default=30.0)
    up.set_defaults(func=cmd_up)
    ftp = sub.add_parser("ftp", help="run the FTP server alone (KVRAFT_FTP_* environment)")
    ftp.add_argument("--listen", default=None, help="HOST:PORT, default 0.0.0.0:2121")
    ftp.add_argument("--root", default=None, help="directory served, default data/ftp")
    ftp.add_argument(
        "--passive-ports",
        default=None,
        metavar="LOW-HIGH",
        help="data ports for passive mode (KVRAFT_FTP_PASSIVE_PORTS), default any",
    )
    ftp.set_defaults(func=cmd_ftp)
    try:
        from .clientcli import add_client_commands
    except ImportError:
        pass
    else:
        add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
