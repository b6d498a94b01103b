"""The OpenAPI 3 description of the public HTTP API, served at ``/openapi.json``.

:func:`document` builds it as a plain dict. It describes what the server does, not what it should
do: ``tests/integration/test_openapi.py`` checks that every public Flask route is here and every
path here is a route, validates live responses against it and fuzzes it with schemathesis.
Peer endpoints (``/peer/*``) are internal and left out. The websockets (``/report``, ``/watch``)
are described as ``GET`` with a ``101`` upgrade; they are not fuzzed.

Nothing here touches the store; this module must stay free of Flask and of IO.
"""

from __future__ import annotations

from typing import Any

from kvraft.keys import LEVELS, MAX_KEY_BYTES

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1"

JSON = "application/json"


NODE_HEADER = {"X-Kvraft-Node": {"$ref": "#/components/headers/Node"}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, **headers: dict) -> dict:
    resp: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    resp["headers"] = {**NODE_HEADER, "X-Kvraft-Via": {"$ref": "#/components/headers/Via"},
                       **headers}
    return resp


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


ERRORS = {
    "400": "bad input (key, level, limit or body); nothing was changed",
    "401": "the node runs with KVRAFT_TOKEN and the bearer token is missing or wrong",
    "404": "no such key, member or route",
    "413": "the body is larger than the node's max_value_bytes",
    "502": "the partition leader forwarded the write and lost the answer: it may or may not "
           "have been applied",
    "503": "not enough replicas answered, or the node has no partition map yet; retry",
}


# Answered by the HTTP server (api/httpd.py) before the app sees the request: the JSON error
# shape, but without X-Kvraft-Node, and the connection is closed. A request line is at most 8192
# bytes (a key of 1024 bytes fits, even percent-encoded); at most 100 headers and 16 KiB of them.
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
SERVER_LIMITS = {
    "414": {"description": "request line over 8192 bytes (the HTTP server's limit)",
            "content": _JSON_ERROR},
    "431": {"description": "over 100 headers or 16 KiB of headers (the HTTP server's limit)",
            "content": _JSON_ERROR},
}


def _errors(*codes: int) -> dict:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _op(op_id: str, summary: str, responses: dict, *, params: list | None = None,
        body: dict | None = None, public: bool = False, tags: tuple[str, ...] = ()) -> dict:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if tags:
        op["tags"] = list(tags)
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if public:
        op["security"] = []
    elif "401" not in responses:
        responses.update(_errors(401))
    responses.update({c: {"$ref": f"#/components/responses/Server{c}"} for c in SERVER_LIMITS})
    return op


def _level(name: str, default: str, what: str) -> dict:
    return {"name": name, "in": "query", "required": False,
            "description": f"{what}: how many replicas must answer (empty or absent: {default})",
            "schema": {"type": "string", "enum": ["", *LEVELS], "default": default}}


