"""The one copy of the key request path, shared by the fast path (:mod:`api.fastpath`) and the
Flask app (:mod:`api.app`): ``GET``/``PUT /kv/<key>`` as calls on a :class:`api.ports.KeyValue`,
the consistency arguments, the value limit, the answer's headers (``ETag``,
``X-Kvraft-Version``), the stamps every answer carries (``X-Kvraft-Node``, and
``WWW-Authenticate`` on a 401), and errors as JSON through :mod:`api.errors`.

An answer is ``(status, body, headers)``: plain data, so each path writes it its own way (WSGI
``start_response`` or a Flask ``Response``). No Flask and no IO here; the handlers block on the
store like the store's own calls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Protocol

from kvraft.errors import TooLarge
from kvraft.keys import check_level

from .errors import describe
from .ports import KeyValue

log = logging.getLogger(__name__)

Answer = tuple[int, bytes, list[tuple[str, str]]]
JSON = "application/json"
OCTETS = "application/octet-stream"
NODE = "X-Kvraft-Node"
MAP_EPOCH = "X-Kvraft-Map-Epoch"  # on /kv/<key> answers: kvraft.client.routing reads it
WWW_AUTHENTICATE = "WWW-Authenticate"
BEARER_REALM = 'Bearer realm="kvraft"'  # RFC 9110 11.6.1: a 401 names its scheme
VALUE_LIMIT = "value (max_value_bytes)"


def error(status: int, code: str, message: str) -> Answer:
    """The JSON error answer ``{"error": code, "message": message}``."""
    body = json.dumps({"error": code, "message": message}).encode()
    return status, body, [("Content-Type", JSON)]


def error_of(exc: BaseException) -> Answer:
    """The answer to an exception, by :func:`api.errors.describe`; a 500 is logged (a bug)."""
    status, code, message = describe(exc)
    if code == "internal":
        log.error("unhandled error", exc_info=exc)
    return error(status, code, message)


class _Names(Protocol):
    def __contains__(self, name: str, /) -> bool: ...


def stamps(
    status: int, present: _Names | list[str], node_id: str, epoch: int | None = None
) -> list[tuple[str, str]]:
    """The headers every answer of this node carries, those not in ``present`` yet (a forwarded
    answer keeps the ``X-Kvraft-Node`` of the node that served it), and, given an ``epoch``
    (the answers of ``/kv/<key>``), ``X-Kvraft-Map-Epoch``."""
    out = [] if NODE in present else [(NODE, node_id)]
    if epoch is not None and MAP_EPOCH not in present:
        out.append((MAP_EPOCH, str(epoch)))
    if status == 401 and WWW_AUTHENTICATE not in present:
        out.append((WWW_AUTHENTICATE, BEARER_REALM))
    return out


def too_large(length: int, limit: int, what: str = VALUE_LIMIT) -> None:
    """TooLarge when a body of ``length`` bytes is over ``limit``."""
    if length > limit:
        raise TooLarge(f"{what} exceeds {limit} bytes")


class KeyHandler:
    """``GET``/``PUT /kv/<key>`` over ``kv``. The methods raise the store's errors and
    ``ValueError``; the caller answers them with :func:`error_of`. Thread-safe as ``kv`` is."""

    def __init__(self, kv: KeyValue, max_value_bytes: int) -> None:
        self.kv = kv
        self.max_value_bytes = max_value_bytes

    def get(self, key: str, r: str | None) -> Answer:
        """The value with its version headers; NotFound when absent or deleted."""
        rec = self.kv.get(key, check_level(r, "one", "r"))
        version = rec.version.encode()
        return (
            200,
            rec.value,
            [("Content-Type", OCTETS), ("ETag", f'"{version}"'), ("X-Kvraft-Version", version)],
        )

    def put(self, key: str, w: str | None, read_value: Callable[[int], bytes]) -> Answer:
        """Store the value ``read_value(limit)`` returns (it raises TooLarge past ``limit``,
        see :func:`too_large`): 201 when created, 200 when replaced. The level is checked
        before the body is read. Unavailable means the write may or may not have been applied."""
        level = check_level(w, "quorum", "w")
        res = self.kv.put(key, read_value(self.max_value_bytes), level)
        body = json.dumps(res.to_json(), separators=(",", ":")).encode()
        return 201 if res.created else 200, body, [("Content-Type", JSON)]
