"""The chaos checker on hand-made histories, and the other pure parts of chaos/ (the fault plan,
partition rules, which keys to poll, how a client classifies an error)."""

from __future__ import annotations

import random

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from chaos import checker
from chaos.nemesis import KINDS, SKEW_BANDS_MS, plan, skew_ms, split_majority
from chaos.netns import (
    LOSS_CHAIN,
    PART_CHAIN,
    base_rules,
    delay_rules,
    loss_rule,
    partition_rules,
)
from chaos.verify import keys_to_poll
from chaos.workload import classify, read_outcome, write_outcome

NODES = ["n1", "n2", "n3"]


def run_rec(sync=5.0):
    return {"type": "run", "scenario": "test", "nodes": NODES, "sync_interval": sync}


def w(
    key, value, t0, t1, outcome="ok", client=1, sticky=False, node="n1", hinted=None, phase="run"
):
    return {
        "type": "op",
        "op": "write",
        "key": key,
        "value": value,
        "t0": t0,
        "t1": t1,
        "outcome": outcome,
        "client": client,
        "sticky": sticky,
        "node": node,
        "hinted": hinted or [],
        "phase": phase,
        "level": "quorum",
    }


def r(key, value, t0, t1, outcome="ok", client=2, sticky=False, node="n2", phase="run"):
    return {
        "type": "op",
        "op": "read",
        "key": key,
        "value": value,
        "found": value is not None,
        "t0": t0,
        "t1": t1,
        "outcome": outcome,
        "client": client,
        "sticky": sticky,
        "node": node,
        "phase": phase,
        "level": "one" if phase == "run" else "all",
    }


def final(key, value, t=100.0, outcome="ok"):
    return r(key, value, t, t + 0.01, outcome=outcome, client=-1, phase="final")


def converged(heal=50.0, agree=None, pending=(), regressed=()):
    """Records of a final heal at ``heal`` and convergence polling: ``agree`` maps keys to the
    time (or (time, phase)) they were seen in agreement."""
    recs = [{"type": "heal", "t": heal, "ready": heal + 1}]
    for key, when in (agree or {}).items():
        t, phase = when if isinstance(when, tuple) else (when, "final")
        recs.append({"type": "agree", "key": key, "t": t, "phase": phase})
    recs.append(
        {
            "type": "converge",
            "start": heal + 1.5,
            "end": heal + 9,
            "checked": 5,
            "pending": list(pending),
            "pending_count": len(pending),
            "regressed": list(regressed),
            "regressed_count": len(regressed),
            "sweeps": 1,
            "pending_at_poll": 1,
            "settled_sampled": 1,
            "settled_total": 1,
            "clean_sampled": 1,
            "clean_total": 1,
        }
    )
    return recs


def target(result, name_start):
    return next(row for row in result["targets"] if row["name"].startswith(name_start))


# -- lost and unverified ---------------------------------------------------------------------------


def test_clean_history_meets_every_safety_target():
    h = [run_rec(), w("a", "a=1", 1, 1.1), r("a", "a=1", 2, 2.1), final("a", "a=1"), *converged()]
    res = checker.check(h)
    assert res["lost"] == [] and res["phantoms"] == [] and res["unverified"] == []
    assert res["safety_ok"] and res["consistency_ok"]


def test_acked_write_missing_after_heal_is_lost():
    h = [
        run_rec(),
        w("a", "a=1", 1, 1.1),
        w("b", "b=1", 1, 1.2),
        final("a", None),
        final("b", "b=1"),
        *converged(),
    ]
    res = checker.check(h)
    assert [x["key"] for x in res["lost"]] == ["a"]
    assert res["lost"][0]["final"] is None
    assert not res["safety_ok"]
    assert target(res, "acknowledged writes lost")["value"] == 1


def test_acked_write_without_an_answered_final_read_is_unverified_not_lost():
    h = [run_rec(), w("a", "a=1", 1, 1.1), final("a", None, outcome="fail"), *converged()]
    res = checker.check(h)
    assert res["lost"] == [] and [x["key"] for x in res["unverified"]] == ["a"]
    assert not res["safety_ok"]


def test_a_failed_final_read_retried_successfully_counts():
    h = [
        run_rec(),
        w("a", "a=1", 1, 1.1),
        final("a", None, t=100, outcome="unknown"),
        final("a", "a=1", t=101),
        *converged(),
    ]
    res = checker.check(h)
    assert res["lost"] == [] and res["unverified"] == []


