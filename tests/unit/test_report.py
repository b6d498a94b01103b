"""Report, export and import logic without a network: file formats, validation, paging, and
Reports against an in-memory node and FTP server."""

from __future__ import annotations

import io
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.errors import describe
from kvraft.errors import BadRequest, NotFound, Unavailable
from kvraft.hlc import Version
from kvraft.keys import check_key
from kvraft.reports import (
    BadExport,
    ChainReader,
    Entry,
    FtpAuthError,
    FtpAuthFailed,
    FtpError,
    FtpUnavailable,
    Reports,
    check_export_name,
    decode_value,
    encode_value,
    export_header,
    live_entries,
    local_records,
    new_remote_name,
    parse_report_request,
    read_export,
    write_export_body,
    write_report,
)
from kvraft.reports.fake import MemoryUploader
from kvraft.storage import Record

keys_st = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f"),
    min_size=1,
    max_size=40,
).filter(lambda k: len(k.encode()) <= 1024)


def _entry(key: str, value: bytes, ts: int = 1) -> Entry:
    return Entry(key, value, Version(ts, "n1"))


def _export_bytes(entries: list[Entry]) -> bytes:
    body = io.BytesIO()
    keys, nbytes = write_export_body(body, entries)
    return export_header("n1", "2026-01-01T00:00:00Z", keys, nbytes) + body.getvalue()


# -- values and files ----------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_value_encoding_round_trips_and_marks_non_utf8(value):
    text, encoding = encode_value(value)
    assert decode_value(text, encoding) == value
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        assert encoding == "base64"
    else:
        assert (text, encoding) == (value.decode(), "utf-8")


def test_unknown_value_encoding_is_an_error():
    with pytest.raises(ValueError):
        decode_value("x", "rot13")


def test_report_is_one_json_document_with_every_entry():
    out = io.StringIO()
    entries = [_entry("a", b"text"), _entry("b", b"\xff\xfe"), _entry("c\u00e9", "é".encode())]
    count = write_report(out, {"generated_at": "t", "node": "n1", "cluster": {"x": [1]}}, entries)
    doc = json.loads(out.getvalue())
    assert count == doc["count"] == 3
    assert doc["node"] == "n1" and doc["cluster"] == {"x": [1]}
    assert doc["keys"][1] == {
        "key": "b",
        "value": "//4=",
        "encoding": "base64",
        "version": Version(1, "n1").encode(),
    }
    assert [decode_value(k["value"], k["encoding"]) for k in doc["keys"]] == [
        b"text",
        b"\xff\xfe",
        "é".encode(),
    ]


def test_empty_report_is_valid_json():
    out = io.StringIO()
    assert write_report(out, {"node": "n1"}, []) == 0
    assert json.loads(out.getvalue()) == {"node": "n1", "keys": [], "count": 0}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(keys_st, st.binary(max_size=300), max_size=30))
def test_export_round_trips_any_keys_and_values(data):
    entries = [_entry(k, v) for k, v in sorted(data.items())]
    raw = _export_bytes(entries)
    header = json.loads(raw.split(b"\n", 1)[0])
    assert header["keys"] == len(data) and header["value_bytes"] == sum(map(len, data.values()))
    assert dict(read_export(io.BytesIO(raw), "f", 1 << 20)) == data


def test_export_progress_is_reported_every_page():
    seen = []
    write_export_body(
        io.BytesIO(), [_entry(f"k{i}", b"v") for i in range(25)], progress=seen.append, every=10
    )
    assert seen == [{"keys": 10, "value_bytes": 10}, {"keys": 20, "value_bytes": 20}]


