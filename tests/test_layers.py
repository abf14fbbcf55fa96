"""Imports point down the layers: a lower module never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "superpose"
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every ``superpose`` name ``path`` imports: modules, and ``module.name`` for a name
    taken from a module (``from superpose.x import y`` gives ``superpose.x.y``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] == "superpose"}


def is_module(name: str) -> bool:
    """Whether the dotted ``name`` is a module or package of ``superpose``."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_only_submodules_come_from_the_package_root(path):
    # ``from superpose import name`` runs the package's __init__, which imports the top
    # layer (training); a module may take submodules from it, never other names
    taken = {name for name in imported(path) if name.count(".") == 1}
    assert all(is_module(name) for name in taken), taken


def test_the_result_store_imports_no_training_code():
    training = ("superpose.sweep.execute", "superpose.train", "superpose.fast")
    names = imported(PACKAGE / "sweep" / "store.py")
    assert not [name for name in names if name.startswith(training)]
