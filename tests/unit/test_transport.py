"""The peer HTTP transport (kvraft/peer/http.py) against a scripted server on 127.0.0.1: what a
caller is told when a request certainly did not arrive, and when it may have."""

from __future__ import annotations

import socket
import threading

import pytest

from kvraft.peer.http import HttpTransport as PeerClient
from kvraft.peer.http import PeerConnectError, PeerError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


class OneShot:
    """Answers the first request on a connection, then takes the second without answering,
    closes everything and stops listening (a peer that crashed after acting on it)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = "{}:{}".format(*self.listener.getsockname())
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.requests.append(_read_request(conn))
            conn.sendall(OK)
            self.requests.append(_read_request(conn))
            self.listener.close()  # a second try is refused


def test_a_lost_answer_is_never_reported_as_not_delivered():
    server = OneShot()
    client = PeerClient("secret", timeout=5.0)
    try:
        assert client.request(server.addr, "GET", "/first").body == b"ok"
        with pytest.raises(PeerError) as err:  # idempotent: tried again, found nobody
            client.request(server.addr, "POST", "/second", b"payload")
        assert not isinstance(err.value, PeerConnectError)  # it may have been applied
        server.thread.join(5)
        assert server.requests[1].startswith(b"POST /second HTTP/1.1")
    finally:
        client.close()


def test_nothing_listening_is_a_connect_error():
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = PeerClient("secret", timeout=2.0)
    with pytest.raises(PeerConnectError):
        client.request(f"127.0.0.1:{port}", "GET", "/x")