@pytest.mark.parametrize(
    "raw, line, why",
    [
        (b"", 1, "first line must be the JSON header"),
        (b'{"format": "other", "version": 1, "keys": 0}\n', 1, "format"),
        (b'{"format": "kvraft-export", "version": 9, "keys": 0}\n', 1, "version 9"),
        (b'{"format": "kvraft-export", "version": 1}\n', 1, "key count"),
        (b'{"format": "kvraft-export", "version": 1, "keys": 1}\nnot json\n', 2, "bad record"),
        (
            b'{"format": "kvraft-export", "version": 1, "keys": 1}\n{"key": "a", "value": "!!"}\n',
            2,
            "bad record",
        ),
        (
            b'{"format": "kvraft-export", "version": 1, "keys": 1}\n'
            b'{"key": "a\\u0001", "value": ""}\n',
            2,
            "control characters",
        ),
        (
            b'{"format": "kvraft-export", "version": 1, "keys": 1}\n{"key": "", "value": ""}\n',
            2,
            "1 to 1024 bytes",
        ),
        (
            b'{"format": "kvraft-export", "version": 1, "keys": 1}\n{"key": 1, "value": ""}\n',
            2,
            "strings",
        ),
        (
            b'{"format": "kvraft-export", "version": 1, "keys": 1}\n'
            b'{"key": "a", "value": "AAAAAAAA"}\n',
            2,
            "exceeds max_value_bytes",
        ),
        (
            b'{"format": "kvraft-export", "version": 1, "keys": 2}\n{"key": "a", "value": ""}\n',
            3,
            "promises 2 keys, the file holds 1",
        ),
    ],
)
def test_bad_export_files_are_rejected_with_the_line(raw, line, why):
    with pytest.raises(BadExport, match=f"line {line}: .*{why}") as info:
        list(read_export(io.BytesIO(raw), "export-x.json", max_value_bytes=4))
    assert describe(info.value)[:2] == (400, "bad_request")


def test_overlong_line_is_rejected_without_reading_it_whole():
    raw = _export_bytes([_entry("a", b"x" * 100)])
    with pytest.raises(BadExport, match="line 2: line too long"):
        list(read_export(io.BytesIO(raw.replace(b'"}', b'"' + b" " * 10000 + b"}")), "f", 4))


def test_export_names_are_exactly_the_generated_ones():
    for node_id in ("n1", "node_7", "a-b"):
        name = new_remote_name("export", node_id)
        assert check_export_name(name) == name
    bad = [
        "",
        None,
        7,
        "../export-n1-20260101T000000Z-0123abcd.json",
        "/export-n1-20260101T000000Z-0123abcd.json",
        "export-n1-20260101T000000Z-0123abcd.json/../../etc/passwd",
        "export-n1-20260101T000000Z-0123abcd.json\n",
        "report-n1-20260101T000000Z-0123abcd.json",
        "export-n1-20260101T000000Z-0123ABCD.json",
        "export-n.1-20260101T000000Z-0123abcd.json",
        "export-n1-20260101T000000Z-0123abcd.json.gz",
        "dir\\export-n1.json",
    ]
    for name in bad:
        with pytest.raises(BadRequest):
            check_export_name(name)


@pytest.mark.parametrize(
    "msg, prefix",
    [
        ('{"type": "report"}', ""),
        (b'{"type": "report", "prefix": "a/"}', "a/"),
    ],
)
def test_report_requests(msg, prefix):
    assert parse_report_request(msg) == prefix


@pytest.mark.parametrize(
    "msg, why",
    [
        ("nope", "must be JSON"),
        (b"\xff\xfe", "must be JSON"),
        ("[1, 2]", "JSON objects"),
        ('{"type": "delete-everything"}', "unknown message type 'delete-everything'"),
        ("{}", "unknown message type None"),
        ('{"type": "report", "prefix": 5}', "prefix"),
        ('{"type": "report", "prefix": "' + "x" * 1025 + '"}', "prefix"),
    ],
)
def test_bad_report_requests(msg, why):
    with pytest.raises(BadRequest, match=why):
        parse_report_request(msg)


def test_chain_reader_reads_parts_in_order_in_blocks():
    parts = [io.BytesIO(b"head\n"), io.BytesIO(b""), io.BytesIO(b"x" * 10)]
    reader = ChainReader(parts)
    blocks = list(iter(lambda: reader.read(4), b""))
    assert b"".join(blocks) == b"head\n" + b"x" * 10
    assert max(map(len, blocks)) <= 4


