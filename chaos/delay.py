"""A TCP proxy that delays what each side sends: the ``delay`` nemesis, since the kernel here has
no ``tc netem``. One process per node namespace, started by :class:`chaos.netns.Lab` when a run
has delay faults, and in the path of every TCP connection *into* its node for the whole run.

How connections reach it (rules made by :func:`chaos.netns.delay_rules`): in the node's namespace
a SYN arriving on ``eth0`` for a port that has a listening socket (``-m socket``) is marked, and
marked packets are ``REDIRECT``-ed to this proxy's port. The proxy finds the real destination
with ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` and connects to it over the namespace's loopback.
A SYN for a port nobody listens on (the node was killed) is not redirected, so the caller is
refused by the kernel as it would be without the proxy. Every connection crosses exactly one
proxy (the one of the node it goes to): a client's and a peer's alike.

What it does: bytes read from an endpoint are written to the other side ``delay[ip]`` ms later,
``ip`` being the address of the endpoint that sent them (the peer's address, or the node's own
for what the node answers), so node *i*'s delay holds back everything node *i* sends, as
``netem delay`` on its interface would (egress). Each chunk gets ``delay + uniform(0, jitter)``
but never leaves before the previous one: bytes are never reordered. Delays come from a JSON
control file (``{"10.77.0.2": {"delay_ms": 150, "jitter_ms": 15}}``, or a bare number of ms),
re-read when its modification time changes (polled every 100 ms). An EOF is passed on once the
bytes before it are; a reset or error on one side resets both (RST); an upstream that cannot be
reached resets the client.

Limits: it delays per chunk read (up to 64 KiB), not per packet; it buffers at most
``max_buffer`` bytes per direction before it stops reading (then TCP flow control pushes back);
every byte crosses user space twice, which costs some CPU. Must not: touch iptables, or connect
anywhere but to the original destination (or the fixed ``--upstream`` of the tests).

    python -m chaos.delay --listen 0.0.0.0:7070 --control RUN/delay.json [--owner-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import struct
import sys
import time

from .netns import _alive  # the same test of the runner being alive as cleanup's

PORT = 7070
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CHUNK = 65536


# -- pure parts ----------------------------------------------------------------------------------


def parse_control(text: str) -> dict[str, tuple[float, float]]:
    """The control file's text -> {ip: (delay_s, jitter_s)}. Raises ValueError when malformed."""
    data = json.loads(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("the control file must hold a JSON object")
    table = {}
    for ip, spec in data.items():
        if isinstance(spec, dict):
            ms, jitter = spec.get("delay_ms", 0), spec.get("jitter_ms", 0)
        else:
            ms, jitter = spec, 0
        if (
            isinstance(ms, bool)
            or not isinstance(ms, int | float)
            or isinstance(jitter, bool)
            or not isinstance(jitter, int | float)
        ):
            raise ValueError(f"{ip}: delay_ms and jitter_ms must be numbers")
        if ms < 0 or jitter < 0:
            raise ValueError(f"{ip}: negative delay")
        if ms or jitter:
            table[str(ip)] = (ms / 1000.0, jitter / 1000.0)
    return table


def release_time(previous: float, now: float, delay_s: float, jitter_s: float) -> float:
    """When a chunk read at ``now`` may be written: after its delay, never before the chunk
    read before it (``previous``), so a shorter delay or jitter cannot reorder bytes."""
    return max(previous, now + delay_s + jitter_s)


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The address a REDIRECT-ed connection was meant for (from conntrack)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(addr), port


# -- the control file ----------------------------------------------------------------------------


class Delays:
    """The delay table, from the control file. ``refresh()`` re-reads it when it changed; a file
    that is missing or malformed leaves the last good table in place (and says so)."""

    def __init__(self, path: str | None, log=None) -> None:
        self.path = path
        self.table: dict[str, tuple[float, float]] = {}
        self._seen: tuple | None = None
        self._log = log or (lambda msg: None)

    def refresh(self) -> bool:
        if not self.path:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        if sig == self._seen:
            return False
        self._seen = sig
        try:
            with open(self.path) as f:
                table = parse_control(f.read())
        except (OSError, ValueError) as exc:
            self._log(f"control file {self.path} not applied: {exc}")
            return False
        if table != self.table:
            self.table = table
            self._log(f"delays now {json.dumps({k: v[0] * 1000 for k, v in table.items()})} ms")
            return True
        return False

    def of(self, ip: str) -> tuple[float, float]:
        return self.table.get(ip, (0.0, 0.0))


# -- the proxy -----------------------------------------------------------------------------------


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a reset connection would be."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class _Direction:
    """The bytes read from one endpoint and not yet written to the other, with release times."""

    def __init__(self, max_buffer: int) -> None:
        self.queue: collections.deque = collections.deque()
        self.pending = 0
        self.max_buffer = max_buffer
        self.last_release = 0.0
        self.ready = asyncio.Event()  # something queued
        self.space = asyncio.Event()  # below max_buffer
        self.space.set()

    def put(self, release: float, data: bytes | None) -> None:
        self.queue.append((release, data))
        if data:
            self.pending += len(data)
            if self.pending >= self.max_buffer:
                self.space.clear()
        self.ready.set()

    def taken(self, n: int) -> None:
        self.pending -= n
        if self.pending < self.max_buffer:
            self.space.set()


class Proxy:
    """Serves on ``listen``; each accepted connection goes to its original destination (or to
    ``upstream`` when given, for tests without NAT). Runs on one asyncio loop; ``serve()``
    returns when ``stop()`` is called or the owner process is gone."""

    def __init__(
        self,
        delays: Delays,
        listen: tuple[str, int] = ("0.0.0.0", PORT),
        upstream: tuple[str, int] | None = None,
        owner_pid: int | None = None,
        rng: random.Random | None = None,
        max_buffer: int = 1 << 20,
        connect_timeout: float = 20.0,
        poll_s: float = 0.1,
        log=None,
    ) -> None:
        self.delays, self.listen, self.upstream = delays, listen, upstream
        self.owner_pid, self.rng = owner_pid, rng or random.Random()
        self.max_buffer, self.connect_timeout, self.poll_s = max_buffer, connect_timeout, poll_s
        self.log = log or (lambda msg: None)
        self.port: int | None = None
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Bind and listen; returns the port (useful with port 0)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.delays.refresh()
        self._server = await asyncio.start_server(
            self._accepted, *self.listen, backlog=512, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def serve(self) -> None:
        if self._server is None:
            await self.start()
        try:
            while not self._stopping.is_set():
                self.delays.refresh()
                if self.owner_pid and not _alive(self.owner_pid):
                    self.log(f"owner {self.owner_pid} is gone: stopping")
                    break
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.poll_s)
                except TimeoutError:
                    pass
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=2)
            await self._server.wait_closed()

    def stop(self) -> None:
        """Thread-safe: ask ``serve()`` to return."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    # -- one connection ----------------------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            pass  # stopping (both sides were reset); asyncio 3.11 logs a cancelled callback task
        finally:
            self._tasks.discard(task)

    async def _relay(self, c_reader, c_writer) -> None:
        client_ip = (c_writer.get_extra_info("peername") or ("?", 0))[0]
        try:
            dst = self.upstream or original_dst(c_writer.get_extra_info("socket"))
        except OSError as exc:
            self.log(f"no original destination for a connection from {client_ip}: {exc}")
            _reset(c_writer)
            return
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection(*dst), self.connect_timeout
            )
        except BaseException as exc:
            _reset(c_writer)  # the caller sees a reset: its bytes went nowhere
            if isinstance(exc, OSError | TimeoutError):
                return
            raise
        self.connections += 1
        up_ip = dst[0]
        try:
            async with asyncio.TaskGroup() as tg:
                for src, dst_w, ip in (
                    (c_reader, u_writer, client_ip),
                    (u_reader, c_writer, up_ip),
                ):
                    d = _Direction(self.max_buffer)
                    tg.create_task(self._read(src, d, ip))
                    tg.create_task(self._write(dst_w, d))
        except BaseException as exc:  # a reset or error on either side: reset both
            _reset(c_writer)
            _reset(u_writer)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for w in (c_writer, u_writer):
            w.close()

    async def _read(self, reader: asyncio.StreamReader, d: _Direction, ip: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await d.space.wait()
            data = await reader.read(CHUNK)
            delay_s, jitter_s = self.delays.of(ip)
            jitter = self.rng.uniform(0, jitter_s) if jitter_s else 0.0
            d.last_release = release_time(d.last_release, loop.time(), delay_s, jitter)
            d.put(d.last_release, data or None)
            if not data:
                return

    async def _write(self, writer: asyncio.StreamWriter, d: _Direction) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await d.ready.wait()
            release, data = d.queue.popleft()
            if not d.queue:
                d.ready.clear()
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:  # EOF, after every byte before it
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            d.taken(len(data))


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.delay", description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=_addr, default=("0.0.0.0", PORT))
    p.add_argument("--control", required=True, help="JSON file of delays by sender address")
    p.add_argument(
        "--upstream",
        type=_addr,
        default=None,
        help="fixed destination (tests); default: the original one (SO_ORIGINAL_DST)",
    )
    p.add_argument("--owner-pid", type=int, default=None, help="exit when this process is gone")
    p.add_argument("--seed", type=int, default=None, help="seed of the jitter draws")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[delay {os.getpid()}] {msg}", file=sys.stderr, flush=True)

    async def run() -> None:
        proxy = Proxy(
            Delays(args.control, log),
            args.listen,
            args.upstream,
            args.owner_pid,
            random.Random(args.seed),
            log=log,
        )
        port = await proxy.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, proxy.stop)
        print(f"listening {args.listen[0]}:{port}", flush=True)  # the lab waits for this line
        await proxy.serve()
        log(f"stopped after {proxy.connections} connections, {time.process_time():.1f} s of CPU")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
