"""A small closed-loop HTTP/1.1 keep-alive load generator on raw asyncio streams.

Purpose: drive kvraft, etcd's JSON gateway and the naive design with the same client, so the
numbers differ only by the server. C connections are opened round-robin over the given base URLs;
each connection sends one request, waits for the whole response, and sends the next (closed loop).
Every request's latency and status are recorded; a non-2xx status, a connection error, a timeout
or (etcd GET) a range answer without `kvs` counts as an error.

Two modes: a fixed duration (`seconds`, after a `warmup` that is not measured) or a fixed number of
requests (used to pre-populate keys). Responses with Content-Length, chunked bodies, and bodies
delimited by connection close are all read completely.

What it must not do: talk to anything but the loopback URLs it is given (other hosts are
refused), or run unbounded: every run stops at its deadline plus one request timeout.

CLI example:
    python -m bench.loadgen --system kvraft --url http://127.0.0.1:8001 -c 16 --op put --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

SYSTEMS = ("kvraft", "etcd", "naive")


def make_value(size: int) -> bytes:
    """A deterministic value of `size` bytes (printable, so logs stay readable)."""
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (pattern * (size // len(pattern) + 1))[:size]


# --------------------------------------------------------------------------- request builders


class KvBuilder:
    """kvraft's (and the naive design's) API: `PUT /kv/<key>` raw body, `GET /kv/<key>`."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def request(self, op: str, key: str, host: str) -> bytes:
        path = "/kv/" + quote(key, safe="")
        if op == "put":
            head = (
                f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {len(self.value)}\r\n\r\n"
            )
            return head.encode() + self.value
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def ok(self, op: str, status: int, body: bytes) -> bool:
        return 200 <= status < 300


class EtcdBuilder:
    """etcd v3 JSON gateway: `POST /v3/kv/put` and `POST /v3/kv/range` with base64 fields."""

    def __init__(self, value: bytes) -> None:
        self.value_b64 = base64.b64encode(value).decode()

    def request(self, op: str, key: str, host: str) -> bytes:
        k = base64.b64encode(key.encode()).decode()
        if op == "put":
            path, body = "/v3/kv/put", {"key": k, "value": self.value_b64}
        else:
            path, body = "/v3/kv/range", {"key": k}
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data

    def ok(self, op: str, status: int, body: bytes) -> bool:
        if not 200 <= status < 300:
            return False
        return op != "get" or b'"kvs"' in body


def builder_for(system: str, value: bytes) -> KvBuilder | EtcdBuilder:
    """The request builder of a system name in SYSTEMS."""
    if system == "etcd":
        return EtcdBuilder(value)
    if system in ("kvraft", "naive"):
        return KvBuilder(value)
    raise ValueError(f"unknown system {system!r}")


# --------------------------------------------------------------------------- HTTP connection


class HttpError(Exception):
    """The server sent something that is not a well-formed HTTP/1.1 response."""


class Connection:
    """One keep-alive HTTP/1.1 connection. Not safe for concurrent use: one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def roundtrip(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; return (status, body). Reconnects first if the last one closed."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        status, headers = await self._read_head()
        body = await self._read_body(status, headers)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    async def _read_head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        while True:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise HttpError(f"bad status line {lines[0]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if status != 100:  # skip interim "100 Continue" responses
                return status, headers

    async def _read_body(self, status: int, headers: dict[str, str]) -> bytes:
        assert self.reader is not None
        if status in (204, 304) or 100 <= status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return b"".join(chunks)
                chunk = await self.reader.readexactly(size + 2)
                chunks.append(chunk[:-2])
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        body = await self.reader.read()  # delimited by close
        self.close()
        return body


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    """What one load run measured. Latencies are of requests completed inside the window."""

    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    error_kinds: Counter = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the measured window."""
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of successful request latencies, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered))) - 1))
        return ordered[rank] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "throughput": round(self.throughput, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "error_kinds": dict(self.error_kinds.most_common(5)),
        }


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://host:port URLs are supported, got {url!r}")
    if not (parts.hostname.startswith("127.") or parts.hostname in ("localhost", "::1")):
        raise ValueError(f"only loopback targets are allowed, got {url!r}")
    return parts.hostname, parts.port or 80


