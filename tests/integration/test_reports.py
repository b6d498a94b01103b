"""WebSocket /report, POST /export and POST /import against a real 3-node cluster (with a bearer
token) and a real FTP server in this process, checked with websocket-client and stdlib ftplib.

The FTP server can be stopped, started again on the same port, or restarted with another
password (so the nodes' credentials become wrong), without restarting the cluster.
"""

from __future__ import annotations

import base64
import contextlib
import ftplib
import io
import json
import random
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websocket

from kvraft.ftp import FtpServer
from kvraft.report import decode_value
from tests.harness.cluster import ADMIN, Cluster, quote_key

USER, PASSWORD = "kvraft", "report-test-pw"
TOKEN = "report-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Ftp:
    """A real FTP server on one port for the whole module; a FtpServer is one-shot, so each
    start is a new server on the same port and root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.port = 0
        self.server: FtpServer | None = None

    def start(self, password: str = PASSWORD) -> None:
        self.server = FtpServer(
            "127.0.0.1", self.port, USER, password, self.root, auth_failed_delay=0
        )
        self.server.start()
        self.port = self.server.address[1]

    def stop(self) -> None:
        assert self.server is not None and self.server.stop()

    def env(self) -> dict[str, str]:
        return {
            "KVRAFT_FTP": f"127.0.0.1:{self.port}",
            "KVRAFT_FTP_USER": USER,
            "KVRAFT_FTP_PASSWORD": PASSWORD,
            "KVRAFT_TOKEN": TOKEN,
        }

    def fetch(self, name: str) -> bytes:
        """The file as an independent client (stdlib ftplib) sees it."""
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", self.port, timeout=10)
            ftp.login(USER, PASSWORD)
            assert name in ftp.nlst()
            out = io.BytesIO()
            ftp.retrbinary(f"RETR {name}", out.write)
        return out.getvalue()

    def store(self, name: str, data: bytes) -> None:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", self.port, timeout=10)
            ftp.login(USER, PASSWORD)
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))


def _start_cluster(root: str, ftp: Ftp) -> Cluster:
    c = Cluster(root, env=ftp.env())
    c.http.headers.update(AUTH)  # the harness's own requests (/ready, puts) need the token
    return c


@pytest.fixture(scope="module")
def ftp(tmp_path_factory):
    server = Ftp(str(tmp_path_factory.mktemp("ftproot")))
    server.start()
    yield server
    server.server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ftp):
    with _start_cluster(str(tmp_path_factory.mktemp("reports")), ftp) as c:
        yield c


@pytest.fixture(scope="module")
def second(tmp_path_factory, ftp):
    """An empty cluster of its own, to import into."""
    with _start_cluster(str(tmp_path_factory.mktemp("imports")), ftp) as c:
        yield c


@pytest.fixture(scope="module")
def data(cluster) -> dict[str, bytes]:
    """What the store holds: 1,200 keys (more than one listing page), text and binary values."""
    rng = random.Random(4)
    items = {f"r/{i:04d}": rng.randbytes(rng.randrange(0, 64)) for i in range(1200)}
    items.update(
        {
            "bin": b"\x00\xff\xfe\x80",
            "uni": "héllo ✓".encode(),
            "empty": b"",
            "other/x": b"not under r/",
            "r/deleted": b"soon gone",
        }
    )
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda kv: _put(cluster, *kv), items.items()))
    assert set(statuses) == {201}
    assert requests.delete(f"{cluster.url(0)}/kv/r%2Fdeleted", headers=AUTH, timeout=10).ok
    del items["r/deleted"]
    return items


def _put(c: Cluster, key: str, value: bytes) -> int:
    i = sum(map(ord, key)) % c.n  # spread the writes over every node
    return requests.put(
        f"{c.url(i)}/kv/{quote_key(key)}", data=value, headers=AUTH, timeout=10
    ).status_code


@contextlib.contextmanager
def _ws(c: Cluster, i: int, path: str = "/report", **kw) -> Iterator[websocket.WebSocket]:
    kw.setdefault("header", [f"Authorization: Bearer {TOKEN}"])
    ws = websocket.create_connection(f"ws://{c.nodes[i].http}{path}", timeout=30, **kw)
    try:
        yield ws
    finally:
        ws.close()
        ws.shutdown()  # close() skips the socket once a server's close frame was received


def _ask(ws: websocket.WebSocket, message: str | None = None, **fields) -> dict:
    ws.send(message if message is not None else json.dumps({"type": "report", **fields}))
    return json.loads(ws.recv())


def _values(report: dict) -> dict[str, bytes]:
    return {k["key"]: decode_value(k["value"], k["encoding"]) for k in report["keys"]}


# -- /report ---------------------------------------------------------------------------------


def test_report_holds_exactly_the_keys_written_and_went_through_ftp(cluster, data, ftp):
    with _ws(cluster, 1) as ws:
        ws.send(json.dumps({"type": "report"}))
        text = ws.recv()
    report = json.loads(text)
    assert _values(report) == data
    assert report["count"] == len(data) and report["node"] == "n2"
    assert {k["key"]: k["encoding"] for k in report["keys"]}["bin"] == "base64"
    assert [n["id"] for n in report["cluster"]["nodes"]] == ["n1", "n2", "n3"]
    assert ftp.fetch(report["file"]) == text.encode()  # the reply is the file RETR gave back


def test_report_with_prefix_and_several_requests_on_one_socket(cluster, data):
    with _ws(cluster, 0) as ws:
        first = _ask(ws, prefix="other/")
        second = _ask(ws, prefix="r/001")
    assert _values(first) == {"other/x": b"not under r/"}
    assert _values(second) == {k: v for k, v in data.items() if k.startswith("r/001")}


def test_two_clients_at_once(cluster, data):
    with _ws(cluster, 0) as one, _ws(cluster, 2) as two:
        for ws in (one, two):
            ws.send(json.dumps({"type": "report"}))
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda ws: json.loads(ws.recv()), (one, two)))
    assert [_values(r) for r in replies] == [data, data]
    assert {r["node"] for r in replies} == {"n1", "n3"} and replies[0]["file"] != replies[1]["file"]


@pytest.mark.parametrize(
    "message, why",
    [
        ("hello", "must be JSON"),
        ("[1, 2]", "JSON objects"),
        ('{"type": "drop-table"}', "unknown message type 'drop-table'"),
        ('{"type": "report", "prefix": 3}', "prefix"),
    ],
)
def test_bad_messages_get_an_error_and_the_socket_still_works(cluster, data, message, why):
    with _ws(cluster, 0) as ws:
        error = _ask(ws, message)
        assert error["type"] == "error" and error["error"] == "bad_request"
        assert why in error["message"]
        assert _values(_ask(ws, prefix="other/")) == {"other/x": b"not under r/"}


def test_oversized_message_closes_the_socket_with_1009(cluster, data):
    with _ws(cluster, 0) as ws:
        # at the limit: accepted (unknown fields are ignored)
        padded = json.dumps({"type": "report", "prefix": "other/", "pad": ""})
        padded = padded[:-2] + "x" * (64 * 1024 - len(padded)) + '"}'
        assert len(padded) == 64 * 1024
        assert _values(_ask(ws, padded)) == {"other/x": b"not under r/"}
        ws.send("x" * (64 * 1024 + 1))
        opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", payload[:2])[0] == 1009
    assert payload[2:] == b"Message is too big"
    with _ws(cluster, 0) as ws:  # the node keeps serving
        assert _values(_ask(ws, prefix="other/")) == {"other/x": b"not under r/"}


def test_origin_check(cluster):
    url = f"ws://{cluster.nodes[0].http}/report"
    port = cluster.nodes[0].http.rpartition(":")[2]
    for origin in (
        "http://evil.example",
        f"http://evil.example:{port}",
        "http://127.0.0.1:1",
        "null",
        "file://",
    ):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(
                url, origin=origin, header=[f"Authorization: Bearer {TOKEN}"], timeout=10
            )
        assert info.value.status_code == 403
        assert json.loads(info.value.resp_body)["error"] == "forbidden_origin"
    for kw in ({"suppress_origin": True}, {"origin": f"http://{cluster.nodes[0].http}"}, {}):
        with _ws(cluster, 0, **kw):  # non-browser clients and this host's pages
            pass


def test_token_is_required_on_sockets(cluster):
    for path in ("/report", "/watch"):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            with _ws(cluster, 0, path, header=[]):
                pass
        assert info.value.status_code == 401
        with pytest.raises(websocket.WebSocketBadStatusException):
            with _ws(cluster, 0, path, header=["Authorization: Bearer wrong"]):
                pass


def test_ftp_down_is_a_clear_error_and_the_same_socket_works_after_restart(cluster, data, ftp):
    with _ws(cluster, 2) as ws:
        ftp.stop()
        try:
            error = _ask(ws)
            assert error["type"] == "error" and error["error"] == "ftp_unavailable"
            assert f"127.0.0.1:{ftp.port} unreachable: connection refused" in error["message"]
            resp = requests.post(f"{cluster.url(0)}/export", headers=ADMIN, timeout=30)
            assert resp.status_code == 503 and resp.json()["error"] == "ftp_unavailable"
            assert cluster.get(2, "bin").content == data["bin"]  # still serving
        finally:
            ftp.start()
        assert _values(_ask(ws)) == data


def test_wrong_ftp_credentials_are_a_clear_error_and_the_node_keeps_serving(cluster, data, ftp):
    with _ws(cluster, 1) as ws:
        ftp.stop()
        ftp.start(password="not-what-the-nodes-have")
        try:
            error = _ask(ws)
            assert error["type"] == "error" and error["error"] == "ftp_auth"
            assert "refused this node's credentials" in error["message"]
            assert f"user '{USER}'" in error["message"] and PASSWORD not in error["message"]
            resp = requests.post(f"{cluster.url(1)}/export", headers=ADMIN, timeout=30)
            assert resp.status_code == 502 and resp.json()["error"] == "ftp_auth"
            assert cluster.get(1, "uni").content == data["uni"]
        finally:
            ftp.stop()
            ftp.start()
        assert _values(_ask(ws, prefix="other/")) == {"other/x": b"not under r/"}


# -- export and import ------------------------------------------------------------------------


def _read_export(raw: bytes) -> tuple[dict, dict[str, bytes]]:
    lines = raw.decode().splitlines()
    header = json.loads(lines[0])
    records = [json.loads(line) for line in lines[1:]]
    return header, {r["key"]: base64.b64decode(r["value"]) for r in records}


@pytest.fixture(scope="module")
def exported(cluster, data, ftp) -> dict:
    resp = requests.post(f"{cluster.url(1)}/export", headers=ADMIN, timeout=60)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_export_fetched_with_stdlib_ftplib_matches_the_store(exported, data, ftp):
    assert exported["name"].startswith("export-n2-") and exported["keys"] == len(data)
    raw = ftp.fetch(exported["name"])
    assert len(raw) == exported["bytes"]
    header, records = _read_export(raw)
    assert header["format"] == "kvraft-export" and header["version"] == 1
    assert header["keys"] == len(data) and header["value_bytes"] == sum(map(len, data.values()))
    assert records == data


def test_export_with_progress_streams_lines(cluster, data):
    with requests.post(
        f"{cluster.url(0)}/export", params={"progress": 1}, headers=ADMIN, stream=True, timeout=60
    ) as resp:
        assert resp.status_code == 200
        lines = [json.loads(line) for line in resp.iter_lines()]
    assert [x["type"] for x in lines] == ["progress", "done"]
    assert lines[0]["keys"] == 1000
    assert lines[-1]["keys"] == len(data) and lines[-1]["name"].startswith("export-n1-")


def _all_keys(c: Cluster) -> list[str]:
    keys, after = [], None
    while True:
        params = {"limit": 1000, **({"after": after} if after else {})}
        body = requests.get(f"{c.url(0)}/kv", params=params, headers=ADMIN, timeout=10).json()
        keys += body["keys"]
        if body["next"] is None:
            return keys
        after = body["next"]


def test_import_of_bad_names_or_files_is_refused_and_changes_nothing(second, cluster, ftp):
    requests.put(f"{second.url(0)}/kv/before", data=b"1", headers=ADMIN, timeout=10)
    before = _all_keys(second)
    url = f"{second.url(1)}/import"
    for body in (
        {"name": "../../etc/passwd"},
        {"name": "/export-n1-20260101T000000Z-0123abcd.json"},
        {"name": "report-n1-20260101T000000Z-0123abcd.json"},
        {"name": 7},
        {},
        [],
        {"name": "export-n1-20260101T000000Z-0123abcd.json/../x"},
    ):
        resp = requests.post(url, json=body, headers=ADMIN, timeout=10)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"] == "bad_request"
    resp = requests.post(
        url, data=b"{not json", timeout=10, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    resp = requests.post(
        url, json={"name": "export-n9-20260101T000000Z-0123abcd.json"}, headers=ADMIN, timeout=10
    )
    assert resp.status_code == 404 and "no export named" in resp.json()["message"]
    bogus = "export-n9-20260101T000000Z-deadbeef.json"
    ftp.store(
        bogus,
        b'{"format": "kvraft-export", "version": 1, "keys": 2}\n'
        b'{"key": "fine", "value": "AA=="}\n{"key": "broken", "value": "***"}\n',
    )
    resp = requests.post(url, json={"name": bogus}, headers=ADMIN, timeout=10)
    assert resp.status_code == 400 and "line 3" in resp.json()["message"]
    assert _all_keys(second) == before  # not even "fine" was written


def test_import_restores_an_export_into_a_fresh_cluster(second, exported, data):
    resp = requests.post(
        f"{second.url(2)}/import", json={"name": exported["name"]}, headers=ADMIN, timeout=120
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"name": exported["name"], "keys": len(data), "bytes": exported["bytes"]}
    with _ws(second, 0) as ws:
        restored = _values(_ask(ws))
    restored.pop("before", None)  # written by the previous test
    assert restored == data
    assert second.get(1, "bin").content == data["bin"]