def _schemas() -> dict:
    string_list = {"type": "array", "items": {"type": "string"}}
    nullable_string = {"type": "string", "nullable": True}
    sync_round = {
        "type": "object",
        "required": ["id", "seconds", "partitions", "synced", "records", "bytes", "repaired",
                     "purged", "handed_off", "errors"],
        "properties": {"id": {"type": "integer"}, "seconds": {"type": "number"},
                       "partitions": {"type": "integer"}, "synced": {"type": "integer"},
                       "records": {"type": "integer"}, "bytes": {"type": "integer"},
                       "repaired": {"type": "integer"}, "purged": {"type": "integer"},
                       "handed_off": {"type": "integer"}, "errors": string_list},
    }
    node = {
        "type": "object",
        "required": ["id", "http", "raft", "alive", "is_leader", "keys", "bytes", "member"],
        "properties": {
            "id": {"type": "string"}, "http": {"type": "string"}, "raft": {"type": "string"},
            "alive": {"type": "boolean", "description": "last contact from this node succeeded"},
            "is_leader": {"type": "boolean"},
            "keys": {"type": "integer", "nullable": True, "description": "live keys stored"},
            "bytes": {"type": "integer", "nullable": True, "description": "live value bytes"},
            "member": {"type": "boolean", "description": "in the current Raft configuration"},
            "serving": {"type": "boolean",
                        "description": "alive and ready: the leader balances requests over it"},
            "load": {"type": "integer", "nullable": True,
                     "description": "data requests it was serving (this node: now; a peer: at "
                                    "its last ping, null before one)"},
        },
    }
    per_partition = {"type": "object", "additionalProperties": string_list,
                     "description": "partition number (as a string) to node ids"}
    return {
        "Error": {
            "type": "object", "required": ["error", "message"],
            "properties": {"error": {"type": "string", "description": "machine-readable code"},
                           "message": {"type": "string", "description": "for humans"}},
        },
        "WriteResult": {
            "type": "object", "required": ["key", "version", "replicas", "acks"],
            "properties": {
                "key": {"type": "string"},
                "version": {"type": "string", "description": "HLC timestamp and node id"},
                "replicas": {**string_list, "description": "home replicas of the key"},
                "acks": {"type": "integer", "minimum": 0,
                         "description": "durable copies (stand-in hints count unless w=all)"},
                "hinted": {**string_list, "description": "stand-ins holding a hint"},
            },
        },
        "DeleteResult": {
            "type": "object", "required": ["key", "version"],
            "properties": {"key": {"type": "string"}, "version": {"type": "string"},
                           "acks": {"type": "integer", "minimum": 0}},
        },
        "KeyList": {
            "type": "object", "required": ["keys", "next"],
            "properties": {"keys": string_list,
                           "next": {**nullable_string,
                                    "description": "pass as ?after= for the next page"}},
        },
        "NewValue": {
            "type": "object", "required": ["value"],
            "properties": {"value": {"type": "string", "description": "stored as UTF-8"}},
        },
        "Explain": {
            "type": "object",
            "required": ["key", "partition", "replicas", "versions", "holders", "agree",
                         "hints_pending", "reason"],
            "properties": {
                "key": {"type": "string"}, "partition": {"type": "integer", "minimum": 0},
                "replicas": string_list,
                "versions": {"type": "object", "additionalProperties": nullable_string,
                             "description": "replica id to the version it holds: null (none), "
                                            "'tombstone:<version>' or 'unreachable'"},
                "holders": string_list,
                "others": {"type": "object", "additionalProperties": nullable_string,
                           "description": "non-replicas that hold a copy"},
                "agree": {"type": "boolean"}, "hints_pending": {"type": "integer"},
                "reason": {"type": "string"},
            },
        },
        "Node": node,
        "Cluster": {
            "type": "object",
            "required": ["node", "leader", "nodes", "partitions", "replication_factor", "raft",
                         "hints_pending", "filling", "leaving", "sync"],
            "properties": {
                "node": {"type": "string", "description": "the node that answered"},
                "leader": {**nullable_string, "description": "Raft leader (partition leader)"},
                "nodes": {"type": "array", "items": _ref("Node")},
                "partitions": per_partition,
                "partition_epoch": {"type": "integer"},
                "replication_factor": {"type": "integer", "minimum": 1},
                "raft": {
                    "type": "object", "required": ["state", "term", "commit_index"],
                    "properties": {
                        "state": {"type": "string", "enum": ["follower", "candidate", "leader"]},
                        "term": {"type": "integer"}, "commit_index": {"type": "integer"},
                        "last_applied": {"type": "integer"}, "has_quorum": {"type": "boolean"},
                        "log_len": {"type": "integer"},
                    },
                },
                "hints_pending": {"type": "integer", "description": "hints held by this node"},
                "hints_pending_cluster": {"type": "integer"},
                "filling": {**per_partition, "description": "replicas still being filled"},
                "leaving": {**per_partition, "description": "replicas being drained"},
                "under_replicated": {"type": "integer"},
                "removing": string_list,
                "rebalances": {"type": "integer"},
                "sync": {
                    "type": "object", "required": ["round", "interval", "last_local_round"],
                    "properties": {
                        "round": {"type": "integer"}, "interval": {"type": "number"},
                        "last_local_round": sync_round,
                        "totals": {"type": "object",
                                   "additionalProperties": {"type": "number"}},
                        "partitions_synced_last_round": {"type": "integer"},
                    },
                },
            },
        },
        "Health": {
            "type": "object", "required": ["status", "node"],
            "properties": {"status": {"type": "string", "enum": ["ok"]},
                           "node": {"type": "string"}},
        },
        "Ready": {
            "type": "object", "required": ["status", "node", "leader"],
            "properties": {"status": {"type": "string", "enum": ["ready"]},
                           "node": {"type": "string"}, "leader": nullable_string},
        },
        "NewMember": {
            "type": "object", "required": ["id", "http", "raft"],
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9_.]{1,32}$"},
                "http": {"type": "string", "description": "HOST:PORT of its HTTP API"},
                "raft": {"type": "string", "description": "HOST:PORT of its Raft port"},
            },
        },
        "Export": {
            "type": "object", "required": ["name", "keys", "bytes"],
            "properties": {"name": {"type": "string", "description": "remote file name"},
                           "keys": {"type": "integer"}, "bytes": {"type": "integer"},
                           "value_bytes": {"type": "integer"}},
        },
        "ImportRequest": {
            "type": "object", "required": ["name"],
            "properties": {"name": {
                "type": "string", "description": "a name returned by POST /export",
                "pattern": r"^export-[A-Za-z0-9_-]{1,64}-\d{8}T\d{6}Z-[0-9a-f]{8}\.json$"}},
        },
        "Stats": {
            "type": "object", "required": ["node", "time", "nodes"],
            "properties": {
                "node": {"type": "string"},
                "time": {"type": "number", "description": "Unix time of the answer"},
                "nodes": {"type": "object", "description": "node id to its counters",
                          "additionalProperties": _ref("NodeStats")},
            },
        },
        "NodeStats": {
            "type": "object", "required": ["ok"],
            "properties": {
                "ok": {"type": "boolean", "description": "false when the node did not answer"},
                "time": {"type": "number"}, "started_at": {"type": "number"},
                "reads": {"type": "number"}, "writes": {"type": "number"},
                "ops": {"type": "number", "description": "reads + writes it coordinated "
                                                        "since it started"},
                "error": {"type": "string"},
            },
        },
    }


