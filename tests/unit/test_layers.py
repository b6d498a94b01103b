"""The package layers hold: ``kvraft/`` never imports the web layer (``api``, Flask) nor the
composition root (``kvraft_cmd``), and reads ``KVRAFT_*`` only in kvraft/config.py; ``api/``
never imports ``kvraft.node`` and uses the objects it is given only through the members the
Protocols of api/ports.py declare. Checked on the source (every module under kvraft/ and api/,
whatever its folder), so a new module is covered too.
``kvraft/__main__.py`` is the ``python -m kvraft`` shim to the composition root: nothing imports
it, and it is the one exception."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KVRAFT = Path(__file__).resolve().parents[2] / "kvraft"
ABOVE = ("api", "flask", "flask_sock", "kvraft_cmd")
MODULES = sorted(p for p in KVRAFT.rglob("*.py") if p.name != "__main__.py")
CONFIG = KVRAFT / "config.py"  # the one module that reads the environment


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(KVRAFT)))
def test_kvraft_does_not_import_the_layers_above_it(path):
    imported = _imported(ast.parse(path.read_text(), str(path)))
    assert not {m for m in imported if m.split(".")[0] in ABOVE}


@pytest.mark.parametrize(
    "path", [p for p in MODULES if p != CONFIG], ids=lambda p: str(p.relative_to(KVRAFT))
)
def test_the_environment_is_read_only_in_config(path):
    text = path.read_text()
    tree = ast.parse(text, str(path))
    reads = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv")
    ]
    assert not reads, f"{path.name} reads the environment at lines {reads}"


def test_the_client_imports_nothing_of_the_server():
    client = sorted((KVRAFT / "client").glob("*.py"))
    assert client
    for path in client:
        imported = _imported(ast.parse(path.read_text(), str(path)))
        assert not {m for m in imported if m.split(".")[0] in ABOVE + ("pysyncobj", "sqlite3")}


# -- api/: over the Protocols of api/ports.py only ----------------------------------------------

API = KVRAFT.parent / "api"
API_MODULES = sorted(p for p in API.rglob("*.py"))


def _imports_the_node(tree: ast.AST) -> list[int]:
    """Lines importing ``kvraft.node`` (``import kvraft.node``, ``from kvraft.node import ...``,
    ``from kvraft import node``), wherever they are: under ``TYPE_CHECKING`` or in a function."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(
                a.name == "kvraft.node" or a.name.startswith("kvraft.node.") for a in node.names
            ):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "kvraft.node" or node.module.startswith("kvraft.node."):
                lines.append(node.lineno)
            elif node.module == "kvraft" and any(a.name == "node" for a in node.names):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", API_MODULES, ids=lambda p: str(p.relative_to(API)))
def test_api_does_not_import_the_node(path):
    lines = _imports_the_node(ast.parse(path.read_text(), str(path)))
    assert not lines, f"{path.name} imports kvraft.node at lines {lines}"


def test_the_import_check_sees_every_form():
    for source in (
        "import kvraft.node",
        "from kvraft.node import Node",
        "from kvraft import node",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kvraft.node import Node",
        "def f():\n    from kvraft.node import Node",
    ):
        assert _imports_the_node(ast.parse(source)), source
    assert not _imports_the_node(ast.parse("from kvraft.nodes import x\nimport kvraft.peer"))


class _Port:
    """A Protocol of api/ports.py: its member names, and the port each member returns."""

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.returns: dict[str, str] = {}


def _annotation_name(ann: ast.expr | None) -> str | None:
    """``X``, ``ports.X``, ``"X"`` and ``X | None`` -> "X"; anything else None."""
    if ann is None:
        return None
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        return _annotation_name(ast.parse(ann.value, mode="eval").body)
    if isinstance(ann, ast.Name):
        return ann.id
    if isinstance(ann, ast.Attribute):
        return ann.attr
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        sides = [_annotation_name(s) for s in (ann.left, ann.right)]
        named = [s for s in sides if s not in (None, "None")]
        return named[0] if len(named) == 1 else None
    return None


def read_ports(source: str) -> dict[str, _Port]:
    """The Protocols declared in ``source`` (api/ports.py), with inherited members."""
    classes = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
    bases = {name: [_annotation_name(b) for b in c.bases] for name, c in classes.items()}

    def is_protocol(name: str) -> bool:
        return any(b == "Protocol" or (b in classes and is_protocol(b)) for b in bases[name])

    out: dict[str, _Port] = {}
    for name, cls in classes.items():
        if not is_protocol(name):
            continue
        port = out[name] = _Port()
        for item in cls.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                port.members.add(item.name)
                ret = _annotation_name(item.returns)
                if ret is not None:
                    port.returns[item.name] = ret
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                port.members.add(item.target.id)
                ann = _annotation_name(item.annotation)
                if ann is not None:
                    port.returns[item.target.id] = ann
    for name in out:  # members of Protocol bases
        for base in bases[name]:
            if base in out:
                out[name].members |= out[base].members
                out[name].returns = {**out[base].returns, **out[name].returns}
    for port in out.values():  # only ports count as the type a member returns
        port.returns = {k: v for k, v in port.returns.items() if v in out}
    return out


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    a = fn.args
    return [*a.posonlyargs, *a.args, *([a.vararg] if a.vararg else []), *a.kwonlyargs] + (
        [a.kwarg] if a.kwarg else []
    )


