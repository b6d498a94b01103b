"""Hypothesis stateful test: random put/get/delete sequences over HTTP agree with a dict model."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

RUNS = itertools.count()
KEYS = st.sampled_from(["a", "b", "c/d", "ü", "sp ace"])
NODES = st.integers(0, 2)


class StoreMatchesDict(RuleBasedStateMachine):
    cluster = None  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"model{next(RUNS)}/"
        self.model: dict[str, bytes] = {}

    @rule(
        key=KEYS,
        value=st.binary(max_size=64),
        node=NODES,
        w=st.sampled_from(["one", "quorum", "all"]),
    )
    def put(self, key, value, node, w):
        r = self.cluster.put(node, self.prefix + key, value, w=w)
        assert r.status_code == (200 if key in self.model else 201), r.text
        self.model[key] = value

    @rule(key=KEYS, node=NODES, level=st.sampled_from(["one", "quorum", "all"]))
    def get(self, key, node, level):
        r = self.cluster.get(node, self.prefix + key, r=level)
        if key in self.model:
            assert r.status_code == 200 and r.content == self.model[key]
        else:
            assert r.status_code == 404 and r.json()["error"] == "not_found"

    @rule(key=KEYS, node=NODES)
    def delete(self, key, node):
        r = self.cluster.delete(node, self.prefix + key)
        assert r.status_code == (200 if key in self.model else 404), r.text
        self.model.pop(key, None)

    @invariant()
    def listing_matches(self):
        r = self.cluster.http.get(self.cluster.url(0) + "/kv", params={"prefix": self.prefix})
        assert r.json()["keys"] == sorted(self.prefix + k for k in self.model)


def test_http_store_matches_a_dict_model(cluster):
    StoreMatchesDict.cluster = cluster
    run_state_machine_as_test(
        StoreMatchesDict,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
