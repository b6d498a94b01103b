"""loadgen's mixes and zipfian keys, and the hey and wrk drivers, against a real HTTP server on
127.0.0.1 that records every request (a stand-in for a node: PUT /kv/<key> stores, GET reads)."""

import shutil
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import loadgen, tools

REQUESTS = 800  # enough for the 90 % read share to land in 85-95 % (4 standard deviations)


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: Counter

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen[("PUT", self.path)] += 1
        self._answer(200, b"{}")

    def do_GET(self):  # noqa: N802
        self.server.seen[("GET", self.path)] += 1
        self._answer(200, b"value")

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A load tool that stops resets its connections: that is not an error of the server."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def servers():
    """Two recording servers (two "nodes"); their request counters are merged by the test."""
    started = []
    for _ in range(2):
        srv = _Server(("127.0.0.1", 0), _Recorder)
        srv.seen = Counter()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
    yield started
    for srv in started:
        srv.shutdown()
        srv.server_close()


def _urls(servers):
    return [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]


def _seen(servers) -> Counter:
    total: Counter = Counter()
    for s in servers:
        total += s.seen
    return total


def test_loadgen_mix_reads_at_the_given_share_over_zipfian_keys(servers):
    res = loadgen.run_sync(
        _urls(servers),
        "kvraft",
        "mix",
        4,
        10,
        "quorum",
        requests=REQUESTS,
        seconds=60,
        warmup=0,
        keys=50,
        key_prefix="z-",
        distribution="zipfian",
        read_fraction=0.9,
    )
    assert res.requests == REQUESTS and res.errors == 0
    seen = _seen(servers)
    gets = sum(n for (m, _), n in seen.items() if m == "GET")
    assert 0.85 < gets / REQUESTS < 0.95
    assert all(p.endswith("?r=quorum") for (m, p) in seen if m == "GET")
    keys = Counter()
    for (_, path), n in seen.items():
        keys[path.split("?")[0]] += n
    assert set(keys) <= {f"/kv/z-{i:06d}" for i in range(50)}
    assert keys.most_common(1)[0][0] == "/kv/z-000000"  # the zipfian head
    assert sum(r[1] for r in res.per_second()) == REQUESTS - res.errors


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_script_drives_every_node_with_the_mix(servers):
    req = tools.Request("kvraft", "mix", read_level="one", read_fraction=0.5)
    r = tools.run_wrk(_urls(servers), req, 100, "w-", b"x" * 10, 2, 1)
    assert r.failed is None, r.failed
    assert r.requests > 50 and r.errors == 0 and r.p99_ms >= r.p50_ms > 0
    assert all(s.seen for s in servers)  # one thread per node
    seen = _seen(servers)
    gets = sum(n for (m, _), n in seen.items() if m == "GET")
    puts = sum(n for (m, _), n in seen.items() if m == "PUT")
    assert 0.3 < gets / (gets + puts) < 0.7
    assert {p.split("?")[0] for _, p in seen} <= {f"/kv/w-{i:06d}" for i in range(100)}


@pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed")
def test_hey_runs_one_process_per_node_and_merges(servers):
    req = tools.Request("kvraft", "get", read_level="quorum")
    r = tools.run_hey(_urls(servers), req, "one", b"", 2, 1, warmup=0.2)
    assert r.failed is None, r.failed
    assert r.requests > 20 and r.errors == 0 and r.command.startswith("hey -z 1.2s -c 2 ")
    assert f"127.0.0.1:{servers[1].server_address[1]}, all at once" in r.command
    assert len(r.series) == 1 and r.series[0][1] == r.requests  # the 1 s window only
    served = sum(n for s in servers for n in s.seen.values())
    assert served > r.requests  # the warm-up's requests were served, not counted
    for s in servers:
        assert set(s.seen) == {("GET", "/kv/one?r=quorum")}
