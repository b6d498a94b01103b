"""The Python client and the ``kvraft`` client commands against a real 3-node cluster.

Covers: CRUD through :class:`kvraft.client.Client` (levels, versions, odd keys, binary values,
paging, POST /kv, explain), typed errors, report/export/import through a real FTP server,
failover when the first listed node is killed, and the CLI as a subprocess (stdout, exit codes
0/1/2/3, stdin and file values, --json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kvraft.client import BadRequest, Client, NotFound, Unavailable
from kvraft.ftp import FtpServer
from tests.harness.cluster import ADMIN_TOKEN, Cluster, free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = bytes(range(256)) * 4 + b"\r\n\x00end"


FTP_PASSWORD = "client-test-ftp-pw"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The shared 3-node cluster of this module, with an FTP server for reports and exports
    (overrides the conftest fixture of the same name; its tests must not kill nodes)."""
    root = tmp_path_factory.mktemp("client-cluster")
    with FtpServer(
        "127.0.0.1", 0, "kvraft", FTP_PASSWORD, root / "ftp", auth_failed_delay=0
    ) as ftp:
        env = {
            "KVRAFT_FTP": "{}:{}".format(*ftp.address),
            "KVRAFT_FTP_USER": "kvraft",
            "KVRAFT_FTP_PASSWORD": FTP_PASSWORD,
        }
        with Cluster(str(root), env=env) as c:
            yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(
        [cluster.url(i) for i in range(cluster.n)], timeout=10, admin_token=ADMIN_TOKEN
    ) as c:
        yield c


