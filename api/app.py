"""The HTTP layer: translates requests into calls on the Protocols of :mod:`api.ports`.

``create_app(kv, cluster, peer_server, peer_calls, jobs, watch)`` builds the Flask app over the
ports of :mod:`api.ports`: the public API (``/kv``, ``/cluster``, ``/health``, ``/ready``,
``/metrics``) over ``kv`` and ``cluster``; every peer message (``/peer/*``) goes to the node's
one dispatcher (``peer_server``), which checks its signature; the leader's forwards and the
dashboard's counters go through ``peer_calls``; reports, exports and imports are ``jobs``, the
watch is ``watch``. Who may call what is decided in :mod:`api.access`; ``GET``/``PUT
/kv/<key>`` are the handler of :mod:`api.kv`, shared with the fast path; errors are answered by
the one table of :mod:`api.errors`. Every body of an error is JSON ``{"error": code, "message":
text}`` and every response carries ``X-Kvraft-Node``.
No store logic lives here.
"""

from __future__ import annotations

import json
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from kvraft import peerauth
from kvraft.core.balance import Balancer
from kvraft.errors import BadRequest, TooLarge
from kvraft.keys import check_key, check_level
from kvraft.peer.messages import VERSION_HEADER

from . import access, balance, kv, openapi, ui, ws
from .fastpath import PEER_ROUTES, FastPath
from .metrics import Metrics
from .ports import ChangeFeed, Cluster, KeyValue, PeerCalls, PeerDispatcher, ReportJobs

PEER_MAX_BODY = 256 << 20


