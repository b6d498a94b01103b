"""The FTP server of reports and exports: pyftpdlib in a thread (``kvraft up``) or as its own
process (``kvraft ftp``, the Compose service).

:class:`FtpServer` serves one named user (no anonymous login) from a root folder, optionally
FTPS with TLS required on both channels. It is the counterpart of
:class:`kvraft.reports.ftp.FtpClient`; nodes never run it, the command does.

This module must not touch the store or the cluster, or import Flask. pyftpdlib is used here
and nowhere else.
"""

from __future__ import annotations

import hmac
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

log = logging.getLogger(__name__)

_PERMS = "elradfmw"


def _quiet_pyftpdlib() -> None:
    # pyftpdlib logs every command at INFO, and on its first loop it installs a stderr handler at
    # INFO unless a handler exists: give it a NullHandler so the level below sticks.
    lib = logging.getLogger("pyftpdlib")
    if not lib.handlers:
        lib.addHandler(logging.NullHandler())
    lib.setLevel(logging.WARNING)


class _Authorizer(DummyAuthorizer):
    """DummyAuthorizer with a constant-time password check and no anonymous special case."""

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        if not self.has_user(username):
            raise AuthenticationFailed("Authentication failed.")
        stored = self.user_table[username]["pwd"].encode()
        if not hmac.compare_digest(stored, password.encode()):
            raise AuthenticationFailed("Authentication failed.")


class FtpServer:
    """An embedded FTP(S) server for one named user rooted at ``root``.

    ``start()`` binds (errors such as a port in use are raised there) and serves from a daemon
    thread; ``stop()`` ends it. Each instance has its own handler class and IO loop, so several
    servers can run in one process. With ``tls_cert`` (and ``tls_key`` unless the cert file holds
    the key) clients must use TLS on the control and data channels. ``auth_failed_delay`` is
    pyftpdlib's pause before answering a wrong password (brute-force brake; tests set 0).
    ``passive_ports`` restricts the data ports of passive mode (see :func:`parse_port_range`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        root: str | os.PathLike,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        *,
        passive_ports: range | None = None,
        auth_failed_delay: float = 3.0,
    ) -> None:
        if not user or user == "anonymous":
            raise ValueError("FTP user must be a named user, not empty or 'anonymous'")
        if not password:
            raise ValueError("FTP password must not be empty")
        if tls_key and not tls_cert:
            raise ValueError("tls_key given without tls_cert")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._host, self._port = host, port
        authorizer = _Authorizer()
        authorizer.add_user(user, password, str(self.root), perm=_PERMS)
        attrs = {
            "authorizer": authorizer,
            "banner": "kvraft ftp ready.",
            "auth_failed_timeout": auth_failed_delay,
        }
        if passive_ports is not None:
            # Data connections in passive mode use only these ports (a container publishes them
            # 1:1); pyftpdlib picks a free one of them, or any port once all are busy.
            attrs["passive_ports"] = list(passive_ports)
        base: type[FTPHandler] = FTPHandler
        if tls_cert:
            from pyftpdlib.handlers import TLS_FTPHandler

            base = TLS_FTPHandler
            attrs.update(
                certfile=str(tls_cert),
                keyfile=str(tls_key or tls_cert),
                ssl_context=None,
                tls_control_required=True,
                tls_data_required=True,
            )
        # A subclass per server: pyftpdlib reads its settings from class attributes.
        self._handler = type("KvraftFtpHandler", (base,), attrs)
        self.tls = bool(tls_cert)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: FTPServer | None = None
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound; raises RuntimeError before ``start()``."""
        if self._address is None:
            raise RuntimeError("FTP server not started")
        return self._address

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind and start serving in a daemon thread. One-shot: a stopped server stays stopped."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("FTP server already started or stopped")
        _quiet_pyftpdlib()
        # Own IO loop: the default is a process-wide singleton that close_all() would close.
        self._server = FTPServer((self._host, self._port), self._handler, ioloop=IOLoop())
        host, port = self._server.address
        self._address = (host, port)
        self._thread = threading.Thread(target=self._run, name=f"ftp-server-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        server = self._server
        assert server is not None
        try:
            while not self._stop.is_set():
                server.serve_forever(timeout=0.2, blocking=False, handle_exit=False)
        except Exception:
            log.exception("FTP server loop failed")
        finally:
            # From this thread: close_all() from another thread while the loop polls can hang
            # (pyftpdlib issues 367, 662).
            server.close_all()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the loop to stop, close every connection and join; True if the thread ended.

        Takes at most about ``timeout`` seconds; safe to call twice or before ``start()``.
        """
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("FTP server thread did not stop within %.1fs", timeout)
            return False
        return True

    def __enter__(self) -> FtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_port_range(text: str) -> range:
    """``"30000-30009"`` (or one port ``"30000"``) as a range; ValueError with a clear message
    for anything else (ports 1024-65535, low <= high, at most 10,000 ports)."""
    low_s, sep, high_s = text.strip().partition("-")
    try:
        low = int(low_s)
        high = int(high_s) if sep else low
    except ValueError:
        raise ValueError(f"passive ports {text!r}: expected LOW-HIGH, e.g. 30000-30009") from None
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"passive ports {text!r}: need 1024 <= LOW <= HIGH <= 65535")
    if high - low >= 10_000:
        raise ValueError(f"passive ports {text!r}: at most 10000 ports")
    return range(low, high + 1)


def run_ftp_server(
    host: str,
    port: int,
    user: str,
    password: str,
    root: str | os.PathLike,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    passive_ports: range | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (``kvraft ftp``). Main thread only."""
    stopping = threading.Event()
    server = FtpServer(
        host, port, user, password, root, tls_cert, tls_key, passive_ports=passive_ports
    )
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.start()
        bound_host, bound_port = server.address
        passive = (
            f" passive={passive_ports.start}-{passive_ports.stop - 1}" if passive_ports else ""
        )
        print(
            f"ftp server on ftp://{bound_host}:{bound_port} root={server.root} user={user}"
            f"{passive}",
            flush=True,
        )
        while not stopping.wait(0.5):
            if not server.is_running:
                raise RuntimeError("FTP server thread ended unexpectedly")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