def test_unknown_or_failed_writes_may_be_missing():
    h = [
        run_rec(),
        w("a", "a=1", 1, 7, outcome="unknown"),
        w("b", "b=1", 1, 1.5, "fail"),
        final("a", None),
        final("b", None),
        *converged(),
    ]
    res = checker.check(h)
    assert res["lost"] == [] and res["safety_ok"]
    assert res["unknown_writes"] == {"count": 1, "visible": 0}


def test_a_later_or_concurrent_write_may_replace_an_acked_value():
    # b=2 began before b=1 finished: either may win
    h = [run_rec(), w("b", "b=1", 1, 3), w("b", "b=2", 2, 4, client=2), final("b", "b=2")]
    assert checker.lost_writes(h) == ([], [])
    # c=2 was over before c=1 began: c=1 must win
    h = [run_rec(), w("c", "c=2", 1, 2, client=2), w("c", "c=1", 3, 4), final("c", "c=2")]
    lost, _ = checker.lost_writes(h)
    assert [x["value"] for x in lost] == ["c=1"]


# -- phantoms and failed writes -----------------------------------------------------------------


def test_value_never_written_is_a_phantom_in_the_run_or_after_heal():
    h = [
        run_rec(),
        w("a", "a=1", 1, 1.1),
        r("a", "a=9", 2, 2.1),
        r("zz", "x", 3, 3.1),
        final("a", "a=1"),
        final("q", "q=1"),
    ]
    phantom, resurrected = checker.phantoms(h)
    assert [(p["key"], p["value"], p["phase"]) for p in phantom] == [
        ("a", "a=9", "run"),
        ("zz", "x", "run"),
        ("q", "q=1", "final"),
    ]
    assert resurrected == []
    assert not checker.check(h)["safety_ok"]


def test_value_of_an_unknown_write_is_no_phantom_but_a_failed_ones_is_flagged():
    h = [
        run_rec(),
        w("a", "a=1", 1, 7, outcome="unknown"),
        w("b", "b=1", 1, 1.1, "fail"),
        r("a", "a=1", 8, 8.1),
        final("a", "a=1"),
        final("b", "b=1"),
    ]
    phantom, resurrected = checker.phantoms(h)
    assert phantom == []
    assert [(x["key"], x["value"]) for x in resurrected] == [("b", "b=1")]
    res = checker.check(h)
    assert res["unknown_writes"] == {"count": 1, "visible": 1}
    assert not res["safety_ok"]


def test_not_found_and_failed_reads_are_never_phantoms():
    h = [w("a", "a=1", 1, 1.1), r("a", None, 2, 2.1), r("a", None, 3, 9, outcome="unknown")]
    assert checker.phantoms(h) == ([], [])


# -- read-your-writes and stale reads -----------------------------------------------------------


def test_sticky_client_must_read_its_write_back_through_the_same_node():
    h = [
        run_rec(),
        w("s/1", "s/1=x", 1, 1.1, client=0, sticky=True, node="n1"),
        r("s/1", "s/1=x", 1.2, 1.3, client=0, sticky=True, node="n1"),  # fine
        w("s/2", "s/2=x", 2, 2.1, client=0, sticky=True, node="n1"),
        r("s/2", None, 2.2, 2.3, client=0, sticky=True, node="n1"),  # violation
        r("s/2", None, 2.05, 2.3, client=0, sticky=True, node="n1"),  # began before the ack
        r("s/2", None, 2.4, 2.5, client=0, sticky=True, node="n2"),  # other node: not checked
        r("s/2", None, 2.6, 8.6, client=0, sticky=True, node="n1", outcome="unknown"),
        w("s/3", "s/3=x", 3, 9, client=0, sticky=True, node="n1", outcome="unknown"),
        r("s/3", None, 9.1, 9.2, client=0, sticky=True, node="n1"),  # write not acked
        final("s/1", "s/1=x"),
        final("s/2", "s/2=x"),
        final("s/3", None),
    ]
    checked, violations = checker.read_your_writes(h)
    assert checked == 2
    assert [(v["key"], v["read"], v["wrote"]) for v in violations] == [("s/2", None, "s/2=x")]
    res = checker.check(h)
    assert res["safety_ok"] and not res["consistency_ok"]


def test_stale_reads_count_only_keys_acked_before_the_read_began():
    h = [
        w("a", "a=1", 1, 2),
        r("a", None, 1.5, 1.6),
        r("a", None, 3, 3.1),
        r("a", "a=1", 4, 4.1),
        r("nobody", None, 5, 5.1),
    ]
    assert checker.stale_reads(h) == (2, 1)


