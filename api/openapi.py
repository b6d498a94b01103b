"""The OpenAPI 3 description of the public HTTP API, served at ``/openapi.json``.

:func:`document` builds it as a plain dict. It describes what the server does, every status an
operation can answer included (what the HTTP server itself answers, the bearer credentials, the
websocket upgrades), not what it should do. What keeps it true:

- ``tests/unit/test_openapi_doc.py``: every route of the Flask app and of the fast path
  (:data:`api.fastpath.ROUTES`) is documented (peer routes excepted) with the methods it has,
  every error class of the store (:mod:`kvraft.errors` and the rest of ``kvraft``) and every
  error code the HTTP layer writes is in :data:`ERROR_CODES` with its status, and each status is
  documented where it can arise.
- ``tests/integration/test_schemathesis.py``: ``schemathesis run --checks all`` (coverage,
  fuzzing and stateful phases, through the :data:`links` below) against a real cluster.

The server reads it too: :func:`query_checks` gives the app the enums and ranges of query
parameters to enforce, so the document and the validation cannot disagree.

Nothing here touches the store; this module must stay free of Flask and of IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kvraft.config import MEMBER_ADDRESS, NODE_ID
from kvraft.keys import LEVELS, MAX_KEY_BYTES

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1"

JSON = "application/json"
NODE_HEADER = {"X-Kvraft-Node": {"$ref": "#/components/headers/Node"}}
VIA_HEADER = {"X-Kvraft-Via": {"$ref": "#/components/headers/Via"}}
EPOCH_HEADER = {"X-Kvraft-Map-Epoch": {"$ref": "#/components/headers/MapEpoch"}}

# Every error code a node writes into {"error": code, "message": text}, with its status. The
# unit tests check that each error class of kvraft and each code written in api/ is here.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "bad input (key, level, query, body), or a malformed HTTP request"),
    "unauthorized": (401, "the bearer credential is missing or wrong"),
    "forbidden": (403, "a peer endpoint without the cluster secret"),
    "forbidden_origin": (403, "a websocket upgrade from a browser Origin not allowed"),
    "not_found": (404, "no such key, member, export or route"),
    "method_not_allowed": (405, "the route exists with other methods (listed in Allow)"),
    "conflict": (409, "the cluster's state does not allow this membership change"),
    "gone": (410, "peer only: an expired change subscription"),
    "too_large": (413, "the body is over the node's limit"),
    "request_timeout": (408, "the request head or body did not arrive within its total deadline"),
    "uri_too_long": (414, "request line over 8192 bytes"),
    "unsupported_media_type": (415, "a JSON body without Content-Type: application/json"),
    "upgrade_required": (
        426,
        "a websocket route without a WebSocket upgrade, or another Sec-WebSocket-Version than 13",
    ),
    "too_many_connections": (429, "this client address holds its limit of connections"),
    "headers_too_large": (431, "over 100 headers or 16 KiB of them"),
    "internal": (500, "a bug (logged by the node); client input never causes it"),
    "not_implemented": (501, "a transfer coding other than chunked"),
    "http_version_not_supported": (505, "an HTTP version other than 1.0 and 1.1"),
    "forward_failed": (
        502,
        "the partition leader forwarded a write and lost the answer: it "
        "may or may not have been applied",
    ),
    "ftp_auth": (502, "the FTP server refused the node's credentials"),
    "unavailable": (
        503,
        "not enough replicas answered, no partition map or leader yet, or "
        "the node is shutting down or over max_connections; retry",
    ),
    "clock_offset": (503, "this node's clock is out of bounds: it coordinates no writes"),
    "not_ready": (503, "the node sees no leader or partition map yet"),
    "ftp_unavailable": (503, "the FTP server is unreachable or not configured"),
}

# Answers of the HTTP server itself (api/httpd.py), before the app sees the request, on any
# path: the JSON error shape, without X-Kvraft-Node, and the connection is closed.
SERVER_ANSWERS = {
    "400": "a malformed request: request line, header (a NUL or control byte in one, a name "
    "with '_', which would alias '-' for the app), framing",
    "408": "the request head or body did not arrive within its total deadline",
    "429": "this client address holds its limit of connections (Retry-After)",
    "414": "request line over 8192 bytes (a key of 1024 bytes fits, even percent-encoded)",
    "431": "over 100 headers or 16 KiB of headers",
    "501": "a Transfer-Encoding other than chunked",
    "505": "an HTTP version other than 1.0 and 1.1",
    "503": "the node is over max_connections; retry",
}

Security = list[dict[str, list[str]]]
PUBLIC: Security = [{}, {"publicToken": []}, {"adminToken": []}]  # a token only if the node has one
ADMIN: Security = [{"adminToken": []}]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, **headers: dict) -> dict:
    return {
        "description": description,
        "content": {JSON: {"schema": schema}},
        "headers": {**NODE_HEADER, **VIA_HEADER, **headers},
    }


def _error(description: str, **headers: dict) -> dict:
    return _json(_ref("Error"), description, **headers)


def _shared_error(status: str, description: str, **headers: dict) -> dict:
    """An error of the app's that the HTTP server (without X-Kvraft-Node) may also answer."""
    resp = _error(description, **headers)
    if status in SERVER_ANSWERS:
        resp["description"] += f"; or, answered by the HTTP server: {SERVER_ANSWERS[status]}"
        resp["headers"]["X-Kvraft-Node"] = {"$ref": "#/components/headers/NodeIfApp"}
    return resp