def create_app(
    kv_store: KeyValue,
    cluster: Cluster,
    peer_server: PeerDispatcher,
    peer_calls: PeerCalls,
    jobs: ReportJobs,
    watch: ChangeFeed,
) -> Flask:
    """The Flask app of one node, with the fast path in front of it (``app.wsgi_app``).

    ``kv_store`` serves the key operations, ``cluster`` the cluster view and operations,
    ``peer_server`` every ``/peer/*`` request, ``peer_calls`` the forwards and the dashboard's
    peer counters, ``jobs`` reports, exports and imports, ``watch`` the ``/watch`` socket
    (:mod:`api.ports`). Every peer message handler must be registered on ``peer_server``
    before this is called (its routes become rules here); the dashboard's ``Stats`` answer is
    registered here. Builds no thread and does no IO."""
    config = cluster.config
    app = Flask("kvraft", static_folder=None)
    app.url_map.converters["key"] = KeyConverter
    app.url_map.merge_slashes = False  # "/kv//x" is the key "/x", not a redirect to "x"
    app.config["MAX_CONTENT_LENGTH"] = config.max_value_bytes  # routes may raise it
    metrics = Metrics(cluster)
    policy = access.Policy(config.token, config.admin_token)
    keys = kv.KeyHandler(kv_store, config.max_value_bytes)

    @app.before_request
    def _guard():
        g.started = time.perf_counter()
        path, method = request.path, request.method
        peer_ok = False
        if path.startswith("/peer/"):
            return None  # the peer dispatcher checks the signature (once) and answers
        if access.is_admin(method, path) and request.headers.get(peerauth.HEADER):
            # a node acting for the cluster (a forward): the proof covers the body
            body = (
                _body(PEER_MAX_BODY)
                if (request.content_length or request.headers.get("Transfer-Encoding"))
                else b""
            )
            why = peer_server.verify(
                request.headers.get(peerauth.HEADER), method, raw_target(request.environ), body
            )
            peer_ok = not why
        refusal = policy.check(
            method, path, request.headers.get("Authorization"), peer_ok, ui.PUBLIC_PATHS
        ) or access.check_json(method, path, request.headers.get("Content-Type"))
        if refusal is not None:
            resp = _json_error(refusal.status, refusal.code, refusal.message)
            resp.headers.extend(refusal.headers)
            return resp
        return None

    # query parameters the document gives an enum or a range, checked before the leader
    # balances (a redirect must not send a request the chosen node would refuse)
    query_checks = openapi.query_checks(openapi.document(config.max_value_bytes))

    @app.before_request
    def _check_query():
        if request.url_rule is None:
            return None
        method = "GET" if request.method == "HEAD" else request.method
        checks = query_checks.get((openapi.path_of(request.url_rule.rule), method), {})
        for name, check in checks.items():
            for value in request.args.getlist(name):
                why = check(value)
                if why:
                    raise BadRequest(f"{name} {why}, got {value!r}")
        return None

    def _refused_by_target() -> None:
        """What the node a redirect points to would refuse, refused here first."""
        key = (request.view_args or {}).get("key")
        if key is not None:
            check_key(key)
        if request.method == "PUT":
            _body(config.max_value_bytes, kv.VALUE_LIMIT)
        elif request.endpoint == "create":
            _new_value()

    balancer = Balancer(config.balance)
    balance.register(
        app,
        cluster,
        peer_calls,
        lambda limit: _body(limit, "body"),
        balancer,
        refused=_refused_by_target,
    )

    @app.after_request
    def _stamp(resp: Response) -> Response:
        epoch = cluster.map_epoch() if request.path.startswith("/kv/") else None
        resp.headers.extend(kv.stamps(resp.status_code, resp.headers, cluster.id, epoch))
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        if not rule.startswith("/peer/"):
            metrics.observe(
                request.method,
                rule,
                resp.status_code,
                time.perf_counter() - g.get("started", time.perf_counter()),
            )
        return resp

    @app.errorhandler(Exception)
    def _error(exc: Exception):
        if isinstance(exc, HTTPException) and exc.code == 413:  # werkzeug's MAX_CONTENT_LENGTH
            return _json_error(
                413,
                "too_large",
                f"value exceeds max_value_bytes ({config.max_value_bytes} bytes)",
            )
        resp = _answer(kv.error_of(exc))
        if resp.status_code == 405:  # RFC 9110 15.5.6: a 405 lists the methods the resource has
            resp.headers["Allow"] = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        return resp

    # -- public API ----------------------------------------------------------------------------

    @app.put("/kv/<key:key>")
    def put(key: str):
        return _answer(
            keys.put(key, request.args.get("w"), lambda limit: _body(limit, kv.VALUE_LIMIT))
        )

    @app.get("/kv/<key:key>")
    def get(key: str):
        if request.args.get("explain") not in (None, "", "0"):
            check_level(request.args.get("r"), "one", "r")
            return jsonify(kv_store.explain(key))
        return _answer(keys.get(key, request.args.get("r")))

    @app.delete("/kv/<key:key>")
    def delete(key: str):
        res = kv_store.delete(key, check_level(request.args.get("w"), "quorum", "w"))
        return jsonify({"key": res.key, "version": res.version.encode(), "acks": res.acks})

    @app.get("/kv")
    def list_keys():
        try:
            limit = int(request.args.get("limit", "100"))
        except ValueError:
            raise BadRequest("limit must be an integer from 1 to 1000") from None
        found, nxt = kv_store.list_keys(
            request.args.get("prefix", ""), request.args.get("after"), limit
        )
        return jsonify({"keys": found, "next": nxt})

    @app.post("/kv")
    def create():
        w = check_level(request.args.get("w"), "quorum", "w")
        return jsonify(kv_store.create(_new_value(), w).to_json()), 201

    def _new_value() -> bytes:
        """The value of a ``POST /kv`` body ``{"value": "<text>"}``, as UTF-8."""
        try:
            # JSON escapes can take 6 bytes per byte of value
            body = json.loads(_body(6 * config.max_value_bytes + 1024) or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest('body must be JSON {"value": "<text>"}') from None
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise BadRequest('body must be JSON {"value": "<text>"}')
        value = body["value"].encode("utf-8", "surrogatepass")
        if len(value) > config.max_value_bytes:
            raise TooLarge(f"value exceeds max_value_bytes ({config.max_value_bytes} bytes)")
        return value

    @app.get("/cluster", endpoint="cluster")
    def cluster_view():
        return jsonify(cluster.cluster())

    @app.post("/cluster/members")
    def add_member():
        body = _json_body()
        node_id, http, raft = (body.get(f) for f in ("id", "http", "raft"))
        if not (isinstance(node_id, str) and isinstance(http, str) and isinstance(raft, str)):
            raise BadRequest(
                'body must be JSON {"id": ..., "http": "HOST:PORT", "raft": "HOST:PORT"}'
            )
        return jsonify(cluster.add_member(node_id, http, raft))  # it checks the fields

    @app.delete("/cluster/members/<node_id>")
    def remove_member(node_id: str):
        return jsonify(cluster.remove_member(node_id))

    @app.get("/health")
    def health():
        return jsonify({"status": "ok", "node": cluster.id})

    @app.get("/ready")
    def ready():
        ok, why = cluster.ready()
        if ok:
            return jsonify({"status": "ready", "node": cluster.id, "leader": cluster.leader_id()})
        return _json_error(503, "not_ready", why)

    @app.get("/metrics")
    def prometheus():
        body, ctype = metrics.render()
        return Response(body, 200, content_type=ctype)

    ws.register(app, cluster, jobs, watch, lambda limit: _body(limit))
    ui.register(app, cluster, peer_calls, peer_server)

    def _json_body() -> dict:
        try:
            body = json.loads(_body(PEER_MAX_BODY) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    # -- peer messages: every /peer/* request goes to the node's one dispatcher ------------------

    def peer(**_path):
        body = (
            _body(PEER_MAX_BODY)
            if (request.content_length or request.headers.get("Transfer-Encoding"))
            else b""
        )
        reply = peer_server.handle(
            request.method,
            raw_target(request.environ),
            request.headers.get(peerauth.HEADER),
            body,
            request.headers.get(VERSION_HEADER),
        )
        resp = Response(reply.body, reply.status, content_type=reply.content_type)
        resp.headers.extend(reply.headers)
        return resp

    # a rule per message (the routing table shows them); the fast path serves its own first
    for path, methods in peer_server.routes().items():
        if path not in PEER_ROUTES:
            app.add_url_rule(
                path, f"peer {path}", peer, methods=methods, provide_automatic_options=False
            )
    # any other /peer/ target or method: the dispatcher answers (403 unsigned, else 404/405)
    app.add_url_rule(
        "/peer/<path:_path>",
        "peer",
        peer,
        methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
        provide_automatic_options=False,
    )

    # the hottest requests (plain key GET/PUT, /peer/stream, /peer/apply) skip Flask
    app.wsgi_app = FastPath(  # type: ignore[method-assign]
        app.wsgi_app,
        cluster,
        peer_calls,
        keys,
        metrics,
        PEER_MAX_BODY,
        balancer,
        peer_server,
        policy,
    )
    return app


def raw_target(environ: dict) -> str:
    """The request target as sent (what a peer signed)."""
    raw = environ.get("RAW_URI")
    if raw:
        return raw
    query = environ.get("QUERY_STRING", "")
    path = environ.get("PATH_INFO", "")
    return f"{path}?{query}" if query else path


class KeyConverter(PathConverter):
    """The rest of the path, whatever it holds (a line feed too, or nothing: ``/kv/`` is the
    empty key): keys are checked by the store, which answers a bad key with 400, not by routing,
    which would answer 404 (and ``PUT /kv`` a redirect to ``/kv/``, not a 405)."""

    regex = "(?s:.*)"
    part_isolating = False  # it spans "/" (werkzeug would guess True from the regex)


def _body(limit: int, what: str = "body") -> bytes:
    """The request body, refusing more than ``limit`` bytes, chunked uploads included.

    werkzeug's limited stream stops quietly at its limit, so read one byte more than allowed
    and refuse if it arrives: a value is stored whole or not at all.
    """
    data = g.get("body")  # already read by the balancer, which then chose this node
    if data is None:
        request.max_content_length = limit + 1
        data = g.body = request.get_data(cache=False)
    kv.too_large(len(data), limit, what)
    return data


def _answer(answer: kv.Answer) -> Response:
    """A :mod:`api.kv` answer as a Flask response."""
    status, body, headers = answer
    return Response(body, status, headers)


def _json_error(status: int, code: str, message: str):
    resp = jsonify({"error": code, "message": message})
    resp.status_code = status
    return resp