# -- convergence ----------------------------------------------------------------------------------


def dirty_history():
    return [
        run_rec(sync=5.0),
        w("k0", "v", 1, 2, hinted=["n3"]),
        w("k1", "v", 40, 46, outcome="unknown"),
        w("k2", "v", 3, 4),
        w("k3", "v", 5, 6, outcome="fail"),
    ]


def test_convergence_time_is_from_the_final_heal_to_the_last_key_apart_agreeing():
    # k0 agreed during the run, before the heal: only k1 was apart at the heal
    h = [*dirty_history(), *converged(heal=50, agree={"k0": (45, "run"), "k1": 54.5, "k2": 52})]
    c = checker.convergence(h, 5.0)
    assert c["measured"] and c["converged"] and c["within"]
    assert c["time_s"] == 4.5 and c["apart_at_heal"] == 1 and c["dirty"] == 2
    assert c["deadline_s"] == 15
    late = [*dirty_history(), *converged(heal=50, agree={"k0": 51, "k1": 66})]
    c = checker.convergence(late, 5.0)
    assert c["time_s"] == 16 and c["apart_at_heal"] == 2 and not c["within"]


def test_nothing_apart_at_the_heal_converges_in_zero_seconds():
    h = [
        *dirty_history(),
        *converged(heal=50, agree={"k0": (10, "run"), "k1": (47, "run"), "k2": 53}),
    ]
    c = checker.convergence(h, 5.0)
    assert c["converged"] and c["time_s"] == 0 and c["apart_at_heal"] == 0


def test_a_settled_key_found_apart_again_counts_until_it_agrees_again():
    h = [
        *dirty_history(),
        *converged(
            heal=50, agree={"k0": (10, "run"), "k1": (47, "run"), "k2": 57}, regressed=["k2"]
        ),
    ]
    c = checker.convergence(h, 5.0)
    assert c["regressed"] == 1 and c["apart_at_heal"] == 1 and c["time_s"] == 7
    assert "fell apart again" in target(checker.check(h), "convergence")["value"]


def test_keys_still_apart_mean_not_converged_and_a_missed_target():
    h = [
        *dirty_history(),
        final("k0", "v"),
        final("k1", "v"),
        final("k2", "v"),
        *converged(heal=50, agree={"k0": 52}, pending=("k1",)),
    ]
    res = checker.check(h)
    assert not res["convergence"]["converged"] and res["convergence"]["pending"] == 1
    assert not res["liveness_ok"] and res["safety_ok"]


def test_convergence_not_polled_is_reported_as_not_measured():
    res = checker.check([run_rec(), w("a", "a=1", 1, 1.1), final("a", "a=1")])
    assert res["convergence"]["measured"] is False
    assert target(res, "convergence")["value"] == "not measured"
    assert not res["liveness_ok"]


# -- leader and availability ----------------------------------------------------------------------


def view(node, t, leader, ok=True):
    return {"type": "view", "node": node, "t": t, "leader": leader, "ok": ok, "term": 1}


def fault(kind, nodes, start, end, leader="n1", groups=None, fid=0):
    return {
        "type": "fault",
        "id": fid,
        "kind": kind,
        "nodes": nodes,
        "groups": groups,
        "leader": leader,
        "start": start,
        "end": end,
        "params": {},
    }


def test_new_leader_time_waits_until_every_survivor_names_the_same_new_leader():
    f = fault("kill-leader", ["n1"], 10, 16)
    views = [
        view("n2", 9, "n1"),
        view("n3", 9, "n1"),  # before the kill: ignored
        view("n2", 10.5, "n1"),
        view("n3", 10.6, None, ok=False),
        view("n2", 11.5, "n2"),
        view("n3", 11.7, "n3"),  # they disagree
        view("n3", 12.2, "n2"),  # now both say n2
        view("n1", 12.3, "n1"),
    ]  # the dead leader's view does not count
    assert checker.new_leader_time(f, views, NODES) == 2.2


def test_leader_kill_without_a_new_leader_misses_the_target():
    h = [
        run_rec(),
        fault("kill-leader", ["n1"], 10, 16),
        view("n2", 11, None),
        view("n3", 11, None),
        *converged(),
    ]
    res = checker.check(h)
    assert res["faults"][0]["new_leader_s"] is None
    assert not target(res, "new leader")["ok"] and not res["liveness_ok"]


