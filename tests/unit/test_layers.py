"""The package layers hold: ``kvraft/`` never imports the web layer (``api``, Flask) nor the
composition root (``kvraft_cmd``), and reads ``KVRAFT_*`` only in kvraft/config.py. Checked on
the source (every module under kvraft/, whatever its folder), so a new module is covered too.
``kvraft/__main__.py`` is the ``python -m kvraft`` shim to the composition root: nothing imports
it, and it is the one exception."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KVRAFT = Path(__file__).resolve().parents[2] / "kvraft"
ABOVE = ("api", "flask", "flask_sock", "kvraft_cmd")
MODULES = sorted(p for p in KVRAFT.rglob("*.py") if p.name != "__main__.py")


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(KVRAFT)))
def test_the_environment_is_read_only_in_config(path):
    if path == KVRAFT / "config.py":
        return
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
