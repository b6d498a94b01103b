"""The OpenAPI document on its own (no server): it loads, its references resolve, and it keeps
the API's conventions on every operation (JSON errors, X-Kvraft-Node, the token)."""

from __future__ import annotations

import json

import schemathesis

from api.openapi import document

METHODS = ("get", "put", "post", "delete", "patch")


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


def test_errors_are_the_json_error_and_every_answer_names_its_node():
    doc = document()
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    for path, method, op in _operations(doc):
        assert op["responses"], (path, method)
        for status, resp in op["responses"].items():
            resp = _resolve(doc, resp["$ref"]) if "$ref" in resp else resp
            if status != "101" and status not in ("414", "431"):  # the server's own limits
                assert "X-Kvraft-Node" in resp.get("headers", {}), (path, method, status)
            if status == "101":  # the websocket upgrade
                continue
            if int(status) >= 400:
                assert resp["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}, (path, method, status)


def test_token_everywhere_but_health_and_values_limits_are_stated():
    doc = document(max_value_bytes=12345)
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, method, op in _operations(doc):
        if path == "/health":
            assert op["security"] == [] and "401" not in op["responses"]
        else:
            assert "security" not in op and "401" in op["responses"], (path, method)
    put = doc["paths"]["/kv/{key}"]["put"]
    assert "12345" in put["requestBody"]["description"] and "413" in put["responses"]
    assert not any(p.startswith("/peer/") for p in doc["paths"])
