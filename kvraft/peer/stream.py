"""Replica writes and reads over persistent binary streams to each peer, instead of an HTTP
request each.

Every client write sends its record to the key's other replica, and a request per batch would
carry a request line, headers, routing and a JSON answer for a few records. A
:class:`PeerStream` opens a connection to
the peer's HTTP port once, upgrades it (``POST /peer/stream`` with ``Upgrade: kvraft-peer/1``,
signed with the peer key (:mod:`kvraft.peerauth`), answered ``101``), and from then on carries
length-prefixed frames in lockstep: one request frame, then one answer frame (or an error
message). The peer serves it with :func:`serve` on the connection's own thread. A node keeps two
streams per peer, one for writes and one for reads, so a read never waits behind a batch of
writes.

Frame: ``u32 payload length, u8 kind, payload``. Request kinds: ``APPLY`` (records in
:mod:`kvraft.peer.wire` encoding; answered with the apply results, encoded by
:mod:`kvraft.peer.messages` as every apply answer is) and ``GET`` (keys,
:func:`kvraft.peer.messages.encode_keys`; answered with the stored records among them,
tombstones included, in wire encoding). Answer kinds: ``OK`` and ``ERROR``. Lockstep means the
caller must read each answer before sending the next request;
:class:`kvraft.peer.batch.PeerBatcher` with one lane does exactly that. This module frames and
carries payloads; it does not know what they mean (:mod:`kvraft.peer.client` and
:mod:`kvraft.peer.server` do).

Errors keep :mod:`kvraft.peer.http`'s meaning: :class:`PeerConnectError` when the records were
certainly not delivered, :class:`PeerError` when they may have been. A request that fails on a
stream opened earlier (the peer closed or restarted since) is sent once more on a new one:
records apply by last-writer-wins, so applying one twice changes nothing, and reads change
nothing at all.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Mapping

from .. import peerauth
from .http import (
    IDLE_LIMIT,
    Connection,
    PeerConnectError,
    PeerError,
    ProtocolError,
    dropped,
)
from .messages import STREAM_APPLY as APPLY
from .messages import STREAM_GET as GET  # noqa: F401 - the other frame kind, for callers

PROTOCOL = "kvraft-peer/1"
PATH = "/peer/stream"
OK, ERROR = 0, 2
_HEAD = struct.Struct(">IB")


class StreamError(ValueError):
    """A malformed frame or answer."""


class StreamRefused(PeerError):
    """The peer answered the request with an error (it is up, the records were not applied)."""


# -- frames -----------------------------------------------------------------------------------


def frame(kind: int, payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), kind) + payload


def read_frame(rfile, limit: int, head: bytes | None = None) -> tuple[int, bytes] | None:
    """The next frame from a buffered reader (its header already read when ``head`` is given);
    None on a clean end of stream (between frames). Raises StreamError past ``limit`` bytes or
    when the stream ends inside a frame."""
    if head is None:
        head = rfile.read(_HEAD.size)
    if not head:
        return None
    if len(head) != _HEAD.size:
        raise StreamError("stream ended inside a frame header")
    length, kind = _HEAD.unpack(head)
    if length > limit:
        raise StreamError(f"frame of {length} bytes is over the limit of {limit}")
    payload = rfile.read(length) if length else b""
    if len(payload) != length:
        raise StreamError("stream ended inside a frame")
    return kind, payload


# -- the sending side -------------------------------------------------------------------------


class PeerStream:
    """The stream to one peer (``host:port``). Lockstep and single-user: one :meth:`send`, then
    its :meth:`receive`, then the next; the caller serializes them (one batcher lane)."""

    def __init__(self, addr: str, secret: str, timeout: float, limit: int = 64 << 20) -> None:
        host, _, port = addr.rpartition(":")
        self.addr, self.timeout, self.limit = addr, timeout, limit
        self._key = peerauth.derive(secret, peerauth.PEER_HTTP)
        self._host, self._port = host.strip("[]"), int(port)
        self._conn: Connection | None = None
        self._last = 0.0  # monotonic time of the last answer (idle streams are replaced)
        self._payload = b""  # the request frame (sent again once after a lost answer)
        self._reused = False
        self._sent = False  # the current request went out whole once: it may have been applied
        self._error: PeerError | None = None

    def send(self, payload: bytes, kind: int = APPLY) -> None:
        """Send one request; raises PeerConnectError when nothing could be delivered. A send
        that fails after that is reported by :meth:`receive` (as a PeerError)."""
        self._payload, self._error, self._sent = frame(kind, payload), None, False
        self._send(first=True)
        if isinstance(self._error, PeerConnectError):
            raise self._error

    def receive(self) -> bytes:
        """The answer's payload; raises PeerError (the request may have been applied)."""
        for first in (True, False):
            if self._error is not None:
                raise self._error
            conn = self._conn
            if conn is None:  # closed meanwhile (the node is shutting down)
                raise PeerError(f"{self.addr}: stream closed before an answer")
            try:
                got = read_frame(conn.rfile, self.limit)
                if got is None:
                    raise ProtocolError("stream closed before an answer")
            except (OSError, ValueError) as exc:
                # a malformed or oversized answer would come again: no second try for those
                self._failed(exc, first and not isinstance(exc, StreamError))
                continue
            kind, payload = got
            self._last = time.monotonic()
            if kind == OK:
                return payload
            self.close()  # the peer closes after an error answer
            raise StreamRefused(f"{self.addr}: {payload.decode('utf-8', 'replace')[:300]}")
        raise self._error or PeerError(f"{self.addr}: no answer")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- internals ---------------------------------------------------------------------------

    def _send(self, first: bool) -> None:
        conn = self._conn
        self._reused = conn is not None
        if conn is not None and (time.monotonic() - self._last >= IDLE_LIMIT or dropped(conn)):
            self.close()
            conn, self._reused = None, False
        if conn is None:
            try:
                conn = self._open()
            except (OSError, ValueError) as exc:
                error = PeerError if self._sent else PeerConnectError  # a retry after an answer
                self._error = error(f"{self.addr}: {type(exc).__name__}: {exc}")  # was lost
                return
        try:
            conn.sock.sendall(self._payload)
            self._sent = True
        except (OSError, ValueError) as exc:
            self._failed(exc, first)

    def _failed(self, exc: Exception, first: bool) -> None:
        reused = self._reused
        self.close()
        if first and reused and not isinstance(exc, socket.timeout):
            self._send(first=False)  # the peer closed or restarted since: once more, fresh
        else:
            self._error = PeerError(f"{self.addr}: {type(exc).__name__}: {exc}")

    def _open(self) -> Connection:
        """Connect and upgrade; raises OSError/ValueError (then nothing was applied)."""
        conn = Connection(self._host, self._port, self.timeout)
        try:
            auth = peerauth.sign(self._key, "POST", PATH)
            conn.request(
                "POST",
                PATH,
                b"",
                {
                    peerauth.HEADER: auth,
                    "Connection": "Upgrade",
                    "Upgrade": PROTOCOL,
                    "Content-Length": "0",
                },
            )
            resp = conn.response()
            if resp.status != 101 or resp.headers.get("upgrade", "").lower() != PROTOCOL:
                raise ProtocolError(f"upgrade refused: HTTP {resp.status}: {resp.body[:200]!r}")
        except BaseException:
            conn.close()
            raise
        self._conn, self._last = conn, time.monotonic()
        return conn


