"""The peer messages of an anti-entropy round: :class:`Tree` (hashes of the peer's tree, one
level per request in a descent), :class:`Entries` (the key, version and tombstone entries of
some leaves) and :class:`Forget` (drop keys whose tombstones were purged elsewhere), with their
answers. JSON bodies; partition and group numbers travel as object keys (strings) and are read
back as ints. Pure codecs: no IO, no node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...hlc import Version
from .codec import Answer, MessageError, Wire, answer_json, dumps, json_object


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
        return answer_json(
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
        return {}, dumps(body)

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
        return answer_json({k: [v.ts, v.node, int(t)] for k, (v, t) in self.entries.items()})

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
        return {}, dumps({"part": self.part, "leaves": list(self.leaves)})

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
        return answer_json({"forgotten": self.count})

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
        return {}, dumps({"part": self.part, "keys": list(self.keys), "below": self.below})

    @classmethod
    def from_wire(cls, query: Mapping[str, str], body: bytes) -> Forget:
        x = json_object(body)
        try:
            return cls(int(x["part"]), tuple(str(k) for k in x["keys"]), int(x["below"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"bad forget request: {exc}") from None
