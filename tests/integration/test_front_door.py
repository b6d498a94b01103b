"""The front door of a real 3-node cluster, probed with raw sockets (no HTTP library between the
test and the bytes): every hostile request of the review is a 4xx JSON error and a closed
connection, the node still serves, and the store is unchanged; slow and idle clients are shed
by total deadlines; a connection limit per client address, with /health and /ready answered at
the limit; admin operations, JSON content types and websocket Origins locked.

The nodes run with short deadlines (head 1.5 s, body 2 s, idle 2 s) so the shedding is seen in
seconds; every wait has a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import pytest

from tests.harness.cluster import ADMIN_TOKEN, Cluster, peer_headers, wait_for

HEAD_S, BODY_S, IDLE_S = 1.5, 2.0, 2.0
PER_CLIENT = 24
ENV = {
    "KVRAFT_HEAD_TIMEOUT": str(HEAD_S),
    "KVRAFT_BODY_TIMEOUT": str(BODY_S),
    "KVRAFT_IDLE_TIMEOUT": str(IDLE_S),
    "KVRAFT_MAX_CLIENT_CONNECTIONS": str(PER_CLIENT),
}
VICTIM = "door/victim"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("door")), env=ENV)
    with c:
        assert c.put(0, VICTIM, b"original", w="all").status_code == 201
        yield c


# -- raw HTTP -------------------------------------------------------------------------------------


def connect(c: Cluster, i: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    host, port = c.nodes[i].http.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def read_answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed without an answer (got {data[:200]!r})"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        assert chunk, "connection closed inside the answer"
        rest += chunk
    return status, headers, rest[:n]


def closed(s: socket.socket, within: float = 5.0) -> bool:
    """The server closed the connection (EOF or reset) within ``within`` seconds."""
    s.settimeout(within)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def exchange(
    c: Cluster, i: int, data: bytes, wait_close: bool = True
) -> tuple[int, dict, bytes, bool]:
    """Send ``data``; the answer and whether the connection closed after it (waited for only
    with ``wait_close``: an answer that keeps the connection takes the idle limit to close)."""
    with connect(c, i) as s:
        s.sendall(data)
        status, headers, body = read_answer(s)
        return status, headers, body, closed(s) if wait_close else False


def request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: door"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body and not any(
        k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})
    ):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(c: Cluster, i: int, target: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    status, hdrs, body, _closed = exchange(
        c, i, request("GET", target, {"Connection": "close", **(headers or {})})
    )
    return status, hdrs, body


def serves(c: Cluster, i: int) -> bool:
    """The node answers health and a read of the victim key, over raw sockets."""
    status, _h, body = get(c, i, "/health")
    if status != 200 or json.loads(body)["status"] != "ok":
        return False
    status, _h, body = get(c, i, f"/kv/{VICTIM.replace('/', '%2F')}?r=all")
    return status == 200 and body == b"original"


def store(c: Cluster) -> dict[str, list]:
    """Every node's keys (GET /kv), and the members: what a refused request must not change."""
    out = {}
    for i in c.running():
        status, _h, body = get(c, i, "/kv?limit=1000")
        assert status == 200
        out[c.nodes[i].id] = json.loads(body)["keys"]
    view = c.cluster_view(0)
    out["members"] = sorted(n["id"] for n in view["nodes"])
    return out


# -- hostile requests -----------------------------------------------------------------------------

