"""Client subcommands of ``kvraft``: put, get, delete, ls, status, report, export, import.

:func:`add_client_commands` adds them to the ``kvraft`` argument parser; each talks to the cluster
through :class:`kvraft.client.Client` (``--node URL`` repeatable, default ``KVRAFT_NODES`` or the
local cluster on ports 8001-8003). Output is readable text by default and one JSON document with
``--json``; values and reports go to stdout untouched, messages to stderr, and a progress bar
appears on stderr only when it is a terminal.

Exit codes scripts can rely on: 0 ok, 1 not found, 2 usage (bad arguments, a request the server
refused as bad, a missing or wrong token), 3 unavailable (no node could serve the request, or a
server error). The formatting functions are pure (kvraft.client.format, unit-tested alone); this
module never retries or fails over itself: that is the client's job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from ..keys import LEVELS
from .errors import BadRequest, KvClientError, NotFound, Unauthorized, Unavailable
from .format import (
    format_columns,
    format_status,
    format_write,
    human_bytes,
    partition_balance,
    render_bar,
    value_json,
)
from .http import MAX_PAGE, Client, routing_from_env
from .routing import ROUTING_MODES

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class UsageError(Exception):
    """Arguments that parse but do not make sense together; exit code 2."""


# -- input ---------------------------------------------------------------------------------------


def read_value(value: str | None, file: str | None, stdin: IO[bytes]) -> bytes:
    """The bytes ``put`` stores: ``VALUE`` (its exact bytes, as the OS passed them), the file,
    or all of stdin when VALUE is omitted or ``-``. UsageError when both VALUE and a file."""
    if file is not None:
        if value is not None:
            raise UsageError("give either VALUE or --file, not both")
        if file == "-":
            return stdin.read()
        with open(file, "rb") as f:
            return f.read()
    if value is None or value == "-":
        return stdin.read()
    return os.fsencode(value)


def split_nodes(nodes: Sequence[str] | None) -> list[str] | None:
    """``--node`` values (repeatable, each may be comma-separated) -> URLs, None when absent."""
    if not nodes:
        return None
    return [p.strip() for n in nodes for p in n.split(",") if p.strip()] or None


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, (BadRequest, Unauthorized, UsageError, ValueError)):
        return EXIT_USAGE
    return EXIT_UNAVAILABLE


# -- progress on stderr --------------------------------------------------------------------------


class Progress:
    """A one-line progress bar redrawn on ``stream``, only when it is a terminal (or
    ``enabled=True``). ``update`` is throttled to 10 redraws a second; ``close`` clears it."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        stream: IO[str] | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.label, self.total, self._clock = label, total, clock
        self.started = clock()
        self._last = float("-inf")
        self._width = 0

    def update(self, done: int | None, total: int | None = None, force: bool = False) -> None:
        if total is not None:
            self.total = total
        now = self._clock()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        line = render_bar(self.label, done, self.total, elapsed=now - self.started)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class Ticker:
    """While a blocking call runs, keep a progress line alive on a terminal stderr: redrawn
    every 0.2 s with the elapsed time and whatever :meth:`feed` last reported (context manager;
    a daemon thread; does nothing when stderr is not a terminal)."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.progress = Progress(label, stream=stream)
        self.done: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.progress.enabled

    def feed(self, doc: dict) -> None:
        """A server progress message (``{"keys", "total"?}``): shown at the next redraw."""
        if isinstance(doc.get("keys"), int):
            self.done = doc["keys"]
        if isinstance(doc.get("total"), int):
            self.progress.total = doc["total"]

    def __enter__(self) -> Ticker:
        if self.progress.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True, name="ticker")
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.progress.update(self.done, force=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.progress.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# -- commands ------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    # One command makes one key request: learning the map first would cost a request of its
    # own, so the CLI routes to replicas only when asked (--routing or KVRAFT_CLIENT_ROUTING).
    mode = getattr(args, "routing", None) or routing_from_env(default="any")
    return Client(
        split_nodes(args.node),
        token=args.token,
        timeout=args.timeout,
        retries=args.retries,
        admin_token=getattr(args, "admin_token", None),
        smart=mode == "replica",
    )


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def cmd_put(args: argparse.Namespace) -> int:
    if args.value is None and args.file is None and _isatty(sys.stdin):
        print("reading the value from stdin (end with Ctrl-D)", file=sys.stderr)
    data = read_value(args.value, args.file, sys.stdin.buffer)
    with _client(args) as c:
        res = c.put(args.key, data, w=args.w)
    doc = res.to_json()
    if args.json:
        _print_json(doc)
    else:
        print(format_write("created" if res.created else "replaced", doc))
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        val = c.get(args.key, r=args.r)
    if args.out is not None:
        with open(args.out, "wb") as f:
            f.write(val.value)
        if args.json:
            _print_json(
                dict(
                    value_json(args.key, None, val.version, val.node),
                    size=len(val.value),
                    out=args.out,
                )
            )
        else:
            print(
                f"wrote {len(val.value)} bytes to {args.out} (version {val.version})",
                file=sys.stderr,
            )
    elif args.json:
        _print_json(value_json(args.key, val.value, val.version, val.node))
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(val.value)
        sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.delete(args.key, w=args.w)
    if args.json:
        _print_json(res.to_json())
    else:
        print(format_write("deleted", res.to_json()))
    return EXIT_OK


def _estimated_total(c: Client, prefix: str) -> int | None:
    """Roughly how many keys a full listing returns: only known without a prefix."""
    if prefix:
        return None
    try:
        view = c.cluster()
    except KvClientError:
        return None
    counts = [n.get("keys") for n in view.get("nodes", []) if n.get("alive")]
    rf = view.get("replication_factor") or 1
    if not counts or any(k is None for k in counts):
        return None
    return max(1, round(sum(counts) / rf))


def cmd_ls(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    keys: list[str] = []
    nxt = args.after
    with _client(args) as c:
        if args.all:
            progress = Progress("ls")
            if progress.enabled:
                progress.total = _estimated_total(c, args.prefix)
            try:
                for page in c.iter_pages(args.prefix, MAX_PAGE, args.after):
                    keys.extend(page.keys)
                    progress.update(len(keys))
            finally:
                progress.close()
            nxt = None
        else:
            while len(keys) < args.limit:
                page = c.list(args.prefix, min(MAX_PAGE, args.limit - len(keys)), nxt)
                keys.extend(page.keys)
                stuck = nxt is not None and page.next is not None and page.next <= nxt
                nxt = page.next
                if nxt is None or stuck:
                    break
    if args.json:
        _print_json({"keys": keys, "next": nxt, "count": len(keys)})
        return EXIT_OK
    if _isatty(sys.stdout) and not args.one:
        width = shutil.get_terminal_size().columns or 80
        if keys:
            print(format_columns(keys, width))
        print(
            f"{len(keys)} key(s)"
            + (f"; more after {nxt!r}: use --all or --after" if nxt is not None else "")
        )
    else:
        for k in keys:
            sys.stdout.write(k + "\n")
        if nxt is not None:
            print(f"kvraft ls: more keys after {nxt!r} (use --all or --after)", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        view = c.cluster()
    if args.json:
        _print_json(dict(view, balance=partition_balance(view)))
    else:
        print(format_status(view))
    return EXIT_OK


def _count(doc: Any, *names: str) -> Any:
    """The first of ``names`` in ``doc``, as a count when it is a collection."""
    if not isinstance(doc, dict):
        return None
    for name in names:
        if name in doc:
            v = doc[name]
            return len(v) if isinstance(v, (list, dict)) else v
    return None


def cmd_report(args: argparse.Namespace) -> int:
    with _client(args) as c, Ticker("report: waiting for the node"):
        text = _route_missing(lambda: c.report_text(args.prefix), "WebSocket /report")
    if args.out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return EXIT_OK
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    keys = _count(json.loads(text), "count", "keys")
    if args.json:
        _print_json({"out": args.out, "bytes": len(text.encode()), "keys": keys})
    else:
        print(
            f"report written to {args.out} ({human_bytes(len(text.encode()))}"
            + (f", {keys} keys)" if keys is not None else ")")
        )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with _client(args) as c, Ticker("export") as ticker:
        feed = ticker.feed if ticker.enabled else None  # stream progress only to a terminal
        doc = _route_missing(lambda: c.export(progress=feed), "POST /export")
    if args.json:
        _print_json(doc)
    else:
        print(
            f"exported {doc.get('keys', '?')} keys ({human_bytes(doc.get('bytes'))}) "
            f"as {doc.get('name')}; load it with: kvraft import {doc.get('name')}"
        )
    return EXIT_OK


def _route_missing(call: Callable[[], Any], route: str) -> Any:
    """``call()``, with a 404 explained as the node lacking ``route`` (a NotFound still)."""
    try:
        return call()
    except NotFound as exc:
        raise NotFound(
            f"{exc.node or 'the node'} has no {route} (HTTP 404: {exc.message})",
            exc.status,
            exc.code,
            exc.node,
        ) from None


def cmd_import(args: argparse.Namespace) -> int:
    with _client(args) as c, Ticker(f"import {args.name}") as ticker:
        doc = c.import_(args.name, w=args.w, progress=ticker.feed if ticker.enabled else None)
    if args.json:
        _print_json(doc)
    else:
        keys = _count(doc, "keys")
        print(f"imported {args.name}" + (f": {keys} keys" if keys is not None else ""))
    return EXIT_OK


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command, turning client errors into a message on stderr and an exit code."""
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"kvraft {args.command}: interrupted", file=sys.stderr)
        return 130
    except (KvClientError, UsageError, ValueError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # `kvraft ls | head`
            _silence_stdout()
            return EXIT_OK
        kind = (
            "not found"
            if isinstance(exc, NotFound)
            else "unavailable"
            if isinstance(exc, Unavailable)
            else "error"
        )
        print(f"kvraft {args.command}: {kind}: {exc}", file=sys.stderr)
        return exit_code_for(exc) if not isinstance(exc, OSError) else EXIT_USAGE


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        return run(func, args)

    command.__name__ = func.__name__
    command.__doc__ = func.__doc__
    return command


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--node",
        action="append",
        metavar="URL",
        help="a node to talk to (repeatable or comma-separated; default KVRAFT_NODES "
        "or http://127.0.0.1:8001-8003); others are tried when one is down",
    )
    g.add_argument("--token", default=None, help="bearer token (default KVRAFT_TOKEN)")
    g.add_argument(
        "--admin-token",
        default=None,
        help="admin token for export/import (default KVRAFT_ADMIN_TOKEN, else data/admin-token)",
    )
    g.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)"
    )
    g.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="extra passes over the node list when all failed (default 2)",
    )
    g.add_argument(
        "--routing",
        choices=ROUTING_MODES,
        default=None,
        help="replica: learn the partition map and send the key straight to one of its "
        "replicas; any: to the first node that answers, which forwards (default "
        "KVRAFT_CLIENT_ROUTING, else any)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    return p


def add_client_commands(sub: Any) -> None:
    """Add the client subcommands to ``sub`` (the ``kvraft`` subparsers object). Each sets
    ``func(args) -> exit code``."""
    common = _common()

    p = sub.add_parser(
        "put",
        parents=[common],
        help="store a value",
        description="Store VALUE (or --file, or stdin) under KEY.",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument(
        "value",
        metavar="VALUE",
        nargs="?",
        default=None,
        help="the value; omitted or '-' reads stdin",
    )
    p.add_argument("--file", "-f", metavar="FILE", default=None, help="read the value from FILE")
    p.add_argument("--w", choices=LEVELS, default=None, help="write level (default quorum)")
    p.set_defaults(func=_wrap(cmd_put))

    p = sub.add_parser(
        "get",
        parents=[common],
        help="print a value (raw bytes)",
        description="Write the value of KEY to stdout (raw bytes) or --out FILE. "
        "Exit 1 when the key does not exist.",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("--out", "-o", metavar="FILE", default=None)
    p.add_argument("--r", choices=LEVELS, default=None, help="read level (default one)")
    p.set_defaults(func=_wrap(cmd_get))

    p = sub.add_parser(
        "delete",
        parents=[common],
        help="delete a key",
        description="Delete KEY. Exit 1 when it does not exist.",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("--w", choices=LEVELS, default=None, help="write level (default quorum)")
    p.set_defaults(func=_wrap(cmd_delete))

    p = sub.add_parser(
        "ls",
        parents=[common],
        help="list keys",
        description="List keys in order: columns on a terminal, one per line otherwise.",
    )
    p.add_argument("--prefix", "-p", default="", metavar="P")
    p.add_argument(
        "--limit", "-n", type=int, default=100, metavar="N", help="at most N keys (default 100)"
    )
    p.add_argument("--after", default=None, metavar="KEY", help="start after KEY")
    p.add_argument("--all", "-a", action="store_true", help="every key (follows all pages)")
    p.add_argument("-1", dest="one", action="store_true", help="one key per line")
    p.set_defaults(func=_wrap(cmd_ls))

    p = sub.add_parser("status", parents=[common], help="nodes, leader and partition balance")
    p.set_defaults(func=_wrap(cmd_status))

    p = sub.add_parser(
        "report",
        parents=[common],
        help="a report of every key (via /report)",
        description="Ask a node for a report (JSON: cluster view and every live "
        "key with its value and version) and print it or save it.",
    )
    p.add_argument("--out", "-o", metavar="FILE", default=None)
    p.add_argument("--prefix", "-p", default="", metavar="P", help="only keys under P")
    p.set_defaults(func=_wrap(cmd_report))

    p = sub.add_parser("export", parents=[common], help="snapshot the store to the FTP server")
    p.set_defaults(func=_wrap(cmd_export))

    p = sub.add_parser("import", parents=[common], help="load a snapshot made by export")
    p.add_argument("name", metavar="NAME", help="the name export printed")
    p.add_argument("--w", choices=LEVELS, default=None, help="write level (default quorum)")
    p.set_defaults(func=_wrap(cmd_import))
