import random
from collections import Counter

import pytest

from kvraft.core.balance import Balancer, pick


def test_round_robin_visits_every_node_evenly():
    b = Balancer("round-robin")
    got = Counter()
    for _ in range(300):
        n = b.choose(["n1", "n2", "n3"])
        got[n] += 1
        b.done(n)
    assert got == {"n1": 100, "n2": 100, "n3": 100}


def test_least_loaded_prefers_nodes_with_fewer_requests_in_flight():
    b = Balancer("least-loaded")
    busy = [b.choose(["n1", "n2", "n3"]) for _ in range(3)]
    assert sorted(busy) == ["n1", "n2", "n3"]
    b.done("n2")
    assert b.choose(["n1", "n2", "n3"]) == "n2"
    assert b.inflight() == {"n1": 1, "n2": 1, "n3": 1}


def test_least_loaded_counts_what_other_nodes_report_serving():
    b = Balancer("least-loaded")
    # n2 serves 4 requests of its own clients: the leader (n1) and n3 share the next ones
    got = Counter()
    for _ in range(40):
        n = b.choose(["n1", "n2", "n3"], reported={"n2": 4})
        got[n] += 1
        b.done(n)
    assert got == {"n1": 20, "n3": 20}
    # requests sent from here and reported ones add up: 3 sent to n1 outweigh 2 reported by n2
    assert pick("least-loaded", ["n1", "n2"], {"n1": 3}, 0, random.Random(1), {"n2": 2}) == "n2"
    assert {
        pick("least-loaded", ["n1", "n2"], {"n1": 2}, t, random.Random(1), {"n2": 2})
        for t in range(2)
    } == {"n1", "n2"}  # a tie is broken in turn


def test_random_is_replayable_with_a_seed():
    a = [pick("random", ["n1", "n2", "n3"], {}, 0, random.Random(7)) for _ in range(1)]
    r1, r2 = random.Random(7), random.Random(7)
    assert [pick("random", ["n1", "n2"], {}, i, r1) for i in range(20)] == [
        pick("random", ["n1", "n2"], {}, i, r2) for i in range(20)
    ]
    assert a[0] in {"n1", "n2", "n3"}


def test_excluded_and_empty():
    b = Balancer("least-loaded")
    assert b.choose(["n1", "n2"], exclude=["n1"]) == "n2"
    assert b.choose(["n1"], exclude=["n1"]) is None
    with pytest.raises(ValueError):
        Balancer("fastest")
