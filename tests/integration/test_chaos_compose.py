"""The chaos smoke scenario against real containers: ``python -m chaos.run smoke --backend
compose``.

The run builds the image (cached: a second), starts a compose project of its own (own name,
free ports, random secret), runs the same workload, nemesis and checker as against local
processes, and removes the project (``down -v``). Its faults: ``docker kill`` of a follower and
of the leader (then ``start``), ``pause``/``unpause``, a partition of the leader and packet loss
(iptables in the containers' network namespaces, entered with nsenter), clock skew (the
service recreated with ``KVRAFT_CLOCK_OFFSET_MS``). Delay is left out (no netem here). About
two minutes. Skipped, with the reason, only where there is no Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from chaos import compose as dc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = {"kill", "kill-leader", "pause", "partition-leader", "loss", "skew"}


def _remove(name: str) -> None:
    """Take down a project the run started and did not remove (compose needs the file's
    required variables set to read it; their values do not matter for ``down``)."""
    dummy = {"KVRAFT_SECRET": "teardown", "KVRAFT_FTP_PASSWORD": "teardown"}
    dc.ComposeProject(name=name, env=dummy, owned=True).down()


@pytest.mark.timeout(600)
def test_compose_smoke_loses_nothing_and_removes_its_project(tmp_path):
    dc.skip_without_engine(pytest.skip)
    out = str(tmp_path / "smoke")
    cmd = [
        sys.executable,
        "-m",
        "chaos.run",
        "smoke",
        "--backend",
        "compose",
        "--out",
        out,
        "--seed",
        "11",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        # SIGINT lets the run take its project down (its finally); whatever it left, we remove
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        started = re.search(r"compose project (kvraft-chaos-\S+) up", output)
        if started:
            _remove(started.group(1))
        pytest.fail(f"the chaos run did not finish within 400 s:\n{output[-3000:]}")
    print(output)  # the results table, shown by pytest when an assertion fails
    name = re.search(r"compose project (kvraft-chaos-\S+) up", output)
    assert name, f"the run did not start its project (exit {proc.returncode}):\n{output[-3000:]}"
    # nothing of the run's project outlives it, whatever the verdict
    left = dc.ComposeProject(name=name.group(1)).leftovers()
    assert left == {"containers": [], "networks": [], "volumes": []}, left
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["lost"] == [] and res["unverified"] == [], (res["lost"][:5], res["unverified"][:5])
    assert res["phantoms"] == [] and res["failed_visible"] == []
    kinds = [f["kind"] for f in res["faults"]]
    assert set(kinds) == EXPECTED, kinds
    assert any("left out: delay" in n for n in res["notes"]), res["notes"]
    assert any("iptables network faults" in n for n in res["notes"]), res["notes"]
    leader_kill = next(f for f in res["faults"] if f["kind"] == "kill-leader")
    assert leader_kill["new_leader_s"] is not None
    assert proc.returncode == 0, f"exit {proc.returncode}: a target was missed:\n{output[-3000:]}"
    # the nodes' logs were kept with the run's output
    assert sorted(os.listdir(os.path.join(out, "nodes"))) == [
        "ftp.log",
        "n1.log",
        "n2.log",
        "n3.log",
    ]
