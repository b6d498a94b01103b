"""``kvraft serve`` (kvraft_cmd/serve.py, the composition root): the HTTP port is bound before
the node is built, so a port in use is an error before Raft starts; SIGTERM stops the node
cleanly: it stops accepting, the request in progress is answered and kept, the process exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from tests.harness.cluster import ROOT, SECRET, Cluster, free_ports, wait_for


def test_a_port_in_use_is_an_error_before_the_node_is_built(tmp_path):
    http, raft = free_ports(2)
    data = tmp_path / "n1"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", http))
        taken.listen()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "kvraft",
                "serve",
                "--id",
                "n1",
                "--http",
                f"127.0.0.1:{http}",
                "--raft",
                f"127.0.0.1:{raft}",
                "--data-dir",
                str(data),
                "--replication-factor",
                "1",
            ],
            env={**os.environ, "KVRAFT_SECRET": SECRET},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"kvraft serve: cannot listen on 127.0.0.1:{http}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not data.exists()  # no store opened, no Raft journal: the node was never built


def _refused(http: str) -> bool:
    host, _, port = http.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except OSError:
        return True


def test_sigterm_answers_the_request_in_progress_then_exits_cleanly(tmp_path):
    with Cluster(str(tmp_path), n=1, replication_factor=1) as c:
        c.wait_ready()
        node = c.nodes[0]
        host, _, port = node.http.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            # a PUT whose body the node is waiting for (its "100 Continue" says it has begun
            # reading it): a request in progress when the signal comes
            s.sendall(
                b"PUT /kv/term HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            assert s.recv(65536).startswith(b"HTTP/1.1 100 Continue")
            node.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(node.http), 10, "the node to stop accepting")
            s.sendall(b"helloworld")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer[:200]  # created
        assert node.proc.wait(timeout=20) == 0
        with open(node.log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        assert "Traceback" not in log, log[-2000:]
        c.start(0)  # the write was committed before the store closed
        c.wait_ready()
        got = c.get(0, "term")
        assert got.status_code == 200 and got.content == b"helloworld"
