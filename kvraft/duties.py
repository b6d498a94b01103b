"""A node's background duties, each an object with ``tick(now)``, and the runner that drives them.

Duties: registration in the metadata (:class:`Register`), liveness pings with the clock offset
samples (:class:`Ping`), hint delivery (:class:`HintDelivery`), the stored-data report
(:class:`StatsReport`), and the Raft leader's and the sync round's duties
(:class:`kvraft.leader.Leader`, :class:`kvraft.sync.Syncer`, which have the same ``tick(now)``).
Each tick decides (through :mod:`kvraft.core` where a plan exists) and then acts; the runner calls
each on its period. ``now`` is the wall clock in seconds (:meth:`Clock.time`): what the leader's
sync-round schedule is kept in (it is replicated, so it must mean the same on every node).
Durations (liveness, clock samples, round seconds) come from the injected clock's
:meth:`Clock.monotonic`. Nothing here reads ``time`` itself except :class:`SystemClock`, so tests
step a fake clock (etcd raft's ``tick()``).

Thread safety: each duty runs on its own runner thread; the state duties share (liveness, the
clock verdict) lives in :class:`Liveness` and :class:`ClockWatch`, which are thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import peer as m
from .clock import Clock
from .config import Config
from .core.clockguard import ClockGuard, Verdict
from .core.clockguard import sample as clock_sample
from .hlc import HLC
from .meta import Member, MetaUnavailable, NodeStats
from .peer import PeerError, Peers
from .storage import ApplyResult, Hint, Record, Store

log = logging.getLogger(__name__)

REGISTER_INTERVAL = 0.3
PING_INTERVAL = 0.5
HINT_INTERVAL = 0.5
STATS_INTERVAL = 2.0
LEADER_INTERVAL = 0.5
SYNC_TICK = 0.25
HINT_BATCHES = 64  # hint batches delivered per target and period (bounded work per tick)


class Duty(Protocol):
    def tick(self, now: float) -> object: ...


# -- shared state of the duties --------------------------------------------------------------------


class Liveness:
    """What this node knows of its peers from its contacts with them: last good and failed
    contact (monotonic), readiness and load at the last ping. Thread-safe (single dict item
    assignments and reads; the peer client marks from any thread)."""

    def __init__(self, self_id: str, clock: Clock) -> None:
        self.self_id = self_id
        self._clock = clock
        self._alive: dict[str, float] = {}  # node id -> monotonic time of the last good contact
        self._last_ok: dict[str, bool] = {}  # node id -> whether the last mark was a success
        self._ready: dict[str, bool] = {}  # node id -> ready at the last ping
        self._load: dict[str, int] = {}  # node id -> data requests it was serving then
        self._born = clock.monotonic()  # reference for nodes never heard from (see started)

    def started(self) -> None:
        """Take now as the reference for nodes never heard from: the node calls it once its
        metadata is open, so the time spent opening it counts as nobody's silence."""
        self._born = self._clock.monotonic()

    def mark(self, node_id: str, ok: bool) -> None:
        """Record a contact with ``node_id`` that succeeded (``ok``) or failed, at now."""
        if ok:
            self._alive[node_id] = self._clock.monotonic()
        self._last_ok[node_id] = ok

    def is_alive(self, node_id: str) -> bool:
        """Whether the last contact marked with ``node_id`` succeeded (optimistic before any
        contact, and after :meth:`forget_failures`)."""
        if node_id == self.self_id:
            return True
        return self._last_ok.get(node_id, True)

    def last_mark(self, node_id: str) -> bool | None:
        """Whether the last contact marked with ``node_id`` succeeded; None if none was (or
        since :meth:`forget_failures`)."""
        return self._last_ok.get(node_id)

    def forget_failures(self, node_id: str | None = None) -> None:
        """Forget the failed contacts with ``node_id`` (every node if None) and its last mark:
        it is alive again until a contact fails. The good contacts' times, hence
        :meth:`silent_for`, are kept."""
        if node_id is None:
            self._last_ok.clear()
        else:
            self._last_ok.pop(node_id, None)

    def silent_for(self, node_id: str) -> float:
        """Seconds since the last good contact with ``node_id`` (or since this node started)."""
        return self._clock.monotonic() - self._alive.get(node_id, self._born)

    def answered(self, node_id: str, ready: bool, load: int) -> None:
        self._ready[node_id] = ready
        self._load[node_id] = load

    def unanswered(self, node_id: str) -> None:
        self._ready[node_id] = False
        self._load.pop(node_id, None)

    def serving(self, node_id: str) -> bool:
        """Alive and ready to serve (last ping): what the leader balances requests over."""
        return node_id == self.self_id or (
            self.is_alive(node_id) and self._ready.get(node_id, True)
        )

    def peer_loads(self) -> dict[str, int]:
        """The data requests each peer said it was serving at its last ping."""
        return dict(self._load)