def test_slow_new_leader_misses_the_5s_target():
    h = [
        run_rec(),
        fault("kill-leader", ["n1"], 10, 20),
        view("n2", 16, "n2"),
        view("n3", 16.1, "n2"),
        *converged(),
    ]
    res = checker.check(h)
    assert res["faults"][0]["new_leader_s"] == 6.1 and not target(res, "new leader")["ok"]


def test_loss_on_the_leader_or_a_follower_kill_does_not_count_as_losing_the_leader():
    h = [
        run_rec(),
        fault("loss", ["n1"], 10, 16),
        fault("kill", ["n2"], 20, 26, fid=1),
        *converged(),
    ]
    res = checker.check(h)
    assert [f["lost_leader"] for f in res["faults"]] == [False, False]
    assert target(res, "new leader")["value"] == "no leader kill"


def test_availability_per_fault_window_and_on_the_majority_side():
    f = fault("partition-one", ["n3"], 10, 20, groups=[["n1", "n2"], ["n3"]])
    ops = [w(f"k{i}", "v", 10 + i / 2, 10.2 + i / 2, node="n1") for i in range(19)]
    ops += [
        w("x", "x", 12, 18, node="n3", outcome="unknown"),
        w("y", "y", 5, 6, node="n2"),
        r("k1", None, 21, 21.1, node="n2", outcome="fail"),
    ]  # outside the window
    h = [run_rec(), f, *ops, *converged()]
    res = checker.check(h)
    row = res["faults"][0]
    assert (row["ops"], row["ok"], row["other_ops"], row["other_ok"]) == (20, 19, 19, 19)
    assert row["share"] == 0.95 and row["other_share"] == 1.0
    assert res["majority_share"] == 1.0 and target(res, "majority-side")["ok"]
    # one failure on the majority side out of 19 is 94.7%: below the 95% target
    h.append(w("z", "z", 13, 13.1, node="n2", outcome="fail"))
    res = checker.check(h)
    assert res["majority_share"] == pytest.approx(19 / 20)
    h.append(w("z2", "z", 13, 13.1, node="n1", outcome="fail"))
    res = checker.check(h)
    assert res["majority_share"] < 0.95 and not res["liveness_ok"]


def test_majority_side_availability_leaves_out_reads_that_need_every_replica():
    """With two replicas, r=quorum needs both: a read of a key with a replica on the cut-off
    side cannot succeed on the majority side, and does not count against its availability;
    an r=one read that fails there does."""
    f = fault("partition-leader", ["n1"], 10, 20, groups=[["n2", "n3"], ["n1"]])
    ops = [w(f"k{i}", "v", 10 + i / 2, 10.2 + i / 2, node="n2") for i in range(19)]
    quorum_read = {**r("k1", None, 12, 14, node="n3", outcome="fail"), "level": "quorum"}
    h = [run_rec(), f, *ops, quorum_read, *converged()]
    res = checker.check(h)
    row = res["faults"][0]
    assert (row["ops"], row["other_ops"], row["other_ok"]) == (20, 19, 19)
    assert res["majority_share"] == 1.0
    assert checker.needs_every_replica(quorum_read, 2)
    assert not checker.needs_every_replica(quorum_read, 3)  # 2 of 3: one may be cut off
    h.append(r("k2", None, 13, 13.1, node="n3", outcome="fail"))  # r=one: counted
    assert checker.check(h)["majority_share"] == pytest.approx(19 / 20)


def test_timeline_buckets_by_completion_time():
    h = [
        w("a", "a", 0.1, 0.2),
        w("b", "b", 0.3, 1.4),
        w("c", "c", 0.5, 1.6, outcome="fail"),
        r("a", "a", 3.0, 3.05),
    ]
    rows = checker.timeline(h)
    assert [r_["t"] for r_ in rows] == [0, 1, 2, 3]
    assert [(r_["ok"], r_["failed"]) for r_ in rows] == [(1, 0), (1, 1), (0, 0), (1, 0)]
    assert rows[1]["p50_ms"] == pytest.approx(1100) and rows[2]["p50_ms"] is None


# -- pure parts of the nemesis, the lab, verification and the client -------------------------------


