"""What parsing one request head costs with each maintained parser (the figures that chose
httptools for api/http1.py): a typical 6-field PUT, CPU time per request.

    python -m bench.parsers [--n 50000]

- httptools (llhttp) alone;
- api.http1.HeadReader: llhttp plus the server's own RFC 9112 checks and the environ keys;
- h11, a new connection per request, and h11's keep-alive cycle with a response.
"""

from __future__ import annotations

import argparse
import time

import h11
import httptools

from api.http1 import HeadReader

HEAD = (
    b"PUT /kv/bench%2F000123 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\nUser-Agent: loadgen\r\n"
    b"Accept: */*\r\nContent-Length: 100\r\nContent-Type: application/octet-stream\r\n\r\n"
)
REQUEST = HEAD + b"x" * 100


class _Sink:
    def __init__(self) -> None:
        self.headers: list = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        pass


def per_request(fn, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50000)
    n = parser.parse_args().n
    sink = _Sink()
    reused = httptools.HttpRequestParser(sink)

    def httptools_only() -> None:
        sink.headers = []
        reused.feed_data(REQUEST)

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

    for name, fn in (
        ("httptools (llhttp) feed", httptools_only),
        ("api.http1.HeadReader feed + head()", head_reader),
        ("h11, new connection", h11_new),
        ("h11, keep-alive cycle with a response", h11_keep_alive),
    ):
        print(f"{name:40} {per_request(fn, n):6.1f} us CPU per request")


if __name__ == "__main__":
    main()
