"""Independent load tools for the fair cells: Debian's `hey` (Go) and `wrk` (C, with a Lua script).

They check that the project's own loadgen (Python asyncio, `bench/loadgen.py`) is not what limits
or shapes a figure: the same cell is driven by both, in the same run.

- `run_hey`: one `hey` process per node, all started at once, `conns` connections each, for the
  one-key cells (hey sends one fixed request, so it cannot vary keys). `-o csv` gives every
  request's latency and start offset; the outputs are merged into one req/s, p50, p99 and a
  per-second series, counting, as loadgen does, only the requests completed after the warm-up and
  inside the window (hey runs warm-up + window). hey's CSV has 0.1 ms resolution.
- `run_wrk`: one `wrk` process with one thread per node (its Lua `setup` points each thread at a
  node) and `conns` connections per thread, for the many-keys and YCSB cells: the Lua script draws
  zipfian keys (YCSB's generator, as loadgen's `Zipfian`) and the read/update mix per request.
  wrk reports merged percentiles from its `done` hook (1 us resolution); it has no per-request
  output, so no per-second series.

Both are installed with apt-get when missing (needs root). Targets must be loopback URLs. Every
run is bounded: the tool's own duration plus a kill deadline. Not thread-safe (temporary files).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import loadgen, procs


@dataclass
class ToolResult:
    """What one tool run measured; `series` rows are (second, requests, p50 ms, p99 ms)."""

    tool: str
    throughput: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    error_kinds: dict = field(default_factory=dict)
    series: list[tuple[int, int, float, float]] = field(default_factory=list)
    command: str = ""
    failed: str | None = None


@dataclass(frozen=True)
class Request:
    """The one request of a cell, for a tool: op and read guarantee of a system."""

    system: str  # "kvraft" or "etcd"
    op: str  # "put", "get" or "mix"
    read_level: str | None = None  # kvraft ?r=
    serializable: bool = False  # etcd range
    read_fraction: float = 1.0  # op "mix"


def _shown(arg: str) -> str:
    """`arg` relative to the working directory when it is a path under it (for the report)."""
    if arg.startswith("/"):
        rel = os.path.relpath(arg)
        return arg if rel.startswith("..") else rel
    return arg


def _check_loopback(urls: list[str]) -> list[tuple[str, int]]:
    out = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or not parts.port:
            raise ValueError(f"only http://127.0.0.1:PORT targets, got {url!r}")
        out.append((parts.hostname, parts.port))
    return out


# --------------------------------------------------------------------------- hey


def hey_args(req: Request, url: str, key: str, value: bytes, tmp: Path) -> list[str]:
    """hey's method, content type, body file and URL for one node (the fixed request of a cell)."""
    if req.op == "mix":
        raise ValueError("hey sends one fixed request: no mixes")
    if req.system == "etcd":
        k = base64.b64encode(key.encode()).decode()
        if req.op == "put":
            body = {"key": k, "value": base64.b64encode(value).decode()}
            path = "/v3/kv/put"
        else:
            body = {"key": k, **({"serializable": True} if req.serializable else {})}
            path = "/v3/kv/range"
        kind = "put" if req.op == "put" else ("range-serializable" if req.serializable else "range")
        body_file = tmp / f"etcd-{kind}.json"
        body_file.write_text(json.dumps(body))
        return ["-m", "POST", "-T", "application/json", "-D", str(body_file), url + path]
    path = f"{url}/kv/{key}"
    if req.op == "put":
        body_file = tmp / "value.bin"
        body_file.write_bytes(value)
        return ["-m", "PUT", "-T", "application/octet-stream", "-D", str(body_file), path]
    return ["-m", "GET", path + (f"?r={req.read_level}" if req.read_level else "")]


def parse_hey_csv(
    text: str, offset: float = 0.0, window: float = math.inf
) -> tuple[list[float], list[float], int, dict[str, int]]:
    """(ends, latencies, errors, error kinds) of the requests of a `hey -o csv` output that end
    in [0, window]; an end is the request's start offset + its response time + `offset`, in
    seconds; latencies in seconds."""
    ends, lats, errors, kinds = [], [], 0, {}
    for line in text.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) < 8:
            continue
        try:
            lat, status, start = float(parts[0]), int(parts[6]), float(parts[7])
        except ValueError:
            continue
        end = start + lat + offset
        if not 0 <= end <= window:
            continue
        if 200 <= status < 300:
            lats.append(lat)
            ends.append(end)
        else:
            errors += 1
            kinds[f"http {status}"] = kinds.get(f"http {status}", 0) + 1
    return ends, lats, errors, kinds


