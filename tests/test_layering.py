"""Imports run one way: library packages downward only, ``app`` on top, ``experiments`` apart.

Every ``import`` / ``from ... import`` in every module (at any depth, so a deferred import
inside a function counts too) is read with ``ast`` and checked against :data:`LAYERS`.
Within a package the modules form no circle either (one under ``TYPE_CHECKING`` counts:
it is still two modules that each need the other).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import torchrec_recsys

PACKAGE = "torchrec_recsys"
LAYERS: dict[str, int] = {
    # library, lowest first; a package imports only packages of a lower layer
    "errors": 0,
    "config": 1,
    "files": 1,
    "observability": 2,
    "data": 3,
    "semantic_ids": 3,
    "distributed": 3,
    "models": 4,
    "metrics": 4,
    "training": 5,
    "retrieval": 6,
    "serving": 7,
    # the composition layer: reads the experiment config, builds objects, command entry points
    "app": 10,
    # the typed public API over the composition layer; the package top re-exports it
    "api": 11,
    # experiment drivers: may import anything below; nothing imports them
    "experiments": 12,
    # the dispatcher of subcommands (python -m torchrec_recsys)
    "cli": 13,
    "__main__": 14,
    "__init__": 0,
}
REEXPORTS = {("__init__", "api")}
"""(importer, imported) pairs allowed against the layers: the package top re-exports the API
(lazily, on first attribute access)."""
LIBRARY_TOP = 9
"""Layers up to this are library code."""
WHOLE_CONFIG_NAMES = {"ExperimentConfig", "load_config", "config_from_dict"}
"""Only the composition layer (and above) may read the whole experiment config."""


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            found.append((node.lineno, node.module, names))
            # ``from torchrec_recsys import app`` imports the package ``app``
            if node.module == PACKAGE:
                found += [(node.lineno, f"{PACKAGE}.{n}", []) for n in names]
    return found


def layering_violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that breaks the layering, one line each."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        own = parts[0]
        if own not in LAYERS:
            problems.append(f"{path}: {own!r} has no layer; add it to LAYERS")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module, names in _imports(tree):
            if not module.startswith(f"{PACKAGE}.") or module == PACKAGE:
                continue
            target = module.split(".")[1]
            where = f"{path}:{line} imports {module}"
            if target == own or (own, target) in REEXPORTS:
                continue
            if target not in LAYERS:
                problems.append(f"{where}: {target!r} has no layer")
            elif LAYERS[target] >= LAYERS[own] and LAYERS[own] <= LIBRARY_TOP:
                problems.append(f"{where}: library layer {own} may not import {target}")
            elif (
                target in ("api", "experiments", "cli", "__main__") and LAYERS[target] > LAYERS[own]
            ):
                problems.append(f"{where}: nothing below {target} may import it")
            elif target == "app" and LAYERS[own] < LAYERS["app"]:
                problems.append(f"{where}: the library may not import the composition layer")
            if (
                target == "config"
                and LAYERS[own] <= LIBRARY_TOP
                and WHOLE_CONFIG_NAMES & set(names)
            ):
                problems.append(f"{where}: library code takes config sections, not the whole")
    return problems


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles(root: Path) -> list[list[str]]:
    """Every circle of imports among the modules of the package at ``root``: the strongly
    connected components of the module graph with more than one module (each sorted)."""
    paths = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for _, module, names in _imports(ast.parse(path.read_text(), filename=str(path))):
            # ``from a.b import c`` imports module a.b, and a.b.c too when c is a module
            for target in (module, *(f"{module}.{n}" for n in names)):
                if target in paths and target != name:
                    graph[name].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def _package_root() -> Path:
    return Path(torchrec_recsys.__file__).parent


def test_the_package_imports_only_downward() -> None:
    assert layering_violations(_package_root()) == []


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / PACKAGE
    shutil.copytree(_package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layering_violations(copy) == []
    # a deferred import inside a function counts as much as one at the top
    (copy / "data" / "planted.py").write_text(
        "def f():\n    from torchrec_recsys.app import builders\n    return builders\n"
    )
    (copy / "models" / "planted.py").write_text("import torchrec_recsys.training.trainer\n")
    (copy / "metrics" / "planted.py").write_text("from torchrec_recsys.models import tasks\n")
    (copy / "retrieval" / "planted.py").write_text(
        "from torchrec_recsys.config import ExperimentConfig\n"
    )
    (copy / "app" / "planted.py").write_text("from torchrec_recsys import experiments\n")
    (copy / "app" / "planted_api.py").write_text("from torchrec_recsys.api import train\n")
    (copy / "api_planted.py").write_text("")
    (copy / "newpkg.py").write_text("")
    problems = layering_violations(copy)
    joined = "\n".join(problems)
    assert "data/planted.py:2 imports torchrec_recsys.app" in joined
    assert "models/planted.py:1 imports torchrec_recsys.training.trainer" in joined
    assert "metrics/planted.py:1 imports torchrec_recsys.models" in joined  # same layer
    assert "not the whole" in joined
    assert "app/planted.py:1 imports torchrec_recsys.experiments" in joined
    assert "app/planted_api.py:1 imports torchrec_recsys.api: nothing below api" in joined
    assert "'newpkg' has no layer" in joined
    assert "'api_planted' has no layer" in joined
    assert len(problems) == 8


def test_no_two_modules_import_each_other() -> None:
    assert import_cycles(_package_root()) == []


def test_a_planted_import_circle_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / PACKAGE
    shutil.copytree(_package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "data" / "planted_a.py").write_text("from torchrec_recsys.data import planted_b\n")
    (copy / "data" / "planted_b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from torchrec_recsys.data.planted_c import C\n"
    )
    (copy / "data" / "planted_c.py").write_text(
        "def f():\n    import torchrec_recsys.data.planted_a\n\nclass C: ...\n"
    )
    assert import_cycles(copy) == [
        [f"{PACKAGE}.data.planted_a", f"{PACKAGE}.data.planted_b", f"{PACKAGE}.data.planted_c"]
    ]
