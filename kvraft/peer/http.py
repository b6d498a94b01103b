"""Peer HTTP transport: HTTP/1.1 requests to other nodes over persistent (keep-alive) connections.

One small pool of connections per peer address, shared by all threads; a write therefore reuses
an open TCP connection instead of opening one. A connection (:class:`Connection`) is a socket
and a buffered reader: a request goes out in one ``sendall`` and the answer is parsed with the C
``readline`` (not ``http.client``, whose header parsing is the larger part of a peer request's
cost). Every request carries a proof that the sender knows the cluster secret (an HMAC with a
key derived from it, :mod:`kvraft.peerauth`), never the secret itself. A request that fails on a
reused connection (the peer closed it while idle) is retried once on a new connection: every
peer request is idempotent (records apply by last-writer-wins). Blocking; thread-safe. Raises
:class:`PeerError` for anything but an HTTP response.

This module is also the peer protocol's HTTP binding: :data:`REFUSALS`, the one table that gives
each :class:`~kvraft.peer.messages.Refusal` its status and error code, is what
:meth:`kvraft.peer.server.PeerServer.handle` writes and :class:`kvraft.peer.client.PeerClient`
reads back. A handler's error is not a refusal: the node's HTTP layer maps it
(``api/errors.py``)."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .. import peerauth
from .messages import Refusal


class PeerError(ConnectionError):
    """The peer could not be reached or did not answer in time."""


class PeerConnectError(PeerError):
    """No connection could be opened: the request was certainly not delivered."""


# the peer protocol over HTTP: an answer is 200, a refusal (nothing done) its status and code
OK = 200
REFUSALS: dict[Refusal, tuple[int, str]] = {
    Refusal.BAD_SIGNATURE: (403, "forbidden"),
    Refusal.MALFORMED: (400, "bad_request"),
    Refusal.NO_SUCH_MESSAGE: (404, "not_found"),
    Refusal.WRONG_METHOD: (405, "method_not_allowed"),
    Refusal.GONE: (410, "gone"),
}

IDLE_LIMIT = 30.0  # seconds; servers close idle keep-alive connections after a while
MAX_LINE = 65536
MAX_HEADERS = 100


_TLS: ssl.SSLContext | None = None  # set by the composition root when peers speak HTTPS


def use_tls(context: ssl.SSLContext | None) -> None:
    """Reach every peer over HTTPS with ``context`` (None: plain HTTP). Call once at start,
    before any connection is opened."""
    global _TLS
    _TLS = context


class ProtocolError(OSError):
    """The peer's answer is not the HTTP/1.1 we speak."""


