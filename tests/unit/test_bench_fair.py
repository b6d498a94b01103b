"""The pure parts of the fair benchmark cells: zipfian keys, per-second series, the tools' output
parsers, the request builders' guarantees and the cell selection."""

import json
import math
from collections import Counter

import pytest

from bench import fair, loadgen, tools


def test_zipfian_matches_the_zipf_law_at_the_head():
    n, draws = 1000, 100_000
    z = loadgen.Zipfian(n, seed=7)
    counts = Counter(z.next() for _ in range(draws))
    assert all(0 <= k < n for k in counts)
    zetan = sum((i + 1) ** -0.99 for i in range(n))
    # item 0 and item 1 are exact in YCSB's generator: 1/zetan and 0.5^0.99/zetan
    assert counts[0] / draws == pytest.approx(1 / zetan, rel=0.05)
    assert counts[1] / draws == pytest.approx(0.5**0.99 / zetan, rel=0.08)
    assert counts[0] > counts[1] > counts[10] > counts[500]


def test_zipfian_edges():
    assert {loadgen.Zipfian(1).next() for _ in range(50)} == {0}
    z = loadgen.Zipfian(100)
    assert z.draw(0.0) == 0 and 0 <= z.draw(0.999999) <= 99
    with pytest.raises(ValueError):
        loadgen.Zipfian(0)
    with pytest.raises(ValueError):
        loadgen.Zipfian(10, theta=1.0)


def test_per_second_buckets_by_completion_time():
    ends = [0.1, 0.2, 0.9, 1.5, 3.2]
    lats = [0.001, 0.002, 0.003, 0.010, 0.004]
    rows = loadgen.per_second(ends, lats, 4.0)
    assert [r[:2] for r in rows] == [(0, 3), (1, 1), (2, 0), (3, 1)]
    assert rows[0][2] == pytest.approx(2.0) and rows[0][3] == pytest.approx(3.0)
    assert math.isnan(rows[2][2]) and math.isnan(rows[2][3])


def test_builders_carry_the_read_guarantee():
    kv = loadgen.KvBuilder(b"v", read_level="quorum")
    assert kv.request("get", "k", "h").startswith(b"GET /kv/k?r=quorum HTTP/1.1\r\n")
    assert kv.request("put", "k", "h").startswith(b"PUT /kv/k HTTP/1.1\r\n")
    assert loadgen.KvBuilder(b"v").request("get", "k", "h").startswith(b"GET /kv/k HTTP/1.1")
    ser = loadgen.EtcdBuilder(b"v", serializable=True).request("get", "k", "h")
    assert json.loads(ser.split(b"\r\n\r\n", 1)[1]) == {"key": "aw==", "serializable": True}
    lin = loadgen.EtcdBuilder(b"v").request("get", "k", "h")
    assert json.loads(lin.split(b"\r\n\r\n", 1)[1]) == {"key": "aw=="}


def test_parse_hey_csv_counts_only_2xx_as_served():
    text = (
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,"
        "status-code,offset\n"
        "0.0020,0,0,0,0,0,200,0.1000\n"
        "0.0040,0,0,0,0,0,503,0.2000\n"
        "0.0100,0,0,0,0,0,201,1.5000\n"
    )
    ends, lats, errors, kinds = tools.parse_hey_csv(text)
    assert lats == [0.002, 0.01] and errors == 1 and kinds == {"http 503": 1}
    assert ends == pytest.approx([0.102, 1.51])
    # a warm-up of 0.1 s and a 1 s window: the third request ended after the window
    ends, lats, errors, _ = tools.parse_hey_csv(text, -0.1, 1.0)
    assert lats == [0.002] and errors == 1 and ends == pytest.approx([0.002])


def test_parse_wrk_reads_the_done_hook_line():
    line = (
        'WRKJSON {"requests":1000,"duration_us":2000000,"connect":0,"read":0,"write":0,'
        '"status":10,"timeout":0,"misses":0,"p50_us":1500,"p99_us":9000}'
    )
    r = tools.parse_wrk("Running 2s test\n" + line + "\n", 2)
    assert r.errors == 10 and r.error_kinds == {"status": 10}
    assert r.throughput == pytest.approx(495.0)
    assert (r.p50_ms, r.p99_ms) == (1.5, 9.0)
    assert tools.parse_wrk("no such line", 2).failed


def test_wrk_script_has_the_cell_parameters():
    req = tools.Request("etcd", "mix", serializable=True, read_fraction=0.95)
    script = tools.wrk_script(req, [("127.0.0.1", 1), ("127.0.0.1", 2)], 500, "p-", b"abc")
    assert "keys = 500" in script and 'prefix = "p-"' in script
    assert "read_fraction = 0.95" in script and '\\"serializable\\":true' in script
    assert "check_hits = false" in script  # a mix cannot tell a range miss from a put answer
    get = tools.wrk_script(tools.Request("kvraft", "get", "quorum"), [("127.0.0.1", 1)], 9, "", b"")
    assert 'query = "?r=quorum"' in get and "check_hits = true" in get


def test_tools_refuse_non_loopback_targets():
    with pytest.raises(ValueError):
        tools.run_hey(["http://10.0.0.1:80"], tools.Request("kvraft", "get"), "k", b"", 1, 1)


def test_cells_pair_equal_guarantees():
    by_name = {c.name: c for c in fair.CELLS}
    assert by_name["put-fsync-1key"].kvraft.config == "fsync"
    assert by_name["put-default-many"].kvraft.config == "default"
    q = by_name["get-quorum-many"]
    assert q.kvraft.read_level == "quorum" and not q.etcd.serializable
    one = by_name["get-one-1key"]
    assert one.kvraft.read_level == "one" and one.etcd.serializable
    for letter, frac in (("a", 0.5), ("b", 0.95)):
        c = by_name[f"ycsb-{letter}"]
        assert c.kvraft.op == c.etcd.op == "mix" and c.kvraft.read_fraction == frac
    assert by_name["ycsb-c"].kvraft.op == "get" and by_name["ycsb-c"].kvraft.keys == "many"
    assert [c.name for c in fair.select(["ycsb-?"])] == ["ycsb-a", "ycsb-b", "ycsb-c"]
    assert fair.select(["nothing"]) == []
    assert len({c.kvraft.slug() for c in fair.CELLS}) == len({c.kvraft for c in fair.CELLS})


def test_sparkline_scales_to_the_largest_value():
    assert fair.sparkline([1.0, 8.0, float("nan")]) == "▁█ "