def document(max_value_bytes: int = 1 << 20) -> dict:
    """The OpenAPI 3 document of the public API of a node with this ``max_value_bytes``."""
    key = {"name": "key", "in": "path", "required": True,
           "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8 without control characters, "
                          "percent-encoded as one path segment ('/' may also appear literally; "
                          "'.' and '..' must be encoded as %2E)",
           "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES,
                      "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$"}}
    w = _level("w", "quorum", "write level")
    version_headers = {  # on the raw value (not on ?explain's JSON)
        "ETag": {"description": "the version, quoted", "schema": {"type": "string"}},
        "X-Kvraft-Version": {"description": "the version", "schema": {"type": "string"}},
    }
    redirect = {"name": "redirect", "in": "query", "required": False,
                "description": "on the partition leader, which balances /kv requests over the "
                               "active nodes: any value but '' or '0' answers 307 to the chosen "
                               "node instead of forwarding the request there",
                "schema": {"type": "string"}}
    moved = {"307": {"description": "?redirect=1 at the partition leader: ask the node it chose",
                     "headers": {"Location": {"required": True, "schema": {"type": "string"}},
                                 **NODE_HEADER,
                                 "X-Kvraft-Via": {"$ref": "#/components/headers/Via"}}}}
    progress = {"name": "progress", "in": "query", "required": False,
                "description": "1: stream NDJSON progress lines, the last one the result",
                "schema": {"type": "string", "enum": ["0", "1"]}}
    ndjson = {"application/x-ndjson": {"schema": {"type": "string"}}}
    empty_key = _op("emptyKey", "An empty key: always 400", {**_errors(400), **moved})
    paths = {
        "/kv/{key}": {
            "parameters": [key, redirect],
            "get": _op(
                "getValue", "Read a value (or ?explain=1: where its replicas are)",
                {"200": {"description": "the raw value; with ?explain, JSON about the key",
                         "headers": {**NODE_HEADER,
                                     "X-Kvraft-Via": {"$ref": "#/components/headers/Via"},
                                     **version_headers},
                         "content": {"application/octet-stream": {
                                         "schema": {"type": "string", "format": "binary"}},
                                     JSON: {"schema": _ref("Explain")}}},
                 **moved, **_errors(400, 404, 503)},
                params=[_level("r", "one", "read level"),
                        {"name": "explain", "in": "query", "required": False,
                         "description": "any value but '' or '0': explain instead of reading",
                         "schema": {"type": "string"}}]),
            "put": _op(
                "putValue", "Create or replace a value (the body, any bytes)",
                {"200": _json(_ref("WriteResult"), "replaced"),
                 "201": _json(_ref("WriteResult"), "created"),
                 **moved, **_errors(400, 413, 502, 503)},
                params=[w],
                body={"required": False, "description": f"at most {max_value_bytes} bytes",
                      "content": {"application/octet-stream": {
                          "schema": {"type": "string", "format": "binary"}}}}),
            "delete": _op(
                "deleteValue", "Delete a value (writes a tombstone)",
                {"200": _json(_ref("DeleteResult"), "deleted"), **moved,
                 **_errors(400, 404, 502, 503)},
                params=[w]),
        },
        "/kv/": {"parameters": [redirect], "get": empty_key,
                 "put": dict(empty_key, operationId="emptyKeyPut"),
                 "delete": dict(empty_key, operationId="emptyKeyDelete")},
        "/kv": {
            "parameters": [redirect],
            "get": _op(
                "listKeys", "List live keys, sorted, a page at a time",
                {"200": _json(_ref("KeyList"), "a page of keys"), **moved,
                 **_errors(400, 503)},
                params=[
                    {"name": "prefix", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "required": False,
                     "description": "list keys after this one (the previous page's next)",
                     "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                "default": 100}},
                ]),
            "post": _op(
                "createValue", "Store a text value under a new key the store picks",
                {"201": _json(_ref("WriteResult"), "created"), **moved,
                 **_errors(400, 413, 502, 503)},
                params=[w],
                body={"required": True,
                      "content": {JSON: {"schema": _ref("NewValue")}}}),
        },
        "/cluster": {
            "get": _op("getCluster", "The cluster as this node sees it",
                       {"200": _json(_ref("Cluster"), "the cluster view")}, tags=("cluster",)),
        },
        "/cluster/members": {
            "post": _op(
                "addMember", "Add a node to the Raft configuration (it then joins)",
                {"200": _json({"type": "object", "required": ["added", "raft"],
                               "properties": {"added": {"type": "string"},
                                              "raft": {"type": "string"}}}, "added"),
                 **_errors(400, 503)},
                body={"required": True, "content": {JSON: {"schema": _ref("NewMember")}}},
                tags=("cluster",)),
        },
        "/cluster/members/{node_id}": {
            "delete": _op(
                "removeMember", "Drain a node (its partitions move away), then remove it",
                {"200": _json({"type": "object", "required": ["removing"],
                               "properties": {"removing": {"type": "string"}}}, "draining"),
                 **_errors(400, 404, 503)},
                params=[{"name": "node_id", "in": "path", "required": True,
                         "schema": {"type": "string"}}],
                tags=("cluster",)),
        },
        "/health": {
            "get": _op("health", "The process is alive (never needs the token)",
                       {"200": _json(_ref("Health"), "alive")}, public=True, tags=("ops",)),
        },
        "/ready": {
            "get": _op("ready", "This node sees a leader and the partition map",
                       {"200": _json(_ref("Ready"), "ready"),
                        "503": _error("not ready: the message says why")}, tags=("ops",)),
        },
        "/metrics": {
            "get": _op("metrics", "Prometheus metrics (text exposition format)",
                       {"200": {"description": "Prometheus text format",
                                "headers": NODE_HEADER,
                                "content": {"text/plain": {"schema": {"type": "string"}}}}},
                       tags=("ops",)),
        },
        "/stats": {
            "get": _op("stats", "Operation counters of every node (the dashboard polls it)",
                       {"200": _json(_ref("Stats"), "counters per node")}, tags=("ops",)),
        },
        "/openapi.json": {
            "get": _op("openapi", "This document",
                       {"200": _json({"type": "object"}, "the OpenAPI document")},
                       tags=("ops",)),
        },
        "/": {
            "get": _op("dashboard", "The dashboard page (no data in it; it asks for the token "
                       "in the browser and polls /cluster and /stats)",
                       {"200": {"description": "HTML page",
                                "headers": NODE_HEADER,
                                "content": {"text/html": {"schema": {"type": "string"}}}}},
                       tags=("ops",)),
        },
        "/export": {
            "post": _op(
                "export", "Write a snapshot of every live key to the FTP server",
                {"201": _json(_ref("Export"), "exported"),
                 "200": {"description": "with ?progress=1: NDJSON progress, then "
                         '{"type": "done", ...} or {"type": "error", ...}',
                         "headers": NODE_HEADER, "content": ndjson},
                 **_errors(503)},
                params=[progress], tags=("reports",)),
        },
        "/import": {
            "post": _op(
                "import", "Write every record of an export back into the store",
                {"200": {"description": "imported (NDJSON with ?progress=1)",
                         "headers": NODE_HEADER,
                         "content": {JSON: {"schema": _ref("Export")}, **ndjson}},
                 **_errors(400, 413, 503)},
                params=[w, progress],
                body={"required": True, "content": {JSON: {"schema": _ref("ImportRequest")}}},
                tags=("reports",)),
        },
    }
    for path, what in (("/report", "reports: send {\"prefix\": P}, get the report file's "
                        "content back (JSON); the socket stays open"),
                       ("/watch", "change events for keys under ?prefix= (JSON messages)")):
        params = []
        if path == "/watch":
            params = [{"name": "prefix", "in": "query", "required": False,
                       "schema": {"type": "string"}}]
        op = _op(path.strip("/") + "Socket", f"WebSocket: {what}",
                 {"101": {"description": "switching to the WebSocket protocol"},
                  "400": {"$ref": "#/components/responses/E400"},
                  "403": _error("a browser Origin that is not this host")},
                 params=params, tags=("reports",))
        op["x-websocket"] = True
        paths[path] = {"get": op}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "kvraft",
            "version": API_VERSION,
            "description": "A replicated key-value store. Every node serves every request. "
                           "Every error body is JSON {\"error\": code, \"message\": text}; "
                           "unknown routes answer 404 and wrong methods 405, both JSON. "
                           "With KVRAFT_TOKEN set on the nodes, every endpoint but /health "
                           "needs 'Authorization: Bearer <token>'.",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "headers": {
                "Node": {"description": "id of the node that handled the request",
                         "required": True, "schema": {"type": "string"}},
                "Via": {"description": "id of the node that forwarded the request",
                        "required": False, "schema": {"type": "string"}},
            },
            "responses": {**{f"E{c}": _error(text) for c, text in ERRORS.items()},
                          **{f"Server{c}": r for c, r in SERVER_LIMITS.items()}},
            "schemas": _schemas(),
        },
    }
