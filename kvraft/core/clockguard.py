"""The clock offset guard: how far this node's physical clock is from its peers', and whether it
may coordinate writes.

Each ping to a peer is a sample: this node's clock when the ping left (``t0``) and when its answer
came back (``t1``), and the peer's clock when it answered. As in NTP, the peer's offset from this
node is ``peer - (t0 + t1) / 2``, known to within half the round trip. Per peer the sample with the
smallest round trip among the recent ones is kept (NTP's clock filter: a slow answer says least).

The judgement: a peer is *out of bounds* when its offset exceeds ``max_offset_ms`` even after the
round-trip error is granted; this node is out of bounds when a strict majority of the peers it
has samples of are (a peer that stopped answering keeps its last sample for ``KEEP_S``). A node
cannot tell, against a single peer, which of the two clocks is wrong: then both sides refuse,
which is safe. Pure logic: no IO, threads or wall clock inside (``now`` is a
monotonic time the caller passes in); the caller holds the lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

SAMPLES = 8  # per peer: the last pings (4 s at the ping period), the best of them is used
FRESH_S = 10.0  # the window the best (fastest) sample is chosen in
# a peer that stopped answering keeps its last offset as evidence this long: clocks drift by
# parts per million, and without it one node down would leave the other two judging each
# other alone (then neither could tell whose clock is wrong, and both would refuse writes)
KEEP_S = 600.0


@dataclass(frozen=True, slots=True)
class Sample:
    offset_ms: float  # the peer's clock minus this node's
    rtt_ms: float
    at: float  # monotonic seconds when it was taken


def sample(t0_ms: int, t1_ms: int, peer_ms: int, at: float) -> Sample:
    """The NTP offset estimate of one ping: sent at ``t0_ms``, answered at ``t1_ms`` (both this
    node's clock), the peer's clock said ``peer_ms``."""
    rtt = max(0, t1_ms - t0_ms)
    return Sample(peer_ms - (t0_ms + t1_ms) / 2, rtt, at)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    offsets_ms: dict[str, float]  # peer -> best fresh offset estimate
    off: tuple[str, ...]  # peers out of bounds
    max_offset_ms: float

    def describe(self) -> str:
        peers = ", ".join(f"{p} {self.offsets_ms[p]:+.0f} ms" for p in self.off)
        if not self.off:
            return "clock within bounds"
        if self.ok:
            return (
                f"clock within bounds; out of bounds from here: {peers} (relative to this "
                f"node; max_clock_offset is {self.max_offset_ms:.0f} ms)"
            )
        return (
            f"this node's clock is off from {len(self.off)} of {len(self.offsets_ms)} "
            f"peers ({peers} relative to this node); max_clock_offset is "
            f"{self.max_offset_ms:.0f} ms"
        )


class ClockGuard:
    """Samples per peer and the verdict over them. Not thread-safe: the caller locks."""

    def __init__(self, max_offset_ms: float) -> None:
        self.max_offset_ms = max_offset_ms
        self._samples: dict[str, deque[Sample]] = {}

    def add(self, peer: str, s: Sample) -> None:
        self._samples.setdefault(peer, deque(maxlen=SAMPLES)).append(s)

    def forget(self, peer: str) -> None:
        self._samples.pop(peer, None)

    def best(self, peer: str, now: float) -> Sample | None:
        """The fastest sample of the last ``FRESH_S``; else the last one, up to ``KEEP_S`` old."""
        samples = self._samples.get(peer, ())
        fresh = [s for s in samples if now - s.at <= FRESH_S]
        if fresh:
            return min(fresh, key=lambda s: s.rtt_ms)
        if samples and now - samples[-1].at <= KEEP_S:
            return samples[-1]
        return None

    def measured(self) -> int:
        """Peers with at least one sample, ever."""
        return sum(1 for q in self._samples.values() if q)

    def verdict(self, peers: list[str], now: float) -> Verdict:
        """Out of bounds when a strict majority of the peers with fresh samples are beyond
        ``max_offset_ms`` (offset minus half the round trip, so a slow network never trips it)."""
        offsets, off = {}, []
        for p in sorted(peers):
            s = self.best(p, now)
            if s is None:
                continue
            offsets[p] = s.offset_ms
            if abs(s.offset_ms) - s.rtt_ms / 2 > self.max_offset_ms:
                off.append(p)
        ok = 2 * len(off) <= len(offsets) if off else True
        return Verdict(ok, offsets, tuple(off), self.max_offset_ms)
