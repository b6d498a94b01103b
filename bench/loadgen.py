"""A small closed-loop HTTP/1.1 keep-alive load generator on raw asyncio streams.

Purpose: drive kvraft, etcd's JSON gateway and the naive design with the same client, so the
numbers differ only by the server. C connections are opened round-robin over the given base URLs;
each connection sends one request, waits for the whole response, and sends the next (closed loop).
Every request's latency and status are recorded; a non-2xx status, a connection error, a timeout
or (etcd GET) a range answer without `kvs` counts as an error.

Keys: request i uses key `key_prefix` + (i mod `keys`) (sequential, the default), or a key drawn
from a zipfian distribution over the `keys` keys (YCSB's ZipfianGenerator, constant 0.99). The op
is "put", "get", or "mix": each request is a GET with probability `read_fraction`, else a PUT
(YCSB's workloads A, B, C are mixes 0.5, 0.95 and 1.0 over zipfian keys). kvraft GETs may carry a
read level (`?r=quorum`); etcd ranges may be `"serializable": true`.

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
import random
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
    """kvraft's (and the naive design's) API: `PUT /kv/<key>` raw body, `GET /kv/<key>`, with
    `?r=<read_level>` on GETs when a read level is given."""

    def __init__(self, value: bytes, read_level: str | None = None) -> None:
        self.value = value
        self.query = f"?r={quote(read_level, safe='')}" if read_level else ""

    def request(self, op: str, key: str, host: str) -> bytes:
        path = "/kv/" + quote(key, safe="")
        if op == "put":
            head = (
                f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {len(self.value)}\r\n\r\n"
            )
            return head.encode() + self.value
        return f"GET {path}{self.query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def ok(self, op: str, status: int, body: bytes) -> bool:
        return 200 <= status < 300


class EtcdBuilder:
    """etcd v3 JSON gateway: `POST /v3/kv/put` and `POST /v3/kv/range` with base64 fields; ranges
    are linearizable (etcd's default) unless `serializable` (any member's local copy)."""

    def __init__(self, value: bytes, serializable: bool = False) -> None:
        self.value_b64 = base64.b64encode(value).decode()
        self.serializable = serializable

    def request(self, op: str, key: str, host: str) -> bytes:
        k = base64.b64encode(key.encode()).decode()
        if op == "put":
            path, body = "/v3/kv/put", {"key": k, "value": self.value_b64}
        else:
            path, body = "/v3/kv/range", {"key": k}
            if self.serializable:
                body["serializable"] = True
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


def builder_for(
    system: str, value: bytes, read_level: str | None = None, serializable: bool = False
) -> KvBuilder | EtcdBuilder:
    """The request builder of a system name in SYSTEMS (`read_level`: kvraft and naive only;
    `serializable`: etcd only)."""
    if system == "etcd":
        return EtcdBuilder(value, serializable)
    if system in ("kvraft", "naive"):
        return KvBuilder(value, read_level)
    raise ValueError(f"unknown system {system!r}")


# --------------------------------------------------------------------------- key choice

YCSB_ZIPFIAN_CONSTANT = 0.99


class Zipfian:
    """YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic
    databases", SIGMOD 1994): item i of [0, n) with probability proportional to 1 / (i + 1)^theta.
    Item 0 is the hottest. O(n) to build (the zeta sum), O(1) per draw; not thread-safe."""

    def __init__(self, n: int, theta: float = YCSB_ZIPFIAN_CONSTANT, seed: int | None = None):
        if n < 1 or not 0 < theta < 1:
            raise ValueError("need n >= 1 and 0 < theta < 1")
        self.n, self.theta = n, theta
        self.rng = random.Random(seed)
        self.zetan = sum((i + 1) ** -theta for i in range(n))
        self.zeta2 = 1 + 0.5**theta
        self.alpha = 1 / (1 - theta)
        self.eta = (1 - (2 / n) ** (1 - theta)) / (1 - self.zeta2 / self.zetan) if n > 1 else 0.0

    def draw(self, u: float) -> int:
        """The item for a uniform `u` in [0, 1)."""
        uz = u * self.zetan
        if self.n == 1 or uz < 1:
            return 0
        if uz < self.zeta2:
            return 1
        return min(self.n - 1, int(self.n * (self.eta * u - self.eta + 1) ** self.alpha))

    def next(self) -> int:
        return self.draw(self.rng.random())


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
    # completion time (s since the window opened) of each successful request, as `latencies`
    ends: list[float] = field(repr=False, default_factory=list)
    # per HTTP error kind, the start of the first such response body (up to 300 characters)
    error_examples: dict[str, str] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the measured window."""
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of successful request latencies, in milliseconds."""
        return nearest_rank_ms(sorted(self.latencies), q)

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    def per_second(self) -> list[tuple[int, int, float, float]]:
        """(second, successful requests, p50 ms, p99 ms) per whole second of the window, by
        completion time; seconds without a completed request are listed with NaN latencies."""
        return per_second(self.ends, self.latencies, self.seconds)

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "throughput": round(self.throughput, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "error_kinds": dict(self.error_kinds.most_common(5)),
        }


def nearest_rank_ms(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile `q` of sorted latencies in seconds, in ms (NaN when empty)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered))) - 1))
    return ordered[rank] * 1000


def per_second(
    ends: list[float], latencies: list[float], seconds: float
) -> list[tuple[int, int, float, float]]:
    """Bucket (completion time s, latency s) pairs by whole second of [0, seconds): rows of
    (second, count, p50 ms, p99 ms)."""
    buckets: list[list[float]] = [[] for _ in range(max(1, int(seconds + 0.999)))]
    for end, lat in zip(ends, latencies, strict=True):
        i = int(end)
        if 0 <= i < len(buckets):
            buckets[i].append(lat)
    rows = []
    for i, lats in enumerate(buckets):
        lats.sort()
        rows.append((i, len(lats), nearest_rank_ms(lats, 50), nearest_rank_ms(lats, 99)))
    return rows


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://host:port URLs are supported, got {url!r}")
    if not (parts.hostname.startswith("127.") or parts.hostname in ("localhost", "::1")):
        raise ValueError(f"only loopback targets are allowed, got {url!r}")
    return parts.hostname, parts.port or 80


def _error_code(body: bytes) -> str:
    """The suffix ' <code>' of a JSON error body {"error": "<code>", ...} (kvraft's), else ''."""
    if not body.startswith(b"{") or len(body) > 4096:
        return ""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    return f" {code}" if isinstance(code, str) and code.isidentifier() else ""


class _Run:
    """Shared state of one run: the key counter, the window and the records."""

    def __init__(self, builder, op, keys, key_prefix, limit, t_start, t_end, timeout):
        self.builder, self.op, self.keys, self.key_prefix = builder, op, keys, key_prefix
        self.limit, self.t_start, self.t_end, self.timeout = limit, t_start, t_end, timeout
        self.next_index = 0
        self.zipf: Zipfian | None = None  # set: zipfian keys instead of sequential ones
        self.read_fraction = 1.0  # op "mix": probability that a request is a GET
        self.rng = random.Random(1)
        self.latencies: list[float] = []
        self.ends: list[float] = []
        self.requests = 0
        self.errors = 0
        self.error_kinds: Counter = Counter()
        self.error_examples: dict[str, str] = {}

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
            self.ends.append(ended - self.t_start)
        else:
            self.errors += 1
            self.error_kinds[error] += 1

    async def worker(self, url: str) -> None:
        host, port = _host_port(url)
        host_header = f"{host}:{port}"
        conn = Connection(host, port)
        try:
            while (index := self.take()) is not None:
                key_index = self.zipf.next() if self.zipf is not None else index % self.keys
                key = f"{self.key_prefix}{key_index:06d}"
                op = self.op
                if op == "mix":
                    op = "get" if self.rng.random() < self.read_fraction else "put"
                request = self.builder.request(op, key, host_header)
                started = time.perf_counter()
                error = None
                try:
                    async with asyncio.timeout(self.timeout):
                        status, body = await conn.roundtrip(request)
                    if not self.builder.ok(op, status, body):
                        error = f"http {status}{_error_code(body)}"
                        if error not in self.error_examples:
                            self.error_examples[error] = body[:300].decode("utf-8", "replace")
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
    distribution: str = "sequential",
    read_fraction: float = 0.5,
    seed: int = 1,
) -> Result:
    """Run a closed-loop load and return what was measured.

    `op` is "put", "get" or "mix" (a GET with probability `read_fraction`, else a PUT). With
    `requests` set, exactly that many requests are sent (no warm-up, everything counts; stops
    anyway after `seconds` + `warmup`). Otherwise requests completing in
    [warmup, warmup + seconds] are measured. Key i is `key_prefix` + i mod `keys` (6 digits), so a
    GET run over the same prefix and key count hits what a PUT run wrote. With `distribution`
    "zipfian" the key index is drawn from `Zipfian(keys)` instead (seeded with `seed`).
    """
    if op not in ("put", "get", "mix"):
        raise ValueError("op must be 'put', 'get' or 'mix'")
    if distribution not in ("sequential", "zipfian"):
        raise ValueError("distribution must be 'sequential' or 'zipfian'")
    if not urls or concurrency < 1:
        raise ValueError("need at least one URL and one connection")
    for url in urls:
        _host_port(url)  # refuses non-http and non-loopback URLs before any traffic
    zipf = Zipfian(keys, seed=seed) if distribution == "zipfian" else None  # O(keys): before t0
    now = time.perf_counter()
    t_start = now if requests is not None else now + warmup
    state = _Run(builder, op, keys, key_prefix, requests, t_start, now + warmup + seconds, timeout)
    state.zipf, state.read_fraction, state.rng = zipf, read_fraction, random.Random(seed + 1)
    await asyncio.gather(*(state.worker(urls[i % len(urls)]) for i in range(concurrency)))
    window = seconds if requests is None else max(time.perf_counter() - t_start, 1e-9)
    return Result(
        state.requests,
        state.errors,
        window,
        state.latencies,
        state.error_kinds,
        state.ends,
        state.error_examples,
    )


