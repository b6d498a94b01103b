"""The Protocols api/ declares (api/ports.py) are what the real parts offer: every method exists
on the part the composition root (kvraft_cmd/serve.py) hands over, with the same parameters and
defaults, and every property is an attribute of it, so create_app over a node's parts is well
typed (mypy checks the call in kvraft_cmd/serve.py too)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

import pytest

from api import ports
from kvraft.coordinator import WriteResult
from kvraft.core.balance import Activity
from kvraft.node import Node
from kvraft.peer import PeerClient, PeerResponse, PeerServer, Reply
from kvraft.reports import Reports
from kvraft.watch import ClusterFeed, Event, Watcher

IMPLEMENTED_BY = {
    ports.KeyValue: Node,
    ports.Cluster: Node,
    ports.WriteAnswer: WriteResult,
    ports.Activity: Activity,
    ports.PeerDispatcher: PeerServer,
    ports.PeerReply: Reply,
    ports.PeerCalls: PeerClient,
    ports.Forwarded: PeerResponse,
    ports.ReportJobs: Reports,
    ports.ChangeFeed: ClusterFeed,
    ports.WatchStream: Watcher,
    ports.WatchEvent: Event,
}
CASES = list(IMPLEMENTED_BY.items())
IDS = [proto.__name__ for proto in IMPLEMENTED_BY]


def _methods(proto: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(proto).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    }


def _properties(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if isinstance(v, property)]


def _set_in_init(cls: type) -> set[str]:
    """Names ``self.<name>`` is assigned in ``cls.__init__`` (tuple targets too); a dataclass's
    generated ``__init__`` has no source (its fields are checked instead)."""
    if "__init__" not in vars(cls) or dataclasses.is_dataclass(cls):
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    return names


def test_every_port_of_create_app_has_a_real_implementation():
    declared = {
        v
        for v in vars(ports).values()
        if isinstance(v, type)
        and getattr(v, "_is_protocol", False)
        and v.__module__ == ports.__name__
    }
    assert declared == set(IMPLEMENTED_BY)


@pytest.mark.parametrize(("proto", "impl"), CASES, ids=IDS)
def test_the_part_has_every_method_of_the_protocol_with_its_parameters(proto, impl):
    for name, wanted in _methods(proto).items():
        got = inspect.signature(getattr(impl, name))
        assert list(got.parameters) == list(wanted.parameters), name
        defaults = [p.default for p in got.parameters.values()]
        assert defaults == [p.default for p in wanted.parameters.values()], name


@pytest.mark.parametrize(("proto", "impl"), CASES, ids=IDS)
def test_the_part_has_every_attribute_of_the_protocol(proto, impl):
    fields = {f.name for f in dataclasses.fields(impl)} if dataclasses.is_dataclass(impl) else set()
    assigned = _set_in_init(impl)
    for name in _properties(proto):
        assert hasattr(impl, name) or name in fields or name in assigned, name


def test_the_node_sets_every_attribute_of_the_cluster_protocol():
    names = _properties(ports.Cluster)
    assert len(names) == 4
    source = inspect.getsource(Node.__init__)
    for name in names:
        assert f"self.{name} = " in source, name
