"""The chaos workload: concurrent clients doing a set workload and a register workload, and a
monitor of the leader.

**Set workload.** Each client thread writes keys nobody else writes (``c<client>/<seq>``, each
written once, with a value unique in the run) and reads keys back:

* a *sticky* client talks to one node only; after each acknowledged write it reads that key back
  through the same node (the read-your-writes check);
* the other clients pick a random node for every operation and read random acknowledged keys.

**Register workload** (:class:`RegisterClient`, records marked ``workload: register``). A few
clients share a small set of keys (``reg/<generation>/<i>``): each operation goes to a random
node and is a read at ``r=quorum``, a PUT of a value unique in the run, or a DELETE. Every
``rotate_s`` seconds the clients move on to a fresh set of keys (the next generation): a write
with an unknown outcome makes its key indeterminate for the rest of the run, and the rotation
keeps that from blinding the checker after the first faults. A DELETE answered 404 changed
nothing (the key was absent): it is recorded with ``found`` false.

Every operation goes to the history (see :mod:`chaos.history`) with its invoke and completion
times, the node it was sent to and the node that served it (``served``: ``n2``, or ``n1>n2``
when the leader n1 forwarded it to n2: the store balances requests that reach the leader).
Outcomes: ``ok`` (2xx, or 404 for a read), ``fail`` (certainly not executed: the connection was
refused or never established, or a 4xx), ``unknown`` (anything else: a timeout, a reset after
the request was sent, a 5xx; the server's 503 on a write says "may or may not be visible later",
its 502 after a failed forward says the outcome is unknown), except a 503 ``clock_offset`` (the
clock offset guard: a node too far from the majority refuses to coordinate a write before
stamping it), which is ``fail``. Clients are paced (``rate``
operations a second each) and bounded by time and by count.

The monitor asks every node for ``/cluster`` every ``interval`` seconds and records its leader
and term: the checker derives the time to a new leader from these samples.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from .history import History


@dataclass(frozen=True)
class RegisterConfig:
    """The register workload: ``clients`` threads on ``keys`` shared keys at a time."""

    clients: int = 3
    keys: int = 4
    rotate_s: float = 30.0  # a fresh set of keys every rotate_s seconds
    rate: float = 8.0  # operations a second, per client
    read_share: float = 0.5
    delete_share: float = 0.15  # of all operations; the rest are PUTs
    read_level: str = "quorum"
    max_ops: int = 50_000  # per client


@dataclass(frozen=True)
class WorkloadConfig:
    clients: int = 6
    sticky: int = 2  # the first ``sticky`` clients are bound to node (client % n)
    rate: float = 8.0  # operations a second, per client
    read_share: float = 0.5  # share of reads among the non-sticky clients' operations
    connect_timeout: float = 1.5
    read_timeout: float = 6.0
    max_ops: int = 50_000  # per client
    read_level: str = "one"  # r= of the run-time reads
    register: RegisterConfig = field(default_factory=RegisterConfig)


def classify(exc: BaseException) -> str:
    """``fail`` when the request certainly never reached the server, else ``unknown``."""
    if isinstance(exc, requests.ConnectTimeout):
        return "fail"
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        if isinstance(inner, NewConnectionError) or isinstance(reason, NewConnectionError):
            return "fail"
    return "unknown"


def write_outcome(status: int, code: str | None = None) -> str:
    """``ok``, ``fail`` (certainly not applied) or ``unknown`` for a write answered ``status``
    with the JSON error code ``code``."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500:
        return "fail"
    if status == 503 and code == "clock_offset":
        return "fail"  # the clock offset guard refused to coordinate: nothing was stamped
    return "unknown"  # 503 "may or may not be visible later", 500, ...


def error_code(resp: requests.Response) -> str | None:
    """The ``error`` field of a JSON error body, or None."""
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def read_outcome(status: int) -> str:
    if status in (200, 404):
        return "ok"
    return "fail"  # a read that did not answer changed nothing the checker cares about


def served_by(resp: requests.Response) -> str | None:
    """``node`` or ``via>node`` when the leader forwarded the request (X-Kvraft-Via)."""
    node = resp.headers.get("X-Kvraft-Node")
    via = resp.headers.get("X-Kvraft-Via")
    return f"{via}>{node}" if via and node else node


def read_key(session: requests.Session, base_url: str, key: str, level: str, timeout) -> dict:
    """GET ``key`` at ``level`` through ``base_url``: the fields of a read in the history
    (outcome, status, value, found, error, served). Never raises for a request error."""
    status, error, value, served = None, None, None, None
    try:
        resp = session.get(
            f"{base_url}/kv/{quote(key, safe='')}", params={"r": level}, timeout=timeout
        )
        status, served = resp.status_code, served_by(resp)
        outcome = read_outcome(status)
        if status == 200:
            value = resp.content.decode("utf-8", "replace")
        elif status != 404:
            error = resp.text[:200]
    except requests.RequestException as exc:
        outcome, error = classify(exc), f"{type(exc).__name__}: {str(exc)[:160]}"
    return {
        "outcome": outcome,
        "status": status,
        "value": value,
        "found": status == 200,
        "error": error,
        "served": served,
    }


