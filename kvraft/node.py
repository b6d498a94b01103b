"""A kvraft node: the coordinator of reads and writes, and its background duties.

The node ties the seams together: local :class:`~kvraft.storage.Storage`, the Raft metadata
(:class:`~kvraft.meta.Meta`), the peer transport and the HLC. Decisions (placement, acks needed,
stand-in order, newest version) come from pure modules; this one does the IO.

Write path: stamp an HLC version, send the record to the remote replicas first and commit the
local copy while they work (one thread, pooled connections), store a hint on a stand-in node for
each replica that failed, and succeed when the acks meet ``w`` (hints count for ``one`` and
``quorum``, never for ``all``).
Read path: ``r=one`` reads the first reachable replica (this node's store if it is one);
``quorum``/``all`` ask that many replicas, return the newest and repair the stale ones.

Background duties (registration, pings and the clock guard, hint delivery, stats reports, sync
rounds, the Raft leader's duties) are objects with ``tick(now)`` in :mod:`kvraft.duties`,
:mod:`kvraft.sync` and :mod:`kvraft.leader`; the node builds them with the parts they need and a
:class:`kvraft.duties.Runner` drives them on the injected clock. Operator views are in
:mod:`kvraft.views`. This module never imports Flask and reads no clock itself.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from . import peer as m
from . import report, sync, views
from .config import Config
from .core import placement, quorum
from .core.balance import Activity
from .core.clockguard import Verdict
from .duties import (
    HINT_INTERVAL,
    LEADER_INTERVAL,
    PING_INTERVAL,
    REGISTER_INTERVAL,
    STATS_INTERVAL,
    SYNC_TICK,
    Clock,
    ClockWatch,
    HintDelivery,
    Liveness,
    Ping,
    Register,
    Runner,
    StatsReport,
    SystemClock,
)
from .errors import BadRequest, NotFound, Unavailable
from .hlc import HLC, Version, wall_clock_ms
from .keys import check_key, new_key
from .leader import Leader
from .meta import Meta
from .peer import PeerClient, PeerError, PeerServer, Sent
from .storage import ApplyResult, Record, Storage
from .sync import Syncer
from .watch import ChangeHub

log = logging.getLogger(__name__)

__all__ = [
    "HINT_INTERVAL",
    "LEADER_INTERVAL",
    "PING_INTERVAL",
    "STATS_INTERVAL",
    "SYNC_TICK",
    "Node",
    "WriteResult",
]


@dataclass(frozen=True, slots=True)
class WriteResult:
    key: str
    version: Version
    replicas: tuple[str, ...]
    acks: int
    created: bool
    hinted: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "version": self.version.encode(),
            "replicas": list(self.replicas),
            "acks": self.acks,
            "hinted": list(self.hinted),
        }


class Node:
    """One kvraft node. Create it in the serving process (pysyncobj's tick thread lives here)."""

    def __init__(self, config: Config, start: bool = True, clock: Clock | None = None) -> None:
        """Open the store and the metadata (pysyncobj starts here), wire the parts, and with
        ``start`` start the background duties. ``clock`` defaults to the system clocks."""
        self.config = config
        self.id = config.id
        self.rf = config.replication_factor
        self.clock: Clock = clock or SystemClock()
        os.makedirs(config.data_dir, exist_ok=True)
        self.storage = Storage(os.path.join(config.data_dir, "store.db"), fsync=config.fsync)
        max_offset_ms = int(config.max_clock_offset * 1000)
        self.hlc = HLC(
            wall_clock_ms(config.clock_offset_ms),
            last=self.storage.max_ts,
            max_ahead_ms=max_offset_ms,
        )
        self.clock_watch = ClockWatch(max_offset_ms, self.clock)
        self.liveness = Liveness(self.id, self.clock)
        self.runner = Runner(self.clock)
        self.peers = PeerClient(
            config.secret,
            config.peer_timeout,
            address_of=self.address_of,
            mark=self.liveness.mark,
            stopping=self.runner.stopping,
            max_value_bytes=config.max_value_bytes,
        )
        self.peer_server = PeerServer(config.secret)  # api/ mounts it; handlers: serve_peers
        raft_peers = config.peers
        if config.join and not os.path.exists(os.path.join(config.data_dir, "raft.journal")):
            raft_peers = self._peers_from(config.join)
        self.meta = Meta(config.raft, raft_peers, config.data_dir, config.secret)
        self.pool = ThreadPoolExecutor(max_workers=max(16, config.threads), thread_name_prefix="io")
        self.changes = ChangeHub()  # every record applied here, for /watch
        self.counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self.activity = Activity()  # data requests this node is serving now (told in pings)
        self.liveness.started()  # liveness reference for nodes never heard from
        self.syncer = Syncer(
            self.id,
            self.meta,
            self.storage,
            self.peers,
            self.hlc,
            self.is_alive,
            self.apply_local,
            self.clock,
        )
        self.leader = Leader(
            self.id,
            config,
            self.meta,
            self.peers,
            self.hlc,
            members=self.members,
            silent_for=self.liveness.silent_for,
        )
        self.pinger = Ping(
            self.id,
            members=self.members,
            raft_size=lambda: len(self.meta.raft_members()),
            peers=self.peers,
            hlc=self.hlc,
            liveness=self.liveness,
            clock=self.clock_watch,
            peer_timeout=config.peer_timeout,
            submit=self.pool.submit,
        )
        self.hints = HintDelivery(
            self.id,
            self.meta.partitions,
            self.storage,
            self._send_records,
            self.apply_local,
            self.is_alive,
            self.count,
        )
        for name, duty, period in (
            ("register", Register(config, self.meta, self.peers), REGISTER_INTERVAL),
            ("ping", self.pinger, PING_INTERVAL),
            ("hints", self.hints, HINT_INTERVAL),
            ("stats", StatsReport(self.id, self.storage, self.meta), STATS_INTERVAL),
            ("leader", self.leader, LEADER_INTERVAL),
            ("sync", self.syncer, SYNC_TICK),
        ):
            self.runner.add(name, duty, period)
        self.serve_peers(self.peer_server)
        self.started_at = self.clock.time()
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background duties (one thread each). Returns at once."""
        self.runner.start()

    def close(self) -> None:
        """Stop the duties (waits up to 5 s for each), then close the pool, metadata, peer
        connections and store."""
        self.runner.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.meta.close()
        self.peers.close()
        self.storage.close()

    def count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] += n

    def counter_values(self) -> dict[str, int]:
        """A consistent copy of this node's counters (thread-safe)."""
        with self._counter_lock:
            return dict(self.counters)

    def batch_stats(self) -> dict[str, int]:
        """Replica-write and read batches sent to peers, and the records they carried."""
        return self.peers.batch_stats()

    # -- cluster view --------------------------------------------------------------------------

    def members(self) -> dict[str, str]:
        """Node id -> HTTP address, for the members of the current Raft configuration."""
        raft = set(self.meta.raft_members())
        return {m.id: m.http for m in self.meta.members().values() if m.raft in raft}

    def is_alive(self, node_id: str) -> bool:
        """Whether the last contact with ``node_id`` succeeded (optimistic before any contact)."""
        return self.liveness.is_alive(node_id)

    def silent_for(self, node_id: str) -> float:
        """Seconds since the last good contact with ``node_id`` (or since this node started)."""
        return self.liveness.silent_for(node_id)

    def ready(self) -> tuple[bool, str]:
        if self.meta.leader_raft() is None:
            return False, "no Raft leader known"
        if not self.meta.caught_up():
            return False, "catching up with the Raft log"
        if self.id not in self.meta.members():
            return False, "this node is not registered in the cluster metadata yet"
        if not self.meta.partitions()[1]:
            return False, "no partition map yet"
        verdict = self.clock_verdict()
        if not verdict.ok:
            return False, verdict.describe()
        if not self.clock_checked():
            return False, "measuring the clock offset to the peers"
        return True, "ready"

    # -- clock offset guard ----------------------------------------------------------------------

    def clock_verdict(self) -> Verdict:
        """Whether this node's clock is within ``max_clock_offset`` of the majority of the peers
        it could measure (from its pings); logs when the verdict changes."""
        return self.pinger.verdict()

    def clock_checked(self) -> bool:
        """At least half of the Raft peers have answered a ping with their clock since this node
        started, so the verdict rests on evidence (once true it stays so: a member added later
        is judged as its samples come)."""
        return self.pinger.check_clock()

    def _check_clock(self) -> None:
        """Refuse to coordinate a write while this node's clock is out of bounds (the verdict
        the ping duty last reached, so a write costs no recomputation)."""
        self.clock_watch.refuse(self.count)

    def replicas_of(self, key: str) -> tuple[int, tuple[str, ...]]:
        _epoch, pmap = self.meta.partitions()
        if not pmap or not self.meta.caught_up():
            raise Unavailable("this node has no current partition map yet; retry shortly")
        part = placement.partition_of(key, len(pmap))
        return part, pmap[part]

    def readable(self, part: int) -> tuple[str, ...]:
        """Replicas of ``part`` that may serve reads: those not still being filled."""
        _epoch, state = self.meta.map_state()
        filling = state.filling.get(part, ())
        return tuple(n for n in state.partitions[part] if n not in filling)

    def address_of(self, node_id: str) -> str:
        """The HTTP address (``host:port``) of member ``node_id``; PeerError if unknown."""
        http = self.meta.http_of(node_id)
        if http is None:
            raise PeerError(f"unknown node {node_id}")
        return http

    # -- peer calls ------------------------------------------------------------------------------

    def serve_peers(self, server: PeerServer) -> None:
        """Register this node's answers to peer messages on ``server`` (the store's reads and
        writes, hints, pings, membership; the sync round's tree messages)."""
        server.register(m.Apply, lambda msg: m.Applied(tuple(self.apply_local(list(msg.records)))))
        server.register(m.ReadKeys, self._answer_read)
        server.register(
            m.Scan,
            lambda msg: m.Records(tuple(self.storage.scan(msg.prefix, msg.after, msg.limit))),
        )
        server.register(
            m.Hint, lambda msg: m.HintStored(self.hint_local(msg.target, list(msg.records)))
        )
        server.register(m.Ping, self._answer_ping)
        server.register(m.MemberChange, self._answer_members)
        sync.serve(server, self.storage)

    def _answer_read(self, msg: m.ReadKeys) -> m.Records:
        if msg.max_bytes is None:
            return m.Records(tuple(self.storage.get_many(list(msg.keys))))
        records, done = report.local_records(self.storage.get, msg.keys, msg.max_bytes)
        return m.Records(tuple(records), done)

    def _answer_ping(self, _msg: m.Ping) -> m.Pong:
        return m.Pong(
            self.id,
            self.storage.live_keys,
            self.ready()[0],
            self.activity.value,
            self.hlc.physical(),
            tuple(self.meta.raft_members()),
        )

    def _answer_members(self, msg: m.MemberChange) -> m.JsonAnswer:
        if msg.op == "add":
            return m.JsonAnswer(self.leader.add_member(msg.id, msg.http, msg.raft))
        return m.JsonAnswer(self.leader.remove_member(msg.id))

    def _send_records(self, node_id: str, records: list[Record]) -> list[ApplyResult]:
        if node_id == self.id:
            return self.apply_local(records)
        return list(self.peers.apply(node_id, records).results)

    def _send_hint(self, holder: str, target: str, record: Record) -> Version | None:
        """Store ``record`` as a hint for ``target`` on ``holder``; return the newest version of
        the key the holder has (None from a holder that does not say)."""
        if holder == self.id:
            return self.storage.add_hint(target, record)
        return self.peers.hint(holder, target, record)

    def _fetch(self, node_id: str, key: str) -> Record | None:
        if node_id == self.id:
            return self.storage.get(key)
        return self.peers.read(node_id, key)  # reads to one peer go together

    # -- local (peer endpoint) operations ----------------------------------------------------------

    def apply_local(self, records: list[Record], observe: bool = True) -> list[ApplyResult]:
        """Apply records to this node's store (last writer wins); ``observe`` folds their
        versions into the HLC (records from elsewhere)."""
        for r in records if observe else ():
            self._observe(r.version)
        results = self.storage.apply_many(records)
        self.changes.publish(r for r, res in zip(records, results, strict=True) if res.applied)
        return results

    def _observe(self, version: Version) -> None:
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
            newest = self.storage.add_hint(target, r)
        self.count("hints_stored", len(records))
        return newest

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, w: str = "quorum") -> WriteResult:
        check_key(key)
        return self._write(key, value, False, w)

    def create(self, value: bytes, w: str = "quorum") -> WriteResult:
        return self._write(new_key(), value, False, w)

    def delete(self, key: str, w: str = "quorum") -> WriteResult:
        check_key(key)
        placement.required_acks(w, self.rf)
        part, _replicas = self.replicas_of(key)
        answers = self._gather(list(self.readable(part)), key)  # newest any replica has
        if not answers:
            raise Unavailable(f"no replica of {key!r} answered")
        current = quorum.newest(answers.values())
        if current is None or current.tomb:
            raise NotFound(f"key {key!r} not found")
        self._check_clock()
        if self.config.test_fault == "lww_ack":  # the negative control: today's plain rule
            return self._write(key, b"", True, w)
        self._observe(current.version)
        return self._write(key, b"", True, w, floor=current.version)  # stamped above it

    def _write(
        self, key: str, value: bytes, tomb: bool, w: str, floor: Version | None = None
    ) -> WriteResult:
        """Stamp, send, tally; stamp again above what a replica kept (forward-only versions).

        The decisions are :class:`kvraft.core.quorum.WriteTally`'s; this method does the IO. A
        replica answer counts as an ack only when the replica now holds this write's version
        (:mod:`kvraft.core.versionrule`). A replica that kept a newer version teaches the
        coordinator that version: the write is stamped again above it and sent again, at most
        ``versionrule.ATTEMPTS`` times. Raises Unavailable when the acks (with hints, for
        ``one``/``quorum``) stay below ``w``: the write may or may not be visible later."""
        need = placement.required_acks(w, self.rf)  # a bad w is a 400 before anything else
        part, replicas = self.replicas_of(key)
        self._check_clock()
        tally = quorum.WriteTally(
            key,
            w,
            need,
            len(replicas),
            floor=floor,
            lww_ack=self.config.test_fault == "lww_ack",
            all_acked=self.config.test_fault == "drop_replication",
        )
        while True:
            record = Record(key, part, tally.stamp(self.hlc.now(), self.id), tomb, value)
            if self.config.test_fault == "ack_without_write":  # negative control for the checker
                return WriteResult(key, record.version, replicas, need, True)
            results, failed = self._send_write(record, replicas)
            for res in results:
                tally.add(None, res)
            for r in failed:
                tally.fail(r)
            out = tally.response()
            if isinstance(out, quorum.NeedWatermark):
                out = tally.watermark(self.meta.watermarks().get(part, 0))
            if isinstance(out, quorum.PlaceHints):
                out = tally.hinted(*self._hint(part, replicas, list(out.failed), record))
            if not isinstance(out, quorum.Restamp):
                break
            if out.observe:
                self._observe(out.above)
        if tally.restamps:
            self.count("writes_restamped", tally.restamps)
        if isinstance(out, quorum.Unavailable):
            if out.learned is not None:
                self._observe(out.learned)
            if out.acks is not None:
                self.count("writes")
                self.count("replica_acks", out.acks)
            self.count("writes_unavailable")
            raise Unavailable(out.reason)
        assert isinstance(out, quorum.Ok)
        self.count("writes")
        self.count("replica_acks", out.acks)
        return WriteResult(key, out.version, replicas, out.effective, out.created, out.hinted)

    def _send_write(
        self, record: Record, replicas: tuple[str, ...]
    ) -> tuple[list[ApplyResult], list[str]]:
        """Send ``record`` to its replicas: the remote ones first (batched with other writes to
        the same peer), the local copy committed while they work. Returns the answers and the
        replicas that failed (down, or the request failed: maybe applied)."""
        tickets: dict[str, Sent] = {}
        local = None
        failed: list[str] = []
        for r in replicas:
            if r == self.id:
                local = r
            elif self.config.test_fault == "drop_replication":
                continue  # the replica silently misses this write (acks counted as if sent)
            elif not self.is_alive(r):
                failed.append(r)
            else:
                tickets[r] = self.peers.send_apply(r, record)
        results: list[ApplyResult] = []
        error: BaseException | None = None  # raised once every ticket has been read
        if local is not None:
            try:  # stamped by this node's HLC: nothing to fold in
                results.append(self.apply_local([record], observe=False)[0])
            except BaseException as exc:  # noqa: BLE001 - e.g. a full disk; re-raised below
                error = exc
        for r, t in tickets.items():  # read every ticket, whatever happened: a batch whose
            try:  # answer nobody reads would hold its peer's lane (every later write waits)
                results.append(t.result())
            except PeerError as exc:
                log.info("replica %s failed for %r: %s", r, record.key, exc)
                failed.append(r)
            except Exception as exc:  # noqa: BLE001 - not the peer's fault: a bug; re-raised
                error = error or exc
        if error is not None:
            raise error
        return results, failed

    def _hint(
        self, part: int, replicas: tuple[str, ...], failed: list[str], record: Record
    ) -> tuple[list[str], Version | None]:
        """Store ``record`` as a hint for each failed replica on a live stand-in; return the
        holders and the newest version of the key any of them holds."""
        holders: list[str] = []
        newest: Version | None = None
        candidates = [
            s for s in placement.stand_ins(part, replicas, list(self.members())) if self.is_alive(s)
        ]
        for target in failed:
            while candidates:
                holder = candidates.pop(0)
                try:
                    held = self._send_hint(holder, target, record)
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
        check_key(key)
        rec = self._read(key, r)
        self.count("reads")
        if rec is None or rec.tomb:
            raise NotFound(f"key {key!r} not found")
        return rec

    def _read(self, key: str, level: str) -> Record | None:
        part, _all = self.replicas_of(key)
        replicas = self.readable(part)
        # while a lost replica is being refilled, "all" means every filled replica
        need = placement.required_acks(level, min(self.rf, len(replicas)))
        order = quorum.read_order(replicas, self.id, {n: self.is_alive(n) for n in replicas})
        if level == "one":
            errors = []
            for i, n in enumerate(order):
                try:
                    found = self._fetch(n, key)
                except (PeerError, ValueError) as exc:
                    errors.append(str(exc))
                    continue
                if found is None and i + 1 < len(order):
                    # a miss may be a replica whose copy still waits as a hint elsewhere (it was
                    # down for the write): ask the others before answering "not found"
                    found = quorum.newest(self._gather(order[i + 1 :], key).values())
                return found
            raise Unavailable(f"no replica of {key!r} answered: {'; '.join(errors)}")
        tally = quorum.ReadTally(key, level, need)
        for n, answer in self._gather(order, key).items():
            tally.add(n, answer)
        out = tally.response()
        if isinstance(out, quorum.Unavailable):
            raise Unavailable(out.reason)
        for n, rec in tally.repairs():
            self.count("read_repairs")
            self.pool.submit(self._repair, n, rec)
        return out.record

    def _gather(self, nodes: list[str], key: str) -> dict[str, Record | None]:
        futures = {self.pool.submit(self._fetch, n, key): n for n in nodes}
        answers: dict[str, Record | None] = {}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    answers[futures[fut]] = fut.result()
                except (PeerError, ValueError):
                    pass
        return answers

    def _repair(self, node_id: str, record: Record) -> None:
        try:
            self._send_records(node_id, [record])
        except PeerError:
            pass  # anti-entropy and hints cover it later

    def list_keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[str], str | None]:
        """Sorted live keys under ``prefix`` after ``after``, merged over every reachable node."""
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be 1 to 1000")
        nodes = [n for n in self.members() if self.is_alive(n)] or [self.id]
        futures = {self.pool.submit(self._scan, n, prefix, after, limit): n for n in nodes}
        answers: list[tuple[str, list[Record]]] = []
        pmap = self.meta.partitions()[1]
        for fut, node_id in futures.items():
            try:
                answers.append((node_id, fut.result()))
            except (PeerError, ValueError):
                continue
        if not answers:
            raise Unavailable("no node answered the listing")
        page = quorum.merge_listing(answers, pmap, limit)
        return page.keys, page.next

    def _scan(self, node_id: str, prefix: str, after: str | None, limit: int) -> list[Record]:
        if node_id == self.id:
            return self.storage.scan(prefix, after, limit)
        return list(self.peers.scan(node_id, prefix, after, limit).records)

    def explain(self, key: str) -> dict:
        return views.explain(self, key)

    def cluster(self) -> dict:
        return views.cluster(self)

    def metrics(self) -> dict[str, float]:
        return views.metrics(self)

    def _peers_from(self, http: str) -> tuple[str, ...]:
        """Raft addresses of a running cluster, asked from one of its members (``--join``).
        Blocks up to 60 s; RuntimeError if it never answers."""
        deadline = self.clock.monotonic() + 60
        while True:
            try:
                rafts = self.peers.ping_at(http).raft_members
                if rafts:
                    return tuple(r for r in rafts if r != self.config.raft)
            except (PeerError, ValueError):
                pass
            if self.clock.monotonic() > deadline:
                raise RuntimeError(f"cannot reach {http} to join its cluster")
            if self.runner.wait(0.5):
                raise RuntimeError("stopped while joining")

    def peer_loads(self) -> dict[str, int]:
        """The data requests each peer said it was serving at its last ping."""
        return self.liveness.peer_loads()

    def serving(self, node_id: str) -> bool:
        """Alive and ready to serve (last ping): what the leader balances requests over."""
        return self.liveness.serving(node_id)

    def gather(self, nodes: list[str], key: str) -> dict[str, Record | None]:
        """Each reachable node's version of ``key`` (asked in parallel); blocks until every
        node answered or failed (for :func:`kvraft.views.explain`)."""
        return self._gather(nodes, key)

    # -- public surface for the HTTP layer (api/ports.py), so it never reaches into the parts --

    def leader_id(self) -> str | None:
        """The id of the partition (Raft) leader this node knows, or None. Does not block."""
        return self.meta.leader_id()

    def is_leader(self) -> bool:
        """Whether this node is the partition (Raft) leader now. Does not block."""
        return self.meta.is_leader()

    def add_member(self, node_id: str, http: str, raft: str) -> dict:
        """Add a node to the cluster (done by the leader; forwarded to it from a follower).
        Blocks on Raft. BadRequest for a malformed field, Conflict for a taken id or address,
        Unavailable without a leader (then it may or may not have been applied)."""
        return self.leader.add_member(node_id, http, raft)

    def remove_member(self, node_id: str) -> dict:
        """Mark ``node_id`` for removal (its partitions move first, then the leader removes it
        from Raft); done by the leader, forwarded from a follower. Blocks on Raft; NotFound for
        an unknown id, Conflict when too few nodes would remain or it is the leader itself."""
        return self.leader.remove_member(node_id)
