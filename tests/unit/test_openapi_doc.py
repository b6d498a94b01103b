"""The OpenAPI document on its own (no server): it loads, its references resolve, it keeps the
API's conventions on every operation (JSON errors, X-Kvraft-Node, the bearer credentials, the
HTTP server's own answers), and it cannot drift from the code's error table: every error class
of kvraft has its row in :data:`api.errors.TABLE`, and every row and every error code the HTTP
layer writes is in :data:`api.openapi.ERROR_CODES` with its status, and each of those statuses
is documented. (Routes against the document:
tests/integration/test_openapi.py, which builds the real app.)"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import schemathesis

import kvraft
from api.errors import HTTP_CODES, TABLE, row
from api.openapi import ERROR_CODES, SERVER_ANSWERS, document, path_of, query_checks
from kvraft.errors import KvError

METHODS = ("get", "put", "post", "delete", "patch")
API = Path(__file__).parents[2] / "api"


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def _resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(value):
    if isinstance(value, dict):
        if "$ref" in value:
            yield value["$ref"]
        for v in value.values():
            yield from _refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)


def test_it_is_json_and_every_operation_loads_in_schemathesis():
    doc = json.loads(json.dumps(document()))
    assert doc["openapi"].startswith("3.0")
    schema = schemathesis.openapi.from_dict(doc)
    results = list(schema.get_all_operations())
    assert all(r.ok() for r in results)
    assert len(results) == len(list(_operations(doc)))


def test_every_reference_resolves_and_operation_ids_are_unique():
    doc = document()
    for ref in set(_refs(doc)):
        assert ref.startswith("#/") and _resolve(doc, ref), ref
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids))


def test_links_name_operations_that_exist():
    doc = document()
    ids = {op["operationId"] for _, _, op in _operations(doc)}
    links = [
        link
        for _, _, op in _operations(doc)
        for resp in op["responses"].values()
        for link in resp.get("links", {}).values()
    ]
    assert {"getValue", "deleteValue", "putValue", "import"} <= {x["operationId"] for x in links}
    assert all(link["operationId"] in ids for link in links)


def test_errors_are_the_json_error_and_every_app_answer_names_its_node():
    doc = document()
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    for path, method, op in _operations(doc):
        assert op["responses"], (path, method)
        for status, resp in op["responses"].items():
            resp = _resolve(doc, resp["$ref"]) if "$ref" in resp else resp
            if status == "101":  # the websocket upgrade: no body, the connection changes
                continue
            node = resp.get("headers", {}).get("X-Kvraft-Node")
            if status in SERVER_ANSWERS:  # the HTTP server may answer it, without the header
                assert node is None or node["$ref"].endswith("/NodeIfApp"), (path, status)
            else:
                assert node == {"$ref": "#/components/headers/Node"}, (path, method, status)
            if int(status) >= 400:
                assert resp["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }, (path, method, status)


def test_the_credentials_and_refusals_of_the_shared_contract_are_on_every_operation():
    doc = document(max_value_bytes=12345)
    schemes = doc["components"]["securitySchemes"]
    assert {k: (v["type"], v["scheme"]) for k, v in schemes.items()} == {
        "publicToken": ("http", "bearer"),
        "adminToken": ("http", "bearer"),
    }
    admin = {
        ("/cluster/members", "post"),
        ("/cluster/members/{node_id}", "delete"),
        ("/export", "post"),
        ("/import", "post"),
    }
    unauth = doc["components"]["responses"]["E401"]
    assert unauth["headers"]["WWW-Authenticate"]["required"]
    for path, method, op in _operations(doc):
        responses = op["responses"]
        if (path, method) in admin:
            assert op["security"] == [{"adminToken": []}], (path, method)
        elif path in ("/health", "/"):
            assert op["security"] == [] and "401" not in responses
        else:  # a token only when the node has one; the admin token passes too
            assert op["security"] == [{}, {"publicToken": []}, {"adminToken": []}], path
        if op["security"]:
            assert "401" in responses, (path, method)
        takes_json = "application/json" in op.get("requestBody", {}).get("content", {})
        assert ("415" in responses) == takes_json, (path, method)
        assert set(SERVER_ANSWERS) <= set(responses), (path, method)
        if op.get("x-websocket"):
            assert {"101", "400", "403"} <= set(responses), path
            names = {p["name"] for p in op["parameters"] if p["in"] == "header"}
            assert {
                "Upgrade",
                "Connection",
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Version",
                "Origin",
            } <= names
    put = doc["paths"]["/kv/{key}"]["put"]
    assert "12345" in put["requestBody"]["description"] and "413" in put["responses"]
    assert not any(p.startswith("/peer/") for p in doc["paths"])


def _error_classes() -> set[type[KvError]]:
    for mod in pkgutil.walk_packages(kvraft.__path__, "kvraft."):
        if not mod.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(mod.name)
    found, todo = set(), [KvError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_every_error_class_of_the_store_is_in_the_error_table_with_its_status():
    classes = _error_classes()
    assert len(classes) >= 6  # BadRequest, NotFound, Conflict, TooLarge, Unavailable, Ftp...
    for cls in classes:
        # its own row or a row of a base below KvError: never the 500 of KvError itself
        own = cls.__mro__[: cls.__mro__.index(KvError)]
        assert any(base in TABLE for base in own), f"{cls.__module__}.{cls.__name__}"
        status, code = row(cls)
        assert status != 500, cls
        assert ERROR_CODES.get(code, (None,))[0] == status, (cls, status, code)
    for cls, (status, code) in TABLE.items():
        assert ERROR_CODES.get(code, (None,))[0] == status, (cls, status, code)


# the ways api/ writes an error: helpers (api.kv.error and its aliases), the HTTP server's
# HttpError, the access Refusal, and the websocket handshake's (status, code, message) tuples
_WRITES = re.compile(
    r"\b(?:error|_error|_json_error|_Reject|HttpError|Refusal)\(\s*(\d{3}),\s*"
    r"\"([a-z_]+)\"|\breturn (\d{3}), \"([a-z_]+)\""
)


def test_every_error_code_the_http_layer_writes_is_in_the_error_table():
    written = set()
    for source in API.glob("*.py"):
        written |= {(int(s or s2), c or c2) for s, c, s2, c2 in _WRITES.findall(source.read_text())}
    written |= {(s, c) for s, c in HTTP_CODES.items()}
    assert len(written) >= 10
    for status, code in sorted(written):
        assert ERROR_CODES.get(code, (None,))[0] == status, (status, code)


def test_every_status_of_the_error_table_is_documented_somewhere():
    doc = document()
    documented = {s for _, _, op in _operations(doc) for s in op["responses"]}
    # 405: the answer to a method that is not an operation; 410: peers only; 500: a bug
    for code, (status, _what) in ERROR_CODES.items():
        if status not in (405, 410, 500):
            assert str(status) in documented, (code, status)


def test_query_checks_come_from_the_documents_enums_and_ranges():
    checks = query_checks(document())
    assert checks[("/export", "POST")]["progress"]("1") is None
    assert "must be one of" in checks[("/export", "POST")]["progress"]("yes")
    assert checks[("/kv/{key}", "PUT")]["w"]("all") is None
    assert checks[("/kv/{key}", "GET")]["r"]("bogus")
    assert checks[("/kv/{key}", "GET")]["redirect"]("2")
    limit = checks[("/kv", "GET")]["limit"]
    assert limit("1") is None and limit("1000") is None
    assert all(limit(v) for v in ("0", "1001", "1.5", "x", " 5", "\u0665"))
    assert "prefix" not in checks[("/kv", "GET")]  # a free string: nothing to check
    assert path_of("/kv/<key:key>") == "/kv/{key}"
    assert path_of("/cluster/members/<node_id>") == "/cluster/members/{node_id}"
