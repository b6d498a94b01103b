"""The client CLI without a network: formatting, argument parsing, value sources, exit codes,
progress rendering, and the client's failover rules driven through a fake requests adapter."""

from __future__ import annotations

import io
import json
import os

import pytest
import requests
from requests.adapters import BaseAdapter

from kvraft.client import (
    DEFAULT_NODES,
    BadRequest,
    Client,
    KvClientError,
    NotFound,
    ServerError,
    Unauthorized,
    Unavailable,
    nodes_from_env,
    normalize_node,
    quote_key,
)
from kvraft.client import cli as cc
from kvraft.client import format as fmt
from kvraft_cmd.main import build_parser

CLUSTER = {
    "leader": "n2",
    "node": "n1",
    "nodes": [
        {
            "id": "n1",
            "http": "127.0.0.1:8001",
            "alive": True,
            "is_leader": False,
            "keys": 10,
            "bytes": 2048,
        },
        {
            "id": "n2",
            "http": "127.0.0.1:8002",
            "alive": True,
            "is_leader": True,
            "keys": 7,
            "bytes": 100,
        },
        {
            "id": "n3",
            "http": "127.0.0.1:8003",
            "alive": False,
            "is_leader": False,
            "keys": None,
            "bytes": None,
        },
    ],
    "partitions": {"0": ["n1", "n2"], "1": ["n1", "n3"], "2": ["n2", "n3"], "3": ["n1", "n2"]},
    "replication_factor": 2,
    "raft": {"term": 4, "commit_index": 31},
    "hints_pending": 5,
}


# -- formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, text",
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 << 20, "5.0 MiB"),
        (3 << 40, "3.0 TiB"),
        (5000 << 40, "5000.0 TiB"),
    ],
)
def test_human_bytes(n, text):
    assert fmt.human_bytes(n) == text


def test_table_pads_columns_aligns_right_and_has_no_trailing_spaces():
    text = fmt.format_table(("A", "NUM", "C"), [("x", 5, ""), ("long", 123, None)], right=(1,))
    assert text.splitlines() == ["A     NUM  C", "x       5", "long  123  -"]


def test_columns_go_down_then_across_within_the_width():
    items = [f"k{i}" for i in range(7)]
    assert fmt.format_columns(items, width=16).splitlines() == ["k0  k2  k4  k6", "k1  k3  k5"]
    assert fmt.format_columns(items, width=1).splitlines() == items  # never fewer than 1 column
    assert fmt.format_columns([]) == ""


def test_bar_with_total_without_total_and_past_an_estimate():
    assert fmt.render_bar("ls", 5, 10, width=10) == "ls [#####.....]  50%  5/10"
    assert fmt.render_bar("ls", 25, 10, width=4) == "ls [####] 100%  25/10"
    assert fmt.render_bar("ls", 5) == "ls  5"
    assert fmt.render_bar("export", None, elapsed=1.25) == "export  1.2s"


def test_partition_balance_counts_every_node_and_degraded_partitions():
    assert fmt.partition_balance(CLUSTER) == {"n1": 3, "n2": 3, "n3": 2}
    assert fmt.degraded_partitions(CLUSTER) == 2  # partitions 1 and 2 have a replica on n3 (down)
    assert fmt.partition_balance({"nodes": [{"id": "a"}], "partitions": {}}) == {"a": 0}


def test_status_shows_nodes_leader_summary_and_balance():
    text = fmt.format_status(CLUSTER)
    lines = text.splitlines()
    assert lines[0].split() == ["NODE", "HTTP", "ALIVE", "LEADER", "KEYS", "BYTES"]
    assert lines[1].split() == ["n1", "127.0.0.1:8001", "yes", "10", "2.0", "KiB"]
    assert lines[2].split() == ["n2", "127.0.0.1:8002", "yes", "*", "7", "100", "B"]
    assert lines[3].split() == ["n3", "127.0.0.1:8003", "DOWN", "-", "-"]
    assert "leader n2, raft term 4, commit 31, replication factor 2, hints pending 5" in text
    assert "partitions: 4, 8 replicas on 3 nodes (ideal 2.7 per node)" in text
    assert any(line.split()[:2] == ["n3", "2"] for line in lines)
    assert "balance: spread 1 (max 3, min 2); 2 partition(s) missing a live replica" in text


