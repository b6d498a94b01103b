"""Quorum tallies of the coordinator, in the style of riak_kv's ``put_core``/``get_core``.

The coordinator (:mod:`kvraft.coordinator`) does the IO: it sends a write or a read to the replicas
and feeds each answer to a tally (``add``); the tally says whether the answers are enough, what the
outcome is (as data: :class:`Ok`, :class:`Restamp`, :class:`PlaceHints`, :class:`NeedWatermark`,
:class:`ReadOk`, :class:`Unavailable`) and which replicas to repair (``repairs()``: (node, record)
pairs). A read of one key is a :class:`ReadWalk` (which replicas to ask, round by round, over a
:class:`ReadTally`): the one read rule, driven by ``Coordinator.read`` (one key) and
``Coordinator.get_many`` (many keys, batched per replica). The listing merge and the
newest-value / stale-replica choices are functions here too.

Pure: no IO, no threads, no clock, no logging. A tally is used by one thread.
"""

from __future__ import annotations

import dataclasses
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
    """The order to ask replicas in: this node first, then live ones, then the rest (stable).
    (A stable sort by (not self, not alive), without the sort: this is on every read's path.)"""
    mine = 0
    order: list[str] = []
    down: list[str] | None = None
    for n in replicas:
        if n == self_id:
            mine += 1
        elif alive.get(n, True):
            order.append(n)
        elif down is None:
            down = [n]
        else:
            down.append(n)
    if mine:
        order[:0] = [self_id] * mine
    if down:
        order += down
    return order


# -- writes ----------------------------------------------------------------------------------------