def run_hey(
    urls: list[str],
    req: Request,
    key: str,
    value: bytes,
    conns: int,
    seconds: float,
    body_dir: Path | None = None,
    warmup: float = 0.0,
) -> ToolResult:
    """One `hey -z <warmup + seconds> -c <conns> -o csv` per node at once; merged figures of the
    requests completed in [warmup, warmup + seconds] after the start. The request body files are
    kept in `body_dir` (default: a temporary directory). Blocks for about `warmup + seconds`; a
    failure to run is returned in `failed`, never raised."""
    _check_loopback(urls)
    binary = procs.ensure_debian_binary("hey", "hey")
    result = ToolResult("hey")
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-hey-") as tmpdir:
        tmp = Path(tmpdir)
        bodies = body_dir or tmp
        bodies.mkdir(parents=True, exist_ok=True)
        cmds = [
            [binary, "-z", f"{warmup + seconds:g}s", "-c", str(conns), "-t", "10", "-o", "csv"]
            + hey_args(req, url, key, value, bodies)
            for url in urls
        ]
        result.command = shlex.join(["hey", *(_shown(a) for a in cmds[0][1:])])
        if len(urls) > 1:
            others = ", ".join(urlsplit(u).netloc for u in urls[1:])
            result.command += f" (and the same against {others}, all at once)"
        if warmup:
            result.command += f"; the first {warmup:g} s not counted"
        outs = [tmp / f"out{i}.csv" for i in range(len(cmds))]
        running = []
        for cmd, out in zip(cmds, outs, strict=True):
            with open(out, "wb") as fh:
                running.append(
                    subprocess.Popen(cmd, stdout=fh, stderr=subprocess.PIPE, start_new_session=True)
                )
        failed = []
        for proc in running:
            try:
                _, err = proc.communicate(timeout=warmup + seconds + 30)
            except subprocess.TimeoutExpired:
                procs.stop(proc, grace=2)
                failed.append("timed out")
                continue
            if proc.returncode != 0:
                failed.append(f"exit {proc.returncode}: {err.decode(errors='replace')[:200]}")
        if failed:
            result.failed = "hey: " + "; ".join(failed)
            return result
        ends, lats = [], []
        for out in outs:
            e, lat, errors, kinds = parse_hey_csv(out.read_text(), -warmup, seconds)
            ends += e
            lats += lat
            result.errors += errors
            for k, v in kinds.items():
                result.error_kinds[k] = result.error_kinds.get(k, 0) + v
    ordered = sorted(lats)
    result.requests = len(lats) + result.errors
    result.throughput = len(lats) / seconds
    result.p50_ms = loadgen.nearest_rank_ms(ordered, 50)
    result.p99_ms = loadgen.nearest_rank_ms(ordered, 99)
    result.series = loadgen.per_second(ends, lats, seconds)
    return result


# --------------------------------------------------------------------------- wrk

WRK_LUA = r"""
-- generated by bench/tools.py: zipfian keys (YCSB's generator) and a read/update mix
local cfg = %(cfg)s
local nodes = cfg.nodes
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  local node = nodes[(counter - 1) %% #nodes + 1]
  thread.addr = wrk.lookup(node[1], node[2])[1]
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b %% 2 ^ i - b %% 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%%d%%d?%%d?%%d?%%d?%%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data %% 3 + 1])
end

local n, theta = cfg.keys, cfg.theta
local zetan, zeta2, alpha, eta
misses = 0

function init(args)
  math.randomseed(1000 + tid * 7919)
  zetan = 0
  for i = 1, n do zetan = zetan + i ^ (-theta) end
  zeta2 = 1 + 0.5 ^ theta
  alpha = 1 / (1 - theta)
  if n > 1 then eta = (1 - (2 / n) ^ (1 - theta)) / (1 - zeta2 / zetan) else eta = 0 end
end

local function zipf()
  local u = math.random()
  local uz = u * zetan
  if n == 1 or uz < 1 then return 0 end
  if uz < zeta2 then return 1 end
  return math.min(n - 1, math.floor(n * (eta * u - eta + 1) ^ alpha))
end

local kv_put_headers = { ["Content-Type"] = "application/octet-stream" }
local etcd_headers = { ["Content-Type"] = "application/json" }
local value_b64 = b64(cfg.value)

function request()
  local key = string.format("%%s%%06d", cfg.prefix, zipf())
  local get = math.random() < cfg.read_fraction
  if cfg.system == "etcd" then
    local k = b64(key)
    if get then
      return wrk.format("POST", "/v3/kv/range", etcd_headers,
        '{"key":"' .. k .. '"' .. cfg.range_extra .. '}')
    end
    return wrk.format("POST", "/v3/kv/put", etcd_headers,
      '{"key":"' .. k .. '","value":"' .. value_b64 .. '"}')
  end
  if get then return wrk.format("GET", "/kv/" .. key .. cfg.query) end
  return wrk.format("PUT", "/kv/" .. key, kv_put_headers, cfg.value)
end

if cfg.check_hits then
  function response(status, headers, body)
    if status == 200 and cfg.system == "etcd" and not body:find('"kvs"', 1, true) then
      misses = misses + 1
    end
  end
end

function done(summary, latency, requests)
  local m = 0
  for _, t in ipairs(threads) do m = m + (t:get("misses") or 0) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"misses":%%d,"p50_us":%%d,"p99_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, m,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99))))
end
"""


