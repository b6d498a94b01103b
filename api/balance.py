"""Load balancing at the partition leader: data requests (``/kv...``) that reach the Raft leader
are served by an active node chosen by policy, the leader included, by forwarding them over a
persistent peer connection (or, with ``?redirect=1``, by a 307 to that node).

A forward that could not be delivered is retried on another node. One that may have been
delivered is retried only for reads; for a write the client gets an honest 502 saying the
outcome is unknown. Forwarded requests carry ``X-Kvraft-Via`` and are never forwarded again.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, Response, g, request

from kvraft.core.balance import Balancer
from kvraft.errors import Unavailable
from kvraft.peer import PeerConnectError, PeerError

from . import kv
from .ports import Cluster, Forwarded, PeerCalls

VIA = "X-Kvraft-Via"
PASS_REQUEST = ("Content-Type", "Authorization", "Accept")
PASS_RESPONSE = (
    "Content-Type",
    "ETag",
    "X-Kvraft-Version",
    "X-Kvraft-Node",
    "X-Kvraft-Map-Epoch",
    "Location",
    "Allow",
)
SAFE = ("GET", "HEAD")
# the WSGI environ names of PASS_REQUEST
_PASS_ENV = [
    (h, "CONTENT_TYPE" if h == "Content-Type" else "HTTP_" + h.upper().replace("-", "_"))
    for h in PASS_REQUEST
]


def balanced(node: Cluster, balancer: Balancer, method: str, local, forward, unknown):
    """The leader's choice for one request: ``local()`` when it picks this node, else
    ``forward(target)``; a forward never delivered (PeerConnectError) goes to another node, as
    does a read whose answer was lost; a write whose answer was lost is ``unknown(target,
    exc)`` (an honest 502). ``local`` releases the balancer's slot for this node itself (it
    may answer after this returns); forwards are released here. Shared by Flask and the fast
    path, so both balance the same way."""
    active = [n for n in node.members() if node.serving(n)]
    tried: list[str] = []
    loads = node.peer_loads()
    for _ in range(len(active) + 1):
        target = balancer.choose(active, exclude=tried, reported=loads)
        if target is None:
            break
        if target == node.id:
            node.count("balanced_local")
            return local()
        try:
            return forward(target)
        except PeerConnectError:
            tried.append(target)  # never delivered: another node may serve it
        except PeerError as exc:
            if method not in SAFE:
                node.count("forwards_failed")
                return unknown(target, exc)
            tried.append(target)
        finally:
            balancer.done(target)
    raise Unavailable("no active node could serve the request")


def forward_request(
    node: Cluster,
    peers: PeerCalls,
    target: str,
    method: str,
    raw_path: str,
    body: bytes,
    headers: dict[str, str],
) -> Forwarded:
    """Send a client request to ``target`` through ``peers`` as the leader ``node``'s forward;
    the peer's response. Blocks up to twice the peer timeout; raises ``PeerError`` as
    :meth:`api.ports.PeerCalls.forward` does."""
    headers = {**headers, VIA: node.id}
    resp = peers.forward(
        target,
        method,
        raw_path,
        body,
        headers,
        timeout=2 * node.config.peer_timeout + 1,
        idempotent=method in SAFE,
    )
    node.count("forwards")
    return resp


def forward_headers(environ: dict) -> dict[str, str]:
    """The client's request headers a forward passes on (:data:`PASS_REQUEST`)."""
    return {h: environ[k] for h, k in _PASS_ENV if k in environ}


def answer_headers(resp: Forwarded, via: str) -> list[tuple[str, str]]:
    """The headers of a forwarded answer: the peer's :data:`PASS_RESPONSE` ones, and ``VIA``."""
    got = resp.headers
    return [*((h, got[h.lower()]) for h in PASS_RESPONSE if h.lower() in got), (VIA, via)]


def unknown(target: str, exc: Exception, via: str) -> kv.Answer:
    """The honest 502 for a forwarded write whose answer was lost."""
    status, body, headers = kv.error(502, "forward_failed", unknown_message(target, exc))
    return status, body, [*headers, (VIA, via)]


def raw_path(environ: dict) -> str:
    """The request target as the client sent it (percent-encoded, ASCII)."""
    raw = environ.get("RAW_URI")
    if raw:
        return raw
    path = quote(environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace"), "/")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def unknown_message(target: str, exc: Exception) -> str:
    return (
        f"node {target} took the write but did not answer ({exc}); "
        "it may or may not have been applied"
    )


def register(
    app: Flask, node: Cluster, peers: PeerCalls, read_body, balancer: Balancer, refused=None
) -> None:
    """Install the balancing hook (forwards go through ``peers``); ``read_body(limit)`` reads a
    request body within a limit; ``refused()`` raises what the chosen node would answer with an
    error, before a redirect."""
    body_limit = 6 * node.config.max_value_bytes + 1024

    @app.before_request
    def _balance():
        if (
            not (request.path == "/kv" or request.path.startswith("/kv/"))
            or request.routing_exception is not None  # 404, 405: answered here
            or request.headers.get(VIA)
            or not node.is_leader()
        ):
            return None

        def local():
            g.balanced = node.id  # served here; released in teardown
            return None

        def forward(target: str):
            if request.args.get("redirect") not in (None, "", "0"):
                if refused is not None:
                    refused()
                return _redirect(node, target)
            # a PUT carries the raw value: refuse it here rather than forward it
            body = read_body(node.config.max_value_bytes if request.method == "PUT" else body_limit)
            return _forward(node, peers, target, body)

        return balanced(
            node,
            balancer,
            request.method,
            local,
            forward,
            lambda target, exc: _unknown(node, target, exc),
        )

    @app.teardown_request
    def _release(_exc):
        target = g.pop("balanced", None)
        if target is not None:
            balancer.done(target)


def _forward(node: Cluster, peers: PeerCalls, target: str, body: bytes) -> Response:
    environ = request.environ
    resp = forward_request(
        node, peers, target, request.method, raw_path(environ), body, forward_headers(environ)
    )
    return Response(resp.body, resp.status, answer_headers(resp, node.id))


def _redirect(node: Cluster, target: str) -> Response:
    path = raw_path(request.environ)
    out = Response(status=307)
    scheme = "https" if node.config.tls_cert else "http"  # the peers serve what this node does
    out.headers["Location"] = f"{scheme}://{node.address_of(target)}{path}"
    out.headers[VIA] = node.id
    return out


def _unknown(node: Cluster, target: str, exc: Exception) -> Response:
    status, body, headers = unknown(target, exc, node.id)
    return Response(body, status, headers)
