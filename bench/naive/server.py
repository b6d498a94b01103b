"""One node of the naive design: a pysyncobj `ReplDict` holding every value, served by Flask.

Run by kvraft's HTTP server (`python -m api.httpd ... server:create_app()`, one process, so the
SyncObj and its tick thread live in the serving process); configured by environment variables
set by `cluster.py`:
NAIVE_SELF and NAIVE_PARTNERS (raft host:port), NAIVE_PASSWORD (encrypts pysyncobj's pickled
traffic), NAIVE_DATA (journal and dump directory), NAIVE_TIMEOUT (seconds a PUT waits for commit).

API shape matches kvraft's: `PUT /kv/<key>` blocks until the write is committed by a Raft majority
and applied locally (201 created, 200 replaced, 503 JSON on timeout or no leader), `GET /kv/<key>`
reads the local copy (200 raw value, 404 absent), `GET /ready` is 200 once a leader is known.
A follower forwards writes to the leader itself (pysyncobj's apply_command), so any node takes
writes. Benchmark-only code: it does no input validation beyond what Flask does.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response, jsonify, request
from pysyncobj import SyncObj, SyncObjConf, SyncObjException
from pysyncobj.batteries import ReplDict


def create_app() -> Flask:
    self_addr = os.environ["NAIVE_SELF"]
    partners = [p for p in os.environ["NAIVE_PARTNERS"].split(",") if p]
    data = Path(os.environ["NAIVE_DATA"])
    timeout = float(os.environ.get("NAIVE_TIMEOUT", "5"))
    data.mkdir(parents=True, exist_ok=True)
    store = ReplDict()
    conf = SyncObjConf(
        password=os.environ["NAIVE_PASSWORD"],
        appendEntriesUseBatch=False,
        dynamicMembershipChange=False,
        journalFile=str(data / "journal.bin"),
        fullDumpFile=str(data / "dump.bin"),
    )
    syncobj = SyncObj(self_addr, partners, consumers=[store], conf=conf)

    app = Flask(__name__)
    app.extensions["naive_syncobj"] = syncobj  # keep a reference for the process lifetime

    def error(code: str, message: str, status: int):
        return jsonify(error=code, message=message), status

    @app.put("/kv/<path:key>")
    def put(key: str):
        value = request.get_data()
        created = store.get(key) is None
        try:
            store.set(key, value, sync=True, timeout=timeout)
        except SyncObjException as exc:
            return error("unavailable", f"write not committed: {exc}", 503)
        return jsonify(key=key), 201 if created else 200

    @app.get("/kv/<path:key>")
    def get(key: str):
        value = store.get(key)
        if value is None:
            return error("not_found", "no such key", 404)
        return Response(value, mimetype="application/octet-stream")

    @app.get("/ready")
    def ready():
        leader = syncobj._getLeader()
        if leader is None:
            return error("not_ready", "no leader yet", 503)
        return jsonify(leader=str(leader), self=self_addr)

    return app
