"""Peer transport: HTTP/1.1 requests to other nodes over persistent (keep-alive) connections.

One small pool of ``http.client`` connections per peer address, shared by all threads; a write
therefore reuses an open TCP connection instead of opening one. Every request carries the cluster
secret. A request that fails on a reused connection (the peer closed it while idle) is retried once
on a new connection: every peer request is idempotent (records apply by last-writer-wins).
Blocking; thread-safe. Raises :class:`PeerError` for anything but an HTTP response.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

SECRET_HEADER = "X-Kvraft-Secret"


class PeerError(ConnectionError):
    """The peer could not be reached or did not answer in time."""


class PeerConnectError(PeerError):
    """No connection could be opened: the request was certainly not delivered."""


IDLE_LIMIT = 30.0  # seconds; servers close idle keep-alive connections after a while


@dataclass(frozen=True, slots=True)
class PeerResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Pending:
    """A request sent on a pooled connection, its answer not read yet."""

    def __init__(self, client: PeerClient, addr: str, req: tuple, timeout: float,
                 idempotent: bool) -> None:
        self.client, self.addr, self.req = client, addr, req
        self.timeout, self.idempotent = timeout, idempotent
        self.conn: http.client.HTTPConnection | None = None
        self.reused = False
        self.error: PeerError | None = None

    def send(self, first: bool) -> None:
        conn, self.reused = self.client._checkout(self.addr, self.timeout)
        self.conn = conn
        try:
            if not self.reused:
                conn.connect()
        except OSError as exc:
            conn.close()
            self.error = PeerConnectError(f"{self.addr}: {type(exc).__name__}: {exc}")
            return
        method, path, body, hdrs = self.req
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (OSError, http.client.HTTPException) as exc:
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
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._failed(exc, first)
                continue
            out = PeerResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            if resp.will_close:
                conn.close()
            else:
                self.client._checkin(self.addr, conn)
            return out
        raise self.error or PeerError(f"{self.addr}: no answer")


class PeerClient:
    def __init__(self, secret: str, timeout: float = 2.0, max_idle: int = 64) -> None:
        self._secret = secret
        self.timeout = timeout
        self._max_idle = max_idle
        self._idle: dict[str, list[tuple[http.client.HTTPConnection, float]]] = defaultdict(list)
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
        hdrs = {SECRET_HEADER: self._secret, "Content-Length": str(len(body))}
        if headers:
            hdrs.update(headers)
        timeout = self.timeout if timeout is None else timeout
        pending = Pending(self, addr, (method, path, body, hdrs), timeout, idempotent)
        pending.send(first=True)
        return pending

    def _checkout(self, addr: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        now = time.monotonic()
        conn = None
        with self._lock:
            idle = self._idle[addr]
            while idle:
                candidate, since = idle.pop()
                if now - since < IDLE_LIMIT and not _dropped(candidate):
                    conn = candidate
                    break
                candidate.close()
        if conn is not None:
            conn.sock.settimeout(timeout) if conn.sock else None
            conn.timeout = timeout
            return conn, True
        host, _, port = addr.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        return conn, False

    def _checkin(self, addr: str, conn: http.client.HTTPConnection) -> None:
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


def _dropped(conn: http.client.HTTPConnection) -> bool:
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