class ClockWatch:
    """The clock offset guard's state: samples from pings, the last verdict (what writes go by)
    and whether the verdict rests on evidence yet. Thread-safe (one lock)."""

    def __init__(self, max_offset_ms: int, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._guard = ClockGuard(max_offset_ms)
        self.last = Verdict(True, {}, (), max_offset_ms)
        self.checked = False  # every peer pinged once: the verdict has had its chance

    def add(self, node_id: str, t0_ms: int, t1_ms: int, peer_ms: int) -> None:
        with self._lock:
            self._guard.add(node_id, clock_sample(t0_ms, t1_ms, peer_ms, self._clock.monotonic()))

    def verdict(self, peers: Sequence[str]) -> Verdict:
        """Whether this node's clock is within bounds of the majority of ``peers`` it could
        measure; logs when the verdict changes."""
        with self._lock:
            verdict = self._guard.verdict(list(peers), self._clock.monotonic())
            changed, self.last = verdict.ok != self.last.ok, verdict
        if changed and not verdict.ok:
            log.warning("clock offset guard: %s; refusing to coordinate writes", verdict.describe())
        elif changed:
            log.warning(
                "clock offset guard: back within bounds (%s)",
                ", ".join(f"{p} {o:+.0f} ms" for p, o in verdict.offsets_ms.items()),
            )
        return verdict

    def check_measured(self, registered: bool, peers: int) -> bool:
        """At least half of the ``peers`` Raft peers have answered a ping with their clock since
        this node started (once true it stays so); False while this node is not ``registered``."""
        if self.checked:
            return True
        if not registered:
            return False
        with self._lock:
            self.checked = checked = 2 * self._guard.measured() >= peers
        return checked


# -- what duties need of the metadata and the peers ---------------------------------------------


class RegisterMeta(Protocol):
    def members(self) -> Mapping[str, Member]: ...

    def register(self, node_id: str, http: str, timeout: float = 3.0) -> None: ...


class JoinPeers(Protocol):
    """What ``--join`` asks of the peers (:class:`kvraft.peer.PeerClient` has it)."""

    def ping_at(self, addr: str, timeout: float | None = None) -> m.Pong: ...

    def change_members(
        self,
        node_id: str,
        change: m.MemberChange,
        *,
        timeout: float | None = None,
        addr: str | None = None,
    ) -> dict: ...


# -- the duties ------------------------------------------------------------------------------------


class Register:
    """Register this node in the metadata (its HTTP address under its Raft address); with
    ``--join``, first ask the cluster to add it to Raft until it is a member. ``peers`` is
    needed only with ``--join`` (ValueError if ``config.join`` is set without it)."""

    def __init__(self, config: Config, meta: RegisterMeta, peers: JoinPeers | None = None) -> None:
        if config.join and peers is None:
            raise ValueError("Register: --join needs the peers to ask the cluster")
        self.config = config
        self.meta = meta
        self.peers = peers
        self.joined = False  # with --join: the cluster has added us to its Raft members

    def tick(self, now: float) -> None:
        config, meta, peers = self.config, self.meta, self.peers
        if config.join and peers is not None and not self.joined:
            if config.raft in self._cluster_rafts():
                self.joined = True
                return
            try:
                change = m.MemberChange(
                    "add", config.id, config.advertise or config.http, config.raft
                )
                peers.change_members(config.join, change, timeout=15, addr=config.join)
            except PeerError as exc:
                log.info("join pending: %s", exc)
            return
        me = meta.members().get(config.id)
        advertised = config.advertise or config.http
        if me is not None and me.http == advertised and me.raft == config.raft:
            return
        try:
            meta.register(config.id, advertised)
        except MetaUnavailable as exc:
            log.info("registration pending: %s", exc)

    def _cluster_rafts(self) -> tuple[str, ...]:
        """Raft members as the cluster we join sees them (our own view may lag)."""
        if self.peers is None:
            return ()
        try:
            pong: m.Pong = self.peers.ping_at(self.config.join, timeout=2)
            return tuple(pong.raft_members)
        except (PeerError, ValueError):
            return ()


class Ping:
    """Ping every other member (on ``submit``'s pool, so one slow peer delays no other): its
    liveness, readiness and load, and a sample of its clock's offset; then judge the clock."""

    def __init__(
        self,
        self_id: str,
        members: Callable[[], Iterable[str]],
        raft_size: Callable[[], int],
        peers: Peers,
        hlc: HLC,
        liveness: Liveness,
        clock: ClockWatch,
        peer_timeout: float,
        submit: Callable[[Callable[[], None]], object],
    ) -> None:
        self.self_id = self_id
        self.members = members
        self.raft_size = raft_size
        self.peers = peers
        self.hlc = hlc
        self.liveness = liveness
        self.clock = clock
        self.peer_timeout = peer_timeout
        self.submit = submit

    def others(self) -> list[str]:
        return [n for n in self.members() if n != self.self_id]

    def check_clock(self) -> bool:
        """Whether the clock verdict rests on evidence (:meth:`ClockWatch.check_measured`)."""
        members = list(self.members())
        return self.clock.check_measured(self.self_id in members, self.raft_size() - 1)

    def verdict(self) -> Verdict:
        return self.clock.verdict(self.others())

    def tick(self, now: float) -> None:
        self.check_clock()  # the verdicts writes go by, from the pings so far
        self.verdict()
        for node_id in self.others():
            self.submit(lambda n=node_id: self.ping(n))  # type: ignore[misc]

    def ping(self, node_id: str) -> None:
        try:
            t0 = self.hlc.physical()
            pong: m.Pong = self.peers.ping(node_id, timeout=min(1.0, self.peer_timeout))
            t1 = self.hlc.physical()
            self.liveness.answered(node_id, pong.ready, pong.load)
            if pong.clock_ms is not None:
                self.clock.add(node_id, t0, t1, pong.clock_ms)
                self.verdict()
        except (PeerError, ValueError, TypeError, AttributeError):
            self.liveness.unanswered(node_id)
        finally:
            self.check_clock()


class HintDelivery:
    """Deliver hints to their targets when alive. A hint whose target no longer holds the
    record's partition (it died and was replaced, or left) goes to the current replicas."""

    def __init__(
        self,
        self_id: str,
        partitions: Callable[[], tuple[int, tuple[tuple[str, ...], ...]]],
        storage: Store,
        send_records: Callable[[str, list[Record]], list[ApplyResult]],
        apply_local: Callable[[list[Record]], list[ApplyResult]],
        is_alive: Callable[[str], bool],
        count: Callable[[str, int], None],
    ) -> None:
        self.self_id = self_id
        self.partitions = partitions
        self.storage = storage
        self.send_records = send_records
        self.apply_local = apply_local
        self.is_alive = is_alive
        self.count = count

    def tick(self, now: float) -> None:
        _epoch, pmap = self.partitions()
        if not pmap:
            return
        for target in self.storage.hint_targets():
            for _ in range(HINT_BATCHES):
                hints = self.storage.hints_for(target)
                if not hints or not self.deliver(target, hints, pmap):
                    break

    def deliver(self, target: str, hints: list[Hint], pmap: Sequence[Sequence[str]]) -> bool:
        """Send one batch of hints; drop those delivered. False when nothing could be sent."""
        if target == self.self_id:
            self.apply_local([h.record for h in hints])
            self.storage.drop_hints(h.id for h in hints)
            return True
        direct = [h for h in hints if target in pmap[h.record.part % len(pmap)]]
        moved = [h for h in hints if h not in direct]
        done: list[Hint] = []
        if direct and self.is_alive(target):
            try:
                results = self.send_records(target, [h.record for h in direct])
                done += direct
                # the target kept a newer copy: an acknowledged write ordered below it
                self.count(
                    "hints_superseded",
                    sum(
                        1
                        for h, res in zip(direct, results, strict=True)
                        if not res.applied and res.prev != h.record.version
                    ),
                )
            except (PeerError, ValueError):
                pass
        for h in moved:
            try:
                for r in pmap[h.record.part % len(pmap)]:
                    self.send_records(r, [h.record])
                done.append(h)
            except (PeerError, ValueError):
                break
        self.storage.drop_hints(h.id for h in done)
        self.count("hints_delivered", len(done))
        return len(done) == len(hints)


class StatsMeta(Protocol):
    def stats(self) -> dict[str, NodeStats]: ...

    def report_stats(self, node_id: str, keys: int, nbytes: int, hints: int) -> None: ...


class StatsReport:
    """Report this node's stored keys, bytes and pending hints to the metadata when they
    changed (fire and forget: the next report corrects a lost one)."""

    def __init__(self, self_id: str, storage: Store, meta: StatsMeta) -> None:
        self.self_id = self_id
        self.storage = storage
        self.meta = meta

    def tick(self, now: float) -> None:
        keys, nbytes = self.storage.live_keys, self.storage.live_bytes
        hints = self.storage.hints_pending
        s = self.meta.stats().get(self.self_id)
        if s is None or (s.keys, s.bytes, s.hints) != (keys, nbytes, hints):
            self.meta.report_stats(self.self_id, keys, nbytes, hints)


# -- the runner ------------------------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    duty: Duty
    period: float
    next_at: float = 0.0  # monotonic time it is next due (for :meth:`Runner.run_due`)


class Runner:
    """Drives duties on their periods: one daemon thread per duty (so a long sync round delays
    no ping), each calling ``tick(clock.time())`` then waiting its period; a duty that raises
    is logged and retried next period. :meth:`run_due` is the same schedule stepped by hand
    (tests with a fake clock): every duty whose period has passed ticks once, in order."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._entries: list[_Entry] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, name: str, duty: Duty, period: float) -> None:
        self._entries.append(_Entry(name, duty, period))

    def names(self) -> list[tuple[str, float]]:
        return [(e.name, e.period) for e in self._entries]

    def _tick(self, entry: _Entry) -> None:
        try:
            entry.duty.tick(self.clock.time())
        except Exception:  # a background duty must never die; it retries next period
            log.exception("%s failed", entry.name)

    def run_due(self) -> list[str]:
        """Tick every duty due at the clock's monotonic now; the names of those ticked."""
        ran = []
        for e in self._entries:
            now = self.clock.monotonic()
            if now >= e.next_at:
                e.next_at = now + e.period
                self._tick(e)
                ran.append(e.name)
        return ran

    def start(self) -> None:
        """Start one thread per duty. Returns at once."""
        for e in self._entries:
            t = threading.Thread(target=self._loop, args=(e,), name=e.name, daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self, entry: _Entry) -> None:
        while True:
            self._tick(entry)
            if self._stop.wait(entry.period):
                return

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Block up to ``seconds``; True as soon as the runner is stopping."""
        return self._stop.wait(seconds)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every thread to stop and wait up to ``timeout`` for each (a duty in a blocking
        call finishes it first)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout)