def test_plan_has_the_requested_faults_drops_unsupported_and_is_seeded():
    kinds = ["kill"] * 3 + ["kill-leader"] * 2 + ["loss", "skew", "partition-one"]
    a = plan(kinds, random.Random(7))
    b = plan(kinds, random.Random(7))
    assert a == b and sorted(s.kind for s in a) == sorted(kinds)
    assert all(3 <= s.gap_s <= 6 and 5 <= s.hold_s <= 8 for s in a)
    assert next(s for s in a if s.kind == "loss").params["probability"] in (0.1, 0.2, 0.3)
    assert 500 <= abs(next(s for s in a if s.kind == "skew").params["offset_ms"]) <= 5000
    kept = plan(kinds, random.Random(7), supported=("kill", "kill-leader"), shuffle=False)
    assert [s.kind for s in kept] == ["kill"] * 3 + ["kill-leader"] * 2
    with pytest.raises(ValueError):
        plan(["explode"], random.Random(1))
    assert set(KINDS) >= set(kinds)


def test_majority_minority_split_keeps_the_leader_in_the_majority():
    rng = random.Random(3)
    for n, minority_size in ((3, 1), (5, 2), (7, 3)):
        for leader in range(n):
            majority, minority = split_majority(n, leader, rng)
            assert len(minority) == minority_size and leader in majority
            assert sorted(majority + minority) == list(range(n))


def test_partition_rules_cut_only_between_groups_in_the_raw_table():
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    rules = partition_rules([[0, 1], [2]], ips)
    assert rules[0] == [
        ["-t", "raw", "-A", PART_CHAIN, "-s", "10.0.0.3", "-j", "DROP"],
        ["-t", "raw", "-A", PART_CHAIN, "-d", "10.0.0.3", "-j", "DROP"],
    ]
    assert len(rules[1]) == 2 and len(rules[2]) == 4
    assert {tuple(x) for x in rules[2]} >= {
        ("-t", "raw", "-A", PART_CHAIN, "-s", "10.0.0.1", "-j", "DROP")
    }
    assert partition_rules([[0, 1, 2]], ips) == {0: [], 1: [], 2: []}
    assert "--probability" in loss_rule(0.2)
    with pytest.raises(ValueError):
        loss_rule(1.5)


def test_partitions_run_before_nat_and_loss_only_hits_eth0():
    base = base_rules()
    # raw PREROUTING/OUTPUT come before any NAT redirect to the delay proxy
    assert ["-t", "raw", "-A", "PREROUTING", "-j", PART_CHAIN] in base
    assert ["-t", "raw", "-A", "OUTPUT", "-j", PART_CHAIN] in base
    assert not any(r[:2] != ["-t", "raw"] and PART_CHAIN in r for r in base)
    assert ["-A", "INPUT", "-i", "eth0", "-j", LOSS_CHAIN] in base  # not lo: proxy -> node
    mangle, nat = delay_rules(7070, "0x4b56")
    assert mangle[:4] == ["-t", "mangle", "-A", "PREROUTING"] and "--syn" in mangle
    assert "socket" in mangle and mangle[mangle.index("--dport") - 1] == "!"  # not the proxy
    assert nat[:4] == ["-t", "nat", "-A", "PREROUTING"] and nat[-2:] == ["--to-ports", "7070"]
    assert all(r[r.index("-i") + 1] == "eth0" for r in (mangle, nat))


def test_keys_to_poll_puts_dirty_keys_not_yet_agreeing_first_then_samples():
    h = [
        w("clean1", "v", 1, 2),
        w("hinted", "v", 1, 2, hinted=["n3"]),
        w("unk", "v", 1, 2, outcome="unknown"),
        w("refused", "v", 1, 2, outcome="fail"),
        w("clean2", "v", 1, 2),
        w("unk2", "v", 1, 2, outcome="unknown"),
        r("clean1", "v", 3, 4),
        {"type": "agree", "key": "unk2", "t": 5, "phase": "run"},
    ]
    keys, counts = keys_to_poll(h, 10, random.Random(1))
    assert keys[:2] == ["hinted", "unk"] and keys[2] == "unk2"
    assert sorted(keys[3:]) == ["clean1", "clean2", "refused"]
    assert counts == {
        "dirty": 3,
        "pending_at_poll": 2,
        "settled_sampled": 1,
        "settled_total": 1,
        "clean_sampled": 3,
        "clean_total": 3,
    }
    keys, counts = keys_to_poll(h, 1, random.Random(1))
    assert len(keys) == 4 and counts["clean_sampled"] == 1