def test_local_records_stop_past_the_byte_budget():
    store = {f"k{i}": Record(f"k{i}", 0, Version(i, "n1"), False, b"x" * 10) for i in range(10)}
    recs, done = local_records(store.get, ["k0", "missing", "k1", "k2", "k3"], max_bytes=25)
    assert [r.key for r in recs] == ["k0", "k1", "k2"] and done == 4
    recs, done = local_records(store.get, ["k5"], max_bytes=1)
    assert len(recs) == 1 and done == 1


# -- Reports on an in-memory node and FTP server ---------------------------------------------


class FakeStorage:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def get(self, key: str) -> Record | None:
        return self.records.get(key)


class FakeNode:
    """One-node cluster holding everything: the parts of Node that Reports uses (and a few
    more, which Reports must not need: see the test with a strict source)."""

    def __init__(self, data_dir: str, node_id: str = "n1") -> None:
        self.id = node_id
        self.storage = FakeStorage()
        self.pool = ThreadPoolExecutor(4)
        self.config = SimpleNamespace(data_dir=data_dir, max_value_bytes=1 << 20)
        self.ts = 0
        self.list_calls: list[int] = []
        self.fail_puts_after: int | None = None

    def put(self, key: str, value: bytes, w: str = "quorum"):
        check_key(key)
        if self.fail_puts_after is not None and self.ts >= self.fail_puts_after:
            raise Unavailable("replicas down")
        self.ts += 1
        self.storage.records[key] = Record(key, 0, Version(self.ts, self.id), False, value)

    def delete(self, key: str) -> None:
        self.ts += 1
        self.storage.records[key] = Record(key, 0, Version(self.ts, self.id), True)

    def list_keys(self, prefix: str = "", after: str | None = None, limit: int = 100):
        self.list_calls.append(limit)
        live = sorted(
            k
            for k, r in self.storage.records.items()
            if k.startswith(prefix) and not r.tomb and (after is None or k > after)
        )
        page = live[:limit]
        return page, (page[-1] if len(live) > limit else None)

    def get(self, key: str, r: str = "one") -> Record:
        rec = self.storage.records.get(key)
        if rec is None or rec.tomb:
            raise NotFound(f"key {key!r} not found")
        return rec

    def get_many(self, keys, r: str = "one") -> dict[str, Record | None]:
        found = {k: self.storage.records.get(k) for k in keys}
        return {k: None if rec is None or rec.tomb else rec for k, rec in found.items()}

    def replicas_of(self, key: str):
        return 0, (self.id,)

    def is_alive(self, node_id: str) -> bool:
        return True

    def members(self) -> dict[str, str]:
        return {self.id: "127.0.0.1:1"}

    def cluster(self) -> dict:
        return {"node": self.id, "nodes": [{"id": self.id}]}

    def values(self) -> dict[str, bytes]:
        return {k: r.value for k, r in self.storage.records.items() if not r.tomb}


@pytest.fixture
def node(tmp_path):
    n = FakeNode(str(tmp_path / "n1"))
    rng = random.Random(5)
    for i in range(2500):
        n.put(f"k/{i:05d}", rng.randbytes(rng.randrange(0, 40)))
    n.put("bin", b"\x00\xff\xfe")
    n.put("text", "grüße".encode())
    n.put("gone", b"x")
    n.delete("gone")
    yield n
    n.pool.shutdown()


@pytest.fixture
def ftp():
    return MemoryUploader()


