"""``kvraft serve``: one node in one process, and the wiring of its parts to the web layer.

:func:`serve` builds the :class:`~kvraft.node.Node`, its Flask app (:func:`build_app`, over the
ports of :mod:`api.ports`) and the HTTP server (:class:`api.httpd.HttpServer`), and handles the
signals. The HTTP port is bound before the node is built, so a port in use is an error before
Raft starts talking to the cluster.

SIGTERM and SIGINT stop it cleanly: the server stops accepting, lets requests in progress finish
(at most a few seconds), and the node closes (sync loops, peer pool, SQLite, Raft). ``kill -9`` of
the process is a crash of the node: there is no other process to leave behind.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from types import FrameType

from flask import Flask

from api.app import create_app
from api.httpd import HttpServer
from kvraft import collector
from kvraft.config import Config
from kvraft.node import Node
from kvraft.peer import http as peer_http
from kvraft.reports import Reports
from kvraft.watch import ClusterFeed, HttpPeerFeed, PeerSubscriptions
from kvraft.watch import serve as serve_change_feeds

GRACE_S = 5.0
MAX_POLL_WAIT = 5.0  # longest wait a peer's change-feed poll may ask for


def build_app(node: Node) -> Flask:
    """The Flask app of ``node`` (the fast path in front): the node is the key-value and
    cluster ports, its peer server and peer client the peer ports; the reports and the
    cluster-wide change feed are built here over it, and the change-feed peer messages other
    nodes' feeds poll are registered on its peer server (before the app takes the peer routes).
    Starts no thread (the feed starts its own with its first watcher)."""
    subs = PeerSubscriptions(node.changes)
    serve_change_feeds(node.peer_server, subs, MAX_POLL_WAIT)
    feed = ClusterFeed(
        node.id,
        node.changes,
        HttpPeerFeed(node.peers, node.config.peer_timeout),
        lambda: node.members(),
        node.is_alive,
    )
    return create_app(node, node, node.peer_server, node.peers, Reports(node), feed)


def serve(config: Config) -> None:
    """Block serving one node until SIGINT/SIGTERM. SystemExit if the HTTP port cannot be bound
    or the TLS files cannot be loaded (before the node starts)."""
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
    pauses = collector.Pauses().install()
    node = Node(config, gc_pauses=pauses)
    server.app = build_app(node)
    collector.settle()  # the start-up's objects: out of every later full collection's walk
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
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
    """The HTTPS context of the node's HTTP port (TLS 1.2+); SystemExit if the files do not
    load."""
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
