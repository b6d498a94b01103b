"""The node's HTTP server (api/httpd.py) against real sockets on 127.0.0.1: keep-alive, bodies
(length, chunked, 100-continue, unread), streamed answers, HEAD, limits, websockets, shutdown."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from flask import Flask, Response, request
from flask_sock import Sock
from simple_websocket import Client as WsClient

from api.httpd import MAX_HEADERS, MAX_LINE, HttpServer


def _app() -> Flask:
    app = Flask("httpd-test")
    sock = Sock(app)
    app.extensions["gate"] = threading.Event()
    app.extensions["entered"] = threading.Event()

    @app.route("/echo", methods=["GET", "PUT", "POST", "HEAD"])
    def echo():
        data = request.get_data()
        return Response(data, headers={"X-Len": str(len(data)), "X-Path": request.path})

    @app.get("/health")
    @app.get("/ready")
    def health():
        return {"status": "ok"}

    @app.put("/refuse")
    def refuse():  # answers without reading the body
        return {"error": "too_large"}, 413

    @app.get("/stream")
    def stream():
        return Response((f"part{i};".encode() for i in range(5)), mimetype="text/plain")

    @app.get("/slow")
    def slow():
        app.extensions["entered"].set()
        app.extensions["gate"].wait(5)
        return "done"

    @app.before_request
    def _upgrade():  # what api/ws.py does once the handshake is valid
        if request.path == "/ws" and request.headers.get("Sec-WebSocket-Key"):
            request.environ["kvraft.connection"].upgraded()

    @sock.route("/ws")
    def ws(s):
        while True:
            s.send(s.receive(timeout=5))

    return app


@pytest.fixture
def server():
    srv = HttpServer(_app(), "127.0.0.1", 0, max_connections=64)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown(1.0)
    t.join(5)
    assert not t.is_alive()


def _raw(srv: HttpServer, data: bytes, read_until_close: bool = True) -> bytes:
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    ports = set()
    for i in range(5):
        conn.request("PUT", "/echo", body=b"v%d" % i)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"v%d" % i)
        ports.add(conn.sock.getsockname()[1])
    assert len(ports) == 1
    assert resp.getheader("Date") and resp.getheader("Server") == "kvraft"
    conn.close()


def test_percent_encoded_path_reaches_the_app_decoded(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("GET", "/ech%6F?x=1")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("X-Path") == "/echo"
    conn.close()


def test_chunked_request_body_is_decoded(server):
    raw = _raw(
        server,
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    )
    assert _status(raw) == 200 and raw.endswith(b"hello world")


def test_expect_100_continue_waits_for_the_go(server):
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"abc")
        resp = s.recv(65536)
    assert _status(resp) == 200 and resp.endswith(b"abc")


def test_an_unread_body_is_skipped_and_the_connection_goes_on(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("PUT", "/refuse", body=b"x" * (3 << 20))
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read()) == {"error": "too_large"}
    conn.request("PUT", "/echo", body=b"next")  # same connection, in step again
    assert conn.getresponse().read() == b"next"
    conn.close()


def test_streamed_answer_is_chunked_and_head_has_no_body(server):
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.read() == b"part0;part1;part2;part3;part4;"
    conn.request("HEAD", "/echo")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    conn.request("GET", "/echo")  # the HEAD left nothing behind on the connection
    assert conn.getresponse().status == 200
    conn.close()


def test_http10_closes_unless_asked_to_keep_alive(server):
    raw = _raw(server, b"GET /echo HTTP/1.0\r\n\r\n")  # returns only because the server closes
    assert _status(raw) == 200 and b"Connection: close" in raw
    with socket.create_connection(server.address, timeout=5) as s:
        for _ in range(2):  # kept open, and said so, when the 1.0 client asks
            s.sendall(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head = s.recv(65536)
            assert _status(head) == 200 and b"Connection: keep-alive" in head


def test_an_exception_escaping_the_wsgi_app_is_a_500_and_the_server_goes_on():
    def broken(environ, start_response):
        raise RuntimeError("a bug outside Flask")

    srv = HttpServer(broken, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        for _ in range(2):
            raw = _raw(srv, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(raw) == 500 and b'"error": "internal"' in raw
    finally:
        srv.shutdown(1.0)
        t.join(5)


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX_Bad: 1\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
        (
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n",
            400,
        ),
        (b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400),
        (b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),  # RFC 9112 6.3
        (b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ],
)
def test_malformed_requests_get_a_json_error_and_a_closed_connection(server, request_bytes, status):
    raw = _raw(server, request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert _status(raw) == status, raw[:200]
    assert b"Connection: close" in head
    assert set(json.loads(body)) == {"error", "message"}


def test_websocket_echo_then_plain_http_still_works(server):
    ws = WsClient.connect(f"ws://127.0.0.1:{server.address[1]}/ws")
    try:
        for msg in ("one", b"\x00two"):
            ws.send(msg)
            assert ws.receive(timeout=5) == msg
    finally:
        ws.close()
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    conn.request("PUT", "/echo", body=b"after")
    assert conn.getresponse().read() == b"after"
    conn.close()


def test_an_idle_websocket_outlives_the_request_read_timeout():
    srv = HttpServer(_app(), "127.0.0.1", 0, read_timeout=0.3)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    ws = WsClient.connect(f"ws://127.0.0.1:{srv.address[1]}/ws")
    try:
        time.sleep(1.0)  # idle for longer than the server's read timeout: the point of the test
        ws.send("still here")
        assert ws.receive(timeout=5) == "still here"
    finally:
        ws.close()
        srv.shutdown(1.0)
        t.join(5)


def test_over_max_connections_is_503_and_others_are_served():
    srv = HttpServer(_app(), "127.0.0.1", 0, max_connections=2)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    held = [socket.create_connection(srv.address, timeout=5) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while srv.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        raw = _raw(srv, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(raw) == 503
        held[0].sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(held[0].recv(65536)) == 200
    finally:
        for s in held:
            s.close()
        srv.shutdown(1.0)
        t.join(5)


def test_over_the_limit_health_and_ready_answer_and_refusals_use_few_threads():
    srv = HttpServer(_app(), "127.0.0.1", 0, max_connections=2)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    held = [socket.create_connection(srv.address, timeout=5) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while srv.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for path in (b"/health", b"/ready"):
            raw = _raw(srv, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(raw) == 200 and b'"status":"ok"' in raw.replace(b" ", b"")
        threads = threading.active_count()
        flood = [socket.create_connection(srv.address, timeout=5) for _ in range(100)]
        try:  # 100 silent connections over the limit: a few refusal threads, not 100
            assert threading.active_count() <= threads + 4
        finally:
            for s in flood:
                s.close()
        deadline = time.monotonic() + 5  # the refusal queue drains: refusals are answered again
        status = None
        while status != 503 and time.monotonic() < deadline:
            try:
                raw = _raw(srv, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            except ConnectionResetError:
                continue  # closed at once while the refusal queue was full
            status = _status(raw) if raw else None
        assert status == 503
        held[0].sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(held[0].recv(65536)) == 200  # the admitted clients never noticed
    finally:
        for s in held:
            s.close()
        srv.shutdown(1.0)
        t.join(5)


def test_shutdown_closes_idle_connections_and_finishes_requests_in_progress(server):
    idle = http.client.HTTPConnection(*server.address, timeout=5)
    idle.request("GET", "/echo")
    idle.getresponse().read()
    busy = http.client.HTTPConnection(*server.address, timeout=5)
    busy.request("GET", "/slow")
    assert server.app.extensions["entered"].wait(5)
    done = threading.Event()
    threading.Thread(target=lambda: (server.shutdown(5.0), done.set()), daemon=True).start()
    deadline = time.monotonic() + 5  # the idle one goes at once; the busy one is still served
    while server.connections > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == 1 and not done.is_set()
    server.app.extensions["gate"].set()
    resp = busy.getresponse()
    assert (resp.status, resp.read()) == (200, b"done")
    assert resp.getheader("Connection") == "close"
    assert done.wait(5)
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=1).close()
    busy.close()
    idle.close()
