"""The ``kvraft`` command: ``serve`` (one node), ``up`` (a local cluster plus FTP), ``ftp``.

Client subcommands (put, get, ...) come from :mod:`kvraft.client.cli`, ``up`` from :mod:`.up`.

The process entry and composition root: the one place that puts the store (``kvraft``) and its
web layer (``api``) together, so neither imports the other's caller (:mod:`.serve` builds the
node, its app and its HTTP server). ``api`` is imported only when ``serve`` runs, so the client
commands start without Flask.
Exit codes: 0 ok, 1 not found, 2 usage or configuration error, 3 unavailable.
"""

from __future__ import annotations

import argparse
import sys

from kvraft.client.cli import EXIT_USAGE, add_client_commands
from kvraft.config import Config, ConfigError, FtpSettings, fields_help

from .up import add_up_command


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one node (every flag also reads KVRAFT_<FLAG>)")
    for name, kind, default in fields_help():
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            p.add_argument(flag, default=None, metavar="BOOL", help=f"default {default}")
        else:
            p.add_argument(flag, default=None, help=f"default {default!r}")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    try:
        config = Config.load(flags)
    except ConfigError as exc:
        print(f"kvraft serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .serve import serve  # imports Flask and the node: not for the client commands

    serve(config)
    return 0


def cmd_ftp(args: argparse.Namespace) -> int:
    from .ftpserver import parse_port_range, run_ftp_server

    settings = FtpSettings.from_env()
    password = settings.password
    if len(password) < 8:
        print("kvraft ftp: set KVRAFT_FTP_PASSWORD (8+ characters)", file=sys.stderr)
        return EXIT_USAGE
    host, _, port = (args.listen or settings.listen).rpartition(":")
    passive_text = args.passive_ports or settings.passive_ports
    try:
        passive = parse_port_range(passive_text) if passive_text else None
    except ValueError as exc:
        print(f"kvraft ftp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_ftp_server(
        host,
        int(port),
        settings.user,
        password,
        args.root or settings.root,
        settings.tls_cert,
        settings.tls_key,
        passive,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvraft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    add_up_command(sub)
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
    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
