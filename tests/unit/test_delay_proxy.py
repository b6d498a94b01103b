"""The delay proxy (chaos/delay.py) with real sockets on loopback, its rules in a real lab of
network namespaces (root only), and the ``delay`` fault's plan, record and report.

On loopback there is no NAT: the proxy gets a fixed upstream, and the two endpoints use their own
loopback addresses (client 127.0.0.2, server 127.0.0.3) so the per-sender delays can tell them
apart. Latency bounds are lower bounds with generous upper ones: a loaded 2-core machine may add
tens of ms, never remove any.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chaos import checker, netns, report
from chaos.delay import Delays, Proxy, parse_control, release_time
from chaos.history import History
from chaos.history import read as read_history
from chaos.nemesis import DELAYS_MS, KINDS, NETWORK_KINDS, LocalBackend, Nemesis, plan

CLIENT_IP, SERVER_IP = "127.0.0.2", "127.0.0.3"


# -- helpers: an echo server, a proxy on its own loop, a client ----------------------------------


class EchoServer:
    """Echoes every byte back; on EOF from the client, half-closes and stops."""

    def __init__(self, host: str = SERVER_IP) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.eofs = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            self.eofs += 1
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(5)
        self.sock.close()
        for t in self._threads:
            t.join(5)
        for c in self._conns:
            c.close()


class ProxyThread:
    """A :class:`Proxy` serving on its own event loop in a thread."""

    def __init__(self, control: str, upstream: tuple[str, int], **kw) -> None:
        self.proxy = Proxy(
            Delays(control), ("127.0.0.1", 0), upstream=upstream, rng=random.Random(1), **kw
        )
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._started.wait(10), "proxy did not start"
        if self._error:
            raise self._error
        self.port = self.proxy.port

    def _run(self) -> None:
        async def main() -> None:
            try:
                await self.proxy.start()
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._started.set()
            await self.proxy.serve()

        asyncio.run(main())

    def close(self) -> None:
        self.proxy.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def set_control(path: str, table: dict, proxy: Proxy | None = None, timeout: float = 3.0) -> None:
    """Replace the control file and wait (bounded) until the proxy has read it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f)
    os.replace(tmp, path)
    if proxy is not None:
        want = parse_control(json.dumps(table))
        deadline = time.monotonic() + timeout
        while proxy.delays.table != want:
            assert time.monotonic() < deadline, "the proxy did not pick up the control file"
            time.sleep(0.02)