def test_status_without_a_partition_map():
    text = fmt.format_status({"leader": None, "nodes": [], "partitions": {}})
    assert "leader none" in text and "no partition map yet" in text


def test_write_line():
    res = {"key": "a", "version": "v1", "replicas": ["n1", "n2"], "acks": 2, "hinted": ["n3"]}
    assert fmt.format_write("created", res) == (
        "created a  version v1  replicas n1,n2  acks 2  hinted on n3"
    )


def test_value_json_is_text_when_utf8_else_base64():
    assert fmt.value_json("k", "é".encode(), "v", "n1") == {
        "key": "k",
        "version": "v",
        "node": "n1",
        "size": 2,
        "value": "é",
        "encoding": "utf-8",
    }
    doc = fmt.value_json("k", b"\xff\x00", "v", "n1")
    assert (doc["encoding"], doc["value"], doc["size"]) == ("base64", "/wA=", 2)
    assert "value" not in fmt.value_json("k", None, "v", "n1")


# -- value sources, node lists, exit codes -------------------------------------------------------


def test_read_value_from_argument_stdin_and_file(tmp_path):
    stdin = io.BytesIO(b"\x00from stdin\xff")
    assert cc.read_value("plain", None, stdin) == b"plain"
    assert cc.read_value(os.fsdecode(b"\xff\xfe raw"), None, stdin) == b"\xff\xfe raw"
    assert cc.read_value(None, None, stdin) == b"\x00from stdin\xff"
    assert cc.read_value("-", None, io.BytesIO(b"dash")) == b"dash"
    f = tmp_path / "v.bin"
    f.write_bytes(bytes(range(256)))
    assert cc.read_value(None, str(f), stdin) == bytes(range(256))
    assert cc.read_value(None, "-", io.BytesIO(b"s")) == b"s"
    with pytest.raises(cc.UsageError):
        cc.read_value("x", str(f), stdin)


def test_split_nodes():
    assert cc.split_nodes(None) is None
    assert cc.split_nodes(["a:1,b:2", " c:3 "]) == ["a:1", "b:2", "c:3"]
    assert cc.split_nodes([","]) is None


@pytest.mark.parametrize(
    "exc, code",
    [
        (NotFound("x"), 1),
        (BadRequest("x"), 2),
        (Unauthorized("x"), 2),
        (cc.UsageError("x"), 2),
        (ValueError("bad url"), 2),
        (Unavailable("x"), 3),
        (ServerError("x"), 3),
        (KvClientError("x"), 3),
    ],
)
def test_exit_codes(exc, code):
    assert cc.exit_code_for(exc) == code


def test_normalize_node_and_env_defaults():
    assert normalize_node("127.0.0.1:8001") == "http://127.0.0.1:8001"
    assert normalize_node(" https://h:1/ ") == "https://h:1"
    for bad in ("", "ftp://h:1", "http://"):
        with pytest.raises(ValueError):
            normalize_node(bad)
    assert nodes_from_env({}) == list(DEFAULT_NODES)
    assert nodes_from_env({"KVRAFT_NODES": "a:1, http://b:2/"}) == ["http://a:1", "http://b:2"]
    assert nodes_from_env({"KVRAFT_NODES": "2"}) == [
        "http://127.0.0.1:8001",
        "http://127.0.0.1:8002",
    ]
    assert quote_key("a/b c%é") == "a%2Fb%20c%25%C3%A9"
    assert [quote_key(k) for k in (".", "..", "...", "a.b")] == ["%2E", "%2E%2E", "...", "a.b"]


# -- argument parsing ----------------------------------------------------------------------------


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_every_client_command_is_registered_with_a_func():
    for argv in (
        ["put", "k", "v"],
        ["get", "k"],
        ["delete", "k"],
        ["ls"],
        ["status"],
        ["report"],
        ["export"],
        ["import", "snap"],
    ):
        args = parse(*argv)
        assert callable(args.func), argv
        assert args.node is None and args.json is False and args.token is None


def test_put_get_ls_options():
    args = parse(
        "put",
        "k",
        "--file",
        "f.bin",
        "--w",
        "all",
        "--node",
        "a:1",
        "--node",
        "b:2",
        "--json",
        "--token",
        "t",
    )
    assert (args.key, args.value, args.file, args.w) == ("k", None, "f.bin", "all")
    assert args.node == ["a:1", "b:2"] and args.json and args.token == "t"
    args = parse("get", "k", "--out", "o", "--r", "quorum")
    assert (args.out, args.r) == ("o", "quorum")
    args = parse("ls", "--prefix", "p/", "--limit", "5", "--all", "-1")
    assert (args.prefix, args.limit, args.all, args.one, args.after) == ("p/", 5, True, True, None)
    args = parse("ls")
    assert (args.prefix, args.limit, args.all) == ("", 100, False)
    assert parse("import", "snap-1").name == "snap-1"


