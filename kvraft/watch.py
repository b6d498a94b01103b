"""Change feeds: this node's applied records (:class:`ChangeHub`) and the whole cluster's
(:class:`ClusterFeed`), for WebSocket ``/watch``.

``ChangeHub.publish`` never blocks: a subscriber whose queue is full is dropped (it sees the end of
its stream and must resubscribe), so a slow watcher cannot slow down writes.

A node only applies the records of the partitions it holds, so a cluster-wide watch combines this
node's hub with every other member's: :class:`PeerSubscriptions` keeps hub subscriptions that other
nodes long-poll (``/peer/changes/*``), and :class:`ClusterFeed` runs, while at least one local
watcher exists, one poller per peer plus a reader of the local hub, shared by all local watchers.
Each write lands on several replicas, so the feed drops any record whose version is not newer than
the last one it passed on for that key: events are unique and in version order per key.
A subscription a peer lost (restart, expiry, overflow) is reported as a ``gap`` event.

This module does no HTTP itself (the peer transport is injected) and never imports Flask.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from .hlc import Version
from .peer import (
    Peers,
    PeerServer,
    WatchBatch,
    WatchClose,
    WatchOpen,
    WatchOpened,
    WatchPoll,
)
from .peer.messages import Done
from .storage import Record

QUEUE_SIZE = 10000
POLL_WAIT = 1.0  # seconds a peer holds a long-poll open when nothing changes
POLL_LIMIT = 1000  # records per long-poll answer
SUB_TTL = 15.0  # a peer subscription not polled for this long is dropped
RETRY = 0.5  # seconds between attempts to reach an unreachable peer
MEMBER_CHECK = 1.0  # seconds between looks at the member list
REMEMBER_KEYS = 20_000  # keys whose last version the feed remembers (LRU): copies of one
# write arrive within about a poll of each other, far fewer writes apart than this


class Subscription:
    def __init__(self, hub: ChangeHub, prefix: str, values: bool = True) -> None:
        self.hub = hub
        self.prefix = prefix
        self.values = values  # False: records arrive with an empty value (nothing big is held)
        self.queue: queue.Queue[Record | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = False

    def get(self, timeout: float | None = None) -> Record | None:
        """Next record, or None on timeout or when the subscription was dropped."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self, limit: int) -> list[Record]:
        """Up to ``limit`` records already queued, without waiting."""
        out: list[Record] = []
        while len(out) < limit:
            try:
                rec = self.queue.get_nowait()
            except queue.Empty:
                break
            if rec is not None:
                out.append(rec)
        return out

    def close(self) -> None:
        self.hub.unsubscribe(self)


class ChangeHub:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, prefix: str = "", values: bool = True) -> Subscription:
        sub = Subscription(self, prefix, values)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    def publish(self, records: Iterable[Record]) -> None:
        subs = self._subs
        if not subs:
            return
        for rec in records:
            bare = None
            for sub in subs:
                if rec.key.startswith(sub.prefix):
                    if not sub.values and bare is None:
                        bare = replace(rec, value=b"") if rec.value else rec
                    try:
                        sub.queue.put_nowait(rec if sub.values else bare)
                    except queue.Full:
                        sub.dropped = True
                        self.unsubscribe(sub)


# -- the peer side: subscriptions other nodes poll ----------------------------------------------


