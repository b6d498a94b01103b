"""WebSocket endpoints (``/report``, ``/watch``), ``POST /export`` and ``POST /import``.

This module only translates: messages and requests in, calls on the ports
:class:`~api.ports.ReportJobs` (reports, exports, imports) and :class:`~api.ports.ChangeFeed`
(the watch) out, errors to JSON. (The composition root builds the feed and registers the
change-feed peer messages it answers for other nodes.) On a socket an error is a message
``{"type": "error", "error": code, "message": text}`` and the socket stays open, except for an
oversized message (closed with 1009 "Message is too big") and a watcher that fell too far behind.

WebSocket rules: the bearer token is checked by the app's guard like any request; a browser
``Origin`` must be in the allow-list (``allowed_origins``, default: this node's own addresses
and their localhost forms; no Origin, a non-browser client, is allowed), else 403
``forbidden_origin`` before the upgrade; the handshake itself is checked before flask-sock sees
it (:func:`handshake_error`: 426 without a websocket upgrade or with a version other than 13,
400 for a bad ``Sec-WebSocket-Key``). Only then is the HTTP server's request deadline lifted for
the connection (the socket's lifetime is the websocket's: pings detect a dead client).
Incoming messages are limited to :data:`MAX_MESSAGE` bytes. flask-sock holds one server thread
per open socket (the HTTP server gives every connection its own thread).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import queue
import threading
from collections.abc import Callable

from flask import Flask, Response, jsonify, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from wsproto.events import TextMessage

from kvraft.errors import BadRequest
from kvraft.keys import MAX_KEY_BYTES, check_level
from kvraft.reports import check_export_name, parse_report_request

from . import access
from .errors import describe
from .ports import ChangeFeed, Cluster, ReportJobs, WatchStream

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024  # largest message a client may send on a socket
PING_INTERVAL = 25.0  # seconds; a client that misses a pong is disconnected
FRAGMENT_CHARS = 256 * 1024  # a report reply is sent as one message in fragments of this size
WS_PATHS = ("/report", "/watch")
READY_TIMEOUT = 5.0  # /watch waits this long to be subscribed on every live peer


def register(
    app: Flask,
    node: Cluster,
    reports: ReportJobs,
    feed: ChangeFeed,
    read_body: Callable[[int], bytes],
) -> None:
    """Add the websockets (``/report`` over ``reports``, ``/watch`` over ``feed``) and
    export/import to ``app``; ``read_body(limit)`` reads the request body (the guard may have
    read it already, to check a signature)."""
    config = node.config
    allowed = config.allowed_origins or access.default_origins((config.http, config.advertise))
    app.config["SOCK_SERVER_OPTIONS"] = {
        "max_message_size": MAX_MESSAGE,
        "ping_interval": PING_INTERVAL,
    }
    sock = Sock(app)

    @app.before_request
    def _ws_guard():
        if request.path not in WS_PATHS or request.method not in ("GET", "HEAD"):
            return None  # another method: the route's 405 with Allow
        origin = request.headers.get("Origin")
        if not access.origin_allowed(origin, allowed):
            return _error(
                403,
                "forbidden_origin",
                f"websocket Origin {origin!r} is not allowed (KVRAFT_ALLOWED_ORIGINS)",
            )
        refused = handshake_error(request.method, request.headers)
        if refused is not None:
            resp = _error(*refused)
            if refused[0] == 426:
                resp.headers["Upgrade"] = "websocket"
                resp.headers["Sec-WebSocket-Version"] = "13"
            return resp
        if len(request.args.get("prefix", "").encode("utf-8", "replace")) > MAX_KEY_BYTES:
            return _error(400, "bad_request", f"prefix is at most {MAX_KEY_BYTES} bytes")
        conn = request.environ.get("kvraft.connection")
        if conn is not None:
            conn.upgraded()  # a valid handshake: the socket now lives as long as the websocket
        return None

    @sock.route("/report")
    def report(ws) -> None:
        while True:
            data = ws.receive()
            if data is None:
                continue
            try:
                prefix = parse_report_request(data)
                with reports.report(prefix) as f:
                    send_text_file(ws, f)
            except (ConnectionClosed, OSError):
                return  # the client went away
            except Exception as exc:  # an error, a bug too, must not end the client's socket
                ws.send(_ws_error(*_described(exc, "report failed")))

    @sock.route("/watch")
    def watch(ws) -> None:
        serve_watch(ws, feed, request.args.get("prefix", ""))

    @app.post("/export")
    def export():
        return _run(reports.export, created=True)

    @app.post("/import")
    def import_():
        w = check_level(request.args.get("w"), "quorum", "w")
        try:
            body = json.loads(read_body(64 * 1024) or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest('body must be JSON {"name": "<export name>"}') from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise BadRequest('body must be JSON {"name": "<export name>"}')
        name = check_export_name(body["name"])
        return _run(lambda progress=None: reports.import_(name, w, progress))


def handshake_error(method: str, headers) -> tuple[int, str, str] | None:
    """Why a request to a websocket route is not a valid RFC 6455 opening handshake, as
    (status, code, message), or None. Checked before simple-websocket sees it (it answers a
    bad handshake with an exception, which would be a 500)."""
    upgrade = {t.strip().lower() for t in headers.get("Upgrade", "").split(",")}
    connection = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    if method != "GET" or "websocket" not in upgrade or "upgrade" not in connection:
        return (
            426,
            "upgrade_required",
            "this is a websocket endpoint: GET with Upgrade: websocket and Connection: Upgrade",
        )
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return 426, "upgrade_required", "Sec-WebSocket-Version must be 13"
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        ok = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        return 400, "bad_request", "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def send_text_file(ws, f, chunk: int = FRAGMENT_CHARS) -> None:
    """Send the rest of text file ``f`` as ONE text message, in fragments of ``chunk``
    characters, so a large report is never in memory whole.

    simple-websocket's ``send()`` takes only a whole message, so this frames through its wsproto
    connection (``ws.ws``) and writes to its socket (``ws.sock``) directly.
    """
    data = f.read(chunk)
    while True:
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        following = f.read(chunk)
        ws.sock.sendall(ws.ws.send(TextMessage(data=data, message_finished=not following)))
        if not following:
            return
        data = following


def serve_watch(ws, feed: ChangeFeed, prefix: str) -> None:
    """Stream ``feed`` events under ``prefix`` to ``ws`` until it closes.

    First message: ``{"type": "ready", "prefix", "peers", "missing"}`` once the feed is
    subscribed on every live peer (``missing`` lists those it is not, yet).
    """
    watcher = feed.subscribe(prefix)
    try:
        _watch_loop(ws, feed, watcher, prefix)
    except OSError:
        pass  # the client went away mid-send
    finally:
        watcher.close()


def _watch_loop(ws, feed: ChangeFeed, watcher: WatchStream, prefix: str) -> None:
    missing = feed.wait_connected(READY_TIMEOUT)
    ws.send(
        json.dumps({"type": "ready", "prefix": prefix, "peers": feed.peers(), "missing": missing})
    )
    while ws.connected:
        event = watcher.get(timeout=0.5)
        if event is not None:
            ws.send(json.dumps(event.to_json()))
        elif watcher.lagged:
            ws.send(
                _ws_error(
                    "lagged",
                    "this watcher fell too far behind and was cut off; reconnect to watch again",
                )
            )
            ws.close(1011, "lagged")
            return
        while ws.receive(timeout=0) is not None:
            ws.send(
                _ws_error(
                    "bad_request",
                    "/watch takes no messages; the prefix is set by ?prefix= when connecting",
                )
            )


def _run(job: Callable[..., dict], created: bool = False):
    """Run an export/import; with ``?progress=1`` stream NDJSON progress lines, then the result
    (``{"type": "done", ...}``) or the error (``{"type": "error", ...}``) as the last line."""
    if request.args.get("progress") in (None, "", "0"):
        return jsonify(job()), (201 if created else 200)
    lines: queue.Queue[tuple[str, dict]] = queue.Queue()

    def work() -> None:
        try:
            lines.put(("done", job(lambda p: lines.put(("progress", p)))))
        except Exception as exc:  # reported on the stream; the status line is already sent
            code, message = _described(exc, "export/import failed")
            lines.put(("error", {"error": code, "message": message}))

    threading.Thread(target=work, name="export-import", daemon=True).start()

    def stream():
        while True:
            kind, body = lines.get()
            yield json.dumps({"type": kind, **body}) + "\n"
            if kind != "progress":
                return

    return Response(stream(), 200, mimetype="application/x-ndjson")


def _described(exc: Exception, what: str) -> tuple[str, str]:
    """``(code, message)`` of an error by the one table (:mod:`api.errors`); a bug is logged."""
    _status, code, message = describe(exc)
    if code == "internal":
        log.error(what, exc_info=exc)
    return code, message


def _ws_error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "error": code, "message": message})


def _error(status: int, code: str, message: str):
    resp = jsonify({"error": code, "message": message})
    resp.status_code = status
    return resp
