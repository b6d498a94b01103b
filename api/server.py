"""Runs one node: the :class:`~kvraft.node.Node`, its Flask app and the HTTP server, in one
process.

SIGTERM and SIGINT stop it cleanly: the server stops accepting, lets requests in progress finish
(at most a few seconds), and the node closes (sync loops, peer pool, SQLite, Raft). ``kill -9`` of
the process is a crash of the node: there is no other process to leave behind.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading

from kvraft.config import Config
from kvraft.peer import http as peer_http

from .app import create_app
from .httpd import HttpServer

GRACE_S = 5.0


def serve(config: Config) -> None:
    """Block serving one node until SIGINT/SIGTERM."""
    from kvraft.node import Node

    level = getattr(logging, config.log_level.upper(), logging.WARNING)
    logging.basicConfig(level=level, format=f"%(asctime)s {config.id} %(name)s %(message)s")
    host, _, port = config.http.rpartition(":")
    # Bind first: a port in use is an error before Raft starts talking to the cluster.
    tls = None
    if config.tls_cert:
        tls = server_tls(config)
        peer_http.use_tls(client_tls(config))  # peers speak HTTPS to each other too
    try:
        server = HttpServer(
            None,
            host.strip("[]"),
            int(port),
            server_name=f"kvraft/{config.id}",
            max_connections=config.max_connections,
            max_client_connections=config.max_client_connections,
            idle_timeout=config.idle_timeout,
            head_timeout=config.head_timeout,
            body_timeout=config.body_timeout,
            tls=tls,
        )
    except OSError as exc:
        why = exc.strerror or exc
        raise SystemExit(f"kvraft serve: cannot listen on {config.http}: {why}") from None
    node = Node(config)
    server.app = create_app(node, node, node)
    stopping = threading.Event()

    def on_signal(_signum, _frame) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for requests in progress: not on the thread that accepts
            threading.Thread(target=server.shutdown, args=(GRACE_S,), daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        server.serve_forever()
        server.shutdown(GRACE_S)
    finally:
        node.close()


def server_tls(config: Config) -> ssl.SSLContext:
    """The HTTPS context of the node's HTTP port (TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"kvraft serve: cannot load tls_cert/tls_key: {exc}") from None
    return ctx


def client_tls(config: Config) -> ssl.SSLContext:
    """The context peers are reached with: verified against ``tls_ca`` (else the system's)."""
    ctx = ssl.create_default_context(cafile=config.tls_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