@dataclass
class _Held:
    """One subscription held for a peer, with the last batch it was sent (until acknowledged)."""

    sub: Subscription
    seen: float  # clock time of the last poll
    busy: int = 0  # polls running now
    seq: int = 0  # number of the last batch handed out
    batch: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class PeerSubscriptions:
    """Hub subscriptions held for other nodes, by random id, expired after ``ttl`` unpolled
    (checked on every call and by a reaper thread that runs while any subscription exists).

    Polls are acknowledged: batch ``seq`` stays held until a poll says ``after=seq``, and a poll
    with ``after`` below it gets the same batch again, so an answer lost on the way is re-sent,
    not lost (a retried request is therefore safe). Thread safe; ``poll`` blocks up to ``wait``
    seconds for the first record. Subscriptions hold records without values, so an abandoned
    one costs little until it expires.
    """

    def __init__(
        self, hub: ChangeHub, ttl: float = SUB_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._hub = hub
        self._ttl = ttl
        self._clock = clock
        self._subs: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._subs)

    def open(self, prefix: str = "") -> str:
        self.reap()
        sid = secrets.token_hex(8)
        with self._lock:
            self._subs[sid] = _Held(self._hub.subscribe(prefix, values=False), self._clock())
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(
                    target=self._reap_loop, name="watch-reaper", daemon=True
                )
                self._reaper.start()
        return sid

    def _reap_loop(self) -> None:
        while True:
            time.sleep(min(self._ttl, 5.0))
            self.reap()
            with self._lock:
                if not self._subs:
                    self._reaper = None
                    return

    def poll(
        self, sid: str, after: int, wait: float, limit: int = POLL_LIMIT
    ) -> tuple[int, list[Record]] | None:
        """``(seq, records)``: the batch after batch ``after`` (values stripped; empty if nothing
        changed within ``wait``), or None if ``sid`` is unknown, expired or overflowed, or
        ``after`` is not a batch it handed out (open a new one; changes may have been missed)."""
        self.reap()
        with self._lock:
            held = self._subs.get(sid)
            if held is None:
                return None
            held.busy += 1
        try:
            with held.lock:  # one poll at a time per subscription
                return self._next_batch(sid, held, after, wait, limit)
        finally:
            with self._lock:
                held.seen = self._clock()
                held.busy -= 1

    def _next_batch(
        self, sid: str, held: _Held, after: int, wait: float, limit: int
    ) -> tuple[int, list[Record]] | None:
        if after == held.seq - 1:
            return held.seq, held.batch  # the last answer was lost: send it again
        if after != held.seq or held.sub.dropped:
            self.close(sid)
            return None
        first = held.sub.get(timeout=wait)
        if first is None:
            return held.seq, []
        held.batch = [first, *held.sub.drain(limit - 1)]
        held.seq += 1
        return held.seq, held.batch

    def close(self, sid: str) -> None:
        with self._lock:
            held = self._subs.pop(sid, None)
        if held is not None:
            held.sub.close()

    def reap(self) -> None:
        """Drop subscriptions not polled for ``ttl`` seconds (none being polled right now)."""
        cutoff = self._clock() - self._ttl
        with self._lock:
            stale = [sid for sid, h in self._subs.items() if h.seen < cutoff and not h.busy]
            subs = [self._subs.pop(sid).sub for sid in stale]
        for sub in subs:
            sub.close()


# -- the watching side: one cluster-wide feed per node -------------------------------------------


class PeerFeed(Protocol):
    """How a ClusterFeed reaches the peers. Each call raises ConnectionError if unreachable."""

    def open(self, node_id: str, prefix: str) -> str: ...

    def poll(
        self, node_id: str, sid: str, after: int, wait: float
    ) -> tuple[int, list[Record]] | None: ...

    def close(self, node_id: str, sid: str) -> None: ...


class HttpPeerFeed:
    """:class:`PeerFeed` over the node's peer client (the change-feed messages of
    :mod:`kvraft.peer.messages`). Liveness marks of the node are left alone: a long-poll is not
    a health probe (the client does not mark these messages)."""

    def __init__(self, peers: Peers, timeout: float) -> None:
        self._peers = peers
        self._timeout = timeout

    def open(self, node_id: str, prefix: str) -> str:
        return self._peers.watch_open(node_id, prefix, timeout=self._timeout)

    def poll(
        self, node_id: str, sid: str, after: int, wait: float
    ) -> tuple[int, list[Record]] | None:
        batch = self._peers.watch_poll(node_id, sid, after, wait, timeout=wait + self._timeout)
        return None if batch.gone else (batch.seq, list(batch.records))

    def close(self, node_id: str, sid: str) -> None:
        self._peers.watch_close(node_id, sid, timeout=self._timeout)