class PortUse:
    """Checks, on the source of the modules of one package, that an object a function receives
    as a port (a parameter annotated with a Protocol of api/ports.py) is used only through the
    members that Protocol declares, and is handed to functions of the package only as that same
    port. Types follow parameters, ``self.<attr> = <param>`` in ``__init__``, local assignments,
    and members that return a port (``cluster.activity``, ``kv.put(...)``)."""

    def __init__(self, ports: dict[str, _Port], modules: dict[str, ast.Module]) -> None:
        self.ports = ports
        self.modules = modules
        self.violations: list[str] = []
        self.checked = 0  # member uses checked: the check is not vacuous
        # (module, name) -> its signature's parameters (a class: its __init__ without self)
        self.defs: dict[tuple[str, str], list[ast.arg]] = {}
        for mod, tree in modules.items():
            for item in tree.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.defs[(mod, item.name)] = _params(item)
                elif isinstance(item, ast.ClassDef):
                    self.defs[(mod, item.name)] = []
                    for sub in item.body:
                        if isinstance(sub, ast.FunctionDef):
                            params = _params(sub)[1:]
                            self.defs[(mod, f"{item.name}.{sub.name}")] = params
                            if sub.name == "__init__":
                                self.defs[(mod, item.name)] = params

    def run(self) -> list[str]:
        for mod, tree in self.modules.items():
            self._module(mod, tree)
        return self.violations

    # -- names -------------------------------------------------------------------------------

    def _imports(self, mod: str, tree: ast.Module) -> tuple[dict[str, tuple[str, str]], dict]:
        """Names imported from the package's modules: name -> (module, name), alias -> module."""
        names: dict[str, tuple[str, str]] = {}
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level != 1:
                continue
            for a in node.names:
                if node.module is None:
                    aliases[a.asname or a.name] = a.name
                else:
                    names[a.asname or a.name] = (node.module, a.name)
        return names, aliases

    def _module(self, mod: str, tree: ast.Module) -> None:
        self.mod = mod
        self.names, self.aliases = self._imports(mod, tree)
        for item in tree.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(item, {}, None)
            elif isinstance(item, ast.ClassDef):
                self._class(item)

    def _class(self, cls: ast.ClassDef) -> None:
        attrs: dict[str, str] = {}
        for sub in cls.body:  # self.<attr> = <a port> in __init__
            if isinstance(sub, ast.FunctionDef) and sub.name == "__init__":
                env = self._env(sub, {})
                for node in ast.walk(sub):
                    if isinstance(node, ast.Assign):
                        for target, value in self._pairs(node):
                            port = self._type(value, env, {})
                            if (
                                port
                                and isinstance(target, ast.Attribute)
                                and isinstance(target.value, ast.Name)
                                and target.value.id == "self"
                            ):
                                attrs[target.attr] = port
        for sub in cls.body:
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(sub, {}, (cls.name, attrs))

    @staticmethod
    def _pairs(node: ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                yield from zip(target.elts, node.value.elts, strict=False)
            else:
                yield target, node.value

    def _env(self, fn, outer: dict[str, str]) -> dict[str, str]:
        env = dict(outer)
        for p in _params(fn):
            env.pop(p.arg, None)
            port = _annotation_name(p.annotation)
            if port in self.ports:
                env[p.arg] = port
        return env

    def _type(self, expr: ast.expr, env: dict[str, str], attrs: dict[str, str]) -> str | None:
        """The port ``expr`` is, if it is one."""
        if isinstance(expr, ast.Name):
            return env.get(expr.id)
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name) and expr.value.id == "self":
                return attrs.get(expr.attr)
            owner = self._type(expr.value, env, attrs)
            return self.ports[owner].returns.get(expr.attr) if owner else None
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            owner = self._type(expr.func.value, env, attrs)
            return self.ports[owner].returns.get(expr.func.attr) if owner else None
        return None

    # -- functions ---------------------------------------------------------------------------

    def _function(self, fn, outer: dict[str, str], cls: tuple[str, dict] | None) -> None:
        env = self._env(fn, outer)
        attrs = cls[1] if cls else {}
        body = list(self._own_nodes(fn))
        for node in body:  # local names bound to a port (not flow-sensitive)
            if isinstance(node, ast.Assign):
                for target, value in self._pairs(node):
                    if isinstance(target, ast.Name):
                        port = self._type(value, env, attrs)
                        if port:
                            env[target.id] = port
                        else:
                            env.pop(target.id, None)
        where = f"{self.mod}.py:{fn.lineno} {fn.name if hasattr(fn, 'name') else 'lambda'}"
        for node in body:
            if isinstance(node, ast.Attribute):
                self._attribute(node, env, attrs, where)
            elif isinstance(node, ast.Call):
                self._call(node, env, attrs, cls, where)
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                self._function(node, env, cls)

    @staticmethod
    def _own_nodes(fn):
        """The nodes of ``fn``'s body, nested functions and lambdas themselves but not inside."""
        stack = list(fn.body) if isinstance(fn.body, list) else [fn.body]
        stack += [d for d in fn.args.defaults + fn.args.kw_defaults if d is not None]
        while stack:
            node = stack.pop()
            yield node
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            stack.extend(ast.iter_child_nodes(node))

    def _attribute(self, node: ast.Attribute, env, attrs, where: str) -> None:
        port = self._type(node.value, env, attrs)
        if port is None:
            return
        self.checked += 1
        if node.attr not in self.ports[port].members:
            self.violations.append(f"{where}: .{node.attr} is not a member of {port}")

    def _call(self, node: ast.Call, env, attrs, cls, where: str) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "getattr" and node.args:
            port = self._type(node.args[0], env, attrs)
            name = node.args[1] if len(node.args) > 1 else None
            if port and not (
                isinstance(name, ast.Constant) and name.value in self.ports[port].members
            ):
                self.violations.append(f"{where}: getattr on {port}")
            return
        params = self._callee(func, cls)
        if params is None:
            return  # not a function of this package: it has its own types
        positional = [p for p in params if p.arg not in ("args", "kwargs")]
        for i, arg in enumerate(node.args):
            port = self._type(arg, env, attrs)
            if port and isinstance(arg, ast.Starred):
                continue
            if port:
                param = positional[i] if i < len(positional) else None
                self._handed(port, param, where)
        for kw in node.keywords:
            port = self._type(kw.value, env, attrs) if kw.arg else None
            if port:
                self._handed(port, next((p for p in params if p.arg == kw.arg), None), where)

    def _handed(self, port: str, param: ast.arg | None, where: str) -> None:
        got = _annotation_name(param.annotation) if param is not None else None
        if got != port:
            name = param.arg if param is not None else "?"
            self.violations.append(f"{where}: {port} passed as {name!r} annotated {got}")

    def _callee(self, func: ast.expr, cls) -> list[ast.arg] | None:
        if isinstance(func, ast.Name):
            if (self.mod, func.id) in self.defs:
                return self.defs[(self.mod, func.id)]
            if func.id in self.names:
                return self.defs.get(self.names[func.id])
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in self.aliases:
                return self.defs.get((self.aliases[func.value.id], func.attr))
            if func.value.id == "self" and cls is not None:
                return self.defs.get((self.mod, f"{cls[0]}.{func.attr}"))
        return None


