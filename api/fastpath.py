"""A plain-WSGI fast path in front of Flask for the hottest requests.

Served here without Flask's request machinery:
``POST /peer/stream`` (the upgrade to a peer stream, :mod:`kvraft.peer.stream`, which then
carries every replicated write and every read of a key this node does not hold) and ``POST
/peer/apply`` (anti-entropy and hint deliveries), both answered by the node's peer dispatcher
(:class:`kvraft.peer.server.PeerServer`) as Flask's peer rule answers the others, and the
plain forms of the public ``GET /kv/<key>`` and ``PUT /kv/<key>`` (no query parameters but
``r``/``w``, a Content-Length body), balanced at the leader with the same decision as Flask's
hook (:func:`api.balance.balanced`). Everything else (explain, redirects, chunked uploads,
unusual requests) goes to Flask, which answers the same way.
The public requests go through the same handler as Flask's (:mod:`api.kv`) and errors
through the same table (:mod:`api.errors`).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from kvraft import peerauth
from kvraft.core.balance import Balancer
from kvraft.errors import KvError
from kvraft.keys import check_key, check_level
from kvraft.peer import Apply, PeerConnectError, PeerError
from kvraft.peer.server import STREAM_PATH

from . import kv
from .access import Policy
from .balance import answer_headers, balanced, forward_headers, forward_request, raw_path, unknown
from .httpd import BodyError
from .kv import KeyHandler, error_of, stamps
from .kv import error as _error
from .metrics import Metrics
from .ports import Cluster, PeerCalls, PeerDispatcher

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    201: "CREATED",
    400: "BAD REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    405: "METHOD NOT ALLOWED",
    413: "REQUEST ENTITY TOO LARGE",
    500: "INTERNAL SERVER ERROR",
    502: "BAD GATEWAY",
    503: "SERVICE UNAVAILABLE",
}
_KV_ROUTE = "/kv/<key:key>"  # the Flask rule, so both paths share metric labels
# Rules served here (Flask's syntax) and their methods: the /kv one is also a Flask rule (which
# serves what this path passes on); the peer ones exist only here. Any other method of a peer
# route is a 405 with Allow. tests/integration/test_openapi.py checks these against the document.
PEER_ROUTES = {Apply.PATH: (Apply.METHOD,), STREAM_PATH: ("POST",)}
ROUTES = {_KV_ROUTE: ("GET", "PUT"), **PEER_ROUTES}


class FastPath:
    def __init__(
        self,
        app,
        cluster: Cluster,
        peer_calls: PeerCalls,
        keys: KeyHandler,
        metrics: Metrics,
        max_peer_body: int,
        balancer: Balancer,
        peers: PeerDispatcher,
        policy: Policy,
    ) -> None:
        """``app`` is the WSGI app behind (Flask); ``peer_calls`` carries the leader's
        forwards, ``peers`` answers the peer routes served here."""
        self.app = app
        self.balancer = balancer
        self.peer_calls = peer_calls
        self.cluster, self.keys = cluster, keys
        self.metrics = metrics
        self.peers, self.policy = peers, policy
        self.token = cluster.config.token.encode()
        self.max_peer_body = max_peer_body

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/kv" or path.startswith("/kv/"):
            if environ.get("HTTP_X_KVRAFT_VIA") is not None:  # the leader counts its forwards
                return self._kv(environ, start_response, path)
            activity = self.cluster.activity  # this node's own clients' requests: its load, told
            activity.enter()  # to the leader's balancer in pings
            try:
                return self._kv(environ, start_response, path)
            finally:
                activity.leave()
        return self._other(environ, start_response, path, environ.get("REQUEST_METHOD"))

    def _kv(self, environ, start_response, path: str):
        if len(path) > 4 and environ.get("REQUEST_METHOD") in ("GET", "PUT"):
            return self._public(environ, start_response, path, environ["REQUEST_METHOD"])
        return self.app(environ, start_response)

    def _other(self, environ, start_response, path: str, method: str | None):
        if path in PEER_ROUTES:
            return self._peer(environ, start_response)
        return self.app(environ, start_response)

    # -- public --------------------------------------------------------------------------------

    def _public(self, environ, start_response, path: str, method: str):
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        level_name = "r" if method == "GET" else "w"
        if set(params) - {level_name} or method == "PUT" and not environ.get("CONTENT_LENGTH"):
            return self.app(environ, start_response)  # Flask handles the general case
        started = time.perf_counter()
        if self.token:
            refusal = self.policy.check(method, path, environ.get("HTTP_AUTHORIZATION"), False)
            if refusal is not None:
                status, body, headers = _error(refusal.status, refusal.code, refusal.message)
                return self._answer(
                    start_response, method, started, status, body, [*headers, *refusal.headers]
                )
        if environ.get("HTTP_X_KVRAFT_VIA") is None and self.cluster.is_leader():
            status, body, headers = self._balanced(environ, path, method, params)
        else:
            status, body, headers = self._serve(environ, path, method, params)
        return self._answer(start_response, method, started, status, body, headers)

    def _serve(self, environ, path: str, method: str, params: dict) -> kv.Answer:
        """This node coordinates the read or write."""
        try:
            key = path[4:].encode("latin-1").decode("utf-8", "surrogateescape")
            if method == "GET":
                return self.keys.get(key, params.get("r"))
            owner = None if "HTTP_X_KVRAFT_VIA" in environ else self.keys.kv.write_owner(key)
            if owner is not None:  # a hot key (never a bad one: only written keys get marked)
                check_key(key)  # a client's mistake is a 400 here, never a forward's 502
                check_level(params.get("w"), "quorum", "w")
                answer = self._to_owner(environ, owner)
                if answer is not None:
                    return answer
            return self.keys.put(key, params.get("w"), lambda limit: self._value(environ, limit))
        except BodyError:
            raise  # the body broke (malformed, late, the client left): the server answers it
        except Exception as exc:  # noqa: BLE001 - one table answers every error (api.errors)
            return error_of(exc)

    def _to_owner(self, environ, owner: str) -> kv.Answer | None:
        """Forward a PUT of a hot key to its owner (:mod:`kvraft.hotkeys`); None when it could
        not be delivered (this node writes it then). Sent but unanswered: the honest 502."""
        cluster = self.cluster
        try:
            answer = self._forward(environ, owner, "PUT")
        except PeerConnectError:
            self.keys.kv.owner_failed(owner)
            return None
        except PeerError as exc:
            self.keys.kv.owner_failed(owner)
            cluster.count("forwards_failed")
            return unknown(owner, exc, cluster.id)
        cluster.count("writes_to_owner")
        return answer

    def _forward(self, environ, target: str, method: str) -> kv.Answer:
        """Send the client's request to ``target`` (``forward_request``) and answer with its
        answer; raises PeerError as that does."""
        body = self._value(environ, self.keys.max_value_bytes) if method == "PUT" else b""
        resp = forward_request(
            self.cluster,
            self.peer_calls,
            target,
            method,
            raw_path(environ),
            body,
            forward_headers(environ),
        )
        return resp.status, resp.body, answer_headers(resp, self.cluster.id)

    def _value(self, environ, limit: int) -> bytes:
        """The PUT body (read once, kept for a second attempt); 413 past ``limit``."""
        value = environ.get("kvraft.body")
        if value is None:
            length = int(environ["CONTENT_LENGTH"])  # ValueError: 400
            kv.too_large(length, limit)
            value = environ["wsgi.input"].read(length) if length else b""
            environ["kvraft.body"] = value
        return value

    def _balanced(self, environ, path: str, method: str, params: dict) -> kv.Answer:
        """At the leader: serve here or forward to the node the balancer picks."""
        cluster = self.cluster

        def local():
            try:
                return self._serve(environ, path, method, params)
            finally:
                self.balancer.done(cluster.id)

        def forward(target: str):
            return self._forward(environ, target, method)

        try:
            return balanced(
                cluster,
                self.balancer,
                method,
                local,
                forward,
                lambda target, exc: unknown(target, exc, cluster.id),
            )
        except BodyError:
            raise  # as in _serve: the server answers it
        except Exception as exc:  # noqa: BLE001 - one table answers every error (api.errors)
            return error_of(exc)

    def _answer(self, start_response, method, started, status, body, headers):
        self.metrics.observe(method, _KV_ROUTE, status, time.perf_counter() - started)
        return self._send(start_response, status, body, headers, self.cluster.map_epoch())

    # -- peers ---------------------------------------------------------------------------------

    def _peer(self, environ, start_response):
        """Read the body (the signature covers it), then the peer dispatcher answers: it checks
        the signature and the method. The stream upgrade serves the stream on this thread."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.max_peer_body:
            status, body, headers = _error(413, "too_large", "peer message too large")
            return self._send(start_response, status, body, headers)
        data = environ["wsgi.input"].read(length) if length else b""
        try:
            reply = self.peers.handle(
                environ["REQUEST_METHOD"],
                environ.get("RAW_URI") or environ.get("PATH_INFO", ""),
                environ.get(peerauth.ENVIRON),
                data,
                environ.get("HTTP_X_KVRAFT_PEER_VERSION"),
                environ,
                truncated=len(data) != length,
            )
        except KvError as exc:
            status, body, headers = error_of(exc)
            return self._send(start_response, status, body, headers)
        headers = [("Content-Type", reply.content_type), *reply.headers]
        return self._send(start_response, reply.status, reply.body, headers)

    def _send(self, start_response, status: int, body: bytes, headers: list, epoch=None):
        present = [h for h, _v in headers]
        headers = [*headers, *stamps(status, present, self.cluster.id, epoch)]
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {_REASONS.get(status, 'ERROR')}", headers)
        return [body]