def connect(port: int, source: str = CLIENT_IP) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(65536, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def min_rtt(s: socket.socket, rounds: int = 5) -> float:
    """The smallest of a few one-byte round trips, in seconds (noise only ever adds)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.monotonic()
        s.sendall(b"x")
        assert recv_exact(s, 1) == b"x"
        best = min(best, time.monotonic() - t0)
    return best


@pytest.fixture
def rig(tmp_path):
    control = str(tmp_path / "delay.json")
    set_control(control, {})
    echo = EchoServer()
    proxy = ProxyThread(control, (SERVER_IP, echo.port))
    yield control, proxy, echo
    proxy.close()
    echo.close()


# -- pure parts ----------------------------------------------------------------------------------


def test_control_file_format():
    assert parse_control("") == {}
    assert parse_control(
        '{"10.0.0.1": 150, "10.0.0.2": {"delay_ms": 50, "jitter_ms": 5}, "10.0.0.3": 0}'
    ) == {"10.0.0.1": (0.15, 0.0), "10.0.0.2": (0.05, 0.005)}
    for bad in ("[1]", '{"a": -1}', '{"a": "x"}', '{"a": {"delay_ms": true}}', "{"):
        with pytest.raises(ValueError):
            parse_control(bad)
    assert netns.delay_control({"10.0.0.2": (100, 10), "10.0.0.1": (0, 0)}) == {
        "10.0.0.2": {"delay_ms": 100, "jitter_ms": 10}
    }


def test_release_time_never_reorders():
    assert release_time(0.0, 10.0, 0.2, 0.0) == pytest.approx(10.2)
    # a delay lowered (or a smaller jitter draw) waits for the chunk before it
    assert release_time(10.2, 10.05, 0.0, 0.0) == 10.2
    assert release_time(10.2, 10.5, 0.0, 0.0) == 10.5


# -- the proxy on loopback ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_large_payloads_pass_unchanged_in_order_both_ways(rig):
    control, proxy, echo = rig
    payload = random.Random(5).randbytes(6 << 20)  # more than the proxy's 1 MiB buffer
    s = connect(proxy.port)
    got = bytearray()

    def read() -> None:
        got.extend(recv_exact(s, len(payload) + 1))  # +1: read up to the EOF

    reader = threading.Thread(target=read)
    reader.start()
    view = memoryview(payload)
    for off in range(0, len(payload), 100_000):
        s.sendall(view[off : off + 100_000])
    s.shutdown(socket.SHUT_WR)
    reader.join(30)
    s.close()
    assert not reader.is_alive()
    assert bytes(got) == payload
    assert echo.eofs == 1


@pytest.mark.timeout(60)
def test_jitter_delays_but_never_reorders(rig):
    control, proxy, _ = rig
    set_control(
        control,
        {CLIENT_IP: {"delay_ms": 5, "jitter_ms": 30}, SERVER_IP: {"delay_ms": 5, "jitter_ms": 30}},
        proxy.proxy,
    )
    s = connect(proxy.port)
    sent = b"".join(b"%06d;" % i for i in range(400))
    t0 = time.monotonic()
    for i in range(0, len(sent), 70):  # many small writes: many chunks, each with its own draw
        s.sendall(sent[i : i + 70])
        time.sleep(0.001)
    assert recv_exact(s, len(sent)) == sent
    assert time.monotonic() - t0 >= 0.01
    s.close()


@pytest.mark.timeout(60)
def test_added_latency_follows_the_control_file_per_sender(rig):
    control, proxy, _ = rig
    s = connect(proxy.port)
    base = min_rtt(s)
    assert base < 0.05, base
    set_control(control, {SERVER_IP: 100}, proxy.proxy)  # the server's answers held back
    one = min_rtt(s)
    assert 0.1 <= one < 0.1 + 0.3, one
    set_control(control, {SERVER_IP: 100, CLIENT_IP: 100}, proxy.proxy)  # and what it is sent
    both = min_rtt(s)
    assert 0.2 <= both < 0.2 + 0.3, both
    assert both - base >= 0.2 - 0.005 and one - base >= 0.1 - 0.005
    set_control(control, {"127.0.0.9": 300}, proxy.proxy)  # somebody else: no effect here
    assert min_rtt(s) < 0.05
    set_control(control, {}, proxy.proxy)
    assert min_rtt(s) < 0.05
    s.close()


@pytest.mark.timeout(60)
def test_eof_closes_both_sides_and_a_failed_upstream_resets_the_client(rig, tmp_path):
    control, proxy, echo = rig
    s = connect(proxy.port)
    s.sendall(b"last words")
    s.shutdown(socket.SHUT_WR)
    assert recv_exact(s, 100) == b"last words"  # then EOF: the server half-closed too
    s.close()
    deadline = time.monotonic() + 5
    while echo.eofs < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert echo.eofs == 1

    # the upstream goes away while a connection is open: the client sees the end
    dead = socket.create_server((SERVER_IP, 0))
    port = dead.getsockname()[1]
    other = ProxyThread(control, (SERVER_IP, port))
    try:
        s = connect(other.port)
        conn, _ = dead.accept()
        conn.close()
        s.settimeout(5)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        s.close()
        dead.close()  # nobody listens any more: the proxy resets what it accepted
        s = connect(other.port)
        s.settimeout(5)
        with pytest.raises(ConnectionError):  # reset (or EPIPE if the RST came first)
            s.sendall(b"x")
            s.recv(10)
        s.close()
    finally:
        other.close()


# -- the fault: plan, back-end, record, report ---------------------------------------------------


def test_delay_is_a_network_fault_planned_with_its_delay():
    assert "delay" in KINDS and "delay" in NETWORK_KINDS
    steps = plan(["delay"] * 20, random.Random(3))
    assert {s.params["delay_ms"] for s in steps} == set(DELAYS_MS)
    assert all(s.params["jitter_ms"] == s.params["delay_ms"] // 10 for s in steps)
    assert plan(["delay", "kill"], random.Random(3), supported=("kill",))[0].kind == "kill"


class _FakeLab:
    delay = True

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_delay(self, i, ms, jitter):
        self.calls.append(("set", i, ms, jitter))

    def clear_delay(self, i):
        self.calls.append(("clear", i))

    def heal(self):
        pass

    def clear_loss(self, i):
        pass


class _FakeCluster:
    def __init__(self, n: int = 3) -> None:
        self.nodes = [
            type("N", (), {"id": f"n{i + 1}", "url": f"http://n{i + 1}"})() for i in range(n)
        ]

    def is_running(self, i):
        return True

    def resume(self, i):
        pass


def test_nemesis_applies_and_heals_a_delay_and_records_it(tmp_path, monkeypatch):
    from chaos import nemesis

    lab = _FakeLab()
    backend = LocalBackend(_FakeCluster(), lab)
    assert "delay" in backend.supported
    no_proxy = _FakeLab()
    no_proxy.delay = False
    assert "delay" not in LocalBackend(_FakeCluster(), no_proxy).supported
    assert "delay" not in LocalBackend(_FakeCluster(), None).supported
    monkeypatch.setattr(nemesis, "leader_of", lambda b, s: 0)
    monkeypatch.setattr(nemesis, "is_ready", lambda url, s: True)
    hist = History(str(tmp_path / "h.jsonl"))
    steps = [nemesis.Step("delay", 0.0, 0.05, {"delay_ms": 100, "jitter_ms": 10})]
    nem = Nemesis(backend, hist, steps, random.Random(2))
    nem.run()
    hist.close()
    assert nem.done == 1 and not nem.skipped
    target = lab.calls[0][1]
    assert lab.calls[0] == ("set", target, 100, 10) and lab.calls[1] == ("clear", target)
    assert {c for c in lab.calls[2:]} == {("clear", i) for i in range(3)}  # heal_all
    (rec,) = [r for r in read_history(hist.path) if r["type"] == "fault"]
    assert rec["kind"] == "delay" and rec["params"] == {"delay_ms": 100, "jitter_ms": 10}


def test_a_delayed_leader_is_not_a_lost_leader_and_the_report_labels_it():
    fault = {
        "type": "fault",
        "id": 0,
        "kind": "delay",
        "nodes": ["n1"],
        "groups": None,
        "leader": "n1",
        "start": 10.0,
        "end": 16.0,
        "params": {"delay_ms": 200, "jitter_ms": 20},
    }
    ops = [
        {
            "type": "op",
            "op": "write",
            "key": f"k{i}",
            "value": "v",
            "t0": 11.0 + i / 10,
            "t1": 11.0 + i / 10 + (0.25 if i % 2 else 0.005),
            "outcome": "ok",
            "client": 1,
            "sticky": False,
            "node": "n1" if i % 2 else "n2",
            "hinted": [],
            "phase": "run",
            "level": "quorum",
        }
        for i in range(10)
    ]
    (row,) = checker.fault_windows([fault, *ops], ["n1", "n2", "n3"])
    assert not row["lost_leader"] and row["new_leader_s"] is None
    assert row["hit_p50_ms"] == 250.0 and row["p50_ms"] >= 5.0
    assert report.fault_label(row) == "delay 200+20 ms"
    assert report.COLORS["delay"]


# -- the real thing: a lab with proxies (root only) ----------------------------------------------

_CLIENT = r"""
import json, socket, sys, time
host, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
try:
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=float(sys.argv[4]))
    out["connect_s"] = time.monotonic() - t0
    s.settimeout(5)
    rtts = []
    for _ in range(rounds):
        t0 = time.monotonic()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise OSError("no echo")
        rtts.append(time.monotonic() - t0)
    out["rtt_s"] = min(rtts) if rtts else None
    s.close()