def serve(server: PeerServer, subs: PeerSubscriptions, max_wait: float) -> None:
    """Answer the change-feed messages from ``subs`` on ``server`` (a poll waits at most
    ``max_wait`` seconds)."""
    server.register(WatchOpen, lambda msg: WatchOpened(subs.open(msg.prefix)))

    def poll(msg: WatchPoll) -> WatchBatch:
        answer = subs.poll(msg.sid, msg.after, min(max_wait, max(0.0, msg.wait)))
        if answer is None:
            return WatchBatch(gone=True)
        return WatchBatch(answer[0], tuple(answer[1]))

    server.register(WatchPoll, poll)

    def close(msg: WatchClose) -> Done:
        subs.close(msg.sid)
        return Done()

    server.register(WatchClose, close)


@dataclass(frozen=True, slots=True)
class Event:
    """One change as a watcher sees it: ``put`` or ``delete`` of ``key`` at ``version``, made
    through node ``node``; or a ``gap`` (changes on ``node`` may have been missed)."""

    type: str
    key: str
    version: str
    node: str
    message: str = ""

    @classmethod
    def of(cls, rec: Record) -> Event:
        return cls("delete" if rec.tomb else "put", rec.key, rec.version.encode(), rec.version.node)

    def to_json(self) -> dict:
        if self.type == "gap":
            return {"type": "gap", "node": self.node, "message": self.message}
        return {"type": self.type, "key": self.key, "version": self.version, "node": self.node}


class Watcher:
    """One local watcher's events. ``lagged`` is set when it fell :data:`QUEUE_SIZE` events behind
    and was cut off."""

    def __init__(self, feed: ClusterFeed, prefix: str, size: int) -> None:
        self.feed = feed
        self.prefix = prefix
        self.queue: queue.Queue[Event] = queue.Queue(size)
        self.lagged = False

    def get(self, timeout: float | None = None) -> Event | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.feed.unsubscribe(self)


class _Run:
    """The threads and state of one active period of a feed (from first watcher to last)."""

    def __init__(self, local: Subscription) -> None:
        self.stop = threading.Event()
        self.local = local
        self.connected: set[str] = set()
        self.pollers: dict[str, threading.Thread] = {}


