"""The one table from an exception to the HTTP answer: ``(status, code, message)``.

The store (:mod:`kvraft`) raises typed errors and knows no HTTP status; this module is where
each error class gets its status and its ``code`` (the ``"error"`` field of every JSON error
body and of websocket error messages). The fast path (:mod:`api.fastpath`), the Flask handlers
(:mod:`api.app`) and the websockets (:mod:`api.ws`) all answer through :func:`describe`, so the
same exception is the same answer on every path. An exception class is looked up along its MRO
(a subclass answers like its base unless it has its own row); anything not in the table is a
bug: 500 ``internal``.

Client input never gets a 500: a ``ValueError`` escaping a handler is input the handler did
not validate (a Content-Length that is not a number, a body that is not UTF-8): 400.

tests/unit/test_openapi_doc.py checks that every error class of kvraft has a row here and
that every row's status is the one the OpenAPI document (:data:`api.openapi.ERROR_CODES`)
gives its code. No Flask and no IO here.
"""

from __future__ import annotations

from collections.abc import Callable

from werkzeug.exceptions import HTTPException
from wsproto.utilities import RemoteProtocolError

from kvraft.errors import (
    BadRequest,
    ClockOffset,
    Conflict,
    KvError,
    NotFound,
    TooLarge,
    Unavailable,
)
from kvraft.report import FtpAuthFailed, FtpUnavailable
from kvraft.storage import StorageClosed

INTERNAL = (500, "internal")

# exception class -> (status, code); looked up along the exception's MRO
TABLE: dict[type[BaseException], tuple[int, str]] = {
    KvError: INTERNAL,
    BadRequest: (400, "bad_request"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    TooLarge: (413, "too_large"),
    Unavailable: (503, "unavailable"),
    ClockOffset: (503, "clock_offset"),
    FtpUnavailable: (503, "ftp_unavailable"),
    FtpAuthFailed: (502, "ftp_auth"),
    StorageClosed: (503, "unavailable"),
    RemoteProtocolError: (400, "bad_request"),  # a websocket handshake wsproto refused
    ValueError: (400, "bad_request"),  # input a handler did not validate
}

# the message of an exception whose own text is not meant for the client
MESSAGES: dict[type[BaseException], Callable[[BaseException], str]] = {
    StorageClosed: lambda _exc: "node is shutting down",
    RemoteProtocolError: lambda exc: f"not a valid WebSocket upgrade: {exc}",
}

# werkzeug's routing and request errors (HTTPException carries its status): status -> code
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


def row(cls: type[BaseException]) -> tuple[int, str]:
    """``(status, code)`` of an exception class: its own row or its nearest base's, else
    500 ``internal``."""
    for base in cls.__mro__:
        hit = TABLE.get(base)
        if hit is not None:
            return hit
    return INTERNAL


def describe(exc: BaseException) -> tuple[int, str, str]:
    """``(status, code, message)`` of the answer to ``exc``. Pure; thread-safe. A 500 is a bug:
    the caller logs it."""
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        return status, HTTP_CODES.get(status, "error"), exc.description or exc.name
    status, code = row(type(exc))
    if status == 500:
        return status, code, f"{type(exc).__name__}: {exc}"
    for base in type(exc).__mro__:
        message = MESSAGES.get(base)
        if message is not None:
            return status, code, message(exc)
    return status, code, exc.message if isinstance(exc, KvError) else str(exc)
