"""Load balancing at the partition leader: data requests (``/kv...``) that reach the Raft leader
are served by an active node chosen by policy, the leader included, by forwarding them over a
persistent peer connection (or, with ``?redirect=1``, by a 307 to that node).

A forward that could not be delivered is retried on another node. One that may have been
delivered is retried only for reads; for a write the client gets an honest 502 saying the
outcome is unknown. Forwarded requests carry ``X-Kvraft-Via`` and are never forwarded again.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, Response, g, jsonify, request

from kvraft.balance import Balancer
from kvraft.errors import Unavailable
from kvraft.node import Node
from kvraft.transport import PeerConnectError, PeerError

VIA = "X-Kvraft-Via"
PASS_REQUEST = ("Content-Type", "Authorization", "Accept")
PASS_RESPONSE = ("Content-Type", "ETag", "X-Kvraft-Version", "X-Kvraft-Node", "Location")
SAFE = ("GET", "HEAD")


def register(app: Flask, node: Node, read_body) -> Balancer:
    """Install the balancing hook; ``read_body(limit)`` reads a request body within a limit."""
    balancer = Balancer(node.config.balance)
    body_limit = 6 * node.config.max_value_bytes + 1024

    @app.before_request
    def _balance():
        if (not (request.path == "/kv" or request.path.startswith("/kv/"))
                or request.headers.get(VIA) or not node.meta.is_leader()):
            return None
        active = [n for n in node.members() if node.serving(n)]
        body = None
        tried: list[str] = []
        for _ in range(len(active) + 1):
            target = balancer.choose(active, exclude=tried)
            if target is None:
                break
            if target == node.id:
                g.balanced = target  # served here; released in teardown
                node.count("balanced_local")
                return None
            try:
                if request.args.get("redirect") not in (None, "", "0"):
                    return _redirect(node, target)
                if body is None:
                    # a PUT carries the raw value: refuse it here rather than forward it
                    body = read_body(node.config.max_value_bytes if request.method == "PUT"
                                     else body_limit)
                return _forward(node, target, body)
            except PeerConnectError:
                tried.append(target)  # never delivered: another node may serve it
            except PeerError as exc:
                if request.method not in SAFE:
                    node.count("forwards_failed")
                    return _unknown(node, target, exc)
                tried.append(target)
            finally:
                balancer.done(target)
        raise Unavailable("no active node could serve the request")

    @app.teardown_request
    def _release(_exc):
        target = g.pop("balanced", None)
        if target is not None:
            balancer.done(target)

    return balancer


def _forward(node: Node, target: str, body: bytes) -> Response:
    headers = {h: request.headers[h] for h in PASS_REQUEST if h in request.headers}
    headers[VIA] = node.id
    path = _raw_path()
    resp = node.peers.request(node._addr(target), request.method, path, body, headers,
                              timeout=2 * node.config.peer_timeout + 1,
                              idempotent=request.method in SAFE)
    node.count("forwards")
    out = Response(resp.body, resp.status)
    for h in PASS_RESPONSE:
        if h.lower() in resp.headers:
            out.headers[h] = resp.headers[h.lower()]
    out.headers[VIA] = node.id
    return out


def _redirect(node: Node, target: str) -> Response:
    path = _raw_path()
    out = Response(status=307)
    out.headers["Location"] = f"http://{node._addr(target)}{path}"
    out.headers[VIA] = node.id
    return out


def _raw_path() -> str:
    """The request target as the client sent it (percent-encoded, ASCII)."""
    raw = request.environ.get("RAW_URI")
    if raw:
        return raw
    path = quote(request.path, safe="/")
    return f"{path}?{request.query_string.decode('latin-1')}" if request.query_string else path


def _unknown(node: Node, target: str, exc: Exception) -> Response:
    resp = jsonify({"error": "forward_failed",
                    "message": f"node {target} took the write but did not answer ({exc}); "
                               "it may or may not have been applied"})
    resp.status_code = 502
    return resp
