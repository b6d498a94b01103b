"""The one dispatcher of peer messages: every ``/peer/*`` request a node receives goes through
:meth:`PeerServer.receive`, and over HTTP through :meth:`PeerServer.handle`.

``receive`` verifies the request's signature once (:mod:`kvraft.peerauth`: an HMAC with a key
derived from the cluster secret, with a replay check), finds the message by path and method
(:data:`kvraft.peer.messages.BY_PATH`), decodes it and returns the answer of the handler
registered for its type; a request it will not answer is :class:`Refused` for a
:class:`~kvraft.peer.messages.Refusal` (bad signature, malformed, no such message, wrong
method, gone), with no HTTP status. ``handle`` is its HTTP edge: the answer encoded (200) or
the refusal with the status and error code of :data:`kvraft.peer.http.REFUSALS`. The peer
stream (``POST /peer/stream``) is served here too: its frames decode to the same
:class:`~kvraft.peer.messages.Apply` and :class:`~kvraft.peer.messages.ReadKeys` messages and
go to the same handlers.

Handlers are registered by whoever holds the state they read (the node, the watch
subscriptions, the dashboard's counters): ``register(MessageType, handler)``, ``handler(message)
-> answer``. A handler may raise :class:`kvraft.errors.KvError`: it is not caught here, the HTTP
layer maps it to its status like any other. :meth:`dispatch` calls a handler with a decoded
message and no HTTP at all (the in-process network, :mod:`kvraft.peer.fake`, uses it).

The HTTP layer (``api/``) mounts :meth:`handle` on each transport it has (Flask, the fast
path) and adds no ``/peer/*`` route of its own. This module never imports Flask.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .. import peerauth
from . import http, stream
from . import messages as m

STREAM_PATH = stream.PATH
MAX_BODY = 256 << 20  # a peer message (a sync push or a hand-off batch) is at most this large


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer to a peer request."""

    status: int
    body: bytes
    content_type: str = m.JSON
    headers: tuple[tuple[str, str], ...] = ()