def closed_url() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def kv(
    *argv: str, nodes: list[str], stdin: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    """Run ``python -m kvraft ARGV --node N...`` and capture bytes."""
    cmd = [sys.executable, "-m", "kvraft", *argv]
    for n in nodes:
        cmd += ["--node", n]
    env = {k: v for k, v in os.environ.items() if k not in ("KVRAFT_NODES", "KVRAFT_TOKEN")}
    env["KVRAFT_ADMIN_TOKEN"] = ADMIN_TOKEN  # what `kvraft up` users have in data/admin-token
    return subprocess.run(
        cmd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


# -- the Python client ---------------------------------------------------------------------------


def test_put_get_replace_delete_with_versions(client):
    first = client.put("crud/a", b"one")
    assert first.created and first.key == "crud/a" and first.acks == 2
    assert len(first.replicas) == 2 and first.node
    got = client.get("crud/a")
    assert (got.value, got.version) == (b"one", first.version)
    second = client.put("crud/a", b"two", w="all")
    assert not second.created and second.version > first.version
    assert client.get("crud/a", r="all").value == b"two"
    gone = client.delete("crud/a", w="quorum")
    assert gone.key == "crud/a" and gone.version > second.version
    with pytest.raises(NotFound) as e:
        client.get("crud/a", r="quorum")
    assert e.value.status == 404 and e.value.code == "not_found"
    with pytest.raises(NotFound):
        client.delete("crud/a")


@pytest.mark.parametrize(
    "key",
    ["odd/slash/key", "space key", "pct%2F", "ünï/€", "q?x=1#h", ".", "..", "a/../b", "a" * 1024],
)
def test_odd_keys_and_binary_values_round_trip(client, key):
    client.put(key, BINARY, w="one")
    assert client.get(key, r="quorum").value == BINARY
    assert key in client.explain(key)["key"]
    client.delete(key)


def test_listing_pages_and_prefixes(client):
    keys = [f"page/{i:03d}" for i in range(23)]
    for k in keys:
        client.put(k, k.encode())
    client.put("pagex", b"outside the prefix")
    page = client.list("page/", limit=10)
    assert page.keys == keys[:10] and page.next == keys[9]
    assert client.list("page/", limit=10, after=page.next).keys == keys[10:20]
    assert list(client.iter_keys("page/", page_size=7)) == keys
    assert [p.next for p in client.iter_pages("page/", page_size=10)] == [keys[9], keys[19], None]
    assert client.list("nothing-here/").keys == []


def test_create_explain_and_cluster(client):
    res = client.create("made by the store ✓")
    assert res.created and res.key
    assert client.get(res.key).value == "made by the store ✓".encode()
    info = client.explain(res.key)
    assert info["agree"] is True and sorted(info["holders"]) == sorted(res.replicas)
    view = client.cluster()
    assert view["leader"] in {n["id"] for n in view["nodes"]}
    assert len(view["partitions"]) == 64 and view["replication_factor"] == 2


def test_bad_input_is_refused_with_typed_errors(client):
    with pytest.raises(BadRequest) as e:
        client.put("", b"x")
    assert e.value.status == 400
    with pytest.raises(BadRequest) as e:
        client.put("big", b"x" * ((1 << 20) + 1))
    assert e.value.status == 413
    with pytest.raises(BadRequest):
        client.list(limit=5000)
    with pytest.raises(NotFound):
        client.get("big")


def test_no_reachable_node_is_unavailable():
    sleeps: list[float] = []
    with Client([closed_url(), closed_url()], retries=1, sleep=sleeps.append) as c:
        with pytest.raises(Unavailable) as e:
            c.get("x")
    assert len(e.value.errors) == 4 and sleeps == [0.2]


def test_report_export_and_import_round_trip(client):
    values = {f"snap/{i}": bytes([i]) * i + b"\xff" for i in range(1, 6)}
    for k, v in values.items():
        client.put(k, v)
    report = client.report(prefix="snap/")
    assert report["count"] == 5 and report["node"]
    assert sorted(e["key"] for e in report["keys"]) == sorted(values)
    seen: list[dict] = []
    exported = client.export(progress=seen.append)  # streamed (NDJSON) form
    assert exported["name"] and exported["keys"] >= 5 and exported["bytes"] > 0
    client.delete("snap/1")
    client.put("snap/2", b"changed")
    imported = client.import_(exported["name"])
    assert imported["keys"] == exported["keys"]
    assert client.get("snap/1").value == values["snap/1"]
    assert client.get("snap/2").value == values["snap/2"]
    with pytest.raises(NotFound):
        client.import_("export-n1-19990101T000000Z-0123abcd.json")
    plain = client.export()  # the plain JSON form
    assert plain["name"] != exported["name"]


def test_cli_report_export_import(cluster, tmp_path):
    nodes = [cluster.url(2)]
    assert kv("put", "clirep/a", "A", nodes=nodes).returncode == 0
    out = kv("report", "--prefix", "clirep/", nodes=nodes)
    assert out.returncode == 0, out.stderr
    assert [e["key"] for e in json.loads(out.stdout)["keys"]] == ["clirep/a"]
    dst = tmp_path / "report.json"
    out = kv("report", "--out", str(dst), "--json", nodes=nodes)
    assert out.returncode == 0 and json.loads(out.stdout)["out"] == str(dst)
    assert "clirep/a" in {e["key"] for e in json.loads(dst.read_text())["keys"]}
    out = kv("export", "--json", nodes=nodes)
    assert out.returncode == 0, out.stderr
    name = json.loads(out.stdout)["name"]
    assert kv("delete", "clirep/a", nodes=nodes).returncode == 0
    out = kv("import", name, nodes=nodes)
    assert out.returncode == 0 and out.stdout.decode().startswith(f"imported {name}: ")
    assert kv("get", "clirep/a", nodes=nodes).stdout == b"A"
    assert kv("import", "no-such-export", nodes=nodes).returncode in (1, 2)


def test_failover_when_the_first_listed_node_is_killed(fresh_cluster):
    urls = [fresh_cluster.url(i) for i in range(3)]
    with Client(urls, timeout=5) as c:
        c.put("fo/before", b"before")
        fresh_cluster.kill(0)
        res = c.put("fo/after", b"after \x00\xff")
        assert res.key == "fo/after" and c.last_node != urls[0]
        assert c.get("fo/after").value == b"after \x00\xff"
        assert c.get("fo/before", r="one").value == b"before"
        assert "fo/after" in c.list("fo/").keys
        c.delete("fo/before")
    with Client(urls[:1], retries=0) as only_dead, pytest.raises(Unavailable):
        only_dead.get("fo/after")
    # the CLI fails over the same way, and reports 3 when every listed node is down
    out = kv("get", "fo/after", nodes=urls)
    assert (out.returncode, out.stdout) == (0, b"after \x00\xff")
    out = kv("status", "--json", nodes=urls)
    assert out.returncode == 0
    alive = {n["id"]: n["alive"] for n in json.loads(out.stdout)["nodes"]}
    assert alive["n2"] and alive["n3"]
    assert kv("get", "fo/after", "--retries", "0", nodes=urls[:1]).returncode == 3


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_put_get_delete_and_exit_codes(cluster):
    nodes = [cluster.url(1)]
    out = kv("put", "cli/a", "hello world", nodes=nodes)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().startswith("created cli/a  version ")
    assert kv("put", "cli/a", "again", nodes=nodes).stdout.decode().startswith("replaced cli/a")
    out = kv("get", "cli/a", nodes=nodes)
    assert (out.returncode, out.stdout) == (0, b"again")
    out = kv("delete", "cli/a", nodes=nodes)
    assert out.returncode == 0 and out.stdout.decode().startswith("deleted cli/a")
    out = kv("get", "cli/a", nodes=nodes)
    assert (out.returncode, out.stdout) == (1, b"")
    assert b"not found" in out.stderr
    assert kv("delete", "cli/a", nodes=nodes).returncode == 1
    assert kv("get", "cli/a", "--r", "sometimes", nodes=nodes).returncode == 2
    assert kv("put", "", "x", nodes=nodes).returncode == 2


def test_cli_unavailable_node_exits_3():
    out = kv("put", "k", "v", "--retries", "0", nodes=[closed_url()])
    assert out.returncode == 3
    assert b"unavailable" in out.stderr and b"connection refused" in out.stderr
    assert kv("status", "--retries", "0", nodes=[closed_url()]).returncode == 3


def test_cli_binary_values_from_stdin_and_file_round_trip(cluster, tmp_path):
    nodes = [cluster.url(2), cluster.url(0)]
    out = kv("put", "cli/stdin", nodes=nodes, stdin=BINARY)
    assert out.returncode == 0, out.stderr
    assert kv("get", "cli/stdin", nodes=nodes).stdout == BINARY
    assert kv("put", "cli/dash", "-", nodes=nodes, stdin=b"\xff\xfe").returncode == 0
    assert kv("get", "cli/dash", nodes=nodes).stdout == b"\xff\xfe"
    src = tmp_path / "in.bin"
    src.write_bytes(BINARY[::-1])
    assert kv("put", "cli/file", "--file", str(src), nodes=nodes).returncode == 0
    dst = tmp_path / "out.bin"
    out = kv("get", "cli/file", "--out", str(dst), nodes=nodes)
    assert (out.returncode, out.stdout) == (0, b"")
    assert dst.read_bytes() == BINARY[::-1]
    assert kv("put", "cli/x", "v", "--file", str(src), nodes=nodes).returncode == 2


def test_cli_json_output_parses(cluster):
    nodes = [cluster.url(0)]
    put = json.loads(kv("put", "cli/j", "text", "--json", nodes=nodes).stdout)
    assert put["key"] == "cli/j" and put["created"] is True and put["version"]
    got = json.loads(kv("get", "cli/j", "--json", nodes=nodes).stdout)
    assert got == {
        "key": "cli/j",
        "version": put["version"],
        "node": got["node"],
        "size": 4,
        "value": "text",
        "encoding": "utf-8",
    }
    listed = json.loads(kv("ls", "--prefix", "cli/j", "--json", nodes=nodes).stdout)
    assert listed["keys"] == ["cli/j"] and listed["next"] is None
    status = json.loads(kv("status", "--json", nodes=nodes).stdout)
    assert len(status["nodes"]) == 3 and sum(status["balance"].values()) == 64 * 2
    gone = json.loads(kv("delete", "cli/j", "--json", nodes=nodes).stdout)
    assert gone["key"] == "cli/j"


def test_cli_ls_lines_limit_and_all(cluster):
    c = Client([cluster.url(0)])
    keys = [f"cli-ls/{i:04d}" for i in range(1205)]
    with c:
        for k in keys:  # more than one page of 1000
            c.put(k, b"", w="one")
    nodes = [cluster.url(1)]
    out = kv("ls", "--prefix", "cli-ls/", "--limit", "3", nodes=nodes)
    assert out.returncode == 0 and out.stdout.decode().splitlines() == keys[:3]
    assert b"more keys after" in out.stderr
    out = kv("ls", "--prefix", "cli-ls/", "--all", nodes=nodes)
    assert out.stdout.decode().splitlines() == keys and out.stderr == b""
    listed = json.loads(kv("ls", "--prefix", "cli-ls/", "-n", "1100", "--json", nodes=nodes).stdout)
    assert listed["keys"] == keys[:1100] and listed["next"] == keys[1099]


def test_cli_status_table(cluster):
    out = kv("status", nodes=[cluster.url(0)])
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    lines = text.splitlines()
    assert lines[0].split() == ["NODE", "HTTP", "ALIVE", "LEADER", "KEYS", "BYTES"]
    leader = cluster.nodes[cluster.leader()].id
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert set(rows) == {"n1", "n2", "n3"} and "*" in rows[leader].split()
    assert f"leader {leader}" in text and "partitions: 64, 128 replicas on 3 nodes" in text
