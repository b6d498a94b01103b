"""What every peer message shares: the protocol version, the answer envelope and the codecs.

:data:`VERSION` is the peer protocol's version; the client sends it in :data:`VERSION_HEADER`
and the server refuses another one. :class:`Wire` is an encoded answer, :class:`Answer` the
base of every answer; a request the receiver will not answer with its ``ANSWER`` is refused for
one :class:`Refusal`. Apply results have one encoding (:func:`encode_results`), used by ``POST
/peer/apply`` and by the stream's ``APPLY`` frames alike; keys on the stream have one
(:func:`encode_keys`); records have one (:mod:`kvraft.peer.wire`). Decoding raises
:class:`MessageError` (a ValueError) for anything malformed; nothing is ever unpickled.

The helpers below the public names (:func:`records_of`, :func:`dumps`, :func:`answer_json`,
:func:`query_int`) are for the message modules of this package. Pure: no IO, no node.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...hlc import Version
from ...storage import ApplyResult, Record
from ..wire import WireError, decode_records

VERSION = 1
VERSION_HEADER = "X-Kvraft-Peer-Version"
OCTETS = "application/octet-stream"
JSON = "application/json"
STREAM_APPLY, STREAM_GET = 1, 3  # frame kinds on the peer stream (kvraft.peer.stream)


class MessageError(ValueError):
    """A malformed peer message or answer."""


class Refusal(enum.Enum):
    """Why a receiver refuses a peer request instead of answering it; it did nothing. The
    protocol's own outcomes: the HTTP binding (:data:`kvraft.peer.http.REFUSALS`) gives each
    its status and error code. A handler's error (:class:`kvraft.errors.KvError`) is not one:
    the node's HTTP layer maps those."""

    BAD_SIGNATURE = "bad_signature"  # missing, wrong, or replayed (checked before anything)
    MALFORMED = "malformed"  # truncated, undecodable, another protocol version, a bad upgrade
    NO_SUCH_MESSAGE = "no_such_message"  # no message is served at that path
    WRONG_METHOD = "wrong_method"  # the path's message takes another method
    GONE = "gone"  # the change subscription polled is unknown or expired: resubscribe


@dataclass(frozen=True, slots=True)
class Wire:
    """An encoded answer: its body, content type and extra headers."""

    body: bytes
    content_type: str = OCTETS
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """Base of answers: ``wire_bytes`` is what the exchange cost on the wire (request and
    answer bodies), filled in by the client; it takes no part in comparisons."""

    wire_bytes: int = field(default=0, compare=False, kw_only=True)


# -- apply results and keys, binary ------------------------------------------------------------

_RESULT = struct.Struct(">BQH")  # flags, prev ts, prev node length (then the node id)
_APPLIED, _PREV, _PREV_LIVE = 1, 2, 4
_LEN = struct.Struct(">I")


def encode_results(results: Sequence[ApplyResult]) -> bytes:
    """Apply results, binary: per result a flags byte, the previous version, its node id."""
    parts: list[bytes] = []
    for r in results:
        node = r.prev.node.encode() if r.prev is not None else b""
        flags = (
            (_APPLIED if r.applied else 0)
            | (_PREV if r.prev is not None else 0)
            | (_PREV_LIVE if r.prev_live else 0)
        )
        parts += (_RESULT.pack(flags, r.prev.ts if r.prev is not None else 0, len(node)), node)
    return b"".join(parts)


def decode_results(data: bytes) -> list[ApplyResult]:
    out, pos, size = [], 0, _RESULT.size
    while pos < len(data):
        if pos + size > len(data):
            raise MessageError("truncated result")
        flags, ts, n = _RESULT.unpack_from(data, pos)
        pos += size
        if pos + n > len(data):
            raise MessageError("truncated result")
        prev = Version(ts, data[pos : pos + n].decode()) if flags & _PREV else None
        pos += n
        out.append(ApplyResult(bool(flags & _APPLIED), prev, bool(flags & _PREV_LIVE)))
    return out


def encode_keys(keys: Sequence[str]) -> bytes:
    """Keys, each as u32 length and UTF-8 bytes."""
    parts: list[bytes] = []
    for k in keys:
        data = k.encode("utf-8", "surrogateescape")
        parts += (_LEN.pack(len(data)), data)
    return b"".join(parts)


def decode_keys(data: bytes) -> list[str]:
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise MessageError("truncated key")
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            raise MessageError("truncated key")
        out.append(data[pos + 4 : pos + 4 + n].decode("utf-8", "surrogateescape"))
        pos += 4 + n
    return out


# -- JSON and the pieces the message modules share -------------------------------------------


def json_object(body: bytes, what: str = "body must be a JSON object") -> dict:
    try:
        out = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise MessageError(what) from None
    if not isinstance(out, dict):
        raise MessageError(what)
    return out


def records_of(body: bytes) -> tuple[Record, ...]:
    """The records of a body in wire encoding; MessageError when it is malformed."""
    try:
        return tuple(decode_records(body))
    except WireError as exc:
        raise MessageError(f"bad peer message: {exc}") from None


def dumps(obj: Any) -> bytes:
    """A request body as compact JSON."""
    return json.dumps(obj, separators=(",", ":")).encode()


def answer_json(obj: Any) -> Wire:
    """An answer as compact JSON with sorted keys."""
    return Wire(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode(), JSON)


def query_int(query: Mapping[str, str], name: str, default: str, what: str) -> int:
    """The integer query parameter ``name`` (``default`` when absent); MessageError(``what``)
    when it is not one."""
    try:
        return int(query.get(name, default))
    except ValueError:
        raise MessageError(what) from None
