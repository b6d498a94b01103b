"""The clock-skew table: acknowledged overwrites lost and deletes undone with one node's clock
skewed, measured the way a new user would try it.

    python -m chaos.skew_table                  # 20 ms, 200 ms, 30 s; about 2 minutes
    python -m chaos.skew_table --control        # the same with KVRAFT_TEST_FAULT=lww_ack

For each skew: three nodes on loopback, one follower restarted with its clock ahead
(``KVRAFT_CLOCK_OFFSET_MS``). For each of 100 keys a client writes ``v1`` through the skewed
node, waits for its 200/201, writes ``v2`` through the other follower, waits for its 200, then
reads with ``r=all``: anything but ``v2`` is a lost overwrite. For each of 50 keys it writes
through the skewed node and deletes through the other: a read that is not 404 is a delete undone.
Writes the clock guard refuses (503 ``clock_offset``) are not acknowledged and are counted apart;
the 30 s row is also run with ``max_clock_offset`` raised above the skew, to show the version
rule alone. Prints a Markdown table; exit status 1 when anything acknowledged was lost (0 for
``--control`` only when the control lost something, as it must).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass

from .launcher import ChaosCluster, wait_for

KEYS, DELETES = 100, 50


@dataclass
class Row:
    skew_ms: int
    max_offset_s: float
    lost: int = 0
    overwrites: int = 0  # pairs whose two writes were both acknowledged
    undone: int = 0
    deletes: int = 0  # deletes acknowledged
    refused: int = 0  # writes refused by the clock guard (503 clock_offset)


def measure(skew_ms: int, max_offset_s: float, fault: str = "") -> Row:
    row = Row(skew_ms, max_offset_s)
    env = {"KVRAFT_MAX_CLOCK_OFFSET": str(max_offset_s), "KVRAFT_TEST_FAULT": fault}
    with (
        tempfile.TemporaryDirectory(prefix="kvraft-skew-") as root,
        ChaosCluster(root, env=env) as c,
    ):
        leader = c.leader()
        skewed, other = (i for i in range(c.n) if i != leader)
        c.stop(skewed)
        c.start(skewed, extra_env={"KVRAFT_CLOCK_OFFSET_MS": str(skew_ms)})
        if skew_ms < max_offset_s * 1000:
            c.wait_ready()
        else:  # never ready: wait until it has judged its clock against both peers
            wait_for(
                lambda: len(c.cluster_view(skewed)["clock"]["offsets_ms"]) == 2,
                30,
                "the skewed node to measure its peers' clocks",
            )

        def acked(resp) -> bool:
            if resp.status_code == 503 and "clock_offset" in resp.text:
                row.refused += 1
            return resp.status_code in (200, 201)

        for k in range(KEYS):
            key = f"skew/{k}"
            if acked(c.put(skewed, key, b"v1")) and acked(c.put(other, key, b"v2")):
                row.overwrites += 1
                got = c.get(leader, key, r="all")
                row.lost += got.status_code != 200 or got.content != b"v2"
        for k in range(DELETES):
            key = f"skew-del/{k}"
            if acked(c.put(skewed, key, b"x")) and c.delete(other, key).status_code == 200:
                row.deletes += 1
                row.undone += c.get(leader, key, r="all").status_code != 404
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--control",
        action="store_true",
        help="run the negative control (plain last-writer-wins acks)",
    )
    args = ap.parse_args(argv)
    fault = "lww_ack" if args.control else ""
    cells = [(20, 0.5), (200, 0.5), (30_000, 0.5), (30_000, 60.0)]
    print(
        f"| skew | max_clock_offset | acknowledged overwrites lost | acknowledged deletes "
        f"undone | writes refused by the clock guard |{' (control: lww_ack)' if fault else ''}"
    )
    print("|---|---|---|---|---|")
    total = 0
    for skew, max_s in cells:
        r = measure(skew, max_s, fault)
        total += r.lost + r.undone
        print(
            f"| {skew} ms | {max_s:g} s | {r.lost} of {r.overwrites} | {r.undone} of "
            f"{r.deletes} | {r.refused} |",
            flush=True,
        )
    if args.control:
        return 0 if total else 1
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
