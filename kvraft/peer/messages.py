"""Every message one node sends another, as a frozen dataclass with its codec next to it.

A request message names its ``PATH`` and ``METHOD`` (HTTP, :mod:`kvraft.peer.http`) and, for the
two that also travel on the peer stream (:mod:`kvraft.peer.stream`), its ``KIND`` there; its
``ANSWER`` is the message that comes back. ``to_wire()`` gives the query parameters and the body,
``from_wire(query, body)`` reads them back; an answer's ``to_wire()`` gives a :class:`Wire` (body,
content type, headers) and ``from_wire(headers, body)`` reads it. Decoding raises
:class:`MessageError` (a ValueError) for anything malformed; nothing is ever unpickled.

Every node of a cluster runs the same version (:data:`VERSION`); the client sends it in
:data:`VERSION_HEADER` and the server refuses another one, so a mixed cluster fails loudly.

Apply results have one encoding (:func:`encode_results`), used by ``POST /peer/apply`` and by
the stream's ``APPLY`` frames alike. Records have one encoding (:mod:`kvraft.peer.wire`).

This module does no IO and knows no node: pure codecs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..hlc import Version
from ..storage import ApplyResult, Record
from .wire import WireError, decode_records, encode_records

VERSION = 1
VERSION_HEADER = "X-Kvraft-Peer-Version"
OCTETS = "application/octet-stream"
JSON = "application/json"
STREAM_APPLY, STREAM_GET = 1, 3  # frame kinds on the peer stream (kvraft.peer.stream)


class MessageError(ValueError):
    """A malformed peer message or answer."""


@dataclass(frozen=True, slots=True)
class Wire:
    """An encoded answer: its body, content type and extra headers."""

    body: bytes
    content_type: str = OCTETS
    headers: tuple[tuple[str, str], ...] = ()


# -- shared codecs ----------------------------------------------------------------------------

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


def _records(body: bytes) -> tuple[Record, ...]:
    try:
        return tuple(decode_records(body))
    except WireError as exc:
        raise MessageError(f"bad peer message: {exc}") from None


def json_object(body: bytes, what: str = "body must be a JSON object") -> dict:
    try:
        out = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise MessageError(what) from None
    if not isinstance(out, dict):
        raise MessageError(what)
    return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _answer_json(obj: Any) -> Wire:
    return Wire(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode(), JSON)


def _int(query: Mapping[str, str], name: str, default: str, what: str) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        raise MessageError(what) from None


@dataclass(frozen=True, slots=True)
class Answer:
    """Base of answers: ``wire_bytes`` is what the exchange cost on the wire (request and
    answer bodies), filled in by the client; it takes no part in comparisons."""

    wire_bytes: int = field(default=0, compare=False, kw_only=True)


# -- records ----------------------------------------------------------------------------------


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
        return cls(_records(body))


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
            return cls(_records(body), None if done is None else int(done))
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
            max_bytes = max(1, _int(query, "max_bytes", "0", "max_bytes must be an integer"))
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
        limit = _int(query, "limit", "1000", "limit must be an integer")
        return cls(query.get("prefix", ""), query.get("after"), min(10000, max(1, limit)))


@dataclass(frozen=True, slots=True)
class HintStored(Answer):
    newest: Version | None  # the newest version of the key the holder has

    def to_wire(self) -> Wire:
        return _answer_json(
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
        return cls(target, _records(body))


# -- liveness and membership ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pong(Answer):
    id: str
    keys: int = 0
    ready: bool = True
    load: int = 0
    clock_ms: int | None = None  # the peer's physical clock when it answered
    raft_members: tuple[str, ...] = ()

    def to_wire(self) -> Wire:
        return _answer_json(
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
        return _answer_json(self.data)

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


# -- anti-entropy -----------------------------------------------------------------------------


def _int_keys(x: Any, what: str) -> dict[int, Any]:
    if not isinstance(x, dict):
        raise MessageError(f"{what} must be an object")
    try:
        return {int(k): v for k, v in x.items()}
    except ValueError:
        raise MessageError(f"{what}: keys must be partition numbers") from None


@dataclass(frozen=True, slots=True)
class TreeHashes(Answer):
    roots: dict[int, int]  # partition -> root hash
    groups: dict[int, list[int]]  # partition -> group hashes
    leaves: dict[int, dict[int, list[int]]]  # partition -> group -> its leaf hashes

    def to_wire(self) -> Wire:
        return _answer_json(
            {
                "roots": {str(p): h for p, h in self.roots.items()},
                "groups": {str(p): hs for p, hs in self.groups.items()},
                "leaves": {
                    str(p): {str(g): hs for g, hs in gs.items()} for p, gs in self.leaves.items()
                },
            }
        )

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> TreeHashes:
        x = json_object(body)
        try:
            return cls(
                {p: int(h) for p, h in _int_keys(x.get("roots", {}), "roots").items()},
                {
                    p: [int(h) for h in hs]
                    for p, hs in _int_keys(x.get("groups", {}), "groups").items()
                },
                {
                    p: {g: [int(h) for h in hs] for g, hs in _int_keys(gs, "leaves").items()}
                    for p, gs in _int_keys(x.get("leaves", {}), "leaves").items()
                },
            )
        except TypeError as exc:
            raise MessageError(f"bad tree answer: {exc}") from None


@dataclass(frozen=True, slots=True)
class Tree:
    """Hashes of the peer's tree: the roots of ``roots``, the group hashes of ``groups``, the
    leaf hashes of the groups in ``leaves`` (one level per request in a descent)."""

    PATH: ClassVar[str] = "/peer/tree"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = TreeHashes
    roots: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    leaves: Mapping[int, Sequence[int]] = field(default_factory=dict)

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        body: dict = {}
        if self.roots:
            body["roots"] = list(self.roots)
        if self.groups:
            body["groups"] = list(self.groups)
        if self.leaves or not body:
            body["leaves"] = {str(p): list(gs) for p, gs in self.leaves.items()}
        return {}, _dumps(body)

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Tree:
        x = json_object(body)
        try:
            return cls(
                tuple(int(p) for p in x.get("roots", [])),
                tuple(int(p) for p in x.get("groups", [])),
                {
                    p: [int(g) for g in gs]
                    for p, gs in _int_keys(x.get("leaves", {}), "leaves").items()
                },
            )
        except (TypeError, ValueError) as exc:
            raise MessageError(f"bad tree request: {exc}") from None


@dataclass(frozen=True, slots=True)
class LeafEntries(Answer):
    entries: dict[str, tuple[Version, bool]]  # key -> (version, tombstone)

    def to_wire(self) -> Wire:
        return _answer_json({k: [v.ts, v.node, int(t)] for k, (v, t) in self.entries.items()})

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> LeafEntries:
        try:
            return cls({k: (Version(v[0], v[1]), bool(v[2])) for k, v in json_object(body).items()})
        except (TypeError, IndexError, ValueError) as exc:
            raise MessageError(f"bad entries answer: {exc}") from None


@dataclass(frozen=True, slots=True)
class Entries:
    """The (key, version, tombstone) entries of some leaves of one partition."""

    PATH: ClassVar[str] = "/peer/entries"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = LeafEntries
    part: int
    leaves: tuple[int, ...]

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {}, _dumps({"part": self.part, "leaves": list(self.leaves)})

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Entries:
        x = json_object(body)
        try:
            return cls(int(x["part"]), tuple(int(leaf) for leaf in x["leaves"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"bad entries request: {exc}") from None


@dataclass(frozen=True, slots=True)
class Forgotten(Answer):
    count: int

    def to_wire(self) -> Wire:
        return _answer_json({"forgotten": self.count})

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> Forgotten:
        try:
            return cls(int(json_object(body).get("forgotten", 0)))
        except (TypeError, ValueError) as exc:
            raise MessageError(f"bad forget answer: {exc}") from None


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop ``keys`` of ``part`` whose versions are below ``below`` (and below the peer's own
    watermark): keys deleted whose tombstones were purged elsewhere."""

    PATH: ClassVar[str] = "/peer/forget"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = Forgotten
    part: int
    keys: tuple[str, ...]
    below: int

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {}, _dumps({"part": self.part, "keys": list(self.keys), "below": self.below})

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Forget:
        x = json_object(body)
        try:
            return cls(int(x["part"]), tuple(str(k) for k in x["keys"]), int(x["below"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"bad forget request: {exc}") from None


# -- change feeds (watch) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchOpened(Answer):
    sid: str

    def to_wire(self) -> Wire:
        return _answer_json({"sid": self.sid})

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
            return cls(int(headers.get("x-kvraft-seq", "")), _records(body))
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
        return _answer_json({"closed": True})

    @classmethod
    def from_wire(cls, headers: Mapping[str, str], body: bytes) -> Done:
        return cls()


@dataclass(frozen=True, slots=True)
class WatchClose:
    PATH: ClassVar[str] = "/peer/changes/close"
    METHOD: ClassVar[str] = "POST"
    ANSWER: ClassVar[type] = Done
    sid: str

    def to_wire(self) -> tuple[dict[str, str], bytes]:
        return {"sid": self.sid}, b""

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> WatchClose:
        return cls(query.get("sid", ""))


REQUESTS: tuple[type[Any], ...] = (
    Apply,
    ReadKeys,
    Scan,
    Hint,
    Ping,
    MemberChange,
    Stats,
    Tree,
    Entries,
    Forget,
    WatchOpen,
    WatchPoll,
    WatchClose,
)
BY_PATH: dict[str, type[Any]] = {m.PATH: m for m in REQUESTS}