def test_client_outcomes_timeouts_are_unknown_refusals_are_failures():
    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "x")))
    assert classify(refused) == "fail"
    assert classify(requests.ConnectTimeout()) == "fail"
    assert classify(requests.ReadTimeout()) == "unknown"
    assert classify(requests.ConnectionError("Connection aborted: RemoteDisconnected")) == "unknown"
    assert [write_outcome(s) for s in (200, 201, 400, 413, 500, 503)] == [
        "ok",
        "ok",
        "fail",
        "fail",
        "unknown",
        "unknown",
    ]
    # the clock offset guard refuses before stamping: certainly not applied; other 503s may be
    assert write_outcome(503, "clock_offset") == "fail"
    assert write_outcome(503, "unavailable") == "unknown"
    assert [read_outcome(s) for s in (200, 404, 503)] == ["ok", "ok", "fail"]


def test_skews_cover_a_few_ms_to_seconds_both_ways():
    rng = random.Random(4)
    offsets = [skew_ms(n, rng) for n in range(300)]
    for n, (low, high) in enumerate(SKEW_BANDS_MS):
        band = [abs(o) for o in offsets[n :: len(SKEW_BANDS_MS)]]
        assert all(low <= o <= high for o in band), (low, high, min(band), max(band))
    assert min(map(abs, offsets)) < 10 and max(map(abs, offsets)) > 3000
    assert any(o < 0 for o in offsets) and any(o > 0 for o in offsets)
    steps = plan(["skew", "kill", "skew"], random.Random(2), shuffle=False)
    assert abs(steps[0].params["offset_ms"]) >= 500 and abs(steps[2].params["offset_ms"]) <= 50


# -- the register workload -------------------------------------------------------------------------


def rw(key, value, t0, t1, outcome="ok", node="n1"):
    """A register PUT (``value``) or DELETE (``value`` None; ``outcome`` "absent": answered 404)."""
    op = {
        "type": "op",
        "workload": "register",
        "op": "write" if value is not None else "delete",
        "key": key,
        "value": value,
        "t0": t0,
        "t1": t1,
        "client": 100,
        "sticky": False,
        "node": node,
        "served": node,
        "hinted": [],
        "phase": "run",
        "level": "quorum",
        "outcome": "ok" if outcome == "absent" else outcome,
        "found": outcome != "absent" if outcome in ("ok", "absent") else None,
    }
    return op


def rr(key, value, t0, t1, outcome="ok", phase="run"):
    return {
        "type": "op",
        "workload": "register",
        "op": "read",
        "key": key,
        "value": value,
        "found": value is not None,
        "t0": t0,
        "t1": t1,
        "outcome": outcome,
        "client": 101,
        "sticky": False,
        "node": "n2",
        "served": "n2",
        "phase": phase,
        "level": "quorum" if phase == "run" else "all",
    }


def reg_check(*ops, finals=None):
    """The register figures of a history of ``ops``, each key's final read given by ``finals``
    (key -> value or None; default: the last acknowledged mutation's value)."""
    keys = {op["key"] for op in ops}
    if finals is None:
        finals = {}
        for k in keys:
            muts = [
                o
                for o in ops
                if o["key"] == k
                and o["op"] != "read"
                and o["outcome"] == "ok"
                and o["found"] is not False
            ]
            finals[k] = max(muts, key=lambda o: o["t1"])["value"] if muts else None
    h = [
        run_rec(),
        *ops,
        *(rr(k, v, 100, 100.01, phase="final") for k, v in finals.items()),
        *converged(),
    ]
    return checker.check(h)


def anomalies(res):
    reg = res["register"]
    return {k: len(reg[k]) for k in ("lost", "undone", "stale", "final_wrong", "unverified")}


NONE = {"lost": 0, "undone": 0, "stale": 0, "final_wrong": 0, "unverified": 0}


def test_register_sequential_overwrites_and_deletes_read_back_pass():
    res = reg_check(
        rw("k", "k=1", 1, 1.1),
        rr("k", "k=1", 1.2, 1.3),
        rw("k", "k=2", 2, 2.1),
        rr("k", "k=2", 2.2, 2.3),
        rw("k", None, 3, 3.1),
        rr("k", None, 3.2, 3.3),
        rw("k", None, 3.5, 3.6, outcome="absent"),
        rr("k", None, 3.7, 3.8),
        rw("k", "k=3", 4, 4.1),
        rr("k", "k=3", 4.2, 4.3),
        rr("j", None, 1, 1.1),
    )
    assert anomalies(res) == NONE
    reg = res["register"]
    assert reg["reads"] == 6 and reg["determinate_put"] == 3 and reg["determinate_delete"] == 2
    assert res["safety_ok"] and res["lost"] == [] and res["unverified"] == []
    assert (
        target(res, "register: acknowledged overwrites lost")["value"] == "0 of 3 determinate reads"
    )


