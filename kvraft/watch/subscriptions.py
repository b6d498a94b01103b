"""The peer side of a cluster-wide watch: hub subscriptions that other nodes long-poll.

A node only applies the records of the partitions it holds, so another node's
:class:`~kvraft.watch.feed.ClusterFeed` opens a subscription here, polls it for batches and
closes it. Batches are acknowledged (a lost answer is sent again) and a subscription nobody
polls expires.

:func:`serve` registers the change-feed peer messages (open, poll, close) on the node's peer
server. This module must not do HTTP or import Flask: the peer server hands it the messages.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import Record
from ..peer import PeerServer, WatchBatch, WatchClose, WatchOpen, WatchOpened, WatchPoll
from ..peer.messages import Done
from .hub import ChangeHub, Subscription

POLL_LIMIT = 1000  # records per long-poll answer
SUB_TTL = 15.0  # a peer subscription not polled for this long is dropped


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
        """A new subscription to changes under ``prefix`` from now on; its id (random)."""
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
        """Drop subscription ``sid`` (unknown ids are ignored)."""
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
