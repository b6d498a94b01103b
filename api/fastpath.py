"""A plain-WSGI fast path in front of Flask for the hottest requests.

Served here without Flask's request machinery (about ten times less work per request):
``POST /peer/stream`` (the upgrade to a peer stream, :mod:`kvraft.peer.stream`, which then
carries every replicated write and every read of a key this node does not hold) and ``POST
/peer/apply`` (anti-entropy and hint deliveries), both answered by the node's peer dispatcher
(:class:`kvraft.peer.server.PeerServer`) as Flask's peer rule answers the others, and the
plain forms of the public ``GET /kv/<key>`` and ``PUT /kv/<key>`` (no query parameters but
``r``/``w``, a Content-Length body), balanced at the leader with the same decision as Flask's
hook (:func:`api.balance.balanced`). Everything else (explain, redirects, chunked uploads,
unusual requests) goes to Flask, which answers the same way.
Errors use the same JSON shape and codes as :mod:`api.app`.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl

from kvraft import peerauth
from kvraft.core.balance import Balancer
from kvraft.errors import KvError, TooLarge
from kvraft.keys import check_level
from kvraft.node import Node
from kvraft.peer import Apply, PeerServer
from kvraft.peer.server import STREAM_PATH
from kvraft.storage import StorageClosed

from .access import Policy
from .balance import PASS_REQUEST, PASS_RESPONSE, VIA, balanced, forward_request, unknown_message
from .httpd import BodyError
from .metrics import Metrics

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
_PASS_ENV = [
    (h, "CONTENT_TYPE" if h == "Content-Type" else "HTTP_" + h.upper().replace("-", "_"))
    for h in PASS_REQUEST
]
_KV_ROUTE = "/kv/<key:key>"  # the Flask rule, so both paths share metric labels
JSON = "application/json"
# Rules served here (Flask's syntax) and their methods: the /kv one is also a Flask rule (which
# serves what this path passes on); the peer ones exist only here. Any other method of a peer
# route is a 405 with Allow. tests/integration/test_openapi.py checks these against the document.
PEER_ROUTES = {Apply.PATH: (Apply.METHOD,), STREAM_PATH: ("POST",)}
ROUTES = {_KV_ROUTE: ("GET", "PUT"), **PEER_ROUTES}


class FastPath:
    def __init__(
        self,
        app,
        node: Node,
        metrics: Metrics,
        max_peer_body: int,
        balancer: Balancer,
        peers: PeerServer,
        policy: Policy,
    ) -> None:
        self.app = app
        self.balancer = balancer
        self.node = node
        self.metrics = metrics
        self.peers, self.policy = peers, policy
        self.token = node.config.token.encode()
        self.max_peer_body = max_peer_body

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/kv" or path.startswith("/kv/"):
            if environ.get("HTTP_X_KVRAFT_VIA") is not None:  # the leader counts its forwards
                return self._kv(environ, start_response, path)
            activity = self.node.activity  # this node's own clients' requests: its load, told
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
        node = self.node
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        level_name = "r" if method == "GET" else "w"
        if set(params) - {level_name} or method == "PUT" and not environ.get("CONTENT_LENGTH"):
            return self.app(environ, start_response)  # Flask handles the general case
        started = time.perf_counter()
        if self.token:
            refusal = self.policy.check(method, path, environ.get("HTTP_AUTHORIZATION"), False)
            if refusal is not None:
                status, body, headers = _error(401, refusal.code, refusal.message)
                return self._answer(
                    start_response, method, started, status, body, [*headers, *refusal.headers]
                )
        if environ.get("HTTP_X_KVRAFT_VIA") is None and node.meta.is_leader():
            status, body, headers = self._balanced(environ, path, method, params)
        else:
            status, body, headers = self._serve(environ, path, method, params)
        return self._answer(start_response, method, started, status, body, headers)

    def _serve(self, environ, path: str, method: str, params: dict) -> tuple[int, bytes, list]:
        """This node coordinates the read or write."""
        node = self.node
        try:
            key = path[4:].encode("latin-1").decode("utf-8", "surrogateescape")
            if method == "GET":
                rec = node.get(key, check_level(params.get("r"), "one", "r"))
                version = rec.version.encode()
                return (
                    200,
                    rec.value,
                    [
                        ("Content-Type", "application/octet-stream"),
                        ("ETag", f'"{version}"'),
                        ("X-Kvraft-Version", version),
                    ],
                )
            level = check_level(params.get("w"), "quorum", "w")
            value = self._value(environ)
            res = node.put(key, value, level)
            body = json.dumps(res.to_json(), separators=(",", ":")).encode()
            return 201 if res.created else 200, body, [("Content-Type", JSON)]
        except KvError as exc:
            return _error(exc.status, exc.code, exc.message)
        except StorageClosed:
            return _error(503, "unavailable", "node is shutting down")
        except ValueError as exc:  # a Content-Length that is not a number
            return _error(400, "bad_request", str(exc))
        except BodyError:
            raise  # the body broke (malformed, late, the client left): the server answers it
        except Exception as exc:  # noqa: BLE001 - the same last resort as Flask's handler
            log.exception("unhandled error")
            return _error(500, "internal", f"{type(exc).__name__}: {exc}")

    def _value(self, environ) -> bytes:
        """The PUT body (read once, kept for a second attempt); 413 past max_value_bytes."""
        value = environ.get("kvraft.body")
        if value is None:
            limit = self.node.config.max_value_bytes
            length = int(environ["CONTENT_LENGTH"])
            if length > limit:
                raise TooLarge(f"value (max_value_bytes) exceeds {limit} bytes")
            value = environ["wsgi.input"].read(length) if length else b""
            environ["kvraft.body"] = value
        return value

    def _balanced(self, environ, path: str, method: str, params: dict):
        """At the leader: serve here or forward to the node the balancer picks."""
        node = self.node

        def local():
            try:
                return self._serve(environ, path, method, params)
            finally:
                self.balancer.done(node.id)

        def forward(target: str):
            body = self._value(environ) if method == "PUT" else b""
            headers = {h: environ[k] for h, k in _PASS_ENV if k in environ}
            resp = forward_request(
                node, target, method, environ.get("RAW_URI") or path, body, headers
            )
            out = [(h, resp.headers[h.lower()]) for h in PASS_RESPONSE if h.lower() in resp.headers]
            return resp.status, resp.body, [*out, (VIA, node.id)]

        def unknown(target: str, exc: Exception):
            status, body, headers = _error(502, "forward_failed", unknown_message(target, exc))
            return status, body, [*headers, (VIA, node.id)]

        try:
            return balanced(node, self.balancer, method, local, forward, unknown)
        except KvError as exc:
            return _error(exc.status, exc.code, exc.message)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))

    def _answer(self, start_response, method, started, status, body, headers):
        self.metrics.observe(method, _KV_ROUTE, status, time.perf_counter() - started)
        return self._send(start_response, status, body, headers)

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
            status, body, headers = _error(exc.status, exc.code, exc.message)
            return self._send(start_response, status, body, headers)
        headers = [("Content-Type", reply.content_type), *reply.headers]
        return self._send(start_response, reply.status, reply.body, headers)

    def _send(self, start_response, status: int, body: bytes, headers: list):
        headers = [*headers, ("Content-Length", str(len(body)))]
        if not any(h == "X-Kvraft-Node" for h, _v in headers):  # a forwarded answer keeps its
            headers.append(("X-Kvraft-Node", self.node.id))
        if status == 401 and not any(h == "WWW-Authenticate" for h, _v in headers):
            headers.append(("WWW-Authenticate", 'Bearer realm="kvraft"'))  # RFC 9110 11.6.1
        start_response(f"{status} {_REASONS.get(status, 'ERROR')}", headers)
        return [body]


def _error(status: int, code: str, message: str) -> tuple[int, bytes, list]:
    body = json.dumps({"error": code, "message": message}).encode()
    return status, body, [("Content-Type", JSON)]