class WriteTally:
    """The forward-only write of one key: stampings, replica answers, hints, the outcome.

    Per attempt: :meth:`stamp` a version, ``add`` each replica's answer and ``fail`` each replica
    that did not answer (down, or the request failed: maybe applied), then :meth:`response`.
    A :class:`Restamp` means stamp and send again (at most ``versionrule.ATTEMPTS`` stampings);
    :class:`PlaceHints` and :class:`NeedWatermark` ask for an input, after which the tally answers
    again. ``lww_ack`` is the test-only negative control (plain last-writer-wins acks);
    ``all_acked`` the test fault that counts every replica as acknowledged.

    ``leaving``: replicas that leave the partition once a move's new replicas are filled. They
    get the write, and a newer version one of them kept is stamped above as any other, but
    neither their acks nor hints for them count toward ``w``: a move can complete while one of
    them is cut off, and what only it held would be gone with it.
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
        leaving: Sequence[str] = (),
    ) -> None:
        self.key = key
        self.leaving = tuple(leaving)
        self.w = w
        self.need = need
        self.replicas = replicas
        self.floor = floor  # what the next stamping must be above
        self._lead = 0  # and how far above it, after a concurrent writer won (versionrule.lead)
        self.lww_ack = lww_ack
        self.all_acked = all_acked
        self.own: list[Version] = []  # every stamping of this write
        self.seen: list[ApplyResult] = []  # every answer of every attempt (the created flag)
        self.restamps = 0
        self._results: list[ApplyResult] = []  # this attempt's answers
        self._counted: list[ApplyResult] = []  # of those, the answers of replicas that stay
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

    def above(self, limit_ts: int) -> int:
        """The timestamp the next stamping must be greater than (0: any): the floor, and after a
        concurrent writer won, the lead above it as far as ``limit_ts`` allows (the coordinator
        passes its wall clock plus half the clock offset bound, so that leads on a hot key do
        not carry the versions further ahead of the clocks than other nodes fold in)."""
        if self.floor is None:
            return 0
        ts = self.floor.ts
        if self._lead:
            ts = max(ts, min(ts + self._lead, limit_ts))
        return ts

    def stamp(self, now_ts: int, node_id: str) -> Version:
        """Start an attempt: the version to send, ``now_ts`` (the HLC's, issued above
        :meth:`above`) raised above the floor."""
        version = Version(versionrule.stamp_above(now_ts, self.floor), node_id)
        self.own.append(version)
        self._results, self._counted, self._failed, self._verdict = [], [], [], None
        self._hinted, self._hints_done = (), False
        return version

    def add(self, node: str | None, answer: ApplyResult) -> None:
        """A replica's answer to the current stamping (``node`` None when the transport does
        not say which replica answered: counted)."""
        self._results.append(answer)
        if node not in self.leaving:
            self._counted.append(answer)
        self.seen.append(answer)

    def fail(self, node: str) -> None:
        """A replica that did not answer the current stamping."""
        self._failed.append(node)

    def enough(self) -> bool:
        """Whether the acks so far (with hints placed, except for ``w=all``) meet ``w``."""
        return self._effective(self._acks()) >= self.need

    def _judge(self) -> versionrule.Judgement:
        if self._verdict is None:
            verdict = versionrule.judge(self.version, self._results, self.lww_ack)
            if len(self._counted) != len(self._results):  # a leaving replica answered
                counted = versionrule.judge(self.version, self._counted, self.lww_ack)
                verdict = dataclasses.replace(verdict, acks=counted.acks)
            self._verdict = verdict
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
        # past a concurrent writer's version by a lead (not a purge watermark: just above it)
        self._lead = versionrule.lead(self.restamps) if reason != "watermark" else 0
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
        failed = tuple(n for n in self._failed if n not in self.leaving)
        if failed and not self._hints_done:  # (a hint for a leaving replica would not count)
            return PlaceHints(failed)
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


class ReadWalk:
    """The read of one key, as data: which replicas to ask in which round, and the answer.

    ``order``: the replicas that may serve the read, in the order to ask them
    (:func:`read_order`); ``filling``: the live replicas still being filled, asked too but not
    counted (:meth:`ReadTally.extra`); ``need``: the answers ``level`` needs. The driver asks
    every replica of :meth:`asks` (in parallel, or batched with other keys' walks), then feeds
    each one's answer to :meth:`add` (the record it holds, tombstones included, or None) or its
    failure to :meth:`fail`, and asks again, until :attr:`done`; then :meth:`response` and
    :meth:`repairs`.

    The rules:

    - ``r=one``: the replicas one at a time, in order, until one answers (a failure: the next
      one). A record is the answer. A miss, while other replicas or filling ones remain, may be
      a replica whose copy still waits as a hint elsewhere (it was down for the write): then
      every one of those is asked in one last round, and the answer is the newest record any of
      them holds (their failures do not matter: the miss already answered). No read repair.
      When none answers: Unavailable, "no replica of KEY answered: " and the failures' reasons.
    - above ``one``: every replica and every filling one in one round; the answer and the
      repairs are :class:`ReadTally`'s (Unavailable when fewer than ``need`` replicas answered).

    :attr:`final` says that the current round is the walk's last (it asks everything the walk
    may still ask): a driver batching many keys runs the one-at-a-time rounds of all walks
    first, then every walk's last round together (one request per replica). Pure; one thread."""

    __slots__ = (
        "key",
        "level",
        "need",
        "order",
        "filling",
        "_at",
        "_waiting",
        "_tally",
        "_errors",
        "_outcome",
    )

    def __init__(
        self,
        key: str,
        level: str,
        need: int,
        order: Sequence[str],
        filling: Sequence[str] = (),
    ) -> None:
        self.key = key
        self.level = level
        self.need = need
        self.order = order
        self.filling = filling
        self._at = 0  # r=one: the index in ``order`` of the replica being asked
        self._waiting: dict[str, None] | None = None  # the last round's replicas not answered
        self._tally: ReadTally | None = None  # the last round's answers
        self._errors: list[str] | None = None  # r=one: why each replica asked failed
        self._outcome: ReadOutcome | None = None
        if level != "one":
            self._start_last((*order, *filling), ReadTally(key, level, need))
        elif not order:
            self._outcome = self._unavailable()

    @property
    def done(self) -> bool:
        return self._outcome is not None

    @property
    def final(self) -> bool:
        """Whether the current round is the walk's last (see the class)."""
        return self._tally is not None

    def asks(self) -> tuple[str, ...]:
        """The replicas to ask in the current round: each must then be given to :meth:`add` or
        :meth:`fail` before the next round starts. Empty once the walk is done."""
        if self._outcome is not None:
            return ()
        if self._waiting is None:
            return (self.order[self._at],)
        return tuple(self._waiting)

    def add(self, node: str, answer: Record | None) -> None:
        """``node``'s answer: the record of the key it holds (None: it holds none)."""
        if self._waiting is None:  # r=one, one replica at a time
            if self._outcome is not None or node != self.order[self._at]:
                raise self._not_asked(node)
            if answer is not None or (self._at + 1 >= len(self.order) and not self.filling):
                self._outcome = ReadOk(answer)
                return
            # a miss: ask the others (and the filling ones) before answering "not found"
            tally = ReadTally(self.key, self.level, self.need)
            tally.add(node, None)
            self._start_last((*self.order[self._at + 1 :], *self.filling), tally)
            return
        if node not in self._waiting:
            raise self._not_asked(node)
        assert self._tally is not None
        if node in self.filling:
            self._tally.extra(node, answer)
        else:
            self._tally.add(node, answer)
        self._answered(node, self._waiting)

    def fail(self, node: str, reason: str) -> None:
        """``node`` was asked and did not answer (down, or the request failed): ``reason``."""
        if self._waiting is None:
            if self._outcome is not None or node != self.order[self._at]:
                raise self._not_asked(node)
            if self._errors is None:
                self._errors = []
            self._errors.append(reason)
            self._at += 1
            if self._at >= len(self.order):
                self._outcome = self._unavailable()
            return
        if node not in self._waiting:
            raise self._not_asked(node)
        self._answered(node, self._waiting)

    def response(self) -> ReadOutcome:
        """The read's outcome (:class:`ReadOk` or :class:`Unavailable`), once :attr:`done`."""
        if self._outcome is None:
            raise RuntimeError(f"the read of {self.key!r} still asks {self.asks()}")
        return self._outcome

    def repairs(self) -> Sequence[tuple[str, Record]]:
        """Read repair as data, once :attr:`done`: (node, record) for every replica asked in the
        last round of a read above ``one`` that holds an older record than the answer, or none."""
        if self._outcome is None:
            raise RuntimeError(f"the read of {self.key!r} still asks {self.asks()}")
        if self._tally is None or self.level == "one":
            return ()
        return self._tally.repairs()

    def _start_last(self, nodes: tuple[str, ...], tally: ReadTally) -> None:
        self._waiting, self._tally = dict.fromkeys(nodes), tally
        if not nodes:
            self._outcome = tally.response()

    def _answered(self, node: str, waiting: dict[str, None]) -> None:
        del waiting[node]
        if not waiting:
            assert self._tally is not None
            self._outcome = self._tally.response()

    def _not_asked(self, node: str) -> ValueError:
        return ValueError(f"{node!r} was not asked for {self.key!r} (asked: {self.asks()})")

    def _unavailable(self) -> Unavailable:
        return Unavailable(
            f"no replica of {self.key!r} answered: {'; '.join(self._errors or ())}",
            maybe_applied=False,
        )


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
