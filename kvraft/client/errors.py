"""The typed errors of the kvraft client, and how an HTTP status or an error code maps to one.

Pure: no network, no environment. :class:`Unavailable` is the one error that means "the outcome
is unknown" for a write (it may or may not become visible later); every other error means the
request was answered and changed nothing, except :class:`ServerError`, a server bug.
"""

from __future__ import annotations

from collections.abc import Sequence

RETRY_STATUSES = frozenset({502, 503, 504})


# -- errors --------------------------------------------------------------------------------------


class KvClientError(Exception):
    """Any failure of a client call. ``status`` is the HTTP status (None when there was none),
    ``code`` the server's error code (``not_found``, ``bad_request``, ...), ``node`` the URL of
    the node that answered (None when none did)."""

    def __init__(
        self, message: str, status: int | None = None, code: str = "error", node: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.node = node


class NotFound(KvClientError):
    """404: the key is absent or deleted (or the node does not have that route)."""


class BadRequest(KvClientError):
    """A 4xx other than 401/403/404: the request was refused and changed nothing."""


class Unauthorized(KvClientError):
    """401/403: a missing or wrong bearer token (``KVRAFT_TOKEN``)."""


class ServerError(KvClientError):
    """A 5xx that is not a sign of unavailability (a server bug); never retried."""


class Unavailable(KvClientError):
    """No node could serve the request. ``errors`` lists (node URL, reason) per attempt.

    For a write this means the outcome is unknown: it may or may not become visible later."""

    def __init__(
        self,
        message: str,
        errors: Sequence[tuple[str, str]] = (),
        status: int | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(message, status, "unavailable", node)
        self.errors = list(errors)


CODE_STATUS = {
    "not_found": 404,
    "bad_request": 400,
    "too_large": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "unavailable": 503,
}


def error_from_status(status: int, code: str, message: str, node: str | None) -> KvClientError:
    """The typed error for an HTTP status (see the class docstrings)."""
    if status == 404:
        return NotFound(message, status, code, node)
    if status in (401, 403):
        return Unauthorized(message, status, code, node)
    if status in RETRY_STATUSES:
        return Unavailable(message, [(node or "?", f"HTTP {status}: {message}")], status, node)
    if 400 <= status < 500:
        return BadRequest(message, status, code, node)
    return ServerError(message, status, code, node)


def error_from_code(code: str, message: str, node: str | None) -> KvClientError:
    """The typed error for an error code sent without a status (websocket, NDJSON streams);
    codes without a status of their own (``internal``, FTP failures) are :class:`ServerError`
    unless they say ``unavailable``."""
    status = CODE_STATUS.get(code, 503 if "unavailable" in code else 500)
    err = error_from_status(status, code, message, node)
    err.status = None
    return err