def test_register_older_value_after_an_acknowledged_overwrite_is_a_lost_overwrite():
    # the bug of issue 12: k=2 acknowledged, then k=1 read back with nothing in between
    res = reg_check(
        rw("k", "k=1", 1, 1.1, node="n1"),
        rw("k", "k=2", 2, 2.1, node="n3"),
        rr("k", "k=1", 2.5, 2.6),
        finals={"k": "k=2"},
    )
    assert anomalies(res) == {**NONE, "lost": 1}
    (lost,) = res["register"]["lost"]
    assert lost["read"] == "k=1" and lost["expected"] == ["k=2"] and lost["expected_via"] == ["n3"]
    assert lost["read_write_t"] == [1, 1.1]
    assert not res["safety_ok"]
    assert not target(res, "register: acknowledged overwrites lost")["ok"]
    # any value other than B's, a 404 too
    res = reg_check(rw("k", "k=1", 1, 1.1), rw("k", "k=2", 2, 2.1), rr("k", None, 2.5, 2.6))
    assert anomalies(res) == {**NONE, "lost": 1}


def test_register_first_write_lost_counts_as_lost_overwrite_not_stale():
    res = reg_check(rw("k", "k=1", 1, 1.1), rr("k", None, 2, 2.1))
    assert anomalies(res) == {**NONE, "lost": 1}


def test_register_value_after_an_acknowledged_delete_is_a_delete_undone():
    res = reg_check(rw("k", "k=1", 1, 1.1), rw("k", None, 2, 2.1), rr("k", "k=1", 3, 3.1))
    assert anomalies(res) == {**NONE, "undone": 1}
    assert not target(res, "register: deletes undone")["ok"] and not res["safety_ok"]


def test_register_a_write_overlapping_b_or_the_read_makes_it_indeterminate():
    # k=3 overlaps B (k=2): either order is allowed, so the read of k=3 passes ...
    base = [rw("k", "k=1", 1, 1.1), rw("k", "k=2", 2, 2.3), rw("k", "k=3", 2.1, 2.2)]
    res = reg_check(*base, rr("k", "k=3", 3, 3.1), finals={"k": "k=3"})
    assert anomalies(res) == NONE and res["register"]["determinate"] == 0
    res = reg_check(*base, rr("k", "k=2", 3, 3.1), finals={"k": "k=2"})
    assert anomalies(res) == NONE
    # ... but k=1 was superseded by both before the read began: stale, not lost
    res = reg_check(*base, rr("k", "k=1", 3, 3.1), finals={"k": "k=2"})
    assert anomalies(res) == {**NONE, "stale": 1}
    # a write overlapping the read: its value and B's are both allowed, the older one is not
    over = [rw("k", "k=1", 1, 1.1), rw("k", "k=2", 2, 2.1), rw("k", "k=3", 2.9, 3.2)]
    assert anomalies(reg_check(*over, rr("k", "k=3", 3, 3.1))) == NONE
    assert anomalies(reg_check(*over, rr("k", "k=2", 3, 3.1))) == NONE
    assert anomalies(reg_check(*over, rr("k", "k=1", 3, 3.1))) == {**NONE, "stale": 1}
    # a write that began after the read completed cannot be what it returned: after a
    # determinate state that is the loss of B (any value other than B's), else a stale read
    after = [rw("k", "k=1", 1, 1.1), rw("k", "k=2", 3.5, 3.6)]
    assert anomalies(reg_check(*after, rr("k", "k=2", 3, 3.1))) == {**NONE, "lost": 1}
    after = [rw("k", "k=1", 1, 2), rw("k", "k=x", 1.5, 1.6), rw("k", "k=2", 3.5, 3.6)]
    assert anomalies(reg_check(*after, rr("k", "k=2", 3, 3.1))) == {**NONE, "stale": 1}