def _errors(*codes: int) -> dict:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _op(
    op_id: str,
    summary: str,
    responses: dict,
    *,
    security: list,
    params: list | None = None,
    body: dict | None = None,
    tags: tuple[str, ...] = (),
    description: str = "",
) -> dict:
    """One operation; the bearer answers and the HTTP server's own answers are added."""
    op: dict[str, Any] = {"operationId": op_id, "summary": summary}
    if description:
        op["description"] = description
    if tags:
        op["tags"] = list(tags)
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
        if JSON in body["content"]:
            responses.update(_errors(415))
    op["security"] = security
    if security:
        responses.update(_errors(401))
    for code in SERVER_ANSWERS:  # the app's own description of the status, where it has one
        responses.setdefault(code, {"$ref": f"#/components/responses/Server{code}"})
    op["responses"] = dict(sorted(responses.items()))
    return op


def _level(name: str, default: str, what: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{what}: how many replicas must answer (empty or absent: {default})",
        "schema": {"type": "string", "enum": ["", *LEVELS], "default": default},
    }


def _flag(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "enum": ["", "0", "1"], "default": ""},
    }


def path_of(rule: str) -> str:
    """The document's path of a Flask rule: ``/kv/<key:key>`` is ``/kv/{key}``."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def query_checks(doc: dict) -> dict[tuple[str, str], dict[str, Callable[[str], str | None]]]:
    """(path, METHOD) -> {query parameter: check} for each query parameter of ``doc`` with an
    enum or an integer schema; a check returns why a value is refused, or None."""
    out: dict[tuple[str, str], dict[str, Callable[[str], str | None]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for param in [*item.get("parameters", []), *op.get("parameters", [])]:
                if param["in"] != "query":
                    continue
                check = _check_for(param["schema"])
                if check is not None:
                    out.setdefault((path, method.upper()), {})[param["name"]] = check
    return out


def _check_for(schema: dict) -> Callable[[str], str | None] | None:
    if "enum" in schema:
        allowed = tuple(schema["enum"])
        shown = ", ".join(repr(v) for v in allowed)
        return lambda value: None if value in allowed else f"must be one of {shown}"
    if schema.get("type") == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")

        def check(value: str) -> str | None:
            if (
                not re.fullmatch(r"-?[0-9]{1,18}", value)
                or (low is not None and int(value) < low)
                or (high is not None and int(value) > high)
            ):
                return f"must be an integer from {low} to {high}"
            return None

        return check
    return None


def _schemas() -> dict:
    string_list = {"type": "array", "items": {"type": "string"}}
    nullable_string = {"type": "string", "nullable": True}
    sync_round = {
        "type": "object",
        "required": [
            "id",
            "seconds",
            "partitions",
            "synced",
            "records",
            "bytes",
            "repaired",
            "purged",
            "handed_off",
            "errors",
        ],
        "properties": {
            "id": {"type": "integer"},
            "seconds": {"type": "number"},
            "partitions": {"type": "integer"},
            "synced": {"type": "integer"},
            "records": {"type": "integer"},
            "bytes": {"type": "integer"},
            "repaired": {"type": "integer"},
            "purged": {"type": "integer"},
            "handed_off": {"type": "integer"},
            "errors": string_list,
        },
    }
    node = {
        "type": "object",
        "required": ["id", "http", "raft", "alive", "is_leader", "keys", "bytes", "member"],
        "properties": {
            "id": {"type": "string"},
            "http": {"type": "string"},
            "raft": {"type": "string"},
            "alive": {"type": "boolean", "description": "last contact from this node succeeded"},
            "is_leader": {"type": "boolean"},
            "keys": {"type": "integer", "nullable": True, "description": "live keys stored"},
            "bytes": {"type": "integer", "nullable": True, "description": "live value bytes"},
            "member": {"type": "boolean", "description": "in the current Raft configuration"},
            "serving": {
                "type": "boolean",
                "description": "alive and ready: the leader balances requests over it",
            },
            "load": {
                "type": "integer",
                "nullable": True,
                "description": "data requests it was serving (this node: now; a peer: at "
                "its last ping, null before one)",
            },
        },
    }
    per_partition = {
        "type": "object",
        "additionalProperties": string_list,
        "description": "partition number (as a string) to node ids",
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "machine-readable code"},
                "message": {"type": "string", "description": "for humans"},
            },
        },
        "WriteResult": {
            "type": "object",
            "required": ["key", "version", "replicas", "acks"],
            "properties": {
                "key": {"type": "string"},
                "version": {"type": "string", "description": "HLC timestamp and node id"},
                "replicas": {**string_list, "description": "home replicas of the key"},
                "acks": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "durable copies (stand-in hints count unless w=all)",
                },
                "hinted": {**string_list, "description": "stand-ins holding a hint"},
            },
        },
        "DeleteResult": {
            "type": "object",
            "required": ["key", "version"],
            "properties": {
                "key": {"type": "string"},
                "version": {"type": "string"},
                "acks": {"type": "integer", "minimum": 0},
            },
        },
        "KeyList": {
            "type": "object",
            "required": ["keys", "next"],
            "properties": {
                "keys": string_list,
                "next": {**nullable_string, "description": "pass as ?after= for the next page"},
            },
        },
        "NewValue": {
            "type": "object",
            "required": ["value"],
            "properties": {"value": {"type": "string", "description": "stored as UTF-8"}},
        },
        "Explain": {
            "type": "object",
            "required": [
                "key",
                "partition",
                "replicas",
                "versions",
                "holders",
                "agree",
                "hints_pending",
                "reason",
            ],
            "properties": {
                "key": {"type": "string"},
                "partition": {"type": "integer", "minimum": 0},
                "replicas": string_list,
                "versions": {
                    "type": "object",
                    "additionalProperties": nullable_string,
                    "description": "replica id to the version it holds: null (none), "
                    "'tombstone:<version>' or 'unreachable'",
                },
                "holders": string_list,
                "others": {
                    "type": "object",
                    "additionalProperties": nullable_string,
                    "description": "non-replicas that hold a copy",
                },
                "agree": {"type": "boolean"},
                "hints_pending": {"type": "integer"},
                "reason": {"type": "string"},
            },
        },
        "Node": node,
        "Cluster": {
            "type": "object",
            "required": [
                "node",
                "leader",
                "nodes",
                "partitions",
                "replication_factor",
                "raft",
                "hints_pending",
                "filling",
                "leaving",
                "sync",
            ],
            "properties": {
                "node": {"type": "string", "description": "the node that answered"},
                "leader": {**nullable_string, "description": "Raft leader (partition leader)"},
                "nodes": {"type": "array", "items": _ref("Node")},
                "partitions": per_partition,
                "partition_epoch": {"type": "integer"},
                "replication_factor": {"type": "integer", "minimum": 1},
                "raft": {
                    "type": "object",
                    "required": ["state", "term", "commit_index"],
                    "properties": {
                        "state": {"type": "string", "enum": ["follower", "candidate", "leader"]},
                        "term": {"type": "integer"},
                        "commit_index": {"type": "integer"},
                        "last_applied": {"type": "integer"},
                        "has_quorum": {"type": "boolean"},
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
                    "type": "object",
                    "required": ["round", "interval", "last_local_round"],
                    "properties": {
                        "round": {"type": "integer"},
                        "interval": {"type": "number"},
                        "last_local_round": sync_round,
                        "totals": {"type": "object", "additionalProperties": {"type": "number"}},
                        "partitions_synced_last_round": {"type": "integer"},
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "node"],
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "node": {"type": "string"},
            },
        },
        "Ready": {
            "type": "object",
            "required": ["status", "node", "leader"],
            "properties": {
                "status": {"type": "string", "enum": ["ready"]},
                "node": {"type": "string"},
                "leader": nullable_string,
            },
        },
        "NewMember": {
            "type": "object",
            "required": ["id", "http", "raft"],
            "properties": {
                "id": {"type": "string", "pattern": NODE_ID.pattern},
                "http": {
                    "type": "string",
                    "pattern": MEMBER_ADDRESS.pattern,
                    "description": "HOST:PORT of its HTTP API",
                },
                "raft": {
                    "type": "string",
                    "pattern": MEMBER_ADDRESS.pattern,
                    "description": "HOST:PORT of its Raft port",
                },
            },
        },
        "Export": {
            "type": "object",
            "required": ["name", "keys", "bytes"],
            "properties": {
                "name": {"type": "string", "description": "remote file name"},
                "keys": {"type": "integer"},
                "bytes": {"type": "integer"},
                "value_bytes": {"type": "integer"},
            },
        },
        "ImportRequest": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "description": "a name returned by POST /export",
                    "pattern": r"^export-[A-Za-z0-9_-]{1,64}-\d{8}T\d{6}Z-[0-9a-f]{8}\.json$",
                }
            },
        },
        "Stats": {
            "type": "object",
            "required": ["node", "time", "nodes"],
            "properties": {
                "node": {"type": "string"},
                "time": {"type": "number", "description": "Unix time of the answer"},
                "nodes": {
                    "type": "object",
                    "description": "node id to its counters",
                    "additionalProperties": _ref("NodeStats"),
                },
            },
        },
        "NodeStats": {
            "type": "object",
            "required": ["ok"],
            "properties": {
                "ok": {"type": "boolean", "description": "false when the node did not answer"},
                "time": {"type": "number"},
                "started_at": {"type": "number"},
                "reads": {"type": "number"},
                "writes": {"type": "number"},
                "ops": {
                    "type": "number",
                    "description": "reads + writes it coordinated since it started",
                },
                "error": {"type": "string"},
            },
        },
    }


def _websocket_params(extra: list) -> list:
    def header(name: str, description: str, schema: dict, required: bool = True) -> dict:
        return {
            "name": name,
            "in": "header",
            "required": required,
            "description": description,
            "schema": schema,
        }

    return [
        header("Connection", "RFC 6455: the upgrade", {"type": "string", "enum": ["Upgrade"]}),
        header("Upgrade", "RFC 6455: the upgrade", {"type": "string", "enum": ["websocket"]}),
        header("Sec-WebSocket-Version", "RFC 6455", {"type": "string", "enum": ["13"]}),
        header(
            "Sec-WebSocket-Key",
            "RFC 6455: 16 random bytes, base64 (anything else is a 400)",
            {"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"},
        ),
        header(
            "Origin",
            "sent by browsers: it must be in the node's allow-list "
            "(KVRAFT_ALLOWED_ORIGINS; default: the node's own addresses and their localhost "
            "forms, http or https), else 403; a client without Origin is not a browser and "
            "is allowed",
            {"type": "string"},
            required=False,
        ),
        *extra,
    ]


def document(max_value_bytes: int = 1 << 20) -> dict:
    """The OpenAPI 3 document of the public API of a node with this ``max_value_bytes``."""
    key = {
        "name": "key",
        "in": "path",
        "required": True,
        "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8 (maxLength counts characters; "
        "the limit is in bytes, a longer key is a 400) without control "
        "characters (U+0000-U+001F, U+007F-U+009F), percent-encoded as one "
        "path segment ('/' may also appear literally, '.' and '..' must be "
        "encoded as %2E)",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_BYTES,
            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
        },
    }
    w = _level("w", "quorum", "write level")
    version_headers = {  # on the raw value, not on ?explain's JSON: so not required
        "ETag": {"description": "the version, quoted", "schema": {"type": "string"}},
        "X-Kvraft-Version": {"description": "the version", "schema": {"type": "string"}},
    }
    redirect = _flag(
        "redirect",
        "'1' at the partition leader, which balances /kv requests "
        "over the active nodes: answer 307 to the chosen node instead of "
        "forwarding the request there (elsewhere, and with '' or '0': ignored)",
    )
    moved = {
        "307": {
            "description": "?redirect=1 at the partition leader: ask the node it chose",
            "headers": {
                "Location": {"required": True, "schema": {"type": "string"}},
                **NODE_HEADER,
                **VIA_HEADER,
            },
        }
    }
    progress = _flag("progress", "'1': stream NDJSON progress lines, the last one the result")
    ndjson = {"application/x-ndjson": {"schema": {"type": "string"}}}
    # reads that follow a write read the value itself: ?explain answers 200 for a deleted key
    # too, and ?redirect a 307 instead of the value
    plain = {"query.explain": "0", "query.redirect": "0"}
    get_key = {"operationId": "getValue", "parameters": {"key": "$request.path.key", **plain}}
    delete_key = {"operationId": "deleteValue", "parameters": {"key": "$request.path.key"}}
    created_key = {"key": "$response.body#/key"}
    paths: dict[str, dict] = {
        "/kv/{key}": {
            "parameters": [key],
            "get": _op(
                "getValue",
                "Read a value (or ?explain=1: where its replicas are)",
                {
                    "200": {
                        "description": "the raw value; with ?explain, JSON about the key",
                        "headers": {
                            **NODE_HEADER,
                            **VIA_HEADER,
                            **EPOCH_HEADER,
                            **version_headers,
                        },
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            JSON: {"schema": _ref("Explain")},
                        },
                    },
                    **moved,
                    **_errors(400, 404, 503),
                },
                security=PUBLIC,
                params=[
                    redirect,
                    _level("r", "one", "read level"),
                    _flag(
                        "explain", "'1': explain where the key's replicas are instead of reading it"
                    ),
                ],
            ),
            "put": _op(
                "putValue",
                "Create or replace a value (the body, any bytes)",
                {
                    "200": {
                        **_json(_ref("WriteResult"), "replaced", **EPOCH_HEADER),
                        "links": {"GetPut": get_key, "DeletePut": delete_key},
                    },
                    "201": {
                        **_json(_ref("WriteResult"), "created", **EPOCH_HEADER),
                        "links": {"GetPut": get_key, "DeletePut": delete_key},
                    },
                    **moved,
                    **_errors(400, 413, 502, 503),
                },
                security=PUBLIC,
                params=[redirect, w],
                body={
                    "required": False,
                    "description": f"at most {max_value_bytes} bytes",
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
            ),
            "delete": _op(
                "deleteValue",
                "Delete a value (writes a tombstone)",
                {
                    "200": {
                        **_json(_ref("DeleteResult"), "deleted", **EPOCH_HEADER),
                        "links": {"GetDeleted": get_key},
                    },
                    **moved,
                    **_errors(400, 404, 502, 503),
                },
                security=PUBLIC,
                params=[redirect, w],
            ),
        },
        "/kv": {
            "get": _op(
                "listKeys",
                "List live keys, sorted, a page at a time",
                {"200": _json(_ref("KeyList"), "a page of keys"), **moved, **_errors(400, 503)},
                security=PUBLIC,
                params=[
                    redirect,
                    {
                        "name": "prefix",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "list keys after this one (the previous page's next)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
            ),
            "post": _op(
                "createValue",
                "Store a text value under a new key the store picks",
                {
                    "201": {
                        **_json(_ref("WriteResult"), "created"),
                        "links": {
                            "GetCreated": {
                                "operationId": "getValue",
                                "parameters": {**created_key, **plain},
                            },
                            "PutCreated": {"operationId": "putValue", "parameters": created_key},
                            "DeleteCreated": {
                                "operationId": "deleteValue",
                                "parameters": created_key,
                            },
                        },
                    },
                    **moved,
                    **_errors(400, 413, 502, 503),
                },
                security=PUBLIC,
                params=[redirect, w],
                body={"required": True, "content": {JSON: {"schema": _ref("NewValue")}}},
            ),
        },
        "/cluster": {
            "get": _op(
                "getCluster",
                "The cluster as this node sees it",
                {"200": _json(_ref("Cluster"), "the cluster view")},
                security=PUBLIC,
                tags=("cluster",),
            ),
        },
        "/cluster/members": {
            "post": _op(
                "addMember",
                "Add a node to the Raft configuration (admin)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["added", "raft"],
                            "properties": {"added": {"type": "string"}, "raft": {"type": "string"}},
                        },
                        "added (or it already was): start the node with --peers "
                        "listing the members' Raft addresses, it then registers",
                    ),
                    **_errors(400, 409, 503),
                },
                security=ADMIN,
                body={"required": True, "content": {JSON: {"schema": _ref("NewMember")}}},
                tags=("cluster",),
            ),
        },
        "/cluster/members/{node_id}": {
            "delete": _op(
                "removeMember",
                "Drain a node (its partitions move away), then remove it (admin)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["removing"],
                            "properties": {"removing": {"type": "string"}},
                        },
                        "draining",
                    ),
                    **_errors(404, 409, 503),
                },
                security=ADMIN,
                params=[
                    {
                        "name": "node_id",
                        "in": "path",
                        "required": True,
                        "description": "a member's id (any other string: 404)",
                        "schema": {"type": "string", "pattern": NODE_ID.pattern},
                    }
                ],
                tags=("cluster",),
            ),
        },
        "/health": {
            "get": _op(
                "health",
                "The process is alive (never needs a token)",
                {"200": _json(_ref("Health"), "alive")},
                security=[],
                tags=("ops",),
            ),
        },
        "/ready": {
            "get": _op(
                "ready",
                "This node sees a leader and the partition map",
                {
                    "200": _json(_ref("Ready"), "ready"),
                    "503": _shared_error("503", "not ready (not_ready): the message says why"),
                },
                security=PUBLIC,
                tags=("ops",),
            ),
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics (text exposition format)",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "headers": NODE_HEADER,
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                security=PUBLIC,
                tags=("ops",),
            ),
        },
        "/stats": {
            "get": _op(
                "stats",
                "Operation counters of every node (the dashboard polls it)",
                {"200": _json(_ref("Stats"), "counters per node")},
                security=PUBLIC,
                tags=("ops",),
            ),
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "the OpenAPI document")},
                security=PUBLIC,
                tags=("ops",),
            ),
        },
        "/": {
            "get": _op(
                "dashboard",
                "The dashboard page (no data in it, so it never needs a "
                "token; in the browser it asks for one and polls /cluster and /stats)",
                {
                    "200": {
                        "description": "HTML page",
                        "headers": NODE_HEADER,
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "503": _shared_error("503", "the dashboard's files are not installed"),
                },
                security=[],
                tags=("ops",),
            ),
        },
        "/export": {
            "post": _op(
                "export",
                "Write a snapshot of every live key to the FTP server (admin)",
                {
                    "201": {
                        **_json(_ref("Export"), "exported"),
                        "links": {
                            "ImportExported": {
                                "operationId": "import",
                                "requestBody": {"name": "$response.body#/name"},
                            }
                        },
                    },
                    "200": {
                        "description": "with ?progress=1: NDJSON progress lines, then "
                        '{"type": "done", ...} or {"type": "error", ...}',
                        "headers": NODE_HEADER,
                        "content": ndjson,
                    },
                    **_errors(400, 502, 503),
                },
                security=ADMIN,
                params=[progress],
                tags=("reports",),
            ),
        },
        "/import": {
            "post": _op(
                "import",
                "Write every record of an export back into the store (admin)",
                {
                    "200": {
                        "description": "imported (NDJSON with ?progress=1)",
                        "headers": NODE_HEADER,
                        "content": {JSON: {"schema": _ref("Export")}, **ndjson},
                    },
                    "404": _error("no export of that name on the FTP server (not_found)"),
                    **_errors(400, 413, 502, 503),
                },
                security=ADMIN,
                params=[w, progress],
                body={"required": True, "content": {JSON: {"schema": _ref("ImportRequest")}}},
                tags=("reports",),
            ),
        },
    }
    upgraded = {
        "101": {
            "description": "switching to the WebSocket protocol (RFC 6455)",
            "headers": {
                "Upgrade": {"required": True, "schema": {"type": "string"}},
                "Connection": {"required": True, "schema": {"type": "string"}},
                "Sec-WebSocket-Accept": {"required": True, "schema": {"type": "string"}},
            },
        },
        "400": _shared_error(
            "400", f"a bad Sec-WebSocket-Key, or a ?prefix= over {MAX_KEY_BYTES} bytes"
        ),
        "403": _error("forbidden_origin: a browser Origin not in the allow-list"),
        "426": _error(
            "upgrade_required: not a WebSocket upgrade (a plain GET, a "
            "missing Upgrade or Connection token) or a Sec-WebSocket-Version "
            "other than 13",
            **{
                "Upgrade": {"schema": {"type": "string", "enum": ["websocket"]}},
                "Sec-WebSocket-Version": {"schema": {"type": "string", "enum": ["13"]}},
            },
        ),
    }
    sockets = {
        "/report": (
            "reportSocket",
            'reports: send {"type": "report", "prefix": P}, get '
            "the report file's content back (one JSON text message); errors are "
            '{"type": "error", ...} messages and the socket stays open',
            [],
        ),
        "/watch": (
            "watchSocket",
            "change events of keys under ?prefix= (JSON text messages)",
            [
                {
                    "name": "prefix",
                    "in": "query",
                    "required": False,
                    "description": f"at most {MAX_KEY_BYTES} bytes",
                    "schema": {"type": "string"},
                }
            ],
        ),
    }
    for path, (op_id, what, extra) in sockets.items():
        op = _op(
            op_id,
            f"WebSocket: {what}",
            dict(upgraded),
            security=PUBLIC,
            params=_websocket_params(extra),
            tags=("reports",),
            description="An HTTP/1.1 GET that upgrades to a WebSocket (RFC 6455): the "
            "answer is 101 and the connection then carries WebSocket frames; "
            "client messages are at most 64 KiB.",
        )
        op["x-websocket"] = True
        paths[path] = {"get": op}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "kvraft",
            "version": API_VERSION,
            "description": "A replicated key-value store. Every node serves every request. "
            'Every error body is JSON {"error": code, "message": text}; '
            "unknown routes answer 404, wrong methods 405 with Allow, both "
            "JSON. Admin operations (membership, export, import) need the "
            "admin credential (KVRAFT_ADMIN_TOKEN) always; with KVRAFT_TOKEN "
            "set on the nodes, every other endpoint but /health and / needs "
            "'Authorization: Bearer <token>' (the admin token also passes). "
            "POST bodies of JSON need Content-Type: application/json.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "publicToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "KVRAFT_TOKEN, when the nodes have one",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "KVRAFT_ADMIN_TOKEN (`kvraft up` writes it to data/admin-token)",
                },
            },
            "headers": {
                "Node": {
                    "description": "id of the node that handled the request",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "NodeIfApp": {
                    "description": "id of the node that handled the request (absent "
                    "when the HTTP server answered itself)",
                    "required": False,
                    "schema": {"type": "string"},
                },
                "MapEpoch": {
                    "description": "epoch of the partition map the serving node went by "
                    "(it changes on every move of a replica): a partition-aware client "
                    "that holds an older map fetches GET /cluster again",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "Via": {
                    "description": "id of the node that forwarded the request",
                    "required": False,
                    "schema": {"type": "string"},
                },
            },
            "responses": {
                **_app_responses(),
                **{
                    f"Server{c}": {
                        "description": f"answered by the HTTP server: {t}",
                        "content": {JSON: {"schema": _ref("Error")}},
                    }
                    for c, t in SERVER_ANSWERS.items()
                },
            },
            "schemas": _schemas(),
        },
    }


def _app_responses() -> dict:
    """E<status>: the app's error answers, one per status, describing every code it has."""
    by_status: dict[int, list[str]] = {}
    for code, (status, what) in ERROR_CODES.items():
        by_status.setdefault(status, []).append(f"{code}: {what}")
    out = {}
    for status, lines in sorted(by_status.items()):
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = {
                "required": True,
                "description": 'Bearer realm="kvraft"',
                "schema": {"type": "string"},
            }
        out[f"E{status}"] = _shared_error(str(status), "; ".join(lines), **headers)
    return out
