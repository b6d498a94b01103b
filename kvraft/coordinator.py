"""The coordinator: a node's reads and writes of user keys, over its injected parts.

A :class:`Coordinator` turns ``put``/``create``/``delete``/``get``/``get_many``/``list_keys``
into messages to the replicas and feeds their answers to the pure tallies of
:mod:`kvraft.core.quorum`; it also holds the two pieces of IO those decisions ask for: hint
placement on stand-ins and read repair.
Its parts come through the constructor: the node id and config, a
:class:`~kvraft.storage.Store`, a :class:`~kvraft.peer.client.Peers`, a :class:`PlacementView`
(partition map, liveness and members: the metadata it reads), the HLC, a counter sink, the
change publisher, the clock verdict and an executor for parallel peer calls.

Write path: stamp an HLC version, send the record to the remote replicas first and commit the
local copy while they work, store a hint on a stand-in node for each replica that failed, and
succeed when the acks meet ``w`` (hints count for ``one`` and ``quorum``, never for ``all``).
Read path: the rule is :class:`kvraft.core.quorum.ReadWalk`'s (``r=one`` reads the first
reachable replica, this node's store if it is one, and asks the others on a miss; ``quorum``/
``all`` ask every replica, return the newest and repair the stale ones); :meth:`read` drives it
for one key, ``get_many`` for many keys (reports, exports): one request per replica per batch of
keys instead of one per key, each key decided by the same walk.

It must not: start threads of its own beyond the executor's tasks, read the wall clock, decide
quorum rules itself (that is :mod:`kvraft.core.quorum`), import Flask or know HTTP statuses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from . import peer as m
from .config import Config
from .core import placement, quorum
from .core.clockguard import Verdict
from .errors import BadRequest, ClockOffset, NotFound, Unavailable
from .hlc import HLC, LOGICAL_BITS, Version
from .hotkeys import HotKeys
from .keygroups import KeyGroups
from .keys import check_key, new_key
from .peer import PeerError, Peers, PeerServer, Sent
from .peer.client import Reading
from .storage import ApplyResult, Record, Store

__all__ = ["ClockStanding", "Coordinator", "PlacementView", "WriteResult"]

log = logging.getLogger(__name__)

READ_MANY_KEYS = 1000  # keys per ReadKeys request of get_many
READ_MANY_BYTES = 8 << 20  # value bytes a replica answers one such request with (about)


@dataclass(frozen=True, slots=True)
class WriteResult:
    key: str
    version: Version
    replicas: tuple[str, ...]
    acks: int
    created: bool
    hinted: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version.encode(),
            "replicas": list(self.replicas),
            "acks": self.acks,
            "hinted": list(self.hinted),
        }


class PlacementView(Protocol):
    """The metadata the coordinator reads (the node over Raft; a static map in tests). Calls do
    not block on the network and are safe from any thread."""

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]:
        """The key's partition and its replicas; Unavailable without a current map."""
        ...

    def readable(self, part: int) -> tuple[str, ...]:
        """Replicas of ``part`` that may serve reads (not still being filled)."""
        ...

    def write_set(self, key: str) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
        """The key's partition, its replicas, and those of them that leave it once the
        replicas being filled are filled: all from one snapshot of the map (a move completing
        in between must not leave a leaving replica counted). Unavailable without a map."""
        ...

    def watermarks(self) -> Mapping[int, int]:
        """Partition -> purge watermark (HLC ts below which tombstones may be gone)."""
        ...

    def partition_map(self) -> Sequence[Sequence[str]]:
        """Replicas of every partition, by partition id (empty before the first map)."""
        ...

    def members(self) -> Mapping[str, str]:
        """Node id -> address, for the current members."""
        ...

    def is_alive(self, node_id: str) -> bool:
        """Whether the last contact with ``node_id`` succeeded."""
        ...

    def serving(self, node_id: str) -> bool:
        """Alive and ready to serve at its last ping."""
        ...

    def removing(self) -> tuple[str, ...]:
        """The members being drained out of the cluster (they hold no hints for others)."""
        ...


