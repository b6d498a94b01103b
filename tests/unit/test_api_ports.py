"""The Protocols api/ declares (api/ports.py) are what kvraft.node.Node offers: every method
exists on Node with the same parameters, so create_app(node, node, node) is well typed."""

from __future__ import annotations

import inspect

import pytest

from api.ports import Cluster, KeyValue
from kvraft.node import Node


def _methods(proto: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(proto).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    }


@pytest.mark.parametrize("proto", [KeyValue, Cluster])
def test_node_has_every_method_of_the_protocol_with_its_parameters(proto):
    methods = _methods(proto)
    assert methods
    for name, wanted in methods.items():
        got = inspect.signature(getattr(Node, name))
        assert list(got.parameters) == list(wanted.parameters), name
        defaults = [p.default for p in got.parameters.values()]
        assert defaults == [p.default for p in wanted.parameters.values()], name


def test_node_sets_every_attribute_of_the_cluster_protocol():
    source = inspect.getsource(Node.__init__)
    names = [n for n, v in vars(Cluster).items() if isinstance(v, property)]
    assert len(names) == 4
    for name in names:
        assert f"self.{name} = " in source, name
