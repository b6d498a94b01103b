"""The history of a chaos run: one JSON object per line, appended by every actor of the run.

Record types (field ``type``); times ``t``, ``t0``, ``t1``, ``start``, ``end`` are seconds since
the history was opened, on the monotonic clock:

* ``run``: scenario, nodes, sync interval, wall-clock start (the first line).
* ``op``: one client operation: ``client``, ``sticky``, ``op`` (write, delete or read), ``key``,
  ``value`` (the value written, or the value read; null for a 404), ``found`` (reads), ``node``
  (where it was sent), ``served`` (X-Kvraft-Node, ``via>node`` when the leader forwarded it),
  ``level``, ``t0`` (invoke), ``t1`` (completion), ``outcome`` (ok, fail or unknown), ``status``
  (HTTP status or null), ``error``, ``phase`` (run or final), ``hinted`` (writes: stand-ins that
  took a hint), ``purpose`` (``ryw`` for a sticky client's read-back). The register workload's
  operations also carry ``workload: register``; their ``op`` is ``write`` (a PUT), ``delete``
  (``value`` null; ``found`` false when it was answered 404 and wrote nothing) or ``read``.
* ``fault``: one fault window: ``id``, ``kind``, ``nodes`` (the nodes hit: the minority of a
  partition), ``groups``, ``leader`` (the leader when it began), ``start``, ``end``, ``params``;
  written when the fault is healed.
* ``view``: what one node said at ``t`` about the leader (``leader``, ``term``; ``ok`` false when
  it did not answer).
* ``heal``: the final heal at ``t`` (the end of the last fault); ``ready`` when every node was
  ready again.
* ``agree``: ``key`` seen identical on all its replicas at ``t``, during the run (``phase: run``)
  or in the polling after the final heal (``phase: final``).
* ``converge``: the end of the polling after the heal: ``start``, ``end``, key counts,
  ``pending`` keys never in agreement, ``regressed`` keys found apart after agreeing.
* ``end``: notes of the run (faults left out, bounds reached).

A writer is shared by threads; each line is written whole under a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator


class History:
    """Append-only JSON-lines history. Thread-safe. ``now()`` is the history's clock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = open(path, "w", buffering=1 << 16)  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.wall_start = time.time()
        self._closed = False

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 4)

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            if not self._closed:
                self._f.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._f.close()


def read(path: str) -> list[dict]:
    with open(path) as f:
        return list(parse(f))


def parse(lines: Iterable[str]) -> Iterator[dict]:
    """Records of a history; a torn last line (a crashed writer) is skipped."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue
