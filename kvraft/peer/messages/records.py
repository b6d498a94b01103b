"""The peer messages that carry records: replica writes and repairs (:class:`Apply`), reads by
key (:class:`ReadKeys`) and by range (:class:`Scan`), and hints for a replica that is down
(:class:`Hint`), with their answers.

:class:`Apply` and :class:`ReadKeys` also travel on the peer stream (``KIND``); the others
only over HTTP. Pure codecs: no IO, no node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ...hlc import Version
from ...storage import ApplyResult, Record
from ..wire import encode_records
from .codec import (
    OCTETS,
    STREAM_APPLY,
    STREAM_GET,
    Answer,
    MessageError,
    Wire,
    answer_json,
    decode_keys,
    decode_results,
    encode_keys,
    encode_results,
    json_object,
    query_int,
    records_of,
)


@dataclass(frozen=True, slots=True)
class Applied(Answer):
    results: tuple[ApplyResult, ...]

    def to_wire(self) -> Wire:
        return Wire(encode_results(self.results))

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> Applied:
        return cls(tuple(decode_results(body)))


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply records by last writer wins (replica writes, repairs, hints, sync, hand-off)."""

    PATH: ClassVar[str] = "/peer/apply"
    METHOD: ClassVar[str] = "POST"
    KIND: ClassVar[int] = STREAM_APPLY
    ANSWER: ClassVar[type] = Applied
    records: tuple[Record, ...]

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {}, encode_records(self.records)

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Apply:
        return cls(records_of(body))


@dataclass(frozen=True, slots=True)
class Records(Answer):
    records: tuple[Record, ...]
    done: int | None = None  # keys handled, when the read stopped at a byte bound

    def to_wire(self) -> Wire:
        headers = () if self.done is None else (("X-Kvraft-Done", str(self.done)),)
        return Wire(encode_records(self.records), OCTETS, headers)

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> Records:
        done = headers.get("x-kvraft-done")
        try:
            return cls(records_of(body), None if done is None else int(done))
        except ValueError as exc:
            raise MessageError(f"bad records answer: {exc}") from None


@dataclass(frozen=True, slots=True)
class ReadKeys:
    """The stored records (tombstones included) among ``keys``; keys not stored are left out.
    With ``max_bytes`` the peer stops once the values pass it and says how many keys it handled
    (:attr:`Records.done`). Hot single-key reads go on the stream (batched), bulk reads of a
    sync round or a report over HTTP."""

    PATH: ClassVar[str] = "/peer/fetch"
    METHOD: ClassVar[str] = "POST"
    KIND: ClassVar[int] = STREAM_GET
    ANSWER: ClassVar[type] = Records
    keys: tuple[str, ...]
    max_bytes: int | None = None

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        query = {} if self.max_bytes is None else {"max_bytes": str(self.max_bytes)}
        return query, json.dumps({"keys": list(self.keys)}).encode()

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> ReadKeys:
        keys = json_object(body, 'body must be JSON {"keys": [...]}').get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise MessageError("keys must be a list of strings")
        max_bytes = None
        if query.get("max_bytes") is not None:
            max_bytes = max(1, query_int(query, "max_bytes", "0", "max_bytes must be an integer"))
        return cls(tuple(keys), max_bytes)

    # on the stream: the keys only, answered with the records
    def to_frame(self) -> bytes:
        return encode_keys(self.keys)

    @classmethod
    def from_frame(cls, payload: bytes) -> ReadKeys:
        return cls(tuple(decode_keys(payload)))


@dataclass(frozen=True, slots=True)
class Scan:
    """Stored records (tombstones included) with keys under ``prefix`` after ``after``, in key
    order, at most ``limit`` (1 to 10000): the listing's range read."""

    PATH: ClassVar[str] = "/peer/scan"
    METHOD: ClassVar[str] = "GET"
    ANSWER: ClassVar[type] = Records
    prefix: str = ""
    after: str | None = None
    limit: int = 1000

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        query = {"prefix": self.prefix, "limit": str(self.limit)}
        if self.after is not None:
            query["after"] = self.after
        return query, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Scan:
        limit = query_int(query, "limit", "1000", "limit must be an integer")
        return cls(query.get("prefix", ""), query.get("after"), min(10000, max(1, limit)))


@dataclass(frozen=True, slots=True)
class HintStored(Answer):
    newest: Version | None  # the newest version of the key the holder has

    def to_wire(self) -> Wire:
        return answer_json(
            {"stored": True, "newest": self.newest.encode() if self.newest else None}
        )

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> HintStored:
        try:  # a holder that does not say is answered None
            newest = json.loads(body).get("newest")
            return cls(Version.decode(newest) if isinstance(newest, str) else None)
        except (ValueError, AttributeError):
            return cls(None)


@dataclass(frozen=True, slots=True)
class Hint:
    """Keep ``records`` as hints for ``target`` (a replica that is down)."""

    PATH: ClassVar[str] = "/peer/hint"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = HintStored
    target: str
    records: tuple[Record, ...]

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {"target": self.target}, encode_records(self.records)

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Hint:
        target = query.get("target", "")
        if not target:
            raise MessageError("target is required")
        return cls(target, records_of(body))
