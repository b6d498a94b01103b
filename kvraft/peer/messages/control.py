"""The peer messages of liveness and membership: :class:`Ping` (answered :class:`Pong`:
readiness, load, clock, Raft members), :class:`MemberChange` (sent to the Raft leader) and
:class:`Stats` (the dashboard's counters), with :class:`JsonAnswer`, the answer that is a JSON
object for the caller to read. Pure codecs: no IO, no node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from .codec import Answer, MessageError, Wire, answer_json, json_object


@dataclass(frozen=True, slots=True)
class Pong(Answer):
    id: str
    keys: int = 0
    ready: bool = True
    load: int = 0
    clock_ms: int | None = None  # the peer's physical clock when it answered
    raft_members: tuple[str, ...] = ()

    def to_wire(self) -> Wire:
        return answer_json(
            {
                "id": self.id,
                "keys": self.keys,
                "ready": self.ready,
                "load": self.load,
                "clock_ms": self.clock_ms,
                "raft_members": list(self.raft_members),
            }
        )

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> Pong:
        x = json_object(body)
        try:
            clock = x.get("clock_ms")
            return cls(
                str(x.get("id", "")),
                int(x.get("keys", 0)),
                bool(x.get("ready", True)),
                max(0, int(x.get("load", 0))),
                clock if isinstance(clock, int) and not isinstance(clock, bool) else None,
                tuple(str(r) for r in x.get("raft_members", ())),
            )
        except (TypeError, ValueError) as exc:
            raise MessageError(f"bad ping answer: {exc}") from None


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness, readiness, load, clock and the Raft members (which a joining node needs)."""

    PATH: ClassVar[str] = "/peer/ping"
    METHOD: ClassVar[str] = "GET"
    ANSWER: ClassVar[type] = Pong

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {}, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Ping:
        return cls()


@dataclass(frozen=True, slots=True)
class JsonAnswer(Answer):
    """An answer that is a JSON object for the caller to read (membership results, stats)."""

    data: dict

    def to_wire(self) -> Wire:
        return answer_json(self.data)

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> JsonAnswer:
        return cls(json_object(body, "the answer is not a JSON object"))


@dataclass(frozen=True, slots=True)
class MemberChange:
    """Add (``op="add"`` with ``http`` and ``raft``) or remove a member: sent to the Raft
    leader by a node that is not, and by a node joining with ``--join``."""

    PATH: ClassVar[str] = "/peer/members"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = JsonAnswer
    op: str
    id: str
    http: str = ""
    raft: str = ""

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        if self.op == "add":
            body = {"op": "add", "id": self.id, "http": self.http, "raft": self.raft}
        else:
            body = {"op": self.op, "id": self.id}
        return {}, json.dumps(body).encode()

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> MemberChange:
        x = json_object(body)
        if x.get("op") == "add":
            try:
                return cls("add", str(x["id"]), str(x["http"]), str(x["raft"]))
            except KeyError as exc:
                raise MessageError(f"member change without {exc}") from None
        return cls("remove", str(x.get("id", "")))


@dataclass(frozen=True, slots=True)
class Stats:
    """The peer's own counters, for the dashboard (:mod:`api.ui`)."""

    PATH: ClassVar[str] = "/peer/stats"
    METHOD: ClassVar[str] = "GET"
    ANSWER: ClassVar[type] = JsonAnswer

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {}, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Stats:
        return cls()