def test_register_maybe_applied_writes_overlap_every_later_operation():
    # k=u timed out at 1.5: it may take effect any time later, so it may be read after k=2 ...
    ops = [
        rw("k", "k=1", 1, 1.1),
        rw("k", "k=u", 1.5, 7.5, outcome="unknown"),
        rw("k", "k=2", 2, 2.1),
    ]
    res = reg_check(
        *ops,
        rr("k", "k=u", 3, 3.1),
        rr("k", "k=2", 4, 4.1),
        rr("k", "k=u", 5, 5.1),
        finals={"k": "k=u"},
    )
    assert anomalies(res) == NONE and res["register"]["determinate"] == 0
    # ... and it makes reads after it indeterminate: k=1 is stale (superseded by k=2), not lost
    res = reg_check(*ops, rr("k", "k=1", 3, 3.1), finals={"k": "k=2"})
    assert anomalies(res) == {**NONE, "stale": 1}
    # a maybe-applied DELETE: the 404 is allowed too, later
    ops = [rw("k", "k=1", 1, 1.1), rw("k", None, 2, 8, outcome="unknown")]
    assert (
        anomalies(
            reg_check(*ops, rr("k", None, 3, 3.1), rr("k", "k=1", 4, 4.1), finals={"k": None})
        )
        == NONE
    )
    # a write that certainly failed changes nothing: the read after it is still determinate
    ops = [rw("k", "k=1", 1, 1.1), rw("k", "k=f", 1.5, 1.6, outcome="fail")]
    res = reg_check(*ops, rr("k", "k=1", 2, 2.1))
    assert anomalies(res) == NONE and res["register"]["determinate_put"] == 1
    res = reg_check(*ops, rr("k", "k=f", 2, 2.1), finals={"k": "k=1"})
    assert anomalies(res) == {**NONE, "lost": 1} and len(res["failed_visible"]) == 1


def test_register_final_state_must_be_the_last_acknowledged_write_or_an_overlapping_one():
    ops = [rw("k", "k=1", 1, 1.1), rw("k", "k=2", 2, 2.1)]
    assert anomalies(reg_check(*ops, finals={"k": "k=2"})) == NONE
    res = reg_check(*ops, finals={"k": "k=1"})
    assert anomalies(res) == {**NONE, "final_wrong": 1} and not res["safety_ok"]
    assert not target(res, "register: final state")["ok"]
    # the key back after an acknowledged delete
    res = reg_check(*ops, rw("k", None, 3, 3.1), finals={"k": "k=2"})
    assert anomalies(res) == {**NONE, "final_wrong": 1}
    # writes that overlapped the last one, and maybe-applied ones, are allowed
    ops = [
        rw("k", "k=1", 1, 1.1),
        rw("k", "k=2", 2, 2.5),
        rw("k", "k=3", 2.1, 2.2),
        rw("k", "k=u", 0.5, 9, outcome="unknown"),
    ]
    for v in ("k=2", "k=3", "k=u"):
        assert anomalies(reg_check(*ops, finals={"k": v})) == NONE, v
    assert anomalies(reg_check(*ops, finals={"k": "k=1"})) == {**NONE, "final_wrong": 1}
    # no final read answered: unverified, also a miss
    res = reg_check(rw("k", "k=1", 1, 1.1), finals={})
    assert anomalies(res) == {**NONE, "unverified": 1} and not res["safety_ok"]


def test_register_ops_stay_out_of_the_set_checks():
    # an overwritten or deleted register key is not a set-workload loss
    res = reg_check(rw("k", "k=1", 1, 1.1), rw("k", None, 2, 2.1), finals={"k": None})
    assert res["lost"] == [] and res["ops"].get("writes", 0) == 0 and res["safety_ok"]
    assert res["register"]["ops"] == {"deletes": 1, "deletes_ok": 1, "writes": 1, "writes_ok": 1}
    keys, counts = keys_to_poll([w("a", "a", 1, 2), rw("k", "k=1", 1, 1.1)], 10, random.Random(1))
    assert keys == ["k", "a"] and counts["pending_at_poll"] == 1


def test_final_reads_cover_register_keys_that_were_only_read():
    """A register key that was only read (never written) gets a final read too: the checker's
    final-state check covers every register key it saw, and a key left out is unverified (a
    chaos smoke run failed that way on a key read once, a 404, before any write of it)."""
    from chaos.verify import final_keys

    plain_write = {**rw("c1/1", "v", 1, 1.1), "workload": "plain"}
    plain_read = {**rr("c1/2", None, 1, 1.1), "workload": "plain"}
    records = [
        run_rec(),
        plain_write,
        plain_read,  # a plain key only read: nothing to check at the end
        rw("reg/1/0", "a", 1, 1.1),
        rr("reg/3/2", None, 2, 2.1),  # only read
        rw("reg/1/0", None, 3, 3.1),
    ]
    assert final_keys(records) == ["c1/1", "reg/1/0", "reg/3/2"]
    # and with its final read the read-only key passes; without one it is unverified
    assert anomalies(reg_check(rr("reg/3/2", None, 2, 2.1))) == NONE
    res = reg_check(rr("reg/3/2", None, 2, 2.1), finals={})
    assert anomalies(res) == {**NONE, "unverified": 1}