CHUNKED = "PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\nTransfer-Encoding: chunked\r\n\r\n"
HOSTILE = {
    "chunk size zz": CHUNKED.encode() + b"zz\r\nab\r\n0\r\n\r\n",
    "chunk without its CRLF": CHUNKED.encode() + b"2\r\nabXX0\r\n\r\n",
    "bare CR in the target": b"GET /kv/a\rb HTTP/1.1\r\nHost: door\r\n\r\n",
    "Content-Length: superscript two": (
        "PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\nContent-Length: ²\r\n\r\n".encode()
    ),
    "Content-Length of 5,000 digits": b"PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\n"
    b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
    "vertical tab before chunked": b"PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\n"
    b"Transfer-Encoding: \x0bchunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
    "form feed before a length": b"PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\n"
    b"Content-Length: \x0c5\r\n\r\nabcde",
    "chunked on HTTP/1.0": b"PUT /kv/door%2Fnew HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nabcde\r\n0\r\n\r\n",
    **{
        f"chunk size {size!r}": CHUNKED.encode() + size + b"\r\nabcde\r\n0\r\n\r\n"
        for size in (b"0x5", b"+5", b"-0", b"0" * 29 + b"5", b"f" * 30)
    },
    "101 trailer lines then a request": CHUNKED.encode()
    + b"5\r\nabcde\r\n0\r\n"
    + b"X-T: 1\r\n" * 101
    + b"\r\nDELETE /kv/door%2Fvictim HTTP/1.1\r\nHost: door\r\n\r\n",
    "a header name that is not a token": b"GET /health HTTP/1.1\r\nHost: door\r\nX(a): 1\r\n\r\n",
    "CR in a value": b"GET /health HTTP/1.1\r\nHost: door\r\nX-A: a\rb\r\n\r\n",
    "NUL in a value": b"GET /health HTTP/1.1\r\nHost: door\r\nX-A: a\x00b\r\n\r\n",
    "empty Content-Length": b"PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\n"
    b"Content-Length: \r\n\r\n",
    "HTTP/1.1 without Host": b"GET /health HTTP/1.1\r\n\r\n",
    "two Host headers": b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "Content-Length and Transfer-Encoding": b"PUT /kv/door%2Fnew HTTP/1.1\r\nHost: door\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nabcde",
    "HTTP/2.0": b"GET /health HTTP/2.0\r\nHost: door\r\n\r\n",
    "obs-fold": b"GET /health HTTP/1.1\r\nHost: door\r\nX-A: 1\r\n folded\r\n\r\n",
    "LF line endings": b"GET /health HTTP/1.1\nHost: door\n\n",
    "websocket without Sec-WebSocket-Key": b"GET /watch HTTP/1.1\r\nHost: door\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "websocket version 8": b"GET /watch HTTP/1.1\r\nHost: door\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "websocket key of the wrong size": b"GET /report HTTP/1.1\r\nHost: door\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: c2hvcnQ=\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_requests_get_a_4xx_json_error_and_a_closed_connection(cluster, name):
    before = store(cluster)
    leader = cluster.leader()
    for i in sorted({leader, (leader + 1) % 3}):  # the leader balances: it parses first
        with connect(cluster, i) as s:
            s.sendall(HOSTILE[name])
            status, headers, body = read_answer(s)
            assert 400 <= status < 500 or status in (501, 505), (name, status, body)
            assert headers["content-type"] == "application/json"
            doc = json.loads(body)
            assert set(doc) == {"error", "message"} and doc["message"], doc
            is_ws = b"Upgrade: websocket" in HOSTILE[name]
            if not is_ws:  # a refused handshake is an ordinary answer: keep-alive is allowed
                assert headers.get("connection") == "close", (name, headers)
                assert closed(s), f"{name}: the connection stayed open after the refusal"
        assert serves(cluster, i)
    assert store(cluster) == before


def test_connection_tokens_are_tokens_not_substrings(cluster):
    with connect(cluster, 0) as s:  # "closed" is not "close": the connection stays open
        s.sendall(request("GET", "/health", {"Connection": "closed"}))
        assert read_answer(s)[0] == 200
        s.sendall(request("GET", "/health", {"Connection": "keep-alive, Close"}))
        status, headers, _body = read_answer(s)
        assert status == 200 and headers["connection"] == "close" and closed(s)


# -- slow and idle clients ------------------------------------------------------------------------


def test_a_head_trickled_byte_by_byte_is_dropped_at_its_total_deadline(cluster):
    data = request("GET", "/health", {"X-Padding": "p" * 200})
    with connect(cluster, 0) as s:
        started = time.monotonic()
        sent = 0
        s.settimeout(0.25)
        status = None
        while time.monotonic() - started < HEAD_S + 5 and sent < len(data) - 1:
            try:
                s.sendall(data[sent : sent + 1])  # one byte every 0.25 s: never idle per recv
            except OSError:
                break
            sent += 1
            try:
                got = s.recv(65536)
            except TimeoutError:
                continue
            status = int(got.split(b" ")[1]) if got else None
            break
        elapsed = time.monotonic() - started
    assert status == 408, status
    assert elapsed < HEAD_S + 2, elapsed
    assert serves(cluster, 0)


def test_a_body_trickled_byte_by_byte_is_dropped_at_its_total_deadline(cluster):
    before = store(cluster)
    head = request("PUT", "/kv/door%2Fslow", {"Content-Length": "500"})
    with connect(cluster, 1) as s:
        s.sendall(head)
        started = time.monotonic()
        s.settimeout(0.3)
        status = None
        for _ in range(int((BODY_S + 5) / 0.3)):
            try:
                s.sendall(b"x")
                got = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if got:
                status = int(got.split(b" ")[1])
                break
        elapsed = time.monotonic() - started
    assert status == 408 and elapsed < BODY_S + 2, (status, elapsed)
    assert store(cluster) == before
    assert serves(cluster, 1)


def test_an_upgrade_header_lifts_no_deadline(cluster):
    """A PUT with Upgrade: websocket and a body that never comes is dropped like any other."""
    before = store(cluster)
    with connect(cluster, 2) as s:
        s.sendall(
            request(
                "PUT",
                "/kv/door%2Fws",
                {"Upgrade": "websocket", "Connection": "Upgrade", "Content-Length": "10"},
            )
        )
        started = time.monotonic()
        status, _h, body = read_answer(s)
        assert status == 408 and json.loads(body)["error"] == "request_timeout"
        assert time.monotonic() - started < BODY_S + 2 and closed(s)
    assert store(cluster) == before


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_limit(cluster):
    with connect(cluster, 0) as s:
        s.sendall(request("GET", "/health"))
        assert read_answer(s)[0] == 200
        started = time.monotonic()
        assert closed(s, within=IDLE_S + 3)
        assert IDLE_S - 0.5 < time.monotonic() - started < IDLE_S + 2


def _ws_handshake(origin: str | None = None, path: str = "/watch") -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    if origin is not None:
        headers["Origin"] = origin
    return request("GET", path, headers)


def test_a_valid_websocket_outlives_the_request_deadlines(cluster):
    with connect(cluster, 0) as s:
        s.sendall(_ws_handshake())
        status, headers, _body = read_answer(s)
        assert status == 101 and headers["upgrade"].lower() == "websocket"
        # the watch says it is ready, then the socket sits idle past every HTTP deadline
        s.settimeout(10)
        first = s.recv(65536)
        assert first and first[0] & 0x0F == 1  # a text frame
        time.sleep(max(HEAD_S, BODY_S, IDLE_S) + 1)  # idle on purpose: the point of the test
        s.sendall(bytes([0x89, 0x80]) + os.urandom(4))  # a masked ping without payload
        deadline = time.monotonic() + 10
        got = b""
        while time.monotonic() < deadline and not any(b & 0x0F == 0xA for b in got[:1]):
            got = s.recv(65536)
            assert got, "the websocket was closed while idle"
        assert got[0] & 0x0F == 0xA  # the pong


# -- connection limits ----------------------------------------------------------------------------


def test_per_client_limit_refuses_the_extra_connection_and_health_still_answers(cluster):
    source = "127.0.0.2"  # a client of its own: the nodes' own connections come from 127.0.0.1
    held = []
    try:
        for _ in range(PER_CLIENT):
            s = connect(cluster, 1, source)
            s.sendall(request("GET", "/health"))
            assert read_answer(s)[0] == 200  # admitted, and now held open (keep-alive)
            held.append(s)
        status, headers, body, was_closed = _exchange_from(
            cluster, 1, source, request("GET", "/cluster")
        )
        assert status == 429 and json.loads(body)["error"] == "too_many_connections"
        assert headers["retry-after"] and was_closed
        for path in ("/health", "/ready"):  # probes still see the node
            status, _h, body, _closed = _exchange_from(cluster, 1, source, request("GET", path))
            assert status == 200, (path, body)
        assert serves(cluster, 1)  # other clients are not limited
    finally:
        for s in held:
            s.close()
    wait_for(
        lambda: _exchange_from(cluster, 1, source, request("GET", "/cluster"))[0] == 200,
        10,
        "the limit to free up once the connections closed",
    )


def _exchange_from(c: Cluster, i: int, source: str, data: bytes):
    with connect(c, i, source) as s:
        s.sendall(data)
        status, headers, body = read_answer(s)
        return status, headers, body, closed(s)


def test_many_slow_clients_do_not_take_the_node_down(cluster):
    """The review's attack: connections that each send part of a head and stall. They are
    dropped at the head deadline, and the node serves meanwhile."""
    held = []
    try:
        for k in range(3):
            for _ in range(PER_CLIENT):
                s = connect(cluster, 2, f"127.0.0.{10 + k}")
                s.sendall(b"PUT /kv/door%2Fx HTTP/1.1\r\nHost: door\r\n")  # and nothing more
                held.append(s)
        assert serves(cluster, 2)
        started = time.monotonic()
        for s in held:
            assert closed(s, within=HEAD_S + 5 - (time.monotonic() - started))
    finally:
        for s in held:
            s.close()
    assert serves(cluster, 2)


# -- admin operations, content types, origins -----------------------------------------------------

ADMIN_REQUESTS = [
    (
        "POST",
        "/cluster/members",
        {"Content-Type": "application/json"},
        json.dumps({"id": "n9", "http": "127.0.0.1:1", "raft": "127.0.0.1:2"}).encode(),
    ),
    ("DELETE", "/cluster/members/n3", {}, b""),
    (
        "POST",
        "/import",
        {"Content-Type": "application/json"},
        json.dumps({"name": "export-n1-20260101T000000Z-0123abcd.json"}).encode(),
    ),
    ("POST", "/export", {}, b""),
]


@pytest.mark.parametrize("method,path,headers,body", ADMIN_REQUESTS)
def test_admin_operations_need_the_admin_token(cluster, method, path, headers, body):
    before = store(cluster)
    for auth in (
        None,
        "Bearer wrong",
        f"Bearer {ADMIN_TOKEN}x",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
    ):
        extra = dict(headers)
        if auth is not None:
            extra["Authorization"] = auth
        status, hdrs, answer, _closed = exchange(
            cluster, 0, request(method, path, extra, body), wait_close=False
        )
        assert status == 401, (method, path, auth, answer)
        assert json.loads(answer)["error"] == "unauthorized"
        assert hdrs["www-authenticate"] == 'Bearer realm="kvraft"'
    # the secret-derived peer key is not an admin token either, unless the request is signed
    status, _h, _a, _c = exchange(
        cluster,
        0,
        request(
            method,
            path,
            {**headers, "X-Kvraft-Auth": peer_headers(method, "/elsewhere", body)["X-Kvraft-Auth"]},
            body,
        ),
        wait_close=False,
    )
    assert status == 401
    assert store(cluster) == before


def test_the_admin_token_opens_them(cluster):
    status, _h, body, _c = exchange(
        cluster,
        1,
        request(
            "POST",
            "/cluster/members",
            {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
            b"{}",
        ),
    )
    assert status == 400 and json.loads(body)["error"] == "bad_request"  # past the lock


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_json_posts_need_the_json_content_type(cluster, content_type):
    before = store(cluster)
    posts = [("/kv", {}, json.dumps({"value": "sneaky"}).encode())]
    posts += [
        (p, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, b)
        for m, p, _h, b in ADMIN_REQUESTS
        if m == "POST" and p != "/export"
    ]
    for path, headers, body in posts:
        extra = dict(headers)
        if content_type is not None:
            extra["Content-Type"] = content_type
        status, _h, answer, _c = exchange(
            cluster, 2, request("POST", path, extra, body), wait_close=False
        )
        assert status == 415, (path, content_type, answer)
        assert json.loads(answer)["error"] == "unsupported_media_type"
    assert store(cluster) == before
    ok = exchange(
        cluster,
        2,
        request(
            "POST",
            "/kv",
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps({"value": "fine"}).encode(),
        ),
        wait_close=False,
    )
    assert ok[0] == 201
    key = json.loads(ok[2])["key"]
    assert cluster.delete(0, key).status_code == 200


def test_websocket_origins_are_checked_against_the_allow_list(cluster):
    port = cluster.nodes[0].http.rsplit(":", 1)[1]
    for origin in (
        "http://evil.example",
        f"http://evil.example:{port}",
        "null",
        f"http://127.0.0.1.evil.example:{port}",
        "http://127.0.0.1:1",
        f"ftp://127.0.0.1:{port}",
    ):
        status, _h, body, _c = exchange(cluster, 0, _ws_handshake(origin))
        assert status == 403 and json.loads(body)["error"] == "forbidden_origin", origin
    # a page rebound by DNS keeps its own Host: the Host header does not let it in
    status, _h, _b, _c = exchange(
        cluster,
        0,
        _ws_handshake("http://rebound.example:80").replace(
            b"Host: door", b"Host: rebound.example:80"
        ),
    )
    assert status == 403
    for origin in (
        None,
        f"http://127.0.0.1:{port}",
        f"http://localhost:{port}",
        f"http://LOCALHOST:{port}",
        f"https://127.0.0.1:{port}",
    ):
        with connect(cluster, 0) as s:
            s.sendall(_ws_handshake(origin))
            assert read_answer(s)[0] == 101, origin


# -- peer authentication --------------------------------------------------------------------------


def test_the_stream_upgrade_needs_a_fresh_signature(cluster):
    upgrade = {"Connection": "Upgrade", "Upgrade": "kvraft-peer/1", "Content-Length": "0"}
    for extra in (
        {"X-Kvraft-Secret": "test-cluster-secret"},
        peer_headers("POST", "/peer/stream", secret="another-secret"),
    ):
        status, _h, body, _c = exchange(
            cluster, 0, request("POST", "/peer/stream", {**upgrade, **extra})
        )
        assert status == 403 and json.loads(body)["error"] == "forbidden"
    signed = peer_headers("POST", "/peer/stream")
    with connect(cluster, 0) as s:
        s.sendall(request("POST", "/peer/stream", {**upgrade, **signed}))
        assert read_answer(s)[0] == 101
    status, _h, body, _c = exchange(
        cluster, 0, request("POST", "/peer/stream", {**upgrade, **signed})
    )
    assert status == 403 and "replayed" in json.loads(body)["message"]


def test_no_refusal_logged_a_traceback(cluster):
    """Last in the module: every probe above has run (client timeouts, broken bodies too)."""
    for data in HOSTILE.values():
        with connect(cluster, 1) as s:
            s.sendall(data)
            read_answer(s)
    for node in cluster.nodes:
        with open(node.log_path, errors="replace") as f:
            text = f.read()
        assert "unhandled error" not in text and "Traceback" not in text, node.log_path
