"""What the front door costs on today's code: this checkout against itself with only
``api/httpd.py`` swapped back to the hand-written HTTP server of 0abf64b (before issue 13).

    python -m bench.front_door [--rounds 8] [--seconds 8] [--port-base 29301]

It makes a detached worktree of HEAD in a temporary directory, writes 0abf64b's ``api/httpd.py``
into it with the few names today's callers need (``BodyError``, ``upgraded()``, the new keyword
arguments, accepted and ignored: no head or body deadline, no per-client limit), and runs
:mod:`bench.ab` with ``--together`` (A: the old server, B: this checkout), so the two clusters
differ only in the server, its parser and its deadlines: everything behind the WSGI app (the
store, the peer streams, signing) is the same code. The worktree is removed afterwards.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import ab

OLD = "0abf64b"
ROOT = Path(__file__).resolve().parent.parent

# the names today's api/ and kvraft/peer/ use on the server, added to the old file
SHIMS = [
    (
        "class _Closed(Exception):",
        "class BodyError(ConnectionError):\n"
        '    """(bench shim) the name api/fastpath.py catches for a failed body read."""\n\n\n'
        "class _Closed(Exception):",
    ),
    (
        "read_timeout: float = 30.0, backlog: int = 1024) -> None:",
        "read_timeout: float = 30.0, backlog: int = 1024, tls=None, **_ignored) -> None:",
    ),
    (
        "    def idle(self, waiting: bool)",
        "    def upgraded(self) -> None:\n"
        "        self.sock.settimeout(None)\n\n"
        "    def idle(self, waiting: bool)",
    ),
]


def old_server_source() -> str:
    """0abf64b's api/httpd.py with the shims applied (each must apply exactly once)."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{OLD}:api/httpd.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for old, new in SHIMS:
        if text.count(old) != 1:
            raise SystemExit(f"front_door: the shim for {old!r} does not apply to {OLD}")
        text = text.replace(old, new)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--ops", default="put,get")
    ap.add_argument("--port-base", type=int, default=29301)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvraft-front-door-") as tmp:
        tree = Path(tmp) / "old-server"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), "HEAD"],
            check=True,
            capture_output=True,
        )
        try:
            (tree / "api" / "httpd.py").write_text(old_server_source())
            return ab.main(
                [
                    "--a",
                    str(tree),
                    "--b",
                    str(ROOT),
                    "--ops",
                    args.ops,
                    "--rounds",
                    str(args.rounds),
                    "--seconds",
                    str(args.seconds),
                    "--port-base",
                    str(args.port_base),
                    "--together",
                ]
            )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )


if __name__ == "__main__":
    sys.exit(main())
