"""A plain-WSGI fast path for the two hottest peer endpoints, in front of Flask.

``POST /peer/apply`` (every replicated write) and ``GET /peer/get`` (every read that lands on a
node without the key) skip Flask's request machinery: they check the cluster secret, read the
body within the peer limit, call the node, and answer. Every other path goes to Flask.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs

from kvraft.node import Node, result_to_json
from kvraft.transport import SECRET_HEADER
from kvraft.wire import WireError, decode_records, encode_records

_SECRET_ENV = "HTTP_" + SECRET_HEADER.upper().replace("-", "_")


class PeerFastPath:
    def __init__(self, app, node: Node, max_body: int) -> None:
        self.app = app
        self.node = node
        self.secret = node.config.secret.encode()
        self.max_body = max_body

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/peer/apply" and method == "POST":
            handler = self._apply
        elif path == "/peer/get" and method == "GET":
            handler = self._get
        else:
            return self.app(environ, start_response)
        if not hmac.compare_digest(environ.get(_SECRET_ENV, "").encode(), self.secret):
            return self._answer(start_response, 403, _error("forbidden",
                                "peer endpoints need the cluster secret"), "application/json")
        try:
            status, body, ctype = handler(environ)
        except WireError as exc:
            status, body, ctype = 400, _error("bad_request", f"bad peer message: {exc}"), \
                "application/json"
        return self._answer(start_response, status, body, ctype)

    def _apply(self, environ):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.max_body:
            return 413, _error("too_large", "peer message too large"), "application/json"
        data = environ["wsgi.input"].read(length) if length else b""
        if len(data) != length:
            return 400, _error("bad_request", "peer message truncated"), "application/json"
        results = self.node.apply_local(list(decode_records(data)))
        return 200, json.dumps([result_to_json(r) for r in results]).encode(), "application/json"

    def _get(self, environ):
        key = parse_qs(environ.get("QUERY_STRING", "")).get("k", [""])[0]
        rec = self.node.storage.get(key)
        return 200, encode_records([rec] if rec else []), "application/octet-stream"

    def _answer(self, start_response, status: int, body: bytes, ctype: str):
        reason = {200: "OK", 400: "BAD REQUEST", 403: "FORBIDDEN", 413: "TOO LARGE"}[status]
        start_response(f"{status} {reason}", [("Content-Type", ctype),
                                              ("Content-Length", str(len(body))),
                                              ("X-Kvraft-Node", self.node.id)])
        return [body]


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()