def _lua_str(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal (ASCII)


def wrk_script(
    req: Request, nodes: list[tuple[str, int]], keys: int, prefix: str, value: bytes
) -> str:
    """The Lua script for one cell: `keys` zipfian keys `prefix` + 6 digits, `req`'s mix."""
    fraction = req.read_fraction if req.op == "mix" else (1.0 if req.op == "get" else 0.0)
    query = f"?r={req.read_level}" if req.read_level else ""
    range_extra = ',"serializable":true' if req.serializable else ""
    cfg = (
        "{ nodes = {"
        + ", ".join(f"{{{_lua_str(h)}, {p}}}" for h, p in nodes)
        + f"}}, keys = {keys}, theta = {loadgen.YCSB_ZIPFIAN_CONSTANT}, "
        + f"prefix = {_lua_str(prefix)}, system = {_lua_str(req.system)}, "
        + f"read_fraction = {fraction!r}, value = {_lua_str(value.decode('ascii'))}, "
        + f"query = {_lua_str(query)}, range_extra = {_lua_str(range_extra)}, "
        + f"check_hits = {'true' if fraction == 1.0 else 'false'} }}"
    )
    return WRK_LUA % {"cfg": cfg}


def parse_wrk(stdout: str, seconds: float) -> ToolResult:
    """The figures of the `WRKJSON` line our script's `done` hook prints."""
    result = ToolResult("wrk")
    line = next((x for x in stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        result.failed = "wrk: no summary line: " + stdout.strip()[-200:]
        return result
    data = json.loads(line.split(" ", 1)[1])
    kinds = {k: data[k] for k in ("connect", "read", "write", "status", "timeout", "misses")}
    result.error_kinds = {k: v for k, v in kinds.items() if v}
    # connect errors are not requests; read/write/timeout/status are failed requests
    result.errors = sum(v for k, v in kinds.items() if k != "connect")
    result.requests = data["requests"]
    duration = data["duration_us"] / 1e6 or seconds
    result.throughput = max(0, data["requests"] - result.errors) / duration
    result.p50_ms, result.p99_ms = data["p50_us"] / 1000, data["p99_us"] / 1000
    return result


def run_wrk(
    urls: list[str],
    req: Request,
    keys: int,
    prefix: str,
    value: bytes,
    conns: int,
    seconds: float,
    script: Path | None = None,
) -> ToolResult:
    """`wrk -t <nodes> -c <nodes * conns> -d <seconds>s` with one thread per node and the
    generated script, written to `script` (default: a temporary file). Blocks for about
    `seconds`; a failure is returned in `failed`."""
    nodes = _check_loopback(urls)
    binary = procs.ensure_debian_binary("wrk", "wrk")
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-wrk-") as tmpdir:
        script = script or Path(tmpdir) / "cell.lua"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(wrk_script(req, nodes, keys, prefix, value))
        secs = max(1, math.ceil(seconds))
        cmd = [
            binary,
            "-t",
            str(len(urls)),
            "-c",
            str(len(urls) * conns),
            "-d",
            f"{secs}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            urls[0],
        ]
        command = shlex.join(["wrk", *cmd[1:-3], "-s", _shown(str(script)), urls[0]])
        command += " (its Lua setup() points thread i at node i)"
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=secs + 60)  # + the zeta sums of init()
        except subprocess.TimeoutExpired:
            procs.stop(proc, grace=2)
            return ToolResult("wrk", command=command, failed="wrk: timed out")
    result = parse_wrk(out.decode(errors="replace"), secs)
    result.command = command
    return result
