"""The FTP side of reports: the :class:`Uploader` seam, its ftplib implementation and the names
a node gives its files.

:class:`FtpClient` wraps stdlib ``ftplib``: one connection per call, streamed in 64 KiB blocks,
every failure raised as :class:`FtpError` (:class:`FtpAuthError` for a refused login).
:func:`ftp_errors` turns those into the :class:`~kvraft.errors.KvError` subclasses the API maps
(:class:`FtpUnavailable`, :class:`FtpAuthFailed`, :class:`~kvraft.errors.NotFound`).
:func:`new_remote_name` makes the only file names a node ever sends to the server. The server
(pyftpdlib) is not here: it is a process of its own, run by the command (``kvraft_cmd.ftpserver``).

This module must not take remote file names from API clients, keep files in memory whole, touch
the store or the cluster, or import Flask or pyftpdlib.
"""

from __future__ import annotations

import contextlib
import ftplib
import os
import random
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol, TypeVar

from ..config import Config, parse_hostport
from ..errors import KvError, NotFound

T = TypeVar("T")

BLOCK_SIZE = 64 * 1024
REMOTE_KINDS = ("report", "export")
FTP_TIMEOUT = 15.0  # seconds per FTP operation of a node
_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BAD_NAME = re.compile(r"[/\\\x00-\x1f]")


class Readable(Protocol):
    """A binary source read to EOF in blocks (a file, or :class:`~.format.ChainReader`)."""

    def read(self, size: int = -1, /) -> bytes: ...


class Uploader(Protocol):
    """Where reports and exports go: a file server that stores and returns files by name.

    Both methods block until the transfer is done and may be called from several threads at
    once. They raise :class:`FtpError` (:class:`FtpAuthError` for refused credentials); a failed
    ``upload`` may leave a partial file, a failed ``download`` may have written part of ``dst``.
    :class:`FtpClient` is the real one; tests pass an in-memory fake.
    """

    def upload(self, remote_name: str, src: Readable) -> int:
        """Store ``src`` (read to EOF) as ``remote_name``; return the bytes sent."""
        ...

    def download(self, remote_name: str, dst: BinaryIO) -> int:
        """Write the file ``remote_name`` into ``dst``; return the bytes received."""
        ...


class FtpUnavailable(KvError):
    """The FTP server could not be reached or a transfer failed."""


class FtpAuthFailed(KvError):
    """The FTP server refused this node's user or password."""


class FtpError(Exception):
    """An FTP operation failed; the message says which step and why."""


class FtpAuthError(FtpError):
    """The server refused the login (wrong user or password, or TLS required)."""


def _check_remote_name(name: str) -> None:
    if not name or name in (".", "..") or _BAD_NAME.search(name):
        raise ValueError(f"invalid remote file name {name!r}")


