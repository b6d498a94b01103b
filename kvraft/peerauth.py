"""Keys derived from the cluster secret, and the proof a peer request carries instead of it.

The cluster secret never leaves the node. Each use gets its own key, derived with HKDF-SHA256
(RFC 5869) and a per-purpose label, so knowing one key (say, from a memory dump of a test) says
nothing about the others or the secret:

- :data:`PEER_HTTP`: peer requests (HTTP ``/peer/*`` and the peer stream upgrade) carry
  ``X-Kvraft-Auth: v1 <unix ms> <nonce> <hex HMAC-SHA256>`` over the method, the request target,
  the time, the nonce and the SHA-256 of the body (:func:`sign`). The receiver
  (:class:`Verifier`) accepts it within :data:`WINDOW_S` of its own clock and only once (the
  nonces of the window are remembered), so a recorded request cannot be replayed.
- :data:`RAFT`: pysyncobj's ``password`` (it encrypts and authenticates Raft traffic).

Pure functions and one thread-safe replay cache; no sockets, no HTTP framework.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HEADER = "X-Kvraft-Auth"
ENVIRON = "HTTP_X_KVRAFT_AUTH"
PEER_HTTP = b"kvraft peer-http v1"
RAFT = b"kvraft raft-password v1"
WINDOW_S = 30.0  # how far a request's time may be from the receiver's clock
MAX_NONCES = 1 << 20  # a replay cache bigger than this refuses until it ages (never grows more)
_EMPTY = hashlib.sha256(b"").digest()


def derive(secret: str, label: bytes) -> bytes:
    """The 32-byte key for ``label`` (HKDF-SHA256 of the secret, fixed salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"kvraft/v1", info=label).derive(
        secret.encode("utf-8")
    )


def raft_password(secret: str) -> str:
    """pysyncobj's password: a text form of the derived Raft key (never the secret itself)."""
    return derive(secret, RAFT).hex()


def _mac(key: bytes, method: str, target: str, ts: str, nonce: str, body_digest: bytes) -> str:
    msg = b"\n".join(
        (
            method.encode("latin-1"),
            target.encode("latin-1", "replace"),
            ts.encode(),
            nonce.encode(),
            body_digest,
        )
    )
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign(
    key: bytes, method: str, target: str, body: bytes = b"", now: Callable[[], float] = time.time
) -> str:
    """The ``X-Kvraft-Auth`` value for one request (``target``: path and query as sent)."""
    ts = str(int(now() * 1000))
    nonce = os.urandom(12).hex()
    digest = hashlib.sha256(body).digest() if body else _EMPTY
    return f"v1 {ts} {nonce} {_mac(key, method, target, ts, nonce, digest)}"


class Verifier:
    """Checks ``X-Kvraft-Auth`` values; thread-safe. ``now`` is injected (seconds)."""

    def __init__(
        self, key: bytes, now: Callable[[], float] = time.time, window: float = WINDOW_S
    ) -> None:
        self.key, self.now, self.window = key, now, window
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> expiry, oldest first
        self._lock = threading.Lock()

    def check(self, value: str | None, method: str, target: str, body: bytes = b"") -> str:
        """ "" when ``value`` proves a peer sent exactly this request, now and for the first
        time; otherwise the reason it does not (for the 403 message; says nothing secret)."""
        if not value:
            return "peer endpoints need a request signed with the cluster key (X-Kvraft-Auth)"
        parts = value.split(" ")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return "malformed X-Kvraft-Auth"
        _v, ts, nonce, given = parts
        if not 8 <= len(nonce) <= 64:
            return "malformed X-Kvraft-Auth"
        digest = hashlib.sha256(body).digest() if body else _EMPTY
        if not hmac.compare_digest(
            given.encode("latin-1", "replace"),
            _mac(self.key, method, target, ts, nonce, digest).encode(),
        ):
            return "wrong signature (not the cluster key, or the request was changed)"
        now = self.now()
        if abs(now - int(ts) / 1000) > self.window:
            return f"signed more than {self.window:g} s from this node's clock"
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return "replayed request"
            if len(self._seen) >= MAX_NONCES:
                return "too many signed requests in the window; retry"
            self._seen[nonce] = now + 2 * self.window
        return ""