class Connection:
    """One keep-alive HTTP/1.1 connection to ``host:port``; not thread-safe (pooled)."""

    __slots__ = ("host", "port", "timeout", "sock", "rfile", "will_close")

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: Any = None  # a socket once connected
        self.rfile: Any = None  # its buffered reader
        self.will_close = False

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _TLS is not None:
            try:
                sock = _TLS.wrap_socket(sock, server_hostname=self.host)
            except (OSError, ValueError):
                sock.close()
                raise
        self.sock, self.rfile = sock, sock.makefile("rb", buffering=65536)

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        if self.sock is None:
            self.connect()
        head = [f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        head.append("\r\n")
        self.sock.sendall("".join(head).encode("latin-1") + body)

    def response(self) -> PeerResponse:
        rfile = self.rfile
        line = rfile.readline(MAX_LINE)
        if not line:
            raise ProtocolError("connection closed before an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            h = rfile.readline(MAX_LINE)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise ProtocolError("connection closed inside the headers")
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ProtocolError("too many headers")
        self.will_close = (
            "close" in headers.get("connection", "").lower() or parts[0] == b"HTTP/1.0"
        )
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked()
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body = rfile.read(n)
            if len(body) != n:
                raise ProtocolError("connection closed inside the body")
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body, self.will_close = rfile.read(), True
        return PeerResponse(status, headers, body)

    def _chunked(self) -> bytes:
        out: list[bytes] = []
        while True:
            size = int(self.rfile.readline(MAX_LINE).split(b";", 1)[0], 16)
            if size == 0:
                while self.rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(out)
            data = self.rfile.read(size)
            if len(data) != size:
                raise ProtocolError("connection closed inside a chunk")
            out.append(data)
            self.rfile.readline(MAX_LINE)

    def close(self) -> None:
        for f in (self.rfile, self.sock):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.sock = self.rfile = None


@dataclass(frozen=True, slots=True)
class PeerResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Pending:
    """A request sent on a pooled connection, its answer not read yet."""

    def __init__(
        self, client: HttpTransport, addr: str, req: tuple, timeout: float, idempotent: bool
    ) -> None:
        self.client, self.addr, self.req = client, addr, req
        self.timeout, self.idempotent = timeout, idempotent
        self.conn: Connection | None = None
        self.reused = False
        self.sent = False  # went out whole once: the peer may have acted on it
        self.error: PeerError | None = None

    def send(self, first: bool) -> None:
        conn, self.reused = self.client._checkout(self.addr, self.timeout)
        self.conn = conn
        try:
            if not self.reused:
                conn.connect()
        except OSError as exc:
            conn.close()
            error = PeerError if self.sent else PeerConnectError  # a second try after a lost
            self.error = error(f"{self.addr}: {type(exc).__name__}: {exc}")  # answer
            return
        method, path, body, hdrs = self.req
        # signed per attempt: a retry is a new request to the receiver's replay check
        hdrs = {peerauth.HEADER: peerauth.sign(self.client._key, method, path, body), **hdrs}
        try:
            conn.request(method, path, body=body, headers=hdrs)
            self.sent = True
        except (OSError, ValueError) as exc:
            self._failed(exc, first)

    def _failed(self, exc: Exception, first: bool) -> None:
        assert self.conn is not None
        self.conn.close()
        if first and self.reused and self.idempotent and not isinstance(exc, socket.timeout):
            self.send(first=False)  # the peer closed an idle connection: once more, fresh
        else:
            self.error = PeerError(f"{self.addr}: {type(exc).__name__}: {exc}")

    def result(self) -> PeerResponse:
        for first in (True, False):
            if self.error is not None:
                raise self.error
            conn = self.conn
            assert conn is not None
            try:
                out = conn.response()
            except (OSError, ValueError) as exc:
                self._failed(exc, first)
                continue
            if conn.will_close:
                conn.close()
            else:
                self.client._checkin(self.addr, conn)
            return out
        raise self.error or PeerError(f"{self.addr}: no answer")


class HttpTransport:
    """Pooled keep-alive HTTP/1.1 to peer addresses; blocking, thread-safe."""

    def __init__(self, secret: str, timeout: float = 2.0, max_idle: int = 64) -> None:
        self._key = peerauth.derive(secret, peerauth.PEER_HTTP)
        self.timeout = timeout
        self._max_idle = max_idle
        self._idle: dict[str, list[tuple[Connection, float]]] = defaultdict(list)
        self._lock = threading.Lock()

    def request(
        self,
        addr: str,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> PeerResponse:
        """Send one request to ``addr`` ("host:port"); returns any HTTP response.

        Raises :class:`PeerConnectError` when nothing was sent, :class:`PeerError` when the
        request may have been delivered. A non-idempotent request is never sent twice."""
        return self.start(addr, method, path, body, headers, timeout, idempotent).result()

    def start(
        self,
        addr: str,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> Pending:
        """Send the request now and return at once; :meth:`Pending.result` reads the answer.

        Lets a caller have requests to several peers (and its own local work) in progress at
        the same time from one thread. Errors surface from ``result()``."""
        hdrs = {"Content-Length": str(len(body))}
        if headers:
            hdrs.update(headers)
        timeout = self.timeout if timeout is None else timeout
        pending = Pending(self, addr, (method, path, body, hdrs), timeout, idempotent)
        pending.send(first=True)
        return pending

    def _checkout(self, addr: str, timeout: float) -> tuple[Connection, bool]:
        now = time.monotonic()
        conn = None
        with self._lock:
            idle = self._idle[addr]
            while idle:
                candidate, since = idle.pop()
                if now - since < IDLE_LIMIT and not dropped(candidate):
                    conn = candidate
                    break
                candidate.close()
        if conn is not None:
            conn.settimeout(timeout)
            return conn, True
        host, _, port = addr.rpartition(":")
        return Connection(host.strip("[]"), int(port), timeout), False

    def _checkin(self, addr: str, conn: Connection) -> None:
        with self._lock:
            idle = self._idle[addr]
            if len(idle) < self._max_idle:
                idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c, _since in idle]
            self._idle.clear()
        for c in conns:
            c.close()


def dropped(conn: Connection) -> bool:
    """An idle keep-alive connection the peer has closed (or that has stray bytes waiting):
    readable before we sent anything. Reusing it would fail after the request may be sent."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
