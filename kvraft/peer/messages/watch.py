"""The peer messages of change feeds (``/watch``): a node watching the cluster opens a
subscription on each peer (:class:`WatchOpen`), long-polls it (:class:`WatchPoll`, answered
with a :class:`WatchBatch` of records) and closes it (:class:`WatchClose`). A batch that is
``gone`` means the subscription is unknown or expired: the watcher must resubscribe. Pure
codecs: no IO, no node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ...storage import Record
from ..wire import encode_records
from .codec import OCTETS, Answer, MessageError, Wire, answer_json, json_object, records_of


@dataclass(frozen=True, slots=True)
class WatchOpened(Answer):
    sid: str

    def to_wire(self) -> Wire:
        return answer_json({"sid": self.sid})

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> WatchOpened:
        sid = json_object(body).get("sid")
        if sid is None:
            raise MessageError("no sid in the answer")
        return cls(str(sid))


@dataclass(frozen=True, slots=True)
class WatchOpen:
    """Open a subscription to the peer's changes under ``prefix``."""

    PATH: ClassVar[str] = "/peer/changes/open"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = WatchOpened
    prefix: str = ""

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {"prefix": self.prefix}, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> WatchOpen:
        return cls(query.get("prefix", ""))


@dataclass(frozen=True, slots=True)
class WatchBatch(Answer):
    """The changes after batch ``after``, numbered ``seq``; ``gone``: the subscription is
    unknown or expired (the watcher must resubscribe)."""

    seq: int = 0
    records: tuple[Record, ...] = ()
    gone: bool = False

    def to_wire(self) -> Wire:
        return Wire(encode_records(self.records), OCTETS, (("X-Kvraft-Seq", str(self.seq)),))

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> WatchBatch:
        try:
            return cls(int(headers.get("x-kvraft-seq", "")), records_of(body))
        except ValueError as exc:
            raise MessageError(f"bad change batch: {exc}") from None


@dataclass(frozen=True, slots=True)
class WatchPoll:
    """Wait up to ``wait`` seconds for changes after batch ``after`` of subscription ``sid``."""

    PATH: ClassVar[str] = "/peer/changes/poll"
    METHOD: ClassVar[str] = "GET"
    ANSWER: ClassVar[type] = WatchBatch
    MAX_WAIT: ClassVar[float] = 30.0
    sid: str
    after: int = 0
    wait: float = 1.0

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {"sid": self.sid, "after": str(self.after), "wait": str(self.wait)}, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> WatchPoll:
        try:
            wait = float(query.get("wait", "1"))
            after = int(query.get("after", "0"))
        except ValueError:
            raise MessageError("wait must be seconds and after a batch number") from None
        return cls(query.get("sid", ""), after, wait)


@dataclass(frozen=True, slots=True)
class Done(Answer):
    def to_wire(self) -> Wire:
        return answer_json({"closed": True})

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> Done:
        return cls()


@dataclass(frozen=True, slots=True)
class WatchClose:
    """Close subscription ``sid`` (a close of an unknown one is answered the same)."""

    PATH: ClassVar[str] = "/peer/changes/close"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = Done
    sid: str

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {"sid": self.sid}, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> WatchClose:
        return cls(query.get("sid", ""))
