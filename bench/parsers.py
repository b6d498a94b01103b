"""What parsing one request head costs with each maintained parser (the figures that chose
httptools for api/http1.py), and what one request costs through the server's connection loop.

    python -m bench.parsers [--n 50000]                # this checkout
    python -m bench.parsers --repo /tmp/kvraft-before  # the api package of another checkout

CPU time per request, best of ``--reps`` runs (the machine is shared: the best run is the one
least disturbed):

- httptools (llhttp) alone, with and without Python callbacks for the fields;
- api.http1.HeadReader: llhttp plus the server's own RFC 9112 checks and the environ keys
  (skipped for a checkout without api/http1.py, such as the hand-written parser before it);
- h11, a new connection per request, and h11's keep-alive cycle with a response;
- api.httpd, one request through ``_Connection._one`` over loopback TCP in one thread: the
  request is sent first, then the server reads, parses, calls a WSGI app that reads the body
  and answers 100 bytes, and the client reads the answer (the client's share is the same for
  every checkout).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

HEAD = (
    b"PUT /kv/bench%2F000123 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\nUser-Agent: loadgen\r\n"
    b"Accept: */*\r\nContent-Length: 100\r\nContent-Type: application/octet-stream\r\n\r\n"
)
REQUEST = HEAD + b"x" * 100
BODY = b"x" * 100
# what bench/loadgen.py sends
LOADGEN = {
    "PUT": b"PUT /kv/bench-000123 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n" + BODY,
    "GET": b"GET /kv/bench-000123 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n\r\n",
}


class _Sink:
    def __init__(self) -> None:
        self.headers: list = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        pass


class _Quiet:  # llhttp checks everything, calls back for nothing but the end of the head
    on_url = on_header = on_body = on_message_begin = on_message_complete = None
    on_chunk_header = on_chunk_complete = None

    def on_headers_complete(self) -> None:
        pass


def per_request(fn, n: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


def _app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [BODY]


def server_loop(httpd, request: bytes):
    """One request through the server's connection loop, as a function to time."""
    server = httpd.HttpServer(_app, "127.0.0.1", 0)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    sock, addr = listener.accept()
    listener.close()
    server.listener.close()
    for s in (sock, client):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = httpd._Connection(server, sock, addr)
    old = not hasattr(type(conn), "rfile")  # the hand-written parser reads through a file
    if old:
        conn.rfile = sock.makefile("rb", buffering=65536)

    def one() -> None:
        client.sendall(request)
        if old:
            sock.settimeout(server.idle_timeout)  # what its run() does before each request
        conn._one()
        client.recv(65536)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--repo", type=Path, help="measure this checkout's api package")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    if args.repo is not None:  # found before this checkout's packages (api is not imported yet)
        repo = args.repo.resolve()
        sys.path.insert(0, str(repo))
    import h11
    import httptools

    from api import httpd

    HeadReader = None
    if (repo / "api" / "http1.py").exists():  # (an editable install would find ours)
        from api.http1 import HeadReader
    n, reps = args.n, args.reps
    sink = _Sink()
    reused = httptools.HttpRequestParser(sink)
    quiet = _Quiet()

    def httptools_only() -> None:
        sink.headers = []
        reused.feed_data(REQUEST)

    def httptools_quiet() -> None:
        httptools.HttpRequestParser(quiet).feed_data(HEAD)

    def head_reader() -> None:
        reader = HeadReader()
        reader.feed(HEAD)
        reader.head()

    def h11_new() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        conn.next_event()
        conn.next_event()
        conn.next_event()

    cycle = h11.Connection(h11.SERVER)

    def h11_keep_alive() -> None:
        cycle.receive_data(REQUEST)
        cycle.next_event()
        cycle.next_event()
        cycle.next_event()
        cycle.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
        cycle.send(h11.EndOfMessage())
        cycle.start_next_cycle()

    rows = [
        ("httptools (llhttp) feed, field callbacks", httptools_only),
        ("httptools, new parser, no field callbacks", httptools_quiet),
    ]
    if HeadReader is not None:
        rows.append(("api.http1.HeadReader feed + head()", head_reader))
    rows += [
        ("h11, new connection", h11_new),
        ("h11, keep-alive cycle with a response", h11_keep_alive),
    ]
    print(f"api.httpd from {httpd.__file__}")
    for name, fn in rows:
        print(f"{name:48} {per_request(fn, n, reps):6.1f} us CPU per request")
    for method, request in LOADGEN.items():
        fn = server_loop(httpd, request)
        label = f"api.httpd one {method} (loadgen's head), both ends"
        print(f"{label:48} {per_request(fn, n // 4, reps):6.1f} us CPU per request")


if __name__ == "__main__":
    main()
