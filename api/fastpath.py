"""A plain-WSGI fast path in front of Flask for the hottest requests.

Served here without Flask's request machinery (about ten times less work per request):
``POST /peer/stream`` (the upgrade to a peer stream, :mod:`kvraft.stream`, which then carries
every replicated write and every read of a key this node does not hold), ``POST /peer/apply``
(anti-entropy and hint deliveries), and the plain forms of the public ``GET /kv/<key>`` and
``PUT /kv/<key>`` (no query parameters but ``r``/``w``, a Content-Length body), balanced at the
leader with the same decision as Flask's hook (:func:`api.balance.balanced`). Everything else
(explain, redirects, chunked uploads, unusual requests) goes to Flask, which answers the same
way.
The public requests go through the same handler as Flask's (:mod:`api.kv`) and errors
through the same table (:mod:`api.errors`).
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl

from kvraft import peerauth, stream
from kvraft.core.balance import Balancer
from kvraft.node import Node, result_to_json
from kvraft.wire import WireError, decode_records, encode_records

from . import kv
from .access import Policy
from .balance import answer_headers, balanced, forward_headers, forward_request, raw_path, unknown
from .httpd import BodyError
from .kv import JSON, KeyHandler, error_of, stamps
from .kv import error as _error
from .metrics import Metrics
from .ports import Cluster

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
PEER_ROUTES = {"/peer/apply": ("POST",), stream.PATH: ("POST",)}
ROUTES = {_KV_ROUTE: ("GET", "PUT"), **PEER_ROUTES}


class FastPath:
    def __init__(
        self,
        app,
        node: Node,
        cluster: Cluster,
        keys: KeyHandler,
        metrics: Metrics,
        max_peer_body: int,
        balancer: Balancer,
        verifier: peerauth.Verifier,
        policy: Policy,
    ) -> None:
        self.app = app
        self.balancer = balancer
        self.node = node  # the peer routes' (they move to kvraft.peer.server)
        self.cluster, self.keys = cluster, keys
        self.metrics = metrics
        self.verifier, self.policy = verifier, policy
        self.token = node.config.token.encode()
        self.max_peer_body = max_peer_body
        self._handlers = {stream.APPLY: self._apply_frame, stream.GET: self._get_frame}

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
        if path == "/peer/apply":
            return self._peer(environ, start_response, self._apply, path, method)
        if path == stream.PATH:
            return self._peer(environ, start_response, self._stream, path, method)
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
                status, body, headers = _error(401, refusal.code, refusal.message)
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
            return self.keys.put(key, params.get("w"), lambda limit: self._value(environ, limit))
        except BodyError:
            raise  # the body broke (malformed, late, the client left): the server answers it
        except Exception as exc:  # noqa: BLE001 - one table answers every error (api.errors)
            return error_of(exc)

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
        node, cluster = self.node, self.cluster

        def local():
            try:
                return self._serve(environ, path, method, params)
            finally:
                self.balancer.done(cluster.id)

        def forward(target: str):
            body = self._value(environ, self.keys.max_value_bytes) if method == "PUT" else b""
            resp = forward_request(
                node, target, method, raw_path(environ), body, forward_headers(environ)
            )
            return resp.status, resp.body, answer_headers(resp, cluster.id)

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
        return self._send(start_response, status, body, headers)

    # -- peers ---------------------------------------------------------------------------------

    def _peer(self, environ, start_response, handler, path: str, method: str | None):
        """Read the body (the signature covers it), check the signature and the method, then
        handle."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.max_peer_body:
            status, body, headers = _error(413, "too_large", "peer message too large")
            return self._send(start_response, status, body, headers)
        data = environ["wsgi.input"].read(length) if length else b""
        why = self.verifier.check(
            environ.get(peerauth.ENVIRON),
            environ["REQUEST_METHOD"],
            environ.get("RAW_URI") or environ.get("PATH_INFO", ""),
            data,
        )
        if why:
            status, body, headers = _error(403, "forbidden", why)
        elif method not in PEER_ROUTES[path]:
            allow = ", ".join(PEER_ROUTES[path])
            status, body, headers = _error(
                405, "method_not_allowed", f"{path} takes {allow}, not {method}"
            )
            headers.append(("Allow", allow))
        elif len(data) != length:
            status, body, headers = _error(400, "bad_request", "peer message truncated")
        else:
            try:
                status, body, headers = handler(environ, data)
            except WireError as exc:
                status, body, headers = _error(400, "bad_request", f"bad peer message: {exc}")
        return self._send(start_response, status, body, headers)

    def _apply(self, environ, data: bytes):
        results = self.node.apply_local(list(decode_records(data)))
        body = json.dumps([result_to_json(r) for r in results]).encode()
        return 200, body, [("Content-Type", JSON)]

    def _stream(self, environ, data: bytes):
        """Upgrade to a replica-write stream (:mod:`kvraft.stream`), served on this
        connection's thread until the peer closes it."""
        return _error(
            400, "bad_request", stream.upgrade(environ, self._handlers, self.max_peer_body)
        )

    def _apply_frame(self, payload: bytes) -> bytes:
        return stream.encode_results(self.node.apply_local(list(decode_records(payload))))

    def _get_frame(self, payload: bytes) -> bytes:
        return encode_records(self.node.storage.get_many(stream.decode_keys(payload)))

    def _send(self, start_response, status: int, body: bytes, headers: list):
        present = [h for h, _v in headers]
        headers = [*headers, *stamps(status, present, self.cluster.id)]
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {_REASONS.get(status, 'ERROR')}", headers)
        return [body]