def test_report_goes_through_ftp_and_holds_every_live_key(node, ftp):
    reports = Reports(node, ftp=ftp, clock=lambda: 1_800_000_000.0)
    with reports.report() as f:
        text = f.read()
    doc = json.loads(text)
    assert list(ftp.files) == [doc["file"]] and ftp.files[doc["file"]] == text.encode()
    assert doc["file"].startswith("report-n1-20270115T")
    assert doc["generated_at"] == "2027-01-15T08:00:00Z" and doc["node"] == "n1"
    got = {k["key"]: decode_value(k["value"], k["encoding"]) for k in doc["keys"]}
    assert got == node.values() and "gone" not in got
    assert [k["key"] for k in doc["keys"]] == sorted(got)
    assert doc["count"] == len(got) == 2502
    assert len(node.list_calls) >= 3  # paged, not one listing of everything
    assert ftp.largest_read <= 64 * 1024
    assert list((Path(node.config.data_dir) / "spool").iterdir()) == []  # temp files are gone


def test_report_with_prefix(node, ftp):
    with Reports(node, ftp=ftp).report("k/0000") as f:
        doc = json.loads(f.read())
    assert [k["key"] for k in doc["keys"]] == [f"k/{i:05d}" for i in range(10)]
    assert doc["prefix"] == "k/0000"


def test_pages_shrink_when_values_are_large_and_grow_back(tmp_path):
    n = FakeNode(str(tmp_path))
    for i in range(300):
        n.put(f"big{i:03d}", b"v" * (64 << 10))
    for i in range(3000):
        n.put(f"small{i:04d}", b"v")
    entries = list(live_entries(n))
    assert len(entries) == 3300
    assert n.list_calls[:3] == [100, 128, 128]  # 8 MiB of 64 KiB values per page
    assert 1000 in n.list_calls  # small values: full pages again
    n.pool.shutdown()


def test_export_then_import_into_an_empty_node_gives_identical_data(node, ftp, tmp_path):
    result = Reports(node, ftp=ftp).export()
    assert result["keys"] == 2502 and result["bytes"] == len(ftp.files[result["name"]])
    check_export_name(result["name"])
    empty = FakeNode(str(tmp_path / "n2"), "n2")
    progress: list[dict] = []
    out = Reports(empty, ftp=ftp).import_(result["name"], progress=progress.append)
    assert out == {"name": result["name"], "keys": 2502, "bytes": result["bytes"]}
    assert empty.values() == node.values()
    assert progress and progress[0] == {"keys": progress[0]["keys"], "total": 2502}
    empty.pool.shutdown()


def test_import_of_a_bad_file_changes_nothing(node, ftp, tmp_path):
    good = Reports(node, ftp=ftp).export()["name"]
    raw = ftp.files[good].splitlines(keepends=True)
    raw[-1] = b'{"key": "bad\\u0000key", "value": ""}\n'
    ftp.files[good] = b"".join(raw)
    empty = FakeNode(str(tmp_path / "n2"), "n2")
    with pytest.raises(BadExport, match=f"line {len(raw)}"):
        Reports(empty, ftp=ftp).import_(good)
    assert empty.values() == {}
    empty.pool.shutdown()


def test_import_of_a_missing_or_badly_named_export(node, ftp):
    reports = Reports(node, ftp=ftp)
    with pytest.raises(NotFound, match="no export named"):
        reports.import_("export-n1-20260101T000000Z-0123abcd.json")
    with pytest.raises(BadRequest):
        reports.import_("../../etc/passwd")


def test_import_that_fails_midway_says_how_far_it_got(node, ftp, tmp_path):
    name = Reports(node, ftp=ftp).export()["name"]
    target = FakeNode(str(tmp_path / "n2"), "n2")
    target.fail_puts_after = 100
    with pytest.raises(Unavailable, match=r"import stopped after 100 of 2502 keys: replicas down"):
        Reports(target, ftp=ftp).import_(name)
    target.pool.shutdown()


@pytest.mark.parametrize(
    "error, kind, code",
    [
        (
            FtpError("FTP server 127.0.0.1:1 unreachable: connection refused"),
            FtpUnavailable,
            "ftp_unavailable",
        ),
        (
            FtpAuthError("FTP login failed for user 'kvraft': 530 Authentication failed."),
            FtpAuthFailed,
            "ftp_auth",
        ),
    ],
)
def test_ftp_failures_become_clear_errors(node, ftp, error, kind, code):
    ftp.fail = error
    reports = Reports(node, ftp=ftp)
    for call in (reports.report, reports.export):
        with pytest.raises(kind) as info:
            call()
        assert describe(info.value)[1] == code and str(error) in info.value.message
    with pytest.raises(kind):
        reports.import_(new_remote_name("export", "n1"))


