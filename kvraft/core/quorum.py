"""Quorum tallies of the coordinator, in the style of riak_kv's ``put_core``/``get_core``.

The coordinator (:mod:`kvraft.coordinator`) does the IO: it sends a write or a read to the replicas
and feeds each answer to a tally (``add``); the tally says whether the answers are enough, what the
outcome is (as data: :class:`Ok`, :class:`Restamp`, :class:`PlaceHints`, :class:`NeedWatermark`,
:class:`ReadOk`, :class:`Unavailable`) and which replicas to repair (``repairs()``: (node, record)
pairs). The listing merge and the newest-value / stale-replica choices are functions here too.

Pure: no IO, no threads, no clock, no logging. A tally is used by one thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..model import ApplyResult, Record, Version
from . import versionrule

# -- outcomes (data) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ok:
    """The write is acknowledged: ``acks`` replicas hold ``version``, ``effective`` counts the
    hints too (except for ``w=all``); ``created``: no replica held a live value before."""

    version: Version
    acks: int
    effective: int
    created: bool
    hinted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Restamp:
    """Stamp the write again above ``above`` and send it again. ``observe``: fold ``above`` into
    the HLC first (a version a replica or stand-in kept; not a purge watermark)."""

    above: Version
    reason: str  # "newer" (a replica kept it), "stand_in" (a stand-in holds it), "watermark"
    observe: bool


@dataclass(frozen=True, slots=True)
class PlaceHints:
    """Store the record as a hint for each of ``failed`` on a stand-in, then call
    :meth:`WriteTally.hinted`."""

    failed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NeedWatermark:
    """A replica refused the write as older than its purge watermark: call
    :meth:`WriteTally.watermark` with the partition's watermark."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Not enough answers. For a write, ``maybe_applied``: some replica may hold it anyway;
    ``acks``: the replica acks of the last attempt when it got as far as counting them (None when
    it gave up restamping); ``learned``: a newer version seen on the way, to fold into the HLC."""

    reason: str
    maybe_applied: bool
    acks: int | None = None
    learned: Version | None = None


@dataclass(frozen=True, slots=True)
class ReadOk:
    """The read's answer: the newest record the replicas hold (None: none holds the key)."""

    record: Record | None


WriteOutcome = Ok | Restamp | PlaceHints | NeedWatermark | Unavailable
ReadOutcome = ReadOk | Unavailable


# -- choices over answers --------------------------------------------------------------------------


def newest(answers: Iterable[Record | None]) -> Record | None:
    """The answer with the highest version (None when no answer holds a record)."""
    return max((a for a in answers if a is not None), key=lambda rec: rec.version, default=None)


def stale(answers: Mapping[str, Record | None], best: Record) -> list[str]:
    """The nodes whose answer is older than ``best`` (or who hold nothing), in answer order."""
    return [n for n, a in answers.items() if a is None or a.version < best.version]


def read_order(replicas: Iterable[str], self_id: str, alive: Mapping[str, bool]) -> list[str]:
    """The order to ask replicas in: this node first, then live ones, then the rest (stable)."""
    return sorted(replicas, key=lambda n: (n != self_id, not alive.get(n, True)))


# -- writes ----------------------------------------------------------------------------------------