def run_sync(
    urls: list[str],
    system: str,
    op: str,
    concurrency: int,
    value_size: int = 100,
    read_level: str | None = None,
    serializable: bool = False,
    **kwargs,
) -> Result:
    """Blocking wrapper of `run` for a system name in SYSTEMS and a value size in bytes."""
    builder = builder_for(system, make_value(value_size), read_level, serializable)
    return asyncio.run(run(urls, builder, op, concurrency, **kwargs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=SYSTEMS, default="kvraft")
    parser.add_argument("--url", action="append", required=True, help="base URL; repeatable")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--op", choices=("put", "get", "mix"), default="put")
    parser.add_argument("--read-fraction", type=float, default=0.5, help="--op mix: GET share")
    parser.add_argument("--distribution", choices=("sequential", "zipfian"), default="sequential")
    parser.add_argument("--read-level", help="kvraft/naive GET ?r= (one, quorum, all)")
    parser.add_argument("--serializable", action="store_true", help="etcd: serializable ranges")
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
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="exit 1 when more than this share of the requests failed (0: any error)",
    )
    args = parser.parse_args(argv)
    result = run_sync(
        args.url,
        args.system,
        args.op,
        args.concurrency,
        args.value_size,
        args.read_level,
        args.serializable,
        seconds=args.seconds,
        warmup=args.warmup,
        requests=args.requests,
        keys=args.keys,
        key_prefix=args.key_prefix,
        distribution=args.distribution,
        read_fraction=args.read_fraction,
    )
    print(json.dumps(result.summary()))
    if result.requests == 0 or failed_share(result) > args.max_error_rate:
        return 1  # nothing sent, or too much failed: the figures above are not a measurement
    return 0


def failed_share(result: Result) -> float:
    """The share of the requests that failed (0.0 when none was sent)."""
    return result.errors / result.requests if result.requests else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
