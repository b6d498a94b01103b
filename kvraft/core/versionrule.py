"""The forward-only version rule of the write path: which replica answers acknowledge a write,
and what the coordinator must stamp above before it tries again.

A replica applies a record by last writer wins: it keeps what it holds when that is at least as
new. Holding *this very* version (a retried request) is an acknowledgement; holding a *newer* one
is not: the write would be acknowledged for a version no replica serves, which is how skewed
clocks lose acknowledged overwrites under plain last-writer-wins. The coordinator learns the newer
version instead and writes again above it. Pure: no IO, threads or clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..model import LOGICAL_BITS, ApplyResult, Version

ATTEMPTS = 8  # stampings of one write before it is given up as contended
LEAD_FIRST_MS = 1  # how far above a concurrent writer's version the first stamping again goes
LEAD_CAP_MS = 16  # the furthest (the lead doubles per stamping up to this)


@dataclass(frozen=True, slots=True)
class Judgement:
    acks: int  # replicas whose newest version is now the offered one
    newer: Version | None  # the newest version a replica kept instead of the offered one
    below_watermark: bool  # a replica refused it as older than its partition's purge watermark

    @property
    def retry(self) -> bool:
        return self.newer is not None or self.below_watermark


def judge(version: Version, results: Sequence[ApplyResult], lww_ack: bool = False) -> Judgement:
    """Tally the replicas' answers to ``version``. ``lww_ack`` is the test-only negative control:
    every answer counts as an ack, as plain last-writer-wins stores do."""
    if lww_ack:
        below = any(not r.applied and r.prev is None for r in results)
        return Judgement(len(results), None, below)
    acks, newer, below = 0, None, False
    for res in results:
        if res.applied or res.prev == version:
            acks += 1
        elif res.prev is None:
            below = True
        elif newer is None or res.prev > newer:
            newer = res.prev
    return Judgement(acks, newer, below)


def lead(restamps: int) -> int:
    """How far (HLC units: ms in the high bits) above a concurrent writer's version the
    ``restamps``-th stamping again goes: :data:`LEAD_FIRST_MS` doubling to :data:`LEAD_CAP_MS`.
    Stamped just above it, the write would meet the versions the other coordinators stamp while
    it travels to the replicas, and lose again; a lead of a few ms carries it past them (the
    coordinator's HLC then moves up to it, so its own next writes stamp above it)."""
    if restamps < 1:
        return 0
    return min(LEAD_CAP_MS, LEAD_FIRST_MS << min(restamps - 1, 16)) << LOGICAL_BITS


def stamp_above(now_ts: int, floor: Version | None) -> int:
    """A timestamp for a new version: the HLC's ``now_ts``, raised above ``floor`` (a version
    the write must supersede: the one a DELETE found, or one a replica kept) when the clock is
    behind."""
    if floor is None:
        return now_ts
    return max(now_ts, floor.ts + 1)


def created(results: Iterable[ApplyResult], own: Iterable[Version]) -> bool:
    """Whether the write created the key: no replica held a live value before it other than an
    earlier stamping of this same write (``own``)."""
    mine = set(own)
    return not any(res.prev_live and res.prev not in mine for res in results)