class Client(threading.Thread):
    def __init__(self, wl: Workload, index: int, sticky_node: int | None) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.wl = wl
        self.index = index
        self.sticky_node = sticky_node
        self.rng = random.Random(wl.seed * 1000 + index)
        self.session = requests.Session()
        self.seq = 0

    def node(self) -> int:
        if self.sticky_node is not None:
            return self.sticky_node
        return self.rng.randrange(len(self.wl.urls))

    def run(self) -> None:
        cfg = self.wl.cfg
        next_at = time.monotonic()
        pending_ryw: tuple[str, str] | None = None
        try:
            for _ in range(cfg.max_ops):
                if self.wl.stopping.is_set():
                    break
                next_at = max(next_at + 1.0 / cfg.rate, time.monotonic())
                if pending_ryw is not None:
                    self.read(*pending_ryw)
                    pending_ryw = None
                elif self.sticky_node is None and self.rng.random() < cfg.read_share:
                    key = self.wl.random_acked(self.rng)
                    if key is not None:
                        self.read(key, None)
                    else:
                        self.write()
                else:
                    key, outcome = self.write()
                    if self.sticky_node is not None and outcome == "ok":
                        pending_ryw = (key, "ryw")
                self.wl.stopping.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.session.close()

    def _record(self, **fields) -> dict:
        rec = {
            "type": "op",
            "client": self.index,
            "sticky": self.sticky_node is not None,
            "phase": "run",
            **fields,
        }
        self.wl.history.write(rec)
        return rec

    def write(self) -> tuple[str, str]:
        self.seq += 1
        key = f"c{self.index}/{self.seq}"
        value = f"{key}={secrets.token_hex(4)}"
        node = self.node()
        url = f"{self.wl.urls[node]}/kv/{quote(key, safe='')}"
        t0 = self.wl.history.now()
        status, error, hinted, served = None, None, None, None
        try:
            resp = self.session.put(url, data=value.encode(), timeout=self.wl.timeouts)
            status, served = resp.status_code, served_by(resp)
            outcome = write_outcome(status, None if status < 300 else error_code(resp))
            if outcome == "ok":
                hinted = resp.json().get("hinted") or []
            else:
                error = resp.text[:200]
        except (requests.RequestException, ValueError) as exc:
            outcome, error = classify(exc), f"{type(exc).__name__}: {str(exc)[:160]}"
        t1 = self.wl.history.now()
        rec = self._record(
            op="write",
            key=key,
            value=value,
            node=self.wl.ids[node],
            level="quorum",
            t0=t0,
            t1=t1,
            outcome=outcome,
            status=status,
            error=error,
            hinted=hinted,
            served=served,
        )
        if outcome == "ok":
            self.wl.add_acked(key)
        if self.wl.on_write is not None:
            self.wl.on_write(rec)
        return key, outcome

    def read(self, key: str, purpose: str | None) -> None:
        node = self.node()
        level = self.wl.cfg.read_level
        t0 = self.wl.history.now()
        got = read_key(self.session, self.wl.urls[node], key, level, self.wl.timeouts)
        t1 = self.wl.history.now()
        self._record(
            op="read",
            key=key,
            node=self.wl.ids[node],
            level=level,
            t0=t0,
            t1=t1,
            purpose=purpose,
            **got,
        )


REGISTER_CLIENT_BASE = 100  # register clients are numbered 100, 101, ... in the history


def register_key(t: float, rotate_s: float, i: int) -> str:
    """The ``i``-th shared key of the generation current at history time ``t``."""
    return f"reg/{int(t // rotate_s) if rotate_s > 0 else 0}/{i}"