class WriteTally:
    """The forward-only write of one key: stampings, replica answers, hints, the outcome.

    Per attempt: :meth:`stamp` a version, ``add`` each replica's answer and ``fail`` each replica
    that did not answer (down, or the request failed: maybe applied), then :meth:`response`.
    A :class:`Restamp` means stamp and send again (at most ``versionrule.ATTEMPTS`` stampings);
    :class:`PlaceHints` and :class:`NeedWatermark` ask for an input, after which the tally answers
    again. ``lww_ack`` is the test-only negative control (plain last-writer-wins acks);
    ``all_acked`` the test fault that counts every replica as acknowledged.
    """

    def __init__(
        self,
        key: str,
        w: str,
        need: int,
        replicas: int,
        floor: Version | None = None,
        lww_ack: bool = False,
        all_acked: bool = False,
    ) -> None:
        self.key = key
        self.w = w
        self.need = need
        self.replicas = replicas
        self.floor = floor  # what the next stamping must be above
        self.lww_ack = lww_ack
        self.all_acked = all_acked
        self.own: list[Version] = []  # every stamping of this write
        self.seen: list[ApplyResult] = []  # every answer of every attempt (the created flag)
        self.restamps = 0
        self._results: list[ApplyResult] = []  # this attempt's answers
        self._failed: list[str] = []
        self._verdict: versionrule.Judgement | None = None
        self._hinted: tuple[str, ...] = ()
        self._hints_done = False

    @property
    def version(self) -> Version:
        """The current stamping."""
        return self.own[-1]

    @property
    def attempts(self) -> int:
        return len(self.own)

    def stamp(self, now_ts: int, node_id: str) -> Version:
        """Start an attempt: the version to send, ``now_ts`` (the HLC's) raised above the floor."""
        version = Version(versionrule.stamp_above(now_ts, self.floor), node_id)
        self.own.append(version)
        self._results, self._failed, self._verdict = [], [], None
        self._hinted, self._hints_done = (), False
        return version

    def add(self, node: str | None, answer: ApplyResult) -> None:
        """A replica's answer to the current stamping (``node`` None when the transport does
        not say which replica answered)."""
        self._results.append(answer)
        self.seen.append(answer)

    def fail(self, node: str) -> None:
        """A replica that did not answer the current stamping."""
        self._failed.append(node)

    def enough(self) -> bool:
        """Whether the acks so far (with hints placed, except for ``w=all``) meet ``w``."""
        return self._effective(self._acks()) >= self.need

    def _judge(self) -> versionrule.Judgement:
        if self._verdict is None:
            self._verdict = versionrule.judge(self.version, self._results, self.lww_ack)
        return self._verdict

    def _acks(self) -> int:
        return self.replicas if self.all_acked else self._judge().acks

    def _effective(self, acks: int) -> int:
        return acks if self.w == "all" else acks + len(self._hinted)

    def _restamp(self, above: Version, reason: str, observe: bool) -> WriteOutcome:
        self.restamps += 1
        if self.attempts >= versionrule.ATTEMPTS:
            if reason == "watermark":
                why = (
                    "this node's clock is behind the cluster's purge watermark; "
                    "retry (the write may or may not be visible later)"
                )
            else:
                why = (
                    f"replicas of {self.key!r} kept newer versions through "
                    f"{versionrule.ATTEMPTS} stampings (concurrent writers): "
                    "the write may or may not be visible later"
                )
            return Unavailable(why, maybe_applied=True, learned=above if observe else None)
        self.floor = above
        return Restamp(above, reason, observe)

    def response(self) -> WriteOutcome:
        """The outcome of the current attempt from the answers added."""
        verdict = self._judge()
        if verdict.below_watermark:  # this clock is behind the partition's purge watermark
            if self.attempts >= versionrule.ATTEMPTS:
                return self._restamp(self.version, "watermark", False)
            return NeedWatermark()
        if verdict.newer is not None:  # a replica holds a newer version: write above it
            return self._restamp(verdict.newer, "newer", True)
        if self._failed and not self._hints_done:
            return PlaceHints(tuple(self._failed))
        return self._final()

    def watermark(self, mark: int) -> WriteOutcome:
        """The partition's purge watermark, asked for by :class:`NeedWatermark`."""
        above = max(self.floor or self.version, Version(mark, ""))
        return self._restamp(above, "watermark", False)

    def hinted(self, holders: Sequence[str], held: Version | None) -> WriteOutcome:
        """The stand-ins that now hold a hint, and the newest version of the key any of them
        holds (asked for by :class:`PlaceHints`)."""
        self._hinted, self._hints_done = tuple(holders), True
        if held is not None and held > self.version and not self.lww_ack:
            # a stand-in holds a newer version for a replica that is down: above it, too
            return self._restamp(held, "stand_in", True)
        return self._final()

    def _final(self) -> WriteOutcome:
        acks = self._acks()
        effective = self._effective(acks)
        if effective < self.need:
            return Unavailable(
                f"write reached {acks} replica(s) and {len(self._hinted)} stand-in(s); "
                f"w={self.w} needs {self.need}: the write may or may not be visible later",
                maybe_applied=True,
                acks=acks,
            )
        # a replica that already holds one of this write's stampings saw our own request
        created = versionrule.created(self.seen, self.own)
        return Ok(self.version, acks, effective, created, self._hinted)


# -- reads -----------------------------------------------------------------------------------------


class ReadTally:
    """A read of ``key`` at ``level`` that needs ``need`` answers: ``add`` each replica's answer
    (the record it holds, or None), then :meth:`response` and :meth:`repairs`.

    A replica still being filled answers through :meth:`extra`: what it holds takes part in the
    newest-wins choice and in the repairs (a write it acknowledged while the filled replicas
    could not be reached is not hidden from the read), but its answer does not count toward
    ``need`` (what it lacks may be what it was never given yet)."""

    def __init__(self, key: str, level: str, need: int) -> None:
        self.key = key
        self.level = level
        self.need = need
        self.answers: dict[str, Record | None] = {}
        self.extras: dict[str, Record | None] = {}

    def add(self, node: str, answer: Record | None) -> None:
        self.answers[node] = answer

    def extra(self, node: str, answer: Record | None) -> None:
        """The answer of a replica still being filled (see the class)."""
        self.extras[node] = answer

    def enough(self) -> bool:
        return len(self.answers) >= self.need

    def newest(self) -> Record | None:
        return newest([*self.answers.values(), *self.extras.values()])

    def response(self) -> ReadOutcome:
        if not self.enough():
            return Unavailable(
                f"r={self.level} needs {self.need} replicas of {self.key!r}, "
                f"{len(self.answers)} answered",
                maybe_applied=False,
            )
        return ReadOk(self.newest())

    def repairs(self) -> list[tuple[str, Record]]:
        """Read repair as data: (node, record) for every replica older than the newest."""
        best = self.newest()
        if best is None:
            return []
        return [(n, best) for n in stale({**self.extras, **self.answers}, best)]


# -- listings --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    keys: list[str]
    next: str | None


def merge_listing(
    answers: Iterable[tuple[str, Sequence[Record]]],
    pmap: Sequence[Sequence[str]],
    limit: int,
) -> Listing:
    """Merge the scans of several nodes (``(node, records)``, each sorted by key and at most
    ``limit`` long) into one page of sorted live keys.

    A record from a node that no longer holds its partition (per ``pmap``, when known) is left
    out (its copy may be stale); per key the newest version wins and tombstones hide the key.
    Keys beyond the last key of a truncated answer are not known yet: the page stops there and
    ``next`` says where to go on (None: nothing more)."""
    best: dict[str, Record] = {}
    cutoff: str | None = None
    for node_id, recs in answers:
        for rec in recs:
            if pmap and node_id not in pmap[rec.part % len(pmap)]:
                continue  # a partition this node left: its copy may be stale
            old = best.get(rec.key)
            if old is None or rec.version > old.version:
                best[rec.key] = rec
        if len(recs) >= limit and (cutoff is None or recs[-1].key < cutoff):
            cutoff = recs[-1].key
    keys = sorted(k for k, rec in best.items() if not rec.tomb and (cutoff is None or k <= cutoff))
    more = cutoff is not None or len(keys) > limit
    keys = keys[:limit]
    nxt = (keys[-1] if keys else cutoff) if more else None
    return Listing(keys, nxt)
