"""``schemathesis run --checks all`` finds nothing: a real 3-node cluster and FTP server, every
phase (coverage, fuzzing, stateful through the document's links), a fixed seed, 300 examples
per operation. The longer run (random seed, 1,000 examples) is ``make api-fuzz``; what is run
and why the membership changes are fuzzed with negative cases only: tests/harness/apifuzz.py.
"""

from __future__ import annotations

from api.openapi import document
from tests.harness import apifuzz

SEED = 17
EXAMPLES = 300


def test_schemathesis_finds_no_failure(tmp_path):
    runs = apifuzz.fuzz(str(tmp_path), SEED, EXAMPLES, timeout=600)
    operations = sum(
        len([m for m in item if m != "parameters"]) for item in document()["paths"].values()
    )
    main, members = runs
    for r in runs:
        print("$", " ".join(r.command))
        print(r.summary)
        assert r.clean, r.output
    # nothing was left out quietly: every operation was tested, stateful links included
    assert main.tested == operations - len(apifuzz.MEMBERSHIP), main.summary
    assert members.tested == len(apifuzz.MEMBERSHIP), members.summary
    assert "Stateful" in main.output and "Scenarios:" in main.output
    assert main.generated >= EXAMPLES * main.tested // 2, main.summary