class RegisterClient(threading.Thread):
    """One client of the register workload: reads (``r=quorum``), PUTs and DELETEs of the
    shared keys, each through a random node. Bounded by ``max_ops`` and by ``stopping``."""

    def __init__(self, wl: Workload, index: int) -> None:
        super().__init__(name=f"register-{index}", daemon=True)
        self.wl = wl
        self.cfg = wl.cfg.register
        self.client = REGISTER_CLIENT_BASE + index
        self.rng = random.Random(wl.seed * 1000 + self.client)
        self.session = requests.Session()
        self.seq = 0

    def run(self) -> None:
        cfg = self.cfg
        next_at = time.monotonic()
        try:
            for _ in range(cfg.max_ops):
                if self.wl.stopping.is_set():
                    break
                next_at = max(next_at + 1.0 / cfg.rate, time.monotonic())
                key = register_key(
                    self.wl.history.now(), cfg.rotate_s, self.rng.randrange(cfg.keys)
                )
                node = self.rng.randrange(len(self.wl.urls))
                x = self.rng.random()
                if x < cfg.read_share:
                    self.read(key, node)
                elif x < cfg.read_share + cfg.delete_share:
                    self.mutate(key, node, None)
                else:
                    self.seq += 1
                    self.mutate(key, node, f"{key}={self.client}.{self.seq}.{secrets.token_hex(3)}")
                self.wl.stopping.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.session.close()

    def _record(self, **fields) -> None:
        self.wl.history.write(
            {
                "type": "op",
                "workload": "register",
                "client": self.client,
                "sticky": False,
                "phase": "run",
                **fields,
            }
        )

    def mutate(self, key: str, node: int, value: str | None) -> None:
        """PUT ``value``, or DELETE when ``value`` is None. A DELETE answered 404 is ``ok``
        with ``found`` false: the key was absent and nothing was written."""
        url = f"{self.wl.urls[node]}/kv/{quote(key, safe='')}"
        t0 = self.wl.history.now()
        status, error, hinted, served, found = None, None, None, None, None
        try:
            if value is None:
                resp = self.session.delete(url, timeout=self.wl.timeouts)
            else:
                resp = self.session.put(url, data=value.encode(), timeout=self.wl.timeouts)
            status, served = resp.status_code, served_by(resp)
            if value is None and status == 404:
                outcome, found = "ok", False
            else:
                outcome = write_outcome(status, None if status < 300 else error_code(resp))
                found = True if outcome == "ok" else None
            if outcome == "ok" and status < 300:
                hinted = resp.json().get("hinted") or []
            elif outcome != "ok":
                error = resp.text[:200]
        except (requests.RequestException, ValueError) as exc:
            outcome, error = classify(exc), f"{type(exc).__name__}: {str(exc)[:160]}"
        self._record(
            op="write" if value is not None else "delete",
            key=key,
            value=value,
            node=self.wl.ids[node],
            level="quorum",
            t0=t0,
            t1=self.wl.history.now(),
            outcome=outcome,
            status=status,
            error=error,
            hinted=hinted,
            served=served,
            found=found,
        )

    def read(self, key: str, node: int) -> None:
        t0 = self.wl.history.now()
        got = read_key(self.session, self.wl.urls[node], key, self.cfg.read_level, self.wl.timeouts)
        self._record(
            op="read",
            key=key,
            node=self.wl.ids[node],
            level=self.cfg.read_level,
            t0=t0,
            t1=self.wl.history.now(),
            **got,
        )


class Monitor(threading.Thread):
    """Polls one node's ``/cluster`` and records what it says about the leader."""

    def __init__(self, wl: Workload, node: int, interval: float = 0.25) -> None:
        super().__init__(name=f"monitor-{node}", daemon=True)
        self.wl = wl
        self.node = node
        self.interval = interval

    def run(self) -> None:
        session = requests.Session()
        limit = int(self.wl.max_seconds / self.interval) + 10
        try:
            for _ in range(limit):
                if self.wl.stopping.wait(self.interval):
                    break
                t = self.wl.history.now()
                rec = {"type": "view", "node": self.wl.ids[self.node], "t": t, "ok": False}
                try:
                    view = session.get(self.wl.urls[self.node] + "/cluster", timeout=0.5).json()
                    rec.update(
                        ok=True,
                        leader=view.get("leader"),
                        term=(view.get("raft") or {}).get("term"),
                    )
                except (requests.RequestException, ValueError):
                    pass
                self.wl.history.write(rec)
        finally:
            session.close()


class Workload:
    """Clients and monitors over ``urls`` (one per node, ``ids`` their node ids)."""

    def __init__(
        self,
        urls: list[str],
        ids: list[str],
        history: History,
        cfg: WorkloadConfig | None = None,
        seed: int = 1,
        max_seconds: float = 3600,
        on_write=None,
    ) -> None:
        self.urls, self.ids, self.history = urls, ids, history
        self.cfg = cfg or WorkloadConfig()
        self.seed = seed
        self.max_seconds = max_seconds
        self.on_write = on_write  # called with each write's record (e.g. the convergence tracker)
        self.timeouts = (self.cfg.connect_timeout, self.cfg.read_timeout)
        self.stopping = threading.Event()
        self._acked: list[str] = []
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def add_acked(self, key: str) -> None:
        with self._lock:
            self._acked.append(key)

    def random_acked(self, rng: random.Random) -> str | None:
        with self._lock:
            return rng.choice(self._acked) if self._acked else None

    def start(self) -> None:
        n = len(self.urls)
        for i in range(n):
            self.threads.append(Monitor(self, i))
        for c in range(self.cfg.clients):
            self.threads.append(Client(self, c, c % n if c < self.cfg.sticky else None))
        for c in range(self.cfg.register.clients):
            self.threads.append(RegisterClient(self, c))
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 15) -> None:
        """Stop and wait (bounded) for every thread; an op in flight finishes or times out."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.history.flush()

    def run_for(self, seconds: float) -> None:
        self.start()
        try:
            self.stopping.wait(min(seconds, self.max_seconds))
        finally:
            self.stop()
