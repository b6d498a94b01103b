"""The bench tools' own logic: loadgen's exit status (an error rate, not any error) and
bench.ab's GET-only runs (keys written first; a zero rate gives nan, not a crash)."""

from __future__ import annotations

import math

import pytest

from bench import ab, loadgen
from bench.loadgen import Result


@pytest.mark.parametrize(
    "requests,errors,argv,code",
    [
        (1000, 0, [], 0),
        (1000, 5, [], 0),  # 0.5% under the default 1%
        (1000, 11, [], 1),
        (1000, 1, ["--max-error-rate", "0"], 1),
        (0, 0, [], 1),  # nothing sent: not a measurement
    ],
)
def test_loadgen_exits_1_past_its_error_rate(monkeypatch, capsys, requests, errors, argv, code):
    monkeypatch.setattr(loadgen, "run_sync", lambda *a, **k: Result(requests, errors, 1.0))
    assert loadgen.main(["--url", "http://127.0.0.1:1", *argv]) == code
    assert f'"errors": {errors}' in capsys.readouterr().out


def test_ab_preloads_the_keys_for_a_get_only_run(monkeypatch):
    calls = []

    def run_sync(urls, system, op, concurrency, **kw):
        calls.append((op, kw.get("requests"), kw.get("keys")))
        return Result(kw.get("requests") or 10, 0, 1.0)

    monkeypatch.setattr(ab, "run_sync", run_sync)
    ab._preload(["u"], ["get"], 4, {"keys": 250, "value_size": 100, "read_level": None})
    assert calls == [("put", 250, 250)]  # every key written once
    calls.clear()
    ab._preload(["u"], ["put", "get"], 4, {"keys": 250})
    assert calls == []  # the PUT run writes them


def test_ab_preload_failing_stops_the_run(monkeypatch):
    monkeypatch.setattr(ab, "run_sync", lambda *a, **k: Result(100, 3, 1.0))
    with pytest.raises(SystemExit, match="3 errors"):
        ab._preload(["u"], ["get"], 4, {"keys": 100})


def test_ab_ratio_of_a_zero_rate_is_nan():
    assert ab._ratio(10.0, 5.0) == 2.0
    assert math.isnan(ab._ratio(10.0, 0.0))