class _Run:
    """Shared state of one run: the key counter, the window and the records."""

    def __init__(self, builder, op, keys, key_prefix, limit, t_start, t_end, timeout):
        self.builder, self.op, self.keys, self.key_prefix = builder, op, keys, key_prefix
        self.limit, self.t_start, self.t_end, self.timeout = limit, t_start, t_end, timeout
        self.next_index = 0
        self.latencies: list[float] = []
        self.requests = 0
        self.errors = 0
        self.error_kinds: Counter = Counter()

    def take(self) -> int | None:
        """The next request's index, or None when the run is over."""
        if self.limit is not None and self.next_index >= self.limit:
            return None
        if time.perf_counter() >= self.t_end:
            return None
        self.next_index += 1
        return self.next_index - 1

    def record(self, started: float, ended: float, error: str | None) -> None:
        if self.limit is None and not (self.t_start <= ended <= self.t_end):
            return  # warm-up, or finished after the window closed
        self.requests += 1
        if error is None:
            self.latencies.append(ended - started)
        else:
            self.errors += 1
            self.error_kinds[error] += 1

    async def worker(self, url: str) -> None:
        host, port = _host_port(url)
        host_header = f"{host}:{port}"
        conn = Connection(host, port)
        try:
            while (index := self.take()) is not None:
                key = f"{self.key_prefix}{index % self.keys:06d}"
                request = self.builder.request(self.op, key, host_header)
                started = time.perf_counter()
                error = None
                try:
                    async with asyncio.timeout(self.timeout):
                        status, body = await conn.roundtrip(request)
                    if not self.builder.ok(self.op, status, body):
                        error = f"http {status}"
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    HttpError,
                    ValueError,
                    TimeoutError,
                ) as exc:
                    error = type(exc).__name__
                    conn.close()
                self.record(started, time.perf_counter(), error)
                if error is not None and not error.startswith("http"):
                    await asyncio.sleep(0.05)  # do not spin on a dead node
        finally:
            conn.close()


async def run(
    urls: list[str],
    builder,
    op: str,
    concurrency: int,
    seconds: float = 10.0,
    warmup: float = 1.0,
    requests: int | None = None,
    keys: int = 1000,
    key_prefix: str = "bench-",
    timeout: float = 10.0,
) -> Result:
    """Run a closed-loop load and return what was measured.

    `op` is "put" or "get". With `requests` set, exactly that many requests are sent (no warm-up,
    everything counts; stops anyway after `seconds` + `warmup`). Otherwise requests completing in
    [warmup, warmup + seconds] are measured. Key i is `key_prefix` + i mod `keys` (6 digits), so a
    GET run over the same prefix and key count hits what a PUT run wrote.
    """
    if op not in ("put", "get"):
        raise ValueError("op must be 'put' or 'get'")
    if not urls or concurrency < 1:
        raise ValueError("need at least one URL and one connection")
    for url in urls:
        _host_port(url)  # refuses non-http and non-loopback URLs before any traffic
    now = time.perf_counter()
    t_start = now if requests is not None else now + warmup
    state = _Run(builder, op, keys, key_prefix, requests, t_start, now + warmup + seconds, timeout)
    await asyncio.gather(*(state.worker(urls[i % len(urls)]) for i in range(concurrency)))
    window = seconds if requests is None else max(time.perf_counter() - t_start, 1e-9)
    return Result(state.requests, state.errors, window, state.latencies, state.error_kinds)


def run_sync(
    urls: list[str], system: str, op: str, concurrency: int, value_size: int = 100, **kwargs
) -> Result:
    """Blocking wrapper of `run` for a system name in SYSTEMS and a value size in bytes."""
    builder = builder_for(system, make_value(value_size))
    return asyncio.run(run(urls, builder, op, concurrency, **kwargs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=SYSTEMS, default="kvraft")
    parser.add_argument("--url", action="append", required=True, help="base URL; repeatable")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "-n",
        "--requests",
        type=int,
        default=None,
        help="send exactly N requests instead of running for --seconds",
    )
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--key-prefix", default="bench-")
    args = parser.parse_args(argv)
    result = run_sync(
        args.url,
        args.system,
        args.op,
        args.concurrency,
        args.value_size,
        seconds=args.seconds,
        warmup=args.warmup,
        requests=args.requests,
        keys=args.keys,
        key_prefix=args.key_prefix,
    )
    print(json.dumps(result.summary()))
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
