"""Convergence and final reads: the run's verification, recorded in the history for the checker.

* :class:`Tracker` (during the run): every key whose write may have left its replicas apart (a
  hinted or unknown write) is polled with ``GET /kv/<key>?explain=1`` until its replicas agree;
  each first agreement is an ``agree`` record. In the write-once set workload a key whose
  replicas agree stays that way, so after the final heal only the keys still apart need polling
  (and the register workload's keys, all of them: they are overwritten until the end).
* :func:`poll_convergence` (after the final heal): polls the keys still apart, plus samples of
  those already in agreement and of the keys every replica stored at once, to check that claim
  (a sampled key found apart again is a *regression*, reported). Records ``agree`` and one
  ``converge`` record.
* :func:`final_reads`: every written (or deleted) key read with ``r=all``, recorded as
  ``final`` ops.

Order matters: convergence is polled with ``explain`` (which repairs nothing) *before* the
``r=all`` reads, which repair stale replicas and would hide divergence. Every loop is bounded.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests

from .checker import dirty_write
from .history import History
from .workload import read_key


def keys_to_poll(
    records: list[dict], sample: int, rng: random.Random
) -> tuple[list[str], dict[str, int]]:
    """Keys to poll after the final heal: dirty keys not yet seen in agreement and every key of
    the register workload (written until the end: none is known to agree) first, then a sample
    of the dirty keys already seen in agreement and a sample of the clean keys (``sample`` of
    each at most). Returns (keys, counts)."""
    dirty: dict[str, None] = {}
    written: dict[str, None] = {}
    registers: dict[str, None] = {}
    for op in records:
        if op.get("type") == "op" and op["op"] in ("write", "delete"):
            if op.get("workload") == "register":
                registers[op["key"]] = None
                continue
            written[op["key"]] = None
            if dirty_write(op):
                dirty[op["key"]] = None
    agreed = {r["key"] for r in records if r.get("type") == "agree"}
    pending = [k for k in dirty if k not in agreed] + list(registers)
    settled = [k for k in dirty if k in agreed]
    clean = [k for k in written if k not in dirty]
    s1 = rng.sample(settled, min(sample, len(settled)))
    s2 = rng.sample(clean, min(sample, len(clean)))
    return pending + s1 + s2, {
        "dirty": len(dirty),
        "pending_at_poll": len(pending),
        "settled_sampled": len(s1),
        "settled_total": len(settled),
        "clean_sampled": len(s2),
        "clean_total": len(clean),
    }


def explain_agrees(session: requests.Session, url: str, key: str, timeout: float = 5) -> bool:
    try:
        resp = session.get(
            f"{url}/kv/{quote(key, safe='')}", params={"explain": "1"}, timeout=timeout
        )
        return resp.status_code == 200 and bool(resp.json().get("agree"))
    except (requests.RequestException, ValueError):
        return False


class Tracker(threading.Thread):
    """Polls dirty keys during the run until each agrees (at most ``rate`` polls a second,
    each key again ``retry_s`` after a miss). ``add`` is thread-safe; ``stop`` ends it."""

    def __init__(
        self,
        urls: list[str],
        history: History,
        rate: float = 25.0,
        first_s: float = 1.0,
        retry_s: float = 2.0,
        max_seconds: float = 3600,
    ) -> None:
        super().__init__(name="tracker", daemon=True)
        self.urls, self.history = urls, history
        self.rate, self.first_s, self.retry_s = rate, first_s, retry_s
        self.max_seconds = max_seconds
        self.stopping = threading.Event()
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.polls = 0

    def add(self, key: str) -> None:
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + self.first_s, key))

    def on_write(self, op: dict) -> None:
        if dirty_write(op):
            self.add(op["key"])

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def run(self) -> None:
        rng = random.Random(5)
        end = time.monotonic() + self.max_seconds
        with requests.Session() as session:
            while not self.stopping.is_set() and time.monotonic() < end:
                with self._lock:
                    due = self._heap and self._heap[0][0] <= time.monotonic()
                    key = heapq.heappop(self._heap)[1] if due else None
                if key is None:
                    self.stopping.wait(0.1)
                    continue
                self.polls += 1
                if explain_agrees(session, rng.choice(self.urls), key, timeout=2):
                    self.history.write(
                        {"type": "agree", "key": key, "t": self.history.now(), "phase": "run"}
                    )
                else:
                    with self._lock:
                        heapq.heappush(self._heap, (time.monotonic() + self.retry_s, key))
                self.stopping.wait(1.0 / self.rate)


def _local(session_per_thread: dict, name: str) -> requests.Session:
    key = (threading.get_ident(), name)
    if key not in session_per_thread:
        session_per_thread[key] = requests.Session()
    return session_per_thread[key]


def poll_convergence(
    urls: list[str],
    keys: list[str],
    history: History,
    heal_t: float,
    deadline_s: float,
    rng: random.Random,
    counts: dict,
    workers: int = 8,
    extra_s: float = 20.0,
) -> list[str]:
    """Sweep ``keys`` with ``explain`` until each agrees, or until ``heal_t + deadline_s +
    extra_s`` (history time; polling goes on past the target to measure a late convergence,
    within a bound, and at least one sweep is made). Records an ``agree`` per key, and one
    ``converge`` with the keys that were in agreement before and are apart at their first poll
    (``regressed``). Returns the keys that never agreed."""
    sessions: dict = {}
    before = set(keys[counts.get("pending_at_poll", 0) :])  # samples of keys believed settled
    pending = list(keys)
    regressed: list[str] = []
    start = history.now()
    stop_at = heal_t + deadline_s + extra_s
    sweeps = 0

    def agrees(key: str) -> bool:
        return explain_agrees(_local(sessions, "explain"), rng.choice(urls), key)

    with ThreadPoolExecutor(workers, thread_name_prefix="converge") as pool:
        while pending and sweeps < 1000 and (sweeps == 0 or history.now() < stop_at):
            sweeps += 1
            still = []
            for key, ok in zip(pending, pool.map(agrees, pending), strict=True):
                if ok:
                    history.write(
                        {"type": "agree", "key": key, "t": history.now(), "phase": "final"}
                    )
                else:
                    if sweeps == 1 and key in before:
                        regressed.append(key)
                    still.append(key)
            pending = still
            if pending:
                time.sleep(0.5)
    for s in sessions.values():
        s.close()
    history.write(
        {
            "type": "converge",
            "start": start,
            "end": history.now(),
            "heal": heal_t,
            "checked": len(keys),
            "sweeps": sweeps,
            "pending": pending[:1000],
            "pending_count": len(pending),
            "regressed": regressed[:1000],
            "regressed_count": len(regressed),
            **counts,
        }
    )
    return pending


def final_keys(records: list[dict]) -> list[str]:
    """The keys the final ``r=all`` reads cover, in first-seen order: every key written or
    deleted, and every register key even if it was only read (the register's final check reads
    each key it touched; one never written must read 404, and a key left out is *unverified*)."""
    return list(
        dict.fromkeys(
            op["key"]
            for op in records
            if op.get("type") == "op"
            and (op["op"] in ("write", "delete") or op.get("workload") == "register")
        )
    )


def final_reads(
    urls: list[str],
    ids: list[str],
    keys: list[str],
    history: History,
    rng: random.Random,
    workers: int = 8,
    attempts: int = 3,
) -> None:
    """Read each key with ``r=all`` through a random node (retrying a failed read on another
    node, ``attempts`` at most) and record each read as a ``final`` op."""
    sessions: dict = {}

    def read(key: str) -> None:
        for _ in range(attempts):
            i = rng.randrange(len(urls))
            t0 = history.now()
            got = read_key(_local(sessions, "final"), urls[i], key, "all", 10)
            got.pop("served")
            outcome = got["outcome"]
            history.write(
                {
                    "type": "op",
                    "phase": "final",
                    "client": -1,
                    "sticky": False,
                    "op": "read",
                    "key": key,
                    "node": ids[i],
                    "level": "all",
                    "t0": t0,
                    "t1": history.now(),
                    **got,
                }
            )
            if outcome == "ok":
                return

    with ThreadPoolExecutor(workers, thread_name_prefix="final") as pool:
        list(pool.map(read, keys))
    for s in sessions.values():
        s.close()
    history.flush()