def test_unconfigured_ftp_is_a_clear_error(node):
    node.config = SimpleNamespace(
        data_dir=node.config.data_dir,
        max_value_bytes=1 << 20,
        ftp="127.0.0.1:2121",
        ftp_user="kvraft",
        ftp_password="",
        ftp_tls=False,
    )
    with pytest.raises(FtpUnavailable, match="KVRAFT_FTP_PASSWORD"):
        Reports(node).export()


class StrictNode:
    """Only the public methods a report job may use (ReportSource); no storage, peers or pool."""

    def __init__(self, inner: FakeNode, gets: list[str], fail_on: str | None = None) -> None:
        self.id, self.config = inner.id, inner.config
        self._inner, self._gets, self._fail_on = inner, gets, fail_on
        self.batches = 0

    def list_keys(self, prefix: str = "", after: str | None = None, limit: int = 100):
        return self._inner.list_keys(prefix, after, limit)

    def get_many(self, keys, r: str = "one") -> dict[str, Record | None]:
        keys = list(keys)
        self._gets.extend(r for _ in keys)
        self.batches += 1
        if self._fail_on in keys:
            raise Unavailable(f"no replica of {self._fail_on!r} answered: down")
        return self._inner.get_many(keys, r)

    def cluster(self) -> dict:
        return self._inner.cluster()

    def put(self, key: str, value: bytes, w: str = "quorum"):
        return self._inner.put(key, value, w)


def test_reports_read_through_the_nodes_public_get_many_at_r_one(node, ftp):
    gets: list[str] = []
    strict = StrictNode(node, gets)
    with Reports(strict, ftp=ftp).report() as f:
        doc = json.loads(f.read())
    assert doc["count"] == 2502 and set(gets) == {"one"} and len(gets) == 2502
    assert strict.batches == len(node.list_calls)  # one batched read per listed page


def test_a_key_deleted_after_it_was_listed_is_left_out(node):
    class Racing(FakeNode):
        def list_keys(self, prefix="", after=None, limit=100):
            page, nxt = FakeNode.list_keys(self, prefix, after, limit)
            if "text" in page:
                self.delete("text")  # deleted between the listing and the read
            return page, nxt

    racing = Racing(node.config.data_dir)
    racing.storage.records = dict(node.storage.records)
    got = {e.key for e in live_entries(racing)}
    assert "text" not in got and "bin" in got and len(got) == 2501
    racing.pool.shutdown()


def test_a_key_no_replica_answers_for_fails_the_report_and_nothing_is_uploaded(node, ftp):
    with pytest.raises(Unavailable, match="no replica of 'k/00042' answered"):
        Reports(StrictNode(node, [], fail_on="k/00042"), ftp=ftp).report()
    assert ftp.files == {}
    assert list((Path(node.config.data_dir) / "spool").iterdir()) == []


def test_node_offers_every_public_method_reports_read_and_write_through():
    """ReportSource (and Source) name only public members of Node, with Node's parameters."""
    import inspect

    from kvraft.node import Node
    from kvraft.reports import ReportSource, Source

    methods = {
        name: inspect.signature(fn)
        for proto in (Source, ReportSource)
        for name, fn in vars(proto).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    }
    assert set(methods) == {"list_keys", "get_many", "cluster", "put"}
    for name, wanted in methods.items():
        got = inspect.signature(getattr(Node, name))
        assert list(got.parameters) == list(wanted.parameters), name
        defaults = [p.default for p in got.parameters.values()]
        assert defaults == [p.default for p in wanted.parameters.values()], name
    init = inspect.getsource(Node.__init__)
    assert "self.id = " in init and "self.config = " in init