# -- the receiving side -----------------------------------------------------------------------


Handlers = Mapping[int, Callable[[bytes], bytes]]  # request kind -> payload -> answer payload


def upgrade(environ: dict, handlers: Handlers, limit: int) -> str:
    """Take over the connection of an (authenticated) ``POST /peer/stream`` request and serve
    the stream on it until it ends; returns a message when the request is not a valid upgrade
    (answer it 400: nothing was applied). The HTTP server provides the connection
    as ``environ["kvraft.connection"]``; after serving, ``StopIteration`` tells it to close the
    connection without another byte, as flask-sock does after a websocket."""
    conn = environ.get("kvraft.connection")
    if environ.get("HTTP_UPGRADE", "").lower() != PROTOCOL:
        return f"{PATH} needs Upgrade: {PROTOCOL}"
    if environ.get("CONTENT_LENGTH", "") not in ("", "0"):
        return f"{PATH} takes no request body"
    if conn is None:
        return "this server cannot hand a connection over"
    conn.sock.sendall(
        f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        f"Upgrade: {PROTOCOL}\r\n\r\n".encode()
    )
    server = conn.server
    serve(
        conn.sock, conn.rfile, handlers, limit, conn.idle, server.idle_timeout, server.read_timeout
    )
    raise StopIteration


def serve(
    sock: socket.socket,
    rfile,
    handlers: Handlers,
    limit: int,
    idle: Callable[[bool], None],
    idle_timeout: float,
    read_timeout: float,
) -> None:
    """Answer request frames on an upgraded connection until the peer closes it (or an error,
    which is answered and ends the stream). ``handlers[kind](payload) -> answer payload``
    raises ValueError for a bad request and any exception for a failure; ``idle(True)`` is
    called while waiting for the next frame (a server shutting down may close the stream)."""
    while True:
        idle(True)
        sock.settimeout(idle_timeout)
        try:
            head = rfile.read(_HEAD.size)
        except OSError:
            return
        finally:
            idle(False)
        if not head:
            return
        sock.settimeout(read_timeout)
        try:
            got = read_frame(rfile, limit, head)
            handler = handlers.get(got[0]) if got else None
            if got is None or handler is None:
                raise StreamError(f"unexpected frame kind {got[0] if got else None}")
            answer = frame(OK, handler(got[1]))
        except OSError:
            return
        except Exception as exc:  # noqa: BLE001 - answered to the peer, then the stream ends
            msg = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            try:
                sock.sendall(frame(ERROR, msg.encode("utf-8", "replace")))
            except OSError:
                pass
            return
        try:
            sock.sendall(answer)
        except OSError:
            return
