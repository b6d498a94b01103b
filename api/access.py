"""Who may do what over HTTP: the decisions, as functions of the request's method, path and
headers, shared by the Flask app (:mod:`api.app`) and the fast path (:mod:`api.fastpath`).

- ``/peer/*`` needs a request signed with the peer key (:mod:`kvraft.peerauth`): else 403.
- Cluster operations (:func:`is_admin`: membership, import, export) need
  ``Authorization: Bearer <admin token>`` or a signed peer request, even when the public API
  has no token: else 401 with ``WWW-Authenticate``.
- With a public token, every other route but ``/health`` and the dashboard page needs
  ``Bearer <token>`` (the admin token passes too): else 401.
- POST routes that take JSON (:data:`JSON_POSTS`) need ``Content-Type: application/json``
  (parameters allowed): else 415. A browser cannot send that type cross-origin without a CORS
  preflight, which this server never grants.
- Websocket upgrades need an ``Origin`` in the allow-list (:func:`default_origins`) or none at
  all (not a browser): else 403.

No Flask here: plain strings in, a refusal (status, code, message) or None out.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

BEARER_REALM = 'Bearer realm="kvraft"'
JSON_POSTS = ("/kv", "/import", "/cluster/members")
ADMIN_ROUTES = (("POST", "/cluster/members"), ("POST", "/import"), ("POST", "/export"))
OPEN_PATHS = ("/health",)


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", BEARER_REALM)] if self.status == 401 else []


def is_admin(method: str, path: str) -> bool:
    """Changes the cluster rather than a key."""
    if (method, path) in ADMIN_ROUTES:
        return True
    return method == "DELETE" and path.startswith("/cluster/members/")


def bearer(authorization: str | None) -> bytes:
    """The token of ``Bearer <token>`` exactly (one space, nothing around it), else b""."""
    if authorization and authorization.startswith("Bearer "):
        return authorization[7:].encode("latin-1", "replace")
    return b""


def _same(given: bytes, expected: bytes) -> bool:
    return bool(expected) and hmac.compare_digest(given, expected)


class Policy:
    """The credentials of one node: public ``token`` and ``admin_token`` (bytes, may be empty)."""

    def __init__(self, token: str, admin_token: str) -> None:
        self.token, self.admin = token.encode(), admin_token.encode()

    def check(
        self,
        method: str,
        path: str,
        authorization: str | None,
        peer_signed: bool,
        public_paths: Iterable[str] = (),
    ) -> Refusal | None:
        """The refusal for a non-peer route, or None. ``peer_signed``: the request carries a
        valid peer signature (a node acting for the cluster)."""
        given = bearer(authorization)
        if is_admin(method, path):
            if peer_signed or _same(given, self.admin):
                return None
            why = (
                "missing or wrong admin token"
                if self.admin
                else "this node has no admin token (KVRAFT_ADMIN_TOKEN)"
            )
            return Refusal(401, "unauthorized", f"cluster operations need the admin token: {why}")
        if (
            not self.token
            or path in OPEN_PATHS
            or path in public_paths
            or peer_signed
            or _same(given, self.token)
            or _same(given, self.admin)
        ):
            return None
        return Refusal(401, "unauthorized", "missing or wrong bearer token")


def check_json(method: str, path: str, content_type: str | None) -> Refusal | None:
    """415 for a JSON POST route whose body is not declared ``application/json``."""
    if method != "POST" or path not in JSON_POSTS:
        return None
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/json":
        return None
    return Refusal(
        415,
        "unsupported_media_type",
        f"POST {path} takes Content-Type: application/json, got {content_type!r}",
    )


def default_origins(addresses: Iterable[str]) -> tuple[str, ...]:
    """The Origins of a page served by this node: each ``host:port`` it is reached at, and the
    localhost forms of its port, over http and https."""
    out: list[str] = []
    for addr in addresses:
        if not addr:
            continue
        host, _, port = addr.rpartition(":")
        for h in dict.fromkeys((host, "localhost", "127.0.0.1", "[::1]")):
            for scheme in ("http", "https"):
                origin = f"{scheme}://{h.lower()}:{port}"
                if origin not in out:
                    out.append(origin)
    return tuple(out)


def normalize_origin(origin: str) -> str | None:
    """``scheme://host:port`` with the default port spelled out and the host lower-cased; None
    for anything that is not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    return f"{parts.scheme.lower()}://{host}:{port}"


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """No Origin (not a browser) or one in ``allowed`` ("*" allows any)."""
    if origin is None:
        return True
    allowed = tuple(allowed)
    if "*" in allowed:
        return True
    mine = normalize_origin(origin)
    return mine is not None and mine in {normalize_origin(a) for a in allowed}
