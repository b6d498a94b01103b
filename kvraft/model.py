"""The data every layer shares: record versions, records, apply results and consistency levels.

A version is ``(ts, node)``: ``ts`` is a 64-bit HLC timestamp (physical milliseconds in the high
48 bits, a logical counter in the low 16) and ``node`` the id of the node that stamped it. Versions
order by ``(ts, node)``; that order is the last-writer-wins rule, so every replica picks the same
winner. A record is ``(key, partition, version, tombstone, value)``.

Plain values only: no IO, no clock, no imports from the rest of kvraft (every module may import
this one). The old homes re-export these names (:mod:`kvraft.hlc` ``Version``,
:mod:`kvraft.storage` ``Record`` and ``ApplyResult``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

LOGICAL_BITS: Final = 16
LOGICAL_MASK: Final = (1 << LOGICAL_BITS) - 1

Level = Literal["one", "quorum", "all"]
"""A consistency level: the ``w`` of a write, the ``r`` of a read."""
LEVELS: Final[tuple[Level, ...]] = ("one", "quorum", "all")


class Version(NamedTuple):
    """A record version; tuples compare as last-writer-wins."""

    ts: int
    node: str

    def encode(self) -> str:
        """Text form used on the wire and in ETags: 16 hex digits, '-', node id."""
        return f"{self.ts:016x}-{self.node}"

    @classmethod
    def decode(cls, text: str) -> Version:
        """Parse :meth:`encode` output; raises ValueError on anything else."""
        ts_hex, sep, node = text.partition("-")
        if not sep or len(ts_hex) != 16 or not node:
            raise ValueError(f"bad version {text!r}")
        return cls(int(ts_hex, 16), node)

    @property
    def millis(self) -> int:
        """The physical part, in milliseconds since the epoch."""
        return self.ts >> LOGICAL_BITS


@dataclass(frozen=True, slots=True)
class Record:
    """One stored version of a key: a value, or a tombstone (``tomb``) that deletes it."""

    key: str
    part: int
    version: Version
    tomb: bool
    value: bytes = b""

    @property
    def live(self) -> bool:
        return not self.tomb


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What a replica answered to one record it was asked to apply (last writer wins)."""

    applied: bool  # the record is now the stored one
    prev: Version | None  # version stored before, if any
    prev_live: bool  # a live (non-tombstone) value was stored before