def _api_sources() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in API_MODULES if p.name != "ports.py"}


def test_api_uses_only_the_members_its_ports_declare():
    ports = read_ports((API / "ports.py").read_text())
    check = PortUse(ports, _api_sources())
    assert check.run() == []
    assert check.checked > 50  # the check saw the uses, so it is not vacuous


def test_create_app_takes_every_object_as_a_port():
    app = _api_sources()["app"]
    (create_app,) = [
        n for n in app.body if isinstance(n, ast.FunctionDef) and n.name == "create_app"
    ]
    ports = read_ports((API / "ports.py").read_text())
    assert [_annotation_name(p.annotation) in ports for p in _params(create_app)] == [True] * 6


_BAD = """
from . import helper
from .ports import Cluster, KeyValue


def reaches_in(cluster: Cluster):
    return cluster.meta.leader_id()


def through_a_closure(kv: KeyValue):
    def inner():
        return kv.storage
    return inner


class Holder:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def peek(self):
        return self.cluster.leader.tick()


def hands_it_on(cluster: Cluster):
    helper.untyped(cluster)


def through_a_member(cluster: Cluster):
    activity = cluster.activity
    return activity.counter, getattr(cluster, "storage")


def fine(cluster: Cluster, kv: KeyValue):
    helper.typed(cluster)
    return cluster.id, kv.put("k", b"v").created, cluster.activity.value
"""
_HELPER = """
from .ports import Cluster


def untyped(node):
    return node.storage


def typed(node: Cluster):
    return node.members()
"""


def test_the_port_check_finds_every_kind_of_reaching_in():
    ports = read_ports((API / "ports.py").read_text())
    modules = {"bad": ast.parse(_BAD), "helper": ast.parse(_HELPER)}
    found = PortUse(ports, modules).run()
    assert sorted(v.split(": ", 1)[1] for v in found) == sorted(
        [
            ".meta is not a member of Cluster",
            ".storage is not a member of KeyValue",
            ".leader is not a member of Cluster",
            "Cluster passed as 'node' annotated None",
            ".counter is not a member of Activity",
            "getattr on Cluster",
        ]
    )
