"""The dashboard page at ``/``, its data feed ``/stats``, and the OpenAPI document.

Routes added by :func:`register`:

- ``GET /`` - one self-contained HTML page (script and style inlined from ``api/static/``, no
  external resources). It holds **no cluster data**: the browser fetches ``/cluster`` and
  ``/stats`` every second and draws them. When a fetch answers 401 (the node runs with
  ``KVRAFT_TOKEN``), the page asks for the token and keeps it in ``sessionStorage`` (gone when
  the tab closes), sending it as ``Authorization: Bearer``. So the page itself may be served
  without the token: :data:`PUBLIC_PATHS` lists it for the app's guard.
- ``GET /stats`` - operation counters (reads and writes coordinated) of every member, asked in
  parallel with a short timeout; the page derives operations per second from two answers.
- the peer message :class:`kvraft.peer.messages.Stats` (this node's counters, signed like every
  peer message) is registered on the node's peer dispatcher.
- ``GET /openapi.json`` - :func:`api.openapi.document`.

This module only translates; it never changes the store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flask import Flask, Response, jsonify

from kvraft.peer import JsonAnswer, PeerError, PeerStatus, Stats

from . import openapi
from .ports import Cluster, PeerCalls, PeerDispatcher

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PUBLIC_PATHS = ("/",)  # hold no data: may be served without the bearer token
STATS_TIMEOUT = 0.5  # seconds for a peer's counters; a slow node shows as not answering


def build_page(static: Path = STATIC) -> tuple[bytes, str]:
    """The dashboard HTML with its script and style inlined, and the Content-Security-Policy
    that allows exactly those two (by hash) and requests to this origin, nothing else."""
    html = (static / "dashboard.html").read_text("utf-8")
    script = (static / "dashboard.js").read_text("utf-8")
    style = (static / "dashboard.css").read_text("utf-8")
    page = html.replace("/*STYLE*/", style).replace("/*SCRIPT*/", script)
    csp = (
        f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page.encode("utf-8"), csp


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def own_stats(node: Cluster) -> dict:
    """This node's counters for the dashboard (monotonic while the process lives)."""
    figures = node.metrics()
    reads, writes = figures.get("reads", 0.0), figures.get("writes", 0.0)
    return {
        "ok": True,
        "time": time.time(),
        "started_at": node.started_at,
        "reads": reads,
        "writes": writes,
        "ops": reads + writes,
    }


def register(app: Flask, node: Cluster, peers: PeerCalls, peer_server: PeerDispatcher) -> None:
    """Add the dashboard, ``/stats`` and ``/openapi.json`` to ``app``, and the answer to the
    Stats peer message to ``peer_server``; ``/stats`` asks the members through ``peers``."""
    try:
        page, csp = build_page()
    except OSError as exc:  # a packaging mistake must not stop the node; / says what is wrong
        log.error("dashboard files missing in %s: %s", STATIC, exc)
        page, csp = None, ""
    doc = json.dumps(openapi.document(node.config.max_value_bytes), indent=1).encode()
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ui-stats")

    @app.get("/")
    def dashboard():
        if page is None:
            resp = jsonify(
                {"error": "unavailable", "message": f"dashboard files are not installed ({STATIC})"}
            )
            resp.status_code = 503
            return resp
        return Response(
            page,
            200,
            mimetype="text/html",
            headers={
                "Content-Security-Policy": csp,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    @app.get("/openapi.json")
    def openapi_json():
        return Response(doc, 200, mimetype="application/json")

    @app.get("/stats")
    def stats():
        members = node.members()
        futures = {
            n: pool.submit(_peer_stats, peers, n)
            for n in members
            if n != node.id and node.is_alive(n)
        }
        out = {n: {"ok": False, "error": "down"} for n in members}
        out[node.id] = own_stats(node)
        for n, fut in futures.items():
            out[n] = fut.result()
        return jsonify({"node": node.id, "time": time.time(), "nodes": out})

    peer_server.register(Stats, lambda _msg: JsonAnswer(own_stats(node)))


def _peer_stats(peers: PeerCalls, node_id: str) -> dict:
    try:
        return peers.stats(node_id, timeout=STATS_TIMEOUT)
    except PeerStatus as exc:
        return {"ok": False, "error": f"HTTP {exc.status}"}
    except (PeerError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