except OSError as exc:
    out["error"] = type(exc).__name__
print(json.dumps(out))
"""

_ECHO = r"""
import socket, sys, threading
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(60)
def echo(c):
    with c:
        while d := c.recv(65536):
            c.sendall(d)
while True:
    c, _ = srv.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""


def _in_ns(ns: str, host: str, port: int, rounds: int = 5, connect_timeout: float = 2.0) -> dict:
    """Connect from namespace ``ns`` and time echo round trips (the best of ``rounds``)."""
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            _CLIENT,
            host,
            str(port),
            str(rounds),
            str(connect_timeout),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _rtt_once(ns: str, host: str, port: int, ok, timeout: float = 5.0) -> float:
    """The round trip from ``ns`` once ``ok(rtt)`` holds (the proxies read the control file
    every 100 ms, so a change shows within a few measurements); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        rtt = _in_ns(ns, host, port).get("rtt_s")
        if rtt is not None and ok(rtt):
            return rtt
        assert time.monotonic() < deadline, f"round trip {rtt} from {ns}"


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    netns.available() is not None, reason=f"needs root and network namespaces: {netns.available()}"
)
def test_lab_delays_connections_through_its_proxies_and_partitions_still_refuse(tmp_path):
    lab = netns.Lab(2, state_path=str(tmp_path / "lab.json"), subnet="10.78.0", delay=True).create()
    echo = None
    try:
        with open(tmp_path / "lab.json") as f:
            state = json.load(f)
        assert len(state["pids"]) == 2 and all(netns._is_ours(p) for p in state["pids"])
        rules = lab.iptables_save(1)
        assert "REDIRECT" in rules and "-A PREROUTING -j KVC-PART" in rules
        n2 = lab.ip(1)
        echo = subprocess.Popen(
            [*lab.exec_prefix(1), sys.executable, "-c", _ECHO, n2, "5000"], stdin=subprocess.DEVNULL
        )
        n1_ns, runner_ns = lab.node_ns(0), lab.bridge_ns
        # (also waits until the echo server listens)
        _rtt_once(n1_ns, n2, 5000, lambda rtt: rtt < 0.05, timeout=15)

        lab.set_delay(1, 150)  # n2 sends late: its echo to n1 ...
        assert _rtt_once(n1_ns, n2, 5000, lambda rtt: rtt >= 0.15) < 0.5
        # ... and to the runner (bridge namespace, .254), whose connection crosses n2's proxy too
        assert 0.15 <= _in_ns(runner_ns, n2, 5000)["rtt_s"] < 0.5
        lab.clear_delay(1)
        lab.set_delay(0, 100)  # now n1 sends late: what it sends to n2
        assert _rtt_once(n1_ns, n2, 5000, lambda rtt: 0.1 <= rtt < 0.15) < 0.45
        assert _in_ns(runner_ns, n2, 5000)["rtt_s"] < 0.05  # runner <-> n2: n1 not involved
        lab.clear_delay(0)
        _rtt_once(n1_ns, n2, 5000, lambda rtt: rtt < 0.05)

        # a port nobody listens on is refused by the kernel, not accepted by the proxy
        assert _in_ns(n1_ns, n2, 5001)["error"] == "ConnectionRefusedError"
        # a partition (raw table) drops the SYN: connect() times out, it never "succeeds"
        lab.partition([[0], [1]])
        cut = _in_ns(n1_ns, n2, 5000, connect_timeout=1.0)
        assert cut.get("error") == "TimeoutError", cut
        assert "rtt_s" in _in_ns(runner_ns, n2, 5000)  # the runner is never cut off
        lab.heal()
        assert "rtt_s" in _in_ns(n1_ns, n2, 5000)
    finally:
        if echo is not None:
            echo.kill()
            echo.wait(10)
        proxies = [p.pid for p in lab.proxies]
        lab.destroy()
    assert all(not os.path.exists(f"/proc/{pid}") or not netns._is_ours(pid) for pid in proxies)
    assert not (tmp_path / "lab.json").exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.tag not in listed


def test_cleanup_recognises_nodes_and_proxies_by_command_line():
    assert netns.is_our_cmdline([b"python", b"-m", b"kvraft", b"serve", b"--id", b"n1"])
    assert netns.is_our_cmdline([b"/x/python", b"-m", b"chaos.delay", b"--listen", b"0:7070"])
    assert not netns.is_our_cmdline([b"python", b"-m", b"http.server"])


@pytest.mark.timeout(60)
def test_the_proxy_command_serves_and_cleanup_kills_it_once_its_run_is_gone(tmp_path):
    """``python -m chaos.delay`` as the lab starts it (no namespace needed with --upstream),
    then ``cleanup_stale`` on a state file whose owner is dead: the proxy is killed by pid."""
    control = str(tmp_path / "delay.json")
    set_control(control, {})
    echo = EchoServer()
    gone = subprocess.Popen(["true"])
    gone.wait(10)  # a pid that no longer runs: the "crashed runner"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaos.delay",
            "--listen",
            "127.0.0.1:0",
            "--control",
            control,
            "--upstream",
            f"{SERVER_IP}:{echo.port}",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    try:
        line = proc.stdout.readline().decode()  # the lab waits for this line the same way
        assert line.startswith("listening 127.0.0.1:"), line
        s = connect(int(line.rsplit(":", 1)[1]))
        assert min_rtt(s, 1) < 0.5
        s.close()
        state = tmp_path / "lab.json"
        state.write_text(json.dumps({"owner_pid": gone.pid, "namespaces": [], "pids": [proc.pid]}))
        assert netns.cleanup_stale([str(state)]) == [f"killed process group {proc.pid}"]
        assert proc.wait(10) == -9 and not state.exists()
        # and a proxy whose owner is gone stops by itself (it polls the owner every 100 ms)
        orphan = subprocess.run(
            [
                sys.executable,
                "-m",
                "chaos.delay",
                "--listen",
                "127.0.0.1:0",
                "--control",
                control,
                "--owner-pid",
                str(gone.pid),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert orphan.returncode == 0 and "is gone: stopping" in orphan.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        echo.close()
