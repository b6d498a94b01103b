"""The one key handler (api/kv.py) both request paths use, over a fake KeyValue: headers,
statuses, the level checked before the body is read, the value limit, the stamps."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from api.kv import KeyHandler, stamps, too_large
from kvraft.errors import BadRequest, NotFound, TooLarge
from kvraft.model import Record, Version


@dataclass
class _Written:
    created: bool
    key: str

    def to_json(self) -> dict:
        return {"key": self.key, "version": "v", "replicas": ["n1"], "acks": 1}


class FakeKv:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.calls: list[tuple] = []

    def get(self, key: str, r: str = "one") -> Record:
        self.calls.append(("get", key, r))
        if key not in self.data:
            raise NotFound(f"key {key!r} not found")
        return Record(key, 0, Version(5, "n1"), False, self.data[key])

    def put(self, key: str, value: bytes, w: str = "quorum"):
        self.calls.append(("put", key, w))
        created = key not in self.data
        self.data[key] = value
        return _Written(created, key)


def _reader(value: bytes):
    def read(limit: int) -> bytes:
        too_large(len(value), limit)
        return value

    return read


def test_put_is_201_when_created_then_200_and_get_carries_the_version_headers():
    kv = FakeKv()
    h = KeyHandler(kv, max_value_bytes=10)
    status, body, headers = h.put("a", None, _reader(b"one"))
    assert status == 201 and json.loads(body)["key"] == "a"
    assert ("Content-Type", "application/json") in headers
    assert h.put("a", "all", _reader(b"two"))[0] == 200
    assert kv.calls[-1] == ("put", "a", "all")
    status, body, headers = h.get("a", None)
    version = Version(5, "n1").encode()
    assert (status, body) == (200, b"two")
    assert dict(headers) == {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{version}"',
        "X-Kvraft-Version": version,
    }
    assert kv.calls[-1] == ("get", "a", "one")


def test_an_unknown_level_is_refused_before_the_body_is_read():
    def never(_limit: int) -> bytes:
        raise AssertionError("body read")

    h = KeyHandler(FakeKv(), 10)
    with pytest.raises(BadRequest):
        h.put("a", "most", never)
    with pytest.raises(BadRequest):
        h.get("a", "bogus")


def test_a_value_over_the_limit_is_too_large_and_stores_nothing():
    kv = FakeKv()
    with pytest.raises(TooLarge, match=r"value \(max_value_bytes\) exceeds 3 bytes"):
        KeyHandler(kv, 3).put("a", None, _reader(b"four"))
    assert kv.data == {}


def test_stamps_name_the_node_unless_forwarded_and_a_401_its_scheme():
    assert stamps(200, [], "n1") == [("X-Kvraft-Node", "n1")]
    assert stamps(200, ["X-Kvraft-Node"], "n1") == []
    assert stamps(401, [], "n1") == [
        ("X-Kvraft-Node", "n1"),
        ("WWW-Authenticate", 'Bearer realm="kvraft"'),
    ]
    assert stamps(401, ["X-Kvraft-Node", "WWW-Authenticate"], "n1") == []