@pytest.mark.parametrize(
    "argv",
    [
        ["get"],
        ["get", "k", "--r", "most"],
        ["put", "k", "--w", "x"],
        ["ls", "--limit", "many"],
        ["import"],
        ["put"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


def test_ls_limit_below_one_is_a_usage_error(capsys):
    args = parse("ls", "--limit", "0", "--node", "127.0.0.1:9")
    assert args.func(args) == 2
    assert "--limit" in capsys.readouterr().err


def test_put_with_value_and_file_is_a_usage_error_before_any_request(capsys):
    args = parse("put", "k", "v", "--file", "f", "--node", "127.0.0.1:9")
    assert args.func(args) == 2
    assert "not both" in capsys.readouterr().err


# -- progress ------------------------------------------------------------------------------------


def test_progress_is_silent_when_stderr_is_not_a_terminal():
    out = io.StringIO()
    p = cc.Progress("ls", 10, stream=out)
    p.update(5)
    p.close()
    assert out.getvalue() == ""


def test_progress_redraws_throttled_and_clears():
    out, now = io.StringIO(), [0.0]
    p = cc.Progress("ls", 10, stream=out, enabled=True, clock=lambda: now[0])
    p.update(1)
    p.update(2)  # within 0.1 s: skipped
    now[0] = 0.5
    p.update(10)
    p.close()
    frames = out.getvalue().split("\r")
    assert [f for f in frames if "ls" in f] == [
        "ls [###...........................]  10%  1/10  0.0s",
        "ls [##############################] 100%  10/10  0.5s",
    ]
    assert frames[-1] == "" and frames[-2].strip() == ""


# -- client failover through a fake adapter (no sockets) ------------------------------------------


class FakeAdapter(BaseAdapter):
    """Answers by host: an exception instance is raised, a (status, body) pair is returned."""

    def __init__(self, behaviour: dict[str, object]) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.calls: list[tuple[str, str]] = []

    def send(self, request, **kwargs):
        host = request.url.split("/")[2]
        self.calls.append((request.method, host))
        what = self.behaviour[host]
        if isinstance(what, Exception):
            raise what
        status, body = what
        resp = requests.Response()
        resp.status_code = status
        resp._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
        resp._content_consumed = True
        if isinstance(body, bytes):
            resp.headers["Content-Type"] = "application/x-ndjson"
        resp.headers["X-Kvraft-Node"] = host.split(":")[0]
        resp.headers["X-Kvraft-Version"] = "v1"
        resp.url = request.url
        resp.request = request
        return resp

    def close(self):
        pass


REFUSED = requests.exceptions.ConnectionError("NewConnectionError: [Errno 111] Connection refused")
READ_TIMEOUT = requests.exceptions.ReadTimeout("read timed out")
DOWN = (503, {"error": "unavailable", "message": "not ready"})
WROTE = (201, {"key": "k", "version": "v1", "replicas": ["a"], "acks": 1})


def fake_client(behaviour, retries=0):
    sleeps: list[float] = []
    # the transport of requests sent the old way (to any node); routing to replicas is
    # tests/unit/test_client_routing.py's
    c = Client(
        [f"http://{h}" for h in behaviour], retries=retries, sleep=sleeps.append, smart=False
    )
    adapter = FakeAdapter(behaviour)
    c.session.mount("http://", adapter)
    return c, adapter, sleeps


def test_idempotent_requests_move_to_the_next_node_and_stick_to_it():
    c, adapter, _ = fake_client({"a:1": REFUSED, "b:1": READ_TIMEOUT, "c:1": DOWN, "d:1": WROTE})
    res = c.put("k", b"v")
    assert (res.key, res.created, res.node) == ("k", True, "d")
    assert [h for _, h in adapter.calls] == ["a:1", "b:1", "c:1", "d:1"]
    assert c.last_node == "http://d:1"
    adapter.calls.clear()
    c.put("k", b"v")
    assert [h for _, h in adapter.calls] == ["d:1"]


def test_all_nodes_down_gives_unavailable_after_backoff_passes():
    c, adapter, sleeps = fake_client({"a:1": REFUSED, "b:1": DOWN}, retries=2)
    with pytest.raises(Unavailable) as e:
        c.get("k")
    assert len(adapter.calls) == 6 and sleeps == [0.2, 0.4]
    assert [n for n, _ in e.value.errors][:2] == ["http://a:1", "http://b:1"]
    assert "connection refused" in str(e.value)


def test_post_kv_moves_on_only_when_the_connection_never_opened():
    c, adapter, _ = fake_client({"a:1": REFUSED, "b:1": WROTE})
    assert c.create("text").key == "k"
    assert len(adapter.calls) == 2
    c, adapter, _ = fake_client({"a:1": READ_TIMEOUT, "b:1": WROTE})
    with pytest.raises(Unavailable, match="may or may not"):
        c.create("text")
    assert len(adapter.calls) == 1  # the request may have been applied: not repeated
    c, adapter, _ = fake_client({"a:1": DOWN, "b:1": WROTE})
    with pytest.raises(Unavailable):
        c.create("text")
    assert len(adapter.calls) == 1


@pytest.mark.parametrize(
    "status, exc",
    [
        (404, NotFound),
        (400, BadRequest),
        (413, BadRequest),
        (401, Unauthorized),
        (500, ServerError),
    ],
)
def test_a_definite_answer_is_not_retried_and_is_typed(status, exc):
    c, adapter, _ = fake_client({"a:1": (status, {"error": "e", "message": "m"}), "b:1": WROTE})
    with pytest.raises(exc) as e:
        c.put("k", b"v")
    assert (e.value.status, e.value.code, e.value.message) == (status, "e", "m")
    assert len(adapter.calls) == 1


def test_levels_are_checked_before_sending():
    c, adapter, _ = fake_client({"a:1": WROTE})
    with pytest.raises(BadRequest):
        c.put("k", b"v", w="most")
    with pytest.raises(BadRequest):
        c.get("k", r="two")
    assert adapter.calls == []


def test_pages_stop_when_next_does_not_advance():
    c, _, _ = fake_client({"a:1": (200, {"keys": ["x"], "next": "x"})})
    pages = list(c.iter_pages(after="x"))
    assert len(pages) == 1


def test_token_is_sent_as_bearer():
    c = Client(["a:1"], token="s3")
    assert c.session.headers["Authorization"] == "Bearer s3"
    assert "Authorization" not in Client(["a:1"], token="").session.headers


def ndjson(*lines: dict) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def test_streamed_export_reports_progress_then_returns_the_result():
    body = ndjson(
        {"type": "progress", "keys": 1000},
        {"type": "progress", "keys": 2000},
        {"type": "done", "name": "export-x", "keys": 2500, "bytes": 9},
    )
    c, adapter, _ = fake_client({"a:1": (200, body)})
    seen: list[dict] = []
    assert c.export(progress=seen.append) == {"name": "export-x", "keys": 2500, "bytes": 9}
    assert seen == [{"keys": 1000}, {"keys": 2000}]
    assert adapter.calls == [("POST", "a:1")]


@pytest.mark.parametrize(
    "line, exc",
    [
        ({"type": "error", "error": "not_found", "message": "no such export"}, NotFound),
        ({"type": "error", "error": "unavailable", "message": "stopped after 3"}, Unavailable),
        ({"type": "error", "error": "internal", "message": "bug"}, ServerError),
        ({"type": "progress", "keys": 1}, Unavailable),
    ],
)  # the stream ended without a result
def test_streamed_import_errors_are_typed(line, exc):
    c, _, _ = fake_client({"a:1": (200, ndjson({"type": "progress", "keys": 0}, line))})
    with pytest.raises(exc):
        c.import_("export-x", progress=lambda doc: None)


def test_a_node_without_streaming_answers_plain_json():
    c, _, _ = fake_client({"a:1": (201, {"name": "e", "keys": 1, "bytes": 2})})
    assert c.export(progress=lambda doc: None)["name"] == "e"


def test_ticker_shows_server_progress():
    out = io.StringIO()
    t = cc.Ticker("import e", stream=out)
    t.progress.enabled = True
    t.feed({"keys": 5, "total": 10})
    t.progress.update(t.done, force=True)
    assert "import e [###############...............]  50%  5/10" in out.getvalue()