class Refused(Exception):
    """The request is refused for ``refusal`` (nothing was done); ``message`` says why, for
    the peer, and ``allow`` is the method the path takes (``WRONG_METHOD`` only)."""

    def __init__(self, refusal: m.Refusal, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.refusal, self.message, self.allow = refusal, message, allow


def _refused(refused: Refused) -> Reply:
    status, code = http.REFUSALS[refused.refusal]
    body = json.dumps({"error": code, "message": refused.message}).encode()
    headers = () if refused.allow is None else (("Allow", refused.allow),)
    return Reply(status, body, m.JSON, headers)


class PeerServer:
    """Thread-safe once handlers are registered (register them before serving)."""

    def __init__(self, secret: str, max_body: int = MAX_BODY) -> None:
        self._verifier = peerauth.Verifier(peerauth.derive(secret, peerauth.PEER_HTTP))
        self._handlers: dict[type[Any], Callable[[Any], Any]] = {}
        self._lock = threading.Lock()
        self.max_body = max_body

    def register(self, message_type: type[Any], handler: Callable[[Any], Any]) -> None:
        """Serve ``message_type`` with ``handler(message) -> answer``; one handler per type."""
        with self._lock:
            if message_type in self._handlers:
                raise ValueError(f"{message_type.__name__} already has a handler")
            self._handlers[message_type] = handler

    def routes(self) -> dict[str, tuple[str, ...]]:
        """Path -> methods of every message served (and the stream upgrade), for the HTTP
        layer's routing tables."""
        out: dict[str, tuple[str, ...]] = {t.PATH: (t.METHOD,) for t in self._handlers}
        if m.Apply in self._handlers or m.ReadKeys in self._handlers:
            out[STREAM_PATH] = ("POST",)
        return out

    def verify(self, auth: str | None, method: str, target: str, body: bytes = b"") -> str:
        """Why the request's signature is refused ("" when it is valid). Each signature is
        accepted once: call this once per request. Also used by the HTTP layer for the admin
        routes a peer may call (a leader's forwards)."""
        return self._verifier.check(auth, method, target, body)

    def dispatch(self, message: Any) -> Any:
        """The handler's answer to a decoded ``message`` (no signature, no HTTP)."""
        handler = self._handlers.get(type(message))
        if handler is None:
            raise LookupError(f"no handler for {type(message).__name__}")
        return handler(message)

    def handle(
        self,
        method: str,
        target: str,
        auth: str | None,
        body: bytes,
        version: str | None = None,
        environ: dict | None = None,
        truncated: bool = False,
    ) -> Reply:
        """The HTTP answer to one ``/peer/*`` request: :meth:`receive`'s answer encoded (200),
        or its refusal with the status and code :data:`kvraft.peer.http.REFUSALS` gives it.

        Raises what the handler raises (a KvError is the caller's to map to a status), and
        ``StopIteration`` after serving a stream (see :meth:`receive`)."""
        try:
            answer = self.receive(method, target, auth, body, version, environ, truncated)
        except Refused as refused:
            return _refused(refused)
        wire = answer.to_wire()
        return Reply(http.OK, wire.body, wire.content_type, wire.headers)

    def receive(
        self,
        method: str,
        target: str,
        auth: str | None,
        body: bytes,
        version: str | None = None,
        environ: dict | None = None,
        truncated: bool = False,
    ) -> Any:
        """The answer to one ``/peer/*`` request, as a message: ``target`` is the request
        target as sent (path and query, what the peer signed), ``auth`` its signature header,
        ``body`` the whole body, ``version`` the :data:`~kvraft.peer.messages.VERSION_HEADER`
        value if any. ``environ`` (the WSGI environ) is needed only for the stream upgrade,
        which serves the stream on the calling thread until the peer closes it and then raises
        ``StopIteration`` (the server closes the connection without another byte).
        ``truncated``: the body ended before its declared length.

        Checks, in order: the signature (each is accepted once), truncation and the protocol
        version, the path, the method, the body. Raises :class:`Refused` when one fails (the
        handler was not called), and what the handler raises. No HTTP status here."""
        why = self.verify(auth, method, target, body)
        if why:
            raise Refused(m.Refusal.BAD_SIGNATURE, why)
        if truncated:
            raise Refused(m.Refusal.MALFORMED, "peer message truncated")
        if version is not None and version != str(m.VERSION):
            raise Refused(
                m.Refusal.MALFORMED,
                f"peer protocol version {version}, this node speaks {m.VERSION}",
            )
        parts = urlsplit(target)
        path = parts.path
        if path == STREAM_PATH:
            if method != "POST":
                raise Refused(m.Refusal.WRONG_METHOD, f"{path} takes POST, not {method}", "POST")
            if environ is None:
                raise Refused(m.Refusal.MALFORMED, "this transport cannot hand a connection over")
            message = stream.upgrade(environ, self._stream_handlers(), self.max_body)
            raise Refused(m.Refusal.MALFORMED, message)
        kind = m.BY_PATH.get(path)
        if kind is None or kind not in self._handlers:
            raise Refused(m.Refusal.NO_SUCH_MESSAGE, f"no peer message at {path}")
        if method != kind.METHOD:
            raise Refused(
                m.Refusal.WRONG_METHOD, f"{path} takes {kind.METHOD}, not {method}", kind.METHOD
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            decoded = kind.from_wire(query, body)
        except ValueError as exc:  # MessageError
            raise Refused(m.Refusal.MALFORMED, str(exc)) from None
        answer = self.dispatch(decoded)
        if isinstance(answer, m.WatchBatch) and answer.gone:
            raise Refused(m.Refusal.GONE, "unknown or expired change subscription")
        return answer

    def _stream_handlers(self) -> dict[int, Callable[[bytes], bytes]]:
        def apply(payload: bytes) -> bytes:
            answer = self.dispatch(m.Apply.from_wire({}, payload))
            return m.encode_results(answer.results)

        def read(payload: bytes) -> bytes:
            answer = self.dispatch(m.ReadKeys.from_frame(payload))
            return answer.to_wire().body

        return {m.STREAM_APPLY: apply, m.STREAM_GET: read}
