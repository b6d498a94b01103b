"""Peer transport: HTTP/1.1 requests to other nodes over persistent (keep-alive) connections.

One small pool of ``http.client`` connections per peer address, shared by all threads; a write
therefore reuses an open TCP connection instead of opening one. Every request carries the cluster
secret. A request that fails on a reused connection (the peer closed it while idle) is retried once
on a new connection: every peer request is idempotent (records apply by last-writer-wins).
Blocking; thread-safe. Raises :class:`PeerError` for anything but an HTTP response.
"""

from __future__ import annotations

import http.client
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
        hdrs = {SECRET_HEADER: self._secret, "Content-Length": str(len(body))}
        if headers:
            hdrs.update(headers)
        timeout = self.timeout if timeout is None else timeout
        for attempt in (0, 1):
            conn, reused = self._checkout(addr, timeout)
            if not reused:
                try:
                    conn.connect()
                except OSError as exc:
                    conn.close()
                    raise PeerConnectError(f"{addr}: {type(exc).__name__}: {exc}") from None
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 0 and idempotent and not isinstance(exc, socket.timeout):
                    continue
                raise PeerError(f"{addr}: {type(exc).__name__}: {exc}") from None
            result = PeerResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            if resp.will_close:
                conn.close()
            else:
                self._checkin(addr, conn)
            return result
        raise AssertionError("unreachable")

    def _checkout(self, addr: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        now = time.monotonic()
        conn = None
        with self._lock:
            idle = self._idle[addr]
            while idle:
                candidate, since = idle.pop()
                if now - since < IDLE_LIMIT:
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