@dataclass(frozen=True, slots=True)
class ClockStanding:
    """What writes go by: the clock guard's last verdict and whether it rests on evidence."""

    verdict: Verdict
    checked: bool


KEY_LOCKS = 1024  # lock stripes for the writes of one key (Coordinator.write)
PUT_GROUP_LIMIT = 64  # PUTs of one key sent in one round at most (Coordinator._put_group)


@dataclass(frozen=True, slots=True)
class _Put:
    """A PUT waiting for its key's round: what :meth:`Coordinator.write` decided before it."""

    value: bytes
    w: str
    need: int
    part: int
    replicas: tuple[str, ...]
    leaving: tuple[str, ...]

    def shares_round(self, other: _Put) -> bool:
        """Whether ``other`` may go in this PUT's round: sent to the same replicas."""
        return (
            self.part == other.part
            and self.replicas == other.replicas
            and self.leaving == other.leaving
        )


class Coordinator:
    """Reads and writes of one node. Thread-safe: any number of request threads may call it at
    once (its parts are thread-safe; the tallies are per call). Every public call blocks on the
    network until the replicas answer or the peer timeout passes.

    Errors: BadRequest (bad key, level or limit: nothing was sent), NotFound, ClockOffset and
    Unavailable before a write is sent (nothing applied), and Unavailable from a write that was
    sent: then it **may have been applied** on some replica and may become visible later (its
    message says which). Errors of the local store are raised as they are (the write may be on
    a remote replica)."""

    def __init__(
        self,
        node_id: str,
        config: Config,
        store: Store,
        peers: Peers,
        view: PlacementView,
        hlc: HLC,
        pool: Executor,
        count: Callable[[str, int], None],
        publish: Callable[[Iterable[Record]], None],
        clock: Callable[[], ClockStanding],
    ) -> None:
        self.id = node_id
        self.config = config
        self.rf = config.replication_factor
        self.store = store
        self.peers = peers
        self.view = view
        self.hlc = hlc
        self.pool = pool
        self._count = count
        self._publish = publish
        self._clock = clock
        self._key_locks = [threading.Lock() for _ in range(KEY_LOCKS)]
        self._groups: KeyGroups[_Put, WriteResult] = KeyGroups(
            self._put_group, same=_Put.shares_round, limit=PUT_GROUP_LIMIT
        )
        self.hot = HotKeys(config.hot_key_ttl)  # keys other coordinators write too
        # how far ahead of this node's wall clock a lead may carry a write's version
        self._lead_room_ms = int(config.max_clock_offset * 500)

    def count(self, name: str, n: int = 1) -> None:
        self._count(name, n)

    # -- serving peers -------------------------------------------------------------------------

    def serve(self, server: PeerServer) -> None:
        """Register the answers to the peer messages of the data path that this coordinator
        owns: Apply (a replica write), Hint and Scan. ReadKeys is registered by its owner (the
        node answers it with a byte budget for reports)."""
        server.register(m.Apply, lambda msg: m.Applied(tuple(self.apply_local(list(msg.records)))))
        server.register(
            m.Scan,
            lambda msg: m.Records(tuple(self.store.scan(msg.prefix, msg.after, msg.limit))),
        )
        server.register(
            m.Hint, lambda msg: m.HintStored(self.hint_local(msg.target, list(msg.records)))
        )

    def apply_local(self, records: list[Record], observe: bool = True) -> list[ApplyResult]:
        """Apply records to this node's store (last writer wins); ``observe`` folds their
        versions into the HLC (records from elsewhere). Blocks on the store's commit."""
        for r in records if observe else ():
            self.observe(r.version)
        results = self.store.apply_many(records)
        self._publish(r for r, res in zip(records, results, strict=True) if res.applied)
        return results

    def observe(self, version: Version) -> None:
        """Fold a version seen elsewhere into the HLC, unless it is too far ahead to trust."""
        if not self.hlc.observe(version.ts):
            self.count("clock_refused")
            log.info(
                "not folding in %s from %s: more than max_clock_offset ahead of this node's clock",
                version.encode(),
                version.node,
            )

    def hint_local(self, target: str, records: list[Record]) -> Version | None:
        """Store hints for ``target``; return the newest version held of the last one's key."""
        newest = None
        for r in records:
            newest = self.store.add_hint(target, r)
        self.count("hints_stored", len(records))
        return newest

    # -- peer calls ----------------------------------------------------------------------------

    def send_records(self, node_id: str, records: list[Record]) -> list[ApplyResult]:
        """Apply ``records`` on ``node_id`` (this node's store when it is this node). Blocks;
        PeerError means they may or may not have been applied."""
        if node_id == self.id:
            return self.apply_local(records)
        return list(self.peers.apply(node_id, records).results)

    def send_hint(self, holder: str, target: str, record: Record) -> Version | None:
        """Store ``record`` as a hint for ``target`` on ``holder``; return the newest version of
        the key the holder has (None from a holder that does not say)."""
        if holder == self.id:
            return self.store.add_hint(target, record)
        return self.peers.hint(holder, target, record)

    def fetch(self, node_id: str, key: str) -> Record | None:
        if node_id == self.id:
            return self.store.get(key)
        return self.peers.read(node_id, key)  # reads to one peer go together

    def check_clock(self) -> None:
        """Refuse to coordinate a write while this node's clock is out of bounds (the verdict
        the ping duty last reached, so a write costs no recomputation)."""
        standing = self._clock()
        verdict = standing.verdict
        if not verdict.ok:
            self.count("writes_clock_refused")
            raise ClockOffset(
                verdict.describe() + ": this node refuses to coordinate writes "
                "until its clock is back within bounds; write through another node"
            )
        if not standing.checked:
            self.count("writes_clock_refused")
            raise Unavailable(
                "this node has not measured its clock offset to its peers yet "
                "(at least half of them must answer a ping); retry shortly"
            )

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, w: str = "quorum") -> WriteResult:
        check_key(key)
        return self.write(key, value, False, w)

    def create(self, value: bytes, w: str = "quorum") -> WriteResult:
        return self.write(new_key(), value, False, w)

    def delete(self, key: str, w: str = "quorum") -> WriteResult:
        """Delete ``key``: a tombstone stamped above the newest version any replica holds.
        NotFound when no replica holds a live value."""
        check_key(key)
        placement.required_acks(w, self.rf)
        part, _replicas = self.view.replicas_of(key)
        answers = self.gather(list(self.view.readable(part)), key)  # newest any replica has
        if not answers:
            raise Unavailable(f"no replica of {key!r} answered")
        current = quorum.newest(answers.values())
        if current is None or current.tomb:
            raise NotFound(f"key {key!r} not found")
        self.check_clock()
        if self.config.test_fault == "lww_ack":  # the negative control: today's plain rule
            return self.write(key, b"", True, w)
        self.observe(current.version)
        return self.write(key, b"", True, w, floor=current.version)  # stamped above it

    def write(
        self, key: str, value: bytes, tomb: bool, w: str, floor: Version | None = None
    ) -> WriteResult:
        """Stamp, send, tally; stamp again above what a replica kept (forward-only versions).

        The decisions are :class:`kvraft.core.quorum.WriteTally`'s; this method does the IO. A
        replica answer counts as an ack only when the replica now holds this write's version
        (:mod:`kvraft.core.versionrule`). A replica that kept a newer version teaches the
        coordinator that version: the write is stamped again above it and sent again, at most
        ``versionrule.ATTEMPTS`` times, each time a lead further above it (``versionrule.lead``)
        so that it passes the versions other coordinators stamp for the key meanwhile. Raises
        Unavailable when the acks (with hints, for ``one``/``quorum``) stay below ``w``: the
        write may or may not be visible later."""
        need = placement.required_acks(w, self.rf)  # a bad w is a 400 before anything else
        part, replicas, leaving = self.view.write_set(key)
        self.check_clock()
        # Writes of one key through this coordinator go one round at a time: concurrent rounds
        # would only find each other's newer versions on the replicas and stamp again (and
        # again). The PUTs that queue behind a round go in the next one together (_put_group).
        if tomb or floor is not None or self.config.test_fault:
            with self._key_locks[hash(key) % KEY_LOCKS]:
                return self._write(key, value, tomb, w, need, part, replicas, leaving, floor)
        return self._groups.submit(key, _Put(value, w, need, part, replicas, leaving))

    def write_owner(self, key: str) -> str | None:
        """The node a PUT of ``key`` is better sent to, or None to coordinate it here: its
        owner (the first replica of its partition that :meth:`_can_own` it) while the key is
        hot (a PUT of it met another coordinator's newer version lately; :mod:`kvraft.hotkeys`)."""
        if not self.hot.is_hot(key):
            return None
        _part, replicas = self.view.replicas_of(key)
        owner = next((r for r in replicas if r == self.id or self._can_own(r)), None)
        return None if owner is None or owner == self.id else owner

    def owner_failed(self, node_id: str) -> None:
        """A PUT forwarded to ``node_id`` as an owner was not answered: write around it."""
        self.hot.avoid(node_id)

    def _can_own(self, node_id: str) -> bool:
        """Alive and ready at its last ping, a member, and not a recent failed forward's."""
        return (
            self.view.serving(node_id)
            and node_id in self.view.members()
            and not self.hot.avoided(node_id)
        )

    def _put_group(self, key: str, puts: list[_Put]) -> list[WriteResult | BaseException]:
        """One round for the PUTs of ``key`` that queued together (same partition and replicas).

        Each PUT is its own write, with its own tally and its own version: they are stamped in
        arrival order by the HLC (so the versions rise in that order), sent to every replica
        together and in that order (one Apply batch and one transaction per replica, which
        applies each of them in turn: the last one stays), and each is then decided on its own
        answers. A PUT that a replica refused (another coordinator's newer version landed in
        between) goes on alone as :meth:`_write` would. These writes overlap in time, so last
        writer wins orders them, and each acknowledged one was the newest version of the key
        on the replicas that acknowledged it."""
        first = puts[0]
        with self._key_locks[hash(key) % KEY_LOCKS]:
            if len(puts) == 1:
                return [
                    self._write(
                        key, first.value, False, first.w, first.need,
                        first.part, first.replicas, first.leaving, None,
                    )
                ]  # fmt: skip
            self.count("writes_grouped", len(puts))
            tallies = [self._tally(key, p.w, p.need, p.replicas, None, p.leaving) for p in puts]
            records = [
                self._stamp(t, key, first.part, False, p.value)
                for t, p in zip(tallies, puts, strict=True)
            ]
            sent = self.send_writes(records, first.replicas)
            outcomes: list[WriteResult | BaseException] = []
            for t, rec, answers in zip(tallies, records, sent, strict=True):
                try:
                    outcomes.append(self._drive(t, rec, first.replicas, answers))
                except Exception as exc:  # noqa: BLE001 - that PUT's own error (Unavailable)
                    outcomes.append(exc)
            return outcomes

    def _tally(
        self,
        key: str,
        w: str,
        need: int,
        replicas: tuple[str, ...],
        floor: Version | None,
        leaving: tuple[str, ...],
    ) -> quorum.WriteTally:
        return quorum.WriteTally(
            key,
            w,
            need,
            len(replicas),
            floor=floor,
            lww_ack=self.config.test_fault == "lww_ack",
            all_acked=self.config.test_fault == "drop_replication",
            leaving=leaving,
        )

    def _stamp(
        self, tally: quorum.WriteTally, key: str, part: int, tomb: bool, value: bytes
    ) -> Record:
        """The write's record at its next stamping: issued by the HLC above the floor (and a
        lead), so reserved like any timestamp."""
        limit = (self.hlc.physical() + self._lead_room_ms) << LOGICAL_BITS
        now_ts = self.hlc.now(tally.above(limit))
        return Record(key, part, tally.stamp(now_ts, self.id), tomb, value)

    def _write(
        self,
        key: str,
        value: bytes,
        tomb: bool,
        w: str,
        need: int,
        part: int,
        replicas: tuple[str, ...],
        leaving: tuple[str, ...],
        floor: Version | None,
    ) -> WriteResult:
        tally = self._tally(key, w, need, replicas, floor, leaving)
        record = self._stamp(tally, key, part, tomb, value)
        if self.config.test_fault == "ack_without_write":  # negative control for the checker
            return WriteResult(key, record.version, replicas, need, True)
        return self._drive(tally, record, replicas, self.send_write(record, replicas))

    def _drive(
        self,
        tally: quorum.WriteTally,
        record: Record,
        replicas: tuple[str, ...],
        answers: tuple[list[tuple[str, ApplyResult]], list[str]],
    ) -> WriteResult:
        """Decide the write from its first attempt's ``answers`` (:meth:`send_write`'s), placing
        hints and stamping and sending again as the tally asks, until it is decided."""
        key, part = record.key, record.part
        while True:
            results, failed = answers
            for node, res in results:
                tally.add(node, res)
            for r in failed:
                tally.fail(r)
            out = tally.response()
            if isinstance(out, quorum.NeedWatermark):
                out = tally.watermark(self.view.watermarks().get(part, 0))
            if isinstance(out, quorum.PlaceHints):
                out = tally.hinted(*self.hint(part, replicas, list(out.failed), record))
            if not isinstance(out, quorum.Restamp):
                break
            if out.observe:
                self.observe(out.above)
            record = self._stamp(tally, key, part, record.tomb, record.value)
            answers = self.send_write(record, replicas)
        if tally.restamps:
            self.count("writes_restamped", tally.restamps)
            if not record.tomb:
                self.hot.mark(key)
        if isinstance(out, quorum.Unavailable):
            if out.learned is not None:
                self.observe(out.learned)
            if out.acks is not None:
                self.count("writes")
                self.count("replica_acks", out.acks)
            self.count("writes_unavailable")
            raise Unavailable(out.reason)
        assert isinstance(out, quorum.Ok)
        self.count("writes")
        self.count("replica_acks", out.acks)
        return WriteResult(key, out.version, replicas, out.effective, out.created, out.hinted)

    def send_write(
        self, record: Record, replicas: tuple[str, ...]
    ) -> tuple[list[tuple[str, ApplyResult]], list[str]]:
        """Send ``record`` to its replicas: the remote ones first (batched with other writes to
        the same peer), the local copy committed while they work. Returns each answer with the
        replica that gave it, and the replicas that failed (down, or the request failed: maybe
        applied)."""
        return self.send_writes([record], replicas)[0]

    def send_writes(
        self, records: list[Record], replicas: tuple[str, ...]
    ) -> list[tuple[list[tuple[str, ApplyResult]], list[str]]]:
        """:meth:`send_write` for several records of one partition at once: each replica gets
        them together and in order (one batch to a peer, one commit of the local copies).
        Returns one (answers, failed replicas) per record."""
        tickets: dict[str, list[Sent]] = {}
        local = None
        down: list[str] = []
        for r in replicas:
            if r == self.id:
                local = r
            elif self.config.test_fault == "drop_replication":
                continue  # the replica silently misses this write (acks counted as if sent)
            elif not self.view.is_alive(r):
                down.append(r)
            else:
                tickets[r] = self.peers.send_apply_many(r, records)
        out: list[tuple[list[tuple[str, ApplyResult]], list[str]]] = [
            ([], list(down)) for _ in records
        ]
        error: BaseException | None = None  # raised once every ticket has been read
        if local is not None:
            try:  # stamped by this node's HLC: nothing to fold in
                for (results, _f), res in zip(
                    out, self.apply_local(records, observe=False), strict=True
                ):
                    results.append((local, res))
            except BaseException as exc:  # noqa: BLE001 - e.g. a full disk; re-raised below
                error = exc
        # Read every ticket, whatever happened: a batch whose answer nobody reads would hold its
        # peer's lane (every later write waits). Record by record across the replicas, so that
        # a group split over several batches has each replica's next batch sent as soon as its
        # previous answer is in, not after the other replicas' whole share.
        for i, rec in enumerate(records):
            results, failed = out[i]
            for r, sent in tickets.items():
                t = sent[i]
                try:
                    results.append((r, t.result()))
                except PeerError as exc:
                    log.info("replica %s failed for %r: %s", r, rec.key, exc)
                    failed.append(r)
                except Exception as exc:  # noqa: BLE001 - not the peer's fault: a bug; re-raised
                    error = error or exc
        if error is not None:
            raise error
        return out

    def hint(
        self, part: int, replicas: tuple[str, ...], failed: list[str], record: Record
    ) -> tuple[list[str], Version | None]:
        """Store ``record`` as a hint for each failed replica on a live stand-in (not one being
        drained out: it may be gone before the replica is back); return the holders and the
        newest version of the key any of them holds."""
        holders: list[str] = []
        newest: Version | None = None
        removing = self.view.removing()
        candidates = [
            s
            for s in placement.stand_ins(part, replicas, list(self.view.members()))
            if self.view.is_alive(s) and s not in removing
        ]
        for target in failed:
            while candidates:
                holder = candidates.pop(0)
                try:
                    held = self.send_hint(holder, target, record)
                except PeerError:
                    continue
                if held is not None and (newest is None or held > newest):
                    newest = held
                holders.append(holder)
                self.count("hints_stored")
                break
        return holders, newest

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str, r: str = "one") -> Record:
        """The key's record at read level ``r``; NotFound when absent or deleted."""
        check_key(key)
        rec = self.read(key, r)
        self.count("reads")
        if rec is None or rec.tomb:
            raise NotFound(f"key {key!r} not found")
        return rec

    def read(self, key: str, level: str) -> Record | None:
        """The newest record of ``key`` the replicas asked at ``level`` hold (tombstones
        included), by the read rule of :class:`kvraft.core.quorum.ReadWalk`: its rounds of one
        replica are asked from this thread, its rounds of several at once by
        :meth:`gather_all` (the peers' reads on the wire while this node's store is read, no
        pool task); the repairs it asks for (``r`` above ``one``) are sent in the background
        (pool tasks). Raises Unavailable (too few replicas answered) or ValueError (an unknown
        level)."""
        walk = self.walk(key, level)
        while ask := walk.asks():
            if len(ask) == 1:
                n = ask[0]
                try:
                    found = self.fetch(n, key)
                except (PeerError, ValueError) as exc:
                    walk.fail(n, str(exc))
                else:
                    walk.add(n, found)
                continue
            answers, failures = self.gather_all(ask, key)
            for n in ask:
                if n in answers:
                    walk.add(n, answers[n])
                else:
                    walk.fail(n, failures[n])
        out = walk.response()
        if isinstance(out, quorum.Unavailable):
            raise Unavailable(out.reason)
        if repairs := walk.repairs():
            self.send_repairs(repairs)
        return out.record

    def walk(self, key: str, level: str, alive: dict[str, bool] | None = None) -> quorum.ReadWalk:
        """The read walk of ``key`` at ``level`` over the current placement: its readable
        replicas in read order, and the live replicas still being filled (asked too, not
        counted: a write may have reached only them). ``alive`` caches liveness across the keys
        of one batch. ValueError for an unknown level."""
        part, every = self.view.replicas_of(key)
        replicas = self.view.readable(part)
        if alive is None:
            alive = {}
        for n in every:
            if n not in alive:
                alive[n] = self.view.is_alive(n)
        # while a lost replica is being refilled, "all" means every filled replica
        need = placement.required_acks(level, min(self.rf, len(replicas)))
        order = quorum.read_order(replicas, self.id, alive)
        # (every == replicas: none is being filled, the common case, without the scan)
        filling = () if every == replicas else [n for n in every if n not in replicas and alive[n]]
        return quorum.ReadWalk(key, level, need, order, filling)

    def send_repairs(self, repairs: Iterable[tuple[str, Record]]) -> None:
        """Send read repairs in the background: one :meth:`repair_many` task per replica."""
        by_node: dict[str, list[Record]] = {}
        for n, rec in repairs:
            by_node.setdefault(n, []).append(rec)
        for n, recs in by_node.items():
            self.count("read_repairs", len(recs))
            self.pool.submit(self.repair_many, n, recs)

    def gather(self, nodes: Sequence[str], key: str) -> dict[str, Record | None]:
        """Ask each of ``nodes`` for ``key`` in parallel; the answers of those that answered.
        Blocks until every one answered or failed."""
        return self.gather_all(nodes, key)[0]

    def gather_all(
        self, nodes: Sequence[str], key: str
    ) -> tuple[dict[str, Record | None], dict[str, str]]:
        """:meth:`gather`, and why each node that did not answer failed.

        No pool task: every peer's read is sent first (:meth:`Peers.send_read`, batched with
        the other reads to that peer), this node's store is read on the calling thread while
        they are on the wire, then every ticket is read, whatever happened before (an unread
        batch would hold its peer's lane). An error of the local store other than ValueError is
        raised once every ticket has been read."""
        tickets: dict[str, Reading] = {}
        local = False
        for n in nodes:
            if n == self.id:
                local = True
            else:
                tickets[n] = self.peers.send_read(n, key)
        answers: dict[str, Record | None] = {}
        failures: dict[str, str] = {}
        error: BaseException | None = None  # raised once every ticket has been read
        if local:
            try:
                answers[self.id] = self.store.get(key)
            except ValueError as exc:
                failures[self.id] = str(exc)
            except BaseException as exc:  # noqa: BLE001 - e.g. a closed store; re-raised below
                error = exc
        for n, t in tickets.items():
            try:
                answers[n] = t.result()
            except (PeerError, ValueError) as exc:
                failures[n] = str(exc)
            except Exception as exc:  # noqa: BLE001 - not the peer's fault: a bug; re-raised
                error = error or exc
        if error is not None:
            raise error
        return answers, failures

    def get_many(self, keys: Iterable[str], r: str = "one") -> dict[str, Record | None]:
        """Each key's live record at read level ``r`` (None: absent or deleted), read in
        batches: the keys are grouped by replica, and each replica gets one
        :class:`~kvraft.peer.messages.ReadKeys` per :data:`READ_MANY_KEYS` keys (with a byte
        budget of :data:`READ_MANY_BYTES`; this node's own copies come from its store).

        Per key the answer is :meth:`get`'s: the same :class:`~kvraft.core.quorum.ReadWalk`
        (replica order, ``r=one`` asking the others on a miss, replicas still being filled asked
        but not counted, the tally and repairs above ``one``), here driven for every key at once
        by :meth:`walk_batched`; the repairs are sent in the background, one task per replica.

        Blocks until every replica asked answered or failed; the values of all ``keys`` are in
        memory at once (callers page). Thread-safe; not to be called from a task of the
        coordinator's pool (it waits on that pool). Raises, as :meth:`get` does, BadRequest (a
        bad key) or ValueError (an unknown level) before anything is sent, and Unavailable for
        the first key, in the order given, that too few replicas answered for."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        placement.required_acks(r, self.rf)  # an unknown level: refused before anything is sent
        alive: dict[str, bool] = {}
        walks = [self.walk(key, r, alive) for key in wanted]
        self.walk_batched(walks)
        found: dict[str, Record | None] = {}
        for walk in walks:
            out = walk.response()
            if isinstance(out, quorum.Unavailable):
                raise Unavailable(out.reason)
            found[walk.key] = out.record
        self.send_repairs(rep for walk in walks for rep in walk.repairs())
        self.count("reads", len(wanted))
        return {k: None if rec is None or rec.tomb else rec for k, rec in found.items()}

    def walk_batched(self, walks: Sequence[quorum.ReadWalk]) -> None:
        """Drive many keys' walks to their end, batched: each round asks every replica once
        (:meth:`read_stored`) for the keys whose walks ask it. The walks' one-replica rounds
        run first; then their last rounds all together (one request per replica). Raises
        Unavailable for the first walk, in the order given, that too few replicas answered,
        before any last round is sent."""
        pending = [w for w in walks if not w.done]
        while pending:
            stepping = [w for w in pending if not w.final]
            if not stepping:  # only last rounds remain: the keys already lost end the read
                for w in walks:
                    out = w.response() if w.done else None
                    if isinstance(out, quorum.Unavailable):
                        raise Unavailable(out.reason)
                stepping = pending
            asked = [(w, w.asks()) for w in stepping]
            by_node: dict[str, list[str]] = {}
            for w, nodes in asked:
                for n in nodes:
                    by_node.setdefault(n, []).append(w.key)
            answers, failures = self._read_batches(by_node)
            for w, nodes in asked:
                for n in nodes:
                    got = answers.get(n)
                    if got is None:
                        w.fail(n, failures[n])
                    else:
                        w.add(n, got.get(w.key))
            pending = [w for w in pending if not w.done]

    def _read_batches(
        self, by_node: Mapping[str, list[str]]
    ) -> tuple[dict[str, dict[str, Record]], dict[str, str]]:
        """Read each node's keys (one task per node on the pool, which waits on nothing);
        returns the answers of the nodes that answered (key -> stored record, tombstones
        included) and why each other node failed."""
        futures = {n: self.pool.submit(self.read_stored, n, ks) for n, ks in by_node.items()}
        answers: dict[str, dict[str, Record]] = {}
        failures: dict[str, str] = {}
        for n, fut in futures.items():
            try:
                answers[n] = fut.result()
            except (PeerError, ValueError) as exc:
                failures[n] = str(exc)
        return answers, failures

    def read_stored(self, node_id: str, keys: Sequence[str]) -> dict[str, Record]:
        """The records ``node_id`` stores for ``keys`` (tombstones included; keys it lacks are
        left out), in requests of at most :data:`READ_MANY_KEYS` keys and about
        :data:`READ_MANY_BYTES` of values. Blocks; PeerError when a request fails."""
        if node_id == self.id:
            return {rec.key: rec for rec in self.store.get_many(keys)}
        out: dict[str, Record] = {}
        pending = list(keys)
        while pending:
            chunk = pending[:READ_MANY_KEYS]
            answer = self.peers.read_keys(node_id, chunk, READ_MANY_BYTES)
            done = len(chunk) if answer.done is None else answer.done
            if not 1 <= done <= len(chunk):
                raise PeerError(f"{node_id}: handled {done} of {len(chunk)} keys")
            out.update((rec.key, rec) for rec in answer.records)
            del pending[:done]
        return out

    def repair_many(self, node_id: str, records: list[Record]) -> None:
        """Write ``records`` to a stale replica; a failure is left to hints and anti-entropy."""
        try:
            self.send_records(node_id, records)
        except PeerError:
            pass  # anti-entropy and hints cover it later

    def list_keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]:
        """Sorted live keys under ``prefix`` after ``after``, merged over every reachable node."""
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be 1 to 1000")
        nodes = [n for n in self.view.members() if self.view.is_alive(n)] or [self.id]
        futures = {self.pool.submit(self.scan, n, prefix, after, limit): n for n in nodes}
        answers: list[tuple[str, list[Record]]] = []
        pmap = self.view.partition_map()
        for fut, node_id in futures.items():
            try:
                answers.append((node_id, fut.result()))
            except (PeerError, ValueError):
                continue
        if not answers:
            raise Unavailable("no node answered the listing")
        page = quorum.merge_listing(answers, pmap, limit)
        return page.keys, page.next

    def scan(self, node_id: str, prefix: str, after: str | None, limit: int) -> list[Record]:
        if node_id == self.id:
            return self.store.scan(prefix, after, limit)
        return list(self.peers.scan(node_id, prefix, after, limit).records)