class FtpClient:
    """Blocking FTP(S) client: each call connects, logs in, does one thing and quits.

    Thread safe (no shared connection). Every failure raises :class:`FtpError`
    (:class:`FtpAuthError` for a refused login). With ``tls=True`` both channels are encrypted
    (AUTH TLS then PROT P); the server certificate is verified only when ``cafile`` is given.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        tls: bool = False,
        timeout: float = 10.0,
        *,
        cafile: str | None = None,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self.tls, self.timeout, self.cafile = tls, timeout, cafile

    def upload(self, remote_name: str, src: Readable) -> int:
        """STOR ``src`` (read to EOF in 64 KiB blocks) as ``remote_name``; return bytes sent.

        An existing file of that name is replaced; a failed upload may leave a partial file.
        """
        _check_remote_name(remote_name)
        sent = 0

        def count(block: bytes) -> None:
            nonlocal sent
            sent += len(block)

        self._session(
            f"STOR {remote_name}",
            lambda ftp: ftp.storbinary(f"STOR {remote_name}", src, BLOCK_SIZE, count),
        )
        return sent

    def download(self, remote_name: str, dst: BinaryIO) -> int:
        """RETR ``remote_name`` into ``dst`` in blocks; return bytes received.

        On FtpError ``dst`` may already hold part of the file.
        """
        _check_remote_name(remote_name)
        received = 0

        def write(block: bytes) -> None:
            nonlocal received
            dst.write(block)
            received += len(block)

        self._session(
            f"RETR {remote_name}",
            lambda ftp: ftp.retrbinary(f"RETR {remote_name}", write, BLOCK_SIZE),
        )
        return received

    def delete(self, remote_name: str) -> None:
        """DELE ``remote_name``; FtpError if it does not exist or cannot be removed."""
        _check_remote_name(remote_name)
        self._session(f"DELE {remote_name}", lambda ftp: ftp.delete(remote_name))

    def list(self) -> list[str]:
        """Names of the files in the user's root, sorted."""
        names = self._session("NLST", lambda ftp: ftp.nlst())
        return sorted(os.path.basename(n) for n in names)

    def _session(self, what: str, action: Callable[[ftplib.FTP], T]) -> T:
        where = f"{self.host}:{self.port}"
        ftp = self._connect(where)
        try:
            try:
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.auth()
            except (ftplib.Error, OSError, EOFError) as err:
                raise FtpError(f"FTP TLS negotiation with {where} failed: {_why(err)}") from err
            try:
                ftp.login(self.user, self._password)
            except ftplib.error_perm as err:
                raise FtpAuthError(f"FTP login failed for user {self.user!r}: {err}") from err
            except (ftplib.Error, OSError, EOFError) as err:
                raise FtpError(f"FTP login to {where} failed: {_why(err)}") from err
            try:
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.prot_p()
                result = action(ftp)
            except (ftplib.Error, OSError, EOFError) as err:
                raise FtpError(f"FTP transfer failed: {what} on {where}: {_why(err)}") from err
            try:
                ftp.quit()
            except (ftplib.Error, OSError, EOFError):
                pass  # the transfer is done; a lost goodbye changes nothing
            return result
        finally:
            ftp.close()

    def _connect(self, where: str) -> ftplib.FTP:
        if self.tls:
            context = ssl.create_default_context(cafile=self.cafile) if self.cafile else None
            ftp: ftplib.FTP = ftplib.FTP_TLS(context=context, timeout=self.timeout)
        else:
            ftp = ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(self.host, self.port)
        except (ftplib.Error, OSError, EOFError) as err:
            ftp.close()
            raise FtpError(f"FTP server {where} unreachable: {_why(err)}") from err
        return ftp


def _why(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return f"TLS error: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, EOFError):
        return "connection closed by server"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def new_remote_name(
    kind: str, node_id: str, now: float | None = None, rng: random.Random | None = None
) -> str:
    """A fresh server-side file name, e.g. ``report-n1-20261124T012233Z-1f2e3d4c.json``.

    ``kind`` is one of REMOTE_KINDS and ``node_id`` letters, digits, ``_`` or ``-`` (else
    ValueError). ``now`` (epoch seconds, UTC) and ``rng`` are for tests; by default the suffix
    is 32 bits from ``secrets``.
    """
    if kind not in REMOTE_KINDS:
        raise ValueError(f"unknown remote file kind {kind!r}; expected one of {REMOTE_KINDS}")
    if not _NODE_ID.match(node_id):
        raise ValueError(f"node id {node_id!r} is not usable in a file name")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    suffix = f"{rng.getrandbits(32):08x}" if rng is not None else secrets.token_hex(4)
    return f"{kind}-{node_id}-{stamp}-{suffix}.json"


def ftp_client(config: Config) -> FtpClient:
    """The node's FTP client from its config; FtpUnavailable when no FTP password is set."""
    if not config.ftp_password:
        raise FtpUnavailable(
            "FTP is not configured on this node: set KVRAFT_FTP_PASSWORD "
            "(and KVRAFT_FTP, KVRAFT_FTP_USER)"
        )
    host, port = parse_hostport(config.ftp, "ftp")
    return FtpClient(
        host, port, config.ftp_user, config.ftp_password, tls=config.ftp_tls, timeout=FTP_TIMEOUT
    )


@contextlib.contextmanager
def ftp_errors(missing: str | None = None) -> Iterator[None]:
    """Map FTP failures to KvErrors; with ``missing``, a permanent RETR error is NotFound."""
    try:
        yield
    except FtpAuthError as exc:
        raise FtpAuthFailed(f"the FTP server refused this node's credentials: {exc}") from None
    except FtpError as exc:
        if missing is not None and isinstance(exc.__cause__, ftplib.error_perm):
            raise NotFound(f"no export named {missing!r} on the FTP server: {exc}") from None
        raise FtpUnavailable(f"the FTP server is unavailable: {exc}") from None