class ClusterFeed:
    """The cluster-wide change feed of one node, shared by its watchers. Thread safe.

    ``members()`` lists the node ids of the cluster (this one may be included), ``alive(id)``
    says whether a member is thought reachable (only those are waited for by
    :meth:`wait_connected`). Background threads run only while someone watches.
    """

    def __init__(
        self,
        node_id: str,
        hub: ChangeHub,
        peers: PeerFeed,
        members: Callable[[], Iterable[str]],
        alive: Callable[[str], bool] = lambda _n: True,
        *,
        poll_wait: float = POLL_WAIT,
        retry: float = RETRY,
        remember: int = REMEMBER_KEYS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.node_id = node_id
        self._hub = hub
        self._peers = peers
        self._members = members
        self._alive = alive
        self.poll_wait, self.retry = poll_wait, retry
        self._remember = remember
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._watchers: list[Watcher] = []
        self._last: OrderedDict[str, Version] = OrderedDict()
        self._run: _Run | None = None

    # -- watchers ------------------------------------------------------------------------------

    def subscribe(self, prefix: str = "") -> Watcher:
        """A new watcher of changes under ``prefix``; starts the feed if it was idle."""
        w = Watcher(self, prefix, self._queue_size)
        with self._cond:
            self._watchers = [*self._watchers, w]
            if self._run is None:
                self._start()
        return w

    def unsubscribe(self, w: Watcher) -> None:
        with self._cond:
            self._watchers = [x for x in self._watchers if x is not w]
            if not self._watchers and self._run is not None:
                self._run.stop.set()
                self._run = None
                self._last.clear()
                self._cond.notify_all()

    def peers(self) -> list[str]:
        return sorted(n for n in self._members() if n != self.node_id)

    def wait_connected(self, timeout: float) -> list[str]:
        """Wait until the feed is subscribed on every peer thought alive; return those it is not
        subscribed on when ``timeout`` runs out (empty: every change from now on is seen)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                run = self._run
                missing = [n for n in self.peers() if run is None or n not in run.connected]
                waiting = [n for n in missing if self._alive(n)]
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    return missing
                self._cond.wait(min(left, 0.2))

    @property
    def running(self) -> bool:
        return self._run is not None

    # -- machinery -----------------------------------------------------------------------------

    def _start(self) -> None:
        run = _Run(self._hub.subscribe("", values=False))  # now: no local change is missed
        self._run = run
        threading.Thread(
            target=self._local_loop, args=(run,), name="watch-local", daemon=True
        ).start()

    def _local_loop(self, run: _Run) -> None:
        next_check = 0.0
        try:
            while not run.stop.is_set():
                if time.monotonic() >= next_check:
                    self._start_pollers(run)
                    next_check = time.monotonic() + MEMBER_CHECK
                rec = run.local.get(timeout=0.2)
                if rec is not None:
                    self._deliver(run, [rec, *run.local.drain(POLL_LIMIT)])
                elif run.local.dropped:
                    run.local = self._hub.subscribe("", values=False)
                    self._gap(run, self.node_id, "this node's change feed overflowed")
        finally:
            run.local.close()

    def _start_pollers(self, run: _Run) -> None:
        for peer in self.peers():
            t = run.pollers.get(peer)
            if t is None or not t.is_alive():
                t = threading.Thread(
                    target=self._poll_loop, args=(run, peer), name=f"watch-{peer}", daemon=True
                )
                run.pollers[peer] = t
                t.start()

    def _poll_loop(self, run: _Run, peer: str) -> None:
        sid: str | None = None
        seq = 0  # the last batch received on ``sid``
        had = False  # a subscription existed before: losing it may lose changes
        try:
            while not run.stop.is_set() and peer in self.peers():
                try:
                    if sid is None:
                        sid, seq = self._peers.open(peer, ""), 0
                        if had:
                            self._gap(
                                run,
                                peer,
                                f"changes on {peer} may have been missed "
                                "while it was unreachable or restarting",
                            )
                        had = True
                        self._set_connected(run, peer, True)
                    answer = self._peers.poll(peer, sid, seq, self.poll_wait)
                except (ConnectionError, ValueError):
                    self._set_connected(run, peer, False)
                    run.stop.wait(self.retry)
                    continue
                if answer is None:  # the peer forgot us: restart, expiry or overflow
                    sid = None
                    self._set_connected(run, peer, False)
                    continue
                self._set_connected(run, peer, True)
                seq, records = answer
                if records:
                    self._deliver(run, records)
        finally:
            self._set_connected(run, peer, False)
            if sid is not None:
                try:
                    self._peers.close(peer, sid)
                except (ConnectionError, ValueError):
                    pass  # it expires on its own

    def _set_connected(self, run: _Run, peer: str, up: bool) -> None:
        with self._cond:
            if up:
                run.connected.add(peer)
            else:
                run.connected.discard(peer)
            self._cond.notify_all()

    def _deliver(self, run: _Run, records: Iterable[Record]) -> None:
        with self._cond:
            if run.stop.is_set():
                return
            for rec in records:
                last = self._last.get(rec.key)
                if last is not None and rec.version <= last:
                    continue  # a second replica's copy, or older than what was sent
                self._last[rec.key] = rec.version
                self._last.move_to_end(rec.key)
                if len(self._last) > self._remember:
                    self._last.popitem(last=False)
                self._fan_out(Event.of(rec))

    def _gap(self, run: _Run, node_id: str, message: str) -> None:
        with self._cond:
            if not run.stop.is_set():
                self._fan_out(Event("gap", "", "", node_id, message))

    def _fan_out(self, event: Event) -> None:
        """Queue ``event`` for each watcher it concerns; cut off the ones that are full."""
        for w in self._watchers:
            if event.type == "gap" or event.key.startswith(w.prefix):
                try:
                    w.queue.put_nowait(event)
                except queue.Full:
                    w.lagged = True
                    self._watchers = [x for x in self._watchers if x is not w]
