"""``schemathesis run --checks all`` against a real 3-node cluster with a real FTP server.

Used by tests/integration/test_schemathesis.py (fixed seed, 300 examples per operation) and by
``make api-fuzz`` (``python -m tests.harness.apifuzz``: a random seed, 1,000 examples per
operation).

Two runs, both with every check and the admin credential (``-H Authorization``):

1. every operation but the membership changes, every phase (coverage, fuzzing, stateful through
   the document's links), positive and negative cases, sent to the partition leader (which
   balances /kv requests over the nodes, so forwards and redirects are fuzzed too);
2. the membership changes (``POST /cluster/members``, ``DELETE /cluster/members/{node_id}``)
   with negative cases only (coverage and fuzzing): each must be refused and change nothing.
   Their positive cases are left out on purpose: a schema-valid new member is a real Raft member
   at a HOST:PORT where no node will ever answer (two of them and the 3-node cluster under test
   loses its quorum), and a valid id removes a node of that cluster. Adding and removing members
   for real is tests/integration/test_members.py, which also checks the answers against the
   document. After the runs, the cluster must still have its three members and no removal.

The public token and the admin token are the same string here, so that the same run passes on
a node that knows only KVRAFT_TOKEN (before the front door's admin check) and on one that has
both: the admin token passes public endpoints too (the shared contract), and test_access.py
checks that the public token does not pass admin ones.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import requests

from kvraft.ftp import FtpServer
from tests.harness.cluster import ROOT, Cluster

TOKEN = "api-fuzz-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FTP_USER, FTP_PASSWORD = "kvraft", "api-fuzz-ftp-pw"
CONFIG = os.path.join(ROOT, "tests", "integration", "schemathesis.toml")
MEMBERSHIP = ("addMember", "removeMember")
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


@dataclass
class Run:
    command: list[str]
    returncode: int
    output: str

    @property
    def summary(self) -> str:
        """The lines from schemathesis' SUMMARY on."""
        at = self.output.find("SUMMARY")
        return self.output[self.output.rfind("\n", 0, at) + 1 :] if at >= 0 else self.output

    @property
    def generated(self) -> int:
        found = re.search(r"(\d+) generated", self.output)
        return int(found.group(1)) if found else 0

    @property
    def tested(self) -> int:
        found = re.search(r"Tested: (\d+)", self.output)
        return int(found.group(1)) if found else 0

    @property
    def clean(self) -> bool:
        """Exit status 0 and no failure nor error in the closing line (a warning is allowed:
        the negative-only run of removeMember can see only 401s, which is right)."""
        last = self.output.strip().splitlines()[-1] if self.output.strip() else ""
        return (
            self.returncode == 0 and " in " in last and not re.search(r"\d+ (failure|error)", last)
        )


@contextmanager
def fuzz_cluster(root: str):
    """A 3-node cluster (token set) and its FTP server; both stopped on exit."""
    ftp = FtpServer(
        "127.0.0.1", 0, FTP_USER, FTP_PASSWORD, os.path.join(root, "ftp"), auth_failed_delay=0
    )
    os.makedirs(os.path.join(root, "ftp"), exist_ok=True)
    ftp.start()
    try:
        env = {
            "KVRAFT_FTP": f"127.0.0.1:{ftp.address[1]}",
            "KVRAFT_FTP_USER": FTP_USER,
            "KVRAFT_FTP_PASSWORD": FTP_PASSWORD,
            "KVRAFT_TOKEN": TOKEN,
            "KVRAFT_ADMIN_TOKEN": TOKEN,
        }
        c = Cluster(os.path.join(root, "cluster"), env=env)
        c.http.headers.update(AUTH)
        with c:
            yield c
    finally:
        ftp.stop()


def command(url: str, seed: int, examples: int, *, membership: bool) -> list[str]:
    cmd = [
        SCHEMATHESIS,
        "--config-file",
        CONFIG,
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(examples),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "-H",
        f"Authorization: Bearer {TOKEN}",
    ]
    if membership:
        cmd += ["--mode", "negative", "--phases", "coverage,fuzzing"]
        for op in MEMBERSHIP:
            cmd += ["--include-operation-id", op]
    else:
        # an explicit include: without one, schemathesis leaves out GET /openapi.json, the
        # operation it loaded the document from
        cmd += ["--phases", "coverage,fuzzing,stateful", "--include-path-regex", ".*"]
        for op in MEMBERSHIP:
            cmd += ["--exclude-operation-id", op]
    return cmd


def run(
    url: str, seed: int, examples: int, *, membership: bool, timeout: float, workdir: str
) -> Run:
    """One schemathesis run, in ``workdir`` (where it keeps its crash cache, .schemathesis/)."""
    cmd = command(url, seed, examples, membership=membership)
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="tests.harness.schemathesis_hooks",
        PYTHONPATH=ROOT,
    )
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir
    )
    return Run(cmd, proc.returncode, proc.stdout + proc.stderr)


def members_intact(c: Cluster) -> bool:
    """The three members are all there and nothing is being removed."""
    view = requests.get(c.url(0) + "/cluster", headers=AUTH, timeout=10).json()
    return (
        sorted(n["id"] for n in view["nodes"] if n["member"]) == ["n1", "n2", "n3"]
        and not view["removing"]
    )


def fuzz(root: str, seed: int, examples: int, timeout: float = 3600) -> list[Run]:
    """Both runs against one cluster; the runs and whether the members were left intact."""
    with fuzz_cluster(root) as c:
        leader = c.leader()
        url = c.url(leader if leader is not None else 0)
        runs = [
            run(url, seed, examples, membership=False, timeout=timeout, workdir=root),
            run(url, seed, examples, membership=True, timeout=timeout, workdir=root),
        ]
        if not members_intact(c):
            raise AssertionError(f"the fuzz changed the cluster's members: {c.cluster_view(0)}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--max-examples", type=int, default=1000)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    with tempfile.TemporaryDirectory(prefix="kvraft-api-fuzz-") as root:
        runs = fuzz(root, seed, args.max_examples)
    for r in runs:
        print("$", " ".join(r.command))
        print(r.output if not r.clean else r.summary)
    ok = all(r.clean for r in runs)
    print(
        f"api-fuzz: seed {seed}, {args.max_examples} examples per operation, "
        f"{sum(r.generated for r in runs)} cases generated, "
        f"{'no failures' if ok else 'FAILURES (see above)'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
